//! A mock OpenAI-compatible server for tests: axum on 127.0.0.1, port 0.
//!
//! Routes: `POST /v1/chat/completions`, `GET /v1/models` and Azure's
//! `POST /openai/deployments/{deployment}/chat/completions?api-version=...`.
//!
//! It can enforce requests- and tokens-per-minute limits with token buckets (429 with
//! `Retry-After` and `retry-after-ms` when exceeded), answer 500s at a seeded rate, wait before
//! answering, return malformed JSON, omit `usage`, stream server-sent events split at chosen byte
//! boundaries, refuse `stream_options` as older servers do, play a script of canned answers
//! first, and records every request (path, query,
//! headers, JSON body) for assertions. Behaviour can change while it runs ([`MockServer::set`]).
//!
//! Use it from a test crate with `mod support { pub mod mock_openai; }`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A canned answer: status, body and extra headers.
#[derive(Debug, Clone)]
pub struct Canned {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

impl Canned {
    /// An answer with a body and no extra headers.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Canned { status, body: body.into(), headers: Vec::new() }
    }
    /// An OpenAI-shaped error.
    pub fn error(status: u16, message: &str, code: &str) -> Self {
        let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
        Canned::new(status, body.to_string())
    }
    /// With a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Requests per minute (none: unlimited).
    pub rpm: Option<u32>,
    /// Tokens per minute, counted as prompt tokens plus `max_tokens` (none: unlimited).
    pub tpm: Option<u32>,
    /// Seconds of rate the buckets hold (1.0: a second's worth may go at once).
    pub burst_secs: f64,
    /// Send `x-ratelimit-*` headers while limits are set.
    pub ratelimit_headers: bool,
    /// Share of requests answered with 500 (seeded, so runs repeat).
    pub error_rate: f64,
    /// Wait before answering.
    pub delay: Duration,
    /// Answer 200 with a body that is not JSON.
    pub malformed: bool,
    /// Leave `usage` out.
    pub omit_usage: bool,
    /// When streaming, put `usage` in the chunk carrying `finish_reason` instead of a chunk of
    /// its own.
    pub usage_in_finish_chunk: bool,
    /// Answer a request holding `stream_options` with a 400 naming it, as older servers (and
    /// Azure's older API versions) do with fields they do not know.
    pub reject_stream_options: bool,
    /// The reply text.
    pub reply: String,
    /// Characters per streamed content delta.
    pub delta_chars: usize,
    /// Byte sizes the SSE body is cut into, used in turn (empty: one piece).
    pub chunk_sizes: Vec<usize>,
    /// Key required (`Authorization: Bearer`, or `api-key` on the Azure route).
    pub require_key: Option<String>,
    /// Answers given first, one per request, before normal behaviour.
    pub script: VecDeque<Canned>,
    /// A fault profile drawn per request (seeded): shares of 429s (with Retry-After), answers
    /// that never come (the client's timeout fires) and malformed bodies. 500s use `error_rate`.
    pub faults: MockFaults,
    /// Answer every chat request (after the script) with this, `{auth}` in its body replaced by
    /// the `Authorization` (Azure: `api-key`) header received and `{key}` by the key in it: a
    /// server that quotes credentials back, for the secrets tests. The same placeholders (and
    /// `{AUTH}`, `{KEY}` upper-cased, `{key_head}` / `{key_tail}` the key's two halves) are
    /// filled in `reply` and in scripted answers too.
    pub echo: Option<Canned>,
}

/// Shares of requests answered with each fault.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockFaults {
    /// 429 with `retry-after-ms: 20`.
    pub rate_limited: f64,
    /// No answer for an hour.
    pub hang: f64,
    /// A 200 whose body is not JSON.
    pub malformed: f64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            rpm: None,
            tpm: None,
            burst_secs: 1.0,
            ratelimit_headers: false,
            error_rate: 0.0,
            delay: Duration::ZERO,
            malformed: false,
            omit_usage: false,
            usage_in_finish_chunk: false,
            reject_stream_options: false,
            reply: "I think we should start small and measure what happens.".into(),
            delta_chars: 7,
            chunk_sizes: Vec::new(),
            require_key: None,
            script: VecDeque::new(),
            faults: MockFaults::default(),
            echo: None,
        }
    }
}

