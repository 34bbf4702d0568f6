//! What keeps a request alive when an upstream misbehaves: a circuit breaker
//! per model, and retries with exponential backoff and full jitter.
//!
//! These are hand-written rather than tower layers because they are keyed by
//! the model the policy chose inside one request (a breaker removes its model
//! from the candidate set *before* the policy scores, so propensities stay
//! honest), which tower's per-service middleware does not model.
//!
//! Breakers stay per replica even with `[redis]` (see [`crate::shared`]), on
//! purpose: a breaker judges the path from *this* process to a provider
//! (its connection pool, its DNS, its network), which is what a replica's
//! own failures measure; a breaker shared in Redis would let one replica's
//! bad link take a model away from every replica, and would put a Redis
//! round trip in front of every candidate set. Each replica opens within
//! `failure_threshold` of its own failures, so N replicas send at most N
//! times that to a dead provider before all stop.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use super::providers::{ChatRequest, Completion, ErrorKind, Provider, ProviderError};
use serde::{Deserialize, Serialize};

/// Retries of one model, and fallback to others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per model, the first included; only retryable errors
    /// (timeouts, broken connections, 408, 429, 5xx) are tried again.
    #[serde(default = "default_attempts")]
    pub attempts_per_model: u32,
    /// Backoff before retry `n` is uniform in `[0, min(max, base·2ⁿ)]` (full jitter).
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Other models tried, best policy score first, after the chosen one fails.
    #[serde(default = "default_fallbacks")]
    pub max_fallbacks: usize,
}

fn default_attempts() -> u32 {
    2
}
fn default_backoff_base_ms() -> u64 {
    50
}
fn default_backoff_max_ms() -> u64 {
    2_000
}
fn default_fallbacks() -> usize {
    2
}

impl RetryConfig {
    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.attempts_per_model == 0 {
            return Err("retry.attempts_per_model: must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts_per_model: default_attempts(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_fallbacks: default_fallbacks(),
        }
    }
}

/// The per-model circuit breaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed requests that open the breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker keeps the model out before its first probe.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
    /// After the cool-down, one request per interval probes the model (a
    /// failed probe waits one interval, not a whole cool-down), so the
    /// model is back within one interval of its upstream.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_cooldown_ms() -> u64 {
    5_000
}
fn default_probe_interval_ms() -> u64 {
    1_000
}

impl BreakerConfig {
    /// The checks TOML types cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.failure_threshold == 0 {
            return Err("breaker.failure_threshold: must be at least 1".into());
        }
        if self.probe_interval_ms == 0 {
            return Err("breaker.probe_interval_ms: must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: default_failure_threshold(),
            cooldown_ms: default_cooldown_ms(),
            probe_interval_ms: default_probe_interval_ms(),
        }
    }
}

/// The breaker's state, as reported by `/v1/capabilities` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; counts consecutive failures.
    Closed,
    /// The model is out of the candidate set until the cool-down ends.
    Open,
    /// The cool-down ended: one probe call may go through.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe_since` is when the one probe allowed was handed out; a probe
    /// that never reports (its request was cancelled) is replaced after a
    /// probe interval.
    HalfOpen {
        probe_since: Option<Instant>,
    },
}

