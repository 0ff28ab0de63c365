//! One tick of one group: list the group through the API, scrape the droplets that count,
//! record the samples, evaluate the rules and decide. Plain calls on plain data, in the order
//! of the data flow; nothing here acts on the decision. Reading the sources and health checks
//! live in `gather`, the report of what a tick saw in `report`.

use super::sources::{self, Bound, RemoteAnswers};
use crate::config::{DROPLETS_SOURCE, Group, RuleKind, ScaleInChoice};
use crate::digitalocean::{ApiError, Client, Droplet, DropletStatus};
use crate::metrics::history::{History, points_for, retention_for};
use crate::metrics::scrape::{self, Scraper};
use crate::policy::{
    Decision, GroupMemory, Input, Member, MemberState, Observation, Truth, Work, decide,
};
use crate::query::{EvalOptions, Expression, Outcome, QueryError, Value};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

mod gather;
mod report;

pub use gather::Gathered;
pub use report::{DropletReport, TickReport, TickTimings};

/// Why a tick failed.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// The group could not be listed.
    #[error("listing the group failed: {0}")]
    Inventory(#[from] ApiError),
}

/// A rule's expressions, bound to where they are evaluated.
#[derive(Debug, Clone)]
struct CompiledRule {
    expressions: Vec<Bound>,
    /// A target or desired rule reads one number; a threshold rule truths.
    is_number: bool,
}

/// How long a created droplet (its create answered, so it existed) counts as booting while no
/// listing shows it. Once `listing_lag` has passed the leader asks DigitalOcean about it each
/// tick and forgets it at once when it is gone; this bounds the count when that cannot be
/// asked (the API failing).
pub const UNLISTED_EXPIRY: Duration = Duration::from_secs(3600);

/// What the daemon has asked DigitalOcean for that a listing may not show yet.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    /// Droplets being deleted: the victims of a run in progress and accepted deletes the
    /// listing still shows. They count toward nothing.
    pub deleting: std::collections::BTreeSet<u64>,
    /// Droplets created (or maybe created) that the listing does not show yet. They count as
    /// booting, so a lagging listing never makes the group ask for them again.
    pub unlisted: Vec<crate::state::Unlisted>,
    /// How long listings may lag a create (the base file's `listing_lag`).
    pub listing_lag: Duration,
    /// Droplets draining before their destroy (`[drain]`): they count toward `max` only.
    pub draining: std::collections::BTreeSet<u64>,
    /// Unhealthy droplets being replaced (`[health]`): they count toward `max` only.
    pub replacing: std::collections::BTreeSet<u64>,
    /// The names of their replacements: never chosen to go while the replacement runs.
    pub replacement_names: std::collections::BTreeSet<String>,
}

impl InFlight {
    /// What `store` holds in flight for `group`, with its open drains and replacements (the
    /// daemon's tick and `plan` classify droplets alike from it).
    pub fn read(
        store: &crate::state::Store,
        group: &str,
        listing_lag: Duration,
    ) -> (
        InFlight,
        Vec<crate::state::Draining>,
        Vec<crate::state::Replacement>,
    ) {
        use crate::state::Journal;
        let drains = store.draining(group).unwrap_or_default();
        let replacements = store.replacements(group).unwrap_or_default();
        let in_flight = InFlight {
            deleting: store.deleted(group).unwrap_or_default(),
            unlisted: store.unlisted(group).unwrap_or_default(),
            listing_lag,
            draining: drains.iter().map(|d| d.id).collect(),
            replacing: replacements.iter().map(|r| r.old).collect(),
            replacement_names: replacements.iter().map(|r| r.new_name.clone()).collect(),
        };
        (in_flight, drains, replacements)
    }

    /// The unlisted droplets still worth counting at `now`: created ones for
    /// [`UNLISTED_EXPIRY`]; ones asked for with an unknown outcome until a listing taken
    /// `listing_lag` after the request could have shown them.
    pub fn pending(&self, now: DateTime<Utc>) -> impl Iterator<Item = &crate::state::Unlisted> {
        let created = chrono::Duration::from_std(UNLISTED_EXPIRY).unwrap_or_default();
        let unknown = chrono::Duration::from_std(self.listing_lag).unwrap_or_default();
        self.unlisted.iter().filter(move |u| {
            let window = if u.id.is_some() { created } else { unknown };
            now - u.since < window
        })
    }
}

