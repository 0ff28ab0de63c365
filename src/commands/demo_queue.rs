//! `do-scaler demo --scenario queue`: the simulated DigitalOcean runs a job queue (as a Drone
//! server would) and the daemon scales a group of agents on it from zero: a burst of jobs
//! arrives, agents are bought to run them, the queue drains, only idle agents go, the group
//! empties, and a second burst starts it again. One line per decision, a summary of what
//! happened to the jobs, and an SVG chart.

use super::demo::{
    DEMO_BASE, DemoError, DemoRequest, Pace, Point, Serving, draw, io, remove_state,
};
use crate::sim::queue::QueueSettings;
use crate::sim::{Demand, Sim, SimOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one simulated job runs.
pub const JOB_SECONDS: f64 = 8.0;
/// Jobs one agent runs at once (Drone's DRONE_RUNNER_CAPACITY).
pub const CONCURRENCY: u32 = 2;

/// The queue demo's group; `{DRONE_URL}` becomes the sim's Drone-like endpoint.
pub const QUEUE_GROUP: &str = r#"# The queue demo's group: Drone-like agents, two jobs each, from 0 to 8 of them.
tag = "web"
min = 0
max = 8
warmup = "1s"

[droplet]
name_prefix = "agent"
region = "nyc3"
size = "s-2vcpu-4gb"
image = "docker-20-04"

# The sim's Drone-like /metrics: drone_pending_builds and drone_running_builds.
[[source]]
name = "drone"
kind = "target"
urls = ["{DRONE_URL}"]

# Enough agents for every pending and running job, two per agent.
[[rule]]
name = "builds"
source = "drone"
desired = 'ceil((drone_pending_builds + drone_running_builds) / 2)'

[cooldown]
up = "2s"
down = "4s"

[stabilization]
down = "6s"

[scale_in]
min_age = "0s"
# An agent running a job is never removed, nor one whose state is unknown.
busy = 'sim_jobs_running > 0'

[actions]
up = ["digitalocean_create_droplet"]
down = ["digitalocean_destroy_droplet"]
"#;

/// Jobs arriving per second: quiet, a burst, quiet long enough to empty the group, a second
/// burst that starts it again, quiet.
pub const QUEUE_CURVE: &[(u64, f64)] = &[
    (0, 0.0),
    (3, 0.0),
    (4, 1.2),
    (20, 1.2),
    (21, 0.0),
    (60, 0.0),
    (61, 0.6),
    (75, 0.6),
    (76, 0.0),
];

/// Writes the queue configuration under `out`, pointed at the sim's Drone-like endpoint.
fn write_config(out: &Path, drone_url: &str) -> Result<PathBuf, DemoError> {
    std::fs::create_dir_all(out.join("conf.d")).map_err(io)?;
    std::fs::create_dir_all(out.join("actions")).map_err(io)?;
    std::fs::write(out.join("do-scaler.toml"), DEMO_BASE).map_err(io)?;
    let _ = std::fs::remove_file(out.join("conf.d/web.toml"));
    std::fs::write(
        out.join("conf.d/agents.toml"),
        QUEUE_GROUP.replace("{DRONE_URL}", drone_url),
    )
    .map_err(io)?;
    remove_state(out);
    Ok(out.join("do-scaler.toml"))
}

/// Runs the queue demo.
pub async fn run(request: &DemoRequest) -> Result<(), DemoError> {
    let out = std::path::absolute(&request.out).map_err(io)?;
    std::fs::create_dir_all(&out).map_err(io)?;
    let arrivals = match &request.curve {
        Some(curve) => Demand::parse(curve)?,
        None => Demand::Series(
            QUEUE_CURVE
                .iter()
                .map(|(t, d)| (Duration::from_secs(*t), *d))
                .collect(),
        ),
    };
    let pace = Pace::new(request.speed)?;
    let sim = Sim::start(SimOptions {
        clock: pace.clock(),
        seed_droplets: 0,
        seed_tag: "web".into(),
        boot_delay: Duration::from_secs(2),
        rate_limit: None,
        demand: arrivals.clone(),
        queue: Some(QueueSettings {
            job_seconds: JOB_SECONDS,
            concurrency: CONCURRENCY,
        }),
        ..SimOptions::default()
    })
    .await?;
    let config = match &request.config {
        Some(config) => config.clone(),
        None => write_config(&out, &format!("{}/drone/metrics", sim.api_url()))?,
    };
    let serving = Serving::start(
        &sim,
        config,
        &out,
        " with a job queue",
        request.duration,
        pace.clock(),
    )
    .await?;
    let daemon = serving.daemon.clone();

    let started = pace.start();
    let mut points = Vec::new();
    let mut last_decision = String::new();
    let (mut ups, mut downs, mut peak, mut emptied) = (0u32, 0u32, 0usize, 0u32);
    let mut last_size = 0usize;
    let mut droplet_seconds = 0.0;
    let mut previous = started.elapsed();
    println!(
        "{:>5}  {:>6}  {:>7}  {:>7}  {:>6}  {:>7}  decision",
        "time", "jobs/s", "pending", "running", "active", "booting"
    );
    while started.elapsed() < request.duration {
        pace.nap().await;
        let dt = (started.elapsed() - previous).as_secs_f64();
        previous = started.elapsed();
        let droplets = sim.droplets();
        let size = droplets.len();
        peak = peak.max(size);
        droplet_seconds += size as f64 * dt;
        if size != last_size {
            if size > last_size {
                ups += 1;
            } else {
                downs += 1;
                if size == 0 {
                    emptied += 1;
                }
            }
            last_size = size;
        }
        let counts = sim.queue().unwrap_or_default();
        let first_group = daemon.generation().groups.keys().next().cloned();
        let Some(status) = first_group.and_then(|name| daemon.group_status(&name)) else {
            continue;
        };
        let Some(decision) = status.last_decision else {
            continue;
        };
        let at = decision
            .pointer("/decision/at")
            .map(|a| a.to_string())
            .unwrap_or_default();
        let desired = decision["desired"].as_f64().unwrap_or(0.0);
        points.push(Point {
            seconds: started.elapsed().as_secs_f64(),
            demand: (counts.pending + counts.running) as f64 / f64::from(CONCURRENCY),
            desired,
            actual: size as f64,
            cpu: None,
        });
        if at != last_decision {
            last_decision = at;
            let step = decision
                .pointer("/decision/steps")
                .and_then(|s| s.as_array())
                .and_then(|s| s.last())
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .trim_start_matches("decision: ")
                .to_string();
            println!(
                "{:>4.0}s  {:>6.1}  {:>7}  {:>7}  {:>6}  {:>7}  {}",
                started.elapsed().as_secs_f64(),
                arrivals.at(started.elapsed()),
                counts.pending,
                counts.running,
                decision
                    .pointer("/decision/active")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                decision
                    .pointer("/decision/booting")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                step
            );
        }
    }
    serving.stop().await;
    let counts = sim.queue().unwrap_or_default();
    let chart = out.join("demo.svg");
    draw(
        &chart,
        &points,
        "do-scaler demo: a job queue and its agents",
        "work (agents for pending + running jobs)",
    )
    .map_err(io)?;
    println!();
    println!(
        "summary: {ups} scale-up(s), {downs} scale-down(s), peak {peak} droplets, emptied {emptied} time(s)"
    );
    println!(
        "summary: {} job(s) arrived, {} completed, {} still pending, {} running, longest wait before a start {:.0}s",
        counts.arrived,
        counts.completed,
        counts.pending,
        counts.running,
        counts.longest_wait_seconds
    );
    println!(
        "summary: {} job(s) lost to a destroyed busy agent ({} busy agent(s) destroyed), {:.1} droplet-minutes",
        counts.killed,
        counts.busy_destroyed,
        droplet_seconds / 60.0
    );
    println!("chart: {}", chart.display());
    Ok(())
}
