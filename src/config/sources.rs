//! Checks and builds the places a group's rules read (`[[source]]`, the implicit `droplets`
//! source of `[scrape]`) and what names them: a rule's, `scale_in`'s and `[idle]`'s `source`,
//! and the expressions each of those reads (compiled locally, or only parsed when a remote
//! Prometheus server evaluates them). Also `[idle]` itself.

use super::model::{
    AddressKind, Auth, DROPLETS_SOURCE, Idle, PrometheusSource, Scrape, Secret, Source, SourceKind,
    TargetSource,
};
use super::schema::{GroupFile, IdleFile, SourceFile};
use super::validate::{Report, check_expression, duration_or, span_of};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// Prometheus's lookback: a source scraped this rarely would have its series vanish between
/// scrapes, so `check` refuses such an interval.
pub const LOOKBACK_LIMIT: Duration = Duration::from_secs(300);

/// Checks that a systemd credential name is a plain file name.
pub fn check_credential_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "credential name `{}` must be a plain file name (letters, digits, `-`, `_`, `.`), as loaded with LoadCredential=",
            name.escape_default()
        ))
    }
}

/// The sources of a group: `droplets` (the group's `[scrape]`) first, then each `[[source]]`.
pub(super) fn build_sources(
    file: &GroupFile,
    scrape: &Scrape,
    (interval, tick_timeout): (Duration, Duration),
    base_dir: &Path,
    report: &mut Report<'_>,
) -> Vec<Source> {
    let mut sources = vec![Source {
        name: DROPLETS_SOURCE.to_string(),
        kind: SourceKind::Droplets(scrape.clone()),
    }];
    let mut names = HashSet::from([DROPLETS_SOURCE.to_string()]);
    for spanned in &file.sources {
        let source = spanned.get_ref();
        let name = source.name.get_ref().clone();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !valid_name {
            report.error(
                span_of(&source.name),
                format!(
                    "source name `{}` must be 1 to 64 letters, digits, `-` or `_`: series carry it as source=\"<name>\"",
                    name.escape_default()
                ),
            );
        } else if name == DROPLETS_SOURCE {
            report.error(
                span_of(&source.name),
                "the source `droplets` is the group's [scrape] table: configure it there, or give this source another name",
            );
        } else if !names.insert(name.clone()) {
            report.error(
                span_of(&source.name),
                format!(
                    "a second source is named `{name}`: source names must be unique in a group"
                ),
            );
        }
        if let Some(kind) = build_source(source, (interval, tick_timeout), base_dir, report) {
            sources.push(Source { name, kind });
        }
    }
    sources
}

/// Refuses the keys that do not belong to a source's kind.
fn refuse_keys(
    source: &SourceFile,
    kind: &str,
    keys: &[(&str, Option<std::ops::Range<usize>>)],
    report: &mut Report<'_>,
) {
    for (key, span) in keys {
        if let Some(span) = span {
            report.error(
                Some(span.clone()),
                format!(
                    "source `{}` is of kind \"{kind}\", which has no `{key}`: remove it (see the README's section on sources)",
                    source.name.get_ref()
                ),
            );
        }
    }
}

fn span<T>(value: &Option<Spanned<T>>) -> Option<std::ops::Range<usize>> {
    value.as_ref().map(Spanned::span)
}

