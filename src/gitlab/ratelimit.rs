//! A per-connection token bucket that also holds every caller back after a 429.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Token bucket shared by all callers of one GitLab connection.
///
/// Callers reserve a slot (the bucket may go negative) and sleep outside the lock, so waiting is
/// first come, first served and the sustained rate never exceeds `rate` per second.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
    waits: AtomicU64,
    waited_micros: AtomicU64,
}

#[derive(Debug)]
struct State {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            10.0
        };
        let burst = f64::from(burst.max(1));
        RateLimiter {
            state: Mutex::new(State {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
                paused_until: None,
            }),
            waits: AtomicU64::new(0),
            waited_micros: AtomicU64::new(0),
        }
    }

    /// Waits for a slot; returns how long it waited. A 429 that arrives while a caller sleeps
    /// for its slot holds that caller back too: nothing leaves before the pause ends.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        let mut wait = self.reserve(start);
        while !wait.is_zero() {
            tokio::time::sleep(wait).await;
            wait = self.paused_for(Instant::now());
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
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.paused_until {
            Some(until) if until > now => until - now,
            _ => Duration::ZERO,
        }
    }

    /// Changes the sustained rate and burst (a connection's rateLimit was edited).
    pub fn reconfigure(&self, rate: f64, burst: u32) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if rate.is_finite() && rate > 0.0 {
            s.rate = rate;
        }
        s.burst = f64::from(burst.max(1));
        s.tokens = s.tokens.min(s.burst);
    }

    fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * s.rate).min(s.burst);
        s.last = now;
        // After a 429 nobody goes before GitLab's deadline; the bucket starts empty then.
        let pause = match s.paused_until {
            Some(until) if until > now => until - now,
            _ => {
                s.paused_until = None;
                Duration::ZERO
            }
        };
        s.tokens -= 1.0;
        let bucket_wait = if s.tokens >= 0.0 {
            0.0
        } else {
            -s.tokens / s.rate
        };
        pause + Duration::from_secs_f64(bucket_wait)
    }

    /// Holds every caller back until `now + wait` (GitLab said 429).
    pub fn pause_for(&self, wait: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + wait;
        if s.paused_until.is_none_or(|u| u < until) {
            s.paused_until = Some(until);
            s.tokens = s.tokens.min(0.0);
        }
    }

    /// Whether a 429 currently holds every caller back.
    pub fn is_paused(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.paused_until.is_some_and(|u| u > Instant::now())
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
