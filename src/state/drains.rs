//! Droplets draining before their destroy, journaled so a drain outlives a restart: resumed,
//! never forgotten, never turned into an immediate destroy. One row per droplet, written
//! before its drain actions run and removed once it has left the listing or returned to
//! service.

use super::StateError;
use super::Store;
use super::db::Value;
use chrono::{DateTime, Utc};

/// One draining droplet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draining {
    /// The droplet.
    pub id: u64,
    /// When its drain started.
    pub since: DateTime<Utc>,
    /// When it times out.
    pub deadline: DateTime<Utc>,
    /// Whether its drain actions succeeded (until then they are run again, after a restart
    /// too: they must be safe to repeat).
    pub prepared: bool,
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Store {
    /// Records that `ids` start draining now; `prepared` when there are no drain actions.
    pub fn start_drain(
        &self,
        group: &str,
        ids: &[u64],
        since: DateTime<Utc>,
        deadline: DateTime<Utc>,
        prepared: bool,
    ) -> Result<(), StateError> {
        let rows: Vec<[Value; 5]> = ids
            .iter()
            .map(|id| {
                [
                    group.into(),
                    (*id).into(),
                    since.to_rfc3339().into(),
                    deadline.to_rfc3339().into(),
                    prepared.into(),
                ]
            })
            .collect();
        let result = self.leader_write(group, move |conn| {
            for params in rows {
                conn.execute(
                    "INSERT INTO draining (grp, droplet, since, deadline, prepared)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    &params,
                )?;
            }
            Ok(())
        });
        self.counted("start_drain", result)
    }

    /// Marks the drain actions of `ids` as done.
    pub fn drain_prepared(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        self.counted("drain_prepared", self.update_drains(group, ids, true))
    }

    /// Ends the drains of `ids` (gone from the listing, or returned to service).
    pub fn end_drain(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        self.counted("end_drain", self.update_drains(group, ids, false))
    }

    fn update_drains(&self, group: &str, ids: &[u64], prepared: bool) -> Result<(), StateError> {
        let statement = if prepared {
            "UPDATE draining SET prepared = 1 WHERE grp = ?1 AND droplet = ?2"
        } else {
            "DELETE FROM draining WHERE grp = ?1 AND droplet = ?2"
        };
        let rows: Vec<[Value; 2]> = ids.iter().map(|id| [group.into(), (*id).into()]).collect();
        self.leader_write(group, move |conn| {
            for params in rows {
                conn.execute(statement, &params)?;
            }
            Ok(())
        })
    }

    /// The group's draining droplets, oldest drain first.
    pub fn draining(&self, group: &str) -> Result<Vec<Draining>, StateError> {
        let rows = self.db.query(
            "SELECT droplet, since, deadline, prepared FROM draining
             WHERE grp = ?1 ORDER BY since, droplet",
            vec![group.into()],
        );
        let rows = self.counted("draining", rows)?;
        let mut drains = Vec::new();
        for row in rows {
            // A row whose times cannot be read drains at once rather than never.
            let since = parse_time(&row.text(1)?).unwrap_or_default();
            drains.push(Draining {
                id: row.int(0)? as u64,
                since,
                deadline: parse_time(&row.text(2)?).unwrap_or(since),
                prepared: row.int(3)? != 0,
            });
        }
        Ok(drains)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_outlive_the_store_and_end_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(5);
        {
            let store = Store::open(&path).unwrap();
            store
                .start_drain("web", &[7, 8], now, later, false)
                .unwrap();
            store.start_drain("db", &[9], now, later, true).unwrap();
            store.drain_prepared("web", &[8]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let web = store.draining("web").unwrap();
        assert_eq!(web.iter().map(|d| d.id).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(
            web.iter().map(|d| d.prepared).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(web[0].deadline.timestamp(), later.timestamp());
        store.end_drain("web", &[7]).unwrap();
        assert_eq!(store.draining("web").unwrap().len(), 1);
        assert_eq!(store.draining("db").unwrap().len(), 1);
        // Starting a drain twice keeps the first start.
        store.start_drain("web", &[8], later, later, false).unwrap();
        assert!(store.draining("web").unwrap()[0].prepared);
    }
}
