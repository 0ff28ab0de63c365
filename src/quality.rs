//! The decision-quality harness: fixed demand traces played through the simulated DigitalOcean
//! at speed, each against several controllers (do-scaler configurations), scored on what an
//! operator pays for and what their users feel.
//!
//! Each play starts a sim whose clock runs `speed` times faster than the wall (droplets boot in
//! 60 simulated seconds) and a daemon that keeps the sim's clock through its clock URL, exactly
//! as `do-scaler sim --speed N` and `do-scaler run --clock URL` do: the same listing, scraping,
//! decision and action code as against DigitalOcean. A sampler reads the sim every 10 simulated
//! seconds and integrates the scores. `bench/quality.sh` plays every trace in full and prints the
//! README's table; `cargo test` plays a shortened step.

use crate::clock::Clock;
use crate::config::Overrides;
use crate::daemon::RunOptions;
use crate::daemon::run::prepare;
use crate::digitalocean::DropletStatus;
use crate::sim::{Demand, Sim, SimOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The shipped example group (`conf.d/web.toml`), the harness's first controller.
pub const EXAMPLE_GROUP: &str = include_str!("../conf.d/web.toml");

/// vCPUs of the droplets every controller creates (`s-2vcpu-4gb`).
pub const VCPUS: f64 = 2.0;

/// Demand above this share of the active droplets' capacity counts as under-provisioned.
pub const UNDER_AT: f64 = 0.8;

/// The utilisation every controller aims at: droplets beyond what keeps demand at this share
/// of capacity count as over-provisioned.
pub const TARGET: f64 = 0.6;

/// Every controller's bounds: the diurnal trace's peak needs 15 droplets at the target.
pub const MIN: u32 = 2;
/// See [`MIN`].
pub const MAX: u32 = 20;

/// How long a droplet takes from create to active.
pub const BOOT: Duration = Duration::from_secs(60);

/// A demand trace: total vCPUs of work over time.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Its name in the table.
    pub name: &'static str,
    /// The demand the sim's droplets share.
    pub demand: Demand,
    /// How long it plays.
    pub length: Duration,
}

fn minutes(m: f64) -> Duration {
    Duration::from_secs_f64(m * 60.0)
}

fn series(points: &[(f64, f64)]) -> Demand {
    Demand::Series(points.iter().map(|(m, d)| (minutes(*m), *d)).collect())
}

/// The five traces: a step, a ramp, a 24 h diurnal sine, a noisy plateau and a spike.
pub fn traces() -> Vec<Trace> {
    // The diurnal day: 2 vCPUs at midnight, 18 at noon, a point every 5 minutes.
    let day: Vec<(f64, f64)> = (0..=288)
        .map(|i| {
            let m = i as f64 * 5.0;
            let phase = std::f64::consts::TAU * m / (24.0 * 60.0);
            (m, 10.0 - 8.0 * phase.cos())
        })
        .collect();
    // The plateau: 12 vCPUs ± 25 %, a new level every minute, from a fixed seed.
    let mut seed: u64 = 0x5eed;
    let plateau: Vec<(f64, f64)> = (0..=60)
        .map(|m| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0;
            (m as f64, 12.0 * (1.0 + 0.25 * noise))
        })
        .flat_map(|(m, d)| [(m, d), (m + 0.999, d)])
        .collect();
    vec![
        step(10.0, 60.0),
        Trace {
            name: "ramp",
            demand: series(&[(0.0, 2.4), (10.0, 2.4), (70.0, 20.0), (90.0, 20.0)]),
            length: minutes(90.0),
        },
        Trace {
            name: "diurnal (24 h)",
            demand: series(&day),
            length: minutes(24.0 * 60.0),
        },
        Trace {
            name: "noisy plateau",
            demand: series(&plateau),
            length: minutes(60.0),
        },
        Trace {
            name: "spike",
            demand: series(&[
                (0.0, 3.0),
                (20.0, 3.0),
                (20.01, 18.0),
                (30.0, 18.0),
                (30.01, 3.0),
                (60.0, 3.0),
            ]),
            length: minutes(60.0),
        },
    ]
}

/// The step: 2.4 vCPUs until `at` minutes, then 14, for `length` minutes in all (`cargo test`
/// plays a short one).
pub fn step(at: f64, length: f64) -> Trace {
    Trace {
        name: "step",
        demand: series(&[(0.0, 2.4), (at, 2.4), (at + 0.01, 14.0), (length, 14.0)]),
        length: minutes(length),
    }
}

/// A controller: a group file for the tag `web`.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Its name in the table.
    pub name: &'static str,
    /// The group file's text.
    pub group: String,
}

