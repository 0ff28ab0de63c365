//! Issue 22, part 3: `sim --speed N` runs the sim's clock N times faster and serves it;
//! `run`, `plan` and `record` keep the sim's time with `--clock URL`, so rates stay right and
//! intervals pass N times faster. Processes, as a user runs them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A group of 2 droplets at 30 s intervals whose CPU rule reads a 2-minute rate.
const GROUP: &str = r#"tag = "web"
min = 1
max = 6
warmup = "2m"
[droplet]
region = "nyc3"
size = "s-2vcpu-4gb"
image = "ubuntu-24-04-x64"
[cooldown]
up = "30s"
down = "10m"
[scale_in]
min_age = "0s"
[[rule]]
name = "cpu"
expr = '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[2m]))'
target = 0.6
"#;

/// Starts `do-scaler sim` with `args`; returns it, its API URL and the clock URL it printed.
fn start_sim(args: &[&str]) -> (Running, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .arg("sim")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let api = line
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix("DIGITALOCEAN_API_URL="))
        .unwrap()
        .to_string();
    // The second line on stderr names the clock to follow.
    let mut lines = BufReader::new(stderr).lines();
    let clock = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some((_, url)) = line.split_once("--clock ") {
            break url.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (running, api, clock)
}

/// GETs `url` as JSON (with the sim's token), from a test that is not async.
fn get_json(url: &str) -> serde_json::Value {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            reqwest::Client::new()
                .get(url)
                .bearer_auth("sim-token")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
}

fn plan(dir: &std::path::Path, api: &str, clock: Option<&str>) -> serde_json::Value {
    plan_waiting(dir, api, clock, None)
}

fn plan_waiting(
    dir: &std::path::Path,
    api: &str,
    clock: Option<&str>,
    wait: Option<&str>,
) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_do-scaler"));
    command
        .args(["plan", "--json", "--config"])
        .arg(dir.join("do-scaler.toml"))
        .args(["--state"])
        .arg(dir.join("plan.db"))
        .env("DIGITALOCEAN_API_URL", api)
        .env("DIGITALOCEAN_TOKEN", "sim-token");
    if let Some(clock) = clock {
        command.args(["--clock", clock]);
    }
    if let Some(wait) = wait {
        command.args(["--wait", wait]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_sim_at_speed_serves_its_clock_and_a_plan_keeping_it_measures_rates_right() {
    // 3 vCPUs of work on two 2-vCPU droplets: 75 % busy each.
    let (_sim, api, clock_url) = start_sim(&[
        "--speed",
        "30",
        "--droplets",
        "2",
        "--managed",
        "--demand",
        "3",
        "--rate-limit",
        "off",
        "--open-ports",
        "22",
    ]);
    // The clock runs 30 times faster than the wall.
    let read = |url: &str| -> (chrono::DateTime<chrono::Utc>, f64) {
        let reading = get_json(url);
        let now = reading["now"].as_str().unwrap().parse().unwrap();
        (now, reading["speed"].as_f64().unwrap())
    };
    let (first, speed) = read(&clock_url);
    let wall = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let (second, _) = read(&clock_url);
    assert_eq!(speed, 30.0);
    let ratio = (second - first).num_milliseconds() as f64 / wall.elapsed().as_millis() as f64;
    assert!((25.0..=31.0).contains(&ratio), "ratio {ratio}");

    let dir = common::config_dir(GROUP);
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        "interval = \"30s\"\nstate = \"state.db\"\nlisting_lag = \"0s\"\n",
    )
    .unwrap();
    // Keeping the sim's clock, a plan waits 2 simulated minutes (4 s) and reads 75 %.
    let kept = plan(dir.path(), &api, Some(&clock_url));
    let cpu = kept["groups"][0]["rules"][0]["value"].as_f64().unwrap();
    assert!(
        (0.70..=0.80).contains(&cpu),
        "cpu {cpu} with --clock: {kept}"
    );
    assert_eq!(kept["groups"][0]["desired"], 3, "{kept}");
    // On the wall's time the counters look 30 times too fast: the rate is nonsense, which is
    // what --clock is for.
    std::fs::remove_file(dir.path().join("plan.db")).unwrap();
    let wrong = plan_waiting(dir.path(), &api, None, Some("6s"));
    let cpu = wrong["groups"][0]["rules"][0]["value"].as_f64();
    assert!(
        cpu.is_none_or(|cpu| !(0.70..=0.80).contains(&cpu)),
        "without --clock the rate cannot be right: {wrong}"
    );
}

#[test]
fn a_daemon_keeping_a_fast_sims_clock_scales_in_simulated_time() {
    let (_sim, api, clock_url) = start_sim(&[
        "--speed",
        "30",
        "--droplets",
        "2",
        "--managed",
        "--demand",
        "3",
        "--boot-delay",
        "60s",
        "--rate-limit",
        "off",
        "--open-ports",
        "22",
    ]);
    let dir = common::config_dir(GROUP);
    std::fs::write(
        dir.path().join("do-scaler.toml"),
        "interval = \"30s\"\nstate = \"state.db\"\nlisting_lag = \"0s\"\n[status_api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let daemon = Running(
        Command::new(env!("CARGO_BIN_EXE_do-scaler"))
            .args(["run", "--config"])
            .arg(dir.path().join("do-scaler.toml"))
            .args(["--clock", &clock_url])
            .env("DIGITALOCEAN_API_URL", &api)
            .env("DIGITALOCEAN_TOKEN", "sim-token")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // 30 s intervals, a 2-minute range and a 60 s boot: about 4 simulated minutes, 8 s of
    // wall time, to a third droplet that is active; at real time this would take minutes.
    let started = Instant::now();
    let active = || -> usize {
        let list = get_json(&format!("{api}/v2/droplets?tag_name=web&per_page=200"));
        list["droplets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == "active")
            .count()
    };
    while active() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no third active droplet after 40 s of wall time (20 simulated minutes)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And it stays at 3: 75 % of 2 droplets is 50 % of 3, under the target (the new droplet
    // warms for the rule's range first, so the old busy samples do not count it twice).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(active(), 3);
    drop(daemon);
}