fn build_source(
    source: &SourceFile,
    (interval, tick_timeout): (Duration, Duration),
    base_dir: &Path,
    report: &mut Report<'_>,
) -> Option<SourceKind> {
    let name = source.name.get_ref();
    let urls_span = source
        .urls
        .as_ref()
        .and_then(|u| u.first().map(Spanned::span));
    let timeout = |default: Duration, report: &mut Report<'_>| {
        let timeout = duration_or(&source.timeout, default);
        if timeout.is_zero() || timeout >= tick_timeout {
            report.error(
                span(&source.timeout),
                format!(
                    "source `{name}`: timeout must be above 0s and below the group's tick_timeout ({})",
                    super::duration::format_duration(tick_timeout)
                ),
            );
        }
        timeout
    };
    match source.kind.get_ref().as_str() {
        "droplets" => {
            refuse_keys(
                source,
                "droplets",
                &[
                    ("urls", urls_span),
                    ("url", span(&source.url)),
                    ("interval", span(&source.interval)),
                    ("token_file", span(&source.token_file)),
                    ("token_credential", span(&source.token_credential)),
                    ("username", span(&source.username)),
                    ("password_credential", span(&source.password_credential)),
                    ("password_file", span(&source.password_file)),
                ],
                report,
            );
            let address = match source.address.as_ref().map(|a| a.get_ref().as_str()) {
                None | Some("private") => AddressKind::Private,
                Some("public") => AddressKind::Public,
                Some("ipv6") => AddressKind::Ipv6,
                Some(other) => {
                    report.error(
                        span(&source.address),
                        format!("source `{name}`: unknown address `{other}`: use \"private\", \"public\" or \"ipv6\""),
                    );
                    AddressKind::Private
                }
            };
            let port = match &source.port {
                Some(port) if *port.get_ref() > 0 => *port.get_ref(),
                Some(port) => {
                    report.error(span_of(port), format!("source `{name}`: port cannot be 0"));
                    0
                }
                None => {
                    report.error(
                        span_of(&source.kind),
                        format!("source `{name}` of kind \"droplets\" needs `port`, the endpoint's port on each droplet"),
                    );
                    0
                }
            };
            let path = source
                .path
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_else(|| "/metrics".into());
            if !path.starts_with('/') {
                report.error(
                    span(&source.path),
                    format!("source `{name}`: path `{path}` must start with `/`"),
                );
            }
            Some(SourceKind::Droplets(Scrape {
                address,
                port,
                path,
                timeout: timeout(Duration::from_secs(3).min(tick_timeout / 2), report),
            }))
        }
        "target" => {
            refuse_keys(
                source,
                "target",
                &[
                    ("address", span(&source.address)),
                    ("port", span(&source.port)),
                    ("path", span(&source.path)),
                    ("url", span(&source.url)),
                    ("username", span(&source.username)),
                    ("password_credential", span(&source.password_credential)),
                    ("password_file", span(&source.password_file)),
                ],
                report,
            );
            let mut urls = Vec::new();
            let mut instances = HashSet::new();
            match &source.urls {
                None => report.error(
                    span_of(&source.kind),
                    format!("source `{name}` of kind \"target\" needs `urls`, such as [\"https://drone.example.com/metrics\"]"),
                ),
                Some(list) if list.is_empty() => report.error(
                    span_of(&source.kind),
                    format!("source `{name}`: urls is empty: list at least one URL"),
                ),
                Some(list) => {
                    for url in list {
                        match check_url(url.get_ref()) {
                            Ok(instance) => {
                                if !instances.insert(instance.clone()) {
                                    report.error(
                                        span_of(url),
                                        format!("source `{name}`: a second URL on {instance}: each URL is its own instance=\"host:port\", so two on one address could not be told apart"),
                                    );
                                }
                                urls.push(url.get_ref().clone());
                            }
                            Err(reason) => {
                                report.error(span_of(url), format!("source `{name}`: {reason}"))
                            }
                        }
                    }
                }
            }
            let every = duration_or(&source.interval, interval);
            if every.is_zero() || every >= LOOKBACK_LIMIT {
                report.error(
                    span(&source.interval),
                    format!("source `{name}`: interval must be above 0s and below the 5-minute lookback (its series would flicker at the lookback's edge)"),
                );
            }
            Some(SourceKind::Target(TargetSource {
                urls,
                interval: every,
                timeout: timeout(Duration::from_secs(3).min(tick_timeout / 2), report),
                auth: build_auth(source, base_dir, report),
            }))
        }
        "prometheus" => {
            refuse_keys(
                source,
                "prometheus",
                &[
                    ("address", span(&source.address)),
                    ("port", span(&source.port)),
                    ("path", span(&source.path)),
                    ("urls", urls_span),
                    ("interval", span(&source.interval)),
                ],
                report,
            );
            let url = match &source.url {
                Some(url) => match check_url(url.get_ref()) {
                    Ok(_) => url.get_ref().trim_end_matches('/').to_string(),
                    Err(reason) => {
                        report.error(span_of(url), format!("source `{name}`: {reason}"));
                        String::new()
                    }
                },
                None => {
                    report.error(
                        span_of(&source.kind),
                        format!("source `{name}` of kind \"prometheus\" needs `url`, the server's base URL such as \"http://127.0.0.1:9090\""),
                    );
                    String::new()
                }
            };
            Some(SourceKind::Prometheus(PrometheusSource {
                url,
                timeout: timeout(Duration::from_secs(10).min(tick_timeout / 2), report),
                auth: build_auth(source, base_dir, report),
            }))
        }
        other => {
            report.error(
                span_of(&source.kind),
                format!("source `{name}`: unknown kind `{other}`: use \"droplets\", \"target\" or \"prometheus\""),
            );
            None
        }
    }
}

