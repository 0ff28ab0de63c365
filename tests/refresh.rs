//! Refresh on change and maximum lifetime (`[refresh]`), against the sim on one manual clock:
//! after a template change every droplet is replaced one at a time, launch first, never more
//! than one past max, and the old fingerprint tag is deleted; droplets past `max_lifetime`
//! (seeded ones, without a fingerprint tag) are replaced for their age alone; nothing starts
//! outside the window or while refresh is paused; `plan` lists what a refresh would replace.

mod common;
#[path = "common/manual.rs"]
mod manual;

use chrono::{DateTime, TimeZone, Utc};
use do_scaler::clock::ManualClock;
use do_scaler::config::refresh::FINGERPRINT_PREFIX;
use do_scaler::daemon::group::GroupTask;
use do_scaler::daemon::{Daemon, TickReport};
use do_scaler::sim::{Sim, SimOptions};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Three droplets wanted, at max, from `size`, with `[refresh]` as given.
fn group(size: &str, refresh: &str) -> String {
    format!(
        r#"tag = "web"
min = 3
max = 3
interval = "10s"
warmup = "0s"
[droplet]
region = "nyc3"
size = "{size}"
image = "ubuntu-24-04-x64"
[health]
grace = "0s"
[refresh]
{refresh}
[[rule]]
name = "wanted"
desired = '3'
"#
    )
}

