//! The HTTP client scripts reach webhooks through, and the address policy it enforces.
//!
//! A script names a URL; what it must never reach is the droplet metadata service
//! (169.254.169.254) or anything else link-local, in any spelling: an IPv4 literal in decimal,
//! octal or hex, an IPv4-mapped, -compatible or -translated IPv6 literal, a NAT64 or 6to4
//! address embedding one, or a name that resolves to one. The check runs where the connection
//! is made: IP literals before the request, names inside the client's own resolver, so a name
//! that answers differently the second time (DNS rebinding) is judged on the answer actually
//! used. The client has no proxy (one from the environment would make the check meaningless)
//! and follows no redirect, and answers are read up to a limit, never whole.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The most of an answer's body a script gets; the rest is never read.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a webhook call did not happen or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not one a script may call.
    #[error("`{url}`: {reason}")]
    Refused {
        /// The URL, escaped.
        url: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("the webhook HTTP client could not be built: {0}")]
    Client(String),
    /// The request failed.
    #[error("{url}: {reason}")]
    Failed {
        /// The URL, escaped.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// The IPv4 address an IPv6 address carries, in the spellings a network path honours:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), NAT64 well-known prefix (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    let translated = s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0;
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4];
    if mapped || compatible || translated || nat64 {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Why a script may not connect to `ip`, if it may not.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                Some("a link-local address (the droplet metadata service lives there)")
            } else if v4.is_unspecified() || v4.octets()[0] == 0 {
                Some("an unspecified address")
            } else if v4.is_broadcast() || v4.is_multicast() {
                Some("a broadcast or multicast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = embedded_v4(v6) {
                return forbidden(IpAddr::V4(v4));
            }
            if v6.is_unspecified() {
                Some("an unspecified address")
            } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if (s[0] == 0x64 && s[1] == 0xff9b) || (s[0] == 0x2001 && s[1] == 0) {
                // Local-use NAT64 (64:ff9b:1::/48) and Teredo hide an IPv4 address in ways
                // that depend on the network: refused outright.
                Some("a NAT64 or Teredo address that may hide any IPv4 address")
            } else {
                None
            }
        }
    }
}

/// Resolves a name, then refuses the answer if any address is forbidden: the client connects
/// only to addresses this judged.
#[derive(Clone)]
pub struct GuardedResolver {
    lookup: Arc<LookupFn>,
}

type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
type LookupFn = dyn Fn(String) -> LookupFuture + Send + Sync;

impl GuardedResolver {
    /// The system resolver behind the guard.
    pub fn system() -> Self {
        Self::with_lookup(|host| {
            Box::pin(async move {
                tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map(Iterator::collect)
            })
        })
    }

    /// Any lookup behind the guard (tests give one that answers what they need).
    pub fn with_lookup(lookup: impl Fn(String) -> LookupFuture + Send + Sync + 'static) -> Self {
        GuardedResolver {
            lookup: Arc::new(lookup),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses = lookup(host.clone()).await?;
            if addresses.is_empty() {
                return Err(format!("`{host}` resolves to no address").into());
            }
            for address in &addresses {
                if let Some(reason) = forbidden(address.ip()) {
                    return Err(format!(
                        "`{host}` resolves to {}, {reason}: refused",
                        address.ip()
                    )
                    .into());
                }
            }
            let addrs: Addrs = Box::new(addresses.into_iter());
            Ok(addrs)
        })
    }
}

/// Builds the webhook client: the guarded resolver, no proxy, no redirects.
pub fn client(resolver: GuardedResolver) -> Result<reqwest::Client, WebhookError> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(resolver))
        .user_agent(concat!("do-scaler/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WebhookError::Client(e.to_string()))
}

/// Checks a URL before the request: scheme, and an IP literal's address (names are judged
/// by the resolver when the client connects).
pub fn check_url(url: &str) -> Result<reqwest::Url, WebhookError> {
    let refuse = |reason: String| WebhookError::Refused {
        url: url.escape_default().to_string(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| refuse(format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(refuse("only http and https URLs".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Allowed by URLs, but a secret in a URL ends up in logs.
        return Err(refuse(
            "credentials in the URL would be logged: use a token in the webhook's path or params"
                .into(),
        ));
    }
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(name)) => name.parse::<IpAddr>().ok(),
        None => return Err(refuse("no host".into())),
    };
    if let Some(ip) = literal
        && let Some(reason) = forbidden(ip)
    {
        return Err(refuse(format!("{ip} is {reason}: refused")));
    }
    Ok(parsed)
}

/// An answer, with its body cut at [`MAX_ANSWER_BYTES`].
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body (lossy UTF-8), at most the limit.
    pub body: String,
    /// Whether the body was longer than the limit (the rest was never read).
    pub truncated: bool,
}

/// Sends one request and reads at most [`MAX_ANSWER_BYTES`] of the answer.
pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
    timeout: Duration,
) -> Result<Answer, WebhookError> {
    let parsed = check_url(url)?;
    let failed = |e: &reqwest::Error| WebhookError::Failed {
        url: url.escape_default().to_string(),
        reason: ChainOf(e).to_string(),
    };
    let mut request = client.request(method, parsed).timeout(timeout);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let mut response = request.send().await.map_err(|e| failed(&e))?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
        let room = MAX_ANSWER_BYTES - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        truncated,
    })
}

/// Shows an error with its sources, so a resolver's refusal is visible to the script.
struct ChainOf<'a>(&'a reqwest::Error);

impl std::fmt::Display for ChainOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(inner) = source {
            write!(f, ": {inner}")?;
            source = inner.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_service_is_refused_in_every_spelling() {
        for url in [
            "http://169.254.169.254/metadata/v1/",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://169.254.169.254.:80/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::169.254.169.254]/",
            "http://[::ffff:0:169.254.169.254]/",
            "http://[64:ff9b::169.254.169.254]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://[fe80::1]/",
            "http://[fe80::1%25eth0]/",
            "http://0.0.0.0/",
            "http://[::]/",
            "file:///etc/passwd",
            "http://user:secret@example.invalid/",
        ] {
            assert!(check_url(url).is_err(), "{url} was accepted");
        }
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]:8080/hook",
            "http://[::ffff:127.0.0.1]:8080/hook",
            "https://hooks.slack.com/services/x",
            "http://10.110.0.5/drain",
        ] {
            assert!(check_url(url).is_ok(), "{url} was refused");
        }
    }
}
