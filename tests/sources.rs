//! Sources end to end: the shipped examples (Drone agents, GitLab runners) run against the sim's
//! job queue on a manual clock through the daemon's own group task — the queue drains, no busy
//! droplet is ever destroyed, the idle count holds, the group empties and starts again — and
//! target sources carry their token, and a remote source that fails is missing, never zero.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use do_scaler::clock::ManualClock;
use do_scaler::config::Overrides;
use do_scaler::daemon::group::{GroupStatus, GroupTask};
use do_scaler::daemon::run::prepare;
use do_scaler::daemon::{Daemon, RunOptions, TickReport};
use do_scaler::sim::queue::{QueueCounts, QueueSettings};
use do_scaler::sim::{Demand, Sim, SimOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DRONE: &str = include_str!("../examples/drone-agents.toml");
const GITLAB: &str = include_str!("../examples/gitlab-runners.toml");
const RPC_SECRET: &str = "rpc-secret-5f1e9c";
const RUNNER_TOKEN: &str = "glrt-runner-token-77aa";

/// A Wednesday, 11:00 in Berlin: no off-peak window is open.
fn weekday_morning() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap()
}

/// Builds per second: a 12-minute rush (about 16 running at once), then 20 minutes of a
/// trickle (about 4 running) while the rush's agents are surplus, then nothing.
fn rush_then_trickle() -> Vec<(Duration, f64)> {
    vec![
        (Duration::from_secs(0), 0.0),
        (Duration::from_secs(60), 0.0),
        (Duration::from_secs(61), 0.18),
        (Duration::from_secs(780), 0.18),
        (Duration::from_secs(781), 0.045),
        (Duration::from_secs(1980), 0.045),
        (Duration::from_secs(1981), 0.0),
    ]
}

/// Jobs per second: nothing for a minute, `rate` for `minutes`, then nothing.
fn burst(rate: f64, minutes: u64) -> Vec<(Duration, f64)> {
    vec![
        (Duration::from_secs(0), 0.0),
        (Duration::from_secs(60), 0.0),
        (Duration::from_secs(61), rate),
        (Duration::from_secs(60 + minutes * 60), rate),
        (Duration::from_secs(61 + minutes * 60), 0.0),
    ]
}

/// The sim, the daemon on its configuration folder, and the group's own task, all on one
/// manual clock.
struct World {
    sim: Sim,
    clock: ManualClock,
    dir: tempfile::TempDir,
    _credentials: tempfile::TempDir,
    daemon: Arc<Daemon>,
    task: GroupTask,
    interval: Duration,
    /// Per droplet: when the sim last saw it running a job (or was created).
    last_busy: HashMap<u64, DateTime<Utc>>,
    /// The shortest time a destroyed droplet had been idle when it went.
    shortest_idle_at_destroy: Option<Duration>,
    peak: usize,
}

impl World {
    async fn start(group: &str, arrivals: Vec<(Duration, f64)>, start: DateTime<Utc>) -> World {
        let clock = ManualClock::new(start);
        let sim = Sim::start(SimOptions {
            seed_droplets: 0,
            open_ports: Vec::new(),
            demand: Demand::Series(arrivals),
            boot_delay: Duration::from_secs(40),
            rate_limit: None,
            clock: Arc::new(clock.clone()),
            queue: Some(QueueSettings {
                job_seconds: 90.0,
                concurrency: 2,
            }),
            ..SimOptions::default()
        })
        .await
        .unwrap();
        let group = group
            .replace(
                "https://drone.example.com/metrics",
                &format!("{}/drone/metrics", sim.api_url()),
            )
            .replace(
                "http://10.10.0.5:9252/metrics",
                &format!("{}/gitlab/metrics", sim.api_url()),
            );
        let dir = common::config_dir(&group);
        let credentials = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("drone-rpc-secret", RPC_SECRET),
            ("drone-token", "drone-admin-token"),
            ("gitlab-runner-token", RUNNER_TOKEN),
        ] {
            std::fs::write(credentials.path().join(name), format!("{value}\n")).unwrap();
        }
        let token = sim.token().to_string();
        let credentials_dir = credentials.path().display().to_string();
        let daemon = prepare(
            dir.path().join("do-scaler.toml"),
            Overrides {
                api_url: Some(sim.api_url()),
                ..Overrides::default()
            },
            Arc::new(move |name: &str| match name {
                "DIGITALOCEAN_TOKEN" => Some(token.clone()),
                "CREDENTIALS_DIRECTORY" => Some(credentials_dir.clone()),
                _ => None,
            }),
            Arc::new(clock.clone()),
            RunOptions::new(Duration::from_secs(20)),
        )
        .await
        .unwrap();
        let group = daemon.generation().config.groups[0].clone();
        let interval = group.interval;
        let task = GroupTask::new(
            daemon.clone(),
            group,
            Arc::new(Mutex::new(GroupStatus::default())),
            Instant::now(),
        )
        .unwrap();
        World {
            sim,
            clock,
            dir,
            _credentials: credentials,
            daemon,
            task,
            interval,
            last_busy: HashMap::new(),
            shortest_idle_at_destroy: None,
            peak: 0,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        use do_scaler::clock::Clock;
        self.clock.now()
    }

