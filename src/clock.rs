//! Time as an injected value. Everything that depends on "now" — the decision, schedules, the
//! simulated DigitalOcean's load model — reads a [`Clock`], so tests move time by hand instead
//! of sleeping. A [`ScaledClock`] runs N times faster than the wall (`sim --speed N`), and
//! [`follow`] makes a daemon keep the sim's time (`--clock URL`), so that its schedules and the
//! timestamps of its samples agree with the sim's counters.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// How many of this clock's seconds pass per wall-clock second: 1 for the system clock, N
    /// for a sim at `--speed N`. Schedules (a group's interval, `record --duration`) divide
    /// their waits by it; a clock that only moves by hand says 1.
    fn speed(&self) -> f64 {
        1.0
    }
}

/// How long to wait on the wall clock for `span` of `clock`'s time to pass.
pub fn wall(clock: &dyn Clock, span: Duration) -> Duration {
    let speed = clock.speed();
    if speed.is_finite() && speed > 0.0 {
        span.div_f64(speed)
    } else {
        span
    }
}

/// The fastest speed a clock may run: beyond it a 1 s interval is under a millisecond of wall
/// time, shorter than one scrape.
pub const MAX_SPEED: f64 = 10_000.0;

/// A clock running `speed` times faster than the wall from `origin`: the sim's clock at
/// `--speed N`, and a daemon's copy of it.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    origin: DateTime<Utc>,
    anchor: std::time::Instant,
    speed: f64,
}

impl ScaledClock {
    /// A clock that reads `origin` now and then runs `speed` times faster than the wall
    /// (refused unless 0 < speed ≤ [`MAX_SPEED`]).
    pub fn new(origin: DateTime<Utc>, speed: f64) -> Result<Self, ClockError> {
        if !(speed.is_finite() && speed > 0.0 && speed <= MAX_SPEED) {
            return Err(ClockError::Speed(speed));
        }
        Ok(ScaledClock {
            origin,
            anchor: std::time::Instant::now(),
            speed,
        })
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.anchor.elapsed().mul_f64(self.speed);
        let elapsed = chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero());
        self.origin
            .checked_add_signed(elapsed)
            .unwrap_or(self.origin)
    }

    fn speed(&self) -> f64 {
        self.speed
    }
}

/// Why a clock could not be made or followed.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// A speed out of range.
    #[error("speed {0}: use a number above 0 and at most 10000 (1 is real time)")]
    Speed(f64),
    /// The clock URL did not answer.
    #[error(
        "--clock {url}: {reason} (give the sim's clock, such as http://127.0.0.1:PORT/v2/_sim/clock)"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// What a sim's clock endpoint (`GET /v2/_sim/clock`) answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClockReading {
    /// The sim's time.
    pub now: DateTime<Utc>,
    /// Its seconds per wall second.
    pub speed: f64,
}

/// Reads a sim's clock once at `url` and returns a local copy of it: the sim's time, running at
/// its speed from the middle of the request's round trip (a loopback round trip is well under
/// a millisecond of wall time, so the copy is within `speed` ms of the sim).
pub async fn follow(url: &str) -> Result<ScaledClock, ClockError> {
    let unreachable = |reason: String| ClockError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let sent = std::time::Instant::now();
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unreachable(format!("answered {}", response.status())));
    }
    let reading: ClockReading = response
        .json()
        .await
        .map_err(|e| unreachable(format!("not a clock reading: {e}")))?;
    let half_trip = sent.elapsed() / 2;
    let mut clock = ScaledClock::new(reading.now, reading.speed)?;
    clock.anchor = sent + half_trip;
    Ok(clock)
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = now.checked_add_signed(by).unwrap_or(*now);
    }

    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The wall clock plus an offset that can be moved forward: time flows normally, and a test
/// or a demo can jump it ahead by simulated minutes.
#[derive(Debug, Clone, Default)]
pub struct SkewedClock {
    offset: Arc<Mutex<Duration>>,
}

impl SkewedClock {
    /// A clock at the wall time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Jumps forward.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset = offset.saturating_add(by);
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let offset = chrono::Duration::from_std(offset).unwrap_or(chrono::Duration::zero());
        Utc::now() + offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-03-29T00:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!((clock.now() - start).num_seconds(), 90);
    }

    #[test]
    fn scaled_clock_runs_at_its_speed_and_refuses_nonsense() {
        let start = Utc::now();
        let clock = ScaledClock::new(start, 1000.0).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let ran = (clock.now() - start).num_milliseconds();
        assert!(
            ran >= 20_000,
            "20 ms at 1000x is at least 20 s, ran {ran} ms"
        );
        assert_eq!(
            wall(&clock, Duration::from_secs(30)),
            Duration::from_millis(30)
        );
        assert_eq!(
            wall(&SystemClock, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY, 10_001.0] {
            assert!(ScaledClock::new(start, speed).is_err(), "{speed}");
        }
    }

    #[test]
    fn skewed_clock_jumps_ahead() {
        let clock = SkewedClock::new();
        let before = clock.now();
        clock.advance(Duration::from_secs(600));
        assert!((clock.now() - before).num_seconds() >= 600);
    }
}
