//! An OTLP/HTTP trace receiver on loopback for a test: `POST /v1/traces` bodies decoded with
//! the opentelemetry-proto types, every span kept with its ids, parent and attributes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One received span.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent: String,
    pub attributes: BTreeMap<String, String>,
    /// `service.name` of the process that sent it.
    pub service: String,
}

/// A running receiver.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    kept: Arc<Kept>,
}

/// What a receiver has received.
struct Kept {
    /// Every span, unless the receiver only counts.
    spans: Mutex<Vec<Span>>,
    keep: bool,
    count: AtomicUsize,
}

impl Receiver {
    /// Everything received so far (nothing for a receiver that only counts).
    pub fn spans(&self) -> Vec<Span> {
        self.kept.spans.lock().unwrap().clone()
    }

    /// How many spans were received so far.
    pub fn count(&self) -> usize {
        self.kept.count.load(Ordering::Relaxed)
    }
}

/// Starts one that keeps every span (a thread per connection; lives until the process ends).
pub fn start() -> Receiver {
    start_with(true)
}

/// Starts one that decodes and counts spans but keeps none, for a benchmark: a process that
/// grows raises the peak RSS the kernel reports for the children it starts afterwards.
pub fn start_counting() -> Receiver {
    start_with(false)
}

fn start_with(keep: bool) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let kept = Arc::new(Kept { spans: Mutex::new(Vec::new()), keep, count: AtomicUsize::new(0) });
    let shared = kept.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let kept = shared.clone();
            std::thread::spawn(move || serve(conn, &kept));
        }
    });
    Receiver { endpoint, kept }
}

/// Answers requests on one kept-alive connection until the client closes it.
fn serve(conn: TcpStream, kept: &Kept) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = if path == "/v1/traces" { decode(&body, kept) } else { "404 Not Found" };
        let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n");
    }
}

fn decode(body: &[u8], kept: &Kept) -> &'static str {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else { return "400 Bad Request" };
    let mut out = kept.spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            kept.count.fetch_add(ss.spans.len(), Ordering::Relaxed);
            if !kept.keep {
                continue;
            }
            for s in ss.spans {
                let attributes = s
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(a.value.as_ref().and_then(|v| v.value.as_ref()))))
                    .collect();
                out.push(Span {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    attributes,
                    service: service.clone(),
                });
            }
        }
    }
    "200 OK"
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
