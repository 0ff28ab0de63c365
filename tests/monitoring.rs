//! Monitoring that validates: `/metrics` passes `promtool check metrics` in the text format and
//! is OpenMetrics when asked for it; every counter of a group exists at 0 from the start; and
//! every metric the shipped Grafana dashboard and alert rules name is one the daemon exports.

mod common;

use common::{GROUP, config_dir, daemon, eventually, serve_daemon, sim};
use do_scaler::sim::Demand;
use std::collections::BTreeSet;
use std::time::Duration;

const DASHBOARD: &str = include_str!("../packaging/grafana/do-scaler.json");
const RULES: &str = include_str!("../packaging/prometheus/do-scaler.rules.yml");

async fn fetch(url: &str, accept: Option<&str>) -> (String, String) {
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    (content_type, response.text().await.unwrap())
}

/// The sample names of an exposition (`do_scaler_ticks_total`, `…_bucket`, …).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_validate_start_at_zero_and_cover_the_dashboard_and_alerts() {
    let sim = sim(2, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(GROUP);
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;

    // At once, before any failure: every counter a rate() or an alert reads is there at 0.
    let (_, text) = fetch(&running.url, None).await;
    for (name, labels) in [
        (
            "do_scaler_ticks_total",
            &["group=\"web\"", "result=\"failed\""][..],
        ),
        ("do_scaler_ticks_skipped_total", &["group=\"web\""][..]),
        (
            "do_scaler_replacements_total",
            &["group=\"web\"", "result=\"failed\""][..],
        ),
        (
            "do_scaler_scrape_failures_total",
            &["group=\"web\"", "reason=\"timeout\""][..],
        ),
        (
            "do_scaler_decisions_total",
            &["group=\"web\"", "direction=\"up\""][..],
        ),
        (
            "do_scaler_actions_total",
            &[
                "group=\"web\"",
                "action=\"digitalocean_create_droplet\"",
                "result=\"failed\"",
            ][..],
        ),
    ] {
        assert_eq!(
            value(&text, name, labels),
            Some(0.0),
            "{name} {labels:?}:\n{text}"
        );
    }

    // After a few ticks the API calls are a counter, named with _total.
    eventually(Duration::from_secs(20), "three ticks", || {
        daemon.group_status("web").is_some_and(|s| s.ticks >= 3)
    })
    .await;
    let (content_type, text) = fetch(&running.url, None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(text.contains("# TYPE do_scaler_digitalocean_api_calls_total counter"));
    assert!(
        value(
            &text,
            "do_scaler_digitalocean_api_calls_total",
            &["method=\"GET\""]
        )
        .is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        !text.contains("do_scaler_digitalocean_api_calls{"),
        "the old name is gone"
    );
    assert!(!text.contains("# EOF"));

    // OpenMetrics when asked for it.
    let (content_type, open) = fetch(
        &running.url,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(open.ends_with("# EOF\n"));
    assert_eq!(sample_names(&open), sample_names(&text));

    // promtool: HELP for every family, names and types as Prometheus reads them.
    match std::process::Command::new("promtool")
        .arg("--version")
        .output()
    {
        Ok(_) => {
            let mut child = std::process::Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "promtool check metrics:\n{}{}\n{text}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Err(_) => common::skip_unless_ci(
            "promtool (for promtool check metrics)",
            "apt-get install prometheus",
        ),
    }

    // Every do_scaler_ metric the dashboard and the alert rules read is exported (`up`, in
    // the DoScalerDown alert, is Prometheus's own).
    let exported = sample_names(&text);
    let named = regex::Regex::new(r"do_scaler_[a-z_]+").unwrap();
    let mut read: BTreeSet<String> = BTreeSet::new();
    for text in [DASHBOARD, RULES] {
        read.extend(named.find_iter(text).map(|m| m.as_str().to_string()));
    }
    assert!(read.len() > 10, "{read:?}");
    let missing: Vec<&String> = read.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");
    running.stop().await;
}
