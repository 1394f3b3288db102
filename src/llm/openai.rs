//! The OpenAI-compatible provider: OpenAI itself and every server speaking its chat-completions
//! protocol (Ollama, vLLM, llama.cpp's server, LiteLLM's proxy), and through [`Flavour`] Azure
//! OpenAI (see `azure.rs`).
//!
//! - One pooled `reqwest` client per provider (rustls, keep-alive, HTTP/2 where the server
//!   offers it), reused by every call: no TLS context is built per call.
//! - Wire types are private to this file; optional request fields are omitted when unset,
//!   because some compatible servers reject fields they do not know.
//! - Non-streaming and streaming (server-sent events, assembled whatever the chunk
//!   boundaries). Streams ask for usage (`stream_options.include_usage`); a server that refuses
//!   that field (a 400 or 422 naming it) is asked again without it, and this provider leaves it
//!   out from then on. When the server reports no `usage`, the tokens are counted with
//!   [`super::tokens`].
//! - `llm.stop` is sent as `stop`, after the request's own stop sequences.
//! - Requests are balanced over the endpoints of an [`EndpointPool`], each with its own
//!   [`Budget`] fed by the `x-ratelimit-*` headers; a 429 pauses every caller of the endpoint.
//!   With a [`SharedBudgetFactory`] in the options, each rate-limited endpoint's requests reserve
//!   their slots in a budget shared with other processes using the same URL and key.
//! - Errors are classified into [`ErrorKind`]s that say what to check. No retries here: the
//!   supervisor retries every provider alike.
//!
//! The API key is only ever read to build a header value marked sensitive; it never appears in
//! errors, logs or `Debug` output. Everything the server sends back, error messages and the
//! model's text alike, goes through a [`Redactor`] before anyone sees it: a server (or a model)
//! quoting the key, whole, upper-cased or in pieces of 8 characters or more, leaves only
//! `[redacted]` in transcripts, journals, results, exports, logs and errors.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::budget::{Budget, RateLimitHeaders, SharedBudgetFactory, budget_id, parse_reset};
use super::pool::{DEFAULT_COOL_DOWN, DEFAULT_FAILURE_THRESHOLD, Endpoint, EndpointPool, Lease};
use super::sse::{SseEvent, SseParser};
use super::tokens::{Counter, estimate_usage, prompt_tokens};
use super::{
    BoxFuture, CallContext, ChatRequest, ChatResponse, ErrorKind, FinishReason, LlmError, Provider, ResponseFormat,
    Role,
};
use crate::config::limits::MAX_STOP_SEQUENCES;
use crate::config::{LlmConfig, Redactor, SecretString};

/// OpenAI's API, used when neither `llm.base_url` nor `OPENAI_BASE_URL` is set.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Characters of a raw body kept in an error.
const SNIPPET_CHARS: usize = 200;
/// The longest wait a server can ask for; longer values are taken as this.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Pause after a 429 that named no delay.
const DEFAULT_429_PAUSE: Duration = Duration::from_secs(1);

/// One endpoint's address and credentials.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// Base URL (`https://api.openai.com/v1`, `http://localhost:11434/v1`) or, for Azure, the
    /// resource endpoint (`https://NAME.openai.azure.com`).
    pub base_url: String,
    /// The key, when the server needs one.
    pub api_key: Option<SecretString>,
    /// Client-side requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Client-side tokens per minute.
    pub tokens_per_minute: Option<u32>,
}

impl EndpointSpec {
    /// An endpoint without a key or budget.
    pub fn new(base_url: impl Into<String>) -> Self {
        EndpointSpec { base_url: base_url.into(), api_key: None, requests_per_minute: None, tokens_per_minute: None }
    }
    /// With a key.
    pub fn with_key(mut self, key: SecretString) -> Self {
        self.api_key = Some(key);
        self
    }
    /// With a budget.
    pub fn with_budget(mut self, requests_per_minute: Option<u32>, tokens_per_minute: Option<u32>) -> Self {
        self.requests_per_minute = requests_per_minute;
        self.tokens_per_minute = tokens_per_minute;
        self
    }
}

