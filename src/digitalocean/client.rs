//! The DigitalOcean API v2 client: authenticated requests, retries with jittered backoff,
//! client-side rate limiting, pagination that never leaves the configured host, and creates
//! that are never blindly repeated.

use super::error::ApiError;
use super::path::ApiPath;
use super::ratelimit::{RateLimitStatus, RateLimiter, RateLimits};
use super::types::{
    Account, CreateDroplets, Droplet, DropletList, ErrorBody, Image, ImageRef, LoadBalancer,
    Region, Size, SshKey, SshKeyRef, Vpc,
};
use crate::config::ApiToken;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many droplets one `POST /v2/droplets` may create.
pub const MAX_NAMES_PER_CREATE: usize = 10;
/// The page size of every listing (the API's maximum).
pub const PER_PAGE: u32 = 200;
/// Largest answer body accepted (a page of 200 droplets is well under 1 MiB).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Retry behaviour for requests that are safe to repeat.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubled each time, jittered.
    pub base_delay: Duration,
    /// Longest backoff between attempts (a server's `retry-after` is waited in full).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The jittered delay before retry number `retry` (0-based), at least `retry_after`: a
    /// server that says how long to wait (`retry-after`, `ratelimit-reset`) is waited out in
    /// full, however long; the caller's deadline (the tick's, the action run's) bounds it.
    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(16)))
            .min(self.max_delay);
        // Equal jitter: half fixed, half random, so parallel clients spread out but never
        // retry at once.
        let jittered = exponential.mul_f64(0.5 + fastrand::f64() * 0.5);
        match retry_after {
            Some(after) => after.max(jittered),
            None => jittered,
        }
    }
}

/// Settings of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// API base URL without trailing slash, such as `https://api.digitalocean.com`.
    pub base_url: String,
    /// The token.
    pub token: ApiToken,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request.
    pub request_timeout: Duration,
    /// Retries of safe requests.
    pub retry: RetryPolicy,
    /// Local rate limits; `None` turns them off.
    pub rate_limits: Option<RateLimits>,
}

impl ClientOptions {
    /// Defaults for `base_url` and `token`.
    pub fn new(base_url: impl Into<String>, token: ApiToken) -> Self {
        ClientOptions {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_limits: Some(RateLimits::default()),
        }
    }

    /// Counts the rate limits on a clock `speed` times faster than the wall (see
    /// [`RateLimits::at_speed`]): against a sim at `--speed N` the client would otherwise hold
    /// a tick every 100 ms of wall time to 250 requests a wall minute.
    pub fn at_speed(mut self, speed: f64) -> ClientOptions {
        self.rate_limits = self.rate_limits.map(|limits| limits.at_speed(speed));
        self
    }
}

/// Which failures a request may be retried after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Safety {
    /// GET, DELETE and idempotent POSTs: retry on 429, 5xx (not 501) and transport errors.
    Idempotent,
    /// Creates: retry only when the request was certainly not processed (429, not sent).
    NotIdempotent,
}

/// One answer that was received.
struct Answer {
    status: StatusCode,
    /// How long a 429 asks to wait: `retry-after`, else until `ratelimit-reset`.
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

/// What happened to a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The droplet was deleted now.
    Deleted,
    /// It was already gone (404).
    AlreadyGone,
}

/// What a create achieved: the droplets known to exist, and the failure that stopped it.
#[derive(Debug)]
pub struct CreateReport {
    /// Droplets created (or found after an ambiguous answer).
    pub created: Vec<Droplet>,
    /// Names asked for that do not exist as far as the client knows.
    pub missing: Vec<String>,
    /// Of `missing`, the names whose request may have been carried out (an ambiguous answer
    /// that a re-listing could not settle): they count as spent.
    pub uncertain: Vec<String>,
    /// The error that stopped the create, if any.
    pub failure: Option<ApiError>,
}

/// Calls made, by method, endpoint template and status (`0` for no answer).
pub type CallCounts = BTreeMap<(String, String, u16), u64>;

