//! The OTLP/HTTP side of traces: finished spans encoded as an `ExportTraceServiceRequest`
//! (protobuf, written here field by field: the messages are few and fixed) and posted by one
//! exporter thread from a bounded queue.
//!
//! The queue is the request's body being written, behind a mutex: the thread that closes a span
//! takes the lock to append it, encoded, and wakes the exporter only when [`BATCH`] spans wait,
//! so a span costs its caller no system call. Spans beyond [`MAX_QUEUED_SPANS`] are dropped and
//! counted, never held: a collector that is slow or gone never makes the run wait or grow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Spans waiting for export at most (a few MB); beyond, new spans are dropped rather than
/// held: a run at full speed on a fast provider makes spans faster than a collector takes them.
pub const MAX_QUEUED_SPANS: usize = 16_384;

/// Why spans are dropped when [`MAX_QUEUED_SPANS`] wait.
const FULL: &str = "more than 16384 spans waited for the collector";

/// Spans waiting that wake the exporter before its next flush.
const BATCH: usize = 2048;

/// How often what is queued is sent, full batch or not.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How long one export may take before it is given up (its spans are counted lost); also the
/// most the last flush at exit may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A span's attributes, already written as the protobuf `KeyValue`s of an OTLP span: recorded
/// straight from the span's fields, with no value kept apart, so a span costs one buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs(Pb);

impl Attrs {
    /// Text (cut to [`MAX_TEXT`] bytes, at a character boundary).
    pub fn text(&mut self, key: &str, value: &str) {
        self.0.attr(9, key, |any| any.text(1, value));
    }
    /// Text written by `value`'s `Debug` (a `%` field's `Display`), cut as [`Attrs::text`].
    pub fn debug(&mut self, key: &str, value: &dyn std::fmt::Debug) {
        self.0.attr(9, key, |any| any.formatted(1, value));
    }
    /// A whole number.
    pub fn int(&mut self, key: &str, value: i64) {
        self.0.attr(9, key, |any| any.uint(3, value as u64));
    }
    /// A number.
    pub fn float(&mut self, key: &str, value: f64) {
        self.0.attr(9, key, |any| any.fixed64(4, value.to_bits()));
    }
    /// A flag.
    pub fn flag(&mut self, key: &str, value: bool) {
        self.0.attr(9, key, |any| any.uint(2, u64::from(value)));
    }
}

/// Longest attribute or event text exported, in bytes.
pub const MAX_TEXT: usize = 1024;

/// `s` cut to at most [`MAX_TEXT`] bytes, at a character boundary.
pub fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A warning or an error logged inside a span.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix nanoseconds.
    pub time: u64,
    /// The message.
    pub name: String,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
}

/// A finished span, as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The span's name (`turn`, `llm_call`, ...).
    pub name: &'static str,
    /// Its trace.
    pub trace: [u8; 16],
    /// Its id.
    pub id: [u8; 8],
    /// Its parent's id (none for a root).
    pub parent: Option<[u8; 8]>,
    /// Unix nanoseconds.
    pub start: u64,
    /// Unix nanoseconds.
    pub end: u64,
    /// Its fields.
    pub attrs: Attrs,
    /// Warnings and errors logged in it.
    pub events: Vec<Event>,
}

/// What the exporter could not send.
#[derive(Debug, Default)]
pub struct Tally {
    /// Spans dropped (queue full) or not accepted by the collector.
    pub lost_spans: AtomicU64,
    /// The last reason.
    pub last_error: Mutex<Option<String>>,
}

impl Tally {
    fn lost(&self, n: usize, why: &str) {
        if self.lost_spans.fetch_add(n as u64, Ordering::Relaxed) == 0 {
            tracing::warn!(error = %why, "trace spans could not be sent to the collector");
        }
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        // A full queue drops every span closed after it: no allocation for a reason unchanged.
        if last.as_deref() != Some(why) {
            *last = Some(why.to_string());
        }
    }
}

/// Spans waiting for the exporter thread.
#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    /// What could not be sent.
    pub tally: Tally,
}

#[derive(Debug, Default)]
struct State {
    /// The queued spans, already encoded (each a `Span` of the request's `ScopeSpans`): the
    /// thread that closes a span writes it, so the exporter frees nothing a worker allocated.
    body: Pb,
    /// How many.
    count: usize,
    stop: bool,
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a finished span (dropped and counted when the queue is full).
    pub fn push(&self, span: &Finished) {
        let mut s = self.state();
        if s.count >= MAX_QUEUED_SPANS {
            drop(s);
            self.tally.lost(1, FULL);
            return;
        }
        s.body.message(2, |p| encode_span(p, span));
        s.count += 1;
        if s.count == BATCH {
            self.wake.notify_one();
        }
    }

    /// Asks the exporter to send what is left and end.
    pub fn stop(&self) {
        self.state().stop = true;
        self.wake.notify_one();
    }