/// The listed droplets whose member is in `state` (`members` starts with the listed ones, in
/// the listing's order).
fn in_state(droplets: &[Droplet], members: &[Member], state: MemberState) -> Vec<Droplet> {
    droplets
        .iter()
        .zip(members)
        .filter(|(_, m)| m.state == state)
        .map(|(d, _)| d.clone())
        .collect()
}

/// How far back an instant selector looks in the daemon (and in `plan` and `query`, which
/// preview it): two scrape intervals and a scrape's timeout, at least 30 s. Far shorter than
/// Prometheus's 5 minutes, so a droplet gone quiet stops counting within a tick or two.
pub fn lookback_for(interval: Duration, scrape_timeout: Duration) -> Duration {
    (interval * 2 + scrape_timeout).max(Duration::from_secs(30))
}

/// A group's running state between ticks: compiled expressions, sample history, and when
/// each droplet was first seen active and since when it is idle.
#[derive(Debug)]
pub struct GroupRuntime {
    /// The configuration.
    pub group: Group,
    rules: Vec<CompiledRule>,
    least_busy: Option<Bound>,
    busy: Vec<Bound>,
    /// `drain.busy`, evaluated on each tick's scrape of the draining droplets alone.
    drain_busy: Option<Bound>,
    /// The samples.
    pub history: History,
    first_active: HashMap<u64, DateTime<Utc>>,
    idle_since: HashMap<u64, DateTime<Utc>>,
    target_fetched: HashMap<String, DateTime<Utc>>,
    managed_tag: String,
}

/// The selectors of some expressions.
fn selectors(expressions: &[&Expression]) -> Vec<crate::query::Selector> {
    expressions
        .iter()
        .flat_map(|e| e.node.selectors().into_iter().map(|(s, _)| s.clone()))
        .collect()
}

impl GroupRuntime {
    /// Compiles a group's expressions, each bound to its source, and makes its history.
    pub fn new(group: Group, managed_tag: String) -> Result<GroupRuntime, QueryError> {
        let mut rules = Vec::new();
        for rule in &group.rules {
            let is_number = !matches!(rule.kind, RuleKind::Threshold { .. });
            let expressions = rule
                .kind
                .expressions()
                .into_iter()
                .map(|text| Bound::new(text, &rule.source, &group.sources, !is_number))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(CompiledRule {
                expressions,
                is_number,
            });
        }
        let scale_in_source = &group.scale_in.source;
        let least_busy = match &group.scale_in.choose {
            ScaleInChoice::LeastBusy(by) => {
                Some(Bound::new(by, scale_in_source, &group.sources, false)?)
            }
            _ => None,
        };
        let mut busy = Vec::new();
        if let Some(text) = &group.scale_in.busy {
            busy.push(Bound::new(text, scale_in_source, &group.sources, true)?);
        }
        if let Some(idle) = &group.idle {
            busy.push(Bound::new(&idle.busy, &idle.source, &group.sources, true)?);
        }
        let drain_busy = match group.drain.as_ref().and_then(|d| d.busy.as_deref()) {
            Some(text) => Some(Bound::new(text, DROPLETS_SOURCE, &group.sources, true)?),
            None => None,
        };
        let local: Vec<&Expression> = rules
            .iter()
            .flat_map(|r| r.expressions.iter())
            .chain(least_busy.iter())
            .chain(busy.iter())
            .filter_map(Bound::local)
            .collect();
        let longest = local
            .iter()
            .map(|e| e.longest_range())
            .max()
            .unwrap_or_default();
        let retention = retention_for(longest, group.interval);
        let history = History::new(
            selectors(&local),
            retention,
            points_for(retention, Duration::from_secs(1).max(group.interval / 6)),
        )
        .with_typical_points(points_for(retention, group.interval) + 2);
        Ok(GroupRuntime {
            group,
            rules,
            least_busy,
            busy,
            drain_busy,
            history,
            first_active: HashMap::new(),
            idle_since: HashMap::new(),
            target_fetched: HashMap::new(),
            managed_tag,
        })
    }

