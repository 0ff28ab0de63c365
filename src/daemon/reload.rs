//! Reloading, one at a time: the file watcher, SIGHUP and the status API all send requests to
//! one task, which builds each new generation on a blocking thread (a slow or hostile file
//! never stalls ticks, the status API or the watchdog).
//!
//! The watcher reacts only to changes of content (created, written, renamed, removed) of the
//! files a generation is built from, or of new files in `conf.d/` and `actions/`; opening or
//! reading a file is not a change. A change is loaded only once every input has kept the same
//! content for [`SETTLE`], so a file written in pieces is not loaded half-written (an editor's
//! save by rename settles after one quiet period).

use super::run::Daemon;
use notify::EventKind;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long every input must keep its content before a change is loaded; also how long a
/// reloaded group waits before it acts.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Who asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A file changed (after it settled).
    Watcher,
    /// SIGHUP (`systemctl reload`).
    Signal,
    /// `POST /api/v1/reload`.
    Api,
}

/// One request, with where to send the outcome.
pub struct Request {
    /// Who asked.
    pub origin: Origin,
    /// The new generation's number, or why the reload failed.
    pub reply: Option<oneshot::Sender<Result<u64, String>>>,
}

/// Whether a watcher event is a change of content (not an open, a read or a chmod).
pub fn is_content_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
        EventKind::Any => true,
    }
}

/// What the watcher looks at for one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    /// Every file the generation was built from.
    pub inputs: BTreeSet<PathBuf>,
    /// Folders where a new file is a new input (`conf.d/`, `actions/`).
    pub discovery: BTreeSet<PathBuf>,
}

impl Watched {
    /// The files and folders of the daemon's current generation.
    pub fn of(daemon: &Daemon) -> Watched {
        let generation = daemon.generation();
        let config = &generation.config;
        let mut inputs: BTreeSet<PathBuf> = config.inputs.iter().cloned().collect();
        inputs.extend(
            generation
                .scripts
                .values()
                .filter(|s| !s.origin.starts_with("(shipped)"))
                .map(|s| PathBuf::from(&s.origin)),
        );
        let mut discovery: BTreeSet<PathBuf> = [
            config.base.conf_dir.clone(),
            config.base.actions_dir.clone(),
        ]
        .into();
        // The old format's group files live in its own conf.d.
        for group in &config.groups {
            if let Some(parent) = group.file.parent() {
                discovery.insert(parent.to_path_buf());
            }
        }
        Watched { inputs, discovery }
    }

    /// Every folder to watch (folders, not files: editors save by rename).
    pub fn folders(&self) -> BTreeSet<PathBuf> {
        let mut folders: BTreeSet<PathBuf> = self
            .inputs
            .iter()
            .filter_map(|p| p.parent().map(folder_or_dot))
            .collect();
        folders.extend(self.discovery.iter().cloned());
        folders.into_iter().filter(|d| d.is_dir()).collect()
    }

    /// Whether a changed path matters: an input, or a plausible new file in a discovery
    /// folder (not hidden, not an editor's backup or swap file).
    pub fn matters(&self, path: &Path) -> bool {
        if self.inputs.contains(path) || self.inputs.iter().any(|i| same_file(i, path)) {
            return true;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let plausible = !name.starts_with('.')
            && !name.ends_with('~')
            && [".toml", ".rhai", ".cfg", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext));
        plausible
            && path
                .parent()
                .is_some_and(|p| self.discovery.iter().any(|d| same_file(d, p)))
    }

