//! Replacing unhealthy droplets (`[health]`), launch first and driven by ticks from journaled
//! state: a droplet that failed its check `unhealthy_after` ticks in a row gets a replacement
//! row (with the new droplet's name chosen in advance) before the group's `up` actions create
//! it, one past `max` if need be; once the new droplet passes its own check the old one is
//! drained (with `[drain]`) or destroyed; a replacement that never passes is destroyed and
//! the old droplet stays. Never more billed than `max_percent` of desired, never more started
//! than `max_replacements_per_hour`, and after three failures in a row replacement pauses
//! itself until the group is resumed. No step waits inside a tick, and a restart resumes
//! each replacement where the state database left it.

use super::{GroupTask, RunKind, blocking};
use crate::config::health::FAILED_REPLACEMENTS_PAUSE;
use crate::daemon::tick::TickReport;
use crate::digitalocean::{Droplet, DropletStatus};
use crate::policy::{Direction, MemberState};
use crate::script::runner::Purpose;
use crate::state::{Ended, Phase, Replacement};

/// How long a replacement may take to be listed, boot and pass its check, beyond the group's
/// `warmup` and `[health] grace`: past it the replacement is taken as broken.
const BOOT_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(300);

impl GroupTask {
    /// Carries the open replacements on by one step each, in order, until one needs an
    /// action run. `None` when none did.
    pub(super) fn carry_on_replacing(&mut self, report: &TickReport) -> Option<bool> {
        let replacements = self.replacements.clone();
        for replacement in &replacements {
            if let Some(started) = self.replacement_step(report, replacement) {
                return Some(started);
            }
        }
        None
    }

    fn replacement_step(&mut self, report: &TickReport, r: &Replacement) -> Option<bool> {
        let name = self.name().to_string();
        let listed = |id: u64| report.listing.iter().find(|d| d.id == id);
        let new = report
            .listing
            .iter()
            .find(|d| d.name == r.new_name)
            .cloned();
        let Some(old) = listed(r.old) else {
            let how = match r.phase {
                Phase::Retiring => Ended::Replaced,
                _ => Ended::Cancelled("the unhealthy droplet left the listing".into()),
            };
            self.end_replacement(r, how);
            return None;
        };
        if old.has_tag(&self.runtime.group.protect_tag) {
            tracing::warn!(group = %name, droplet = r.old, "protected while being replaced: the replacement is called off and the droplet stays");
            self.end_replacement(r, Ended::Cancelled("protected by an operator".into()));
            return None;
        }
        match r.phase {
            Phase::Launching => self.launching_step(report, r, new.as_ref()),
            Phase::Retiring => self.retire_old(report, r, old),
            Phase::Abandoning => match new {
                None if is_pending(report, r) => None,
                None => {
                    let why = r.failure.clone().unwrap_or_else(|| {
                        format!(
                            "its replacement {} never passed its health check",
                            r.new_name
                        )
                    });
                    self.end_replacement(r, Ended::Failed(why));
                    None
                }
                Some(new) if state_of(report, new.id) == Some(MemberState::Deleting) => None,
                Some(new) => self.destroy_now(
                    report,
                    new.id,
                    "a replacement that failed or never passed its health check",
                ),
            },
        }
    }

