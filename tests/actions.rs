//! Action scripts against the in-process sim: what the sim saw is the evidence.

use chrono::Utc;
use do_scaler::config::{ApiToken, Group, group_from_toml};
use do_scaler::daemon::GroupRuntime;
use do_scaler::digitalocean::{Client, ClientOptions, Droplet};
use do_scaler::policy::{Decision, GroupMemory};
use do_scaler::script::runner::{ActionRequest, RunReport, Runner};
use do_scaler::script::{Scripts, compile_all};
use do_scaler::sim::{Sim, SimOptions, api::new_load_balancer};
use do_scaler::state::{Intent, MemoryJournal};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MANAGED: &str = "do-scaler:default";

fn group(extra: &str) -> Group {
    group_from_toml(
        "web",
        &format!(
            "tag = \"web\"\nmin = 1\nmax = 4\n{extra}\n[droplet]\nregion = \"nyc3\"\nsize = \"s-1vcpu-1gb\"\nimage = \"ubuntu-24-04-x64\"\ntags = [\"frontend\"]\n[scale_in]\nmin_age = \"0s\"\n[stabilization]\ndown = \"0s\"\n[[rule]]\nname = \"cpu\"\nexpr = '1 - avg(rate(node_cpu_seconds_total{{mode=\"idle\"}}[1m]))'\ntarget = 0.5\n"
        ),
    )
    .unwrap()
}

struct World {
    sim: Sim,
    client: Client,
    journal: Arc<MemoryJournal>,
}

async fn world(seed: u32, managed: bool) -> World {
    world_booting(seed, managed, Duration::from_millis(300)).await
}

