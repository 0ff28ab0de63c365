//! The commands for people (`status`, `history`, `pause`, `resume`, `reload`) run as a user runs
//! them: the binary, against a serving daemon on the sim, finding it by `--api` or by the base
//! file, with and without the token.

mod common;

use common::{API_TOKEN, GROUP, config_dir, daemon, eventually, serve_daemon, sim};
use do_scaler::sim::Demand;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs the binary with `args` and no credentials from the environment.
async fn cli(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_do-scaler"))
            .args(&args)
            .env_remove("CREDENTIALS_DIRECTORY")
            // Never the token of a do-scaler installed on the machine running the tests.
            .env("DO_SCALER_CREDENTIALS_DIR", "/nonexistent")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn out(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_see_pause_resume_and_reload_a_running_daemon() {
    let sim = sim(2, Demand::Constant(1.0), Duration::from_millis(300)).await;
    let dir = config_dir(GROUP);
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let api = running.url.clone();
    eventually(Duration::from_secs(20), "a decision", || {
        daemon
            .group_status("web")
            .is_some_and(|s| s.last_decision.is_some())
    })
    .await;

    // The table: one row per group, with its size, bounds and last decision and why.
    let output = cli(&["status", "--api", &api]).await;
    let (stdout, stderr) = out(&output);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("GROUP") && lines[0].contains("LAST DECISION"));
    assert!(lines[1].starts_with("web "), "{stdout}");
    assert!(lines[1].contains("1..5"), "{stdout}");
    assert!(
        lines[1].contains("stay at 2") || lines[1].contains("scale"),
        "{stdout}"
    );

    // One group in detail, with every step of its last decision; HOST:PORT works too.
    let host_port = api.trim_start_matches("http://");
    let output = cli(&["status", "web", "--api", host_port]).await;
    let (stdout, _) = out(&output);
    assert!(output.status.success());
    assert!(stdout.contains("group:          web"), "{stdout}");
    assert!(
        stdout.contains("droplets count toward the size"),
        "{stdout}"
    );

    // JSON is the API's own answer.
    let output = cli(&["status", "web", "--api", &api, "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["name"], "web");

    // History: newest first, at most --limit lines.
    eventually(Duration::from_secs(20), "three decisions", || {
        daemon.group_status("web").is_some_and(|s| s.ticks >= 3)
    })
    .await;
    let output = cli(&["history", "web", "--limit", "2", "--api", &api]).await;
    let (stdout, _) = out(&output);
    assert!(output.status.success());
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    // Pause without a token: refused before asking, saying where a token would come from.
    let output = cli(&[
        "pause",
        "web",
        "--api",
        &api,
        "--config",
        "/nonexistent.toml",
    ])
    .await;
    let (_, stderr) = out(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("status API token"), "{stderr}");
    assert!(!daemon.store.is_paused("web"));

    // A wrong token: the daemon's 401, said once.
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let output = cli(&["pause", "web", "--api", &api, "--token-file", &path(&wrong)]).await;
    let (_, stderr) = out(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("answered 401"), "{stderr}");
    assert!(!daemon.store.is_paused("web"));

    // The base file names the token file: pause, see it, resume.
    let config = path(&dir.path().join("do-scaler.toml"));
    let output = cli(&["pause", "web", "--api", &api, "--config", &config]).await;
    let (stdout, stderr) = out(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "web: paused (kept across restarts)\n");
    assert!(daemon.store.is_paused("web"));
    let output = cli(&["status", "--api", &api]).await;
    let (stdout, _) = out(&output);
    assert!(stdout.lines().nth(1).unwrap().contains(" yes"), "{stdout}");
    let output = cli(&["resume", "web", "--api", &api, "--config", &config]).await;
    assert!(output.status.success());
    assert!(!daemon.store.is_paused("web"));

    // Reload with a token file given on the command line.
    let token = dir.path().join("token-copy");
    std::fs::write(&token, API_TOKEN).unwrap();
    let output = cli(&["reload", "--api", &api, "--token-file", &path(&token)]).await;
    let (stdout, stderr) = out(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("reloaded: configuration generation"),
        "{stdout}"
    );

    // An unknown group: the daemon's 404, exit 1.
    let output = cli(&["status", "nope", "--api", &api]).await;
    let (_, stderr) = out(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("404") && stderr.contains("no such group"),
        "{stderr}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_comes_from_the_base_file_and_a_stopped_daemon_is_said_in_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("do-scaler.toml");
    std::fs::write(
        &config,
        format!("state = \"state.db\"\n[status_api]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let started = std::time::Instant::now();
    let output = cli(&["status", "--config", &path(&config)]).await;
    let (stdout, stderr) = out(&output);
    assert!(!output.status.success());
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach do-scaler at http://127.0.0.1:{port}"
        )) && stderr.contains("connection refused"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A bad --api is refused before any request.
    let output = cli(&["status", "--api", "ftp://x:1/"]).await;
    let (_, stderr) = out(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("--api ftp://x:1/"), "{stderr}");
}

/// A web page elsewhere that rebinds its own name to 127.0.0.1 sends that name as `Host`: the
/// page and the JSON API refuse it, while `/metrics` still answers a scraper by any name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_name_cannot_read_the_api_but_metrics_stay_scrapable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = sim(1, Demand::Constant(0.5), Duration::from_millis(300)).await;
    let dir = config_dir(GROUP);
    let daemon = daemon(dir.path(), &sim).await.unwrap();
    let running = serve_daemon(daemon.clone()).await;
    let address = running.url.trim_start_matches("http://").to_string();
    let status_of = |path: &'static str, host: String| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer.split(' ').nth(1).unwrap_or("").to_string()
        }
    };
    for path in ["/", "/api/v1/groups", "/api/v1/groups/web/decisions"] {
        assert_eq!(
            status_of(path, "evil.example:9797".into()).await,
            "421",
            "{path}"
        );
        assert_eq!(status_of(path, address.clone()).await, "200", "{path}");
        assert_eq!(status_of(path, "localhost".into()).await, "200", "{path}");
    }
    assert_eq!(
        status_of("/metrics", "scaler.internal:9797".into()).await,
        "200"
    );
    running.stop().await;
}
