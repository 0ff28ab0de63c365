//! The DigitalOcean client against the in-process simulated DigitalOcean on loopback: what the
//! sim saw is the evidence.

use do_scaler::config::ApiToken;
use do_scaler::digitalocean::{
    ApiError, Client, ClientOptions, CreateDroplets, DeleteOutcome, ImageRef, RetryPolicy,
};
use do_scaler::sim::{Sim, SimOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn options(droplets: u32) -> SimOptions {
    SimOptions {
        seed_droplets: droplets,
        open_ports: Vec::new(),
        boot_delay: Duration::from_secs(3600),
        ..SimOptions::default()
    }
}

fn client(sim: &Sim) -> Client {
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.retry = RetryPolicy {
        attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(40),
    };
    options.request_timeout = Duration::from_secs(2);
    options.rate_limits = None;
    Client::new(options).unwrap()
}

fn request(names: &[&str]) -> CreateDroplets {
    CreateDroplets {
        name: None,
        names: Some(names.iter().map(|n| n.to_string()).collect()),
        region: Some("nyc3".into()),
        size: "s-1vcpu-1gb".into(),
        image: ImageRef::Slug("ubuntu-24-04-x64".into()),
        ssh_keys: Vec::new(),
        ipv6: false,
        monitoring: true,
        tags: vec!["web".into(), "do-scaler:default".into()],
        user_data: Some("#cloud-config\nsecret: hunter2\n".into()),
        vpc_uuid: None,
    }
}

#[tokio::test]
async fn lists_a_group_across_pages() {
    // Links naming the real API's host, as the real API writes them: the client rebases them
    // onto its own base URL (and never sends the token elsewhere).
    let sim = Sim::start(SimOptions {
        public_links: true,
        ..options(450)
    })
    .await
    .unwrap();
    let droplets = client(&sim).list_droplets_by_tag("web").await.unwrap();
    assert_eq!(droplets.len(), 450);
    let mut ids: Vec<u64> = droplets.iter().map(|d| d.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 450, "no droplet twice");
    assert_eq!(
        sim.api_counts()["GET /v2/droplets"],
        3,
        "one call per 200 droplets"
    );
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.query.iter().any(|(k, v)| k == "per_page" && v == "200")),
        "every page asks for 200"
    );
}

#[tokio::test]
async fn retries_429_and_503_then_succeeds() {
    let sim = Sim::start(options(3)).await.unwrap();
    let client = client(&sim);
    sim.update_faults(|f| f.throttle_next = 2);
    assert_eq!(client.list_droplets_by_tag("web").await.unwrap().len(), 3);
    assert_eq!(sim.api_counts()["GET /v2/droplets"], 3);
    sim.update_faults(|f| f.fail_next = 2);
    assert_eq!(client.list_droplets_by_tag("web").await.unwrap().len(), 3);
    assert_eq!(sim.api_counts()["GET /v2/droplets"], 6);
    assert!(
        client.rate_limit().remaining.is_some(),
        "ratelimit headers are kept"
    );
    let counts = client.call_counts();
    assert_eq!(
        counts[&("GET".to_string(), "/v2/droplets".to_string(), 429)],
        2
    );
    assert_eq!(
        counts[&("GET".to_string(), "/v2/droplets".to_string(), 503)],
        2
    );
}

#[tokio::test]
async fn gives_up_after_the_last_attempt() {
    let sim = Sim::start(options(1)).await.unwrap();
    sim.update_faults(|f| f.fail_next = 100);
    let error = client(&sim).list_droplets_by_tag("web").await.unwrap_err();
    assert!(
        matches!(error, ApiError::Status { status: 503, .. }),
        "{error}"
    );
    assert_eq!(sim.api_counts()["GET /v2/droplets"], 4);
}

#[tokio::test]
async fn deleting_a_droplet_that_is_gone_is_success() {
    let sim = Sim::start(options(1)).await.unwrap();
    let client = client(&sim);
    let id = sim.droplets()[0].id;
    assert_eq!(
        client.delete_droplet(id).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        client.delete_droplet(id).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert!(sim.droplets().is_empty());
}

#[tokio::test]
async fn a_create_answered_500_after_it_landed_is_not_duplicated() {
    let sim = Sim::start(options(0)).await.unwrap();
    sim.update_faults(|f| f.create_succeeds_then_500 = 1);
    let report = client(&sim)
        .create_droplets(&request(&["web-a1", "web-a2", "web-a3"]), "web")
        .await;
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.created.len(), 3);
    assert_eq!(
        sim.created_names(),
        ["web-a1", "web-a2", "web-a3"],
        "each name created once"
    );
    assert_eq!(
        sim.api_counts()["POST /v2/droplets"],
        1,
        "the create was not repeated"
    );
}