/// A circuit breaker for one model: `failure_threshold` consecutive failed
/// requests open it; after `cooldown` one probe is let through; its success
/// closes the breaker and its failure opens it again for one
/// `probe_interval`. Only failures that say something about the model's
/// health count: see [`ProviderError::counts_against_model`].
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    probe_interval: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(cfg: &BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            threshold: cfg.failure_threshold,
            cooldown: Duration::from_millis(cfg.cooldown_ms),
            probe_interval: Duration::from_millis(cfg.probe_interval_ms),
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state at `now` (an open breaker past its cool-down reads half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match &*self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now < *until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether the model may be offered to the policy at `now`. Does not
    /// reserve anything: a candidate the policy does not pick costs nothing.
    pub fn available(&self, now: Instant) -> bool {
        match &*self.lock() {
            Inner::Closed { .. } => true,
            Inner::Open { until } => now >= *until,
            Inner::HalfOpen { probe_since } => probe_since.is_none_or(|t| now >= t + self.probe_interval),
        }
    }

    /// How long until the model may be offered again (zero when it may now).
    pub fn available_in(&self, now: Instant) -> Duration {
        match &*self.lock() {
            Inner::Closed { .. } | Inner::HalfOpen { probe_since: None } => Duration::ZERO,
            Inner::Open { until } => until.saturating_duration_since(now),
            Inner::HalfOpen { probe_since: Some(t) } => (*t + self.probe_interval).saturating_duration_since(now),
        }
    }

    /// Asks to call the model now. Always yes when closed; when half-open,
    /// yes for exactly one caller (the probe) until it reports.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match &*inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } if now < *until => false,
            Inner::HalfOpen { probe_since: Some(t) } if now < *t + self.probe_interval => false,
            Inner::Open { .. } | Inner::HalfOpen { .. } => {
                *inner = Inner::HalfOpen { probe_since: Some(now) };
                true
            }
        }
    }

    /// A call ended without saying anything about the model's health (cut
    /// by a caller's own deadline): a half-open breaker's probe is handed
    /// back, so the next caller may probe at once.
    pub fn release(&self) {
        let mut inner = self.lock();
        if let Inner::HalfOpen { probe_since: Some(_) } = &*inner {
            *inner = Inner::HalfOpen { probe_since: None };
        }
    }

    /// The model answered.
    pub fn on_success(&self) {
        *self.lock() = Inner::Closed { failures: 0 };
    }

    /// The model failed after its retries; returns true when this opened the breaker.
    pub fn on_failure(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match &*inner {
            Inner::Closed { failures } if failures + 1 < self.threshold => {
                *inner = Inner::Closed { failures: failures + 1 };
                false
            }
            Inner::Closed { .. } => {
                *inner = Inner::Open {
                    until: now + self.cooldown,
                };
                true
            }
            // A failed probe: the next one in one interval.
            Inner::HalfOpen { .. } => {
                *inner = Inner::Open {
                    until: now + self.probe_interval,
                };
                false
            }
            // A failure reported late, while open: nothing new.
            Inner::Open { .. } => false,
        }
    }
}

/// Backoff before retry number `retry` (1 for the first retry): uniform in
/// `[0, min(max, base·2^(retry−1))]`, AWS's "full jitter", so that clients
/// failing together do not retry together.
pub fn backoff(cfg: &RetryConfig, retry: u32, rng: &mut impl Rng) -> Duration {
    let exp = cfg
        .backoff_base_ms
        .saturating_mul(1u64 << (retry.saturating_sub(1)).min(30));
    let cap = exp.min(cfg.backoff_max_ms);
    if cap == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rng.gen_range(0..=cap * 1000))
}

/// How calling one model went, retries included: the answer (a whole
/// [`Completion`], or a stream whose first chunk arrived) or the last error.
#[derive(Debug)]
pub struct Attempted<T = Completion> {
    pub result: Result<T, ProviderError>,
    /// Calls made (1 + retries).
    pub calls: u32,
    /// Time spent waiting on the upstream, backoff included.
    pub upstream_time: Duration,
}

/// The time one model may take, its retries included: an even share of
/// what is left of the request between it and each model still to try
/// after it, `remaining / (models_after + 1)`. So a hung first choice
/// leaves every fallback its share of the request deadline; each attempt
/// within the share is also cut at `attempt_timeout`.
pub fn model_share(remaining: Duration, models_after: usize) -> Duration {
    remaining / (models_after as u32 + 1)
}

/// Calls one model through `attempt` (given the attempt's time limit), each
/// attempt cut at `attempt_timeout` and all of them at the model's share of
/// `deadline` ([`model_share`]); retries only errors that could go away
/// ([`ProviderError::retryable`]), after a jittered backoff, up to
/// `retry.attempts_per_model` calls. A retry whose backoff would end past
/// the share is not made.
pub async fn with_retries<T, F, Fut>(
    retry: &RetryConfig,
    attempt_timeout: Duration,
    deadline: tokio::time::Instant,
    models_after: usize,
    mut attempt: F,
) -> Attempted<T>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let start = tokio::time::Instant::now();
    let share_end = start + model_share(deadline.saturating_duration_since(start), models_after);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let now = tokio::time::Instant::now();
        let limit = attempt_timeout.min(share_end.saturating_duration_since(now));
        let result = if limit.is_zero() {
            Err(ProviderError::new(ErrorKind::Timeout, "the request deadline passed"))
        } else {
            attempt(limit).await
        };
        let retry_after = match &result {
            Err(e) if e.retryable() && attempts < retry.attempts_per_model => {
                Some(backoff(retry, attempts, &mut rand::thread_rng()))
            }
            _ => None,
        };
        match retry_after {
            Some(wait) if tokio::time::Instant::now() + wait < share_end => tokio::time::sleep(wait).await,
            _ => {
                return Attempted {
                    result,
                    calls: attempts,
                    upstream_time: start.elapsed(),
                }
            }
        }
    }
}

