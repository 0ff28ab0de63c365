//! Errors of the DigitalOcean client. None of them ever carries the token.

use std::time::Duration;

/// Why a DigitalOcean call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// DigitalOcean answered with an error status.
    #[error("{method} {path}: {status} {id}: {message}{}", request_id_suffix(.request_id))]
    Status {
        /// HTTP method.
        method: String,
        /// Path (and query) that was called.
        path: String,
        /// HTTP status.
        status: u16,
        /// DigitalOcean's short error id.
        id: String,
        /// DigitalOcean's message.
        message: String,
        /// DigitalOcean's request id, for support tickets.
        request_id: Option<String>,
    },
    /// The account's droplet limit is reached: a ceiling to report, never to retry.
    #[error("the account's droplet limit is reached: {message}{}", request_id_suffix(.request_id))]
    DropletLimit {
        /// DigitalOcean's message.
        message: String,
        /// DigitalOcean's request id.
        request_id: Option<String>,
    },
    /// The token was refused (401) or lacks a scope (403).
    #[error("{method} {path}: the token was refused ({status}): {message}")]
    Unauthorized {
        /// HTTP method.
        method: String,
        /// Path.
        path: String,
        /// 401 or 403.
        status: u16,
        /// DigitalOcean's message.
        message: String,
    },
    /// No answer: connection refused, reset, or DNS failure.
    #[error("{method} {path}: {reason}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Path.
        path: String,
        /// What went wrong.
        reason: String,
        /// Whether the request may have reached the server (false only for a failed connect).
        sent: bool,
    },
    /// No answer in time.
    #[error("{method} {path}: no answer within {}s", .after.as_secs_f64())]
    Timeout {
        /// HTTP method.
        method: String,
        /// Path.
        path: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The answer was not the JSON expected.
    #[error("{path}: unexpected answer: {reason}")]
    Decode {
        /// Path.
        path: String,
        /// What did not parse.
        reason: String,
    },
    /// A listing's droplets disagree with its own `meta.total`, every time it was taken.
    #[error(
        "the listing {path} showed {listed} distinct droplets for a total of {total}, {attempts} times: the API is inconsistent, so this tick decides nothing"
    )]
    Inconsistent {
        /// The listing.
        path: String,
        /// Distinct droplets listed.
        listed: u64,
        /// What `meta.total` said.
        total: u64,
        /// How many times it was taken.
        attempts: u32,
    },
    /// A pagination link did not advance (a loop) or pointed at another resource.
    #[error("pagination of {path} stopped: {reason}")]
    Pagination {
        /// The listing.
        path: String,
        /// Why it was stopped.
        reason: String,
    },
    /// A request that the client refuses to send.
    #[error("refused to send {method} {path}: {reason}")]
    Refused {
        /// HTTP method.
        method: String,
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
}

fn request_id_suffix(request_id: &Option<String>) -> String {
    request_id
        .as_ref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

impl ApiError {
    /// A short, stable label for metrics (`status_503`, `timeout`, `droplet_limit`, …).
    pub fn kind(&self) -> String {
        match self {
            ApiError::Status { status, .. } => format!("status_{status}"),
            ApiError::DropletLimit { .. } => "droplet_limit".into(),
            ApiError::Unauthorized { .. } => "unauthorized".into(),
            ApiError::Transport { .. } => "transport".into(),
            ApiError::Timeout { .. } => "timeout".into(),
            ApiError::Decode { .. } => "decode".into(),
            ApiError::Pagination { .. } => "pagination".into(),
            ApiError::Inconsistent { .. } => "inconsistent_listing".into(),
            ApiError::Refused { .. } => "refused".into(),
        }
    }

    /// Whether the request may have been carried out although no success was seen
    /// (a timeout, a 5xx, a reset after sending). Such a create must not be retried blindly.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            ApiError::Timeout { .. } | ApiError::Decode { .. } => true,
            ApiError::Transport { sent, .. } => *sent,
            ApiError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