#[tokio::test]
async fn a_create_throttled_is_retried_because_it_was_not_processed() {
    let sim = Sim::start(options(0)).await.unwrap();
    sim.update_faults(|f| f.throttle_next = 1);
    let report = client(&sim)
        .create_droplets(&request(&["web-b1"]), "web")
        .await;
    assert!(report.failure.is_none());
    assert_eq!(sim.created_names(), ["web-b1"]);
    assert_eq!(sim.api_counts()["POST /v2/droplets"], 2);
}

#[tokio::test]
async fn large_creates_go_ten_at_a_time() {
    let sim = Sim::start(options(0)).await.unwrap();
    let names: Vec<String> = (1..=25).map(|i| format!("web-c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let report = client(&sim).create_droplets(&request(&refs), "web").await;
    assert_eq!(report.created.len(), 25);
    assert_eq!(sim.api_counts()["POST /v2/droplets"], 3);
}

#[tokio::test]
async fn at_the_droplet_limit_what_fits_is_created_and_the_rest_reported() {
    let sim = Sim::start(options(1)).await.unwrap();
    sim.set_droplet_limit(3);
    let report = client(&sim)
        .create_droplets(&request(&["web-d1", "web-d2", "web-d3", "web-d4"]), "web")
        .await;
    assert!(
        matches!(report.failure, Some(ApiError::DropletLimit { .. })),
        "{:?}",
        report.failure
    );
    let created: Vec<&str> = report.created.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(created, ["web-d1", "web-d2"], "room for two");
    assert_eq!(report.missing, ["web-d3", "web-d4"]);
    assert!(report.uncertain.is_empty());
    assert_eq!(sim.created_names(), ["web-d1", "web-d2"]);
    // Refused whole, then what fits: two creates, never a retry of the refused request.
    assert_eq!(sim.api_counts()["POST /v2/droplets"], 2);
    // With no room at all, nothing more is asked.
    let report = client(&sim)
        .create_droplets(&request(&["web-d5"]), "web")
        .await;
    assert!(matches!(
        report.failure,
        Some(ApiError::DropletLimit { .. })
    ));
    assert_eq!(sim.api_counts()["POST /v2/droplets"], 3);
}

/// Trust at the edges (2): the real API's listings lag creates. An ambiguous answer whose
/// droplets the listing does not show yet is never answered by sending the names again:
/// they are reported uncertain, and each name is created once.
#[tokio::test]
async fn an_ambiguous_create_is_never_resent_when_the_listing_lags() {
    let sim = Sim::start(options(0)).await.unwrap();
    sim.update_faults(|f| {
        f.create_succeeds_then_500 = 1;
        f.list_lag = Duration::from_secs(5);
    });
    let report = client(&sim)
        .create_droplets(&request(&["web-e1", "web-e2"]), "web")
        .await;
    assert!(report.failure.is_some());
    assert_eq!(report.uncertain, ["web-e1", "web-e2"]);
    assert_eq!(sim.created_names(), ["web-e1", "web-e2"], "each name once");
    assert_eq!(sim.api_counts()["POST /v2/droplets"], 1, "never resent");
}

/// Trust at the edges (2): a listing that shows a droplet twice across pages keeps it once; a
/// listing whose count disagrees with its own `meta.total` is taken again, three times at
/// most, then refused instead of decided on.
#[tokio::test]
async fn listings_are_deduplicated_and_checked_against_their_total() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let droplet = |id: u64| {
        let sim_droplet = serde_json::json!({
            "id": id, "name": format!("web-{id}"), "memory": 1024, "vcpus": 1, "disk": 25,
            "locked": false, "status": "active", "created_at": "2026-01-01T00:00:00Z",
            "features": [], "backup_ids": [], "next_backup_window": null, "snapshot_ids": [],
            "image": {}, "volume_ids": [], "size": {}, "size_slug": "s-1vcpu-1gb",
            "networks": { "v4": [], "v6": [] },
            "region": { "slug": "nyc3", "name": "nyc3", "sizes": [], "available": true, "features": [] },
            "tags": ["web"], "vpc_uuid": null
        });
        sim_droplet
    };
    // Page 1: droplets 1, 2; page 2: 2 again, 3; total 3 → consistent once deduplicated.
    // `/bad` always claims a total of 5.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/v2/droplets",
        axum::routing::get(
            move |axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let bad = q.get("tag_name").map(String::as_str) == Some("bad");
                    let total = if bad { 5 } else { 3 };
                    let page = q.get("page").map(String::as_str).unwrap_or("1");
                    let tag = q.get("tag_name").cloned().unwrap_or_default();
                    let body = if page == "1" {
                        serde_json::json!({
                            "droplets": [droplet(1), droplet(2)],
                            "links": { "pages": { "next": format!("https://api.digitalocean.com/v2/droplets?page=2&per_page=200&tag_name={tag}") } },
                            "meta": { "total": total }
                        })
                    } else {
                        serde_json::json!({
                            "droplets": [droplet(2), droplet(3)],
                            "links": { "pages": {} },
                            "meta": { "total": total }
                        })
                    };
                    axum::Json(body)
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut options = ClientOptions::new(url, ApiToken::new("t"));
    options.rate_limits = None;
    let client = Client::new(options).unwrap();
    let listed = client.list_droplets_by_tag("web").await.unwrap();
    let ids: Vec<u64> = listed.iter().map(|d| d.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one listing of two pages");
    let error = client.list_droplets_by_tag("bad").await.unwrap_err();
    assert!(
        matches!(error, ApiError::Inconsistent { attempts: 3, .. }),
        "{error}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2 + 6,
        "three listings of two pages"
    );
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let sim = Sim::start(options(0)).await.unwrap();
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new("wrong"));
    options.rate_limits = None;
    let error = Client::new(options).unwrap().account().await.unwrap_err();
    assert!(
        matches!(error, ApiError::Unauthorized { status: 401, .. }),
        "{error}"
    );
}

/// A `tracing` writer into a shared buffer, to read back every log line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_and_user_data_appear_in_no_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let token = "dop_v1_0123456789abcdef-very-secret";
    let sim = Sim::start(SimOptions {
        token: token.into(),
        ..options(2)
    })
    .await
    .unwrap();
    let client = client(&sim);
    sim.update_faults(|f| {
        f.fail_next = 2;
        f.create_succeeds_then_500 = 1;
    });
    client.list_droplets_by_tag("web").await.unwrap();
    let report = client.create_droplets(&request(&["web-e1"]), "web").await;
    tracing::info!(client = ?client, request = ?request(&["web-e1"]), "debug output of client and request");
    let mut bad = ClientOptions::new(sim.api_url(), ApiToken::new(format!("{token}-wrong")));
    bad.rate_limits = None;
    let refused = Client::new(bad).unwrap().account().await.unwrap_err();
    tracing::warn!(error = %refused, "refused");
    assert!(report.failure.is_none());

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("retrying"), "the retries were logged: {logs}");
    assert!(
        logs.contains("ambiguous"),
        "the ambiguous create was logged: {logs}"
    );
    assert!(
        !logs.contains(token),
        "the token leaked into the logs: {logs}"
    );
    assert!(
        !logs.contains("hunter2"),
        "user data leaked into the logs: {logs}"
    );
    assert!(!format!("{refused} {refused:?}").contains(token));
}

