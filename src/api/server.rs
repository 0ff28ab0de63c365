//! The status API's HTTP server, bounded so that clients cannot starve the daemon: at most
//! [`ServerLimits::max_connections`] connections at once (further clients wait in the kernel's
//! backlog, holding none of the daemon's file descriptors), request headers must arrive within
//! a few seconds, and a connection lives at most a few minutes. Scrapes therefore always have
//! descriptors left, however many idle or slow clients connect.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How much of the daemon the status API may hold.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// The longest a connection stays open, keep-alive included.
    pub connection_lifetime: Duration,
}

impl ServerLimits {
    /// Limits for a process allowed `open_files` descriptors: a quarter of them, between 16 and
    /// 512, for the status API; the rest stay for scrapes and the API client.
    pub fn for_open_files(open_files: Option<u64>) -> ServerLimits {
        let quarter = open_files.unwrap_or(1024) / 4;
        ServerLimits {
            max_connections: quarter.clamp(16, 512) as usize,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(120),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets open
/// connections finish their request (at most 5 s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors or a reset before accept: wait instead of spinning.
                    tracing::debug!(%error, "status API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let lifetime = tokio::time::sleep(limits.connection_lifetime);
            tokio::pin!(lifetime);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopped.changed() => {}
                _ = &mut lifetime => {}
            }
            // Finish the request in progress, then close.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        });
    }
    let _ = stopping.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}
