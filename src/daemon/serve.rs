//! The two ways the daemon runs: `--once` (one tick of every group, waiting for the actions it
//! started, for cron-driven use) and as a service (group tasks, status API, reload on change,
//! SIGHUP, the watchdog, and a clean stop on SIGTERM).

use super::run::Daemon;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// One tick of every group, acting on its decision and waiting for the actions. Returns each
/// group's result: whether it failed, and its line for stdout.
pub async fn run_once(daemon: &Arc<Daemon>) -> Vec<super::group::OnceResult> {
    let generation = daemon.generation();
    let mut results = Vec::new();
    for group in &generation.config.groups {
        results.push(super::group::run_once(daemon, group).await);
    }
    results
}

/// Serves until `shutdown` resolves: group tasks, the status API on `listener`, reloads on
/// file changes and SIGHUP, sd-notify READY and WATCHDOG, then a clean stop.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    daemon.start_groups();
    // The watcher is in place before the status API answers: one answer means edits are seen.
    let reloader = daemon
        .take_reload_inbox()
        .map(|inbox| super::reload::start(daemon.clone(), inbox));
    let api = crate::api::router(daemon.clone());
    let limits =
        crate::api::server::ServerLimits::for_open_files(crate::limits::raise_file_limit());
    if let Ok(address) = listener.local_addr()
        && !address.ip().is_loopback()
    {
        tracing::warn!(
            %address,
            "the status API listens on an address that is not loopback: anyone who can reach it reads the groups and decisions (unless status_api.open_reads = false), and only the API token guards pause, resume and reload; prefer 127.0.0.1 behind a proxy or firewall"
        );
    }
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::api::server::serve(listener, api, limits, async {
        let _ = api_stopped.await;
    }));
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hup => {
                tracing::info!("SIGHUP: reloading");
                let daemon = daemon.clone();
                tokio::spawn(async move {
                    let _ = daemon.request_reload(super::reload::Origin::Signal).await;
                });
            }
            _ = watchdog.tick() => {
                // Fed only while every group ends its ticks (successful or failed, so a
                // DigitalOcean outage is no reason for a restart loop): a group stuck for two
                // intervals lets systemd restart the daemon.
                if daemon.groups_alive() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::warn!("a group has not ended a tick for two intervals: not feeding the watchdog");
                }
            }
        }
    }
    tracing::info!("stopping: no new ticks; letting running actions finish");
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    daemon.stop().await;
    let _ = stop_api.send(());
    let _ = server.await;
    tracing::info!("stopped");
}