    fn queue(&self) -> QueueCounts {
        self.sim.queue().unwrap()
    }

    /// Droplets running at least one job now.
    fn busy(&self) -> usize {
        self.sim
            .droplets()
            .iter()
            .filter(|d| self.sim.jobs_on(d.id) > 0)
            .count()
    }

    /// One interval passes; the group ticks and acts as the daemon would, and its action run
    /// ends. No busy droplet is ever destroyed.
    async fn tick(&mut self) -> TickReport {
        self.clock.advance(self.interval);
        self.sim.sync();
        let now = self.now();
        for droplet in self.sim.droplets() {
            let entry = self.last_busy.entry(droplet.id).or_insert(now);
            if self.sim.jobs_on(droplet.id) > 0 {
                *entry = now;
            }
        }
        let report = self.task.tick().await.expect("the tick ends well");
        self.task.act(report.clone());
        self.task.wait_for_run(Duration::from_secs(20)).await;
        self.task.save(false);
        let alive: Vec<u64> = self.sim.droplets().iter().map(|d| d.id).collect();
        for (id, since) in &self.last_busy {
            if !alive.contains(id) {
                let idle = (now - *since).to_std().unwrap_or_default();
                self.shortest_idle_at_destroy =
                    Some(self.shortest_idle_at_destroy.map_or(idle, |s| s.min(idle)));
            }
        }
        self.last_busy.retain(|id, _| alive.contains(id));
        self.peak = self.peak.max(alive.len());
        let queue = self.queue();
        assert_eq!(
            (queue.killed, queue.busy_destroyed),
            (0, 0),
            "a busy droplet was destroyed at {now}: {:#?}",
            report.decision
        );
        report
    }

