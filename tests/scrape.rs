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
            source: target.source.clone(),
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

/// Family name → (type, label keys of its samples), from an exposition.
fn shape(
    text: &str,
) -> std::collections::BTreeMap<String, (String, std::collections::BTreeSet<Vec<String>>)> {
    let mut families = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(
                name.to_string(),
                (kind.to_string(), std::collections::BTreeSet::new()),
            );
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            let keys: Vec<String> = if line[name_end..].starts_with('{') {
                let inner = &line[name_end + 1..line.rfind('}').unwrap()];
                inner
                    .split("\",")
                    .map(|pair| pair.split('=').next().unwrap().to_string())
                    .collect()
            } else {
                Vec::new()
            };
            families.get_mut(name).unwrap().1.insert(keys);
        }
    }
    families
}

/// Issue 17: a simulated droplet's endpoint looks like a real do-agent 3.18.14: the same
/// families, types and label keys as the capture, Go's number formatting, the content type
/// with `escaping=values`, and a chunked gzip answer when the scraper accepts gzip.
#[tokio::test]
async fn a_simulated_droplet_serves_what_do_agent_serves() {
    use std::io::{Read, Write};
    let sim = Sim::start(SimOptions {
        seed_droplets: 1,
        open_ports: Vec::new(),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let droplet = &sim.droplets()[0];
    let address = droplet.private_ipv4().unwrap().to_string();
    let head_and_body = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect((address.as_str(), 9110)).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    let split = head_and_body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap();
    let head = String::from_utf8_lossy(&head_and_body[..split]).to_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8; escaping=values"),
        "{head}"
    );
    // De-chunk, then gunzip.
    let mut rest = &head_and_body[split + 4..];
    let mut gzipped = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            break;
        }
        gzipped.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gzipped[..])
        .read_to_string(&mut text)
        .unwrap();
    let capture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/do-agent-3.18.14.prom"
    ))
    .unwrap();
    assert_eq!(shape(&text), shape(&capture), "{text}");
    // Large numbers in Go's exponent form, as the capture has them.
    assert!(
        text.contains("node_memory_MemTotal_bytes 4.294967296e+09"),
        "{text}"
    );
    // And the scraper reads it (through its gzip path).
    let scraper = Scraper::new(1, 1 << 20).unwrap();
    let body = scraper
        .fetch(
            &format!("http://{}:9110/metrics", droplet.private_ipv4().unwrap()),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(body.contains("sonar_build_info"));
}
