//! The expression language: a PromQL subset, parsed with `promql-parser`, compiled into the
//! constructs do-scaler supports (anything else is refused by name at `check` time), and
//! evaluated over sample history with Prometheus's semantics.

pub mod compile;
pub mod eval;
pub mod labels;

pub use compile::{Node, Selector};
pub use eval::{EvalOptions, Outcome, Sample, SeriesSource, Value, evaluate};
pub use labels::Labels;
use std::time::Duration;

/// Why an expression was refused or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The text is not PromQL.
    #[error("invalid expression: {0}")]
    Syntax(String),
    /// Valid PromQL that do-scaler does not evaluate.
    #[error("unsupported in do-scaler's expressions: {0}")]
    Unsupported(String),
    /// The data made the expression invalid (such as a many-to-many match).
    #[error("{0}")]
    Eval(String),
}

/// A compiled expression with its text.
#[derive(Debug, Clone)]
pub struct Expression {
    /// As written.
    pub text: String,
    /// Compiled.
    pub node: Node,
}

impl Expression {
    /// The longest range any selector reads.
    pub fn longest_range(&self) -> Duration {
        self.node.longest_range()
    }
}

/// Parses and compiles an expression.
pub fn compile(text: &str) -> Result<Expression, QueryError> {
    if text.trim().is_empty() {
        return Err(QueryError::Syntax("the expression is empty".into()));
    }
    check_size(text)?;
    check_duration_numbers(text)?;
    // The parser panics on some inputs (fuzzing found one in its duration handling); a bad
    // expression must be an error in a file, never a crash of the daemon.
    let parsed = std::panic::catch_unwind(|| promql_parser::parser::parse(text))
        .map_err(|_| {
            QueryError::Syntax(
                "the expression parser gave up on this text: check its ranges and numbers".into(),
            )
        })?
        .map_err(|reason| QueryError::Syntax(reason.trim().to_string()))?;
    let node = compile::compile(&parsed)?;
    if node.depth() > MAX_DEPTH {
        return Err(QueryError::Syntax(format!(
            "the expression nests {} levels deep, more than the {MAX_DEPTH} do-scaler compiles: split it into simpler rules",
            node.depth()
        )));
    }
    Ok(Expression {
        text: text.to_string(),
        node,
    })
}

/// The longest expression text do-scaler compiles.
pub const MAX_LENGTH: usize = 8 * 1024;
/// The most operators (`+ - * / % ^`, comparisons, `and`/`or`/`unless`) in one expression.
pub const MAX_OPERATORS: usize = 100;
/// The deepest nesting of parentheses, braces and brackets in the text.
pub const MAX_BRACKETS: usize = 64;
/// The deepest compiled expression (operators and brackets together): evaluation recurses
/// this deep, well within a thread's stack.
pub const MAX_DEPTH: usize = 128;