/// Checks an `http(s)://` URL with no credentials in it; returns its `host:port`.
fn check_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{text}` must start with http:// or https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the URL holds a user name or password: secrets never go in the configuration; use token_credential, token_file or username with password_credential".into(),
        );
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("`{text}` has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("`{text}` has no port"))?;
    Ok(format!("{host}:{port}"))
}

fn build_auth(source: &SourceFile, base_dir: &Path, report: &mut Report<'_>) -> Option<Auth> {
    let name = source.name.get_ref();
    let secret = |file: &Option<Spanned<String>>,
                  credential: &Option<Spanned<String>>,
                  keys: (&str, &str),
                  report: &mut Report<'_>|
     -> Option<Secret> {
        match (file, credential) {
            (Some(_), Some(credential)) => {
                report.error(
                    span_of(credential),
                    format!(
                        "source `{name}` sets both {} and {}: keep one",
                        keys.0, keys.1
                    ),
                );
                None
            }
            (Some(file), None) => Some(Secret::File(base_dir.join(file.get_ref()))),
            (None, Some(credential)) => {
                if let Err(reason) = check_credential_name(credential.get_ref()) {
                    report.error(span_of(credential), format!("source `{name}`: {reason}"));
                }
                Some(Secret::Credential(credential.get_ref().clone()))
            }
            (None, None) => None,
        }
    };
    let bearer = secret(
        &source.token_file,
        &source.token_credential,
        ("token_file", "token_credential"),
        report,
    );
    let password = secret(
        &source.password_file,
        &source.password_credential,
        ("password_file", "password_credential"),
        report,
    );
    match (&source.username, bearer, password) {
        (Some(username), None, Some(password)) => Some(Auth::Basic {
            username: username.get_ref().clone(),
            password,
        }),
        (Some(username), _, None) => {
            report.error(
                span_of(username),
                format!("source `{name}`: username needs password_credential or password_file"),
            );
            None
        }
        (None, _, Some(_)) => {
            report.error(
                span(&source.password_credential).or(span(&source.password_file)),
                format!("source `{name}`: a password needs `username`"),
            );
            None
        }
        (Some(username), Some(_), Some(_)) => {
            report.error(
                span_of(username),
                format!(
                    "source `{name}` sets both a bearer token and basic authentication: keep one"
                ),
            );
            None
        }
        (None, bearer, None) => bearer.map(Auth::Bearer),
    }
}

/// Resolves `source = "..."` (default `droplets`) against the group's sources and checks the
/// expressions that read it: compiled locally, or only parsed when a remote server evaluates
/// them. Returns the name.
pub(super) fn resolve_source(
    sources: &[Source],
    named: &Option<Spanned<String>>,
    what: &str,
    expressions: &[(String, &Spanned<String>)],
    report: &mut Report<'_>,
) -> String {
    let name = named
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| DROPLETS_SOURCE.to_string());
    let Some(source) = sources.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        report.error(
            named.as_ref().and_then(span_of),
            format!(
                "{what} names the source `{name}`, which this group does not declare: add a [[source]] named `{name}` or use one of: {}",
                known.join(", ")
            ),
        );
        return name;
    };
    for (key, expr) in expressions {
        if source.is_remote() {
            if let Err(reason) = crate::query::check_remote_syntax(expr.get_ref()) {
                report.error(span_of(expr), format!("{key}: {reason}"));
            }
        } else {
            check_expression(report, key, expr);
        }
    }
    name
}

/// `[idle]`.
pub(super) fn build_idle(
    idle: &Spanned<IdleFile>,
    sources: &[Source],
    report: &mut Report<'_>,
) -> Idle {
    let file = idle.get_ref();
    let source = resolve_source(
        sources,
        &file.source,
        "[idle]",
        &[("idle.busy".to_string(), &file.busy)],
        report,
    );
    Idle {
        count: *file.count.get_ref(),
        busy: file.busy.get_ref().clone(),
        time: duration_or(&file.time, Duration::ZERO),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_are_plain_file_names() {
        for good in ["drone-rpc-secret", "gitlab_token", "prom.pass"] {
            assert!(check_credential_name(good).is_ok(), "{good}");
        }
        for bad in ["", "..", "../etc/passwd", "a/b", "tok en", "x\n"] {
            assert!(check_credential_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_give_their_instance_and_refuse_inline_secrets() {
        assert_eq!(
            check_url("http://127.0.0.1:8080/drone/metrics").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            check_url("https://ci.example.com/metrics").unwrap(),
            "ci.example.com:443"
        );
        assert!(check_url("https://user:pw@ci.example.com/metrics").is_err());
        assert!(check_url("ftp://ci.example.com/").is_err());
        assert!(check_url("not a url").is_err());
    }
}
