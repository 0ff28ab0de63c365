//! The simulated DigitalOcean API: the endpoints do-scaler uses, with the API description's
//! JSON shapes, absolute pagination links, `ratelimit-*` headers, bearer authentication, and
//! injected faults.

use super::Shared;
use super::catalog;
use super::state::{CreateRefusal, RecordedRequest};
use crate::digitalocean::client::endpoint_template;
use crate::digitalocean::types::{CreateDroplets, LoadBalancer};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The host the real API puts in its links; the sim does the same so clients must rebase.
pub const PUBLIC_API: &str = "https://api.digitalocean.com";

type Shared2 = State<Arc<Shared>>;

/// An API error answer in DigitalOcean's shape.
pub fn error(status: StatusCode, id: &str, message: &str) -> Response {
    let body = json!({ "id": id, "message": message, "request_id": format!("sim-{:08x}", fastrand::u32(..)) });
    (status, axum::Json(body)).into_response()
}

/// The router of the API. Every path also answers with a trailing slash, as the real API's do.
pub fn router(shared: Arc<Shared>) -> Router {
    let routes: Vec<(&str, axum::routing::MethodRouter<Arc<Shared>>)> = vec![
        (
            "/v2/droplets",
            get(list_droplets)
                .post(create_droplets)
                .delete(delete_by_tag),
        ),
        ("/v2/droplets/{id}", get(get_droplet).delete(delete_droplet)),
        ("/v2/actions/{id}", get(get_action)),
        ("/v2/account", get(account)),
        ("/v2/sizes", get(sizes)),
        ("/v2/regions", get(regions)),
        ("/v2/images/{key}", get(image)),
        ("/v2/account/keys/{key}", get(ssh_key)),
        ("/v2/vpcs/{id}", get(vpc)),
        ("/v2/tags", post(create_tag)),
        ("/v2/tags/{name}", get(get_tag).delete(delete_tag)),
        ("/v2/load_balancers/{id}", get(get_load_balancer)),
        (
            "/v2/load_balancers/{id}/droplets",
            post(add_to_load_balancer).delete(remove_from_load_balancer),
        ),
    ];
    let mut router = Router::new();
    for (path, method) in routes {
        router = router
            .route(path, method.clone())
            .route(&format!("{path}/"), method);
    }
    router
        .route_layer(middleware::from_fn_with_state(shared.clone(), gate))
        .route("/v2/_sim/stats", get(stats))
        // The sim's time and speed, for `--clock`: no token, like the stats.
        .route("/v2/_sim/clock", get(clock))
        // Test controls, like the stats: no token.
        .route("/v2/_sim/droplets/{id}/unhealthy", post(make_unhealthy))
        .route("/v2/_sim/droplets/{id}/healthy", post(make_healthy))
        // Like a Prometheus target: no token.
        .route("/drone/metrics", get(drone_metrics))
        .route("/gitlab/metrics", get(gitlab_metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "The resource you were accessing could not be found.",
            )
        })
        .with_state(shared)
}