/// Everything an [`OpenAiProvider`] is built from.
#[derive(Debug, Clone)]
pub struct OpenAiOptions {
    /// At least one endpoint.
    pub endpoints: Vec<EndpointSpec>,
    /// `OpenAI-Organization` header.
    pub organization: Option<String>,
    /// `OpenAI-Project` header.
    pub project: Option<String>,
    /// Stream completions.
    pub stream: bool,
    /// Consecutive connection/5xx failures that take an endpoint out.
    pub failure_threshold: u32,
    /// How long it stays out.
    pub cool_down: Duration,
    /// Where the key comes from, named in authentication errors.
    pub key_hint: String,
    /// The longest pause a 429's `Retry-After` imposes on the endpoint (`llm.retry_after_max`).
    pub retry_after_max: Duration,
    /// `llm.stop`: sent with every request, after the request's own stop sequences (as the
    /// local model applies it).
    pub stop: Vec<String>,
    /// Where endpoints with a requests- or tokens-per-minute limit get a budget shared with
    /// other processes (a cluster's workers); `None`: every budget is this process's own.
    pub shared_budget: Option<Arc<dyn SharedBudgetFactory>>,
}

impl OpenAiOptions {
    /// One endpoint at `base_url`, with `key` when given; nothing else set.
    pub fn new(base_url: impl Into<String>, key: Option<SecretString>) -> Self {
        let mut ep = EndpointSpec::new(base_url);
        ep.api_key = key;
        OpenAiOptions {
            endpoints: vec![ep],
            organization: None,
            project: None,
            stream: false,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            cool_down: DEFAULT_COOL_DOWN,
            key_hint: ".troupe/secrets.toml or OPENAI_API_KEY".into(),
            retry_after_max: Duration::from_secs(60),
            stop: Vec::new(),
            shared_budget: None,
        }
    }

    /// Several endpoints (a pool of servers or keys); nothing else set.
    pub fn with_endpoints(endpoints: Vec<EndpointSpec>) -> Self {
        OpenAiOptions { endpoints, ..OpenAiOptions::new("", None) }
    }

    /// The options `[llm]` describes, with the key already resolved: `llm.endpoints`, or one
    /// endpoint at `llm.base_url` (then `OPENAI_BASE_URL`, then OpenAI's API). An endpoint
    /// with `api_key_env` uses that variable's key, the others `key`.
    pub fn from_config(llm: &LlmConfig, key: Option<SecretString>) -> Result<Self, LlmError> {
        let base = llm
            .base_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .or_else(|| std::env::var("OPENAI_BASE_URL").ok().filter(|u| !u.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let mut o = OpenAiOptions::new(base, key.clone());
        o.endpoints[0].requests_per_minute = llm.requests_per_minute;
        o.endpoints[0].tokens_per_minute = llm.tokens_per_minute;
        if !llm.endpoints.is_empty() {
            o.endpoints = endpoints_from_config(llm, key)?;
        }
        o.organization = llm.organization.clone().filter(|s| !s.trim().is_empty());
        o.project = llm.project.clone().filter(|s| !s.trim().is_empty());
        o.stream = llm.stream;
        o.retry_after_max = crate::config::limits::secs(llm.retry_after_max);
        o.stop = llm.stop.clone();
        Ok(o)
    }
}

/// `llm.endpoints` as specs: per-endpoint keys from `api_key_env`, budgets defaulting to
/// `llm.requests_per_minute` / `llm.tokens_per_minute`.
pub(crate) fn endpoints_from_config(llm: &LlmConfig, key: Option<SecretString>) -> Result<Vec<EndpointSpec>, LlmError> {
    llm.endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let api_key = match &e.api_key_env {
                Some(var) => match std::env::var(var) {
                    Ok(k) if !k.trim().is_empty() => Some(SecretString::new(k)),
                    _ => {
                        return Err(LlmError::new(
                            ErrorKind::Auth,
                            format!("llm.endpoints[{i}].api_key_env names {var}, which is not set; export it or remove api_key_env"),
                        ));
                    }
                },
                None => key.clone(),
            };
            Ok(EndpointSpec {
                base_url: e.base_url.clone(),
                api_key,
                requests_per_minute: e.requests_per_minute.or(llm.requests_per_minute),
                tokens_per_minute: e.tokens_per_minute.or(llm.tokens_per_minute),
            })
        })
        .collect()
}

/// The endpoint's budget: shared through `factory` when it has a limit and a factory is given.
fn endpoint_budget(ep: &EndpointSpec, base_url: &str, factory: Option<&dyn SharedBudgetFactory>) -> Budget {
    let (rpm, tpm) = (ep.requests_per_minute.filter(|r| *r > 0), ep.tokens_per_minute.filter(|t| *t > 0));
    let budget = Budget::new(rpm, tpm);
    let Some(factory) = factory.filter(|_| rpm.is_some() || tpm.is_some()) else { return budget };
    let key = ep.api_key.as_ref().map(|k| k.expose());
    match factory.shared_budget(&budget_id(base_url, key), rpm, tpm) {
        Some(shared) => budget.with_shared(shared),
        None => budget,
    }
}

