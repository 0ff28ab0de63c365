//! A droplet whose create was answered but that is gone before any listing showed it (deleted
//! by hand at once, or its create failed after it was accepted) stops counting as booting at
//! the next tick, so the group makes it up at once instead of an hour later.

use do_scaler::clock::ManualClock;
use do_scaler::sim::{Sim, SimOptions};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::*;
#[path = "common/manual.rs"]
mod manual;

const WANTS_TWO: &str = r#"tag = "web"
min = 1
max = 3
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-1vcpu-1gb"
image = "ubuntu-24-04-x64"
[cooldown]
up = "0s"
[[rule]]
name = "wanted"
desired = '2'
"#;

#[tokio::test]
async fn a_created_droplet_gone_before_any_listing_is_made_up_at_the_next_tick() {
    let clock = ManualClock::new(chrono::Utc::now());
    let sim = Sim::start(SimOptions {
        seed_droplets: 1,
        seed_managed_tag: Some("do-scaler:default".into()),
        rate_limit: None,
        clock: Arc::new(clock.clone()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let dir = config_dir(WANTS_TWO);
    let (daemon, mut task, _status) =
        manual::start(dir.path(), &sim, &clock, Duration::from_secs(20)).await;
    let limit = Duration::from_secs(20);
    manual::tick(&mut task, &sim, &clock, limit).await;
    let made = sim.created_names();
    assert_eq!(made.len(), 1, "one create to reach 2");
    // Gone before the next tick lists the group.
    let id = sim
        .droplets()
        .iter()
        .find(|d| d.name == made[0])
        .map(|d| d.id)
        .unwrap();
    assert!(sim.delete(id));
    let (report, _) = manual::tick(&mut task, &sim, &clock, limit).await;
    assert_eq!(report.listing.len(), 1);
    use do_scaler::state::Journal;
    assert!(
        daemon.store.unlisted("web").unwrap().is_empty(),
        "the vanished droplet no longer counts as booting"
    );
    // The next decision sees one droplet and makes up the other.
    manual::tick(&mut task, &sim, &clock, limit).await;
    manual::tick(&mut task, &sim, &clock, limit).await;
    assert_eq!(
        sim.droplets().len(),
        2,
        "made up at once, not an hour later"
    );
    assert_eq!(sim.created_names().len(), 2);
}
