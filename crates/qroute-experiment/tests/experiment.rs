//! Coverage tests for `qroute_experiment::stats` with known answers and
//! fixed seeds: the fixed-n interval covers at its nominal rate, Welch's test
//! has its nominal false-positive rate and adequate power, and the
//! always-valid confidence sequence survives continuous peeking where the
//! fixed-n interval does not; clustered intervals cover when requests of
//! one unit are correlated, where the per-request interval does not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use qroute_experiment::stats::{
    always_valid_ci, always_valid_difference, always_valid_p_value, mean_ci, welch, Summary,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Running sums for an incremental `Summary` (no recomputation per peek).
#[derive(Default)]
struct Running {
    n: usize,
    sum: f64,
    sumsq: f64,
}

impl Running {
    fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sumsq += x * x;
    }

    fn summary(&self) -> Summary {
        let n = self.n as f64;
        let mean = self.sum / n;
        let var = if self.n < 2 {
            0.0
        } else {
            ((self.sumsq - n * mean * mean) / (n - 1.0)).max(0.0)
        };
        Summary {
            n: self.n,
            mean,
            sd: var.sqrt(),
        }
    }
}

fn bernoulli_summary(rng: &mut ChaCha8Rng, n: usize, p: f64) -> Summary {
    let mut r = Running::default();
    for _ in 0..n {
        r.push(if rng.gen::<f64>() < p { 1.0 } else { 0.0 });
    }
    r.summary()
}

/// Standard normal by Box–Muller.
fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[test]
fn mean_ci_covers_at_nominal_rate() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let reps = 2000;
    let covered = (0..reps)
        .filter(|_| {
            let (lo, hi) = mean_ci(&bernoulli_summary(&mut rng, 400, 0.3), 0.95);
            lo <= 0.3 && 0.3 <= hi
        })
        .count();
    let rate = covered as f64 / reps as f64;
    println!("mean_ci 95% coverage, Bernoulli(0.3), n=400: {rate:.4}");
    assert!((0.93..=0.97).contains(&rate), "coverage {rate}");
}

#[test]
fn welch_false_positive_rate_and_power() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let reps = 2000;
    let n = 400;
    let mut false_pos = 0;
    let mut detected = 0;
    for _ in 0..reps {
        let c = bernoulli_summary(&mut rng, n, 0.3);
        let t = bernoulli_summary(&mut rng, n, 0.3);
        if welch(&t, &c, 0.95).p_value < 0.05 {
            false_pos += 1;
        }
        let c = bernoulli_summary(&mut rng, n, 0.3);
        let t = bernoulli_summary(&mut rng, n, 0.4);
        let d = welch(&t, &c, 0.95);
        if d.p_value < 0.05 {
            detected += 1;
        }
        assert!(d.ci_low <= d.diff && d.diff <= d.ci_high);
    }
    let fpr = false_pos as f64 / reps as f64;
    let power = detected as f64 / reps as f64;
    println!("welch: false-positive rate {fpr:.4}, power (0.3 vs 0.4, n=400/arm) {power:.4}");
    assert!((0.03..=0.07).contains(&fpr), "false-positive rate {fpr}");
    assert!(power > 0.80, "power {power}");
}

#[test]
fn always_valid_survives_continuous_peeking() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let reps = 500;
    let max_n = 2000;
    let alpha = 0.05;
    let rho = 1.0 / (500f64).sqrt(); // tightest near n = 500
    let mu = 0.3;
    // Peeking starts once the sample variance exists (n >= 2).
    let mut av_ever_excluded = 0;
    let mut fixed_ever_excluded = 0;
    for _ in 0..reps {
        let mut r = Running::default();
        let mut av_out = false;
        let mut fixed_out = false;
        for i in 0..max_n {
            r.push(mu + std_normal(&mut rng));
            if i == 0 {
                continue;
            }
            let s = r.summary();
            if !av_out {
                let (lo, hi) = always_valid_ci(&s, alpha, rho);
                av_out = mu < lo || mu > hi;
            }
            if !fixed_out {
                let (lo, hi) = mean_ci(&s, 1.0 - alpha);
                fixed_out = mu < lo || mu > hi;
            }
            if av_out && fixed_out {
                break;
            }
        }
        av_ever_excluded += av_out as usize;
        fixed_ever_excluded += fixed_out as usize;
    }
    let av_rate = av_ever_excluded as f64 / reps as f64;
    let fixed_rate = fixed_ever_excluded as f64 / reps as f64;
    println!(
        "peeking after every observation up to n={max_n}, {reps} runs: \
         always-valid ever excluded mu in {av_rate:.4}, fixed 95% CI in {fixed_rate:.4}"
    );
    assert!(av_rate <= 0.07, "always-valid error rate {av_rate}");
    assert!(fixed_rate > 0.15, "fixed CI under peeking only {fixed_rate}");
}

