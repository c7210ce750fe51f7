//! Data movement: Gather / ScatterAdd, Permute, Narrow / NarrowBackward.

use rayon::prelude::*;

use crate::Float;
use crate::par::{ELEM_CHUNK, for_chunks, go_parallel, row_chunk, wide};
use crate::rows::index_of;
use crate::strided::Layout;

/// y[g, i, :] = table[g, idx[g, i], :].
pub(crate) fn gather<F: Float>((table_rows, rows, cols): (usize, usize, usize), table: &[F], idx: &[F], y: &mut [F]) -> Result<(), String> {
    check_indices(idx, table_rows, "gather")?;
    if cols == 0 {
        return Ok(());
    }
    let work = y.len();
    for_chunks(y, row_chunk(cols), work, |start, yc| {
        // Row r = g·rows + i of y, stepped along instead of divided out per row.
        let first = start / cols;
        let (g0, i0) = (first / rows, first % rows);
        let rows_here = yc.len() / cols;
        let ids = &idx[first..first + rows_here];
        match cols {
            4 => gather_rows::<F, 4>(table, table_rows, rows, (g0, i0), ids, yc),
            8 => gather_rows::<F, 8>(table, table_rows, rows, (g0, i0), ids, yc),
            _ => {
                let (mut g, mut i) = (g0, i0);
                for (row, &v) in yc.chunks_mut(cols).zip(ids) {
                    let src = (g * table_rows + v.to_f64() as usize) * cols;
                    copy_short(row, &table[src..src + cols]);
                    i += 1;
                    if i == rows {
                        (g, i) = (g + 1, 0);
                    }
                }
            }
        }
    });
    Ok(())
}

/// Gather's rows of a fixed width `K` (attention's heads): whole-row copies the compiler
/// keeps in registers.
#[inline(always)]
fn gather_rows<F: Float, const K: usize>(table: &[F], table_rows: usize, rows: usize, (mut g, mut i): (usize, usize), ids: &[F], y: &mut [F]) {
    for (row, &v) in y.chunks_exact_mut(K).zip(ids) {
        let src = (g * table_rows + checked_index(v)) * K;
        let from: &[F; K] = table[src..src + K].try_into().expect("K values");
        row.copy_from_slice(from);
        i += 1;
        if i == rows {
            (g, i) = (g + 1, 0);
        }
    }
}

/// An index that [`check_indices`] has passed (a whole number in 0..limit) as a usize,
/// without the saturating conversion's handling of NaN, negatives and overflow.
#[inline(always)]
fn checked_index<F: Float>(v: F) -> usize {
    // SAFETY: checked on entry to the kernel: finite, integral, in 0..limit.
    #[allow(unsafe_code)]
    unsafe {
        v.to_f64().to_int_unchecked::<usize>()
    }
}

/// Every index a whole number in 0..limit: checked branch-free (it vectorises), and only on
/// failure again one by one for the message naming the first bad one.
fn check_indices<F: Float>(idx: &[F], limit: usize, what: &str) -> Result<(), String> {
    let valid = |v: F| {
        let f = v.to_f64();
        let i = f as usize;
        i as f64 == f && i < limit
    };
    if wide(|| idx.iter().fold(true, |ok, &v| ok & valid(v))) {
        return Ok(());
    }
    idx.iter().try_for_each(|&v| index_of(v, limit, what).map(drop))
}

/// `dst.copy_from_slice(src)` for the short rows of attention (a few heads, a head's
/// width): an element loop in fixed-size pieces instead of a `memcpy` call per row.
#[inline(always)]
fn copy_short<F: Float>(dst: &mut [F], src: &[F]) {
    if dst.len() > 64 {
        dst.copy_from_slice(src);
        return;
    }
    let mut d = dst.chunks_exact_mut(4);
    let mut s = src.chunks_exact(4);
    for (o, i) in (&mut d).zip(&mut s) {
        let v: [F; 4] = [i[0], i[1], i[2], i[3]];
        o.copy_from_slice(&v);
    }
    for (o, &i) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *o = i;
    }
}