/// Why a play could not run.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    /// The example group could not be adapted.
    #[error("the example group: {0}")]
    Example(String),
    /// Files could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The sim did not start.
    #[error(transparent)]
    Sim(#[from] crate::sim::SimError),
    /// The clock could not be followed.
    #[error(transparent)]
    Clock(#[from] crate::clock::ClockError),
    /// The daemon did not start.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
}

/// The shipped example with what a trace cannot use taken out: its office-hours schedule
/// (the trace's hours are arbitrary), its SSH key and user data (the sim has neither), and
/// `max` raised to [`MAX`] so the diurnal peak fits. Everything that decides is kept. `edit`
/// changes it further (a variant's rule options).
pub fn example(edit: impl FnOnce(&mut toml::Table)) -> Result<String, QualityError> {
    let mut table: toml::Table =
        toml::from_str(EXAMPLE_GROUP).map_err(|e| QualityError::Example(e.to_string()))?;
    table.remove("schedule");
    table.insert("max".into(), toml::Value::Integer(i64::from(MAX)));
    table.insert("min".into(), toml::Value::Integer(i64::from(MIN)));
    if let Some(toml::Value::Table(droplet)) = table.get_mut("droplet") {
        droplet.remove("ssh_keys");
        droplet.remove("user_data_file");
    }
    edit(&mut table);
    toml::to_string(&table).map_err(|e| QualityError::Example(e.to_string()))
}

/// A reference controller: one CPU target rule over a `window` rate, with the given warmup,
/// cooldowns, scale-down stabilization and tolerance.
fn reference(
    window: &str,
    warmup: &str,
    cooldown: &str,
    stabilization: &str,
    tolerance: f64,
) -> String {
    format!(
        r#"tag = "web"
min = {MIN}
max = {MAX}
warmup = "{warmup}"
[droplet]
name_prefix = "web"
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[cooldown]
up = "{cooldown}"
down = "{cooldown}"
[stabilization]
down = "{stabilization}"
[scale_in]
choose = "newest"
min_age = "0s"
[actions]
up = ["digitalocean_create_droplet"]
down = ["digitalocean_destroy_droplet"]
[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{{mode="idle"}}[{window}]))'
target = {TARGET}
tolerance = {tolerance}
"#
    )
}

/// The three controllers of the issue: the shipped example; an HPA-style controller (target
/// tracking, 10 % tolerance, 5 min scale-down stabilization, no cooldowns, new droplets counted
/// after a minute, as HPA's CPU initialization period); and DigitalOcean Droplet
/// Autoscale Pools' documented rule (one target CPU, size = ceil(n × current / target), one
/// 10 min cooldown, which do-scaler writes as both cooldowns plus a 10 min scale-down
/// stabilization so that no scale-down follows a scale-up within 10 minutes). Both read the
/// example's 2-minute rate: at the 30 s interval a 1-minute range holds two samples, and one late
/// tick leaves the rule without a value for that tick (`check` warns about such ranges).
pub fn controllers() -> Result<Vec<Controller>, QualityError> {
    Ok(vec![
        Controller {
            name: "example (conf.d/web.toml)",
            group: example(|_| {})?,
        },
        Controller {
            name: "HPA-style",
            group: reference("2m", "1m", "0s", "5m", 0.1),
        },
        Controller {
            name: "DO Autoscale Pools",
            group: reference("2m", "0s", "10m", "10m", 0.0),
        },
    ])
}

/// Every controller the harness plays: [`controllers`], then the example with its CPU rule's
/// saturation policy (`ceiling = 1`, `saturated_step = "+100%"`).
pub fn variants() -> Result<Vec<Controller>, QualityError> {
    let mut all = controllers()?;
    all.insert(
        1,
        Controller {
            name: "example + saturation",
            group: example(saturated)?,
        },
    );
    Ok(all)
}

/// Gives the example's CPU rule (its first) the saturation policy: `ceiling = 1.0`, doubling.
pub fn saturated(table: &mut toml::Table) {
    if let Some(toml::Value::Array(rules)) = table.get_mut("rule")
        && let Some(toml::Value::Table(cpu)) = rules.first_mut()
    {
        cpu.insert("ceiling".into(), toml::Value::Float(1.0));
        cpu.insert("saturated_step".into(), toml::Value::String("+100%".into()));
    }
}

/// How a controller did on a trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Changes of size (a create or a destroy run; droplets added or removed together count
    /// once).
    pub scale_events: u32,
    /// Droplet-minutes missing while demand was above [`UNDER_AT`] of the active capacity:
    /// how many more active droplets would have brought it down to 80 %, integrated.
    pub under_droplet_minutes: f64,
    /// Droplet-minutes beyond what keeps demand at [`TARGET`] (and [`MIN`]), booting included.
    pub over_droplet_minutes: f64,
    /// Droplet-hours paid for, booting included.
    pub droplet_hours: f64,
    /// The share of the demand's vCPU-seconds the active droplets could run.
    pub served: f64,
    /// Active droplets at the end.
    pub final_active: usize,
    /// The share of the trace's ticks the daemon did not make (it skips a tick that comes
    /// while the last one still runs): above a few percent the play ran too fast for the
    /// machine and measures a slower controller than the configuration.
    pub ticks_missed: f64,
}

