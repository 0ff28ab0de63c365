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