/// Requests come from units (users) with their own mean: 200 units of 20
/// requests, unit effect sd 1, request noise sd 1. The per-request interval
/// treats 4,000 requests as independent and undercovers badly; the
/// cluster-robust one covers at its nominal rate.
#[test]
fn clustered_intervals_cover_correlated_requests() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let (reps, units, per_unit, mu) = (1000, 200, 20, 0.5);
    let (mut clustered_in, mut naive_in) = (0, 0);
    for _ in 0..reps {
        let mut obs = Vec::with_capacity(units * per_unit);
        for u in 0..units as u64 {
            let effect = std_normal(&mut rng);
            for _ in 0..per_unit {
                obs.push((u, mu + effect + std_normal(&mut rng)));
            }
        }
        let (lo, hi) = mean_ci(&Summary::clustered(&obs), 0.95);
        clustered_in += (lo <= mu && mu <= hi) as usize;
        let xs: Vec<f64> = obs.iter().map(|o| o.1).collect();
        let (lo, hi) = mean_ci(&Summary::of(&xs), 0.95);
        naive_in += (lo <= mu && mu <= hi) as usize;
    }
    let (c, n) = (clustered_in as f64 / reps as f64, naive_in as f64 / reps as f64);
    println!("clustered coverage {c:.3}, per-request coverage {n:.3}");
    assert!((0.93..=0.97).contains(&c), "clustered coverage {c}");
    assert!(n < 0.6, "per-request coverage {n} should collapse");
}

/// The always-valid interval for a difference of two arms, checked after
/// every 10 requests per arm up to 2,000: with no true difference, it ever
/// excludes 0 in at most about α of runs.
#[test]
fn always_valid_difference_survives_peeking() {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let (reps, max_n, alpha) = (400, 2000, 0.05);
    let rho = 1.0 / (500f64).sqrt();
    let mut ever_out = 0;
    for _ in 0..reps {
        let (mut t, mut c) = (Running::default(), Running::default());
        for i in 1..=max_n {
            t.push(0.2 + 2.0 * std_normal(&mut rng));
            c.push(0.2 + std_normal(&mut rng));
            if i % 10 == 0 {
                let (ts, cs) = (t.summary(), c.summary());
                let (lo, hi) = always_valid_difference(&ts, &cs, alpha, rho);
                let excluded = lo > 0.0 || hi < 0.0;
                // The p-value is the interval's dual.
                assert_eq!(excluded, always_valid_p_value(&ts, &cs, rho) < alpha);
                if excluded {
                    ever_out += 1;
                    break;
                }
            }
        }
    }
    let rate = ever_out as f64 / reps as f64;
    println!("always-valid difference: false discovery under peeking {rate:.4}");
    assert!(rate <= 0.07, "false discovery rate {rate}");
    // And it does detect a real difference.
    let t = Summary {
        n: 2000,
        mean: 0.5,
        sd: 1.0,
    };
    let c = Summary {
        n: 2000,
        mean: 0.2,
        sd: 1.0,
    };
    assert!(always_valid_difference(&t, &c, alpha, rho).0 > 0.0);
    assert!(always_valid_p_value(&t, &c, rho) < alpha);
    assert_eq!(always_valid_p_value(&c, &c, rho), 1.0);
}
