//! `do-scaler demo` as a newcomer runs it (with a shorter curve): it scales up and down,
//! prints one line per decision and a summary, and leaves the chart where it says.

use std::process::Command;

#[test]
fn the_demo_scales_up_and_down_and_draws_its_chart() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args([
            "demo",
            "--duration",
            "40s",
            "--curve",
            "step:7:1:12s",
            "--out",
        ])
        .arg(out.path())
        .env_remove("DIGITALOCEAN_TOKEN")
        .env_remove("DIGITALOCEAN_API_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.lines().any(|l| l.contains("scale up from")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.contains("scale down from")),
        "{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:") && l.contains("scale-up"))
        .unwrap();
    assert!(!summary.contains(" 0 scale"), "{summary}");
    let chart = stdout
        .lines()
        .find_map(|l| l.strip_prefix("chart: "))
        .unwrap();
    let svg = std::fs::read_to_string(chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline"),
        "a chart with lines"
    );
    // Desired and actual told apart, the CPU the rules saw on its own axis, scale events marked.
    for label in [
        "desired",
        "actual (active + booting)",
        "CPU the rules saw (right axis)",
        "scale event",
    ] {
        assert!(svg.contains(label), "the chart's legend lacks {label}");
    }
    assert!(
        out.path().join("conf.d/web.toml").exists(),
        "the demo's configuration is written beside it"
    );
}

/// The queue scenario: agents bought from zero for a burst of jobs, every job run, no busy
/// agent destroyed, and the group empty again once the queue is.
#[test]
fn the_queue_demo_runs_every_job_and_empties_the_group() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args([
            "demo",
            "--scenario",
            "queue",
            "--duration",
            "50s",
            "--curve",
            "step:1.2:0:12s",
            "--out",
        ])
        .arg(out.path())
        .env_remove("DIGITALOCEAN_TOKEN")
        .env_remove("DIGITALOCEAN_API_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.lines().any(|l| l.contains("scale up from 0")),
        "{stdout}"
    );
    let jobs = stdout
        .lines()
        .find(|l| l.starts_with("summary:") && l.contains("arrived"))
        .unwrap();
    let numbers: Vec<u64> = jobs
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(numbers[0] >= 10, "a burst of jobs arrived: {jobs}");
    assert_eq!(numbers[0], numbers[1], "every job ran to the end: {jobs}");
    assert!(
        stdout.contains("summary: 0 job(s) lost to a destroyed busy agent (0 busy agent(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("emptied 1 time(s)"), "{stdout}");
    assert!(out.path().join("conf.d/agents.toml").exists());
}

/// Issue 22: `demo --speed 10` runs its sim and daemon ten times faster than real time: two
/// simulated minutes in well under two real ones, scaling up and down as at real time.
#[test]
fn the_demo_at_speed_runs_in_simulated_time() {
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args([
            "demo",
            "--speed",
            "10",
            "--duration",
            "120s",
            "--curve",
            "step:7:1:40s",
            "--out",
        ])
        .arg(out.path())
        .env_remove("DIGITALOCEAN_TOKEN")
        .env_remove("DIGITALOCEAN_API_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(100),
        "two simulated minutes at 10x took {:?}",
        started.elapsed()
    );
    assert!(stdout.contains("scale up from"), "{stdout}");
    assert!(stdout.contains("scale down from"), "{stdout}");
    // The times printed are the demo's own: the last decision is late in its two minutes.
    let last = stdout
        .lines()
        .filter_map(|l| l.trim_start().split_once("s  "))
        .filter_map(|(t, _)| t.trim().parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(last > 90.0, "{stdout}");
    let zero = std::process::Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args(["demo", "--speed", "0", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("speed 0"));
}
