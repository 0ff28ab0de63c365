//! The SQLite back end, the embedded default: opening a file with its writer lock (one process
//! writes a database), opening one read-only beside a running daemon (`plan`), and the schema's
//! step-by-step migrations. The tables' statements are shared with PostgreSQL (`store.rs`).

use super::StateError;
use super::db::Db;
use super::store::{Store, store_error};
use rusqlite::Connection;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The schema version this binary writes; older databases are migrated step by step.
pub(super) const SCHEMA_VERSION: i64 = 11;

pub(super) const MIGRATIONS: &[&str] = &[
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

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`, taking its writer lock.
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
        migrate(&conn, path)?;
        let store = Store::over(
            Db::Sqlite(Mutex::new(conn)),
            path.display().to_string(),
            Some(lock),
        );
        store.prune()?;
        Ok(store)
    }

    /// Opens a database another process may be writing, to read memories and history
    /// (`plan`). Takes no lock and writes nothing.
    pub fn open_read_only(path: &Path) -> Result<Store, StateError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StateError::Store(format!("cannot open {}: {e}", path.display())))?;
        Ok(Store::over(
            Db::Sqlite(Mutex::new(conn)),
            path.display().to_string(),
            None,
        ))
    }
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(store_error)?;
    if version > SCHEMA_VERSION {
        return Err(StateError::Store(format!(
            "{} has schema version {version}, newer than this do-scaler ({SCHEMA_VERSION}): upgrade do-scaler",
            path.display()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{GroupMemory, MemoryStore};
    use crate::state::{Intent, Journal};

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
            .db
            .execute("DROP TABLE decisions", Vec::new())
            .unwrap();
        store.db.execute("DROP TABLE journal", Vec::new()).unwrap();
        assert!(store.record_decision("web", "now", "{}").is_err());
        assert!(store.settle(1, "done").is_err());
        let failures = store.failures();
        assert_eq!(failures.get("record_decision"), Some(&1));
        assert_eq!(failures.get("settle"), Some(&1));
    }
}
