//! Language-model providers behind one trait, with provider-neutral types.
//!
//! - [`types`]: `ChatRequest`, `ChatResponse`, `Usage`.
//! - [`tokens`]: the token counter every provider's usage is measured with.
//! - [`simulated`]: the built-in simulated provider (offline, deterministic, configurable
//!   latency and faults).
//! - [`openai`]: OpenAI and compatible servers (Ollama, vLLM, llama.cpp, LiteLLM) over HTTP;
//!   [`azure`] adds Azure OpenAI's URL and key header. Built from [`pool`] (endpoints with
//!   their own budget and health), [`budget`] and [`sse`] (the streaming parser).
//! - [`local`]: the embedded local model (candle, in-process; `troupe model fetch` gets it).
//! - [`json_action`]: tolerant parsing of structured (JSON) replies.
//!
//! Retry, timeout and fallback are not a provider's business: the supervisor actor applies them
//! to every provider alike.

pub mod azure;
pub mod budget;
pub mod cache;
pub mod json_action;
pub mod local;
pub mod models;
pub mod openai;
pub mod pool;
pub mod retry;
pub mod simulated;
pub mod sse;
pub mod tokens;
pub mod types;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use openai::OpenAiProvider;
pub use simulated::SimulatedProvider;
pub use types::*;

/// A boxed future returned by providers.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Per-call facts a provider may use: the attempt number and the run seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallContext {
    /// 1 for the first try.
    pub attempt: u32,
    /// The run's seed.
    pub run_seed: u64,
}

/// Tells the caller of [`Provider::chat_timed`] that the provider began computing its call.
/// Dropped without being told, it counts as told then.
#[derive(Debug)]
pub struct CallStarted(Option<tokio::sync::oneshot::Sender<()>>);

impl CallStarted {
    /// A signal and the receiver that waits for it.
    pub fn channel() -> (CallStarted, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (CallStarted(Some(tx)), rx)
    }

    /// A signal nobody waits for.
    pub fn ignored() -> CallStarted {
        CallStarted(None)
    }

