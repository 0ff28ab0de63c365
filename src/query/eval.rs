//! Evaluating a compiled expression over sample history at one instant, with Prometheus's
//! semantics (those of Prometheus 2.x, whose `promtool` produced the golden values): closed
//! range windows, extrapolated `rate`/`increase`/`delta`, counter resets, one-to-one vector
//! matching.
//!
//! Staleness is Prometheus's: a series missing from its target's scrape, and every series of a
//! target whose scrape failed, get a staleness marker ([`STALE`]); an instant selector finds no
//! value past a marker, range functions skip markers and still see the earlier samples.
//!
//! One difference on purpose: a range function over a window the history does not yet cover
//! gives no value ("warming") instead of an under-read one. Coverage follows what Prometheus
//! needs to extrapolate a window all the way to its start:
//!
//! - `rate`, `increase`, `delta` and the `*_over_time` aggregates (`avg`, `min`, `max`, `sum`,
//!   `count`): the window's first sample lies less than 1.1 average sample spacings after the
//!   window's start, or the series has a sample before the window (so it stays covered while
//!   scrapes keep succeeding, whatever the jitter);
//! - `irate`: two samples in the window;
//! - `last_over_time`: one sample.

use super::QueryError;
use super::compile::{
    Aggregation, BinaryOp, Function, Grouping, Matching, Node, RangeFunction, Selector,
};
use super::labels::Labels;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// The word that marks a missing value as warming (a range not yet covered) in reasons.
pub const WARMING: &str = "warming";

/// One sample in time: milliseconds since the epoch and the value.
pub type Point = (i64, f64);

/// Prometheus's staleness marker: a NaN with its own bit pattern (`0x7ff0000000000002`), never
/// produced by arithmetic or by parsing `NaN`.
pub const STALE: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// Whether a value is the staleness marker (not any NaN).
pub fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE.to_bits()
}

/// What a [`SeriesSource`] calls for each series: its labels and its points in time order.
pub type SeriesVisitor<'a> = dyn FnMut(&Labels, &[Point]) + 'a;

/// Where series come from (the sample history, or captures for `do-scaler query`).
pub trait SeriesSource {
    /// Calls `visit` with every series `selector` selects: its labels (`__name__` included) and
    /// its points `(milliseconds, value)` in time order.
    fn for_each_series(&self, selector: &Selector, visit: &mut SeriesVisitor<'_>);
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

/// An evaluated value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// An instant vector.
    Vector(Vec<Sample>),
}

/// What an expression gave: a value, a comparison that is false, or nothing for lack of data.
/// The three stay apart: a false comparison is never mistaken for missing data.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A scalar, or a vector with at least one element.
    Value(Value),
    /// A filtering comparison whose operands had data but no element passed.
    False(String),
    /// No data: no series, or only series still warming. The reason says which.
    Missing(String),
}

impl Outcome {
    /// The single number of a scalar or one-element vector.
    pub fn single(&self) -> Option<f64> {
        match self {
            Outcome::Value(Value::Scalar(v)) => Some(*v),
            Outcome::Value(Value::Vector(samples)) if samples.len() == 1 => Some(samples[0].value),
            _ => None,
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5 minutes).
    pub lookback: Duration,
    /// Whether range functions need a covered window (the product: yes).
    pub require_coverage: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            lookback: Duration::from_secs(300),
            require_coverage: true,
        }
    }
}

struct Context<'a> {
    source: &'a dyn SeriesSource,
    at: i64,
    options: EvalOptions,
    notes: Vec<String>,
}

