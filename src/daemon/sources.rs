//! The sources a tick reads besides each droplet's do-agent: other endpoints on every droplet,
//! fixed `target` URLs, and remote Prometheus servers that evaluate the rules naming them.
//! Owns how an expression is bound to its source ([`Bound`]), the secrets sources authenticate
//! with (read when used, never kept or shown), and the answer of `/api/v1/query` read into the
//! same [`Outcome`] a local evaluation gives, so both meet the same three-valued truth.

use crate::config::{
    Auth, Group, PrometheusSource, Scrape, Secret, Source, SourceKind, TargetSource,
};
use crate::digitalocean::Droplet;
use crate::metrics::scrape::{self, Credentials, Scraper, Target};
use crate::query::{
    EvalOptions, Expression, Labels, Outcome, QueryError, Sample, Selector, Value, compile,
    evaluate,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// The most a remote server's answer may weigh.
const ANSWER_LIMIT: usize = 4 * 1024 * 1024;

/// An expression bound to where it is evaluated.
#[derive(Debug, Clone)]
pub enum Bound {
    /// Over the group's own history; every selector that names no source reads the bound one.
    Local(Expression),
    /// By the server of the `prometheus` source at this index of the group's sources.
    Remote {
        /// The source's index.
        source: usize,
        /// The query sent (a truth's comparison rewritten with `bool`).
        query: String,
        /// Whether its root is a comparison with `bool` (its values are 0 or 1).
        comparison: bool,
    },
}

/// What remote servers answered this tick, by (source index, query).
pub type RemoteAnswers = HashMap<(usize, String), Result<Outcome, String>>;

impl Bound {
    /// Binds `text` to the source named `source`. As a truth (`as_truth`), a comparison at the
    /// root gives 0 or 1 per series instead of filtering, so false is told from missing.
    pub fn new(
        text: &str,
        source: &str,
        sources: &[Source],
        as_truth: bool,
    ) -> Result<Bound, QueryError> {
        let index = sources.iter().position(|s| s.name == source);
        match index.map(|i| (i, &sources[i])) {
            Some((index, found)) if found.is_remote() => {
                let (query, comparison) = if as_truth {
                    crate::query::remote_truth_query(text)?
                } else {
                    crate::query::check_remote_syntax(text)?;
                    (text.to_string(), false)
                };
                Ok(Bound::Remote {
                    source: index,
                    query,
                    comparison,
                })
            }
            _ => {
                let mut expression = compile(text)?;
                // With one local source every series is its own: the selectors stay as
                // written, and so do the messages that quote them.
                if sources.iter().filter(|s| !s.is_remote()).count() > 1 {
                    crate::query::restrict_to_source(&mut expression.node, source);
                }
                if as_truth {
                    expression.node = crate::query::as_truth(&expression.node);
                }
                Ok(Bound::Local(expression))
            }
        }
    }

    /// Whether its values are a comparison's 0 or 1 (`bool` at the root).
    pub fn is_bool(&self) -> bool {
        match self {
            Bound::Local(expression) => matches!(
                expression.node,
                crate::query::Node::Binary {
                    return_bool: true,
                    ..
                }
            ),
            Bound::Remote { comparison, .. } => *comparison,
        }
    }

    /// The local expression, if it is one.
    pub fn local(&self) -> Option<&Expression> {
        match self {
            Bound::Local(expression) => Some(expression),
            Bound::Remote { .. } => None,
        }
    }

    /// Its value at `at_ms`: evaluated over `history`, or what its server answered.
    pub fn evaluate(
        &self,
        history: &crate::metrics::History,
        at_ms: i64,
        options: EvalOptions,
        remote: &RemoteAnswers,
    ) -> Result<Outcome, String> {
        match self {
            Bound::Local(expression) => {
                evaluate(&expression.node, history, at_ms, options).map_err(|e| e.to_string())
            }
            Bound::Remote { source, query, .. } => remote
                .get(&(*source, query.clone()))
                .cloned()
                .unwrap_or_else(|| Err("the server was not asked this tick".into())),
        }
    }
}

/// Whether a selector can select series of a per-droplet source (the partial-data guard's
/// concern); a target's series are no droplet's.
pub fn reads_droplets(selector: &Selector, sources: &[Source]) -> bool {
    sources.iter().filter(|s| s.is_per_droplet()).any(|s| {
        selector
            .matchers
            .iter()
            .filter(|m| m.name == "source")
            .all(|m| m.is_match(&s.name))
    })
}

/// What one source gave this tick, for `plan` and the status API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    /// The source's name.
    pub name: String,
    /// "droplets", "target" or "prometheus".
    pub kind: &'static str,
    /// What it answered: how many endpoints answered, or the queries' outcomes.
    pub answered: String,
    /// How long its slowest fetch or query took, in milliseconds.
    pub took_ms: f64,
}

