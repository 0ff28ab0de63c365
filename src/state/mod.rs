//! State that outlives a tick: the intent journal of creates and destroys, group memories,
//! decisions and pause flags, in SQLite (`sqlite`) or in memory. Every create and
//! destroy is written here before the API call and settled after it, so a crash in between
//! is reconciled against the tag listing on the next start.

pub mod sqlite;

pub use sqlite::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

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
}

/// A journal in memory, for tests and `plan`.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    entries: Mutex<Vec<(Pending, Option<String>)>>,
    deleted: Mutex<BTreeMap<String, BTreeSet<u64>>>,
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
}
