//! The state store: the intent journal (committed before each create and destroy), group
//! memories (cooldown clocks, backoff), decisions with their explanations, pause flags and the
//! sample history, on either engine through [`Db`]. On SQLite one process writes (an exclusive
//! lock beside the file refuses a second); on PostgreSQL several daemons share the tables and
//! every write that only a group's leader may make is fenced by its lease token, checked in the
//! same transaction as the write.

use super::db::{Conn, Db, Engine, Row, Value};
use super::{Intent, Journal, Pending, StateError, Unlisted};
use crate::policy::{GroupMemory, MemoryStore};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::{Arc, Mutex};

/// Decisions kept per group.
const DECISIONS_KEPT: i64 = 1000;

/// Sample rows per `INSERT` (three parameters each; both engines take thousands).
const SAMPLES_PER_INSERT: usize = 500;

pub(super) fn store_error(error: impl std::fmt::Display) -> StateError {
    StateError::Store(error.to_string())
}

/// The state store, on SQLite or PostgreSQL.
pub struct Store {
    pub(super) db: Db,
    /// What the store is, for messages: the file's path, or the PostgreSQL server and database
    /// (never a password).
    pub(super) described: String,
    /// The SQLite writer lock, held as long as the store is open.
    pub(super) _lock: Option<File>,
    /// Failed operations by name: every failure is logged where it happens and counted here
    /// for `do_scaler_state_errors_total`, never discarded.
    failures: Mutex<BTreeMap<&'static str, u64>>,
    /// The lease tokens this daemon holds, by group (PostgreSQL): a leader-only write carries
    /// its group's token and is refused once a newer leader exists.
    tokens: Arc<Mutex<BTreeMap<String, i64>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("state", &self.described)
            .finish()
    }
}

fn intent_json(intent: &Intent) -> String {
    match intent {
        Intent::Create { names } => serde_json::json!({ "create": names }).to_string(),
        Intent::Destroy { ids } => serde_json::json!({ "destroy": ids }).to_string(),
    }
}

fn intent_from_json(text: &str) -> Option<Intent> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if let Some(names) = value.get("create") {
        return Some(Intent::Create {
            names: serde_json::from_value(names.clone()).ok()?,
        });
    }
    Some(Intent::Destroy {
        ids: serde_json::from_value(value.get("destroy")?.clone()).ok()?,
    })
}

/// Checks, with the group's lease row locked until the transaction ends, that `token` is still
/// the group's: a takeover waits for this write, and a write after a takeover is refused.
fn check_token(conn: &mut dyn Conn, group: &str, token: i64) -> Result<(), StateError> {
    let row = conn.query_row(
        "SELECT token, holder FROM leases WHERE grp = ?1 FOR SHARE",
        &[group.into()],
    )?;
    match row {
        Some(row) if row.int(0)? == token => Ok(()),
        Some(row) => Err(StateError::Fenced {
            group: group.to_string(),
            holder: row.text(1)?,
        }),
        None => Err(StateError::Fenced {
            group: group.to_string(),
            holder: "nobody".into(),
        }),
    }
}

impl Store {
    /// Opens the store `location` names: a SQLite file (taking its writer lock) or a
    /// PostgreSQL database (connecting, and creating or upgrading its tables).
    pub fn open_location(
        location: &super::Location,
        credentials_dir: Option<&std::path::Path>,
    ) -> Result<Store, StateError> {
        match location {
            super::Location::File(path) => Store::open(path),
            super::Location::Postgres(url) => super::postgres::open(url, credentials_dir),
        }
    }

