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
pub mod openai;
pub mod pool;
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
    /// Sends one request. The future must be cancel-safe: the supervisor drops it on timeout.
    fn chat(&self, req: Arc<ChatRequest>, ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>>;
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
            meta: RequestMeta { purpose: "health".into(), ..Default::default() },
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

/// True when the configured provider bills for calls: OpenAI or Azure, or `auto` with a key or
/// a server configured. Decided without building the provider (so nothing is fetched).
pub fn provider_bills(cfg: &crate::config::SimulationConfig) -> bool {
    use crate::config::ProviderKind;
    match cfg.llm.provider {
        ProviderKind::OpenAi | ProviderKind::Azure => true,
        ProviderKind::Simulated | ProviderKind::Local => false,
        ProviderKind::Auto => {
            server_configured(cfg)
                || crate::config::resolve_api_key(
                    cfg,
                    std::path::Path::new(crate::config::secrets::SECRETS_FILE),
                    "OPENAI_API_KEY",
                )
                .key
                .is_some()
        }
    }
}

/// Picks the provider the config asks for. Returns it with a notice for the user when the
/// choice was made for them. `auto` means OpenAI (or a compatible server) when a key,
/// `llm.base_url`, `OPENAI_BASE_URL` or `llm.endpoints` is configured, else the embedded local
/// model when it is compiled in (fetched on first use), else the simulated provider. Fails when the chosen provider's settings are unusable (a bad URL, a missing
/// Azure endpoint, an `api_key_env` that is not set).
pub fn provider_from_config(
    cfg: &crate::config::SimulationConfig,
) -> Result<(Arc<dyn Provider>, Option<String>), LlmError> {
    use std::path::Path;

    use crate::config::resolve_api_key;
    use crate::config::{ProviderKind, secrets::SECRETS_FILE};
    let secrets = Path::new(SECRETS_FILE);
    let openai_key = || {
        let k = resolve_api_key(cfg, secrets, "OPENAI_API_KEY");
        for w in &k.warnings {
            tracing::warn!("{w}");
        }
        k.key
    };
    match cfg.llm.provider {
        ProviderKind::Simulated => Ok((Arc::new(SimulatedProvider::new(cfg.llm.simulated.clone())), None)),
        ProviderKind::OpenAi => Ok((Arc::new(OpenAiProvider::from_config(&cfg.llm, openai_key())?), None)),
        ProviderKind::Azure => {
            let k = resolve_api_key(cfg, secrets, "AZURE_OPENAI_API_KEY");
            for w in &k.warnings {
                tracing::warn!("{w}");
            }
            Ok((Arc::new(OpenAiProvider::azure_from_config(&cfg.llm, k.key)?), None))
        }
        ProviderKind::Local => Ok((local::provider(&cfg.llm)?, None)),
        ProviderKind::Auto => {
            let key = openai_key();
            if key.is_some() || server_configured(cfg) {
                return Ok((Arc::new(OpenAiProvider::from_config(&cfg.llm, key)?), None));
            }
            let why = match local::auto(&cfg.llm)? {
                local::AutoLocal::Ready(p, notice) => return Ok((p, Some(notice))),
                local::AutoLocal::Unavailable(why) => why,
            };
            Ok((
                Arc::new(SimulatedProvider::new(cfg.llm.simulated.clone())),
                Some(format!(
                    "using the built-in simulated provider: the text is synthetic: {why}. Set llm.provider = \"simulated\" to silence this notice."
                )),
            ))
        }
    }
}