/// Integrates samples into a [`Score`].
#[derive(Debug, Default)]
struct Scorer {
    score: Score,
    demand_seconds: f64,
    served_seconds: f64,
    last_size: Option<usize>,
    last_change: Option<(f64, i8)>,
}

impl Scorer {
    /// One sample: `dt` seconds at `demand` vCPUs with `active` of `size` droplets, at `at`
    /// seconds into the trace.
    fn sample(&mut self, at: f64, dt: f64, demand: f64, active: usize, size: usize) {
        let minutes = dt / 60.0;
        let (active_f, size_f) = (active as f64, size as f64);
        let short = demand / (UNDER_AT * VCPUS) - active_f;
        if short > 0.0 {
            self.score.under_droplet_minutes += short * minutes;
        }
        let needed = (demand / (TARGET * VCPUS)).ceil().max(f64::from(MIN));
        if size_f > needed {
            self.score.over_droplet_minutes += (size_f - needed) * minutes;
        }
        self.score.droplet_hours += size_f * dt / 3600.0;
        self.demand_seconds += demand * dt;
        self.served_seconds += demand.min(active_f * VCPUS) * dt;
        self.score.final_active = active;
        if let Some(last) = self.last_size
            && last != size
        {
            let direction: i8 = if size > last { 1 } else { -1 };
            // A run that adds or removes several droplets may straddle two samples.
            let same_run = self
                .last_change
                .is_some_and(|(when, d)| d == direction && at - when <= 30.0);
            if !same_run {
                self.score.scale_events += 1;
            }
            self.last_change = Some((at, direction));
        }
        self.last_size = Some(size);
    }

    fn finish(mut self) -> Score {
        self.score.served = if self.demand_seconds > 0.0 {
            self.served_seconds / self.demand_seconds
        } else {
            1.0
        };
        self.score
    }
}

/// The base file of a play: 30 s intervals, the state in `dir`, no status API token.
const BASE: &str = "interval = \"30s\"\nstate = \"state.db\"\nconf_dir = \"conf.d\"\nactions_dir = \"actions\"\n[status_api]\nlisten = \"127.0.0.1:0\"\n";

/// Plays `trace` against `controller` at `speed` in `dir` (emptied first), and scores it.
pub async fn play(
    trace: &Trace,
    controller: &Controller,
    speed: f64,
    dir: &Path,
) -> Result<Score, QualityError> {
    play_recorded(trace, controller, speed, dir, false).await
}

/// [`play`], and with `record` the daemon also records the group (`[record]`) into
/// `dir/recordings/web/`, one file per simulated hour, for `replay`.
pub async fn play_recorded(
    trace: &Trace,
    controller: &Controller,
    speed: f64,
    dir: &Path,
    record: bool,
) -> Result<Score, QualityError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("conf.d"))?;
    std::fs::create_dir_all(dir.join("actions"))?;
    let base = if record {
        BASE.replacen(
            "[status_api]",
            "[record]\ndir = \"recordings\"\n[status_api]",
            1,
        )
    } else {
        BASE.to_string()
    };
    std::fs::write(dir.join("do-scaler.toml"), base)?;
    std::fs::write(dir.join("conf.d/web.toml"), &controller.group)?;
    // A fixed Monday midnight, so nothing depends on when the harness runs.
    let origin = chrono::DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z")
        .map_err(|e| QualityError::Example(e.to_string()))?
        .with_timezone(&chrono::Utc);
    let sim_clock = Arc::new(crate::clock::ScaledClock::new(origin, speed)?);
    // Start at the size the first demand needs, as a group that has been running would be.
    let first = trace.demand.at(Duration::ZERO);
    let seeded = ((first / (TARGET * VCPUS)).ceil() as u32).clamp(MIN, MAX);
    let sim = Sim::start(SimOptions {
        seed_droplets: seeded,
        seed_managed_tag: Some("do-scaler:default".into()),
        seed_tag: "web".into(),
        boot_delay: BOOT,
        rate_limit: None,
        demand: trace.demand.clone(),
        open_ports: vec![22, 80],
        clock: sim_clock.clone(),
        ..SimOptions::default()
    })
    .await?;
    // The daemon keeps the sim's time through its clock URL, as `run --clock` does.
    let clock: Arc<dyn Clock> = Arc::new(crate::clock::follow(&sim.clock_url()).await?);
    let token = sim.token().to_string();
    let daemon = prepare(
        dir.join("do-scaler.toml"),
        Overrides {
            api_url: Some(sim.api_url()),
            ..Overrides::default()
        },
        Arc::new(move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone())),
        clock.clone(),
        RunOptions::new(Duration::from_secs(60)),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::daemon::serve::serve(
        daemon.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    let start = sim_clock.now();
    let gap = crate::clock::wall(sim_clock.as_ref(), Duration::from_secs(10));
    let mut scorer = Scorer::default();
    let mut previous = 0.0;
    loop {
        tokio::time::sleep(gap).await;
        sim.sync();
        let at = (sim_clock.now() - start).num_milliseconds() as f64 / 1000.0;
        let droplets = sim.droplets();
        let active = droplets
            .iter()
            .filter(|d| d.status == DropletStatus::Active)
            .count();
        let demand = trace.demand.at(Duration::from_secs_f64(at.max(0.0)));
        scorer.sample(at, at - previous, demand, active, droplets.len());
        previous = at;
        if at >= trace.length.as_secs_f64() {
            break;
        }
    }
    use crate::api::metrics::Metrics;
    let ticks: f64 = ["ok", "failed"]
        .iter()
        .map(|result| {
            daemon
                .metrics
                .ticks
                .get_or_create(&Metrics::group_and("web", "result", result))
                .get() as f64
        })
        .sum();
    let _ = stop.send(());
    let _ = server.await;
    let mut score = scorer.finish();
    let expected = trace.length.as_secs_f64() / 30.0;
    score.ticks_missed = (1.0 - ticks / expected).max(0.0);
    Ok(score)
}