/// Which dialect of the protocol a provider speaks.
#[derive(Debug, Clone)]
pub(crate) enum Flavour {
    /// `{base_url}/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=`, `api-key`.
    Azure {
        /// The configured model, served by `deployment`.
        model: String,
        /// Deployment of `model`; other models (the fallback chain) are taken as deployment names.
        deployment: Option<String>,
        /// `api-version` query parameter.
        api_version: String,
    },
}

/// How to reach one endpoint. The key lives only inside a header value marked sensitive.
pub struct Target {
    /// The base URL as configured (trimmed), used to build request URLs.
    raw_url: String,
    /// `raw_url` as shown in errors, logs and journals (see [`display_url`]).
    shown: String,
    chat_url: String,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl Target {
    /// The endpoint's base URL as shown: without a user name, password, query or fragment.
    pub fn base_url(&self) -> &str {
        &self.shown
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("base_url", &self.shown).field("has_key", &self.auth.is_some()).finish()
    }
}

/// `url` as it may be shown: without a user name, password, query or fragment, any of which can
/// hold a credential (`http://user:secret@host/v1`, `?api-key=...`).
/// A URL holding none of them is returned as written (trimmed), not normalized.
pub fn display_url(url: &str) -> String {
    let url = url.trim();
    match reqwest::Url::parse(url) {
        Ok(u) if u.username().is_empty() && u.password().is_none() && u.query().is_none() && u.fragment().is_none() => {
            url.trim_end_matches('/').to_string()
        }
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => "(a base URL that does not parse)".to_string(),
    }
}

/// A provider for OpenAI-compatible servers (and Azure OpenAI).
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    inner: Arc<Inner>,
}

struct Inner {
    name: &'static str,
    client: reqwest::Client,
    pool: EndpointPool<Target>,
    flavour: Flavour,
    /// Organisation and project headers.
    extra: Vec<(HeaderName, HeaderValue)>,
    stream: bool,
    key_hint: String,
    retry_after_max: Duration,
    /// `llm.stop`, sent after each request's own stop sequences.
    stop: Vec<String>,
    /// Set when the server refused `stream_options`: streamed calls leave it out from then on.
    no_stream_options: AtomicBool,
    /// Set once a request's stop sequences and `llm.stop` together were more than the API takes
    /// (said once in the log).
    stop_cut_said: AtomicBool,
    /// Takes the keys out of anything a server says back.
    redactor: Redactor,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("flavour", &self.flavour)
            .field("endpoints", &self.pool)
            .field("stream", &self.stream)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// A provider for OpenAI or a compatible server.
    pub fn new(opts: OpenAiOptions) -> Result<Self, LlmError> {
        Self::build("openai", opts, Flavour::OpenAi)
    }

    /// The provider `[llm]` describes, with the key already resolved.
    pub fn from_config(llm: &LlmConfig, key: Option<SecretString>) -> Result<Self, LlmError> {
        Self::new(OpenAiOptions::from_config(llm, key)?)
    }

