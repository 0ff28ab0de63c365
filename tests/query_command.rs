//! `do-scaler query` as a user runs it, against capture files and against the sim's droplets.

use do_scaler::sim::{Demand, Sim, SimOptions};
use std::path::Path;
use std::process::Command;

fn query(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .arg("query")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_gauge_from_a_capture_prints_the_value_alone() {
    let (code, stdout, _) = query(&["node_load1", "--file", &fixture("do-agent-3.18.14.prom")]);
    assert_eq!((code, stdout.as_str()), (0, "1.45\n"));
}

#[test]
fn several_series_print_labels_and_values() {
    let (code, stdout, _) = query(&[
        "count by (mode) (node_cpu_seconds_total)",
        "--file",
        &fixture("do-agent-3.18.14.prom"),
    ]);
    assert_eq!(code, 0);
    assert!(stdout.lines().any(|l| l == "{mode=\"idle\"} 2"), "{stdout}");
}

#[test]
fn rates_over_two_captures_and_warming_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.prom");
    let second = dir.path().join("b.prom");
    std::fs::write(&first, "requests_total 100\n").unwrap();
    std::fs::write(&second, "requests_total 160\n").unwrap();
    let (first, second) = (first.display().to_string(), second.display().to_string());
    let (code, stdout, stderr) = query(&[
        "rate(requests_total[1m])",
        "--file",
        &first,
        "--file",
        &second,
        "--gap",
        "30s",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        (stdout.trim().parse::<f64>().unwrap() - 2.0).abs() < 1e-9,
        "{stdout}"
    );
    let (code, stdout, stderr) = query(&[
        "rate(requests_total[5m])",
        "--file",
        &first,
        "--file",
        &second,
        "--gap",
        "30s",
    ]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(stderr.contains("warming"), "{stderr}");
}

#[test]
fn a_malformed_capture_exits_1_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.prom");
    std::fs::write(&bad, "ok 1\nbroken{a=\"1\" 2\n").unwrap();
    let (code, _, stderr) = query(&["ok", "--file", &bad.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("bad.prom:2:14: expected `,` or `}`"),
        "{stderr}"
    );
}

#[test]
fn unsupported_promql_is_refused_by_name() {
    let (code, _, stderr) = query(&[
        "topk(2, node_load1)",
        "--file",
        &fixture("do-agent-3.18.14.prom"),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("topk"), "{stderr}");
}

#[tokio::test]
async fn cpu_utilisation_of_a_sim_droplet_matches_its_demand() {
    // 3 vCPUs of work over 4 droplets of 2 vCPUs: 37.5 % utilisation each.
    let sim = Sim::start(SimOptions {
        seed_droplets: 4,
        open_ports: Vec::new(),
        demand: Demand::Constant(3.0),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let address = sim.droplets()[0].private_ipv4().unwrap().to_string();
    let target = format!("http://{address}:9110/metrics");
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        query(&[
            r#"1 - avg(rate(node_cpu_seconds_total{mode="idle"}[3s]))"#,
            "--target",
            &target,
            "--gap",
            "1s",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let utilisation: f64 = stdout.trim().parse().unwrap();
    assert!((utilisation - 0.375).abs() < 0.05, "{utilisation}");
    assert!(
        stderr.contains("scrape 3/3"),
        "progress goes to stderr: {stderr}"
    );
}
