//! Strided iteration shared by Binary and Permute: an output walked in row-major order while
//! each operand is read through its own strides.

/// Highest rank Binary accepts (the contract's limit) and the most axes a [`Layout`] holds
/// after merging.
pub(crate) const MAX_RANK: usize = 6;

/// A shape with per-operand strides, after dropping size-1 axes and merging neighbouring
/// axes that are contiguous for every operand. Merging turns the common cases (same shape,
/// bias broadcast, scalar broadcast, copy of whole rows) into one or two long inner runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout<const N: usize> {
    pub rank: usize,
    pub dims: [usize; MAX_RANK],
    pub strides: [[usize; MAX_RANK]; N],
}

impl<const N: usize> Layout<N> {
    /// `shape` and each `strides[k]` have the same length; `None` if more than `MAX_RANK`
    /// axes remain after merging.
    pub(crate) fn new(shape: &[usize], strides: [&[usize]; N]) -> Option<Self> {
        let mut l = Layout { rank: 0, dims: [0; MAX_RANK], strides: [[0; MAX_RANK]; N] };
        for (d, &size) in shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            if l.rank > 0 {
                let last = l.rank - 1;
                if (0..N).all(|k| l.strides[k][last] == strides[k][d] * size) {
                    l.dims[last] *= size;
                    for k in 0..N {
                        l.strides[k][last] = strides[k][d];
                    }
                    continue;
                }
            }
            if l.rank == MAX_RANK {
                return None;
            }
            l.dims[l.rank] = size;
            for k in 0..N {
                l.strides[k][l.rank] = strides[k][d];
            }
            l.rank += 1;
        }
        if l.rank == 0 {
            l.dims[0] = 1;
            l.rank = 1;
        }
        Some(l)
    }

    pub(crate) fn len(&self) -> usize {
        self.dims[..self.rank].iter().product()
    }

    /// Innermost stride of each operand.
    pub(crate) fn inner_strides(&self) -> [usize; N] {
        std::array::from_fn(|k| self.strides[k][self.rank - 1])
    }

    /// Walk output positions `start..start+len` as runs along the innermost axis:
    /// `f(pos, run, offsets)` covers outputs `pos..pos+run` (relative to `start`), whose
    /// operand `k` starts at `offsets[k]` and advances by `inner_strides()[k]`.
    #[inline]
    pub(crate) fn for_each_run(&self, start: usize, len: usize, mut f: impl FnMut(usize, usize, [usize; N])) {
        let r = self.rank;
        let inner = self.dims[r - 1];
        let mut idx = [0usize; MAX_RANK];
        let mut rem = start;
        for d in (0..r).rev() {
            idx[d] = rem % self.dims[d];
            rem /= self.dims[d];
        }
        let mut offs: [usize; N] = std::array::from_fn(|k| (0..r).map(|d| idx[d] * self.strides[k][d]).sum());
        let mut pos = 0;
        while pos < len {
            let run = (inner - idx[r - 1]).min(len - pos);
            f(pos, run, offs);
            pos += run;
            // Step the odometer, keeping the offsets in step instead of recomputing them.
            idx[r - 1] += run;
            for k in 0..N {
                offs[k] += run * self.strides[k][r - 1];
            }
            let mut d = r - 1;
            while d > 0 && idx[d] == self.dims[d] {
                for k in 0..N {
                    offs[k] = offs[k] - self.dims[d] * self.strides[k][d] + self.strides[k][d - 1];
                }
                idx[d] = 0;
                d -= 1;
                idx[d] += 1;
            }
        }
    }
}