/// One row of the table: a trace, a controller and its scores (one per repetition).
#[derive(Debug, Clone)]
pub struct Row {
    /// The trace's name.
    pub trace: String,
    /// The controller's name.
    pub controller: String,
    /// How it did, each time it played.
    pub scores: Vec<Score>,
}

/// The mean of `values`, and their range when they differ.
fn spread(values: impl Iterator<Item = f64>, scale: f64) -> String {
    let values: Vec<f64> = values.map(|v| v * scale).collect();
    if values.is_empty() {
        return "-".into();
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let (low, high) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    if values.len() > 1 && high - low >= 0.05 {
        format!("{mean:.1} ({low:.0}–{high:.0})")
    } else {
        format!("{mean:.1}")
    }
}

/// The README's table: the mean of each row's plays, with their range where they differ.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| trace | controller | scale events | under-provisioned droplet-min | over-provisioned droplet-min | droplet-hours | demand served % |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let s = &row.scores;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.trace,
            row.controller,
            spread(s.iter().map(|s| f64::from(s.scale_events)), 1.0),
            spread(s.iter().map(|s| s.under_droplet_minutes), 1.0),
            spread(s.iter().map(|s| s.over_droplet_minutes), 1.0),
            spread(s.iter().map(|s| s.droplet_hours), 1.0),
            spread(s.iter().map(|s| s.served), 100.0),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scorer_counts_what_the_table_says() {
        let mut scorer = Scorer::default();
        // 10 minutes at 8 vCPUs on 2 active droplets of 3: 8 / 1.6 = 5 needed at 80 %, so 3
        // short; 7 needed at 60 %, none over; then 10 minutes at 2 vCPUs on 5: 2 over MIN.
        scorer.sample(0.0, 0.0, 8.0, 2, 3);
        scorer.sample(600.0, 600.0, 8.0, 2, 3);
        scorer.sample(610.0, 10.0, 2.0, 5, 5);
        scorer.sample(1200.0, 590.0, 2.0, 5, 4);
        let score = scorer.finish();
        assert!(
            (score.under_droplet_minutes - 30.0).abs() < 1e-9,
            "{score:?}"
        );
        // 10 s at 5 droplets (3 over) and 590 s at 4 (2 over).
        let over = 3.0 * 10.0 / 60.0 + 2.0 * 590.0 / 60.0;
        assert!(
            (score.over_droplet_minutes - over).abs() < 1e-9,
            "{score:?}"
        );
        assert_eq!(score.scale_events, 2);
        let hours = (3.0 * 600.0 + 5.0 * 10.0 + 4.0 * 590.0) / 3600.0;
        assert!((score.droplet_hours - hours).abs() < 1e-9);
        // 8 vCPUs for 600 s on 4 vCPUs of capacity: half served; then all.
        let served = (4.0 * 600.0 + 2.0 * 600.0) / (8.0 * 600.0 + 2.0 * 600.0);
        assert!((score.served - served).abs() < 1e-9);
    }

    #[test]
    fn the_example_keeps_its_rules_and_loses_only_what_a_trace_cannot_use() {
        let text = example(|_| {}).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert!(table.get("schedule").is_none());
        assert_eq!(table["max"].as_integer(), Some(20));
        assert_eq!(table["rule"].as_array().unwrap().len(), 2);
        assert_eq!(table["cooldown"]["up"].as_str(), Some("2m"));
    }
}
