//! The SQLite state database: the intent journal (written with a synchronous commit before each
//! create and destroy), group memories (cooldown clocks, backoff), decisions with their
//! explanations, and pause flags. One process writes a database: an exclusive lock on a file
//! beside it refuses a second daemon.

use super::{Intent, Journal, Pending, StateError, Unlisted};
use crate::policy::{GroupMemory, MemoryStore};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The schema version this binary writes; older databases are migrated step by step.
const SCHEMA_VERSION: i64 = 11;

/// Decisions kept per group.
const DECISIONS_KEPT: i64 = 1000;

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        grp TEXT NOT NULL,
        intent TEXT NOT NULL,
        created_at TEXT NOT NULL,
        settled_at TEXT,
        outcome TEXT
    );
    CREATE TABLE memory (grp TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL, at TEXT NOT NULL, body TEXT NOT NULL);
    CREATE INDEX decisions_by_group ON decisions (grp, id);
    CREATE TABLE paused (grp TEXT PRIMARY KEY, since TEXT NOT NULL);
",
    "CREATE TABLE history (grp TEXT PRIMARY KEY, body TEXT NOT NULL);",
    // One row per droplet, so saving or loading a large group never holds its whole history
    // as one text. The old blobs are dropped: the rules warm up again once.
    "DROP TABLE history;
     CREATE TABLE history (grp TEXT NOT NULL, droplet INTEGER NOT NULL, body TEXT NOT NULL,
                           PRIMARY KEY (grp, droplet));",
    // Droplets whose delete was accepted and that may still be listed (listings lag).
    "CREATE TABLE deleted (grp TEXT NOT NULL, droplet INTEGER NOT NULL, since TEXT NOT NULL,
                           PRIMARY KEY (grp, droplet));",
    // Droplets created (or asked for with an unknown outcome) that listings do not show yet.
    "CREATE TABLE unlisted (grp TEXT NOT NULL, name TEXT NOT NULL, droplet INTEGER,
                            since TEXT NOT NULL, PRIMARY KEY (grp, name));",
    // Why a group is paused, when the daemon paused it itself (another daemon on its droplets).
    "ALTER TABLE paused ADD COLUMN reason TEXT;",
    // The sample history as an append-only log: each tick adds its new points (values as the
    // bits of an f64, so NaN and staleness markers survive), old ones are deleted by time.
    // The whole-droplet texts it replaces are dropped: the rules warm up again once.
    "DROP TABLE history;
     CREATE TABLE series (id INTEGER PRIMARY KEY, grp TEXT NOT NULL, droplet INTEGER NOT NULL,
                          labels TEXT NOT NULL, UNIQUE (grp, droplet, labels));
     CREATE TABLE samples (series INTEGER NOT NULL, t INTEGER NOT NULL, v INTEGER NOT NULL);
     CREATE INDEX samples_by_series ON samples (series, t);
     CREATE INDEX samples_by_time ON samples (t);",
    // The status page's day of sizes: one row per group and minute (see `sizes.rs`).
    "CREATE TABLE sizes (grp TEXT NOT NULL, minute INTEGER NOT NULL, current INTEGER NOT NULL,
                         desired INTEGER NOT NULL, min INTEGER NOT NULL, max INTEGER NOT NULL,
                         PRIMARY KEY (grp, minute));",
    // Droplets draining before their destroy (see `drains.rs`).
    "CREATE TABLE draining (grp TEXT NOT NULL, droplet INTEGER NOT NULL, since TEXT NOT NULL,
                            deadline TEXT NOT NULL, prepared INTEGER NOT NULL,
                            PRIMARY KEY (grp, droplet));",
    // Replacements of unhealthy droplets (see `replacements.rs`).
    "CREATE TABLE replacements (grp TEXT NOT NULL, old INTEGER NOT NULL, new_name TEXT NOT NULL,
                                reason TEXT NOT NULL, started TEXT NOT NULL, phase TEXT NOT NULL,
                                failure TEXT, ended TEXT, outcome TEXT, acknowledged INTEGER NOT NULL DEFAULT 0);
     CREATE INDEX replacements_by_group ON replacements (grp, started);",
    // Groups whose `[refresh]` an operator paused (see `replacements.rs`).
    "CREATE TABLE refresh_paused (grp TEXT PRIMARY KEY, since TEXT NOT NULL);",
];

