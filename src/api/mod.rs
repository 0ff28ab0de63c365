//! The status API (loopback by default): health, readiness, the daemon's metrics, groups with
//! their last decisions, and pause, resume and reload behind the status API token.

pub mod metrics;
pub mod page;
pub mod server;

use crate::daemon::run::Daemon;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

type Shared = State<Arc<Daemon>>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Whether the request carries the status API token. Without a configured token, never.
fn authorized(daemon: &Daemon, headers: &HeaderMap) -> bool {
    // The scheme is case-insensitive (RFC 9110): `bearer` works as well as `Bearer`.
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Ok(token) = daemon.api_token.read() else {
        return false;
    };
    match (token.as_ref(), presented) {
        (Some(token), Some(presented)) => {
            constant_time_eq(token.expose().as_bytes(), presented.as_bytes())
        }
        _ => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the running generation has a group of that name.
fn has_group(daemon: &Daemon, name: &str) -> bool {
    daemon
        .generation()
        .config
        .groups
        .iter()
        .any(|g| g.name == name)
}

fn reads_allowed(daemon: &Daemon, headers: &HeaderMap) -> bool {
    daemon.generation().config.base.status_api.open_reads || authorized(daemon, headers)
}

/// Whether a request's `Host` is one a browser can only send when it was pointed at this daemon
/// by address: an IP literal or `localhost`, with or without a port. A page on another site
/// that rebinds its own name to 127.0.0.1 sends its name and is refused, so it cannot read the
/// groups, droplets and decisions even though GETs need no token by default.
fn host_allowed(headers: &HeaderMap) -> bool {
    let Some(host) = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        // HTTP/1.0 clients and tools that send none are not browsers.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6.split_once(']').is_some_and(|(ip, rest)| {
                ip.parse::<std::net::Ipv6Addr>().is_ok()
                    && (rest.is_empty()
                        || rest
                            .strip_prefix(':')
                            .is_some_and(|port| port.parse::<u16>().is_ok()))
            });
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Refuses the page and the JSON API to a `Host` that is a name other than `localhost`
/// (see [`host_allowed`]); `/metrics` and the health checks stay reachable by any name.
async fn rebinding_guard(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let guarded = path == "/" || path.starts_with("/ui/") || path.starts_with("/api/");
    if guarded && !host_allowed(request.headers()) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "the status page and API answer only to an IP address or localhost in Host (a guard against DNS rebinding): open it as http://127.0.0.1:PORT/, or have a reverse proxy send such a Host",
        );
    }
    next.run(request).await
}

/// The router.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/ui/page.js", get(page::script))
        .route("/ui/page.css", get(page::style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/groups/{name}", get(group))
        .route("/api/v1/groups/{name}/decisions", get(decisions))
        .route("/api/v1/groups/{name}/sizes", get(sizes))
        .route("/api/v1/groups/{name}/pause", post(pause))
        .route("/api/v1/groups/{name}/resume", post(resume))
        .route("/api/v1/groups/{name}/refresh/pause", post(pause_refresh))
        .route("/api/v1/groups/{name}/refresh/resume", post(resume_refresh))
        .route("/api/v1/reload", post(reload))
        .layer(axum::middleware::from_fn(rebinding_guard))
        .with_state(daemon)
}

async fn readyz(State(daemon): Shared) -> Response {
    if daemon.groups_ready() {
        "ready".into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not every group has ticked successfully yet",
        )
    }
}