/// The kind of a source, as configured.
pub fn kind_name(source: &Source) -> &'static str {
    match source.kind {
        SourceKind::Droplets(_) => "droplets",
        SourceKind::Target(_) => "target",
        SourceKind::Prometheus(_) => "prometheus",
    }
}

/// Reads a secret where it is used (a rotated file is picked up), trimmed; an empty one is an
/// error. The error names where it looked, never the content.
pub fn read_secret(
    secret: &Secret,
    credentials_dir: Option<&Path>,
) -> Result<crate::config::ApiToken, String> {
    let path = match secret {
        Secret::File(path) => path.clone(),
        Secret::Credential(name) => match credentials_dir {
            Some(dir) => crate::config::credentials::credential_path(dir, name),
            None => {
                return Err(format!(
                    "the systemd credential `{name}` is not loaded: no CREDENTIALS_DIRECTORY (the packaged unit loads every file of /etc/do-scaler/credentials/: put it there as `{name}`, or add LoadCredential={name}:<file> to your unit)"
                ));
            }
        },
    };
    let text = crate::config::files::read_text(&path, crate::config::files::MAX_SECRET_BYTES)
        .map_err(|e| format!("cannot read the secret {}: {e}", path.display()))?;
    let token = crate::config::ApiToken::new(text);
    if token.expose().is_empty() {
        return Err(format!("the secret {} is empty", path.display()));
    }
    Ok(token)
}

/// The credentials a source's requests carry.
pub fn credentials(
    auth: &Option<Auth>,
    credentials_dir: Option<&Path>,
) -> Result<Option<Credentials>, String> {
    Ok(match auth {
        None => None,
        Some(Auth::Bearer(secret)) => {
            Some(Credentials::Bearer(read_secret(secret, credentials_dir)?))
        }
        Some(Auth::Basic { username, password }) => Some(Credentials::Basic(
            username.clone(),
            read_secret(password, credentials_dir)?,
        )),
    })
}

/// The droplet sources' scrape targets among `active` droplets: the implicit `droplets`
/// source's first. Droplets without an address of a source's kind are reported per source.
pub fn droplet_targets(
    group: &Group,
    active: &[Droplet],
) -> (Vec<Target>, Vec<(u64, String, scrape::MissingReason)>) {
    let mut targets = Vec::new();
    let mut missing = Vec::new();
    for source in &group.sources {
        let SourceKind::Droplets(settings) = &source.kind else {
            continue;
        };
        let settings: &Scrape = settings;
        let (ready, lacking) = scrape::targets(active, settings, &|_| false);
        targets.extend(ready.into_iter().map(|mut t| {
            t.source.clone_from(&source.name);
            t
        }));
        missing.extend(
            lacking
                .into_iter()
                .map(|(id, reason)| (id, source.name.clone(), reason)),
        );
    }
    (targets, missing)
}

/// The `target` sources' URLs due at `now` (each source at most once per its interval, with
/// a tenth of slack for a tick's jitter). A source whose secret cannot be read is reported
/// and skipped.
pub fn due_targets(
    group: &Group,
    last_fetched: &HashMap<String, DateTime<Utc>>,
    credentials_dir: Option<&Path>,
    now: DateTime<Utc>,
) -> (Vec<Target>, Vec<SourceReport>) {
    let mut targets = Vec::new();
    let mut failed = Vec::new();
    for source in &group.sources {
        let SourceKind::Target(settings) = &source.kind else {
            continue;
        };
        let settings: &TargetSource = settings;
        let every = chrono::Duration::from_std(settings.interval - settings.interval / 10)
            .unwrap_or_default();
        if last_fetched
            .get(&source.name)
            .is_some_and(|last| now - *last < every)
        {
            continue;
        }
        let credentials = match credentials(&settings.auth, credentials_dir) {
            Ok(credentials) => credentials,
            Err(reason) => {
                failed.push(SourceReport {
                    name: source.name.clone(),
                    kind: "target",
                    answered: format!("not scraped: {reason}"),
                    took_ms: 0.0,
                });
                continue;
            }
        };
        for url in &settings.urls {
            let instance = url::Url::parse(url)
                .ok()
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
                .unwrap_or_else(|| url.clone());
            targets.push(Target {
                droplet_id: 0,
                droplet_name: String::new(),
                instance,
                url: url.clone(),
                source: source.name.clone(),
                timeout: settings.timeout,
                credentials: credentials.clone(),
            });
        }
    }
    (targets, failed)
}

