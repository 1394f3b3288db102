//! OpenTelemetry traces over OTLP/HTTP (`[monitoring] otlp_endpoint`): the `tracing` spans the
//! runtime already opens (simulation > turn > persona_act > llm_call) recorded by a small
//! `tracing` layer of our own and exported by one thread through a bounded queue ([`super::otlp`]:
//! when the collector is slow or gone, spans are dropped, never piled up), and the W3C
//! `traceparent` that carries a trace to workers and shards over NATS headers.
//!
//! Why not tracing-opentelemetry and the OpenTelemetry SDK: measured through the binary they
//! cost 11-23 µs of CPU per LLM call (two spans), most of it building the SDK's span objects,
//! cloning their attributes and waking the batch thread for every span. This layer keeps a
//! span as ids, two times and its fields in the registry's own storage and queues it with one
//! uncontended lock when it closes.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::MonitoringError;
use super::otlp::{Attrs, EXPORT_TIMEOUT, Event, Finished, Queue, cut};

pub use super::otlp::MAX_QUEUED_SPANS;

/// The header (and W3C name) a trace context travels in.
pub const TRACEPARENT: &str = "traceparent";

/// Events (warnings, errors) kept per span at most.
const MAX_EVENTS: usize = 32;

/// Keeps the exporter running; dropping it flushes the spans not yet sent (waiting at most the
/// export timeout, saying so after a second) and stops it, then says how many spans were lost.
#[derive(Debug)]
pub struct TraceGuard {
    queue: Arc<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
    url: String,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.queue.stop();
        let (done_tx, done) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = thread.join();
            let _ = done_tx.send(());
        });
        if done.recv_timeout(std::time::Duration::from_secs(1)).is_err() {
            eprintln!("note: sending the last trace spans to {} (at most {} s)", self.url, EXPORT_TIMEOUT.as_secs());
        }
        let _ = waiter.join();
        let lost = self.queue.tally.lost_spans.load(std::sync::atomic::Ordering::Relaxed);
        if lost > 0 {
            let why = self.queue.tally.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
            eprintln!(
                "warning: {lost} trace span(s) could not be sent to {} ({why}); is the collector running there? \
                 (monitoring.otlp_endpoint)",
                self.url
            );
        }
    }
}

/// The layer that records spans and queues them for export when they close.
#[derive(Debug)]
pub struct OtlpLayer {
    queue: Arc<Queue>,
}

impl<S> tracing_subscriber::Layer<S> for OtlpLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = match attrs.parent() {
            Some(p) => ctx.span(p),
            None if attrs.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let from = parent.and_then(|p| p.extensions().get::<Finished>().map(|r| (r.trace, r.id)));
        // Kept in the registry's extensions of the span until it closes.
        let mut rec = Finished {
            name: span.name(),
            trace: from.map_or_else(new_trace_id, |f| f.0),
            id: new_span_id(),
            parent: from.map(|f| f.1),
            start: now_ns(),
            end: 0,
            attrs: Attrs::default(),
            events: Vec::new(),
        };
        attrs.record(&mut Fields(&mut rec.attrs));
        span.extensions_mut().insert(rec);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(rec) = span.extensions_mut().get_mut::<Finished>()
        {
            values.record(&mut Fields(&mut rec.attrs));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        let mut ext = span.extensions_mut();
        let Some(rec) = ext.get_mut::<Finished>() else { return };
        if rec.events.len() >= MAX_EVENTS {
            return;
        }
        let mut message = Message(None);
        event.record(&mut message);
        let name = message.0.unwrap_or_else(|| event.metadata().name().to_string());
        let level = if *event.metadata().level() == tracing::Level::ERROR { "ERROR" } else { "WARN" };
        rec.events.push(Event { time: now_ns(), name, level });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut rec) = span.extensions_mut().remove::<Finished>() else { return };
        rec.end = now_ns();
        self.queue.push(&rec);
    }
}