/// dtable[g, idx[g, i], :] += dy[g, i, :] for i increasing: one group is one task, so each
/// table row receives its contributions in a fixed order.
pub(crate) fn scatter_add<F: Float>((table_rows, rows, cols): (usize, usize, usize), idx: &[F], dy: &[F], y: &mut [F]) -> Result<(), String> {
    check_indices(idx, table_rows, "scatter_add")?;
    if cols == 0 || table_rows == 0 {
        y.fill(F::ZERO);
        return Ok(());
    }
    let group = |g: usize, yg: &mut [F]| {
        yg.fill(F::ZERO);
        let ids = &idx[g * rows..(g + 1) * rows];
        let dg = &dy[g * rows * cols..(g + 1) * rows * cols];
        match cols {
            4 => scatter_rows::<F, 4>(ids, dg, yg),
            8 => scatter_rows::<F, 8>(ids, dg, yg),
            _ => {
                for (&v, src) in ids.iter().zip(dg.chunks_exact(cols)) {
                    let t = v.to_f64() as usize;
                    for (o, &d) in yg[t * cols..(t + 1) * cols].iter_mut().zip(src) {
                        *o += d;
                    }
                }
            }
        }
    };
    let per = table_rows * cols;
    if !go_parallel(dy.len() + y.len()) {
        y.chunks_mut(per).enumerate().for_each(|(g, yg)| wide(|| group(g, yg)));
    } else {
        y.par_chunks_mut(per).enumerate().for_each(|(g, yg)| wide(|| group(g, yg)));
    }
    Ok(())
}

/// ScatterAdd's rows of a fixed width `K`, in the same order (i increasing).
#[inline(always)]
fn scatter_rows<F: Float, const K: usize>(ids: &[F], dg: &[F], yg: &mut [F]) {
    for (&v, src) in ids.iter().zip(dg.chunks_exact(K)) {
        let t = checked_index(v);
        let out: &mut [F; K] = (&mut yg[t * K..(t + 1) * K]).try_into().expect("K values");
        for k in 0..K {
            out[k] += src[k];
        }
    }
}

/// y.shape[i] = shape[perm[i]]: walk y in order, reading x through permuted strides. Any
/// rank: shapes with more than `MAX_RANK` axes left after merging take a plain serial loop.
pub(crate) fn permute<F: Float>(shape: &[usize], perm: &[usize], x: &[F], y: &mut [F]) -> Result<(), String> {
    let rank = shape.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
        return Err(format!("permute: {perm:?} is not a permutation of the axes of {shape:?}"));
    }
    let mut xs = vec![0usize; rank];
    let mut s = 1;
    for d in (0..rank).rev() {
        xs[d] = s;
        s *= shape[d];
    }
    let ydims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let ystr: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let Some(layout) = Layout::new(&ydims, [&ystr]) else {
        permute_any_rank(&ydims, &ystr, x, y);
        return Ok(());
    };
    let [si] = layout.inner_strides();
    if si != 1
        && let Some(b) = (0..layout.rank).find(|&d| layout.strides[0][d] == 1)
    {
        permute_tiled(&layout, b, x, y);
        return Ok(());
    }
    if si == 1 && layout.rank == 3 && y.len() <= ELEM_CHUNK {
        // One task of blocks moved whole ([A, B, C] → [B, A, C], attention's heads to the
        // front and back): two plain loops instead of the general walk's odometer step per
        // block, which cost as much as moving a block of 16.
        let (d, st) = (&layout.dims, &layout.strides[0]);
        let c = d[2];
        for (i, yi) in y.chunks_exact_mut(d[1] * c).enumerate() {
            for (j, yj) in yi.chunks_exact_mut(c).enumerate() {
                let o = i * st[0] + j * st[1];
                copy_short(yj, &x[o..o + c]);
            }
        }
        return Ok(());
    }
    for_chunks(y, ELEM_CHUNK, x.len(), |start, yc| {
        layout.for_each_run(start, yc.len(), |pos, run, [o]| {
            let out = &mut yc[pos..pos + run];
            if si == 1 {
                copy_short(out, &x[o..o + run]);
            } else {
                for (t, v) in out.iter_mut().enumerate() {
                    *v = x[o + t * si];
                }
            }
        });
    });
    Ok(())
}

