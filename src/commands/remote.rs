//! `do-scaler status | history | pause | resume | reload`: commands for people, talking to a
//! running daemon's status API. Owns finding the daemon (`--api`, else the base file's
//! `status_api.listen`), finding the token (`--token-file`, else the `api-token` credential or
//! `status_api.token_file`), and rendering the answers as tables (or the API's JSON).

use super::check::CommandOutput;
use crate::config::credentials::{self, EnvLookup};
use crate::config::{ApiToken, Overrides};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// How long one request to the daemon may take: a local daemon answers in milliseconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a command asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every group, or one, as a table.
    Status(Option<String>),
    /// A group's recent decisions, newest first.
    History {
        /// The group.
        group: String,
        /// How many decisions.
        limit: u32,
    },
    /// Stop acting (kept across restarts).
    Pause(String),
    /// Act again.
    Resume(String),
    /// Reload the configuration now.
    Reload,
}

/// Where the daemon is and what it is asked with.
#[derive(Debug, Clone)]
pub struct Target {
    /// The status API's base URL, without a trailing slash.
    pub base: String,
    /// The status API token, when one could be read (GETs may not need it).
    pub token: Option<ApiToken>,
    /// Where the token would come from, for the message when a POST has none.
    pub token_hint: String,
}

/// Why a command could not talk to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `--api` is not an address.
    #[error("--api {0}: use a URL such as http://127.0.0.1:9797 or HOST:PORT")]
    Address(String),
    /// Neither `--api` nor a readable base file says where the daemon is.
    #[error("{0}")]
    NoAddress(String),
    /// `--token-file` cannot be read.
    #[error("{0}")]
    Token(String),
    /// The daemon did not answer.
    #[error(
        "cannot reach do-scaler at {url}: {reason} (is it running? its address is the base file's status_api.listen, or pass --api)"
    )]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The daemon answered with an error.
    #[error("do-scaler at {url} answered {status}: {message}")]
    Refused {
        /// What was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The daemon's message, with what to do.
        message: String,
    },
}

/// Finds the daemon: `api` (a URL or HOST:PORT), else `status_api.listen` from the base file
/// at `config`; and its token: `token_file`, else the `api-token` credential or the base
/// file's `status_api.token_file`.
pub fn target(
    api: Option<&str>,
    token_file: Option<&Path>,
    config: &Path,
    env: EnvLookup<'_>,
) -> Result<Target, RemoteError> {
    let mut diagnostics = Vec::new();
    // The base file is read only for what the command line does not say.
    let base = if api.is_some() && token_file.is_some() {
        None
    } else {
        crate::config::load_base(config, &Overrides::default(), &mut diagnostics)
    };
    let url = match api {
        Some(api) => parse_api(api)?,
        None => match &base {
            Some(base) => {
                let listen = base.status_api.listen;
                // A daemon listening on every address is reached on loopback.
                let ip = match listen.ip() {
                    std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                    }
                    std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                    }
                    other => other,
                };
                format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
            }
            None => {
                let reasons: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
                return Err(RemoteError::NoAddress(format!(
                    "cannot read {} to find the daemon's address ({}): pass --api http://HOST:PORT or --config",
                    config.display(),
                    reasons.join("; ")
                )));
            }
        },
    };
    let (token, token_hint) = match token_file {
        Some(path) => {
            let text =
                crate::config::files::read_text(path, crate::config::files::MAX_SECRET_BYTES)
                    .map_err(|e| {
                        RemoteError::Token(format!("--token-file {}: {e}", path.display()))
                    })?;
            let token = ApiToken::new(text);
            if token.expose().is_empty() {
                return Err(RemoteError::Token(format!(
                    "--token-file {}: the file is empty",
                    path.display()
                )));
            }
            (Some(token), format!("--token-file {}", path.display()))
        }
        None => {
            let file = base.as_ref().and_then(|b| b.status_api.token_file.clone());
            let hint = match &file {
                Some(file) => format!(
                    "the `api-token` credential, {} or /etc/do-scaler/credentials/api-token (pass --token-file)",
                    file.display()
                ),
                None => "the `api-token` credential or /etc/do-scaler/credentials/api-token (pass --token-file)".to_string(),
            };
            let token = credentials::status_api_token(env, file.as_deref())
                .ok()
                .map(|(token, _)| token)
                .or_else(|| {
                    // Run by hand (`sudo do-scaler pause web`) there is no CREDENTIALS_DIRECTORY:
                    // the token is where the unit loads it from (the packaged folder, or
                    // DO_SCALER_CREDENTIALS_DIR for an install elsewhere).
                    let folder = env("DO_SCALER_CREDENTIALS_DIR")
                        .unwrap_or_else(|| credentials::PACKAGED_CREDENTIALS_DIR.to_string());
                    let packaged = Path::new(&folder).join("api-token");
                    crate::config::files::read_text(
                        &packaged,
                        crate::config::files::MAX_SECRET_BYTES,
                    )
                    .ok()
                    .map(ApiToken::new)
                    .filter(|t| !t.expose().is_empty())
                });
            (token, hint)
        }
    };
    Ok(Target {
        base: url,
        token,
        token_hint,
    })
}

