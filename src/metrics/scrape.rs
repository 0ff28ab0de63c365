//! Scraping the droplets of a group: which droplets can be scraped and at which address, and
//! the concurrent, bounded, timed-out fetches themselves. One HTTP connection pool serves all
//! groups. A droplet that cannot be scraped is recorded as missing with its reason; it never
//! fails the tick.

use crate::config::{AddressKind, Scrape};
use crate::digitalocean::{Droplet, DropletStatus};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The largest exposition accepted (do-agent serves about 6 KiB; node exporter under 100 KiB).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Why a droplet's metrics are missing this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingReason {
    /// Not `active` yet (or powered off).
    NotActive(DropletStatus),
    /// Active, but still inside `warmup`.
    WarmingUp,
    /// No address of the configured kind.
    NoAddress(AddressKind),
    /// No answer in time.
    Timeout(Duration),
    /// Connection refused or reset.
    Unreachable(String),
    /// An HTTP error status.
    Status(u16),
    /// The answer was larger than the limit.
    TooLarge(usize),
    /// The answer was not the exposition format (`SOURCE:LINE:COLUMN: reason`).
    Garbage(String),
    /// The tick's scrape phase ended before this droplet's turn came (too many hung
    /// endpoints ahead of it).
    NotReached,
}

impl MissingReason {
    /// Every [`MissingReason::kind`], for metrics that exist at 0 from the start.
    pub const KINDS: [&'static str; 9] = [
        "not_active",
        "warming_up",
        "no_address",
        "timeout",
        "unreachable",
        "http_status",
        "too_large",
        "garbage",
        "not_reached",
    ];

    /// A short label for metrics (`timeout`, `unreachable`, `garbage`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            MissingReason::NotActive(_) => "not_active",
            MissingReason::WarmingUp => "warming_up",
            MissingReason::NoAddress(_) => "no_address",
            MissingReason::Timeout(_) => "timeout",
            MissingReason::Unreachable(_) => "unreachable",
            MissingReason::Status(_) => "http_status",
            MissingReason::TooLarge(_) => "too_large",
            MissingReason::Garbage(_) => "garbage",
            MissingReason::NotReached => "not_reached",
        }
    }
}

impl fmt::Display for MissingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissingReason::NotActive(status) => write!(f, "status {status}, not active"),
            MissingReason::WarmingUp => f.write_str("active but still in warmup"),
            MissingReason::NoAddress(kind) => write!(f, "no {kind} address"),
            MissingReason::Timeout(after) => write!(
                f,
                "no answer within {}",
                crate::config::duration::format_duration(*after)
            ),
            MissingReason::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            MissingReason::Status(code) => write!(f, "answered HTTP {code}"),
            MissingReason::TooLarge(limit) => write!(f, "answer larger than {limit} bytes"),
            MissingReason::Garbage(error) => write!(f, "not the exposition format: {error}"),
            MissingReason::NotReached => {
                f.write_str("not reached before the tick's scrape deadline")
            }
        }
    }
}

/// One endpoint to scrape: a droplet's, or a `target` source's URL (`droplet_id` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The droplet, or 0.
    pub droplet_id: u64,
    /// Its name ("" for a target).
    pub droplet_name: String,
    /// `address:port`.
    pub instance: String,
    /// The URL to fetch.
    pub url: String,
    /// The source it belongs to.
    pub source: String,
    /// How long its scrape may take.
    pub timeout: Duration,
    /// How to authenticate, if at all (secrets redacted in `Debug`).
    pub credentials: Option<Credentials>,
}

/// How a request authenticates. The secrets print as `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer <token>`.
    Bearer(crate::config::ApiToken),
    /// HTTP basic authentication.
    Basic(String, crate::config::ApiToken),
}

impl Credentials {
    /// Adds the `Authorization` header to a request.
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credentials::Bearer(token) => request.bearer_auth(token.expose()),
            Credentials::Basic(user, password) => request.basic_auth(user, Some(password.expose())),
        }
    }
}

/// The address of the configured kind, once the droplet has one.
pub fn address_of(droplet: &Droplet, kind: AddressKind) -> Option<String> {
    match kind {
        AddressKind::Private => droplet.private_ipv4().map(str::to_string),
        AddressKind::Public => droplet.public_ipv4().map(str::to_string),
        AddressKind::Ipv6 => droplet.public_ipv6().map(|a| format!("[{a}]")),
    }
}

/// Splits a group's droplets into scrape targets and droplets missing with a reason.
/// `is_warming` says whether an active droplet is still inside its warmup.
pub fn targets(
    droplets: &[Droplet],
    scrape: &Scrape,
    is_warming: &dyn Fn(&Droplet) -> bool,
) -> (Vec<Target>, Vec<(u64, MissingReason)>) {
    let mut ready = Vec::new();
    let mut missing = Vec::new();
    for droplet in droplets {
        if droplet.status != DropletStatus::Active {
            missing.push((droplet.id, MissingReason::NotActive(droplet.status)));
            continue;
        }
        let Some(address) = address_of(droplet, scrape.address) else {
            missing.push((droplet.id, MissingReason::NoAddress(scrape.address)));
            continue;
        };
        if is_warming(droplet) {
            missing.push((droplet.id, MissingReason::WarmingUp));
            continue;
        }
        let instance = format!("{address}:{}", scrape.port);
        ready.push(Target {
            droplet_id: droplet.id,
            droplet_name: droplet.name.clone(),
            url: format!("http://{instance}{}", scrape.path),
            instance,
            source: crate::config::DROPLETS_SOURCE.to_string(),
            timeout: scrape.timeout,
            credentials: None,
        });
    }
    (ready, missing)
}