/// A permutation that moves x's contiguous axis `b` away from y's innermost axis `a`: a
/// transpose of the (b, a) planes in tiles, so that reads run along x's rows and writes
/// along y's rows (element by element, one strided side, costs a cache line per element
/// once a plane outgrows L1). Tasks are y's contiguous blocks over the axes before `b`.
fn permute_tiled<F: Float>(layout: &Layout<1>, b: usize, x: &[F], y: &mut [F]) {
    const TILE: usize = 32;
    let r = layout.rank;
    let a = r - 1;
    let dims = &layout.dims[..r];
    let xs = &layout.strides[0][..r];
    let mut ys = [0usize; crate::strided::MAX_RANK];
    let mut st = 1;
    for d in (0..r).rev() {
        ys[d] = st;
        st *= dims[d];
    }
    let region: usize = dims[b..].iter().product();
    let middle = &dims[b + 1..a];
    let (da, db, xa, yb) = (dims[a], dims[b], xs[a], ys[b]);
    for_chunks(y, region, x.len(), |start, yr| {
        // x offset of this block: its index over the axes before b.
        let mut q = start / region;
        let mut xbase = 0;
        for d in (0..b).rev() {
            xbase += (q % dims[d]) * xs[d];
            q /= dims[d];
        }
        let count: usize = middle.iter().product();
        for mi in 0..count {
            let (mut rem, mut xo, mut yo) = (mi, xbase, 0);
            for (k, &size) in middle.iter().enumerate().rev() {
                let i = rem % size;
                rem /= size;
                xo += i * xs[b + 1 + k];
                yo += i * ys[b + 1 + k];
            }
            if yb == da && matches!(da, 2 | 4 | 8) {
                // A few columns (attention's heads) and a contiguous plane: y's rows of da
                // interleave da rows of x; a fixed width lets the loop vectorise.
                let plane = &mut yr[yo..yo + db * da];
                let row = |ia: usize| &x[xo + ia * xa..xo + ia * xa + db];
                match da {
                    2 => interleave::<F, 2>(std::array::from_fn(row), plane),
                    4 => interleave::<F, 4>(std::array::from_fn(row), plane),
                    _ => interleave::<F, 8>(std::array::from_fn(row), plane),
                }
                continue;
            }
            if xa == db && matches!(db, 2 | 4 | 8) && yb >= da {
                // The way back: x's plane is da contiguous groups of db (the heads), each
                // spread over db rows of y.
                let group = &x[xo..xo + da * db];
                let mut rows = yr[yo..].chunks_mut(yb).map(|c| &mut c[..da]);
                match db {
                    2 => deinterleave::<F, 2>(group, std::array::from_fn(|_| rows.next().expect("db rows"))),
                    4 => deinterleave::<F, 4>(group, std::array::from_fn(|_| rows.next().expect("db rows"))),
                    _ => deinterleave::<F, 8>(group, std::array::from_fn(|_| rows.next().expect("db rows"))),
                }
                continue;
            }
            if da <= 16 && yb == da {
                // The same for other small widths, reading the da rows of x side by side.
                let mut src: [&[F]; 16] = [&[]; 16];
                for (ia, s) in src.iter_mut().enumerate().take(da) {
                    *s = &x[xo + ia * xa..xo + ia * xa + db];
                }
                for (ib, row) in yr[yo..yo + db * da].chunks_exact_mut(da).enumerate() {
                    for (o, s) in row.iter_mut().zip(&src) {
                        *o = s[ib];
                    }
                }
                continue;
            }
            for ib0 in (0..db).step_by(TILE) {
                for ia0 in (0..da).step_by(TILE) {
                    for ib in ib0..(ib0 + TILE).min(db) {
                        let row = &mut yr[yo + ib * yb + ia0..yo + ib * yb + (ia0 + TILE).min(da)];
                        for (t, o) in row.iter_mut().enumerate() {
                            *o = x[xo + ib + (ia0 + t) * xa];
                        }
                    }
                }
            }
        }
    });
}

