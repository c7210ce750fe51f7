//! Data movement: Gather / ScatterAdd, Permute, Narrow / NarrowBackward.

use rayon::prelude::*;

use crate::Float;
use crate::par::{ELEM_CHUNK, for_chunks, go_parallel, row_chunk};
use crate::rows::index_of;
use crate::strided::Layout;

/// y[g, i, :] = table[g, idx[g, i], :].
pub(crate) fn gather<F: Float>((table_rows, rows, cols): (usize, usize, usize), table: &[F], idx: &[F], y: &mut [F]) -> Result<(), String> {
    for &v in idx {
        index_of(v, table_rows, "gather")?;
    }
    if cols == 0 {
        return Ok(());
    }
    let work = y.len();
    for_chunks(y, row_chunk(cols), work, |start, yc| {
        for (i, row) in yc.chunks_mut(cols).enumerate() {
            let r = start / cols + i; // = g * rows + i
            let g = r / rows;
            let t = idx[r].to_f64() as usize;
            let src = (g * table_rows + t) * cols;
            row.copy_from_slice(&table[src..src + cols]);
        }
    });
    Ok(())
}

/// dtable[g, idx[g, i], :] += dy[g, i, :] for i increasing: one group is one task, so each
/// table row receives its contributions in a fixed order.
pub(crate) fn scatter_add<F: Float>((table_rows, rows, cols): (usize, usize, usize), idx: &[F], dy: &[F], y: &mut [F]) -> Result<(), String> {
    for &v in idx {
        index_of(v, table_rows, "scatter_add")?;
    }
    y.fill(F::ZERO);
    if cols == 0 || table_rows == 0 {
        return Ok(());
    }
    let group = |g: usize, yg: &mut [F]| {
        for i in 0..rows {
            let t = idx[g * rows + i].to_f64() as usize;
            let src = &dy[(g * rows + i) * cols..(g * rows + i + 1) * cols];
            for (o, &v) in yg[t * cols..(t + 1) * cols].iter_mut().zip(src) {
                *o += v;
            }
        }
    };
    let per = table_rows * cols;
    if !go_parallel(dy.len() + y.len()) {
        y.chunks_mut(per).enumerate().for_each(|(g, yg)| group(g, yg));
    } else {
        y.par_chunks_mut(per).enumerate().for_each(|(g, yg)| group(g, yg));
    }
    Ok(())
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
    for_chunks(y, ELEM_CHUNK, x.len(), |start, yc| {
        layout.for_each_run(start, yc.len(), |pos, run, [o]| {
            let out = &mut yc[pos..pos + run];
            if si == 1 {
                out.copy_from_slice(&x[o..o + run]);
            } else {
                for (t, v) in out.iter_mut().enumerate() {
                    *v = x[o + t * si];
                }
            }
        });
    });
    Ok(())
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