async fn sim(clock: &ManualClock, seeded: u32, age: Duration) -> Sim {
    let sim = Sim::start(SimOptions {
        seed_droplets: seeded,
        seed_age: age,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports: Vec::new(),
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

/// Each droplet's fingerprint tag ("-" without one).
fn fingerprints(sim: &Sim) -> Vec<String> {
    sim.droplets()
        .iter()
        .map(|d| {
            d.tags
                .iter()
                .find(|t| t.starts_with(FINGERPRINT_PREFIX))
                .cloned()
                .unwrap_or_else(|| "-".into())
        })
        .collect()
}

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_replaces_every_droplet_one_at_a_time_and_drops_the_old_tag() {
    let clock = ManualClock::new(noon());
    let sim = sim(&clock, 0, Duration::ZERO).await;
    let dir = common::config_dir(&group("s-2vcpu-4gb", ""));
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;
    for _ in 0..4 {
        tick(&mut task, &sim, &clock).await;
    }
    assert_eq!(sim.droplets().len(), 3);
    let before: BTreeSet<String> = fingerprints(&sim).into_iter().collect();
    assert_eq!(before.len(), 1, "made from one template: {before:?}");
    let old_tag = before.iter().next().unwrap().clone();
    assert_ne!(old_tag, "-");
    let first: BTreeSet<u64> = sim.droplets().iter().map(|d| d.id).collect();
    drop(task);
    drop(daemon);

    // A new size: every droplet is stale, and goes one at a time, launch first.
    std::fs::write(dir.path().join("conf.d/web.toml"), group("s-4vcpu-8gb", "")).unwrap();
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    assert_eq!(report.stale.len(), 3, "{:?}", report.stale);
    assert!(
        report.stale[0].reason.contains("older template"),
        "{:?}",
        report.stale
    );
    let mut most = 0;
    let mut open_at_once = 0;
    for _ in 0..40 {
        tick(&mut task, &sim, &clock).await;
        most = most.max(sim.droplets().len());
        open_at_once = open_at_once.max(daemon.store.replacements("web").unwrap().len());
        if sim.droplets().iter().all(|d| !first.contains(&d.id)) {
            break;
        }
    }
    assert!(most <= 4, "never more than one past max: {most}");
    assert_eq!(open_at_once, 1, "max_unavailable 1");
    let after = fingerprints(&sim);
    assert_eq!(after.len(), 3);
    assert!(
        after.iter().all(|t| *t != old_tag && *t != "-"),
        "{after:?}"
    );
    assert_eq!(
        sim.created_names().len(),
        6,
        "three, then three replacements"
    );
    // The old tag is deleted once no droplet carries it.
    tick(&mut task, &sim, &clock).await;
    let deleted = sim
        .requests()
        .iter()
        .any(|r| r.method == "DELETE" && r.path == format!("/v2/tags/{old_tag}"));
    assert!(deleted, "the unused fingerprint tag was deleted");
    let report = tick(&mut task, &sim, &clock).await;
    assert!(report.stale.is_empty(), "{:?}", report.stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_droplets_go_for_their_lifetime_inside_the_window_and_not_while_paused() {
    let clock = ManualClock::new(noon());
    // Twenty days old, and without a fingerprint tag (made before `[refresh]`).
    let sim = sim(&clock, 3, Duration::from_secs(20 * 86400)).await;
    let original: BTreeSet<u64> = sim.droplets().iter().map(|d| d.id).collect();
    // The window opens at 13:00 for an hour; it is noon.
    let dir = common::config_dir(&group(
        "s-2vcpu-4gb",
        "max_lifetime = \"14d\"\ncron = \"0 13 * * *\"\nduration = \"1h\"",
    ));
    let (daemon, mut task) = start(dir.path(), &sim, &clock).await;
    let report = tick(&mut task, &sim, &clock).await;
    assert_eq!(
        report.stale.len(),
        3,
        "plan would list them: {:?}",
        report.stale
    );
    assert!(
        report.stale[0]
            .reason
            .contains("older than max_lifetime 14d")
    );
    assert!(report.to_json()["refresh"].as_array().unwrap().len() == 3);
    for _ in 0..5 {
        tick(&mut task, &sim, &clock).await;
    }
    assert_eq!(sim.created_names().len(), 0, "outside the window");

    // Paused by an operator: the window opens, nothing starts.
    daemon.store.set_refresh_paused("web", true).unwrap();
    clock.advance(Duration::from_secs(3600));
    for _ in 0..3 {
        tick(&mut task, &sim, &clock).await;
    }
    assert_eq!(sim.created_names().len(), 0, "paused");

    // Resumed inside the window: all three go, one at a time.
    daemon.store.set_refresh_paused("web", false).unwrap();
    for _ in 0..40 {
        tick(&mut task, &sim, &clock).await;
        if sim.droplets().iter().all(|d| !original.contains(&d.id)) {
            break;
        }
    }
    let now: BTreeSet<u64> = sim.droplets().iter().map(|d| d.id).collect();
    assert_eq!(now.len(), 3);
    assert!(now.is_disjoint(&original), "every old droplet replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_api_pauses_and_resumes_refresh_with_its_token() {
    let sim = common::sim(2, do_scaler::sim::Demand::Constant(0.5), Duration::ZERO).await;
    let dir = common::config_dir(&format!(
        "{}[health]\n[refresh]\nmax_lifetime = \"14d\"\n",
        common::GROUP
    ));
    let daemon = common::daemon(dir.path(), &sim).await.unwrap();
    let running = common::serve_daemon(daemon.clone()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |what: &str| format!("{}/api/v1/groups/web/refresh/{what}", running.url);
    let refused = http.post(url("pause")).send().await.unwrap();
    assert_eq!(refused.status(), 401, "no token, no pause");
    assert!(!daemon.store.is_refresh_paused("web"));
    let paused = http
        .post(url("pause"))
        .bearer_auth(common::API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    assert!(daemon.store.is_refresh_paused("web"));
    assert!(
        !daemon.store.is_paused("web"),
        "the group itself keeps scaling"
    );
    let group: serde_json::Value = http
        .get(format!("{}/api/v1/groups/web", running.url))
        .bearer_auth(common::API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(group["refresh_paused"], true);
    let resumed = http
        .post(url("resume"))
        .bearer_auth(common::API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    assert!(!daemon.store.is_refresh_paused("web"));
    let missing = http
        .post(format!("{}/api/v1/groups/nope/refresh/pause", running.url))
        .bearer_auth(common::API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    running.stop().await;
}
