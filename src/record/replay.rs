//! Replay: a configuration's real decision code run over a recording's observations, to see
//! what it would have done with the same traffic.
//!
//! The work is conserved, not the samples: the recorded group's total busy vCPU at each tick
//! (from each droplet's `node_cpu_seconds_total{mode="idle"}`) is spread over the *replayed*
//! active droplets in proportion to their vCPUs, capped at them, and what does not fit counts as
//! unserved. Each replayed droplet serves do-agent-like counters built from its share, which go
//! through the same parser, history and expressions as a scrape. Signals that cannot be spread
//! (memory, queue lengths, `target` sources) replay as recorded: each replayed droplet carries
//! the series of one recorded droplet. `prometheus` sources are not in a recording and replay
//! as missing. Droplets the replay creates become active after the boot time; actions take no
//! other time, except that an up run with `health_check_tcp` ends when its droplets are active.

use super::{RecordedTick, Recording};
use crate::config::{DROPLETS_SOURCE, Group, RuleKind, SourceKind};
use crate::daemon::tick::{Gathered, GroupRuntime, InFlight};
use crate::digitalocean::{Droplet, DropletStatus};
use crate::metrics::history::DropletIdentity;
use crate::policy::{Direction, GroupMemory, MemberState};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording has no ticks.
    #[error("the recording has no whole tick: nothing to replay")]
    Empty,
    /// The configuration's expressions did not compile.
    #[error("the configuration: {0}")]
    Config(String),
}

/// What a group did over a recording: the same four figures for the recorded group and the
/// replayed one.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Ticks at which the size (active and booting) changed.
    pub scale_events: u32,
    /// Droplet-hours (booting included).
    pub droplet_hours: f64,
    /// Minutes during which the work exceeded the first target rule's target share of the
    /// active droplets' vCPUs (0.8 without a target rule).
    pub minutes_above_target: f64,
    /// vCPU-minutes of work beyond the active droplets' vCPUs. The recorded group cannot show
    /// work it did not serve (its busy time stops at its vCPUs), so its figure is a floor.
    pub unserved_vcpu_minutes: f64,
}

/// One tick of the comparison, for the chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SizePoint {
    /// Seconds since the recording's first tick.
    pub seconds: f64,
    /// The recorded group's size.
    pub recorded: u32,
    /// The replayed group's size.
    pub replayed: u32,
    /// The recorded work, in busy vCPUs (`None` when it cannot be spread).
    pub busy_vcpus: Option<f64>,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    /// The recorded group.
    pub recorded: Totals,
    /// The replayed configuration.
    pub replayed: Totals,
    /// Ticks replayed.
    pub ticks: usize,
    /// The recorded and replayed size at each tick.
    pub sizes: Vec<SizePoint>,
    /// Whether the work was spread (the recording holds idle CPU counters).
    pub work_spread: bool,
    /// What replays as recorded, or not at all, and why.
    pub notes: Vec<String>,
}

