//! What a leader's tick writes to its state, on SQLite and on PostgreSQL (a throwaway cluster
//! on loopback, as the tests make one): a 50-droplet group's new sample points (10 series per
//! droplet), its decision, its size point and its memory, plus the lease renewal and a
//! journal entry with its settlement. Median and 90th percentile of 200 ticks. Loopback hides
//! a network's round trips: each PostgreSQL tick here makes about 32 (seven fenced
//! transactions of four or five statements; statements are prepared once per session), so add
//! 32 × the round trip to Managed PostgreSQL (≈ 0.5–1 ms in one region).
//! Run: `cargo bench --bench state`.

use do_scaler::policy::{GroupMemory, MemoryStore};
use do_scaler::state::lease::{Leadership, Timings};
use do_scaler::state::{Intent, Journal, Location, SizePoint, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)]
mod postgres;

/// The PostgreSQL harness's "absent" report: a benchmark just says so.
fn skip_unless_ci(what: &str, install: &str) {
    eprintln!("SKIPPED: {what} is absent ({install})");
}

const TICKS: usize = 200;
const DROPLETS: u64 = 50;
const SERIES: u64 = 10;

fn tick(store: &Store, leadership: &Leadership, index: usize) {
    leadership.renew("web");
    let t = index as i64 * 30_000;
    let points: Vec<_> = (0..DROPLETS)
        .flat_map(|droplet| {
            (0..SERIES).map(move |series| {
                let labels = do_scaler::query::Labels::new([
                    ("__name__", "node_cpu_seconds_total".to_string()),
                    ("cpu", series.to_string()),
                    ("droplet_id", droplet.to_string()),
                ]);
                (droplet, labels, t, (t as f64) / 1000.0)
            })
        })
        .collect();
    store.append_samples("web", &points).unwrap();
    store
        .record_decision("web", "2026-12-03T10:00:00Z", r#"{"decision":"stay"}"#)
        .unwrap();
    store
        .record_size(
            "web",
            SizePoint {
                at: chrono::Utc::now(),
                current: 50,
                desired: 50,
                min: 1,
                max: 100,
            },
        )
        .unwrap();
    store.save("web", &GroupMemory::default());
    let entry = store
        .intend("web", &Intent::Destroy { ids: vec![1] })
        .unwrap();
    store.settle(entry, "destroyed 1").unwrap();
}

fn measure(name: &str, store: Arc<Store>) {
    let leadership = Leadership::new(
        store.clone(),
        "bench".into(),
        Timings {
            lease: Duration::from_secs(120),
            longest_request: Duration::from_secs(30),
        },
    );
    let mut times: Vec<Duration> = (0..TICKS)
        .map(|index| {
            let started = Instant::now();
            tick(&store, &leadership, index);
            started.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "{name}: a leader's tick of state writes ({} points): median {:.2} ms, p90 {:.2} ms",
        DROPLETS * SERIES,
        times[TICKS / 2].as_secs_f64() * 1e3,
        times[TICKS * 9 / 10].as_secs_f64() * 1e3
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    measure(
        "SQLite",
        Arc::new(Store::open(&dir.path().join("state.db")).unwrap()),
    );
    if let Some(cluster) = postgres::Postgres::start() {
        let url = cluster.database("bench");
        measure(
            "PostgreSQL (loopback)",
            Arc::new(Store::open_location(&Location::Postgres(url), None).unwrap()),
        );
    }
}
