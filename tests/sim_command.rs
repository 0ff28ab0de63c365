//! `do-scaler sim` as a user runs it: one export line on stdout, droplets serving metrics.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the sim when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sim_with_1000_droplets_prints_its_export_line_and_serves_metrics() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_do-scaler"))
        .args(["sim", "--droplets", "1000", "--demand", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let mut api = None;
    let mut token = None;
    for pair in line.split_whitespace() {
        match pair.split_once('=') {
            Some(("DIGITALOCEAN_API_URL", value)) => api = Some(value.to_string()),
            Some(("DIGITALOCEAN_TOKEN", value)) => token = Some(value.to_string()),
            Some(("DO_SCALER_SIM_PID", value)) => assert!(value.parse::<u32>().is_ok()),
            _ => panic!("unexpected `{pair}` in the export line `{line}`"),
        }
    }
    let (api, token) = (api.unwrap(), token.unwrap());
    assert!(api.starts_with("http://127.0.0.1:"));

    let http = reqwest::Client::new();
    let list: serde_json::Value = http
        .get(format!("{api}/v2/droplets?tag_name=web&per_page=200"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["meta"]["total"], 1000);
    let address = list["droplets"][0]["networks"]["v4"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(address.starts_with("127."));
    let body = http
        .get(format!("http://{address}:9110/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("# TYPE node_cpu_seconds_total counter"),
        "{body}"
    );
    assert!(body.contains("node_load1 "), "{body}");
    let stats: serde_json::Value = http
        .get(format!("{api}/v2/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["droplets"]["active"], 1000);
    assert_eq!(stats["scrapes"]["total"], 1);
}

/// The README's one-liner returns: the sim lets go of stdout after its export line, so
/// `eval "export $(do-scaler sim &)"` ends at once and leaves the sim running, stoppable by
/// the PID it exported.
#[test]
fn the_readme_one_liner_returns_and_exports_the_pid() {
    let binary = env!("CARGO_BIN_EXE_do-scaler");
    let started = std::time::Instant::now();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "eval \"export $('{binary}' sim --droplets 1 2>/dev/null &)\"; echo \"$DIGITALOCEAN_API_URL $DO_SCALER_SIM_PID\""
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let (url, pid) = stdout.trim().split_once(' ').unwrap();
    let pid: i32 = pid
        .parse()
        .unwrap_or_else(|_| panic!("no pid in `{stdout}`"));
    // The sim is still running: stop it.
    let alive = Command::new("kill").arg(pid.to_string()).status().unwrap();
    assert!(
        alive.success(),
        "the sim kept running after the one-liner returned"
    );
    assert!(url.starts_with("http://127.0.0.1:"), "{stdout}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
