//! The scraper against the sim's droplets: good, hung, garbage, not yet active, deleted.

use do_scaler::config::{AddressKind, Scrape};
use do_scaler::metrics::history::{DropletIdentity, History};
use do_scaler::metrics::scrape::{MissingReason, Scraper, targets};
use do_scaler::query::compile;
use do_scaler::sim::{Faults, Sim, SimOptions};
use std::time::{Duration, Instant};

#[tokio::test]
async fn every_droplet_is_scraped_or_missing_with_its_reason() {
    let sim = Sim::start(SimOptions {
        seed_droplets: 40,
        open_ports: Vec::new(),
        faults: Faults {
            scrape_hang_share: 0.2,
            scrape_garbage_share: 0.2,
            ..Faults::default()
        },
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let mut droplets = sim.droplets();
    // One droplet still booting, one gone since the listing.
    droplets[0].status = do_scaler::digitalocean::DropletStatus::New;
    droplets[0].networks.v4.clear();
    let gone = droplets[1].id;
    assert!(sim.delete(gone));

    let scrape = Scrape {
        address: AddressKind::Private,
        port: 9110,
        path: "/metrics".into(),
        timeout: Duration::from_millis(500),
    };
    let (ready, mut missing) = targets(&droplets, &scrape, &|_| false);
    assert_eq!(ready.len(), 39);
    assert!(matches!(missing[0].1, MissingReason::NotActive(_)));

    let scraper = Scraper::new(16, 1 << 20).unwrap();
    let started = Instant::now();
    let results = scraper
        .fetch_all(
            &ready,
            scrape.timeout,
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "hung endpoints are cut at the timeout: {:?}",
        started.elapsed()
    );

    let expression = compile(r#"rate(node_cpu_seconds_total{mode="idle"}[1m])"#).unwrap();
    let selectors = expression
        .node
        .selectors()
        .into_iter()
        .map(|(s, _)| s.clone())
        .collect();
    let mut history = History::new(selectors, Duration::from_secs(300), 100);
    let mut recorded = 0;
    for (target, result) in ready.iter().zip(results) {
        let identity = DropletIdentity {
            id: target.droplet_id,
            name: target.droplet_name.clone(),
            instance: target.instance.clone(),
        };
        match result.and_then(|body| {
            history
                .record(&identity, 0, &body, &target.url)
                .map_err(|e| MissingReason::Garbage(e.to_string()))
        }) {
            Ok(_) => recorded += 1,
            Err(reason) => missing.push((target.droplet_id, reason)),
        }
    }
    let kinds: Vec<&str> = missing.iter().map(|(_, r)| r.kind()).collect();
    assert!(kinds.contains(&"timeout"), "{kinds:?}");
    assert!(kinds.contains(&"garbage"), "{kinds:?}");
    assert!(
        kinds.contains(&"unreachable"),
        "the deleted droplet refuses: {kinds:?}"
    );
    assert_eq!(recorded + missing.len(), 40);
    assert!(recorded >= 15, "{recorded}");
    assert_eq!(
        history.size().0,
        recorded * 2,
        "two idle CPU series per recorded droplet"
    );
}
