//! One group's task: ticks on its interval (fixed rate, never overlapping, missed ticks skipped
//! and counted), records each decision, and starts an action run when the decision asks for
//! one and none is running — the group keeps ticking while its actions run. `run --once` drives
//! the same [`GroupTask`] for one tick, so the two ways of running never drift apart.

use super::Daemon;
use super::tick::{GroupRuntime, InFlight, TickReport};
use crate::api::metrics::Metrics;
use crate::config::Group;
use crate::metrics::scrape::Scraper;
use crate::policy::{Direction, GroupMemory, MemoryStore};
use crate::script::runner::{ActionRequest, Purpose, RunReport};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod drain;
mod replace;
mod settle;

/// What the status API shows of a group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStatus {
    /// The last decision, with its explanation.
    pub last_decision: Option<serde_json::Value>,
    /// The last tick's error, if it failed.
    pub last_error: Option<String>,
    /// The action run in progress: its actions and when it started.
    pub running_action: Option<String>,
    /// The last action run's outcome.
    pub last_action: Option<String>,
    /// When the group last ticked successfully.
    pub last_success: Option<DateTime<Utc>>,
    /// Why unhealthy droplets wait for their replacement (`[health]`), if they do.
    pub replacement: Option<String>,
    /// Who leads the group (PostgreSQL state): this daemon's or another's lease holder name.
    pub leader: Option<String>,
    /// Whether this daemon leads the group (always, on a SQLite state).
    pub leads: bool,
    /// Ticks so far.
    pub ticks: u64,
    /// When the last tick ended, successful or failed (the watchdog's evidence).
    #[serde(skip)]
    pub last_tick_end: Option<Instant>,
}

/// A running group task.
pub struct GroupHandle {
    /// The group's identity in its generation, to tell a changed group on reload.
    pub identity: u64,
    /// Stops the task (it finishes its tick and lets its action run end).
    pub stop: watch::Sender<bool>,
    /// The task.
    pub task: JoinHandle<()>,
    /// What it reports.
    pub status: Arc<Mutex<GroupStatus>>,
    /// The group's interval (the watchdog allows two without a tick).
    pub interval: Duration,
    /// When the task started.
    pub started: Instant,
}

impl GroupHandle {
    /// Whether the group ended a tick (successful or failed) within its last two intervals,
    /// or started less than two intervals ago.
    pub fn is_alive(&self) -> bool {
        let allowance = self.interval * 2 + Duration::from_secs(1);
        let last = self.status.lock().ok().and_then(|s| s.last_tick_end);
        match last {
            Some(end) => end.elapsed() <= allowance,
            None => self.started.elapsed() <= allowance,
        }
    }
}

/// How often the points the history no longer needs are deleted from the state database.
const HISTORY_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Scrapes one group may have in flight (each group has its own).
const SCRAPES_PER_GROUP: usize = 64;

/// Runs blocking work (the state database) without stalling the async worker it is called
/// on: other tasks move to another worker meanwhile. On a single-threaded runtime it simply
/// runs.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// An action run in progress.
struct Running {
    task: JoinHandle<FinishedRun>,
    kind: RunKind,
}

/// What an action run does, for what its end changes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RunKind {
    /// Carries out a decision; a scale-down's victims count as being deleted meanwhile.
    Decision {
        /// Up or down.
        direction: Direction,
        /// The droplets it destroys.
        victims: Vec<u64>,
    },
    /// Runs `[drain] actions` for these droplets; when it succeeds their drain is prepared.
    Drain(Vec<u64>),
    /// Runs `[drain] return_actions` for droplets returned to service.
    Return,
    /// Destroys droplets outside a decision (drained ones, replaced ones, a replacement that
    /// never passed its check) with the group's `down` actions.
    Destroy(Vec<u64>),
    /// Launches the replacement of this unhealthy droplet with the group's `up` actions.
    Replace {
        /// The unhealthy droplet.
        old: u64,
    },
}

