//! The two ways the daemon runs: `--once` (one tick of every group, waiting for the actions it
//! started, for cron-driven use) and as a service (group tasks, status API, reload on change,
//! SIGHUP, the watchdog, and a clean stop on SIGTERM).

use super::run::Daemon;
use super::tick::GroupRuntime;
use crate::policy::{Direction, MemoryStore};
use crate::script::runner::ActionRequest;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// One tick of every group, acting on its decision and waiting for the actions. Returns the
/// number of groups whose tick or actions failed.
pub async fn run_once(daemon: &Arc<Daemon>) -> usize {
    let generation = daemon.generation();
    let mut failures = 0;
    for group in &generation.config.groups {
        let name = group.name.clone();
        let mut runtime = match GroupRuntime::new(group.clone(), daemon.managed_tag.clone()) {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(group = %name, %error, "cannot compile the group's expressions");
                failures += 1;
                continue;
            }
        };
        let mut memory = daemon.store.load(&name);
        let now = daemon.clock.now();
        runtime.restore_history(&daemon.store, now);
        let tick = tokio::time::timeout(
            group.tick_timeout,
            runtime.tick(
                &daemon.client(),
                &daemon.scraper,
                &mut memory,
                &|_| false,
                now,
            ),
        )
        .await;
        let report = match tick {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                tracing::error!(group = %name, %error, "tick failed");
                failures += 1;
                continue;
            }
            Err(_) => {
                tracing::error!(group = %name, "tick passed its deadline");
                failures += 1;
                continue;
            }
        };
        crate::failpoint::hit("decision.before_record");
        let _ = daemon.store.record_decision(
            &name,
            &report.decision.at.to_rfc3339(),
            &report.to_record_json().to_string(),
        );
        crate::failpoint::hit("decision.after_record");
        tracing::info!(group = %name, current = report.decision.current, desired = report.decision.desired, "{}", report.decision.steps.last().map(String::as_str).unwrap_or(""));
        if let Some(direction) = report.decision.direction {
            if daemon.options.dry_run || daemon.store.is_paused(&name) {
                tracing::info!(group = %name, dry_run = daemon.options.dry_run, "not acting");
            } else {
                let request = ActionRequest {
                    group: group.clone(),
                    managed_tag: daemon.managed_tag.clone(),
                    decision: report.decision.clone(),
                    droplets: report.listing.clone(),
                    actions: report.actions.clone(),
                    deadline: daemon.options.action_deadline,
                    creates_last_hour: memory.creates_last_hour(daemon.clock.now()),
                };
                let result = daemon.runner().run(request).await;
                let now = daemon.clock.now();
                memory.created(result.create_attempts, now);
                match result.failure() {
                    None => memory.scaled(direction, now),
                    Some(error) => {
                        tracing::error!(group = %name, %error, "actions failed");
                        if direction == Direction::Up {
                            memory.up_failed(now);
                        }
                        failures += 1;
                    }
                }
            }
        }
        crate::failpoint::hit("memory.before_save");
        daemon.store.save(&name, &memory);
        runtime.save_history(&daemon.store);
    }
    failures
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
                // The scheduler loop turning over is what keeps the watchdog fed.
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
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
