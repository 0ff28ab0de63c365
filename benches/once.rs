//! `do-scaler run --once --dry-run` on a 200-droplet group, as cron runs it: the whole process,
//! timed from outside (median of ten runs), and where its time goes, measured in this process
//! phase by phase (configuration, state database, clients, the group's task, listing,
//! scraping, evaluation, database writes). The sim (rate limits off) runs in this process; the
//! group's rules read `[15s]` windows, filled first by a few runs 5 s apart, so every rule is
//! computed. Run: `cargo bench --bench once`.

use do_scaler::config::Overrides;
use do_scaler::daemon::RunOptions;
use do_scaler::daemon::group::{GroupStatus, GroupTask};
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GROUP: &str = r#"tag = "web"
min = 1
max = 400
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[scale_in]
choose = "least_busy"
by = '1 - avg by (droplet_id) (rate(node_cpu_seconds_total{mode="idle"}[15s]))'
[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[15s]))'
target = 0.6
[[rule]]
name = "memory"
when = 'avg(node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) < 0.15'
for = "2m"
change = "+2"
"#;

fn run_once(dir: &Path, sim: &Sim) -> Duration {
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args(["run", "--once", "--dry-run", "--config"])
        .arg(dir.join("do-scaler.toml"))
        .env("DIGITALOCEAN_API_URL", sim.api_url())
        .env("DIGITALOCEAN_TOKEN", sim.token())
        .env("DO_SCALER_LOG", "warn")
        .output()
        .expect("runs");
    let took = started.elapsed();
    assert!(output.status.success(), "{output:?}");
    took
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let sim = Sim::start(SimOptions {
        seed_droplets: 200,
        open_ports: Vec::new(),
        rate_limit: None,
        demand: Demand::Constant(200.0),
        ..SimOptions::default()
    })
    .await
    .expect("sim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        "interval = \"30s\"\nstate = \"state.db\"\nlisting_lag = \"0s\"\n",
    )
    .expect("base file");
    std::fs::create_dir(dir.path().join("conf.d")).expect("conf.d");
    std::fs::write(dir.path().join("conf.d/web.toml"), GROUP).expect("group");
    // Fill the [15s] windows: four runs 5 s apart, as cron would leave them.
    for _ in 0..4 {
        run_once(dir.path(), &sim);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut whole: Vec<Duration> = (0..10).map(|_| run_once(dir.path(), &sim)).collect();
    whole.sort();
    println!(
        "run --once --dry-run, 200 droplets, whole process: median {:.1} ms (min {:.1}, max {:.1})",
        ms(whole[5]),
        ms(whole[0]),
        ms(whole[9])
    );

    // The same work in this process, phase by phase.
    let config = dir.path().join("do-scaler.toml");
    let overrides = Overrides {
        api_url: Some(sim.api_url()),
        ..Overrides::default()
    };
    let t = Instant::now();
    let generation = do_scaler::daemon::generation::build(&config, &overrides, 1).expect("loads");
    let configuration = t.elapsed();
    drop(generation);
    let token = sim.token().to_string();
    let t = Instant::now();
    let daemon = do_scaler::daemon::run::prepare(
        config.clone(),
        overrides,
        Arc::new(move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone())),
        Arc::new(do_scaler::clock::SystemClock),
        RunOptions {
            dry_run: true,
            once: true,
            ..RunOptions::new(Duration::from_secs(60))
        },
    )
    .await
    .expect("prepares");
    let prepare = t.elapsed();
    let group = daemon.generation().config.groups[0].clone();
    let t = Instant::now();
    let mut task = GroupTask::new(
        daemon.clone(),
        group,
        Arc::new(Mutex::new(GroupStatus::default())),
        Instant::now(),
    )
    .expect("task");
    let task_setup = t.elapsed();
    let t = Instant::now();
    let report = task.tick().await.expect("ticks");
    let tick = t.elapsed();
    assert!(
        report.decision.rules.iter().all(|r| r.value != "missing"),
        "every rule computed: {:?}",
        report.decision.rules
    );
    let t = Instant::now();
    task.save(true);
    let save = t.elapsed();
    let timings = report.timings;
    let tick_db = ms(tick) - timings.list_ms - timings.scrape_ms - timings.evaluate_ms;
    println!("where the time goes (in process):");
    println!(
        "  configuration (parse, validate, compile expressions and scripts): {:.1} ms",
        ms(configuration)
    );
    println!(
        "  state database, clients, reconcile (prepare, configuration included): {:.1} ms",
        ms(prepare)
    );
    println!(
        "  the group's task (expressions, memory, sample history read back): {:.1} ms",
        ms(task_setup)
    );
    println!("  listing: {:.1} ms", timings.list_ms);
    println!("  scraping 200 droplets: {:.1} ms", timings.scrape_ms);
    println!("  evaluating and deciding: {:.1} ms", timings.evaluate_ms);
    println!("  recording the decision (state reads and writes in the tick): {tick_db:.1} ms");
    println!("  saving memory and appending samples: {:.1} ms", ms(save));
}
