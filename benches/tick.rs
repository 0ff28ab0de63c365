//! One warm tick at scale: list the group, scrape every active droplet, evaluate the rules
//! (their `[2m]` windows full, so every rule and the `least_busy` expression is computed) and
//! decide, against `do-scaler sim` (rate limits off) in this process, for 100, 1,000 and 5,000
//! droplets, with the daemon's own settings (64 scrapes in flight per group). The history is
//! filled first by ticking on a simulated clock 30 s apart. Also the API economy: calls per tick
//! in steady state, and where the time goes. Run: `cargo bench --bench tick`.

use chrono::{DateTime, Utc};
use do_scaler::clock::{Clock, ManualClock};
use do_scaler::config::{ApiToken, group_from_toml};
use do_scaler::daemon::GroupRuntime;
use do_scaler::daemon::tick::TickTimings;
use do_scaler::digitalocean::{Client, ClientOptions};
use do_scaler::metrics::scrape::Scraper;
use do_scaler::policy::GroupMemory;
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GROUP: &str = r#"
tag = "web"
min = 1
max = 10000
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[scale_in]
choose = "least_busy"
by = '1 - avg by (droplet_id) (rate(node_cpu_seconds_total{mode="idle"}[2m]))'
[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[2m]))'
target = 0.6
[[rule]]
name = "memory"
when = 'avg(node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) < 0.15'
for = "2m"
change = "+2"
"#;

struct Measured {
    tick: Duration,
    timings: TickTimings,
    api: u64,
    scrapes: u64,
}

/// What a tick runs against.
struct World<'a> {
    clock: &'a ManualClock,
    sim: &'a Sim,
    client: &'a Client,
    scraper: &'a Scraper,
}

impl World<'_> {
    /// One tick 30 simulated seconds after the last.
    async fn tick(
        &self,
        runtime: &mut GroupRuntime,
        memory: &mut GroupMemory,
    ) -> do_scaler::daemon::TickReport {
        self.clock.advance(Duration::from_secs(30));
        self.sim.sync();
        runtime
            .tick(
                self.client,
                self.scraper,
                memory,
                &Default::default(),
                self.clock.now(),
            )
            .await
            .expect("tick")
    }
}

async fn measure(droplets: u32) -> Measured {
    let clock = ManualClock::new(
        DateTime::parse_from_rfc3339("2026-06-10T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc),
    );
    let sim = Sim::start(SimOptions {
        seed_droplets: droplets,
        open_ports: Vec::new(),
        rate_limit: None,
        demand: Demand::Constant(f64::from(droplets)),
        clock: Arc::new(clock.clone()),
        ..SimOptions::default()
    })
    .await
    .expect("sim starts");
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.rate_limits = None;
    let client = Client::new(options).expect("client");
    // The daemon's own budget: 64 scrapes in flight per group.
    let scraper = Scraper::new(64, 1 << 20).expect("scraper");
    let group = group_from_toml("web", GROUP).expect("group");
    let mut runtime = GroupRuntime::new(group, "do-scaler:default".into()).expect("runtime");
    let mut memory = GroupMemory::default();
    let world = World {
        clock: &clock,
        sim: &sim,
        client: &client,
        scraper: &scraper,
    };
    // Fill the [2m] windows: five ticks 30 s apart.
    for _ in 0..5 {
        world.tick(&mut runtime, &mut memory).await;
    }
    let api_before: u64 = sim.api_counts().values().sum();
    let scrapes_before: u64 = sim.scrapes().values().sum();
    let mut runs = Vec::new();
    let rounds = 5;
    for _ in 0..rounds {
        let started = Instant::now();
        let report = world.tick(&mut runtime, &mut memory).await;
        let took = started.elapsed();
        assert!(
            report.decision.rules.iter().all(|r| r.value != "missing"),
            "a warm tick computes every rule: {:?}",
            report.decision.rules
        );
        runs.push((took, report.timings));
    }
    runs.sort_by_key(|(took, _)| *took);
    let api: u64 = sim.api_counts().values().sum::<u64>() - api_before;
    let scrapes: u64 = sim.scrapes().values().sum::<u64>() - scrapes_before;
    Measured {
        tick: runs[rounds / 2].0,
        timings: runs[rounds / 2].1,
        api: api / rounds as u64,
        scrapes: scrapes / rounds as u64,
    }
}

#[tokio::main]
async fn main() {
    println!(
        "{:>9}  {:>12}  {:>9}  {:>9}  {:>9}  {:>14}  {:>12}",
        "droplets", "tick (median)", "list", "scrape", "evaluate", "API calls/tick", "scrapes/tick"
    );
    let mut results = Vec::new();
    for droplets in [100u32, 1000, 5000] {
        let m = measure(droplets).await;
        println!(
            "{droplets:>9}  {:>10.1}ms  {:>7.1}ms  {:>7.1}ms  {:>7.1}ms  {:>14}  {:>12}",
            m.tick.as_secs_f64() * 1000.0,
            m.timings.list_ms,
            m.timings.scrape_ms,
            m.timings.evaluate_ms,
            m.api,
            m.scrapes
        );
        results.push((droplets, m.tick));
    }
    let ratio = results[2].1.as_secs_f64() / results[1].1.as_secs_f64();
    println!("t(5000) / t(1000) = {ratio:.2}");
}
