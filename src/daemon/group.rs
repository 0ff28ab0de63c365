//! One group's task: ticks on its interval (fixed rate, never overlapping, missed ticks skipped
//! and counted), records each decision, and starts an action run when the decision asks for
//! one and none is running — the group keeps ticking while its actions run.

use super::Daemon;
use super::tick::{GroupRuntime, TickReport};
use crate::api::metrics::Metrics;
use crate::config::Group;
use crate::policy::{Direction, GroupMemory, MemoryStore};
use crate::script::runner::{ActionRequest, RunReport};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    /// Ticks so far.
    pub ticks: u64,
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
}

/// The shortest time between two saves of a group's sample history while it runs (it is also
/// saved when the task stops): at 1,000 droplets with `[10m]` ranges one save is ~15 MB.
const HISTORY_SAVE_EVERY: Duration = Duration::from_secs(300);

/// How long after a delete a droplet still listed counts as on its way out.
const DELETE_GRACE: Duration = Duration::from_secs(120);

/// The per-group state of an action run.
struct Running {
    task: JoinHandle<RunReport>,
    direction: Direction,
    victims: Vec<u64>,
    desc: String,
}

/// Starts a group's task.
/// Starts a group's task; it acts on no decision before `act_after` (a reloaded
/// configuration settles first).
pub fn spawn(daemon: Arc<Daemon>, group: Group, identity: u64, act_after: Instant) -> GroupHandle {
    let (stop, mut stopped) = watch::channel(false);
    let status = Arc::new(Mutex::new(GroupStatus::default()));
    let task_status = status.clone();
    let task = tokio::spawn(async move {
        let name = group.name.clone();
        let mut runtime = match GroupRuntime::new(group, daemon.managed_tag.clone()) {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(group = %name, %error, "cannot compile the group's expressions");
                return;
            }
        };
        let mut memory = daemon.store.load(&name);
        runtime.restore_history(&daemon.store, daemon.clock.now());
        let mut history_saved = Instant::now();
        let mut ticker = tokio::time::interval(runtime.group.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut running: Option<Running> = None;
        let mut recently_deleted: HashMap<u64, Instant> = HashMap::new();
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.changed() => break,
            }
            let interval = runtime.group.interval;
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
            finish_run(
                &daemon,
                &name,
                &mut running,
                &mut memory,
                &mut recently_deleted,
                &task_status,
            )
            .await;
            recently_deleted.retain(|_, at| at.elapsed() < DELETE_GRACE);
            let report = tick_once(
                &daemon,
                &mut runtime,
                &mut memory,
                &running,
                &recently_deleted,
                &task_status,
            )
            .await;
            if let Some(report) = report {
                if Instant::now() < act_after {
                    if report.decision.direction.is_some() {
                        tracing::info!(group = %name, "the configuration changed moments ago: not acting until it has settled");
                    }
                } else {
                    let spent = memory.creates_last_hour(daemon.clock.now());
                    maybe_start_run(&daemon, &runtime, report, spent, &mut running, &task_status);
                }
            }
            crate::failpoint::hit("memory.before_save");
            daemon.store.save(&name, &memory);
            // The history is kept for restarts; a crash loses at most the last few minutes,
            // which only makes the rules warm up again (they hold meanwhile).
            if history_saved.elapsed() >= HISTORY_SAVE_EVERY {
                runtime.save_history(&daemon.store);
                history_saved = Instant::now();
            }
            daemon.metrics.sync_api(&daemon.client());
        }
        runtime.save_history(&daemon.store);
        // Stopping: let a running action end (bounded), and record its outcome.
        if let Some(run) = running.as_ref()
            && !run.task.is_finished()
        {
            let _ = tokio::time::timeout(daemon.options.action_deadline, async {
                while !run.task.is_finished() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
        }
        finish_run(
            &daemon,
            &name,
            &mut running,
            &mut memory,
            &mut recently_deleted,
            &task_status,
        )
        .await;
        daemon.store.save(&name, &memory);
    });
    GroupHandle {
        identity,
        stop,
        task,
        status,
    }
}

