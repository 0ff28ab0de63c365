//! What a tick settles before it decides to act, as the group's leader: its lease (and, on
//! becoming leader, the journal's reconciliation), what the listing settled of the in-flight
//! creates and deletes, droplets gone before any listing showed them, another daemon at work
//! on the same droplets, and fingerprint tags no droplet carries any more.

use super::{GroupTask, blocking};
use crate::api::metrics::Metrics;
use crate::daemon::tick::{InFlight, TickReport};
use crate::policy::MemoryStore;
use crate::state::Journal;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

impl GroupTask {
    /// Renews the group's lease (a shared state) and says whether this daemon leads it this
    /// tick. On becoming its leader, once any takeover wait is over, it reconciles the group's
    /// journal and reloads the group's memory before it decides anything.
    pub(super) async fn lead(&mut self) -> bool {
        let daemon = self.daemon.clone();
        let name = self.name().to_string();
        // A dry run never takes a lease: it would keep the real leader from acting.
        let role = if daemon.options.dry_run && daemon.store.is_shared() {
            crate::state::lease::Role::Follower {
                holder: "(a dry run takes no lease)".into(),
            }
        } else {
            blocking(|| daemon.leadership.renew(&name))
        };
        let labels = Metrics::group(&name);
        let leads = role == crate::state::lease::Role::Leader;
        daemon
            .metrics
            .leader
            .get_or_create(&labels)
            .set(i64::from(leads));
        if daemon.store.is_shared() {
            if role.holds() {
                daemon.metrics.lease_renewals.get_or_create(&labels).inc();
            } else if self.leads {
                daemon.metrics.lease_losses.get_or_create(&labels).inc();
            }
        }
        match &role {
            crate::state::lease::Role::Follower { holder } if self.reconciled || self.leads => {
                tracing::info!(group = %name, leader = %holder, "another daemon leads the group: following (list and scrape only)");
            }
            crate::state::lease::Role::TakingOver { from } => {
                tracing::info!(group = %name, old_leader = %from, "holding the group's lease; waiting out the old leader's last request before acting");
            }
            crate::state::lease::Role::Unknown { error } => {
                tracing::warn!(group = %name, %error, "cannot renew the group's lease: not acting this tick");
            }
            _ => {}
        }
        if let Ok(mut status) = self.status.lock() {
            status.leader = daemon
                .store
                .is_shared()
                .then(|| daemon.leadership.leader(&name))
                .flatten();
            status.leads = leads;
        }
        if !leads {
            self.reconciled = false;
            return false;
        }
        if !self.reconciled {
            crate::daemon::run::reconcile(&daemon, Some(&name)).await;
            self.memory = blocking(|| daemon.store.load(&name));
            self.reconciled = true;
        }
        true
    }

    /// Deletes the fingerprint tags (`[refresh]`) that the previous listing showed and this
    /// one does not: no droplet carries them any more. Not in a dry run; a delete that fails is
    /// tried again next tick.
    pub(super) async fn delete_unused_fingerprints(
        &mut self,
        client: &crate::digitalocean::Client,
        report: &TickReport,
    ) {
        if self.runtime.group.refresh.is_none() || self.daemon.options.dry_run {
            return;
        }
        let mut shown = crate::daemon::refresh::fingerprints_in(report);
        let unused: Vec<String> = self.fingerprints.difference(&shown).cloned().collect();
        // A DigitalOcean write like any other: sent only with room left on the lease.
        let client = client
            .clone()
            .with_write_gate(self.daemon.leadership.write_gate(self.name()));
        for tag in unused {
            match client.delete_tag(&tag).await {
                Ok(()) => {
                    tracing::info!(group = %self.name(), %tag, "no droplet carries this fingerprint tag any more: deleted it")
                }
                Err(error) => {
                    tracing::warn!(group = %self.name(), %tag, %error, "cannot delete an unused fingerprint tag: trying again next tick");
                    shown.insert(tag);
                }
            }
        }
        self.fingerprints = shown;
    }