/// [`with_retries`] for a whole answer from `provider`.
pub async fn call_with_retries(
    provider: &Provider,
    upstream: &str,
    req: &ChatRequest,
    retry: &RetryConfig,
    attempt_timeout: Duration,
    deadline: tokio::time::Instant,
    models_after: usize,
) -> Attempted {
    with_retries(retry, attempt_timeout, deadline, models_after, |limit| {
        provider.complete_within(upstream, req, limit)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Probes every 40 ms after the cool-down.
    fn breaker(threshold: u32, cooldown_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(&BreakerConfig {
            failure_threshold: threshold,
            cooldown_ms,
            probe_interval_ms: 40,
        })
    }

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let b = breaker(3, 1000);
        let t0 = Instant::now();
        assert!(!b.on_failure(t0));
        assert!(!b.on_failure(t0));
        assert!(b.available(t0));
        assert!(b.on_failure(t0), "third consecutive failure opens it");
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.available(t0 + Duration::from_millis(999)));
        assert!(!b.try_acquire(t0 + Duration::from_millis(999)));

        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.available(t1));
        assert!(b.try_acquire(t1), "one probe");
        assert!(!b.try_acquire(t1), "only one probe at a time");
        assert!(!b.available(t1));
        b.on_success();
        assert_eq!(b.state(t1), BreakerState::Closed);
        assert!(b.try_acquire(t1));
    }

    #[test]
    fn failed_probe_reopens_for_one_probe_interval() {
        let b = breaker(1, 100);
        let t0 = Instant::now();
        assert!(b.on_failure(t0));
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_acquire(t1));
        assert!(!b.on_failure(t1), "still the same outage: not opened anew");
        assert_eq!(b.state(t1 + Duration::from_millis(39)), BreakerState::Open);
        assert!(!b.try_acquire(t1 + Duration::from_millis(39)));
        assert!(
            b.try_acquire(t1 + Duration::from_millis(40)),
            "the next probe one interval later"
        );
        b.on_success();
        assert_eq!(b.state(t1 + Duration::from_millis(40)), BreakerState::Closed);
    }

    #[test]
    fn each_model_leaves_the_fallbacks_their_share() {
        let s = Duration::from_secs;
        assert_eq!(model_share(s(6), 1), s(3));
        assert_eq!(model_share(s(120), 2), s(40));
        assert_eq!(model_share(s(120), 0), s(120));
    }

    #[tokio::test]
    async fn retries_stay_within_the_models_share() {
        let retry = RetryConfig {
            attempts_per_model: 10,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            max_fallbacks: 1,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let limits = Mutex::new(Vec::new());
        // A hung model: every attempt takes all the time it is given.
        let hung = |limit: Duration| {
            limits.lock().unwrap().push(limit);
            async move {
                tokio::time::sleep(limit).await;
                Err::<(), _>(ProviderError::new(ErrorKind::Timeout, "hung"))
            }
        };
        let a = with_retries(&retry, Duration::from_millis(30), deadline, 1, hung).await;
        let limits = limits.into_inner().unwrap();
        assert!(a.calls >= 3, "retried within its share: {limits:?}");
        assert!(limits.iter().all(|l| *l <= Duration::from_millis(30)));
        // One fallback is left: this model had half of the 200 ms, at most.
        assert!(
            limits.iter().sum::<Duration>() <= Duration::from_millis(100),
            "{limits:?}"
        );
    }

    #[test]
    fn success_resets_the_count() {
        let b = breaker(2, 100);
        let t0 = Instant::now();
        b.on_failure(t0);
        b.on_success();
        assert!(!b.on_failure(t0), "the count restarted");
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn a_released_probe_can_be_taken_again() {
        let b = breaker(1, 100);
        let t0 = Instant::now();
        b.on_failure(t0);
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_acquire(t1));
        assert!(!b.try_acquire(t1));
        b.release();
        assert!(b.try_acquire(t1));
        // Releasing a closed breaker changes nothing.
        b.on_success();
        b.release();
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn lost_probe_is_replaced_after_a_probe_interval() {
        let b = breaker(1, 100);
        let t0 = Instant::now();
        b.on_failure(t0);
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_acquire(t1));
        assert!(!b.try_acquire(t1 + Duration::from_millis(39)));
        assert!(b.try_acquire(t1 + Duration::from_millis(40)));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let cfg = RetryConfig {
            attempts_per_model: 5,
            backoff_base_ms: 100,
            backoff_max_ms: 300,
            max_fallbacks: 0,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let first: Vec<_> = (0..200).map(|_| backoff(&cfg, 1, &mut rng)).collect();
        assert!(first.iter().all(|d| *d <= Duration::from_millis(100)));
        assert!(first.iter().any(|d| *d < Duration::from_millis(50)));
        assert!(
            first.iter().any(|d| *d > Duration::from_millis(50)),
            "spread over the range"
        );
        assert!((0..200).all(|_| backoff(&cfg, 10, &mut rng) <= Duration::from_millis(300)));
    }
}