    pub(crate) fn build(name: &'static str, opts: OpenAiOptions, flavour: Flavour) -> Result<Self, LlmError> {
        if opts.endpoints.is_empty() {
            return Err(LlmError::new(ErrorKind::BadRequest, "no endpoint is configured; set llm.base_url"));
        }
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("troupe-sim/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| LlmError::new(ErrorKind::Connection, format!("cannot set up the HTTP client: {e}")))?;
        let mut keys = Vec::new();
        let mut endpoints = Vec::with_capacity(opts.endpoints.len());
        for (i, ep) in opts.endpoints.into_iter().enumerate() {
            let base_url = ep.base_url.trim().trim_end_matches('/').to_string();
            if let Err(e) = reqwest::Url::parse(&base_url) {
                return Err(LlmError::new(
                    ErrorKind::BadRequest,
                    format!("endpoint {i}: `{base_url}` is not a URL ({e}); write it like http://localhost:11434/v1"),
                ));
            }
            let budget = endpoint_budget(&ep, &base_url, opts.shared_budget.as_deref());
            let auth = match ep.api_key.filter(|k| !k.is_empty()) {
                Some(k) => {
                    let (name, text) = match flavour {
                        Flavour::OpenAi => (AUTHORIZATION, format!("Bearer {}", k.expose().trim())),
                        Flavour::Azure { .. } => (HeaderName::from_static("api-key"), k.expose().trim().to_string()),
                    };
                    let mut v = HeaderValue::from_str(&text).map_err(|_| {
                        LlmError::new(
                            ErrorKind::Auth,
                            format!(
                                "endpoint {i}: the API key holds characters an HTTP header cannot carry; check {}",
                                opts.key_hint
                            ),
                        )
                    })?;
                    v.set_sensitive(true);
                    keys.push(k);
                    Some((name, v))
                }
                None => None,
            };
            let chat_url = format!("{base_url}/chat/completions");
            let shown = display_url(&base_url);
            endpoints.push((Target { raw_url: base_url, shown, chat_url, auth }, budget));
        }
        let mut extra = Vec::new();
        for (name, value) in [("openai-organization", &opts.organization), ("openai-project", &opts.project)] {
            if let Some(v) = value {
                let v = HeaderValue::from_str(v.trim()).map_err(|_| {
                    LlmError::new(
                        ErrorKind::BadRequest,
                        format!("{name}: not a valid header value; check llm.organization / llm.project"),
                    )
                })?;
                extra.push((HeaderName::from_static(name), v));
            }
        }
        let pool = EndpointPool::new(endpoints).with_health(opts.failure_threshold, opts.cool_down);
        Ok(OpenAiProvider {
            inner: Arc::new(Inner {
                name,
                client,
                pool,
                flavour,
                extra,
                stream: opts.stream,
                key_hint: opts.key_hint,
                retry_after_max: opts.retry_after_max,
                stop: opts.stop.into_iter().filter(|s| !s.is_empty()).collect(),
                stop_cut_said: AtomicBool::new(false),
                no_stream_options: AtomicBool::new(false),
                redactor: Redactor::new(&keys),
            }),
        })
    }

    /// The endpoints with their budgets, load and health.
    pub fn endpoints(&self) -> &[Arc<Endpoint<Target>>] {
        self.inner.pool.endpoints()
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        self.inner.name
    }

    fn endpoints(&self) -> Vec<String> {
        self.inner.pool.endpoints().iter().map(|e| e.data.shown.clone()).collect()
    }

    fn chat(&self, req: Arc<ChatRequest>, _ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.call(&req).await })
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl<'a> WireRequest<'a> {
    /// The request as sent; `stop` is the request's own stop sequences then `llm.stop` (see
    /// [`stop_sequences`]).
    fn new(req: &'a ChatRequest, stream: bool) -> Self {
        WireRequest {
            model: &req.model,
            messages: req
                .messages
                .iter()
                .map(|m| WireMessage {
                    role: match m.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    },
                    content: &m.content,
                })
                .collect(),
            temperature: req.temperature,
            top_p: req.top_p,
            max_tokens: req.max_tokens,
            seed: req.seed,
            stop: stop_sequences(&req.stop, &[]).0,
            stream: stream.then_some(true),
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
            response_format: match req.response_format {
                ResponseFormat::Text => None,
                ResponseFormat::JsonObject => Some(WireFormat { kind: "json_object" }),
            },
            user: (!req.meta.persona.is_empty()).then_some(req.meta.persona.as_str()),
        }
    }
}

/// The stop sequences sent: the request's own, then `extra` (`llm.stop`), without empty or
/// repeated ones, at most [`MAX_STOP_SEQUENCES`] (OpenAI's limit); true when some were left out.
fn stop_sequences<'a>(own: &'a [String], extra: &'a [String]) -> (Vec<&'a str>, bool) {
    let mut out: Vec<&str> = Vec::new();
    let mut cut = false;
    for s in own.iter().chain(extra).map(String::as_str).filter(|s| !s.is_empty()) {
        if out.contains(&s) {
            continue;
        }
        if out.len() == MAX_STOP_SEQUENCES {
            cut = true;
            break;
        }
        out.push(s);
    }
    (out, cut)
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireReply,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    content: Option<String>,
}

/// Either figure may be missing (or null) from a server's report: the other is still kept.
#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireDeltaChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireDeltaChoice {
    #[serde(default)]
    delta: Option<WireReply>,
    #[serde(default)]
    finish_reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// One call

