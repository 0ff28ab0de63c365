//! What the integration tests share: a group file, a configuration directory, a sim, and
//! running the binary. Each test crate uses a part of it.
#![allow(dead_code)]

pub mod postgres;

use do_scaler::clock::SystemClock;
use do_scaler::config::Overrides;
use do_scaler::daemon::run::{Daemon, prepare};
use do_scaler::daemon::{RunOptions, serve};
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The status API's POST token in every test configuration.
pub const API_TOKEN: &str = "status-secret";

/// A group `web` with one CPU rule, short cooldowns and no warmup.
pub const GROUP: &str = r#"tag = "web"
min = 1
max = 5
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[cooldown]
up = "3s"
down = "2s"
[stabilization]
down = "2s"
[scale_in]
min_age = "0s"
[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[3s]))'
target = 0.5
"#;

/// A configuration directory: base file (1 s interval), the status token, `conf.d/web.toml`.
pub fn config_dir(group: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        // The sim's listings are current unless a test gives it a lag.
        "interval = \"1s\"\nstate = \"state.db\"\nlisting_lag = \"0s\"\n[status_api]\ntoken_file = \"api-token\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("api-token"), API_TOKEN).unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::create_dir(dir.path().join("actions")).unwrap();
    std::fs::write(dir.path().join("conf.d/web.toml"), group).unwrap();
    dir
}

/// A sim with `droplets` managed droplets, port 22 open, no rate limit.
pub async fn sim(droplets: u32, demand: Demand, boot: Duration) -> Sim {
    Sim::start(SimOptions {
        seed_droplets: droplets,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports: vec![22],
        demand,
        boot_delay: boot,
        rate_limit: None,
        ..SimOptions::default()
    })
    .await
    .unwrap()
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the binary once against the sim, with a failpoint armed.
pub fn run_binary(
    dir: &Path,
    sim_url: &str,
    token: &str,
    failpoint: Option<&str>,
) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_do-scaler"));
    command
        .args(["run", "--once", "--config"])
        .arg(dir.join("do-scaler.toml"))
        .env("DIGITALOCEAN_API_URL", sim_url)
        .env("DIGITALOCEAN_TOKEN", token)
        .env_remove("DO_SCALER_FAILPOINT");
    if let Some(point) = failpoint {
        command.env("DO_SCALER_FAILPOINT", point);
    }
    command.output().unwrap()
}

/// A daemon prepared on `dir` against `sim`, with a 20 s action deadline.
pub async fn daemon(dir: &Path, sim: &Sim) -> Result<Arc<Daemon>, do_scaler::daemon::DaemonError> {
    daemon_with_deadline(dir, sim, Duration::from_secs(20)).await
}

/// A daemon prepared on `dir` against `sim`; each action run ends at `action_deadline`.
pub async fn daemon_with_deadline(
    dir: &Path,
    sim: &Sim,
    action_deadline: Duration,
) -> Result<Arc<Daemon>, do_scaler::daemon::DaemonError> {
    daemon_with_options(
        dir,
        sim,
        RunOptions {
            // Tests edit files with one write or rename: a short settle keeps them quick.
            settle: Duration::from_millis(300),
            ..RunOptions::new(action_deadline)
        },
    )
    .await
}

/// A daemon prepared on `dir` against `sim` with `options`.
pub async fn daemon_with_options(
    dir: &Path,
    sim: &Sim,
    options: RunOptions,
) -> Result<Arc<Daemon>, do_scaler::daemon::DaemonError> {
    let token = sim.token().to_string();
    prepare(
        dir.join("do-scaler.toml"),
        Overrides {
            api_url: Some(sim.api_url()),
            ..Overrides::default()
        },
        Arc::new(move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone())),
        Arc::new(SystemClock),
        options,
    )
    .await
}

/// The value of the first sample of `name` (with any labels) in a daemon's `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A daemon serving its status API on loopback.
pub struct Running {
    /// The status API's base URL.
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Serves `daemon` (group tasks, status API) until stopped.
pub async fn serve_daemon(daemon: Arc<Daemon>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve::serve(daemon, listener, async {
        let _ = stopped.await;
    }));
    Running { url, stop, task }
}

impl Running {
    /// Stops the daemon cleanly and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// GETs `url` as JSON.
pub async fn get(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Says that a test part is skipped because `what` is absent, with how to install it; under
/// CI (`CI` set, as `.ci/run` sets it) nothing may be skipped, so it fails instead.
pub fn skip_unless_ci(what: &str, install: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is absent under CI: .ci/run must install it ({install})"
    );
    eprintln!("SKIPPED: {what} is absent ({install}; .ci/run installs it)");
}