/// A DigitalOcean API client. Cheap to clone; clones share the connection pool, the rate
/// limiter and the call counts.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token: ApiToken,
    retry: RetryPolicy,
    request_timeout: Duration,
    limiter: Arc<RateLimiter>,
    calls: Arc<Mutex<CallCounts>>,
    last_problem: Arc<Mutex<Option<ApiProblem>>>,
    /// Asked immediately before every request that is not a GET (each chunk of a create, each
    /// retry): a refusal sends nothing. A group's leader binds its lease check here.
    write_gate: Option<WriteGate>,
}

/// A check every write must pass just before it is sent; `Err` says why it may not be.
pub type WriteGate = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The last answer that was not a success (a retried one included): what operators look for
/// first when DigitalOcean misbehaves. Account-wide, as the API's faults are.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiProblem {
    /// When it was seen.
    pub at: chrono::DateTime<chrono::Utc>,
    /// `METHOD /endpoint answered STATUS`, or that no answer came.
    pub what: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

fn header_number(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The endpoint template of a path, for call counts: ids become `{id}`.
pub fn endpoint_template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.split('/')
        .map(|segment| {
            let looks_like_id = !segment.is_empty()
                && (segment.chars().all(|c| c.is_ascii_digit())
                    || (segment.len() == 36 && segment.chars().filter(|c| *c == '-').count() == 4));
            if looks_like_id { "{id}" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Client {
    /// Builds a client.
    pub fn new(options: ClientOptions) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("do-scaler/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Transport {
                method: "-".into(),
                path: "-".into(),
                reason: format!("cannot build the HTTP client: {e}"),
                sent: false,
            })?;
        Ok(Client {
            http,
            base_url: options.base_url,
            token: options.token,
            retry: options.retry,
            request_timeout: options.request_timeout,
            limiter: Arc::new(RateLimiter::new(options.rate_limits)),
            calls: Arc::new(Mutex::new(BTreeMap::new())),
            last_problem: Arc::new(Mutex::new(None)),
            write_gate: None,
        })
    }

    /// This client (sharing its pool, limiter and counts) with `gate` asked immediately
    /// before every write it sends.
    pub fn with_write_gate(mut self, gate: WriteGate) -> Client {
        self.write_gate = Some(gate);
        self
    }

    /// The configured base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// What the server last said about the rate limit.
    pub fn rate_limit(&self) -> RateLimitStatus {
        self.limiter.status()
    }

    /// Calls made so far, by method, endpoint and status.
    pub fn call_counts(&self) -> CallCounts {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// This client (new credentials, say) carrying on from `previous` when both talk to the
    /// same API: one rate limiter, one set of call counts and one last problem, so a reload
    /// neither forgets the account's remaining quota nor resets the metrics.
    pub fn continuing(mut self, previous: &Client) -> Client {
        if self.base_url == previous.base_url {
            self.limiter = previous.limiter.clone();
            self.calls = previous.calls.clone();
            self.last_problem = previous.last_problem.clone();
        }
        self
    }

    /// The last answer that was not a success, if any.
    pub fn last_problem(&self) -> Option<ApiProblem> {
        self.last_problem.lock().ok().and_then(|p| p.clone())
    }

    fn count(&self, method: &Method, path: &str, status: u16) {
        let endpoint = endpoint_template(path);
        // 404 is an answer the client expects (a droplet already gone), not a problem.
        if !(200..400).contains(&status) && status != 404 {
            let what = if status == 0 {
                format!("{method} {endpoint}: no answer (connection failed or timed out)")
            } else {
                format!("{method} {endpoint} answered {status}")
            };
            if let Ok(mut last) = self.last_problem.lock() {
                *last = Some(ApiProblem {
                    at: chrono::Utc::now(),
                    what,
                });
            }
        }
        if let Ok(mut calls) = self.calls.lock() {
            *calls
                .entry((method.to_string(), endpoint, status))
                .or_insert(0) += 1;
        }
    }

    /// Sends one request and reads the answer, whatever its status.
    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ApiError> {
        self.limiter.acquire().await;
        // After any wait for the rate limit: the gate judges the moment of sending.
        if *method != Method::GET
            && let Some(gate) = &self.write_gate
            && let Err(reason) = gate()
        {
            return Err(ApiError::Refused {
                method: method.to_string(),
                path: path.to_string(),
                reason,
            });
        }
        let url = format!("{}{}", self.base_url, path);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.count(method, path, 0);
                return Err(self.transport_error(method, path, &error));
            }
        };
        let status = response.status();
        self.count(method, path, status.as_u16());
        let headers = response.headers();
        self.limiter.observe(RateLimitStatus {
            limit: header_number(headers, "ratelimit-limit"),
            remaining: header_number(headers, "ratelimit-remaining"),
            reset: header_number(headers, "ratelimit-reset"),
        });
        let reset_in = header_number(headers, "ratelimit-reset").map(|reset| {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            Duration::from_secs(reset.saturating_sub(now))
        });
        let retry_after = header_number(headers, "retry-after")
            .map(Duration::from_secs)
            .or(reset_in.filter(|_| status == StatusCode::TOO_MANY_REQUESTS));
        let mut body = Vec::new();
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(ApiError::Decode {
                            path: path.to_string(),
                            reason: format!("answer larger than {MAX_BODY_BYTES} bytes"),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => return Err(self.transport_error(method, path, &error)),
            }
        }
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    fn transport_error(&self, method: &Method, path: &str, error: &reqwest::Error) -> ApiError {
        if error.is_timeout() {
            return ApiError::Timeout {
                method: method.to_string(),
                path: path.to_string(),
                after: self.request_timeout,
            };
        }
        // Only a failed connect proves the request never reached the server.
        let sent = !error.is_connect();
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            reason = format!("{reason}: {inner}");
            source = inner.source();
        }
        ApiError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            reason,
            sent,
        }
    }

    fn status_error(method: &Method, path: &str, answer: &Answer) -> ApiError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(&answer.body).ok();
        let (id, message, request_id) = match parsed {
            Some(body) => (body.id, body.message, body.request_id),
            None => (
                answer
                    .status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_lowercase()
                    .replace(' ', "_"),
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect(),
                None,
            ),
        };
        let status = answer.status.as_u16();
        if status == 401 || status == 403 {
            return ApiError::Unauthorized {
                method: method.to_string(),
                path: path.to_string(),
                status,
                message,
            };
        }
        let lower = message.to_lowercase();
        if status == 422 && lower.contains("droplet limit") {
            return ApiError::DropletLimit {
                message,
                request_id,
            };
        }
        ApiError::Status {
            method: method.to_string(),
            path: path.to_string(),
            status,
            id,
            message,
            request_id,
        }
    }

    /// Sends a request, retrying what `safety` allows; returns a 2xx or 404 answer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        safety: Safety,
    ) -> Result<Answer, ApiError> {
        let mut retry = 0;
        loop {
            let last_attempt = retry + 1 >= self.retry.attempts;
            let (error, retry_after) = match self.send_once(&method, path, body).await {
                Ok(answer)
                    if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND =>
                {
                    return Ok(answer);
                }
                Ok(answer) => {
                    let status = answer.status.as_u16();
                    let retryable = match safety {
                        Safety::Idempotent => status == 429 || (status >= 500 && status != 501),
                        Safety::NotIdempotent => status == 429,
                    };
                    let error = Self::status_error(&method, path, &answer);
                    if !retryable || last_attempt {
                        return Err(error);
                    }
                    (error, answer.retry_after)
                }
                Err(error) => {
                    let retryable = matches!(
                        (&error, safety),
                        (ApiError::Transport { sent: false, .. }, _)
                            | (
                                ApiError::Transport { .. } | ApiError::Timeout { .. },
                                Safety::Idempotent
                            )
                    );
                    if !retryable || last_attempt {
                        return Err(error);
                    }
                    (error, None)
                }
            };
            let delay = self.retry.delay(retry, retry_after);
            tracing::warn!(
                error = %error,
                retry_in_ms = delay.as_millis() as u64,
                attempt = retry + 1,
                "DigitalOcean request failed; retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    fn decode<T: DeserializeOwned>(path: &str, answer: &Answer) -> Result<T, ApiError> {
        serde_json::from_slice(&answer.body).map_err(|e| ApiError::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// GET a single object under `key`; `None` on 404.
    async fn get_one<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
    ) -> Result<Option<T>, ApiError> {
        let answer = self
            .request(Method::GET, path, None, Safety::Idempotent)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mut value: Value = Self::decode(path, &answer)?;
        let inner = value
            .get_mut(key)
            .map(Value::take)
            .ok_or_else(|| ApiError::Decode {
                path: path.to_string(),
                reason: format!("no `{key}` in the answer"),
            })?;
        serde_json::from_value(inner)
            .map(Some)
            .map_err(|e| ApiError::Decode {
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// Rebases a pagination link onto the configured base URL. Only the path and query are
    /// kept, so the token never goes to the host named in the link; the link must stay on
    /// `listing` and advance past `current_page`.
    fn next_page_path(
        listing: &str,
        link: &str,
        current_page: u64,
    ) -> Result<(String, u64), ApiError> {
        let stuck = |reason: String| ApiError::Pagination {
            path: listing.to_string(),
            reason,
        };
        let parsed = url::Url::parse(link)
            .or_else(|_| url::Url::parse("https://api.digitalocean.com")?.join(link))
            .map_err(|e| stuck(format!("next link `{link}` is not a URL: {e}")))?;
        if parsed.path() != listing {
            return Err(stuck(format!("next link `{link}` leaves {listing}")));
        }
        let page = parsed
            .query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .ok_or_else(|| stuck(format!("next link `{link}` has no page number")))?;
        if page <= current_page {
            return Err(stuck(format!(
                "next link goes to page {page} after page {current_page}"
            )));
        }
        let query = parsed.query().unwrap_or("");
        Ok((format!("{}?{query}", parsed.path()), page))
    }

    /// Lists every item of a paginated collection (`key` names the array in each page).
    async fn list_all<T: DeserializeOwned>(
        &self,
        listing: &str,
        query: &str,
        key: &str,
    ) -> Result<Vec<T>, ApiError> {
        self.list_all_counted(listing, query, key)
            .await
            .map(|(items, _)| items)
    }

    /// Like [`Client::list_all`], with the `meta.total` the last page claimed.
    async fn list_all_counted<T: DeserializeOwned>(
        &self,
        listing: &str,
        query: &str,
        key: &str,
    ) -> Result<(Vec<T>, Option<u64>), ApiError> {
        let mut path = format!(
            "{listing}?{query}{}per_page={PER_PAGE}",
            if query.is_empty() { "" } else { "&" }
        );
        let mut page = 1;
        let mut items = Vec::new();
        loop {
            let answer = self
                .request(Method::GET, &path, None, Safety::Idempotent)
                .await?;
            if answer.status == StatusCode::NOT_FOUND {
                return Err(Self::status_error(&Method::GET, &path, &answer));
            }
            // Straight into the typed items: a page of 200 droplets is never held as a JSON tree.
            let mut deserializer = serde_json::Deserializer::from_slice(&answer.body);
            let parsed = serde::de::DeserializeSeed::deserialize(
                PageSeed::<T> {
                    key,
                    items: std::marker::PhantomData,
                },
                &mut deserializer,
            )
            .map_err(|e| ApiError::Decode {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let (mut batch, next, total) = (parsed.items, parsed.next, parsed.total);
            items.append(&mut batch);
            match next {
                None => return Ok((items, total)),
                Some(link) => {
                    crate::failpoint::hit("list.between_pages");
                    let (next_path, next_page) = Self::next_page_path(listing, &link, page)?;
                    path = next_path;
                    page = next_page;
                }
            }
        }
    }

    /// Every droplet carrying `tag`, across all pages. The real API's listings are not one
    /// snapshot across pages: a droplet listed twice is kept once (by id), and a listing whose
    /// count disagrees with its own `meta.total` is taken again, up to three times in all,
    /// then refused ([`ApiError::Inconsistent`]) rather than decided on.
    pub async fn list_droplets_by_tag(&self, tag: &str) -> Result<Vec<Droplet>, ApiError> {
        const ATTEMPTS: u32 = 3;
        let query = format!("tag_name={}", urlencode(tag));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut droplets, total): (Vec<Droplet>, _) = self
                .list_all_counted("/v2/droplets", &query, "droplets")
                .await?;
            let mut seen = std::collections::HashSet::new();
            droplets.retain(|d| seen.insert(d.id));
            match total {
                Some(total) if total != droplets.len() as u64 => {
                    tracing::warn!(
                        tag,
                        listed = droplets.len(),
                        total,
                        attempt,
                        "the droplet listing disagrees with its own total; listing again"
                    );
                    if attempt >= ATTEMPTS {
                        return Err(ApiError::Inconsistent {
                            path: format!("/v2/droplets?{query}"),
                            listed: droplets.len() as u64,
                            total,
                            attempts: ATTEMPTS,
                        });
                    }
                }
                _ => return Ok(droplets),
            }
        }
    }

    /// How many droplets the whole account has (one request, for preflight).
    pub async fn count_droplets(&self) -> Result<u64, ApiError> {
        let path = "/v2/droplets?per_page=1";
        let answer = self
            .request(Method::GET, path, None, Safety::Idempotent)
            .await?;
        let list: DropletList = Self::decode(path, &answer)?;
        Ok(list.meta.total)
    }

    /// One droplet; `None` when it does not exist.
    pub async fn get_droplet(&self, id: u64) -> Result<Option<Droplet>, ApiError> {
        self.get_one(&format!("/v2/droplets/{id}"), "droplet").await
    }

    /// Creates the droplets `request` names (any number; sent 10 at a time). Every droplet
    /// must carry `tag`, which is how an ambiguous answer is resolved: the group is re-listed
    /// and the unique names matched, and only the missing names are asked for again.
    pub async fn create_droplets(&self, request: &CreateDroplets, tag: &str) -> CreateReport {
        let mut report = CreateReport {
            created: Vec::new(),
            missing: Vec::new(),
            uncertain: Vec::new(),
            failure: None,
        };
        if !request.tags.iter().any(|t| t == tag) {
            report.missing = request.all_names();
            report.failure = Some(ApiError::Refused {
                method: "POST".into(),
                path: "/v2/droplets".into(),
                reason: format!(
                    "the request lacks the group tag `{tag}`, so an ambiguous answer could not be resolved"
                ),
            });
            return report;
        }
        let names = request.all_names();
        let mut chunks = names.chunks(MAX_NAMES_PER_CREATE);
        for (index, chunk) in chunks.by_ref().enumerate() {
            if index > 0 {
                crate::failpoint::hit("create.between_chunks");
            }
            match self.create_once(&request.with_names(chunk)).await {
                Ok(droplets) => report.created.extend(droplets),
                Err(error) if error.is_ambiguous() => {
                    self.settle_ambiguous_create(chunk, tag, error, &mut report)
                        .await;
                }
                Err(limit @ ApiError::DropletLimit { .. }) => {
                    self.create_what_fits(request, chunk, limit, &mut report)
                        .await;
                }
                Err(error) => {
                    report.missing.extend(chunk.iter().cloned());
                    report.failure = Some(error);
                }
            }
            if report.failure.is_some() {
                break;
            }
        }
        for rest in chunks {
            report.missing.extend(rest.iter().cloned());
        }
        report
    }

    /// After an ambiguous answer to a create, finds which of `names` exist by listing the
    /// group (twice, a moment apart: listings lag). The names it does not find are never sent
    /// again: they stay uncertain (the caller counts them until the listings settle it), which
    /// is what keeps a lagging listing from creating a droplet twice.
    async fn settle_ambiguous_create(
        &self,
        names: &[String],
        tag: &str,
        error: ApiError,
        report: &mut CreateReport,
    ) {
        tracing::warn!(error = %error, names = ?names, "create answer was ambiguous; listing the group to see what exists (the names are never sent again)");
        let mut pending: Vec<String> = names.to_vec();
        for round in 0..2 {
            tokio::time::sleep(self.retry.delay(round, None)).await;
            match self.list_droplets_by_tag(tag).await {
                Ok(existing) => {
                    for droplet in existing {
                        if let Some(index) = pending.iter().position(|n| *n == droplet.name) {
                            pending.remove(index);
                            report.created.push(droplet);
                        }
                    }
                }
                Err(list_error) => {
                    tracing::warn!(error = %list_error, "listing after an ambiguous create failed");
                }
            }
            if pending.is_empty() {
                return;
            }
        }
        report.uncertain.extend(pending.iter().cloned());
        report.missing.extend(pending);
        report.failure = Some(error);
    }

    /// At the account's droplet limit a create is all or nothing: asks how much room is left
    /// and creates that many of `names`, reporting the rest as missing with `limit`.
    async fn create_what_fits(
        &self,
        request: &CreateDroplets,
        names: &[String],
        limit: ApiError,
        report: &mut CreateReport,
    ) {
        let room = match (self.account().await, self.count_droplets().await) {
            (Ok(account), Ok(existing)) => account.droplet_limit.saturating_sub(existing) as usize,
            _ => 0,
        };
        let mut rest = names.to_vec();
        if room > 0 && room < names.len() {
            let fits: Vec<String> = rest.drain(..room).collect();
            tracing::warn!(
                room,
                asked = names.len(),
                "at the account's droplet limit: creating what fits"
            );
            match self.create_once(&request.with_names(&fits)).await {
                Ok(droplets) => report.created.extend(droplets),
                Err(error) if error.is_ambiguous() => {
                    report.uncertain.extend(fits.iter().cloned());
                    report.missing.extend(fits);
                }
                Err(_) => report.missing.extend(fits),
            }
        }
        report.missing.extend(rest);
        report.failure = Some(limit);
    }

    async fn create_once(&self, request: &CreateDroplets) -> Result<Vec<Droplet>, ApiError> {
        let path = "/v2/droplets";
        let body = serde_json::to_value(request).map_err(|e| ApiError::Refused {
            method: "POST".into(),
            path: path.into(),
            reason: e.to_string(),
        })?;
        let answer = self
            .request(Method::POST, path, Some(&body), Safety::NotIdempotent)
            .await?;
        crate::failpoint::hit("create.answer_unread");
        if answer.status == StatusCode::NOT_FOUND {
            return Err(Self::status_error(&Method::POST, path, &answer));
        }
        let mut value: Value = Self::decode(path, &answer)?;
        let droplets = if let Some(one) = value.get_mut("droplet") {
            vec![serde_json::from_value(one.take())]
        } else if let Some(Value::Array(many)) = value.get_mut("droplets").map(Value::take) {
            many.into_iter().map(serde_json::from_value).collect()
        } else {
            Vec::new()
        };
        droplets
            .into_iter()
            .collect::<Result<Vec<Droplet>, _>>()
            .map_err(|e| ApiError::Decode {
                path: path.into(),
                reason: e.to_string(),
            })
    }

    /// Deletes a droplet; a 404 means it is already gone, which is success.
    pub async fn delete_droplet(&self, id: u64) -> Result<DeleteOutcome, ApiError> {
        let path = format!("/v2/droplets/{id}");
        let answer = self
            .request(Method::DELETE, &path, None, Safety::Idempotent)
            .await?;
        Ok(if answer.status == StatusCode::NOT_FOUND {
            DeleteOutcome::AlreadyGone
        } else {
            DeleteOutcome::Deleted
        })
    }

    /// The account (for `droplet_limit`).
    pub async fn account(&self) -> Result<Account, ApiError> {
        self.get_one("/v2/account", "account")
            .await?
            .ok_or_else(|| ApiError::Decode {
                path: "/v2/account".into(),
                reason: "the account was not found".into(),
            })
    }

    /// Every size.
    pub async fn sizes(&self) -> Result<Vec<Size>, ApiError> {
        self.list_all("/v2/sizes", "", "sizes").await
    }

    /// Every region.
    pub async fn regions(&self) -> Result<Vec<Region>, ApiError> {
        self.list_all("/v2/regions", "", "regions").await
    }

    /// One image by slug or id; `None` when it does not exist.
    pub async fn image(&self, image: &ImageRef) -> Result<Option<Image>, ApiError> {
        let key = match image {
            ImageRef::Id(id) => id.to_string(),
            ImageRef::Slug(slug) => urlencode(slug),
        };
        self.get_one(&format!("/v2/images/{key}"), "image").await
    }

    /// One SSH key by fingerprint or id; `None` when it does not exist.
    pub async fn ssh_key(&self, key: &SshKeyRef) -> Result<Option<SshKey>, ApiError> {
        let key = match key {
            SshKeyRef::Id(id) => id.to_string(),
            SshKeyRef::Fingerprint(fingerprint) => urlencode(fingerprint),
        };
        self.get_one(&format!("/v2/account/keys/{key}"), "ssh_key")
            .await
    }

    /// One VPC; `None` when it does not exist.
    pub async fn vpc(&self, id: &str) -> Result<Option<Vpc>, ApiError> {
        self.get_one(&format!("/v2/vpcs/{}", urlencode(id)), "vpc")
            .await
    }

    /// Creates a tag if it does not exist (idempotent: an existing tag is success too).
    pub async fn ensure_tag(&self, name: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({ "name": name });
        self.request(Method::POST, "/v2/tags", Some(&body), Safety::Idempotent)
            .await
            .map(|_| ())
    }

    /// Deletes a tag (and takes it off whatever still carries it); a tag already gone is fine.
    pub async fn delete_tag(&self, name: &str) -> Result<(), ApiError> {
        let path = format!("/v2/tags/{name}");
        // A 404 is an answer here (already gone), not an error.
        self.request(Method::DELETE, &path, None, Safety::Idempotent)
            .await
            .map(|_| ())
    }

    /// One load balancer.
    pub async fn load_balancer(&self, id: &str) -> Result<Option<LoadBalancer>, ApiError> {
        self.get_one(
            &format!("/v2/load_balancers/{}", urlencode(id)),
            "load_balancer",
        )
        .await
    }

    /// Adds droplets to a load balancer (idempotent).
    pub async fn add_to_load_balancer(
        &self,
        id: &str,
        droplet_ids: &[u64],
    ) -> Result<(), ApiError> {
        let path = format!("/v2/load_balancers/{}/droplets", urlencode(id));
        let body = serde_json::json!({ "droplet_ids": droplet_ids });
        self.expect_found(Method::POST, &path, &body).await
    }

    /// Removes droplets from a load balancer (idempotent).
    pub async fn remove_from_load_balancer(
        &self,
        id: &str,
        droplet_ids: &[u64],
    ) -> Result<(), ApiError> {
        let path = format!("/v2/load_balancers/{}/droplets", urlencode(id));
        let body = serde_json::json!({ "droplet_ids": droplet_ids });
        self.expect_found(Method::DELETE, &path, &body).await
    }

    async fn expect_found(&self, method: Method, path: &str, body: &Value) -> Result<(), ApiError> {
        let answer = self
            .request(method.clone(), path, Some(body), Safety::Idempotent)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(Self::status_error(&method, path, &answer));
        }
        Ok(())
    }

    /// A generic authenticated call for the few endpoints action scripts may use. `path` is
    /// canonical ([`ApiPath`]): what the caller judged is exactly what is sent. Returns the
    /// status and the JSON body (`null` when empty). Only GET and DELETE are retried.
    pub async fn call(
        &self,
        method: Method,
        path: &ApiPath,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ApiError> {
        let safety = if method == Method::GET || method == Method::DELETE {
            Safety::Idempotent
        } else {
            Safety::NotIdempotent
        };
        let path = path.as_str();
        let answer = self.request(method, path, body, safety).await?;
        let value = if answer.body.is_empty() {
            Value::Null
        } else {
            Self::decode(path, &answer)?
        };
        Ok((answer.status.as_u16(), value))
    }
}

/// One page of a listing: its items (under a key that depends on the listing), its `next`
/// link and its `meta.total`.
struct Page<T> {
    items: Vec<T>,
    next: Option<String>,
    total: Option<u64>,
}

/// Reads a [`Page`] whose items are under `key`, skipping every other field unparsed.
struct PageSeed<'a, T> {
    key: &'a str,
    items: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> serde::de::DeserializeSeed<'de> for PageSeed<'_, T> {
    type Value = Page<T>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Page<T>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> serde::de::Visitor<'de> for PageSeed<'_, T> {
    type Value = Page<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a page of a listing with `{}`", self.key)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Page<T>, A::Error> {
        #[derive(serde::Deserialize, Default)]
        struct PagesOnly {
            #[serde(default)]
            next: Option<String>,
        }
        #[derive(serde::Deserialize, Default)]
        struct LinksOnly {
            #[serde(default)]
            pages: Option<PagesOnly>,
        }
        #[derive(serde::Deserialize, Default)]
        struct MetaOnly {
            #[serde(default)]
            total: Option<u64>,
        }
        let mut page = Page {
            items: Vec::new(),
            next: None,
            total: None,
        };
        while let Some(name) = map.next_key::<String>()? {
            if name == self.key {
                page.items = map.next_value()?;
            } else if name == "links" {
                let links: Option<LinksOnly> = map.next_value()?;
                page.next = links.and_then(|l| l.pages).and_then(|p| p.next);
            } else if name == "meta" {
                let meta: Option<MetaOnly> = map.next_value()?;
                page.total = meta.and_then(|m| m.total);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(page)
    }
}

/// Percent-encodes a query or path component.
pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_rebased_and_must_advance() {
        let (path, page) = Client::next_page_path(
            "/v2/droplets",
            "https://api.digitalocean.com/v2/droplets?page=2&per_page=200&tag_name=web",
            1,
        )
        .unwrap();
        assert_eq!(path, "/v2/droplets?page=2&per_page=200&tag_name=web");
        assert_eq!(page, 2);
        assert!(
            Client::next_page_path("/v2/droplets", "https://evil.example/v2/droplets?page=1", 1)
                .is_err()
        );
        assert!(
            Client::next_page_path(
                "/v2/droplets",
                "https://api.digitalocean.com/v2/account?page=3",
                1
            )
            .is_err()
        );
    }

    #[test]
    fn endpoint_templates_hide_ids() {
        assert_eq!(endpoint_template("/v2/droplets/12345"), "/v2/droplets/{id}");
        assert_eq!(
            endpoint_template("/v2/droplets?tag_name=web"),
            "/v2/droplets"
        );
        assert_eq!(
            endpoint_template("/v2/load_balancers/4de7ac8b-495b-4884-9a69-1050c6793cd6/droplets"),
            "/v2/load_balancers/{id}/droplets"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let first = policy.delay(0, None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        assert!(policy.delay(10, None) <= Duration::from_secs(1));
        assert!(policy.delay(0, Some(Duration::from_millis(700))) >= Duration::from_millis(700));
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(60))),
            Duration::from_secs(60),
            "what the server asks for is waited in full; the caller's deadline bounds it"
        );
    }
}
