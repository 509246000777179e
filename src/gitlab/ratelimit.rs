//! A per-connection rate limit (governor's GCRA) with a gate on top that holds every caller back
//! after a 429 until GitLab's deadline. The gate is shared by every connection using the same
//! GitLab and token (GitLab limits per user); each connection keeps its own rate.

use parking_lot::Mutex;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::Quota;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use tokio::time::Instant;

/// Tokio's clock for governor, so a paused test runtime drives the limiter too.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

type Bucket =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// After a 429: nothing leaves before this (shared per GitLab and token).
#[derive(Debug, Default)]
pub struct PauseGate {
    until: Mutex<Option<Instant>>,
}

/// The rate limit shared by all callers of one GitLab connection.
#[derive(Debug)]
pub struct RateLimiter {
    /// Replaced when the connection's rateLimit is edited.
    bucket: Mutex<(Arc<Bucket>, NonZeroU32, f64)>,
    paused_until: Arc<PauseGate>,
    /// Callers waiting for a slot right now.
    waiting: AtomicUsize,
    waits: AtomicU64,
    waited_micros: AtomicU64,
}

fn bucket(rate: f64, burst: u32) -> (Arc<Bucket>, NonZeroU32, f64) {
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        10.0
    };
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst);
    (
        Arc::new(Bucket::direct_with_clock(quota, TokioClock)),
        burst,
        rate,
    )
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self::with_gate(rate, burst, Arc::default())
    }

    /// A limiter whose 429 pauses `gate` shares with other limiters (same GitLab and token).
    pub fn with_gate(rate: f64, burst: u32, gate: Arc<PauseGate>) -> Self {
        RateLimiter {
            bucket: Mutex::new(bucket(rate, burst)),
            paused_until: gate,
            waiting: AtomicUsize::new(0),
            waits: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
        }
    }

    /// Waits for a slot; returns how long it waited. A 429 that arrives while a caller sleeps
    /// for its slot holds that caller back too: nothing leaves before the pause ends.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        let mut counted = false;
        loop {
            let pause = self.paused_for(Instant::now());
            if !pause.is_zero() {
                if !counted {
                    counted = true;
                    self.waiting.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(pause).await;
                continue;
            }
            let bucket = self.bucket.lock().0.clone();
            match bucket.check() {
                Ok(()) => break,
                Err(not_until) => {
                    if !counted {
                        counted = true;
                        self.waiting.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
                }
            }
        }
        if counted {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        let waited = start.elapsed();
        if !waited.is_zero() {
            self.waits.fetch_add(1, Ordering::Relaxed);
            self.waited_micros
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
        waited
    }

    /// What is left of a 429 pause at `now`.
    fn paused_for(&self, now: Instant) -> Duration {
        match *self.paused_until.until.lock() {
            Some(until) if until > now => until - now,
            _ => Duration::ZERO,
        }
    }

    /// Changes the sustained rate and burst (a connection's rateLimit was edited).
    pub fn reconfigure(&self, rate: f64, burst: u32) {
        *self.bucket.lock() = bucket(rate, burst);
    }

    /// Holds every caller back until `now + wait` (GitLab said 429). The bucket is emptied:
    /// after the pause requests leave at the sustained rate, not in a burst.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        {
            let mut p = self.paused_until.until.lock();
            if p.is_some_and(|u| u >= until) {
                return;
            }
            *p = Some(until);
        }
        let (bucket, burst, _) = self.bucket.lock().clone();
        for _ in 0..burst.get() {
            if bucket.check().is_err() {
                break;
            }
        }
    }

    /// How long a new caller would wait at least, when callers are queued or a 429 holds
    /// everyone back; None when the limiter has room. Periodic checks use it to step aside
    /// for new work.
    pub fn backlog(&self) -> Option<Duration> {
        let pause = self.paused_for(Instant::now());
        let waiting = self.waiting.load(Ordering::Relaxed);
        if pause.is_zero() && waiting == 0 {
            return None;
        }
        let rate = self.bucket.lock().2;
        Some(pause + Duration::from_secs_f64(waiting as f64 / rate))
    }

    /// Whether this limiter's 429 pauses go through `gate`.
    pub fn shares(&self, gate: &Arc<PauseGate>) -> bool {
        Arc::ptr_eq(&self.paused_until, gate)
    }

    /// Whether a 429 currently holds every caller back.
    pub fn is_paused(&self) -> bool {
        !self.paused_for(Instant::now()).is_zero()
    }

    /// How many acquisitions had to wait, and for how long in total (for metrics).
    pub fn wait_stats(&self) -> (u64, Duration) {
        (
            self.waits.load(Ordering::Relaxed),
            Duration::from_micros(self.waited_micros.load(Ordering::Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sustained_rate_is_bounded() {
        let limiter = RateLimiter::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..25 {
            limiter.acquire().await;
        }
        // 5 from the burst, 20 more at 10/s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_back_callers_already_waiting_for_a_slot() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1.0, 1));
        limiter.acquire().await; // the burst is spent: the next caller waits ~1 s
        let l = limiter.clone();
        let waiting = tokio::spawn(async move {
            l.acquire().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        limiter.pause_for(Duration::from_secs(5)); // a 429 arrives meanwhile
        let went = waiting.await.unwrap();
        assert!(went >= start + Duration::from_secs(5), "{:?}", went - start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_shared_through_the_gate_but_rates_are_not() {
        let gate = Arc::new(PauseGate::default());
        let slow = Arc::new(RateLimiter::with_gate(1.0, 1, gate.clone()));
        let fast = RateLimiter::with_gate(1000.0, 100, gate);
        slow.acquire().await;
        // The slow connection's queue does not slow the fast one.
        let l = slow.clone();
        let queued = tokio::spawn(async move { l.acquire().await });
        tokio::task::yield_now().await;
        assert!(slow.backlog().is_some());
        let start = Instant::now();
        for _ in 0..50 {
            fast.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(100));
        assert!(fast.backlog().is_none());
        // A 429 on one holds the other back.
        slow.pause_for(Duration::from_secs(3));
        let start = Instant::now();
        fast.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
        queued.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_everyone() {
        let limiter = RateLimiter::new(1000.0, 100);
        limiter.pause_for(Duration::from_secs(7));
        let start = Instant::now();
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(7));
        let (waits, _) = limiter.wait_stats();
        assert_eq!(waits, 1);
    }
}