pub(super) fn store_error(error: impl std::fmt::Display) -> StateError {
    StateError::Store(error.to_string())
}

/// The state database.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    _lock: File,
    /// Failed operations by name: every failure is logged where it happens and counted here
    /// for `do_scaler_state_errors_total`, never discarded.
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
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

impl Store {
    /// Opens (creating if needed) the database at `path`, taking its writer lock.
    pub fn open(path: &Path) -> Result<Store, StateError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StateError::Store(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StateError::Store(format!("cannot open {}: {e}", lock_path.display())))?;
        // SAFETY: flock on a file descriptor we own; the lock lives as long as the File.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            return Err(StateError::Locked(path.to_path_buf()));
        }
        let conn = Connection::open(path)
            .map_err(|e| StateError::Store(format!("cannot open {}: {e}", path.display())))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(store_error)?;
        let store = Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            _lock: lock,
            failures: Mutex::new(BTreeMap::new()),
        };
        store.migrate()?;
        store.prune()?;
        Ok(store)
    }

    /// The connection, for the other tables' modules.
    pub(super) fn connection(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StateError> {
        self.conn.lock().map_err(store_error)
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

    fn migrate(&self) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(store_error)?;
        if version > SCHEMA_VERSION {
            return Err(StateError::Store(format!(
                "{} has schema version {version}, newer than this do-scaler ({SCHEMA_VERSION}): upgrade do-scaler",
                self.path.display()
            )));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!(
                "BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;",
                index + 1
            ))
            .map_err(store_error)?;
        }
        Ok(())
    }

    /// Records a decision (its JSON), keeping the last thousand per group.
    pub fn record_decision(&self, group: &str, at: &str, body: &str) -> Result<(), StateError> {
        self.counted("record_decision", self.insert_decision(group, at, body))
    }

    fn insert_decision(&self, group: &str, at: &str, body: &str) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        conn.execute(
            "INSERT INTO decisions (grp, at, body) VALUES (?1, ?2, ?3)",
            params![group, at, body],
        )
        .map_err(store_error)?;
        conn.execute(
            "DELETE FROM decisions WHERE grp = ?1 AND id <= (SELECT id FROM decisions WHERE grp = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![group, DECISIONS_KEPT],
        )
        .map_err(store_error)?;
        Ok(())
    }

    /// The last `limit` decisions of a group, newest first.
    pub fn decisions(&self, group: &str, limit: u32) -> Result<Vec<serde_json::Value>, StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        let mut statement = conn
            .prepare("SELECT body FROM decisions WHERE grp = ?1 ORDER BY id DESC LIMIT ?2")
            .map_err(store_error)?;
        let rows = statement
            .query_map(params![group, limit], |row| row.get::<_, String>(0))
            .map_err(store_error)?;
        Ok(rows
            .flatten()
            .filter_map(|body| serde_json::from_str(&body).ok())
            .collect())
    }

    /// Pauses or resumes a group (kept across restarts).
    pub fn set_paused(&self, group: &str, paused: bool) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        if paused {
            conn.execute(
                "INSERT OR IGNORE INTO paused (grp, since) VALUES (?1, ?2)",
                params![group, chrono::Utc::now().to_rfc3339()],
            )
        } else {
            conn.execute("DELETE FROM paused WHERE grp = ?1", params![group])
        }
        .map_err(store_error)?;
        Ok(())
    }

    /// Pauses a group on the daemon's own account, with the reason operators see; it stays
    /// paused (across restarts) until they resume it.
    pub fn pause_because(&self, group: &str, reason: &str) -> Result<(), StateError> {
        let result = self.conn.lock().map_err(store_error).and_then(|conn| {
            conn.execute(
                "INSERT INTO paused (grp, since, reason) VALUES (?1, ?2, ?3) ON CONFLICT (grp) DO UPDATE SET reason = excluded.reason",
                params![group, chrono::Utc::now().to_rfc3339(), reason],
            )
            .map(|_| ())
            .map_err(store_error)
        });
        self.counted("pause", result)
    }

    /// Why the daemon paused a group itself, if it did (`None` for an operator's pause).
    pub fn pause_reason(&self, group: &str) -> Option<String> {
        self.conn.lock().ok().and_then(|conn| {
            conn.query_row(
                "SELECT reason FROM paused WHERE grp = ?1",
                params![group],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .ok()
            .flatten()
            .flatten()
        })
    }

    /// The names this daemon asked to create for a group since `since` (from the journal).
    pub fn intended_names(
        &self,
        group: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<BTreeSet<String>, StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        let mut statement = conn
            .prepare("SELECT intent FROM journal WHERE grp = ?1 AND created_at >= ?2")
            .map_err(store_error)?;
        let rows = statement
            .query_map(params![group, since.to_rfc3339()], |row| {
                row.get::<_, String>(0)
            })
            .map_err(store_error)?;
        let mut names = BTreeSet::new();
        for text in rows.flatten() {
            if let Some(Intent::Create { names: made }) = intent_from_json(&text) {
                names.extend(made);
            }
        }
        Ok(names)
    }

    /// Whether a group is paused.
    pub fn is_paused(&self, group: &str) -> bool {
        self.conn
            .lock()
            .ok()
            .and_then(|conn| {
                conn.query_row(
                    "SELECT 1 FROM paused WHERE grp = ?1",
                    params![group],
                    |_| Ok(()),
                )
                .optional()
                .ok()
                .flatten()
            })
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
        let mut conn = self.conn.lock().map_err(store_error)?;
        let transaction = conn.transaction().map_err(store_error)?;
        {
            let mut find = transaction
                .prepare_cached(
                    "SELECT id FROM series WHERE grp = ?1 AND droplet = ?2 AND labels = ?3",
                )
                .map_err(store_error)?;
            let mut make = transaction
                .prepare_cached("INSERT INTO series (grp, droplet, labels) VALUES (?1, ?2, ?3)")
                .map_err(store_error)?;
            let mut insert = transaction
                .prepare_cached("INSERT INTO samples (series, t, v) VALUES (?1, ?2, ?3)")
                .map_err(store_error)?;
            let mut ids: std::collections::HashMap<(u64, &crate::query::Labels), i64> =
                std::collections::HashMap::new();
            for (droplet, labels, t, value) in points {
                let id = match ids.get(&(*droplet, labels)) {
                    Some(id) => *id,
                    None => {
                        let text = serde_json::to_string(&labels.iter().collect::<Vec<_>>())
                            .map_err(store_error)?;
                        let found: Option<i64> = find
                            .query_row(params![group, *droplet as i64, text], |r| r.get(0))
                            .optional()
                            .map_err(store_error)?;
                        let id = match found {
                            Some(id) => id,
                            None => {
                                make.execute(params![group, *droplet as i64, text])
                                    .map_err(store_error)?;
                                transaction.last_insert_rowid()
                            }
                        };
                        ids.insert((*droplet, labels), id);
                        id
                    }
                };
                insert
                    .execute(params![id, t, value.to_bits() as i64])
                    .map_err(store_error)?;
            }
        }
        transaction.commit().map_err(store_error)
    }

    /// Deletes a group's points older than `before_ms`, and series left without any.
    pub fn prune_samples(&self, group: &str, before_ms: i64) -> Result<(), StateError> {
        let result = self.conn.lock().map_err(store_error).and_then(|conn| {
            conn.execute(
                "DELETE FROM samples WHERE t < ?2 AND series IN (SELECT id FROM series WHERE grp = ?1)",
                params![group, before_ms],
            )
            .map_err(store_error)?;
            conn.execute(
                "DELETE FROM series WHERE grp = ?1 AND NOT EXISTS (SELECT 1 FROM samples WHERE samples.series = series.id)",
                params![group],
            )
            .map_err(store_error)?;
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
        let conn = self.conn.lock().map_err(store_error)?;
        let mut statement = conn
            .prepare(
                "SELECT samples.series, series.droplet, series.labels, samples.t, samples.v
                 FROM samples JOIN series ON series.id = samples.series
                 WHERE series.grp = ?1 AND samples.t >= ?2
                 ORDER BY samples.series, samples.t",
            )
            .map_err(store_error)?;
        let mut rows = statement
            .query(params![group, since_ms])
            .map_err(store_error)?;
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
        while let Some(row) = rows.next().map_err(store_error)? {
            let series: i64 = row.get(0).map_err(store_error)?;
            if current.as_ref().is_none_or(|(id, _, _)| *id != series) {
                flush(&mut current, &mut points)?;
                let droplet: i64 = row.get(1).map_err(store_error)?;
                droplets.insert(droplet);
                current = Some((series, droplet as u64, row.get(2).map_err(store_error)?));
            }
            let t: i64 = row.get(3).map_err(store_error)?;
            let bits: i64 = row.get(4).map_err(store_error)?;
            points.push((t, f64::from_bits(bits as u64)));
        }
        flush(&mut current, &mut points)?;
        Ok(droplets.len())
    }

    /// Opens a database another process may be writing, to read memories and history
    /// (`plan`). Takes no lock and writes nothing.
    pub fn open_read_only(path: &Path) -> Result<Store, StateError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StateError::Store(format!("cannot open {}: {e}", path.display())))?;
        let lock = File::open(path).map_err(|e| StateError::Store(e.to_string()))?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            _lock: lock,
            failures: Mutex::new(BTreeMap::new()),
        })
    }

    /// Drops settled journal entries older than a week.
    pub fn prune(&self) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        let cutoff = (chrono::Utc::now() - chrono::Duration::days(7)).to_rfc3339();
        conn.execute(
            "DELETE FROM journal WHERE settled_at IS NOT NULL AND settled_at < ?1",
            params![cutoff],
        )
        .map_err(store_error)?;
        Ok(())
    }
}

