//! State that outlives a tick: the intent journal of creates and destroys, group memories,
//! decisions and pause flags, in SQLite (`sqlite`, one daemon), in PostgreSQL (`postgres`,
//! several daemons, one leader per group by `lease`) or in memory. Every create and destroy is
//! written here before the API call and settled after it, so a crash in between is reconciled
//! against the tag listing on the next start (or by the next leader).

pub mod copy;
pub mod db;
pub mod drains;
pub mod lease;
pub mod postgres;
mod postgres_tls;
pub mod replacements;
pub mod sizes;
pub mod sqlite;
pub mod store;

pub use drains::Draining;
pub use replacements::{Ended, Phase, Replacement};
pub use sizes::SizePoint;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
pub use store::Store;

/// What an action was about to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Create droplets with these unique names.
    Create {
        /// The names asked for.
        names: Vec<String>,
    },
    /// Destroy these droplets.
    Destroy {
        /// The droplet ids.
        ids: Vec<u64>,
    },
}

/// A droplet this daemon created (or may have created) that the listings do not show yet:
/// it counts as booting until they do, so a lagging listing never makes the group ask twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlisted {
    /// Its unique name.
    pub name: String,
    /// Its id, when the create was answered (`None` after an ambiguous answer).
    pub id: Option<u64>,
    /// When it was asked for.
    pub since: chrono::DateTime<chrono::Utc>,
}

/// A journal entry not yet settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Entry id.
    pub id: u64,
    /// The group.
    pub group: String,
    /// What was intended.
    pub intent: Intent,
}

/// Why the state could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed.
    #[error("state store: {0}")]
    Store(String),
    /// Another process holds the database.
    #[error(
        "{} is in use by another do-scaler (run, --once or plan with state): only one process may write a state database; stop it or pass another --state",
        .0.display()
    )]
    Locked(PathBuf),
    /// Another daemon leads the group now: a write only its leader may make was refused.
    #[error(
        "group `{group}`: {holder} leads this group now; this daemon lost its lease, and its write was refused"
    )]
    Fenced {
        /// The group.
        group: String,
        /// Who holds the lease, as far as the refusal knows.
        holder: String,
    },
}

/// Where the state lives: the base file's `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (one daemon).
    File(PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`), shared by several daemons.
    /// The URL carries no password: that comes from a systemd credential or a passfile.
    Postgres(String),
}

impl Location {
    /// What the location is, for messages: the path, or the URL (which holds no password).
    pub fn describe(&self) -> String {
        match self {
            Location::File(path) => path.display().to_string(),
            Location::Postgres(url) => url.clone(),
        }
    }
}

/// Where intents are written before they are carried out.
pub trait Journal: Send + Sync {
    /// Records an intent durably; returns its entry id.
    fn intend(&self, group: &str, intent: &Intent) -> Result<u64, StateError>;
    /// Settles an entry with what happened.
    fn settle(&self, entry: u64, outcome: &str) -> Result<(), StateError>;
    /// Entries not settled (after a crash), oldest first.
    fn pending(&self) -> Result<Vec<Pending>, StateError>;
    /// Records droplets whose delete DigitalOcean accepted: they count toward nothing until
    /// they have left the group's listings, however long the listings lag.
    fn mark_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError>;
    /// The group's deleted droplets that may still be listed.
    fn deleted(&self, group: &str) -> Result<BTreeSet<u64>, StateError>;
    /// Forgets deleted droplets that have left the listings.
    fn forget_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError>;
    /// Records droplets created, or asked for with an unknown outcome: they count as booting
    /// until the listings show them.
    fn mark_created(&self, group: &str, created: &[Unlisted]) -> Result<(), StateError>;
    /// The group's created droplets the listings have not shown yet.
    fn unlisted(&self, group: &str) -> Result<Vec<Unlisted>, StateError>;
    /// Forgets created droplets by name (listed at last, or given up on).
    fn forget_unlisted(&self, group: &str, names: &[String]) -> Result<(), StateError>;
}

/// A journal in memory, for tests and `plan`.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    entries: Mutex<Vec<(Pending, Option<String>)>>,
    deleted: Mutex<BTreeMap<String, BTreeSet<u64>>>,
    unlisted: Mutex<BTreeMap<String, Vec<Unlisted>>>,
}

impl MemoryJournal {
    /// Every entry with its outcome, for tests.
    pub fn entries(&self) -> Vec<(Pending, Option<String>)> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Journal for MemoryJournal {
    fn intend(&self, group: &str, intent: &Intent) -> Result<u64, StateError> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        let id = entries.len() as u64 + 1;
        entries.push((
            Pending {
                id,
                group: group.to_string(),
                intent: intent.clone(),
            },
            None,
        ));
        Ok(id)
    }

    fn settle(&self, entry: u64, outcome: &str) -> Result<(), StateError> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        if let Some((_, settled)) = entries.iter_mut().find(|(p, _)| p.id == entry) {
            *settled = Some(outcome.to_string());
        }
        Ok(())
    }

    fn pending(&self) -> Result<Vec<Pending>, StateError> {
        let entries = self
            .entries
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        Ok(entries
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(p, _)| p.clone())
            .collect())
    }

    fn mark_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        let mut deleted = self
            .deleted
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        deleted
            .entry(group.to_string())
            .or_default()
            .extend(ids.iter().copied());
        Ok(())
    }

    fn deleted(&self, group: &str) -> Result<BTreeSet<u64>, StateError> {
        let deleted = self
            .deleted
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        Ok(deleted.get(group).cloned().unwrap_or_default())
    }

    fn forget_deleted(&self, group: &str, ids: &[u64]) -> Result<(), StateError> {
        let mut deleted = self
            .deleted
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        if let Some(set) = deleted.get_mut(group) {
            for id in ids {
                set.remove(id);
            }
        }
        Ok(())
    }

    fn mark_created(&self, group: &str, created: &[Unlisted]) -> Result<(), StateError> {
        let mut unlisted = self
            .unlisted
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        unlisted
            .entry(group.to_string())
            .or_default()
            .extend(created.iter().cloned());
        Ok(())
    }

    fn unlisted(&self, group: &str) -> Result<Vec<Unlisted>, StateError> {
        let unlisted = self
            .unlisted
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        Ok(unlisted.get(group).cloned().unwrap_or_default())
    }

    fn forget_unlisted(&self, group: &str, names: &[String]) -> Result<(), StateError> {
        let mut unlisted = self
            .unlisted
            .lock()
            .map_err(|e| StateError::Store(e.to_string()))?;
        if let Some(list) = unlisted.get_mut(group) {
            list.retain(|u| !names.contains(&u.name));
        }
        Ok(())
    }
}