/// The scraper: a connection pool and a bound on scrapes in flight. Each group gets its own
/// bound ([`Scraper::for_group`]), so a group of hung endpoints never queues another group's
/// scrapes behind its own.
#[derive(Debug, Clone)]
pub struct Scraper {
    http: reqwest::Client,
    limit: Arc<Semaphore>,
    body_limit: usize,
    credentials_dir: Option<Arc<std::path::PathBuf>>,
}

/// Why a scraper could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the scrape client: {0}")]
pub struct ScraperError(String);

impl Scraper {
    /// A scraper allowing `concurrency` scrapes in flight.
    pub fn new(concurrency: usize, body_limit: usize) -> Result<Scraper, ScraperError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("do-scaler/", env!("CARGO_PKG_VERSION")))
            // No idle connections kept: one per droplet would hold a socket and its buffers
            // for every droplet between ticks (tens of MB at 1,000 droplets); a new
            // connection per scrape costs a handshake inside the VPC.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ScraperError(e.to_string()))?;
        Ok(Scraper {
            http,
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            body_limit,
            credentials_dir: None,
        })
    }

    /// Where the systemd credentials that sources name are (`$CREDENTIALS_DIRECTORY`).
    pub fn with_credentials_dir(mut self, dir: Option<std::path::PathBuf>) -> Scraper {
        self.credentials_dir = dir.map(Arc::new);
        self
    }

    /// The systemd credentials folder, if the service has one.
    pub fn credentials_dir(&self) -> Option<&std::path::Path> {
        self.credentials_dir.as_deref().map(|p| p.as_path())
    }

    /// The HTTP client (for queries to a remote server).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A scraper sharing this one's HTTP client but with its own `concurrency` slots.
    pub fn for_group(&self, concurrency: usize) -> Scraper {
        Scraper {
            http: self.http.clone(),
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            body_limit: self.body_limit,
            credentials_dir: self.credentials_dir.clone(),
        }
    }

    /// Fetches one URL.
    pub async fn fetch(&self, url: &str, timeout: Duration) -> Result<String, MissingReason> {
        self.fetch_with(url, timeout, None).await
    }

    /// Fetches one URL, authenticated with `credentials` when given.
    pub async fn fetch_with(
        &self,
        url: &str,
        timeout: Duration,
        credentials: Option<&Credentials>,
    ) -> Result<String, MissingReason> {
        let mut request = self
            .http
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            )
            .timeout(timeout);
        if let Some(credentials) = credentials {
            request = credentials.apply(request);
        }
        let fetch = async {
            let mut response = request.send().await.map_err(|e| classify(&e, timeout))?;
            if !response.status().is_success() {
                return Err(MissingReason::Status(response.status().as_u16()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e, timeout))? {
                if body.len() + chunk.len() > self.body_limit {
                    return Err(MissingReason::TooLarge(self.body_limit));
                }
                body.extend_from_slice(&chunk);
            }
            String::from_utf8(body)
                .map_err(|_| MissingReason::Garbage(format!("{url}:1:1: the answer is not UTF-8")))
        };
        match tokio::time::timeout(timeout, fetch).await {
            Ok(result) => result,
            Err(_) => Err(MissingReason::Timeout(timeout)),
        }
    }

    /// Fetches every target concurrently (bounded), each with its own timeout, the whole phase
    /// ending at `deadline`, waiting for a slot included: a target whose turn has not come by
    /// then is [`MissingReason::NotReached`]. Results come in the targets' order.
    pub async fn fetch_all(
        &self,
        targets: &[Target],
        deadline: tokio::time::Instant,
    ) -> Vec<Result<String, MissingReason>> {
        let mut set = JoinSet::new();
        for (index, target) in targets.iter().enumerate() {
            let scraper = self.clone();
            let url = target.url.clone();
            let credentials = target.credentials.clone();
            let timeout = target.timeout;
            set.spawn(async move {
                let fetched = tokio::time::timeout_at(deadline, async {
                    // The semaphore is never closed, so acquiring only waits.
                    let _permit = scraper.limit.acquire().await;
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    scraper
                        .fetch_with(&url, timeout.min(left), credentials.as_ref())
                        .await
                })
                .await;
                (index, fetched.unwrap_or(Err(MissingReason::NotReached)))
            });
        }
        let mut results: Vec<Option<Result<String, MissingReason>>> = vec![None; targets.len()];
        while let Some(joined) = set.join_next().await {
            if let Ok((index, result)) = joined {
                results[index] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(MissingReason::Unreachable("the scrape task failed".into()))
                })
            })
            .collect()
    }
}

fn classify(error: &reqwest::Error, timeout: Duration) -> MissingReason {
    if error.is_timeout() {
        MissingReason::Timeout(timeout)
    } else {
        let mut reason = error.to_string();
        if let Some(source) = std::error::Error::source(error) {
            reason = format!("{reason}: {source}");
        }
        MissingReason::Unreachable(reason)
    }
}