impl Journal for Store {
    fn intend(&self, group: &str, intent: &Intent) -> Result<u64, StateError> {
        self.counted("intend", self.write_intent(group, intent))
    }

    fn settle(&self, entry: u64, outcome: &str) -> Result<(), StateError> {
        self.counted("settle", self.write_settle(entry, outcome))
    }

    fn pending(&self) -> Result<Vec<Pending>, StateError> {
        self.counted("pending", self.read_pending())
    }

    fn mark_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        self.counted("mark_deleted", self.write_deleted(group, ids))
    }

    fn deleted(&self, group: &str) -> Result<BTreeSet<u64>, StateError> {
        self.counted("deleted", self.read_deleted(group))
    }

    fn forget_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        self.counted("forget_deleted", self.remove_deleted(group, ids))
    }

    fn mark_created(&self, group: &str, created: &[Unlisted]) -> Result<(), StateError> {
        self.counted("mark_created", self.write_unlisted(group, created))
    }

    fn unlisted(&self, group: &str) -> Result<Vec<Unlisted>, StateError> {
        self.counted("unlisted", self.read_unlisted(group))
    }

    fn forget_unlisted(&self, group: &str, names: &[String]) -> Result<(), StateError> {
        self.counted("forget_unlisted", self.remove_unlisted(group, names))
    }
}

