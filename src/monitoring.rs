//! Seeing a process from outside while it works: `/metrics` in the Prometheus text format,
//! served from the metrics actors' own figures.
//!
//! [`MetricsExporter::start`] spawns the process' [`MonitorActor`] (every run started
//! afterwards reports to it) and serves `GET /metrics` (and the last transcript lines as JSON
//! at `GET /messages`) on the given address until
//! [`MetricsExporter::finish`], which first lingers so a scraper sees the final figures.
//! [`server`] is the bounded HTTP loop this and the web app share; [`traces`] exports the
//! runtime's spans over OTLP (`[monitoring] otlp_endpoint`) and carries trace context to workers.

pub mod figures;
pub mod otlp;
pub mod scrape;
pub mod server;
pub mod traces;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::actors::monitor::{self, MonitorActor, MonitorMsg};
use server::{Bounds, serve_bounded};

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why metrics cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    /// The address does not parse.
    #[error("monitoring.metrics_addr = {addr:?} is not an address: give IP:PORT, e.g. 127.0.0.1:9464")]
    BadAddress {
        /// What was given.
        addr: String,
    },
    /// Binding failed (in use, not ours).
    #[error(
        "cannot serve metrics on {addr}: {error}; choose a free port with --metrics-addr 127.0.0.1:PORT \
         (or monitoring.metrics_addr), or 127.0.0.1:0 for any"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (shown in the message, so not a separate cause).
        error: std::io::Error,
    },
    /// Another exporter already runs in this process.
    #[error("metrics are already exported by this process; start one exporter per process")]
    AlreadyStarted,
    /// The monitor actor (or the trace exporter's thread) could not start.
    #[error("cannot start monitoring: {0}")]
    Spawn(String),
    /// The OTLP endpoint is not an http(s) URL.
    #[error(
        "monitoring.otlp_endpoint = {endpoint:?} is not an OTLP/HTTP URL: give http(s)://host:4318 (the collector's \
         OTLP/HTTP port; /v1/traces is added) or the full traces URL"
    )]
    BadEndpoint {
        /// What was given.
        endpoint: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// A running `/metrics` endpoint and the process' monitor behind it.
#[derive(Debug)]
pub struct MetricsExporter {
    addr: SocketAddr,
    monitor: ActorRef<MonitorMsg>,
    linger: Duration,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// Turns true at Ctrl-C or SIGTERM, heard from the start: one that comes while the run
    /// ends, before the linger, must still cut the linger short.
    interrupted: tokio::sync::watch::Receiver<bool>,
}

impl MetricsExporter {
    /// Binds `addr`, installs the process' monitor and serves `/metrics`; `linger` is how long
    /// [`finish`](Self::finish) keeps serving after the work ends.
    pub async fn start(addr: &str, linger: Duration) -> Result<MetricsExporter, MonitoringError> {
        let sock = crate::config::limits::metrics_socket(addr)
            .ok_or_else(|| MonitoringError::BadAddress { addr: addr.to_string() })?;
        if monitor::installed().is_some() {
            return Err(MonitoringError::AlreadyStarted);
        }
        let listener =
            tokio::net::TcpListener::bind(sock).await.map_err(|error| MonitoringError::Bind { addr: sock, error })?;
        let local = listener.local_addr().map_err(|error| MonitoringError::Bind { addr: sock, error })?;
        let (actor, _) =
            Actor::spawn(None, MonitorActor, ()).await.map_err(|e| MonitoringError::Spawn(e.to_string()))?;
        if !monitor::install(actor.clone()) {
            actor.stop(None);
            return Err(MonitoringError::AlreadyStarted);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let bounds = Bounds { header_timeout: Duration::from_secs(10), max_connections: 64 };
        let app = router(actor.clone(), local.ip().is_loopback());
        let task = tokio::spawn(serve_bounded(listener, app, bounds, async move {
            let _ = stopped.await;
        }));
        tracing::info!(addr = %local, "serving Prometheus metrics at http://{local}/metrics");
        let (tell, interrupted) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminated() => {}
            }
            let _ = tell.send(true);
        });
        Ok(MetricsExporter { addr: local, monitor: actor, linger, stop: Some(stop), task, interrupted })
    }

    /// The address served (the port chosen when `:0` was given).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The monitor, for process-level figures ([`MonitorMsg::Process`]).
    pub fn monitor(&self) -> &ActorRef<MonitorMsg> {
        &self.monitor
    }

    /// Shows a process-level gauge (the stress setting running, say), replacing the last one
    /// shown.
    pub fn show_setting(&self, name: &'static str, help: &'static str, value: f64) {
        let mut e = crate::record::exposition::Exposition::default();
        e.gauge(name, help, &[], value);
        let _ = self.monitor.cast(MonitorMsg::Process(e));
    }

    /// Keeps serving for the linger time (cut short by Ctrl-C or SIGTERM), then stops the
    /// server.
    pub async fn finish(mut self) {
        if !self.linger.is_zero() && !*self.interrupted.borrow() {
            tracing::info!(seconds = self.linger.as_secs_f64(), "serving final metrics before exiting");
            let mut interrupted = self.interrupted.clone();
            tokio::select! {
                () = tokio::time::sleep(self.linger) => {}
                _ = interrupted.wait_for(|i| *i) => {}
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// `GET /metrics`, `GET /messages` (the last transcript lines, oldest first, as a JSON array
/// of [`RecentMessage`](crate::actors::monitor::RecentMessage)) and a pointer to both at `/`.
/// What personas said is served only when `messages` is true (the CLI: a loopback address);
/// metrics hold no text and may be scraped from elsewhere.
pub fn router(monitor: ActorRef<MonitorMsg>, messages: bool) -> Router {
    let said = if messages { get(recent) } else { get(|| async { (StatusCode::FORBIDDEN, NOT_HERE) }) };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/messages", said)
        .route("/", get(|| async { "troupe-sim: metrics at /metrics, the last messages at /messages\n" }))
        .with_state(monitor)
}

/// Why `/messages` is refused on a non-loopback address.
const NOT_HERE: &str = "the last messages (what personas said) are served on a loopback --metrics-addr only; \
                        run `troupe top` on the same machine or through an SSH tunnel\n";

async fn recent(State(monitor): State<ActorRef<MonitorMsg>>) -> Response {
    match monitor.call(MonitorMsg::Recent, Some(Duration::from_secs(10))).await {
        Ok(ractor::rpc::CallResult::Success(lines)) => axum::Json(lines).into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "the monitor did not answer; try again\n").into_response(),
    }
}

async fn metrics(State(monitor): State<ActorRef<MonitorMsg>>) -> Response {
    match monitor.call(MonitorMsg::Scrape, Some(Duration::from_secs(10))).await {
        Ok(ractor::rpc::CallResult::Success(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "the monitor did not answer; try again\n").into_response(),
    }
}

/// SIGTERM (never on platforms without it).
async fn terminated() {
    #[cfg(unix)]
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        s.recv().await;
        return;
    }
    std::future::pending::<()>().await;
}