    /// Ticks until `done` holds; panics after `limit` ticks.
    async fn until(&mut self, limit: usize, what: &str, done: impl Fn(&World) -> bool) {
        for _ in 0..limit {
            self.tick().await;
            if done(self) {
                return;
            }
        }
        panic!(
            "{what}: not after {limit} ticks; {} droplets, queue {:?}",
            self.sim.droplets().len(),
            self.queue()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drone_agents_drain_the_queue_never_lose_a_build_empty_and_start_again() {
    // A rush, a trickle while the rush's agents are surplus, an hour of nothing, 12 more.
    let mut arrivals = rush_then_trickle();
    arrivals.extend([
        (Duration::from_secs(3600), 0.0),
        (Duration::from_secs(3601), 0.1),
        (Duration::from_secs(3720), 0.1),
        (Duration::from_secs(3721), 0.0),
    ]);
    let mut world = World::start(DRONE, arrivals, weekday_morning()).await;
    assert_eq!(world.interval, Duration::from_secs(30));

    // Nothing queued: nothing bought.
    for _ in 0..2 {
        world.tick().await;
    }
    assert!(world.sim.droplets().is_empty());

    // The rush: agents are bought from zero, never past max. In the trickle the surplus
    // agents go while the others run builds, and the queue drains.
    let mut shrank_while_building = 0;
    while world.now() < weekday_morning() + chrono::Duration::minutes(40) {
        let before = world.sim.droplets().len();
        world.tick().await;
        if world.sim.droplets().len() < before && world.queue().running > 0 {
            shrank_while_building += 1;
        }
    }
    assert!(
        shrank_while_building > 0,
        "the group shrank while builds ran (what scale_in.busy is for)"
    );
    let q = world.queue();
    assert!(q.arrived >= 150 && q.pending == 0, "{q:?}");
    assert!(world.peak >= 3, "agents were bought: peak {}", world.peak);
    assert!(world.peak <= 10, "never past max: peak {}", world.peak);

    // The queue is empty: every agent goes, once idle and past min_age.
    world
        .until(60, "the group empties", |w| w.sim.droplets().is_empty())
        .await;
    let first = world.queue();
    assert_eq!(first.completed, first.arrived, "{first:?}");

    // An empty group starts again when builds arrive.
    let before = world.sim.created_names().len();
    world
        .until(120, "the second burst is served", |w| {
            let q = w.queue();
            q.arrived > first.arrived && q.pending == 0 && q.running == 0
        })
        .await;
    assert!(world.sim.created_names().len() > before);
    world
        .until(60, "the group empties again", |w| {
            w.sim.droplets().is_empty()
        })
        .await;
    let end = world.queue();
    assert_eq!(end.completed, end.arrived, "{end:?}");
    assert_eq!((end.killed, end.busy_destroyed), (0, 0));

    // The RPC secret reached the agents' user data, filled in at create time, and nothing
    // do-scaler keeps holds it.
    let names = world.sim.created_names();
    assert!(!names.is_empty());
    let mut stored = Vec::new();
    for file in ["state.db", "state.db-wal"] {
        if let Ok(bytes) = std::fs::read(world.dir.path().join(file)) {
            stored.extend(bytes);
        }
    }
    let needle = RPC_SECRET.as_bytes();
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle),
        "the state database holds the RPC secret"
    );
    let status = world.daemon.group_status("web").unwrap_or_default();
    assert!(!format!("{status:?}").contains(RPC_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drone_user_data_carries_the_credential_and_never_the_placeholder() {
    let mut world = World::start(DRONE, burst(0.2, 2), weekday_morning()).await;
    world
        .until(10, "an agent is created", |w| !w.sim.droplets().is_empty())
        .await;
    let droplet = &world.sim.droplets()[0];
    let user_data = world.sim.user_data_of(droplet.id).unwrap();
    assert!(
        user_data.contains(&format!("DRONE_RPC_SECRET={RPC_SECRET}")),
        "{user_data}"
    );
    assert!(!user_data.contains("{{"), "{user_data}");
    let report = world.tick().await;
    let json = report.to_json().to_string();
    assert!(
        !json.contains(RPC_SECRET),
        "the tick report shows the secret"
    );
}

/// Without `scale_in.busy`, the same run destroys agents in the middle of builds: the
/// protection the examples rely on is what keeps the counts at zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_scale_in_busy_the_same_queue_loses_builds() {
    let group = DRONE.replace("busy = 'sim_jobs_running > 0'", "");
    let mut world = World::start(&group, rush_then_trickle(), weekday_morning()).await;
    let mut lost = false;
    for _ in 0..90 {
        world.clock.advance(world.interval);
        world.sim.sync();
        if let Some(report) = world.task.tick().await {
            world.task.act(report);
        }
        world.task.wait_for_run(Duration::from_secs(20)).await;
        world.task.save(false);
        if world.queue().busy_destroyed > 0 {
            lost = true;
            break;
        }
    }
    assert!(lost, "{:?}", world.queue());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_runners_keep_their_idle_count_and_idle_time_and_remove_only_idle_machines() {
    let mut world = World::start(GITLAB, burst(0.2, 10), weekday_morning()).await;
    // IdleCount = 3 with no job at all: three machines, ready.
    world
        .until(10, "three idle machines", |w| w.sim.droplets().len() == 3)
        .await;
    // Every tick after that: at least the busy machines + 3 (up to max), booting ones counted
    // as idle so that a booting machine does not ask for three more.
    let mut checked = 0;
    for _ in 0..80 {
        let report = world.tick().await;
        let busy = report
            .droplets
            .iter()
            .filter(|d| matches!(d.work, do_scaler::policy::Work::Busy))
            .count();
        let size = world.sim.droplets().len();
        assert!(
            size >= (busy + 3).min(20),
            "{size} machines, {busy} busy: {:#?}",
            report.decision
        );
        assert!(size <= 20);
        checked += 1;
    }
    assert!(checked > 0);
    let queue = world.queue();
    assert!(queue.completed > 50, "{queue:?}");
    assert!(world.peak > 5, "the burst bought machines: {}", world.peak);
    // Machines went back down to the idle count, each only after 20 minutes idle (seen at
    // the ticks, so within one interval).
    world
        .until(120, "back to the idle count", |w| {
            w.sim.droplets().len() == 3 && w.busy() == 0
        })
        .await;
    let shortest = world
        .shortest_idle_at_destroy
        .expect("machines were removed");
    assert!(
        shortest + Duration::from_secs(30) >= Duration::from_secs(20 * 60),
        "a machine went after {shortest:?} idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_off_peak_keeps_one_idle_machine_and_peak_brings_back_three() {
    // Thursday 06:40 in Berlin: the weeknight window (20:00 to 07:00) is open.
    let start = Utc.with_ymd_and_hms(2026, 12, 3, 5, 40, 0).unwrap();
    let mut world = World::start(GITLAB, vec![(Duration::ZERO, 0.0)], start).await;
    world
        .until(6, "one idle machine off-peak", |w| {
            w.sim.droplets().len() == 1
        })
        .await;
    // Until 07:00 it stays at one.
    while world.now() < Utc.with_ymd_and_hms(2026, 12, 3, 5, 59, 0).unwrap() {
        world.tick().await;
        assert_eq!(world.sim.droplets().len(), 1, "at {}", world.now());
    }
    // Peak: IdleCount 3.
    world
        .until(10, "three idle machines at peak", |w| {
            w.sim.droplets().len() == 3
        })
        .await;
}

/// A stub HTTP server: answers each request with what `answer` returns for its request line
/// and headers (status, body, delay), and keeps every request it saw.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

fn stub(answer: fn(&str) -> (u16, String, Duration)) -> Stub {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 8192];
                let n = stream.read(&mut buffer).unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..n]).to_string();
                log.lock().unwrap().push(request.clone());
                let (status, body, delay) = answer(&request);
                std::thread::sleep(delay);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Stub { url, seen }
}

/// A group of the sim's two seeded droplets with extra sources and rules, ticked (without
/// acting) on a manual clock through the group runtime the daemon uses.
async fn tick_group(extra: &str, credentials: &std::path::Path, ticks: usize) -> TickReport {
    use do_scaler::config::ApiToken;
    use do_scaler::digitalocean::{Client, ClientOptions};
    use do_scaler::metrics::scrape::Scraper;
    let clock = ManualClock::new(weekday_morning());
    let sim = Sim::start(SimOptions {
        seed_droplets: 2,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports: Vec::new(),
        demand: Demand::Constant(1.0),
        clock: Arc::new(clock.clone()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let mut options = ClientOptions::new(sim.api_url(), ApiToken::new(sim.token()));
    options.rate_limits = None;
    let client = Client::new(options).unwrap();
    let scraper = Scraper::new(8, 1 << 20)
        .unwrap()
        .with_credentials_dir(Some(credentials.to_path_buf()));
    let text = format!(
        "tag = \"web\"\nmin = 1\nmax = 10\ninterval = \"10s\"\nwarmup = \"0s\"\n[droplet]\nregion = \"nyc3\"\nsize = \"s-2vcpu-4gb\"\nimage = \"ubuntu-24-04-x64\"\n{extra}"
    );
    let group = do_scaler::config::group_from_toml("web", &text).unwrap();
    let mut runtime =
        do_scaler::daemon::GroupRuntime::new(group, "do-scaler:default".into()).unwrap();
    let mut memory = Default::default();
    let mut report = None;
    for tick in 0..ticks {
        clock.advance(Duration::from_secs(10));
        sim.sync();
        report = Some(
            runtime
                .tick(
                    &client,
                    &scraper,
                    &mut memory,
                    &Default::default(),
                    weekday_morning() + chrono::Duration::seconds(10 * (tick as i64 + 1)),
                )
                .await
                .unwrap(),
        );
    }
    report.unwrap()
}

fn rule<'a>(report: &'a TickReport, name: &str) -> &'a do_scaler::policy::RuleReport {
    report
        .decision
        .rules
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule {name}: {:#?}", report.decision))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_source_sends_its_token_and_its_series_drive_a_desired_rule() {
    let target = stub(|request| {
        if request.contains("authorization: Bearer queue-token-31\r\n")
            || request.contains("Authorization: Bearer queue-token-31\r\n")
        {
            (
                200,
                "# TYPE jobs_waiting gauge\njobs_waiting 13\n".into(),
                Duration::ZERO,
            )
        } else {
            (401, "no".into(), Duration::ZERO)
        }
    });
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("queue-token"), "queue-token-31\n").unwrap();
    let extra = format!(
        r#"
[[source]]
name = "queue"
kind = "target"
urls = ["{}/metrics"]
token_credential = "queue-token"

[[rule]]
name = "backlog"
source = "queue"
desired = 'ceil(jobs_waiting / 2)'
"#,
        target.url
    );
    let report = tick_group(&extra, credentials.path(), 2).await;
    let backlog = rule(&report, "backlog");
    assert_eq!(backlog.proposal, Some(7), "{backlog:?}");
    assert_eq!(report.decision.desired, 7, "{:#?}", report.decision);
    let source = report.sources.iter().find(|s| s.name == "queue").unwrap();
    assert_eq!(source.answered, "1 of 1 URLs answered", "{source:?}");
    let seen = target.seen.lock().unwrap();
    assert!(!seen.is_empty());
    // The token goes in the header, never in the URL, and the report never shows it.
    assert!(seen.iter().all(|r| r.starts_with("GET /metrics HTTP/1.1")));
    assert!(!report.to_json().to_string().contains("queue-token-31"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_its_credential_is_missing_and_holds() {
    let target = stub(|_| (200, "jobs_waiting 13\n".into(), Duration::ZERO));
    let credentials = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[[source]]
name = "queue"
kind = "target"
urls = ["{}/metrics"]
token_credential = "queue-token"

[[rule]]
name = "backlog"
source = "queue"
desired = 'ceil(jobs_waiting / 2)'
"#,
        target.url
    );
    let report = tick_group(&extra, credentials.path(), 2).await;
    let backlog = rule(&report, "backlog");
    assert_eq!(backlog.value, "missing", "{backlog:?}");
    assert_eq!(report.decision.desired, 2, "holds: {:#?}", report.decision);
    assert!(
        target.seen.lock().unwrap().is_empty(),
        "no request goes out without its token"
    );
}

/// A remote rule whose server errs, hangs past the source's timeout, or answers nothing is
/// missing (it holds), never zero (which would scale down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_error_timeout_or_empty_answer_is_missing_never_zero() {
    let failing = stub(|_| {
        (
            500,
            "{\"status\":\"error\",\"errorType\":\"internal\",\"error\":\"boom\"}".into(),
            Duration::ZERO,
        )
    });
    let hanging = stub(|_| (200, "{}".into(), Duration::from_secs(5)));
    let empty = stub(|_| {
        (
            200,
            "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[]}}".into(),
            Duration::ZERO,
        )
    });
    let answering = stub(|_| {
        (
            200,
            "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[{\"metric\":{},\"value\":[1764756000,\"0.9\"]}]}}".into(),
            Duration::ZERO,
        )
    });
    let mut extra = String::new();
    for (name, server) in [
        ("failing", &failing),
        ("hanging", &hanging),
        ("empty", &empty),
        ("answering", &answering),
    ] {
        extra.push_str(&format!(
            "[[source]]\nname = \"{name}\"\nkind = \"prometheus\"\nurl = \"{}\"\ntimeout = \"1s\"\n[[rule]]\nname = \"{name}\"\nsource = \"{name}\"\nexpr = 'avg(rate(work_seconds_total[1m]))'\ntarget = 0.9\n",
            server.url
        ));
    }
    // Two droplets at a tenth of their CPU: any rule reading zero would propose a scale-down.
    let credentials = tempfile::tempdir().unwrap();
    let report = tick_group(&extra, credentials.path(), 1).await;
    for (name, why) in [
        ("failing", "HTTP 500: internal boom"),
        ("hanging", "no answer within 1s"),
        ("empty", "no series"),
    ] {
        let report = rule(&report, name);
        assert_eq!(report.value, "missing", "{report:?}");
        assert!(report.verdict.contains(why), "{report:?}");
        assert_eq!(report.proposal, Some(2), "holds: {report:?}");
    }
    assert_eq!(rule(&report, "answering").value, "0.9000");
    assert_eq!(report.decision.desired, 2, "{:#?}", report.decision);
    let took = report
        .sources
        .iter()
        .find(|s| s.name == "hanging")
        .unwrap()
        .took_ms;
    assert!(took < 3000.0, "the timeout cut the hung query: {took} ms");
    let query = &answering.seen.lock().unwrap()[0];
    assert!(query.starts_with("GET /api/v1/query?"), "{query}");
    assert!(
        query.contains("time="),
        "evaluated at the tick's time: {query}"
    );
}