/// An action run that ended: its report and when it ended.
struct FinishedRun {
    report: RunReport,
    ended_at: DateTime<Utc>,
}

/// One group's state between ticks, and the steps of a tick.
pub struct GroupTask {
    daemon: Arc<Daemon>,
    runtime: GroupRuntime,
    memory: GroupMemory,
    scraper: Scraper,
    running: Option<Running>,
    /// The group's draining droplets, as read at the start of the last tick.
    drains: Vec<crate::state::Draining>,
    /// The group's open replacements, as read at the start of the last tick.
    replacements: Vec<crate::state::Replacement>,
    /// The fingerprint tags (`[refresh]`) the last listing showed: one no droplet carries any
    /// more is deleted.
    fingerprints: BTreeSet<String>,
    status: Arc<Mutex<GroupStatus>>,
    act_after: Instant,
    history_saved: Instant,
    conflicts: super::conflict::ConflictWatch,
    /// Whether this daemon leads the group this tick (always, on a SQLite state).
    leads: bool,
    /// Whether the group's journal was reconciled since this daemon last became its leader.
    reconciled: bool,
    /// The group's continuous recording (`[record]`), if configured.
    recording: Option<crate::record::rotate::Rotating>,
}

impl GroupTask {
    /// A task for `group`: compiles its expressions, loads its memory and sample history.
    pub fn new(
        daemon: Arc<Daemon>,
        group: Group,
        status: Arc<Mutex<GroupStatus>>,
        act_after: Instant,
    ) -> Result<GroupTask, crate::query::QueryError> {
        let mut runtime = GroupRuntime::new(group, daemon.managed_tag.clone())?;
        let name = runtime.group.name.clone();
        let memory = blocking(|| daemon.store.load(&name));
        blocking(|| runtime.restore_history(&daemon.store, daemon.clock.now()));
        let scraper = daemon.scraper.for_group(SCRAPES_PER_GROUP);
        let daemon_shares_state = daemon.store.is_shared();
        let recording = daemon
            .generation()
            .config
            .base
            .record
            .clone()
            .map(|settings| {
                crate::record::rotate::Rotating::new(
                    settings,
                    crate::record::header_for(&runtime.group, daemon.clock.now()),
                )
            });
        Ok(GroupTask {
            daemon,
            runtime,
            memory,
            scraper,
            running: None,
            drains: Vec::new(),
            replacements: Vec::new(),
            fingerprints: BTreeSet::new(),
            status,
            act_after,
            history_saved: Instant::now(),
            conflicts: super::conflict::ConflictWatch::default(),
            leads: false,
            reconciled: !daemon_shares_state,
            recording,
        })
    }

    fn name(&self) -> &str {
        &self.runtime.group.name
    }