/// A request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Bucket {
    level: f64,
    capacity: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_min: u32, burst_secs: f64) -> Self {
        let per_sec = per_min as f64 / 60.0;
        let capacity = (per_sec * burst_secs).max(1.0);
        Bucket { level: capacity, capacity, per_sec, at: Instant::now() }
    }
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.at = now;
    }
    /// Time until `n` is available (zero when it is).
    fn wait_for(&self, n: f64) -> Duration {
        let n = n.min(self.capacity);
        if self.level >= n { Duration::ZERO } else { Duration::from_secs_f64((n - self.level) / self.per_sec) }
    }
}

struct Limits {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

struct MockState {
    cfg: Mutex<MockConfig>,
    limits: Mutex<Limits>,
    recorded: Mutex<Vec<Recorded>>,
    served: AtomicU64,
    rate_limited: AtomicUsize,
    server_errors: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A running mock. Stops when dropped.
pub struct MockServer {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<MockState>,
    task: JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    /// Starts a mock on 127.0.0.1 with a free port.
    pub async fn start(cfg: MockConfig) -> MockServer {
        let limits = Limits {
            requests: cfg.rpm.map(|r| Bucket::new(r, cfg.burst_secs)),
            tokens: cfg.tpm.map(|t| Bucket::new(t, cfg.burst_secs)),
        };
        let state = Arc::new(MockState {
            cfg: Mutex::new(cfg),
            limits: Mutex::new(limits),
            recorded: Mutex::new(Vec::new()),
            served: AtomicU64::new(0),
            rate_limited: AtomicUsize::new(0),
            server_errors: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let app = app(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockServer { addr, state, task }
    }

    /// The OpenAI base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Azure resource endpoint (`http://127.0.0.1:PORT`).
    pub fn azure_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the behaviour (limits keep their state unless `rpm`/`tpm` change).
    pub fn set(&self, f: impl FnOnce(&mut MockConfig)) {
        let mut cfg = self.state.cfg.lock().unwrap();
        let (rpm, tpm) = (cfg.rpm, cfg.tpm);
        f(&mut cfg);
        let mut l = self.state.limits.lock().unwrap();
        if cfg.rpm != rpm {
            l.requests = cfg.rpm.map(|r| Bucket::new(r, cfg.burst_secs));
        }
        if cfg.tpm != tpm {
            l.tokens = cfg.tpm.map(|t| Bucket::new(t, cfg.burst_secs));
        }
    }

    /// Every chat request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// Chat requests so far.
    pub fn request_count(&self) -> usize {
        self.state.recorded.lock().unwrap().len()
    }

    /// 429s answered.
    pub fn rate_limited(&self) -> usize {
        self.state.rate_limited.load(Ordering::Relaxed)
    }

    /// 500s answered (by `error_rate`).
    pub fn server_errors(&self) -> usize {
        self.state.server_errors.load(Ordering::Relaxed)
    }

    /// The most requests handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::Relaxed)
    }
}

/// The mock's routes.
fn app(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/models", get(models))
        .route("/openai/deployments/{deployment}/chat/completions", post(azure_chat))
        .with_state(state)
}

async fn models() -> Response {
    let body = json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "mock"}]});
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn openai_chat(State(st): State<Arc<MockState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    chat(st, uri, headers, body, false).await
}

async fn azure_chat(
    State(st): State<Arc<MockState>>,
    Path(_deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    chat(st, uri, headers, body, true).await
}

struct InFlight<'a>(&'a MockState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn chat(st: Arc<MockState>, uri: Uri, headers: HeaderMap, body: Bytes, azure: bool) -> Response {
    let n = st.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    st.max_in_flight.fetch_max(n, Ordering::Relaxed);
    let _guard = InFlight(&st);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&st, &uri, &headers, &json);
    let seq = st.served.fetch_add(1, Ordering::Relaxed);
    let cfg = {
        let mut c = st.cfg.lock().unwrap();
        if let Some(mut canned) = c.script.pop_front() {
            canned.body = fill_credentials(&canned.body, &headers, azure);
            return canned_response(canned);
        }
        c.clone()
    };
    if let Some(mut echo) = cfg.echo.clone() {
        echo.body = fill_credentials(&echo.body, &headers, azure);
        return canned_response(echo);
    }
    let mut cfg = cfg;
    cfg.reply = fill_credentials(&cfg.reply, &headers, azure);
    if let Some(refused) = refusal(&cfg, &uri, &headers, &json, azure) {
        return refused;
    }
    let tokens = request_tokens(&json);
    let limit_headers = match take_from_buckets(&st, &cfg, tokens) {
        Ok(h) => h,
        Err(wait) => {
            st.rate_limited.fetch_add(1, Ordering::Relaxed);
            return canned_response(
                Canned::error(429, "Rate limit reached for requests", "rate_limit_exceeded")
                    .header("retry-after", wait.as_secs_f64().ceil().max(1.0).to_string())
                    .header("retry-after-ms", format!("{}", wait.as_millis().max(1))),
            );
        }
    };
    if !cfg.delay.is_zero() {
        tokio::time::sleep(cfg.delay).await;
    }
    if let Some(fault) = injected_fault(&st, &cfg, seq).await {
        return fault;
    }
    let mut resp = completion(&cfg, &json, tokens, seq);
    for (k, v) in limit_headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    resp
}

fn record(st: &MockState, uri: &Uri, headers: &HeaderMap, json: &Value) {
    st.recorded.lock().unwrap().push(Recorded {
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: json.clone(),
        at: Instant::now(),
    });
}

/// The 4xx a server gives a request it refuses: a wrong key, Azure without `api-version`,
/// `stream_options` where refused, no `messages`.
fn refusal(cfg: &MockConfig, uri: &Uri, headers: &HeaderMap, json: &Value, azure: bool) -> Option<Response> {
    if let Some(key) = &cfg.require_key {
        let ok = if azure {
            headers.get("api-key").and_then(|v| v.to_str().ok()) == Some(key.as_str())
        } else {
            headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(format!("Bearer {key}").as_str())
        };
        if !ok {
            let masked = format!("sk-****{}", &key[key.len().saturating_sub(4)..]);
            return Some(canned_response(Canned::error(
                401,
                &format!("Incorrect API key provided: {masked}."),
                "invalid_api_key",
            )));
        }
    }
    if azure && !uri.query().unwrap_or("").contains("api-version=") {
        return Some(canned_response(Canned::error(
            400,
            "Missing required query parameter: api-version",
            "missing_api_version",
        )));
    }
    if cfg.reject_stream_options && json.get("stream_options").is_some() {
        return Some(canned_response(Canned::error(
            400,
            "Unrecognized request argument supplied: stream_options",
            "invalid_request_error",
        )));
    }
    if json.get("messages").and_then(Value::as_array).is_none() {
        return Some(canned_response(Canned::error(400, "'messages' is a required property", "invalid_request")));
    }
    None
}

/// Rate limits: takes one request and `tokens` from the buckets and returns the
/// `x-ratelimit-*` headers to send, or how long to wait when either bucket cannot give them
/// (then nothing is taken).
fn take_from_buckets(st: &MockState, cfg: &MockConfig, tokens: u64) -> Result<Vec<(String, String)>, Duration> {
    let mut limit_headers: Vec<(String, String)> = Vec::new();
    let now = Instant::now();
    let mut l = st.limits.lock().unwrap();
    let Limits { requests, tokens: tb } = &mut *l;
    if let Some(b) = requests.as_mut() {
        b.refill(now);
    }
    if let Some(b) = tb.as_mut() {
        b.refill(now);
    }
    let wait = requests
        .as_ref()
        .map_or(Duration::ZERO, |b| b.wait_for(1.0))
        .max(tb.as_ref().map_or(Duration::ZERO, |b| b.wait_for(tokens as f64)));
    if !wait.is_zero() {
        return Err(wait);
    }
    if let Some(b) = requests.as_mut() {
        b.level -= 1.0;
        if cfg.ratelimit_headers {
            limit_headers.push(("x-ratelimit-remaining-requests".into(), (b.level.floor() as u64).to_string()));
            limit_headers.push(("x-ratelimit-reset-requests".into(), format!("{}ms", b.wait_for(1.0).as_millis())));
        }
    }
    if let Some(b) = tb.as_mut() {
        b.level -= (tokens as f64).min(b.capacity);
        if cfg.ratelimit_headers {
            limit_headers.push(("x-ratelimit-remaining-tokens".into(), (b.level.max(0.0).floor() as u64).to_string()));
            limit_headers
                .push(("x-ratelimit-reset-tokens".into(), format!("{}ms", b.wait_for(tokens as f64).as_millis())));
        }
    }
    Ok(limit_headers)
}

/// The answer request `seq` gets instead of a completion, if any: the fault profile's draw,
/// then `error_rate`, then `malformed`.
async fn injected_fault(st: &MockState, cfg: &MockConfig, seq: u64) -> Option<Response> {
    let f = cfg.faults;
    if f.rate_limited + f.hang + f.malformed > 0.0 {
        // A second draw, independent of the one `error_rate` uses.
        let u = unit(seq ^ 0x5eed_fa17);
        if u < f.rate_limited {
            st.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Some(canned_response(
                Canned::error(429, "Rate limit reached", "rate_limit_exceeded").header("retry-after-ms", "20"),
            ));
        } else if u < f.rate_limited + f.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        } else if u < f.rate_limited + f.hang + f.malformed {
            return Some(canned_response(Canned::new(200, "{\"choices\": [{\"message\": {\"content\": \"unfinished")));
        }
    }
    if cfg.error_rate > 0.0 && unit(seq) < cfg.error_rate {
        st.server_errors.fetch_add(1, Ordering::Relaxed);
        return Some(canned_response(Canned::new(
            500,
            r#"{"error": {"message": "The server had an error", "type": "server_error"}}"#,
        )));
    }
    if cfg.malformed {
        let mut c = Canned::new(
            200,
            "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>upstream is not reachable</body></html>",
        );
        c.headers.push(("content-type".into(), "text/html".into()));
        return Some(canned_response(c));
    }
    None
}

