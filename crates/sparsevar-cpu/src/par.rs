//! Work partitioning and fixed-order reductions: the two places determinism is decided.
//!
//! Every parallel loop here splits its *output* into chunks whose size is a constant or a
//! function of the kernel's shape only, never of the thread count, and each output element is
//! computed entirely inside one chunk. Serial and parallel runs walk the very same chunks, so
//! the threshold below changes speed, never bits.

use rayon::prelude::*;

use crate::Float;

/// Below this much work (output or input elements; matmul counts multiply-adds scaled down to
/// that unit) a launch called from inside a rayon pool runs on the calling thread. Waking a
/// sleeping worker costs several µs on a virtual machine: with 2^15 one paper1l member at
/// T = 64 trained 20% slower on 2 threads than on 1 (its 10 µs matmuls were split).
pub(crate) const PAR_WORK: usize = 1 << 17;

/// The same threshold for a caller outside any rayon pool (e.g. a training loop on the main
/// thread): each parallel launch then injects a job into the global pool and sleeps until a
/// worker finishes it, two thread hand-offs of several µs each, so it pays off only for larger
/// work. Run the loop inside `ThreadPool::install` to get the lower threshold.
pub(crate) const PAR_WORK_COLD: usize = 1 << 18;

/// Whether `work` is worth splitting across the pool. Only speed depends on this: serial
/// runs walk the same partition.
#[inline]
pub(crate) fn go_parallel(work: usize) -> bool {
    if SERIAL.get() {
        return false;
    }
    if rayon::current_thread_index().is_some() { work >= PAR_WORK } else { work >= PAR_WORK_COLD }
}

thread_local! {
    /// Set while this thread runs one member's kernels (`Backend::run_members`): the
    /// members already keep every thread busy.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with every launch on this thread serial (speed only: same partitions).
pub(crate) fn serial<R>(f: impl FnOnce() -> R) -> R {
    let before = SERIAL.replace(true);
    let out = f();
    SERIAL.set(before);
    out
}

/// Output elements per task for elementwise kernels.
pub(crate) const ELEM_CHUNK: usize = 1 << 14;

/// Run `f(first_index, chunk)` over consecutive `chunk`-sized pieces of `out`, in parallel
/// when [`go_parallel`] says so. `chunk` must depend only on the kernel's shape.
#[inline]
pub(crate) fn for_chunks<F: Float>(out: &mut [F], chunk: usize, work: usize, f: impl Fn(usize, &mut [F]) + Sync + Send) {
    if out.is_empty() {
        return;
    }
    let chunk = chunk.max(1);
    // `wide` helps a small `f` only: a kernel's loop stays out of line, so the hot kernels
    // put theirs in a `twin!` function.
    let run = |(i, c): (usize, &mut [F])| wide(|| f(i * chunk, c));
    if !go_parallel(work) || out.len() <= chunk {
        out.chunks_mut(chunk).enumerate().for_each(run);
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(run);
    }
}

/// `twin! { fn name<F: Float>(args) { body } }` defines `name`, which runs `body` compiled
/// for AVX-512 where the CPU has it and as built otherwise (same bits, as for [`wide`]). The
/// body goes into an `#[inline(always)]` function called straight from a `#[target_feature]`
/// copy: that is what puts a kernel's loop into the wide copy. A closure handed to [`wide`]
/// is inlined only while it is small; a whole kernel's loop stays out of line, compiled for
/// the baseline CPU (SSE2), which is how most kernels ran before this existed.
macro_rules! twin {
    ($(#[$attr:meta])* fn $name:ident<F: Float>($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        #[inline]
        #[allow(unsafe_code)]
        fn $name<F: Float>($($arg: $ty),*) {
            #[inline(always)]
            fn body<F: Float>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
            fn wide<F: Float>($($arg: $ty),*) {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if crate::gemm512::available() {
                // SAFETY: the CPU has the features (checked just above).
                return unsafe { wide($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(crate) use twin;

/// Run `f` compiled for AVX-512 where the CPU has it (`f` inlines into a function with
/// those target features), else as built. Bits do not change: Rust never contracts a
/// multiply and an add into an FMA, and every other float operation is correctly rounded
/// whatever the vector width; only the loops get 16 lanes instead of SSE2's 4.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if crate::gemm512::available() {
        // SAFETY: the CPU has the features (checked just above).
        #[allow(unsafe_code)]
        return unsafe { wide_avx512(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
#[allow(unsafe_code)]
unsafe fn wide_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Chunk size, in elements, for kernels whose independent item is a whole row of `cols`:
/// a whole number of rows, about `ELEM_CHUNK / 4` elements (row kernels do more per element).
#[inline]
pub(crate) fn row_chunk(cols: usize) -> usize {
    let rows = ((ELEM_CHUNK / 4) / cols.max(1)).max(1);
    rows * cols.max(1)
}

/// Σ term(a_i, b_i) in a fixed order: eight interleaved partial sums (lane l takes i ≡ l mod 8),
/// combined pairwise, then the tail added last. The order depends only on the length, so the
/// result is as reproducible as a plain left-to-right sum, and it vectorises.
#[inline(always)]
pub(crate) fn fold8<F: Float>(a: &[F], b: &[F], term: impl Fn(F, F) -> F) -> F {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [F::ZERO; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += term(x[l], y[l]);
        }
    }
    let mut tail = F::ZERO;
    for (&x, &y) in ra.iter().zip(rb) {
        tail += term(x, y);
    }
    (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + tail
}

/// Σ x_i in the fixed order of [`fold8`].
#[inline(always)]
pub(crate) fn sum8<F: Float>(x: &[F]) -> F {
    fold8(x, x, |a, _| a)
}

/// Largest element (NaN-propagating), in sixteen interleaved lanes so that it vectorises.
/// The maximum does not depend on the order except for the sign of a zero maximum, and its
/// users subtract it (x − (±0) is x) or add it to a positive log, so their bits do not either.
#[inline(always)]
pub(crate) fn max_of<F: Float>(x: &[F]) -> F {
    let low = F::from_f64(f64::NEG_INFINITY);
    let mut lanes = [low; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            lanes[l] = lanes[l].max_nan(c[l]);
        }
    }
    tail.iter().fold(lanes.iter().fold(low, |m, &v| m.max_nan(v)), |m, &v| m.max_nan(v))
}
