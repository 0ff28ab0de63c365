//! The daemon's own Prometheus metrics, all prefixed `do_scaler_`: registered once, every
//! counter of a group present at 0 from its start, and rendered as OpenMetrics or as the
//! Prometheus text format, whichever the scraper asks for.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels as name/value pairs.
pub type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Ticks by group and result.
    pub ticks: Family<Labels, Counter>,
    /// Ticks skipped because the previous one overran.
    pub ticks_skipped: Family<Labels, Counter>,
    /// Tick duration by group.
    pub tick_duration: Family<Labels, Histogram>,
    /// Scrape failures by group and reason.
    pub scrape_failures: Family<Labels, Counter>,
    /// Decisions by group and direction.
    pub decisions: Family<Labels, Counter>,
    /// Actions by group, action and result.
    pub actions: Family<Labels, Counter>,
    /// Desired size by group.
    pub desired: Family<Labels, Gauge>,
    /// Actual size by group.
    pub actual: Family<Labels, Gauge>,
    /// Droplets draining before their destroy, by group (billed, not counted in the size).
    pub draining: Family<Labels, Gauge>,
    /// Unhealthy or stale droplets being replaced, by group (billed, not counted in the size).
    pub replacing: Family<Labels, Gauge>,
    /// Replacements ended, by group and result (replaced, failed, cancelled).
    pub replacements: Family<Labels, Counter>,
    /// 1 on the daemon that leads the group (always, on a SQLite state), 0 on the others.
    pub leader: Family<Labels, Gauge>,
    /// Lease renewals (and takings) by group: a leader renews once per tick.
    pub lease_renewals: Family<Labels, Counter>,
    /// Leases lost to another daemon, by group.
    pub lease_losses: Family<Labels, Counter>,
    /// 1 when a group is at max and its rules want more.
    pub at_max_wanting_more: Family<Labels, Gauge>,
    /// Consecutive failed scale-ups by group.
    pub action_failures: Family<Labels, Gauge>,
    /// Time of the last successful tick by group.
    pub last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    /// DigitalOcean API calls by method, endpoint and status (a counter, copied from the
    /// client's own counts, which survive reloads).
    pub api_calls: Family<Labels, Counter>,
    /// `ratelimit-remaining` as last reported.
    pub ratelimit_remaining: Gauge,
    /// The configuration generation in force.
    pub generation: Gauge,
    /// 1 when the last reload succeeded.
    pub reload_success: Gauge,
    /// Time of the last reload attempt.
    pub reload_time: Gauge<f64, AtomicU64>,
    /// 1 when a group is paused.
    pub paused: Family<Labels, Gauge>,
    /// Failed state database operations, by operation.
    pub state_errors: Family<Labels, Gauge>,
    /// 1 when a group stopped acting because another daemon with this instance acts on it.
    pub instance_conflict: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("do_scaler");
        let build_info: Family<Labels, Gauge> = Family::default();
        build_info
            .get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        registry.register("build_info", "Build information (always 1)", build_info);
        let metrics = Metrics {
            ticks: Family::default(),
            ticks_skipped: Family::default(),
            tick_duration: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            scrape_failures: Family::default(),
            decisions: Family::default(),
            actions: Family::default(),
            desired: Family::default(),
            actual: Family::default(),
            draining: Family::default(),
            replacing: Family::default(),
            replacements: Family::default(),
            leader: Family::default(),
            lease_renewals: Family::default(),
            lease_losses: Family::default(),
            at_max_wanting_more: Family::default(),
            action_failures: Family::default(),
            last_success: Family::default(),
            api_calls: Family::default(),
            ratelimit_remaining: Gauge::default(),
            generation: Gauge::default(),
            reload_success: Gauge::default(),
            reload_time: Gauge::default(),
            paused: Family::default(),
            state_errors: Family::default(),
            instance_conflict: Family::default(),
            registry: Registry::default(),
        };
        registry.register("ticks", "Ticks by group and result", metrics.ticks.clone());
        registry.register(
            "ticks_skipped",
            "Ticks skipped because the previous one overran",
            metrics.ticks_skipped.clone(),
        );
        registry.register(
            "tick_duration_seconds",
            "How long ticks take",
            metrics.tick_duration.clone(),
        );
        registry.register(
            "scrape_failures",
            "Droplets not scraped, by reason",
            metrics.scrape_failures.clone(),
        );
        registry.register(
            "decisions",
            "Decisions by direction",
            metrics.decisions.clone(),
        );
        registry.register("actions", "Actions run, by result", metrics.actions.clone());
        registry.register(
            "desired_size",
            "The size the last decision asked for",
            metrics.desired.clone(),
        );
        registry.register(
            "actual_size",
            "Droplets counting toward the size",
            metrics.actual.clone(),
        );
        registry.register(
            "draining_droplets",
            "Droplets draining before their destroy: billed, not counted in the size",
            metrics.draining.clone(),
        );
        registry.register(
            "replacing_droplets",
            "Droplets being replaced ([health], [refresh]): billed, not counted in the size",
            metrics.replacing.clone(),
        );
        registry.register(
            "leader",
            "1 on the daemon that leads the group (always with a SQLite state), 0 on the others",
            metrics.leader.clone(),
        );
        registry.register(
            "lease_renewals",
            "Lease renewals by the group's leader (one per tick; PostgreSQL state)",
            metrics.lease_renewals.clone(),
        );
        registry.register(
            "lease_losses",
            "Leases this daemon lost to another (PostgreSQL state)",
            metrics.lease_losses.clone(),
        );
        registry.register(
            "replacements",
            "Replacements ended, by result: replaced, failed or cancelled",
            metrics.replacements.clone(),
        );
        registry.register(
            "at_max_wanting_more",
            "1 when the group is at max and its rules want more",
            metrics.at_max_wanting_more.clone(),
        );
        registry.register(
            "consecutive_action_failures",
            "Scale-ups that failed in a row",
            metrics.action_failures.clone(),
        );
        registry.register(
            "last_successful_tick_timestamp_seconds",
            "When the group last ticked successfully",
            metrics.last_success.clone(),
        );
        registry.register(
            "digitalocean_api_calls",
            "DigitalOcean API calls by endpoint and status",
            metrics.api_calls.clone(),
        );
        registry.register(
            "digitalocean_ratelimit_remaining",
            "ratelimit-remaining as last reported",
            metrics.ratelimit_remaining.clone(),
        );
        registry.register(
            "config_generation",
            "The configuration generation in force",
            metrics.generation.clone(),
        );
        registry.register(
            "config_last_reload_success",
            "1 when the last reload succeeded",
            metrics.reload_success.clone(),
        );
        registry.register(
            "config_last_reload_timestamp_seconds",
            "When the configuration was last reloaded",
            metrics.reload_time.clone(),
        );
        registry.register(
            "group_paused",
            "1 when the group is paused",
            metrics.paused.clone(),
        );
        registry.register(
            "state_errors",
            "State database operations that failed, by operation (each is also logged)",
            metrics.state_errors.clone(),
        );
        registry.register(
            "instance_conflict",
            "1 when the group stopped acting because another daemon with this instance acts on it",
            metrics.instance_conflict.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The exposition text, in OpenMetrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The exposition for a scraper's `Accept` header: OpenMetrics when it asks for it, else
    /// the Prometheus text format (what `promtool check metrics` and older scrapers read).
    /// Returns the content type and the body.
    pub fn render_for(&self, accept: Option<&str>) -> (&'static str, String) {
        let openmetrics = self.render();
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                openmetrics,
            )
        } else {
            (
                "text/plain; version=0.0.4; charset=utf-8",
                openmetrics_to_text(&openmetrics),
            )
        }
    }

    /// Creates a group's counters at 0 (and its per-group gauges), so that `rate()` and
    /// `increase()` see their first increment and alerts see the series from the start:
    /// ticks by result, skipped ticks, decisions by direction, scrape failures by reason, and
    /// each configured action by result.
    pub fn register_group(&self, name: &str, actions: &[String]) {
        for result in ["ok", "failed"] {
            self.ticks
                .get_or_create(&Self::group_and(name, "result", result))
                .inc_by(0);
        }
        self.ticks_skipped
            .get_or_create(&Self::group(name))
            .inc_by(0);
        for direction in ["up", "down", "none"] {
            self.decisions
                .get_or_create(&Self::group_and(name, "direction", direction))
                .inc_by(0);
        }
        for reason in crate::metrics::scrape::MissingReason::KINDS {
            self.scrape_failures
                .get_or_create(&Self::group_and(name, "reason", reason))
                .inc_by(0);
        }
        for action in actions {
            for result in ["ok", "failed"] {
                self.actions
                    .get_or_create(&labels(&[
                        ("group", name),
                        ("action", action),
                        ("result", result),
                    ]))
                    .inc_by(0);
            }
        }
        let _ = self.tick_duration.get_or_create(&Self::group(name));
        // Gauges: created at 0 if new, never reset (a reload re-registers a running group).
        let _ = self.paused.get_or_create(&Self::group(name));
        let _ = self.action_failures.get_or_create(&Self::group(name));
        let _ = self.at_max_wanting_more.get_or_create(&Self::group(name));
        let _ = self.draining.get_or_create(&Self::group(name));
        let _ = self.replacing.get_or_create(&Self::group(name));
        let _ = self.leader.get_or_create(&Self::group(name));
        self.lease_renewals
            .get_or_create(&Self::group(name))
            .inc_by(0);
        self.lease_losses
            .get_or_create(&Self::group(name))
            .inc_by(0);
        for result in ["replaced", "failed", "cancelled"] {
            let _ = self
                .replacements
                .get_or_create(&Self::group_and(name, "result", result));
        }
    }

    /// Labels for a group.
    pub fn group(name: &str) -> Labels {
        labels(&[("group", name)])
    }

    /// Labels for a group and one more pair.
    pub fn group_and(name: &str, key: &str, value: &str) -> Labels {
        labels(&[("group", name), (key, value)])
    }

    /// Copies the state database's failure counts into the metrics.
    pub fn sync_state(&self, store: &crate::state::Store) {
        for (operation, count) in store.failures() {
            self.state_errors
                .get_or_create(&labels(&[("operation", operation)]))
                .set(count as i64);
        }
    }

    /// Copies the client's call counts and rate limit into the metrics.
    pub fn sync_api(&self, client: &crate::digitalocean::Client) {
        for ((method, endpoint, status), count) in client.call_counts() {
            let counter = self.api_calls.get_or_create(&labels(&[
                ("method", &method),
                ("endpoint", &endpoint),
                ("status", &status.to_string()),
            ]));
            let seen = counter.get();
            if count > seen {
                counter.inc_by(count - seen);
            }
        }
        if let Some(remaining) = client.rate_limit().remaining {
            self.ratelimit_remaining.set(remaining as i64);
        }
    }
}

/// OpenMetrics to the Prometheus text format 0.0.4: a counter family is named with its
/// `_total` suffix on its HELP and TYPE lines, `unknown` becomes `untyped`, and the `# UNIT`
/// and `# EOF` lines go (the sample lines are the same in both).
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("HELP", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("TYPE", rest)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                let tail = if kind == "TYPE" && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                out.push_str(&format!("# {kind} {name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_in_the_text_format() {
        let text = openmetrics_to_text(
            "# HELP do_scaler_ticks Ticks.\n# TYPE do_scaler_ticks counter\ndo_scaler_ticks_total{group=\"web\"} 0\n# HELP do_scaler_x X.\n# TYPE do_scaler_x gauge\ndo_scaler_x 1\n# EOF\n",
        );
        assert_eq!(
            text,
            "# HELP do_scaler_ticks_total Ticks.\n# TYPE do_scaler_ticks_total counter\ndo_scaler_ticks_total{group=\"web\"} 0\n# HELP do_scaler_x X.\n# TYPE do_scaler_x gauge\ndo_scaler_x 1\n"
        );
    }
}