/// The completion of `cfg.reply`: server-sent events when the request streams, else one JSON
/// body.
fn completion(cfg: &MockConfig, json: &Value, tokens: u64, seq: u64) -> Response {
    let model = json.get("model").and_then(Value::as_str).unwrap_or("mock").to_string();
    let prompt_tokens = tokens.saturating_sub(json.get("max_tokens").and_then(Value::as_u64).unwrap_or(0));
    let completion_tokens = troupe_sim::llm::tokens::count_tokens(&cfg.reply);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let streaming = json.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if streaming {
        let include_usage = json.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        let usage = (include_usage && !cfg.omit_usage).then_some(usage);
        let body = sse_body(&model, &cfg.reply, cfg.delta_chars, usage, cfg.usage_in_finish_chunk);
        let chunks = split(body.into_bytes(), &cfg.chunk_sizes);
        let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
            let next = it.next()?;
            // Let each piece go out on its own write.
            tokio::task::yield_now().await;
            Some((Ok::<_, Infallible>(Bytes::from(next)), it))
        });
        Response::builder()
            .status(200)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Body::from_stream(stream))
            .unwrap()
    } else {
        let mut body = json!({
            "id": format!("chatcmpl-{seq}"),
            "object": "chat.completion",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": cfg.reply}, "finish_reason": "stop"}],
        });
        if !cfg.omit_usage {
            body["usage"] = usage;
        }
        (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
    }
}

