//! High availability on a real PostgreSQL: two or three `do-scaler run` processes share one
//! state against the sim; one leads each group. The leader is killed hard (at crash points
//! too), stopped past its lease, or cut off from the database, and the tests check what an
//! operator would: another daemon leads within two intervals plus the lease (plus the longest
//! request it waits out), no droplet name is created twice, the group never passes `max`, no
//! journal row is left unsettled, and the group ends at its size.

use do_scaler::sim::{Demand, Sim};
use do_scaler::state::{Journal, Location, Store};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::postgres::{Postgres, Proxy, free_port};
use common::*;

/// Tick interval, the longest request, and the lease they give (2 × (1 s + 1 s)).
const INTERVAL: Duration = Duration::from_secs(1);
const LONGEST_REQUEST: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(4);

/// The bound for a new leader's first decision after the old one stops: two intervals
/// plus the lease, plus the longest request the new leader waits out, plus a second for
/// starting processes and polling.
fn takeover_bound() -> Duration {
    INTERVAL * 2 + LEASE + LONGEST_REQUEST + Duration::from_secs(1)
}

/// A group that wants `desired` droplets, within 1..=5.
fn group(desired: u32) -> String {
    format!(
        "tag = \"web\"\nmin = 1\nmax = 5\nwarmup = \"0s\"\n[droplet]\nregion = \"nyc3\"\nsize = \"s-1vcpu-1gb\"\nimage = \"ubuntu-24-04-x64\"\n[cooldown]\nup = \"0s\"\ndown = \"0s\"\n[stabilization]\ndown = \"0s\"\n[scale_in]\nmin_age = \"0s\"\n[[rule]]\nname = \"wanted\"\ndesired = '{desired}'\n"
    )
}

/// A configuration directory whose state is `url`.
fn ha_dir(url: &str, desired: u32) -> tempfile::TempDir {
    let dir = config_dir(&group(desired));
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        format!(
            "interval = \"1s\"\nstate = \"{url}\"\nlisting_lag = \"0s\"\nrequest_timeout = \"1s\"\n[status_api]\ntoken_file = \"api-token\"\n"
        ),
    )
    .unwrap();
    dir
}

/// One `do-scaler run` process, killed when dropped.
struct Node {
    name: String,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Node {
    fn start(dir: &Path, sim: &Sim, name: &str, failpoint: Option<&str>) -> Node {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_do-scaler"));
        command
            .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(dir.join("do-scaler.toml"))
            .env("DIGITALOCEAN_API_URL", sim.api_url())
            .env("DIGITALOCEAN_TOKEN", sim.token())
            .env("RUST_LOG", "info")
            .env_remove("DO_SCALER_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(point) = failpoint {
            command.env("DO_SCALER_FAILPOINT", point);
        }
        Node {
            name: format!("the {name} daemon"),
            child: command.spawn().unwrap(),
            port,
            log,
        }
    }

    /// `do_scaler_leader` (and lease losses) for `web` from the node's `/metrics`; `None`
    /// while it does not answer.
    async fn leader_metrics(&self) -> Option<(bool, f64)> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let leads = metric(&text, "do_scaler_leader")?;
        let losses = metric(&text, "do_scaler_lease_losses_total").unwrap_or(0.0);
        Some((leads == 1.0, losses))
    }