impl Inner {
    async fn call(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let lease = self.pool.pick();
        let ep = lease.endpoint();
        let estimate = prompt_tokens(req) + req.max_tokens.unwrap_or(0) as u64;
        ep.budget.acquire(estimate).await;

        let mut stream_options = self.stream && !self.no_stream_options.load(Ordering::Relaxed);
        // At most two rounds: the second only when the server refused `stream_options`.
        let resp = loop {
            let body = self.body(req, stream_options)?;
            let mut rb = self.client.post(self.url(ep, &req.model)).header(CONTENT_TYPE, "application/json").body(body);
            if let Some((name, value)) = &ep.data.auth {
                rb = rb.header(name, value.clone());
            }
            for (name, value) in &self.extra {
                rb = rb.header(name, value.clone());
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    lease.failure();
                    return Err(self.transport_error(ep, &e));
                }
            };
            let status = resp.status();
            let limits = rate_limit_headers(resp.headers());
            if limits != RateLimitHeaders::default() {
                ep.budget.observe(&limits);
            }
            if status.is_success() {
                break resp;
            }
            let (err, refuses_stream_options) = self.http_error(&lease, resp).await;
            if !(stream_options && refuses_stream_options) {
                return Err(err);
            }
            // An older server that rejects fields it does not know: ask again without it, and
            // leave it out of every later call of this provider.
            self.no_stream_options.store(true, Ordering::Relaxed);
            stream_options = false;
            tracing::debug!(
                status = status.as_u16(),
                endpoint = ep.index(),
                "the server refused stream_options; streamed calls go without it from now on (their usage is estimated when the server sends none)"
            );
        };
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut result =
            if is_sse { self.read_stream(ep, resp, req).await } else { self.read_json(ep, resp, req).await };
        // The model's text too: a server (or a model) that quotes the key must not put it in
        // the transcript, the journal, the results or the exports.
        if let Ok(r) = &mut result {
            r.text = self.redactor.redact_string(std::mem::take(&mut r.text));
        }
        match &result {
            Ok(r) => {
                lease.success();
                ep.budget.reconcile(estimate, r.usage.total());
            }
            Err(e) if matches!(e.kind, ErrorKind::Connection | ErrorKind::Server) => lease.failure(),
            Err(_) => {}
        }
        result
    }

    /// The request body: `llm.stop` after the request's own stop sequences, and
    /// `stream_options` only when `stream_options` says so.
    fn body(&self, req: &ChatRequest, stream_options: bool) -> Result<Vec<u8>, LlmError> {
        let mut wire = WireRequest::new(req, self.stream);
        if !stream_options {
            wire.stream_options = None;
        }
        let (stop, cut) = stop_sequences(&req.stop, &self.stop);
        if cut && !self.stop_cut_said.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a request's own stop sequences and llm.stop are more than the {MAX_STOP_SEQUENCES} the API takes; the first {MAX_STOP_SEQUENCES} are sent"
            );
        }
        wire.stop = stop;
        serde_json::to_vec(&wire)
            .map_err(|e| LlmError::new(ErrorKind::BadRequest, format!("cannot encode the request: {e}")))
    }

    fn url(&self, ep: &Endpoint<Target>, model: &str) -> String {
        match &self.flavour {
            Flavour::OpenAi => ep.data.chat_url.clone(),
            Flavour::Azure { model: primary, deployment, api_version } => {
                let deployment = deployment.as_deref().filter(|_| model == primary).unwrap_or(model);
                super::azure::chat_url(&ep.data.raw_url, deployment, api_version)
            }
        }
    }

    async fn read_json(
        &self,
        ep: &Endpoint<Target>,
        resp: reqwest::Response,
        req: &ChatRequest,
    ) -> Result<ChatResponse, LlmError> {
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(ep, &e))?;
        let wire: WireResponse =
            serde_json::from_slice(&bytes).map_err(|e| self.malformed(status, &e.to_string(), &bytes))?;
        let Some(choice) = wire.choices.into_iter().next() else {
            return Err(self.malformed(status, "no choices in the answer", &bytes));
        };
        let text = choice.message.content.unwrap_or_default();
        Ok(finish(req, text, choice.finish_reason.as_deref(), wire.usage))
    }

    async fn read_stream(
        &self,
        ep: &Endpoint<Target>,
        resp: reqwest::Response,
        req: &ChatRequest,
    ) -> Result<ChatResponse, LlmError> {
        let status = resp.status().as_u16();
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut acc = StreamState::default();
        'read: while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(ep, &e))?;
            parser.feed_into(&chunk, &mut events);
            for ev in events.drain(..) {
                if self.stream_event(&mut acc, &ev, status)? {
                    break 'read;
                }
            }
        }
        if !acc.done
            && let Some(ev) = parser.finish()
        {
            self.stream_event(&mut acc, &ev, status)?;
        }
        if !acc.done && acc.finish_reason.is_none() {
            return Err(LlmError::new(
                ErrorKind::Connection,
                "the stream ended before the answer was complete (no finish_reason, no [DONE])",
            )
            .with_status(status));
        }
        Ok(finish(req, acc.text, acc.finish_reason.as_deref(), acc.usage))
    }

    /// Folds one event into `acc`; true at `[DONE]`.
    fn stream_event(&self, acc: &mut StreamState, ev: &SseEvent, status: u16) -> Result<bool, LlmError> {
        if ev.is_done() {
            acc.done = true;
            return Ok(true);
        }
        if ev.data.trim().is_empty() {
            return Ok(false);
        }
        let chunk: WireChunk =
            serde_json::from_str(&ev.data).map_err(|e| self.malformed(status, &e.to_string(), ev.data.as_bytes()))?;
        if let Some(err) = chunk.error {
            let msg = error_message(&err).unwrap_or_else(|| err.to_string());
            return Err(LlmError::new(
                ErrorKind::Server,
                format!("the server failed mid-stream: {}", snippet(&self.scrub(&msg))),
            )
            .with_status(status));
        }
        for c in chunk.choices {
            if let Some(content) = c.delta.and_then(|d| d.content) {
                acc.text.push_str(&content);
            }
            if c.finish_reason.is_some() {
                acc.finish_reason = c.finish_reason;
            }
        }
        if chunk.usage.is_some() {
            acc.usage = chunk.usage;
        }
        Ok(false)
    }

    fn transport_error(&self, ep: &Endpoint<Target>, e: &reqwest::Error) -> LlmError {
        // reqwest's own message is generic ("error sending request"); the cause says what failed.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "the connection failed"
        };
        LlmError::new(
            ErrorKind::Connection,
            format!("{what} ({}): {}; is the server up? check llm.base_url", ep.data.shown, self.scrub(&msg)),
        )
    }

    fn malformed(&self, status: u16, why: &str, body: &[u8]) -> LlmError {
        let text = String::from_utf8_lossy(body);
        LlmError::new(
            ErrorKind::Malformed,
            // serde's message can quote the whole offending value: it is cut too. Both are
            // scrubbed before they are cut, or a key cut in half would keep its start.
            format!(
                "the answer is not the expected JSON ({}); it begins: {}",
                snippet_of(&self.scrub(why), 100),
                snippet(&self.scrub(&text))
            ),
        )
        .with_status(status)
    }

    /// The error a failed answer means, and whether it is a refusal of `stream_options` (a 400
    /// or 422 whose body names it: older servers reject fields they do not know).
    async fn http_error(&self, lease: &Lease<Target>, resp: reqwest::Response) -> (LlmError, bool) {
        let status = resp.status();
        let code = status.as_u16();
        let retry_after = retry_after(resp.headers(), SystemTime::now());
        let body = resp.bytes().await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let refuses_stream_options = matches!(code, 400 | 422) && text.contains("stream_options");
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let said = parsed.as_ref().and_then(error_message).unwrap_or_else(|| text.to_string());
        // Scrubbed before it is cut: a cut key no longer matches and its start would show.
        let said = snippet(&self.scrub(&said));
        let error_code = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(|e| e.get("code").or_else(|| e.get("type")))
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_string();
        let err = match status {
            StatusCode::TOO_MANY_REQUESTS if error_code == "insufficient_quota" => LlmError::new(
                ErrorKind::Auth,
                format!("the account has no quota left: check the plan and billing of this API key ({said})"),
            ),
            StatusCode::TOO_MANY_REQUESTS => {
                // Every caller of this endpoint waits, not just this one, but never longer than
                // llm.retry_after_max (the supervisor's retry record says when it was cut).
                lease.endpoint().budget.pause_for(retry_after.unwrap_or(DEFAULT_429_PAUSE).min(self.retry_after_max));
                LlmError::new(ErrorKind::RateLimited, format!("the server's rate limit was reached: {said}"))
            }
            s if s.is_server_error() => {
                lease.failure();
                LlmError::new(ErrorKind::Server, format!("the server failed: {said}"))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let sent = if lease.endpoint().data.auth.is_some() { "" } else { "no API key was sent; " };
                LlmError::new(ErrorKind::Auth, format!("{sent}check the API key: {} ({said})", self.key_hint))
            }
            StatusCode::NOT_FOUND => {
                let hint = match self.flavour {
                    Flavour::OpenAi => "unknown model or endpoint: check llm.model and llm.base_url",
                    Flavour::Azure { .. } => {
                        "unknown deployment or endpoint: check llm.azure_deployment, llm.azure_endpoint and llm.azure_api_version"
                    }
                };
                LlmError::new(ErrorKind::NotFound, format!("{hint} ({said})"))
            }
            StatusCode::REQUEST_TIMEOUT => LlmError::new(ErrorKind::Timeout, format!("the server timed out: {said}")),
            _ if is_context_length(&error_code, &said) => LlmError::new(
                ErrorKind::BadRequest,
                format!(
                    "the prompt is longer than the model's context; lower simulation.memory_recent or llm.max_tokens ({said})"
                ),
            ),
            _ if said.contains("response_format") => LlmError::new(
                ErrorKind::BadRequest,
                format!("the server does not support response_format; set llm.json_actions = false ({said})"),
            ),
            _ => LlmError::new(ErrorKind::BadRequest, format!("the server rejected the request: {said}")),
        };
        let err = err.with_status(code);
        tracing::debug!(status = code, kind = err.kind.as_str(), endpoint = lease.endpoint().index(), "call failed");
        let err = match retry_after {
            Some(d) if err.kind.retryable() => err.with_retry_after(d),
            _ => err,
        };
        (err, refuses_stream_options)
    }

    /// `s` without any key this provider holds (whole, in any case, or any 8 characters of
    /// it), nor anything shaped like an OpenAI key.
    fn scrub<'s>(&self, s: &'s str) -> std::borrow::Cow<'s, str> {
        self.redactor.redact(s)
    }
}

