//! The reading half of a tick: scraping the droplets and targets of every source, asking remote
//! servers, running the health checks, and judging draining droplets' `busy`, into what the
//! decision reads ([`Gathered`]).

use super::super::sources::{self, RemoteAnswers, SourceReport};
use super::{GroupRuntime, TickReport, in_state, selectors};
use crate::config::DROPLETS_SOURCE;
use crate::digitalocean::{Droplet, DropletStatus};
use crate::metrics::history::{DropletIdentity, History, Unit};
use crate::metrics::scrape::{self, MissingReason, Scraper};
use crate::policy::{GroupMemory, Member, MemberState};
use crate::query::{Expression, Outcome, Value};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// What a tick read before deciding: each droplet's scrape outcome, what each source gave,
/// and what remote servers answered.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    /// Each droplet's outcome: "ok", or `kind: why not`.
    pub scraped: HashMap<u64, String>,
    /// What each source gave.
    pub sources: Vec<SourceReport>,
    /// The remote servers' answers.
    pub remote: RemoteAnswers,
    /// `drain.busy` of each draining droplet (see [`TickReport::drain_busy`]).
    pub drain_busy: HashMap<u64, Option<bool>>,
    /// Each active droplet's health check this tick (`[health]`); empty without it.
    pub health: HashMap<u64, crate::daemon::health::Verdict>,
}

impl GroupRuntime {
    /// Reads every source: scrapes the active members' endpoints of each droplet source and
    /// the `target` URLs due (each cut at its timeout, the whole phase at `deadline`) and
    /// records their samples, while the remote servers answer the rules naming them. Marks
    /// which members answered every droplet source (`Member::scraped`).
    pub async fn gather(
        &mut self,
        scraper: &Scraper,
        droplets: &[Droplet],
        members: &mut [Member],
        deadline: tokio::time::Instant,
        now: DateTime<Utc>,
    ) -> Gathered {
        let started = tokio::time::Instant::now();
        let active = in_state(droplets, members, MemberState::Active);
        let (mut targets, missing) = sources::droplet_targets(&self.group, &active);
        // Draining droplets are scraped for `drain.busy` alone, into a history of their own:
        // their series never reach the rules.
        let drain_from = targets.len();
        if self.drain_busy.is_some() {
            let draining = in_state(droplets, members, MemberState::Draining);
            targets.extend(sources::droplet_targets(&self.group, &draining).0);
        }
        let drain_targets = targets.split_off(drain_from);
        let (due, mut reports) = sources::due_targets(
            &self.group,
            &self.target_fetched,
            scraper.credentials_dir(),
            now,
        );
        targets.extend(due);
        let queries = sources::remote_queries(self.bound());
        let probes = self.health_probes(&active);
        let (results, drain_results, (remote, remote_reports), mut health) = tokio::join!(
            scraper.fetch_all(&targets, deadline),
            scraper.fetch_all(&drain_targets, deadline),
            sources::ask_all(scraper, &self.group.sources, queries, now),
            async {
                match &self.group.health {
                    Some(health) if !probes.is_empty() => {
                        crate::daemon::health::probe_all(health, probes, deadline).await
                    }
                    _ => HashMap::new(),
                }
            }
        );
        let drain_busy = self.judge_draining(droplets, &drain_targets, drain_results, now);
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;

        // Per droplet: the implicit source's outcome first, then another source's failure.
        let mut primary: HashMap<u64, String> = HashMap::new();
        let mut secondary: HashMap<u64, String> = HashMap::new();
        let mut note = |id: u64, source: &str, outcome: String| {
            if source == DROPLETS_SOURCE {
                primary.insert(id, outcome);
            } else if outcome != "ok" {
                secondary.entry(id).or_insert_with(|| {
                    let (kind, reason) = outcome.split_once(": ").unwrap_or(("other", &outcome));
                    format!("{kind}: source `{source}`: {reason}")
                });
            }
        };
        for (id, source, reason) in missing {
            note(id, &source, reason.to_string());
        }
        for (droplet, member) in droplets.iter().zip(members.iter()) {
            if member.state != MemberState::Active {
                let reason = match member.state {
                    MemberState::Booting if droplet.status == DropletStatus::Active => {
                        MissingReason::WarmingUp.to_string()
                    }
                    _ => MissingReason::NotActive(droplet.status).to_string(),
                };
                note(droplet.id, DROPLETS_SOURCE, reason);
            }
        }
        let at = now.timestamp_millis();
        let mut answered: HashMap<&str, (usize, usize)> = HashMap::new();
        for (target, result) in targets.iter().zip(results) {
            let identity = DropletIdentity {
                id: target.droplet_id,
                name: target.droplet_name.clone(),
                instance: target.instance.clone(),
                source: target.source.clone(),
            };
            let recorded = result.and_then(|body| {
                self.history
                    .record(&identity, at, &body, &target.url)
                    .map_err(|e| MissingReason::Garbage(e.to_string()))
            });
            let tally = answered.entry(target.source.as_str()).or_default();
            tally.1 += 1;
            let outcome = match recorded {
                Ok(_) => {
                    tally.0 += 1;
                    "ok".to_string()
                }
                Err(reason) => {
                    // As Prometheus: a failed scrape makes the target's series stale.
                    self.history.mark_stale(&Unit::of(&identity), at);
                    tracing::debug!(group = %self.group.name, droplet = target.droplet_id, url = %target.url, %reason, "scrape failed");
                    // `kind: text`: the kind labels the failure metric, the text explains it.
                    format!("{}: {reason}", reason.kind())
                }
            };
            if target.droplet_id == 0 {
                self.target_fetched.insert(target.source.clone(), now);
                if outcome != "ok" {
                    tracing::warn!(group = %self.group.name, source = %target.source, url = %target.url, %outcome, "a target source did not answer");
                }
            } else {
                note(target.droplet_id, &target.source, outcome);
            }
        }
        for source in &self.group.sources {
            if source.is_remote() {
                continue;
            }
            if let Some((ok, of)) = answered.get(source.name.as_str()) {
                let what = if source.is_per_droplet() {
                    "droplets"
                } else {
                    "URLs"
                };
                reports.push(SourceReport {
                    name: source.name.clone(),
                    kind: sources::kind_name(source),
                    answered: format!("{ok} of {of} {what} answered"),
                    took_ms,
                });
            } else if source.is_per_droplet() {
                reports.push(SourceReport {
                    name: source.name.clone(),
                    kind: "droplets",
                    answered: "no active droplet to scrape".into(),
                    took_ms: 0.0,
                });
            } else if !reports.iter().any(|r| r.name == source.name) {
                reports.push(SourceReport {
                    name: source.name.clone(),
                    kind: "target",
                    answered: "not due this tick (scraped on its own interval)".into(),
                    took_ms: 0.0,
                });
            }
        }
        reports.extend(remote_reports);
        // Droplets not scraped (booting, off, on their way out) give no current value either.
        for member in members.iter().filter(|m| m.state != MemberState::Active) {
            self.history.mark_droplet_stale(member.id, at);
        }
        let alive: std::collections::HashSet<u64> = droplets.iter().map(|d| d.id).collect();
        self.history.retain_droplets(&|id| alive.contains(&id));
        self.history.prune(at);
        let mut scraped = HashMap::new();
        for member in members.iter_mut() {
            let outcome = match (primary.remove(&member.id), secondary.remove(&member.id)) {
                (Some(first), _) if first != "ok" => first,
                (_, Some(other)) => other,
                (Some(ok), None) => ok,
                (None, None) => continue,
            };
            member.scraped = outcome == "ok";
            scraped.insert(member.id, outcome);
        }
        if let Some(config) = &self.group.health {
            let active_ids: Vec<u64> = active.iter().map(|d| d.id).collect();
            if config.check == crate::config::health::HealthCheck::Metrics {
                let outcomes: HashMap<u64, &str> = active_ids
                    .iter()
                    .filter_map(|id| scraped.get(id).map(|o| (*id, o.as_str())))
                    .collect();
                health = crate::daemon::health::judge_by_scrape(&outcomes);
            }
            // An active droplet with no address to probe is not judged.
            for id in active_ids {
                health.entry(id).or_insert_with(|| {
                    crate::daemon::health::Verdict::Unjudged("no address to check".into())
                });
            }
        }
        Gathered {
            scraped,
            sources: reports,
            remote,
            drain_busy,
            health,
        }
    }

