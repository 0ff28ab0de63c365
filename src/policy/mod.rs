//! The decision: a pure function from the group's configuration, its members, the rules'
//! observations, the time and the remembered state, to one [`Decision`] with an explanation of
//! every step. No I/O; the clock is a value.
//!
//! Order: rules → proposals (up beats hold beats down) → schedule bounds and min/max →
//! stabilization windows → cooldowns, failure backoff and the spend guard → victims.

pub mod memory;
pub mod schedule;

use crate::config::{Change, Condition, Group, OnMissing, RuleKind, ScaleInChoice};
use chrono::{DateTime, Utc};
pub use memory::{Direction, GroupMemory, InMemoryStore, MemoryStore};
pub use schedule::{Bounds, bounds_at};
use serde::Serialize;
use std::time::Duration;

/// Where a member of the group is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Active, past warmup: its metrics count.
    Active,
    /// Created but not yet active, or still in warmup: counts toward the size only.
    Booting,
    /// Being deleted: counts toward nothing.
    Deleting,
}

/// One droplet of the group, as the decision sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// Droplet id.
    pub id: u64,
    /// Droplet name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Lifecycle.
    pub state: MemberState,
    /// Carries the managed-by tag (or an adopt tag).
    pub managed: bool,
    /// Carries the protect tag.
    pub protected: bool,
    /// Its value of `scale_in.by`, for `least_busy`.
    pub busy: Option<f64>,
    /// Its metrics endpoint answered this tick. An active droplet that did not leaves the
    /// rules reading only part of the group, which is no ground for a scale-down.
    pub scraped: bool,
}

/// The truth of one comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Truth {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// No data (the reason says why).
    Missing(String),
}

/// What a rule's expressions gave this tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Observation {
    /// A target rule's value.
    Number(f64),
    /// A threshold rule's comparisons, in order.
    Conditions(Vec<Truth>),
    /// No value (the reason says why).
    Missing(String),
}

/// What one rule said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleReport {
    /// The rule.
    pub name: String,
    /// Its value or truth, as text.
    pub value: String,
    /// Its verdict and why.
    pub verdict: String,
    /// The size it proposes, if it proposes one.
    pub proposal: Option<u32>,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// Droplets counting toward the size (active and booting).
    pub current: u32,
    /// Active droplets past warmup.
    pub active: u32,
    /// Droplets booting or in warmup.
    pub booting: u32,
    /// The size decided.
    pub desired: u32,
    /// The bounds in force.
    pub bounds: Bounds,
    /// What set the size: a rule's name, `min`, `max`, or none.
    pub winner: Option<String>,
    /// Up, down, or none.
    pub direction: Option<Direction>,
    /// The droplets to remove on a scale-down.
    pub victims: Vec<u64>,
    /// Every rule's value and verdict.
    pub rules: Vec<RuleReport>,
    /// Every step, in order, in words.
    pub steps: Vec<String>,
}

/// Everything the decision needs.
pub struct Input<'a> {
    /// The group's configuration.
    pub group: &'a Group,
    /// Its members.
    pub members: &'a [Member],
    /// One observation per rule, in the group's rule order.
    pub observations: &'a [Observation],
    /// Now.
    pub now: DateTime<Utc>,
}

fn since(now: DateTime<Utc>, then: Option<DateTime<Utc>>) -> Option<Duration> {
    then.map(|t| (now - t).to_std().unwrap_or_default())
}

fn fmt(duration: Duration) -> String {
    crate::config::duration::format_duration(Duration::from_secs(duration.as_secs()))
}

/// The change of a threshold rule applied to `current`, rounded away from zero, at least 1.
pub fn apply_change(current: u32, change: Change) -> u32 {
    let delta = match change {
        Change::Count(n) => n,
        Change::Percent(p) => {
            let magnitude = ((current as f64) * (p.unsigned_abs() as f64) / 100.0)
                .ceil()
                .max(1.0) as i64;
            magnitude * p.signum()
        }
    };
    (current as i64 + delta).clamp(0, u32::MAX as i64) as u32
}

