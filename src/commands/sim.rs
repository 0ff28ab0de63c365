//! `do-scaler sim`: run the simulated DigitalOcean until interrupted.

use crate::sim::{Sim, SimError, SimOptions};

/// Starts the sim, prints the one export line on stdout, and serves until Ctrl-C or SIGTERM.
pub async fn run(options: SimOptions) -> Result<(), SimError> {
    let droplets = options.seed_droplets;
    let sim = Sim::start(options).await?;
    println!(
        "DIGITALOCEAN_API_URL={} DIGITALOCEAN_TOKEN={}",
        sim.api_url(),
        sim.token()
    );
    eprintln!(
        "sim: API on {}, droplets on 127.{}.0.0/16 ({droplets} seeded); stats at {}/v2/_sim/stats; Ctrl-C stops",
        sim.api_url(),
        sim.subnet(),
        sim.api_url()
    );
    shutdown_signal().await;
    eprintln!("sim: stopping");
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
