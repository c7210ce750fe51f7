//! The element type of a [`crate::CpuBackend`]: `f32` (the default, like the GPU) or `f64`
//! (for finite-difference checks and reference runs).

use std::fmt;
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, Neg, SubAssign};

use ndarray::LinalgScalar;

/// A float a [`crate::CpuBackend`] can compute in. Implemented for `f32` and `f64` only.
///
/// The math functions are methods of this trait (not `num_traits`) so kernels generic over
/// `F` need nothing else in scope.
pub trait Float:
    LinalgScalar
    + Send
    + Sync
    + Copy
    + Default
    + PartialOrd
    + fmt::Debug
    + fmt::Display
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Neg<Output = Self>
    + Sum
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    /// `Backend::name` of a `CpuBackend` computing in this type.
    const BACKEND_NAME: &'static str;

    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_usize(x: usize) -> Self {
        Self::from_f64(x as f64)
    }
    /// e^x. For f32 a vectorisable polynomial (about 1 ulp; results below 2^-126 flush to 0),
    /// for f64 the standard library's.
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
    fn is_nan(self) -> bool;
    /// The slice as f32 when `Self` is f32 (kernels with an f32-only fast path).
    fn as_f32(x: &[Self]) -> Option<&[f32]>;
    fn as_f32_mut(x: &mut [Self]) -> Option<&mut [f32]>;
    /// The larger of two values; NaN if either is NaN (PyTorch's `maximum`).
    fn max_nan(self, other: Self) -> Self {
        if self.is_nan() || other.is_nan() {
            self + other
        } else if other > self {
            other
        } else {
            self
        }
    }
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $exp:path, $as32:expr, $as32mut:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const BACKEND_NAME: &'static str = $name;

            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn as_f32(x: &[Self]) -> Option<&[f32]> {
                $as32(x)
            }
            #[inline(always)]
            fn as_f32_mut(x: &mut [Self]) -> Option<&mut [f32]> {
                $as32mut(x)
            }
        }
    };
}

impl_float!(f32, "cpu", exp_f32, Some, Some);
impl_float!(f64, "cpu-f64", f64::exp, |_| None, |_| None);

/// e^x in f32 without a libm call, so loops over it vectorise (libm's expf does not, and
/// softmax, GELU and sigmoid are all exp-bound). Cephes' expf: x = n ln2 + r, |r| ≤ ln2/2,
/// degree-6 polynomial for e^r, then 2^n through the exponent bits; about 1 ulp. Results
/// below f32's normal range flush to 0; above it give +inf; NaN stays NaN. Only selects,
/// float and integer arithmetic: no branches, no calls.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_54; // ln(2^-126)
    const HI: f32 = 88.722_84; // ln(f32::MAX)
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: t = v + ROUND holds round(v) in its low bits
    let xc = x.clamp(LO, HI); // NaN passes through
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32); // n ∈ [-126, 128]
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n as two normal factors (n = 128 alone has no f32 exponent).
    let n1 = ni >> 1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - n1 + 127) as u32) << 23);
    let e = y * s1 * s2;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_77;
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }
}

#[cfg(test)]
mod speed {
    /// `cargo test --release -p sparsevar-cpu --lib -- --ignored --nocapture exp_speed`
    #[test]
    #[ignore]
    fn exp_speed() {
        let x: Vec<f32> = (0..1 << 16).map(|i| -(i as f32) * 1e-4).collect();
        let mut y = vec![0.0f32; x.len()];
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..16 {
                for (o, &v) in y.iter_mut().zip(&x) {
                    *o = super::exp_f32(v);
                }
            }
            let a = t.elapsed();
            let t = std::time::Instant::now();
            for _ in 0..16 {
                for (o, &v) in y.iter_mut().zip(&x) {
                    *o = v.exp();
                }
            }
            let b = t.elapsed();
            println!("exp_f32 {a:?}, libm expf {b:?} per 2^20 values ({})", std::hint::black_box(&y)[5]);
        }
    }
}