#[tokio::test]
async fn with_demand_fixed_doubling_the_droplets_halves_utilisation() {
    use do_scaler::clock::ManualClock;
    let clock = ManualClock::new(chrono::Utc::now());
    let sim = Sim::start(SimOptions {
        clock: Arc::new(clock.clone()),
        demand: do_scaler::sim::Demand::Constant(4.0),
        seed_size: "s-2vcpu-4gb".into(),
        boot_delay: Duration::from_secs(30),
        ..options(4)
    })
    .await
    .unwrap();
    clock.advance(Duration::from_secs(60));
    sim.sync();
    let first = sim.droplets()[0].clone();
    let endpoint = format!("http://{}:9110/metrics", first.private_ipv4().unwrap());
    let before = measured_utilisation(&endpoint, &clock, &sim).await;
    assert!(
        (before - 0.5).abs() < 0.01,
        "4 vCPUs of work on 4 droplets of 2 vCPUs: {before}"
    );
    assert!((sim.utilisation(first.id).unwrap() - before).abs() < 0.01);

    let names: Vec<String> = (1..=4).map(|i| format!("web-f{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut create = request(&refs);
    create.size = "s-2vcpu-4gb".into();
    client(&sim).create_droplets(&create, "web").await;
    clock.advance(Duration::from_secs(60));
    sim.sync();
    let after = measured_utilisation(&endpoint, &clock, &sim).await;
    assert!(
        (after - before / 2.0).abs() < 0.01,
        "{after} is not half of {before}"
    );
    let address = sim
        .droplets()
        .iter()
        .find(|d| d.name == "web-f1")
        .unwrap()
        .private_ipv4()
        .unwrap()
        .to_string();
    assert!(address.starts_with(&format!("127.{}.", sim.subnet())));
}

/// CPU utilisation as a scraper sees it: two scrapes 30 simulated seconds apart,
/// 1 − Δidle / Δall over every CPU.
async fn measured_utilisation(
    endpoint: &str,
    clock: &do_scaler::clock::ManualClock,
    sim: &Sim,
) -> f64 {
    fn cpu_totals(body: &str) -> (f64, f64) {
        let (mut idle, mut all) = (0.0, 0.0);
        for line in body
            .lines()
            .filter(|l| l.starts_with("node_cpu_seconds_total{"))
        {
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            all += value;
            if line.contains("mode=\"idle\"") {
                idle += value;
            }
        }
        (idle, all)
    }
    let first = reqwest::get(endpoint).await.unwrap().text().await.unwrap();
    clock.advance(Duration::from_secs(30));
    sim.sync();
    let second = reqwest::get(endpoint).await.unwrap().text().await.unwrap();
    let ((idle0, all0), (idle1, all1)) = (cpu_totals(&first), cpu_totals(&second));
    1.0 - (idle1 - idle0) / (all1 - all0)
}

#[tokio::test]
async fn a_delete_that_times_out_is_retried_and_found_gone() {
    let sim = Sim::start(options(1)).await.unwrap();
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.request_timeout = Duration::from_millis(500);
    options.retry.base_delay = Duration::from_millis(5);
    options.rate_limits = None;
    let client = Client::new(options).unwrap();
    sim.update_faults(|f| f.delete_hang = Some(Duration::from_secs(5)));
    let id = sim.droplets()[0].id;
    assert_eq!(
        client.delete_droplet(id).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert!(sim.droplets().is_empty());
    assert_eq!(sim.api_counts()["DELETE /v2/droplets/{id}"], 2);
}

/// Trust at the edges (2): a 429 is waited out for as long as the server says, through
/// `ratelimit-reset` when there is no `retry-after`, not cut to a fixed cap.
#[tokio::test]
async fn a_429_waits_until_the_rate_limit_resets() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/v2/account",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    let reset = chrono::Utc::now().timestamp() + 3;
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("ratelimit-reset", reset.to_string())],
                        axum::Json(serde_json::json!({"id": "too_many_requests", "message": "slow down"})),
                    )
                        .into_response()
                } else {
                    axum::Json(serde_json::json!({"account": {"droplet_limit": 10, "email": "x", "status": "active"}}))
                        .into_response()
                }
            }
        }),
    );
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut options = ClientOptions::new(url, ApiToken::new("t"));
    options.rate_limits = None;
    options.retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    };
    let client = Client::new(options).unwrap();
    let started = std::time::Instant::now();
    let account = client.account().await.unwrap();
    assert_eq!(account.droplet_limit, 10);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "waited {:?}, not until the reset",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_write_gate_is_asked_before_each_write_and_a_refusal_sends_nothing() {
    let sim = Sim::start(options(1)).await.unwrap();
    // The gate lets one write through (a lease running out after it), then refuses.
    let asked = Arc::new(Mutex::new(0u32));
    let counter = asked.clone();
    let client = client(&sim).with_write_gate(Arc::new(move || {
        let mut asked = counter.lock().unwrap();
        *asked += 1;
        if *asked == 1 {
            Ok(())
        } else {
            Err("the lease has no room left".into())
        }
    }));
    // Twelve names go in two requests: the second is refused, not sent.
    let names: Vec<String> = (0..12).map(|i| format!("web-gate{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let report = client.create_droplets(&request(&refs), "web").await;
    assert_eq!(report.created.len(), 10);
    assert_eq!(report.missing.len(), 2);
    let failure = report.failure.unwrap().to_string();
    assert!(failure.contains("the lease has no room left"), "{failure}");
    assert_eq!(
        sim.created_names().len(),
        10,
        "the refused chunk never reached the API"
    );
    // Reads are not writes: listing goes on; a delete is refused and the droplet stays.
    let listed = client.list_droplets_by_tag("web").await.unwrap();
    let id = listed[0].id;
    assert!(client.delete_droplet(id).await.is_err());
    assert!(sim.droplets().iter().any(|d| d.id == id));
    assert_eq!(
        *asked.lock().unwrap(),
        3,
        "asked once per write, never for a read"
    );
}
