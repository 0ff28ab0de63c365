//! A group run as the daemon runs it, on a manual clock: tests that step a group tick by tick
//! (drain, health replacement, refresh, HAProxy) start it and tick it through these.

use do_scaler::clock::ManualClock;
use do_scaler::config::Overrides;
use do_scaler::daemon::group::{GroupStatus, GroupTask};
use do_scaler::daemon::run::prepare;
use do_scaler::daemon::{Daemon, RunOptions, TickReport};
use do_scaler::sim::Sim;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far the manual clock moves per tick (the groups of these tests tick every 10 s).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The daemon on `dir` against `sim` on `clock` (as after a start or a restart), its first
/// group's task, and that task's status; each action run ends at `action_deadline`.
pub async fn start(
    dir: &Path,
    sim: &Sim,
    clock: &ManualClock,
    action_deadline: Duration,
) -> (Arc<Daemon>, GroupTask, Arc<Mutex<GroupStatus>>) {
    let token = sim.token().to_string();
    let daemon = prepare(
        dir.join("do-scaler.toml"),
        Overrides {
            api_url: Some(sim.api_url()),
            ..Overrides::default()
        },
        Arc::new(move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone())),
        Arc::new(clock.clone()),
        RunOptions::new(action_deadline),
    )
    .await
    .unwrap();
    let group = daemon.generation().config.groups[0].clone();
    let status = Arc::new(Mutex::new(GroupStatus::default()));
    let task = GroupTask::new(daemon.clone(), group, status.clone(), Instant::now()).unwrap();
    (daemon, task, status)
}

/// One interval passes; the group ticks and acts as the daemon does, and its run ends (waited
/// for at most `limit`). Returns the tick's report and whether a run failed (`None`: none ran).
pub async fn tick(
    task: &mut GroupTask,
    sim: &Sim,
    clock: &ManualClock,
    limit: Duration,
) -> (TickReport, Option<bool>) {
    clock.advance(INTERVAL);
    sim.sync();
    let report = task.tick().await.expect("the tick succeeds");
    task.act(report.clone());
    let failed = task.wait_for_run(limit).await;
    task.save(false);
    (report, failed)
}
