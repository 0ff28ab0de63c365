//! `do-scaler run`: load a generation, reconcile the journal, start one task per group, serve
//! the status API, reload on change, and stop cleanly.

use super::generation::{self, Generation};
use super::group::{self, GroupHandle, GroupStatus};
use super::reload;
use crate::api::metrics::Metrics;
use crate::clock::Clock;
use crate::config::credentials::{self, EnvLookup};
use crate::config::{Config, Overrides};
use crate::digitalocean::{Client, ClientOptions};
use crate::metrics::scrape::{DEFAULT_BODY_LIMIT, Scraper};
use crate::policy::MemoryStore;
use crate::script::runner::Runner;
use crate::state::{Intent, Journal, Store, Unlisted};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration does not load.
    #[error("{0}")]
    Config(String),
    /// The state database cannot be used.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// No token, or the client cannot be built.
    #[error("{0}")]
    Client(String),
}

/// The default wall-clock limit of one action run: a create plus the shipped health check at
/// real DigitalOcean timings (a droplet takes a minute or more to boot; the health check waits
/// up to 5 minutes for it, then tries its ports).
pub const DEFAULT_ACTION_DEADLINE: Duration = Duration::from_secs(600);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Decide and log, never act (and write nothing to DigitalOcean).
    pub dry_run: bool,
    /// One tick of every group (`run --once`): no preflight, no status API.
    pub once: bool,
    /// Wall-clock limit of one action run.
    pub action_deadline: Duration,
    /// How long changed files must keep their content before a reload loads them, and how
    /// long a reloaded group waits before it acts ([`reload::SETTLE`] unless a test needs
    /// it shorter).
    pub settle: Duration,
}

impl RunOptions {
    /// Acting, with `action_deadline`, and the standard settle time.
    pub fn new(action_deadline: Duration) -> RunOptions {
        RunOptions {
            dry_run: false,
            once: false,
            action_deadline,
            settle: reload::SETTLE,
        }
    }
}

/// Everything the daemon's tasks share.
pub struct Daemon {
    /// The state database.
    pub store: Arc<Store>,
    /// The groups' leases: on a shared (PostgreSQL) state, only the leader of a group acts.
    pub leadership: Arc<crate::state::lease::Leadership>,
    /// The scraper (one connection pool for all groups).
    pub scraper: Scraper,
    /// The daemon's metrics.
    pub metrics: Metrics,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The managed-by tag.
    pub managed_tag: String,
    /// Options.
    pub options: RunOptions,
    /// When the daemon started (droplets with its tag created later must be its own).
    pub started_at: chrono::DateTime<chrono::Utc>,
    config_path: PathBuf,
    overrides: Overrides,
    env: credentials::SharedEnv,
    client: RwLock<Client>,
    generation: RwLock<Arc<Generation>>,
    /// Running group tasks by name.
    pub groups: Mutex<BTreeMap<String, GroupHandle>>,
    /// The last reload's error, until a reload succeeds.
    pub reload_error: Mutex<Option<String>>,
    /// The status API's POST token, if one is configured.
    pub api_token: RwLock<Option<crate::config::ApiToken>>,
    /// The base settings the daemon started with (some cannot change without a restart).
    started_with: crate::config::Base,
    /// Where reload requests go (the reload task, started by `serve`).
    reload_requests: mpsc::Sender<reload::Request>,
    /// The reload task's end of the channel, until `serve` takes it.
    reload_inbox: Mutex<Option<mpsc::Receiver<reload::Request>>>,
}

