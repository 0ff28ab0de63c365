//! Recording what a group's ticks observe: `do-scaler record` writes a file that reads back
//! with the listing, the series the rules read and the decisions, and never acts; a daemon with
//! `[record]` writes one file per hour, and deletes what `keep` and `max_size` no longer allow.

use do_scaler::clock::ManualClock;
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::*;
#[path = "common/manual.rs"]
mod manual;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_writes_what_each_tick_saw_and_never_acts() {
    // A rule wants more than the three droplets there are: a daemon would create.
    let sim = sim(3, Demand::Constant(0.5), Duration::ZERO).await;
    let group = format!("{GROUP}[[rule]]\nname = \"wanted\"\ndesired = '5'\n");
    let dir = config_dir(&group);
    let out = dir.path().join("web.rec.gz");
    let sim_url = sim.api_url();
    let token = sim.token().to_string();
    let (config, file) = (dir.path().join("do-scaler.toml"), out.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_do-scaler"))
            .args(["record", "web", "--duration", "4s", "--out"])
            .arg(&file)
            .arg("--config")
            .arg(&config)
            .env("DIGITALOCEAN_API_URL", sim_url)
            .env("DIGITALOCEAN_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("recorded "), "{stdout}");
    assert!(sim.created_names().is_empty(), "record never acts");
    let recording = do_scaler::record::read(&out).unwrap();
    assert_eq!(recording.header.group, "web");
    assert_eq!(recording.header.group_file, group);
    assert!(!recording.truncated);
    assert!(
        recording.ticks.len() >= 3,
        "{} ticks",
        recording.ticks.len()
    );
    for tick in &recording.ticks {
        assert_eq!(tick.listing.len(), 3, "every tick has the listing");
        assert_eq!(tick.decision.current, 3);
        // Only the series the rule reads: the idle CPU seconds of each droplet.
        assert!(tick.points.iter().all(|(_, labels, _, _)| {
            labels.get("__name__") == "node_cpu_seconds_total" && labels.get("mode") == "idle"
        }));
    }
    assert!(
        recording.ticks.iter().any(|t| !t.points.is_empty()),
        "points were recorded"
    );
    let last = recording.ticks.last().unwrap();
    assert_eq!(
        last.decision.desired, 5,
        "the decision it saw: {:?}",
        last.decision
    );
    assert_eq!(last.decision.winner.as_deref(), Some("wanted"));
    // Run again onto the same file: refused, and the recording kept.
    let size = std::fs::metadata(&out).unwrap().len();
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args(["record", "web", "--duration", "1s", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(dir.path().join("do-scaler.toml"))
        .env("DIGITALOCEAN_API_URL", sim.api_url())
        .env("DIGITALOCEAN_TOKEN", sim.token())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
}

#[tokio::test]
async fn a_daemon_records_one_file_an_hour_and_keeps_what_keep_allows() {
    let clock = ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-12-03T10:59:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc),
    );
    let sim = Sim::start(SimOptions {
        seed_droplets: 2,
        seed_managed_tag: Some("do-scaler:default".into()),
        rate_limit: None,
        clock: Arc::new(clock.clone()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let dir = config_dir(&GROUP.replace("max = 5", "max = 2"));
    let base = std::fs::read_to_string(dir.path().join("do-scaler.toml")).unwrap();
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        base.replace(
            "[status_api]",
            "[record]\ndir = \"recordings\"\nkeep = \"1h\"\nmax_size = \"10MB\"\n[status_api]",
        ),
    )
    .unwrap();
    let (_daemon, mut task, _status) =
        manual::start(dir.path(), &sim, &clock, Duration::from_secs(20)).await;
    let folder = dir.path().join("recordings/web");
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    // Two ticks in the 10:00 hour, then the hour turns.
    for _ in 0..4 {
        manual::tick(&mut task, &sim, &clock, Duration::from_secs(5)).await;
    }
    assert_eq!(files(), ["2026-12-03T10.rec.gz", "2026-12-03T11.rec.gz"]);
    let first = do_scaler::record::read(&folder.join("2026-12-03T10.rec.gz")).unwrap();
    assert!(!first.truncated, "a turned hour's file is finished");
    assert_eq!(first.ticks.len(), 2);
    assert_eq!(first.ticks[0].listing.len(), 2);
    // At 12:50 the 10:00 hour ended more than `keep` ago and goes; the 11:00 one stays.
    clock.advance(Duration::from_secs(6_600));
    manual::tick(&mut task, &sim, &clock, Duration::from_secs(5)).await;
    assert_eq!(files(), ["2026-12-03T11.rec.gz", "2026-12-03T12.rec.gz"]);
    // The file being written reads back up to its last tick.
    let current = do_scaler::record::read(&folder.join("2026-12-03T12.rec.gz")).unwrap();
    assert_eq!(current.ticks.len(), 1);
}

#[test]
fn a_bad_record_table_is_refused_with_its_place_and_the_defaults_are_the_readmes() {
    let dir = config_dir(GROUP);
    let base = dir.path().join("do-scaler.toml");
    let text = std::fs::read_to_string(&base).unwrap();
    std::fs::write(&base, format!("{text}[record]\ndir = \"r\"\n")).unwrap();
    let loaded = do_scaler::config::load(&base, &do_scaler::config::Overrides::default()).unwrap();
    let record = loaded.config.base.record.unwrap();
    assert_eq!(record.dir, dir.path().join("r"));
    assert_eq!(record.keep, Duration::from_secs(7 * 86_400), "\"7d\"");
    assert_eq!(
        Ok(record.max_size),
        do_scaler::config::load::parse_size("1GB"),
        "\"1GB\""
    );
    std::fs::write(
        &base,
        format!("{text}[record]\ndir = \"r\"\nmax_size = \"lots\"\n"),
    )
    .unwrap();
    let error = do_scaler::config::load(&base, &do_scaler::config::Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("record.max_size"), "{error}");
    assert!(
        error.contains("do-scaler.toml:"),
        "names the place: {error}"
    );
}