/// Records a span's fields into its attributes.
struct Fields<'a>(&'a mut Attrs);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.debug(field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.text(field.name(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.int(field.name(), value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.int(field.name(), i64::try_from(value).unwrap_or(i64::MAX));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.float(field.name(), value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.flag(field.name(), value);
    }
}

/// An event's message (its other fields are not exported).
struct Message(Option<String>);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(cut(&format!("{value:?}")).to_string());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(cut(value).to_string());
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

thread_local! {
    /// This thread's id generator (SplitMix64, seeded from the OS once per thread).
    static IDS: Cell<u64> = Cell::new({
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b)
    });
}

/// A random, never-zero 64-bit number.
fn next_id() -> u64 {
    IDS.with(|s| {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).max(1)
    })
}

fn new_span_id() -> [u8; 8] {
    next_id().to_be_bytes()
}

fn new_trace_id() -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&next_id().to_be_bytes());
    t[8..].copy_from_slice(&next_id().to_be_bytes());
    t
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
pub fn otlp_layer(endpoint: &str, service: &str) -> Result<(OtlpLayer, TraceGuard), MonitoringError> {
    let url = traces_url(endpoint)?;
    let queue = Arc::new(Queue::default());
    let (q, to, service) = (queue.clone(), url.clone(), service.to_string());
    // The blocking HTTP client lives on the exporter's own thread (it may not be made or
    // dropped inside an async runtime).
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(EXPORT_TIMEOUT).build();
            let client = match client {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            super::otlp::export_loop(&q, &to, &service, &client);
        })
        .map_err(|e| MonitoringError::Spawn(format!("the OTLP exporter's thread: {e}")))?;
    ready
        .recv()
        .map_err(|_| MonitoringError::Spawn("the OTLP exporter's setup panicked".into()))?
        .map_err(MonitoringError::Exporter)?;
    Ok((OtlpLayer { queue: queue.clone() }, TraceGuard { queue, thread: Some(thread), url }))
}

/// Runs `f` on `span`'s record, when this process exports it.
fn with_rec<T>(span: &tracing::Span, f: impl FnOnce(&mut Finished) -> T) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let data = registry.span(id)?;
        let mut ext = data.extensions_mut();
        ext.get_mut::<Finished>().map(f)
    })
    .flatten()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The W3C `traceparent` of `span`, when it is being exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    with_rec(span, |r| format!("00-{}-{}-01", hex(&r.trace), hex(&r.id)))
}

/// Makes `span` a child of the remote span named by `traceparent` (from another machine:
/// anything but a well-formed W3C value is ignored). Spans opened under it afterwards join the
/// remote trace.
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    let Some((trace, parent)) = parse_traceparent(traceparent) else { return };
    with_rec(span, |r| {
        r.trace = trace;
        r.parent = Some(parent);
    });
}

/// The trace and parent span ids of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids
/// not all zero).
fn parse_traceparent(tp: &str) -> Option<([u8; 16], [u8; 8])> {
    let mut parts = tp.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" || flags.len() != 2 || u8::from_str_radix(flags, 16).is_err() {
        return None;
    }
    let mut t = [0u8; 16];
    let mut p = [0u8; 8];
    unhex(trace, &mut t)?;
    unhex(parent, &mut p)?;
    (t != [0; 16] && p != [0; 8]).then_some((t, p))
}

fn unhex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
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

    #[test]
    fn traceparents_read_back_and_bad_ones_are_ignored() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (t, p) = parse_traceparent(tp).unwrap();
        assert_eq!(format!("00-{}-{}-01", hex(&t), hex(&p)), tp);
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-ü0f7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ids_are_never_zero_and_do_not_repeat() {
        let ids: std::collections::HashSet<[u8; 8]> = (0..10_000).map(|_| new_span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&[0; 8]));
        assert_ne!(new_trace_id(), new_trace_id());
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let long = "é".repeat(super::super::otlp::MAX_TEXT);
        let s = cut(&long);
        assert!(s.len() <= super::super::otlp::MAX_TEXT && s.len() > 1000 && s.chars().all(|c| c == 'é'));
    }
}
