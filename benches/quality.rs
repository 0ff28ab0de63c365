//! The decision-quality harness in full: every trace of `do_scaler::quality` against every
//! controller, several times each, the sim at speed with droplets that boot in 60 s. Prints
//! the README's table (means, with the range over the repetitions). Run: `bash bench/quality.sh`.
//! `QUALITY_SPEED` (default 300), `QUALITY_REPEAT` (3), `QUALITY_PARALLEL` (plays at once, 10)
//! and `QUALITY_ONLY` (traces whose name contains it) change what it plays.

use do_scaler::quality::{self, Row};
use std::sync::Arc;
use std::time::Instant;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let speed = setting("QUALITY_SPEED", 300.0);
    let repeat = setting("QUALITY_REPEAT", 3.0).max(1.0) as usize;
    let parallel = setting("QUALITY_PARALLEL", 10.0).max(1.0) as usize;
    let only = std::env::var("QUALITY_ONLY").unwrap_or_default();
    let traces: Vec<_> = quality::traces()
        .into_iter()
        .filter(|t| t.name.contains(only.as_str()))
        .collect();
    let controllers = quality::variants().expect("the controllers are valid");
    // Each play's state database takes a write a tick; on a memory file system those writes do
    // not wait for the disk, so ten plays at once keep up with a tick every 100 ms of wall time.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut recorded_day = None;
    let rows = runtime.block_on(async {
        // Each play is a sim and a daemon, mostly waiting on the clock (about 4 % of a core at
        // 300x): several at once keep the wall time short without crowding the two cores.
        let permits = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut handles = Vec::new();
        for (t, trace) in traces.iter().enumerate() {
            for (c, controller) in controllers.iter().enumerate() {
                for r in 0..repeat {
                    let (trace, controller) = (trace.clone(), controller.clone());
                    let path = dir.path().join(format!("{t}-{c}-{r}"));
                    let permits = permits.clone();
                    // The example's first diurnal day is recorded, for the replay below.
                    let record = trace.name.starts_with("diurnal") && c == 0 && r == 0;
                    if record {
                        recorded_day = Some(path.join("recordings/web"));
                    }
                    handles.push(tokio::spawn(async move {
                        let _permit = permits.acquire_owned().await.expect("never closed");
                        let score =
                            quality::play_recorded(&trace, &controller, speed, &path, record)
                                .await
                                .expect("the play runs");
                        if score.ticks_missed > 0.05 {
                            eprintln!(
                                "warning: {} / {}: {:.0} % of ticks missed at {speed}x: lower QUALITY_SPEED or QUALITY_PARALLEL",
                                trace.name,
                                controller.name,
                                score.ticks_missed * 100.0
                            );
                        }
                        (t, c, score)
                    }));
                }
            }
        }
        let mut rows: Vec<Row> = traces
            .iter()
            .flat_map(|t| {
                controllers.iter().map(|c| Row {
                    trace: t.name.to_string(),
                    controller: c.name.to_string(),
                    scores: Vec::new(),
                })
            })
            .collect();
        for handle in handles {
            let (t, c, score) = handle.await.expect("the play task ends");
            rows[t * controllers.len() + c].scores.push(score);
        }
        rows
    });
    println!("{}", quality::table(&rows));
    if let Some(day) = recorded_day {
        // What would a cheaper rule set (target 0.75 instead of 0.6) have done with that day?
        let cheaper = dir.path().join("cheaper.toml");
        let text = quality::example(|_| {}).expect("the example is valid");
        std::fs::write(&cheaper, text.replacen("target = 0.6", "target = 0.75", 1)).unwrap();
        let out = std::path::Path::new("target/quality");
        std::fs::create_dir_all(out).unwrap();
        let request = do_scaler::commands::replay::ReplayRequest {
            files: vec![day],
            config: Some(cheaper),
            boot: std::time::Duration::from_secs(60),
            chart: Some(out.join("replay.svg")),
            json: false,
        };
        let began = Instant::now();
        let output = do_scaler::commands::replay::run(&request);
        print!("{}{}", output.stdout, output.stderr);
        println!(
            "(the example's recorded diurnal day replayed through target = 0.75 in {:.1} s)\n",
            began.elapsed().as_secs_f64()
        );
    }
    println!(
        "{} plays ({} traces × {} controllers × {repeat}) at {speed}x, {parallel} at once, in {:.0} s",
        rows.len() * repeat,
        traces.len(),
        controllers.len(),
        started.elapsed().as_secs_f64()
    );
}