/// One tick with its deadline; records the decision and metrics.
async fn tick_once(
    daemon: &Daemon,
    runtime: &mut GroupRuntime,
    memory: &mut GroupMemory,
    running: &Option<Running>,
    recently_deleted: &HashMap<u64, Instant>,
    status: &Mutex<GroupStatus>,
) -> Option<TickReport> {
    let name = runtime.group.name.clone();
    let started = Instant::now();
    let client = daemon.client();
    let in_flight: Vec<u64> = running
        .as_ref()
        .filter(|r| r.direction == Direction::Down)
        .map(|r| r.victims.clone())
        .unwrap_or_default();
    let deleting = |id: u64| in_flight.contains(&id) || recently_deleted.contains_key(&id);
    let now = daemon.clock.now();
    let span = tracing::info_span!("tick", group = %name);
    let outcome = tracing::Instrument::instrument(
        tokio::time::timeout(
            runtime.group.tick_timeout,
            runtime.tick(&client, &daemon.scraper, memory, &deleting, now),
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
            record_failure(daemon, &name, status, error.to_string());
            return None;
        }
        Err(_) => {
            let reason = format!(
                "the tick passed its deadline of {}",
                crate::config::duration::format_duration(runtime.group.tick_timeout)
            );
            record_failure(daemon, &name, status, reason);
            return None;
        }
    };
    let decision = &report.decision;
    let json = report.to_json();
    crate::failpoint::hit("decision.before_record");
    if let Err(error) = daemon.store.record_decision(
        &name,
        &decision.at.to_rfc3339(),
        &report.to_record_json().to_string(),
    ) {
        tracing::error!(group = %name, %error, "cannot record the decision");
    }
    crate::failpoint::hit("decision.after_record");
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
        .last_success
        .get_or_create(&labels)
        .set(Utc::now().timestamp_millis() as f64 / 1000.0);
    metrics
        .action_failures
        .get_or_create(&labels)
        .set(i64::from(memory.up_failures));
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
    let paused = daemon.store.is_paused(&name);
    metrics.paused.get_or_create(&labels).set(i64::from(paused));
    tracing::info!(
        group = %name,
        current = decision.current,
        desired = decision.desired,
        winner = decision.winner.as_deref().unwrap_or("-"),
        paused,
        "{}",
        decision.steps.last().map(String::as_str).unwrap_or("")
    );
    if let Ok(mut status) = status.lock() {
        status.last_decision = Some(json);
        status.last_error = None;
        status.last_success = Some(Utc::now());
        status.ticks += 1;
    }
    Some(report)
}

fn record_failure(daemon: &Daemon, name: &str, status: &Mutex<GroupStatus>, reason: String) {
    tracing::warn!(group = %name, %reason, "tick failed");
    daemon
        .metrics
        .ticks
        .get_or_create(&Metrics::group_and(name, "result", "failed"))
        .inc();
    if let Ok(mut status) = status.lock() {
        status.last_error = Some(reason);
        status.ticks += 1;
    }
}

/// Starts the decision's actions unless the group is paused, this is a dry run, or a run is
/// already in progress.
fn maybe_start_run(
    daemon: &Arc<Daemon>,
    runtime: &GroupRuntime,
    report: TickReport,
    creates_last_hour: u32,
    running: &mut Option<Running>,
    status: &Mutex<GroupStatus>,
) {
    let Some(direction) = report.decision.direction else {
        return;
    };
    let name = &runtime.group.name;
    if daemon.options.dry_run {
        tracing::info!(group = %name, actions = ?report.actions, "dry run: not acting");
        return;
    }
    if daemon.store.is_paused(name) {
        tracing::info!(group = %name, "paused: not acting");
        return;
    }
    if running.is_some() {
        tracing::info!(group = %name, "an action run is in progress: not starting another");
        return;
    }
    let droplets = report.listing.clone();
    let desc = format!(
        "{} since {}",
        report.actions.join(" → "),
        Utc::now().to_rfc3339()
    );
    if let Ok(mut status) = status.lock() {
        status.running_action = Some(desc.clone());
    }
    let victims = report.decision.victims.clone();
    let request = ActionRequest {
        group: runtime.group.clone(),
        managed_tag: daemon.managed_tag.clone(),
        decision: report.decision,
        droplets,
        actions: report.actions,
        deadline: daemon.options.action_deadline,
        creates_last_hour,
    };
    let runner = daemon.runner();
    let task = tokio::spawn(async move { runner.run(request).await });
    *running = Some(Running {
        task,
        direction,
        victims,
        desc,
    });
}

/// Collects a finished action run: updates the group's memory and metrics.
async fn finish_run(
    daemon: &Daemon,
    name: &str,
    running: &mut Option<Running>,
    memory: &mut GroupMemory,
    recently_deleted: &mut HashMap<u64, Instant>,
    status: &Mutex<GroupStatus>,
) {
    let Some(run) = running.take_if(|r| r.task.is_finished()) else {
        return;
    };
    let now = daemon.clock.now();
    let report = match run.task.await {
        Ok(report) => report,
        Err(error) => {
            tracing::error!(group = %name, %error, "the action task failed");
            return;
        }
    };
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
                ("group".into(), name.into()),
                ("action".into(), result.name.clone()),
                ("result".into(), outcome.into()),
            ])
            .inc();
    }
    memory.created(report.create_attempts, now);
    for id in &report.deleted {
        recently_deleted.insert(*id, Instant::now());
    }
    let summary = match report.failure() {
        None => {
            memory.scaled(run.direction, now);
            format!("{}: ok", run.desc)
        }
        Some(error) => {
            if run.direction == Direction::Up {
                memory.up_failed(now);
            }
            format!("{}: failed: {error}", run.desc)
        }
    };
    if let Ok(mut status) = status.lock() {
        status.running_action = None;
        status.last_action = Some(summary);
    }
}