impl Store {
    fn write_unlisted(&self, group: &str, created: &[Unlisted]) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        for entry in created {
            conn.execute(
                "INSERT OR REPLACE INTO unlisted (grp, name, droplet, since) VALUES (?1, ?2, ?3, ?4)",
                params![
                    group,
                    entry.name,
                    entry.id.map(|id| id as i64),
                    entry.since.to_rfc3339()
                ],
            )
            .map_err(store_error)?;
        }
        Ok(())
    }

    fn read_unlisted(&self, group: &str) -> Result<Vec<Unlisted>, StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        let mut statement = conn
            .prepare("SELECT name, droplet, since FROM unlisted WHERE grp = ?1 ORDER BY since")
            .map_err(store_error)?;
        let rows = statement
            .query_map(params![group], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(store_error)?;
        Ok(rows
            .flatten()
            .filter_map(|(name, id, since)| {
                Some(Unlisted {
                    name,
                    id: id.map(|id| id as u64),
                    since: chrono::DateTime::parse_from_rfc3339(&since)
                        .ok()?
                        .with_timezone(&chrono::Utc),
                })
            })
            .collect())
    }

    fn remove_unlisted(&self, group: &str, names: &[String]) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        for name in names {
            conn.execute(
                "DELETE FROM unlisted WHERE grp = ?1 AND name = ?2",
                params![group, name],
            )
            .map_err(store_error)?;
        }
        Ok(())
    }

    fn write_intent(&self, group: &str, intent: &Intent) -> Result<u64, StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        conn.execute(
            "INSERT INTO journal (grp, intent, created_at) VALUES (?1, ?2, ?3)",
            params![group, intent_json(intent), chrono::Utc::now().to_rfc3339()],
        )
        .map_err(store_error)?;
        Ok(conn.last_insert_rowid() as u64)
    }

    fn write_settle(&self, entry: u64, outcome: &str) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        conn.execute(
            "UPDATE journal SET settled_at = ?1, outcome = ?2 WHERE id = ?3",
            params![chrono::Utc::now().to_rfc3339(), outcome, entry as i64],
        )
        .map_err(store_error)?;
        Ok(())
    }

    fn read_pending(&self) -> Result<Vec<Pending>, StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        let mut statement = conn
            .prepare("SELECT id, grp, intent FROM journal WHERE settled_at IS NULL ORDER BY id")
            .map_err(store_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(store_error)?;
        Ok(rows
            .flatten()
            .filter_map(|(id, group, intent)| {
                Some(Pending {
                    id: id as u64,
                    group,
                    intent: intent_from_json(&intent)?,
                })
            })
            .collect())
    }

    fn write_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        let now = chrono::Utc::now().to_rfc3339();
        for id in ids {
            conn.execute(
                "INSERT OR IGNORE INTO deleted (grp, droplet, since) VALUES (?1, ?2, ?3)",
                params![group, *id as i64, now],
            )
            .map_err(store_error)?;
        }
        Ok(())
    }

    fn read_deleted(&self, group: &str) -> Result<BTreeSet<u64>, StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        let mut statement = conn
            .prepare("SELECT droplet FROM deleted WHERE grp = ?1")
            .map_err(store_error)?;
        let rows = statement
            .query_map(params![group], |row| row.get::<_, i64>(0))
            .map_err(store_error)?;
        Ok(rows.flatten().map(|id| id as u64).collect())
    }

    fn remove_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        let conn = self.conn.lock().map_err(store_error)?;
        for id in ids {
            conn.execute(
                "DELETE FROM deleted WHERE grp = ?1 AND droplet = ?2",
                params![group, *id as i64],
            )
            .map_err(store_error)?;
        }
        Ok(())
    }
}