/// Evaluates `node` at `at_ms` (milliseconds since the epoch).
pub fn evaluate(
    node: &Node,
    source: &dyn SeriesSource,
    at_ms: i64,
    options: EvalOptions,
) -> Result<Outcome, QueryError> {
    let mut ctx = Context {
        source,
        at: at_ms,
        options,
        notes: Vec::new(),
    };
    // A filtering comparison at the root: remember whether its operands had data, so an empty
    // result reads as false rather than missing.
    let (value, filtered_with_input) = match node {
        Node::Binary {
            op,
            lhs,
            rhs,
            return_bool: false,
            matching,
        } if op.is_comparison() => {
            let left = ctx.eval(lhs)?;
            let right = ctx.eval(rhs)?;
            let had_input = has_data(&left) && has_data(&right);
            (binary(*op, left, right, false, matching)?, had_input)
        }
        _ => (ctx.eval(node)?, false),
    };
    Ok(match value {
        Value::Vector(samples) if samples.is_empty() => {
            if filtered_with_input {
                Outcome::False("the comparison holds for no series".into())
            } else if ctx.notes.is_empty() {
                let selectors: Vec<String> =
                    node.selectors().iter().map(|(s, _)| s.describe()).collect();
                Outcome::Missing(format!("no data for {}", selectors.join(", ")))
            } else {
                Outcome::Missing(ctx.notes.join("; "))
            }
        }
        value => Outcome::Value(value),
    })
}

fn has_data(value: &Value) -> bool {
    match value {
        Value::Scalar(_) => true,
        Value::Vector(samples) => !samples.is_empty(),
    }
}

impl Context<'_> {
    fn eval(&mut self, node: &Node) -> Result<Value, QueryError> {
        Ok(match node {
            Node::Number(n) => Value::Scalar(*n),
            Node::Instant(selector) => self.instant(selector),
            Node::Range {
                function,
                selector,
                range,
            } => self.range(*function, selector, *range),
            Node::Negate(inner) => match self.eval(inner)? {
                Value::Scalar(v) => Value::Scalar(-v),
                Value::Vector(samples) => Value::Vector(
                    samples
                        .into_iter()
                        .map(|s| Sample {
                            labels: s.labels.drop_name(),
                            value: -s.value,
                        })
                        .collect(),
                ),
            },
            Node::Binary {
                op,
                lhs,
                rhs,
                return_bool,
                matching,
            } => {
                let left = self.eval(lhs)?;
                let right = self.eval(rhs)?;
                binary(*op, left, right, *return_bool, matching)?
            }
            Node::Aggregate {
                op,
                param,
                grouping,
                expr,
            } => {
                let param = match param {
                    Some(param) => match self.eval(param)? {
                        Value::Scalar(v) => Some(v),
                        Value::Vector(_) => {
                            return Err(QueryError::Eval(
                                "quantile's parameter must be a number".into(),
                            ));
                        }
                    },
                    None => None,
                };
                match self.eval(expr)? {
                    Value::Vector(samples) => {
                        Value::Vector(aggregate(*op, param, grouping, samples))
                    }
                    Value::Scalar(_) => {
                        return Err(QueryError::Eval(
                            "aggregations need a vector, not a number".into(),
                        ));
                    }
                }
            }
            Node::Call { function, args } => {
                let mut values = Vec::with_capacity(args.len());
                for arg in args {
                    values.push(self.eval(arg)?);
                }
                call(*function, values)?
            }
        })
    }

    fn instant(&mut self, selector: &Selector) -> Value {
        let at = self.at;
        // Prometheus 2.x: a sample exactly `lookback` old still counts.
        let from = at - self.options.lookback.as_millis() as i64;
        let mut out = Vec::new();
        self.source
            .for_each_series(selector, &mut |labels, points| {
                let end = points.partition_point(|(t, _)| *t <= at);
                if end > 0 {
                    let (t, v) = points[end - 1];
                    if t >= from && !is_stale(v) {
                        out.push(Sample {
                            labels: labels.clone(),
                            value: v,
                        });
                    }
                }
            });
        Value::Vector(out)
    }

    fn range(&mut self, function: RangeFunction, selector: &Selector, range: Duration) -> Value {
        let at = self.at;
        let range_ms = range.as_millis() as i64;
        let start = at - range_ms;
        let require_coverage = self.options.require_coverage;
        let mut out = Vec::new();
        let mut warming = 0usize;
        let mut best_coverage = 0i64;
        let mut window = Vec::new();
        self.source
            .for_each_series(selector, &mut |labels, points| {
                let from = points.partition_point(|(t, _)| *t < start);
                let to = points.partition_point(|(t, _)| *t <= at);
                window.clear();
                window.extend(points[from..to].iter().filter(|(_, v)| !is_stale(*v)));
                if window.is_empty() {
                    return;
                }
                let earlier = points[..from].iter().any(|(_, v)| !is_stale(*v));
                if require_coverage && !covered(function, &window, start, earlier) {
                    warming += 1;
                    best_coverage = best_coverage.max(window[window.len() - 1].0 - start);
                    return;
                }
                if let Some(value) = range_value(function, &window, start, at, range) {
                    let labels = if function == RangeFunction::LastOverTime {
                        labels.clone()
                    } else {
                        labels.drop_name()
                    };
                    out.push(Sample { labels, value });
                }
            });
        if warming > 0 {
            self.notes.push(format!(
                "{} series of {} {WARMING}: history covers {} of the {} range (its first sample must be within 1.1 sample spacings of the window's start)",
                warming,
                selector.describe(),
                crate::config::duration::format_duration(Duration::from_secs(
                    (best_coverage.max(0) / 1000) as u64
                )),
                crate::config::duration::format_duration(range)
            ));
        }
        Value::Vector(out)
    }
}