/// `text` with the credentials received quoted back: `{auth}` the whole header (`AUTH`
/// upper-cased), `{key}` the key (`KEY` upper-cased), `{key_head}` and `{key_tail}` its halves.
fn fill_credentials(text: &str, headers: &HeaderMap, azure: bool) -> String {
    if !text.contains('{') {
        return text.to_string();
    }
    let auth = headers.get(if azure { "api-key" } else { "authorization" }).and_then(|v| v.to_str().ok());
    let auth = auth.unwrap_or_default();
    let key = auth.strip_prefix("Bearer ").unwrap_or(auth);
    let mid = key.char_indices().nth(key.chars().count() / 2).map_or(key.len(), |(i, _)| i);
    let (head, tail) = key.split_at(mid);
    text.replace("{auth}", auth)
        .replace("{AUTH}", &auth.to_uppercase())
        .replace("{key}", key)
        .replace("{KEY}", &key.to_uppercase())
        .replace("{key_head}", head)
        .replace("{key_tail}", tail)
}

fn canned_response(c: Canned) -> Response {
    let mut b = Response::builder().status(c.status);
    let mut typed = false;
    for (k, v) in &c.headers {
        typed |= k.eq_ignore_ascii_case("content-type");
        b = b.header(k.as_str(), v.as_str());
    }
    if !typed {
        b = b.header("content-type", "application/json");
    }
    b.body(Body::from(c.body)).unwrap()
}