    /// Journals the replacement of `old` as abandoned, with why: its new droplet is destroyed
    /// once listed, the old one stays.
    fn abandon(&mut self, old: u64, why: &str) -> bool {
        let name = self.name().to_string();
        crate::failpoint::hit("replace.before_abandon");
        let store = self.daemon.store.clone();
        match blocking(|| store.set_replacement_phase(&name, old, Phase::Abandoning, Some(why))) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(group = %name, %error, "cannot record that the replacement is abandoned");
                false
            }
        }
    }

    /// A replacement's launch run failed: with no create asked for, the replacement failed;
    /// otherwise its droplet may exist, and is destroyed once listed (never left as a spare).
    pub(super) fn replacement_run_failed(&mut self, old: u64, create_attempts: u32, error: String) {
        let why = format!("its run failed: {error}");
        if create_attempts > 0 {
            tracing::warn!(group = %self.name(), droplet = old, "the replacement's run failed after its create ({error}): its droplet is destroyed once listed");
            self.abandon(old, &why);
            return;
        }
        let name = self.name().to_string();
        let now = self.daemon.clock.now();
        tracing::warn!(group = %name, droplet = old, "the replacement failed: {why}");
        let store = self.daemon.store.clone();
        let how = Ended::Failed(why);
        if let Err(e) = blocking(|| store.end_replacement(&name, old, &how, now)) {
            tracing::error!(group = %name, error = %e, "cannot record the end of a replacement");
        }
        self.count_replacement(&how);
    }

    /// Counts an ended replacement in `do_scaler_replacements_total`.
    fn count_replacement(&self, how: &Ended) {
        let result = match how {
            Ended::Replaced => "replaced",
            Ended::Failed(_) => "failed",
            Ended::Cancelled(_) => "cancelled",
        };
        self.daemon
            .metrics
            .replacements
            .get_or_create(&crate::api::metrics::Metrics::group_and(
                self.name(),
                "result",
                result,
            ))
            .inc();
    }

    /// A replacement still launching: retires the old droplet once the new one passes its
    /// check; gives up on a new one that never does, or that was never made.
    fn launching_step(
        &mut self,
        report: &TickReport,
        r: &Replacement,
        new: Option<&Droplet>,
    ) -> Option<bool> {
        let now = self.daemon.clock.now();
        let group = &self.runtime.group;
        let allowance = group.warmup
            + group.health.as_ref().map(|h| h.grace).unwrap_or_default()
            + BOOT_ALLOWANCE;
        let overdue = now - r.started > chrono::Duration::from_std(allowance).unwrap_or_default();
        let Some(new) = new else {
            // Nothing listed or pending: the daemon stopped before the create was asked for
            // (a failed run ends or abandons its row as it ends), or the droplet never showed
            // in an hour of listings.
            if !is_pending(report, r) {
                self.end_replacement(
                    r,
                    Ended::Cancelled("its create was never made (the daemon stopped first)".into()),
                );
            }
            return None;
        };
        let passed = new.status == DropletStatus::Active
            && report.health.get(&new.id).is_some_and(|h| h.passed)
            && state_of(report, new.id) == Some(MemberState::Active);
        if passed {
            return self.start_retiring(report, r);
        }
        if overdue {
            let why = format!(
                "its replacement {} did not pass its health check within {}",
                r.new_name,
                crate::config::duration::format_duration(allowance)
            );
            tracing::warn!(group = %self.name(), droplet = r.old, replacement = new.id, "{why}: destroying it, the old droplet stays");
            if !self.abandon(r.old, &why) {
                return None;
            }
            return self.destroy_now(
                report,
                new.id,
                "a replacement that failed or never passed its health check",
            );
        }
        None
    }

    /// The replacement passed: journals it as retiring, then drains (with `[drain]`) or
    /// destroys the old droplet.
    fn start_retiring(&mut self, report: &TickReport, r: &Replacement) -> Option<bool> {
        let name = self.name().to_string();
        crate::failpoint::hit("replace.before_retire");
        let store = self.daemon.store.clone();
        if let Err(error) =
            blocking(|| store.set_replacement_phase(&name, r.old, Phase::Retiring, None))
        {
            tracing::error!(group = %name, %error, "cannot record that the replacement passed: the old droplet stays for now");
            return None;
        }
        crate::failpoint::hit("replace.after_retire");
        tracing::info!(group = %name, droplet = r.old, replacement = %r.new_name, "the replacement passed its health check: retiring the unhealthy droplet");
        let old = report.listing.iter().find(|d| d.id == r.old)?.clone();
        self.retire_old(report, r, &old)
    }

    /// Drains or destroys the old droplet of a retiring replacement (once: a droplet already
    /// draining or being deleted is left to that).
    fn retire_old(&mut self, report: &TickReport, r: &Replacement, old: &Droplet) -> Option<bool> {
        if matches!(
            state_of(report, old.id),
            Some(MemberState::Draining | MemberState::Deleting)
        ) {
            return None;
        }
        if let Some(drain) = self.runtime.group.drain.clone() {
            let name = self.name().to_string();
            let now = self.daemon.clock.now();
            let deadline = now + chrono::Duration::from_std(drain.timeout).unwrap_or_default();
            let prepared = drain.actions.is_empty();
            let store = self.daemon.store.clone();
            let ids = [r.old];
            if let Err(error) = blocking(|| store.start_drain(&name, &ids, now, deadline, prepared))
            {
                tracing::error!(group = %name, %error, "cannot record the drain of a replaced droplet");
                return None;
            }
            // The drain carries on from the next tick, as any drain.
            return None;
        }
        self.destroy_now(
            report,
            r.old,
            "replaced: its replacement passed its health check",
        )
    }

    /// Destroys one droplet with the group's `down` actions, outside any scale event.
    fn destroy_now(&mut self, report: &TickReport, id: u64, why: &str) -> Option<bool> {
        let mut decision = report.decision.clone();
        decision.current = decision.current.saturating_add(1);
        decision.desired = report.decision.current;
        decision.direction = Some(Direction::Down);
        decision.victims = vec![id];
        decision
            .steps
            .push(format!("health: destroying {id}: {why}"));
        let actions = self.runtime.group.actions.lists.down.clone();
        let report = TickReport {
            decision,
            ..report.clone()
        };
        Some(self.start_run(
            report,
            actions,
            Purpose::Decision,
            RunKind::Destroy(vec![id]),
        ))
    }

    fn end_replacement(&mut self, r: &Replacement, how: Ended) {
        let name = self.name().to_string();
        let now = self.daemon.clock.now();
        match &how {
            Ended::Replaced => {
                tracing::info!(group = %name, droplet = r.old, replacement = %r.new_name, "replaced")
            }
            Ended::Failed(why) => {
                tracing::warn!(group = %name, droplet = r.old, "the replacement failed: {why}")
            }
            Ended::Cancelled(why) => {
                tracing::info!(group = %name, droplet = r.old, "the replacement is called off: {why}")
            }
        }
        let store = self.daemon.store.clone();
        if let Err(error) = blocking(|| store.end_replacement(&name, r.old, &how, now)) {
            tracing::error!(group = %name, %error, "cannot record the end of a replacement");
        }
        self.count_replacement(&how);
        self.replacements.retain(|open| open.old != r.old);
    }

    /// Why replacement is paused, after failures in a row (`None` when it is not).
    pub(super) fn replacement_paused(&self) -> Option<String> {
        let name = self.name().to_string();
        let store = self.daemon.store.clone();
        let failed = blocking(|| store.failed_replacements_in_a_row(&name)).unwrap_or_default();
        (failed.len() >= FAILED_REPLACEMENTS_PAUSE).then(|| {
            format!(
                "replacement paused after {} failed replacements in a row (the last: {}); fix the droplet template, then `do-scaler resume {name}`",
                failed.len(),
                failed[0]
            )
        })
    }

    /// The droplets due for replacement, most urgent first, each with why: those that failed
    /// their check `unhealthy_after` ticks in a row (the longest failing first), else, with
    /// `[refresh]` not paused, inside its window and under its `max_unavailable`, the stale
    /// ones (the oldest first).
    fn due_for_replacement(&self, report: &TickReport) -> Vec<(u64, String)> {
        let group = &self.runtime.group;
        let Some(health) = &group.health else {
            return Vec::new();
        };
        let mut unhealthy: Vec<(u64, u32, String)> = report
            .droplets
            .iter()
            .filter(|d| d.state == MemberState::Active && !d.protected)
            .filter(|d| d.managed || group.allow_unmanaged)
            .filter_map(|d| {
                let mark = report.health.get(&d.id)?;
                (mark.failed_ticks >= health.unhealthy_after).then(|| {
                    (
                        d.id,
                        mark.failed_ticks,
                        format!(
                            "failed its health check {} ticks in a row: {}",
                            mark.failed_ticks,
                            mark.reason.clone().unwrap_or_default()
                        ),
                    )
                })
            })
            .collect();
        if !unhealthy.is_empty() {
            unhealthy.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            return unhealthy
                .into_iter()
                .map(|(id, _, why)| (id, why))
                .collect();
        }
        let Some(refresh) = &group.refresh else {
            return Vec::new();
        };
        let now = self.daemon.clock.now();
        let open = self.replacements.len() as u32;
        if open >= refresh.max_unavailable.of(report.decision.desired)
            || !crate::daemon::refresh::window_open(group, now)
        {
            return Vec::new();
        }
        let name = self.name().to_string();
        let store = self.daemon.store.clone();
        if blocking(|| store.is_refresh_paused(&name)) {
            return Vec::new();
        }
        crate::daemon::refresh::stale(group, report, now)
            .into_iter()
            .map(|s| (s.id, s.reason))
            .collect()
    }

    /// Starts the replacement of the droplet most due for one (see
    /// [`GroupTask::due_for_replacement`]), within the limits. `None` when none is due or the
    /// limits hold it.
    pub(super) fn start_replacement(&mut self, report: &TickReport) -> Option<bool> {
        let health = self.runtime.group.health.clone()?;
        let name = self.name().to_string();
        let due = self.due_for_replacement(report);
        if due.is_empty() {
            self.note_replacement(None);
            return None;
        }
        if let Some(why) = self.replacement_paused() {
            self.note_replacement(Some(why));
            return None;
        }
        let now = self.daemon.clock.now();
        let store = self.daemon.store.clone();
        let started_last_hour =
            blocking(|| store.replacements_since(&name, now - chrono::Duration::hours(1)))
                .unwrap_or(u32::MAX);
        if started_last_hour >= health.max_replacements_per_hour {
            self.note_replacement(Some(format!(
                "{} droplet(s) due for replacement wait: {started_last_hour} replacements started in the last hour, of max_replacements_per_hour {}",
                due.len(),
                health.max_replacements_per_hour
            )));
            return None;
        }
        // Billed now: everything listed that is not on its way out, and creates not listed yet.
        let decision = &report.decision;
        let billed = report
            .droplets
            .iter()
            .filter(|d| d.state != MemberState::Deleting)
            .count() as u32;
        let cap = health
            .max_billed(decision.desired)
            .min(decision.bounds.max.saturating_add(1));
        if billed >= cap {
            self.note_replacement(Some(format!(
                "{} droplet(s) due for replacement wait: {billed} droplets are billed, and a replacement may take them to {cap} at most (max_percent {} of desired {}, at most one past max {})",
                due.len(),
                health.max_percent,
                decision.desired,
                decision.bounds.max
            )));
            return None;
        }
        self.note_replacement(None);
        let (old, reason) = due.into_iter().next()?;
        let new_name =
            crate::script::host::unique_name(&self.runtime.group.template.name_prefix, 0);
        crate::failpoint::hit("replace.before_journal");
        if let Err(error) =
            blocking(|| store.start_replacement(&name, old, &new_name, &reason, now))
        {
            tracing::error!(group = %name, %error, "cannot record the replacement: not replacing");
            return None;
        }
        crate::failpoint::hit("replace.after_journal");
        tracing::warn!(group = %name, droplet = old, replacement = %new_name, "{reason}; launching its replacement first");
        let mut decision = decision.clone();
        decision.desired = decision.current + 1;
        decision.direction = Some(Direction::Up);
        decision.victims = Vec::new();
        decision.steps.push(format!(
            "replace: droplet {old} {reason}: launching {new_name} to replace it (not a scale event)"
        ));
        let actions = self.runtime.group.actions.lists.up.clone();
        let report = TickReport {
            decision,
            ..report.clone()
        };
        Some(self.start_run(
            report,
            actions,
            Purpose::Replace {
                old,
                name: new_name,
            },
            RunKind::Replace { old },
        ))
    }

    /// Shows why unhealthy droplets wait (or nothing) in the group's status, logging each
    /// new reason once.
    fn note_replacement(&mut self, why: Option<String>) {
        if let Ok(mut status) = self.status.lock() {
            if why.is_some() && status.replacement != why {
                tracing::warn!(group = %self.runtime.group.name, "{}", why.as_deref().unwrap_or(""));
            }
            status.replacement = why;
        }
    }
}

/// Where the tick placed a droplet.
fn state_of(report: &TickReport, id: u64) -> Option<MemberState> {
    report.droplets.iter().find(|d| d.id == id).map(|d| d.state)
}

/// Whether the replacement's droplet was created (or maybe created) and the listing does not
/// show it yet: the tick reports those after the listed droplets.
fn is_pending(report: &TickReport, r: &Replacement) -> bool {
    report
        .droplets
        .iter()
        .skip(report.listing.len())
        .any(|d| d.name == r.new_name)
}
