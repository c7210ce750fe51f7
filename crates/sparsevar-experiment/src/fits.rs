//! Scaling laws for m*(T): a + b·ln T against c·T^α, by least squares, with the statistics a
//! reader needs to judge them (R² in the same space for both, the end-to-end ratio, and a
//! one-line verdict). Also the Wilson score interval for success rates.

use serde::{Deserialize, Serialize};

use crate::results::nan_if_null;

/// One fitted law.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fit {
    /// "log": m = a + b ln T; "power": m = c T^alpha (a = c, b = alpha).
    pub law: String,
    #[serde(deserialize_with = "nan_if_null")]
    pub a: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub b: f64,
    /// Coefficient of determination of the fitted m against the measured m (linear space,
    /// for both laws, so they compare).
    #[serde(deserialize_with = "nan_if_null")]
    pub r2: f64,
}

impl Fit {
    pub fn predict(&self, t: f64) -> f64 {
        if self.law == "log" { self.a + self.b * t.ln() } else { self.a * t.powf(self.b) }
    }
}

/// Both fits and their comparison for one model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScalingFit {
    pub log: Fit,
    pub power: Fit,
    /// m*(T_max) / m*(T_min).
    #[serde(deserialize_with = "nan_if_null")]
    pub ratio: f64,
    pub verdict: String,
    /// How many (T, value) points were fitted (0 in files written before it was recorded).
    /// Through two points both two-parameter laws pass exactly: R² is then undefined (NaN,
    /// null in JSON) and the verdict gives only the two-point exponent.
    #[serde(default)]
    pub points: usize,
}

/// Fewest points at which the two laws are compared: two parameters each, so at least one
/// point more than a law needs to pass exactly.
pub const MIN_POINTS_TO_COMPARE: usize = 3;

impl ScalingFit {
    /// Whether the fit says which law fits better (enough points; files written before the
    /// count was recorded are taken as they were written).
    pub fn compares_laws(&self) -> bool {
        self.points == 0 || self.points >= MIN_POINTS_TO_COMPARE
    }
}

fn least_squares(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - slope * mx, slope)
}