    /// Waits for a full batch, the next flush or the stop; returns the spans queued (encoded,
    /// in `spare`'s place), how many, and whether to stop after sending them.
    fn next(&self, spare: Vec<u8>) -> (Vec<u8>, usize, bool) {
        let due = Instant::now() + FLUSH_EVERY;
        let mut s = self.state();
        while s.count < BATCH && !s.stop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self.wake.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        let body = std::mem::replace(&mut s.body.0, spare);
        (body, std::mem::take(&mut s.count), s.stop)
    }
}

/// The exporter thread's loop: sends what is queued to `url` as `service` at least every
/// second, until stopped, then what is left (one request, within [`EXPORT_TIMEOUT`]).
pub fn export_loop(queue: &Queue, url: &str, service: &str, client: &reqwest::blocking::Client) {
    let mut spare = Vec::new();
    loop {
        let (spans, n, stop) = queue.next(std::mem::take(&mut spare));
        if n > 0 {
            send(queue, url, client, n, request(service, &spans));
        }
        spare = spans;
        spare.clear();
        if stop {
            return;
        }
    }
}

fn send(queue: &Queue, url: &str, client: &reqwest::blocking::Client, n: usize, body: Vec<u8>) {
    let sent = client.post(url).header("Content-Type", "application/x-protobuf").body(body).send();
    let why = match sent {
        Ok(r) if r.status().is_success() => return,
        Ok(r) => format!("the collector answered {}", r.status()),
        // Without the URL: the guard names it, once.
        Err(e) => chain(&e.without_url()),
    };
    queue.tally.lost(n, &why);
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A protobuf writer: only what the OTLP messages use.
#[derive(Debug, Clone, Default, PartialEq)]
struct Pb(Vec<u8>);

impl std::fmt::Write for Pb {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        self.varint(v);
    }
    /// A nested message, written by `f` in place after a one-byte length, widened afterwards
    /// when the message is 128 bytes or more (one move of its bytes; no buffer per message).
    fn message(&mut self, field: u32, f: impl FnOnce(&mut Pb)) {
        self.key(field, LEN);
        let at = self.0.len();
        self.0.push(0);
        f(self);
        let len = (self.0.len() - at - 1) as u64;
        if len < 0x80 {
            self.0[at] = len as u8;
            return;
        }
        let mut prefix = Pb::default();
        prefix.varint(len);
        self.0.splice(at..=at, prefix.0);
    }
    /// A `KeyValue` in field `field` whose `AnyValue` `value` writes.
    fn attr(&mut self, field: u32, key: &str, value: impl FnOnce(&mut Pb)) {
        self.message(field, |kv| {
            kv.bytes(1, key.as_bytes());
            kv.message(2, value);
        });
    }
    /// Text, [`cut`].
    fn text(&mut self, field: u32, s: &str) {
        self.bytes(field, cut(s).as_bytes());
    }
    /// Text written by `value`'s `Debug` straight into the buffer, cut as [`Pb::text`].
    fn formatted(&mut self, field: u32, value: &dyn std::fmt::Debug) {
        self.message(field, |b| {
            let start = b.0.len();
            let _ = std::fmt::Write::write_fmt(b, format_args!("{value:?}"));
            if b.0.len() - start > MAX_TEXT {
                let mut end = start + MAX_TEXT;
                // Formatting wrote whole characters: back up to the start of one.
                while end > start && (b.0[end] & 0xC0) == 0x80 {
                    end -= 1;
                }
                b.0.truncate(end);
            }
        });
    }
}