/// Prompt tokens (the crate's counter) plus `max_tokens`, as the client estimates them.
fn request_tokens(body: &Value) -> u64 {
    use troupe_sim::llm::tokens::{MESSAGE_OVERHEAD, REQUEST_OVERHEAD, count_tokens};
    let prompt: u64 = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| count_tokens(m.get("content").and_then(Value::as_str).unwrap_or("")) + MESSAGE_OVERHEAD)
                .sum::<u64>()
                + REQUEST_OVERHEAD
        })
        .unwrap_or(0);
    prompt + body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0)
}

/// A streamed chat completion: content deltas of `delta_chars` characters, a finish chunk,
/// usage (in the finish chunk or after it), then `[DONE]`.
pub fn sse_body(model: &str, reply: &str, delta_chars: usize, usage: Option<Value>, usage_in_finish: bool) -> String {
    let chunk = |delta: Value, finish: Value, usage: Option<&Value>| {
        let mut c = json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let Some(u) = usage {
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n")
    };
    let mut out = String::from(": mock stream\n\n");
    out.push_str(&chunk(json!({"role": "assistant", "content": ""}), Value::Null, None));
    let chars: Vec<char> = reply.chars().collect();
    for piece in chars.chunks(delta_chars.max(1)) {
        out.push_str(&chunk(json!({"content": piece.iter().collect::<String>()}), Value::Null, None));
    }
    let finish_usage = usage.as_ref().filter(|_| usage_in_finish);
    out.push_str(&chunk(json!({}), json!("stop"), finish_usage));
    if let Some(u) = usage.as_ref().filter(|_| !usage_in_finish) {
        let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": u});
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// Cuts `bytes` into pieces of the given sizes, used in turn.
pub fn split(bytes: Vec<u8>, sizes: &[usize]) -> Vec<Vec<u8>> {
    if sizes.is_empty() {
        return vec![bytes];
    }
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
        i += 1;
    }
    out
}

/// A seeded uniform draw in [0, 1) for request `seq`.
fn unit(seq: u64) -> f64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
