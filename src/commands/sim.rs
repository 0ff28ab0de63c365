//! `do-scaler sim`: run the simulated DigitalOcean until interrupted.

use crate::sim::{Sim, SimError, SimOptions};

/// Starts the sim, prints the one export line on stdout, and serves until Ctrl-C or SIGTERM.
pub async fn run(options: SimOptions) -> Result<(), SimError> {
    let droplets = options.seed_droplets;
    let speed = options.clock.speed();
    let sim = Sim::start(options).await?;
    println!(
        "DIGITALOCEAN_API_URL={} DIGITALOCEAN_TOKEN={} DO_SCALER_SIM_PID={}",
        sim.api_url(),
        sim.token(),
        std::process::id()
    );
    release_stdout();
    eprintln!(
        "sim: API on {}, droplets on 127.{}.0.0/16 ({droplets} seeded); stats at {}/v2/_sim/stats; Ctrl-C stops",
        sim.api_url(),
        sim.subnet(),
        sim.api_url()
    );
    if speed != 1.0 {
        eprintln!(
            "sim: the clock runs {speed}x real time; give daemons --clock {}",
            sim.clock_url()
        );
    }
    shutdown_signal().await;
    eprintln!("sim: stopping");
    Ok(())
}

/// Lets go of stdout once the export line is out: `eval "export $(do-scaler sim &)"` reads
/// stdout to its end, which comes only when no process holds it open. The sim writes nothing
/// more there (its messages go to stderr), so stdout becomes /dev/null.
fn release_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            // SAFETY: dup2 only replaces descriptor 1 with a copy of a descriptor this function
            // owns (closed when `null` drops); Rust's stdout handle stays valid, and what it
            // writes from now on goes to /dev/null.
            unsafe {
                libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
            }
        }
    }
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