async fn metrics(State(daemon): Shared, headers: HeaderMap) -> Response {
    if !reads_allowed(&daemon, &headers) {
        return error(StatusCode::UNAUTHORIZED, "this API needs the status token");
    }
    daemon.metrics.sync_api(&daemon.client());
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (content_type, body) = daemon.metrics.render_for(accept);
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

fn group_summary(daemon: &Daemon, name: &str) -> Option<serde_json::Value> {
    let generation = daemon.generation();
    let group = generation.config.groups.iter().find(|g| g.name == name)?;
    let status = daemon.group_status(name).unwrap_or_default();
    let decision = status
        .last_decision
        .clone()
        .unwrap_or(serde_json::Value::Null);
    Some(json!({
        "name": group.name,
        "tag": group.tag,
        "min": group.min,
        "max": group.max,
        "interval_seconds": group.interval.as_secs_f64(),
        "bounds": decision.pointer("/decision/bounds"),
        "current": decision.get("current"),
        "desired": decision.get("desired"),
        "paused": daemon.store.is_paused(name),
        "pause_reason": daemon.store.pause_reason(name),
        "refresh_paused": group.refresh.is_some().then(|| daemon.store.is_refresh_paused(name)),
        "running_action": status.running_action,
        "last_action": status.last_action,
        "last_error": status.last_error,
        "replacement": status.replacement,
        "leader": status.leader,
        "leads": status.leads,
        "last_success": status.last_success,
        "ticks": status.ticks,
        "generation": generation.number,
        "reload_error": daemon.reload_error.lock().ok().and_then(|e| e.clone()),
        "digitalocean_last_problem": daemon.client().last_problem(),
        "last_decision": decision,
    }))
}

async fn groups(State(daemon): Shared, headers: HeaderMap) -> Response {
    if !reads_allowed(&daemon, &headers) {
        return error(StatusCode::UNAUTHORIZED, "this API needs the status token");
    }
    let names: Vec<String> = daemon
        .generation()
        .config
        .groups
        .iter()
        .map(|g| g.name.clone())
        .collect();
    let list: Vec<serde_json::Value> = names
        .iter()
        .filter_map(|n| group_summary(&daemon, n))
        .collect();
    axum::Json(json!({ "groups": list })).into_response()
}

async fn group(State(daemon): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if !reads_allowed(&daemon, &headers) {
        return error(StatusCode::UNAUTHORIZED, "this API needs the status token");
    }
    match group_summary(&daemon, &name) {
        Some(summary) => axum::Json(summary).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such group"),
    }
}

async fn decisions(
    State(daemon): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !reads_allowed(&daemon, &headers) {
        return error(StatusCode::UNAUTHORIZED, "this API needs the status token");
    }
    if !has_group(&daemon, &name) {
        return error(StatusCode::NOT_FOUND, "no such group");
    }
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => 20,
        Some(Ok(limit)) => limit.min(1000),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "limit must be a whole number from 0 to 1000",
            );
        }
    };
    match daemon.store.decisions(&name, limit) {
        Ok(list) => axum::Json(json!({ "group": name, "decisions": list })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /api/v1/groups/{name}/sizes`: the day of per-minute sizes behind the page's chart.
async fn sizes(State(daemon): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if !reads_allowed(&daemon, &headers) {
        return error(StatusCode::UNAUTHORIZED, "this API needs the status token");
    }
    if !has_group(&daemon, &name) {
        return error(StatusCode::NOT_FOUND, "no such group");
    }
    let since = daemon.clock.now() - crate::state::sizes::SIZES_KEPT;
    let store = daemon.store.clone();
    let points = crate::daemon::group::blocking(|| store.sizes(&name, since));
    match points {
        Ok(points) => axum::Json(json!({ "group": name, "points": points })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The refusal of a POST about group `name`, if it is refused: it needs the token, and the
/// group must exist.
fn refuse_post_to_group(daemon: &Daemon, headers: &HeaderMap, name: &str) -> Option<Response> {
    if !authorized(daemon, headers) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "POST endpoints need the status API token (Authorization: Bearer …)",
        ));
    }
    if !has_group(daemon, name) {
        return Some(error(StatusCode::NOT_FOUND, "no such group"));
    }
    None
}

async fn set_paused(
    daemon: Arc<Daemon>,
    headers: HeaderMap,
    name: String,
    paused: bool,
) -> Response {
    if let Some(refused) = refuse_post_to_group(&daemon, &headers, &name) {
        return refused;
    }
    match daemon.store.set_paused(&name, paused) {
        Ok(()) => {
            if !paused {
                // Resuming also lets replacement start again after it paused itself.
                if let Err(e) = daemon.store.acknowledge_failed_replacements(&name) {
                    tracing::error!(group = %name, error = %e, "cannot clear the failed replacements");
                }
                daemon
                    .metrics
                    .instance_conflict
                    .get_or_create(&crate::api::metrics::Metrics::group(&name))
                    .set(0);
            }
            tracing::info!(group = %name, paused, "pause flag changed through the status API");
            axum::Json(json!({ "group": name, "paused": paused })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn pause(State(daemon): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    set_paused(daemon, headers, name, true).await
}

async fn resume(State(daemon): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    set_paused(daemon, headers, name, false).await
}

/// Pauses or resumes a group's `[refresh]` (health replacement goes on either way).
async fn set_refresh_paused(
    daemon: Arc<Daemon>,
    headers: HeaderMap,
    name: String,
    paused: bool,
) -> Response {
    if let Some(refused) = refuse_post_to_group(&daemon, &headers, &name) {
        return refused;
    }
    match daemon.store.set_refresh_paused(&name, paused) {
        Ok(()) => {
            tracing::info!(group = %name, paused, "refresh pause flag changed through the status API");
            axum::Json(json!({ "group": name, "refresh_paused": paused })).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn pause_refresh(
    State(daemon): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_refresh_paused(daemon, headers, name, true).await
}

async fn resume_refresh(
    State(daemon): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    set_refresh_paused(daemon, headers, name, false).await
}

async fn reload(State(daemon): Shared, headers: HeaderMap) -> Response {
    if !authorized(&daemon, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "POST endpoints need the status API token (Authorization: Bearer …)",
        );
    }
    match daemon
        .request_reload(crate::daemon::reload::Origin::Api)
        .await
    {
        Ok(generation) => axum::Json(json!({ "generation": generation })).into_response(),
        Err(message) => error(StatusCode::UNPROCESSABLE_ENTITY, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::HOST, host.parse().unwrap());
        headers
    }

    #[test]
    fn only_addresses_and_localhost_pass_the_rebinding_guard() {
        for host in [
            "127.0.0.1:9797",
            "127.0.0.1",
            "10.0.0.5:9797",
            "localhost:9797",
            "LOCALHOST",
            "[::1]:9797",
            "[::1]",
        ] {
            assert!(host_allowed(&with_host(host)), "{host}");
        }
        for host in [
            "evil.example:9797",
            "evil.example",
            "127.0.0.1.evil.example:9797",
            "localhost.evil.example",
            "[::1].evil:80",
            "[not-an-ip]:9797",
        ] {
            assert!(!host_allowed(&with_host(host)), "{host}");
        }
        assert!(host_allowed(&HeaderMap::new()), "no Host: not a browser");
    }
}
