//! The group's sample history: only the series the group's expressions select, each a short
//! ring of points, long enough for the longest range any expression uses plus headroom.
//! Memory grows with the selected series, not with the size of the expositions.
//!
//! Series are kept per [`Unit`], what one scrape fetches: a droplet's endpoint of one source,
//! or one URL of a `target` source. Staleness follows the unit, as in Prometheus, where it
//! follows the scrape target.

use super::exposition::{ParseError, parse_with};
use crate::query::{Labels, Selector, SeriesSource};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The labels every series of one scrape carries besides its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropletIdentity {
    /// DigitalOcean's droplet id; 0 for a `target` source's URL (no droplet).
    pub id: u64,
    /// The droplet's name ("" for a target).
    pub name: String,
    /// `address:port` that was scraped, as Prometheus's `instance`.
    pub instance: String,
    /// The source's name, carried as `source`.
    pub source: String,
}

/// What one scrape fetches, and so what goes stale together: a droplet's endpoint of one
/// source (`target` empty), or one URL of a `target` source (`droplet` 0, `target` its
/// instance).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Unit {
    /// The droplet, or 0.
    pub droplet: u64,
    /// The source's name.
    pub source: Box<str>,
    /// A target's instance, or "".
    pub target: Box<str>,
}

impl Unit {
    /// The unit a scrape with this identity fills.
    pub fn of(identity: &DropletIdentity) -> Unit {
        Unit {
            droplet: identity.id,
            source: identity.source.as_str().into(),
            target: if identity.id == 0 {
                identity.instance.as_str().into()
            } else {
                "".into()
            },
        }
    }

    /// The unit a kept series belongs to, from its droplet and labels.
    fn of_series(droplet: u64, labels: &Labels) -> Unit {
        Unit {
            droplet,
            source: labels.get("source").into(),
            target: if droplet == 0 {
                labels.get("instance").into()
            } else {
                "".into()
            },
        }
    }
}

/// One unit's series: labels to points (time in ms, value), oldest first.
type DropletSeries = HashMap<Labels, Vec<(i64, f64)>>;

/// The history of one group.
#[derive(Debug, Clone)]
pub struct History {
    selectors: Vec<Selector>,
    retention: Duration,
    max_points: usize,
    typical_points: usize,
    droplets: BTreeMap<Unit, DropletSeries>,
    /// Points added since [`History::take_new_points`] last ran: what the state database has
    /// not been given yet (it is appended to, never rewritten).
    new_points: Vec<NewPoint>,
}

/// A point added to the history: its droplet, series, time (ms) and value.
pub type NewPoint = (u64, Labels, i64, f64);

impl History {
    /// A history keeping the series `selectors` select, for `retention` (the longest range in
    /// use plus headroom), at most `max_points` points per series.
    pub fn new(selectors: Vec<Selector>, retention: Duration, max_points: usize) -> Self {
        History {
            selectors,
            retention,
            max_points: max_points.max(2),
            typical_points: 0,
            droplets: BTreeMap::new(),
            new_points: Vec::new(),
        }
    }

    /// Sizes each new series for `points` (the retention over the scrape interval) at once,
    /// rather than letting it grow by doubling to as much as twice that: at 1,000 droplets
    /// this is most of the history's memory.
    pub fn with_typical_points(mut self, points: usize) -> Self {
        self.typical_points = points.min(self.max_points);
        self
    }

    /// Replaces the selectors and retention (after a reload), dropping series no longer selected.
    pub fn reconfigure(
        &mut self,
        selectors: Vec<Selector>,
        retention: Duration,
        max_points: usize,
    ) {
        self.selectors = selectors;
        self.retention = retention;
        self.max_points = max_points.max(2);
        let selectors = &self.selectors;
        for series in self.droplets.values_mut() {
            series.retain(|labels, _| {
                selectors
                    .iter()
                    .any(|s| s.matches(labels.name(), |n| labels.get(n)))
            });
        }
    }

