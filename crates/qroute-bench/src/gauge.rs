//! The suite's load generators and process gauges.
//!
//! - [`open_loop`]: requests scheduled at a fixed rate, each one's latency
//!   counted from its scheduled time, so a gateway that falls behind shows
//!   it as latency instead of quietly sending fewer requests (coordinated
//!   omission). A request that cannot start because `max_in_flight` are
//!   already waiting is counted as unsent.
//! - [`closed_loop`]: `c` clients, each sending its next request when the
//!   previous one is answered (what a fixed pool of callers sees).
//! - [`Proc`]: CPU time and resident memory of another process, from
//!   `/proc`, so the gateway is measured alone, not with the load generator.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

/// Latency percentiles of one run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Spread {
    pub fn of(xs: &[f64]) -> Spread {
        if xs.is_empty() {
            let nan = f64::NAN;
            return Spread {
                p50: nan,
                p90: nan,
                p99: nan,
                max: nan,
                mean: nan,
            };
        }
        let mut xs = xs.to_vec();
        xs.sort_by(f64::total_cmp);
        let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
        Spread {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: xs[xs.len() - 1],
            mean: xs.iter().sum::<f64>() / xs.len() as f64,
        }
    }
}

/// What one load run saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shot {
    /// Successful requests' latencies, ms.
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
    pub ok: usize,
    /// Non-2xx answers, timeouts and connection errors.
    pub errors: usize,
    /// Open loop only: requests never sent (too many already waiting).
    pub unsent: usize,
    pub seconds: f64,
    pub latency: Spread,
}

impl Shot {
    fn finish(mut self, elapsed: Duration) -> Shot {
        self.ok = self.latencies_ms.len();
        self.seconds = elapsed.as_secs_f64();
        self.latency = Spread::of(&self.latencies_ms);
        self
    }

    /// Successful answers per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    /// Failed or unsent requests as a share of all scheduled.
    pub fn failed_share(&self) -> f64 {
        let all = self.ok + self.errors + self.unsent;
        (self.errors + self.unsent) as f64 / all.max(1) as f64
    }
}

/// Sends `send(i)` at `rate` per second for `duration`; at most
/// `max_in_flight` wait at once.
pub async fn open_loop<F, Fut>(send: F, rate: f64, duration: Duration, max_in_flight: usize) -> Shot
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let start = tokio::time::Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let mut shot = Shot::default();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shot.unsent += 1;
            continue;
        };
        let request = send(i);
        tasks.push(tokio::spawn(async move {
            let ok = request.await;
            drop(slot);
            (ok, due.elapsed().as_secs_f64() * 1e3)
        }));
    }
    for t in tasks {
        match t.await {
            Ok((true, ms)) => shot.latencies_ms.push(ms),
            _ => shot.errors += 1,
        }
    }
    shot.finish(start.elapsed())
}

/// `clients` callers, each sending `send(i)` after its previous answer, for
/// `duration`.
pub async fn closed_loop<F, Fut>(send: F, clients: usize, duration: Duration) -> Shot
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let send = Arc::new(send);
    let start = Instant::now();
    let stop_at = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for worker in 0..clients {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0usize, worker);
            while Instant::now() < stop_at {
                let t0 = Instant::now();
                if send(i).await {
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
                i += clients;
            }
            (lat, errors)
        }));
    }
    let mut shot = Shot::default();
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            shot.latencies_ms.extend(lat);
            shot.errors += errors;
        }
    }
    shot.finish(start.elapsed())
}

/// Another process's CPU time and resident memory.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: u32,
}

/// `/proc` counts CPU time in clock ticks of 1/100 s on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

impl Proc {
    /// User plus system CPU seconds so far (NaN where `/proc` is missing).
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return f64::NAN;
        };
        // Fields after the command name, which is in parentheses and may
        // hold spaces: utime and stime are the 12th and 13th of those.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
        (tick(11) + tick(12)) / TICKS_PER_SECOND
    }

    /// Its threads now (0 where `/proc` is missing).
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid)).map_or(0, |d| d.count())
    }

    /// Resident memory, MiB (NaN where `/proc` is missing).
    pub fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_known_values() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Spread::of(&xs);
        assert_eq!((s.p50, s.p99, s.max), (51.0, 99.0, 100.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert!(Spread::of(&[]).p50.is_nan());
    }

    #[tokio::test]
    async fn open_loop_counts_from_the_schedule_and_drops_what_cannot_start() {
        // Each request takes 50 ms; with one slot at 100/s, most cannot start.
        let shot = open_loop(
            |_| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                true
            },
            100.0,
            Duration::from_millis(300),
            1,
        )
        .await;
        assert_eq!(shot.ok + shot.unsent, 30);
        assert!(shot.unsent >= 20, "{shot:?}");
        assert!(shot.latency.p50 >= 50.0, "{shot:?}");
    }

    #[tokio::test]
    async fn closed_loop_counts_failures() {
        // Client 0 sends the even requests, which succeed; client 1 the odd ones.
        let send = |i: usize| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            i.is_multiple_of(2)
        };
        let shot = closed_loop(send, 2, Duration::from_millis(30)).await;
        assert!(shot.ok > 0 && shot.errors > 0, "{shot:?}");
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let me = Proc {
            pid: std::process::id(),
        };
        assert!(me.rss_mib() > 0.0);
        assert!(me.cpu_seconds() >= 0.0);
        assert!(me.threads() >= 1);
    }
}
