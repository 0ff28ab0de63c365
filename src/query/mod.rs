//! The expression language: a PromQL subset, parsed with `promql-parser`.
//!
//! This module owns parsing and checking expressions; evaluation over the sample history
//! arrives with the metrics stage.

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The text is not PromQL.
    #[error("invalid expression: {0}")]
    Syntax(String),
}

/// Checks that an expression parses.
pub fn check_syntax(expr: &str) -> Result<(), QueryError> {
    if expr.trim().is_empty() {
        return Err(QueryError::Syntax("the expression is empty".into()));
    }
    promql_parser::parser::parse(expr)
        .map(|_| ())
        .map_err(|reason| QueryError::Syntax(reason.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_example_expressions() {
        check_syntax(r#"1 - avg(rate(node_cpu_seconds_total{mode="idle"}[2m]))"#).unwrap();
        check_syntax("avg(node_load1) / count(node_cpu_seconds_total{mode=\"idle\"}) > 0.8")
            .unwrap();
    }

    #[test]
    fn refuses_broken_expressions() {
        assert!(check_syntax("avg(rate(x[2m])").is_err());
        assert!(check_syntax("  ").is_err());
    }
}