    /// Parses one scrape of `droplet` (or a target) taken at `at_ms` and records the selected
    /// samples. A malformed exposition records nothing and returns the parser's error.
    pub fn record(
        &mut self,
        droplet: &DropletIdentity,
        at_ms: i64,
        body: &str,
        source: &str,
    ) -> Result<usize, ParseError> {
        let id_text = droplet.id.to_string();
        let mut selected: Vec<(Labels, i64, f64)> = Vec::new();
        let selectors = &self.selectors;
        parse_with(body, source, |sample| {
            let label = |name: &str| -> &str {
                match name {
                    "droplet_id" if droplet.id != 0 => &id_text,
                    "droplet_name" if droplet.id != 0 => &droplet.name,
                    "instance" => &droplet.instance,
                    "source" => &droplet.source,
                    _ => sample
                        .labels
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.as_ref())
                        .unwrap_or(""),
                }
            };
            if !selectors.iter().any(|s| s.matches(sample.name, label)) {
                return;
            }
            let (id_label, name_label) = if droplet.id == 0 {
                ("", "")
            } else {
                (id_text.as_str(), droplet.name.as_str())
            };
            // An empty value removes the label, so a target's series carry no droplet labels
            // even when its exposition has them.
            let labels = Labels::new(sample.labels.iter().map(|(k, v)| (*k, v.as_ref())).chain([
                ("__name__", sample.name),
                ("droplet_id", id_label),
                ("droplet_name", name_label),
                ("instance", droplet.instance.as_str()),
                ("source", droplet.source.as_str()),
            ]));
            selected.push((labels, sample.timestamp_ms.unwrap_or(at_ms), sample.value));
        })?;
        let count = selected.len();
        let typical = self.typical_points;
        let series = self.droplets.entry(Unit::of(droplet)).or_default();
        // A series this scrape lacks goes stale now, as in Prometheus.
        let present: std::collections::HashSet<&Labels> =
            selected.iter().map(|(labels, _, _)| labels).collect();
        for (labels, points) in series.iter_mut() {
            if !present.contains(labels) && push_stale(points, at_ms) {
                self.new_points.push((
                    droplet.id,
                    labels.clone(),
                    at_ms,
                    crate::query::eval::STALE,
                ));
            }
        }
        drop(present);
        for (labels, t, value) in selected {
            let points = series
                .entry(labels.clone())
                .or_insert_with(|| Vec::with_capacity(typical));
            match points.last() {
                Some((last, _)) if *last >= t => {
                    // Same or older timestamp (a repeated exposition timestamp): keep the newest.
                    if *last == t
                        && let Some(point) = points.last_mut()
                    {
                        point.1 = value;
                    }
                }
                _ => {
                    points.push((t, value));
                    self.new_points.push((droplet.id, labels, t, value));
                }
            }
        }
        // Prune only this droplet's series here; the tick prunes the whole history once.
        let oldest = at_ms - self.retention.as_millis() as i64;
        prune_series(series, oldest, self.max_points);
        Ok(count)
    }

    /// Marks every series of a unit stale at `at_ms`: its scrape failed. Range functions
    /// still see its earlier samples.
    pub fn mark_stale(&mut self, unit: &Unit, at_ms: i64) {
        if let Some(series) = self.droplets.get_mut(unit) {
            for (labels, points) in series.iter_mut() {
                if push_stale(points, at_ms) {
                    self.new_points.push((
                        unit.droplet,
                        labels.clone(),
                        at_ms,
                        crate::query::eval::STALE,
                    ));
                }
            }
        }
    }

    /// Marks every series of a droplet, of every source, stale at `at_ms`: it was not scraped
    /// (not active any more).
    pub fn mark_droplet_stale(&mut self, id: u64, at_ms: i64) {
        let units: Vec<Unit> = self.units_of(id).cloned().collect();
        for unit in units {
            self.mark_stale(&unit, at_ms);
        }
    }

    fn units_of(&self, id: u64) -> impl Iterator<Item = &Unit> {
        let start = Unit {
            droplet: id,
            source: "".into(),
            target: "".into(),
        };
        self.droplets
            .range(start..)
            .map(|(unit, _)| unit)
            .take_while(move |unit| unit.droplet == id)
    }

    /// The points added since the last [`History::take_new_points`], oldest first, left in
    /// place (a recording reads them before the state database takes them).
    pub fn new_points(&self) -> &[NewPoint] {
        &self.new_points
    }

    /// The points added since the last call, oldest first, for the state database.
    pub fn take_new_points(&mut self) -> Vec<NewPoint> {
        std::mem::take(&mut self.new_points)
    }

    /// Puts back a series kept in the state database (a restart, `plan` beside the daemon),
    /// if it is still selected: its points in time order, before anything newer is recorded.
    /// Then [`History::prune`]. A series kept before sources existed carries no `source`: it
    /// was the droplets' own, and comes back as `source="droplets"`.
    pub fn restore_series(&mut self, id: u64, labels: Labels, mut kept: Vec<(i64, f64)>) {
        let labels = if labels.get("source").is_empty() {
            Labels::new(
                labels
                    .iter()
                    .chain([("source", crate::config::DROPLETS_SOURCE)]),
            )
        } else {
            labels
        };
        if !self
            .selectors
            .iter()
            .any(|s| s.matches(labels.name(), |n| labels.get(n)))
        {
            return;
        }
        kept.reserve(self.typical_points.saturating_sub(kept.len()));
        let points = self
            .droplets
            .entry(Unit::of_series(id, &labels))
            .or_default()
            .entry(labels)
            .or_default();
        if points.is_empty() {
            *points = kept;
        } else {
            let newest = points.last().map(|(t, _)| *t).unwrap_or(i64::MIN);
            points.extend(kept.into_iter().filter(|(t, _)| *t > newest));
        }
    }

    /// The droplets that have a current (not stale) sample of a series `selectors` select:
    /// those whose last scrape gave what a rule reads.
    pub fn fresh_droplets(&self, selectors: &[&Selector]) -> std::collections::HashSet<u64> {
        self.droplets
            .iter()
            .filter(|(unit, _)| unit.droplet != 0)
            .filter(|(_, series)| {
                series.iter().any(|(labels, points)| {
                    points
                        .last()
                        .is_some_and(|(_, v)| !crate::query::eval::is_stale(*v))
                        && selectors
                            .iter()
                            .any(|s| s.matches(labels.name(), |n| labels.get(n)))
                })
            })
            .map(|(unit, _)| unit.droplet)
            .collect()
    }

    /// Drops points older than the retention and series left empty.
    pub fn prune(&mut self, now_ms: i64) {
        let oldest = now_ms - self.retention.as_millis() as i64;
        for series in self.droplets.values_mut() {
            prune_series(series, oldest, self.max_points);
        }
        self.droplets.retain(|_, series| !series.is_empty());
    }

    /// Forgets every droplet not in `alive` (deleted droplets); targets stay.
    pub fn retain_droplets(&mut self, alive: &dyn Fn(u64) -> bool) {
        self.droplets
            .retain(|unit, _| unit.droplet == 0 || alive(unit.droplet));
    }

    /// Forgets one droplet, every source of it (a failed scrape keeps its older points; this
    /// is for removal).
    pub fn forget(&mut self, id: u64) {
        self.droplets.retain(|unit, _| unit.droplet != id);
    }

    /// How long points are kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Series and points held, for metrics and memory checks.
    pub fn size(&self) -> (usize, usize) {
        let series = self.droplets.values().map(HashMap::len).sum();
        let points = self
            .droplets
            .values()
            .flat_map(|s| s.values())
            .map(Vec::len)
            .sum();
        (series, points)
    }
}

