//! Golden conformance: do-scaler's evaluator against what Prometheus (promtool 2.42, Debian's
//! `prometheus` package) computed for the same series and expressions. Inputs and cases:
//! tests/golden/promql.yaml; answers: tests/golden/expected.json (raw: promtool-output.txt);
//! regenerate both with `python3 tests/golden/regenerate.py`.

use do_scaler::query::{EvalOptions, Labels, MemorySource, Outcome, Value, compile, evaluate};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct File {
    tests: Vec<Test>,
}

#[derive(Deserialize)]
struct Test {
    interval: String,
    input_series: Vec<Series>,
    promql_expr_test: Vec<Case>,
}

#[derive(Deserialize)]
struct Series {
    series: String,
    values: String,
}

#[derive(Deserialize)]
struct Case {
    expr: String,
    eval_time: String,
}

#[derive(Deserialize)]
struct Expected {
    expr: String,
    eval_time: String,
    samples: Vec<ExpectedSample>,
}

#[derive(Deserialize)]
struct ExpectedSample {
    labels: BTreeMap<String, String>,
    value: String,
}

fn millis(text: &str) -> i64 {
    do_scaler::config::duration::parse_duration(text)
        .unwrap()
        .as_millis() as i64
}

/// Expands promtool's series notation: `a+bxn`, `a-bxn`, numbers, `Inf`, `NaN`, `_` (no
/// sample) and `stale` (a staleness marker).
fn expand(values: &str) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for token in values.split_whitespace() {
        if token == "_" {
            out.push(None);
            continue;
        }
        if token == "stale" {
            out.push(Some(do_scaler::query::eval::STALE));
            continue;
        }
        if let Some((head, times)) = token.split_once('x') {
            let times: usize = times.parse().unwrap();
            let split = head[1..].find(['+', '-']).map(|i| i + 1).unwrap();
            let start: f64 = head[..split].parse().unwrap();
            let step: f64 = head[split..].parse().unwrap();
            for i in 0..=times {
                out.push(Some(start + step * i as f64));
            }
        } else {
            out.push(Some(token.parse().unwrap()));
        }
    }
    out
}

/// Parses `name{a="1",b="2"}`.
fn series_labels(text: &str) -> Labels {
    let (name, rest) = text.split_once('{').unwrap_or((text, "}"));
    let mut pairs = vec![("__name__".to_string(), name.to_string())];
    for pair in rest
        .trim_end_matches('}')
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap();
        pairs.push((k.to_string(), v.trim_matches('"').to_string()));
    }
    Labels::new(pairs)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_evaluator_agrees_with_prometheus() {
    let file: File = serde_norway::from_str(&read("tests/golden/promql.yaml")).unwrap();
    let expected: Vec<Expected> =
        serde_json::from_str(&read("tests/golden/expected.json")).unwrap();
    let cases: Vec<(&Case, usize)> = file
        .tests
        .iter()
        .enumerate()
        .flat_map(|(index, test)| test.promql_expr_test.iter().map(move |c| (c, index)))
        .collect();
    let sources: Vec<MemorySource> = file
        .tests
        .iter()
        .map(|test| {
            let interval = millis(&test.interval);
            let mut source = MemorySource::new();
            for series in &test.input_series {
                let labels = series_labels(&series.series);
                for (index, value) in expand(&series.values).into_iter().enumerate() {
                    if let Some(value) = value {
                        source.push(&labels, index as i64 * interval, value);
                    }
                }
            }
            source
        })
        .collect();
    assert_eq!(cases.len(), expected.len(), "regenerate expected.json");
    assert!(
        expected.len() >= 110,
        "49 original cases and at least 60 of issue 17"
    );
    let mut failures = Vec::new();
    for ((case, test), want) in cases.iter().zip(&expected) {
        let source = &sources[*test];
        assert_eq!((&case.expr, &case.eval_time), (&want.expr, &want.eval_time));
        let expression = compile(&case.expr).unwrap_or_else(|e| panic!("{}: {e}", case.expr));
        let outcome = evaluate(
            &expression.node,
            source,
            millis(&case.eval_time),
            EvalOptions::default(),
        )
        .unwrap();
        let mut got: Vec<(String, f64)> = match outcome {
            Outcome::Value(Value::Vector(samples)) => samples
                .iter()
                .map(|s| (s.labels.to_string(), s.value))
                .collect(),
            Outcome::Value(Value::Scalar(v)) => vec![("{}".to_string(), v)],
            Outcome::False(_) | Outcome::Missing(_) => Vec::new(),
        };
        let mut want: Vec<(String, f64)> = want
            .samples
            .iter()
            .map(|s| {
                (
                    Labels::new(s.labels.iter()).to_string(),
                    s.value.parse::<f64>().unwrap(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let same = got.len() == want.len()
            && got.iter().zip(&want).all(|(g, w)| {
                g.0 == w.0
                    && (g.1 == w.1 || (g.1 - w.1).abs() <= 1e-9 || (g.1.is_nan() && w.1.is_nan()))
            });
        if !same {
            failures.push(format!(
                "{} at {}:\n  got  {got:?}\n  want {want:?}",
                case.expr, case.eval_time
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Prometheus:\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n")
    );
}
