//! Loading a GGUF model with candle and writing replies with it, plus the queue that serves a
//! process's requests on one blocking thread.
//!
//! A model is loaded once per process and path ([`LocalModel::shared`]) and every engine in the
//! process shares it. Its weights are read-only and shared; each reply has its own attention
//! cache, so a reply never sees another's state.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{Content, Value};
use tokio::sync::oneshot;

use super::LocalError;
use super::llama::Llama;
use super::sampler::{Sampler, SamplingParams};
use super::template::ChatTemplate;
use super::tokenizer::Tokenizer;
use crate::llm::{ChatMessage, ChatRequest, ChatResponse, ErrorKind, FinishReason, LlmError, Usage};
use crate::model::{KNOWN_MODELS, known_by_file_name, verify};

/// What one reply may do.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Most tokens to write.
    pub max_tokens: usize,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Stop sequences (the reply ends before the first one).
    pub stop: Vec<String>,
    /// Text the reply starts with, written into the prompt after the assistant's opening (a
    /// first-person opening primes a small model to speak as the persona); part of the text.
    pub prime: String,
    /// Added to these tokens' logits before every draw (see [`Sampler::with_bias`]).
    pub bias: Vec<(u32, f32)>,
    /// Tokens past `max_tokens` a reply may take to end its sentence; past them it is cut
    /// at its last whole sentence.
    pub finish_sentence: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            prime: String::new(),
            bias: Vec::new(),
            finish_sentence: 0,
        }
    }
}

/// A reply and how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The tokens written (without the stop token).
    pub ids: Vec<u32>,
    /// Their text.
    pub text: String,
    /// `Stop` at a stop token or sequence, `Length` at `max_tokens`.
    pub finish: FinishReason,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Time to read the prompt (one forward pass over all its tokens).
    pub prefill: Duration,
    /// Time to write the reply.
    pub decode: Duration,
}

/// A loaded model: weights, tokenizer and chat template from one GGUF file.
pub struct LocalModel {
    path: PathBuf,
    name: String,
    net: Llama,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
    max_context: usize,
    queue: OnceLock<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("vocab", &self.tokenizer.vocab_size())
            .field("max_context", &self.max_context)
            .finish_non_exhaustive()
    }
}

static LOADED: Mutex<Vec<(PathBuf, Arc<LocalModel>)>> = Mutex::new(Vec::new());