/// Asks a Prometheus-compatible server for `query` at `at` (`/api/v1/query`), cut at the
/// source's timeout. An error, a timeout or an empty answer is missing, never zero.
pub async fn query_remote(
    scraper: &Scraper,
    source: &PrometheusSource,
    query: &str,
    at: DateTime<Utc>,
) -> Result<Outcome, String> {
    let credentials = credentials(&source.auth, scraper.credentials_dir())?;
    let endpoint = format!("{}/api/v1/query", source.url);
    let time = format!("{:.3}", at.timestamp_millis() as f64 / 1000.0);
    let server_timeout = format!("{}ms", source.timeout.as_millis());
    let mut request = scraper
        .http()
        .get(&endpoint)
        .query(&[
            ("query", query),
            ("time", time.as_str()),
            ("timeout", server_timeout.as_str()),
        ])
        .timeout(source.timeout);
    if let Some(credentials) = &credentials {
        request = credentials.apply(request);
    }
    let no_answer = || {
        format!(
            "{endpoint}: no answer within {}",
            crate::config::duration::format_duration(source.timeout)
        )
    };
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            no_answer()
        } else {
            format!("{endpoint}: {e}")
        }
    };
    let ask = async {
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > ANSWER_LIMIT {
                return Err(format!(
                    "{endpoint}: the answer is larger than {ANSWER_LIMIT} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        read_answer(&body, status.as_u16())
    };
    match tokio::time::timeout(source.timeout, ask).await {
        Ok(answer) => answer,
        Err(_) => Err(no_answer()),
    }
}

/// Reads the body of an `/api/v1/query` answer.
pub fn read_answer(body: &[u8], status: u16) -> Result<Outcome, String> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the server answered HTTP {status}, not JSON: {e}"))?;
    if json["status"] != "success" {
        return Err(format!(
            "the server answered HTTP {status}: {} {}",
            json["errorType"].as_str().unwrap_or("error"),
            crate::config::diagnostic::printable(json["error"].as_str().unwrap_or("(no reason)"))
        ));
    }
    let data = &json["data"];
    let number = |pair: &serde_json::Value| -> Result<f64, String> {
        pair.get(1)
            .and_then(|v| v.as_str())
            .and_then(crate::metrics::exposition::parse_value)
            .ok_or_else(|| format!("the server's value {pair} is not [time, \"number\"]"))
    };
    match data["resultType"].as_str() {
        Some("vector") => {
            let result = data["result"]
                .as_array()
                .ok_or("the server's vector has no result list")?;
            if result.is_empty() {
                return Ok(Outcome::Missing(
                    "the server answered no series (no data)".into(),
                ));
            }
            let samples = result
                .iter()
                .map(|entry| {
                    let metric = entry["metric"].as_object();
                    let labels = Labels::new(
                        metric
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))),
                    );
                    Ok(Sample {
                        labels,
                        value: number(&entry["value"])?,
                    })
                })
                .collect::<Result<Vec<Sample>, String>>()?;
            Ok(Outcome::Value(Value::Vector(samples)))
        }
        Some("scalar") => Ok(Outcome::Value(Value::Scalar(number(&data["result"])?))),
        other => Err(format!(
            "the server answered a {} where a vector or scalar was expected",
            other.unwrap_or("result without a type")
        )),
    }
}

/// Asks every remote query of the tick at once, each cut at its source's timeout.
pub async fn ask_all(
    scraper: &Scraper,
    sources: &[Source],
    queries: Vec<(usize, String)>,
    at: DateTime<Utc>,
) -> (RemoteAnswers, Vec<SourceReport>) {
    let mut set = tokio::task::JoinSet::new();
    for (index, query) in queries {
        let Some(SourceKind::Prometheus(settings)) = sources.get(index).map(|s| &s.kind) else {
            continue;
        };
        let settings = settings.clone();
        let scraper = scraper.clone();
        set.spawn(async move {
            let started = tokio::time::Instant::now();
            let answer = query_remote(&scraper, &settings, &query, at).await;
            (index, query, answer, started.elapsed())
        });
    }
    let mut answers = RemoteAnswers::new();
    let mut per_source: HashMap<usize, (usize, usize, Duration, Option<String>)> = HashMap::new();
    while let Some(joined) = set.join_next().await {
        let Ok((index, query, answer, took)) = joined else {
            continue;
        };
        let entry = per_source.entry(index).or_default();
        entry.0 += 1;
        entry.2 = entry.2.max(took);
        match &answer {
            Ok(Outcome::Value(_)) => entry.1 += 1,
            Ok(Outcome::Missing(reason) | Outcome::False(reason)) => {
                entry.3.get_or_insert_with(|| reason.clone());
            }
            Err(reason) => {
                entry.3.get_or_insert_with(|| reason.clone());
            }
        }
        answers.insert((index, query), answer);
    }
    let mut reports: Vec<SourceReport> = per_source
        .into_iter()
        .map(|(index, (asked, valued, took, problem))| SourceReport {
            name: sources[index].name.clone(),
            kind: "prometheus",
            answered: match problem {
                None => format!("{valued} of {asked} queries answered"),
                Some(reason) => {
                    format!("{valued} of {asked} queries answered; {reason}")
                }
            },
            took_ms: took.as_secs_f64() * 1000.0,
        })
        .collect();
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    (answers, reports)
}