/// Decides the group's size. Updates `memory` (condition clocks and recommendations) as a
/// side effect on that value only.
pub fn decide(input: &Input<'_>, memory: &mut GroupMemory) -> Decision {
    let group = input.group;
    let now = input.now;
    let mut steps = Vec::new();
    let active = input
        .members
        .iter()
        .filter(|m| m.state == MemberState::Active)
        .count() as u32;
    let booting = input
        .members
        .iter()
        .filter(|m| m.state == MemberState::Booting)
        .count() as u32;
    let current = active + booting;
    steps.push(format!(
        "{current} droplets count toward the size: {active} active, {booting} booting"
    ));

    // 1. Rules → proposals.
    let mut reports = Vec::new();
    for (rule, observation) in group.rules.iter().zip(input.observations) {
        let on_missing = rule.on_missing.unwrap_or(group.on_missing);
        let missing = |reason: &str| -> (String, Option<u32>) {
            match on_missing {
                OnMissing::Hold => (format!("no data ({reason}): hold"), Some(current)),
                OnMissing::ScaleUp => (
                    format!("no data ({reason}): on_missing scale_up, +1"),
                    Some(current + 1),
                ),
                OnMissing::Desired(n) => (
                    format!(
                        "no data ({reason}): on_missing desired {n}, never below the current {current}"
                    ),
                    Some(n.max(current)),
                ),
            }
        };
        let (value, (verdict, proposal)) = match (&rule.kind, observation) {
            (_, Observation::Missing(reason)) => {
                memory.true_since.remove(&rule.name);
                ("missing".to_string(), missing(reason))
            }
            (
                RuleKind::Target {
                    target,
                    per_droplet,
                    tolerance,
                    max_step_up,
                    max_step_down,
                    ..
                },
                Observation::Number(value),
            ) => {
                // The exact size wanted; the tolerance is judged on it before rounding up, so
                // a small group is not grown by a whole droplet for a 5 % excess.
                let exact = if *per_droplet {
                    value / target
                } else {
                    active as f64 * value / target
                };
                let raw = if exact.is_finite() {
                    exact.ceil().max(0.0) as u32
                } else {
                    current
                };
                let text = format!("{value:.4}");
                if !*per_droplet && active == 0 {
                    (text, missing("no active droplet to average over"))
                } else if current > 0 && (exact / current as f64 - 1.0).abs() <= *tolerance {
                    (
                        text,
                        (
                            format!(
                                "wants {exact:.2}, within the {:.0} % tolerance of {current}: no change",
                                tolerance * 100.0
                            ),
                            Some(current),
                        ),
                    )
                } else {
                    let mut proposal = raw;
                    let mut note = String::new();
                    if let Some(step) = max_step_up
                        && proposal > current + step
                    {
                        proposal = current + step;
                        note = format!(", limited by max_step_up {step}");
                    }
                    if let Some(step) = max_step_down
                        && proposal + step < current
                    {
                        proposal = current - step;
                        note = format!(", limited by max_step_down {step}");
                    }
                    let basis = if *per_droplet {
                        format!("ceil({value:.4} / {target})")
                    } else {
                        format!("ceil({active} × {value:.4} / {target})")
                    };
                    (
                        text,
                        (
                            format!("{basis} = {raw}{note}: proposes {proposal}"),
                            Some(proposal),
                        ),
                    )
                }
            }
            (
                RuleKind::Threshold {
                    condition,
                    hold_for,
                    change,
                },
                Observation::Conditions(truths),
            ) => {
                let truth = combine(condition, truths);
                let text = match &truth {
                    Truth::True => "true".to_string(),
                    Truth::False => "false".to_string(),
                    Truth::Missing(_) => "missing".to_string(),
                };
                match truth {
                    Truth::Missing(reason) => {
                        memory.true_since.remove(&rule.name);
                        (text, missing(&reason))
                    }
                    Truth::False => {
                        memory.true_since.remove(&rule.name);
                        (text, ("condition false: no proposal".to_string(), None))
                    }
                    Truth::True => {
                        let since = *memory.true_since.entry(rule.name.clone()).or_insert(now);
                        let held = (now - since).to_std().unwrap_or_default();
                        if held >= *hold_for {
                            let proposal = apply_change(current, *change);
                            (
                                text,
                                (
                                    format!(
                                        "true for {} (for {}): proposes {proposal}",
                                        fmt(held),
                                        fmt(*hold_for)
                                    ),
                                    Some(proposal),
                                ),
                            )
                        } else {
                            (
                                text,
                                (
                                    format!(
                                        "true for {} of the {} it must hold: no proposal yet",
                                        fmt(held),
                                        fmt(*hold_for)
                                    ),
                                    None,
                                ),
                            )
                        }
                    }
                }
            }
            (_, observation) => (
                "mismatch".to_string(),
                missing(&format!(
                    "the rule's kind does not match its observation {observation:?}"
                )),
            ),
        };
        reports.push(RuleReport {
            name: rule.name.clone(),
            value,
            verdict,
            proposal,
        });
    }

    // 2. Combine: the largest up; else no change; else the smallest down.
    let ups = reports
        .iter()
        .filter(|r| r.proposal.is_some_and(|p| p > current));
    let up = ups.max_by_key(|r| r.proposal);
    let holds = reports.iter().any(|r| r.proposal == Some(current));
    let down = reports
        .iter()
        .filter(|r| r.proposal.is_some_and(|p| p < current))
        .max_by_key(|r| r.proposal);
    let (mut desired, mut winner) = match (up, holds, down) {
        (Some(rule), _, _) => (rule.proposal.unwrap_or(current), Some(rule.name.clone())),
        (None, true, _) => (current, None),
        (None, false, Some(rule)) => (rule.proposal.unwrap_or(current), Some(rule.name.clone())),
        (None, false, None) => (current, None),
    };
    match &winner {
        Some(name) => steps.push(format!("rules: `{name}` wins with {desired}")),
        None if reports.is_empty() => {
            steps.push("no rules: the size only follows the bounds".into())
        }
        None => steps.push(format!("rules: no change from {current}")),
    }
    let unscraped = input
        .members
        .iter()
        .filter(|m| m.state == MemberState::Active && !m.scraped)
        .count();
    if desired < current && unscraped > 0 {
        steps.push(format!(
            "{unscraped} active droplet(s) gave no metrics this tick: no scale-down on missing data, hold at {current}"
        ));
        desired = current;
        winner = None;
    }

    // 3. Bounds.
    let bounds = bounds_at(group, now);
    let source = bounds
        .schedule
        .as_ref()
        .map(|s| format!(" (schedule `{s}`)"))
        .unwrap_or_default();
    let mut forced_by_bounds = false;
    if desired < bounds.min || current < bounds.min {
        if desired < bounds.min {
            desired = bounds.min;
            winner = Some("min".into());
        }
        forced_by_bounds = current < bounds.min;
        steps.push(format!("min {}{source}: desired {desired}", bounds.min));
    }
    if desired > bounds.max || current > bounds.max {
        if desired > bounds.max {
            desired = bounds.max;
            winner = Some("max".into());
        }
        forced_by_bounds = forced_by_bounds || current > bounds.max;
        steps.push(format!("max {}{source}: desired {desired}", bounds.max));
    }
    if bounds.schedule.is_none() {
        steps.push(format!("bounds {}..{}", bounds.min, bounds.max));
    }

    // 4. Stabilization over recent recommendations.
    memory.recommendations.push((now, desired));
    let longest = group
        .stabilization
        .up
        .max(group.stabilization.down)
        .max(group.cooldown.up);
    memory.prune(now, longest + Duration::from_secs(1));
    if !forced_by_bounds {
        if desired < current {
            let window = chrono::Duration::from_std(group.stabilization.down).unwrap_or_default();
            let highest = memory
                .recommendations
                .iter()
                .filter(|(t, _)| *t >= now - window)
                .map(|(_, d)| *d)
                .max()
                .unwrap_or(desired);
            if highest > desired {
                steps.push(format!(
                    "stabilization: the highest recommendation of the last {} is {highest}",
                    fmt(group.stabilization.down)
                ));
                desired = highest.min(current);
            }
        } else if desired > current {
            let window = chrono::Duration::from_std(group.stabilization.up).unwrap_or_default();
            let lowest = memory
                .recommendations
                .iter()
                .filter(|(t, _)| *t >= now - window)
                .map(|(_, d)| *d)
                .min()
                .unwrap_or(desired);
            if lowest < desired {
                steps.push(format!(
                    "stabilization: the lowest recommendation of the last {} is {lowest}",
                    fmt(group.stabilization.up)
                ));
                desired = lowest.max(current);
            }
        }
    }

    // 5. Cooldowns, failure backoff, spend guard (bounds override the first two).
    if desired > current
        && !forced_by_bounds
        && let Some(elapsed) = since(now, memory.last_up)
        && elapsed < group.cooldown.up
    {
        steps.push(format!(
            "up cooldown: the last scale-up was {} ago, {} needed: hold",
            fmt(elapsed),
            fmt(group.cooldown.up)
        ));
        desired = current;
    }
    if desired > current {
        let backoff = memory.backoff();
        if let Some(elapsed) = since(now, memory.last_up_failure)
            && elapsed < backoff
        {
            steps.push(format!(
                "failure backoff: {} scale-up(s) failed in a row, waiting {} ({} left): hold",
                memory.up_failures,
                fmt(backoff),
                fmt(backoff - elapsed)
            ));
            desired = current;
        }
    }
    if desired > current {
        let allowed = group
            .max_creates_per_hour
            .saturating_sub(memory.creates_last_hour(now));
        if desired - current > allowed {
            steps.push(format!(
                "spend guard: {} created in the last hour of max_creates_per_hour {}; at most {allowed} more",
                memory.creates_last_hour(now),
                group.max_creates_per_hour
            ));
            desired = current + allowed;
        }
    }
    if desired < current
        && !forced_by_bounds
        && let Some(elapsed) = since(now, memory.last_down)
        && elapsed < group.cooldown.down
    {
        steps.push(format!(
            "down cooldown: the last scale-down was {} ago, {} needed: hold",
            fmt(elapsed),
            fmt(group.cooldown.down)
        ));
        desired = current;
    }

    // 6. Victims.
    let mut victims = Vec::new();
    if desired < current {
        victims = choose_victims(group, input.members, current - desired, now);
        if (victims.len() as u32) < current - desired {
            steps.push(format!(
                "only {} droplet(s) may be removed (managed, unprotected, older than {}): removing {} instead of {}",
                victims.len(),
                fmt(group.scale_in.min_age),
                victims.len(),
                current - desired
            ));
            desired = current - victims.len() as u32;
        }
    }
    let direction = match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Some(Direction::Up),
        std::cmp::Ordering::Less => Some(Direction::Down),
        std::cmp::Ordering::Equal => None,
    };
    if direction.is_none() {
        winner = None;
    }
    steps.push(match direction {
        Some(Direction::Up) => format!("decision: scale up from {current} to {desired}"),
        Some(Direction::Down) => format!("decision: scale down from {current} to {desired}"),
        None => format!("decision: stay at {current}"),
    });
    Decision {
        at: now,
        current,
        active,
        booting,
        desired,
        bounds,
        winner,
        direction,
        victims,
        rules: reports,
        steps,
    }
}

