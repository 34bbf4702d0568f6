//! Per-key request and token rates: token buckets (governor's GCRA) whose
//! burst is the per-minute limit, so a key with `rpm: N` may send N
//! requests at once and then N a minute. Answers carry OpenAI's
//! `x-ratelimit-*` headers, so clients written for OpenAI back off the same
//! way.
//!
//! With `[redis]`, the buckets live in Redis instead ([`admit_shared`]), so
//! the limits hold across every replica; this process's buckets are the
//! fallback while Redis is down.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::shared::SharedRedis;

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
            let taken = limit.take(n).map(|remaining| (remaining, limit.reset(remaining)));
            answer(&mut headers, which, limit.per_minute, taken)?;
        }
        Ok(headers)
    }
}

/// Adds one limit's headers; `taken` is `Ok((remaining, time until full))`
/// or `Err(wait)`, which refuses the request with the headers so far.
fn answer(
    headers: &mut RateHeaders,
    which: &'static str,
    per_minute: u32,
    taken: Result<(u32, Duration), Duration>,
) -> Result<(), Limited> {
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
    headers.push((limit_name, per_minute.to_string()));
    match taken {
        Ok((remaining, reset)) => {
            headers.push((remaining_name, remaining.to_string()));
            headers.push((reset_name, seconds(reset)));
            Ok(())
        }
        Err(wait) => {
            headers.push((remaining_name, "0".into()));
            headers.push((reset_name, seconds(wait)));
            Err(Limited {
                retry_after: wait,
                headers: std::mem::take(headers),
                which,
            })
        }
    }
}

/// The shared form of [`KeyLimits`]: the same limits (a bucket of `rpm`
/// that refills over a minute, and one of `tpm`), kept in Redis as each
/// bucket's theoretical arrival time (GCRA) and checked by one Lua script,
/// on Redis's clock, so every replica draws from the same buckets. Both
/// limits are checked before either is taken: a request refused on tokens
/// does not use up a request.
///
/// Returns `{code, requests remaining, requests reset ms, tokens remaining,
/// tokens reset ms}`, code 0 admitted, 1 refused on requests, 2 on tokens;
/// a refused limit's reset is the wait.
const GCRA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = 60000
local function check(key, limit, n)
  if limit <= 0 then return nil end
  if n <= 0 then return {true, nil, limit, 0} end
  if n > limit then return {false, nil, 0, period} end
  local emission = period / limit
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + n * emission
  local allow_at = new_tat - period
  if allow_at > now then return {false, nil, 0, math.ceil(allow_at - now)} end
  local remaining = math.floor((now + period - new_tat) / emission + 1e-9)
  return {true, new_tat, remaining, math.ceil(new_tat - now)}
end
local r = check(KEYS[1], tonumber(ARGV[1]), 1)
local k = check(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
local out = {0, -1, 0, -1, 0}
if r then out[2] = r[3]; out[3] = r[4] end
if k then out[4] = k[3]; out[5] = k[4] end
if r and not r[1] then out[1] = 1; return out end
if k and not k[1] then out[1] = 2; return out end
if r and r[2] then redis.call('SET', KEYS[1], string.format('%.3f', r[2]), 'PX', math.ceil(r[2] - now) + 1000) end
if k and k[2] then redis.call('SET', KEYS[2], string.format('%.3f', k[2]), 'PX', math.ceil(k[2] - now) + 1000) end
return out
"#;

static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(GCRA));

/// Admits one request for key `key_id` against the buckets in Redis (see
/// [`GCRA`]): `None` when Redis did not answer (the caller falls back to
/// this replica's [`KeyLimits`]).
pub async fn admit_shared(
    redis: &SharedRedis,
    key_id: &str,
    rpm: Option<u32>,
    tpm: Option<u32>,
    tokens: u32,
) -> Option<Result<RateHeaders, Limited>> {
    let (rpm, tpm) = (rpm.unwrap_or(0), tpm.unwrap_or(0));
    if rpm == 0 && tpm == 0 {
        return Some(Ok(RateHeaders::new()));
    }
    let keys = [
        redis.key(&format!("rate:{key_id}:requests")),
        redis.key(&format!("rate:{key_id}:tokens")),
    ];
    let out: Vec<i64> = redis
        .run("rate_limit", |mut conn| async move {
            SCRIPT
                .key(&keys[0])
                .key(&keys[1])
                .arg(rpm)
                .arg(tpm)
                .arg(tokens)
                .invoke_async(&mut conn)
                .await
        })
        .await?;
    let [code, req_left, req_ms, tok_left, tok_ms] = out[..] else {
        redis.fell_back("rate_limit", Some("unexpected answer from the rate script"));
        return None;
    };
    let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
    let left = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    let mut headers = RateHeaders::new();
    let verdict = (|| {
        if rpm > 0 {
            let taken = if code == 1 {
                Err(ms(req_ms))
            } else {
                Ok((left(req_left), ms(req_ms)))
            };
            answer(&mut headers, "requests", rpm, taken)?;
        }
        if tpm > 0 {
            let taken = if code == 2 {
                Err(ms(tok_ms))
            } else {
                Ok((left(tok_left), ms(tok_ms)))
            };
            answer(&mut headers, "tokens", tpm, taken)?;
        }
        Ok(())
    })();
    Some(verdict.map(|()| headers))
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
