//! `troupe serve`: the web app.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;
use troupe_sim::config::MonitoringConfig;
use troupe_sim::web::state::random_token;
use troupe_sim::web::{AppState, LogBuffer, ServeSettings};

use super::{GlobalArgs, UsageError};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; any address but loopback requires the access token
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub bind: SocketAddr,
    /// Access token every request must carry (at least 16 characters) [default: a random one,
    /// printed once, when bound beyond loopback]
    #[arg(long, env = "TROUPE_WEB_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Folder of scenario files the New run page offers
    #[arg(long, default_value = "scenarios", value_name = "DIR")]
    pub scenarios: PathBuf,
}

pub fn run(g: &GlobalArgs, a: ServeArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(g, None, &[])?;
    let logs = LogBuffer::default();
    init_logging(&loaded.config.monitoring, &logs);
    let generated;
    let token = match a.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t.len() < 16 => {
            return Err(
                UsageError("--token: use at least 16 characters (or leave it out for a random one)".into()).into()
            );
        }
        Some(t) => {
            generated = false;
            Some(t.to_string())
        }
        None if a.bind.ip().is_loopback() => {
            generated = false;
            None
        }
        None => {
            generated = true;
            Some(random_token(24))
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(async move {
        let state =
            AppState::new(ServeSettings { loaded, access_token: token.clone(), logs, scenarios_dir: a.scenarios })?;
        let listener = tokio::net::TcpListener::bind(a.bind).await.with_context(|| {
            format!("cannot listen on {}; is another server using the port? try --bind 127.0.0.1:0", a.bind)
        })?;
        let addr = listener.local_addr()?;
        eprintln!("troupe web app: http://{addr}/  (Ctrl-C stops it)");
        match (&token, generated) {
            (Some(t), true) => eprintln!("access token (shown once): open http://{addr}/?token={t}"),
            (Some(_), false) => eprintln!("access token required: open http://{addr}/?token=YOUR_TOKEN"),
            (None, _) => {}
        }
        troupe_sim::web::serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the web server failed")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Logs to stderr at `monitoring.log_level` (or `RUST_LOG`), and into the ring buffer the
/// Settings page shows, at debug for troupe itself.
fn init_logging(m: &MonitoringConfig, logs: &LogBuffer) {
    let level = match m.log_level.to_uppercase().as_str() {
        "WARNING" => "warn".to_string(),
        other => other.to_lowercase(),
    };
    let stderr_filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{level},ractor=warn")));
    let stderr =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_filter(stderr_filter);
    let ring = logs.layer().with_filter(EnvFilter::new("info,troupe_sim=debug,ractor=warn"));
    let _ = tracing_subscriber::registry().with(stderr).with(ring).try_init();
}