/// Whether a window (its samples, no staleness markers) covers enough for `function` to give
/// the value Prometheus would extrapolate to the window's start: see the module's summary.
/// `earlier` says whether the series has a sample before the window.
pub fn covered(function: RangeFunction, window: &[(i64, f64)], start: i64, earlier: bool) -> bool {
    match function {
        RangeFunction::LastOverTime => !window.is_empty(),
        RangeFunction::Irate => window.len() >= 2,
        _ => {
            if window.len() < 2 {
                return false;
            }
            if earlier {
                return true;
            }
            let first = window[0].0;
            let step = (window[window.len() - 1].0 - first) as f64 / (window.len() - 1) as f64;
            ((first - start) as f64) < 1.1 * step
        }
    }
}

/// Kahan–Neumaier compensated addition, as Prometheus sums over time.
fn kahan_add(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Prometheus's running mean: infinities are kept rather than turned into NaN by `Inf - Inf`,
/// whatever the order of the values.
fn mean_step(mean: f64, value: f64, count: f64) -> Option<f64> {
    if mean.is_infinite() {
        if value.is_infinite() && (mean > 0.0) == (value > 0.0) {
            return None;
        }
        if !value.is_infinite() && !value.is_nan() {
            return None;
        }
    }
    Some(value / count - mean / count)
}

fn range_value(
    function: RangeFunction,
    window: &[(i64, f64)],
    start: i64,
    end: i64,
    range: Duration,
) -> Option<f64> {
    let values = window.iter().map(|(_, v)| *v);
    Some(match function {
        RangeFunction::Rate => extrapolated_rate(window, start, end, range, true, true)?,
        RangeFunction::Increase => extrapolated_rate(window, start, end, range, true, false)?,
        RangeFunction::Delta => extrapolated_rate(window, start, end, range, false, false)?,
        RangeFunction::Irate => {
            if window.len() < 2 {
                return None;
            }
            let (t1, v1) = window[window.len() - 1];
            let (t0, v0) = window[window.len() - 2];
            let increase = if v1 < v0 { v1 } else { v1 - v0 };
            let seconds = (t1 - t0) as f64 / 1000.0;
            if seconds == 0.0 {
                return None;
            }
            increase / seconds
        }
        RangeFunction::AvgOverTime => {
            let (mut mean, mut c, mut count) = (0.0, 0.0, 0.0);
            for v in values {
                count += 1.0;
                if let Some(step) = mean_step(mean, v, count) {
                    (mean, c) = kahan_add(step, mean, c);
                }
            }
            if mean.is_infinite() { mean } else { mean + c }
        }
        RangeFunction::MinOverTime => {
            values.fold(
                f64::NAN,
                |acc, v| if acc.is_nan() || v < acc { v } else { acc },
            )
        }
        RangeFunction::MaxOverTime => {
            values.fold(
                f64::NAN,
                |acc, v| if acc.is_nan() || v > acc { v } else { acc },
            )
        }
        RangeFunction::SumOverTime => {
            let (mut sum, mut c) = (0.0, 0.0);
            for v in values {
                (sum, c) = kahan_add(v, sum, c);
            }
            if sum.is_infinite() { sum } else { sum + c }
        }
        RangeFunction::CountOverTime => window.len() as f64,
        RangeFunction::LastOverTime => window[window.len() - 1].1,
    })
}

/// Prometheus's `extrapolatedRate`: the increase over the samples, corrected for counter
/// resets, extrapolated toward the window's edges (by at most half a sample spacing where the
/// series does not reach an edge, and never below zero for counters).
fn extrapolated_rate(
    window: &[(i64, f64)],
    start: i64,
    end: i64,
    range: Duration,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if window.len() < 2 {
        return None;
    }
    let (first_t, first_v) = window[0];
    let (last_t, last_v) = window[window.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        let mut previous = first_v;
        for &(_, v) in &window[1..] {
            if v < previous {
                result += previous;
            }
            previous = v;
        }
    }
    let mut to_start = (first_t - start) as f64 / 1000.0;
    let to_end = (end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    if sampled <= 0.0 {
        return None;
    }
    let average_spacing = sampled / (window.len() - 1) as f64;
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_spacing * 1.1;
    let mut extrapolate_to = sampled;
    extrapolate_to += if to_start < threshold {
        to_start
    } else {
        average_spacing / 2.0
    };
    extrapolate_to += if to_end < threshold {
        to_end
    } else {
        average_spacing / 2.0
    };
    let mut factor = extrapolate_to / sampled;
    if is_rate {
        factor /= range.as_secs_f64();
    }
    Some(result * factor)
}

fn signature(labels: &Labels, matching: &Matching) -> Labels {
    match matching {
        Matching::Default => labels.drop_name(),
        Matching::On(names) => labels.keep(names),
        Matching::Ignoring(names) => labels.without(names).drop_name(),
    }
}

fn arithmetic(op: BinaryOp, l: f64, r: f64) -> Option<f64> {
    Some(match op {
        BinaryOp::Add => l + r,
        BinaryOp::Sub => l - r,
        BinaryOp::Mul => l * r,
        BinaryOp::Div => l / r,
        BinaryOp::Mod => l % r,
        BinaryOp::Pow => l.powf(r),
        _ => return None,
    })
}

fn compare(op: BinaryOp, l: f64, r: f64) -> bool {
    match op {
        BinaryOp::Eq => l == r,
        BinaryOp::Ne => l != r,
        BinaryOp::Gt => l > r,
        BinaryOp::Lt => l < r,
        BinaryOp::Ge => l >= r,
        BinaryOp::Le => l <= r,
        _ => false,
    }
}

/// Applies `op` to two values: `Some(value)` to keep an element, `None` to drop it.
fn element(op: BinaryOp, l: f64, r: f64, return_bool: bool, keep_value: f64) -> Option<f64> {
    if op.is_comparison() {
        let holds = compare(op, l, r);
        if return_bool {
            Some(if holds { 1.0 } else { 0.0 })
        } else {
            holds.then_some(keep_value)
        }
    } else {
        arithmetic(op, l, r)
    }
}

fn binary(
    op: BinaryOp,
    left: Value,
    right: Value,
    return_bool: bool,
    matching: &Matching,
) -> Result<Value, QueryError> {
    Ok(match (left, right) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            if op.is_set() {
                return Err(QueryError::Eval(format!(
                    "`{op}` needs vectors on both sides"
                )));
            }
            if op.is_comparison() && !return_bool {
                return Err(QueryError::Eval(
                    "comparisons between two numbers need `bool`".into(),
                ));
            }
            Value::Scalar(element(op, l, r, return_bool, l).unwrap_or(f64::NAN))
        }
        (Value::Vector(samples), Value::Scalar(r)) => {
            Value::Vector(with_scalar(op, samples, return_bool, |v| (v, r))?)
        }
        (Value::Scalar(l), Value::Vector(samples)) => {
            Value::Vector(with_scalar(op, samples, return_bool, |v| (l, v))?)
        }
        (Value::Vector(lhs), Value::Vector(rhs)) => {
            Value::Vector(vector_binary(op, lhs, rhs, return_bool, matching)?)
        }
    })
}

