//! Replacements of unhealthy droplets (`[health]`), journaled so one outlives a restart: the
//! row is written, with the replacement's name chosen in advance, before its create is asked
//! for; it moves to `retiring` before the old droplet is drained or destroyed, and ends
//! (replaced, failed or cancelled) once the listing settles it. Ended rows stay a day: they
//! are the hourly limit's count and the evidence for pausing after failures in a row.

use super::StateError;
use super::Store;
use super::db::Value;
use chrono::{DateTime, Utc};

/// Where a replacement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its replacement is created or booting; the old droplet still serves.
    Launching,
    /// The replacement passed its check: the old droplet is drained and destroyed.
    Retiring,
    /// The replacement never passed its check: it is destroyed, the old droplet stays.
    Abandoning,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Launching => "launching",
            Phase::Retiring => "retiring",
            Phase::Abandoning => "abandoning",
        }
    }

    fn parse(text: &str) -> Phase {
        match text {
            "retiring" => Phase::Retiring,
            "abandoning" => Phase::Abandoning,
            // An unreadable phase starts over where nothing is destroyed.
            _ => Phase::Launching,
        }
    }
}

/// One open replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The unhealthy droplet.
    pub old: u64,
    /// The name its replacement is (or will be) created with.
    pub new_name: String,
    /// Why it is replaced.
    pub reason: String,
    /// When the replacement started.
    pub started: DateTime<Utc>,
    /// Where it is.
    pub phase: Phase,
    /// Why it is abandoned, once it is.
    pub failure: Option<String>,
}

/// How a replacement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The old droplet is gone; its replacement serves.
    Replaced,
    /// The replacement was never made or never passed its check (counts toward pausing).
    Failed(String),
    /// Called off for a reason that is nobody's fault (the old droplet left, or was
    /// protected).
    Cancelled(String),
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl Store {
    /// Records that `old` is replaced by a droplet to be named `new_name`.
    pub fn start_replacement(
        &self,
        group: &str,
        old: u64,
        new_name: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let params: Vec<Value> = vec![
            group.into(),
            old.into(),
            new_name.into(),
            reason.into(),
            now.to_rfc3339().into(),
        ];
        let result = self.leader_write(group, move |conn| {
            conn.execute(
                "INSERT INTO replacements (grp, old, new_name, reason, started, phase)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'launching')",
                &params,
            )
        });
        self.counted("start_replacement", result.map(|_| ()))
    }

    /// Moves the open replacement of `old` to `phase` (with why, when it is abandoned).
    pub fn set_replacement_phase(
        &self,
        group: &str,
        old: u64,
        phase: Phase,
        failure: Option<&str>,
    ) -> Result<(), StateError> {
        let params: Vec<Value> = vec![
            group.into(),
            old.into(),
            phase.as_str().into(),
            failure.into(),
        ];
        let result = self.leader_write(group, move |conn| {
            conn.execute(
                "UPDATE replacements SET phase = ?3, failure = COALESCE(?4, failure)
                 WHERE grp = ?1 AND old = ?2 AND ended IS NULL",
                &params,
            )
        });
        self.counted("set_replacement_phase", result.map(|_| ()))
    }

    /// Ends the open replacement of `old`.
    pub fn end_replacement(
        &self,
        group: &str,
        old: u64,
        how: &Ended,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let outcome = match how {
            Ended::Replaced => "replaced".to_string(),
            Ended::Failed(why) => format!("failed: {why}"),
            Ended::Cancelled(why) => format!("cancelled: {why}"),
        };
        let params: Vec<Value> = vec![
            group.into(),
            old.into(),
            now.to_rfc3339().into(),
            outcome.into(),
        ];
        let old_rows: Vec<Value> = vec![
            group.into(),
            (now - chrono::Duration::days(1)).to_rfc3339().into(),
        ];
        let result = self.leader_write(group, move |conn| {
            conn.execute(
                "UPDATE replacements SET ended = ?3, outcome = ?4
                 WHERE grp = ?1 AND old = ?2 AND ended IS NULL",
                &params,
            )?;
            // A day of ended rows is all the limits read.
            conn.execute(
                "DELETE FROM replacements WHERE grp = ?1 AND ended IS NOT NULL AND ended < ?2",
                &old_rows,
            )?;
            Ok(())
        });
        self.counted("end_replacement", result)
    }

    /// The group's open replacements, oldest first.
    pub fn replacements(&self, group: &str) -> Result<Vec<Replacement>, StateError> {
        let rows = self.db.query(
            "SELECT old, new_name, reason, started, phase, failure FROM replacements
             WHERE grp = ?1 AND ended IS NULL ORDER BY started, old",
            vec![group.into()],
        );
        let rows = self.counted("replacements", rows)?;
        rows.iter()
            .map(|row| {
                Ok(Replacement {
                    old: row.int(0)? as u64,
                    new_name: row.text(1)?,
                    reason: row.text(2)?,
                    started: parse_time(&row.text(3)?),
                    phase: Phase::parse(&row.text(4)?),
                    failure: row.opt_text(5)?,
                })
            })
            .collect()
    }

    /// Replacements started since `since`, open or ended.
    pub fn replacements_since(&self, group: &str, since: DateTime<Utc>) -> Result<u32, StateError> {
        let row = self.db.query_row(
            "SELECT COUNT(*) FROM replacements WHERE grp = ?1 AND started >= ?2",
            vec![group.into(), since.to_rfc3339().into()],
        );
        let count = row.and_then(|row| row.map_or(Ok(0), |row| row.int(0)));
        self.counted("replacements_since", count.map(|n| n as u32))
    }

    /// The failures among the last ended replacements, newest first, up to the first that
    /// did not fail or that an operator acknowledged (by resuming the group).
    pub fn failed_replacements_in_a_row(&self, group: &str) -> Result<Vec<String>, StateError> {
        // `rowid` orders rows ended in the same instant: SQLite's own, PostgreSQL's a column.
        let rows = self.db.query(
            "SELECT outcome, acknowledged FROM replacements
             WHERE grp = ?1 AND ended IS NOT NULL AND outcome NOT LIKE 'cancelled%'
             ORDER BY ended DESC, rowid DESC LIMIT 10",
            vec![group.into()],
        );
        let rows = self.counted("failed_replacements_in_a_row", rows)?;
        let mut failed = Vec::new();
        for row in rows {
            let outcome = row.text(0)?;
            match outcome.strip_prefix("failed: ") {
                Some(why) if row.int(1)? == 0 => failed.push(why.to_string()),
                _ => break,
            }
        }
        Ok(failed)
    }

    /// Acknowledges the group's failed replacements: replacement starts again after it
    /// paused itself. An operator's act, through any daemon: not fenced.
    pub fn acknowledge_failed_replacements(&self, group: &str) -> Result<(), StateError> {
        let result = self.db.execute(
            "UPDATE replacements SET acknowledged = 1
             WHERE grp = ?1 AND ended IS NOT NULL AND acknowledged = 0",
            vec![group.into()],
        );
        self.counted("acknowledge_failed_replacements", result.map(|_| ()))
    }
}

