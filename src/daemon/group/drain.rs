//! Draining before destroy (`[drain]`), driven by ticks from journaled state: a scale-down
//! records its victims as draining and runs the drain actions; each later tick destroys the
//! droplets whose drain is over (not busy any more, or timed out with `on_timeout =
//! "destroy"`), returns to service those timed out with `"keep"`, runs the drain actions
//! again for droplets whose drain actions did not succeed (after a failure or a restart),
//! and forgets the droplets that left the listing. A scale-up returns draining droplets to
//! service before anything is created. No step waits inside a tick: a drain never blocks the
//! group's next run, and a restart resumes it where the state database left it.

use super::{GroupTask, RunKind, blocking};
use crate::config::drain::OnTimeout;
use crate::daemon::tick::TickReport;
use crate::policy::Direction;
use crate::script::runner::Purpose;

impl GroupTask {
    /// A scale-down with `[drain]`: journals the victims as draining, then runs the drain
    /// actions for them (when there are any). The cooldown after a scale-down starts now.
    pub(super) fn start_draining(&mut self, report: TickReport) -> bool {
        let Some(drain) = self.runtime.group.drain.clone() else {
            return false;
        };
        let victims = report.decision.victims.clone();
        if victims.is_empty() {
            return false;
        }
        let daemon = self.daemon.clone();
        let name = self.name().to_string();
        let now = daemon.clock.now();
        let deadline = now + chrono::Duration::from_std(drain.timeout).unwrap_or_default();
        crate::failpoint::hit("drain.before_journal");
        let prepared = drain.actions.is_empty();
        if let Err(error) = blocking(|| {
            daemon
                .store
                .start_drain(&name, &victims, now, deadline, prepared)
        }) {
            tracing::error!(group = %name, %error, "cannot record the drain: not scaling down");
            return false;
        }
        crate::failpoint::hit("drain.after_journal");
        tracing::info!(group = %name, droplets = ?victims, "draining before destroy");
        self.memory.scaled(Direction::Down, now);
        if prepared {
            return false;
        }
        self.start_run(
            report,
            drain.actions,
            Purpose::Drain,
            RunKind::Drain(victims),
        )
    }

    /// Marks the drain actions of `ids` as done (their run succeeded).
    pub(super) fn drains_prepared(&mut self, ids: &[u64]) {
        let name = self.name().to_string();
        let store = self.daemon.store.clone();
        if let Err(error) = blocking(|| store.drain_prepared(&name, ids)) {
            tracing::error!(group = %name, %error, "cannot record that the drain actions ran: they will run again");
        }
    }

    /// A scale-up while droplets drain: returns the most recently drained ones to service,
    /// as many as the scale-up wants (they count again from the next tick, whose decision
    /// creates what is still missing), and runs the return actions for them. `None` when none
    /// is left to return.
    pub(super) fn return_for_scale_up(&mut self, report: &TickReport) -> Option<bool> {
        let wanted = report
            .decision
            .desired
            .saturating_sub(report.decision.current) as usize;
        // A replaced droplet drains because it is unhealthy: it never returns to service.
        let back: Vec<u64> = self
            .drains
            .iter()
            .rev()
            .filter(|d| !self.replacements.iter().any(|r| r.old == d.id))
            .take(wanted)
            .map(|d| d.id)
            .collect();
        if back.is_empty() {
            return None;
        }
        Some(self.return_to_service(report, back, "a scale-up wants them"))
    }

    /// Forgets the drains of droplets that left the listing (destroyed, by us or anyone), and
    /// returns to service those an operator protected meanwhile (the protect tag wins: they
    /// are never destroyed).
    pub(super) fn forget_gone_drains(&mut self, report: &TickReport) {
        let daemon = self.daemon.clone();
        let name = self.name().to_string();
        let protect_tag = self.runtime.group.protect_tag.clone();
        let listed: std::collections::HashMap<u64, bool> = report
            .listing
            .iter()
            .map(|d| (d.id, d.has_tag(&protect_tag)))
            .collect();
        let gone: Vec<u64> = self
            .drains
            .iter()
            .filter(|d| !listed.contains_key(&d.id))
            .map(|d| d.id)
            .collect();
        let protected: Vec<u64> = self
            .drains
            .iter()
            .filter(|d| listed.get(&d.id) == Some(&true))
            .map(|d| d.id)
            .collect();
        if !protected.is_empty() {
            tracing::warn!(group = %name, droplets = ?protected, "protected while draining (`{protect_tag}`): returned to service, never destroyed");
        }
        let ended: Vec<u64> = gone.into_iter().chain(protected).collect();
        if !ended.is_empty() {
            let _ = blocking(|| daemon.store.end_drain(&name, &ended));
            self.drains.retain(|d| !ended.contains(&d.id));
        }
    }

