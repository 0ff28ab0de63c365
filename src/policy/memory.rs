//! What a group's decisions remember between ticks — cooldown clocks, how long each condition
//! has held, recent recommendations, failures and creates — and where it is kept.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The direction of a scale event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Adding droplets.
    Up,
    /// Removing droplets.
    Down,
}

/// One group's remembered state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMemory {
    /// When the last scale-up completed.
    pub last_up: Option<DateTime<Utc>>,
    /// When the last scale-down completed.
    pub last_down: Option<DateTime<Utc>>,
    /// Since when each threshold rule's condition has held, by rule name.
    pub true_since: BTreeMap<String, DateTime<Utc>>,
    /// Recent bounded recommendations, oldest first, for the stabilization windows.
    pub recommendations: Vec<(DateTime<Utc>, u32)>,
    /// Scale-ups that failed in a row (an action error or a failed health check).
    pub up_failures: u32,
    /// When the last of them failed.
    pub last_up_failure: Option<DateTime<Utc>>,
    /// When each droplet of the last hour was created (the spend guard).
    pub creates: Vec<DateTime<Utc>>,
    /// Consecutive failed health checks per droplet (`[health]`), kept so a restart or
    /// `run --once` from cron goes on counting.
    #[serde(default)]
    pub failed_checks: BTreeMap<u64, u32>,
}

impl GroupMemory {
    /// Records a completed scale event.
    pub fn scaled(&mut self, direction: Direction, at: DateTime<Utc>) {
        match direction {
            Direction::Up => {
                self.last_up = Some(at);
                self.up_failures = 0;
                self.last_up_failure = None;
            }
            Direction::Down => self.last_down = Some(at),
        }
    }

    /// Records a failed scale-up (the backoff doubles).
    pub fn up_failed(&mut self, at: DateTime<Utc>) {
        self.up_failures = self.up_failures.saturating_add(1);
        self.last_up_failure = Some(at);
    }

    /// Records `count` droplets created at `at`.
    pub fn created(&mut self, count: u32, at: DateTime<Utc>) {
        self.creates.extend(std::iter::repeat_n(at, count as usize));
    }

    /// Creates within the hour before `now`.
    pub fn creates_last_hour(&self, now: DateTime<Utc>) -> u32 {
        let hour_ago = now - chrono::Duration::hours(1);
        self.creates.iter().filter(|t| **t > hour_ago).count() as u32
    }

    /// The backoff after the current run of failures: 1 min doubling up to 1 h; zero without.
    pub fn backoff(&self) -> Duration {
        if self.up_failures == 0 {
            return Duration::ZERO;
        }
        let minutes = 1u64 << (self.up_failures - 1).min(6);
        Duration::from_secs((minutes * 60).min(3600))
    }

    /// Drops what no window needs any more.
    pub fn prune(&mut self, now: DateTime<Utc>, longest_window: Duration) {
        let hour_ago = now - chrono::Duration::hours(1);
        self.creates.retain(|t| *t > hour_ago);
        let window = chrono::Duration::from_std(longest_window).unwrap_or(chrono::Duration::zero());
        let oldest = now - window;
        self.recommendations.retain(|(t, _)| *t >= oldest);
    }
}

/// Where group memories are kept (the daemon's SQLite store, or memory in tests and `plan`).
pub trait MemoryStore: Send + Sync {
    /// The memory of a group (empty when none was kept).
    fn load(&self, group: &str) -> GroupMemory;
    /// Keeps the memory of a group.
    fn save(&self, group: &str, memory: &GroupMemory);
}

/// Memories in a map.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    groups: Mutex<BTreeMap<String, GroupMemory>>,
}

impl MemoryStore for InMemoryStore {
    fn load(&self, group: &str) -> GroupMemory {
        self.groups
            .lock()
            .map(|g| g.get(group).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn save(&self, group: &str, memory: &GroupMemory) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.insert(group.to_string(), memory.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_minute_to_an_hour() {
        let mut memory = GroupMemory::default();
        let now = Utc::now();
        assert_eq!(memory.backoff(), Duration::ZERO);
        let expected = [60, 120, 240, 480, 960, 1920, 3600, 3600];
        for seconds in expected {
            memory.up_failed(now);
            assert_eq!(memory.backoff(), Duration::from_secs(seconds));
        }
        memory.scaled(Direction::Up, now);
        assert_eq!(memory.backoff(), Duration::ZERO);
    }

    #[test]
    fn the_store_keeps_memories_by_group() {
        let store = InMemoryStore::default();
        let mut memory = GroupMemory::default();
        memory.created(3, Utc::now());
        store.save("web", &memory);
        assert_eq!(store.load("web"), memory);
        assert_eq!(store.load("worker"), GroupMemory::default());
    }
}
