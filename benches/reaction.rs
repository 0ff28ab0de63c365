//! Reaction time and API economy, against the sim in this process.
//!
//! Reaction: the daemon ticks every 5 s on four droplets at 25 % CPU; at a random moment the
//! sim's demand steps to 90 %. The figure is the time from the step to the moment the first
//! create request reaches the sim, for a rule on `irate` (reacts on the next scrape) and for
//! the example's `rate[2m]` rule (whose window averages the step in slowly). Trials run side
//! by side, each with its own sim and daemon.
//!
//! Economy: a scale-up of 25 droplets from an empty group (`min = 25`, `run --once`): the API
//! calls it made, by endpoint.
//!
//! Run: `cargo bench --bench reaction`.

use do_scaler::clock::SystemClock;
use do_scaler::config::Overrides;
use do_scaler::daemon::run::prepare;
use do_scaler::daemon::{RunOptions, serve};
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(5);

const TEMPLATE: &str = r#"tag = "web"
min = 1
max = 50
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
"#;

fn write_config(dir: &Path, group: &str) {
    std::fs::write(
        dir.join("do-scaler.toml"),
        "interval = \"5s\"\nstate = \"state.db\"\n",
    )
    .expect("write the base file");
    std::fs::create_dir_all(dir.join("conf.d")).expect("conf.d");
    std::fs::write(dir.join("conf.d/web.toml"), group).expect("write the group file");
}

async fn start_sim(droplets: u32, demand: Demand) -> Sim {
    Sim::start(SimOptions {
        seed_droplets: droplets,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports: Vec::new(),
        demand,
        rate_limit: None,
        boot_delay: Duration::from_secs(5),
        ..SimOptions::default()
    })
    .await
    .expect("the sim starts")
}

async fn start_daemon(dir: &Path, sim: &Sim) -> Arc<do_scaler::daemon::Daemon> {
    let token = sim.token().to_string();
    prepare(
        dir.join("do-scaler.toml"),
        Overrides {
            api_url: Some(sim.api_url()),
            ..Overrides::default()
        },
        Arc::new(move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone())),
        Arc::new(SystemClock),
        RunOptions::new(Duration::from_secs(30)),
    )
    .await
    .expect("the daemon starts")
}

/// One trial: seconds from the demand step to the first create reaching the sim.
async fn reaction(expr: &'static str, warm: Duration) -> f64 {
    let step = warm + Duration::from_millis(fastrand::u64(0..INTERVAL.as_millis() as u64));
    let sim = start_sim(
        4,
        Demand::Step {
            before: 2.0,
            after: 7.2,
            at: step,
        },
    )
    .await;
    let stepped_at = Instant::now() + step;
    let dir = tempfile::tempdir().expect("temporary folder");
    write_config(
        dir.path(),
        &format!("{TEMPLATE}[[rule]]\nname = \"cpu\"\nexpr = '{expr}'\ntarget = 0.6\n"),
    );
    let daemon = start_daemon(dir.path(), &sim).await;
    daemon.start_groups();
    let limit = step + Duration::from_secs(300);
    let created_at = loop {
        if !sim.created_names().is_empty() {
            break Instant::now();
        }
        assert!(
            Instant::now() < stepped_at + limit,
            "no scale-up within {limit:?} for `{expr}`"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    daemon.stop().await;
    assert!(
        created_at > stepped_at,
        "a create before the step: `{expr}`"
    );
    (created_at - stepped_at).as_secs_f64()
}

fn summary(mut seconds: Vec<f64>) -> String {
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let all: Vec<String> = seconds.iter().map(|s| format!("{s:.1}")).collect();
    format!(
        "median {median:.1} s, worst {:.1} s (trials: {})",
        seconds[seconds.len() - 1],
        all.join(", ")
    )
}

async fn scale_up_of_25() {
    let sim = start_sim(0, Demand::Constant(1.0)).await;
    let dir = tempfile::tempdir().expect("temporary folder");
    write_config(dir.path(), &TEMPLATE.replace("min = 1", "min = 25"));
    let daemon = start_daemon(dir.path(), &sim).await;
    let before = sim.api_counts();
    let results = serve::run_once(&daemon).await;
    assert!(results.iter().all(|r| !r.failed), "the scale-up succeeds");
    println!(
        "scale-up of 25 from an empty group: {} droplets made, API calls:",
        sim.droplets().len()
    );
    for (endpoint, count) in sim.api_counts() {
        let made = count - before.get(&endpoint).copied().unwrap_or(0);
        if made > 0 {
            println!("  {endpoint}: {made}");
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        scale_up_of_25().await;
        let irate = r#"1 - avg(irate(node_cpu_seconds_total{mode="idle"}[30s]))"#;
        let rate = r#"1 - avg(rate(node_cpu_seconds_total{mode="idle"}[2m]))"#;
        let fast: Vec<_> = (0..5)
            .map(|_| tokio::spawn(reaction(irate, Duration::from_secs(20))))
            .collect();
        let slow: Vec<_> = (0..3)
            .map(|_| tokio::spawn(reaction(rate, Duration::from_secs(135))))
            .collect();
        let mut fast_s = Vec::new();
        for trial in fast {
            fast_s.push(trial.await.expect("trial"));
        }
        println!(
            "reaction, irate[30s] target rule, 5 s interval: {}",
            summary(fast_s)
        );
        let mut slow_s = Vec::new();
        for trial in slow {
            slow_s.push(trial.await.expect("trial"));
        }
        println!(
            "reaction, the example's rate[2m] target rule, 5 s interval: {}",
            summary(slow_s)
        );
    });
}