    /// Pauses the group when its listing shows another daemon with this instance at work.
    pub(super) fn watch_for_another_daemon(
        &mut self,
        in_flight: &InFlight,
        report: &TickReport,
        now: DateTime<Utc>,
    ) {
        let daemon = &self.daemon;
        let name = self.runtime.group.name.clone();
        let ours = blocking(|| {
            daemon
                .store
                .intended_names(&name, daemon.started_at - chrono::TimeDelta::hours(1))
        })
        .unwrap_or_default();
        let expected = crate::daemon::conflict::Expected {
            managed_tag: &daemon.managed_tag,
            ours: &ours,
            deleted: &in_flight.deleting,
            started_at: daemon.started_at,
            now,
        };
        let Some(reason) = self.conflicts.check(&report.listing, &expected) else {
            return;
        };
        if blocking(|| daemon.store.pause_reason(&name)).is_some() {
            return;
        }
        tracing::error!(group = %name, "{reason}; the group is paused until an operator resumes it");
        if let Err(error) = blocking(|| daemon.store.pause_because(&name, &reason)) {
            tracing::error!(group = %name, %error, "cannot pause the group");
        }
        daemon
            .metrics
            .instance_conflict
            .get_or_create(&Metrics::group(&name))
            .set(1);
    }

    /// What the listing settled: deleted droplets that have left it are gone for good, and
    /// created ones it shows no longer need counting apart; those asked for with an unknown
    /// outcome and still not listed after [`crate::daemon::tick::UNLISTED_EXPIRY`] are taken as never made.
    pub(super) fn settle_in_flight(
        &self,
        in_flight: &InFlight,
        deleted: &BTreeSet<u64>,
        report: &TickReport,
        now: DateTime<Utc>,
    ) {
        let daemon = &self.daemon;
        let name = self.name();
        let listed: BTreeSet<u64> = report.listing.iter().map(|d| d.id).collect();
        let left: Vec<u64> = deleted.difference(&listed).copied().collect();
        if !left.is_empty() {
            let _ = blocking(|| daemon.store.forget_deleted(name, &left));
        }
        let listed_names: BTreeSet<&str> = report.listing.iter().map(|d| d.name.as_str()).collect();
        let pending: Vec<&str> = in_flight.pending(now).map(|u| u.name.as_str()).collect();
        let mut settled = Vec::new();
        for unlisted in &in_flight.unlisted {
            if listed_names.contains(unlisted.name.as_str()) {
                settled.push(unlisted.name.clone());
            } else if !pending.contains(&unlisted.name.as_str()) {
                tracing::warn!(
                    group = %name,
                    droplet = %unlisted.name,
                    "a droplet asked for at {} is still not listed: taken as never made",
                    unlisted.since.to_rfc3339()
                );
                settled.push(unlisted.name.clone());
            }
        }
        if !settled.is_empty() {
            let _ = blocking(|| daemon.store.forget_unlisted(name, &settled));
        }
    }

    /// Asks DigitalOcean about each droplet whose create was answered (so its id is known) and
    /// that no listing has shown although one could have (`listing_lag` has passed): one that
    /// is gone (deleted by someone, or its create failed after it was accepted) stops counting
    /// as booting now, instead of holding the group's size for [`crate::daemon::tick::UNLISTED_EXPIRY`].
    pub(super) async fn forget_vanished(
        &self,
        client: &crate::digitalocean::Client,
        in_flight: &InFlight,
        report: &TickReport,
        now: DateTime<Utc>,
    ) {
        let listed: BTreeSet<u64> = report.listing.iter().map(|d| d.id).collect();
        let lag = chrono::Duration::from_std(in_flight.listing_lag).unwrap_or_default();
        let overdue: Vec<(String, u64)> = in_flight
            .pending(now)
            .filter(|u| now - u.since >= lag)
            .filter_map(|u| u.id.map(|id| (u.name.clone(), id)))
            .filter(|(_, id)| !listed.contains(id))
            .collect();
        let mut gone = Vec::new();
        for (name, id) in overdue {
            if let Ok(None) = client.get_droplet(id).await {
                tracing::warn!(group = %self.name(), droplet = %name, id, "a droplet whose create was answered is gone before any listing showed it (deleted by someone, or its create failed): no longer counted as booting");
                gone.push(name);
            }
        }
        if !gone.is_empty() {
            let daemon = &self.daemon;
            let name = self.name();
            if let Err(error) = blocking(|| daemon.store.forget_unlisted(name, &gone)) {
                tracing::error!(group = %name, %error, "cannot forget vanished droplets");
            }
        }
    }
}