    /// Every bound expression of the group.
    fn bound(&self) -> impl Iterator<Item = &Bound> {
        self.rules
            .iter()
            .flat_map(|r| r.expressions.iter())
            .chain(self.least_busy.iter())
            .chain(self.busy.iter())
    }

    /// The longest range the group's local expressions read.
    pub fn longest_range(&self) -> Duration {
        self.bound()
            .filter_map(Bound::local)
            .map(Expression::longest_range)
            .max()
            .unwrap_or_default()
    }

    fn options(&self) -> EvalOptions {
        EvalOptions {
            lookback: sources::lookback(&self.group),
            require_coverage: true,
        }
    }

    fn is_managed(&self, droplet: &Droplet) -> bool {
        droplet.has_tag(&self.managed_tag)
            || self.group.adopt_tags.iter().any(|t| droplet.has_tag(t))
    }

    /// Classifies each droplet: active past warmup, booting, off (billed, no capacity), or on
    /// its way out. Droplets this daemon created that the listing does not show yet follow the
    /// listed ones, as booting.
    pub fn members(
        &mut self,
        droplets: &[Droplet],
        in_flight: &InFlight,
        now: DateTime<Utc>,
    ) -> Vec<Member> {
        let warmup = chrono::Duration::from_std(self.group.warmup).unwrap_or_default();
        let mut members = Vec::with_capacity(droplets.len() + in_flight.unlisted.len());
        for droplet in droplets {
            let state = if in_flight.deleting.contains(&droplet.id) {
                MemberState::Deleting
            } else if in_flight.draining.contains(&droplet.id) {
                MemberState::Draining
            } else if in_flight.replacing.contains(&droplet.id) {
                MemberState::Replacing
            } else if droplet.status == DropletStatus::Active {
                // A droplet already active when first seen has been up since about its
                // creation; one seen booting first became active now.
                let since = *self.first_active.entry(droplet.id).or_insert_with(|| {
                    if now - droplet.created_at > warmup {
                        droplet.created_at
                    } else {
                        now
                    }
                });
                if now - since >= warmup {
                    MemberState::Active
                } else {
                    MemberState::Booting
                }
            } else if matches!(droplet.status, DropletStatus::New) {
                MemberState::Booting
            } else {
                // Powered off or archived: billed, so it counts toward max, but no capacity.
                MemberState::Off
            };
            members.push(Member {
                id: droplet.id,
                name: droplet.name.clone(),
                created_at: droplet.created_at,
                state,
                managed: self.is_managed(droplet),
                // A replacement in progress is never chosen to go: it is not a spare.
                protected: droplet.has_tag(&self.group.protect_tag)
                    || in_flight.replacement_names.contains(&droplet.name),
                busy: None,
                scraped: false,
                work: Work::Unjudged,
            });
        }
        let listed: std::collections::HashSet<u64> = droplets.iter().map(|d| d.id).collect();
        self.first_active.retain(|id, _| listed.contains(id));
        self.idle_since.retain(|id, _| listed.contains(id));
        let listed_names: std::collections::HashSet<&str> =
            droplets.iter().map(|d| d.name.as_str()).collect();
        for unlisted in in_flight.pending(now) {
            if listed_names.contains(unlisted.name.as_str())
                || unlisted.id.is_some_and(|id| listed.contains(&id))
            {
                continue;
            }
            members.push(Member {
                id: unlisted.id.unwrap_or(0),
                name: unlisted.name.clone(),
                created_at: unlisted.since,
                state: MemberState::Booting,
                managed: true,
                // Never a victim: it cannot be destroyed before it is listed.
                protected: true,
                busy: None,
                scraped: false,
                work: Work::Unjudged,
            });
        }
        members
    }

    /// Restores the sample history kept in `store` (what the retention still needs); returns
    /// how many droplets it had.
    pub fn restore_history(&mut self, store: &crate::state::Store, now: DateTime<Utc>) -> usize {
        let since = now.timestamp_millis() - self.history.retention().as_millis() as i64;
        let history = &mut self.history;
        let restored = store
            .load_samples(&self.group.name, since, |id, labels, points| {
                history.restore_series(id, labels, points)
            })
            .unwrap_or_else(|error| {
                tracing::warn!(group = %self.group.name, %error, "cannot read the kept sample history");
                0
            });
        self.history.prune(now.timestamp_millis());
        // What was restored is not new: the database has it.
        self.history.take_new_points();
        restored
    }