    /// A digest of every input's content and of the discovery folders' listings, to tell when
    /// the files have settled.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for input in &self.inputs {
            match crate::config::files::read_bytes(input, crate::config::files::MAX_CONFIG_BYTES) {
                Ok(bytes) => bytes.hash(&mut hasher),
                Err(error) => error.to_string().hash(&mut hasher),
            }
        }
        for folder in &self.discovery {
            let mut names: Vec<(PathBuf, u64, Option<std::time::SystemTime>)> =
                std::fs::read_dir(folder)
                    .map(|entries| {
                        entries
                            .flatten()
                            .filter_map(|e| {
                                let meta = e.metadata().ok()?;
                                Some((e.path(), meta.len(), meta.modified().ok()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            names.sort();
            names.hash(&mut hasher);
        }
        hasher.finish()
    }
}

fn folder_or_dot(path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path.to_path_buf()
    }
}

/// Paths compared as given and, where both exist, as canonical paths (the watcher reports
/// absolute paths; the configuration may name relative ones).
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// A watcher on the folders of `watched`, sending `()` for each batch of content changes.
fn watcher(watched: &Watched, changes: mpsc::Sender<()>) -> Option<Debouncer> {
    use notify::RecursiveMode;
    let filter = watched.clone();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(200),
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            let relevant = match result {
                Ok(events) => events.iter().any(|e| {
                    is_content_change(&e.kind) && e.paths.iter().any(|p| filter.matters(p))
                }),
                Err(_) => true,
            };
            if relevant {
                let _ = changes.try_send(());
            }
        },
    )
    .map_err(|error| tracing::warn!(%error, "cannot watch the configuration for changes"))
    .ok()?;
    for folder in watched.folders() {
        if let Err(error) = debouncer.watch(&folder, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %folder.display(), %error, "cannot watch for changes");
        }
    }
    Some(debouncer)
}

/// Waits until every input has kept its content for `quiet`, draining further change
/// notices meanwhile.
async fn settle(watched: &Watched, changes: &mut mpsc::Receiver<()>, quiet: Duration) {
    let mut before = digest_off_thread(watched).await;
    loop {
        tokio::time::sleep(quiet).await;
        while changes.try_recv().is_ok() {}
        let after = digest_off_thread(watched).await;
        if after == before {
            return;
        }
        tracing::debug!("configuration still changing: waiting for it to settle");
        before = after;
    }
}

async fn digest_off_thread(watched: &Watched) -> u64 {
    let watched = watched.clone();
    tokio::task::spawn_blocking(move || watched.digest())
        .await
        .unwrap_or_default()
}

/// Builds the next generation on a blocking thread.
async fn reload_once(daemon: &Arc<Daemon>, origin: Origin) -> Result<u64, String> {
    let daemon = daemon.clone();
    tokio::task::spawn_blocking(move || daemon.reload_now(origin))
        .await
        .map_err(|e| format!("the reload failed unexpectedly: {e}"))?
}

/// Starts the reload task, which runs until `requests` closes. The watcher is in place when
/// this returns (so an edit right after start is seen); it follows the current generation's
/// files and is re-made after each reload that changed them.
pub fn start(
    daemon: Arc<Daemon>,
    mut requests: mpsc::Receiver<Request>,
) -> tokio::task::JoinHandle<()> {
    let (changes_tx, mut changes) = mpsc::channel(8);
    let mut watched = Watched::of(&daemon);
    let mut watching = watcher(&watched, changes_tx.clone());
    tokio::spawn(async move {
        loop {
            let origin = tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    let outcome = reload_once(&daemon, request.origin).await;
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                    request.origin
                }
                Some(()) = changes.recv() => {
                    settle(&watched, &mut changes, daemon.options.settle).await;
                    tracing::debug!("configuration changed on disk and settled: reloading");
                    let _ = reload_once(&daemon, Origin::Watcher).await;
                    Origin::Watcher
                }
            };
            let now = Watched::of(&daemon);
            if now != watched {
                tracing::debug!(
                    ?origin,
                    "the configuration's files changed: watching the new set"
                );
                watched = now;
                drop(watching.take());
                watching = watcher(&watched, changes_tx.clone());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, RenameMode};

    #[test]
    fn only_changes_of_content_count() {
        assert!(!is_content_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_content_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_content_change(&EventKind::Modify(
            ModifyKind::Metadata(notify::event::MetadataKind::Permissions)
        )));
        assert!(is_content_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_content_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Content
        ))));
        assert!(is_content_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_content_change(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn state_files_and_backups_beside_the_configuration_do_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        std::fs::create_dir(&conf).unwrap();
        let watched = Watched {
            inputs: [dir.path().join("do-scaler.toml"), conf.join("web.toml")].into(),
            discovery: [conf.clone(), dir.path().join("actions")].into(),
        };
        assert!(watched.matters(&dir.path().join("do-scaler.toml")));
        assert!(watched.matters(&conf.join("web.toml")));
        assert!(watched.matters(&conf.join("new.toml")));
        assert!(!watched.matters(&dir.path().join("state.db-wal")));
        assert!(!watched.matters(&conf.join(".web.toml.swp")));
        assert!(!watched.matters(&conf.join("web.toml~")));
    }
}
