//! `do-scaler record GROUP --out FILE [--duration D]`: ticks one group as the daemon would
//! (list, scrape, decide) without ever acting, and writes what each tick observed to a
//! recording, until the duration has passed or the process is interrupted. A daemon records
//! continuously with `[record]` instead.

use super::check::{CommandOutput, client_at_speed};
use crate::config::credentials::EnvLookup;
use crate::config::{Overrides, load};
use crate::daemon::tick::{GroupRuntime, InFlight};
use crate::metrics::scrape::{DEFAULT_BODY_LIMIT, Scraper};
use crate::policy::GroupMemory;
use crate::record::{RecordedDecision, Recorder, header_for};
use std::path::PathBuf;
use std::time::Duration;

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordRequest {
    /// The base file.
    pub config: PathBuf,
    /// Command-line overrides.
    pub overrides: Overrides,
    /// The group.
    pub group: String,
    /// The recording to write.
    pub out: PathBuf,
    /// How long to record, on `clock` (`None`: until interrupted).
    pub duration: Option<Duration>,
    /// The clock samples are stamped with: the system's, or a sim's (`--clock`).
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
}

fn fail(stderr: String) -> CommandOutput {
    CommandOutput {
        stdout: String::new(),
        stderr,
        exit_code: 1,
    }
}

/// Records until `request.duration` has passed or `stop` resolves.
pub async fn run(
    request: &RecordRequest,
    env: EnvLookup<'_>,
    stop: impl std::future::Future<Output = ()>,
) -> CommandOutput {
    let config = match load(&request.config, &request.overrides) {
        Ok(loaded) => loaded.config,
        Err(error) => return fail(format!("{error}\n")),
    };
    let Some(group) = config.groups.iter().find(|g| g.name == request.group) else {
        let names: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        return fail(format!(
            "no group `{}`; groups: {}\n",
            request.group,
            names.join(", ")
        ));
    };
    // Never over another recording: hours of traffic are not recorded again.
    if request.out.exists() {
        return fail(format!(
            "{} exists: give another --out, or remove it first (a recording is never overwritten)\n",
            request.out.display()
        ));
    }
    let client = match client_at_speed(&config.base, env, request.clock.speed()) {
        Ok(client) => client,
        Err(reason) => return fail(format!("{}: token: {reason}\n", config.base.path.display())),
    };
    let scraper = match Scraper::new(64, DEFAULT_BODY_LIMIT) {
        Ok(scraper) => {
            scraper.with_credentials_dir(env("CREDENTIALS_DIRECTORY").map(PathBuf::from))
        }
        Err(error) => return fail(format!("{error}\n")),
    };
    let mut runtime = match GroupRuntime::new(group.clone(), config.base.managed_by_tag()) {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("{}: {error}\n", group.file.display())),
    };
    let clock = request.clock.as_ref();
    let started = clock.now();
    let mut recorder = match Recorder::create(&request.out, &header_for(group, started)) {
        Ok(recorder) => recorder,
        Err(error) => return fail(format!("{error}\n")),
    };
    // Never acting, the recorder's memory only keeps the decisions' own clocks.
    let mut memory = GroupMemory::default();
    let in_flight = InFlight::default();
    let mut ticker = tokio::time::interval(crate::clock::wall(clock, group.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = request
        .duration
        .map(|d| tokio::time::Instant::now() + crate::clock::wall(clock, d));
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    tokio::pin!(until_deadline);
    let (mut ticks, mut failed) = (0u64, 0u64);
    let mut stderr = String::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => break,
            _ = &mut until_deadline => break,
        }
        let now = clock.now();
        let report = match tokio::time::timeout(
            group.tick_timeout,
            runtime.tick(&client, &scraper, &mut memory, &in_flight, now),
        )
        .await
        {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                failed += 1;
                tracing::warn!(group = %group.name, %error, "tick failed: not recorded");
                continue;
            }
            Err(_) => {
                failed += 1;
                tracing::warn!(group = %group.name, "tick passed its deadline: not recorded");
                continue;
            }
        };
        let points = runtime.history.take_new_points();
        let decision = RecordedDecision::of(&report.decision);
        if let Err(error) = recorder.tick(
            report.decision.at.timestamp_millis(),
            &report.listing,
            &points,
            &decision,
        ) {
            stderr.push_str(&format!("{error}\n"));
            return CommandOutput {
                stdout: String::new(),
                stderr,
                exit_code: 1,
            };
        }
        ticks += 1;
    }
    if let Err(error) = recorder.finish() {
        return fail(format!("{error}\n"));
    }
    let size = std::fs::metadata(&request.out)
        .map(|m| m.len())
        .unwrap_or(0);
    CommandOutput {
        stdout: format!(
            "recorded {ticks} ticks of {} ({failed} failed, not recorded) to {} ({:.1} KB)\n",
            group.name,
            request.out.display(),
            size as f64 / 1000.0
        ),
        stderr,
        exit_code: 0,
    }
}