impl MemoryStore for Store {
    fn load(&self, group: &str) -> GroupMemory {
        self.conn
            .lock()
            .ok()
            .and_then(|conn| {
                conn.query_row(
                    "SELECT body FROM memory WHERE grp = ?1",
                    params![group],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .ok()
                .flatten()
            })
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }

    fn save(&self, group: &str, memory: &GroupMemory) {
        let Ok(body) = serde_json::to_string(memory) else {
            return;
        };
        if let Ok(conn) = self.conn.lock()
            && let Err(error) = conn.execute(
                "INSERT INTO memory (grp, body) VALUES (?1, ?2) ON CONFLICT (grp) DO UPDATE SET body = excluded.body",
                params![group, body],
            )
        {
            tracing::error!(group, %error, "cannot save the group's memory");
            let _ = self.counted::<()>("save_memory", Err(store_error(error)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_memory_pause_and_decisions_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            let entry = store
                .intend(
                    "web",
                    &Intent::Create {
                        names: vec!["web-a".into()],
                    },
                )
                .unwrap();
            store
                .intend("web", &Intent::Destroy { ids: vec![7] })
                .unwrap();
            store.settle(entry, "created 1").unwrap();
            let mut memory = GroupMemory::default();
            memory.up_failed(chrono::Utc::now());
            store.save("web", &memory);
            store.set_paused("web", true).unwrap();
            for i in 0..3 {
                store
                    .record_decision("web", "now", &format!("{{\"n\": {i}}}"))
                    .unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.pending().unwrap().len(), 1);
        assert_eq!(
            store.pending().unwrap()[0].intent,
            Intent::Destroy { ids: vec![7] }
        );
        assert_eq!(store.load("web").up_failures, 1);
        assert!(store.is_paused("web"));
        assert!(!store.is_paused("worker"));
        let decisions = store.decisions("web", 2).unwrap();
        assert_eq!(
            decisions,
            [serde_json::json!({"n": 2}), serde_json::json!({"n": 1})]
        );
    }

    #[test]
    fn history_is_kept_per_droplet_and_a_version_2_database_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            // A database as version 2 left it, with a whole-group history blob.
            let conn = Connection::open(&path).unwrap();
            for migration in &MIGRATIONS[..2] {
                conn.execute_batch(migration).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 2; INSERT INTO history VALUES ('web', '[]');",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        // Migrated to the append-only log; points round-trip bit for bit (NaN and staleness
        // markers included), appends add, pruning deletes by time.
        let labels = crate::query::Labels::new([("__name__", "up"), ("droplet_id", "1")]);
        let points = [
            (1u64, labels.clone(), 1_000i64, 1.5f64),
            (1, labels.clone(), 2_000, f64::NAN),
            (1, labels.clone(), 3_000, crate::query::eval::STALE),
        ];
        store.append_samples("web", &points[..2]).unwrap();
        store.append_samples("web", &points[2..]).unwrap();
        let mut kept = Vec::new();
        let droplets = store
            .load_samples("web", 0, |_, _, series| kept.extend(series))
            .unwrap();
        assert_eq!(droplets, 1);
        let bits: Vec<u64> = kept.iter().map(|(_, v)| v.to_bits()).collect();
        let want: Vec<u64> = points.iter().map(|(_, _, _, v)| v.to_bits()).collect();
        assert_eq!(bits, want);
        store.prune_samples("web", 2_500).unwrap();
        let mut left = 0;
        store
            .load_samples("web", 0, |_, _, series| left += series.len())
            .unwrap();
        assert_eq!(left, 1);
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let _first = Store::open(&path).unwrap();
        let error = Store::open(&path).unwrap_err();
        assert!(error.to_string().contains("another do-scaler"), "{error}");
    }

    #[test]
    fn failed_writes_are_counted_not_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store
            .conn
            .lock()
            .unwrap()
            .execute_batch("DROP TABLE decisions; DROP TABLE journal;")
            .unwrap();
        assert!(store.record_decision("web", "now", "{}").is_err());
        assert!(store.settle(1, "done").is_err());
        let failures = store.failures();
        assert_eq!(failures.get("record_decision"), Some(&1));
        assert_eq!(failures.get("settle"), Some(&1));
    }
}
