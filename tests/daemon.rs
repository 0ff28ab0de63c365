//! The daemon against the in-process sim, on real time with short intervals.

use do_scaler::daemon::serve;
use do_scaler::sim::{Demand, Sim};

mod common;
use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_scales_up_under_demand_and_back_down_after_it() {
    // 3.2 vCPUs of work on one 2-vCPU droplet (160 %), then almost none from 12 s on.
    let sim = sim(
        1,
        Demand::Step {
            before: 3.2,
            after: 0.2,
            at: Duration::from_secs(12),
        },
        Duration::from_millis(500),
    )
    .await;
    let dir = config_dir(GROUP);
    let running = serve_daemon(daemon(dir.path(), &sim).await.unwrap()).await;
    let mut sizes: Vec<(Instant, usize)> = vec![(Instant::now(), 1)];
    let mut record = |sim: &Sim| {
        let size = sim.droplets().len();
        if sizes.last().map(|s| s.1) != Some(size) {
            sizes.push((Instant::now(), size));
        }
        sizes.clone()
    };
    eventually(Duration::from_secs(15), "a scale-up", || {
        record(&sim).iter().any(|s| s.1 >= 3)
    })
    .await;
    eventually(Duration::from_secs(25), "the scale-down", || {
        record(&sim).last().unwrap().1 == 1
    })
    .await;
    let sizes = record(&sim);
    for pair in sizes.windows(2) {
        if pair[1].1 > pair[0].1 && pair[0].0 != sizes[0].0 {
            // Two increases in a row are at least the up cooldown apart.
            assert!(
                pair[1].0 - pair[0].0 >= Duration::from_millis(2900),
                "{sizes:?}"
            );
        }
    }
    let group = get(&format!("{}/api/v1/groups/web", running.url)).await;
    assert!(group["ticks"].as_u64().unwrap() >= 10, "{group}");
    let decisions = get(&format!(
        "{}/api/v1/groups/web/decisions?limit=5",
        running.url
    ))
    .await;
    assert_eq!(decisions["decisions"].as_array().unwrap().len(), 5);
    let metrics = reqwest::get(format!("{}/metrics", running.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "do_scaler_build_info",
        "do_scaler_ticks_total",
        "do_scaler_desired_size",
        "do_scaler_digitalocean_api_calls_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_action_does_not_stop_the_ticks_and_no_second_run_starts() {
    let sim = sim(1, Demand::Constant(3.2), Duration::from_millis(500)).await;
    // The up actions only wait: the decision keeps asking for more while they run.
    let group = format!("{GROUP}\n[actions]\nup = [\"slow_check\"]\n");
    let dir = config_dir(&group);
    std::fs::write(dir.path().join("actions/slow_check.rhai"), "sleep(3500);").unwrap();
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    eventually(Duration::from_secs(10), "the action to start", || {
        daemon
            .group_status("web")
            .is_some_and(|s| s.running_action.is_some())
    })
    .await;
    let ticks_at_start = daemon.group_status("web").unwrap().ticks;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let status = daemon.group_status("web").unwrap();
    assert!(
        status.ticks >= ticks_at_start + 3,
        "ticks went on during the run: {} → {}",
        ticks_at_start,
        status.ticks
    );
    assert!(status.running_action.is_some(), "still the first run");
    let metrics = daemon.metrics.render();
    // The action's counters exist from the start, at 0 until a run ends.
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("action=\"slow_check\""))
        .collect();
    assert!(!counted.is_empty(), "{metrics}");
    assert!(
        counted.iter().all(|l| l.ends_with(" 0")),
        "no run has finished yet, so none was counted twice: {counted:?}"
    );
    eventually(Duration::from_secs(5), "the run to end", || {
        daemon
            .group_status("web")
            .is_some_and(|s| s.last_action.is_some())
    })
    .await;
    let runs: u64 = daemon
        .metrics
        .render()
        .lines()
        .filter(|l| l.contains("action=\"slow_check\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        runs <= 2,
        "{runs} runs in about four seconds: one at a time"
    );
    running.stop().await;
}

async fn generation(url: &str) -> u64 {
    get(&format!("{url}/api/v1/groups/web")).await["generation"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_of_a_group_file_reload_once_each_and_broken_ones_keep_the_old_rules() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(500)).await;
    let dir = config_dir(GROUP);
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let file = dir.path().join("conf.d/web.toml");
    let mut expected = generation(&running.url).await;
    for edit in 0..20u32 {
        let max = 6 + edit;
        let text = GROUP.replace("max = 5", &format!("max = {max}"));
        let broken = edit % 5 == 4;
        match edit % 4 {
            // Written in place.
            0 => std::fs::write(
                &file,
                if broken {
                    &text[..text.len() / 3]
                } else {
                    &text
                },
            )
            .unwrap(),
            // An editor's save: a new file renamed over the old one.
            1 | 2 => {
                let temp = dir.path().join("conf.d/.web.toml.swp");
                std::fs::write(
                    &temp,
                    if broken {
                        "tag = \"web\"\nmin = = 1\n"
                    } else {
                        &text
                    },
                )
                .unwrap();
                std::fs::rename(&temp, &file).unwrap();
            }
            // `mv` of a file from elsewhere.
            _ => {
                let outside = dir.path().join(format!("web-{edit}.toml.new"));
                std::fs::write(&outside, if broken { "tag = 7\n" } else { &text }).unwrap();
                std::fs::rename(&outside, &file).unwrap();
            }
        }
        if broken {
            eventually(
                Duration::from_secs(3),
                "the broken edit to be reported",
                || daemon.reload_error.lock().unwrap().is_some(),
            )
            .await;
            let group = get(&format!("{}/api/v1/groups/web", running.url)).await;
            assert!(
                group["reload_error"].as_str().unwrap().contains("web.toml"),
                "{group}"
            );
            assert_eq!(
                group["generation"].as_u64().unwrap(),
                expected,
                "the old generation keeps running"
            );
            assert!(
                daemon
                    .metrics
                    .render()
                    .contains("do_scaler_config_last_reload_success 0")
            );
            assert_eq!(
                daemon.generation().config.groups[0].max,
                max - 1,
                "the old rules keep running"
            );
        } else {
            expected += 1;
            let url = running.url.clone();
            let started = Instant::now();
            while generation(&url).await != expected {
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "edit {edit} was not live within 3 s (reload error: {:?})",
                    daemon.reload_error.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(daemon.generation().config.groups[0].max, max);
            assert!(
                daemon
                    .metrics
                    .render()
                    .contains("do_scaler_config_last_reload_success 1")
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        generation(&running.url).await,
        expected,
        "one generation per valid change, no more"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_needs_the_token_and_survives_a_restart_and_one_writer_per_state() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(500)).await;
    let dir = config_dir(GROUP);
    let first = daemon(dir.path(), &sim).await.unwrap();
    let second = daemon(dir.path(), &sim).await;
    assert!(
        second
            .err()
            .unwrap()
            .to_string()
            .contains("in use by another do-scaler")
    );
    let running = serve_daemon(first).await;
    let http = reqwest::Client::new();
    let pause = format!("{}/api/v1/groups/web/pause", running.url);
    assert_eq!(http.post(&pause).send().await.unwrap().status(), 401);
    assert_eq!(
        http.post(&pause)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.post(&pause)
            .bearer_auth(sim.token())
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "the DigitalOcean token is not the status token"
    );
    assert_eq!(
        http.post(&pause)
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The scheme is case-insensitive; another scheme is not the token.
    let resume = format!("{}/api/v1/groups/web/resume", running.url);
    for (header, status) in [
        (format!("Basic {API_TOKEN}"), 401),
        (format!("bearer {API_TOKEN}"), 200),
        (format!("BEARER  {API_TOKEN} "), 200),
    ] {
        let answer = http
            .post(&resume)
            .header("authorization", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{header}");
    }
    assert_eq!(
        http.post(&pause)
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    running.stop().await;
    let restarted = serve_daemon(daemon(dir.path(), &sim).await.unwrap()).await;
    let group = get(&format!("{}/api/v1/groups/web", restarted.url)).await;
    assert_eq!(group["paused"], true, "{group}");
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_twice_on_an_empty_group_brings_it_to_min_then_adds_nothing() {
    let sim = sim(0, Demand::Constant(1.0), Duration::from_secs(3600)).await;
    let dir = config_dir(&GROUP.replace("min = 1", "min = 2"));
    let mut lines = Vec::new();
    for _ in 0..2 {
        let daemon = daemon(dir.path(), &sim).await.unwrap();
        let results = serve::run_once(&daemon).await;
        assert!(results.iter().all(|r| !r.failed), "{results:?}");
        lines.extend(results.into_iter().map(|r| r.line));
    }
    // One line per group and run: the decision, and what its actions did.
    assert!(
        lines[0].starts_with("web: scale up from 0 to 2")
            && lines[0].ends_with("digitalocean_create_droplet: ok"),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("web: stay at 2"), "{lines:?}");
    assert_eq!(sim.droplets().len(), 2);
    assert_eq!(sim.created_names().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_keeps_the_sample_history_so_rates_work_across_invocations() {
    let sim = sim(2, Demand::Constant(1.0), Duration::from_millis(500)).await;
    let dir = config_dir(&GROUP.replace("[3s]", "[2s]"));
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        let daemon = daemon(dir.path(), &sim).await.unwrap();
        assert!(serve::run_once(&daemon).await.iter().all(|r| !r.failed));
    }
    let store = do_scaler::state::Store::open(&dir.path().join("state.db")).unwrap();
    let decisions = store.decisions("web", 2).unwrap();
    // In JSON a rule's value is a number, or null when missing.
    let value = |d: &serde_json::Value| d["rules"][0]["value"].clone();
    assert_eq!(
        value(&decisions[1]),
        serde_json::Value::Null,
        "the first invocation has one sample"
    );
    assert!(
        value(&decisions[0]).is_number(),
        "the second sees the first's samples: {}",
        decisions[0]
    );
}

/// Trust at the edges (2): an action run reports when it ends, not at the next tick, and a
/// panic inside it ends it as failed (the status never stays "running").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_run_reports_when_it_ends_and_a_panic_ends_it_as_failed() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    // A 20 s interval: whatever changes within a few seconds of the run's end was not the
    // next tick's doing. `min = 2` makes the first tick scale up.
    let group =
        GROUP.replace("min = 1", "min = 2\ninterval = \"20s\"") + "\n[actions]\nup = [\"boom\"]\n";
    let dir = config_dir(&group);
    std::fs::write(
        dir.path().join("actions/boom.rhai"),
        "sleep(500); __panic_for_tests();\n",
    )
    .unwrap();
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let url = format!("{}/api/v1/groups/web", running.url);
    eventually(Duration::from_secs(5), "the run to start", || {
        daemon
            .group_status("web")
            .is_some_and(|s| s.running_action.is_some())
    })
    .await;
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(5), "the run to end", || {
        daemon
            .group_status("web")
            .is_some_and(|s| s.running_action.is_none())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "before the next tick"
    );
    let status = get(&url).await;
    let last = status["last_action"].as_str().unwrap();
    assert!(last.contains("failed"), "{last}");
    let metrics = daemon.metrics.render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("do_scaler_actions_total")
                && l.contains("result=\"failed\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(status["ticks"], 1, "still the first tick");
    running.stop().await;
}

/// Trust at the edges (2): `/readyz` waits for a successful tick, not just any tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_a_successful_tick() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(GROUP);
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    // Every answer fails from the first tick on.
    sim.update_faults(|f| f.error_rate = 1.0);
    let running = serve_daemon(daemon.clone()).await;
    eventually(Duration::from_secs(30), "a failed tick", || {
        daemon
            .group_status("web")
            .is_some_and(|s| s.ticks > 0 && s.last_error.is_some())
    })
    .await;
    let ready = reqwest::get(format!("{}/readyz", running.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "a failed tick is not ready");
    sim.update_faults(|f| f.error_rate = 0.0);
    eventually(Duration::from_secs(30), "a successful tick", || {
        daemon
            .group_status("web")
            .is_some_and(|s| s.last_success.is_some())
    })
    .await;
    let ready = reqwest::get(format!("{}/readyz", running.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    running.stop().await;
}

/// Trust at the edges (2): two daemons with one instance on one group (separate state files)
/// notice each other from the droplets they did not make, stop acting, and say why in the
/// status API and a metric, until an operator resumes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_with_one_instance_stop_acting_and_say_why() {
    let sim = sim(2, Demand::Constant(6.0), Duration::from_millis(300)).await;
    let group = GROUP.replace("min = 1\nmax = 5", "min = 2\nmax = 4");
    let (dir_a, dir_b) = (config_dir(&group), config_dir(&group));
    let a = daemon(dir_a.path(), &sim).await.unwrap();
    let b = daemon(dir_b.path(), &sim).await.unwrap();
    let (running_a, running_b) = (serve_daemon(a.clone()).await, serve_daemon(b.clone()).await);
    for (name, daemon) in [("a", &a), ("b", &b)] {
        eventually(
            Duration::from_secs(20),
            &format!("daemon {name} to stop acting"),
            || daemon.store.pause_reason("web").is_some(),
        )
        .await;
    }
    let status = get(&format!("{}/api/v1/groups/web", running_a.url)).await;
    assert_eq!(status["paused"], true);
    assert!(
        status["pause_reason"]
            .as_str()
            .unwrap()
            .contains("another daemon with the same instance"),
        "{status:#}"
    );
    assert!(
        a.metrics
            .render()
            .contains("do_scaler_instance_conflict{group=\"web\"} 1")
    );
    // Paused: nothing more is created, however busy the group.
    let made = sim.created_names().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.created_names().len(), made);
    running_a.stop().await;
    running_b.stop().await;
}

/// Trust at the edges (2): `run --once` from cron, when nothing changes, costs one listing and
/// nothing else (no preflight), and `--dry-run` writes nothing to DigitalOcean, not even a tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_lists_and_nothing_else_and_a_dry_run_writes_nothing() {
    let sim = sim(2, Demand::Constant(2.0), Duration::from_millis(300)).await;
    let dir = config_dir(&GROUP.replace("min = 1", "min = 2"));
    for extra in [None, Some("--dry-run")] {
        let before = sim.api_counts();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_do-scaler"));
        command
            .args(["run", "--once", "--config"])
            .arg(dir.path().join("do-scaler.toml"))
            .args(extra)
            .env("DIGITALOCEAN_API_URL", sim.api_url())
            .env("DIGITALOCEAN_TOKEN", sim.token());
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let after = sim.api_counts();
        let mut spent: Vec<(String, u64)> = after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        spent.sort();
        assert_eq!(
            spent,
            vec![("GET /v2/droplets".to_string(), 1)],
            "{extra:?}: one listing and nothing else"
        );
    }
}

/// The decision log of an unknown group is a 404, and a bad `limit` a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_of_an_unknown_group_are_404_and_a_bad_limit_400() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(GROUP);
    let running = serve_daemon(daemon(dir.path(), &sim).await.unwrap()).await;
    for (path, status) in [
        ("/api/v1/groups/nope/decisions", 404),
        ("/api/v1/groups/web/decisions?limit=abc", 400),
        ("/api/v1/groups/web/decisions?limit=5", 200),
    ] {
        let answer = reqwest::get(format!("{}{path}", running.url))
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{path}");
    }
    running.stop().await;
}
