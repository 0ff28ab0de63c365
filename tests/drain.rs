//! Drain before destroy (`[drain]`), against the sim on one manual clock: a scale-down drains
//! its victim until its job ends (never destroying a busy droplet), the drain survives a
//! restart of the daemon, a scale-up returns a draining droplet to service before creating
//! any, a timeout under `on_timeout = "keep"` returns it, and the load balancer action takes
//! a draining droplet out and puts a returned one back.

mod common;
#[path = "common/manual.rs"]
mod manual;

use chrono::{DateTime, TimeZone, Utc};
use do_scaler::clock::ManualClock;
use do_scaler::daemon::group::GroupTask;
use do_scaler::daemon::{Daemon, TickReport};
use do_scaler::policy::MemberState;
use do_scaler::sim::api::new_load_balancer;
use do_scaler::sim::queue::{QueueCounts, QueueSettings};
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const LB: &str = "4de7ac8b-495b-4884-9a69-1050c6793cd6";

/// Two droplets wanted down to one; a droplet busy with a job drains until it ends.
fn group(desired: u32, drain: &str) -> String {
    format!(
        r#"tag = "web"
min = 1
max = 3
interval = "10s"
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[cooldown]
up = "0s"
down = "0s"
[stabilization]
up = "0s"
down = "0s"
[scale_in]
min_age = "0s"
[drain]
busy = 'sim_jobs_running > 0'
{drain}
[[rule]]
name = "wanted"
desired = '{desired}'
[actions.params.digitalocean_load_balancer]
load_balancer_id = "{LB}"
"#
    )
}

