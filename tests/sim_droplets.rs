//! What the sim's droplets serve besides metrics: HTTP on port 80 answering with the droplet's
//! id, and the test controls that make a droplet fail its checks and pass them again.

use do_scaler::sim::{Sim, SimOptions};
use std::time::Duration;

async fn get(url: &str) -> Result<String, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(url)
        .send()
        .await?
        .text()
        .await
}

#[tokio::test]
async fn port_80_names_its_droplet_and_an_unhealthy_droplet_stops_answering() {
    let sim = Sim::start(SimOptions {
        seed_droplets: 2,
        rate_limit: None,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let droplets = sim.droplets();
    for droplet in &droplets {
        let ip = droplet.private_ipv4().unwrap();
        assert_eq!(
            get(&format!("http://{ip}/")).await.unwrap(),
            format!("{}\n", droplet.id)
        );
    }
    let sick = &droplets[0];
    let ip = sick.private_ipv4().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let control = |what: &str| format!("{}/v2/_sim/droplets/{}/{what}", sim.api_url(), sick.id);
    let answer = http.post(control("unhealthy")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        get(&format!("http://{ip}/")).await.is_err(),
        "port 80 stopped"
    );
    assert!(
        get(&format!("http://{ip}:9110/metrics")).await.is_err(),
        "metrics stopped"
    );
    // The other droplet is untouched.
    let other = droplets[1].private_ipv4().unwrap();
    assert!(get(&format!("http://{other}:9110/metrics")).await.is_ok());

    let answer = http.post(control("healthy")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        get(&format!("http://{ip}/")).await.unwrap(),
        format!("{}\n", sick.id)
    );
    assert!(
        get(&format!("http://{ip}:9110/metrics"))
            .await
            .unwrap()
            .contains("node_cpu_seconds_total")
    );

    let unknown = http
        .post(format!("{}/v2/_sim/droplets/1/unhealthy", sim.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