    /// Forgets this tick's new points without keeping them (a follower keeps nothing).
    pub fn drop_new_points(&mut self) {
        self.history.take_new_points();
    }

    /// Appends this tick's new points to `store` and, when `prune`, deletes what the retention
    /// no longer needs (logged, not fatal, on error).
    pub fn save_history(&mut self, store: &crate::state::Store, now: DateTime<Utc>, prune: bool) {
        let points = self.history.take_new_points();
        if let Err(error) = store.append_samples(&self.group.name, &points) {
            tracing::warn!(group = %self.group.name, %error, "cannot keep the sample history");
        }
        if prune {
            let before = now.timestamp_millis() - self.history.retention().as_millis() as i64;
            if let Err(error) = store.prune_samples(&self.group.name, before) {
                tracing::warn!(group = %self.group.name, %error, "cannot prune the sample history");
            }
        }
    }

    /// For each rule, the active droplets that gave none of the per-droplet series it reads in
    /// their last scrape: a rule that read only part of the group is no ground for a
    /// scale-down. A rule reading only targets or a remote server reads no droplet's series.
    pub fn unread(&self, members: &[Member]) -> Vec<Vec<u64>> {
        self.rules
            .iter()
            .map(|rule| {
                let selectors: Vec<&crate::query::Selector> = rule
                    .expressions
                    .iter()
                    .filter_map(Bound::local)
                    .flat_map(|e| e.node.selectors().into_iter().map(|(s, _)| s))
                    .filter(|s| sources::reads_droplets(s, &self.group.sources))
                    .collect();
                if selectors.is_empty() {
                    return Vec::new();
                }
                let fresh = self.history.fresh_droplets(&selectors);
                members
                    .iter()
                    .filter(|m| m.state == MemberState::Active && !fresh.contains(&m.id))
                    .map(|m| m.id)
                    .collect()
            })
            .collect()
    }

    /// Evaluates every rule at `now` (remote ones from what their servers answered).
    pub fn observe(&self, now: DateTime<Utc>, remote: &RemoteAnswers) -> Vec<Observation> {
        let at = now.timestamp_millis();
        let options = self.options();
        self.rules
            .iter()
            .map(|rule| {
                let outcomes: Vec<Result<Outcome, String>> = rule
                    .expressions
                    .iter()
                    .map(|e| e.evaluate(&self.history, at, options, remote))
                    .collect();
                if rule.is_number {
                    match outcomes.into_iter().next() {
                        Some(Ok(outcome)) => match (&outcome, outcome.single()) {
                            (_, Some(value)) if value.is_finite() => Observation::Number(value),
                            (_, Some(value)) => Observation::Missing(format!("the value is {value}")),
                            (Outcome::Value(Value::Vector(samples)), None) => Observation::Missing(format!(
                                "the expression gives {} series, not one number: aggregate it, such as avg(...)",
                                samples.len()
                            )),
                            (Outcome::False(reason) | Outcome::Missing(reason), None) => Observation::Missing(reason.clone()),
                            (Outcome::Value(Value::Scalar(_)), None) => Observation::Missing("no value".into()),
                        },
                        Some(Err(error)) => Observation::Missing(error),
                        None => Observation::Missing("no expression".into()),
                    }
                } else {
                    Observation::Conditions(
                        outcomes
                            .into_iter()
                            .zip(&rule.expressions)
                            .map(|(outcome, expression)| truth(outcome, expression.is_bool()))
                            .collect(),
                    )
                }
            })
            .collect()
    }

