//! What runs "on" each simulated droplet: a do-agent-like metrics endpoint on its address, and
//! listeners on the open ports so TCP health checks pass as on a real droplet.

use super::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::task::JoinHandle;

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
            Ok(listener) => tasks.push(tokio::spawn(async move {
                // Accept and close at once: enough for a TCP health check.
                while let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                }
            })),
            Err(e) => {
                tracing::warn!(droplet = id, address = %addr, error = %e, "sim: cannot open port")
            }
        }
    }
    tasks
}

async fn metrics(State(context): State<AgentContext>) -> Response {
    // The model is kept current by the sim's own ticker (every 200 ms) and by every API call;
    // advancing it here, once per scrape, would make a tick of N droplets cost N².
    let (hang, garbage, body) = {
        let mut state = context.shared.lock();
        let (hang, garbage) = state.scrape_fault(context.id);
        let Some(droplet) = state.droplets.get(&context.id) else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        let mut body = String::with_capacity(6 * 1024);
        droplet.machine.render(&mut body);
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
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