    /// The call begins now.
    pub fn now(mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Something that answers chat requests.
pub trait Provider: Send + Sync + fmt::Debug + 'static {
    /// Short name recorded in results ("simulated", "openai", ...).
    fn name(&self) -> &str;
    /// True when the text is synthetic (not written by a language model).
    fn synthetic(&self) -> bool {
        false
    }
    /// The servers calls go to (base URLs, never keys); empty for in-process providers. Recorded
    /// in a run's journal, so a resume can tell when its calls would go somewhere else.
    fn endpoints(&self) -> Vec<String> {
        Vec::new()
    }
    /// The recorded answer to `req`, when this provider holds one (a resume, replay or fork
    /// answers from its journal): the supervisor then answers at once, without a worker, rate
    /// spacing or a timeout, since nothing is paid.
    fn recorded(&self, _req: &ChatRequest) -> Option<ChatResponse> {
        None
    }
    /// The context window of `model` as served here, in tokens, when the provider knows it (the
    /// embedded local model reads it from its file); otherwise [`models::context_window`] is
    /// asked by name.
    fn context_window(&self, model: &str) -> Option<u32> {
        models::context_window(model)
    }
    /// Sends one request. The future must be cancel-safe: the supervisor drops it on timeout.
    fn chat(&self, req: Arc<ChatRequest>, ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>>;
    /// [`chat`](Provider::chat) for a caller that times the computation only: `started` is told
    /// when the provider begins working on this call. A provider whose calls first wait in a
    /// queue of its own (the embedded local model serves a batch at a time on one thread) tells
    /// it when the call leaves that queue, so the supervisor's `persona_timeout` never counts
    /// the wait behind other personas' calls. The default begins at once.
    fn chat_timed(
        &self,
        req: Arc<ChatRequest>,
        ctx: CallContext,
        started: CallStarted,
    ) -> BoxFuture<Result<ChatResponse, LlmError>> {
        started.now();
        self.chat(req, ctx)
    }
    /// Checks that the provider answers (`troupe doctor`) and says how, in one line. The
    /// default sends `model` a 1-token chat request; an HTTP provider may override it with a
    /// cheaper probe such as `GET /models`. Must not mention the API key.
    fn health(&self, model: &str) -> BoxFuture<Result<String, LlmError>> {
        let req = ChatRequest {
            model: model.to_string(),
            messages: vec![ChatMessage::new(Role::User, "Reply with the single word OK.")],
            temperature: None,
            top_p: None,
            max_tokens: Some(1),
            seed: None,
            stop: Vec::new(),
            response_format: crate::llm::ResponseFormat::Text,
            meta: RequestMeta { purpose: Purpose::Health, ..Default::default() },
        };
        let call = self.chat(Arc::new(req), CallContext { attempt: 1, run_seed: 0 });
        let model = model.to_string();
        Box::pin(async move {
            let r = call.await?;
            let who = if r.model.is_empty() { model } else { r.model };
            Ok(format!("{who} answered a 1-token request ({} tokens)", r.usage.total()))
        })
    }
}

/// The class of a failed call, which decides whether it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 429 Too Many Requests.
    RateLimited,
    /// 5xx.
    Server,
    /// No answer within `persona_timeout`.
    Timeout,
    /// The connection failed.
    Connection,
    /// The answer could not be read.
    Malformed,
    /// The answer was empty.
    Empty,
    /// 400: the request is wrong (e.g. the context length is exceeded).
    BadRequest,
    /// 401/403: the key is wrong or lacks permission.
    Auth,
    /// 404: unknown model or deployment.
    NotFound,
    /// The run's cost or token budget forbids the call.
    Budget,
    /// Replaying a recording, the request has no recorded answer.
    ReplayMiss,
}

impl ErrorKind {
    /// True for failures worth retrying: 429, 5xx, timeouts, connection errors and unusable
    /// answers.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Server
                | ErrorKind::Timeout
                | ErrorKind::Connection
                | ErrorKind::Malformed
                | ErrorKind::Empty
        )
    }

    /// Stable lower-case name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Server => "server",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Empty => "empty",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Auth => "auth",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Budget => "budget",
            ErrorKind::ReplayMiss => "replay_miss",
        }
    }
}

/// A failed call: its class, the HTTP status when there was one, what the provider said, and
/// how long it asked us to wait.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{}{}: {message}", kind.as_str(), status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct LlmError {
    /// Class.
    pub kind: ErrorKind,
    /// HTTP status.
    pub status: Option<u16>,
    /// What went wrong, with a hint where there is one.
    pub message: String,
    /// Retry-After, when the provider sent one.
    #[serde(with = "opt_duration_secs")]
    pub retry_after: Option<Duration>,
}

impl LlmError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        LlmError { kind, status: None, message: message.into(), retry_after: None }
    }
    /// With an HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    /// With a Retry-After delay.
    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }
}

mod opt_duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        Ok(v.filter(|s| s.is_finite() && *s >= 0.0).map(crate::config::limits::secs))
    }
}

/// True when `llm.base_url`, `OPENAI_BASE_URL` or `llm.endpoints` names a server: then `auto`
/// calls it, with or without a key (`troupe doctor` says so with the same test).
pub fn server_configured(cfg: &crate::config::SimulationConfig) -> bool {
    cfg.llm.base_url.as_deref().is_some_and(|u| !u.trim().is_empty())
        || std::env::var("OPENAI_BASE_URL").is_ok_and(|u| !u.trim().is_empty())
        || !cfg.llm.endpoints.is_empty()
}

/// What `llm.provider` comes to: the provider that will answer (never `Auto`), why, and which
/// environment variables hold its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderChoice {
    /// `OpenAi`, `Azure`, `Simulated`, or `Local` (for `auto`: the local model, else the
    /// simulated provider).
    pub kind: crate::config::ProviderKind,
    /// Why, in the user's words ("`auto`: AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_KEY are set").
    /// Names settings and variables, never a key.
    pub why: String,
    /// Where its key is looked for after `.troupe/secrets.toml` and before the config file.
    pub key_vars: &'static [&'static str],
}

