//! `do-scaler query`: evaluate an expression against capture files or live endpoints, to try
//! it before writing it into a rule.

use super::check::CommandOutput;
use crate::metrics::exposition::format_value;
use crate::metrics::history::{DropletIdentity, History};
use crate::metrics::scrape::{DEFAULT_BODY_LIMIT, Scraper};
use crate::query::{EvalOptions, Outcome, Value, compile, evaluate};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Where the samples come from.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Capture files, in time order, `gap` apart.
    Files(Vec<PathBuf>),
    /// Endpoints scraped every `gap` until the longest range is covered.
    Targets(Vec<String>),
}

/// What `query` was asked.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// The expression.
    pub expr: String,
    /// The inputs.
    pub inputs: Inputs,
    /// Time between captures or scrapes.
    pub gap: Duration,
    /// Timeout of one scrape.
    pub timeout: Duration,
}

fn fail(stderr: String) -> CommandOutput {
    CommandOutput {
        stdout: String::new(),
        stderr,
        exit_code: 1,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How many scrapes `gap` apart cover `range` (coverage = scrapes × gap ≥ 80 % of the range).
pub fn scrapes_needed(range: Duration, gap: Duration) -> usize {
    if range.is_zero() {
        return 1;
    }
    // Scrape k (0-based) covers the window once range − k × gap < 1.1 × gap: the daemon's rule.
    let spacings = range.as_secs_f64() / gap.as_secs_f64().max(0.001) - 1.1;
    ((spacings.floor().max(0.0) as usize) + 2).max(2)
}

/// Runs the query.
pub async fn run(request: &QueryRequest) -> CommandOutput {
    let expression = match compile(&request.expr) {
        Ok(expression) => expression,
        Err(error) => return fail(format!("{error}\n")),
    };
    let range = expression.longest_range();
    let selectors = expression
        .node
        .selectors()
        .into_iter()
        .map(|(s, _)| s.clone())
        .collect();
    let mut stderr = String::new();
    let (history, at) = match &request.inputs {
        Inputs::Files(files) => {
            let span = request.gap * files.len() as u32;
            let mut history = History::new(
                selectors,
                range + span + Duration::from_secs(3600),
                1_000_000,
            );
            let end = now_ms();
            for (index, file) in files.iter().enumerate() {
                let text = match crate::config::files::read_text(file, 64 << 20) {
                    Ok(text) => text,
                    Err(e) => return fail(format!("{}:1:1: cannot read: {e}\n", file.display())),
                };
                let at = end - (files.len() - 1 - index) as i64 * request.gap.as_millis() as i64;
                // The files are successive captures of one endpoint.
                let identity = DropletIdentity {
                    id: 1,
                    name: "capture".to_string(),
                    instance: "capture".to_string(),
                    source: crate::config::DROPLETS_SOURCE.to_string(),
                };
                if let Err(error) =
                    history.record(&identity, at, &text, &file.display().to_string())
                {
                    return fail(format!("{error}\n"));
                }
            }
            (history, end)
        }
        Inputs::Targets(targets) => {
            let scraper = match Scraper::new(targets.len().max(1), DEFAULT_BODY_LIMIT) {
                Ok(scraper) => scraper,
                Err(error) => return fail(format!("{error}\n")),
            };
            let rounds = scrapes_needed(range, request.gap);
            let mut history = History::new(
                selectors,
                range + request.gap * (rounds as u32 + 2),
                100_000,
            );
            let mut at = now_ms();
            for round in 1..=rounds {
                at = now_ms();
                for (index, url) in targets.iter().enumerate() {
                    let body = match scraper.fetch(url, request.timeout).await {
                        Ok(body) => body,
                        Err(reason) => return fail(format!("{url}: {reason}\n")),
                    };
                    let identity = DropletIdentity {
                        id: index as u64 + 1,
                        name: url.clone(),
                        instance: url::Url::parse(url)
                            .ok()
                            .and_then(|u| {
                                Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
                            })
                            .unwrap_or_else(|| url.clone()),
                        source: crate::config::DROPLETS_SOURCE.to_string(),
                    };
                    if let Err(error) = history.record(&identity, at, &body, url) {
                        return fail(format!("{error}\n"));
                    }
                }
                eprintln!(
                    "scrape {round}/{rounds} of {} target(s) done",
                    targets.len()
                );
                if round < rounds {
                    tokio::time::sleep(request.gap).await;
                }
            }
            (history, at)
        }
    };
    // The daemon's rules: its lookback for this scrape spacing, its coverage and staleness.
    let options = EvalOptions {
        lookback: crate::daemon::tick::lookback_for(request.gap, request.timeout),
        require_coverage: true,
    };
    let outcome = match evaluate(&expression.node, &history, at, options) {
        Ok(outcome) => outcome,
        Err(error) => return fail(format!("{error}\n")),
    };
    let mut stdout = String::new();
    match outcome {
        Outcome::Value(Value::Scalar(v)) => {
            let _ = writeln!(stdout, "{}", format_value(v));
        }
        Outcome::Value(Value::Vector(samples)) if samples.len() == 1 => {
            let _ = writeln!(stdout, "{}", format_value(samples[0].value));
        }
        Outcome::Value(Value::Vector(samples)) => {
            for sample in samples {
                let _ = writeln!(stdout, "{} {}", sample.labels, format_value(sample.value));
            }
        }
        Outcome::False(reason) => {
            let _ = writeln!(stderr, "empty: the comparison is false ({reason})");
            return CommandOutput {
                stdout,
                stderr,
                exit_code: 2,
            };
        }
        Outcome::Missing(reason) => {
            let _ = writeln!(stderr, "empty: {reason}");
            return CommandOutput {
                stdout,
                stderr,
                exit_code: 2,
            };
        }
    }
    CommandOutput {
        stdout,
        stderr,
        exit_code: 0,
    }
}