/// Authentication, counting, recording, faults and rate limits, around every API call.
async fn gate(State(shared): Shared2, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let template = endpoint_template(&path);
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ").is_some_and(|t| t == shared.token));
    let query: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, 1024 * 1024).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body too large",
        );
    };
    let json_body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let now = shared.clock.now();
    let (fault, latency, rate) = {
        let mut state = shared.lock();
        *state
            .stats
            .api
            .entry(format!("{method} {template}"))
            .or_insert(0) += 1;
        state.requests.push_back(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query,
            body: json_body,
        });
        if state.requests.len() > 10_000 {
            state.requests.pop_front();
        }
        let faults = state.faults.clone();
        let fault = if !authorized {
            Some(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unable to authenticate you",
            ))
        } else if state.faults.fail_next > 0 {
            state.faults.fail_next -= 1;
            Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Service unavailable (injected)",
            ))
        } else if state.faults.throttle_next > 0 {
            state.faults.throttle_next -= 1;
            Some(throttled(1))
        } else if faults.throttle_rate > 0.0 && state.rng.f64() < faults.throttle_rate {
            Some(throttled(1))
        } else if faults.error_rate > 0.0 && state.rng.f64() < faults.error_rate {
            let status = if state.rng.bool() {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Some(error(status, "server_error", "Server error (injected)"))
        } else {
            None
        };
        let rate = shared
            .rate_limit
            .map(|(per_minute, per_hour)| (per_hour, state.rate_check(now, per_minute, per_hour)));
        (fault, faults.latency, rate)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut response = if let Some(fault) = fault {
        fault
    } else if let Some((_, (_, _, Some(retry_after)))) = rate {
        throttled(retry_after)
    } else {
        shared.sync();
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    };
    let headers = response.headers_mut();
    let (limit, used, reset) = match rate {
        Some((per_hour, (used, reset, _))) => (per_hour as u64, used, reset.timestamp()),
        None => (5000, 0, now.timestamp()),
    };
    for (name, value) in [
        ("ratelimit-limit", limit.to_string()),
        (
            "ratelimit-remaining",
            limit.saturating_sub(used).to_string(),
        ),
        ("ratelimit-reset", reset.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

fn throttled(retry_after: u64) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "API Rate limit exceeded.",
    );
    if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

/// Where the sim's links point: the address the request came to (its `Host`), or the real
/// API's host when the sim was asked to write those.
fn link_base(shared: &Shared, headers: &HeaderMap) -> String {
    if shared.public_links {
        return PUBLIC_API.to_string();
    }
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("http://{host}"))
        .unwrap_or_else(|| PUBLIC_API.to_string())
}

fn page_link(
    base: &str,
    path: &str,
    page: usize,
    per_page: usize,
    extra: &[(&str, &str)],
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("page", &page.to_string());
    query.append_pair("per_page", &per_page.to_string());
    for (key, value) in extra {
        query.append_pair(key, value);
    }
    format!("{base}{path}?{}", query.finish())
}

/// Slices `items` into a page and builds `links` and `meta` as the API does.
fn paginate<T: serde::Serialize>(
    base: &str,
    path: &str,
    items: &[T],
    key: &str,
    params: &HashMap<String, String>,
    extra: &[(&str, &str)],
) -> Response {
    let per_page = match params.get("per_page").map(|v| v.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=200).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "per_page must be a number from 1 to 200",
            );
        }
    };
    let page = match params.get("page").map(|v| v.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "page must be a number from 1",
            );
        }
    };
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    // Only the page is serialized, straight to text: a listing of N droplets costs N, not N
    // per page, and no JSON tree is built.
    let start = ((page - 1) * per_page).min(items.len());
    let end = (start + per_page).min(items.len());
    let slice = serde_json::to_string(&items[start..end]).unwrap_or_else(|_| "[]".into());
    let mut pages = serde_json::Map::new();
    if page > 1 {
        pages.insert(
            "first".into(),
            json!(page_link(base, path, 1, per_page, extra)),
        );
        pages.insert(
            "prev".into(),
            json!(page_link(base, path, page - 1, per_page, extra)),
        );
    }
    if page < last {
        pages.insert(
            "next".into(),
            json!(page_link(base, path, page + 1, per_page, extra)),
        );
        pages.insert(
            "last".into(),
            json!(page_link(base, path, last, per_page, extra)),
        );
    }
    let links = if pages.is_empty() {
        json!({})
    } else {
        json!({ "pages": pages })
    };
    let body = format!(
        "{{{}:{slice},\"links\":{links},\"meta\":{{\"total\":{total}}}}}",
        Value::String(key.to_string())
    );
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn list_droplets(
    State(shared): Shared2,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let base = link_base(&shared, &headers);
    let tag = params.get("tag_name").cloned();
    let extra: Vec<(&str, &str)> = tag
        .as_deref()
        .map(|t| vec![("tag_name", t)])
        .unwrap_or_default();
    let now = shared.clock.now();
    let state = shared.lock();
    let items = state.list_visible(tag.as_deref(), now);
    paginate(&base, "/v2/droplets", &items, "droplets", &params, &extra)
}

async fn create_droplets(
    State(shared): Shared2,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let base = link_base(&shared, &headers);
    let request: CreateDroplets = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                &format!("invalid request: {e}"),
            );
        }
    };
    let now = shared.clock.now();
    let (made, answer_500) = {
        let mut state = shared.lock();
        match state.check_create(&request) {
            Err(CreateRefusal::DropletLimit) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unprocessable_entity",
                    "creating this/these droplet(s) will exceed your droplet limit",
                );
            }
            Err(CreateRefusal::Invalid(message)) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unprocessable_entity",
                    &message,
                );
            }
            Ok(()) => {}
        }
        let made = state.create(&request, now);
        let answer_500 = state.faults.create_succeeds_then_500 > 0;
        if answer_500 {
            state.faults.create_succeeds_then_500 -= 1;
        }
        (made, answer_500)
    };
    if answer_500 {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "Server error (injected after the create)",
        );
    }
    let actions: Vec<Value> = made
        .iter()
        .map(|d| json!({ "id": d.id + ACTION_ID_OFFSET, "rel": "create", "href": format!("{base}/v2/actions/{}", d.id + ACTION_ID_OFFSET) }))
        .collect();
    let body = if request.names.is_some() {
        json!({ "droplets": made, "links": { "actions": actions } })
    } else {
        json!({ "droplet": made.first(), "links": { "actions": actions } })
    };
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// A create's action id is its droplet's id plus this.
const ACTION_ID_OFFSET: u64 = 1_000_000_000;

