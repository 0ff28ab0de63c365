//! What runs "on" each simulated droplet: a do-agent-like metrics endpoint on its address, and
//! listeners on the open ports so TCP health checks pass as on a real droplet (port 22 accepts
//! and closes; any other answers HTTP with the droplet's id).

use super::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The port that accepts connections and says nothing (a TCP check passes; no HTTP).
const SSH_PORT: u16 = 22;

/// The endpoint's state: the sim and the droplet it serves.
#[derive(Clone)]
struct AgentContext {
    shared: Arc<Shared>,
    id: u64,
}

/// Starts the endpoint and the open-port listeners of one droplet. Returns their tasks (aborting
/// them closes the listeners). A port that cannot be bound is reported on stderr.
pub fn serve(shared: &Arc<Shared>, id: u64, address: Ipv4Addr) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let agent_addr = SocketAddr::from((address, shared.agent_port));
    let context = AgentContext {
        shared: shared.clone(),
        id,
    };
    let router = Router::new().fallback(metrics).with_state(context);
    match std::net::TcpListener::bind(agent_addr).and_then(|l| {
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l)
    }) {
        Ok(listener) => tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        })),
        Err(e) => {
            tracing::warn!(droplet = id, address = %agent_addr, error = %e, "sim: cannot serve metrics")
        }
    }
    for port in shared.open_ports.iter().copied() {
        let addr = SocketAddr::from((address, port));
        match std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        }) {
            Ok(listener) if port == SSH_PORT => tasks.push(tokio::spawn(async move {
                // Accept and close at once: enough for a TCP health check.
                while let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                }
            })),
            // Any other open port answers HTTP with the droplet's id, so a test can see which
            // droplet served a request (through a load balancer, say).
            Ok(listener) => {
                let router = Router::new().fallback(move || async move { format!("{id}\n") });
                tasks.push(tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                }))
            }
            Err(e) => {
                tracing::warn!(droplet = id, address = %addr, error = %e, "sim: cannot open port")
            }
        }
    }
    tasks
}

async fn metrics(State(context): State<AgentContext>, headers: HeaderMap) -> Response {
    // The model is kept current by the sim's own ticker (every 200 ms) and by every API call;
    // advancing it for every scrape would make a tick of N droplets cost N². What is served is
    // this machine projected to the exact time of the scrape, as a real agent reads /proc then.
    let now = context.shared.clock.now();
    let (hang, garbage, body) = {
        let mut state = context.shared.lock();
        let (hang, garbage) = state.scrape_fault(context.id);
        let since = (now - state.last_advance()).to_std().unwrap_or_default();
        let share = state.share_of(context.id);
        let Some(droplet) = state.droplets.get(&context.id) else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        let mut machine = droplet.machine.clone();
        machine.advance(since, share);
        let mut body = String::with_capacity(6 * 1024);
        machine.render(&mut body);
        if let Some(queue) = &state.queue {
            use std::fmt::Write as _;
            let _ = writeln!(
                body,
                "# HELP sim_jobs_running Jobs this droplet runs now (the sim's queue workload).\n# TYPE sim_jobs_running gauge\nsim_jobs_running {}",
                queue.running_on(context.id)
            );
        }
        state.stats.scrapes_total += 1;
        *state.stats.scrapes.entry(context.id).or_insert(0) += 1;
        (hang, garbage, body)
    };
    if hang {
        std::future::pending::<()>().await;
    }
    let body = if garbage {
        "<html>502 Bad Gateway</html>\nnode_cpu_seconds_total{cpu=\"0\" 12\n".to_string()
    } else {
        body
    };
    let content_type = (
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8; escaping=values",
    );
    // Like do-agent's endpoint: gzip (chunked) whenever the scraper accepts it.
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if gzip {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if encoder.write_all(body.as_bytes()).is_ok()
            && let Ok(compressed) = encoder.finish()
        {
            let stream = futures_once(compressed);
            return (
                [content_type, (header::CONTENT_ENCODING, "gzip")],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
    }
    ([content_type], body).into_response()
}

/// A body sent as a stream of one chunk, so it goes out with chunked transfer encoding (as the
/// real endpoint's does) rather than a content length.
fn futures_once(
    bytes: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    OnceStream(Some(axum::body::Bytes::from(bytes)))
}

/// A stream yielding one item.
struct OnceStream(Option<axum::body::Bytes>);

impl futures_core::Stream for OnceStream {
    type Item = Result<axum::body::Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.take().map(Ok))
    }
}