    /// One tick with its deadline: collects a finished action run, lists, scrapes, decides,
    /// and records the decision, metrics and status. `None` when the tick failed.
    pub async fn tick(&mut self) -> Option<TickReport> {
        self.collect_run().await;
        self.leads = self.lead().await;
        let daemon = self.daemon.clone();
        let name = self.name().to_string();
        let started = Instant::now();
        let client = daemon.client();
        let listing_lag = daemon.generation().config.base.listing_lag;
        let (mut in_flight, drains, replacements) =
            blocking(|| InFlight::read(&daemon.store, &name, listing_lag));
        self.drains = drains;
        self.replacements = replacements;
        let deleted = in_flight.deleting.clone();
        match self.running.as_ref().map(|r| &r.kind) {
            Some(RunKind::Decision {
                direction: Direction::Down,
                victims,
            })
            | Some(RunKind::Destroy(victims)) => in_flight.deleting.extend(victims.iter().copied()),
            _ => {}
        }
        let now = daemon.clock.now();
        let span = tracing::info_span!("tick", group = %name);
        let outcome = tracing::Instrument::instrument(
            tokio::time::timeout(
                self.runtime.group.tick_timeout,
                self.runtime
                    .tick(&client, &self.scraper, &mut self.memory, &in_flight, now),
            ),
            span,
        )
        .await;
        daemon
            .metrics
            .tick_duration
            .get_or_create(&Metrics::group(&name))
            .observe(started.elapsed().as_secs_f64());
        let report = match outcome {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                self.record_failure(error.to_string());
                return None;
            }
            Err(_) => {
                let reason = format!(
                    "the tick passed its deadline of {}",
                    crate::config::duration::format_duration(self.runtime.group.tick_timeout)
                );
                self.record_failure(reason);
                return None;
            }
        };
        // A follower lists and scrapes, read-only: what the listing settles is the leader's.
        if self.leads {
            self.watch_for_another_daemon(&in_flight, &report, now);
            self.settle_in_flight(&in_flight, &deleted, &report, now);
            self.forget_vanished(&client, &in_flight, &report, now)
                .await;
            self.delete_unused_fingerprints(&client, &report).await;
        }
        self.record(&report);
        Some(report)
    }

    /// Records a decision: the state database, metrics, the log and the status.
    fn record(&mut self, report: &TickReport) {
        let daemon = &self.daemon;
        let name = self.runtime.group.name.clone();
        let decision = &report.decision;
        let json = report.to_json();
        crate::failpoint::hit("decision.before_record");
        let leads = self.leads;
        let recorded = if !leads {
            Ok(())
        } else {
            blocking(|| {
                daemon.store.record_decision(
                    &name,
                    &decision.at.to_rfc3339(),
                    &report.to_record_json().to_string(),
                )
            })
        };
        if let Err(error) = recorded {
            tracing::error!(group = %name, %error, "cannot record the decision");
        }
        let point = crate::state::SizePoint {
            at: decision.at,
            current: decision.current,
            desired: decision.desired,
            min: decision.bounds.min,
            max: decision.bounds.max,
        };
        if leads && let Err(error) = blocking(|| daemon.store.record_size(&name, point)) {
            tracing::error!(group = %name, %error, "cannot record the size history");
        }
        crate::failpoint::hit("decision.after_record");
        if let Some(recording) = &mut self.recording {
            let decision = crate::record::RecordedDecision::of(decision);
            let points = self.runtime.history.new_points();
            if let Err(error) =
                recording.tick(report.decision.at, &report.listing, points, &decision)
            {
                tracing::warn!(group = %name, %error, "cannot record the tick ([record]); the group goes on");
            }
        }
        let metrics = &daemon.metrics;
        let labels = Metrics::group(&name);
        metrics
            .ticks
            .get_or_create(&Metrics::group_and(&name, "result", "ok"))
            .inc();
        metrics
            .desired
            .get_or_create(&labels)
            .set(i64::from(decision.desired));
        metrics
            .actual
            .get_or_create(&labels)
            .set(i64::from(decision.current));
        metrics
            .draining
            .get_or_create(&labels)
            .set(i64::from(decision.draining));
        metrics
            .replacing
            .get_or_create(&labels)
            .set(i64::from(decision.replacing));
        metrics
            .last_success
            .get_or_create(&labels)
            .set(Utc::now().timestamp_millis() as f64 / 1000.0);
        metrics
            .action_failures
            .get_or_create(&labels)
            .set(i64::from(self.memory.up_failures));
        let wants_more = decision.current >= decision.bounds.max
            && decision
                .rules
                .iter()
                .any(|r| r.proposal.is_some_and(|p| p > decision.bounds.max));
        metrics
            .at_max_wanting_more
            .get_or_create(&labels)
            .set(i64::from(wants_more));
        let direction = match decision.direction {
            Some(Direction::Up) => "up",
            Some(Direction::Down) => "down",
            None => "none",
        };
        metrics
            .decisions
            .get_or_create(&Metrics::group_and(&name, "direction", direction))
            .inc();
        for droplet in &report.droplets {
            if droplet.scrape != "ok" && droplet.state == crate::policy::MemberState::Active {
                let reason = droplet
                    .scrape
                    .split(':')
                    .next()
                    .unwrap_or("other")
                    .to_string();
                metrics
                    .scrape_failures
                    .get_or_create(&Metrics::group_and(&name, "reason", &reason))
                    .inc();
            }
        }
        let paused = blocking(|| daemon.store.is_paused(&name));
        metrics.paused.get_or_create(&labels).set(i64::from(paused));
        metrics.sync_state(&daemon.store);
        tracing::info!(
            group = %name,
            current = decision.current,
            desired = decision.desired,
            winner = decision.winner.as_deref().unwrap_or("-"),
            paused,
            "{}",
            decision.steps.last().map(String::as_str).unwrap_or("")
        );
        if let Ok(mut status) = self.status.lock() {
            status.last_decision = Some(json);
            status.last_error = None;
            status.last_success = Some(Utc::now());
            status.ticks += 1;
            status.last_tick_end = Some(Instant::now());
        }
    }

    fn record_failure(&self, reason: String) {
        let name = self.name();
        tracing::warn!(group = %name, %reason, "tick failed");
        self.daemon
            .metrics
            .ticks
            .get_or_create(&Metrics::group_and(name, "result", "failed"))
            .inc();
        if let Ok(mut status) = self.status.lock() {
            status.last_error = Some(reason);
            status.ticks += 1;
            status.last_tick_end = Some(Instant::now());
        }
    }

    /// Starts the decision's actions unless the group is paused, this is a dry run, the
    /// configuration changed moments ago, or a run is already in progress. Draining droplets
    /// come first: a scale-up returns them to service before it creates any, and otherwise a
    /// drain that is due (drained, timed out, or with its drain actions still to run) is
    /// carried on before a new decision is acted on. With `[drain]`, a scale-down starts
    /// draining its victims instead of destroying them. Returns whether a run started.
    pub fn act(&mut self, report: TickReport) -> bool {
        let has_drains = !self.drains.is_empty();
        let may_replace = self.runtime.group.health.is_some() || !self.replacements.is_empty();
        if report.decision.direction.is_none() && !has_drains && !may_replace {
            return false;
        }
        let daemon = self.daemon.clone();
        let name = self.name().to_string();
        if daemon.options.dry_run {
            tracing::info!(group = %name, actions = ?report.actions, "dry run: not acting");
            return false;
        }
        if !self.leads {
            tracing::info!(group = %name, "not this group's leader: not acting");
            return false;
        }
        if Instant::now() < self.act_after {
            tracing::info!(group = %name, "the configuration changed moments ago: not acting until it has settled");
            return false;
        }
        if blocking(|| daemon.store.is_paused(&name)) {
            tracing::info!(group = %name, "paused: not acting");
            return false;
        }
        if self.running.is_some() {
            tracing::info!(group = %name, "an action run is in progress: not starting another");
            return false;
        }
        if has_drains {
            self.forget_gone_drains(&report);
            let step = if report.decision.direction == Some(Direction::Up) {
                self.return_for_scale_up(&report)
            } else {
                self.carry_on_draining(&report)
            };
            if let Some(started) = step {
                return started;
            }
        }
        if !self.replacements.is_empty()
            && let Some(started) = self.carry_on_replacing(&report)
        {
            return started;
        }
        // A scale event goes first; unhealthy droplets are replaced on a tick without one.
        let Some(direction) = report.decision.direction else {
            return self.start_replacement(&report).unwrap_or(false);
        };
        if direction == Direction::Down && self.runtime.group.drain.is_some() {
            return self.start_draining(report);
        }
        let victims = report.decision.victims.clone();
        let actions = report.actions.clone();
        self.start_run(
            report,
            actions,
            Purpose::Decision,
            RunKind::Decision { direction, victims },
        )
    }

    /// Starts `actions` for `report`'s decision in a task of their own.
    fn start_run(
        &mut self,
        report: TickReport,
        actions: Vec<String>,
        purpose: Purpose,
        kind: RunKind,
    ) -> bool {
        let daemon = self.daemon.clone();
        let name = self.name().to_string();
        let desc = format!(
            "{}{} since {}",
            match purpose {
                Purpose::Decision => "",
                Purpose::Drain => "drain: ",
                Purpose::Return => "return to service: ",
                Purpose::Replace { .. } => "replace: ",
            },
            actions.join(" → "),
            Utc::now().to_rfc3339()
        );
        if let Ok(mut status) = self.status.lock() {
            status.running_action = Some(desc.clone());
        }
        let request = ActionRequest {
            purpose,
            group: self.runtime.group.clone(),
            managed_tag: daemon.managed_tag.clone(),
            decision: report.decision,
            states: report.droplets.iter().map(|d| (d.id, d.state)).collect(),
            droplets: report.listing,
            actions,
            deadline: daemon.options.action_deadline,
            creates_last_hour: self.memory.creates_last_hour(daemon.clock.now()),
        };
        let runner = daemon.runner();
        let status = self.status.clone();
        let task = tokio::spawn(async move {
            // The run in a task of its own, so a panic inside it ends the run as failed
            // instead of leaving it "running" forever.
            let report = match tokio::spawn(async move { runner.run(request).await }).await {
                Ok(report) => report,
                Err(error) => {
                    RunReport::failed(format!("the action run ended abnormally: {error}"))
                }
            };
            let ended_at = daemon.clock.now();
            // What operators watch changes when the run ends, not at the next tick.
            for result in &report.results {
                let outcome = if result.outcome.is_ok() {
                    "ok"
                } else {
                    "failed"
                };
                daemon
                    .metrics
                    .actions
                    .get_or_create(&vec![
                        ("group".into(), name.clone()),
                        ("action".into(), result.name.clone()),
                        ("result".into(), outcome.into()),
                    ])
                    .inc();
            }
            let summary = match report.failure() {
                None => format!("{desc}: ok"),
                Some(error) => format!("{desc}: failed: {error}"),
            };
            if let Ok(mut status) = status.lock() {
                status.running_action = None;
                status.last_action = Some(summary);
            }
            FinishedRun { report, ended_at }
        });
        self.running = Some(Running { task, kind });
        true
    }

    /// Applies a finished action run to the group's memory (cooldown clocks, failure
    /// backoff, the spend guard). Returns whether it failed.
    async fn collect_run(&mut self) -> Option<bool> {
        let run = self.running.take_if(|r| r.task.is_finished())?;
        // Finished: this does not wait. The wrapper task catches the run's own panic, so an
        // error here means it was cancelled, and there is nothing to apply.
        let finished = run.task.await.ok()?;
        let ended_at = finished.ended_at;
        // A replacement is not a scale event: `max_replacements_per_hour` limits it, not the
        // spend guard.
        if !matches!(run.kind, RunKind::Replace { .. }) {
            self.memory
                .created(finished.report.create_attempts, ended_at);
        }
        let failed = finished.report.failure().is_some();
        match (&run.kind, failed) {
            (RunKind::Decision { direction, .. }, false) => {
                self.memory.scaled(*direction, ended_at)
            }
            (RunKind::Decision { direction, .. }, true) if *direction == Direction::Up => {
                self.memory.up_failed(ended_at)
            }
            (RunKind::Drain(ids), false) => self.drains_prepared(ids),
            (RunKind::Replace { old }, true) => {
                let error = finished.report.failure().unwrap_or_default().to_string();
                self.replacement_run_failed(*old, finished.report.create_attempts, error);
            }
            _ => {}
        }
        Some(failed)
    }

    /// Waits (at most `limit`) for an action run in progress to end, and collects it.
    /// Returns whether it failed (`None` when none ran or it did not end in time).
    pub async fn wait_for_run(&mut self, limit: Duration) -> Option<bool> {
        let run = self.running.as_ref()?;
        let _ = tokio::time::timeout(limit, async {
            while !run.task.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        self.collect_run().await
    }

    /// Keeps the memory and this tick's new sample points (every tick); prunes old points when
    /// `history` or when it is due.
    pub fn save(&mut self, history: bool) {
        let daemon = self.daemon.clone();
        let name = self.name().to_string();
        crate::failpoint::hit("memory.before_save");
        if !self.leads {
            // What the leader keeps is the leader's: a follower's points are dropped.
            self.runtime.drop_new_points();
            daemon.metrics.sync_api(&daemon.client());
            daemon.metrics.sync_state(&daemon.store);
            return;
        }
        blocking(|| daemon.store.save(&name, &self.memory));
        // This tick's new points go to the state database (appended, so restarts, `--once`
        // from cron and `plan` see rates at once); old ones are pruned now and then.
        let prune = history || self.history_saved.elapsed() >= HISTORY_PRUNE_EVERY;
        let now = daemon.clock.now();
        blocking(|| self.runtime.save_history(&daemon.store, now, prune));
        if prune {
            self.history_saved = Instant::now();
        }
        daemon.metrics.sync_api(&daemon.client());
        daemon.metrics.sync_state(&daemon.store);
    }
}

/// Starts a group's task; it acts on no decision before `act_after` (a reloaded
/// configuration settles first).
pub fn spawn(daemon: Arc<Daemon>, group: Group, identity: u64, act_after: Instant) -> GroupHandle {
    // Every counter of the group exists at 0 from now, before its first tick.
    let mut actions: Vec<String> = group
        .actions
        .lists
        .up
        .iter()
        .chain(&group.actions.lists.down)
        .chain(group.rules.iter().flat_map(|r| {
            r.actions
                .iter()
                .flat_map(|lists| lists.up.iter().chain(&lists.down))
        }))
        .chain(
            group
                .drain
                .iter()
                .flat_map(|d| d.actions.iter().chain(&d.return_actions)),
        )
        .cloned()
        .collect();
    actions.sort();
    actions.dedup();
    daemon.metrics.register_group(&group.name, &actions);
    let (stop, mut stopped) = watch::channel(false);
    let status = Arc::new(Mutex::new(GroupStatus::default()));
    // The interval is on the daemon's clock; at a sim's speed it passes faster on the wall.
    let interval = crate::clock::wall(daemon.clock.as_ref(), group.interval);
    let task_status = status.clone();
    let task = tokio::spawn(async move {
        let name = group.name.clone();
        let mut task = match GroupTask::new(daemon.clone(), group, task_status, act_after) {
            Ok(task) => task,
            Err(error) => {
                tracing::error!(group = %name, %error, "cannot compile the group's expressions");
                return;
            }
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.changed() => break,
            }
            let since_last = last_tick.elapsed();
            if since_last > interval + interval / 2 {
                let skipped =
                    (since_last.as_secs_f64() / interval.as_secs_f64()).floor() as u64 - 1;
                daemon
                    .metrics
                    .ticks_skipped
                    .get_or_create(&Metrics::group(&name))
                    .inc_by(skipped);
            }
            last_tick = Instant::now();
            if let Some(report) = task.tick().await {
                task.act(report);
            }
            task.save(false);
        }
        // Stopping: let a running action end (bounded), and record its outcome.
        task.wait_for_run(daemon.options.action_deadline).await;
        task.save(true);
        if let Some(recording) = task.recording.take()
            && let Err(error) = recording.finish()
        {
            tracing::warn!(group = %name, %error, "cannot finish the recording");
        }
        blocking(|| daemon.leadership.release(&name));
    });
    GroupHandle {
        identity,
        stop,
        task,
        status,
        interval,
        started: Instant::now(),
    }
}

