//! An AVX-512 f32 GEMM for the small per-member shapes of an ensemble (d = 64, head size 16,
//! a few hundred rows), giving exactly matrixmultiply's bits.
//!
//! matrixmultiply (what ndarray calls) packs both operands for every product and, as built
//! here, uses its 8×8 AVX2+FMA microkernel; for these shapes the packing costs about as much
//! as the arithmetic. This kernel reads A in place (one broadcast per element), reads B rows
//! in place when they are contiguous (packing B only when it is transposed, once per call),
//! and keeps an MR × 16·NV tile of C in zmm registers.
//!
//! Bits: matrixmultiply's FMA kernel computes every output as one FMA chain over p = 0..k in
//! increasing order from a +0 accumulator, per block of `KC` = 256 values of p, and stores
//! `fma(1, chain, c)` with c = +0 for the first block and the running sum after it. This
//! kernel does the same arithmetic in the same order (an FMA's product commutes, and
//! `fma(1, x, c)` is the correctly rounded x + c), so it changes speed, never bits, on
//! every CPU where it runs: those with AVX-512F, where matrixmultiply would pick that FMA
//! kernel. Tiles only decide which outputs are computed together.

#![allow(unsafe_code)] // SIMD intrinsics and raw tile pointers; every bound is checked in `gemm_rows`.

use std::cell::RefCell;

/// matrixmultiply's `S_KC`: the reduction is split into blocks of this many terms, each its
/// own FMA chain, added in order.
const KC: usize = 256;

/// Whether this CPU runs the kernel (AVX-512F and FMA; the check is cached by std).
#[inline]
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

