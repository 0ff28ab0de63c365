//! Client-side rate limiting: one token stays under DigitalOcean's 250 requests a minute and
//! 5,000 an hour, slowing down before the limit rather than after, and the server's
//! `ratelimit-*` headers kept visible.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What the server last said about the hourly budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitStatus {
    /// `ratelimit-limit`.
    pub limit: Option<u64>,
    /// `ratelimit-remaining`.
    pub remaining: Option<u64>,
    /// `ratelimit-reset`, Unix seconds.
    pub reset: Option<u64>,
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_period: f64, period: Duration, now: Instant) -> Self {
        Bucket {
            capacity: per_period,
            tokens: per_period,
            per_second: per_period / period.as_secs_f64(),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
    }

    fn wait_for_one(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }
}

/// Limits for one token.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Requests per minute (DigitalOcean: 250).
    pub per_minute: u32,
    /// Requests per hour (DigitalOcean: 5,000).
    pub per_hour: u32,
}

impl Default for RateLimits {
    /// A little under DigitalOcean's limits, leaving room for the operator's own tools.
    fn default() -> Self {
        RateLimits {
            per_minute: 240,
            per_hour: 4_800,
        }
    }
}

impl RateLimits {
    /// These limits counted on a clock running `speed` times faster than the wall (a sim at
    /// `--speed`, whose own limits count on its clock): `speed` times as many per wall minute.
    pub fn at_speed(self, speed: f64) -> RateLimits {
        let scale = |n: u32| (f64::from(n) * speed.max(1.0)).min(f64::from(u32::MAX)) as u32;
        RateLimits {
            per_minute: scale(self.per_minute),
            per_hour: scale(self.per_hour),
        }
    }
}

/// The limiter shared by every request made with one token.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<Option<(Bucket, Bucket)>>,
    limits: Option<RateLimits>,
    status: Mutex<RateLimitStatus>,
}

impl RateLimiter {
    /// A limiter with these limits; `None` turns local limiting off (benchmarks on the sim).
    pub fn new(limits: Option<RateLimits>) -> Self {
        RateLimiter {
            buckets: Mutex::new(None),
            limits,
            status: Mutex::new(RateLimitStatus::default()),
        }
    }

    /// Waits until one more request fits under both limits, then takes it.
    pub async fn acquire(&self) {
        let Some(limits) = self.limits else { return };
        loop {
            let wait = {
                let now = Instant::now();
                // A poisoned lock only means another request panicked mid-update; the buckets
                // stay usable, so take them back.
                let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                let (minute, hour) = guard.get_or_insert_with(|| {
                    (
                        Bucket::new(limits.per_minute as f64, Duration::from_secs(60), now),
                        Bucket::new(limits.per_hour as f64, Duration::from_secs(3600), now),
                    )
                });
                minute.refill(now);
                hour.refill(now);
                let wait = minute.wait_for_one().max(hour.wait_for_one());
                if wait.is_zero() {
                    minute.tokens -= 1.0;
                    hour.tokens -= 1.0;
                    return;
                }
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Records the `ratelimit-*` headers of an answer. When the server's remaining budget runs
    /// low, the local hourly bucket is lowered to match, so requests slow down before a 429.
    pub fn observe(&self, status: RateLimitStatus) {
        if status.remaining.is_none() && status.limit.is_none() {
            return;
        }
        if let Ok(mut current) = self.status.lock() {
            *current = status;
        }
        if let (Some(remaining), Ok(mut guard)) = (status.remaining, self.buckets.lock())
            && let Some((_, hour)) = guard.as_mut()
        {
            hour.tokens = hour.tokens.min(remaining as f64);
        }
    }

    /// What the server last reported.
    pub fn status(&self) -> RateLimitStatus {
        self.status.lock().map(|s| *s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_on_a_faster_clock_allow_as_many_more_per_wall_minute() {
        let fast = RateLimits::default().at_speed(300.0);
        assert_eq!((fast.per_minute, fast.per_hour), (72_000, 1_440_000));
        // Never fewer than the real API's, whatever the speed says.
        let slow = RateLimits::default().at_speed(0.5);
        assert_eq!((slow.per_minute, slow.per_hour), (240, 4_800));
    }

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_requests_past_the_minute_budget() {
        let limiter = RateLimiter::new(Some(RateLimits {
            per_minute: 10,
            per_hour: 1000,
        }));
        let start = Instant::now();
        for _ in 0..10 {
            limiter.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "a full bucket does not wait"
        );
        limiter.acquire().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited <= Duration::from_secs(7),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_low_server_budget_slows_requests_down() {
        let limiter = RateLimiter::new(Some(RateLimits {
            per_minute: 100,
            per_hour: 3600,
        }));
        limiter.acquire().await;
        limiter.observe(RateLimitStatus {
            limit: Some(5000),
            remaining: Some(0),
            reset: None,
        });
        let start = Instant::now();
        limiter.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_millis(900),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(limiter.status().remaining, Some(0));
    }
}
