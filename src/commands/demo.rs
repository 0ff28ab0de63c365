//! `do-scaler demo`: the simulated DigitalOcean and the daemon together on a built-in
//! configuration with short intervals, under a demand that rises then falls. One line per
//! decision on stdout, a summary at the end, and an SVG chart of demand, desired and actual size.

use crate::clock::{Clock, ScaledClock};
use crate::config::Overrides;
use crate::daemon::run::prepare;
use crate::daemon::{RunOptions, serve};
use crate::sim::{Demand, Sim, SimOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The demo's base file.
pub const DEMO_BASE: &str = r#"# The demo's base file: short intervals so that nothing waits ten minutes.
interval = "2s"
state = "state.db"
conf_dir = "conf.d"
actions_dir = "actions"
[status_api]
listen = "127.0.0.1:0"
"#;

/// The demo's group.
pub const DEMO_GROUP: &str = r#"# The demo's group: keep CPU near 60 % on 2-vCPU droplets, 1 to 8 of them.
tag = "web"
min = 1
max = 8
warmup = "2s"

[droplet]
name_prefix = "web"
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"

[cooldown]
up = "4s"
down = "8s"

[stabilization]
down = "10s"

[scale_in]
choose = "newest"
min_age = "0s"

[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[6s]))'
target = 0.6

[actions]
up = ["digitalocean_create_droplet", "health_check_tcp"]
down = ["digitalocean_destroy_droplet"]

[actions.params.health_check_tcp]
ports = [80]
timeout = "1s"
interval = "500ms"
tries = 20
"#;

/// The demo's default demand in vCPUs: quiet, a rise to 7 vCPUs, a plateau, a fall.
pub const DEMO_CURVE: &[(u64, f64)] = &[
    (0, 1.5),
    (15, 1.5),
    (30, 7.0),
    (60, 7.0),
    (72, 1.0),
    (200, 1.0),
];

/// Which workload the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scenario {
    /// Web servers scaled on CPU under a demand curve in vCPUs.
    #[default]
    Web,
    /// Agents scaled from zero on a job queue (Drone-like), never destroyed while busy.
    Queue,
}

/// What `demo` was asked.
#[derive(Debug, Clone)]
pub struct DemoRequest {
    /// Where the configuration copy, the state and the chart go.
    pub out: PathBuf,
    /// How long to run.
    pub duration: Duration,
    /// A demand curve instead of the built-in one (see `do-scaler sim --demand`).
    pub curve: Option<String>,
    /// A base file instead of the built-in configuration.
    pub config: Option<PathBuf>,
    /// Which workload to run.
    pub scenario: Scenario,
    /// How many times faster than real time the demo's sim and daemon run (1: real time).
    pub speed: f64,
}

/// The demo's time: one clock the sim runs on and the daemon keeps, `speed` times faster than
/// the wall, and what the demo measures elapsed on it.
pub(super) struct Pace {
    clock: Arc<ScaledClock>,
}

/// Elapsed time on the demo's clock since it started.
#[derive(Debug, Clone)]
pub(super) struct Started {
    clock: Arc<ScaledClock>,
    at: chrono::DateTime<chrono::Utc>,
}

impl Started {
    /// Time since the start, on the demo's clock.
    pub(super) fn elapsed(&self) -> Duration {
        (self.clock.now() - self.at).to_std().unwrap_or_default()
    }
}

impl Pace {
    /// A clock at `speed` (refused outside 0 < speed ≤ 10000).
    pub(super) fn new(speed: f64) -> Result<Pace, DemoError> {
        Ok(Pace {
            clock: Arc::new(ScaledClock::new(chrono::Utc::now(), speed)?),
        })
    }

    /// The clock, for the sim and the daemon.
    pub(super) fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Now, as the start of what is measured.
    pub(super) fn start(&self) -> Started {
        Started {
            clock: self.clock.clone(),
            at: self.clock.now(),
        }
    }

