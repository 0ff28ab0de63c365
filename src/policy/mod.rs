//! The decision: a pure function from the group's configuration, its members, the rules'
//! observations, the time and the remembered state, to one [`Decision`] with an explanation of
//! every step. No I/O; the clock is a value.
//!
//! Order: rules → proposals (up beats hold beats down) → schedule bounds and min/max →
//! stabilization windows → cooldowns, failure backoff and the spend guard → victims.

pub mod memory;
pub mod rules;
pub mod schedule;

use crate::config::{Group, ScaleInChoice};
use chrono::{DateTime, Utc};
pub use memory::{Direction, GroupMemory, InMemoryStore, MemoryStore};
pub use rules::{apply_change, combine};
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
    /// Draining before its destroy (`[drain]`): billed, so it counts toward `max`, but it
    /// takes no new work, so not toward the size the rules see; never chosen to go again.
    Draining,
    /// Powered off or archived: billed, so it counts toward `max`, but it has no capacity and
    /// is never destroyed or replaced without saying so.
    Off,
    /// Unhealthy and being replaced (`[health]`): billed, so it counts toward `max`, but not
    /// toward the size (its replacement does); never chosen to go by a scale-down.
    Replacing,
}

impl std::fmt::Display for MemberState {
    /// The name `plan`, the API and the page show (as serialized).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberState::Active => "active",
            MemberState::Booting => "booting",
            MemberState::Deleting => "deleting",
            MemberState::Draining => "draining",
            MemberState::Off => "off",
            MemberState::Replacing => "replacing",
        })
    }
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
    /// Its metrics endpoint answered this tick (shown by `plan`; the decision judges the series
    /// each rule read, [`Input::unread`]).
    pub scraped: bool,
    /// Whether it is doing work, by `scale_in.busy` and `[idle] busy`.
    pub work: Work,
}

/// Whether a droplet is doing work (a CI job, a queue item), by the group's busy expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// The group has no busy expression.
    Unjudged,
    /// Working: never a victim.
    Busy,
    /// Idle since this instant (as far as this daemon has watched it).
    Idle(DateTime<Utc>),
    /// No value (booting, not scraped, or absent from the answer): never a victim, and idle
    /// for the idle headroom (so a booting droplet does not ask for more).
    Unknown,
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
    /// Its value or truth, as text (`0.6123`, `true`, `missing`); in JSON a number, a boolean,
    /// or null when missing, so that clients compare numbers.
    #[serde(serialize_with = "value_as_json")]
    pub value: String,
    /// Its verdict and why.
    pub verdict: String,
    /// The size it proposes, if it proposes one.
    pub proposal: Option<u32>,
    /// Whether it is a target rule at its `ceiling`: its scale-up does not wait for
    /// `cooldown.up`, as it grows only from droplets already measured.
    #[serde(skip)]
    pub saturated: bool,
}

/// A rule's value text as JSON: a number, a boolean, null for missing; any other text as is.
fn value_as_json<S: serde::Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        "missing" => serializer.serialize_none(),
        "true" => serializer.serialize_bool(true),
        "false" => serializer.serialize_bool(false),
        text => match text.parse::<f64>() {
            Ok(number) if number.is_finite() => serializer.serialize_f64(number),
            _ => serializer.serialize_str(text),
        },
    }
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
    /// Droplets draining before their destroy: they count toward `max` only (a scale-up
    /// returns them to service before it creates any).
    pub draining: u32,
    /// Unhealthy droplets being replaced: they count toward `max` only (their replacements
    /// count toward the size).
    #[serde(default)]
    pub replacing: u32,
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
    /// Per rule (same order), the active droplets that gave none of the series it reads this
    /// tick; empty (or shorter than the rules) means every droplet gave them.
    pub unread: &'a [Vec<u64>],
    /// Now.
    pub now: DateTime<Utc>,
}

fn since(now: DateTime<Utc>, then: Option<DateTime<Utc>>) -> Option<Duration> {
    then.map(|t| (now - t).to_std().unwrap_or_default())
}

fn fmt(duration: Duration) -> String {
    crate::config::duration::format_duration(Duration::from_secs(duration.as_secs()))
}

/// Where the size stands against the bounds in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    /// Within the bounds: the rules decide, braked as usual.
    No,
    /// Above `max`: the decision moves to `max`, and no further, whatever the rules want.
    DownToMax,
    /// Below `min`: the decision moves to `min` at least, whatever the cooldowns; the rules'
    /// wish beyond `min` is braked as usual.
    UpToMin,
}