/// `GET /v2/actions/{id}`: the create action of a droplet, in progress until it is active (a
/// droplet deleted since shows it completed).
async fn get_action(State(shared): Shared2, Path(id): Path<u64>) -> Response {
    let Some(droplet_id) = id.checked_sub(ACTION_ID_OFFSET).filter(|d| *d > 0) else {
        return not_found();
    };
    let state = shared.lock();
    let droplet = state.droplets.get(&droplet_id);
    if droplet.is_none() && droplet_id >= state.next_id() {
        return not_found();
    }
    let (status, started, region) = match droplet {
        Some(d) if d.droplet.status == crate::digitalocean::DropletStatus::New => (
            "in-progress",
            d.droplet.created_at,
            d.droplet.region.slug.clone(),
        ),
        Some(d) => (
            "completed",
            d.droplet.created_at,
            d.droplet.region.slug.clone(),
        ),
        None => ("completed", chrono::Utc::now(), "nyc3".to_string()),
    };
    let completed = (status == "completed").then(|| chrono::Utc::now().to_rfc3339());
    axum::Json(json!({
        "action": {
            "id": id,
            "status": status,
            "type": "create",
            "started_at": started.to_rfc3339(),
            "completed_at": completed,
            "resource_id": droplet_id,
            "resource_type": "droplet",
            "region": null,
            "region_slug": region,
        }
    }))
    .into_response()
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "The resource you were accessing could not be found.",
    )
}

async fn get_droplet(State(shared): Shared2, Path(id): Path<u64>) -> Response {
    let state = shared.lock();
    match state.droplets.get(&id) {
        Some(droplet) => axum::Json(json!({ "droplet": droplet.droplet })).into_response(),
        None => not_found(),
    }
}

async fn delete_droplet(State(shared): Shared2, Path(id): Path<u64>) -> Response {
    let now = shared.clock.now();
    let (existed, hang) = {
        let mut state = shared.lock();
        (state.remove(id, now), state.faults.delete_hang)
    };
    if !existed {
        return not_found();
    }
    shared.stop_agent(id);
    if let Some(hang) = hang {
        tokio::time::sleep(hang).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_by_tag(
    State(shared): Shared2,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(tag) = params.get("tag_name") else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "tag_name is required",
        );
    };
    let ids: Vec<u64> = {
        let mut state = shared.lock();
        let now = shared.clock.now();
        let ids: Vec<u64> = state.list(Some(tag)).iter().map(|d| d.id).collect();
        for id in &ids {
            state.remove(*id, now);
        }
        ids
    };
    for id in ids {
        shared.stop_agent(id);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn account(State(shared): Shared2) -> Response {
    let limit = shared.lock().droplet_limit;
    axum::Json(json!({ "account": {
        "droplet_limit": limit, "floating_ip_limit": 3, "volume_limit": 100,
        "email": "sim@example.com", "email_verified": true, "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
        "status": "active", "status_message": ""
    }}))
    .into_response()
}

async fn sizes(
    State(shared): Shared2,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let base = link_base(&shared, &headers);
    paginate(&base, "/v2/sizes", &catalog::sizes(), "sizes", &params, &[])
}

async fn regions(
    State(shared): Shared2,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let base = link_base(&shared, &headers);
    paginate(
        &base,
        "/v2/regions",
        &catalog::regions(),
        "regions",
        &params,
        &[],
    )
}

async fn image(Path(key): Path<String>) -> Response {
    match catalog::image(&key) {
        Some(image) => axum::Json(json!({ "image": image })).into_response(),
        None => not_found(),
    }
}

async fn ssh_key(Path(key): Path<String>) -> Response {
    match catalog::ssh_key(&key) {
        Some(key) => axum::Json(json!({ "ssh_key": key })).into_response(),
        None => not_found(),
    }
}

async fn vpc(Path(id): Path<String>) -> Response {
    match catalog::vpc(&id) {
        Some(vpc) => axum::Json(json!({ "vpc": vpc })).into_response(),
        None => not_found(),
    }
}

async fn create_tag(State(shared): Shared2, body: axum::body::Bytes) -> Response {
    let name = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string));
    let Some(name) = name else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            "name is required",
        );
    };
    shared.lock().tags.insert(name.clone());
    (
        StatusCode::CREATED,
        axum::Json(json!({ "tag": { "name": name, "resources": { "count": 0 } } })),
    )
        .into_response()
}