/// Applies `op` between each element and a number; `operands` orders the two (the element's
/// value, the number) as written. A filtering comparison keeps the element's own value.
fn with_scalar(
    op: BinaryOp,
    samples: Vec<Sample>,
    return_bool: bool,
    operands: impl Fn(f64) -> (f64, f64),
) -> Result<Vec<Sample>, QueryError> {
    if op.is_set() {
        return Err(QueryError::Eval(
            "`and`, `or` and `unless` need vectors on both sides".into(),
        ));
    }
    let drop_name = !op.is_comparison() || return_bool;
    Ok(samples
        .into_iter()
        .filter_map(|s| {
            let (l, r) = operands(s.value);
            element(op, l, r, return_bool, s.value).map(|value| Sample {
                labels: if drop_name {
                    s.labels.drop_name()
                } else {
                    s.labels
                },
                value,
            })
        })
        .collect())
}

fn vector_binary(
    op: BinaryOp,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    return_bool: bool,
    matching: &Matching,
) -> Result<Vec<Sample>, QueryError> {
    if op.is_set() {
        let right: HashSet<Labels> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
        return Ok(match op {
            BinaryOp::And => lhs
                .into_iter()
                .filter(|s| right.contains(&signature(&s.labels, matching)))
                .collect(),
            BinaryOp::Unless => lhs
                .into_iter()
                .filter(|s| !right.contains(&signature(&s.labels, matching)))
                .collect(),
            _ => {
                let left: HashSet<Labels> =
                    lhs.iter().map(|s| signature(&s.labels, matching)).collect();
                let mut out = lhs;
                out.extend(
                    rhs.into_iter()
                        .filter(|s| !left.contains(&signature(&s.labels, matching))),
                );
                out
            }
        });
    }
    let mut right: HashMap<Labels, &Sample> = HashMap::with_capacity(rhs.len());
    for sample in &rhs {
        if right
            .insert(signature(&sample.labels, matching), sample)
            .is_some()
        {
            return Err(QueryError::Eval(format!(
                "many-to-many matching not allowed: several series on the right side match {}; aggregate them or use on(...)",
                signature(&sample.labels, matching)
            )));
        }
    }
    let drop_name = !op.is_comparison() || return_bool;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for sample in lhs {
        let key = signature(&sample.labels, matching);
        let Some(other) = right.get(&key) else {
            continue;
        };
        let Some(value) = element(op, sample.value, other.value, return_bool, sample.value) else {
            continue;
        };
        // As Prometheus: several left elements matching one right element are an error only
        // among the elements the operation keeps.
        if !seen.insert(key.clone()) {
            return Err(QueryError::Eval(format!(
                "multiple matches for {key}: several series on the left side match one on the right; aggregate them or use on(...)"
            )));
        }
        let mut labels = if drop_name {
            sample.labels.drop_name()
        } else {
            sample.labels
        };
        labels = match matching {
            Matching::On(names) => labels.keep(names),
            Matching::Ignoring(names) => labels.without(names),
            Matching::Default => labels,
        };
        out.push(Sample { labels, value });
    }
    Ok(out)
}