/// out[ib·K + ia] = src[ia][ib]: K rows read side by side into rows of K.
#[inline(always)]
fn interleave<F: Float, const K: usize>(src: [&[F]; K], out: &mut [F]) {
    let n = out.len() / K;
    let src: [&[F]; K] = src.map(|s| &s[..n]);
    for (ib, row) in out.chunks_exact_mut(K).enumerate() {
        for ia in 0..K {
            row[ia] = src[ia][ib];
        }
    }
}

/// outs[ib][t] = group[t·K + ib]: groups of K spread over K rows.
#[inline(always)]
fn deinterleave<F: Float, const K: usize>(group: &[F], outs: [&mut [F]; K]) {
    let n = group.len() / K;
    for (t, g) in group.chunks_exact(K).enumerate().take(n) {
        for ib in 0..K {
            outs[ib][t] = g[ib];
        }
    }
}

/// Odometer over y's axes (x strides `ystr`), one element at a time.
fn permute_any_rank<F: Float>(ydims: &[usize], ystr: &[usize], x: &[F], y: &mut [F]) {
    let mut idx = vec![0usize; ydims.len()];
    let mut off = 0;
    for o in y.iter_mut() {
        *o = x[off];
        for d in (0..ydims.len()).rev() {
            idx[d] += 1;
            off += ystr[d];
            if idx[d] < ydims[d] {
                break;
            }
            off -= ydims[d] * ystr[d];
            idx[d] = 0;
        }
    }
}

/// y = x[:, start..start+len, :].
pub(crate) fn narrow<F: Float>((axis, start, len, inner): (usize, usize, usize, usize), x: &[F], y: &mut [F]) -> Result<(), String> {
    check_narrow(axis, start, len)?;
    let seg = len * inner;
    if seg == 0 {
        return Ok(());
    }
    let work = y.len();
    for_chunks(y, row_chunk(seg), work, |first, yc| {
        for (i, row) in yc.chunks_mut(seg).enumerate() {
            let o = first / seg + i;
            let src = (o * axis + start) * inner;
            row.copy_from_slice(&x[src..src + seg]);
        }
    });
    Ok(())
}

/// dx = dy inside start..start+len along the axis, zero elsewhere.
pub(crate) fn narrow_backward<F: Float>((axis, start, len, inner): (usize, usize, usize, usize), dy: &[F], dx: &mut [F]) -> Result<(), String> {
    check_narrow(axis, start, len)?;
    let full = axis * inner;
    if full == 0 {
        return Ok(());
    }
    let seg = len * inner;
    let work = dx.len();
    for_chunks(dx, row_chunk(full), work, |first, dc| {
        for (i, row) in dc.chunks_mut(full).enumerate() {
            let o = first / full + i;
            row[..start * inner].fill(F::ZERO);
            row[start * inner..start * inner + seg].copy_from_slice(&dy[o * seg..(o + 1) * seg]);
            row[start * inner + seg..].fill(F::ZERO);
        }
    });
    Ok(())
}

fn check_narrow(axis: usize, start: usize, len: usize) -> Result<(), String> {
    if start.checked_add(len).is_none_or(|end| end > axis) {
        return Err(format!("narrow: {start}..{start}+{len} outside an axis of {axis}"));
    }
    Ok(())
}