/// Refuses, before parsing, an expression too long, with too many operators or nested too
/// deeply: the parser and the evaluator recurse over the expression's tree, and a rule of
/// 3,000 `+ 0` terms overflowed the stack. `check`, reloads and `query` share this limit.
fn check_size(text: &str) -> Result<(), QueryError> {
    if text.len() > MAX_LENGTH {
        return Err(QueryError::Syntax(format!(
            "the expression is {} bytes long, more than the {MAX_LENGTH} do-scaler compiles: split it into simpler rules",
            text.len()
        )));
    }
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_braces_or_brackets = 0usize;
    let mut operators = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if let Some(open) = quote {
            if byte == b'\\' {
                index += 1;
            } else if byte == open {
                quote = None;
            }
            index += 1;
            continue;
        }
        match byte {
            b'"' | b'\'' | b'`' => quote = Some(byte),
            b'(' | b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
                if byte != b'(' {
                    in_braces_or_brackets += 1;
                }
            }
            b')' | b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if byte != b')' {
                    in_braces_or_brackets = in_braces_or_brackets.saturating_sub(1);
                }
            }
            // `==`, `!=`, `>=`, `<=` are one operator: their `=` is not counted again.
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!'
                if in_braces_or_brackets == 0
                    && !(byte == b'=' && index > 0 && b"=!<>".contains(&bytes[index - 1])) =>
            {
                operators += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' if in_braces_or_brackets == 0 => {
                let start = index;
                while index < bytes.len()
                    && (bytes[index].is_ascii_alphanumeric()
                        || bytes[index] == b'_'
                        || bytes[index] == b':')
                {
                    index += 1;
                }
                let word = &text[start..index];
                if ["and", "or", "unless"]
                    .iter()
                    .any(|w| word.eq_ignore_ascii_case(w))
                {
                    operators += 1;
                }
                continue;
            }
            _ => {}
        }
        index += 1;
    }
    if deepest > MAX_BRACKETS {
        return Err(QueryError::Syntax(format!(
            "the expression nests {deepest} brackets deep, more than the {MAX_BRACKETS} do-scaler compiles: split it into simpler rules"
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(QueryError::Syntax(format!(
            "the expression has {operators} operators, more than the {MAX_OPERATORS} do-scaler compiles: split it into simpler rules"
        )));
    }
    Ok(())
}

/// Refuses a duration (in `[...]`, after `:` in a subquery, after `offset`) written as a bare
/// number that is not a plain decimal of at most ten digits: the parser turns such numbers
/// into seconds and panics on huge, negative, infinite or NaN ones (fuzzing found two).
fn check_duration_numbers(text: &str) -> Result<(), QueryError> {
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    let mut brackets = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if let Some(open) = quote {
            if byte == b'\\' {
                index += 1;
            } else if byte == open {
                quote = None;
            }
            index += 1;
            continue;
        }
        let starts_duration = match byte {
            b'"' | b'\'' | b'`' => {
                quote = Some(byte);
                false
            }
            b'[' => {
                brackets += 1;
                true
            }
            b']' => {
                brackets = brackets.saturating_sub(1);
                false
            }
            b':' => brackets > 0,
            b'o' | b'O' => {
                let word = text.get(index..index + 6).unwrap_or("");
                let before = index.checked_sub(1).map(|i| bytes[i]);
                let after = bytes.get(index + 6).copied();
                let boundary =
                    |b: Option<u8>| !b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
                if word.eq_ignore_ascii_case("offset") && boundary(before) && boundary(after) {
                    index += 5;
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        index += 1;
        if !starts_duration {
            continue;
        }
        let rest = &text[index..];
        let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '+', '-']);
        let token: &str = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .next()
            .unwrap_or("");
        if !duration_token_is_safe(token) {
            return Err(QueryError::Syntax(format!(
                "`{token}` is not a duration do-scaler can read: write it with units, such as [5m] or [1h30m]"
            )));
        }
    }
    Ok(())
}

/// Whether the parser can take `token` where a duration goes without panicking: a duration
/// with units (its own checked path), a plain decimal of at most ten digits, or something that
/// is not a number at all (the parser refuses it with an error).
fn duration_token_is_safe(token: &str) -> bool {
    let lower = token.to_ascii_lowercase();
    let bare_number_word = lower == "inf" || lower == "nan";
    if token.is_empty()
        || (lower.starts_with(|c: char| c.is_ascii_alphabetic()) && !bare_number_word)
    {
        return true;
    }
    let with_units = lower.ends_with(|c: char| c.is_ascii_alphabetic())
        && !lower.starts_with("0x")
        && !bare_number_word;
    let mut parts = token.split('.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next().unwrap_or("");
    let plain = parts.next().is_none()
        && !whole.is_empty()
        && whole.len() <= 10
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    with_units || plain
}

/// Checks that an expression parses and uses only what do-scaler evaluates.
pub fn check_syntax(expr: &str) -> Result<(), QueryError> {
    compile(expr).map(|_| ())
}

/// Parses with the size limits and the parser's panics caught, nothing compiled.
fn parse_full(text: &str) -> Result<promql_parser::parser::Expr, QueryError> {
    if text.trim().is_empty() {
        return Err(QueryError::Syntax("the expression is empty".into()));
    }
    check_size(text)?;
    check_duration_numbers(text)?;
    std::panic::catch_unwind(|| promql_parser::parser::parse(text))
        .map_err(|_| {
            QueryError::Syntax(
                "the expression parser gave up on this text: check its ranges and numbers".into(),
            )
        })?
        .map_err(|reason| QueryError::Syntax(reason.trim().to_string()))
}

/// Checks an expression a remote Prometheus server evaluates: it must be PromQL within the
/// size limits; the whole language is allowed (the server, not do-scaler, evaluates it).
pub fn check_remote_syntax(expr: &str) -> Result<(), QueryError> {
    parse_full(expr).map(|_| ())
}

/// The text a remote server is asked for when the answer is read as a truth: a comparison at
/// the root gets the `bool` modifier, so "false" (every value 0) is told apart from "no data"
/// (an empty answer). Anything else is sent as written. Says whether the root is a comparison.
pub fn remote_truth_query(expr: &str) -> Result<(String, bool), QueryError> {
    use promql_parser::parser::Expr;
    let mut parsed = parse_full(expr)?;
    let mut root = &mut parsed;
    while let Expr::Paren(inner) = root {
        root = &mut inner.expr;
    }
    match root {
        Expr::Binary(binary) if binary.op.is_comparison_operator() => {
            let already = binary.modifier.as_ref().is_some_and(|m| m.return_bool);
            if already {
                return Ok((expr.to_string(), true));
            }
            let modifier = binary.modifier.get_or_insert_with(Default::default);
            modifier.return_bool = true;
            Ok((parsed.to_string(), true))
        }
        _ => Ok((expr.to_string(), false)),
    }
}

/// The compiled expression read as a truth: a comparison at the root returns 0 or 1 per
/// series (`bool`) instead of filtering, so a false series is told apart from a missing one.
pub fn as_truth(node: &Node) -> Node {
    match node {
        Node::Binary {
            op,
            lhs,
            rhs,
            matching,
            ..
        } if op.is_comparison() => Node::Binary {
            op: *op,
            lhs: lhs.clone(),
            rhs: rhs.clone(),
            return_bool: true,
            matching: matching.clone(),
        },
        other => other.clone(),
    }
}

/// Makes every selector of `node` without a `source` matcher select `source="<name>"`: a rule
/// reads its own source unless a selector names another.
pub fn restrict_to_source(node: &mut Node, name: &str) {
    node.for_each_selector_mut(&mut |selector| {
        if !selector.matchers.iter().any(|m| m.name == "source") {
            selector.matchers.push(promql_parser::label::Matcher::new(
                promql_parser::label::MatchOp::Equal,
                "source",
                name,
            ));
        }
    });
}

/// Series held in memory: for tests and for `do-scaler query --file`.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    series: Vec<(Labels, Vec<(i64, f64)>)>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a point to the series with these labels (points must come in time order).
    pub fn push(&mut self, labels: &Labels, t_ms: i64, value: f64) {
        match self.series.iter_mut().find(|(l, _)| l == labels) {
            Some((_, points)) => {
                let at = points.partition_point(|(t, _)| *t < t_ms);
                if points.get(at).is_some_and(|(t, _)| *t == t_ms) {
                    points[at].1 = value;
                } else {
                    points.insert(at, (t_ms, value));
                }
            }
            None => self.series.push((labels.clone(), vec![(t_ms, value)])),
        }
    }
}

impl SeriesSource for MemorySource {
    fn for_each_series(
        &self,
        selector: &Selector,
        visit: &mut crate::query::eval::SeriesVisitor<'_>,
    ) {
        for (labels, points) in &self.series {
            if selector.matches(labels.name(), |name| labels.get(name)) {
                visit(labels, points);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_example_expressions() {
        check_syntax(r#"1 - avg(rate(node_cpu_seconds_total{mode="idle"}[2m]))"#).unwrap();
        check_syntax(r#"avg(node_load5 / on (droplet_id) count by (droplet_id) (node_cpu_seconds_total{mode="idle"})) > 0.8"#).unwrap();
    }

    #[test]
    fn a_duration_number_the_parser_cannot_take_is_an_error_not_a_panic() {
        // Found by the `expression` fuzz target: the parser panicked converting the range.
        let found = "248248[][][333333333333333333333333333333333333333333333333333][][]";
        let error = check_syntax(found).unwrap_err().to_string();
        assert!(error.contains("is not a duration"), "{error}");
        for found in [
            "rate(x[1e30])",
            "rate(x[Inf])",
            "rate(x[0xffffffffffffffffffff])",
            "x offset 11111111111111111111111111",
            "max_over_time(x[5m:99999999999999999999])",
        ] {
            assert!(check_syntax(found).is_err(), "{found}");
        }
        check_syntax(r#"rate(x[5m])"#).unwrap();
        check_syntax(r#"rate(x{path=~"/v[0-9]+"}[5m])"#).unwrap();
    }

    #[test]
    fn huge_or_deep_expressions_are_errors_not_stack_overflows() {
        for text in [
            format!("node_load1{}", " + 0".repeat(3_000)),
            format!("node_load1{}", " + 0".repeat(20_000)),
            format!("{}node_load1{}", "(".repeat(1_000), ")".repeat(1_000)),
            format!("{}node_load1{}", "abs(".repeat(200), ")".repeat(200)),
            format!("{}1", "-".repeat(5_000)),
            format!("node_load1{}", " and node_load1".repeat(300)),
        ] {
            let error = compile(&text).unwrap_err().to_string();
            assert!(error.contains("do-scaler compiles"), "{error}");
        }
        // Up to the caps, expressions compile and evaluate.
        let long = format!("node_load1{}", " + 0".repeat(90));
        let expression = compile(&long).unwrap();
        let _ = evaluate(&expression.node, &source(), 60_000, EvalOptions::default());
        compile(&format!("{}node_load1{}", "(".repeat(40), ")".repeat(40))).unwrap();
        let deep = compile(&format!(
            "{}node_load1{}",
            "abs(-".repeat(60),
            ")".repeat(60)
        ))
        .unwrap();
        let _ = evaluate(&deep.node, &source(), 60_000, EvalOptions::default());
    }

    #[test]
    fn refuses_broken_and_unsupported_expressions_by_name() {
        assert!(matches!(
            check_syntax("avg(rate(x[2m])"),
            Err(QueryError::Syntax(_))
        ));
        assert!(check_syntax("  ").is_err());
        for (text, construct) in [
            ("rate(x[5m] offset 1m)", "offset"),
            ("max_over_time(rate(x[1m])[5m:30s])", "subqueries"),
            ("topk(3, x)", "topk"),
            ("histogram_quantile(0.9, x)", "histogram_quantile"),
            ("x[5m]", "bare range selector"),
            ("a * on(i) group_left b", "group_left"),
        ] {
            let error = check_syntax(text).unwrap_err().to_string();
            assert!(error.contains(construct), "{text}: {error}");
        }
    }

    fn source() -> MemorySource {
        let mut source = MemorySource::new();
        for droplet in ["1", "2"] {
            let labels = Labels::new([("__name__", "requests_total"), ("droplet_id", droplet)]);
            for i in 0..=10 {
                source.push(&labels, i * 15_000, (i * 30) as f64);
            }
        }
        source
    }

    #[test]
    fn rate_of_a_steady_counter_and_the_three_outcomes() {
        let source = source();
        let at = 150_000;
        let run = |text: &str| {
            evaluate(
                &compile(text).unwrap().node,
                &source,
                at,
                EvalOptions::default(),
            )
            .unwrap()
        };
        assert!((run("sum(rate(requests_total[1m]))").single().unwrap() - 4.0).abs() < 1e-9);
        assert_eq!(
            run("avg(rate(requests_total[1m])) > 1"),
            Outcome::Value(Value::Vector(vec![Sample {
                labels: Labels::default(),
                value: 2.0
            }]))
        );
        assert!(matches!(
            run("avg(rate(requests_total[1m])) > 5"),
            Outcome::False(_)
        ));
        assert!(matches!(
            run("avg(rate(nothing_total[1m])) > 5"),
            Outcome::Missing(_)
        ));
        match run("rate(requests_total[10m])") {
            Outcome::Missing(reason) => assert!(reason.contains("warming"), "{reason}"),
            other => panic!("a 10m window over 150s of history is warming, got {other:?}"),
        }
    }
}
