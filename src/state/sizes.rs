//! The size history behind the status page's chart: per group, one point per minute (the
//! last decision of that minute: actual and desired size and the bounds in force), kept for
//! a day. The kept decisions are per tick and cover too little time for a day's chart.

use super::StateError;
use super::Store;
use super::db::Value;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// How long points are kept.
pub const SIZES_KEPT: chrono::Duration = chrono::Duration::hours(24);

/// One minute of a group's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizePoint {
    /// The start of the minute.
    pub at: DateTime<Utc>,
    /// Droplets counted toward the size at the minute's last decision.
    pub current: u32,
    /// The size decided then.
    pub desired: u32,
    /// The lower bound in force.
    pub min: u32,
    /// The upper bound in force.
    pub max: u32,
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

impl Store {
    /// Records a decision's sizes in the point of its minute (a later decision of the same
    /// minute replaces it) and drops points older than [`SIZES_KEPT`].
    pub fn record_size(&self, group: &str, point: SizePoint) -> Result<(), StateError> {
        self.counted("record_size", self.write_size(group, point))
    }

    fn write_size(&self, group: &str, point: SizePoint) -> Result<(), StateError> {
        let minute = minute_of(point.at);
        let params: Vec<Value> = vec![
            group.into(),
            minute.into(),
            point.current.into(),
            point.desired.into(),
            point.min.into(),
            point.max.into(),
        ];
        let older: Vec<Value> = vec![group.into(), (minute - SIZES_KEPT.num_minutes()).into()];
        self.leader_write(group, move |conn| {
            conn.execute(
                "INSERT INTO sizes (grp, minute, current, desired, min, max) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (grp, minute) DO UPDATE SET current = ?3, desired = ?4, min = ?5, max = ?6",
                &params,
            )?;
            conn.execute("DELETE FROM sizes WHERE grp = ?1 AND minute < ?2", &older)?;
            Ok(())
        })
    }

    /// A group's points since `since`, oldest first.
    pub fn sizes(&self, group: &str, since: DateTime<Utc>) -> Result<Vec<SizePoint>, StateError> {
        let rows = self.db.query(
            "SELECT minute, current, desired, min, max FROM sizes
             WHERE grp = ?1 AND minute >= ?2 ORDER BY minute",
            vec![group.into(), minute_of(since).into()],
        )?;
        let mut points = Vec::new();
        for row in rows {
            let Some(at) = DateTime::from_timestamp(row.int(0)? * 60, 0) else {
                continue;
            };
            let size = |index| {
                row.int(index)
                    .map(|n| n.clamp(0, i64::from(u32::MAX)) as u32)
            };
            points.push(SizePoint {
                at,
                current: size(1)?,
                desired: size(2)?,
                min: size(3)?,
                max: size(4)?,
            });
        }
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: DateTime<Utc>, current: u32) -> SizePoint {
        SizePoint {
            at,
            current,
            desired: current + 1,
            min: 1,
            max: 10,
        }
    }

    #[test]
    fn one_point_per_minute_the_last_decision_wins_and_a_day_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let start = DateTime::parse_from_rfc3339("2026-12-03T10:00:05Z")
            .unwrap()
            .with_timezone(&Utc);
        store.record_size("web", point(start, 2)).unwrap();
        store
            .record_size("web", point(start + chrono::Duration::seconds(30), 3))
            .unwrap();
        store
            .record_size("web", point(start + chrono::Duration::seconds(70), 4))
            .unwrap();
        store.record_size("db", point(start, 9)).unwrap();
        let points = store.sizes("web", start - SIZES_KEPT).unwrap();
        assert_eq!(points.iter().map(|p| p.current).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(points[0].at.to_rfc3339(), "2026-12-03T10:00:00+00:00");
        assert_eq!(points[0].desired, 4);
        // A day later the first minutes are gone; the other group keeps its own.
        store
            .record_size(
                "web",
                point(
                    start + chrono::Duration::hours(24) + chrono::Duration::minutes(1),
                    5,
                ),
            )
            .unwrap();
        let points = store.sizes("web", start - SIZES_KEPT).unwrap();
        assert_eq!(points.iter().map(|p| p.current).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(store.sizes("db", start - SIZES_KEPT).unwrap().len(), 1);
        // The window asked for is honoured.
        let recent = store
            .sizes("web", start + chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(recent.len(), 1);
    }
}
