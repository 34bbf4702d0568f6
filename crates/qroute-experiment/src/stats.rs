//! Per-arm statistics for A/B experiments.
//!
//! Everything here works from a [`Summary`] (count, mean, sample standard
//! deviation), so callers can keep running sums per arm and never hold raw
//! observations, except for [`quantile`], which needs them.
//!
//! The normal distribution functions ([`normal_cdf`], [`normal_quantile`],
//! [`erfc`]) are written out here to avoid a dependency.

/// Count, mean and sample standard deviation (divisor `n - 1`) of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
}

impl Summary {
    /// Summarises `xs` (two-pass, numerically stable). An empty slice gives
    /// `n = 0` with `mean` and `sd` NaN; a single value gives `sd = 0`.
    pub fn of(xs: &[f64]) -> Summary {
        let n = xs.len();
        if n == 0 {
            return Summary {
                n,
                mean: f64::NAN,
                sd: f64::NAN,
            };
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = if n < 2 {
            0.0
        } else {
            (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Summary { n, mean, sd }
    }

    /// Summarises observations that come in clusters (the requests of one
    /// experiment unit, which share a user and so are correlated). `mean` is
    /// the plain mean; `sd` is set so that [`Summary::std_error`] is the
    /// cluster-robust standard error of the mean,
    /// `sqrt(G/(G−1) · Σ_g (Σ_{i∈g} (x_i − x̄))²) / n` over `G` clusters,
    /// so every interval below accounts for the correlation. With fewer than
    /// two clusters it falls back to [`Summary::of`].
    pub fn clustered(obs: &[(u64, f64)]) -> Summary {
        let xs: Vec<f64> = obs.iter().map(|&(_, x)| x).collect();
        let plain = Summary::of(&xs);
        let mut sums: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
        for &(g, x) in obs {
            *sums.entry(g).or_default() += x - plain.mean;
        }
        let g = sums.len() as f64;
        if sums.len() < 2 {
            return plain;
        }
        let n = plain.n as f64;
        let se = (g / (g - 1.0) * sums.values().map(|s| s * s).sum::<f64>()).sqrt() / n;
        Summary {
            sd: se * n.sqrt(),
            ..plain
        }
    }

    /// Standard error of the mean, `sd / sqrt(n)`.
    pub fn std_error(&self) -> f64 {
        self.sd / (self.n as f64).sqrt()
    }
}

/// Two-sided `level` confidence interval for the mean, by the normal
/// approximation: `mean ± z · sd / sqrt(n)` with `z = Φ⁻¹((1 + level) / 2)`.
///
/// Valid for one look at a fixed, reasonably large `n` (central limit
/// theorem). Looking repeatedly as data arrive and stopping when it excludes
/// a value inflates the error rate far above `1 - level`; use
/// [`always_valid_ci`] for that.
pub fn mean_ci(s: &Summary, level: f64) -> (f64, f64) {
    let z = normal_quantile(0.5 + level / 2.0);
    let h = z * s.std_error();
    (s.mean - h, s.mean + h)
}

/// Treatment minus control: estimate, confidence interval and two-sided
/// p-value for "no difference".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
}

/// Welch's unequal-variance comparison of two means.
///
/// `diff = mean_t - mean_c`, `se = sqrt(sd_t²/n_t + sd_c²/n_c)`,
/// `z = diff / se`. The p-value is `2 · (1 - Φ(|z|))` and the interval
/// `diff ± Φ⁻¹((1 + level) / 2) · se`: the normal approximation to Welch's t,
/// which is accurate once both arms have a few dozen observations (the
/// Welch–Satterthwaite degrees of freedom are then large). With `se = 0` the
/// p-value is 1 if the means are equal and 0 otherwise.
pub fn welch(treatment: &Summary, control: &Summary, level: f64) -> Difference {
    let diff = treatment.mean - control.mean;
    let se = (treatment.sd * treatment.sd / treatment.n as f64 + control.sd * control.sd / control.n as f64).sqrt();
    let z_level = normal_quantile(0.5 + level / 2.0);
    let p_value = if se > 0.0 {
        erfc((diff / se).abs() / std::f64::consts::SQRT_2)
    } else if diff == 0.0 {
        1.0
    } else {
        0.0
    };
    Difference {
        diff,
        ci_low: diff - z_level * se,
        ci_high: diff + z_level * se,
        p_value,
    }
}

/// The `q`-quantile of `xs` (for latency p50/p99), by linear interpolation
/// between order statistics (type 7 of Hyndman & Fan, the default of R and
/// NumPy): position `q · (n - 1)` in the sorted sample. Sorts `xs` in place
/// (total order, NaNs last). Returns NaN for an empty slice or `q` outside
/// `[0, 1]`.
pub fn quantile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() || !(0.0..=1.0).contains(&q) {
        return f64::NAN;
    }
    xs.sort_unstable_by(f64::total_cmp);
    let pos = q * (xs.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    if lo == hi {
        xs[lo]
    } else {
        xs[lo] + (xs[hi] - xs[lo]) * frac
    }
}

/// Always-valid confidence sequence for a mean: an interval that may be
/// recomputed after every observation, with
/// `P(some n has the true mean outside the interval) <= alpha`, so results can
/// be watched continuously and the experiment stopped at any time.
///
/// Uses the two-sided normal-mixture boundary of Howard, Ramdas, McAuliffe &
/// Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
/// Annals of Statistics 49(2), 2021 (Eq. (14) / Proposition 3 setting): for
/// sub-Gaussian observations with variance proxy `σ²`, mixing the
/// exponential supermartingale over `λ ~ N(0, ρ²)` and applying Ville's
/// inequality gives
///
/// ```text
/// |mean_n - μ| <= σ · sqrt( (n·ρ² + 1) / (n²·ρ²) · ln((n·ρ² + 1) / α²) )   for all n ≥ 1
/// ```
///
/// with probability at least `1 - α`. Here `σ` is estimated by the sample
/// standard deviation `s.sd` (a plug-in, so the guarantee is approximate for
/// very small `n`, where the estimate is noisy).
///
/// `rho` tunes where the sequence is tightest: the width relative to the
/// fixed-n interval is smallest near `n ≈ 1/ρ²` (choose
/// `rho = 1 / sqrt(expected sample size)`). Larger `rho` favours early
/// stopping, smaller `rho` favours long experiments; any `rho > 0` is valid.
/// Returns `(-inf, inf)` for `n = 0`.
pub fn always_valid_ci(s: &Summary, alpha: f64, rho: f64) -> (f64, f64) {
    if s.n == 0 {
        return (f64::NEG_INFINITY, f64::INFINITY);
    }
    let n = s.n as f64;
    let r2 = rho * rho;
    let v = n * r2 + 1.0;
    let h = s.sd * (v / (n * n * r2) * (v / (alpha * alpha)).ln()).sqrt();
    (s.mean - h, s.mean + h)
}

/// [`always_valid_ci`] for the difference of two means (treatment minus
/// control): the same normal-mixture boundary with the variance of the
/// difference, `V = sd_t²/n_t + sd_c²/n_c`, and mixing variance
/// `τ² = ρ² (sd_t² + sd_c²)` (which reduces to the one-sample case for equal
/// arms): `diff ± sqrt(V (V + τ²) / τ² · ln((V + τ²) / (α² V)))`.
/// Returns `(-inf, inf)` when either arm is empty.
pub fn always_valid_difference(treatment: &Summary, control: &Summary, alpha: f64, rho: f64) -> (f64, f64) {
    let diff = treatment.mean - control.mean;
    if treatment.n == 0 || control.n == 0 {
        return (f64::NEG_INFINITY, f64::INFINITY);
    }
    let (vt, vc) = (treatment.sd * treatment.sd, control.sd * control.sd);
    let v = vt / treatment.n as f64 + vc / control.n as f64;
    let tau2 = rho * rho * (vt + vc);
    if v <= 0.0 || tau2 <= 0.0 {
        return (diff, diff);
    }
    let h = (v * (v + tau2) / tau2 * ((v + tau2) / (alpha * alpha * v)).ln()).sqrt();
    (diff - h, diff + h)
}

/// The always-valid p-value of "no difference" that goes with
/// [`always_valid_difference`]: `min(1, 1/Λ)` with the normal-mixture
/// likelihood ratio `Λ = sqrt(V/(V+τ²)) · exp(τ² d² / (2 V (V+τ²)))`.
/// It is dual to the interval (below `alpha` exactly when the interval at
/// `alpha` excludes 0), and stopping the first time it drops below `alpha`
/// keeps the false-positive rate under `alpha` however often it is checked.
pub fn always_valid_p_value(treatment: &Summary, control: &Summary, rho: f64) -> f64 {
    if treatment.n == 0 || control.n == 0 {
        return 1.0;
    }
    let diff = treatment.mean - control.mean;
    let (vt, vc) = (treatment.sd * treatment.sd, control.sd * control.sd);
    let v = vt / treatment.n as f64 + vc / control.n as f64;
    let tau2 = rho * rho * (vt + vc);
    if v <= 0.0 || tau2 <= 0.0 {
        return if diff == 0.0 { 1.0 } else { 0.0 };
    }
    let log_lambda = 0.5 * (v / (v + tau2)).ln() + tau2 * diff * diff / (2.0 * v * (v + tau2));
    (-log_lambda).exp().min(1.0)
}

/// Standard normal CDF `Φ(x) = erfc(-x / √2) / 2`. Absolute error below
/// 1e-13 (inherits [`erfc`]'s accuracy), and relative accuracy in the tails.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Inverse of [`normal_cdf`]. Acklam's rational approximation (relative error
/// about 1.2e-9) refined by one Halley step on [`normal_cdf`], which brings it
/// to near machine precision. Returns ±inf at 0 and 1, NaN outside `[0, 1]`.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549671010466311e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    const P_LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    };
    // One Halley step.
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// Complementary error function, `erfc(x) = 1 - erf(x)`.
///
/// For `|x| < 2.5` the Maclaurin series of `erf` is summed to convergence
/// (terms are below 1e-17 relative; the largest term at `|x| = 2.5` is about
/// 80, so cancellation costs at most two digits: absolute error < 1e-13). For
/// `x >= 2.5` the Laplace continued fraction
/// `erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))` is
/// evaluated by the modified Lentz method to relative precision 1e-15, which
/// keeps tail probabilities accurate in relative terms. Negative `x` uses
/// `erfc(-x) = 2 - erfc(x)`. Overall absolute error < 1e-13, well inside the
/// 1e-7 needed for p-values.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        return 1.0 - erf_series(x);
    }
    if x > 27.3 {
        return 0.0; // below the smallest subnormal
    }
    // Modified Lentz for f = x + a1/(x + a2/(x + ...)), a_k = k/2.
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..500 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

/// `erf(x) = 2/√π · Σ (-1)^k x^{2k+1} / (k! (2k+1))`.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x; // (-1)^k x^{2k+1} / k!
    let mut sum = x;
    for k in 1..200 {
        term *= -x2 / k as f64;
        let add = term / (2 * k + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn erfc_reference_values() {
        // Reference values (to 16+ digits) from standard tables.
        let cases = [
            (0.0, 1.0),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (2.0, 0.004677734981047266),
            (2.5, 0.000406952017444959),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537459794428035e-12),
            (-1.0, 1.8427007929497148),
        ];
        for (x, want) in cases {
            let got = erfc(x);
            assert!(close(got, want, 1e-13), "erfc({x}) = {got}, want {want}");
            if x >= 2.0 {
                assert!(((got - want) / want).abs() < 1e-10, "relative erfc({x})");
            }
        }
        // Continuity across the series / continued-fraction switch.
        assert!(close(erfc(2.5 - 1e-12), erfc(2.5), 1e-14));
    }

    #[test]
    fn normal_cdf_and_quantile() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-15));
        assert!(close(normal_cdf(1.959963984540054), 0.975, 1e-12));
        assert!(close(normal_cdf(-3.0), 0.0013498980316301, 1e-13));
        assert!(close(normal_quantile(0.975), 1.959963984540054, 1e-10));
        assert!(close(normal_quantile(0.995), 2.5758293035489004, 1e-10));
        assert!(close(normal_quantile(0.5), 0.0, 1e-12));
        for &p in &[1e-10, 1e-4, 0.01, 0.3, 0.7, 0.99, 1.0 - 1e-6] {
            assert!(close(normal_cdf(normal_quantile(p)), p, 1e-12 * p.max(1e-3)), "p {p}");
        }
        assert!(normal_quantile(1.5).is_nan());
    }

    #[test]
    fn summary_and_quantile() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.n, 4);
        assert!(close(s.mean, 2.5, 1e-15));
        assert!(close(s.sd, (5.0f64 / 3.0).sqrt(), 1e-15));
        assert_eq!(Summary::of(&[7.0]).sd, 0.0);
        assert!(Summary::of(&[]).mean.is_nan());
        let mut xs = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&mut xs, 0.5), 3.0);
        assert_eq!(quantile(&mut xs, 0.0), 1.0);
        assert_eq!(quantile(&mut xs, 1.0), 5.0);
        assert!(close(quantile(&mut xs, 0.99), 4.96, 1e-12));
        assert!(quantile(&mut [], 0.5).is_nan());
        assert!(quantile(&mut xs, 1.5).is_nan());
    }

    #[test]
    fn intervals_shapes() {
        let s = Summary {
            n: 100,
            mean: 1.0,
            sd: 2.0,
        };
        let (lo, hi) = mean_ci(&s, 0.95);
        assert!(close(hi - 1.0, 1.959963984540054 * 0.2, 1e-9));
        assert!(close(1.0 - lo, hi - 1.0, 1e-12));
        // The always-valid interval is wider than the fixed-n one.
        let (alo, ahi) = always_valid_ci(&s, 0.05, 0.1);
        assert!(alo < lo && ahi > hi);
        let d = welch(&s, &s, 0.95);
        assert_eq!(d.diff, 0.0);
        assert!(close(d.p_value, 1.0, 1e-12));
        let t = Summary { mean: 1.6, ..s };
        let d = welch(&t, &s, 0.95);
        // z = 0.6 / sqrt(0.08) = 2.1213; p = erfc(2.1213/√2) = 0.033895
        assert!(close(d.p_value, 0.03389485352468927, 1e-9), "{}", d.p_value);
        assert!(d.ci_low > 0.0);
    }
}