fn env_set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

/// Decides which provider the config selects, without building it (nothing is fetched or
/// sent). `auto`, in order: an OpenAI-compatible server when `llm.base_url`, `OPENAI_BASE_URL`
/// or `llm.endpoints` names one; Azure OpenAI when `llm.azure_endpoint` is set, or when
/// `AZURE_OPENAI_ENDPOINT` and a key (`AZURE_OPENAI_API_KEY` or TinyTroupe's
/// `AZURE_OPENAI_KEY`) are; OpenAI when a key is found; else the local model, else the
/// simulated provider. `provider_bills` and `provider_from_config` both follow it.
pub fn choose_provider(cfg: &crate::config::SimulationConfig) -> ProviderChoice {
    use crate::config::ProviderKind;
    use crate::config::secrets::{AZURE_KEY_VARS, OPENAI_KEY_VARS, SECRETS_FILE};
    let choice = |kind, why: String, key_vars| ProviderChoice { kind, why, key_vars };
    match cfg.llm.provider {
        ProviderKind::Simulated => {
            choice(ProviderKind::Simulated, "llm.provider = \"simulated\"".into(), OPENAI_KEY_VARS)
        }
        ProviderKind::Local => choice(ProviderKind::Local, "llm.provider = \"local\"".into(), OPENAI_KEY_VARS),
        ProviderKind::OpenAi => choice(ProviderKind::OpenAi, "llm.provider = \"openai\"".into(), OPENAI_KEY_VARS),
        ProviderKind::Azure => choice(ProviderKind::Azure, "llm.provider = \"azure\"".into(), AZURE_KEY_VARS),
        ProviderKind::Auto => {
            let server = if cfg.llm.base_url.as_deref().is_some_and(|u| !u.trim().is_empty()) {
                Some("llm.base_url is set")
            } else if env_set("OPENAI_BASE_URL") {
                Some("OPENAI_BASE_URL is set")
            } else if !cfg.llm.endpoints.is_empty() {
                Some("llm.endpoints is set")
            } else {
                None
            };
            if let Some(why) = server {
                return choice(ProviderKind::OpenAi, format!("`auto`: {why}"), OPENAI_KEY_VARS);
            }
            if cfg.llm.azure_endpoint.as_deref().is_some_and(|e| !e.trim().is_empty()) {
                return choice(ProviderKind::Azure, "`auto`: llm.azure_endpoint is set".into(), AZURE_KEY_VARS);
            }
            if env_set("AZURE_OPENAI_ENDPOINT")
                && let Some(var) = AZURE_KEY_VARS.iter().find(|v| env_set(v))
            {
                return choice(
                    ProviderKind::Azure,
                    format!("`auto`: AZURE_OPENAI_ENDPOINT and {var} are set"),
                    AZURE_KEY_VARS,
                );
            }
            let key =
                crate::config::secrets::resolve_api_key_from(cfg, std::path::Path::new(SECRETS_FILE), OPENAI_KEY_VARS);
            let found = match &key.source {
                crate::config::KeySource::SecretsFile(p) => Some(format!("an API key is in {}", p.display())),
                crate::config::KeySource::Env(v) => Some(format!("{v} is set")),
                crate::config::KeySource::Config => Some("llm.api_key is set".to_string()),
                crate::config::KeySource::Missing => None,
            };
            match found {
                Some(why) => choice(ProviderKind::OpenAi, format!("`auto`: {why}"), OPENAI_KEY_VARS),
                None => {
                    let mut why = "`auto`: no API key, llm.base_url or Azure endpoint is set".to_string();
                    if env_set("AZURE_OPENAI_ENDPOINT") {
                        why.push_str(
                            " (AZURE_OPENAI_ENDPOINT is, but neither AZURE_OPENAI_API_KEY nor AZURE_OPENAI_KEY: set one, or put the key in .troupe/secrets.toml and set llm.provider = \"azure\")",
                        );
                    }
                    choice(ProviderKind::Local, why, OPENAI_KEY_VARS)
                }
            }
        }
    }
}

