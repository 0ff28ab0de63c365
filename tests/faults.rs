//! The fault suite: the daemon, serving, against the sim's injected faults. In every case the
//! group stays within its bounds (sampled every 50 ms), no droplet name is created twice, no
//! journal row is left open, the daemon keeps ticking, and the fault shows in a metric and in
//! the group's status.

use do_scaler::daemon::Daemon;
use do_scaler::sim::{Demand, Faults, Sim};
use do_scaler::state::Journal;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

mod common;
use common::*;

/// A running daemon on its sim, with the group's size watched throughout.
struct Harness {
    sim: Arc<Sim>,
    _dir: tempfile::TempDir,
    daemon: Arc<Daemon>,
    running: Running,
    smallest: Arc<AtomicUsize>,
    largest: Arc<AtomicUsize>,
    watching: Arc<AtomicBool>,
}

/// `GROUP` with `min`/`max` and extra keys before the first table.
fn group(min: u32, max: u32, extra: &str) -> String {
    GROUP
        .replace(
            "min = 1\nmax = 5\n",
            &format!("min = {min}\nmax = {max}\n{extra}"),
        )
        .to_string()
}

async fn start(seeded: u32, demand: Demand, group: &str, action_deadline: Duration) -> Harness {
    start_with(seeded, demand, group, action_deadline, |_| {}).await
}

