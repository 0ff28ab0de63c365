//! The decision-quality harness in full: every trace of `do_scaler::quality` against every
//! controller, the sim at speed with droplets that boot in 60 s, two plays at a time. Prints
//! the README's table. Run: `bash bench/quality.sh` (`QUALITY_SPEED`, default 300, sets the
//! speed; `QUALITY_ONLY=step` plays only the traces whose name contains it).

use do_scaler::quality::{self, Controller, Row, Trace};
use std::time::Instant;

fn main() {
    let speed: f64 = std::env::var("QUALITY_SPEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300.0);
    let only = std::env::var("QUALITY_ONLY").unwrap_or_default();
    let traces: Vec<Trace> = quality::traces()
        .into_iter()
        .filter(|t| t.name.contains(only.as_str()))
        .collect();
    let controllers = quality::variants().expect("the controllers are valid");
    let plays: Vec<(Trace, Controller)> = traces
        .iter()
        .flat_map(|t| controllers.iter().map(move |c| (t.clone(), c.clone())))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let rows = runtime.block_on(async {
        // Two plays at a time: each is a sim and a daemon, mostly waiting on the clock.
        let mut rows = Vec::new();
        for (pair, chunk) in plays.chunks(2).enumerate() {
            let mut handles = Vec::new();
            for (index, (trace, controller)) in chunk.iter().enumerate() {
                let (trace, controller) = (trace.clone(), controller.clone());
                let path = dir.path().join(format!("{pair}-{index}"));
                handles.push(tokio::spawn(async move {
                    let began = Instant::now();
                    let score = quality::play(&trace, &controller, speed, &path)
                        .await
                        .expect("the play runs");
                    eprintln!(
                        "{} / {}: {:.0} s",
                        trace.name,
                        controller.name,
                        began.elapsed().as_secs_f64()
                    );
                    Row {
                        trace: trace.name.to_string(),
                        controller: controller.name.to_string(),
                        score,
                    }
                }));
            }
            for handle in handles {
                rows.push(handle.await.expect("the play task ends"));
            }
        }
        rows
    });
    println!("{}", quality::table(&rows));
    println!(
        "{} plays at {speed}x in {:.0} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
}
