//! Issue 22, part 4: the decision-quality harness on a shortened step (the full traces are
//! `bench/quality.sh`): the sim at speed, each controller a real daemon keeping the sim's clock.

use do_scaler::quality::{self, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortened_step_scores_every_controller() {
    let dir = tempfile::tempdir().unwrap();
    let trace = quality::step(5.0, 25.0);
    let mut rows = Vec::new();
    for (index, controller) in quality::controllers().unwrap().iter().enumerate() {
        let score = quality::play(
            &trace,
            controller,
            100.0,
            &dir.path().join(index.to_string()),
        )
        .await
        .unwrap();
        rows.push(Row {
            trace: trace.name.to_string(),
            controller: controller.name.to_string(),
            score,
        });
    }
    eprintln!("{}", quality::table(&rows));
}