/// Like [`start`], with the sim and the configuration folder adjusted before the daemon starts.
async fn start_with(
    seeded: u32,
    demand: Demand,
    group: &str,
    action_deadline: Duration,
    adjust: impl FnOnce(&(Sim, std::path::PathBuf)),
) -> Harness {
    let sim = sim(seeded, demand, Duration::from_millis(300)).await;
    let dir = config_dir(group);
    let pair = (sim, dir.path().to_path_buf());
    adjust(&pair);
    let sim = Arc::new(pair.0);
    let daemon = daemon_with_deadline(dir.path(), &sim, action_deadline)
        .await
        .unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let smallest = Arc::new(AtomicUsize::new(usize::MAX));
    let largest = Arc::new(AtomicUsize::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    tokio::spawn({
        let (sim, smallest, largest, watching) = (
            sim.clone(),
            smallest.clone(),
            largest.clone(),
            watching.clone(),
        );
        async move {
            while watching.load(Ordering::Relaxed) {
                let size = sim.droplets().len();
                smallest.fetch_min(size, Ordering::Relaxed);
                largest.fetch_max(size, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    Harness {
        sim,
        _dir: dir,
        daemon,
        running,
        smallest,
        largest,
        watching,
    }
}

impl Harness {
    async fn status(&self) -> Value {
        get(&format!("{}/api/v1/groups/web", self.running.url)).await
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.running.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits (up to 5 s: gauges are set at the next tick) for a metric line named `name` with
    /// every label in `labels` and a value above 0.
    async fn assert_metric(&self, name: &str, labels: &[&str]) {
        let started = std::time::Instant::now();
        loop {
            let text = self.metrics().await;
            let found = text.lines().any(|line| {
                line.starts_with(name)
                    && labels.iter().all(|l| line.contains(l))
                    && line
                        .rsplit(' ')
                        .next()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v > 0.0)
            });
            if found {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no {name} with {labels:?} above 0 in\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn ticks(&self) -> u64 {
        self.daemon.group_status("web").map_or(0, |s| s.ticks)
    }

    /// Waits until the group has ticked `more` more times: the daemon keeps going.
    async fn keeps_ticking(&self, more: u64) {
        let from = self.ticks();
        eventually(Duration::from_secs(15), "more ticks", || {
            self.ticks() >= from + more
        })
        .await;
    }

    async fn eventually_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            let status = self.status().await;
            if check(&status) {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}; status: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn eventually_size(&self, size: usize) {
        eventually(Duration::from_secs(20), &format!("size {size}"), || {
            self.sim.droplets().len() == size
        })
        .await;
    }

    /// Stops the daemon and checks the invariants: every size seen within `low..=high`, each
    /// name created once, nothing left open in the journal.
    async fn finish(self, low: usize, high: usize) {
        self.running.stop().await;
        self.watching.store(false, Ordering::Relaxed);
        let (smallest, largest) = (
            self.smallest.load(Ordering::Relaxed),
            self.largest.load(Ordering::Relaxed),
        );
        assert!(
            smallest >= low && largest <= high,
            "sizes seen {smallest}..={largest}, allowed {low}..={high}"
        );
        let names = self.sim.created_names();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "a name was created twice: {names:?}"
        );
        let pending = self.daemon.store.pending().unwrap();
        assert!(pending.is_empty(), "unsettled journal rows: {pending:?}");
    }
}

fn last_problem(status: &Value) -> &str {
    status["digitalocean_last_problem"]["what"]
        .as_str()
        .unwrap_or("")
}

fn last_error(status: &Value) -> &str {
    status["last_error"].as_str().unwrap_or("")
}

/// The scrape outcome of every droplet in the last decision.
fn scrape_outcomes(status: &Value) -> Vec<String> {
    status["last_decision"]["droplets"]
        .as_array()
        .map(|droplets| {
            droplets
                .iter()
                .filter_map(|d| d["scrape"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

const STEADY: f64 = 2.0; // 50 % of two 2-vCPU droplets: the rule's target, so it holds.
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_503s_fails_ticks_visibly_and_the_group_recovers() {
    let h = start(2, Demand::Constant(STEADY), &group(2, 4, ""), DEADLINE).await;
    h.keeps_ticking(2).await;
    h.sim.update_faults(|f| f.fail_next = 6);
    let status = h
        .eventually_status("a failed tick", |s| !last_error(s).is_empty())
        .await;
    assert!(last_problem(&status).contains("answered 503"), "{status:#}");
    h.assert_metric("do_scaler_ticks_total", &["result=\"failed\""])
        .await;
    h.assert_metric(
        "do_scaler_digitalocean_api_calls_total",
        &["status=\"503\""],
    )
    .await;
    h.eventually_status("recovery", |s| last_error(s).is_empty())
        .await;
    h.keeps_ticking(2).await;
    // A reload (new client, same API) keeps what the old client saw.
    let reloaded = reqwest::Client::new()
        .post(format!("{}/api/v1/reload", h.running.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200);
    let status = h.status().await;
    assert!(last_problem(&status).contains("answered 503"), "{status:#}");
    h.assert_metric(
        "do_scaler_digitalocean_api_calls_total",
        &["status=\"503\""],
    )
    .await;
    h.finish(2, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_errors_during_a_scale_up_never_passes_max_nor_creates_twice() {
    let h = start(2, Demand::Constant(6.0), &group(2, 4, ""), DEADLINE).await;
    h.sim.update_faults(|f| f.error_rate = 0.3);
    h.eventually_size(4).await;
    let status = h.status().await;
    assert!(last_problem(&status).contains("answered 50"), "{status:#}");
    h.assert_metric("do_scaler_digitalocean_api_calls_total", &["status=\"50"])
        .await;
    h.keeps_ticking(3).await;
    assert_eq!(h.sim.droplets().len(), 4, "at max, and no further");
    h.finish(2, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_429s_is_waited_out() {
    let h = start(2, Demand::Constant(STEADY), &group(2, 4, ""), DEADLINE).await;
    h.keeps_ticking(1).await;
    h.sim.update_faults(|f| f.throttle_next = 4);
    let status = h
        .eventually_status("the 429s to be seen", |s| {
            last_problem(s).contains("answered 429")
        })
        .await;
    assert!(
        last_problem(&status).contains("GET /v2/droplets"),
        "{status:#}"
    );
    h.assert_metric(
        "do_scaler_digitalocean_api_calls_total",
        &["status=\"429\""],
    )
    .await;
    h.eventually_status("ticks to succeed again", |s| last_error(s).is_empty())
        .await;
    h.keeps_ticking(2).await;
    h.finish(2, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_latency_ends_every_tick_at_its_timeout_and_ticking_goes_on() {
    let h = start(2, Demand::Constant(STEADY), &group(2, 4, ""), DEADLINE).await;
    h.keeps_ticking(1).await;
    h.sim.update_faults(|f| f.latency = Duration::from_secs(10));
    // Three ticks in far less than one answer's latency: each ended at its timeout.
    h.keeps_ticking(3).await;
    let status = h.status().await;
    assert!(
        last_error(&status).contains("passed its deadline"),
        "{status:#}"
    );
    h.assert_metric("do_scaler_ticks_total", &["result=\"failed\""])
        .await;
    h.sim.update_faults(|f| f.latency = Duration::ZERO);
    h.eventually_status("ticks to succeed again", |s| last_error(s).is_empty())
        .await;
    h.finish(2, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_droplet_limit_fails_the_action_visibly_and_backs_off() {
    let h = start(2, Demand::Constant(6.0), &group(2, 4, ""), DEADLINE).await;
    h.sim.set_droplet_limit(3);
    let status = h
        .eventually_status("the failed create", |s| {
            s["last_action"].as_str().unwrap_or("").contains("failed")
        })
        .await;
    let action = status["last_action"].as_str().unwrap();
    assert!(action.contains("droplet limit"), "{status:#}");
    assert!(last_problem(&status).contains("POST /v2/droplets answered 422"));
    h.assert_metric("do_scaler_actions_total", &["result=\"failed\""])
        .await;
    h.assert_metric("do_scaler_consecutive_action_failures", &["group=\"web\""])
        .await;
    h.keeps_ticking(3).await;
    h.finish(2, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_succeeds_but_answers_500_is_adopted_not_repeated() {
    let h = start(2, Demand::Constant(6.0), &group(2, 4, ""), DEADLINE).await;
    h.sim.update_faults(|f| f.create_succeeds_then_500 = 1);
    h.eventually_size(4).await;
    let status = h.status().await;
    assert_eq!(
        last_problem(&status),
        "POST /v2/droplets answered 500",
        "{status:#}"
    );
    h.assert_metric(
        "do_scaler_digitalocean_api_calls_total",
        &["method=\"POST\"", "status=\"500\""],
    )
    .await;
    h.keeps_ticking(3).await;
    assert_eq!(
        h.sim.created_names().len(),
        2,
        "two droplets asked, two made"
    );
    h.finish(2, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_hangs_ends_at_the_action_deadline_and_the_group_reaches_max() {
    // Four droplets, max 2: the deletes are carried out but their answers never come back.
    let h = start(
        4,
        Demand::Constant(STEADY),
        &group(1, 2, ""),
        Duration::from_secs(2),
    )
    .await;
    h.sim
        .update_faults(|f| f.delete_hang = Some(Duration::from_secs(30)));
    let status = h
        .eventually_status("the action cut at its deadline", |s| {
            s["last_action"].as_str().unwrap_or("").contains("deadline")
        })
        .await;
    assert!(
        status["last_action"].as_str().unwrap().contains("failed"),
        "{status:#}"
    );
    h.assert_metric("do_scaler_actions_total", &["result=\"failed\""])
        .await;
    h.eventually_size(2).await;
    h.keeps_ticking(3).await;
    h.finish(2, 4).await;
}

/// Four droplets at 10 %: without the fault the group would shrink to 1.
async fn idle_group() -> Harness {
    start(4, Demand::Constant(0.8), &group(1, 5, ""), DEADLINE).await
}

/// Over five more ticks the group keeps its four droplets and the failures carry `kind`.
async fn holds_with_scrape_failures(h: &Harness, kind: &str) {
    h.keeps_ticking(5).await;
    assert_eq!(h.sim.droplets().len(), 4, "no scale-down on missing data");
    let status = h.status().await;
    assert!(
        last_error(&status).is_empty(),
        "each tick ended in time: {status:#}"
    );
    assert!(
        scrape_outcomes(&status)
            .iter()
            .any(|s| s.starts_with(&format!("{kind}:"))),
        "{status:#}"
    );
    h.assert_metric(
        "do_scaler_scrape_failures_total",
        &[&format!("reason=\"{kind}\"")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_metrics_endpoints_never_scale_down_and_ticks_end_in_time() {
    let h = idle_group().await;
    h.sim.set_faults(Faults {
        scrape_hang_share: 1.0,
        ..Faults::default()
    });
    holds_with_scrape_failures(&h, "timeout").await;
    h.finish(4, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_some_droplets_never_scales_down() {
    let h = idle_group().await;
    h.sim.set_faults(Faults {
        scrape_garbage_share: 0.5,
        ..Faults::default()
    });
    holds_with_scrape_failures(&h, "garbage").await;
    h.finish(4, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_droplets_unreachable_then_all_never_scales_down() {
    let h = idle_group().await;
    let ids: Vec<u64> = h.sim.droplets().iter().map(|d| d.id).collect();
    for id in &ids[..2] {
        h.sim.make_unreachable(*id);
    }
    holds_with_scrape_failures(&h, "unreachable").await;
    for id in &ids[2..] {
        h.sim.make_unreachable(*id);
    }
    holds_with_scrape_failures(&h, "unreachable").await;
    let status = h.status().await;
    assert!(
        scrape_outcomes(&status)
            .iter()
            .all(|s| s.starts_with("unreachable:")),
        "{status:#}"
    );
    h.finish(4, 4).await;
}

const MANAGED: &str = "do-scaler:default";

/// Trust at the edges (2): the whole scrape phase has one deadline, waiting for a slot
/// included: a group of 1,000 hung endpoints still decides (here: restores its min) within its
/// tick's deadline, the droplets never reached counting as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hung_droplets_still_decide_within_the_tick() {
    use do_scaler::daemon::GroupRuntime;
    use do_scaler::metrics::scrape::{DEFAULT_BODY_LIMIT, Scraper};
    let sim = sim(0, Demand::Constant(1.0), Duration::from_millis(300)).await;
    for id in sim.seed(1000, "web", Some(MANAGED)) {
        sim.make_hang(id);
    }
    let group = do_scaler::config::group_from_toml(
        "web",
        &GROUP.replace(
            "min = 1\nmax = 5\n",
            "min = 1001\nmax = 2000\ninterval = \"5s\"\n",
        ),
    )
    .unwrap();
    let deadline = group.tick_timeout;
    let mut runtime = GroupRuntime::new(group, MANAGED.into()).unwrap();
    let mut options = do_scaler::digitalocean::ClientOptions::new(
        sim.api_url(),
        do_scaler::config::ApiToken::new(sim.token()),
    );
    options.rate_limits = None;
    let client = do_scaler::digitalocean::Client::new(options).unwrap();
    let scraper = Scraper::new(64, DEFAULT_BODY_LIMIT).unwrap();
    let started = std::time::Instant::now();
    let report = runtime
        .tick(
            &client,
            &scraper,
            &mut do_scaler::policy::GroupMemory::default(),
            &Default::default(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took < deadline, "the tick took {took:?}, past {deadline:?}");
    assert_eq!(
        report.decision.desired, 1001,
        "{:#?}",
        report.decision.steps
    );
    let not_reached = report
        .droplets
        .iter()
        .filter(|d| d.scrape.starts_with("not_reached"))
        .count();
    assert!(not_reached > 0, "some droplets were never reached");
    assert!(report.droplets.iter().all(|d| d.scrape != "ok"));
}

/// Trust at the edges (2): groups do not wait for each other: beside a group of 1,000 hung
/// droplets, a 2-droplet group ticks on its interval and reads its metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_group_does_not_delay_another() {
    let sim = sim(2, Demand::Constant(2.0), Duration::from_millis(300)).await;
    for id in sim.seed(1000, "slow", Some(MANAGED)) {
        sim.make_hang(id);
    }
    let dir = config_dir(GROUP);
    std::fs::write(
        dir.path().join("conf.d/slow.toml"),
        GROUP
            .replace("tag = \"web\"", "tag = \"slow\"")
            .replace("min = 1\nmax = 5\n", "min = 1\nmax = 1200\n"),
    )
    .unwrap();
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let ticks = |group: &str| daemon.group_status(group).map_or(0, |s| s.ticks);
    eventually(Duration::from_secs(10), "both groups to tick", || {
        ticks("web") > 0 && ticks("slow") > 0
    })
    .await;
    let from = ticks("web");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let done = ticks("web") - from;
    assert!(
        done >= 4,
        "the small group ticked {done} times in 5 s at a 1 s interval"
    );
    // (The sim shares its demand among every droplet, the slow group's too, so the small
    // group may shrink; what matters is that it reads every droplet it has.)
    let status = get(&format!("{}/api/v1/groups/web", running.url)).await;
    let droplets = status["last_decision"]["droplets"].as_array().unwrap();
    assert!(!droplets.is_empty(), "{status:#}");
    assert!(
        droplets.iter().all(|d| d["scrape"] == "ok"),
        "every droplet of the small group was read: {status:#}"
    );
    running.stop().await;
}

/// Trust at the edges (2): the shipped scale-up (create, then `health_check_tcp`) succeeds at
/// real DigitalOcean timings: droplets that take 75 s to boot, under the default action
/// deadline. (Real time: this test takes about 80 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_scale_up_succeeds_when_droplets_take_75_seconds_to_boot() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_secs(75)).await;
    let group = group(2, 3, "")
        + "\n[actions]\nup = [\"digitalocean_create_droplet\", \"health_check_tcp\"]\n";
    let dir = config_dir(&group);
    let daemon = daemon_with_options(
        dir.path(),
        &sim,
        do_scaler::daemon::RunOptions::new(do_scaler::daemon::run::DEFAULT_ACTION_DEADLINE),
    )
    .await
    .unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let url = format!("{}/api/v1/groups/web", running.url);
    let started = std::time::Instant::now();
    let status = loop {
        let status = get(&url).await;
        if status["last_action"].is_string() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "no action run ended: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let last = status["last_action"].as_str().unwrap();
    assert!(last.ends_with(": ok"), "{last}");
    assert!(
        started.elapsed() >= Duration::from_secs(70),
        "the boot took its time"
    );
    assert_eq!(
        sim.droplets()
            .iter()
            .filter(|d| d.status == do_scaler::digitalocean::DropletStatus::Active)
            .count(),
        2
    );
    running.stop().await;
}

/// Trust at the edges (2): listings that lag creates and deletes by 2 s (as the real API's
/// can) never push the group past max, never create a name twice, never resend the names of
/// an ambiguous create, and leave no journal row open; a deleted droplet counts toward
/// nothing while the listing still shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_listings_never_pass_max_nor_create_twice() {
    let h = start_with(
        2,
        Demand::Constant(6.0),
        &group(2, 4, ""),
        DEADLINE,
        |(sim, dir)| {
            sim.update_faults(|f| {
                f.list_lag = Duration::from_secs(2);
                f.create_succeeds_then_500 = 1;
            });
            let base = dir.join("do-scaler.toml");
            let text = std::fs::read_to_string(&base).unwrap();
            std::fs::write(
                &base,
                text.replace("listing_lag = \"0s\"", "listing_lag = \"3s\""),
            )
            .unwrap();
        },
    )
    .await;
    h.eventually_size(4).await;
    h.keeps_ticking(4).await;
    assert_eq!(h.sim.droplets().len(), 4, "at max, and no further");
    // Down again, with deletes lagging too.
    h.sim.set_demand(Demand::Constant(0.4));
    h.eventually_size(2).await;
    h.keeps_ticking(4).await;
    assert_eq!(h.sim.droplets().len(), 2, "at min, and no further");
    assert!(
        h.sim.api_counts()["POST /v2/droplets"] <= 3,
        "no blind resend: {:?}",
        h.sim.api_counts()
    );
    h.finish(2, 4).await;
}