impl LocalModel {
    /// The model at `path`, loaded on first use and shared by the whole process afterwards.
    /// Failures are not remembered: a fixed file loads on the next call.
    pub fn shared(path: &Path) -> Result<Arc<LocalModel>, LocalError> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        // Held while loading, so two engines starting together load the file once.
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = loaded.iter().find(|(p, _)| *p == key) {
            return Ok(m.clone());
        }
        let m = Arc::new(LocalModel::load(path)?);
        loaded.push((key, m.clone()));
        Ok(m)
    }

    /// Loads a model, checking the file first: the size and sha256 of a model troupe-sim knows
    /// (by file name or size), that it is GGUF, and that it is whole. Never panics.
    pub fn load(path: &Path) -> Result<LocalModel, LocalError> {
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LocalError::NotFound { path: path.to_path_buf() });
            }
            Err(source) => return Err(crate::model::ModelError::Io { path: path.to_path_buf(), source }.into()),
        };
        if let Some(known) = known_by_file_name(path).or_else(|| KNOWN_MODELS.iter().find(|m| m.size == len)) {
            verify(path, known)?;
        }
        match catch_unwind(AssertUnwindSafe(|| load_unchecked(path, len))) {
            Ok(r) => r,
            Err(panic) => Err(LocalError::Damaged { path: path.to_path_buf(), message: panic_text(&panic) }),
        }
    }

    /// The name results record: the file name without `.gguf`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokenizer built from the file.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The most tokens a prompt and its reply may have together.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// The prompt tokens of a conversation (the chat template applied, then tokenized).
    pub fn prompt_ids(&self, messages: &[ChatMessage]) -> Vec<u32> {
        self.tokenizer.encode(&self.template.render(messages))
    }

    /// Writes a reply to `prompt` on the calling thread. `cancelled` is asked before every
    /// token, so a caller that gave up frees the thread at once.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generation, LocalError> {
        if prompt.is_empty() {
            return Err(LocalError::Generation("the prompt is empty".into()));
        }
        let max_tokens = params.max_tokens.max(1);
        if prompt.len() + max_tokens + params.finish_sentence > self.max_context {
            return Err(LocalError::PromptTooLong { prompt: prompt.len(), max_tokens, limit: self.max_context });
        }
        let fail = |e: candle_core::Error| LocalError::Generation(e.to_string());
        let mut cache = self.net.cache(prompt.len() + max_tokens + params.finish_sentence);
        let t0 = Instant::now();
        let mut logits = self.net.forward(prompt, &mut cache).map_err(fail)?;
        let prefill = t0.elapsed();
        let t1 = Instant::now();
        // As in llama.cpp, the penalty looks at the last tokens of the whole context, prompt
        // included: it keeps a small model from copying the previous speaker's line.
        let mut recent: Vec<u32> = prompt.iter().copied().filter(|t| !self.tokenizer.is_special(*t)).collect();
        let mut sampler = Sampler::new(params.sampling).with_bias(&params.bias);
        let mut ids = Vec::with_capacity(max_tokens);
        let mut cut = None;
        let finish = loop {
            if cancelled() {
                return Err(LocalError::Cancelled);
            }
            let keep = params.sampling.repeat_last_n.min(recent.len());
            let next = sampler.sample(&mut logits, &recent[recent.len() - keep..]);
            if self.stop_ids.contains(&next) {
                break FinishReason::Stop;
            }
            ids.push(next);
            if !self.tokenizer.is_special(next) {
                recent.push(next);
            }
            if !params.stop.is_empty() {
                // Stop sequences count once the reply has begun, so "\n" as a stop does not end
                // a reply that opens with a line break.
                let text = self.tokenizer.decode(&ids, false);
                let start = text.len() - text.trim_start().len();
                if let Some(at) =
                    params.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text[start..].find(s.as_str())).min()
                {
                    cut = Some(text[..start + at].to_string());
                    break FinishReason::Stop;
                }
            }
            if ids.len() >= max_tokens {
                // Past the budget, only to end the sentence: a reply that ends one here is whole.
                if ids.len() >= max_tokens + params.finish_sentence {
                    break FinishReason::Length;
                }
                let text = self.tokenizer.decode(&ids, false);
                if !crate::text::lines::mid_sentence(&text) {
                    break FinishReason::Stop;
                }
            }
            logits = self.net.forward(&[next], &mut cache).map_err(fail)?;
        };
        let text = cut.unwrap_or_else(|| self.tokenizer.decode(&ids, false));
        Ok(Generation { ids, text, finish, prompt_tokens: prompt.len(), prefill, decode: t1.elapsed() })
    }

    /// Answers a chat request on the calling thread. A reply cut by `max_tokens` ends at its
    /// last whole sentence (see [`super::whole_sentences`]); usage still counts every token.
    pub fn answer(
        &self,
        req: &ChatRequest,
        params: &GenerateParams,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ChatResponse, LocalError> {
        let mut prompt = self.template.render(&req.messages);
        prompt.push_str(&params.prime);
        let g = self.generate(&self.tokenizer.encode(&prompt), params, cancelled)?;
        let text = format!("{}{}", params.prime, g.text);
        Ok(ChatResponse {
            text: super::whole_sentences(text.trim(), g.finish == FinishReason::Length).to_string(),
            usage: Usage::new(g.prompt_tokens as u64, g.ids.len() as u64),
            model: self.name.clone(),
            finish_reason: g.finish,
        })
    }

    /// Queues a request for the model's worker thread; the answer comes back on `reply`.
    /// The worker starts with the first request and serves them one at a time, in order: on a
    /// small machine one reply using every core is faster than several sharing them.
    pub(super) fn submit(
        self: &Arc<Self>,
        req: Arc<ChatRequest>,
        params: GenerateParams,
        reply: oneshot::Sender<Result<ChatResponse, LlmError>>,
    ) -> Result<(), LlmError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let model = self.clone();
            let spawned =
                std::thread::Builder::new().name("troupe-local-model".into()).spawn(move || worker(&model, rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the local model's thread");
            }
            tx
        });
        queue
            .send(Job { req, params, reply, queued: Instant::now() })
            .map_err(|_| LlmError::new(ErrorKind::Server, "the local model's thread is not running; see the log"))
    }
}

struct Job {
    req: Arc<ChatRequest>,
    params: GenerateParams,
    reply: oneshot::Sender<Result<ChatResponse, LlmError>>,
    queued: Instant,
}

/// Serves the queue until every sender is gone. A request whose caller gave up (the
/// supervisor's timeout dropped the future) is skipped or stopped mid-reply.
fn worker(model: &LocalModel, rx: mpsc::Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        if job.reply.is_closed() {
            continue;
        }
        let waited = job.queued.elapsed();
        let span = tracing::debug_span!("local_generate", persona = %job.req.meta.persona, turn = job.req.meta.turn, waited_ms = waited.as_millis() as u64);
        let _e = span.enter();
        let cancelled = || job.reply.is_closed();
        let result = match catch_unwind(AssertUnwindSafe(|| model.answer(&job.req, &job.params, &cancelled))) {
            Ok(r) => r.map_err(LlmError::from),
            Err(panic) => Err(LlmError::new(
                ErrorKind::Server,
                format!("the local model failed while writing a reply: {}", panic_text(&panic)),
            )),
        };
        if let Ok(r) = &result {
            tracing::debug!(prompt = r.usage.prompt_tokens, completion = r.usage.completion_tokens, "local reply");
        }
        let _ = job.reply.send(result);
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown failure".into())
}