async fn world_booting(seed: u32, managed: bool, boot_delay: Duration) -> World {
    let sim = Sim::start(SimOptions {
        seed_droplets: seed,
        seed_managed_tag: managed.then(|| MANAGED.to_string()),
        boot_delay,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.rate_limits = None;
    let client = Client::new(options).unwrap();
    World {
        sim,
        client,
        journal: Arc::new(MemoryJournal::default()),
    }
}

fn scripts(extra: &[(&str, &str)]) -> Arc<Scripts> {
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in extra {
        std::fs::write(dir.path().join(format!("{name}.rhai")), source).unwrap();
    }
    Arc::new(compile_all(dir.path()).unwrap())
}

/// Decides for `group` against the sim with the rule's value forced to `value`.
fn decision(group: &Group, droplets: &[Droplet], value: f64) -> Decision {
    let mut runtime = GroupRuntime::new(group.clone(), MANAGED.into()).unwrap();
    let mut members = runtime.members(droplets, &Default::default(), Utc::now());
    // As if every droplet answered its scrape with `value`.
    for member in &mut members {
        member.scraped = true;
    }
    do_scaler::policy::decide(
        &do_scaler::policy::Input {
            group,
            members: &members,
            observations: &[do_scaler::policy::Observation::Number(value)],
            unread: &[],
            now: Utc::now(),
        },
        &mut GroupMemory::default(),
    )
}

async fn run(
    w: &World,
    group: &Group,
    decision: Decision,
    actions: &[&str],
    scripts: Arc<Scripts>,
    deadline: Duration,
) -> RunReport {
    let runner = Runner::new(scripts, w.client.clone(), w.journal.clone());
    runner
        .run(ActionRequest {
            purpose: Default::default(),
            group: group.clone(),
            managed_tag: MANAGED.into(),
            decision,
            droplets: w.sim.droplets(),
            states: Default::default(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            deadline,
            creates_last_hour: 0,
        })
        .await
}

#[tokio::test]
async fn a_scale_up_creates_then_health_checks_with_unique_names_and_tags() {
    let w = world(2, true).await;
    let g = group(
        "[actions.params.health_check_tcp]\nports = [22, 80]\ntimeout = \"1s\"\ninterval = \"200ms\"\ntries = 5\n",
    );
    let d = decision(&g, &w.sim.droplets(), 0.9);
    assert_eq!((d.current, d.desired), (2, 4));
    let report = run(
        &w,
        &g,
        d,
        &["digitalocean_create_droplet", "health_check_tcp"],
        scripts(&[]),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(report.failure(), None, "{:?}", report.results);
    assert_eq!(report.created.len(), 2);
    let droplets = w.sim.droplets();
    assert_eq!(droplets.len(), 4);
    let mut names: Vec<&str> = droplets.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4, "unique names");
    for created in &report.created {
        let now = droplets.iter().find(|d| d.id == created.id).unwrap();
        assert!(
            now.has_tag("web") && now.has_tag(MANAGED) && now.has_tag("frontend"),
            "{:?}",
            now.tags
        );
        assert!(now.name.starts_with("web-"));
    }
    let entries = w.journal.entries();
    assert_eq!(entries.len(), 1);
    assert!(matches!(&entries[0].0.intent, Intent::Create { names } if names.len() == 2));
    assert!(
        entries[0].1.as_deref().unwrap().starts_with("created"),
        "settled after the answer"
    );
}

#[tokio::test]
async fn a_script_asking_past_max_gets_an_error_and_nothing_is_created() {
    let w = world(3, true).await;
    let g = group("");
    let d = decision(&g, &w.sim.droplets(), 0.9);
    let report = run(
        &w,
        &g,
        d,
        &["greedy"],
        scripts(&[("greedy", "create_droplets(5);")]),
        Duration::from_secs(10),
    )
    .await;
    let failure = report.failure().unwrap();
    assert!(
        failure.contains("past the group's max 4: nothing was created"),
        "{failure}"
    );
    assert_eq!(w.sim.droplets().len(), 3);
    assert!(!w.sim.api_counts().contains_key("POST /v2/droplets"));
}

#[tokio::test]
async fn destroy_refuses_protected_unmanaged_and_non_victim_droplets() {
    let w = world(4, true).await;
    let g = group("");
    let droplets = w.sim.droplets();
    // The decision chose two victims.
    let d = decision(&g, &droplets, 0.2);
    assert_eq!(d.victims.len(), 2, "{:#?}", d.steps);
    let not_victim = droplets
        .iter()
        .find(|x| !d.victims.contains(&x.id))
        .unwrap()
        .id;
    let script = format!("destroy_droplets([{not_victim}]);");
    let report = run(
        &w,
        &g,
        d.clone(),
        &["rogue"],
        scripts(&[("rogue", &script)]),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        report
            .failure()
            .unwrap()
            .contains("not among the decision's victims"),
        "{:?}",
        report.failure()
    );
    // A victim that turns out protected or unmanaged is refused too.
    let victim = d.victims[0];
    for (tag, expected) in [
        ("do-scaler-protect", "protect tag"),
        ("", "did not create it"),
    ] {
        let mut droplets = droplets.clone();
        let droplet = droplets.iter_mut().find(|x| x.id == victim).unwrap();
        if tag.is_empty() {
            droplet.tags.retain(|t| t != MANAGED);
        } else {
            droplet.tags.push(tag.into());
        }
        let runner = Runner::new(scripts(&[]), w.client.clone(), w.journal.clone());
        let report = runner
            .run(ActionRequest {
                purpose: Default::default(),
                group: g.clone(),
                managed_tag: MANAGED.into(),
                decision: d.clone(),
                droplets: droplets.clone(),
                states: Default::default(),
                actions: vec!["digitalocean_destroy_droplet".into()],
                deadline: Duration::from_secs(10),
                creates_last_hour: 0,
            })
            .await;
        assert!(
            report.failure().unwrap().contains(expected),
            "{:?}",
            report.failure()
        );
    }
    assert_eq!(w.sim.droplets().len(), 4, "nothing was destroyed");
    // The decision's own victims go.
    let report = run(
        &w,
        &g,
        d,
        &["digitalocean_destroy_droplet"],
        scripts(&[]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(report.failure(), None);
    assert_eq!(w.sim.droplets().len(), 2);
}

#[tokio::test]
async fn droplet_writes_through_the_generic_call_are_refused() {
    let w = world(1, true).await;
    let g = group("");
    let d = decision(&g, &w.sim.droplets(), 0.5);
    for script in [
        r#"digitalocean("POST", "/v2/droplets", #{ name: "x", size: "s-1vcpu-1gb", image: "ubuntu-24-04-x64" });"#,
        r#"digitalocean("DELETE", "/v2/droplets?tag_name=web", ());"#,
        r#"digitalocean("GET", "https://evil.example/v2/droplets", ());"#,
    ] {
        let report = run(
            &w,
            &g,
            d.clone(),
            &["sneaky"],
            scripts(&[("sneaky", script)]),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            report.failure().unwrap().contains("digitalocean:"),
            "{:?}",
            report.failure()
        );
    }
    assert_eq!(w.sim.droplets().len(), 1);
    assert!(!w.sim.api_counts().contains_key("POST /v2/droplets"));
    assert!(!w.sim.api_counts().contains_key("DELETE /v2/droplets"));
}

#[tokio::test]
async fn runaway_and_blocked_scripts_stop_at_their_deadline_and_the_next_run_works() {
    // Droplets boot for an hour: wait_active blocks.
    let w = world_booting(1, true, Duration::from_secs(3600)).await;
    let g = group("");
    let d = decision(&g, &w.sim.droplets(), 0.5);
    let stuck = "let x = create_droplets(1); wait_active([x[0].id], 3600000);";
    let scripts = scripts(&[("spin", "let i = 0; loop { i += 1; }"), ("stuck", stuck)]);
    for name in ["spin", "stuck"] {
        let started = Instant::now();
        let report = run(
            &w,
            &g,
            d.clone(),
            &[name],
            scripts.clone(),
            Duration::from_secs(2),
        )
        .await;
        let took = started.elapsed();
        let failure = report.failure().unwrap().to_string();
        assert!(
            took >= Duration::from_secs(1) && took <= Duration::from_secs(3),
            "{name} took {took:?}: {failure}"
        );
        assert!(
            failure.contains(name) && failure.contains("deadline"),
            "{failure}"
        );
    }
    let report = run(
        &w,
        &g,
        d,
        &["digitalocean_create_droplet"],
        scripts,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(report.failure(), None, "the next run works");
}

#[tokio::test]
async fn a_failed_health_check_destroys_what_it_made_and_reports() {
    let w = world(2, true).await;
    // Nothing listens on port 5999 of the sim's droplets.
    let g = group(
        "[actions.params.health_check_tcp]\nports = [5999]\ntimeout = \"200ms\"\ninterval = \"50ms\"\ntries = 2\n",
    );
    let d = decision(&g, &w.sim.droplets(), 0.9);
    let report = run(
        &w,
        &g,
        d,
        &["digitalocean_create_droplet", "health_check_tcp"],
        scripts(&[]),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        report.failure().unwrap().contains("health check failed"),
        "{:?}",
        report.results
    );
    assert_eq!(report.deleted.len(), 2, "both new droplets destroyed");
    assert_eq!(w.sim.droplets().len(), 2, "back where it started");
    // Made and destroyed in one run: no listing will show them, so they must not count as
    // booting for the next hour.
    use do_scaler::state::Journal;
    assert_eq!(w.journal.unlisted("web").unwrap(), vec![]);
}

#[tokio::test]
async fn the_load_balancer_follows_the_group() {
    let w = world(2, true).await;
    w.sim.add_load_balancer(new_load_balancer(
        "4de7ac8b-495b-4884-9a69-1050c6793cd6",
        "lb",
    ));
    let params = "[actions.params.digitalocean_load_balancer]\nload_balancer_id = \"4de7ac8b-495b-4884-9a69-1050c6793cd6\"\n";
    let g = group(params);
    let up = decision(&g, &w.sim.droplets(), 0.9);
    let report = run(
        &w,
        &g,
        up,
        &["digitalocean_create_droplet", "digitalocean_load_balancer"],
        scripts(&[]),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(report.failure(), None, "{:?}", report.results);
    let lb = w
        .sim
        .load_balancer("4de7ac8b-495b-4884-9a69-1050c6793cd6")
        .unwrap();
    let mut created: Vec<u64> = report.created.iter().map(|d| d.id).collect();
    created.sort();
    let mut members = lb.droplet_ids.clone();
    members.sort();
    assert_eq!(members, created);
    let down = decision(&g, &w.sim.droplets(), 0.1);
    let victims = down.victims.clone();
    let report = run(
        &w,
        &g,
        down,
        &["digitalocean_load_balancer", "digitalocean_destroy_droplet"],
        scripts(&[]),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(report.failure(), None, "{:?}", report.results);
    let lb = w
        .sim
        .load_balancer("4de7ac8b-495b-4884-9a69-1050c6793cd6")
        .unwrap();
    assert!(
        victims.iter().all(|v| !lb.droplet_ids.contains(v)),
        "victims removed from the balancer first"
    );
}

#[tokio::test]
async fn the_webhook_reports_scale_events_and_failures() {
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let w = world(2, true).await;
    let g = group(&format!(
        "[actions.params.notify_webhook]\nurl = \"{url}\"\n"
    ));
    let d = decision(&g, &w.sim.droplets(), 0.9);
    let report = run(
        &w,
        &g,
        d.clone(),
        &["digitalocean_create_droplet", "notify_webhook"],
        scripts(&[]),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(report.failure(), None, "{:?}", report.results);
    let failing = scripts(&[("broken", "throw \"boom\";")]);
    let report = run(
        &w,
        &g,
        d,
        &["broken", "digitalocean_create_droplet", "notify_webhook"],
        failing,
        Duration::from_secs(10),
    )
    .await;
    assert!(report.failure().unwrap().contains("boom"));
    assert_eq!(
        report.results.len(),
        2,
        "the create was skipped, the webhook ran"
    );
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 2);
    let first = received[0]["text"].as_str().unwrap();
    assert!(first.contains("scaled up from 2 to 4"), "{first}");
    // The instance, the group, the rule and its value, each once; the move is not repeated.
    let instance = MANAGED.trim_start_matches("do-scaler:");
    for (part, times) in [
        (format!("do-scaler `{instance}`"), 1),
        ("group `web`".to_string(), 1),
        ("rule `cpu` = 0.9000".to_string(), 1),
        ("from 2 to 4".to_string(), 1),
    ] {
        assert_eq!(first.matches(&part).count(), times, "{part} in {first}");
    }
    let second = received[1]["text"].as_str().unwrap();
    assert!(
        second.contains("failed") && second.contains("boom"),
        "{second}"
    );
}

/// Trust at the edges: a path that a URL parser would normalise into another endpoint
/// (`%2e%2e`, `..;`, `//`, backslashes, double encoding) never reaches the sim, so no droplet
/// is deleted, created or read past the allow-list; a plain load-balancer call still works.
#[tokio::test]
async fn encoded_paths_cannot_escape_the_scripts_allow_list() {
    let w = world(2, false).await;
    let lb = "4de7ac8b-495b-4884-9a69-1050c6793cd6";
    w.sim.add_load_balancer(new_load_balancer(lb, "lb"));
    let g = group("");
    let d = decision(&g, &w.sim.droplets(), 0.5);
    let escapes = [
        "/v2/load_balancers/%2e%2e/droplets?tag_name=web",
        "/v2/load_balancers/%2E%2E/droplets?tag_name=web",
        "/v2/load_balancers/.%2e/droplets?tag_name=web",
        "/v2/load_balancers/%2e./droplets?tag_name=web",
        "/v2/load_balancers/%252e%252e/droplets?tag_name=web",
        "/v2/load_balancers/x%2f..%2f../droplets?tag_name=web",
        "/v2/load_balancers/..;/droplets?tag_name=web",
        "/v2/load_balancers/x/..;x=1/../droplets?tag_name=web",
        "/v2/load_balancers//../droplets?tag_name=web",
        "/v2/load_balancers/x\\..\\..\\droplets?tag_name=web",
        "/v2/load_balancers/x%5c..%5c..%5cdroplets?tag_name=web",
        "/v2//load_balancers/%2e%2e/droplets?tag_name=web",
        "/v2/load_balancers/%2e%2e/%2e%2e/v2/droplets?tag_name=web",
    ];
    let mut script = String::new();
    for (method, body) in [
        ("DELETE", "()"),
        (
            "POST",
            "#{ name: \"sneak\", size: \"s-1vcpu-1gb\", region: \"nyc3\", image: \"ubuntu-24-04-x64\", droplet_ids: [1] }",
        ),
    ] {
        for path in escapes {
            script.push_str(&format!(
                "try {{ digitalocean(\"{method}\", \"{}\", {body}); throw \"accepted: {method} {}\"; }} catch (e) {{ if `${{e}}`.contains(\"accepted\") {{ throw e; }} }}\n",
                path.replace('\\', "\\\\"),
                path.replace('\\', "\\\\")
            ));
        }
    }
    for path in [
        "/v2/load_balancers/%2e%2e/account",
        "/v2/load_balancers/../account",
    ] {
        script.push_str(&format!(
            "try {{ digitalocean(\"GET\", \"{path}\"); throw \"accepted: GET {path}\"; }} catch (e) {{ if `${{e}}`.contains(\"accepted\") {{ throw e; }} }}\n"
        ));
    }
    // The legitimate call, last: it must reach the sim.
    let droplet = w.sim.droplets()[0].id;
    script.push_str(&format!(
        "let r = digitalocean(\"POST\", \"/v2/load_balancers/{lb}/droplets\", #{{ droplet_ids: [{droplet}] }}); if r.status >= 300 {{ throw `load balancer call answered ${{r.status}}`; }}\n"
    ));
    let report = run(
        &w,
        &g,
        d,
        &["sneaky"],
        scripts(&[("sneaky", &script)]),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(report.failure(), None, "{:?}", report.results);
    assert_eq!(w.sim.droplets().len(), 2, "no droplet deleted or created");
    let seen: Vec<String> = w
        .sim
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        seen,
        vec![format!("POST /v2/load_balancers/{lb}/droplets")],
        "only the legitimate call reached the API"
    );
    assert_eq!(w.sim.load_balancer(lb).unwrap().droplet_ids, vec![droplet]);
}

/// Trust at the edges: the webhook client judges the address it connects to inside its own
/// resolver (so a name cannot answer one address to a check and another to the connection),
/// refuses link-local addresses in every spelling, and reads at most 1 MiB of an answer.
#[tokio::test]
async fn webhooks_judge_the_address_they_connect_to_and_read_a_bounded_answer() {
    use do_scaler::script::webhook::{self, GuardedResolver, MAX_ANSWER_BYTES};
    use std::sync::atomic::{AtomicUsize, Ordering};
    // `/hook` answers "ok"; any other path answers an endless chunked body, which must be
    // read only up to the limit.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..n]).to_string();
                if head.starts_with("GET /hook") {
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });

    // A name that answers loopback the first time and the metadata service after: a check
    // before the request would pass, the connection would not be judged.
    let lookups = Arc::new(AtomicUsize::new(0));
    let counter = lookups.clone();
    let resolver = GuardedResolver::with_lookup(move |host| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let ip: std::net::IpAddr = match (host.as_str(), n) {
                ("rebind.test", 0) => "127.0.0.1".parse().unwrap(),
                ("rebind.test", _) => "169.254.169.254".parse().unwrap(),
                ("mapped.test", _) => "::ffff:169.254.169.254".parse().unwrap(),
                _ => "127.0.0.1".parse().unwrap(),
            };
            Ok(vec![std::net::SocketAddr::new(ip, 0)])
        })
    });
    let client = webhook::client(resolver).unwrap();
    let get = |url: String| {
        let client = client.clone();
        async move {
            webhook::send(
                &client,
                reqwest::Method::GET,
                &url,
                None,
                Duration::from_secs(5),
            )
            .await
        }
    };
    let first = get(format!("http://rebind.test:{port}/hook"))
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    // A fresh client: no pooled connection, the name is looked up again.
    let fresh = webhook::client(GuardedResolver::with_lookup(|_| {
        Box::pin(async { Ok(vec!["169.254.169.254:0".parse().unwrap()]) })
    }))
    .unwrap();
    let error = webhook::send(
        &fresh,
        reqwest::Method::GET,
        &format!("http://rebind.test:{port}/hook"),
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
    let error = get(format!("http://mapped.test:{port}/hook"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
    for literal in [
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[::ffff:0:a9fe:a9fe]/",
        "http://2852039166/",
    ] {
        let error = get(literal.to_string()).await.unwrap_err();
        assert!(error.to_string().contains("refused"), "{literal}: {error}");
    }
    let endless = get(format!("http://localhost.test:{port}/endless"))
        .await
        .unwrap();
    assert!(endless.truncated);
    assert_eq!(endless.body.len(), MAX_ANSWER_BYTES);

    // The same through a script: a mapped metadata address is refused, a plain one answers.
    let w = world(1, true).await;
    let g = group("");
    let d = decision(&g, &w.sim.droplets(), 0.5);
    let script = format!(
        r#"
        try {{ http_get("http://[::ffff:169.254.169.254]/metadata/v1/", 1000); throw "accepted"; }}
        catch (e) {{ if `${{e}}` == "accepted" || !`${{e}}`.contains("refused") {{ throw e; }} }}
        try {{ tcp_check("::ffff:169.254.169.254", 80, 500); throw "accepted"; }}
        catch (e) {{ if `${{e}}` == "accepted" {{ throw e; }} }}
        let big = http_get("http://127.0.0.1:{port}/endless", 5000);
        if !big.truncated || big.body.len() != {MAX_ANSWER_BYTES} {{ throw "unbounded"; }}
        "#
    );
    let report = run(
        &w,
        &g,
        d,
        &["probe"],
        scripts(&[("probe", &script)]),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(report.failure(), None, "{:?}", report.results);
}

/// Trust at the edges: a script cannot hold unbounded memory (a map of arrays assigned by
/// index) and out-of-range counts are errors, not panics.
#[tokio::test]
async fn script_memory_is_bounded_and_absurd_counts_are_refused() {
    let w = world(1, true).await;
    let g = group("");
    let d = decision(&g, &w.sim.droplets(), 0.9);
    let hog = r#"
        let a = [];
        a.pad(10000, 0);
        let m = #{};
        for i in 0..10000 { m["k" + i] = a; }
    "#;
    let started = Instant::now();
    let report = run(
        &w,
        &g,
        d.clone(),
        &["hog"],
        scripts(&[("hog", hog)]),
        Duration::from_secs(60),
    )
    .await;
    let failure = report.failure().unwrap().to_string();
    assert!(failure.contains("memory"), "{failure}");
    assert!(started.elapsed() < Duration::from_secs(30));
    for count in [
        "9223372036854775807",
        "-9223372036854775808",
        "0",
        "-1",
        "1001",
    ] {
        let report = run(
            &w,
            &g,
            d.clone(),
            &["absurd"],
            scripts(&[("absurd", &format!("create_droplets({count});"))]),
            Duration::from_secs(10),
        )
        .await;
        let failure = report.failure().unwrap().to_string();
        assert!(
            failure.contains("nothing was created"),
            "{count}: {failure}"
        );
    }
    assert!(!w.sim.api_counts().contains_key("POST /v2/droplets"));
}

/// Trust at the edges: the spend guard binds where droplets are made: create, destroy and
/// create again stops at `max_creates_per_hour`, and a create cut by the deadline counts.
#[tokio::test]
async fn the_spend_guard_binds_create_droplets_itself() {
    let w = world(1, true).await;
    let g = group("max_creates_per_hour = 3");
    let d = decision(&g, &w.sim.droplets(), 0.9);
    let churn = r#"
        let made = create_droplets(2);
        destroy_droplets(made.map(|d| d.id));
        create_droplets(2);
    "#;
    let report = run(
        &w,
        &g,
        d.clone(),
        &["churn"],
        scripts(&[("churn", churn)]),
        Duration::from_secs(20),
    )
    .await;
    let failure = report.failure().unwrap().to_string();
    assert!(failure.contains("max_creates_per_hour 3"), "{failure}");
    assert_eq!(
        w.sim.created_names().len(),
        2,
        "the second create was refused"
    );
    assert_eq!(report.create_attempts, 2);

    // Creates in the hour before the run count too.
    let runner = Runner::new(scripts(&[]), w.client.clone(), w.journal.clone());
    let report = runner
        .run(ActionRequest {
            purpose: Default::default(),
            group: g.clone(),
            managed_tag: MANAGED.into(),
            decision: d.clone(),
            droplets: w.sim.droplets(),
            states: Default::default(),
            actions: vec!["digitalocean_create_droplet".into()],
            deadline: Duration::from_secs(10),
            creates_last_hour: 3,
        })
        .await;
    assert!(
        report.failure().unwrap().contains("max_creates_per_hour"),
        "{:?}",
        report.failure()
    );
    assert_eq!(w.sim.created_names().len(), 2);

    // A create the deadline cuts may still land: it counts as spent.
    w.sim.update_faults(|f| f.latency = Duration::from_secs(3));
    let asked = d.desired - d.current;
    assert!(asked > 0);
    let report = run(
        &w,
        &g,
        d,
        &["digitalocean_create_droplet"],
        scripts(&[]),
        Duration::from_secs(1),
    )
    .await;
    assert!(report.failure().is_some());
    assert_eq!(report.create_attempts, asked, "{:?}", report.results);
}
