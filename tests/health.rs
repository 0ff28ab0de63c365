//! Replacing unhealthy droplets (`[health]`), against the sim on one manual clock: an
//! unhealthy droplet is replaced launch first (one past max, never more), no healthy droplet
//! goes, a restart mid-replacement resumes it without a second create, and replacements of a
//! broken image fail, are destroyed, and pause themselves after three in a row.

mod common;
#[path = "common/manual.rs"]
mod manual;

use chrono::{DateTime, TimeZone, Utc};
use do_scaler::clock::ManualClock;
use do_scaler::daemon::group::{GroupStatus, GroupTask};
use do_scaler::daemon::{Daemon, TickReport};
use do_scaler::policy::MemberState;
use do_scaler::sim::{Sim, SimOptions};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Three droplets wanted, at max; failures count at once (no warmup, no grace).
fn group(health: &str) -> String {
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
[health]
unhealthy_after = 2
grace = "0s"
{health}
[[rule]]
name = "wanted"
desired = '3'
"#
    )
}

async fn sim(clock: &ManualClock) -> Sim {
    sim_with_ports(clock, Vec::new()).await
}

/// The sim with droplets that answer HTTP (their id) on `open_ports`.
async fn sim_with_ports(clock: &ManualClock, open_ports: Vec<u16>) -> Sim {
    let sim = Sim::start(SimOptions {
        seed_droplets: 3,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports,
        boot_delay: Duration::from_secs(20),
        rate_limit: None,
        clock: Arc::new(clock.clone()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    clock.advance(Duration::from_secs(2));
    sim.sync();
    sim
}

/// The daemon on `dir` (as after a start or a restart), its group's task and its status.
async fn start(
    dir: &Path,
    sim: &Sim,
    clock: &ManualClock,
) -> (Arc<Daemon>, GroupTask, Arc<Mutex<GroupStatus>>) {
    manual::start(dir, sim, clock, Duration::from_secs(20)).await
}

/// One interval passes; the group ticks and acts as the daemon does, and its run ends.
async fn tick(task: &mut GroupTask, sim: &Sim, clock: &ManualClock) -> TickReport {
    manual::tick(task, sim, clock, Duration::from_secs(20))
        .await
        .0
}

fn ids(sim: &Sim) -> Vec<u64> {
    let mut ids: Vec<u64> = sim.droplets().iter().map(|d| d.id).collect();
    ids.sort();
    ids
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_droplet_is_replaced_launch_first_and_a_restart_resumes_it() {
    let clock = ManualClock::new(noon());
    let sim = sim(&clock).await;
    let original = ids(&sim);
    let dir = common::config_dir(&group(""));
    let (daemon, mut task, _) = start(dir.path(), &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    assert!(
        report
            .droplets
            .iter()
            .all(|d| d.health.as_deref() == Some("ok")),
        "{:#?}",
        report.droplets
    );

    // One droplet stops answering; the others still do, so the fault is its own.
    let sick = original[1];
    assert!(sim.set_healthy(sick, false));
    let report = tick(&mut task, &sim, &clock).await;
    let shown = report.droplets.iter().find(|d| d.id == sick).unwrap();
    assert!(
        shown.health.as_deref().unwrap().starts_with("failing 1/2"),
        "{shown:?}"
    );
    assert_eq!(
        sim.created_names().len(),
        0,
        "one failed tick is not enough"
    );

    // The second failed tick launches the replacement first: one past max, the sick one
    // still there, and none of it a scale event.
    let report = tick(&mut task, &sim, &clock).await;
    assert_eq!(sim.created_names().len(), 1, "{:#?}", report.decision.steps);
    assert_eq!(sim.droplets().len(), 4, "launched before the old one goes");
    let open = daemon.store.replacements("web").unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].old, sick);
    assert_eq!(open[0].new_name, sim.created_names()[0]);

    // A restart while the replacement boots: resumed, never created twice.
    drop(task);
    drop(daemon);
    let (daemon, mut task, _) = start(dir.path(), &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    let old = report.droplets.iter().find(|d| d.id == sick).unwrap();
    assert_eq!(old.state, MemberState::Replacing);
    assert_eq!(report.decision.replacing, 1);
    assert_eq!(
        report.decision.current, 3,
        "the replacement counts, not the old one"
    );
    assert_eq!(
        report.decision.direction, None,
        "{:#?}",
        report.decision.steps
    );
    let (_, metrics) = daemon.metrics.render_for(None);
    assert!(
        metrics.contains("do_scaler_replacing_droplets{group=\"web\"} 1"),
        "the gauge operators watch:\n{metrics}"
    );

    let mut most = 0;
    for _ in 0..10 {
        tick(&mut task, &sim, &clock).await;
        most = most.max(sim.droplets().len());
        if !sim.droplets().iter().any(|d| d.id == sick) {
            break;
        }
    }
    assert!(most <= 4, "never more than one past max: {most}");
    assert_eq!(sim.created_names().len(), 1, "created once, restart or not");
    let now = ids(&sim);
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(!now.contains(&sick), "the unhealthy droplet is destroyed");
    for healthy in [original[0], original[2]] {
        assert!(now.contains(&healthy), "a healthy droplet went: {healthy}");
    }
    // Once the listing no longer shows the old droplet, the replacement ends.
    tick(&mut task, &sim, &clock).await;
    assert!(daemon.store.replacements("web").unwrap().is_empty());
    assert!(
        daemon
            .store
            .failed_replacements_in_a_row("web")
            .unwrap()
            .is_empty(),
        "it succeeded"
    );
    let (_, metrics) = daemon.metrics.render_for(None);
    assert!(
        metrics.contains("do_scaler_replacements_total{group=\"web\",result=\"replaced\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_of_a_broken_image_are_destroyed_and_pause_after_three_in_a_row() {
    let clock = ManualClock::new(noon());
    let sim = sim(&clock).await;
    let original = ids(&sim);
    let dir = common::config_dir(&group("max_replacements_per_hour = 10"));
    let (daemon, mut task, status) = start(dir.path(), &sim, &clock).await;
    tick(&mut task, &sim, &clock).await;
    let sick = original[0];
    assert!(sim.set_healthy(sick, false));
    // Every droplet created from now on boots and never answers.
    sim.update_faults(|f| f.new_droplets_unhealthy = true);

    let mut most = 0;
    let mut ticks = 0;
    while status.lock().unwrap().replacement.is_none() {
        assert!(ticks < 300, "replacement never paused itself");
        tick(&mut task, &sim, &clock).await;
        most = most.max(sim.droplets().len());
        ticks += 1;
    }
    let why = status.lock().unwrap().replacement.clone().unwrap();
    assert!(why.contains("paused after 3 failed replacements"), "{why}");
    assert!(
        why.contains("do-scaler resume web"),
        "says how to go on: {why}"
    );
    assert_eq!(sim.created_names().len(), 3, "three tries, then none");
    let (_, metrics) = daemon.metrics.render_for(None);
    assert!(
        metrics.contains("do_scaler_replacements_total{group=\"web\",result=\"failed\"} 3"),
        "{metrics}"
    );
    assert!(most <= 4, "never more than one past max: {most}");
    // Every broken replacement was destroyed; the group is what it was.
    for _ in 0..3 {
        tick(&mut task, &sim, &clock).await;
    }
    assert_eq!(
        ids(&sim),
        original,
        "no healthy droplet went, no broken one stayed"
    );
    assert_eq!(
        sim.created_names().len(),
        3,
        "paused: nothing more is created"
    );

    // The operator fixes the image and resumes: replacement starts again and succeeds.
    sim.update_faults(|f| f.new_droplets_unhealthy = false);
    daemon.store.acknowledge_failed_replacements("web").unwrap();
    for _ in 0..20 {
        tick(&mut task, &sim, &clock).await;
        if !sim.droplets().iter().any(|d| d.id == sick) {
            break;
        }
    }
    assert_eq!(sim.created_names().len(), 4);
    let now = ids(&sim);
    assert_eq!(now.len(), 3);
    assert!(!now.contains(&sick), "{now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_limit_holds_and_a_group_that_answers_nowhere_replaces_nothing() {
    let clock = ManualClock::new(noon());
    let sim = sim(&clock).await;
    let original = ids(&sim);
    let dir = common::config_dir(&group("max_replacements_per_hour = 1"));
    let (_daemon, mut task, status) = start(dir.path(), &sim, &clock).await;
    tick(&mut task, &sim, &clock).await;
    // Every droplet stops answering: the scraper's own network, not three droplets.
    for id in &original {
        assert!(sim.set_healthy(*id, false));
    }
    for _ in 0..4 {
        tick(&mut task, &sim, &clock).await;
    }
    assert_eq!(
        sim.created_names().len(),
        0,
        "nothing proves a droplet's fault"
    );

    // Two answer again: the third is unhealthy, and the one after it waits for the hour.
    assert!(sim.set_healthy(original[0], true));
    assert!(sim.set_healthy(original[1], true));
    for _ in 0..3 {
        tick(&mut task, &sim, &clock).await;
    }
    assert_eq!(sim.created_names().len(), 1);
    for _ in 0..6 {
        tick(&mut task, &sim, &clock).await;
    }
    assert!(!ids(&sim).contains(&original[2]), "replaced");
    assert!(sim.set_healthy(original[1], false));
    for _ in 0..4 {
        tick(&mut task, &sim, &clock).await;
    }
    assert_eq!(sim.created_names().len(), 1, "one replacement an hour");
    let why = status
        .lock()
        .unwrap()
        .replacement
        .clone()
        .unwrap_or_default();
    assert!(why.contains("max_replacements_per_hour 1"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_replaces_a_droplet_that_stops_serving() {
    let clock = ManualClock::new(noon());
    // Each sim has loopback addresses of its own, so port 80 is free on them.
    let port = 80;
    let sim = sim_with_ports(&clock, vec![port]).await;
    let original = ids(&sim);
    let dir = common::config_dir(&group(&format!(
        "check = \"http\"\nport = {port}\npath = \"/healthz\"\n"
    )));
    let (_daemon, mut task, _) = start(dir.path(), &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    assert!(
        report
            .droplets
            .iter()
            .all(|d| d.health.as_deref() == Some("ok")),
        "every droplet answers its GET: {:#?}",
        report.droplets
    );
    assert!(sim.set_healthy(original[2], false));
    let report = tick(&mut task, &sim, &clock).await;
    let shown = report
        .droplets
        .iter()
        .find(|d| d.id == original[2])
        .unwrap();
    let health = shown.health.as_deref().unwrap();
    assert!(
        health.starts_with("failing 1/2: cannot connect"),
        "{health}"
    );
    for _ in 0..8 {
        tick(&mut task, &sim, &clock).await;
    }
    let now = ids(&sim);
    assert_eq!(sim.created_names().len(), 1);
    assert_eq!(now.len(), 3);
    assert!(!now.contains(&original[2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_drain_the_replaced_droplet_drains_before_it_goes_and_is_never_kept() {
    let clock = ManualClock::new(noon());
    let sim = sim(&clock).await;
    let original = ids(&sim);
    // Under "keep" a timed-out drain returns its droplet to service; never an unhealthy one.
    let dir = common::config_dir(&format!(
        "{}[drain]\nbusy = 'node_load1 >= 0'\ntimeout = \"30s\"\non_timeout = \"keep\"\n",
        group("")
    ));
    let (_daemon, mut task, _) = start(dir.path(), &sim, &clock).await;
    tick(&mut task, &sim, &clock).await;
    let sick = original[0];
    assert!(sim.set_healthy(sick, false));
    let mut drained = false;
    for _ in 0..20 {
        let report = tick(&mut task, &sim, &clock).await;
        drained |= report
            .droplets
            .iter()
            .any(|d| d.id == sick && d.state == MemberState::Draining);
        if !sim.droplets().iter().any(|d| d.id == sick) {
            break;
        }
    }
    assert!(drained, "the replaced droplet drained first");
    let now = ids(&sim);
    assert!(
        !now.contains(&sick),
        "destroyed at the drain's timeout, not kept"
    );
    assert_eq!(now.len(), 3);
    assert_eq!(sim.created_names().len(), 1);
}
