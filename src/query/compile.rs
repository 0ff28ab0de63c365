//! Compiling PromQL (parsed by `promql-parser`) into the subset do-scaler evaluates, refusing
//! everything else with an error that names the construct.

use super::QueryError;
use promql_parser::label::Matcher;
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality, token};
use std::time::Duration;

/// A series selector: a metric name and label matchers.
#[derive(Debug, Clone)]
pub struct Selector {
    /// The metric name, if given outside the braces.
    pub name: Option<String>,
    /// Label matchers (`=`, `!=`, `=~`, `!~`; regexes fully anchored).
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Whether a series with this name and these labels is selected.
    pub fn matches<'a>(&self, name: &str, label: impl Fn(&str) -> &'a str) -> bool {
        if let Some(wanted) = &self.name
            && wanted != name
        {
            return false;
        }
        self.matchers.iter().all(|m| {
            let value = if m.name == super::labels::METRIC_NAME {
                name
            } else {
                label(&m.name)
            };
            m.is_match(value)
        })
    }

    /// The selector as written.
    pub fn describe(&self) -> String {
        let matchers: Vec<String> = self.matchers.iter().map(|m| m.to_string()).collect();
        match (&self.name, matchers.is_empty()) {
            (Some(name), true) => name.clone(),
            (name, _) => format!(
                "{}{{{}}}",
                name.as_deref().unwrap_or(""),
                matchers.join(",")
            ),
        }
    }
}

/// Functions over a range of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFunction {
    /// Per-second increase, extrapolated, counter resets handled.
    Rate,
    /// Per-second rate of the last two samples.
    Irate,
    /// Increase over the range, extrapolated.
    Increase,
    /// Difference over the range, extrapolated (gauges).
    Delta,
    /// Mean of the samples.
    AvgOverTime,
    /// Minimum.
    MinOverTime,
    /// Maximum.
    MaxOverTime,
    /// Sum.
    SumOverTime,
    /// Number of samples.
    CountOverTime,
    /// Most recent sample.
    LastOverTime,
}

impl RangeFunction {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "rate" => RangeFunction::Rate,
            "irate" => RangeFunction::Irate,
            "increase" => RangeFunction::Increase,
            "delta" => RangeFunction::Delta,
            "avg_over_time" => RangeFunction::AvgOverTime,
            "min_over_time" => RangeFunction::MinOverTime,
            "max_over_time" => RangeFunction::MaxOverTime,
            "sum_over_time" => RangeFunction::SumOverTime,
            "count_over_time" => RangeFunction::CountOverTime,
            "last_over_time" => RangeFunction::LastOverTime,
            _ => return None,
        })
    }
}

/// Functions over instant values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Absolute value.
    Abs,
    /// Round up.
    Ceil,
    /// Round down.
    Floor,
    /// Lower bound.
    ClampMin,
    /// Upper bound.
    ClampMax,
    /// One-element vector to scalar (NaN otherwise).
    Scalar,
    /// Scalar to a label-less vector.
    Vector,
}

impl std::fmt::Display for Function {
    /// The PromQL name, as written in a rule.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Function::Abs => "abs()",
            Function::Ceil => "ceil()",
            Function::Floor => "floor()",
            Function::ClampMin => "clamp_min()",
            Function::ClampMax => "clamp_max()",
            Function::Scalar => "scalar()",
            Function::Vector => "vector()",
        })
    }
}

impl std::fmt::Display for BinaryOp {
    /// The PromQL operator, as written in a rule.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Gt => ">",
            BinaryOp::Lt => "<",
            BinaryOp::Ge => ">=",
            BinaryOp::Le => "<=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Unless => "unless",
        })
    }
}

/// Aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Sum.
    Sum,
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Number of series.
    Count,
    /// φ-quantile.
    Quantile,
    /// Population standard deviation.
    Stddev,
    /// Population variance.
    Stdvar,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
}

impl BinaryOp {
    /// Whether the operator compares (and so filters, without `bool`).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Gt | BinaryOp::Lt | BinaryOp::Ge | BinaryOp::Le
        )
    }

    /// Whether the operator is `and`, `or` or `unless`.
    pub fn is_set(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless)
    }
}

/// Which labels vectors are matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matching {
    /// All labels but the name.
    Default,
    /// `on(...)`.
    On(Vec<String>),
    /// `ignoring(...)`.
    Ignoring(Vec<String>),
}