/// Decides the group's size. Updates `memory` (condition clocks and recommendations) as a
/// side effect on that value only. The stages, in order: sizes, rules, partial data, bounds,
/// stabilization, brakes (cooldowns, failure backoff, spend guard), victims.
pub fn decide(input: &Input<'_>, memory: &mut GroupMemory) -> Decision {
    let group = input.group;
    let now = input.now;
    let mut steps = Vec::new();
    let count = |state| input.members.iter().filter(|m| m.state == state).count() as u32;
    let (active, booting) = (count(MemberState::Active), count(MemberState::Booting));
    let current = active + booting;
    let draining = count(MemberState::Draining);
    let replacing = count(MemberState::Replacing);
    if replacing > 0 {
        steps.push(format!(
            "{replacing} unhealthy droplet(s) being replaced count toward max only: their replacements count toward the size"
        ));
    }
    steps.push(if draining == 0 {
        format!("{current} droplets count toward the size: {active} active, {booting} booting")
    } else {
        format!(
            "{current} droplets count toward the size: {active} active, {booting} booting ({draining} draining count toward max only; a scale-up returns them to service first)"
        )
    });

    let bounds = bounds_at(group, now);
    let mut reports = rules::evaluate(group, input.observations, current, active, memory, now);
    if let Some(idle) = &group.idle {
        reports.push(rules::idle_headroom(idle, &bounds, input.members));
    }
    let (mut desired, mut winner) = rules::strongest(&reports, current, &mut steps);
    hold_on_partial_data(
        &reports,
        input.unread,
        current,
        &mut desired,
        &mut winner,
        &mut steps,
    );

    // A saturated rule's scale-up is paced by its own step (from the measured droplets), not
    // by the up cooldown.
    let saturated = winner
        .as_ref()
        .and_then(|name| reports.iter().find(|r| &r.name == name))
        .is_some_and(|r| r.saturated && desired > current);
    let forced = apply_bounds(&bounds, current, &mut desired, &mut winner, &mut steps);
    count_off_toward_max(
        input.members,
        &bounds,
        current,
        &mut desired,
        &mut winner,
        &mut steps,
    );
    // The recommendation this tick leaves for the stabilization windows: after the bounds, so
    // a forced move to max is what the next ticks' scale-down window remembers.
    memory.recommendations.push((now, desired));
    let longest = group
        .stabilization
        .up
        .max(group.stabilization.down)
        .max(group.cooldown.up);
    memory.prune(now, longest + Duration::from_secs(1));

    let floor = match forced {
        Forced::UpToMin => bounds.min,
        Forced::No | Forced::DownToMax => current,
    };
    if forced != Forced::DownToMax {
        stabilize(group, memory, now, current, floor, &mut desired, &mut steps);
    }
    brake(
        group,
        memory,
        now,
        (current, floor),
        (forced, saturated),
        &mut desired,
        &mut steps,
    );

    let mut victims = Vec::new();
    if desired < current {
        victims = choose_victims(group, input.members, current - desired, now);
        if (victims.len() as u32) < current - desired {
            let idle = match &group.idle {
                Some(idle) if !idle.time.is_zero() => format!(", idle for {}", fmt(idle.time)),
                Some(_) => ", idle".to_string(),
                None if group.scale_in.busy.is_some() => ", not busy".to_string(),
                None => String::new(),
            };
            steps.push(format!(
                "only {} droplet(s) may be removed (managed, unprotected, older than {}{idle}): removing {} instead of {}",
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
        draining,
        replacing,
        desired,
        bounds,
        winner,
        direction,
        victims,
        rules: reports,
        steps,
    }
}

/// A decision in one line: its outcome, and the step that decided it (for a `stay`, what held
/// it), from the decision's steps: `stay at 5: cooldown.down: …`.
pub fn outcome_with_reason(steps: &[&str]) -> String {
    let Some(last) = steps.last() else {
        return String::new();
    };
    let outcome = last.trim_start_matches("decision: ");
    let why = steps
        .iter()
        .rev()
        .skip(1)
        .find(|s| !s.starts_with("bounds ") && !s.contains("droplets count toward the size"))
        .copied()
        .unwrap_or("");
    if why.is_empty() {
        outcome.to_string()
    } else {
        format!("{outcome}: {why}")
    }
}

/// Missing data never scales down, nor does partial data: while an active droplet gave none
/// of the series a rule proposing the scale-down reads, that scale-down holds. (A droplet
/// whose scrape failed gave none; one that lacks only an application's metric holds the rules
/// reading that metric.)
fn hold_on_partial_data(
    reports: &[RuleReport],
    unread: &[Vec<u64>],
    current: u32,
    desired: &mut u32,
    winner: &mut Option<String>,
    steps: &mut Vec<String>,
) {
    if *desired >= current {
        return;
    }
    let partial = reports
        .iter()
        .zip(unread)
        .filter(|(report, missing)| {
            report.proposal.is_some_and(|p| p < current) && !missing.is_empty()
        })
        .map(|(report, missing)| {
            format!(
                "`{}` has no current data from {} active droplet(s) ({})",
                report.name,
                missing.len(),
                missing
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>();
    if !partial.is_empty() {
        steps.push(format!(
            "{}: no scale-down on partial data, hold at {current}",
            partial.join("; ")
        ));
        *desired = current;
        *winner = None;
    }
}

/// Applies the bounds in force. Outside them the decision moves only to the bound: above max
/// to max (not to what a rule wants below it, which the brakes decide on later ticks), below
/// min to min at least.
fn apply_bounds(
    bounds: &Bounds,
    current: u32,
    desired: &mut u32,
    winner: &mut Option<String>,
    steps: &mut Vec<String>,
) -> Forced {
    let source = bounds
        .schedule
        .as_ref()
        .map(|s| format!(" (schedule `{s}`)"))
        .unwrap_or_default();
    if bounds.schedule.is_none() {
        steps.push(format!("bounds {}..{}", bounds.min, bounds.max));
    }
    if current > bounds.max {
        if *desired != bounds.max {
            *winner = Some("max".into());
        }
        *desired = bounds.max;
        steps.push(format!(
            "max {}{source}: {current} droplets are above it, so the decision goes to {} and no further this tick",
            bounds.max, bounds.max
        ));
        return Forced::DownToMax;
    }
    if *desired > bounds.max {
        *desired = bounds.max;
        *winner = Some("max".into());
        steps.push(format!(
            "max {}{source}: desired {}",
            bounds.max, bounds.max
        ));
    }
    if current < bounds.min {
        if *desired <= bounds.min {
            *desired = bounds.min;
            *winner = Some("min".into());
        }
        steps.push(format!(
            "min {}{source}: {current} droplets are below it, so the decision goes to {} at least",
            bounds.min, bounds.min
        ));
        return Forced::UpToMin;
    }
    if *desired < bounds.min {
        *desired = bounds.min;
        *winner = Some("min".into());
        steps.push(format!(
            "min {}{source}: desired {}",
            bounds.min, bounds.min
        ));
    }
    Forced::No
}

/// Powered-off and archived droplets are billed: they count toward `max`, so a scale-up never
/// takes the droplets billed past it (they are never destroyed or replaced without saying so:
/// the step names them whenever there are any).
fn count_off_toward_max(
    members: &[Member],
    bounds: &Bounds,
    current: u32,
    desired: &mut u32,
    winner: &mut Option<String>,
    steps: &mut Vec<String>,
) {
    let off: Vec<u64> = members
        .iter()
        .filter(|m| m.state == MemberState::Off)
        .map(|m| m.id)
        .collect();
    let replacing = members
        .iter()
        .filter(|m| m.state == MemberState::Replacing)
        .count();
    if off.is_empty() && replacing == 0 {
        return;
    }
    if !off.is_empty() {
        steps.push(format!(
            "{} droplet(s) are powered off or archived ({}): billed, so they count toward max, but they carry no load; do-scaler never destroys them: power them on or destroy them",
            off.len(),
            off.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    // Billed, not counted in the size: the off ones, and the unhealthy ones being replaced.
    let apart = off.len() + replacing;
    let room = bounds.max.saturating_sub(apart as u32);
    if *desired > current && *desired > room {
        *desired = room.max(current);
        *winner = Some("max".into());
        steps.push(format!(
            "max {} counting the {} off or being replaced: at most {} running or booting, desired {}",
            bounds.max,
            apart,
            room,
            *desired
        ));
    }
}

/// The stabilization windows: a scale-down goes only to the highest recommendation of
/// `stabilization.down`, a scale-up only to the lowest of `stabilization.up` (never below
/// `floor`, the bound a forced move must reach).
fn stabilize(
    group: &Group,
    memory: &GroupMemory,
    now: DateTime<Utc>,
    current: u32,
    floor: u32,
    desired: &mut u32,
    steps: &mut Vec<String>,
) {
    let in_window = |window: Duration| {
        let window = chrono::Duration::from_std(window).unwrap_or_default();
        memory
            .recommendations
            .iter()
            .filter(move |(t, _)| *t >= now - window)
            .map(|(_, d)| *d)
    };
    if *desired < current {
        let highest = in_window(group.stabilization.down)
            .max()
            .unwrap_or(*desired);
        if highest > *desired {
            steps.push(format!(
                "stabilization: the highest recommendation of the last {} is {highest}",
                fmt(group.stabilization.down)
            ));
            *desired = highest.min(current);
        }
    } else if *desired > floor {
        let lowest = in_window(group.stabilization.up).min().unwrap_or(*desired);
        if lowest < *desired {
            steps.push(format!(
                "stabilization: the lowest recommendation of the last {} is {lowest}",
                fmt(group.stabilization.up)
            ));
            *desired = lowest.max(floor);
        }
    }
}

/// Cooldowns, failure backoff and the spend guard. Cooldowns hold only what the bounds do not
/// force (below min the move to min goes on, above max the move to max goes on); the backoff
/// and the spend guard hold every scale-up. `sizes` is (current, floor): the floor is what a
/// forced move must reach. A scale-up from a saturated rule skips the up cooldown (it grows
/// only from droplets already measured, so it cannot compound on droplets still booting).
fn brake(
    group: &Group,
    memory: &GroupMemory,
    now: DateTime<Utc>,
    (current, floor): (u32, u32),
    (forced, saturated): (Forced, bool),
    desired: &mut u32,
    steps: &mut Vec<String>,
) {
    let cooling = since(now, memory.last_up).filter(|elapsed| *elapsed < group.cooldown.up);
    if *desired > floor
        && let Some(elapsed) = cooling
        && saturated
    {
        steps.push(format!(
            "up cooldown ({} of {}) does not hold a saturated rule: it grows from measured droplets only",
            fmt(elapsed),
            fmt(group.cooldown.up)
        ));
    } else if *desired > floor
        && let Some(elapsed) = cooling
    {
        steps.push(format!(
            "up cooldown: the last scale-up was {} ago, {} needed: hold at {floor}",
            fmt(elapsed),
            fmt(group.cooldown.up)
        ));
        *desired = floor;
    }
    if *desired > current {
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
            *desired = current;
        }
    }
    if *desired > current {
        let allowed = group
            .max_creates_per_hour
            .saturating_sub(memory.creates_last_hour(now));
        if *desired - current > allowed {
            steps.push(format!(
                "spend guard: {} created in the last hour of max_creates_per_hour {}; at most {allowed} more",
                memory.creates_last_hour(now),
                group.max_creates_per_hour
            ));
            *desired = current + allowed;
        }
    }
    if *desired < current
        && forced == Forced::No
        && let Some(elapsed) = since(now, memory.last_down)
        && elapsed < group.cooldown.down
    {
        steps.push(format!(
            "down cooldown: the last scale-down was {} ago, {} needed: hold",
            fmt(elapsed),
            fmt(group.cooldown.down)
        ));
        *desired = current;
    }
}

/// Whether a droplet's work allows removing it: with a busy expression only an idle droplet
/// may go (a busy or unknown one never does), and with `[idle] time` only one idle that long.
fn may_go_by_work(group: &Group, member: &Member, now: DateTime<Utc>) -> bool {
    match member.work {
        Work::Unjudged => group.scale_in.busy.is_none() && group.idle.is_none(),
        Work::Busy | Work::Unknown => false,
        Work::Idle(since) => group.idle.as_ref().is_none_or(|idle| {
            now - since >= chrono::Duration::from_std(idle.time).unwrap_or_default()
        }),
    }
}

/// The droplets to remove: managed, unprotected, older than `min_age`, not working (with a
/// busy expression), in the group's order.
pub fn choose_victims(
    group: &Group,
    members: &[Member],
    count: u32,
    now: DateTime<Utc>,
) -> Vec<u64> {
    let min_age = chrono::Duration::from_std(group.scale_in.min_age).unwrap_or_default();
    let mut candidates: Vec<&Member> = members
        .iter()
        .filter(|m| {
            !matches!(
                m.state,
                MemberState::Deleting
                    | MemberState::Off
                    | MemberState::Draining
                    | MemberState::Replacing
            )
        })
        .filter(|m| m.managed || group.allow_unmanaged)
        .filter(|m| !m.protected)
        .filter(|m| now - m.created_at >= min_age)
        .filter(|m| may_go_by_work(group, m, now))
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
