//! Schedules: which windows are open at an instant, and the bounds they put in force.
//!
//! A window opens at each cron occurrence (five fields, read in the schedule's IANA time zone)
//! and stays open for its duration in elapsed time. Across daylight-saving changes the usual
//! cron rules hold: a local time skipped by the change fires at the first instant after the
//! gap, and a repeated local time fires once.

use crate::config::{Group, Schedule};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The bounds in force and where they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Lower bound.
    pub min: u32,
    /// Upper bound.
    pub max: u32,
    /// The schedule that set them, if one is open.
    pub schedule: Option<String>,
    /// The idle headroom in force (`[idle] count`, or an open schedule's `idle_count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_count: Option<u32>,
}

/// When the window of `schedule` that covers `now` opened, if one does.
pub fn open_since(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&schedule.timezone);
    let start = schedule.cron.find_previous_occurrence(&local, true).ok()?;
    let start = start.with_timezone(&Utc);
    let duration = chrono::Duration::from_std(schedule.duration).ok()?;
    (now < start + duration).then_some(start)
}

/// The bounds in force at `now`: the group's, overridden by the last open schedule in file order.
pub fn bounds_at(group: &Group, now: DateTime<Utc>) -> Bounds {
    let open = group
        .schedules
        .iter()
        .rev()
        .find(|s| open_since(s, now).is_some());
    match open {
        Some(schedule) => Bounds {
            min: schedule.min.unwrap_or(group.min),
            max: schedule.max.unwrap_or(group.max),
            schedule: Some(schedule.name.clone()),
            idle_count: group
                .idle
                .as_ref()
                .map(|idle| schedule.idle_count.unwrap_or(idle.count)),
        },
        None => Bounds {
            min: group.min,
            max: group.max,
            schedule: None,
            idle_count: group.idle.as_ref().map(|idle| idle.count),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::compile_cron;
    use std::time::Duration;

    fn schedule(cron: &str, tz: &str, hours: u64) -> Schedule {
        Schedule {
            name: "s".into(),
            cron_text: cron.into(),
            cron: compile_cron(cron).unwrap(),
            timezone: tz.parse().unwrap(),
            duration: Duration::from_secs(hours * 3600),
            min: Some(4),
            max: None,
            idle_count: None,
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn office_hours_in_berlin_follow_local_time_through_the_year() {
        let office = schedule("0 8 * * 1-5", "Europe/Berlin", 10);
        // Winter (UTC+1): 08:00 local is 07:00 UTC.
        assert_eq!(
            open_since(&office, utc("2026-01-14T07:30:00Z")),
            Some(utc("2026-01-14T07:00:00Z"))
        );
        assert_eq!(open_since(&office, utc("2026-01-14T06:59:00Z")), None);
        assert_eq!(
            open_since(&office, utc("2026-01-14T17:00:00Z")),
            None,
            "closes after 10 h"
        );
        // Summer (UTC+2): 08:00 local is 06:00 UTC.
        assert_eq!(
            open_since(&office, utc("2026-07-15T06:10:00Z")),
            Some(utc("2026-07-15T06:00:00Z"))
        );
        // Saturday: closed.
        assert_eq!(open_since(&office, utc("2026-07-18T09:00:00Z")), None);
    }

    #[test]
    fn a_time_skipped_in_march_fires_at_the_first_instant_after_the_gap() {
        // London skips 01:00–02:00 local on 2026-03-29; 01:30 does not exist that day.
        let nightly = schedule("30 1 * * *", "Europe/London", 1);
        let opened = open_since(&nightly, utc("2026-03-29T01:20:00Z")).expect("open after the gap");
        assert_eq!(
            opened,
            utc("2026-03-29T01:00:00Z"),
            "02:00 BST, the first instant after the gap"
        );
        // The day before and after, it opens at 01:30 local as usual.
        assert_eq!(
            open_since(&nightly, utc("2026-03-28T01:45:00Z")),
            Some(utc("2026-03-28T01:30:00Z"))
        );
        assert_eq!(
            open_since(&nightly, utc("2026-03-30T00:45:00Z")),
            Some(utc("2026-03-30T00:30:00Z"))
        );
    }

    #[test]
    fn a_time_repeated_in_october_fires_once() {
        // London repeats 01:00–02:00 local on 2026-10-25: 01:30 happens at 00:30 UTC and 01:30 UTC.
        let nightly = schedule("30 1 * * *", "Europe/London", 1);
        let first =
            open_since(&nightly, utc("2026-10-25T00:40:00Z")).expect("open at the first 01:30");
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        // At the second 01:30 (01:30 UTC) the window is still the one that opened once, at 00:30 UTC.
        assert_eq!(
            open_since(&nightly, utc("2026-10-25T01:20:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        assert_eq!(
            open_since(&nightly, utc("2026-10-25T01:40:00Z")),
            None,
            "it does not open a second time"
        );
    }
}
