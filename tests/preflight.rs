//! `do-scaler check --online` against the in-process sim.

use do_scaler::commands::check::check_online;
use do_scaler::config::Overrides;
use do_scaler::sim::{Sim, SimOptions};
use std::path::Path;

async fn sim(droplets: u32) -> Sim {
    Sim::start(SimOptions {
        seed_droplets: droplets,
        open_ports: Vec::new(),
        ..SimOptions::default()
    })
    .await
    .unwrap()
}

fn group(tag: &str, max: u32, size: &str, image: &str) -> String {
    format!(
        "tag = \"{tag}\"\nmin = 1\nmax = {max}\n[droplet]\nregion = \"nyc3\"\nsize = \"{size}\"\nimage = \"{image}\"\nssh_keys = [289794]\n"
    )
}

#[tokio::test]
async fn the_example_passes_against_the_sim() {
    let sim = sim(2).await;
    let token = sim.token().to_string();
    let env = move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone());
    let overrides = Overrides {
        api_url: Some(sim.api_url()),
        ..Overrides::default()
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("do-scaler.toml");
    let output = check_online(&example, &overrides, &env).await;
    assert_eq!(output.exit_code, 0, "{}", output.stderr);
    assert!(
        output.stdout.contains("online checks passed"),
        "{}",
        output.stdout
    );
    assert!(
        output
            .stderr
            .contains("cannot be verified without creating a droplet")
    );
    assert_eq!(
        sim.api_counts()["POST /v2/tags"],
        1,
        "the managed-by tag is ensured"
    );
}

#[tokio::test]
async fn reports_a_wrong_size_a_missing_image_and_a_limit_too_small() {
    let sim = sim(3).await;
    sim.set_droplet_limit(10);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("do-scaler.toml"), "").unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/web.toml"),
        group("web", 6, "s-99vcpu-1tb", "ubuntu-24-04-x64"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.d/api.toml"),
        group("api", 6, "s-1vcpu-1gb", "ubuntu-6-10-x64"),
    )
    .unwrap();
    let token = sim.token().to_string();
    let env = move |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| token.clone());
    let overrides = Overrides {
        api_url: Some(sim.api_url()),
        ..Overrides::default()
    };
    let output = check_online(&dir.path().join("do-scaler.toml"), &overrides, &env).await;
    let stderr = output
        .stderr
        .replace(&format!("{}/", dir.path().display()), "");
    assert_eq!(output.exit_code, 1, "{stderr}");
    assert!(
        stderr.contains("conf.d/web.toml: droplet.size: size `s-99vcpu-1tb` does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("conf.d/api.toml: droplet.image: image `ubuntu-6-10-x64` does not exist"),
        "{stderr}"
    );
    // Values as written in the files, never Rust's debug form.
    for debug in ["Slug(", "Id(", "Fingerprint(", "Some(", "\\\""] {
        assert!(!stderr.contains(debug), "{debug} in:\n{stderr}");
    }
    assert!(
        stderr.contains("conf.d/api.toml: max: the account's droplet limit is 10 and 3 droplets exist, leaving room for 7, but the groups may add 9"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_missing_token_fails_online_checks() {
    let sim = sim(0).await;
    let env = |_: &str| None;
    let overrides = Overrides {
        api_url: Some(sim.api_url()),
        ..Overrides::default()
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("do-scaler.toml");
    let output = check_online(&example, &overrides, &env).await;
    assert_eq!(output.exit_code, 1);
    assert!(
        output.stderr.contains("no DigitalOcean token"),
        "{}",
        output.stderr
    );
}

/// An API that refuses connections or never answers is one line, within 10 s, not every
/// check's retries.
#[tokio::test]
async fn an_unreachable_api_is_one_line_within_ten_seconds() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!("http://{}", refused.local_addr().unwrap());
    drop(refused);
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_url = format!("http://{}", hanging.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hanging.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("do-scaler.toml"), "").unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/web.toml"),
        group("web", 3, "s-1vcpu-1gb", "ubuntu-24-04-x64"),
    )
    .unwrap();
    let env = |name: &str| (name == "DIGITALOCEAN_TOKEN").then(|| "t".to_string());
    for url in [refused_url, hanging_url] {
        let started = std::time::Instant::now();
        let overrides = Overrides {
            api_url: Some(url.clone()),
            ..Overrides::default()
        };
        let output = check_online(&dir.path().join("do-scaler.toml"), &overrides, &env).await;
        assert_eq!(output.exit_code, 1, "{url}: {}", output.stderr);
        // The configuration's own warnings, then one line about the API.
        let about_api: Vec<&str> = output
            .stderr
            .lines()
            .filter(|l| !l.contains(": warning: "))
            .collect();
        assert_eq!(about_api.len(), 1, "{}", output.stderr);
        assert!(
            about_api[0].starts_with(&format!("cannot reach the DigitalOcean API at {url}: ")),
            "{}",
            output.stderr
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