thread_local! {
    /// B transposed into rows of `n` padded to 16, reused by every call on this thread.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Cᵀ of a product computed transposed (see [`gemm_rows`]), reused likewise.
    static TRANSPOSED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows r0..r0 + yc.len()/n of one group's product op(A)·op(B) into `yc` (row-major, whole
/// rows), A: [m, k] ([k, m] if `ta`), B: [k, n] ([n, k] if `tb`). Returns false (nothing
/// written) where the kernel is unavailable; the caller then uses matrixmultiply.
pub(crate) fn gemm_rows(ag: &[f32], bg: &[f32], yc: &mut [f32], r0: usize, (m, k, n): (usize, usize, usize), ta: bool, tb: bool) -> bool {
    if !available() || n == 0 {
        return false;
    }
    let rows = yc.len() / n;
    assert!(ag.len() >= m * k && bg.len() >= k * n && yc.len() == rows * n && r0 + rows <= m, "gemm_rows: operand sizes");
    if rows == 0 {
        return true;
    }
    if k == 0 {
        yc.fill(0.0);
        return true;
    }
    // A(i, p) = a[i·a_rs + p·a_cs] relative to row r0.
    let (a_rs, a_cs, a_off) = if ta { (1, m, r0) } else { (k, 1, r0 * k) };
    #[cfg(target_arch = "x86_64")]
    {
        if tb && rows < n && k >= 128 {
            // Few rows against a wide Bᵀ (a weight's transpose in a backward pass): packing
            // Bᵀ (k × n) would cost about what the product does. Compute Cᵀ = B · Aᵀ instead,
            // packing only Aᵀ (k × rows), and transpose Cᵀ into C (element by element, which
            // pays only for long reductions: with k = 16 or 64 it made paper1l slower). Every
            // output is the same FMA chain over p (an FMA's product commutes): same bits.
            let rpad = rows.div_ceil(16) * 16;
            PACKED.with_borrow_mut(|packed| {
                TRANSPOSED.with_borrow_mut(|ct| {
                    if ct.len() < n * rows {
                        ct.resize(n * rows, 0.0);
                    }
                    // Aᵀ(p, i) for i in r0..r0 + rows: in place when A is stored transposed.
                    let (at, at_rs) = if ta {
                        (&ag[r0..], m)
                    } else {
                        if packed.len() < k * rpad {
                            packed.resize(k * rpad, 0.0);
                        }
                        // SAFETY: A's rows r0..r0+rows hold rows·k values; `packed` k·rpad.
                        unsafe { x86::pack_transposed(ag[r0 * k..].as_ptr(), k, rows, packed.as_mut_ptr(), rpad) };
                        (&packed[..], rpad)
                    };
                    // SAFETY: B is n rows of k (A operand, row stride k); Aᵀ has k rows of at
                    // least `rows` readable values at stride at_rs (the kernel masks to rows;
                    // in place, row p ends at p·m + r0 + rows ≤ (p + 1)·m); Cᵀ holds n·rows.
                    unsafe { x86::gemm(bg.as_ptr(), k, 1, at.as_ptr(), at_rs, (n, k, rows), ct.as_mut_ptr()) };
                    for (i, yr) in yc.chunks_exact_mut(n).enumerate() {
                        for (j, y) in yr.iter_mut().enumerate() {
                            *y = ct[j * rows + i];
                        }
                    }
                });
            });
        } else if tb {
            let npad = n.div_ceil(16) * 16;
            PACKED.with_borrow_mut(|packed| {
                if packed.len() < k * npad {
                    packed.resize(k * npad, 0.0);
                }
                // SAFETY: B holds n rows of k; `packed` holds k rows of npad (a multiple of 16).
                unsafe { x86::pack_transposed(bg.as_ptr(), k, n, packed.as_mut_ptr(), npad) };
                // SAFETY: checked above: A's rows r0..r0+rows and all k columns lie in `ag`,
                // B has k rows of `npad` readable values (the kernel masks the last vector
                // to n), C has `rows` rows of n.
                unsafe { x86::gemm(ag[a_off..].as_ptr(), a_rs, a_cs, packed.as_ptr(), npad, (rows, k, n), yc.as_mut_ptr()) };
            });
        } else {
            // SAFETY: as above, with B read in place: k rows of n (the last vector masked).
            unsafe { x86::gemm(ag[a_off..].as_ptr(), a_rs, a_cs, bg.as_ptr(), n, (rows, k, n), yc.as_mut_ptr()) };
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a_rs, a_cs, a_off, tb);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::KC;

    /// C[rows, n] (row stride n) = A[rows, k] · B[k, n] with A(i, p) at a[i·a_rs + p·a_cs] and
    /// B(p, j) at b[p·b_rs + j]; B's rows are read in whole vectors up to n, masked.
    ///
    /// # Safety
    /// AVX-512F and FMA must be present, and the pointers valid for those extents.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn gemm(a: *const f32, a_rs: usize, a_cs: usize, b: *const f32, b_rs: usize, (rows, k, n): (usize, usize, usize), c: *mut f32) {
        let nvt = n.div_ceil(16);
        let mut jv = 0;
        while jv < nvt {
            // Column blocks of up to 4 vectors; rows in tiles of 4 (8 when the block is
            // narrow, so that there are enough independent FMA chains to hide latency).
            let nv = (nvt - jv).min(4);
            let tail = n - (jv + nv - 1) * 16;
            let mask: __mmask16 = if tail >= 16 { 0xFFFF } else { (1u16 << tail) - 1 };
            let mr = if nv >= 3 { 4 } else { 8 };
            let (bj, cj) = unsafe { (b.add(jv * 16), c.add(jv * 16)) };
            let mut i = 0;
            while i < rows {
                let r = (rows - i).min(mr);
                let (ai, ci) = unsafe { (a.add(i * a_rs), cj.add(i * n)) };
                macro_rules! go {
                    ($($mr:literal),*) => {
                        match (r, nv) {
                            $(
                                ($mr, 1) => unsafe { tile::<$mr, 1>(k, ai, a_rs, a_cs, bj, b_rs, mask, ci, n) },
                                ($mr, 2) => unsafe { tile::<$mr, 2>(k, ai, a_rs, a_cs, bj, b_rs, mask, ci, n) },
                                ($mr, 3) => unsafe { tile::<$mr, 3>(k, ai, a_rs, a_cs, bj, b_rs, mask, ci, n) },
                                ($mr, 4) => unsafe { tile::<$mr, 4>(k, ai, a_rs, a_cs, bj, b_rs, mask, ci, n) },
                            )*
                            _ => unreachable!("tile {r}x{nv}"),
                        }
                    };
                }
                go!(1, 2, 3, 4, 5, 6, 7, 8);
                i += r;
            }
            jv += nv;
        }
    }

    /// packed[p·npad + j] = b[j·k + p] for p < k, j < npad (zero for j ≥ n): B [n, k]
    /// transposed in 16 × 16 blocks held in registers.
    ///
    /// # Safety
    /// AVX-512F; b valid for n·k values, packed for k·npad, npad a multiple of 16 ≥ n.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_transposed(b: *const f32, k: usize, n: usize, packed: *mut f32, npad: usize) {
        for j0 in (0..npad).step_by(16) {
            for p0 in (0..k).step_by(16) {
                let kp = (k - p0).min(16);
                let pmask: __mmask16 = if kp == 16 { 0xFFFF } else { (1u16 << kp) - 1 };
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, ri) in r.iter_mut().enumerate() {
                    if j0 + i < n {
                        *ri = unsafe { _mm512_maskz_loadu_ps(pmask, b.add((j0 + i) * k + p0)) };
                    }
                }
                let out = transpose16(&r);
                for (q, o) in out.iter().enumerate().take(kp) {
                    unsafe { _mm512_storeu_ps(packed.add((p0 + q) * npad + j0), *o) };
                }
            }
        }
    }

    /// out[q] lane i = r[i] lane q.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
        // Pairs of rows interleaved (32-bit), then quads (64-bit): u[4i + e] holds, in 128-bit
        // lane L, element 4L + e of rows 4i..4i+3.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let (a, b, c, d) = (_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2]), _mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3]));
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
        }
        // Then a 4 × 4 transpose of 128-bit lanes for each e.
        let mut out = [_mm512_setzero_ps(); 16];
        for e in 0..4 {
            let v0 = _mm512_shuffle_f32x4::<0x44>(u[e], u[4 + e]);
            let v1 = _mm512_shuffle_f32x4::<0xEE>(u[e], u[4 + e]);
            let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + e], u[12 + e]);
            let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + e], u[12 + e]);
            out[e] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
            out[4 + e] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
            out[8 + e] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
            out[12 + e] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
        }
        out
    }

    /// One MR × 16·NV tile of C; the last vector of a row is masked by `mask`.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn tile<const MR: usize, const NV: usize>(
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const f32,
        b_rs: usize,
        mask: __mmask16,
        c: *mut f32,
        c_rs: usize,
    ) {
        let mut total = [[_mm512_setzero_ps(); NV]; MR];
        let mut p0 = 0;
        while p0 < k {
            let end = (p0 + KC).min(k);
            let mut acc = [[_mm512_setzero_ps(); NV]; MR];
            for p in p0..end {
                let bp = unsafe { b.add(p * b_rs) };
                let mut bv = [_mm512_setzero_ps(); NV];
                for v in 0..NV {
                    bv[v] = unsafe { if v + 1 == NV { _mm512_maskz_loadu_ps(mask, bp.add(16 * v)) } else { _mm512_loadu_ps(bp.add(16 * v)) } };
                }
                for i in 0..MR {
                    let av = _mm512_set1_ps(unsafe { *a.add(i * a_rs + p * a_cs) });
                    for v in 0..NV {
                        acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
                    }
                }
            }
            // matrixmultiply's store: fma(1, chain, c), c = +0 before the first block.
            for i in 0..MR {
                for v in 0..NV {
                    total[i][v] = _mm512_add_ps(acc[i][v], total[i][v]);
                }
            }
            p0 = end;
        }
        for i in 0..MR {
            let ci = unsafe { c.add(i * c_rs) };
            for v in 0..NV {
                unsafe {
                    if v + 1 == NV {
                        _mm512_mask_storeu_ps(ci.add(16 * v), mask, total[i][v]);
                    } else {
                        _mm512_storeu_ps(ci.add(16 * v), total[i][v]);
                    }
                }
            }
        }
    }
}