#[derive(Default)]
struct StreamState {
    text: String,
    finish_reason: Option<String>,
    usage: Option<WireUsage>,
    done: bool,
}

/// The response, with the usage the server reported; what it did not report is counted by
/// `llm::tokens` (the model's tokenizer where known) and marked as estimated.
fn finish(req: &ChatRequest, text: String, finish_reason: Option<&str>, usage: Option<WireUsage>) -> ChatResponse {
    let (prompt, completion) = usage.map_or((None, None), |u| (u.prompt_tokens, u.completion_tokens));
    if prompt.is_none() || completion.is_none() {
        let counter = Counter::for_model(&req.model);
        if !counter.is_ready() {
            // Loading a tiktoken table takes a few hundred milliseconds, once per process: off
            // the runtime's worker (a multi-threaded runtime hands its other tasks over first).
            match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| counter.load())
                }
                _ => counter.load(),
            }
        }
    }
    let usage = estimate_usage(req, &text, prompt, completion);
    let finish_reason = match finish_reason {
        None | Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some(_) => FinishReason::Other,
    };
    // The requested name, not the server's dated snapshot: metrics and pricing key on it.
    ChatResponse { text, usage, model: req.model.clone(), finish_reason }
}

/// The message of an error body: OpenAI's `{"error": {"message"}}`, Ollama's `{"error": "..."}`,
/// or `{"message"}` / `{"detail"}` (FastAPI servers). Whole: callers scrub it, then cut it.
fn error_message(v: &serde_json::Value) -> Option<String> {
    let e = v.get("error").unwrap_or(v);
    let m = match e {
        serde_json::Value::String(s) => Some(s.as_str()),
        _ => e.get("message").or_else(|| e.get("detail")).or_else(|| v.get("detail")).and_then(|m| m.as_str()),
    };
    m.map(str::to_string)
}