impl Store {
    /// Pauses or resumes the group's `[refresh]` (health replacement goes on either way).
    pub fn set_refresh_paused(&self, group: &str, paused: bool) -> Result<(), StateError> {
        let result = if paused {
            self.db.execute(
                "INSERT INTO refresh_paused (grp, since) VALUES (?1, ?2) ON CONFLICT (grp) DO NOTHING",
                vec![group.into(), Utc::now().to_rfc3339().into()],
            )
        } else {
            self.db.execute(
                "DELETE FROM refresh_paused WHERE grp = ?1",
                vec![group.into()],
            )
        };
        self.counted("set_refresh_paused", result.map(|_| ()))
    }

    /// Whether an operator paused the group's `[refresh]`.
    pub fn is_refresh_paused(&self, group: &str) -> bool {
        let row = self.db.query_row(
            "SELECT COUNT(*) FROM refresh_paused WHERE grp = ?1",
            vec![group.into()],
        );
        let paused = row.and_then(|row| row.map_or(Ok(0), |row| row.int(0)));
        // Unreadable: paused, the side that replaces nothing.
        self.counted("is_refresh_paused", paused.map(|n| n > 0))
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_outlive_the_store_and_failures_in_a_row_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let now = Utc::now();
        {
            let store = Store::open(&path).unwrap();
            store
                .start_replacement("web", 7, "web-new1", "failed 3 checks", now)
                .unwrap();
            store
                .set_replacement_phase("web", 7, Phase::Retiring, None)
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let open = store.replacements("web").unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].old, open[0].new_name.as_str(), open[0].phase),
            (7, "web-new1", Phase::Retiring)
        );
        assert!(store.replacements("db").unwrap().is_empty());
        store
            .end_replacement("web", 7, &Ended::Replaced, now)
            .unwrap();
        assert!(store.replacements("web").unwrap().is_empty());
        for (i, old) in [8u64, 9, 10].into_iter().enumerate() {
            let at = now + chrono::Duration::seconds(i as i64 + 1);
            store.start_replacement("web", old, "x", "why", at).unwrap();
            if old == 9 {
                let how = Ended::Cancelled("the old droplet left".into());
                store.end_replacement("web", old, &how, at).unwrap();
            } else {
                let how = Ended::Failed(format!("{old} never passed"));
                store.end_replacement("web", old, &how, at).unwrap();
            }
        }
        assert_eq!(
            store.failed_replacements_in_a_row("web").unwrap(),
            ["10 never passed", "8 never passed"],
            "cancellations neither count nor break the run; a success does"
        );
        assert_eq!(
            store
                .replacements_since("web", now - chrono::Duration::hours(1))
                .unwrap(),
            4
        );
        store.acknowledge_failed_replacements("web").unwrap();
        assert!(
            store
                .failed_replacements_in_a_row("web")
                .unwrap()
                .is_empty()
        );
    }
}