/// Reads a per-droplet answer into a value per droplet: by its `droplet_id` label, or else by
/// its `instance` (the address a Prometheus server scraped, `ip:port` or just `ip`) matched
/// against the droplets' addresses.
pub fn per_droplet(samples: &[Sample], droplets: &[Droplet]) -> HashMap<u64, f64> {
    let mut by_address: HashMap<String, u64> = HashMap::new();
    for droplet in droplets {
        for address in droplet
            .private_ipv4()
            .into_iter()
            .chain(droplet.public_ipv4())
        {
            by_address.insert(address.to_string(), droplet.id);
        }
    }
    let mut values = HashMap::new();
    for sample in samples {
        let id = sample
            .labels
            .get("droplet_id")
            .parse::<u64>()
            .ok()
            .or_else(|| {
                let instance = sample.labels.get("instance");
                let host = instance
                    .rsplit_once(':')
                    .map(|(host, _)| host)
                    .unwrap_or(instance);
                by_address.get(host).copied()
            });
        if let Some(id) = id {
            values.insert(id, sample.value);
        }
    }
    values
}

/// Every remote query the bound expressions need, once each.
pub fn remote_queries<'a>(bound: impl Iterator<Item = &'a Bound>) -> Vec<(usize, String)> {
    let mut queries: Vec<(usize, String)> = bound
        .filter_map(|b| match b {
            Bound::Remote { source, query, .. } => Some((*source, query.clone())),
            Bound::Local(_) => None,
        })
        .collect();
    queries.sort();
    queries.dedup();
    queries
}

/// The lookback of a group's instant selectors: two of the longest interval any of its
/// sources is scraped at, plus the longest scrape timeout, at least 30 s.
pub fn lookback(group: &Group) -> Duration {
    let (mut every, mut timeout) = (group.interval, group.scrape.timeout);
    for source in &group.sources {
        match &source.kind {
            SourceKind::Droplets(settings) => timeout = timeout.max(settings.timeout),
            SourceKind::Target(settings) => {
                every = every.max(settings.interval);
                timeout = timeout.max(settings.timeout);
            }
            SourceKind::Prometheus(_) => {}
        }
    }
    super::tick::lookback_for(every, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prometheus_answer_reads_as_values_and_an_empty_one_as_missing() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","instance":"10.0.0.1:9110"},"value":[1700000000.5,"1"]},
            {"metric":{"instance":"10.0.0.2:9110"},"value":[1700000000.5,"NaN"]}]}}"#;
        let Ok(Outcome::Value(Value::Vector(samples))) = read_answer(vector, 200) else {
            panic!("not a vector");
        };
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].value, 1.0);
        assert!(samples[1].value.is_nan());
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#;
        assert_eq!(
            read_answer(scalar, 200),
            Ok(Outcome::Value(Value::Scalar(2.5)))
        );
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(read_answer(empty, 200), Ok(Outcome::Missing(_))));
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(read_answer(error, 400).unwrap_err().contains("bad_data"));
        assert!(read_answer(b"<html>", 502).is_err());
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(read_answer(matrix, 200).unwrap_err().contains("matrix"));
    }

    #[test]
    fn secrets_are_read_where_they_are_named_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drone-token"), "s3cret\n").unwrap();
        let token =
            read_secret(&Secret::Credential("drone-token".into()), Some(dir.path())).unwrap();
        assert_eq!(token.expose(), "s3cret");
        assert!(!format!("{token:?} {token}").contains("s3cret"));
        let missing =
            read_secret(&Secret::Credential("absent".into()), Some(dir.path())).unwrap_err();
        assert!(missing.contains("absent"), "{missing}");
        let unloaded = read_secret(&Secret::Credential("x".into()), None).unwrap_err();
        assert!(unloaded.contains("LoadCredential"), "{unloaded}");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        assert!(read_secret(&Secret::File(dir.path().join("empty")), None).is_err());
    }
}
