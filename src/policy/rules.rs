//! The rules' stage of a decision: each rule's value and verdict, and the strongest proposal
//! (scale-up beats no change beats scale-down; among ups the largest, among downs the
//! smallest step).

use super::{Bounds, GroupMemory, Member, MemberState, Observation, RuleReport, Truth, Work};
use crate::config::{Change, Condition, Group, Idle, OnMissing, RuleKind};
use chrono::{DateTime, Utc};
use std::time::Duration;

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

/// A change as written in a group file: "+2", "-1", "+50%".
pub fn describe_change(change: Change) -> String {
    match change {
        Change::Count(n) => format!("{n:+}"),
        Change::Percent(p) => format!("{p:+}%"),
    }
}

/// Every rule's value, verdict and proposal, in the group's rule order. Threshold rules'
/// condition clocks live in `memory`.
pub fn evaluate(
    group: &Group,
    observations: &[Observation],
    current: u32,
    active: u32,
    memory: &mut GroupMemory,
    now: DateTime<Utc>,
) -> Vec<RuleReport> {
    let mut reports = Vec::new();
    for (rule, observation) in group.rules.iter().zip(observations) {
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
                    saturation,
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
                } else if let Some(saturation) = saturation.filter(|s| s.holds(*value)) {
                    // At the ceiling the value no longer says how much work waits: grow by
                    // the step from the droplets measured (booting ones are not yet), never
                    // below what the proportion asks, and never shrink.
                    let stepped = apply_change(active, saturation.step);
                    let proposal = stepped.max(raw).max(current);
                    (
                        text,
                        (
                            format!(
                                "at its ceiling {} (saturated): {} from {active} active = {stepped}, ceil({active} × {value:.4} / {target}) = {raw}: proposes {proposal}",
                                saturation.ceiling,
                                describe_change(saturation.step)
                            ),
                            Some(proposal),
                        ),
                    )
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
            (RuleKind::Desired { .. }, Observation::Number(value)) => {
                let text = format!("{value:.4}");
                if value.is_finite() {
                    let wanted = value.ceil().clamp(0.0, u32::MAX as f64) as u32;
                    (
                        text,
                        (
                            format!("wants ceil({value:.4}) = {wanted}: proposes {wanted}"),
                            Some(wanted),
                        ),
                    )
                } else {
                    (text, missing(&format!("the value is {value}")))
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
        let saturated = matches!(
            (&rule.kind, observation),
            (RuleKind::Target { saturation: Some(saturation), .. }, Observation::Number(value))
                if saturation.holds(*value) && active > 0
        );
        reports.push(RuleReport {
            name: rule.name.clone(),
            value,
            verdict,
            proposal,
            saturated,
        });
    }

    reports
}

/// The name the idle headroom goes by in plans and decisions (brackets: no rule can be named
/// so by accident, as it is the table's name).
pub const IDLE_RULE: &str = "[idle]";

/// The idle headroom's proposal: the busy droplets plus the idle count in force. Booting
/// droplets and droplets without a busy value count as idle here, or every booting droplet
/// would ask for more, tick after tick.
pub fn idle_headroom(idle: &Idle, bounds: &Bounds, members: &[Member]) -> RuleReport {
    let busy = members
        .iter()
        .filter(|m| m.state == MemberState::Active && m.work == Work::Busy)
        .count() as u32;
    let count = bounds.idle_count.unwrap_or(idle.count);
    let from = match &bounds.schedule {
        Some(schedule) if bounds.idle_count != Some(idle.count) => {
            format!(" (schedule `{schedule}`)")
        }
        _ => String::new(),
    };
    let proposal = busy.saturating_add(count);
    RuleReport {
        name: IDLE_RULE.to_string(),
        value: busy.to_string(),
        verdict: format!("{busy} busy + {count} kept idle{from} = {proposal}: proposes {proposal}"),
        proposal: Some(proposal),
        saturated: false,
    }
}

/// The strongest proposal and the rule that made it; `None` as winner means no change.
pub fn strongest(
    reports: &[RuleReport],
    current: u32,
    steps: &mut Vec<String>,
) -> (u32, Option<String>) {
    let up = reports
        .iter()
        .filter(|r| r.proposal.is_some_and(|p| p > current))
        .max_by_key(|r| r.proposal);
    let holds = reports.iter().any(|r| r.proposal == Some(current));
    let down = reports
        .iter()
        .filter(|r| r.proposal.is_some_and(|p| p < current))
        .max_by_key(|r| r.proposal);
    let (desired, winner) = match (up, holds, down) {
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
        None => {
            // Why: the rules that hold the size (within tolerance, no data), else that none
            // proposes anything (conditions false or not held long enough).
            let holding: Vec<String> = reports
                .iter()
                .filter(|r| r.proposal == Some(current))
                .map(|r| format!("`{}`: {}", r.name, r.verdict))
                .collect();
            let why = if holding.is_empty() {
                "no rule proposes a change".to_string()
            } else {
                holding.join("; ")
            };
            steps.push(format!("rules: no change from {current} ({why})"))
        }
    }
    (desired, winner)
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
