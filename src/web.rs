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

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::monitoring::server::{Bounds, serve_bounded};

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

/// Serves the app on `listener` until `shutdown` resolves, within the state's [`ServeLimits`]
/// (the loop is [`crate::monitoring::server::serve_bounded`]; the body timeout is a tower-http
/// layer in [`app`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits().clone();
    let bounds = Bounds { header_timeout: limits.header_timeout, max_connections: limits.max_connections };
    serve_bounded(listener, app(state), bounds, shutdown).await
}
