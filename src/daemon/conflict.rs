//! Noticing a second daemon with the same `instance` on a group. Two such daemons (separate
//! state files, one managed-by tag) both act: each creates what the other already made and
//! deletes what the other counts on. Each daemon therefore watches its group's listings for
//! what only another writer explains:
//!
//! - a droplet carrying this daemon's managed-by tag, created after this daemon started, under
//!   a name this daemon's journal never asked for: evidence enough at once;
//! - droplets carrying the tag that vanish without this daemon deleting them: a human may
//!   delete one by hand, so two within [`VANISH_WINDOW`] are needed.
//!
//! Either stops the group from acting (a pause with the reason, kept across restarts) until an
//! operator resumes it.

use crate::digitalocean::Droplet;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// Two droplets vanishing unexplained within this long point to another daemon.
pub const VANISH_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// What one group's listings looked like, for the next comparison.
#[derive(Debug, Default)]
pub struct ConflictWatch {
    previous: Option<BTreeMap<u64, String>>,
    vanished: Vec<DateTime<Utc>>,
}

/// What a listing is compared with.
pub struct Expected<'a> {
    /// The daemon's managed-by tag.
    pub managed_tag: &'a str,
    /// Names this daemon's journal asked to create.
    pub ours: &'a BTreeSet<String>,
    /// Droplets this daemon deleted or is deleting.
    pub deleted: &'a BTreeSet<u64>,
    /// When this daemon started.
    pub started_at: DateTime<Utc>,
    /// Now.
    pub now: DateTime<Utc>,
}

impl ConflictWatch {
    /// Compares a listing with what this daemon did; the reason to stop acting, if any.
    pub fn check(&mut self, listing: &[Droplet], expected: &Expected<'_>) -> Option<String> {
        let managed: BTreeMap<u64, String> = listing
            .iter()
            .filter(|d| d.has_tag(expected.managed_tag))
            .map(|d| (d.id, d.name.clone()))
            .collect();
        let foreign = listing.iter().find(|d| {
            d.has_tag(expected.managed_tag)
                && d.created_at >= expected.started_at
                && !expected.ours.contains(&d.name)
        });
        let mut reason = foreign.map(|d| {
            format!(
                "droplet {} ({}) carries `{}` and was created after this daemon started, but this daemon never asked for it",
                d.name, d.id, expected.managed_tag
            )
        });
        if let Some(previous) = &self.previous {
            for (id, name) in previous {
                if !managed.contains_key(id) && !expected.deleted.contains(id) {
                    tracing::warn!(droplet = %name, id, "a managed droplet vanished without this daemon deleting it");
                    self.vanished.push(expected.now);
                }
            }
        }
        self.vanished
            .retain(|at| expected.now - *at <= VANISH_WINDOW);
        if reason.is_none() && self.vanished.len() >= 2 {
            reason = Some(format!(
                "{} droplets carrying `{}` vanished within {} minutes without this daemon deleting them",
                self.vanished.len(),
                expected.managed_tag,
                VANISH_WINDOW.num_minutes()
            ));
        }
        self.previous = Some(managed);
        reason.map(|evidence| {
            format!(
                "another daemon with the same instance seems to act on this group: {evidence}. Two daemons with one instance fight (each creates what the other made, each deletes what the other counts on). Stop the other daemon or give each its own `instance`, then resume this group"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn droplet(id: u64, name: &str, minutes_ago: i64, now: DateTime<Utc>) -> Droplet {
        let mut value: serde_json::Value = serde_json::json!({
            "id": id, "name": name, "memory": 1024, "vcpus": 1, "disk": 25, "locked": false,
            "status": "active", "created_at": (now - chrono::TimeDelta::minutes(minutes_ago)).to_rfc3339(),
            "features": [], "backup_ids": [], "next_backup_window": null, "snapshot_ids": [],
            "image": {}, "volume_ids": [], "size": {}, "size_slug": "s-1vcpu-1gb",
            "networks": { "v4": [], "v6": [] },
            "region": { "slug": "nyc3", "name": "nyc3", "sizes": [], "available": true, "features": [] },
            "tags": ["web", "do-scaler:default"], "vpc_uuid": null
        });
        value["id"] = id.into();
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_foreign_create_or_two_unexplained_deletes_are_a_conflict() {
        let now = Utc::now();
        let ours: BTreeSet<String> = ["web-a".to_string()].into();
        let deleted = BTreeSet::new();
        let expected = |now| Expected {
            managed_tag: "do-scaler:default",
            ours: &ours,
            deleted: &deleted,
            started_at: now - chrono::TimeDelta::minutes(30),
            now,
        };
        let mut watch = ConflictWatch::default();
        // Old droplets and our own new one: fine.
        let listing = vec![droplet(1, "web-old", 60, now), droplet(2, "web-a", 1, now)];
        assert_eq!(watch.check(&listing, &expected(now)), None);
        // A new one nobody here asked for.
        let mut with_foreign = listing.clone();
        with_foreign.push(droplet(3, "web-b", 0, now));
        assert!(watch.check(&with_foreign, &expected(now)).is_some());
        // One vanishing (a human, perhaps) is not enough; a second within minutes is.
        let mut watch = ConflictWatch::default();
        let three = vec![
            droplet(1, "web-old", 60, now),
            droplet(4, "web-old2", 60, now),
            droplet(5, "web-old3", 60, now),
        ];
        assert_eq!(watch.check(&three, &expected(now)), None);
        assert_eq!(watch.check(&three[..2], &expected(now)), None);
        let later = now + chrono::TimeDelta::minutes(1);
        assert!(watch.check(&three[..1], &expected(later)).is_some());
    }
}