    /// What a "tcp" or "http" health check probes this tick: each active droplet with an
    /// address of the scrape's kind.
    fn health_probes(&self, active: &[Droplet]) -> Vec<(u64, String)> {
        match &self.group.health {
            Some(health) if health.check != crate::config::health::HealthCheck::Metrics => active
                .iter()
                .filter_map(|d| scrape::address_of(d, self.group.scrape.address).map(|a| (d.id, a)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Counts this tick's health verdicts into consecutive failures, kept in the group's
    /// memory (see [`crate::daemon::health::count_failures`]), and puts them in `report` (`plan` passes
    /// a scratch memory).
    pub fn judge_health(
        &self,
        report: &mut TickReport,
        verdicts: &HashMap<u64, crate::daemon::health::Verdict>,
        memory: &mut GroupMemory,
        now: DateTime<Utc>,
    ) {
        let Some(health) = &self.group.health else {
            memory.failed_checks.clear();
            return;
        };
        let settle = self.group.warmup + health.grace;
        let marks = crate::daemon::health::count_failures(
            &mut memory.failed_checks,
            verdicts,
            &self.first_active,
            settle,
            now,
        );
        for droplet in report.droplets.iter_mut() {
            droplet.health = marks
                .get(&droplet.id)
                .map(|mark| mark.describe(health.unhealthy_after));
        }
        report.health = marks;
        report.stale = crate::daemon::refresh::stale(&self.group, report, now);
    }

    /// `drain.busy` of each draining droplet, from this tick's scrapes of them alone (a
    /// history of one scrape: instant expressions have a value, range functions none).
    fn judge_draining(
        &self,
        droplets: &[Droplet],
        targets: &[scrape::Target],
        results: Vec<Result<String, MissingReason>>,
        now: DateTime<Utc>,
    ) -> HashMap<u64, Option<bool>> {
        let Some(bound) = &self.drain_busy else {
            return HashMap::new();
        };
        let at = now.timestamp_millis();
        let local: Vec<&Expression> = bound.local().into_iter().collect();
        let mut history = History::new(selectors(&local), self.history.retention(), 4);
        for (target, result) in targets.iter().zip(results) {
            let identity = DropletIdentity {
                id: target.droplet_id,
                name: target.droplet_name.clone(),
                instance: target.instance.clone(),
                source: target.source.clone(),
            };
            if let Ok(body) = result {
                let _ = history.record(&identity, at, &body, &target.url);
            }
        }
        let values = match bound.evaluate(&history, at, self.options(), &RemoteAnswers::default()) {
            Ok(Outcome::Value(Value::Vector(samples))) => sources::per_droplet(&samples, droplets),
            _ => HashMap::new(),
        };
        targets
            .iter()
            .map(|t| {
                let value = values.get(&t.droplet_id).copied().filter(|v| !v.is_nan());
                (t.droplet_id, value.map(|v| v != 0.0))
            })
            .collect()
    }
}