    /// Fills each member's `busy` value from `scale_in.by` and its `work` from the busy
    /// expressions (busy where any says so; unknown where one has no value and none says
    /// busy), and keeps since when each droplet is idle.
    pub fn work_values(
        &mut self,
        droplets: &[Droplet],
        members: &mut [Member],
        now: DateTime<Utc>,
        remote: &RemoteAnswers,
    ) {
        let at = now.timestamp_millis();
        let options = self.options();
        let per_droplet = |bound: &Bound| -> HashMap<u64, f64> {
            match bound.evaluate(&self.history, at, options, remote) {
                Ok(Outcome::Value(Value::Vector(samples))) => {
                    sources::per_droplet(&samples, droplets)
                }
                _ => HashMap::new(),
            }
        };
        if let Some(by) = &self.least_busy {
            let values = per_droplet(by);
            for member in members.iter_mut() {
                member.busy = values.get(&member.id).copied();
            }
        }
        if self.busy.is_empty() {
            return;
        }
        let answers: Vec<HashMap<u64, f64>> = self.busy.iter().map(per_droplet).collect();
        for member in members.iter_mut() {
            let values: Vec<Option<f64>> = answers
                .iter()
                .map(|a| a.get(&member.id).copied().filter(|v| !v.is_nan()))
                .collect();
            member.work = if member.state != MemberState::Active {
                Work::Unknown
            } else if values.iter().any(|v| v.is_some_and(|v| v != 0.0)) {
                Work::Busy
            } else if values.iter().any(Option::is_none) {
                Work::Unknown
            } else {
                Work::Idle(*self.idle_since.entry(member.id).or_insert(now))
            };
            if !matches!(member.work, Work::Idle(_)) {
                self.idle_since.remove(&member.id);
            }
        }
    }

    /// One whole tick: list, classify, read the sources, evaluate, decide. `in_flight` is what
    /// the daemon asked for that the listing may not show yet.
    pub async fn tick(
        &mut self,
        client: &Client,
        scraper: &Scraper,
        memory: &mut GroupMemory,
        in_flight: &InFlight,
        now: DateTime<Utc>,
    ) -> Result<TickReport, TickError> {
        let started = tokio::time::Instant::now();
        let droplets = client.list_droplets_by_tag(&self.group.tag).await?;
        let listed = tokio::time::Instant::now();
        crate::failpoint::hit("tick.after_list");
        let mut members = self.members(&droplets, in_flight, now);
        // Hung endpoints must not cost the decision: the whole scrape phase, waiting for a
        // slot included, ends at 90 % of the tick's time, so the tick still decides (with the
        // droplets not reached counted as missing) in time.
        let deadline = (started + self.group.tick_timeout.mul_f64(0.9))
            .max(tokio::time::Instant::now() + Duration::from_millis(50));
        let gathered = self
            .gather(scraper, &droplets, &mut members, deadline, now)
            .await;
        crate::failpoint::hit("tick.after_scrape");
        let scraped_at = tokio::time::Instant::now();
        self.work_values(&droplets, &mut members, now, &gathered.remote);
        let mut report = self.decide(&droplets, &members, &gathered, memory, now);
        self.judge_health(&mut report, &gathered.health, memory, now);
        let ms = |from: tokio::time::Instant, to: tokio::time::Instant| {
            (to - from).as_secs_f64() * 1000.0
        };
        report.timings = TickTimings {
            list_ms: ms(started, listed),
            scrape_ms: ms(listed, scraped_at),
            evaluate_ms: ms(scraped_at, tokio::time::Instant::now()),
        };
        Ok(report)
    }

    /// Decides from what was gathered (also used by `plan` after several rounds).
    pub fn decide(
        &self,
        droplets: &[Droplet],
        members: &[Member],
        gathered: &Gathered,
        memory: &mut GroupMemory,
        now: DateTime<Utc>,
    ) -> TickReport {
        let mut observations = self.observe(now, &gathered.remote);
        let unread = self.unread(members);
        stale_only_is_missing(&mut observations, &unread, members);
        let decision = decide(
            &Input {
                group: &self.group,
                members,
                observations: &observations,
                unread: &unread,
                now,
            },
            memory,
        );
        let actions = actions_for(&self.group, &decision);
        let scraped = &gathered.scraped;
        let mut reports: Vec<DropletReport> = droplets
            .iter()
            .zip(members)
            .map(|(droplet, member)| DropletReport {
                id: droplet.id,
                name: droplet.name.clone(),
                status: droplet.status.to_string(),
                state: member.state,
                address: scrape::address_of(droplet, self.group.scrape.address),
                scrape: scraped
                    .get(&droplet.id)
                    .cloned()
                    .unwrap_or_else(|| "not scraped".into()),
                managed: member.managed,
                protected: member.protected,
                work: member.work,
                health: None,
            })
            .collect();
        // Droplets created but not listed yet.
        reports.extend(members.iter().skip(droplets.len()).map(|m| DropletReport {
            id: m.id,
            name: m.name.clone(),
            status: "new".into(),
            state: m.state,
            address: None,
            scrape: "not listed yet: created, the listing lags".into(),
            managed: true,
            protected: false,
            work: m.work,
            health: None,
        }));
        TickReport {
            group: self.group.name.clone(),
            droplets: reports,
            decision,
            actions,
            sources: gathered.sources.clone(),
            listing: droplets.to_vec(),
            drain_busy: gathered.drain_busy.clone(),
            health: HashMap::new(),
            stale: Vec::new(),
            timings: TickTimings::default(),
        }
    }
}