/// True when the configured provider bills for calls: OpenAI or Azure, chosen outright or by
/// `auto` ([`choose_provider`]). Decided without building the provider (so nothing is fetched).
pub fn provider_bills(cfg: &crate::config::SimulationConfig) -> bool {
    use crate::config::ProviderKind;
    matches!(choose_provider(cfg).kind, ProviderKind::OpenAi | ProviderKind::Azure)
}

/// Picks the provider the config asks for ([`choose_provider`]). Returns it with a notice for
/// the user when the choice was made for them (Azure from the environment, the local model,
/// the simulated provider). Fails when the chosen provider's settings are unusable (a bad URL,
/// a missing Azure endpoint, an `api_key_env` that is not set).
pub fn provider_from_config(
    cfg: &crate::config::SimulationConfig,
) -> Result<(Arc<dyn Provider>, Option<String>), LlmError> {
    provider_from_config_with(cfg, None)
}

/// [`provider_from_config`], with the rate budgets of the OpenAI-compatible and Azure
/// endpoints that have a requests- or tokens-per-minute limit shared through `shared` (a
/// cluster's workers keep one budget per URL and key together); other providers ignore it.
pub fn provider_from_config_with(
    cfg: &crate::config::SimulationConfig,
    shared: Option<Arc<dyn budget::SharedBudgetFactory>>,
) -> Result<(Arc<dyn Provider>, Option<String>), LlmError> {
    use std::path::Path;

    use crate::config::ProviderKind;
    use crate::config::secrets::{SECRETS_FILE, resolve_api_key_from};
    let choice = choose_provider(cfg);
    let key = || {
        let k = resolve_api_key_from(cfg, Path::new(SECRETS_FILE), choice.key_vars);
        for w in &k.warnings {
            tracing::warn!("{w}");
        }
        k.key
    };
    let auto = cfg.llm.provider == ProviderKind::Auto;
    match choice.kind {
        ProviderKind::Simulated => Ok((Arc::new(SimulatedProvider::new(cfg.llm.simulated.clone())), None)),
        ProviderKind::OpenAi => {
            let opts = openai::OpenAiOptions::from_config(&cfg.llm, key())?;
            let opts = openai::OpenAiOptions { shared_budget: shared, ..opts };
            Ok((Arc::new(OpenAiProvider::new(opts)?), None))
        }
        ProviderKind::Azure => {
            let (opts, az) = azure::azure_options_from_config(&cfg.llm, key())?;
            let p = OpenAiProvider::azure(openai::OpenAiOptions { shared_budget: shared, ..opts }, az)?;
            let notice = auto.then(|| {
                let t = azure::target(&cfg.llm);
                format!(
                    "using Azure OpenAI at {}, deployment `{}` (from {}), because {}; set llm.provider to choose another provider",
                    t.endpoint.as_deref().unwrap_or("the configured endpoints"),
                    t.deployment,
                    t.deployment_from,
                    choice.why.trim_start_matches("`auto`: ")
                )
            });
            Ok((Arc::new(p), notice))
        }
        ProviderKind::Local if !auto => Ok((local::provider(&cfg.llm)?, None)),
        ProviderKind::Local | ProviderKind::Auto => {
            // An Azure endpoint without a key: say so, or the user wonders why Azure was not used.
            let azure =
                choice.why.split_once(" (AZURE_OPENAI_ENDPOINT").map(|(_, h)| format!(" (AZURE_OPENAI_ENDPOINT{h}"));
            let azure = azure.unwrap_or_default();
            let why = match local::auto(&cfg.llm)? {
                local::AutoLocal::Ready(p, notice) => return Ok((p, Some(format!("{notice}{azure}")))),
                local::AutoLocal::Unavailable(why) => why,
            };
            Ok((
                Arc::new(SimulatedProvider::new(cfg.llm.simulated.clone())),
                Some(format!(
                    "using the built-in simulated provider: the text is synthetic: {why}{azure}. Set llm.provider = \"simulated\" to silence this notice."
                )),
            ))
        }
    }
}