    async fn leads(&self) -> bool {
        self.leader_metrics().await.is_some_and(|(leads, _)| leads)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls (async) until `check` holds, or fails after `limit` with `what` and the logs.
async fn until<F, Fut>(limit: Duration, what: &str, nodes: &[&Node], mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > limit {
            let logs: Vec<String> = nodes.iter().map(|n| n.log()).collect();
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Waits until `node` leads and the sim holds `size` droplets.
async fn until_leading(node: &Node, sim: &Sim, size: usize) {
    let what = format!("{} to lead and make {size} droplets", node.name);
    until(Duration::from_secs(20), &what, &[node], || async {
        node.leads().await && sim.droplets().len() == size
    })
    .await;
}

/// Waits until `node` answers and follows.
async fn until_following(node: &Node) {
    let what = format!("{} to follow", node.name);
    until(Duration::from_secs(20), &what, &[node], || async {
        node.leader_metrics().await.is_some_and(|(leads, _)| !leads)
    })
    .await;
}

/// Waits (within the takeover bound) until `node` leads, then until it has made the group
/// whole again.
async fn until_taken_over(node: &Node, sim: &Sim, size: usize, logs: &[&Node]) -> Duration {
    let took = until(
        takeover_bound(),
        &format!("{} to lead", node.name),
        logs,
        || async { node.leads().await },
    )
    .await;
    until(
        Duration::from_secs(10),
        "the group made whole again",
        logs,
        || async { sim.droplets().len() == size },
    )
    .await;
    took
}

/// Waits until the old leader `node` has seen it lost the lease, and follows.
async fn until_lost_lease(node: &Node, limit: Duration, logs: &[&Node]) {
    let what = format!("{} to see it lost the lease and follow", node.name);
    until(limit, &what, logs, || async {
        node.leader_metrics()
            .await
            .is_some_and(|(leads, losses)| !leads && losses >= 1.0)
    })
    .await;
}

/// What must hold at the end: names unique, the group at `size`, no unsettled journal row.
fn check_settled(sim: &Sim, url: &str, size: usize) {
    let names = sim.created_names();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "a name was created twice: {names:?}"
    );
    assert_eq!(sim.droplets().len(), size, "the group is not at its size");
    let store = Store::open_location(&Location::Postgres(url.into()), None).unwrap();
    assert_eq!(
        store.pending().unwrap(),
        vec![],
        "a journal row is unsettled"
    );
}

async fn start_sim(seeded: u32) -> Sim {
    sim(seeded, Demand::Constant(0.3), Duration::ZERO).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_hard_is_succeeded_within_the_bound_by_one_of_two_followers() {
    let Some(cluster) = Postgres::start() else {
        return;
    };
    let url = cluster.database("killed");
    let sim = start_sim(0).await;
    let dir = ha_dir(&url, 3);
    let mut first = Node::start(dir.path(), &sim, "first", None);
    until_leading(&first, &sim, 3).await;
    let second = Node::start(dir.path(), &sim, "second", None);
    let third = Node::start(dir.path(), &sim, "third", None);
    until_following(&second).await;
    until_following(&third).await;
    // Followers list and scrape, and never act: the group stays as the leader made it.
    assert_eq!(sim.created_names().len(), 3);
    // Every daemon's status API, and `plan`, say who leads.
    let led = get(&format!(
        "http://127.0.0.1:{}/api/v1/groups/web",
        first.port
    ))
    .await;
    let followed = get(&format!(
        "http://127.0.0.1:{}/api/v1/groups/web",
        second.port
    ))
    .await;
    assert_eq!(led["leads"], true, "{led}");
    assert_eq!(followed["leads"], false, "{followed}");
    let leader = led["leader"].as_str().unwrap().to_string();
    assert_eq!(followed["leader"], leader.as_str(), "{followed}");
    let plan = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args(["plan", "web", "--wait", "0s", "--config"])
        .arg(dir.path().join("do-scaler.toml"))
        .env("DIGITALOCEAN_API_URL", sim.api_url())
        .env("DIGITALOCEAN_TOKEN", sim.token())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&plan.stderr);
    assert!(said.contains(&format!("web: led by {leader}")), "{said}");
    assert_eq!(sim.created_names().len(), 3, "plan never acts");
    // The leader dies at once (perhaps before any listing showed what it made); a droplet goes
    // with it, so the group needs one more.
    first.kill();
    let victim = sim.droplets()[0].id;
    assert!(sim.delete(victim));
    let took = until(
        takeover_bound(),
        "a follower to lead",
        &[&second, &third],
        || async { second.leads().await || third.leads().await },
    )
    .await;
    eprintln!("a follower led {took:?} after the leader died");
    until(
        Duration::from_secs(10),
        "the new leader to make the group whole",
        &[&second, &third],
        || async { sim.droplets().len() == 3 },
    )
    .await;
    assert!(
        !(second.leads().await && third.leads().await),
        "two leaders at once"
    );
    check_settled(&sim, &url, 3);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_at_a_crash_point_is_succeeded_and_its_journal_reconciled() {
    let Some(cluster) = Postgres::start() else {
        return;
    };
    // (point, droplets at the start, the size wanted)
    let cases = [
        ("create.after_journal", 0, 3),
        ("create.answer_unread", 0, 3),
        ("create.after_answer", 0, 3),
        ("destroy.after_journal", 5, 2),
        ("destroy.between_deletes", 5, 2),
        ("destroy.after_deletes", 5, 2),
        ("action.before_run", 0, 3),
    ];
    for (index, (point, seeded, desired)) in cases.into_iter().enumerate() {
        let url = cluster.database(&format!("point{index}"));
        let sim = start_sim(seeded).await;
        let dir = ha_dir(&url, desired);
        // Paused until both run, so the armed daemon leads and the other is ready to follow.
        let store = Store::open_location(&Location::Postgres(url.clone()), None).unwrap();
        store.set_paused("web", true).unwrap();
        let mut armed = Node::start(dir.path(), &sim, "armed", Some(point));
        until_leading(&armed, &sim, seeded as usize).await;
        let other = Node::start(dir.path(), &sim, "other", None);
        until_following(&other).await;
        // A resume through the shared state reaches the leader, which acts and dies at `point`.
        store.set_paused("web", false).unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = armed.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(137), "{point}: {}", armed.log());
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{point}: the armed daemon never reached its point:\n{}",
                armed.log()
            );
            assert!(sim.droplets().len() <= 5, "{point}: past max");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            armed.log().contains(&format!("FAILPOINT {point}")),
            "{}",
            armed.log()
        );
        until(
            takeover_bound() + Duration::from_secs(5),
            "the other daemon to lead and settle the group",
            &[&other],
            || async {
                assert!(sim.droplets().len() <= 5, "{point}: past max");
                other.leads().await
                    && sim.droplets().len() == desired as usize
                    && store.pending().is_ok_and(|p| p.is_empty())
            },
        )
        .await;
        check_settled(&sim, &url, desired as usize);
        armed.kill();
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_past_its_lease_resumes_as_a_follower_and_writes_nothing() {
    let Some(cluster) = Postgres::start() else {
        return;
    };
    let url = cluster.database("stopped");
    let sim = start_sim(0).await;
    let dir = ha_dir(&url, 3);
    let first = Node::start(dir.path(), &sim, "first", None);
    until_leading(&first, &sim, 3).await;
    let second = Node::start(dir.path(), &sim, "second", None);
    until_following(&second).await;
    first.signal(libc::SIGSTOP);
    let victim = sim.droplets()[0].id;
    assert!(sim.delete(victim));
    until_taken_over(&second, &sim, 3, &[&second]).await;
    // The first wakes with whatever it was doing: it counts its lease as lost, follows, and
    // sends nothing.
    first.signal(libc::SIGCONT);
    until_lost_lease(&first, Duration::from_secs(10), &[&first, &second]).await;
    assert_eq!(sim.created_names().len(), 4, "3, then 1 by the new leader");
    check_settled(&sim, &url, 3);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_stops_and_another_takes_over() {
    let Some(cluster) = Postgres::start() else {
        return;
    };
    let url = cluster.database("cut");
    let proxy = Proxy::start(cluster.port).await;
    let sim = start_sim(0).await;
    // The first daemon reaches the database through the proxy; the second directly.
    let through_proxy = ha_dir(&cluster.url(proxy.port, "cut"), 3);
    let direct = ha_dir(&url, 3);
    let first = Node::start(through_proxy.path(), &sim, "first", None);
    until_leading(&first, &sim, 3).await;
    let second = Node::start(direct.path(), &sim, "second", None);
    until_following(&second).await;
    proxy.cut();
    let victim = sim.droplets()[0].id;
    assert!(sim.delete(victim));
    until_taken_over(&second, &sim, 3, &[&first, &second]).await;
    assert!(
        !first.leads().await,
        "the cut-off daemon still says it leads"
    );
    // Back on the database, it follows.
    proxy.restore();
    until_lost_lease(&first, Duration::from_secs(30), &[&first]).await;
    assert_eq!(sim.created_names().len(), 4, "3, then 1 by the new leader");
    check_settled(&sim, &url, 3);
    drop(cluster);
}
