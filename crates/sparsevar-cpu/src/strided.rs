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
        for (pos, run, offs) in self.runs(start, len) {
            f(pos, run, offs);
        }
    }

    /// The runs of [`Layout::for_each_run`] as an iterator of (pos, run, offsets), so that a
    /// kernel can loop over them in its own body (see `par::twin`).
    #[inline(always)]
    pub(crate) fn runs(&self, start: usize, len: usize) -> Runs<'_, N> {
        let r = self.rank;
        let mut idx = [0usize; MAX_RANK];
        let mut rem = start;
        for d in (0..r).rev() {
            idx[d] = rem % self.dims[d];
            rem /= self.dims[d];
        }
        let offs: [usize; N] = std::array::from_fn(|k| (0..r).map(|d| idx[d] * self.strides[k][d]).sum());
        Runs { layout: self, idx, offs, pos: 0, len }
    }
}

/// The iterator of [`Layout::runs`]: an odometer over the outer axes.
pub(crate) struct Runs<'a, const N: usize> {
    layout: &'a Layout<N>,
    idx: [usize; MAX_RANK],
    offs: [usize; N],
    pos: usize,
    len: usize,
}

impl<const N: usize> Iterator for Runs<'_, N> {
    type Item = (usize, usize, [usize; N]);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.len {
            return None;
        }
        let l = self.layout;
        let r = l.rank;
        let run = (l.dims[r - 1] - self.idx[r - 1]).min(self.len - self.pos);
        let item = (self.pos, run, self.offs);
        self.pos += run;
        // Step the odometer, keeping the offsets in step instead of recomputing them.
        self.idx[r - 1] += run;
        for k in 0..N {
            self.offs[k] += run * l.strides[k][r - 1];
        }
        let mut d = r - 1;
        while d > 0 && self.idx[d] == l.dims[d] {
            for k in 0..N {
                self.offs[k] = self.offs[k] - l.dims[d] * l.strides[k][d] + l.strides[k][d - 1];
            }
            self.idx[d] = 0;
            d -= 1;
            self.idx[d] += 1;
        }
        Some(item)
    }
}
