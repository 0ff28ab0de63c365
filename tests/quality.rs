//! Issue 22, part 4: the decision-quality harness on a shortened step (the full traces are
//! `bench/quality.sh`): the sim at speed, each controller a real daemon keeping the sim's clock
//! through its clock URL, scored from what the sim saw.

use do_scaler::quality::{self, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortened_step_scores_every_controller() {
    let dir = tempfile::tempdir().unwrap();
    // 2.4 vCPUs for 3 minutes, then 14 for 27 (DO's 10-minute cooldown needs three steps):
    // at 80 %, 9 active droplets serve 14 vCPUs.
    let trace = quality::step(3.0, 30.0);
    let controllers = quality::variants().unwrap();
    let plays = controllers.iter().enumerate().map(|(index, controller)| {
        let (trace, controller) = (trace.clone(), controller.clone());
        let path = dir.path().join(index.to_string());
        tokio::spawn(async move { quality::play(&trace, &controller, 150.0, &path).await })
    });
    let mut rows = Vec::new();
    for (controller, play) in controllers.iter().zip(plays.collect::<Vec<_>>()) {
        let score = play.await.unwrap().unwrap();
        // Every controller reacts to the step: it scales up, is short for a while after the
        // step (boots take a minute), and ends with enough active droplets for the new demand.
        assert!(score.scale_events >= 1, "{}: {score:?}", controller.name);
        assert!(score.ticks_missed < 0.2, "{}: {score:?}", controller.name);
        assert!(
            score.under_droplet_minutes > 1.0,
            "{}: {score:?}",
            controller.name
        );
        assert!(score.final_active >= 9, "{}: {score:?}", controller.name);
        assert!(
            score.served > 0.5 && score.served < 1.0,
            "{}: {score:?}",
            controller.name
        );
        // 30 minutes at 2 to 20 droplets.
        assert!(
            (1.0..=10.0).contains(&score.droplet_hours),
            "{}: {score:?}",
            controller.name
        );
        rows.push(Row {
            trace: trace.name.to_string(),
            controller: controller.name.to_string(),
            scores: vec![score],
        });
    }
    let table = quality::table(&rows);
    eprintln!("{table}");
    assert_eq!(table.lines().count(), 2 + controllers.len());
}