/// The truth of a threshold comparison: a non-empty result holds (for a `bool` comparison at
/// the root: when a value is 1), a false comparison is false, no data is missing.
fn truth(outcome: Result<Outcome, String>, is_bool: bool) -> Truth {
    match outcome {
        Ok(Outcome::Value(Value::Scalar(v))) => {
            if v != 0.0 && !v.is_nan() {
                Truth::True
            } else {
                Truth::False
            }
        }
        Ok(Outcome::Value(Value::Vector(samples))) => {
            if !is_bool || samples.iter().any(|s| s.value == 1.0) {
                Truth::True
            } else {
                Truth::False
            }
        }
        Ok(Outcome::False(_)) => Truth::False,
        Ok(Outcome::Missing(reason)) => Truth::Missing(reason),
        Err(error) => Truth::Missing(error),
    }
}

/// The actions a decision runs: the winning rule's own lists, else the group's.
pub fn actions_for(group: &Group, decision: &Decision) -> Vec<String> {
    let Some(direction) = decision.direction else {
        return Vec::new();
    };
    let lists = decision
        .winner
        .as_ref()
        .and_then(|w| group.rules.iter().find(|r| &r.name == w))
        .and_then(|r| r.actions.as_ref())
        .unwrap_or(&group.actions.lists);
    match direction {
        crate::policy::Direction::Up => lists.up.clone(),
        crate::policy::Direction::Down => lists.down.clone(),
    }
}

/// A rule that reads droplets' series while not one active droplet gave them in its last
/// scrape has only stale samples to go on: a `rate` over a series that stopped is extrapolated
/// short (Prometheus does the same) and reads as a change of load that did not happen. Such a
/// rule is missing, which holds both ways, not only downwards.
fn stale_only_is_missing(
    observations: &mut [Observation],
    unread: &[Vec<u64>],
    members: &[Member],
) {
    let active = members
        .iter()
        .filter(|m| m.state == MemberState::Active)
        .count();
    for (observation, missing) in observations.iter_mut().zip(unread) {
        if active > 0 && missing.len() == active && !matches!(observation, Observation::Missing(_))
        {
            *observation = Observation::Missing(format!(
                "none of the {active} active droplet(s) gave current data (their last scrape failed): no decision on stale samples"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, state: MemberState) -> Member {
        Member {
            id,
            name: format!("web-{id}"),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            state,
            managed: true,
            protected: false,
            busy: None,
            scraped: false,
            work: Work::Unjudged,
        }
    }

    #[test]
    fn a_rule_read_from_no_current_droplet_is_missing_both_ways_and_partial_data_is_kept() {
        let members = [
            member(1, MemberState::Active),
            member(2, MemberState::Active),
            member(3, MemberState::Booting),
        ];
        let mut observations = vec![
            Observation::Number(0.55),
            Observation::Number(0.10),
            Observation::Number(3.0),
        ];
        // Rule 1: neither active droplet answered. Rule 2: one did. Rule 3 reads no droplet.
        let unread = vec![vec![1, 2], vec![2], vec![]];
        stale_only_is_missing(&mut observations, &unread, &members);
        assert!(
            matches!(&observations[0], Observation::Missing(reason) if reason.contains("stale")),
            "{observations:?}"
        );
        assert_eq!(observations[1], Observation::Number(0.10));
        assert_eq!(observations[2], Observation::Number(3.0));
    }
}
