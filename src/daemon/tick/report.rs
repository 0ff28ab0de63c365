//! What one tick saw and decided, as the daemon records it, `plan` shows it and the status API
//! serves it: each droplet's place, scrape and health, the decision, the sources, and the JSON
//! forms of all of it.

use super::super::sources::SourceReport;
use crate::digitalocean::Droplet;
use crate::policy::{Decision, MemberState, Work};
use serde::Serialize;
use std::collections::HashMap;

/// A droplet as a tick saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DropletReport {
    /// Droplet id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// API status.
    pub status: String,
    /// Where the decision counts it.
    pub state: MemberState,
    /// The scraped address, if any.
    pub address: Option<String>,
    /// Whether its metrics were read, or why not.
    pub scrape: String,
    /// Managed by this daemon.
    pub managed: bool,
    /// Protected from scale-in.
    pub protected: bool,
    /// Whether it is doing work, by the group's busy expressions.
    pub work: Work,
    /// Its health check (`[health]`): "ok", "failing 2/3: why", "in grace: why".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// What one tick saw and decided.
#[derive(Debug, Clone, Serialize)]
pub struct TickReport {
    /// The group.
    pub group: String,
    /// Every member.
    pub droplets: Vec<DropletReport>,
    /// The decision.
    pub decision: Decision,
    /// The actions that would run (or ran) for it.
    pub actions: Vec<String>,
    /// What each source gave.
    pub sources: Vec<SourceReport>,
    /// The listing the decision was made from (for the actions).
    #[serde(skip)]
    pub listing: Vec<Droplet>,
    /// Whether each draining droplet still works, by `drain.busy` on this tick's scrape of it
    /// (`None`: no value). Empty without `drain.busy`.
    #[serde(skip)]
    pub drain_busy: HashMap<u64, Option<bool>>,
    /// Each active droplet's health this tick (`[health]`); empty without it.
    #[serde(skip)]
    pub health: HashMap<u64, crate::daemon::health::HealthMark>,
    /// The droplets `[refresh]` would replace, oldest first (whether or not its window is
    /// open or it is paused); empty without it.
    pub stale: Vec<crate::daemon::refresh::Stale>,
    /// Where the tick's time went.
    pub timings: TickTimings,
}

/// Where one tick's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TickTimings {
    /// Listing the group (every page).
    pub list_ms: f64,
    /// Scraping the active droplets and recording their samples.
    pub scrape_ms: f64,
    /// Evaluating the rules and `scale_in.by`, and deciding.
    pub evaluate_ms: f64,
}

impl TickReport {
    /// The JSON form shown by `plan --json`, recorded in the state database and served by the
    /// status API.
    pub fn to_json(&self) -> serde_json::Value {
        self.json_with_droplets(serde_json::to_value(&self.droplets).unwrap_or_default())
    }

    /// The JSON form with `droplets` as given.
    fn json_with_droplets(&self, droplets: serde_json::Value) -> serde_json::Value {
        let mut json = self.json_core(droplets);
        if !self.stale.is_empty() {
            json["refresh"] = serde_json::to_value(&self.stale).unwrap_or_default();
        }
        json
    }

    fn json_core(&self, droplets: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "name": self.group,
            "current": self.decision.current,
            "desired": self.decision.desired,
            "decision": {
                "direction": self.decision.direction,
                "winner": self.decision.winner,
                "bounds": self.decision.bounds,
                "active": self.decision.active,
                "booting": self.decision.booting,
                "draining": self.decision.draining,
                "replacing": self.decision.replacing,
                "victims": self.decision.victims,
                "actions": self.actions,
                "steps": self.decision.steps,
                "summary": crate::policy::outcome_with_reason(
                    &self.decision.steps.iter().map(String::as_str).collect::<Vec<_>>()
                ),
                "at": self.decision.at,
            },
            "rules": self.decision.rules,
            "sources": self.sources,
            "droplets": droplets,
            "timings": self.timings,
        })
    }

    /// The report as the state database keeps it (the last thousand per group): like
    /// [`TickReport::to_json`], but of the droplets only those that were not read, were chosen
    /// to go, or are not active, with a count of the rest. A decision of a 1,000-droplet group
    /// stays a few KB instead of ~200 KB.
    pub fn to_record_json(&self) -> serde_json::Value {
        let notable: Vec<&DropletReport> = self
            .droplets
            .iter()
            .filter(|d| {
                d.scrape != "ok"
                    || d.state != MemberState::Active
                    || self.decision.victims.contains(&d.id)
            })
            .collect();
        let ok = self.droplets.len() - notable.len();
        let mut json = self.json_with_droplets(serde_json::to_value(notable).unwrap_or_default());
        json["droplets_ok"] = ok.into();
        json
    }
}