/// Combines a condition's comparisons in three-valued logic.
pub fn combine(condition: &Condition, truths: &[Truth]) -> Truth {
    let first_missing = || {
        truths.iter().find_map(|t| match t {
            Truth::Missing(reason) => Some(Truth::Missing(reason.clone())),
            _ => None,
        })
    };
    match condition {
        Condition::One(_) => truths
            .first()
            .cloned()
            .unwrap_or(Truth::Missing("no comparison".into())),
        Condition::All(_) => {
            if truths.contains(&Truth::False) {
                Truth::False
            } else {
                first_missing().unwrap_or(Truth::True)
            }
        }
        Condition::Any(_) => {
            if truths.contains(&Truth::True) {
                Truth::True
            } else {
                first_missing().unwrap_or(Truth::False)
            }
        }
    }
}

/// The droplets to remove: managed, unprotected, older than `min_age`, in the group's order.
pub fn choose_victims(
    group: &Group,
    members: &[Member],
    count: u32,
    now: DateTime<Utc>,
) -> Vec<u64> {
    let min_age = chrono::Duration::from_std(group.scale_in.min_age).unwrap_or_default();
    let mut candidates: Vec<&Member> = members
        .iter()
        .filter(|m| m.state != MemberState::Deleting)
        .filter(|m| m.managed || group.allow_unmanaged)
        .filter(|m| !m.protected)
        .filter(|m| now - m.created_at >= min_age)
        .collect();
    match &group.scale_in.choose {
        ScaleInChoice::Newest => {
            candidates.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)))
        }
        ScaleInChoice::Oldest => {
            candidates.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
        }
        ScaleInChoice::LeastBusy(_) => candidates.sort_by(|a, b| {
            // Droplets without a value go last: a missing metric is no proof of idleness.
            let key = |m: &Member| m.busy.unwrap_or(f64::INFINITY);
            key(a)
                .total_cmp(&key(b))
                .then(b.created_at.cmp(&a.created_at))
        }),
    }
    // Booting droplets are the cheapest to remove only if the group asked for them; prefer
    // active ones so capacity on its way is not thrown away.
    candidates.sort_by_key(|m| m.state == MemberState::Booting);
    candidates
        .into_iter()
        .take(count as usize)
        .map(|m| m.id)
        .collect()
}