/// The sim (two managed droplets, each running one two-minute job) and its clock.
async fn sim(clock: &ManualClock) -> Sim {
    let sim = Sim::start(SimOptions {
        seed_droplets: 2,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports: Vec::new(),
        // Two jobs arrive in the first second (the sim reads the rate at each second's end),
        // then none.
        demand: Demand::Series(vec![
            (Duration::ZERO, 2.0),
            (Duration::from_millis(1500), 2.0),
            (Duration::from_millis(1501), 0.0),
        ]),
        boot_delay: Duration::from_secs(20),
        rate_limit: None,
        clock: Arc::new(clock.clone()),
        queue: Some(QueueSettings {
            job_seconds: 120.0,
            concurrency: 1,
        }),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let mut balancer = new_load_balancer(LB, "lb");
    balancer.droplet_ids = sim.droplets().iter().map(|d| d.id).collect();
    sim.add_load_balancer(balancer);
    clock.advance(Duration::from_secs(2));
    sim.sync();
    sim
}

/// The daemon on `dir` (as after a start or a restart) and its group's task.
async fn start(dir: &Path, sim: &Sim, clock: &ManualClock) -> (Arc<Daemon>, GroupTask) {
    let (daemon, task, _) = manual::start(dir, sim, clock, Duration::from_secs(20)).await;
    (daemon, task)
}

/// One interval passes; the group ticks and acts as the daemon does, and its run ends.
async fn tick(task: &mut GroupTask, sim: &Sim, clock: &ManualClock) -> TickReport {
    manual::tick(task, sim, clock, Duration::from_secs(20))
        .await
        .0
}

fn state_of(report: &TickReport, id: u64) -> Option<MemberState> {
    report.droplets.iter().find(|d| d.id == id).map(|d| d.state)
}

/// The one droplet the report shows draining.
fn draining_one(report: &TickReport) -> u64 {
    report
        .droplets
        .iter()
        .find(|d| d.state == MemberState::Draining)
        .map(|d| d.id)
        .expect("a droplet drains")
}

fn queue(sim: &Sim) -> QueueCounts {
    sim.queue().unwrap()
}

fn balanced(sim: &Sim) -> Vec<u64> {
    let mut ids = sim.load_balancer(LB).unwrap().droplet_ids;
    ids.sort();
    ids
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_the_job_survives_a_restart_and_never_destroys_a_busy_droplet() {
    let clock = ManualClock::new(noon());
    let sim = sim(&clock).await;
    let ids: Vec<u64> = sim.droplets().iter().map(|d| d.id).collect();
    assert!(
        ids.iter().all(|id| sim.jobs_on(*id) == 1),
        "both droplets run a job"
    );
    let dir = common::config_dir(&group(
        1,
        "actions = [\"digitalocean_load_balancer\"]\ntimeout = \"10m\"",
    ));
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;

    // The scale-down drains its victim: still there, out of the balancer, no longer counted.
    tick(&mut task, &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    let victim = *ids
        .iter()
        .find(|id| state_of(&report, **id) == Some(MemberState::Draining))
        .unwrap_or_else(|| panic!("no droplet drains: {:#?}", report.droplets));
    let kept = *ids.iter().find(|id| **id != victim).unwrap();
    assert_eq!(report.decision.current, 1, "{:#?}", report.decision.steps);
    assert_eq!(report.decision.draining, 1);
    assert_eq!(sim.droplets().len(), 2, "draining, not destroyed");
    assert_eq!(
        balanced(&sim),
        vec![kept],
        "out of the balancer while it drains"
    );
    let (_, metrics) = daemon.metrics.render_for(None);
    assert!(
        metrics.contains("do_scaler_draining_droplets{group=\"web\"} 1"),
        "the gauge operators watch"
    );
    let json = report.to_json();
    assert!(
        json["droplets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["state"] == "draining"),
        "the status API shows it draining"
    );

    // The daemon restarts mid-drain: the drain is resumed, not forgotten, not hurried.
    drop(task);
    drop(daemon);
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    assert_eq!(state_of(&report, victim), Some(MemberState::Draining));
    assert_eq!(sim.droplets().len(), 2);

    // It goes only once its job has ended, and no job is lost.
    let mut ticks = 0;
    while sim.droplets().iter().any(|d| d.id == victim) {
        assert!(ticks < 20, "the drained droplet was never destroyed");
        let busy_before = sim.jobs_on(victim) > 0;
        tick(&mut task, &sim, &clock).await;
        if busy_before {
            assert!(
                sim.droplets().iter().any(|d| d.id == victim) || sim.jobs_on(victim) == 0,
                "destroyed while busy"
            );
        }
        ticks += 1;
    }
    assert!(ticks >= 8, "the job runs two minutes: {ticks} ticks");
    let counts = queue(&sim);
    assert_eq!(counts.busy_destroyed, 0, "{counts:?}");
    assert_eq!(counts.killed, 0, "{counts:?}");
    assert_eq!(sim.droplets().len(), 1);
    // Once the listing no longer shows it, its drain is forgotten.
    tick(&mut task, &sim, &clock).await;
    assert!(
        daemon.store.draining("web").unwrap().is_empty(),
        "the drain is settled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_returns_a_draining_droplet_to_service_before_creating_any() {
    let clock = ManualClock::new(noon());
    let sim = sim(&clock).await;
    let drain = "actions = [\"digitalocean_load_balancer\"]\nreturn_actions = [\"digitalocean_load_balancer\"]";
    let dir = common::config_dir(&group(1, drain));
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;
    tick(&mut task, &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    assert_eq!(report.decision.draining, 1, "{:#?}", report.decision.steps);
    assert_eq!(balanced(&sim).len(), 1);

    // Two are wanted again (a restart with the new rule): the draining one comes back.
    drop(task);
    drop(daemon);
    std::fs::write(dir.path().join("conf.d/web.toml"), group(2, drain)).unwrap();
    let (_daemon, mut task) = start(dir.path(), &sim, &clock).await;
    let created_before = sim.created_names().len();
    tick(&mut task, &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    assert_eq!(report.decision.current, 2, "{:#?}", report.decision.steps);
    assert_eq!(report.decision.draining, 0);
    assert!(
        report
            .droplets
            .iter()
            .all(|d| d.state == MemberState::Active)
    );
    assert_eq!(
        sim.created_names().len(),
        created_before,
        "nothing was created"
    );
    assert_eq!(balanced(&sim).len(), 2, "back in the balancer");
    assert_eq!(sim.droplets().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_times_out_under_keep_returns_the_droplet_and_under_destroy_removes_it() {
    for (on_timeout, survives) in [("keep", true), ("destroy", false)] {
        let clock = ManualClock::new(noon());
        let sim = sim(&clock).await;
        let drain = format!("timeout = \"30s\"\non_timeout = \"{on_timeout}\"");
        let dir = common::config_dir(&group(1, &drain));
        let (_daemon, mut task) = start(dir.path(), &sim, &clock).await;
        tick(&mut task, &sim, &clock).await;
        let report = tick(&mut task, &sim, &clock).await;
        let victim = draining_one(&report);
        // Past the timeout, its job still running.
        let mut returned = false;
        for _ in 0..4 {
            let report = tick(&mut task, &sim, &clock).await;
            returned |= state_of(&report, victim) == Some(MemberState::Active);
        }
        assert!(sim.jobs_on(victim) > 0 || !survives, "the job still runs");
        let present = sim.droplets().iter().any(|d| d.id == victim);
        assert_eq!(present, survives, "on_timeout = {on_timeout}");
        if survives {
            assert!(returned, "back in service after the timeout");
            assert_eq!(queue(&sim).busy_destroyed, 0);
        } else {
            assert_eq!(
                queue(&sim).busy_destroyed,
                1,
                "destroyed at the timeout, busy"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_when_its_droplet_vanishes_or_is_protected_and_never_blocks_a_scale_up() {
    let clock = ManualClock::new(noon());
    let sim = sim(&clock).await;
    let dir = common::config_dir(&group(1, "timeout = \"10m\""));
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;
    tick(&mut task, &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    let victim = draining_one(&report);
    // An operator protects it: it returns to service and is never destroyed.
    sim.add_tag(victim, "do-scaler-protect");
    let report = tick(&mut task, &sim, &clock).await;
    assert!(daemon.store.draining("web").unwrap().is_empty());
    assert_ne!(state_of(&report, victim), Some(MemberState::Deleting));
    for _ in 0..15 {
        tick(&mut task, &sim, &clock).await;
    }
    assert!(sim.droplets().iter().any(|d| d.id == victim), "protected");

    // Someone else deletes a draining droplet; a later scale-up is not held by its drain.
    drop(task);
    drop(daemon);
    let clock = ManualClock::new(noon());
    let sim = self::sim(&clock).await;
    let dir = common::config_dir(&group(1, "timeout = \"10m\""));
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;
    tick(&mut task, &sim, &clock).await;
    tick(&mut task, &sim, &clock).await;
    let victim = daemon.store.draining("web").unwrap()[0].id;
    assert!(sim.delete(victim));
    drop(task);
    drop(daemon);
    std::fs::write(
        dir.path().join("conf.d/web.toml"),
        group(3, "timeout = \"10m\""),
    )
    .unwrap();
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;
    for _ in 0..3 {
        tick(&mut task, &sim, &clock).await;
    }
    assert!(daemon.store.draining("web").unwrap().is_empty());
    assert_eq!(
        sim.droplets().len(),
        3,
        "the scale-up created what was missing"
    );
}