#[derive(Default)]
struct Group {
    count: f64,
    sum: f64,
    mean: f64,
    m2: f64,
    value: f64,
    values: Vec<f64>,
}

fn aggregate(
    op: Aggregation,
    param: Option<f64>,
    grouping: &Grouping,
    samples: Vec<Sample>,
) -> Vec<Sample> {
    // Series in label order, as Prometheus reads them from storage: the result never depends
    // on the order a source hands series over in.
    let mut samples = samples;
    samples.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut groups: BTreeMap<Labels, Group> = BTreeMap::new();
    for sample in samples {
        let key = match grouping {
            Grouping::All => Labels::default(),
            Grouping::By(names) => sample.labels.keep(names),
            Grouping::Without(names) => sample.labels.without(names).drop_name(),
        };
        let group = groups.entry(key).or_default();
        let v = sample.value;
        group.count += 1.0;
        match op {
            Aggregation::Sum => group.sum += v,
            Aggregation::Avg => {
                if let Some(step) = mean_step(group.mean, v, group.count) {
                    group.mean += step;
                }
            }
            Aggregation::Min => {
                if group.count == 1.0 || group.value > v || group.value.is_nan() {
                    group.value = v;
                }
            }
            Aggregation::Max => {
                if group.count == 1.0 || group.value < v || group.value.is_nan() {
                    group.value = v;
                }
            }
            Aggregation::Count => {}
            Aggregation::Quantile => group.values.push(v),
            Aggregation::Stddev | Aggregation::Stdvar => {
                let delta = v - group.mean;
                group.mean += delta / group.count;
                group.m2 += delta * (v - group.mean);
            }
        }
    }
    groups
        .into_iter()
        .map(|(labels, group)| {
            let value = match op {
                Aggregation::Sum => group.sum,
                Aggregation::Avg => group.mean,
                Aggregation::Min | Aggregation::Max => group.value,
                Aggregation::Count => group.count,
                Aggregation::Quantile => quantile(param.unwrap_or(f64::NAN), group.values),
                Aggregation::Stddev => (group.m2 / group.count).sqrt(),
                Aggregation::Stdvar => group.m2 / group.count,
            };
            Sample { labels, value }
        })
        .collect()
}