fn is_context_length(code: &str, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == "context_length_exceeded"
        || m.contains("context length")
        || m.contains("context_length")
        || m.contains("context window")
        || m.contains("context size")
        || m.contains("maximum context")
}

/// The first `SNIPPET_CHARS` characters of `s`.
fn snippet(s: &str) -> String {
    snippet_of(s, SNIPPET_CHARS)
}

/// The first `n` characters of `s`, trimmed, with an ellipsis when cut.
fn snippet_of(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn secs(v: f64) -> Option<Duration> {
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v.min(MAX_WAIT.as_secs_f64())))
}

/// How long the server asks us to wait: `retry-after-ms`, else `Retry-After` in seconds or as
/// an HTTP date (relative to `now`).
pub(crate) fn retry_after(h: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(d) = header(h, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()).and_then(|ms| secs(ms / 1000.0)) {
        return Some(d);
    }
    let v = header(h, "retry-after")?;
    if let Ok(s) = v.parse::<f64>() {
        return secs(s);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_WAIT))
}

/// OpenAI's `x-ratelimit-*` headers.
fn rate_limit_headers(h: &HeaderMap) -> RateLimitHeaders {
    let num = |name| header(h, name).and_then(|v| v.parse::<u64>().ok());
    // Long values are not durations a server means; parse_reset is given short ones only.
    let reset = |name| header(h, name).filter(|v| v.len() <= 16).and_then(parse_reset).map(|d| d.min(MAX_WAIT));
    RateLimitHeaders {
        remaining_requests: num("x-ratelimit-remaining-requests"),
        remaining_tokens: num("x-ratelimit-remaining-tokens"),
        reset_requests: reset("x-ratelimit-reset-requests"),
        reset_tokens: reset("x-ratelimit-reset-tokens"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, RequestMeta};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(&headers(&[("retry-after", "7")]), now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers(&[("retry-after", "0.25")]), now), Some(Duration::from_millis(250)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(retry_after(&headers(&[("retry-after", &date)]), now), Some(Duration::from_secs(12)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(12));
        assert_eq!(retry_after(&headers(&[("retry-after", &past)]), now), Some(Duration::ZERO));
        let both = headers(&[("retry-after", "7"), ("retry-after-ms", "1500")]);
        assert_eq!(retry_after(&both, now), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(&headers(&[("retry-after", "1e300")]), now), Some(MAX_WAIT));
        for bad in ["-1", "soon", "NaN", ""] {
            assert_eq!(retry_after(&headers(&[("retry-after", bad)]), now), None, "{bad}");
        }
    }

    #[test]
    fn rate_limit_headers_parse_and_never_panic() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149000"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let r = rate_limit_headers(&h);
        assert_eq!(r.remaining_requests, Some(59));
        assert_eq!(r.remaining_tokens, Some(149_000));
        assert_eq!(r.reset_requests, Some(Duration::from_secs(1)));
        assert_eq!(r.reset_tokens, Some(Duration::from_secs(360)));
        let huge = headers(&[("x-ratelimit-reset-tokens", "99999999999999999999999999h")]);
        assert_eq!(rate_limit_headers(&huge).reset_tokens, None);
    }

    #[test]
    fn optional_fields_are_omitted() {
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::System, "s"), ChatMessage::new(Role::User, "u")],
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            stop: vec![],
            response_format: crate::llm::ResponseFormat::Text,
            meta: RequestMeta::default(),
        };
        let v = serde_json::to_value(WireRequest::new(&req, false)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]})
        );
        let req = ChatRequest { response_format: ResponseFormat::JsonObject, ..req };
        let v = serde_json::to_value(WireRequest::new(&req, true)).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["response_format"]["type"], "json_object");
    }

    #[test]
    fn stop_sequences_own_first_no_repeats_at_most_four() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(stop_sequences(&[], &[]), (vec![], false));
        assert_eq!(stop_sequences(&v(&["a", ""]), &v(&["b", "a"])), (vec!["a", "b"], false));
        assert_eq!(stop_sequences(&v(&["a", "b", "c"]), &v(&["d"])), (vec!["a", "b", "c", "d"], false));
        assert_eq!(stop_sequences(&v(&["a", "b", "c"]), &v(&["d", "e"])), (vec!["a", "b", "c", "d"], true));
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(display_url("http://user:pw-secret@127.0.0.1:9/v1/"), "http://127.0.0.1:9/v1");
        assert_eq!(display_url("https://x.openai.azure.com/?api-key=abc#frag"), "https://x.openai.azure.com");
        assert_eq!(display_url(" http://LocalHost:80/v1/ "), "http://LocalHost:80/v1", "as written");
        assert_eq!(display_url("not a url"), "(a base URL that does not parse)");
    }

    #[test]
    fn snippets_are_short_and_char_safe() {
        let long = "é".repeat(500);
        assert_eq!(snippet(&long).chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(snippet("  short "), "short");
    }

    #[test]
    fn error_bodies_of_several_servers() {
        let openai = serde_json::json!({"error": {"message": "bad model", "type": "invalid_request_error", "code": "model_not_found"}});
        assert_eq!(error_message(&openai).as_deref(), Some("bad model"));
        assert_eq!(
            error_message(&serde_json::json!({"error": "model 'x' not found"})).as_deref(),
            Some("model 'x' not found")
        );
        assert_eq!(error_message(&serde_json::json!({"detail": "Not Found"})).as_deref(), Some("Not Found"));
        assert!(is_context_length("", "This model's maximum context length is 4096 tokens."));
        assert!(is_context_length("context_length_exceeded", ""));
        assert!(!is_context_length("", "invalid temperature"));
    }
}
