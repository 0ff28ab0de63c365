//! Parser throughput: do-scaler's exposition parser against the prometheus-parse crate, on the
//! real captures in tests/fixtures and on a synthetic 1 MB exposition. Run: `cargo bench --bench parser`.
//! Each figure is the best of several rounds, in MB/s of input.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

fn synthetic(target_bytes: usize) -> String {
    let mut out = String::with_capacity(target_bytes + 256);
    out.push_str("# HELP app_requests_total Requests served.\n# TYPE app_requests_total counter\n");
    let mut i = 0u64;
    while out.len() < target_bytes {
        out.push_str(&format!(
            "app_requests_total{{code=\"{}\",handler=\"/api/v1/item/{}\",method=\"GET\",instance=\"10.0.{}.{}:9110\"}} {}.{} 1700000000{:03}\n",
            200 + (i % 5),
            i % 997,
            (i / 256) % 256,
            i % 256,
            i * 7,
            i % 10,
            i % 1000
        ));
        i += 1;
    }
    out
}

/// Best MB/s over rounds of at least 200 ms each.
fn throughput(bytes: usize, mut run: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut iterations = 0u32;
        while start.elapsed() < Duration::from_millis(200) {
            run();
            iterations += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(iterations));
    }
    bytes as f64 / best / 1e6
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut inputs: Vec<(String, String)> = [
        "do-agent-3.18.14.prom",
        "do-agent-3.18.14-with-process.prom",
        "node-exporter-1.5.0.prom",
    ]
    .iter()
    .map(|name| {
        (
            name.to_string(),
            std::fs::read_to_string(dir.join(name)).expect("fixture"),
        )
    })
    .collect();
    inputs.push(("synthetic 1 MB".to_string(), synthetic(1_000_000)));
    // Like against like: owned samples against prometheus-parse's owned samples is the
    // headline; the zero-copy path the scraper uses is shown beside it.
    println!(
        "{:<38} {:>12} {:>16} {:>16} {:>12}",
        "input", "owned (MB/s)", "prometheus-parse", "owned speed-up", "zero-copy"
    );
    for (name, text) in &inputs {
        let ours = throughput(text.len(), || {
            let mut count = 0usize;
            do_scaler::metrics::exposition::parse_with(black_box(text), "bench", |s| {
                count += s.labels.len();
            })
            .expect("parses");
            black_box(count);
        });
        let owned = throughput(text.len(), || {
            black_box(
                do_scaler::metrics::exposition::parse(black_box(text), "bench").expect("parses"),
            );
        });
        let theirs = throughput(text.len(), || {
            let lines = black_box(text).lines().map(|l| Ok(l.to_string()));
            black_box(prometheus_parse::Scrape::parse(lines).expect("parses"));
        });
        println!(
            "{name:<38} {owned:>12.1} {theirs:>16.1} {:>15.1}x {ours:>12.1}",
            owned / theirs
        );
    }
}
