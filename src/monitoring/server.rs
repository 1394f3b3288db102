//! A bounded HTTP/1 server loop for a router: the web app's and `/metrics`'.
//!
//! The loop is hyper-util's documented one (accept, wrap in `TokioIo`, serve the connection,
//! watch it for a graceful shutdown); `axum::serve` cannot bound header reads. Around it:
//! - HTTP/1 with hyper's header-read timer, which runs from a connection's start and again
//!   from each response, so silent, slow and idle kept-alive clients are all cut off. Not
//!   HTTP/2: browsers speak it only over TLS, and hyper-util's protocol detection waits for a
//!   client's first bytes with no timeout at all.
//! - A semaphore permit is taken before each accept: at most `max_connections` are served at
//!   once, the rest wait in the kernel's listen queue and are taken in order as slots free up.
//!   The file descriptors the server uses for clients are bounded with them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// How long a shutdown waits for open connections (a Live page's stream lasts as long as its
/// run) before `serve` returns without them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a server accepts.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// A client must send its request headers within this.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` within `bounds` until `shutdown` resolves.
pub async fn serve_bounded(
    listener: tokio::net::TcpListener,
    router: Router,
    bounds: Bounds,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(bounds.header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(bounds.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn =
            graceful.watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone())));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::info!("stopped waiting for open connections (live streams) at shutdown");
    }
    Ok(())
}

/// A peer that gave up before being accepted is no error; anything else (no file descriptors
/// or memory left) is logged and waited out, so the loop does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted) {
        return;
    }
    tracing::warn!(error = %e, "cannot accept a connection; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