async fn get_tag(State(shared): Shared2, Path(name): Path<String>) -> Response {
    let state = shared.lock();
    if !state.tags.contains(&name) {
        return not_found();
    }
    let count = state.list(Some(&name)).len();
    axum::Json(json!({ "tag": { "name": name, "resources": { "count": count, "droplets": { "count": count } } } })).into_response()
}

/// `DELETE /v2/tags/{name}`: the tag is gone, from every droplet too (204); 404 if unknown.
async fn delete_tag(State(shared): Shared2, Path(name): Path<String>) -> Response {
    let mut state = shared.lock();
    let mut known = state.tags.remove(&name);
    for droplet in state.droplets.values_mut() {
        let before = droplet.droplet.tags.len();
        droplet.droplet.tags.retain(|t| *t != name);
        known |= droplet.droplet.tags.len() != before;
    }
    if known {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found()
    }
}

async fn get_load_balancer(State(shared): Shared2, Path(id): Path<String>) -> Response {
    match shared.lock().load_balancers.get(&id) {
        Some(lb) => axum::Json(json!({ "load_balancer": lb })).into_response(),
        None => not_found(),
    }
}

fn droplet_ids(body: &[u8]) -> Option<Vec<u64>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    serde_json::from_value(value.get("droplet_ids")?.clone()).ok()
}

async fn change_load_balancer(
    shared: Arc<Shared>,
    id: String,
    body: axum::body::Bytes,
    add: bool,
) -> Response {
    let Some(ids) = droplet_ids(&body) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            "droplet_ids is required",
        );
    };
    let mut state = shared.lock();
    let known: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|i| state.droplets.contains_key(i))
        .collect();
    let Some(lb) = state.load_balancers.get_mut(&id) else {
        return not_found();
    };
    if add {
        if known.len() != ids.len() {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                "some droplets do not exist",
            );
        }
        for droplet in ids {
            if !lb.droplet_ids.contains(&droplet) {
                lb.droplet_ids.push(droplet);
            }
        }
    } else {
        lb.droplet_ids.retain(|d| !ids.contains(d));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn add_to_load_balancer(
    State(shared): Shared2,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    change_load_balancer(shared, id, body, true).await
}

async fn remove_from_load_balancer(
    State(shared): Shared2,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    change_load_balancer(shared, id, body, false).await
}

/// `POST /v2/_sim/droplets/{id}/unhealthy`: the droplet's endpoints stop answering.
async fn make_unhealthy(State(shared): Shared2, Path(id): Path<u64>) -> Response {
    set_health(&shared, id, false)
}

/// `POST /v2/_sim/droplets/{id}/healthy`: the droplet's endpoints answer again.
async fn make_healthy(State(shared): Shared2, Path(id): Path<u64>) -> Response {
    set_health(&shared, id, true)
}

fn set_health(shared: &Shared, id: u64, healthy: bool) -> Response {
    if shared.set_healthy(id, healthy) {
        axum::Json(serde_json::json!({ "droplet": id, "healthy": healthy })).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no active droplet with that id",
        )
    }
}

async fn stats(State(shared): Shared2, _method: Method, _headers: HeaderMap) -> Response {
    axum::Json(shared.stats_json()).into_response()
}

/// `GET /v2/_sim/clock`: the sim's time and how fast it runs (`sim --speed`).
async fn clock(State(shared): Shared2) -> Response {
    axum::Json(crate::clock::ClockReading {
        now: shared.clock.now(),
        speed: shared.clock.speed(),
    })
    .into_response()
}

/// A load balancer for tests and the demo.
pub fn new_load_balancer(id: &str, name: &str) -> LoadBalancer {
    LoadBalancer {
        id: id.to_string(),
        name: name.to_string(),
        droplet_ids: Vec::new(),
        tag: String::new(),
        status: "active".into(),
    }
}

/// A Drone server's `/metrics` under the queue workload (404 without it).
async fn drone_metrics(State(shared): Shared2) -> Response {
    shared.sync();
    let state = shared.lock();
    match &state.queue {
        Some(queue) => exposition(queue.render_drone()),
        None => no_workload(),
    }
}

/// A GitLab runner manager's `/metrics` under the queue workload (404 without it).
async fn gitlab_metrics(State(shared): Shared2) -> Response {
    shared.sync();
    let state = shared.lock();
    match &state.queue {
        Some(queue) => {
            let active = state
                .droplets
                .values()
                .filter(|d| d.droplet.status == crate::digitalocean::DropletStatus::Active)
                .count();
            exposition(queue.render_gitlab(active))
        }
        None => no_workload(),
    }
}

fn exposition(body: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn no_workload() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "The sim serves CI metrics only with --workload queue.",
    )
}