/// `http://HOST:PORT[/]`, `https://…`, or a bare `HOST:PORT`.
fn parse_api(api: &str) -> Result<String, RemoteError> {
    let text = api.trim();
    let with_scheme = if text.starts_with("http://") || text.starts_with("https://") {
        text.to_string()
    } else if text.contains("://") {
        return Err(RemoteError::Address(api.to_string()));
    } else {
        format!("http://{text}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|_| RemoteError::Address(api.to_string()))?;
    if url.host_str().is_none()
        || url.port_or_known_default().is_none()
        || !url.username().is_empty()
        || url.query().is_some()
    {
        return Err(RemoteError::Address(api.to_string()));
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

/// Runs `request` against the daemon at `target`. `json` prints the API's answer as it is.
pub async fn run(target: &Target, request: &Request, json: bool) -> CommandOutput {
    match ask(target, request).await {
        Ok(answer) => CommandOutput {
            stdout: if json {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                )
            } else {
                render(request, &answer)
            },
            stderr: String::new(),
            exit_code: 0,
        },
        Err(error) => CommandOutput {
            stdout: String::new(),
            stderr: format!("{error}\n"),
            exit_code: 1,
        },
    }
}

fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

async fn ask(target: &Target, request: &Request) -> Result<Value, RemoteError> {
    let (post, path) = match request {
        Request::Status(None) => (false, "/api/v1/groups".to_string()),
        Request::Status(Some(group)) => (false, format!("/api/v1/groups/{}", segment(group))),
        Request::History { group, limit } => (
            false,
            format!("/api/v1/groups/{}/decisions?limit={limit}", segment(group)),
        ),
        Request::Pause(group) => (true, format!("/api/v1/groups/{}/pause", segment(group))),
        Request::Resume(group) => (true, format!("/api/v1/groups/{}/resume", segment(group))),
        Request::Reload => (true, "/api/v1/reload".to_string()),
    };
    let url = format!("{}{path}", target.base);
    let unreachable = |reason: String| RemoteError::Unreachable {
        url: target.base.clone(),
        reason,
    };
    if post && target.token.is_none() {
        return Err(RemoteError::Refused {
            url: target.base.clone(),
            status: 401,
            message: format!(
                "not asked: this needs the status API token, and none was found in {}",
                target.token_hint
            ),
        });
    }
    // No proxy: the daemon is local, and a proxy from the environment would see the token.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let mut builder = if post {
        client.post(&url)
    } else {
        client.get(&url)
    };
    if let Some(token) = &target.token {
        builder = builder.bearer_auth(token.expose());
    }
    let response = builder.send().await.map_err(|e| {
        unreachable(if e.is_timeout() {
            format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
        } else if e.is_connect() {
            "connection refused".to_string()
        } else {
            e.to_string()
        })
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| serde_json::json!({ "error": format!("not JSON: {e}") }));
    if !status.is_success() {
        let mut message = body["error"]
            .as_str()
            .unwrap_or("(no reason given)")
            .to_string();
        if status.as_u16() == 401 {
            message.push_str(&format!(
                " (the token came from {}; is it the daemon's?)",
                target.token_hint
            ));
        }
        return Err(RemoteError::Refused {
            url: target.base.clone(),
            status: status.as_u16(),
            message,
        });
    }
    Ok(body)
}

/// The answer as people read it.
fn render(request: &Request, answer: &Value) -> String {
    match request {
        Request::Status(None) => status_table(answer["groups"].as_array().map_or(&[][..], |g| g)),
        Request::Status(Some(_)) => group_detail(answer),
        Request::History { .. } => history_table(answer),
        Request::Pause(group) => format!("{group}: paused (kept across restarts)\n"),
        Request::Resume(group) => format!("{group}: acting again\n"),
        Request::Reload => format!(
            "reloaded: configuration generation {}\n",
            answer["generation"]
        ),
    }
}

fn number(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        _ => "-".to_string(),
    }
}

fn bounds(group: &Value) -> String {
    let bounds = &group["bounds"];
    let (min, max) = if bounds.is_object() {
        (&bounds["min"], &bounds["max"])
    } else {
        (&group["min"], &group["max"])
    };
    match bounds["schedule"].as_str() {
        Some(schedule) => format!("{}..{} ({schedule})", number(min), number(max)),
        None => format!("{}..{}", number(min), number(max)),
    }
}

fn paused(group: &Value) -> String {
    if group["paused"].as_bool() == Some(true) {
        match group["pause_reason"].as_str() {
            Some(reason) if !reason.is_empty() => format!("yes: {reason}"),
            _ => "yes".to_string(),
        }
    } else {
        "no".to_string()
    }
}

/// A decision's outcome and its reason (see [`crate::policy::outcome_with_reason`]).
pub fn decision_line(decision: &Value) -> String {
    let steps: Vec<&str> = decision["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if steps.is_empty() {
        return "-".to_string();
    }
    crate::policy::outcome_with_reason(&steps)
}

/// The size, with the droplets draining before their destroy and those being replaced (billed,
/// not counted) beside it.
fn size(group: &Value) -> String {
    let decision = &group["last_decision"]["decision"];
    let mut apart = Vec::new();
    for what in ["draining", "replacing"] {
        if let Some(n) = decision[what].as_u64().filter(|n| *n > 0) {
            apart.push(format!("+{n} {what}"));
        }
    }
    if apart.is_empty() {
        number(&group["current"])
    } else {
        format!("{} ({})", number(&group["current"]), apart.join(", "))
    }
}

fn text<'a>(value: &'a Value, or: &'a str) -> &'a str {
    value.as_str().filter(|s| !s.is_empty()).unwrap_or(or)
}

fn status_table(groups: &[Value]) -> String {
    let header = [
        "GROUP",
        "SIZE",
        "DESIRED",
        "BOUNDS",
        "PAUSED",
        "ACTION",
        "LAST DECISION",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 8]> = groups
        .iter()
        .map(|g| {
            [
                text(&g["name"], "?").to_string(),
                size(g),
                number(&g["desired"]),
                bounds(g),
                paused(g),
                text(&g["running_action"], "-").to_string(),
                decision_line(&g["last_decision"]["decision"]),
                text(&g["last_error"], "-").to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header, &mut out);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells, &mut out);
    }
    if rows.is_empty() {
        out.push_str("(no groups)\n");
    }
    out
}

fn group_detail(group: &Value) -> String {
    let mut out = String::new();
    let decision = &group["last_decision"]["decision"];
    let _ = writeln!(out, "group:          {}", text(&group["name"], "?"));
    let _ = writeln!(out, "tag:            {}", text(&group["tag"], "?"));
    let _ = writeln!(
        out,
        "size:           {} (desired {})",
        size(group),
        number(&group["desired"])
    );
    let _ = writeln!(out, "bounds:         {}", bounds(group));
    let _ = writeln!(out, "paused:         {}", paused(group));
    let _ = writeln!(
        out,
        "running action: {}",
        text(&group["running_action"], "-")
    );
    let _ = writeln!(out, "last action:    {}", text(&group["last_action"], "-"));
    let _ = writeln!(out, "last error:     {}", text(&group["last_error"], "-"));
    if let Some(why) = group["replacement"].as_str() {
        let _ = writeln!(out, "replacement:    {why}");
    }
    if let Some(leader) = group["leader"].as_str() {
        let this = if group["leads"].as_bool() == Some(true) {
            " (this daemon)"
        } else {
            " (this daemon follows)"
        };
        let _ = writeln!(out, "leader:         {leader}{this}");
    }
    if let Some(problem) = group["digitalocean_last_problem"].as_str() {
        let _ = writeln!(out, "API problem:    {problem}");
    }
    let _ = writeln!(
        out,
        "last decision:  {} at {}",
        decision_line(decision),
        text(&decision["at"], "-")
    );
    if let Some(steps) = decision["steps"].as_array() {
        for step in steps.iter().filter_map(Value::as_str) {
            let _ = writeln!(out, "  {step}");
        }
    }
    out
}

fn history_table(answer: &Value) -> String {
    let mut out = String::new();
    let decisions = answer["decisions"].as_array().map_or(&[][..], |d| d);
    if decisions.is_empty() {
        out.push_str("(no decisions yet)\n");
    }
    for entry in decisions {
        let decision = entry.get("decision").unwrap_or(entry);
        let _ = writeln!(
            out,
            "{}  {}",
            text(&decision["at"], "-"),
            decision_line(decision)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_urls_or_host_and_port() {
        assert_eq!(
            parse_api("127.0.0.1:9797").unwrap(),
            "http://127.0.0.1:9797"
        );
        assert_eq!(
            parse_api("http://localhost:9797/").unwrap(),
            "http://localhost:9797"
        );
        assert_eq!(parse_api("[::1]:9797").unwrap(), "http://[::1]:9797");
        for bad in [
            "",
            "http://",
            "user:pw@host:1",
            "host:99999",
            "http://h:1/?x=1",
            "ftp://h:1",
        ] {
            assert!(parse_api(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stay_says_what_held_it() {
        let decision = serde_json::json!({"steps": [
            "5 droplets count toward the size: 5 active, 0 booting",
            "rules: `cpu` wins with 3",
            "cooldown.down: the last scale-down was 1m ago, wait 4m: hold at 5",
            "bounds 1..8",
            "decision: stay at 5"
        ]});
        assert_eq!(
            decision_line(&decision),
            "stay at 5: cooldown.down: the last scale-down was 1m ago, wait 4m: hold at 5"
        );
    }

    #[test]
    fn the_table_shows_droplets_draining_beside_the_size() {
        let group = |draining: u64| {
            serde_json::json!({
                "name": "web", "current": 3, "desired": 3, "min": 1, "max": 5,
                "last_decision": {"decision": {"draining": draining, "steps": ["decision: stay at 3"]}}
            })
        };
        let table = status_table(&[group(2)]);
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("web    3 (+2 draining)  3"),
            "{table}"
        );
        let table = status_table(&[group(0)]);
        assert!(!table.contains("draining"), "{table}");
    }
}
