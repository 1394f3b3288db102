//! Logging setup: human-readable to stderr, optionally to a file (text or JSON lines).
//! `RUST_LOG` overrides `monitoring.log_level`.

use std::fs::OpenOptions;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::prelude::*;
use troupe_sim::config::{LogFormat, MonitoringConfig};
use troupe_sim::monitoring::traces::{TraceGuard, otlp_layer};

/// The trace exporter of this process, flushed by [`flush_traces`] once the command and its
/// async runtime are over (spans still close while the runtime winds its tasks down).
static TRACES: std::sync::Mutex<Option<TraceGuard>> = std::sync::Mutex::new(None);

/// Keeps `guard` until [`flush_traces`].
pub fn keep_traces(guard: Option<TraceGuard>) {
    if let Some(g) = guard {
        *TRACES.lock().unwrap_or_else(|p| p.into_inner()) = Some(g);
    }
}

/// Sends the spans not yet exported (at most the export timeout) and stops the exporter.
pub fn flush_traces() {
    let guard = TRACES.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(guard);
}

pub fn init(m: &MonitoringConfig, quiet: bool) -> anyhow::Result<()> {
    init_for(m, if quiet { Terminal::Quiet } else { Terminal::Interactive })
}

/// A long-running service (`troupe worker`): its stderr is its log, at `monitoring.log_level`.
pub fn init_service(m: &MonitoringConfig) -> anyhow::Result<()> {
    init_for(m, Terminal::Service)
}

enum Terminal {
    Quiet,
    Interactive,
    Service,
}

fn init_for(m: &MonitoringConfig, t: Terminal) -> anyhow::Result<()> {
    let level = match m.log_level.to_uppercase().as_str() {
        "WARNING" => "warn".to_string(),
        other => other.to_lowercase(),
    };
    // An interactive terminal gets warnings and above by default: the transcript is the main
    // output there.
    let stderr_level = match t {
        Terminal::Quiet => "error".to_string(),
        Terminal::Interactive if level == "info" => "warn".into(),
        _ => level.clone(),
    };
    let env = std::env::var("RUST_LOG").ok();
    let filter = |default: &str| match &env {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|_| EnvFilter::new(default)),
        None => EnvFilter::new(format!("{default},ractor=warn")),
    };
    // Colour codes only on a terminal: a pipe or a file gets plain text.
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr.with_max_level(tracing::Level::TRACE))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter(&stderr_level));
    let (otel, traces) = trace_layer(m)?;
    let registry = tracing_subscriber::registry().with(stderr).with(otel);
    match &m.log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            let file = std::sync::Mutex::new(file);
            match m.log_format {
                LogFormat::Json => {
                    let layer = tracing_subscriber::fmt::layer()
                        .json()
                        .with_span_list(true)
                        .with_writer(file)
                        .with_filter(filter(&level));
                    let _ = registry.with(layer).try_init();
                }
                LogFormat::Text => {
                    let layer =
                        tracing_subscriber::fmt::layer().with_ansi(false).with_writer(file).with_filter(filter(&level));
                    let _ = registry.with(layer).try_init();
                }
            }
        }
        None => {
            let _ = registry.try_init();
        }
    }
    keep_traces(traces);
    Ok(())
}

/// The OTLP layer when `monitoring.otlp_endpoint` is set (shared with `troupe serve`'s logging),
/// and the guard that flushes it.
pub fn trace_layer<S>(
    m: &MonitoringConfig,
) -> anyhow::Result<(Option<impl tracing_subscriber::Layer<S> + Send + Sync + use<S>>, Option<TraceGuard>)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let Some(endpoint) = &m.otlp_endpoint else { return Ok((None, None)) };
    let (layer, guard) = otlp_layer(endpoint, &m.otlp_service_name)?;
    Ok((Some(layer.with_filter(tracing_subscriber::filter::filter_fn(exported))), Some(guard)))
}

/// What goes to the trace collector: troupe-sim's spans, and warnings and errors as span
/// events (never the `trace`-level prompt text).
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("troupe") && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
}