    /// Ends the drains of `ids` and runs the return actions for them.
    fn return_to_service(&mut self, report: &TickReport, ids: Vec<u64>, why: &str) -> bool {
        if ids.is_empty() {
            return false;
        }
        let name = self.name().to_string();
        let store = self.daemon.store.clone();
        if let Err(error) = blocking(|| store.end_drain(&name, &ids)) {
            tracing::error!(group = %name, %error, "cannot return draining droplets to service");
            return false;
        }
        tracing::info!(group = %name, droplets = ?ids, "returned to service: {why}");
        let actions = self
            .runtime
            .group
            .drain
            .as_ref()
            .map(|d| d.return_actions.clone())
            .unwrap_or_default();
        if actions.is_empty() {
            return false;
        }
        let mut decision = report.decision.clone();
        decision.victims = ids;
        let report = TickReport {
            decision,
            ..report.clone()
        };
        self.start_run(report, actions, Purpose::Return, RunKind::Return)
    }

    /// Carries drains on by one step: runs the drain actions again where they did not
    /// succeed, returns timed-out droplets under `"keep"`, and destroys the drained ones.
    /// `None` when no drain needed a step this tick.
    pub(super) fn carry_on_draining(&mut self, report: &TickReport) -> Option<bool> {
        let daemon = self.daemon.clone();
        let name = self.name().to_string();
        let now = daemon.clock.now();
        // A drain configuration removed by a reload: what still drains is destroyed now.
        let drain = self.runtime.group.drain.clone();
        let unprepared: Vec<u64> = self
            .drains
            .iter()
            .filter(|d| !d.prepared)
            .map(|d| d.id)
            .collect();
        if let Some(drain) = &drain
            && !unprepared.is_empty()
        {
            if drain.actions.is_empty() {
                self.drains_prepared(&unprepared);
                self.drains.iter_mut().for_each(|d| d.prepared = true);
            } else {
                tracing::info!(group = %name, droplets = ?unprepared, "running the drain actions again");
                let mut decision = report.decision.clone();
                decision.victims = unprepared.clone();
                let report = TickReport {
                    decision,
                    ..report.clone()
                };
                let actions = drain.actions.clone();
                return Some(self.start_run(
                    report,
                    actions,
                    Purpose::Drain,
                    RunKind::Drain(unprepared),
                ));
            }
        }
        let mut ready = Vec::new();
        let mut keep = Vec::new();
        // Without `[drain]` any more (a reload removed it), every drain is over.
        for d in self.drains.iter().filter(|d| d.prepared || drain.is_none()) {
            let timed_out = now >= d.deadline;
            let drained = match drain.as_ref().and_then(|c| c.busy.as_ref()) {
                None => true,
                Some(_) => report.drain_busy.get(&d.id) == Some(&Some(false)),
            };
            let replaced = self.replacements.iter().any(|r| r.old == d.id);
            let on_timeout = match drain.as_ref() {
                // An unhealthy droplet is never kept: its replacement serves already.
                Some(c) if !replaced => c.on_timeout,
                _ => OnTimeout::Destroy,
            };
            if drained || (timed_out && on_timeout == OnTimeout::Destroy) {
                if !drained {
                    tracing::warn!(group = %name, droplet = d.id, "drain timed out while the droplet still works: destroying it (on_timeout = \"destroy\")");
                }
                ready.push(d.id);
            } else if timed_out {
                keep.push(d.id);
            }
        }
        if !keep.is_empty() {
            return Some(self.return_to_service(
                report,
                keep,
                "the drain timed out while they still work (on_timeout = \"keep\")",
            ));
        }
        if ready.is_empty() {
            return None;
        }
        Some(self.destroy_drained(report, ready))
    }

    /// Destroys drained droplets with the group's `down` actions: a decision from the size
    /// with them (they are billed) to the size without them.
    fn destroy_drained(&mut self, report: &TickReport, ready: Vec<u64>) -> bool {
        let mut decision = report.decision.clone();
        let count = ready.len() as u32;
        decision.current += count;
        decision.desired = report.decision.current;
        decision.draining = decision.draining.saturating_sub(count);
        decision.direction = Some(Direction::Down);
        decision.victims = ready.clone();
        decision.steps.push(format!(
            "drain: {} droplet(s) drained ({}): destroying",
            count,
            ready
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        tracing::info!(group = %self.name(), droplets = ?ready, "drained: destroying");
        let actions = self.runtime.group.actions.lists.down.clone();
        let report = TickReport {
            decision,
            ..report.clone()
        };
        self.start_run(report, actions, Purpose::Decision, RunKind::Destroy(ready))
    }
}
