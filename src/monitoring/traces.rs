//! OpenTelemetry traces over OTLP/HTTP (`[monitoring] otlp_endpoint`): the `tracing` spans the
//! runtime already opens (simulation > turn > persona_act > llm_call) exported by
//! tracing-opentelemetry through a batch processor (bounded queue: when the collector is slow
//! or gone, spans are dropped, never piled up), and the W3C `traceparent` that carries a trace
//! to workers over NATS headers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::MonitoringError;

/// The header (and W3C name) a trace context travels in.
pub const TRACEPARENT: &str = "traceparent";

/// Spans waiting for export at most (a few MB); beyond, new spans are dropped rather than
/// held: a run at full speed on a fast provider makes spans faster than a collector takes them.
pub const MAX_QUEUED_SPANS: usize = 16_384;

/// How long one export may take before it is given up (the batch is dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the exporter running; dropping it flushes the spans not yet sent (waiting at most the
/// export timeout, saying so after a second) and stops it, then says how many spans were lost.
#[derive(Debug)]
pub struct TraceGuard {
    provider: Option<SdkTracerProvider>,
    tally: Arc<Tally>,
    url: String,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        let Some(p) = self.provider.take() else { return };
        // The exporter's blocking HTTP client must not be driven from an async worker thread.
        let (done_tx, done) = std::sync::mpsc::channel();
        let flush = std::thread::spawn(move || {
            let r = p.shutdown_with_timeout(EXPORT_TIMEOUT);
            let _ = done_tx.send(());
            r
        });
        if done.recv_timeout(Duration::from_secs(1)).is_err() {
            eprintln!("note: sending the last trace spans to {} (at most {} s)", self.url, EXPORT_TIMEOUT.as_secs());
        }
        let shutdown = flush.join().unwrap_or(Ok(()));
        let lost = self.tally.lost_spans.load(Ordering::Relaxed);
        if lost > 0 || shutdown.is_err() {
            let why = self.tally.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let why = why.or_else(|| shutdown.err().map(|e| e.to_string())).unwrap_or_default();
            eprintln!(
                "warning: {lost} trace span(s) could not be sent to {} ({why}); is the collector running there? \
                 (monitoring.otlp_endpoint)",
                self.url
            );
        }
    }
}

/// What the exporter could not send, shared by its thread and the guard that reports it. A
/// std `Mutex`: the exporter's thread is not an actor, and nothing is awaited under it.
#[derive(Debug, Default)]
struct Tally {
    lost_spans: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The OTLP exporter, counting what it fails to send (the SDK drops failed batches silently).
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    tally: Arc<Tally>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.inner.export(batch).await;
        if let Err(e) = &r {
            if self.tally.lost_spans.fetch_add(n, Ordering::Relaxed) == 0 {
                tracing::warn!(error = %e, "trace spans could not be sent to the collector");
            }
            *self.tally.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
        r
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The full OTLP/HTTP traces URL for `endpoint`: a base (`http://collector:4318`) gets
/// `/v1/traces`, as `OTEL_EXPORTER_OTLP_ENDPOINT` does; a URL with a path is used as given.
pub fn traces_url(endpoint: &str) -> Result<String, MonitoringError> {
    let bad = || MonitoringError::BadEndpoint { endpoint: endpoint.to_string() };
    let url = reqwest::Url::parse(endpoint).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    Ok(if url.path() == "/" { format!("{}/v1/traces", endpoint.trim_end_matches('/')) } else { endpoint.to_string() })
}

/// A `tracing` layer exporting spans to `endpoint` as `service`, and the guard that flushes it.
pub fn otlp_layer<S>(
    endpoint: &str,
    service: &str,
) -> Result<(tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, TraceGuard), MonitoringError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let url = traces_url(endpoint)?;
    let service = service.to_string();
    let tally = Arc::new(Tally::default());
    let (shown, counted) = (url.clone(), tally.clone());
    // Built on its own thread: the blocking HTTP client may not be made inside an async runtime.
    let provider = std::thread::spawn(move || -> Result<SdkTracerProvider, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(HashMap::new())
            .build()
            .map_err(|e| e.to_string())?;
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_max_export_batch_size(2048)
            .with_scheduled_delay(Duration::from_secs(1))
            .build();
        let exporter = Counting { inner: exporter, tally: counted };
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
    })
    .join()
    .map_err(|_| MonitoringError::Spawn("the OTLP exporter's setup panicked".into()))?
    .map_err(MonitoringError::Exporter)?;
    let tracer = provider.tracer("troupe-sim");
    // Only the spans' own fields: source locations, thread ids and targets would add five
    // attributes to every span for nothing a reader of a run's trace needs.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_target(false);
    Ok((layer, TraceGuard { provider: Some(provider), tally, url: shown }))
}

/// The W3C `traceparent` of `span`, when it is being exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the remote span named by `traceparent` (from another machine:
/// anything but a well-formed W3C value is ignored).
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    if traceparent.len() != 55 || !traceparent.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_endpoint_gets_the_traces_path_and_bad_ones_are_refused() {
        assert_eq!(traces_url("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://127.0.0.1:4318/").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("https://c.example/otlp/v1/traces").unwrap(), "https://c.example/otlp/v1/traces");
        for bad in ["127.0.0.1:4318", "grpc://c:4317", "http://", ""] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }
}