/// Grouping of an aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// No clause: everything in one group.
    All,
    /// `by (...)`.
    By(Vec<String>),
    /// `without (...)`.
    Without(Vec<String>),
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub enum Node {
    /// A number.
    Number(f64),
    /// An instant selector.
    Instant(Selector),
    /// A range function over a range selector.
    Range {
        /// The function.
        function: RangeFunction,
        /// The selector.
        selector: Selector,
        /// The range.
        range: Duration,
    },
    /// An aggregation.
    Aggregate {
        /// The operator.
        op: Aggregation,
        /// The parameter (quantile's φ).
        param: Option<Box<Node>>,
        /// Grouping.
        grouping: Grouping,
        /// The aggregated expression.
        expr: Box<Node>,
    },
    /// A binary operation.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left side.
        lhs: Box<Node>,
        /// Right side.
        rhs: Box<Node>,
        /// `bool` modifier.
        return_bool: bool,
        /// Vector matching.
        matching: Matching,
    },
    /// Unary minus.
    Negate(Box<Node>),
    /// A function call.
    Call {
        /// The function.
        function: Function,
        /// Its arguments.
        args: Vec<Node>,
    },
}

impl Node {
    /// Every selector the expression reads, with the range it reads over (zero for instant).
    pub fn selectors(&self) -> Vec<(&Selector, Duration)> {
        let mut out = Vec::new();
        self.walk(&mut |node| match node {
            Node::Instant(selector) => out.push((selector, Duration::ZERO)),
            Node::Range {
                selector, range, ..
            } => out.push((selector, *range)),
            _ => {}
        });
        out
    }

    /// The longest range any selector uses.
    pub fn longest_range(&self) -> Duration {
        self.selectors()
            .into_iter()
            .map(|(_, r)| r)
            .max()
            .unwrap_or_default()
    }

    /// How deeply the expression nests (a leaf is 1): evaluation recurses this deep.
    pub fn depth(&self) -> usize {
        1 + match self {
            Node::Aggregate { param, expr, .. } => {
                expr.depth().max(param.as_ref().map_or(0, |p| p.depth()))
            }
            Node::Binary { lhs, rhs, .. } => lhs.depth().max(rhs.depth()),
            Node::Negate(inner) => inner.depth(),
            Node::Call { args, .. } => args.iter().map(Node::depth).max().unwrap_or(0),
            Node::Number(_) | Node::Instant(_) | Node::Range { .. } => 0,
        }
    }

    /// Visits every selector, mutably.
    pub fn for_each_selector_mut(&mut self, visit: &mut dyn FnMut(&mut Selector)) {
        match self {
            Node::Instant(selector) | Node::Range { selector, .. } => visit(selector),
            Node::Aggregate { param, expr, .. } => {
                if let Some(param) = param {
                    param.for_each_selector_mut(visit);
                }
                expr.for_each_selector_mut(visit);
            }
            Node::Binary { lhs, rhs, .. } => {
                lhs.for_each_selector_mut(visit);
                rhs.for_each_selector_mut(visit);
            }
            Node::Negate(inner) => inner.for_each_selector_mut(visit),
            Node::Call { args, .. } => args.iter_mut().for_each(|a| a.for_each_selector_mut(visit)),
            Node::Number(_) => {}
        }
    }

    fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Node)) {
        visit(self);
        match self {
            Node::Aggregate { param, expr, .. } => {
                if let Some(param) = param {
                    param.walk(visit);
                }
                expr.walk(visit);
            }
            Node::Binary { lhs, rhs, .. } => {
                lhs.walk(visit);
                rhs.walk(visit);
            }
            Node::Negate(inner) => inner.walk(visit),
            Node::Call { args, .. } => args.iter().for_each(|a| a.walk(visit)),
            Node::Number(_) | Node::Instant(_) | Node::Range { .. } => {}
        }
    }
}

fn unsupported(what: impl Into<String>) -> QueryError {
    QueryError::Unsupported(what.into())
}