fn load_unchecked(path: &Path, len: u64) -> Result<LocalModel, LocalError> {
    let damaged = |message: String| LocalError::Damaged { path: path.to_path_buf(), message };
    let unsupported = |message: String| LocalError::Unsupported { path: path.to_path_buf(), message };
    let mut file = BufReader::new(
        File::open(path).map_err(|source| crate::model::ModelError::Io { path: path.to_path_buf(), source })?,
    );
    let mut magic = [0u8; 4];
    if len < 4 || file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        let start = &magic[..(len.min(4) as usize)];
        return Err(LocalError::NotGguf { path: path.to_path_buf(), start: format!("{start:02x?}") });
    }
    use std::io::Seek;
    file.rewind().map_err(|e| damaged(e.to_string()))?;
    let content = Content::read(&mut file).map_err(|e| damaged(format!("its header cannot be read: {e}")))?;

    let md = &content.metadata;
    let text = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
    let arch = text("general.architecture").unwrap_or_default();
    if arch != "llama" {
        return Err(unsupported(format!(
            "its architecture is {arch:?}; the local provider runs llama-architecture models such as SmolLM2"
        )));
    }
    if md.get("llama.expert_count").and_then(|v| v.to_u32().ok()).unwrap_or(0) > 1 {
        return Err(unsupported("it is a mixture-of-experts model; the local provider runs dense llama models".into()));
    }
    let needed = content
        .tensor_infos
        .values()
        .map(|t| {
            let bytes = (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64;
            content.tensor_data_offset.saturating_add(t.offset).saturating_add(bytes)
        })
        .max()
        .unwrap_or(0);
    if needed > len {
        return Err(damaged(format!("it is truncated: its tensors need {needed} bytes, the file has {len}")));
    }

    let tokenizer = tokenizer_from(md).map_err(unsupported)?;
    let template = ChatTemplate::from_jinja(text("tokenizer.chat_template").as_deref())
        .map_err(|head| unsupported(format!("its chat template is not ChatML (it starts {head:?})")))?;
    let mut stop_ids: Vec<u32> = ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| tokenizer.token_id(t)).collect();
    if let Some(eos) = md.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()) {
        stop_ids.push(eos);
    }
    stop_ids.sort_unstable();
    stop_ids.dedup();
    let context = md.get("llama.context_length").and_then(|v| v.to_u32().ok()).unwrap_or(2048) as usize;

    let net = Llama::from_gguf(&content, &mut file).map_err(|e| damaged(format!("its weights cannot be read: {e}")))?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("local-model").trim_end_matches(".gguf").to_string();
    let max_context = context.min(net.max_positions());
    Ok(LocalModel {
        path: path.to_path_buf(),
        name,
        net,
        tokenizer,
        template,
        stop_ids,
        max_context,
        queue: OnceLock::new(),
    })
}

/// The tokenizer a GGUF file describes; the error says what is unsupported.
fn tokenizer_from(md: &HashMap<String, Value>) -> Result<Tokenizer, String> {
    let text = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
    let kind = text("tokenizer.ggml.model").unwrap_or_default();
    if kind != "gpt2" {
        return Err(format!(
            "its tokenizer is {kind:?}; the local provider reads byte-level BPE (\"gpt2\") tokenizers"
        ));
    }
    let split_digits = match text("tokenizer.ggml.pre").as_deref() {
        Some("smollm") => true,
        None | Some("gpt2") | Some("default") => false,
        Some(other) => {
            return Err(format!(
                "its pre-tokenizer is {other:?}; the local provider knows \"smollm\" and \"gpt2\" (SmolLM2-style models)"
            ));
        }
    };
    let strings = |k: &str| -> Result<Vec<String>, String> {
        let arr = md.get(k).and_then(|v| v.to_vec().ok()).ok_or_else(|| format!("it has no {k}"))?;
        arr.iter().map(|v| v.to_string().cloned().map_err(|_| format!("{k} holds a value that is not text"))).collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    // llama.cpp's token types: 3 control, 4 user-defined; both are matched before BPE.
    let specials: Vec<u32> = match md.get("tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok()) {
        Some(types) => types
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t.to_i32().ok().or_else(|| t.to_u32().ok().map(|u| u as i32)), Some(3 | 4)))
            .map(|(i, _)| i as u32)
            .collect(),
        None => Vec::new(),
    };
    Tokenizer::new(tokens, &merges, &specials, split_digits).map_err(|e| format!("its tokenizer is unusable: {e}"))
}
