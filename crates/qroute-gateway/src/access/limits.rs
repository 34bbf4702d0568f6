//! Per-key request and token rates: token buckets (governor's GCRA) whose
//! burst is the per-minute limit, so a key with `rpm: N` may send N
//! requests at once and then N a minute. Answers carry OpenAI's
//! `x-ratelimit-*` headers, so clients written for OpenAI back off the same
//! way.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One limit: its per-minute size and its bucket.
struct Limit {
    per_minute: u32,
    bucket: Bucket,
}

impl Limit {
    fn new(per_minute: u32) -> Option<Limit> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Limit {
            per_minute,
            bucket: RateLimiter::direct(Quota::per_minute(n).allow_burst(n))
                .with_middleware::<StateInformationMiddleware>(),
        })
    }

    /// Takes `n` cells: `Ok(remaining)` or `Err(wait)`. More than the whole
    /// burst can never pass: wait a full minute (and then still too many).
    fn take(&self, n: u32) -> Result<u32, Duration> {
        let Some(cells) = NonZeroU32::new(n) else {
            return Ok(self.per_minute);
        };
        match self.bucket.check_n(cells) {
            Ok(Ok(snapshot)) => Ok(snapshot.remaining_burst_capacity()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_) => Err(Duration::from_secs(60)),
        }
    }

    /// Time until the bucket is full again, from what remains.
    fn reset(&self, remaining: u32) -> Duration {
        let missing = self.per_minute.saturating_sub(remaining) as f64;
        Duration::from_secs_f64(60.0 * missing / self.per_minute as f64)
    }
}

/// A key's rate limits.
pub struct KeyLimits {
    requests: Option<Limit>,
    tokens: Option<Limit>,
}

/// The `x-ratelimit-*` headers of an answer.
pub type RateHeaders = Vec<(&'static str, String)>;

/// A request over a limit: how long to wait, and the headers to send.
#[derive(Debug)]
pub struct Limited {
    pub retry_after: Duration,
    pub headers: RateHeaders,
    /// `requests` or `tokens`.
    pub which: &'static str,
}

fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

impl KeyLimits {
    pub fn new(rpm: Option<u32>, tpm: Option<u32>) -> KeyLimits {
        KeyLimits {
            requests: rpm.and_then(Limit::new),
            tokens: tpm.and_then(Limit::new),
        }
    }

    /// Admits one request of about `tokens` tokens, or says how long to wait.
    pub fn admit(&self, tokens: u32) -> Result<RateHeaders, Limited> {
        let mut headers = RateHeaders::new();
        for (which, limit, n) in [("requests", &self.requests, 1), ("tokens", &self.tokens, tokens)] {
            let Some(limit) = limit else { continue };
            let (limit_name, remaining_name, reset_name) = match which {
                "requests" => (
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ),
                _ => (
                    "x-ratelimit-limit-tokens",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ),
            };
            headers.push((limit_name, limit.per_minute.to_string()));
            match limit.take(n) {
                Ok(remaining) => {
                    headers.push((remaining_name, remaining.to_string()));
                    headers.push((reset_name, seconds(limit.reset(remaining))));
                }
                Err(wait) => {
                    headers.push((remaining_name, "0".into()));
                    headers.push((reset_name, seconds(wait)));
                    return Err(Limited {
                        retry_after: wait,
                        headers,
                        which,
                    });
                }
            }
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_rpm_then_a_wait() {
        let l = KeyLimits::new(Some(3), None);
        for left in [2, 1, 0] {
            let h = l.admit(1).unwrap();
            assert!(
                h.contains(&("x-ratelimit-remaining-requests", left.to_string())),
                "{h:?}"
            );
        }
        let refused = l.admit(1).unwrap_err();
        assert_eq!(refused.which, "requests");
        assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(20));
        assert!(refused.headers.iter().any(|(k, _)| *k == "x-ratelimit-reset-requests"));
    }

    #[test]
    fn tokens_count_against_tpm() {
        let l = KeyLimits::new(None, Some(100));
        assert!(l.admit(60).is_ok());
        assert_eq!(l.admit(60).unwrap_err().which, "tokens");
        assert!(l.admit(1_000).is_err(), "more than the whole minute never passes");
        assert!(KeyLimits::new(None, None).admit(1_000_000).unwrap().is_empty());
    }
}
