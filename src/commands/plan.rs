//! `do-scaler plan`: one tick of every group (or one) against the API and the droplets, shown
//! without acting — droplets, rule values and verdicts, bounds, cooldowns, backoff, the winner,
//! the actions that would run and the victims.

use super::check::{CommandOutput, client_at_speed};
use crate::config::credentials::EnvLookup;
use crate::config::{Overrides, load};
use crate::daemon::tick::{GroupRuntime, TickReport};
use crate::metrics::scrape::{DEFAULT_BODY_LIMIT, Scraper};
use crate::policy::{GroupMemory, MemoryStore, Observation, Truth};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// What `plan` was asked.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The base file.
    pub config: PathBuf,
    /// Command-line overrides.
    pub overrides: Overrides,
    /// Only this group.
    pub group: Option<String>,
    /// JSON on stdout instead of the report.
    pub json: bool,
    /// How long to keep scraping for rate rules to cover their ranges (`None`: as long as the
    /// longest range needs).
    pub wait: Option<Duration>,
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

/// Runs the plan. `memories` gives each group's remembered state (the daemon's state database
/// when there is one).
pub async fn run(
    request: &PlanRequest,
    env: EnvLookup<'_>,
    memories: &dyn MemoryStore,
) -> CommandOutput {
    let loaded = match load(&request.config, &request.overrides) {
        Ok(loaded) => loaded,
        Err(error) => return fail(format!("{error}\n")),
    };
    let mut stderr = String::new();
    for warning in &loaded.warnings {
        let _ = writeln!(stderr, "{warning}");
    }
    let config = loaded.config;
    if let Some(name) = &request.group
        && !config.groups.iter().any(|g| &g.name == name)
    {
        let names: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        return fail(format!(
            "{stderr}no group `{name}`; groups: {}\n",
            names.join(", ")
        ));
    }
    let client = match client_at_speed(&config.base, env, request.clock.speed()) {
        Ok(client) => client,
        Err(reason) => {
            return fail(format!(
                "{stderr}{}: token: {reason}\n",
                config.base.path.display()
            ));
        }
    };
    let scraper = match Scraper::new(64, DEFAULT_BODY_LIMIT) {
        Ok(scraper) => {
            scraper.with_credentials_dir(env("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from))
        }
        Err(error) => return fail(format!("{stderr}{error}\n")),
    };
    let managed_tag = config.base.managed_by_tag();
    let mut reports = Vec::new();
    for group in config
        .groups
        .iter()
        .filter(|g| request.group.as_ref().is_none_or(|n| n == &g.name))
    {
        let mut runtime = match GroupRuntime::new(group.clone(), managed_tag.clone()) {
            Ok(runtime) => runtime,
            Err(error) => return fail(format!("{stderr}{}: {error}\n", group.file.display())),
        };
        // The daemon's state: remembered clocks and the sample history it appends each tick.
        // Beside a running daemon it is read without its lock; otherwise `plan` appends its own
        // scrapes too, so the next `plan` sees rates at once.
        let kept = open_state(&config.base.state);
        let mut memory = match kept.as_ref().map(State::store) {
            Some(store) => store.load(&group.name),
            None => memories.load(&group.name),
        };
        // A shared state says who leads the group; `plan` itself never takes a lease.
        if let Some(store) = kept.as_ref().map(State::store).filter(|s| s.is_shared()) {
            let leaders = crate::state::lease::current_leaders(store).unwrap_or_default();
            match leaders.get(&group.name) {
                Some((holder, true)) => eprintln!("{}: led by {holder}", group.name),
                Some((holder, false)) => eprintln!(
                    "{}: no daemon leads it now (the lease of {holder} has run out)",
                    group.name
                ),
                None => eprintln!("{}: no daemon has led it yet", group.name),
            }
        }
        if let Some(store) = kept.as_ref().map(State::store)
            && runtime.restore_history(store, request.clock.now()) > 0
        {
            eprintln!(
                "{}: using the sample history kept in {}",
                group.name,
                config.base.state.describe()
            );
        }
        // What the daemon has in flight: deletes the listing still shows, creates it does not
        // show yet, draining droplets and replacements, so `plan` classifies them as the daemon does.
        let in_flight = match kept.as_ref().map(State::store) {
            Some(store) => {
                crate::daemon::tick::InFlight::read(store, &group.name, config.base.listing_lag).0
            }
            None => crate::daemon::tick::InFlight::default(),
        };
        let outcome = plan_group(
            &mut runtime,
            &client,
            &scraper,
            &mut memory,
            &in_flight,
            request.wait,
            request.clock.as_ref(),
        )
        .await;
        if let Some(State::Writable(store)) = &kept {
            runtime.save_history(store, request.clock.now(), false);
        }
        match outcome {
            Ok(report) => reports.push((report, memory)),
            Err(error) => return fail(format!("{stderr}{}: {error}\n", group.file.display())),
        }
    }
    let stdout = if request.json {
        let groups: Vec<serde_json::Value> = reports.iter().map(|(r, _)| r.to_json()).collect();
        format!(
            "{}\n",
            serde_json::to_string_pretty(&json!({ "groups": groups })).unwrap_or_default()
        )
    } else {
        reports
            .iter()
            .map(|(r, m)| render(r, m))
            .collect::<Vec<_>>()
            .join("\n")
    };
    CommandOutput {
        stdout,
        stderr,
        exit_code: 0,
    }
}

/// The state database as `plan` may use it.
enum State {
    /// No daemon holds it: `plan` appends its scrapes.
    Writable(crate::state::Store),
    /// A daemon holds it: read only.
    ReadOnly(crate::state::Store),
}

impl State {
    fn store(&self) -> &crate::state::Store {
        match self {
            State::Writable(store) | State::ReadOnly(store) => store,
        }
    }
}

/// Opens the state database for `plan`: as a writer when no daemon holds it (creating it if
/// it can), else read-only; `None` when it cannot be used at all. A shared PostgreSQL state is
/// always read-only here: `plan` never writes what the groups' leaders keep.
fn open_state(location: &crate::state::Location) -> Option<State> {
    let path = match location {
        crate::state::Location::File(path) => path,
        crate::state::Location::Postgres(_) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
            return match crate::state::Store::open_location(location, dir.as_deref()) {
                Ok(store) => Some(State::ReadOnly(store)),
                Err(error) => {
                    eprintln!("cannot read the shared state: {error}");
                    None
                }
            };
        }
    };
    match crate::state::Store::open(path) {
        Ok(store) => Some(State::Writable(store)),
        Err(crate::state::StateError::Locked(_)) => crate::state::Store::open_read_only(path)
            .ok()
            .map(State::ReadOnly),
        Err(_) => None,
    }
}

/// Lists and scrapes a group until its rules are covered or `wait` has passed, then decides.
async fn plan_group(
    runtime: &mut GroupRuntime,
    client: &crate::digitalocean::Client,
    scraper: &Scraper,
    memory: &mut GroupMemory,
    in_flight: &crate::daemon::tick::InFlight,
    wait: Option<Duration>,
    clock: &dyn crate::clock::Clock,
) -> Result<TickReport, crate::digitalocean::ApiError> {
    let started = clock.now();
    let gap = runtime
        .group
        .interval
        .clamp(Duration::from_secs(1), Duration::from_secs(5));
    let range = runtime.longest_range();
    // By default, as long as the longest range needs to be covered, and a little more.
    let wait = wait.unwrap_or(range + gap * 2);
    let mut round = 0;
    loop {
        round += 1;
        let now = clock.now();
        let droplets = client.list_droplets_by_tag(&runtime.group.tag).await?;
        let mut members = runtime.members(&droplets, in_flight, now);
        let deadline = tokio::time::Instant::now() + runtime.group.tick_timeout.mul_f64(0.9);
        let gathered = runtime
            .gather(scraper, &droplets, &mut members, deadline, now)
            .await;
        let observations = runtime.observe(now, &gathered.remote);
        let warming = observations.iter().any(is_warming);
        let waited = (clock.now() - started).to_std().unwrap_or_default();
        let out_of_time = waited + gap > wait;
        if !warming || range.is_zero() || out_of_time {
            runtime.work_values(&droplets, &mut members, now, &gathered.remote);
            // Memory is only read here: a plan must not move cooldown or condition clocks.
            let mut scratch = memory.clone();
            let mut report = runtime.decide(&droplets, &members, &gathered, &mut scratch, now);
            runtime.judge_health(&mut report, &gathered.health, &mut scratch, now);
            return Ok(report);
        }
        eprintln!(
            "{}: scrape {round}: rules still warming (longest range {}); {} of up to {} waited",
            runtime.group.name,
            crate::config::duration::format_duration(range),
            crate::config::duration::format_duration(Duration::from_secs(waited.as_secs())),
            crate::config::duration::format_duration(wait)
        );
        tokio::time::sleep(crate::clock::wall(clock, gap)).await;
    }
}

/// Whether an observation lacks a value only because a range is not yet covered.
fn is_warming(observation: &Observation) -> bool {
    let warming = |reason: &str| reason.contains(crate::query::eval::WARMING);
    match observation {
        Observation::Missing(reason) => warming(reason),
        Observation::Conditions(truths) => truths
            .iter()
            .any(|t| matches!(t, Truth::Missing(r) if warming(r))),
        Observation::Number(_) => false,
    }
}

fn ago(now: DateTime<Utc>, then: Option<DateTime<Utc>>) -> String {
    match then {
        Some(then) => format!(
            "{} ago",
            crate::config::duration::format_duration(Duration::from_secs(
                (now - then).num_seconds().max(0) as u64
            ))
        ),
        None => "never".into(),
    }
}

/// The readable form of one group's plan.
pub fn render(report: &TickReport, memory: &GroupMemory) -> String {
    let d = &report.decision;
    let mut out = String::new();
    let _ = writeln!(out, "group {}: {} → {}", report.group, d.current, d.desired);
    let _ = writeln!(
        out,
        "  droplets ({} active, {} booting):",
        d.active, d.booting
    );
    if report.droplets.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for droplet in &report.droplets {
        let mut flags = Vec::new();
        if !droplet.managed {
            flags.push("unmanaged");
        }
        if droplet.protected {
            flags.push("protected");
        }
        let work = match droplet.work {
            crate::policy::Work::Busy => "busy".to_string(),
            crate::policy::Work::Idle(since) => format!(
                "idle {}",
                crate::config::duration::format_duration(Duration::from_secs(
                    (d.at - since).num_seconds().max(0) as u64
                ))
            ),
            crate::policy::Work::Unknown => "work unknown".to_string(),
            crate::policy::Work::Unjudged => String::new(),
        };
        if !work.is_empty() {
            flags.push(&work);
        }
        let health = droplet.health.as_ref().map(|h| format!("health {h}"));
        if let Some(health) = &health {
            flags.push(health);
        }
        let _ = writeln!(
            out,
            "    {:<11} {:<20} {:<7} {:<8} {:<16} {}{}",
            droplet.id,
            droplet.name,
            droplet.status,
            droplet.state.to_string(),
            droplet.address.as_deref().unwrap_or("-"),
            droplet.scrape,
            if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(", "))
            }
        );
    }
    if !report.stale.is_empty() {
        let _ = writeln!(out, "  refresh would replace:");
        for stale in &report.stale {
            let _ = writeln!(out, "    {:<11} {}", stale.id, stale.reason);
        }
    }
    let _ = writeln!(out, "  sources:");
    for source in &report.sources {
        let _ = writeln!(
            out,
            "    {:<12} {:<10} {} ({:.0} ms)",
            source.name, source.kind, source.answered, source.took_ms
        );
    }
    let _ = writeln!(out, "  rules:");
    if d.rules.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for rule in &d.rules {
        let _ = writeln!(
            out,
            "    {:<12} {:<10} {}",
            rule.name, rule.value, rule.verdict
        );
    }
    let schedule = d
        .bounds
        .schedule
        .as_ref()
        .map(|s| format!(" (schedule `{s}` open)"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  bounds: {}..{}{schedule}",
        d.bounds.min, d.bounds.max
    );
    let _ = writeln!(
        out,
        "  cooldowns: last scale-up {}, last scale-down {}",
        ago(d.at, memory.last_up),
        ago(d.at, memory.last_down)
    );
    if memory.up_failures > 0 {
        let _ = writeln!(
            out,
            "  backoff: {} failed scale-up(s) in a row, {} backoff since the last",
            memory.up_failures,
            crate::config::duration::format_duration(memory.backoff())
        );
    }
    let _ = writeln!(out, "  steps:");
    for step in &d.steps {
        let _ = writeln!(out, "    - {step}");
    }
    match (&d.direction, &d.winner) {
        (Some(_), winner) => {
            let _ = writeln!(
                out,
                "  would run: {} (winner: {})",
                if report.actions.is_empty() {
                    "nothing".to_string()
                } else {
                    report.actions.join(" → ")
                },
                winner.as_deref().unwrap_or("-")
            );
        }
        (None, _) => {
            let _ = writeln!(out, "  would run: nothing");
        }
    }
    if !d.victims.is_empty() {
        let victims: Vec<String> = d.victims.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "  victims: {}", victims.join(", "));
    }
    out
}
