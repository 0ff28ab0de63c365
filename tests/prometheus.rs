//! A rule evaluated by a real Prometheus server (a `prometheus` source) against the same rule
//! evaluated by do-scaler from its own scrapes. In a test binary of its own, so no sibling test
//! loads the machine while both sides fill their windows: each side stamps a sample when its
//! scrape starts, and a load that changes during the window moves a rate by percents.

mod common;

use chrono::Utc;
use do_scaler::daemon::TickReport;
use do_scaler::sim::queue::QueueSettings;
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::time::{Duration, Instant};

fn rule<'a>(report: &'a TickReport, name: &str) -> &'a do_scaler::policy::RuleReport {
    report
        .decision
        .rules
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule {name}: {:#?}", report.decision))
}

/// A free loopback port (bound, then released for the server about to start).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server from Debian's package, on loopback, with a temporary configuration;
/// stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// `None` (with the reason printed) where the binary is absent; CI installs it.
    fn start(scrape_configs: &str) -> Option<Prometheus> {
        let binary = std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into());
        if !std::path::Path::new(&binary).exists() {
            common::skip_unless_ci(&binary, "apt-get install prometheus");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{scrape_configs}"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Some(Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        })
    }

    /// The value of an instant query now, if it has one.
    async fn query(&self, query: &str) -> Option<f64> {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

/// The same rules evaluated by a real Prometheus server (a `prometheus` source) and by
/// do-scaler from its own scrapes of the same droplets and queue agree within 1 %, and the
/// server's per-droplet answer marks the right droplets busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_and_local_evaluation_agree_within_one_percent() {
    use do_scaler::config::AddressKind;
    use do_scaler::config::ApiToken;
    use do_scaler::digitalocean::{Client, ClientOptions};
    use do_scaler::metrics::scrape::{Scraper, address_of};
    // Three 2-vCPU droplets, one 1-vCPU job each (half their CPU), and seven builds waiting.
    let sim = Sim::start(SimOptions {
        seed_droplets: 3,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports: Vec::new(),
        demand: Demand::Series(vec![
            (Duration::ZERO, 1.0),
            (Duration::from_secs(10), 1.0),
            (Duration::from_secs(11), 0.0),
        ]),
        rate_limit: None,
        queue: Some(QueueSettings {
            job_seconds: 100_000.0,
            concurrency: 1,
        }),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let droplets = sim.droplets();
    let targets: Vec<String> = droplets
        .iter()
        .map(|d| format!("'{}:9110'", address_of(d, AddressKind::Private).unwrap()))
        .collect();
    let api = sim.api_url();
    let api_host = api.trim_start_matches("http://");
    let Some(prometheus) = Prometheus::start(&format!(
        "  - job_name: droplets\n    static_configs:\n      - targets: [{}]\n  - job_name: drone\n    metrics_path: /drone/metrics\n    static_configs:\n      - targets: ['{api_host}']\n",
        targets.join(", ")
    )) else {
        return;
    };
    let group_text = format!(
        r#"tag = "web"
min = 1
max = 20
interval = "1s"
tick_timeout = "900ms"
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"

[[source]]
name = "drone"
kind = "target"
urls = ["{api}/drone/metrics"]

[[source]]
name = "prometheus"
kind = "prometheus"
url = "{url}"
timeout = "400ms"

[[rule]]
name = "cpu-local"
expr = '1 - avg(rate(node_cpu_seconds_total{{mode="idle"}}[30s]))'
target = 0.5

[[rule]]
name = "cpu-remote"
source = "prometheus"
expr = '1 - avg(rate(node_cpu_seconds_total{{mode="idle"}}[30s]))'
target = 0.5

[[rule]]
name = "builds-local"
source = "drone"
desired = 'drone_pending_builds + drone_running_builds'

[[rule]]
name = "builds-remote"
source = "prometheus"
desired = 'drone_pending_builds + drone_running_builds'

[scale_in]
source = "prometheus"
busy = 'sim_jobs_running > 0'
"#,
        url = prometheus.url
    );
    let group = do_scaler::config::group_from_toml("web", &group_text).unwrap();
    let mut runtime =
        do_scaler::daemon::GroupRuntime::new(group, "do-scaler:default".into()).unwrap();
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.rate_limits = None;
    let client = Client::new(options).unwrap();
    let scraper = Scraper::new(8, 1 << 20).unwrap();
    let mut memory = Default::default();
    // Both sides scrape once a second and compare 30 s windows that start 20 s in, after the
    // start-up load (Prometheus's own start, the first scrapes): each side stamps a sample
    // when its scrape starts, not when the sim reads the counter, and a lag that shrinks
    // across a window moved a 30 s rate by 6 % on a loaded 2-core runner. The wait is for an
    // external server's scrapes, polled with a bound, not a schedule of ours.
    let started = Instant::now();
    let mut agreed = None;
    while started.elapsed() < Duration::from_secs(95) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = runtime
            .tick(
                &client,
                &scraper,
                &mut memory,
                &Default::default(),
                Utc::now(),
            )
            .await
            .unwrap();
        if started.elapsed() < Duration::from_secs(50) {
            continue;
        }
        let value = |name: &str| rule(&report, name).value.parse::<f64>().ok();
        if let (Some(local), Some(remote)) = (value("cpu-local"), value("cpu-remote")) {
            agreed = Some((report, local, remote));
            break;
        }
    }
    let Some((report, local, remote)) = agreed else {
        let up = prometheus.query("count(up == 1)").await;
        panic!("no value from both sides within 95 s (Prometheus targets up: {up:?})");
    };
    eprintln!("cpu: local {local}, Prometheus {remote}");
    assert!(
        (local - 0.5).abs() < 0.01,
        "half of each droplet's CPU: {local}"
    );
    assert!(
        (local - remote).abs() <= 0.01 * local,
        "local {local} and Prometheus {remote} differ by more than 1 %"
    );
    let builds_local = rule(&report, "builds-local").proposal;
    let builds_remote = rule(&report, "builds-remote").proposal;
    assert_eq!(builds_local, Some(10), "{report:#?}");
    assert_eq!(builds_local, builds_remote, "{:#?}", report.decision);
    // The server's answer names each droplet by the instance it scraped: all three run a job.
    let busy = report
        .droplets
        .iter()
        .filter(|d| matches!(d.work, do_scaler::policy::Work::Busy))
        .count();
    assert_eq!(busy, 3, "{:#?}", report.droplets);
    let server = report
        .sources
        .iter()
        .find(|s| s.name == "prometheus")
        .unwrap();
    assert!(server.answered.starts_with("3 of 3"), "{server:?}");
    drop(prometheus);
}