impl Daemon {
    /// The current client (rebuilt on reload, so a rotated token is picked up).
    pub fn client(&self) -> Client {
        self.client
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The generation in force.
    pub fn generation(&self) -> Arc<Generation> {
        self.generation
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// A runner with the current scripts.
    pub fn runner(&self) -> Runner {
        let store: Arc<dyn Journal> = self.store.clone();
        Runner::new(self.generation().scripts.clone(), self.client(), store)
            .with_credentials_dir(
                self.scraper
                    .credentials_dir()
                    .map(std::path::Path::to_path_buf),
            )
            .with_leadership(self.leadership.clone())
            .with_clock(self.clock.clone())
    }

    /// The status of a group, if it runs.
    pub fn group_status(&self, name: &str) -> Option<GroupStatus> {
        let groups = self.groups.lock().ok()?;
        groups
            .get(name)
            .and_then(|h| h.status.lock().ok().map(|s| s.clone()))
    }

    /// Whether every group task ended a tick within its last two intervals (the watchdog's
    /// condition).
    pub fn groups_alive(&self) -> bool {
        self.groups
            .lock()
            .map(|groups| groups.values().all(GroupHandle::is_alive))
            .unwrap_or(false)
    }

    /// Whether every group has ticked successfully at least once (`/readyz`).
    pub fn groups_ready(&self) -> bool {
        self.groups
            .lock()
            .map(|groups| {
                groups.values().all(|h| {
                    h.status
                        .lock()
                        .map(|s| s.last_success.is_some())
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false)
    }

    fn env(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| (self.env)(name)
    }
}

fn build_client(config: &Config, env: EnvLookup<'_>, speed: f64) -> Result<Client, String> {
    let (token, source) =
        credentials::digitalocean_token_for(env, &config.base).map_err(|e| e.to_string())?;
    if let Some(warning) = credentials::exposure_warning(&source) {
        tracing::warn!("{warning}");
    }
    tracing::info!(%source, "DigitalOcean token found");
    let mut options = ClientOptions::new(config.base.api_url.clone(), token).at_speed(speed);
    options.request_timeout = config.base.request_timeout;
    Client::new(options).map_err(|e| e.to_string())
}

/// The status API's POST token, if one is configured (warning about a file others can read).
fn status_token(config: &Config, env: EnvLookup<'_>) -> Option<crate::config::ApiToken> {
    let (token, source) =
        credentials::status_api_token(env, config.base.status_api.token_file.as_deref()).ok()?;
    if let Some(warning) = credentials::exposure_warning(&source) {
        tracing::warn!("{warning}");
    }
    Some(token)
}

/// Loads the configuration, opens the state database and reconciles the journal. The status
/// API and group tasks start with [`Daemon::start_groups`].
pub async fn prepare(
    config_path: PathBuf,
    overrides: Overrides,
    env: credentials::SharedEnv,
    clock: Arc<dyn Clock>,
    options: RunOptions,
) -> Result<Arc<Daemon>, DaemonError> {
    let generation = generation::build(&config_path, &overrides, 1).map_err(DaemonError::Config)?;
    if !options.dry_run {
        let dir = env("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        for group in &generation.config.groups {
            if let Some(text) = &group.template.user_data
                && let Err(error) = crate::config::user_data::check_available(text, dir.as_deref())
            {
                return Err(DaemonError::Config(format!(
                    "{}: group `{}`: {error}",
                    group.file.display(),
                    group.name
                )));
            }
        }
    }
    let credentials_dir = env("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let state = generation.config.base.state.clone();
    let store = Arc::new(group::blocking(|| {
        Store::open_location(&state, credentials_dir.as_deref())
    })?);
    let lookup = |name: &str| env(name);
    let client =
        build_client(&generation.config, &lookup, clock.speed()).map_err(DaemonError::Client)?;
    let api_token = status_token(&generation.config, &lookup);
    let scraper = Scraper::new(64, DEFAULT_BODY_LIMIT)
        .map_err(|e| DaemonError::Client(e.to_string()))?
        .with_credentials_dir(env("CREDENTIALS_DIRECTORY").map(PathBuf::from));
    let metrics = Metrics::new();
    metrics.generation.set(1);
    metrics.reload_success.set(1);
    metrics
        .reload_time
        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    let (reload_requests, reload_inbox) = mpsc::channel(16);
    let timings =
        crate::config::load::lease_timings(&generation.config.base, &generation.config.groups);
    let leadership = Arc::new(crate::state::lease::Leadership::new(
        store.clone(),
        crate::state::lease::holder_name(),
        timings,
    ));
    if store.is_shared() {
        tracing::info!(
            state = %store.describe(),
            holder = %leadership.holder(),
            lease_s = timings.lease.as_secs_f64(),
            "shared state: each group is led by the daemon holding its lease"
        );
    }
    let daemon = Arc::new(Daemon {
        leadership,
        started_at: clock.now(),
        started_with: generation.config.base.clone(),
        reload_requests,
        reload_inbox: Mutex::new(Some(reload_inbox)),
        store,
        scraper,
        metrics,
        clock,
        managed_tag: generation.config.base.managed_by_tag(),
        options,
        config_path,
        overrides,
        env,
        client: RwLock::new(client),
        generation: RwLock::new(Arc::new(generation)),
        groups: Mutex::new(BTreeMap::new()),
        reload_error: Mutex::new(None),
        api_token: RwLock::new(api_token),
    });
    // On a shared state each group's journal is reconciled by whoever leads it, once it does.
    if !daemon.store.is_shared() {
        reconcile(&daemon, None).await;
    }
    // `--once` from cron costs one listing per 200 droplets when nothing changes: no preflight.
    if !daemon.options.once {
        preflight_warnings(&daemon).await;
    }
    Ok(daemon)
}

/// Settles every journal entry a crash (or a deposed leader) left open, of every group or of
/// `only` one, against the tag listing: creates that landed are adopted, those that did not
/// are settled as not made; nothing is created again here (the next decision asks afresh,
/// with new names).
pub async fn reconcile(daemon: &Daemon, only: Option<&str>) {
    let pending = match daemon.store.pending() {
        Ok(pending) => pending
            .into_iter()
            .filter(|entry| only.is_none_or(|name| entry.group == name))
            .collect::<Vec<_>>(),
        Err(error) => {
            tracing::error!(%error, "cannot read the journal");
            return;
        }
    };
    let generation = daemon.generation();
    let client = daemon.client();
    for entry in pending {
        let Some(group) = generation
            .config
            .groups
            .iter()
            .find(|g| g.name == entry.group)
        else {
            if let Err(error) = daemon.store.settle(entry.id, "group no longer configured") {
                tracing::error!(entry = entry.id, %error, "cannot settle a journal entry");
            }
            continue;
        };
        let listing = match client.list_droplets_by_tag(&group.tag).await {
            Ok(listing) => listing,
            Err(error) => {
                tracing::warn!(group = %group.name, %error, "cannot reconcile the journal yet");
                continue;
            }
        };
        let outcome = match &entry.intent {
            Intent::Create { names } => {
                let found: Vec<String> = listing
                    .iter()
                    .filter(|d| names.contains(&d.name))
                    .map(|d| format!("{}={}", d.name, d.id))
                    .collect();
                // Names not listed may still land (listings lag): they count as booting until
                // a listing shows them or they expire, and count as spent either way.
                let unlisted: Vec<Unlisted> = names
                    .iter()
                    .filter(|n| !listing.iter().any(|d| &d.name == *n))
                    .map(|name| Unlisted {
                        name: name.clone(),
                        id: None,
                        since: chrono::Utc::now(),
                    })
                    .collect();
                if let Err(error) = daemon.store.mark_created(&group.name, &unlisted) {
                    tracing::error!(group = %group.name, %error, "cannot record unlisted droplets");
                }
                let mut memory = daemon.store.load(&group.name);
                memory.created(names.len() as u32, daemon.clock.now());
                daemon.store.save(&group.name, &memory);
                format!(
                    "reconciled after restart: {} of {} created ({})",
                    found.len(),
                    names.len(),
                    found.join(", ")
                )
            }
            Intent::Destroy { ids } => {
                let left: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| listing.iter().any(|d| d.id == *id))
                    .collect();
                format!(
                    "reconciled after restart: {} of {} destroyed; still present: {}",
                    ids.len() - left.len(),
                    ids.len(),
                    left.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        crate::failpoint::hit("reconcile.before_settle");
        tracing::info!(group = %group.name, entry = entry.id, %outcome, "journal entry settled");
        if let Err(error) = daemon.store.settle(entry.id, &outcome) {
            tracing::error!(group = %group.name, entry = entry.id, %error, "cannot settle a journal entry");
        }
    }
}

async fn preflight_warnings(daemon: &Daemon) {
    let generation = daemon.generation();
    for finding in crate::digitalocean::preflight::preflight(
        &daemon.client(),
        &generation.config,
        !daemon.options.dry_run,
    )
    .await
    {
        if finding.level != crate::digitalocean::preflight::Level::Info {
            tracing::warn!("preflight: {finding}");
        }
    }
}

impl Daemon {
    /// Starts a task for every group of the current generation that has none.
    pub fn start_groups(self: &Arc<Self>) {
        self.start_groups_except(&[]);
    }

    /// Starts the missing group tasks, except those named (still stopping).
    fn start_groups_except(self: &Arc<Self>, except: &[String]) {
        let generation = self.generation();
        let Ok(mut groups) = self.groups.lock() else {
            return;
        };
        for group in &generation.config.groups {
            if !groups.contains_key(&group.name) && !except.contains(&group.name) {
                let identity = generation.groups.get(&group.name).copied().unwrap_or(0);
                // A group started by a reload waits for its new configuration to settle before
                // it acts; the first generation acts at once.
                let act_after = if generation.number > 1 {
                    generation.loaded_at + self.options.settle
                } else {
                    generation.loaded_at
                };
                groups.insert(
                    group.name.clone(),
                    group::spawn(self.clone(), group.clone(), identity, act_after),
                );
            }
        }
    }

    /// Asks the reload task for a reload and waits for its outcome (the new generation's
    /// number, or why it failed). Reloads run one at a time, whoever asks.
    pub async fn request_reload(&self, origin: reload::Origin) -> Result<u64, String> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.reload_requests
            .send(reload::Request {
                origin,
                reply: Some(reply),
            })
            .await
            .map_err(|_| "the reload task is not running".to_string())?;
        match tokio::time::timeout(Duration::from_secs(60), outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("the reload task ended before answering".into()),
            Err(_) => Err("the reload did not finish within 60s".into()),
        }
    }

    /// Takes the reload task's end of the request channel (once; `serve` does).
    pub fn take_reload_inbox(&self) -> Option<mpsc::Receiver<reload::Request>> {
        self.reload_inbox
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
    }

    /// Reloads now, on the calling (blocking) thread: builds a whole new generation and swaps
    /// it in; on any error keeps the old one running and reports the error. Unchanged groups
    /// keep running untouched. Only the reload task calls this, so reloads never overlap.
    pub fn reload_now(self: &Arc<Self>, origin: reload::Origin) -> Result<u64, String> {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let next = self.generation().number + 1;
        let result =
            generation::build(&self.config_path, &self.overrides, next).and_then(|generation| {
                if let Some(refusal) =
                    generation::needs_restart(&self.started_with, &generation.config.base)
                {
                    return Err(refusal);
                }
                let lookup = self.env();
                let client = build_client(&generation.config, &lookup, self.clock.speed())?
                    .continuing(&self.client());
                let api_token = status_token(&generation.config, &lookup);
                Ok((generation, client, api_token))
            });
        // Credentials are re-read whatever else changed (a rotated token needs no file edit).
        let result = result.map(|(generation, client, api_token)| {
            if let Ok(mut slot) = self.client.write() {
                *slot = client;
            }
            if let Ok(mut slot) = self.api_token.write() {
                *slot = api_token;
            }
            generation
        });
        let outcome = match result {
            Err(error) => {
                tracing::error!(?origin, %error, "reload failed: the last good configuration keeps running");
                self.metrics.reload_success.set(0);
                self.metrics.reload_time.set(unix_now());
                if let Ok(mut slot) = self.reload_error.lock() {
                    *slot = Some(error.clone());
                }
                Err(error)
            }
            Ok(generation) if generation.fingerprint == self.generation().fingerprint => {
                tracing::debug!(?origin, "reload: nothing changed; credentials re-read");
                if let Ok(mut slot) = self.reload_error.lock() {
                    *slot = None;
                }
                self.metrics.reload_success.set(1);
                Ok(self.generation().number)
            }
            Ok(generation) => {
                let number = generation.number;
                self.swap_in(Arc::new(generation));
                self.metrics.generation.set(number as i64);
                self.metrics.reload_success.set(1);
                self.metrics.reload_time.set(unix_now());
                if let Ok(mut slot) = self.reload_error.lock() {
                    *slot = None;
                }
                tracing::info!(?origin, generation = number, "configuration reloaded");
                Ok(number)
            }
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        outcome
    }

    /// Makes `generation` the one in force: stops the tasks of changed and removed groups and
    /// starts new ones (a changed group's only once its old task has ended).
    fn swap_in(self: &Arc<Self>, generation: Arc<Generation>) {
        let previous = self.generation();
        for group in &generation.config.groups {
            if let Some(old) = previous
                .config
                .groups
                .iter()
                .find(|g| g.name == group.name && !g.tag.eq_ignore_ascii_case(&group.tag))
            {
                tracing::warn!(
                    group = %group.name,
                    "the group's tag changed from `{}` to `{}`: droplets tagged `{}` are no longer this group's and are left to themselves (still running and billed); destroy them or tag them `{}`",
                    old.tag,
                    group.tag,
                    old.tag,
                    group.tag
                );
            }
        }
        if let Ok(mut slot) = self.generation.write() {
            *slot = generation.clone();
        }
        let mut stopping = Vec::new();
        if let Ok(mut groups) = self.groups.lock() {
            let stale: Vec<String> = groups
                .iter()
                .filter(|(name, handle)| generation.groups.get(*name) != Some(&handle.identity))
                .map(|(name, _)| name.clone())
                .collect();
            for name in stale {
                if let Some(handle) = groups.remove(&name) {
                    tracing::info!(group = %name, "group changed or removed: restarting its task");
                    let _ = handle.stop.send(true);
                    stopping.push((name, handle.task));
                }
            }
        }
        // A changed group's new task starts only once the old one has ended (it lets a
        // running action finish), so one group never has two action runs at once.
        let restarting: Vec<String> = stopping.iter().map(|(name, _)| name.clone()).collect();
        self.start_groups_except(&restarting);
        for (name, task) in stopping {
            let daemon = self.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    daemon.options.action_deadline + Duration::from_secs(5),
                    task,
                )
                .await;
                tracing::debug!(group = %name, "old task ended");
                daemon.start_groups_except(&[]);
            });
        }
    }

    /// Stops every group task, letting running actions end (bounded), then settles.
    pub async fn stop(self: &Arc<Self>) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let handles: Vec<GroupHandle> = self
            .groups
            .lock()
            .map(|mut g| std::mem::take(&mut *g).into_values().collect())
            .unwrap_or_default();
        for handle in &handles {
            let _ = handle.stop.send(true);
        }
        for handle in handles {
            let _ = tokio::time::timeout(
                self.options.action_deadline + Duration::from_secs(5),
                handle.task,
            )
            .await;
        }
    }
}

fn unix_now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}
