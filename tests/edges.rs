//! Trust at the edges: what a local client, a file or the environment can do to a running
//! daemon, tried against the binary itself (`do-scaler run`) and the in-process sim.

use do_scaler::sim::Demand;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `do-scaler run` serving on `port`, its open-file limit pinned at `files` (soft and
/// hard, so the daemon cannot raise it).
fn spawn_daemon(dir: &std::path::Path, sim_url: &str, token: &str, port: u16, files: u64) -> Child {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_do-scaler"));
    command
        .args(["run", "--config"])
        .arg(dir.join("do-scaler.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DIGITALOCEAN_API_URL", sim_url)
        .env("DIGITALOCEAN_TOKEN", token)
        .env("DO_SCALER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and touches only the child's limits.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: files,
                rlim_max: files,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().unwrap()
}

async fn healthy(port: u16, within: Duration) -> bool {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while started.elapsed() < within {
        if let Ok(answer) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            && answer.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Trust at the edges (1): thousands of idle connections that keep sending header lines
/// cannot take the daemon's file descriptors: it keeps scraping, scales up, and answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_does_not_stop_scraping_and_scaling() {
    do_scaler::limits::raise_file_limit();
    // Two droplets at exactly the CPU target; the demand rises once the flood is in place.
    let sim = sim(2, Demand::Constant(2.0), Duration::from_millis(300)).await;
    let dir = config_dir(&GROUP.replace("min = 1", "min = 2"));
    let port = free_port();
    let mut child = spawn_daemon(dir.path(), &sim.api_url(), sim.token(), port, 1024);
    assert!(
        healthy(port, Duration::from_secs(20)).await,
        "the daemon starts"
    );

    // The flood: 3,000 connection attempts, in batches of 100; each connection that opens
    // trickles header lines and never finishes. Past the daemon's limit, clients wait in the
    // kernel's backlog or time out.
    let attempted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = attempted.clone();
    let flood = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut open = Vec::new();
        for _ in 0..30 {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..100 {
                batch.spawn(async move {
                    let mut stream = tokio::time::timeout(
                        Duration::from_millis(500),
                        tokio::net::TcpStream::connect(("127.0.0.1", port)),
                    )
                    .await
                    .ok()?
                    .ok()?;
                    stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                        .await
                        .ok()?;
                    Some(stream)
                });
            }
            while let Some(result) = batch.join_next().await {
                open.extend(result.ok().flatten());
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        loop {
            for stream in &mut open {
                let _ = stream.write_all(b"X-Slow: y\r\n").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    eventually(Duration::from_secs(40), "the flood to connect", || {
        attempted.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let scrapes_before: u64 = sim.scrapes().values().sum();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scrapes_after: u64 = sim.scrapes().values().sum();
    assert!(
        scrapes_after >= scrapes_before + 4,
        "scraping goes on under the flood ({scrapes_before} -> {scrapes_after})"
    );
    sim.set_demand(Demand::Constant(3.5));
    eventually(
        Duration::from_secs(40),
        "the group to scale up under the flood",
        || sim.droplets().len() >= 4,
    )
    .await;
    assert!(
        healthy(port, Duration::from_secs(15)).await,
        "the status API answers new clients again"
    );
    flood.abort();
    let _ = child.kill();
    let _ = child.wait();
}

/// The launcher the do-agent drop-in starts, run with a stub metadata service and a stub
/// do-agent that prints its arguments. Returns (stdout, stderr, seconds taken).
fn launch_do_agent(metadata_url: &str) -> (String, String, f64) {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("do-agent");
    std::fs::write(&agent, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/do-agent/do-agent-private-listen"
    );
    let started = Instant::now();
    let output = Command::new("sh")
        .arg(script)
        .env("DO_SCALER_METADATA_URL", metadata_url)
        // Four seconds: room for a third try when a loaded machine makes the second one fail
        // (the wait is counted in whole seconds), and a hung service still ends well inside 15 s.
        .env("DO_SCALER_METADATA_WAIT", "4")
        .env("DO_AGENT", &agent)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

/// Trust at the edges (1): the do-agent launcher fails closed. With a private address it
/// listens there only; when the metadata service refuses, hangs, errs or answers garbage, it
/// gives up within its bound and keeps do-agent on its loopback default, saying why; it keeps
/// do-agent's own `--syslog`. The cloud-init snippet carries exactly the packaged files.
#[test]
fn the_do_agent_launcher_fails_closed() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A stub metadata service: /ok answers an address, /garbage HTML, /flaky 503 once first,
    // /hang accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let flaky = std::sync::Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let flaky = flaky.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 2048];
                let n = stream.read(&mut buffer).unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..n]).to_string();
                let (status, body) = if request.starts_with("GET /ok/") {
                    ("200 OK", "10.110.0.5")
                } else if request.starts_with("GET /garbage/") {
                    ("200 OK", "<html>maintenance</html>")
                } else if request.starts_with("GET /flaky/") {
                    // One failure, then an answer: the retry comes 2 s later, well inside the
                    // 4 s wait even when the first attempt starts late in a clock second.
                    if flaky.fetch_add(1, Ordering::SeqCst) < 1 {
                        ("503 Service Unavailable", "busy")
                    } else {
                        ("200 OK", "10.110.0.7")
                    }
                } else if request.starts_with("GET /empty/") {
                    ("200 OK", "")
                } else {
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    let refused_port = free_port();
    let cases = [
        (
            format!("http://127.0.0.1:{port}/ok"),
            Some("10.110.0.5:9110"),
        ),
        (
            format!("http://127.0.0.1:{port}/flaky"),
            Some("10.110.0.7:9110"),
        ),
        (format!("http://127.0.0.1:{port}/garbage"), None),
        (format!("http://127.0.0.1:{port}/empty"), None),
        (format!("http://127.0.0.1:{port}/hang"), None),
        (format!("http://127.0.0.1:{refused_port}/refused"), None),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(url, _)| {
            let url = url.clone();
            std::thread::spawn(move || launch_do_agent(&url))
        })
        .collect();
    for ((url, expected), run) in cases.iter().zip(runs) {
        let (stdout, stderr, took) = run.join().unwrap();
        let args: Vec<&str> = stdout.lines().collect();
        assert!(args.contains(&"--syslog"), "{url}: {args:?}");
        assert!(args.contains(&"--web.listen"), "{url}: {args:?}");
        assert!(took < 15.0, "{url}: took {took}s");
        match expected {
            Some(address) => {
                assert!(
                    args.contains(&format!("--web.listen-address={address}").as_str()),
                    "{url}: {args:?}"
                );
            }
            None => {
                assert!(
                    !args.iter().any(|a| a.starts_with("--web.listen-address")),
                    "{url}: fails closed, got {args:?}"
                );
                assert!(stderr.contains("loopback default"), "{url}: {stderr}");
            }
        }
    }

    // The cloud-init snippet writes exactly the packaged launcher and drop-in.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let snippet: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(root.join("cloud-init/do-agent.yaml")).unwrap(),
    )
    .unwrap();
    let files = snippet["write_files"].as_array().unwrap();
    for (path, packaged) in [
        (
            "/usr/local/sbin/do-agent-private-listen",
            "packaging/do-agent/do-agent-private-listen",
        ),
        (
            "/etc/systemd/system/do-agent.service.d/do-scaler.conf",
            "packaging/do-agent/do-scaler.conf",
        ),
    ] {
        let entry = files
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("{path} is not in the snippet"));
        assert_eq!(
            entry["content"].as_str().unwrap(),
            std::fs::read_to_string(root.join(packaged)).unwrap(),
            "{path} drifted from {packaged}"
        );
    }
}

/// Trust at the edges (2): the watchdog is fed while every group ends its ticks, failed ones
/// included: a DigitalOcean outage is no reason for systemd to restart the daemon in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_through_a_digitalocean_outage() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(GROUP);
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_do-scaler"));
    command
        .args(["run", "--config"])
        .arg(dir.path().join("do-scaler.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DIGITALOCEAN_API_URL", sim.api_url())
        .env("DIGITALOCEAN_TOKEN", sim.token())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("DO_SCALER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    // What the daemon told systemd within `window`.
    let listen = |window: Duration| {
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 512];
        while started.elapsed() < window {
            if let Ok(n) = socket.recv(&mut buffer) {
                seen.push(String::from_utf8_lossy(&buffer[..n]).to_string());
            }
        }
        seen
    };
    let first = tokio::task::block_in_place(|| listen(Duration::from_secs(4)));
    assert!(first.iter().any(|m| m.contains("READY=1")), "{first:?}");
    assert!(first.iter().any(|m| m.contains("WATCHDOG=1")), "{first:?}");
    // An outage: every API answer fails, every tick fails, and yet ticks end.
    sim.update_faults(|f| f.error_rate = 1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = tokio::task::block_in_place(|| listen(Duration::from_secs(4)));
    assert!(
        during.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "fed during the outage: {during:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Trust at the edges (2): changing a group's tag warns that the droplets with the old tag are
/// left to themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_groups_tag_warns_about_the_droplets_left_behind() {
    let sim = sim(1, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(GROUP);
    let port = free_port();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args(["run", "--config"])
        .arg(dir.path().join("do-scaler.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DIGITALOCEAN_API_URL", sim.api_url())
        .env("DIGITALOCEAN_TOKEN", sim.token())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(healthy(port, Duration::from_secs(20)).await);
    let file = dir.path().join("conf.d/web.toml");
    let temp = dir.path().join("conf.d/.web.toml.new");
    std::fs::write(&temp, GROUP.replace("tag = \"web\"", "tag = \"web2\"")).unwrap();
    std::fs::rename(&temp, &file).unwrap();
    eventually(Duration::from_secs(15), "the warning", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("left to themselves")
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}
