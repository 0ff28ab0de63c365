//! One tick at scale: list the group, scrape every active droplet, evaluate the rules, decide,
//! against `do-scaler sim` (rate limits off) on this machine, for 100, 1,000 and 5,000 droplets.
//! Also the API economy: calls per tick in steady state. Run: `cargo bench --bench tick`.

use chrono::Utc;
use do_scaler::config::{ApiToken, group_from_toml};
use do_scaler::daemon::GroupRuntime;
use do_scaler::digitalocean::{Client, ClientOptions};
use do_scaler::metrics::scrape::Scraper;
use do_scaler::policy::GroupMemory;
use do_scaler::sim::{Demand, Sim, SimOptions};
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

async fn measure(droplets: u32) -> (Duration, u64, u64) {
    let sim = Sim::start(SimOptions {
        seed_droplets: droplets,
        open_ports: Vec::new(),
        rate_limit: None,
        demand: Demand::Constant(f64::from(droplets)),
        ..SimOptions::default()
    })
    .await
    .expect("sim starts");
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.rate_limits = None;
    let client = Client::new(options).expect("client");
    let scraper = Scraper::new(256, 1 << 20).expect("scraper");
    let group = group_from_toml("web", GROUP).expect("group");
    let mut runtime = GroupRuntime::new(group, "do-scaler:default".into()).expect("runtime");
    let mut memory = GroupMemory::default();
    // Warm up the connection pool and the history.
    for _ in 0..2 {
        runtime
            .tick(
                &client,
                &scraper,
                &mut memory,
                &Default::default(),
                Utc::now(),
            )
            .await
            .expect("tick");
    }
    let api_before: u64 = sim.api_counts().values().sum();
    let scrapes_before: u64 = sim.scrapes().values().sum();
    let mut times = Vec::new();
    let rounds = 5;
    for _ in 0..rounds {
        let started = Instant::now();
        runtime
            .tick(
                &client,
                &scraper,
                &mut memory,
                &Default::default(),
                Utc::now(),
            )
            .await
            .expect("tick");
        times.push(started.elapsed());
    }
    times.sort();
    let api: u64 = sim.api_counts().values().sum::<u64>() - api_before;
    let scrapes: u64 = sim.scrapes().values().sum::<u64>() - scrapes_before;
    (
        times[rounds / 2],
        api / rounds as u64,
        scrapes / rounds as u64,
    )
}

#[tokio::main]
async fn main() {
    println!(
        "{:>9}  {:>12}  {:>14}  {:>16}",
        "droplets", "tick (median)", "API calls/tick", "scrapes/tick"
    );
    let mut results = Vec::new();
    for droplets in [100u32, 1000, 5000] {
        let (time, api, scrapes) = measure(droplets).await;
        println!(
            "{droplets:>9}  {:>10.1}ms  {api:>14}  {scrapes:>16}",
            time.as_secs_f64() * 1000.0
        );
        results.push((droplets, time));
    }
    let ratio = results[2].1.as_secs_f64() / results[1].1.as_secs_f64();
    println!("t(5000) / t(1000) = {ratio:.2}");
}
