//! The `haproxy_backend` action against a real HAProxy (Debian's `haproxy`, started here on
//! loopback with a temporary configuration and stats socket): after a scale-up and a
//! scale-down HAProxy's `show servers state` equals the group, requests sent through HAProxy
//! during the scale-down are all answered by a live droplet, the server list file follows, and
//! an unhealthy droplet's replacement takes its place in the backend.

mod common;
#[path = "common/manual.rs"]
mod manual;

use chrono::{TimeZone, Utc};
use do_scaler::clock::ManualClock;
use do_scaler::daemon::Daemon;
use do_scaler::daemon::group::{GroupStatus, GroupTask};
use do_scaler::sim::{Sim, SimOptions};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A HAProxy running on loopback; killed when dropped.
struct HaProxy {
    child: std::process::Child,
    socket: PathBuf,
    port: u16,
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts HAProxy with an empty backend `web`, or `None` where it is not installed.
fn start_haproxy(dir: &Path) -> Option<HaProxy> {
    let binary = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let socket = dir.join("haproxy.sock");
    let port = free_port();
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    stats socket {} mode 600 level admin\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\
             frontend fe\n    bind 127.0.0.1:{port}\n    default_backend web\n\
             backend web\n    balance roundrobin\n",
            socket.display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(binary)
        .args(["-db", "-f"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let haproxy = HaProxy {
        child,
        socket,
        port,
    };
    // Ready once its socket answers.
    let started = Instant::now();
    while command(&haproxy.socket, "show info").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "HAProxy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(haproxy)
}

fn command(socket: &Path, text: &str) -> std::io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.write_all(format!("{text}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// HAProxy's servers of `web`: name → address.
fn servers(haproxy: &HaProxy) -> BTreeMap<String, String> {
    command(&haproxy.socket, "show servers state web")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f.len() > 4 && f[1] == "web").then(|| (f[3].to_string(), f[4].to_string()))
        })
        .collect()
}

/// The group as HAProxy should see it: name → private address.
fn group_servers(sim: &Sim) -> BTreeMap<String, String> {
    sim.droplets()
        .into_iter()
        .map(|d| (d.name.clone(), d.private_ipv4().unwrap().to_string()))
        .collect()
}

fn group(desired: u32, haproxy: &HaProxy, list: &Path) -> String {
    format!(
        r#"tag = "web"
min = 1
max = 3
interval = "10s"
warmup = "0s"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[cooldown]
up = "0s"
down = "0s"
[stabilization]
down = "0s"
[scale_in]
min_age = "0s"
[health]
check = "http"
port = 80
unhealthy_after = 1
grace = "0s"
[[rule]]
name = "wanted"
desired = '{desired}'
[actions]
up = ["digitalocean_create_droplet", "haproxy_backend"]
down = ["haproxy_backend", "digitalocean_destroy_droplet"]
[actions.params.haproxy_backend]
socket = "{}"
backend = "web"
port = 80
server_list = "{}"
drain_timeout = "5s"
"#,
        haproxy.socket.display(),
        list.display()
    )
}

/// The daemon on `dir` (as after a start or a restart), its group's task and its status.
async fn start(
    dir: &Path,
    sim: &Sim,
    clock: &ManualClock,
) -> (Arc<Daemon>, GroupTask, Arc<Mutex<GroupStatus>>) {
    manual::start(dir, sim, clock, Duration::from_secs(30)).await
}

/// One interval passes; the group ticks and acts, and no run fails.
async fn tick(task: &mut GroupTask, status: &Mutex<GroupStatus>, sim: &Sim, clock: &ManualClock) {
    let (_, failed) = manual::tick(task, sim, clock, Duration::from_secs(30)).await;
    assert_ne!(
        failed,
        Some(true),
        "a run failed: {:?}",
        status.lock().unwrap().last_action
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_the_group_and_never_sends_a_request_to_a_destroyed_droplet() {
    let work = tempfile::tempdir().unwrap();
    let Some(haproxy) = start_haproxy(work.path()) else {
        common::skip_unless_ci("haproxy", "apt-get install haproxy");
        return;
    };
    let list = work.path().join("web.servers.cfg");
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap());
    let sim = Sim::start(SimOptions {
        seed_droplets: 1,
        seed_managed_tag: Some("do-scaler:default".into()),
        open_ports: vec![80],
        boot_delay: Duration::ZERO,
        rate_limit: None,
        clock: Arc::new(clock.clone()),
        ..SimOptions::default()
    })
    .await
    .unwrap();

    // Scale up from one to three: the seeded droplet and both new ones serve through HAProxy.
    let dir = common::config_dir(&group(3, &haproxy, &list));
    let (daemon, mut task, status) = start(dir.path(), &sim, &clock).await;
    tick(&mut task, &status, &sim, &clock).await;
    assert_eq!(sim.droplets().len(), 3);
    assert_eq!(servers(&haproxy), group_servers(&sim));
    let written = std::fs::read_to_string(&list).unwrap();
    assert!(written.starts_with("backend web\n"), "{written}");
    assert_eq!(written.matches("    server ").count(), 3, "{written}");
    drop(task);
    drop(daemon);

    // Scale down to one while requests flow through HAProxy: every one is answered by a
    // droplet that exists (its id), never a 502/503 from a destroyed or missing server.
    std::fs::write(
        dir.path().join("conf.d/web.toml"),
        group(1, &haproxy, &list),
    )
    .unwrap();
    let (_daemon, mut task, status) = start(dir.path(), &sim, &clock).await;
    let ids: Vec<String> = sim.droplets().iter().map(|d| d.id.to_string()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{}/", haproxy.port);
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = match http.get(&url).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        (status, response.text().await.unwrap_or_default())
                    }
                    Err(error) => (0, error.to_string()),
                };
                answers.push(answer);
            }
            answers
        })
    };
    // Some requests before the scale-down starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tick(&mut task, &status, &sim, &clock).await;
    stop.store(true, Ordering::Relaxed);
    let answers = load.await.unwrap();
    assert!(answers.len() > 10, "requests flowed: {}", answers.len());
    let bad: Vec<&(u16, String)> = answers
        .iter()
        .filter(|(status, body)| *status != 200 || !ids.contains(&body.trim().to_string()))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} failed: {:?}",
        bad.len(),
        answers.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(sim.droplets().len(), 1);
    assert_eq!(servers(&haproxy), group_servers(&sim));
    let written = std::fs::read_to_string(&list).unwrap();
    assert_eq!(written.matches("    server ").count(), 1, "{written}");

    // The last droplet stops answering (an http check: with one droplet, a failed scrape alone
    // proves nothing): its replacement joins the backend and it leaves.
    let sick = sim.droplets()[0].clone();
    assert!(sim.set_healthy(sick.id, false));
    for _ in 0..6 {
        tick(&mut task, &status, &sim, &clock).await;
        if !sim.droplets().iter().any(|d| d.id == sick.id) {
            break;
        }
    }
    assert!(!sim.droplets().iter().any(|d| d.id == sick.id), "replaced");
    assert_eq!(sim.droplets().len(), 1);
    assert_eq!(servers(&haproxy), group_servers(&sim));
    assert!(!servers(&haproxy).contains_key(&sick.name));
}