/// An `ExportTraceServiceRequest` from `service` around `spans`, spans already encoded as the
/// `Span` entries of its `ScopeSpans`.
fn request(service: &str, spans: &[u8]) -> Vec<u8> {
    let mut req = Pb(Vec::with_capacity(spans.len() + 128));
    // resource_spans = 1
    req.message(1, |rs| {
        // resource = 1
        rs.message(1, |r| r.attr(1, "service.name", |any| any.text(1, service)));
        // scope_spans = 2
        rs.message(2, |ss| {
            ss.message(1, |scope| {
                scope.bytes(1, b"troupe-sim");
                scope.bytes(2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            ss.0.extend_from_slice(spans);
        });
    });
    req.0
}

/// An `ExportTraceServiceRequest` with `spans`, from `service`.
pub fn encode(service: &str, spans: &[Finished]) -> Vec<u8> {
    let mut body = Pb::default();
    for s in spans {
        body.message(2, |p| encode_span(p, s));
    }
    request(service, &body.0)
}

fn encode_span(p: &mut Pb, s: &Finished) {
    p.bytes(1, &s.trace);
    p.bytes(2, &s.id);
    if let Some(parent) = &s.parent {
        p.bytes(4, parent);
    }
    p.bytes(5, s.name.as_bytes());
    // kind = INTERNAL
    p.uint(6, 1);
    p.fixed64(7, s.start);
    p.fixed64(8, s.end.max(s.start));
    p.0.extend_from_slice(&s.attrs.0.0);
    for e in &s.events {
        p.message(11, |ev| {
            ev.fixed64(1, e.time);
            ev.bytes(2, e.name.as_bytes());
            ev.attr(3, "level", |any| any.text(1, e.level));
        });
    }
    // status = 15: an error logged in the span marks it failed.
    if let Some(e) = s.events.iter().find(|e| e.level == "ERROR") {
        p.message(15, |st| {
            st.bytes(2, e.name.as_bytes());
            st.uint(3, 2);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    fn sample() -> Finished {
        Finished {
            name: "llm_call",
            trace: [7; 16],
            id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent: Some([9; 8]),
            start: 1_700_000_000_000_000_000,
            end: 1_700_000_000_000_500_000,
            attrs: {
                let mut a = Attrs::default();
                a.text("persona", "p-ünï");
                a.int("attempt", 2);
                a.float("cost", 0.25);
                a.flag("cached", true);
                a.int("negative", -3);
                a
            },
            events: vec![Event { time: 1_700_000_000_000_100_000, name: "timed out".into(), level: "ERROR" }],
        }
    }

    /// What is written here decodes with the OTLP project's own generated types, field by field.
    #[test]
    fn the_request_decodes_with_the_otlp_types() {
        let body = encode("troupe", &[sample(), Finished { parent: None, events: vec![], ..sample() }]);
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        let service = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        assert_eq!(service.value.as_ref().unwrap().value, Some(Value::StringValue("troupe".into())));
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "troupe-sim");
        let s = &ss.spans[0];
        assert_eq!((s.name.as_str(), s.kind), ("llm_call", 1));
        assert_eq!((s.trace_id.as_slice(), s.span_id.as_slice()), (&[7u8; 16][..], &[1u8, 2, 3, 4, 5, 6, 7, 8][..]));
        assert_eq!(s.parent_span_id, vec![9; 8]);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_700_000_000_000_000_000, 1_700_000_000_000_500_000)
        );
        let attrs: Vec<(String, Option<Value>)> =
            s.attributes.iter().map(|a| (a.key.clone(), a.value.as_ref().and_then(|v| v.value.clone()))).collect();
        assert_eq!(
            attrs,
            vec![
                ("persona".into(), Some(Value::StringValue("p-ünï".into()))),
                ("attempt".into(), Some(Value::IntValue(2))),
                ("cost".into(), Some(Value::DoubleValue(0.25))),
                ("cached".into(), Some(Value::BoolValue(true))),
                ("negative".into(), Some(Value::IntValue(-3))),
            ]
        );
        assert_eq!(s.events[0].name, "timed out");
        assert_eq!(s.events[0].time_unix_nano, 1_700_000_000_000_100_000);
        let status = s.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "timed out"));
        // A root has no parent and no status without an error.
        assert!(ss.spans[1].parent_span_id.is_empty() && ss.spans[1].status.is_none());
    }

    /// Lengths of one, two and three bytes: a long attribute, and a batch of many spans.
    #[test]
    fn long_messages_keep_their_lengths() {
        let mut long = sample();
        long.attrs.text("error", &"x".repeat(MAX_TEXT));
        let batch: Vec<Finished> = (0..300).map(|i| if i % 7 == 0 { long.clone() } else { sample() }).collect();
        let body = encode("troupe", &batch);
        assert!(body.len() > 1 << 14, "{} bytes", body.len());
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 300);
        assert_eq!(spans[7].attributes.last().unwrap().key, "error");
        assert_eq!(spans[8].attributes.len(), 5);
    }

    #[test]
    fn texts_are_cut_at_a_character_boundary() {
        let mut a = Attrs::default();
        a.text("t", &"é".repeat(MAX_TEXT));
        a.debug("d", &format_args!("{}", "é".repeat(MAX_TEXT)));
        let s = Finished { attrs: a, ..sample() };
        let req = ExportTraceServiceRequest::decode(encode("troupe", &[s]).as_slice()).unwrap();
        for kv in &req.resource_spans[0].scope_spans[0].spans[0].attributes {
            let Some(Value::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.clone()) else { panic!() };
            assert!(v.len() <= MAX_TEXT && v.len() > MAX_TEXT - 2 && v.chars().all(|c| c == 'é'), "{}", kv.key);
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let q = Queue::default();
        let s = sample();
        for _ in 0..MAX_QUEUED_SPANS + 3 {
            q.push(&s);
        }
        assert_eq!(q.tally.lost_spans.load(Ordering::Relaxed), 3);
        assert!(FULL.contains(&MAX_QUEUED_SPANS.to_string()), "{FULL}");
        q.stop();
        let (spans, n, stop) = q.next(Vec::new());
        assert_eq!((n, stop), (MAX_QUEUED_SPANS, true));
        // What was queued is what `encode` writes.
        assert_eq!(request("troupe", &spans), encode("troupe", &vec![s; MAX_QUEUED_SPANS]));
    }
}
