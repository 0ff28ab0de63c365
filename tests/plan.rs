//! `do-scaler plan`: snapshots of the report for a group that scales up, one held by its
//! cooldown and one without metrics, and the JSON form against the sim for the example.

use chrono::{DateTime, Utc};
use do_scaler::clock::ManualClock;
use do_scaler::config::{ApiToken, group_from_toml};
use do_scaler::daemon::GroupRuntime;
use do_scaler::digitalocean::{Client, ClientOptions};
use do_scaler::metrics::scrape::Scraper;
use do_scaler::policy::GroupMemory;
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-10T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

const GROUP: &str = r#"
tag = "web"
min = 1
max = 6
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[cooldown]
up = "2m"
[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[1m]))'
target = 0.6
[[rule]]
name = "memory"
when = 'avg(node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) < 0.15'
for = "1m"
change = "+1"
"#;

/// Ticks the group five times, 15 simulated seconds apart, and renders the last plan.
async fn plan_after_ticks(group_text: &str, demand: f64, memory: GroupMemory) -> String {
    let clock = ManualClock::new(start());
    let sim = Sim::start(SimOptions {
        seed_droplets: 2,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports: Vec::new(),
        demand: Demand::Constant(demand),
        clock: Arc::new(clock.clone()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.rate_limits = None;
    let client = Client::new(options).unwrap();
    let scraper = Scraper::new(8, 1 << 20).unwrap();
    let group = group_from_toml("web", group_text).unwrap();
    let mut runtime = GroupRuntime::new(group, "do-scaler:default".into()).unwrap();
    let mut report = None;
    for tick in 0..5 {
        if tick > 0 {
            clock.advance(Duration::from_secs(15));
            sim.sync();
        }
        let mut scratch = memory.clone();
        report = Some(
            runtime
                .tick(
                    &client,
                    &scraper,
                    &mut scratch,
                    &Default::default(),
                    start() + chrono::Duration::seconds(tick * 15),
                )
                .await
                .unwrap(),
        );
    }
    let text = do_scaler::commands::plan::render(&report.unwrap(), &memory);
    // The sim's subnet is chosen at random: hide it, and the padding that varies with it.
    let addresses = regex::Regex::new(r"127\.\d+\.(\d+)\.(\d+) +").unwrap();
    let text = addresses.replace_all(&text, "127.S.$1.$2 ").into_owned();
    // How long each source took varies from run to run.
    let took = regex::Regex::new(r"\(\d+ ms\)").unwrap();
    took.replace_all(&text, "(N ms)").into_owned()
}

#[tokio::test]
async fn plan_of_a_group_that_scales_up() {
    // 3.6 vCPUs of work on two 2-vCPU droplets: 90 % busy, target 60 %.
    insta::assert_snapshot!(
        "plan_scales_up",
        plan_after_ticks(GROUP, 3.6, GroupMemory::default()).await
    );
}

#[tokio::test]
async fn plan_of_a_group_held_by_its_cooldown() {
    let memory = GroupMemory {
        last_up: Some(start()),
        ..GroupMemory::default()
    };
    insta::assert_snapshot!(
        "plan_holds_for_cooldown",
        plan_after_ticks(GROUP, 3.6, memory).await
    );
}

#[tokio::test]
async fn plan_of_a_group_without_metrics() {
    let group = GROUP
        .replace("node_cpu_seconds_total", "app_busy_seconds_total")
        .replace("node_memory_MemAvailable_bytes", "app_memory_free");
    insta::assert_snapshot!(
        "plan_missing_metrics",
        plan_after_ticks(&group, 3.6, GroupMemory::default()).await
    );
}

#[tokio::test]
async fn plan_json_against_the_sim_keeps_every_example_group_within_bounds() {
    let sim = Sim::start(SimOptions {
        seed_droplets: 3,
        open_ports: Vec::new(),
        demand: Demand::Constant(4.0),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let (api, token) = (sim.api_url(), sim.token().to_string());
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("do-scaler.toml");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_do-scaler"))
            .args(["plan", "--json", "--wait", "2s", "--config"])
            .arg(example)
            .env("DIGITALOCEAN_API_URL", api)
            .env("DIGITALOCEAN_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let groups = plan["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for group in groups {
        let desired = group["desired"].as_u64().unwrap();
        let bounds = &group["decision"]["bounds"];
        assert!(
            desired >= bounds["min"].as_u64().unwrap()
                && desired <= bounds["max"].as_u64().unwrap(),
            "{group}"
        );
        assert!(group["rules"].as_array().is_some() && group["droplets"].as_array().is_some());
    }
    assert_eq!(groups[0]["name"], "web");
    assert_eq!(groups[0]["current"], 3);
    assert_eq!(
        groups[1]["desired"], 1,
        "the empty worker group goes to its min"
    );
    assert!(
        !sim.api_counts().contains_key("POST /v2/droplets"),
        "plan never acts"
    );
}

mod common;

/// Issue 17: `plan` previews the daemon. Beside a running daemon it reads the samples the
/// daemon appends each tick, so rate rules have values at once; on a fresh state it waits as
/// long as the longest range needs, and the next `plan` then sees rates at once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sees_rates_at_once_beside_the_daemon_and_after_another_plan() {
    let sim = common::sim(2, Demand::Constant(2.0), Duration::from_millis(300)).await;
    let rule_values = |stdout: &str| -> Vec<String> {
        let plan: serde_json::Value = serde_json::from_str(stdout).unwrap();
        plan["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].to_string())
            .collect()
    };
    let plan = |dir: std::path::PathBuf, wait: Option<Duration>| {
        let sim_url = sim.api_url();
        let token = sim.token().to_string();
        async move {
            let request = do_scaler::commands::plan::PlanRequest {
                config: dir.join("do-scaler.toml"),
                overrides: do_scaler::config::Overrides {
                    api_url: Some(sim_url),
                    ..Default::default()
                },
                group: None,
                json: true,
                wait,
                clock: std::sync::Arc::new(do_scaler::clock::SystemClock),
            };
            let env = move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone());
            do_scaler::commands::plan::run(
                &request,
                &env,
                &do_scaler::policy::InMemoryStore::default(),
            )
            .await
        }
    };

    // Beside a running daemon that has ticked a few times: a value at once, no waiting.
    let dir = common::config_dir(common::GROUP);
    let daemon = common::daemon(dir.path(), &sim).await.unwrap();
    let running = common::serve_daemon(daemon.clone()).await;
    common::eventually(Duration::from_secs(15), "five ticks", || {
        daemon.group_status("web").is_some_and(|s| s.ticks >= 5)
    })
    .await;
    let output = plan(dir.path().to_path_buf(), Some(Duration::ZERO)).await;
    assert_eq!(output.exit_code, 0, "{}", output.stderr);
    let values = rule_values(&output.stdout);
    assert!(!values.iter().any(|v| v == "null"), "{values:?}");
    running.stop().await;

    // Fresh state, no daemon: the first plan waits until covered, the next needs no wait.
    let fresh = common::config_dir(common::GROUP);
    let started = std::time::Instant::now();
    let first = plan(fresh.path().to_path_buf(), None).await;
    assert_eq!(first.exit_code, 0, "{}", first.stderr);
    // GROUP's rule reads `[3s]`: the first plan scraped for about that long.
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited");
    assert!(!rule_values(&first.stdout).iter().any(|v| v == "null"));
    // A person runs the next plan a moment later (about an interval: the samples stay evenly
    // spaced, so the window is covered as the daemon's would be).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let second = plan(fresh.path().to_path_buf(), Some(Duration::ZERO)).await;
    assert!(started.elapsed() < Duration::from_secs(2), "no wait");
    assert_eq!(second.exit_code, 0, "{}", second.stderr);
    let values = rule_values(&second.stdout);
    assert!(
        !values.iter().any(|v| v == "null"),
        "{values:?}\n{}\n{}",
        second.stdout,
        second.stderr
    );
}
