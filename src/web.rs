//! The web app (`troupe serve`): server-rendered pages, a little plain JavaScript and
//! server-sent events, every asset embedded in the binary.
//!
//! # Map
//! - [`state`]: [`AppState`], shared by every handler: the config, the shared providers (so
//!   concurrent runs share their budgets), the live runs, the tokens.
//! - [`security`]: the access token, CSRF, security headers, run-id validation.
//! - [`live`]: a live run: its events kept in memory for replay, followers woken by a watch
//!   channel, live metrics; the Live page and its SSE stream.
//! - `runs`, `new_run`, `results`, `personas`, `settings`: one file per page.
//! - [`templates`]: the maud partials every page shares (layout, navigation, CSRF field);
//!   [`logs`]: the ring buffer behind the Settings page's debug view.
//!
//! [`app`] builds the router (tests call `app(state).oneshot(req)`); [`serve`] runs it on a
//! listener until the shutdown future resolves, within the [`ServeLimits`] (header and body
//! timeouts, connections and runs at once).

pub mod error;
pub mod live;
pub mod logs;
mod new_run;
mod personas;
mod results;
mod runs;
pub mod security;
mod settings;
pub mod state;
pub mod templates;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower_http::timeout::RequestBodyTimeoutLayer;

pub use error::WebError;
pub use logs::{LogBuffer, LogLayer};
pub use state::{AppState, ServeLimits, ServeSettings};

/// Largest request body accepted (a persona import or a generated batch fits easily).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

const APP_CSS: &str = include_str!("web/assets/app.css");
const APP_JS: &str = include_str!("web/assets/app.js");

/// The router with every page, API and asset, behind the security layers.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(runs::index))
        .route("/runs/new", get(new_run::page))
        .route("/runs", post(new_run::start))
        .route("/api/estimate", post(new_run::estimate))
        .route("/runs/{id}", get(results::page))
        .route("/runs/{id}/events", get(live::events))
        .route("/runs/{id}/cancel", post(live::cancel))
        .route("/runs/{id}/delete", post(runs::delete))
        .route("/runs/{id}/analyze", post(results::analyze))
        .route("/runs/{id}/export/{format}", get(results::export))
        .route("/runs/{id}/charts/{name}", get(results::chart))
        .route("/api/runs/{id}/metrics", get(live::metrics))
        .route("/experiments/{id}/{file}", get(runs::experiment_file))
        .route("/personas", get(personas::page))
        .route("/personas/save", post(personas::save))
        .route("/personas/import", post(personas::import))
        .route("/personas/generate", post(personas::generate))
        .route("/personas/save-batch", post(personas::save_batch))
        .route("/api/personas/validate", post(personas::validate))
        .route("/settings", get(settings::page))
        .route("/settings/doctor", post(settings::doctor))
        .route("/login", get(security::login_page).post(security::login))
        .route("/assets/app.css", get(|| async { security::asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/assets/app.js", get(|| async { security::asset("text/javascript; charset=utf-8", APP_JS) }))
        .layer(axum::middleware::from_fn_with_state(state.clone(), security::guard))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Outside the guard, which reads form bodies for their CSRF field: a body that stops
        // arriving for `body_timeout` ends its request with 408 instead of holding it.
        .layer(RequestBodyTimeoutLayer::new(state.limits().body_timeout))
        .with_state(state)
}

/// How long a shutdown waits for open connections (a Live page's stream lasts as long as its
/// run) before `serve` returns without them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the app on `listener` until `shutdown` resolves, within the state's [`ServeLimits`].
///
/// The loop is hyper-util's documented one (accept, wrap in `TokioIo`, serve the connection,
/// watch it for a graceful shutdown); `axum::serve` cannot bound header reads. Around it:
/// - HTTP/1 with hyper's header-read timer, which runs from a connection's start and again
///   from each response, so silent, slow and idle kept-alive clients are all cut off. Not
///   HTTP/2: browsers speak it only over TLS, and hyper-util's protocol detection waits for a
///   client's first bytes with no timeout at all.
/// - A semaphore permit is taken before each accept: at most `max_connections` are served at
///   once, the rest wait in the kernel's listen queue and are taken in order as slots free up.
///   The file descriptors the server uses for clients are bounded with them.
/// - The body timeout is a tower-http layer in [`app`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits().clone();
    let router = app(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
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