    /// A store over `db`, before its schema is checked.
    pub(super) fn over(db: Db, described: String, lock: Option<File>) -> Store {
        Store {
            db,
            described,
            _lock: lock,
            failures: Mutex::new(BTreeMap::new()),
            tokens: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The engine the store runs on.
    pub fn engine(&self) -> Engine {
        self.db.engine()
    }

    /// Whether several daemons may share this store (each group then has one leader).
    pub fn is_shared(&self) -> bool {
        self.engine() == Engine::Postgres
    }

    /// What the store is, for messages (a path, or a server and database; never a password).
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Counts `result` against `operation` when it failed, and passes it on.
    pub(super) fn counted<T>(
        &self,
        operation: &'static str,
        result: Result<T, StateError>,
    ) -> Result<T, StateError> {
        if result.is_err()
            && let Ok(mut failures) = self.failures.lock()
        {
            *failures.entry(operation).or_insert(0) += 1;
        }
        result
    }

    /// Failed operations so far, by operation (`settle`, `record_decision`, …).
    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Sets (or, with `None`, drops) the lease token this daemon's writes for `group` carry.
    pub(super) fn set_token(&self, group: &str, token: Option<i64>) {
        if let Ok(mut tokens) = self.tokens.lock() {
            match token {
                Some(token) => tokens.insert(group.to_string(), token),
                None => tokens.remove(group),
            };
        }
    }

    fn token(&self, group: &str) -> Option<i64> {
        self.tokens.lock().ok()?.get(group).copied()
    }

    /// Runs a write only the group's leader may make, in one transaction. On PostgreSQL it
    /// first checks that this daemon's lease token is still the group's, so a daemon that lost
    /// its lease (stopped, cut off) can never write over its successor's journal.
    pub(super) fn leader_write<T: Send + 'static>(
        &self,
        group: &str,
        job: impl FnOnce(&mut dyn Conn) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        if self.engine() == Engine::Sqlite {
            return self.db.transaction(job);
        }
        let Some(token) = self.token(group) else {
            return Err(StateError::Fenced {
                group: group.to_string(),
                holder: "another daemon (this one does not hold the lease)".into(),
            });
        };
        let group = group.to_string();
        self.db.transaction(move |conn| {
            check_token(conn, &group, token)?;
            job(conn)
        })
    }

    /// Records a decision (its JSON), keeping the last thousand per group.
    pub fn record_decision(&self, group: &str, at: &str, body: &str) -> Result<(), StateError> {
        let params: Vec<Value> = vec![group.into(), at.into(), body.into()];
        let keep: Vec<Value> = vec![group.into(), DECISIONS_KEPT.into()];
        let result = self.leader_write(group, move |conn| {
            conn.execute(
                "INSERT INTO decisions (grp, at, body) VALUES (?1, ?2, ?3)",
                &params,
            )?;
            conn.execute(
                "DELETE FROM decisions WHERE grp = ?1 AND id <= (SELECT id FROM decisions WHERE grp = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                &keep,
            )?;
            Ok(())
        });
        self.counted("record_decision", result)
    }

    /// The last `limit` decisions of a group, newest first.
    pub fn decisions(&self, group: &str, limit: u32) -> Result<Vec<serde_json::Value>, StateError> {
        let rows = self.db.query(
            "SELECT body FROM decisions WHERE grp = ?1 ORDER BY id DESC LIMIT ?2",
            vec![group.into(), limit.into()],
        )?;
        Ok(rows
            .iter()
            .filter_map(|row| row.text(0).ok())
            .filter_map(|body| serde_json::from_str(&body).ok())
            .collect())
    }

    /// Pauses or resumes a group (kept across restarts; on PostgreSQL seen by every daemon).
    pub fn set_paused(&self, group: &str, paused: bool) -> Result<(), StateError> {
        if paused {
            self.db.execute(
                "INSERT INTO paused (grp, since) VALUES (?1, ?2) ON CONFLICT (grp) DO NOTHING",
                vec![group.into(), chrono::Utc::now().to_rfc3339().into()],
            )?;
        } else {
            self.db
                .execute("DELETE FROM paused WHERE grp = ?1", vec![group.into()])?;
        }
        Ok(())
    }

    /// Pauses a group on the daemon's own account, with the reason operators see; it stays
    /// paused (across restarts) until they resume it.
    pub fn pause_because(&self, group: &str, reason: &str) -> Result<(), StateError> {
        let result = self.db.execute(
            "INSERT INTO paused (grp, since, reason) VALUES (?1, ?2, ?3) ON CONFLICT (grp) DO UPDATE SET reason = excluded.reason",
            vec![group.into(), chrono::Utc::now().to_rfc3339().into(), reason.into()],
        );
        self.counted("pause", result.map(|_| ()))
    }

    /// Why the daemon paused a group itself, if it did (`None` for an operator's pause).
    pub fn pause_reason(&self, group: &str) -> Option<String> {
        self.db
            .query_row(
                "SELECT reason FROM paused WHERE grp = ?1",
                vec![group.into()],
            )
            .ok()
            .flatten()
            .and_then(|row| row.opt_text(0).ok().flatten())
    }

    /// The names this daemon asked to create for a group since `since` (from the journal).
    pub fn intended_names(
        &self,
        group: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<BTreeSet<String>, StateError> {
        let rows = self.db.query(
            "SELECT intent FROM journal WHERE grp = ?1 AND created_at >= ?2",
            vec![group.into(), since.to_rfc3339().into()],
        )?;
        let mut names = BTreeSet::new();
        for row in rows {
            if let Some(Intent::Create { names: made }) = intent_from_json(&row.text(0)?) {
                names.extend(made);
            }
        }
        Ok(names)
    }

    /// Whether a group is paused.
    pub fn is_paused(&self, group: &str) -> bool {
        self.db
            .query_row("SELECT 1 FROM paused WHERE grp = ?1", vec![group.into()])
            .ok()
            .flatten()
            .is_some()
    }

    /// Appends a group's new history points (one transaction): the state database is added
    /// to each tick, never rewritten, so the work stays proportional to what was scraped.
    pub fn append_samples(
        &self,
        group: &str,
        points: &[crate::metrics::history::NewPoint],
    ) -> Result<(), StateError> {
        self.counted("append_samples", self.write_samples(group, points))
    }

    fn write_samples(
        &self,
        group: &str,
        points: &[crate::metrics::history::NewPoint],
    ) -> Result<(), StateError> {
        if points.is_empty() {
            return Ok(());
        }
        // Owned, so the write can run on the PostgreSQL connection's thread.
        let mut labels_text: std::collections::HashMap<(u64, &crate::query::Labels), String> =
            std::collections::HashMap::new();
        let mut owned = Vec::with_capacity(points.len());
        for (droplet, labels, t, value) in points {
            let text = match labels_text.get(&(*droplet, labels)) {
                Some(text) => text.clone(),
                None => {
                    let text = serde_json::to_string(&labels.iter().collect::<Vec<_>>())
                        .map_err(store_error)?;
                    labels_text.insert((*droplet, labels), text.clone());
                    text
                }
            };
            owned.push((*droplet, text, *t, value.to_bits() as i64));
        }
        let group_value: Value = group.into();
        self.leader_write(group, move |conn| {
            // The group's series in one query, new ones added; then the points in batches:
            // a handful of round trips per tick, not one per point (PostgreSQL is remote).
            let mut ids: std::collections::HashMap<(u64, String), i64> = conn
                .query(
                    "SELECT id, droplet, labels FROM series WHERE grp = ?1",
                    std::slice::from_ref(&group_value),
                )?
                .iter()
                .map(|row| Ok(((row.int(1)? as u64, row.text(2)?), row.int(0)?)))
                .collect::<Result<_, StateError>>()?;
            let mut rows = Vec::with_capacity(owned.len());
            for (droplet, text, t, bits) in owned {
                let key = (droplet, text);
                let id = match ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let params = [group_value.clone(), droplet.into(), key.1.clone().into()];
                        let id = returned_id(conn.query_row(
                            "INSERT INTO series (grp, droplet, labels) VALUES (?1, ?2, ?3) RETURNING id",
                            &params,
                        )?)?;
                        ids.insert(key, id);
                        id
                    }
                };
                rows.push([Value::Int(id), Value::Int(t), Value::Int(bits)]);
            }
            for chunk in rows.chunks(SAMPLES_PER_INSERT) {
                let marks: Vec<String> = (0..chunk.len())
                    .map(|i| format!("(?{}, ?{}, ?{})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                    .collect();
                let sql = format!(
                    "INSERT INTO samples (series, t, v) VALUES {}",
                    marks.join(", ")
                );
                let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
                conn.execute(&sql, &params)?;
            }
            Ok(())
        })
    }

    /// Deletes a group's points older than `before_ms`, and series left without any.
    pub fn prune_samples(&self, group: &str, before_ms: i64) -> Result<(), StateError> {
        let params: Vec<Value> = vec![group.into(), before_ms.into()];
        let result = self.leader_write(group, move |conn| {
            conn.execute(
                "DELETE FROM samples WHERE t < ?2 AND series IN (SELECT id FROM series WHERE grp = ?1)",
                &params,
            )?;
            conn.execute(
                "DELETE FROM series WHERE grp = ?1 AND NOT EXISTS (SELECT 1 FROM samples WHERE samples.series = series.id)",
                &params[..1],
            )?;
            Ok(())
        });
        self.counted("prune_samples", result)
    }

    /// Visits a group's kept series from `since_ms` on: each series once, with its points in
    /// time order; returns how many droplets they belong to.
    pub fn load_samples(
        &self,
        group: &str,
        since_ms: i64,
        mut visit: impl FnMut(u64, crate::query::Labels, Vec<(i64, f64)>),
    ) -> Result<usize, StateError> {
        let rows = self.db.query(
            "SELECT samples.series, series.droplet, series.labels, samples.t, samples.v
             FROM samples JOIN series ON series.id = samples.series
             WHERE series.grp = ?1 AND samples.t >= ?2
             ORDER BY samples.series, samples.t",
            vec![group.into(), since_ms.into()],
        )?;
        let mut droplets = BTreeSet::new();
        let mut current: Option<(i64, u64, String)> = None;
        let mut points: Vec<(i64, f64)> = Vec::new();
        let mut flush = |current: &mut Option<(i64, u64, String)>,
                         points: &mut Vec<(i64, f64)>|
         -> Result<(), StateError> {
            if let Some((_, droplet, text)) = current.take() {
                let pairs: Vec<(String, String)> =
                    serde_json::from_str(&text).map_err(store_error)?;
                visit(
                    droplet,
                    crate::query::Labels::new(pairs),
                    std::mem::take(points),
                );
            }
            Ok(())
        };
        for row in rows {
            let series = row.int(0)?;
            if current.as_ref().is_none_or(|(id, _, _)| *id != series) {
                flush(&mut current, &mut points)?;
                let droplet = row.int(1)?;
                droplets.insert(droplet);
                current = Some((series, droplet as u64, row.text(2)?));
            }
            points.push((row.int(3)?, f64::from_bits(row.int(4)? as u64)));
        }
        flush(&mut current, &mut points)?;
        Ok(droplets.len())
    }

    /// Drops settled journal entries older than a week.
    pub fn prune(&self) -> Result<(), StateError> {
        let cutoff = (chrono::Utc::now() - chrono::Duration::days(7)).to_rfc3339();
        self.db.execute(
            "DELETE FROM journal WHERE settled_at IS NOT NULL AND settled_at < ?1",
            vec![cutoff.into()],
        )?;
        Ok(())
    }
}

/// The id an `INSERT … RETURNING id` gave back.
fn returned_id(row: Option<Row>) -> Result<i64, StateError> {
    row.ok_or_else(|| StateError::Store("an insert returned no id".into()))?
        .int(0)
}

impl Journal for Store {
    fn intend(&self, group: &str, intent: &Intent) -> Result<u64, StateError> {
        let params: Vec<Value> = vec![
            group.into(),
            intent_json(intent).into(),
            chrono::Utc::now().to_rfc3339().into(),
        ];
        let result = self.leader_write(group, move |conn| {
            returned_id(conn.query_row(
                "INSERT INTO journal (grp, intent, created_at) VALUES (?1, ?2, ?3) RETURNING id",
                &params,
            )?)
            .map(|id| id as u64)
        });
        self.counted("intend", result)
    }

    fn settle(&self, entry: u64, outcome: &str) -> Result<(), StateError> {
        let params: Vec<Value> = vec![
            chrono::Utc::now().to_rfc3339().into(),
            outcome.into(),
            entry.into(),
        ];
        let result = if self.engine() == Engine::Sqlite {
            self.db
                .execute(
                    "UPDATE journal SET settled_at = ?1, outcome = ?2 WHERE id = ?3",
                    params,
                )
                .map(|_| ())
        } else {
            // Fenced by the entry's own group.
            let tokens = self.tokens.lock().map(|t| t.clone()).unwrap_or_default();
            self.db.transaction(move |conn| {
                let Some(row) =
                    conn.query_row("SELECT grp FROM journal WHERE id = ?1", &params[2..])?
                else {
                    return Ok(());
                };
                let group = row.text(0)?;
                let token = tokens.get(&group).copied().ok_or(StateError::Fenced {
                    group: group.clone(),
                    holder: "another daemon (this one does not hold the lease)".into(),
                })?;
                check_token(conn, &group, token)?;
                conn.execute(
                    "UPDATE journal SET settled_at = ?1, outcome = ?2 WHERE id = ?3",
                    &params,
                )?;
                Ok(())
            })
        };
        self.counted("settle", result)
    }

    fn pending(&self) -> Result<Vec<Pending>, StateError> {
        let rows = self.db.query(
            "SELECT id, grp, intent FROM journal WHERE settled_at IS NULL ORDER BY id",
            Vec::new(),
        );
        let rows = self.counted("pending", rows)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(Pending {
                    id: row.int(0).ok()? as u64,
                    group: row.text(1).ok()?,
                    intent: intent_from_json(&row.text(2).ok()?)?,
                })
            })
            .collect())
    }

    fn mark_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        let rows = each(group, ids, chrono::Utc::now().to_rfc3339());
        let result = self.leader_write(group, move |conn| {
            for params in rows {
                conn.execute(
                    "INSERT INTO deleted (grp, droplet, since) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    &params,
                )?;
            }
            Ok(())
        });
        self.counted("mark_deleted", result)
    }

    fn deleted(&self, group: &str) -> Result<BTreeSet<u64>, StateError> {
        let rows = self.db.query(
            "SELECT droplet FROM deleted WHERE grp = ?1",
            vec![group.into()],
        );
        let rows = self.counted("deleted", rows)?;
        Ok(rows
            .iter()
            .filter_map(|row| row.int(0).ok())
            .map(|id| id as u64)
            .collect())
    }

    fn forget_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        let rows: Vec<[Value; 2]> = ids.iter().map(|id| [group.into(), (*id).into()]).collect();
        let result = self.leader_write(group, move |conn| {
            for params in rows {
                conn.execute(
                    "DELETE FROM deleted WHERE grp = ?1 AND droplet = ?2",
                    &params,
                )?;
            }
            Ok(())
        });
        self.counted("forget_deleted", result)
    }

    fn mark_created(&self, group: &str, created: &[Unlisted]) -> Result<(), StateError> {
        let rows: Vec<[Value; 4]> = created
            .iter()
            .map(|entry| {
                [
                    group.into(),
                    (&entry.name).into(),
                    entry.id.into(),
                    entry.since.to_rfc3339().into(),
                ]
            })
            .collect();
        let result = self.leader_write(group, move |conn| {
            for params in rows {
                conn.execute(
                    "INSERT INTO unlisted (grp, name, droplet, since) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (grp, name) DO UPDATE SET droplet = excluded.droplet, since = excluded.since",
                    &params,
                )?;
            }
            Ok(())
        });
        self.counted("mark_created", result)
    }

    fn unlisted(&self, group: &str) -> Result<Vec<Unlisted>, StateError> {
        let rows = self.db.query(
            "SELECT name, droplet, since FROM unlisted WHERE grp = ?1 ORDER BY since",
            vec![group.into()],
        );
        let rows = self.counted("unlisted", rows)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(Unlisted {
                    name: row.text(0).ok()?,
                    id: row.opt_int(1).ok()?.map(|id| id as u64),
                    since: chrono::DateTime::parse_from_rfc3339(&row.text(2).ok()?)
                        .ok()?
                        .with_timezone(&chrono::Utc),
                })
            })
            .collect())
    }

    fn forget_unlisted(&self, group: &str, names: &[String]) -> Result<(), StateError> {
        let rows: Vec<[Value; 2]> = names.iter().map(|n| [group.into(), n.into()]).collect();
        let result = self.leader_write(group, move |conn| {
            for params in rows {
                conn.execute("DELETE FROM unlisted WHERE grp = ?1 AND name = ?2", &params)?;
            }
            Ok(())
        });
        self.counted("forget_unlisted", result)
    }
}

/// One `(group, id, since)` parameter row per id.
fn each(group: &str, ids: &[u64], since: String) -> Vec<[Value; 3]> {
    ids.iter()
        .map(|id| [group.into(), (*id).into(), since.clone().into()])
        .collect()
}

impl MemoryStore for Store {
    fn load(&self, group: &str) -> GroupMemory {
        self.db
            .query_row("SELECT body FROM memory WHERE grp = ?1", vec![group.into()])
            .ok()
            .flatten()
            .and_then(|row| row.text(0).ok())
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }

    fn save(&self, group: &str, memory: &GroupMemory) {
        let Ok(body) = serde_json::to_string(memory) else {
            return;
        };
        let params: Vec<Value> = vec![group.into(), body.into()];
        let result = self.leader_write(group, move |conn| {
            conn.execute(
                "INSERT INTO memory (grp, body) VALUES (?1, ?2) ON CONFLICT (grp) DO UPDATE SET body = excluded.body",
                &params,
            )
        });
        if let Err(error) = result {
            tracing::error!(group, %error, "cannot save the group's memory");
            let _ = self.counted::<()>("save_memory", Err(error));
        }
    }
}