impl SeriesSource for History {
    fn for_each_series(
        &self,
        selector: &Selector,
        visit: &mut crate::query::eval::SeriesVisitor<'_>,
    ) {
        for series in self.droplets.values() {
            for (labels, points) in series {
                if selector.matches(labels.name(), |n| labels.get(n)) {
                    visit(labels, points);
                }
            }
        }
    }
}

/// Appends a staleness marker unless the series is stale already (or has a point at `at_ms`);
/// returns whether it did.
fn push_stale(points: &mut Vec<(i64, f64)>, at_ms: i64) -> bool {
    match points.last() {
        Some((t, v)) if *t < at_ms && !crate::query::eval::is_stale(*v) => {
            points.push((at_ms, crate::query::eval::STALE));
            true
        }
        _ => false,
    }
}

/// Drops one droplet's points older than `oldest` or past `max_points`, and its empty series.
fn prune_series(series: &mut HashMap<Labels, Vec<(i64, f64)>>, oldest: i64, max_points: usize) {
    series.retain(|_, points| {
        let keep_from = points
            .partition_point(|(t, _)| *t < oldest)
            .max(points.len().saturating_sub(max_points));
        if keep_from > 0 {
            points.drain(..keep_from);
        }
        !points.is_empty()
    });
}

/// How long a history keeps points: the longest range plus two intervals and a minute.
pub fn retention_for(longest_range: Duration, interval: Duration) -> Duration {
    longest_range + interval * 2 + Duration::from_secs(60)
}