/// What `run --once` did with one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceResult {
    /// Whether the tick or its actions failed.
    pub failed: bool,
    /// One line for stdout: the group, its decision with its reason, and the actions' outcome.
    pub line: String,
}

/// One tick of `group`, acting on its decision and waiting for the actions (`run --once`).
pub async fn run_once(daemon: &Arc<Daemon>, group: &Group) -> OnceResult {
    let name = group.name.clone();
    let status = Arc::new(Mutex::new(GroupStatus::default()));
    let failed = |line: String| OnceResult { failed: true, line };
    let mut task = match GroupTask::new(
        daemon.clone(),
        group.clone(),
        status.clone(),
        Instant::now(),
    ) {
        Ok(task) => task,
        Err(error) => {
            tracing::error!(group = %name, %error, "cannot compile the group's expressions");
            return failed(format!("{name}: cannot compile its expressions: {error}"));
        }
    };
    let Some(report) = task.tick().await else {
        let reason = status
            .lock()
            .ok()
            .and_then(|s| s.last_error.clone())
            .unwrap_or_else(|| "the tick failed".into());
        return failed(format!("{name}: tick failed: {reason}"));
    };
    let steps: Vec<&str> = report.decision.steps.iter().map(String::as_str).collect();
    let decision = crate::policy::outcome_with_reason(&steps);
    let actions = report.actions.join(" → ");
    let mut result = OnceResult {
        failed: false,
        line: format!("{name}: {decision}"),
    };
    if daemon.options.dry_run && report.decision.direction.is_some() {
        result
            .line
            .push_str(&format!(" (dry run: would run {actions})"));
    } else if task.act(report) {
        // The run gets its deadline and a little more to settle its journal.
        let limit = daemon.options.action_deadline + Duration::from_secs(5);
        let outcome = match task.wait_for_run(limit).await {
            Some(true) => {
                tracing::error!(group = %name, "actions failed");
                result.failed = true;
                let why = status
                    .lock()
                    .ok()
                    .and_then(|s| s.last_action.clone())
                    .unwrap_or_default();
                format!("failed ({why})")
            }
            Some(false) => "ok".to_string(),
            None => {
                tracing::error!(group = %name, "the actions did not end in time");
                result.failed = true;
                "did not end in time".to_string()
            }
        };
        result.line.push_str(&format!("; {actions}: {outcome}"));
    } else if blocking(|| daemon.store.is_paused(&name)) {
        result.line.push_str(" (paused: not acting)");
    } else if !task.leads {
        let leader = daemon
            .leadership
            .leader(&name)
            .unwrap_or_else(|| "another daemon".into());
        result
            .line
            .push_str(&format!(" (not acting: {leader} leads this group)"));
    }
    task.save(true);
    blocking(|| daemon.leadership.release(&name));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(
        interval: Duration,
        started_ago: Duration,
        last_end_ago: Option<Duration>,
    ) -> GroupHandle {
        let (stop, _) = watch::channel(false);
        let status = GroupStatus {
            last_tick_end: last_end_ago.map(|ago| Instant::now() - ago),
            ..GroupStatus::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let task = runtime.spawn(async {});
        GroupHandle {
            identity: 0,
            stop,
            task,
            status: Arc::new(Mutex::new(status)),
            interval,
            started: Instant::now() - started_ago,
        }
    }

    #[test]
    fn a_group_is_alive_while_it_ends_ticks_within_two_intervals() {
        let second = Duration::from_secs(1);
        assert!(
            handle(second * 10, second * 5, None).is_alive(),
            "just started"
        );
        assert!(
            !handle(second * 10, second * 60, None).is_alive(),
            "never ticked"
        );
        assert!(handle(second * 10, second * 600, Some(second * 15)).is_alive());
        assert!(
            !handle(second * 10, second * 600, Some(second * 25)).is_alive(),
            "stuck for more than two intervals"
        );
    }
}