fn r_squared(y: &[f64], pred: &[f64]) -> f64 {
    let my = y.iter().sum::<f64>() / y.len() as f64;
    let ss_tot: f64 = y.iter().map(|v| (v - my).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(pred).map(|(a, b)| (a - b).powi(2)).sum();
    // Constant data: a law that reproduces it up to rounding (a power law with α = 0 is
    // exp(ln y), not exactly y) fits it perfectly.
    let scale: f64 = y.iter().map(|v| v * v).sum();
    if ss_tot == 0.0 { if ss_res <= 1e-20 * scale { 1.0 } else { 0.0 } } else { 1.0 - ss_res / ss_tot }
}

/// Fit m*(T) for the points (T, m*) (at least two distinct T).
pub fn fit_scaling(points: &[(usize, f64)]) -> Option<ScalingFit> {
    fit_scaling_of(points, "m*")
}

/// [`fit_scaling`] of any quantity that grows with T (`what` names it in the verdict, e.g.
/// "steps" for the steps to learn in the i.i.d. regime).
pub fn fit_scaling_of(points: &[(usize, f64)], what: &str) -> Option<ScalingFit> {
    if points.len() < 2 {
        return None;
    }
    let t: Vec<f64> = points.iter().map(|p| p.0 as f64).collect();
    let m: Vec<f64> = points.iter().map(|p| p.1).collect();
    let lnt: Vec<f64> = t.iter().map(|v| v.ln()).collect();
    let (a, b) = least_squares(&lnt, &m);
    let log_pred: Vec<f64> = lnt.iter().map(|x| a + b * x).collect();
    let log = Fit { law: "log".into(), a, b, r2: r_squared(&m, &log_pred) };
    // The power law is fitted in log-log space (where it is linear), judged in linear space.
    let lnm: Vec<f64> = m.iter().map(|v| v.ln()).collect();
    let (lc, alpha) = least_squares(&lnt, &lnm);
    let c = lc.exp();
    let pow_pred: Vec<f64> = t.iter().map(|x| c * x.powf(alpha)).collect();
    let power = Fit { law: "power".into(), a: c, b: alpha, r2: r_squared(&m, &pow_pred) };
    let (imin, imax) = ((0..t.len()).min_by(|&i, &j| t[i].total_cmp(&t[j])).unwrap(), (0..t.len()).max_by(|&i, &j| t[i].total_cmp(&t[j])).unwrap());
    let ratio = m[imax] / m[imin];
    if points.len() < MIN_POINTS_TO_COMPARE {
        // Both laws pass through two points exactly: no R² to compare, only the exponent of
        // the line through them.
        let verdict = format!(
            "two points only: {what} grows ×{:.2} from T={} to T={}, a two-point exponent α = {:.2}; at least {MIN_POINTS_TO_COMPARE} T are needed to tell a log law from a power law",
            ratio, t[imin], t[imax], alpha
        );
        let (log, power) = (Fit { r2: f64::NAN, ..log }, Fit { r2: f64::NAN, ..power });
        return Some(ScalingFit { log, power, ratio, verdict, points: points.len() });
    }
    let verdict = if log.r2 >= power.r2 {
        format!(
            "logarithmic: {what} ≈ {:.0} + {:.0}·ln T fits better (R² {:.3} vs {:.3} for the power law, α = {:.2}); {what} grows ×{:.2} from T={} to T={}",
            a, b, log.r2, power.r2, alpha, ratio, t[imin], t[imax]
        )
    } else {
        format!(
            "power law: {what} ≈ {:.1}·T^{:.2} fits better (R² {:.3} vs {:.3} for a + b·ln T); {what} grows ×{:.2} from T={} to T={}",
            c, alpha, power.r2, log.r2, ratio, t[imin], t[imax]
        )
    };
    Some(ScalingFit { log, power, ratio, verdict, points: points.len() })
}

/// Wilson score interval (95%) for k successes out of n.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959963984540054;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    // Clean the rounding residue at the ends (k = 0 or k = n gives exactly 0 or 1).
    let clean = |x: f64| {
        if x.abs() < 1e-12 {
            0.0
        } else if (1.0 - x).abs() < 1e-12 {
            1.0
        } else {
            x
        }
    };
    (clean((centre - half).max(0.0)), clean((centre + half).min(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_log_law_is_recovered_and_preferred() {
        let pts: Vec<(usize, f64)> = [8usize, 16, 32, 64, 128].iter().map(|&t| (t, 100.0 + 50.0 * (t as f64).ln())).collect();
        let f = fit_scaling(&pts).unwrap();
        assert!((f.log.a - 100.0).abs() < 1e-9 && (f.log.b - 50.0).abs() < 1e-9);
        assert!((f.log.r2 - 1.0).abs() < 1e-12);
        assert!(f.log.r2 > f.power.r2);
        assert!(f.verdict.starts_with("logarithmic"));
    }

    #[test]
    fn exact_power_law_is_recovered_and_preferred() {
        let pts: Vec<(usize, f64)> = [8usize, 16, 32, 64].iter().map(|&t| (t, 3.0 * (t as f64).powf(1.5))).collect();
        let f = fit_scaling(&pts).unwrap();
        assert!((f.power.a - 3.0).abs() < 1e-9 && (f.power.b - 1.5).abs() < 1e-9);
        assert!(f.power.r2 > f.log.r2);
        assert!(f.verdict.starts_with("power law"));
        assert!((f.ratio - 8f64.powf(1.5)).abs() < 1e-9);
    }

    #[test]
    fn a_noisy_power_law_gives_back_its_exponent() {
        // Steps to learn ≈ 40·T^1.3 with a fixed ±15% multiplicative scatter (the seeds' spread).
        let noise = [1.15, 0.87, 1.08, 0.9, 1.12, 0.95];
        let pts: Vec<(usize, f64)> = [8usize, 12, 16, 24, 32, 64].iter().zip(noise).map(|(&t, e)| (t, 40.0 * (t as f64).powf(1.3) * e)).collect();
        let f = fit_scaling_of(&pts, "steps").unwrap();
        assert!((f.power.b - 1.3).abs() < 0.1, "exponent {}", f.power.b);
        assert!(f.power.r2 > 0.95 && f.power.r2 > f.log.r2, "{f:?}");
        assert!(f.verdict.starts_with("power law: steps ≈"), "{}", f.verdict);
        // A different exponent is told apart: T^0.5 data does not give 1.3.
        let flat: Vec<(usize, f64)> = pts.iter().map(|&(t, _)| (t, 40.0 * (t as f64).sqrt())).collect();
        assert!((fit_scaling_of(&flat, "steps").unwrap().power.b - 0.5).abs() < 1e-9);
    }

    #[test]
    fn constant_data_fits_both_laws_perfectly() {
        let f = fit_scaling(&[(4, 64.0), (6, 64.0), (8, 64.0)]).unwrap();
        assert!(f.power.b.abs() < 1e-12 && f.log.b.abs() < 1e-12, "{f:?}");
        assert_eq!((f.log.r2, f.power.r2), (1.0, 1.0));
    }

    #[test]
    fn two_points_give_the_two_point_exponent_and_no_comparison() {
        // The i.i.d. sweep that printed "logarithmic … fits better (R² 1.000 vs 1.000)".
        let pts = [(8usize, 2340.0), (16, 4000.0)];
        let f = fit_scaling_of(&pts, "steps").unwrap();
        assert_eq!(f.points, 2);
        assert!(!f.compares_laws());
        let alpha = (4000.0f64 / 2340.0).ln() / 2f64.ln();
        assert!((f.power.b - alpha).abs() < 1e-12, "{f:?}");
        assert!(f.log.r2.is_nan() && f.power.r2.is_nan(), "no R² through two points: {f:?}");
        assert!(f.verdict.starts_with("two points only: steps grows ×1.71 from T=8 to T=16, a two-point exponent α = 0.77"), "{}", f.verdict);
        assert!(!f.verdict.contains("better") && !f.verdict.contains("R²"), "{}", f.verdict);
        // A third point brings the comparison back.
        let f3 = fit_scaling_of(&[(8, 2340.0), (16, 4000.0), (32, 7000.0)], "steps").unwrap();
        assert!(f3.compares_laws() && f3.verdict.contains("fits better") && f3.power.r2.is_finite(), "{}", f3.verdict);
        // summary.json writes the undefined R² as null and reads it back.
        let back: ScalingFit = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert!(back.log.r2.is_nan() && back.points == 2);
        // A file written before `points` existed still reads, and still compares.
        let old = serde_json::to_string(&f3).unwrap().replace(",\"points\":3", "");
        let old: ScalingFit = serde_json::from_str(&old).unwrap();
        assert!(old.points == 0 && old.compares_laws());
    }

    #[test]
    fn wilson_matches_known_values() {
        // 8 of 10: the textbook interval is (0.490, 0.943).
        let (lo, hi) = wilson(8, 10);
        assert!((lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        let (lo, _) = wilson(0, 5);
        assert_eq!(lo, 0.0);
    }
}