    /// Waits half a second of the demo's clock between samples.
    pub(super) async fn nap(&self) {
        tokio::time::sleep(crate::clock::wall(
            self.clock.as_ref(),
            Duration::from_millis(500),
        ))
        .await;
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Files could not be written.
    #[error("{0}")]
    Io(String),
    /// The sim did not start.
    #[error(transparent)]
    Sim(#[from] crate::sim::SimError),
    /// The daemon did not start.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    /// The demand curve is invalid.
    #[error(transparent)]
    Demand(#[from] crate::sim::load::DemandError),
    /// The speed is out of range.
    #[error("--speed: {0}")]
    Speed(#[from] crate::clock::ClockError),
}

/// One observation of the demo.
#[derive(Debug, Clone, Copy)]
pub(super) struct Point {
    /// Seconds since the demo started.
    pub seconds: f64,
    /// The work, in droplets' worth.
    pub demand: f64,
    /// The size the group wanted.
    pub desired: f64,
    /// The droplets that existed (active and booting).
    pub actual: f64,
    /// The value of the group's first rule as the daemon saw it (the CPU, in the web demo).
    pub cpu: Option<f64>,
}

pub(super) fn io(error: impl std::fmt::Display) -> DemoError {
    DemoError::Io(error.to_string())
}

/// The daemon serving its status API on loopback against the demo's sim, stopped by
/// [`Serving::stop`]. Shared by every scenario.
pub(super) struct Serving {
    /// The daemon.
    pub daemon: Arc<crate::daemon::Daemon>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Prepares the daemon on `config` against `sim` (state under `out`), serves it, and says
    /// where on stderr (`what` names the sim's workload).
    pub(super) async fn start(
        sim: &Sim,
        config: PathBuf,
        out: &Path,
        what: &str,
        duration: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Serving, DemoError> {
        let token = sim.token().to_string();
        let daemon = prepare(
            config,
            Overrides {
                api_url: Some(sim.api_url()),
                state: Some(out.join("state.db")),
                listen: None,
            },
            Arc::new(move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone())),
            clock,
            RunOptions::new(Duration::from_secs(60)),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io)?;
        eprintln!(
            "demo: simulated DigitalOcean{what} at {}, status API at http://{}, running for {}",
            sim.api_url(),
            listener.local_addr().map_err(io)?,
            crate::config::duration::format_duration(duration)
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve::serve(daemon.clone(), listener, async {
            let _ = stopped.await;
        }));
        Ok(Serving {
            daemon,
            stop,
            server,
        })
    }

    /// Stops the daemon and waits for it.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// Removes the state a previous demo left under `out`.
pub(super) fn remove_state(out: &Path) {
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(out.join(file));
    }
}

/// Writes the built-in configuration under `out` and returns its base file.
fn write_config(out: &Path) -> Result<PathBuf, DemoError> {
    std::fs::create_dir_all(out.join("conf.d")).map_err(io)?;
    std::fs::create_dir_all(out.join("actions")).map_err(io)?;
    std::fs::write(out.join("do-scaler.toml"), DEMO_BASE).map_err(io)?;
    std::fs::write(out.join("conf.d/web.toml"), DEMO_GROUP).map_err(io)?;
    remove_state(out);
    Ok(out.join("do-scaler.toml"))
}

/// Runs the demo's scenario.
pub async fn run(request: &DemoRequest) -> Result<(), DemoError> {
    match request.scenario {
        Scenario::Web => run_web(request).await,
        Scenario::Queue => super::demo_queue::run(request).await,
    }
}

/// Runs the web demo.
async fn run_web(request: &DemoRequest) -> Result<(), DemoError> {
    let out = std::path::absolute(&request.out).map_err(io)?;
    std::fs::create_dir_all(&out).map_err(io)?;
    let config = match &request.config {
        Some(config) => config.clone(),
        None => write_config(&out)?,
    };
    let demand = match &request.curve {
        Some(curve) => Demand::parse(curve)?,
        None => Demand::Series(
            DEMO_CURVE
                .iter()
                .map(|(t, d)| (Duration::from_secs(*t), *d))
                .collect(),
        ),
    };
    let pace = Pace::new(request.speed)?;
    let sim = Sim::start(SimOptions {
        clock: pace.clock(),
        seed_droplets: 1,
        seed_managed_tag: Some("do-scaler:default".into()),
        seed_tag: "web".into(),
        boot_delay: Duration::from_secs(3),
        rate_limit: None,
        demand: demand.clone(),
        open_ports: vec![22, 80],
        ..SimOptions::default()
    })
    .await?;
    let serving = Serving::start(&sim, config, &out, "", request.duration, pace.clock()).await?;
    let daemon = serving.daemon.clone();

    let started = pace.start();
    let mut points = Vec::new();
    let mut last_decision = String::new();
    let (mut ups, mut downs, mut peak) = (0u32, 0u32, 0usize);
    let mut last_size = sim.droplets().len();
    let (mut droplet_seconds, mut demand_seconds, mut served_seconds) = (0.0, 0.0, 0.0);
    let mut previous = started.elapsed();
    println!(
        "{:>5}  {:>7}  {:>6}  {:>7}  {:>8}  decision",
        "time", "demand", "active", "booting", "cpu"
    );
    while started.elapsed() < request.duration {
        pace.nap().await;
        let dt = (started.elapsed() - previous).as_secs_f64();
        previous = started.elapsed();
        let droplets = sim.droplets();
        let active = droplets
            .iter()
            .filter(|d| d.status == crate::digitalocean::DropletStatus::Active)
            .count();
        let size = droplets.len();
        peak = peak.max(size);
        let now_demand = demand.at(started.elapsed());
        droplet_seconds += size as f64 * dt;
        demand_seconds += now_demand * dt;
        served_seconds += now_demand.min(active as f64 * 2.0) * dt;
        if size != last_size {
            if size > last_size {
                ups += 1;
            } else {
                downs += 1;
            }
            last_size = size;
        }
        let Some(status) = daemon.group_status("web") else {
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
            demand: now_demand / (2.0 * 0.6),
            desired,
            actual: size as f64,
            cpu: decision["rules"][0]["value"].as_f64(),
        });
        if at != last_decision {
            last_decision = at;
            let cpu = decision["rules"][0]["value"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
            let step = decision
                .pointer("/decision/steps")
                .and_then(|s| s.as_array())
                .and_then(|s| s.last())
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .trim_start_matches("decision: ")
                .to_string();
            println!(
                "{:>4.0}s  {:>5.1}vC  {:>6}  {:>7}  {:>8}  {}",
                started.elapsed().as_secs_f64(),
                now_demand,
                decision
                    .pointer("/decision/active")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                decision
                    .pointer("/decision/booting")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                cpu,
                step
            );
        }
    }
    serving.stop().await;
    let chart = out.join("demo.svg");
    draw(
        &chart,
        &points,
        "do-scaler demo: demand and group size",
        "demand (droplets at 60 % CPU)",
    )
    .map_err(io)?;
    println!();
    println!("summary: {ups} scale-up(s), {downs} scale-down(s), peak {peak} droplets");
    println!(
        "summary: {:.1} droplet-minutes, {:.1} % of the demand served",
        droplet_seconds / 60.0,
        if demand_seconds > 0.0 {
            100.0 * served_seconds / demand_seconds
        } else {
            100.0
        }
    );
    println!("chart: {}", chart.display());
    Ok(())
}

/// Draws the work (in droplets' worth, labelled `work_label`), the desired size (dashed) and
/// the actual size (a thick step line, with a mark at each scale event) over time under
/// `caption`, and the CPU the rules saw on a second axis when the points carry it.
pub(super) fn draw(
    path: &Path,
    points: &[Point],
    caption: &str,
    work_label: &'static str,
) -> Result<(), String> {
    use plotters::prelude::*;
    let error = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (960, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let end = points.last().map(|p| p.seconds).unwrap_or(1.0).max(1.0);
    let top = points
        .iter()
        .map(|p| p.demand.max(p.desired).max(p.actual))
        .fold(1.0f64, f64::max)
        + 1.0;
    let with_cpu = points.iter().any(|p| p.cpu.is_some());
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .right_y_label_area_size(if with_cpu { 44 } else { 0 })
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(|e| error(&e))?
        .set_secondary_coord(0f64..end, 0f64..1f64);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("droplets")
        .draw()
        .map_err(|e| error(&e))?;
    let (orange, blue, green, red) = (
        RGBColor(200, 120, 0),
        RGBColor(30, 90, 200),
        RGBColor(20, 150, 60),
        RGBColor(190, 30, 45),
    );
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.seconds, p.demand)),
            orange.stroke_width(1),
        ))
        .map_err(|e| error(&e))?
        .label(work_label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(1)));
    // The actual size as steps: it changes when droplets come and go, not in between.
    let mut steps = Vec::new();
    for (i, p) in points.iter().enumerate() {
        if let Some(previous) = i.checked_sub(1).map(|j| points[j])
            && previous.actual != p.actual
        {
            steps.push((p.seconds, previous.actual));
        }
        steps.push((p.seconds, p.actual));
    }
    chart
        .draw_series(LineSeries::new(steps, green.stroke_width(3)))
        .map_err(|e| error(&e))?
        .label("actual (active + booting)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green.stroke_width(3)));
    chart
        .draw_series(DashedLineSeries::new(
            points.iter().map(|p| (p.seconds, p.desired)),
            8,
            5,
            blue.stroke_width(2),
        ))
        .map_err(|e| error(&e))?
        .label("desired")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], blue.stroke_width(2)));
    // A mark where the group grew (▲) or shrank (●).
    let events: Vec<(f64, f64, bool)> = points
        .windows(2)
        .filter(|w| w[0].actual != w[1].actual)
        .map(|w| (w[1].seconds, w[1].actual, w[1].actual > w[0].actual))
        .collect();
    chart
        .draw_series(events.iter().map(|(x, y, up)| {
            let style = if *up { green.filled() } else { red.filled() };
            EmptyElement::at((*x, *y))
                + TriangleMarker::new((0, 0), if *up { 6 } else { 0 }, style)
                + Circle::new((0, 0), if *up { 0 } else { 5 }, style)
        }))
        .map_err(|e| error(&e))?
        .label("scale event (up ▲, down ●)")
        .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 5, green.filled()));
    if with_cpu {
        chart
            .configure_secondary_axes()
            .y_desc("CPU the rules saw")
            .draw()
            .map_err(|e| error(&e))?;
        chart
            .draw_secondary_series(LineSeries::new(
                points.iter().filter_map(|p| p.cpu.map(|c| (p.seconds, c))),
                red.mix(0.7).stroke_width(1),
            ))
            .map_err(|e| error(&e))?
            .label("CPU the rules saw (right axis)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], red.mix(0.7).stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}