/// A droplet of the replayed group.
struct Virtual {
    droplet: Droplet,
    active_at: DateTime<Utc>,
    /// Per vCPU: idle and busy seconds so far.
    idle: Vec<f64>,
    busy: Vec<f64>,
    /// The recorded droplet whose other series it carries.
    carries: Option<u64>,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn is_idle_cpu(labels: &crate::query::Labels) -> bool {
    labels.get("__name__") == "node_cpu_seconds_total" && labels.get("mode") == "idle"
}

/// The total busy vCPUs of each tick, from the recorded idle counters: per series, 1 minus the
/// idle seconds gained per second since its previous point; `None` where no series moved.
fn busy_per_tick(ticks: &[RecordedTick]) -> Vec<Option<f64>> {
    let mut last: BTreeMap<(u64, String), (i64, f64)> = BTreeMap::new();
    ticks
        .iter()
        .map(|tick| {
            let mut total = None;
            for (droplet, labels, t, value) in &tick.points {
                if !is_idle_cpu(labels) || !value.is_finite() {
                    continue;
                }
                let key = (*droplet, labels.get("cpu").to_string());
                if let Some((t0, v0)) = last.insert(key, (*t, *value))
                    && *t > t0
                    && *value >= v0
                {
                    let idle = (value - v0) / ((t - t0) as f64 / 1000.0);
                    *total.get_or_insert(0.0) += (1.0 - idle).clamp(0.0, 1.0);
                }
            }
            total
        })
        .collect()
}

/// The share of capacity above which work counts as above target: the first target rule's
/// target (when not per droplet), else 0.8.
fn target_share(group: &Group) -> f64 {
    group
        .rules
        .iter()
        .find_map(|rule| match &rule.kind {
            RuleKind::Target {
                target,
                per_droplet: false,
                ..
            } => Some(*target),
            _ => None,
        })
        .unwrap_or(0.8)
}

/// Adds `dt` seconds of a group at `size` with `busy` vCPUs of work on `capacity` active vCPUs.
fn accrue(totals: &mut Totals, dt: f64, size: u32, busy: Option<f64>, capacity: f64, share: f64) {
    totals.droplet_hours += f64::from(size) * dt / 3600.0;
    if let Some(busy) = busy {
        if busy > share * capacity {
            totals.minutes_above_target += dt / 60.0;
        }
        totals.unserved_vcpu_minutes += (busy - capacity).max(0.0) * dt / 60.0;
    }
}

/// do-agent-like text for one replayed droplet: its CPU counters (when the work is spread)
/// and the other series of the recorded droplet it carries, at this tick.
fn exposition(droplet: &Virtual, spread: bool, tick: &RecordedTick) -> String {
    let mut out = String::new();
    if spread {
        for (cpu, (idle, busy)) in droplet.idle.iter().zip(&droplet.busy).enumerate() {
            out.push_str(&format!(
                "node_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"idle\"}} {idle}\nnode_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"user\"}} {busy}\n"
            ));
        }
    }
    let Some(carried) = droplet.carries else {
        return out;
    };
    for (id, labels, _, value) in &tick.points {
        if *id != carried || !value.is_finite() || (spread && is_cpu(labels)) {
            continue;
        }
        push_line(&mut out, labels, *value);
    }
    out
}

/// One exposition line of a recorded series: its own labels (escaped as the format wants), not
/// the ones the history adds back from the scrape's identity.
fn push_line(out: &mut String, labels: &crate::query::Labels, value: f64) {
    let own: Vec<String> = labels
        .iter()
        .filter(|(k, _)| {
            !matches!(
                *k,
                "__name__" | "droplet_id" | "droplet_name" | "instance" | "source"
            )
        })
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    out.push_str(&format!(
        "{}{{{}}} {value}\n",
        labels.get("__name__"),
        own.join(",")
    ));
}

fn is_cpu(labels: &crate::query::Labels) -> bool {
    labels.get("__name__") == "node_cpu_seconds_total"
}

/// What in the configuration cannot replay fully, in words.
fn notes(group: &Group, recording: &Recording, spread: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if spread {
        notes.push("work spread: the recorded total busy vCPU (node_cpu_seconds_total{mode=\"idle\"}) is shared by the replayed active droplets, capped at their vCPUs".to_string());
    } else {
        notes.push("work NOT spread: the recording has no node_cpu_seconds_total{mode=\"idle\"} (the recorded configuration's rules did not read it), so every series replays as recorded and the figures compare decisions, not service".to_string());
    }
    let others: BTreeSet<String> = recording
        .ticks
        .iter()
        .flat_map(|t| t.points.iter())
        .filter(|(_, labels, _, _)| !(spread && is_cpu(labels)))
        .map(|(_, labels, _, _)| labels.get("__name__").to_string())
        .collect();
    if !others.is_empty() {
        notes.push(format!(
            "replayed as recorded (cannot be spread): {} — each replayed droplet carries one recorded droplet's series",
            others.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    for rule in &group.rules {
        if matches!(
            rule.kind,
            RuleKind::Target {
                per_droplet: true,
                ..
            }
        ) {
            notes.push(format!(
                "rule `{}` divides a group total (per_droplet): its series replay as recorded, one recorded droplet's per replayed droplet, so the total grows and shrinks with the replayed group instead of staying as recorded",
                rule.name
            ));
        }
    }
    for source in &group.sources {
        if matches!(source.kind, SourceKind::Prometheus(_)) {
            notes.push(format!(
                "source `{}` (a Prometheus server) is not in a recording: the rules reading it replay as missing",
                source.name
            ));
        }
    }
    notes
}

/// Replays `recording` through `group` (its rules, bounds, brakes and scale-in), with new
/// droplets active `boot` after their create.
pub fn replay(
    recording: &Recording,
    group: Group,
    managed_tag: &str,
    boot: Duration,
) -> Result<Replay, ReplayError> {
    let first = recording.ticks.first().ok_or(ReplayError::Empty)?;
    let busy = busy_per_tick(&recording.ticks);
    let spread = busy.iter().any(Option::is_some);
    let share = target_share(&group);
    let waits_for_boot = group
        .actions
        .lists
        .up
        .iter()
        .any(|a| a == "health_check_tcp");
    let notes = notes(&group, recording, spread);
    let mut runtime = GroupRuntime::new(group.clone(), managed_tag.to_string())
        .map_err(|e| ReplayError::Config(e.to_string()))?;
    let boot = chrono::Duration::from_std(boot).unwrap_or_default();
    let tagged = |mut droplet: Droplet| {
        for tag in [&group.tag, &managed_tag.to_string()] {
            if !droplet.tags.contains(tag) {
                droplet.tags.push(tag.clone());
            }
        }
        droplet
    };
    let mut fleet: Vec<Virtual> = first
        .listing
        .iter()
        .map(|d| Virtual {
            active_at: if d.status == DropletStatus::Active {
                d.created_at.min(at(first.at_ms))
            } else {
                d.created_at + boot
            },
            idle: vec![0.0; d.vcpus.max(1) as usize],
            busy: vec![0.0; d.vcpus.max(1) as usize],
            carries: Some(d.id),
            droplet: tagged(d.clone()),
        })
        .collect();
    // New droplets copy the first droplet seen anywhere in the recording (a group recorded
    // while empty, scaled from zero, has none in its first listing).
    let template = recording
        .ticks
        .iter()
        .find_map(|t| t.listing.first().cloned());
    let mut memory = GroupMemory::default();
    let mut pending_up: Option<DateTime<Utc>> = None;
    let (mut recorded, mut replayed) = (Totals::default(), Totals::default());
    let mut sizes = Vec::with_capacity(recording.ticks.len());
    let mut next_id: u64 = 9_000_000_000;
    let mut previous: Option<(i64, u32, u32)> = None;
    let mut work = None;
    let gathered = Gathered::default();
    for (tick, tick_busy) in recording.ticks.iter().zip(busy) {
        let now = at(tick.at_ms);
        work = tick_busy.or(work);
        let dt = previous.map_or(0.0, |(t, _, _)| (tick.at_ms - t) as f64 / 1000.0);
        // The interval that ended now: the work it brought, on the droplets active then.
        let active_vcpus: f64 = fleet
            .iter()
            .filter(|v| v.active_at <= now)
            .map(|v| v.idle.len() as f64)
            .sum();
        if let Some(busy) = work.filter(|_| spread) {
            for v in fleet.iter_mut().filter(|v| v.active_at <= now) {
                let per_cpu = if active_vcpus > 0.0 {
                    (busy / active_vcpus).min(1.0)
                } else {
                    0.0
                };
                for (idle, used) in v.idle.iter_mut().zip(v.busy.iter_mut()) {
                    *idle += (1.0 - per_cpu) * dt;
                    *used += per_cpu * dt;
                }
            }
        }
        let recorded_vcpus: f64 = tick
            .listing
            .iter()
            .filter(|d| d.status == DropletStatus::Active)
            .map(|d| f64::from(d.vcpus.max(1)))
            .sum();
        if let Some((_, recorded_size, replayed_size)) = previous {
            let w = work.filter(|_| spread);
            accrue(&mut recorded, dt, recorded_size, w, recorded_vcpus, share);
            accrue(&mut replayed, dt, replayed_size, w, active_vcpus, share);
            if tick.decision.current != recorded_size {
                recorded.scale_events += 1;
            }
        }
        // Finished up runs start the up cooldown, as a completed run does in the daemon.
        if let Some(ended) = pending_up.filter(|ended| *ended <= now) {
            memory.scaled(Direction::Up, ended);
            pending_up = None;
        }
        // Who carries which recorded droplet's other series: kept while it is recorded.
        let present: Vec<u64> = tick.listing.iter().map(|d| d.id).collect();
        let mut turn = 0;
        for v in &mut fleet {
            if v.carries.is_none_or(|id| !present.contains(&id)) && !present.is_empty() {
                v.carries = Some(present[turn % present.len()]);
                turn += 1;
            }
            v.droplet.status = if v.active_at <= now {
                DropletStatus::Active
            } else {
                DropletStatus::New
            };
        }
        let droplets: Vec<Droplet> = fleet.iter().map(|v| v.droplet.clone()).collect();
        let mut members = runtime.members(&droplets, &InFlight::default(), now);
        for (member, v) in members.iter_mut().zip(&fleet) {
            if member.state != MemberState::Active {
                continue;
            }
            let identity = DropletIdentity {
                id: v.droplet.id,
                name: v.droplet.name.clone(),
                instance: format!("replay:{}", v.droplet.id),
                source: DROPLETS_SOURCE.to_string(),
            };
            let body = exposition(v, spread, tick);
            member.scraped = runtime
                .history
                .record(&identity, tick.at_ms, &body, "replay")
                .is_ok();
        }
        // `target` sources' series (no droplet) replay as recorded.
        let mut targets: BTreeMap<(String, String), String> = BTreeMap::new();
        for (id, labels, _, value) in &tick.points {
            if *id == 0 && value.is_finite() {
                let body = targets
                    .entry((labels.get("source").into(), labels.get("instance").into()))
                    .or_default();
                push_line(body, labels, *value);
            }
        }
        for ((source, instance), body) in targets {
            let identity = DropletIdentity {
                id: 0,
                name: String::new(),
                instance,
                source,
            };
            let _ = runtime
                .history
                .record(&identity, tick.at_ms, &body, "replay");
        }
        runtime.history.prune(tick.at_ms);
        runtime.drop_new_points();
        runtime.work_values(&droplets, &mut members, now, &gathered.remote);
        let report = runtime.decide(&droplets, &members, &gathered, &mut memory, now);
        let decision = &report.decision;
        // One run at a time, as the daemon: an up run still waiting for its droplets blocks.
        if pending_up.is_none() {
            match decision.direction {
                Some(Direction::Up) if decision.desired > decision.current => {
                    let count = decision.desired - decision.current;
                    for _ in 0..count {
                        let Some(mut droplet) = template.clone() else {
                            break;
                        };
                        next_id += 1;
                        droplet.id = next_id;
                        droplet.name = format!("{}-replay-{next_id}", group.template.name_prefix);
                        droplet.created_at = now;
                        droplet.status = DropletStatus::New;
                        let vcpus = droplet.vcpus.max(1) as usize;
                        fleet.push(Virtual {
                            droplet: tagged(droplet),
                            active_at: now + boot,
                            idle: vec![0.0; vcpus],
                            busy: vec![0.0; vcpus],
                            carries: None,
                        });
                    }
                    memory.created(count, now);
                    replayed.scale_events += 1;
                    if waits_for_boot {
                        pending_up = Some(now + boot);
                    } else {
                        memory.scaled(Direction::Up, now);
                    }
                }
                Some(Direction::Down) if !decision.victims.is_empty() => {
                    fleet.retain(|v| !decision.victims.contains(&v.droplet.id));
                    runtime
                        .history
                        .retain_droplets(&|id| !decision.victims.contains(&id));
                    memory.scaled(Direction::Down, now);
                    replayed.scale_events += 1;
                }
                _ => {}
            }
        }
        let replayed_size = fleet.len() as u32;
        sizes.push(SizePoint {
            seconds: (tick.at_ms - first.at_ms) as f64 / 1000.0,
            recorded: tick.decision.current,
            replayed: replayed_size,
            busy_vcpus: work.filter(|_| spread),
        });
        previous = Some((tick.at_ms, tick.decision.current, replayed_size));
    }
    Ok(Replay {
        recorded,
        replayed,
        ticks: recording.ticks.len(),
        sizes,
        work_spread: spread,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carried_series_with_quotes_and_newlines_in_its_labels_parses_back() {
        let labels = crate::query::Labels::new([
            ("__name__", "queue_jobs"),
            ("path", "a\"b\\c\nd"),
            ("droplet_id", "7"),
        ]);
        let mut body = String::new();
        push_line(&mut body, &labels, 3.0);
        let mut seen = Vec::new();
        crate::metrics::exposition::parse_with(&body, "replay", |sample| {
            let path = sample
                .labels
                .iter()
                .find(|(k, _)| *k == "path")
                .map(|(_, v)| v.to_string());
            seen.push((sample.name.to_string(), path, sample.value));
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(
                "queue_jobs".to_string(),
                Some("a\"b\\c\nd".to_string()),
                3.0
            )]
        );
    }

    #[test]
    fn the_notes_say_what_does_not_replay_as_served() {
        let group = crate::config::group_from_toml(
            "queue",
            "tag = \"q\"\nmin = 1\nmax = 5\n[droplet]\nregion = \"nyc3\"\nsize = \"s-1vcpu-1gb\"\nimage = \"ubuntu-24-04-x64\"\n[[rule]]\nname = \"jobs\"\nexpr = 'sum(jobs)'\ntarget = 10\nper_droplet = true\n",
        )
        .unwrap();
        let recording = Recording {
            header: super::super::header_for(&group, Utc::now()),
            ticks: Vec::new(),
            truncated: false,
        };
        let notes = notes(&group, &recording, false);
        assert!(notes[0].contains("work NOT spread"), "{notes:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("rule `jobs` divides a group total")),
            "{notes:?}"
        );
        assert!(matches!(
            replay(&recording, group, "do-scaler:t", Duration::from_secs(60)),
            Err(ReplayError::Empty)
        ));
    }
}