fn selector(vs: &parser::VectorSelector) -> Result<Selector, QueryError> {
    if vs.offset.is_some() {
        return Err(unsupported("the `offset` modifier"));
    }
    if vs.at.is_some() {
        return Err(unsupported("the `@` modifier"));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` inside a selector's braces"));
    }
    let matchers = vs
        .matchers
        .matchers
        .iter()
        .map(go_semantics)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Selector {
        name: vs.name.clone(),
        matchers,
    })
}

/// A matcher whose regular expression means what it means in Prometheus (Go's RE2): `\d`,
/// `\w`, `\s` and `\b` (and their negations) are ASCII-only there, Unicode-aware in Rust's
/// `regex` by default.
fn go_semantics(matcher: &Matcher) -> Result<Matcher, QueryError> {
    use promql_parser::label::MatchOp;
    let rebuild = |regex: &regex::Regex| {
        regex::Regex::new(&ascii_classes(regex.as_str()))
            .map_err(|e| QueryError::Syntax(format!("regular expression `{}`: {e}", matcher.value)))
    };
    let op = match &matcher.op {
        MatchOp::Re(regex) => MatchOp::Re(rebuild(regex)?),
        MatchOp::NotRe(regex) => MatchOp::NotRe(rebuild(regex)?),
        other => other.clone(),
    };
    Ok(Matcher::new(op, &matcher.name, &matcher.value))
}

/// Rewrites Perl classes to their ASCII meaning, as in Go's RE2.
pub fn ascii_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push(c);
                    break;
                };
                let replacement = match (next, in_class) {
                    ('d', false) => Some("[0-9]"),
                    ('d', true) => Some("0-9"),
                    ('D', false) => Some("[^0-9]"),
                    ('w', false) => Some("[0-9A-Za-z_]"),
                    ('w', true) => Some("0-9A-Za-z_"),
                    ('W', false) => Some("[^0-9A-Za-z_]"),
                    ('s', false) => Some("[\\t\\n\\x0C\\r ]"),
                    ('s', true) => Some("\\t\\n\\x0C\\r "),
                    ('S', false) => Some("[^\\t\\n\\x0C\\r ]"),
                    ('b', false) => Some("(?-u:\\b)"),
                    ('B', false) => Some("(?-u:\\B)"),
                    _ => None,
                };
                match replacement {
                    Some(text) => out.push_str(text),
                    None => {
                        out.push('\\');
                        out.push(next);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` (or `^]`) first in a class is a literal.
                let rest = chars.as_str();
                if let Some(stripped) = rest.strip_prefix("^]") {
                    out.push_str("^]");
                    chars = stripped.chars();
                } else if let Some(stripped) = rest.strip_prefix(']') {
                    out.push(']');
                    chars = stripped.chars();
                }
            }
            '[' if in_class && chars.as_str().starts_with(':') => {
                // A POSIX class such as [:alpha:] inside a class.
                out.push(c);
                let rest = chars.as_str();
                if let Some(end) = rest.find(":]") {
                    out.push_str(&rest[..end + 2]);
                    chars = rest[end + 2..].chars();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn labels_of(modifier: &LabelModifier) -> Vec<String> {
    modifier.labels().labels.clone()
}

/// Compiles a parsed PromQL expression into the supported subset.
pub fn compile(expr: &Expr) -> Result<Node, QueryError> {
    Ok(match expr {
        Expr::NumberLiteral(n) => Node::Number(n.val),
        Expr::Paren(p) => compile(&p.expr)?,
        Expr::Unary(u) => Node::Negate(Box::new(compile(&u.expr)?)),
        Expr::VectorSelector(vs) => Node::Instant(selector(vs)?),
        Expr::MatrixSelector(_) => {
            return Err(unsupported(
                "a bare range selector: wrap it in a function such as rate(...) or avg_over_time(...)",
            ));
        }
        Expr::Subquery(_) => return Err(unsupported("subqueries (`[range:step]`)")),
        Expr::StringLiteral(_) => return Err(unsupported("string literals")),
        Expr::Extension(_) => return Err(unsupported("extension expressions")),
        Expr::Aggregate(agg) => {
            let op = match agg.op.id() {
                token::T_SUM => Aggregation::Sum,
                token::T_AVG => Aggregation::Avg,
                token::T_MIN => Aggregation::Min,
                token::T_MAX => Aggregation::Max,
                token::T_COUNT => Aggregation::Count,
                token::T_QUANTILE => Aggregation::Quantile,
                token::T_STDDEV => Aggregation::Stddev,
                token::T_STDVAR => Aggregation::Stdvar,
                _ => return Err(unsupported(format!("the aggregation `{}`", agg.op))),
            };
            let grouping = match &agg.modifier {
                None => Grouping::All,
                Some(m @ LabelModifier::Include(_)) => Grouping::By(labels_of(m)),
                Some(m @ LabelModifier::Exclude(_)) => Grouping::Without(labels_of(m)),
            };
            let param = match &agg.param {
                Some(param) => Some(Box::new(compile(param)?)),
                None => None,
            };
            Node::Aggregate {
                op,
                param,
                grouping,
                expr: Box::new(compile(&agg.expr)?),
            }
        }
        Expr::Binary(binary) => {
            let op = match binary.op.id() {
                token::T_ADD => BinaryOp::Add,
                token::T_SUB => BinaryOp::Sub,
                token::T_MUL => BinaryOp::Mul,
                token::T_DIV => BinaryOp::Div,
                token::T_MOD => BinaryOp::Mod,
                token::T_POW => BinaryOp::Pow,
                token::T_EQLC => BinaryOp::Eq,
                token::T_NEQ => BinaryOp::Ne,
                token::T_GTR => BinaryOp::Gt,
                token::T_LSS => BinaryOp::Lt,
                token::T_GTE => BinaryOp::Ge,
                token::T_LTE => BinaryOp::Le,
                token::T_LAND => BinaryOp::And,
                token::T_LOR => BinaryOp::Or,
                token::T_LUNLESS => BinaryOp::Unless,
                _ => return Err(unsupported(format!("the operator `{}`", binary.op))),
            };
            let (matching, return_bool) = match &binary.modifier {
                None => (Matching::Default, false),
                Some(modifier) => {
                    match &modifier.card {
                        VectorMatchCardinality::ManyToOne(_) => {
                            return Err(unsupported(
                                "group_left (only one-to-one matching is supported)",
                            ));
                        }
                        VectorMatchCardinality::OneToMany(_) => {
                            return Err(unsupported(
                                "group_right (only one-to-one matching is supported)",
                            ));
                        }
                        _ => {}
                    }
                    let matching = match &modifier.matching {
                        None => Matching::Default,
                        Some(m @ LabelModifier::Include(_)) => Matching::On(labels_of(m)),
                        Some(m @ LabelModifier::Exclude(_)) => Matching::Ignoring(labels_of(m)),
                    };
                    (matching, modifier.return_bool)
                }
            };
            Node::Binary {
                op,
                lhs: Box::new(compile(&binary.lhs)?),
                rhs: Box::new(compile(&binary.rhs)?),
                return_bool,
                matching,
            }
        }
        Expr::Call(call) => {
            let name = call.func.name;
            if let Some(function) = RangeFunction::from_name(name) {
                let ms = match call.args.args.first().map(|a| a.as_ref()) {
                    Some(Expr::MatrixSelector(ms)) => ms,
                    Some(Expr::Subquery(_)) => {
                        return Err(unsupported("subqueries (`[range:step]`)"));
                    }
                    _ => {
                        return Err(unsupported(format!(
                            "{name}() over anything but a range selector such as x[2m]"
                        )));
                    }
                };
                return Ok(Node::Range {
                    function,
                    selector: selector(&ms.vs)?,
                    range: ms.range,
                });
            }
            let function = match name {
                "abs" => Function::Abs,
                "ceil" => Function::Ceil,
                "floor" => Function::Floor,
                "clamp_min" => Function::ClampMin,
                "clamp_max" => Function::ClampMax,
                "scalar" => Function::Scalar,
                "vector" => Function::Vector,
                other => return Err(unsupported(format!("the function `{other}()`"))),
            };
            let args = call
                .args
                .args
                .iter()
                .map(|a| compile(a))
                .collect::<Result<_, _>>()?;
            Node::Call { function, args }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::ascii_classes;

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        let re = |p: &str| regex::Regex::new(&format!("^(?:{})$", ascii_classes(p))).unwrap();
        assert!(re(r"\d+").is_match("123"));
        assert!(
            !re(r"\d+").is_match("١٢٣"),
            "Arabic-Indic digits are not \\d in Go"
        );
        assert!(!re(r"\w+").is_match("héllo"));
        assert!(re(r"[\w.]+").is_match("web.01"));
        assert!(!re(r"\s").is_match("\u{a0}"));
        assert!(
            re(r"a\\d").is_match("a\\d"),
            "an escaped backslash stays one"
        );
        assert!(re(r"[]\d]+").is_match("]1"));
        assert!(re(r".*\bweb\b.*").is_match("x web y"));
        assert!(
            re(r".*\bweb\b.*").is_match("éwebé"),
            "é is no word character in Go"
        );
    }
}
