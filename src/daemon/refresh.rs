//! Which droplets `[refresh]` would replace at an instant, and why: healthy active droplets
//! made from an older template (their fingerprint tag is not the template's) or older than
//! `max_lifetime`. A droplet without a fingerprint tag (made before `[refresh]`, or by hand)
//! is taken as made from the current template: it is replaced only for its lifetime. The
//! daemon's replacements and `plan` read the same list.

use super::tick::TickReport;
use crate::config::Group;
use crate::config::refresh::{FINGERPRINT_PREFIX, fingerprint};
use crate::policy::MemberState;
use chrono::{DateTime, Utc};

/// A droplet a refresh would replace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stale {
    /// The droplet.
    pub id: u64,
    /// Why, in words.
    pub reason: String,
}

/// Whether refreshes may start at `now`: inside the window, when there is one.
pub fn window_open(group: &Group, now: DateTime<Utc>) -> bool {
    group
        .refresh
        .as_ref()
        .and_then(|r| r.window.as_ref())
        .is_none_or(|window| crate::policy::schedule::open_since(window, now).is_some())
}

/// The droplets `[refresh]` would replace, oldest first (empty without it). Only healthy,
/// active, managed and unprotected droplets: an unhealthy one is `[health]`'s.
pub fn stale(group: &Group, report: &TickReport, now: DateTime<Utc>) -> Vec<Stale> {
    let Some(refresh) = &group.refresh else {
        return Vec::new();
    };
    let current = fingerprint(&group.tag, &group.template);
    let mut found: Vec<(DateTime<Utc>, Stale)> = Vec::new();
    for droplet in &report.listing {
        let Some(shown) = report.droplets.iter().find(|d| d.id == droplet.id) else {
            continue;
        };
        let healthy = report.health.get(&droplet.id).is_some_and(|h| h.passed);
        if shown.state != MemberState::Active
            || shown.protected
            || !(shown.managed || group.allow_unmanaged)
            || !healthy
        {
            continue;
        }
        let tag = droplet
            .tags
            .iter()
            .find(|t| t.starts_with(FINGERPRINT_PREFIX));
        let age = now - droplet.created_at;
        let reason = match (tag, refresh.max_lifetime) {
            (Some(tag), _) if *tag != current => Some(format!(
                "refresh: made from an older template ({tag}; the template is now {current})"
            )),
            (_, Some(lifetime))
                if age > chrono::Duration::from_std(lifetime).unwrap_or(chrono::TimeDelta::MAX) =>
            {
                Some(format!(
                    "refresh: older than max_lifetime {}",
                    crate::config::duration::format_duration(lifetime)
                ))
            }
            _ => None,
        };
        if let Some(reason) = reason {
            found.push((
                droplet.created_at,
                Stale {
                    id: droplet.id,
                    reason,
                },
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    found.into_iter().map(|(_, stale)| stale).collect()
}

/// The fingerprint tags the listing shows.
pub fn fingerprints_in(report: &TickReport) -> std::collections::BTreeSet<String> {
    report
        .listing
        .iter()
        .flat_map(|d| d.tags.iter())
        .filter(|t| t.starts_with(FINGERPRINT_PREFIX))
        .cloned()
        .collect()
}