/// Points per series for that retention at that interval, with headroom for scrapes that run
/// more often than the interval (such as `plan --wait`).
pub fn points_for(retention: Duration, interval: Duration) -> usize {
    let per_interval = retention.as_secs_f64() / interval.as_secs_f64().max(0.001);
    (per_interval.ceil() as usize + 4).clamp(8, 100_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{EvalOptions, compile, evaluate};

    fn droplet(id: u64) -> DropletIdentity {
        DropletIdentity {
            id,
            name: format!("web-{id}"),
            instance: format!("10.0.0.{id}:9110"),
            source: "droplets".into(),
        }
    }

    fn history_for(expression: &crate::query::Expression) -> (History, ()) {
        let selectors = expression
            .node
            .selectors()
            .into_iter()
            .map(|(s, _)| s.clone())
            .collect();
        (History::new(selectors, Duration::from_secs(300), 100), ())
    }

    fn history(expr: &str) -> (History, crate::query::Expression) {
        let expression = compile(expr).unwrap();
        let selectors = expression
            .node
            .selectors()
            .into_iter()
            .map(|(s, _)| s.clone())
            .collect();
        (
            History::new(selectors, Duration::from_secs(300), 100),
            expression,
        )
    }

    /// A history sized as the product sizes it: the longest range plus headroom.
    fn product_history(expr: &str) -> (History, crate::query::Expression) {
        let expression = compile(expr).unwrap();
        let selectors = expression
            .node
            .selectors()
            .into_iter()
            .map(|(s, _)| s.clone())
            .collect();
        let retention = retention_for(expression.longest_range(), Duration::from_secs(5));
        let points = points_for(retention, Duration::from_secs(1));
        (History::new(selectors, retention, points), expression)
    }

    #[test]
    fn keeps_only_selected_series_with_droplet_labels() {
        let (mut history, _) = history(r#"rate(cpu{mode="idle"}[1m])"#);
        let body = "cpu{mode=\"idle\"} 1\ncpu{mode=\"user\"} 2\nmemory 3\n";
        assert_eq!(history.record(&droplet(7), 1000, body, "t").unwrap(), 1);
        let selector = compile("cpu").unwrap().node.selectors()[0].0.clone();
        let mut seen = Vec::new();
        history.for_each_series(&selector, &mut |labels, points| {
            seen.push((labels.to_string(), points.to_vec()))
        });
        assert_eq!(seen, [("cpu{droplet_id=\"7\", droplet_name=\"web-7\", instance=\"10.0.0.7:9110\", mode=\"idle\", source=\"droplets\"}".to_string(), vec![(1000, 1.0)])]);
    }

    #[test]
    fn sources_go_stale_on_their_own_and_old_series_come_back_as_the_droplets_source() {
        let (mut history, _) = super::tests::history("app_jobs");
        let app = DropletIdentity {
            source: "app".into(),
            instance: "10.0.0.7:8080".into(),
            ..droplet(7)
        };
        let queue = DropletIdentity {
            id: 0,
            name: String::new(),
            instance: "ci.example.com:443".into(),
            source: "drone".into(),
        };
        history
            .record(&droplet(7), 1000, "app_jobs 1\n", "t")
            .unwrap();
        history.record(&app, 1000, "app_jobs 2\n", "t").unwrap();
        history
            .record(&queue, 1000, "app_jobs{droplet_id=\"9\"} 3\n", "t")
            .unwrap();
        // The target's series carries no droplet labels, even ones its exposition had.
        let selector = compile("app_jobs").unwrap().node.selectors()[0].0.clone();
        let mut seen = Vec::new();
        history.for_each_series(&selector, &mut |labels, _| seen.push(labels.to_string()));
        assert!(
            seen.contains(
                &"app_jobs{instance=\"ci.example.com:443\", source=\"drone\"}".to_string()
            ),
            "{seen:?}"
        );
        // The app endpoint failing makes only its series stale.
        history.mark_stale(&Unit::of(&app), 2000);
        let fresh = history.fresh_droplets(&[&selector]);
        assert!(fresh.contains(&7), "the droplets source is still fresh");
        history.mark_droplet_stale(7, 3000);
        assert!(
            history.fresh_droplets(&[&selector]).is_empty(),
            "targets are no droplet"
        );
        // A series kept before sources existed is the droplets source's.
        let (mut restored, _) = super::tests::history("app_jobs");
        let old = Labels::new([("__name__", "app_jobs"), ("droplet_id", "7")]);
        restored.restore_series(7, old, vec![(1000, 1.0)]);
        let mut seen = Vec::new();
        restored.for_each_series(&selector, &mut |labels, _| {
            seen.push(labels.get("source").to_string())
        });
        assert_eq!(seen, ["droplets"]);
    }

    #[test]
    fn new_points_are_handed_over_once_and_restore_in_order() {
        let (mut history, expression) = history("rate(counter[1m])");
        history.record(&droplet(1), 0, "counter 1\n", "t").unwrap();
        history
            .record(&droplet(1), 15_000, "counter 4\n", "t")
            .unwrap();
        history.mark_droplet_stale(1, 30_000);
        let new = history.take_new_points();
        assert_eq!(new.len(), 3, "two samples and a staleness marker");
        assert!(history.take_new_points().is_empty(), "handed over once");
        let (mut restored, _) = history_for(&expression);
        let mut by_series: std::collections::BTreeMap<(u64, Labels), Vec<(i64, f64)>> =
            Default::default();
        for (id, labels, t, v) in new {
            by_series.entry((id, labels)).or_default().push((t, v));
        }
        for ((id, labels), points) in by_series {
            restored.restore_series(id, labels, points);
        }
        assert_eq!(restored.size(), history.size());
        assert!(
            restored.take_new_points().is_empty(),
            "a restore is not new"
        );
    }

    #[test]
    fn a_malformed_scrape_records_nothing() {
        let (mut history, _) = history("x");
        assert!(
            history
                .record(&droplet(1), 1000, "x 1\nx{ 2\n", "http://a/metrics")
                .is_err()
        );
        assert_eq!(history.size(), (0, 0));
    }

    #[test]
    fn old_points_and_gone_droplets_are_dropped() {
        let (mut history, _) = history("x");
        for i in 0..100 {
            history
                .record(&droplet(1), i * 10_000, &format!("x {i}"), "t")
                .unwrap();
            history
                .record(&droplet(2), i * 10_000, &format!("x {i}"), "t")
                .unwrap();
        }
        let (series, points) = history.size();
        assert_eq!(series, 2);
        assert_eq!(points, 2 * 31, "300 s of retention at 10 s spacing");
        history.retain_droplets(&|id| id == 2);
        assert_eq!(history.size().0, 1);
    }

    #[test]
    fn a_2m_rule_has_a_value_on_every_tick_after_two_minutes_at_a_30s_tick() {
        let (mut history, expression) = history("rate(counter[2m])");
        for tick in 0..20i64 {
            let at = tick * 30_000;
            history
                .record(&droplet(1), at, &format!("counter {}", tick * 60), "t")
                .unwrap();
            let outcome = evaluate(&expression.node, &history, at, EvalOptions::default()).unwrap();
            if at >= 120_000 {
                let value = outcome
                    .single()
                    .unwrap_or_else(|| panic!("no value at {at}: {outcome:?}"));
                assert!((value - 2.0).abs() < 1e-9, "{value}");
            } else if at < 90_000 {
                assert!(outcome.single().is_none(), "warming at {at}: {outcome:?}");
            }
        }
    }

    #[test]
    fn a_15s_range_scraped_every_5s_is_covered() {
        let (mut history, expression) = history("rate(counter[15s])");
        for tick in 0..10i64 {
            let at = tick * 5_000;
            history
                .record(&droplet(1), at, &format!("counter {}", tick * 5), "t")
                .unwrap();
            let outcome = evaluate(&expression.node, &history, at, EvalOptions::default()).unwrap();
            if tick >= 3 {
                assert!((outcome.single().unwrap() - 1.0).abs() < 1e-9);
            }
        }
    }

    /// Issue 17: at several spacings and ranges, with jittered scrape times, the first value a
    /// rate rule gives is the truth (no under-read first value), and once a window is covered
    /// it stays covered while scrapes succeed.
    #[test]
    fn the_first_rate_is_the_truth_and_coverage_never_flips_back() {
        let mut rng = fastrand::Rng::with_seed(17);
        for spacing_s in [5i64, 15, 30, 60] {
            for range_s in [30i64, 60, 120, 300] {
                if range_s < 2 * spacing_s {
                    continue;
                }
                let expr = format!("rate(counter[{range_s}s])");
                let (mut history, expression) = product_history(&expr);
                let slope = 0.5; // per second
                let mut first_value_at = None;
                for tick in 0..(range_s / spacing_s * 3 + 4) {
                    // Up to ±10 % of the spacing of jitter on every scrape.
                    let jitter = rng.i64(-(spacing_s * 100)..=(spacing_s * 100));
                    let at = tick * spacing_s * 1000 + jitter + 1_000_000;
                    let value = 1000.0 + slope * (at as f64 / 1000.0);
                    history
                        .record(&droplet(1), at, &format!("counter {value}"), "t")
                        .unwrap();
                    let outcome =
                        evaluate(&expression.node, &history, at, EvalOptions::default()).unwrap();
                    match (outcome.single(), first_value_at) {
                        (Some(rate), None) => {
                            assert!(
                                (rate - slope).abs() < 1e-9,
                                "{expr} at {spacing_s}s spacing: the first value, at tick {tick}, is {rate}, not {slope}"
                            );
                            first_value_at = Some(tick);
                        }
                        (Some(rate), Some(_)) => {
                            // Later windows may start up to 1.2 spacings before their first
                            // sample (jitter); Prometheus then extrapolates half a spacing, and
                            // so does do-scaler: close to the truth, and never missing.
                            // At most 0.7 spacings of the range go unextrapolated.
                            let bound = slope * 0.7 * spacing_s as f64 / range_s as f64;
                            assert!(
                                (rate - slope).abs() <= bound + 1e-9,
                                "{expr} at {spacing_s}s spacing, tick {tick}: {rate}"
                            );
                        }
                        (None, Some(first)) => panic!(
                            "{expr} at {spacing_s}s spacing: covered at tick {first}, warming again at tick {tick}: {outcome:?}"
                        ),
                        (None, None) => {}
                    }
                }
                let first = first_value_at.unwrap_or_else(|| panic!("{expr}: never covered"));
                // It takes about the range to fill, and not much more.
                assert!(
                    first <= range_s / spacing_s + 2,
                    "{expr} at {spacing_s}s spacing: first value only at tick {first}"
                );
            }
        }
    }

    #[test]
    fn a_missing_series_and_a_failed_scrape_go_stale_but_ranges_keep_the_past() {
        let (mut history, _) = product_history("up");
        let instant = crate::query::compile("up").unwrap();
        let range = crate::query::compile("count_over_time(up[30s])").unwrap();
        let value = |history: &History, expression: &crate::query::Expression, at| {
            evaluate(&expression.node, history, at, EvalOptions::default())
                .unwrap()
                .single()
        };
        history
            .record(&droplet(1), 0, "up{a=\"1\"} 1\nup{a=\"2\"} 1\n", "t")
            .unwrap();
        history
            .record(&droplet(1), 15_000, "up{a=\"1\"} 1\n", "t")
            .unwrap();
        // The series missing from the second scrape has no instant value any more.
        let at_15 = evaluate(&instant.node, &history, 15_000, EvalOptions::default()).unwrap();
        assert_eq!(
            at_15.single(),
            Some(1.0),
            "one series left, not two: {at_15:?}"
        );
        // A failed scrape makes every series stale; the range still counts what was there.
        history.mark_droplet_stale(1, 30_000);
        assert_eq!(value(&history, &instant, 30_000), None);
        let counted = evaluate(&range.node, &history, 30_000, EvalOptions::default()).unwrap();
        assert!(
            matches!(counted, crate::query::Outcome::Value(_)),
            "{counted:?}"
        );
        assert!(
            history
                .fresh_droplets(&[instant.node.selectors()[0].0])
                .is_empty()
        );
    }
}