/// Prometheus's φ-quantile with linear interpolation between the closest ranks.
pub fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Prometheus sorts NaN first.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = ((rank.floor() + 1.0).min(n - 1.0)) as usize;
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

fn call(function: Function, mut args: Vec<Value>) -> Result<Value, QueryError> {
    let scalar_arg = |value: Option<&Value>| match value {
        Some(Value::Scalar(v)) => Ok(*v),
        _ => Err(QueryError::Eval(format!(
            "{function} needs a number as its second argument"
        ))),
    };
    Ok(match function {
        Function::Vector => match args.first() {
            Some(Value::Scalar(v)) => Value::Vector(vec![Sample {
                labels: Labels::default(),
                value: *v,
            }]),
            _ => return Err(QueryError::Eval("vector() needs a number".into())),
        },
        Function::Scalar => match args.first() {
            Some(Value::Vector(samples)) if samples.len() == 1 => Value::Scalar(samples[0].value),
            Some(Value::Vector(_)) => Value::Scalar(f64::NAN),
            _ => return Err(QueryError::Eval("scalar() needs a vector".into())),
        },
        Function::Abs
        | Function::Ceil
        | Function::Floor
        | Function::ClampMin
        | Function::ClampMax => {
            let bound = if matches!(function, Function::ClampMin | Function::ClampMax) {
                scalar_arg(args.get(1))?
            } else {
                0.0
            };
            let Some(Value::Vector(samples)) = args.drain(..).next() else {
                return Err(QueryError::Eval(format!("{function} needs a vector")));
            };
            Value::Vector(
                samples
                    .into_iter()
                    .map(|s| Sample {
                        labels: s.labels.drop_name(),
                        value: match function {
                            Function::Abs => s.value.abs(),
                            Function::Ceil => s.value.ceil(),
                            Function::Floor => s.value.floor(),
                            // Go's math.Max/Min: NaN passes through.
                            Function::ClampMin if s.value.is_nan() => s.value,
                            Function::ClampMin => s.value.max(bound),
                            _ if s.value.is_nan() => s.value,
                            _ => s.value.min(bound),
                        },
                    })
                    .collect(),
            )
        }
    })
}
