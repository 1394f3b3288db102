//! Loading a GGUF model with candle and writing replies with it, plus the queue that serves a
//! process's requests on one blocking thread.
//!
//! A model is loaded once per process and path ([`LocalModel::shared`]) and every engine in the
//! process shares it. Its weights are read-only and shared; each reply has its own attention
//! cache, so a reply never sees another's state.
//!
//! How requests are served (the worker thread, [`LocalModel::submit`]):
//! - **Continuous batching.** The worker takes every request that is ready, up to
//!   [`MAX_BATCH`], and writes their replies together: one pass over the weights per step for
//!   all of them. A request that arrives mid-way joins at the next step (after its prompt is
//!   read, alone); a reply that ends leaves. Each reply gets the same bits as it would alone.
//! - **Deadlines count computing.** A request's `started` signal fires when the worker takes
//!   it, so the supervisor's `persona_timeout` never counts the wait behind other personas.
//! - **A caller that gave up stops at once.** Its reply channel closes: a queued request is
//!   dropped when it comes up, and one being written stops before its next token (or its
//!   prompt's next chunk), so a retry never waits behind abandoned work.
//! - **Threads follow the free cores** ([`Cores`]): `llm.local.threads`, or with 0 (auto) one
//!   thread per core that other processes leave free, measured from `/proc/stat` at most every
//!   half second, never more than the physical cores this process may use. The arithmetic does
//!   not depend on the thread count (see [`super::llama`]), so neither does the text.
//! - **Prefix cache.** The attention cache of recent prompts is kept ([`PrefixCache`]: LRU,
//!   bounded in MB, at whole chunks of [`CHUNK`] tokens), so a persona's system prompt and the
//!   conversation it has already read are not read again next turn.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{Content, Value};
use tokio::sync::oneshot;

use super::LocalError;
use super::llama::{CHUNK, Cache, Llama};
use super::sampler::{Sampler, SamplingParams};
use super::template::ChatTemplate;
use super::tokenizer::Tokenizer;
use crate::llm::{CallStarted, ChatMessage, ChatRequest, ChatResponse, ErrorKind, FinishReason, LlmError, Usage};
use crate::model::{KNOWN_MODELS, known_by_file_name, verify};

/// The most replies written together. Four personas of a `Parallel` turn fit; beyond eight the
/// step's attention (one per reply) outweighs the shared pass over the weights.
pub const MAX_BATCH: usize = 8;

/// The prefix cache's default bound: about eight 700-token prompts of SmolLM2-135M.
pub const DEFAULT_PREFIX_CACHE_MB: usize = 256;

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
    /// Prompt tokens whose attention cache came from the prefix cache (not read again).
    pub cached_tokens: usize,
    /// Time to read the prompt (the part not in the prefix cache).
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
    cores: Cores,
    prefixes: Mutex<PrefixCache>,
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

    /// The prompt tokens of a request: its conversation, then the reply's opening (`prime`).
    fn request_ids(&self, req: &ChatRequest, params: &GenerateParams) -> Vec<u32> {
        let mut prompt = self.template.render(&req.messages);
        prompt.push_str(&params.prime);
        self.tokenizer.encode(&prompt)
    }

    /// Sets the CPU threads (`llm.local.threads`; 0: one per free core, measured) and the
    /// prefix cache's bound in MB (`llm.local.prefix_cache_mb`; 0: off). The model is shared by
    /// the process, so the last provider built decides.
    pub fn configure(&self, threads: usize, prefix_cache_mb: usize) {
        self.cores.fixed.store(threads, Ordering::Relaxed);
        let mut p = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        p.limit = prefix_cache_mb.saturating_mul(1 << 20);
        p.trim();
    }

    /// The threads the next step would use.
    pub fn threads(&self) -> usize {
        self.cores.choose()
    }

    /// Forgets every cached prompt prefix (benchmarks measure reading a prompt anew with it).
    pub fn clear_prefix_cache(&self) {
        let mut p = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        p.entries.clear();
        p.bytes = 0;
    }

    /// Writes a reply to `prompt` on the calling thread (with the model's thread pool).
    /// `cancelled` is asked before every token, so a caller that gave up frees the thread.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Generation, LocalError> {
        self.generate_together(&[(prompt, params)], cancelled).remove(0)
    }

    /// Writes replies to several prompts together, decoding them in one batch (as the worker
    /// does for requests that wait together). Each reply is the one [`generate`] gives alone.
    ///
    /// [`generate`]: LocalModel::generate
    pub fn generate_together(
        &self,
        jobs: &[(&[u32], &GenerateParams)],
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Vec<Result<Generation, LocalError>> {
        let mut out: Vec<Option<Result<Generation, LocalError>>> = jobs.iter().map(|_| None).collect();
        let mut active: Vec<(usize, Reply)> = Vec::new();
        for (i, (prompt, params)) in jobs.iter().enumerate() {
            let begun = self.cores.run(|| self.begin(prompt, params, cancelled));
            match begun {
                Ok(r) => active.push((i, r)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        while !active.is_empty() {
            if cancelled() {
                for (i, _) in active.drain(..) {
                    out[i] = Some(Err(LocalError::Cancelled));
                }
                break;
            }
            let mut next = Vec::new();
            for (i, mut r) in std::mem::take(&mut active) {
                match self.choose(&mut r) {
                    Step::Token(t) => next.push((i, r, t)),
                    Step::Done(finish) => out[i] = Some(Ok(self.finish(r, finish))),
                }
            }
            if next.is_empty() {
                break;
            }
            let tokens: Vec<u32> = next.iter().map(|(_, _, t)| *t).collect();
            let mut replies: Vec<&mut Reply> = next.iter_mut().map(|(_, r, _)| r).collect();
            let stepped = self.cores.run(|| self.advance(&mut replies, &tokens));
            match stepped {
                Ok(()) => active = next.into_iter().map(|(i, r, _)| (i, r)).collect(),
                Err(e) => {
                    for (i, _, _) in next {
                        out[i] = Some(Err(LocalError::Generation(e.to_string())));
                    }
                }
            }
        }
        out.into_iter().map(|r| r.unwrap_or(Err(LocalError::Cancelled))).collect()
    }

    /// Answers a chat request on the calling thread. A reply cut by `max_tokens` ends at its
    /// last whole sentence (see [`super::whole_sentences`]); usage still counts every token.
    pub fn answer(
        &self,
        req: &ChatRequest,
        params: &GenerateParams,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<ChatResponse, LocalError> {
        let prompt = self.request_ids(req, params);
        let g = self.generate(&prompt, params, cancelled)?;
        Ok(self.response(g, &params.prime))
    }

    /// The answer to a request whose reply began with `prime`.
    fn response(&self, g: Generation, prime: &str) -> ChatResponse {
        let text = format!("{prime}{}", g.text);
        ChatResponse {
            text: super::whole_sentences(text.trim(), g.finish == FinishReason::Length).to_string(),
            usage: Usage::new(g.prompt_tokens as u64, g.ids.len() as u64),
            model: self.name.clone(),
            finish_reason: g.finish,
        }
    }

    /// Reads a prompt (what the prefix cache does not hold) and gets its reply ready to write.
    fn begin(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Reply, LocalError> {
        if prompt.is_empty() {
            return Err(LocalError::Generation("the prompt is empty".into()));
        }
        let max_tokens = params.max_tokens.max(1);
        let room = prompt.len() + max_tokens + params.finish_sentence;
        if room > self.max_context {
            return Err(LocalError::PromptTooLong { prompt: prompt.len(), max_tokens, limit: self.max_context });
        }
        let t0 = Instant::now();
        let hit = self.prefixes.lock().unwrap_or_else(|e| e.into_inner()).lookup(prompt, room);
        let (mut cache, cached) = match hit {
            Some(c) => {
                let n = c.len();
                (c, n)
            }
            None => (self.net.cache(room), 0),
        };
        let logits = match self.net.prefill(&prompt[cached..], &mut cache, cancelled) {
            Ok(Some(l)) => l,
            Ok(None) => return Err(LocalError::Cancelled),
            Err(e) => return Err(LocalError::Generation(e.to_string())),
        };
        self.prefixes.lock().unwrap_or_else(|e| e.into_inner()).store(prompt, &cache);
        let prefill = t0.elapsed();
        // As in llama.cpp, the penalty looks at the last tokens of the whole context, prompt
        // included: it keeps a small model from copying the previous speaker's line.
        let recent: Vec<u32> = prompt.iter().copied().filter(|t| !self.tokenizer.is_special(*t)).collect();
        Ok(Reply {
            params: params.clone(),
            max_tokens,
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            cache,
            logits,
            sampler: Sampler::new(params.sampling).with_bias(&params.bias),
            recent,
            ids: Vec::with_capacity(max_tokens),
            cut: None,
            prefill,
            writing: Instant::now(),
        })
    }

    /// Picks a reply's next token, or says it is done.
    fn choose(&self, r: &mut Reply) -> Step {
        let keep = r.params.sampling.repeat_last_n.min(r.recent.len());
        let next = r.sampler.sample(&mut r.logits, &r.recent[r.recent.len() - keep..]);
        if self.stop_ids.contains(&next) {
            return Step::Done(FinishReason::Stop);
        }
        r.ids.push(next);
        if !self.tokenizer.is_special(next) {
            r.recent.push(next);
        }
        if !r.params.stop.is_empty() {
            // Stop sequences count once the reply has begun, so "\n" as a stop does not end
            // a reply that opens with a line break.
            let text = self.tokenizer.decode(&r.ids, false);
            let start = text.len() - text.trim_start().len();
            if let Some(at) =
                r.params.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text[start..].find(s.as_str())).min()
            {
                r.cut = Some(text[..start + at].to_string());
                return Step::Done(FinishReason::Stop);
            }
        }
        if r.ids.len() >= r.max_tokens {
            // Past the budget, only to end the sentence: a reply that ends one here is whole.
            if r.ids.len() >= r.max_tokens + r.params.finish_sentence {
                return Step::Done(FinishReason::Length);
            }
            let text = self.tokenizer.decode(&r.ids, false);
            if !crate::text::lines::mid_sentence(&text) {
                return Step::Done(FinishReason::Stop);
            }
        }
        Step::Token(next)
    }

    /// Reads each reply's latest token, all in one batch, and sets their next logits.
    fn advance(&self, replies: &mut [&mut Reply], tokens: &[u32]) -> Result<(), candle_core::Error> {
        let mut caches: Vec<&mut Cache> = replies.iter_mut().map(|r| &mut r.cache).collect();
        let logits = self.net.decode(tokens, &mut caches)?;
        for (r, l) in replies.iter_mut().zip(logits) {
            r.logits = l;
        }
        Ok(())
    }

    fn finish(&self, r: Reply, finish: FinishReason) -> Generation {
        let text = r.cut.unwrap_or_else(|| self.tokenizer.decode(&r.ids, false));
        Generation {
            text,
            finish,
            prompt_tokens: r.prompt_tokens,
            cached_tokens: r.cached_tokens,
            prefill: r.prefill,
            decode: r.writing.elapsed(),
            ids: r.ids,
        }
    }

    /// Queues a request for the model's worker thread; the answer comes back on `reply`, and
    /// `started` fires when the worker takes the request. The worker starts with the first
    /// request; see the module's documentation for how it serves them.
    pub(super) fn submit(
        self: &Arc<Self>,
        req: Arc<ChatRequest>,
        params: GenerateParams,
        started: CallStarted,
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
            .send(Job { req, params, started, reply, queued: Instant::now() })
            .map_err(|_| LlmError::new(ErrorKind::Server, "the local model's thread is not running; see the log"))
    }
}

/// A reply being written.
struct Reply {
    params: GenerateParams,
    max_tokens: usize,
    prompt_tokens: usize,
    cached_tokens: usize,
    cache: Cache,
    logits: Vec<f32>,
    sampler: Sampler,
    recent: Vec<u32>,
    ids: Vec<u32>,
    cut: Option<String>,
    prefill: Duration,
    writing: Instant,
}

enum Step {
    Token(u32),
    Done(FinishReason),
}

struct Job {
    req: Arc<ChatRequest>,
    params: GenerateParams,
    started: CallStarted,
    reply: oneshot::Sender<Result<ChatResponse, LlmError>>,
    queued: Instant,
}

/// A job being answered by the worker.
struct Active {
    job_reply: oneshot::Sender<Result<ChatResponse, LlmError>>,
    reply: Reply,
    persona: String,
}

/// Serves the queue until every sender is gone (see the module's documentation).
fn worker(model: &LocalModel, rx: mpsc::Receiver<Job>) {
    let mut active: Vec<Active> = Vec::new();
    let mut open = true;
    loop {
        // Every ready request joins, up to the batch limit; with nothing to write, wait for one.
        while open && active.len() < MAX_BATCH {
            let job = if active.is_empty() {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            if let Some(a) = admit(model, job) {
                active.push(a);
            }
        }
        if active.is_empty() {
            if open {
                continue;
            }
            return;
        }
        // The caller gave up: stop writing at once.
        active.retain(|a| !a.job_reply.is_closed());
        let mut next = Vec::with_capacity(active.len());
        for mut a in active.drain(..) {
            match model.choose(&mut a.reply) {
                Step::Token(t) => next.push((a, t)),
                Step::Done(finish) => {
                    let prime = std::mem::take(&mut a.reply.params.prime);
                    let g = model.finish(a.reply, finish);
                    tracing::debug!(persona = %a.persona, prompt = g.prompt_tokens, cached = g.cached_tokens, completion = g.ids.len(), prefill_ms = g.prefill.as_millis() as u64, decode_ms = g.decode.as_millis() as u64, "local reply");
                    let _ = a.job_reply.send(Ok(model.response(g, &prime)));
                }
            }
        }
        if next.is_empty() {
            continue;
        }
        let tokens: Vec<u32> = next.iter().map(|(_, t)| *t).collect();
        let mut replies: Vec<&mut Reply> = next.iter_mut().map(|(a, _)| &mut a.reply).collect();
        let stepped = catch_unwind(AssertUnwindSafe(|| model.cores.run(|| model.advance(&mut replies, &tokens))));
        let failure = match stepped {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("the local model failed while writing a reply: {e}")),
            Err(panic) => Some(format!("the local model failed while writing a reply: {}", panic_text(&panic))),
        };
        match failure {
            None => active = next.into_iter().map(|(a, _)| a).collect(),
            Some(message) => {
                for (a, _) in next {
                    let _ = a.job_reply.send(Err(LlmError::new(ErrorKind::Server, message.clone())));
                }
            }
        }
    }
}

/// Takes a request off the queue: skips it when its caller already gave up, else starts its
/// deadline and reads its prompt. A request that fails here is answered at once.
fn admit(model: &LocalModel, job: Job) -> Option<Active> {
    if job.reply.is_closed() {
        return None;
    }
    let Job { req, params, started, reply, queued } = job;
    started.now();
    let waited = queued.elapsed();
    let span = tracing::debug_span!("local_generate", persona = %req.meta.persona, turn = req.meta.turn, waited_ms = waited.as_millis() as u64);
    let _e = span.enter();
    let cancelled = || reply.is_closed();
    let begun = catch_unwind(AssertUnwindSafe(|| {
        let prompt = model.request_ids(&req, &params);
        model.cores.run(|| model.begin(&prompt, &params, &cancelled))
    }));
    let result = match begun {
        Ok(Ok(r)) => return Some(Active { job_reply: reply, reply: r, persona: req.meta.persona.clone() }),
        Ok(Err(e)) => Err(LlmError::from(e)),
        Err(panic) => Err(LlmError::new(
            ErrorKind::Server,
            format!("the local model failed while reading a prompt: {}", panic_text(&panic)),
        )),
    };
    let _ = reply.send(result);
    None
}

/// Recent prompts' attention caches, keyed by their tokens, at whole chunks of [`CHUNK`]
/// tokens (the only points where a cached prefix gives the same bits as reading anew). Least
/// recently used first out; bounded by `limit` bytes of keys and values (SmolLM2-135M: 46 KB
/// per token, so about 32 MB for a 700-token prompt).
#[derive(Debug, Default)]
struct PrefixCache {
    entries: Vec<(Vec<u32>, Cache)>,
    bytes: usize,
    limit: usize,
}

impl PrefixCache {
    /// The longest cached prefix of `prompt` (whole chunks, leaving at least one token to
    /// read), as a cache with room for `room` positions.
    fn lookup(&mut self, prompt: &[u32], room: usize) -> Option<Cache> {
        let most = (prompt.len() - 1) / CHUNK * CHUNK;
        let (best, len) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (t, _))| {
                let common = t.iter().zip(prompt).take_while(|(a, b)| a == b).count();
                (i, (common / CHUNK * CHUNK).min(most))
            })
            .max_by_key(|&(i, len)| (len, i))?;
        if len == 0 {
            return None;
        }
        let entry = self.entries.remove(best);
        let hit = entry.1.prefix(len, room);
        self.entries.push(entry);
        Some(hit)
    }

    /// Keeps the whole chunks of a prompt just read (`cache` holds at least the prompt).
    fn store(&mut self, prompt: &[u32], cache: &Cache) {
        let len = prompt.len() / CHUNK * CHUNK;
        if len == 0 || self.limit == 0 {
            return;
        }
        let tokens = &prompt[..len];
        // Already covered by an entry that starts with these tokens: just mark it used.
        if let Some(i) = self.entries.iter().position(|(t, _)| t.starts_with(tokens)) {
            let e = self.entries.remove(i);
            self.entries.push(e);
            return;
        }
        // Entries this one covers go.
        let before = self.entries.len();
        self.entries.retain(|(t, _)| !tokens.starts_with(t));
        if self.entries.len() != before {
            self.bytes = self.entries.iter().map(|(_, c)| c.bytes()).sum();
        }
        let kept = cache.prefix(len, len);
        if kept.bytes() > self.limit {
            return;
        }
        self.bytes += kept.bytes();
        self.entries.push((tokens.to_vec(), kept));
        self.trim();
    }

    fn trim(&mut self) {
        while self.bytes > self.limit && !self.entries.is_empty() {
            let (_, c) = self.entries.remove(0);
            self.bytes -= c.bytes();
        }
    }
}

/// How many threads the model uses: `fixed` when set (`llm.local.threads`), else one per core
/// that other processes leave free. Rayon pools of each size are built on first use and kept
/// (idle ones sleep).
#[derive(Debug)]
struct Cores {
    fixed: AtomicUsize,
    most: usize,
    pools: Vec<OnceLock<Result<rayon::ThreadPool, rayon::ThreadPoolBuildError>>>,
    watch: Mutex<Watch>,
}

/// The last CPU-time sample and the choice made from it.
#[derive(Debug)]
struct Watch {
    last: Option<(Instant, CpuTimes)>,
    choice: usize,
}

/// Clock ticks from `/proc`: all CPUs busy and in total, and this process's own.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
    own: u64,
    cpus: usize,
}

/// How often the free cores are measured again.
const REMEASURE: Duration = Duration::from_millis(500);

impl Cores {
    fn new() -> Cores {
        let most = usable_cores();
        Cores {
            fixed: AtomicUsize::new(0),
            most,
            pools: (0..most).map(|_| OnceLock::new()).collect(),
            watch: Mutex::new(Watch { last: None, choice: most.min(1) }),
        }
    }

    /// Runs `f` on the pool for the thread count chosen now (the products inside it split
    /// their work over that pool's threads).
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let n = self.choose();
        let pool = self.pools[n - 1].get_or_init(|| {
            rayon::ThreadPoolBuilder::new().num_threads(n).thread_name(move |i| format!("troupe-local-{n}.{i}")).build()
        });
        match pool {
            Ok(p) => p.install(f),
            // No threads could be started: work on the calling thread.
            Err(_) => f(),
        }
    }

    /// `llm.local.threads` when set (at most the usable cores), else the free cores measured
    /// over the last interval (a first measurement takes 100 ms).
    fn choose(&self) -> usize {
        let fixed = self.fixed.load(Ordering::Relaxed);
        if fixed > 0 {
            return fixed.min(self.most);
        }
        let mut w = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let last = match w.last {
            Some(l) => l,
            None => {
                let Some(first) = CpuTimes::read() else { return w.choice };
                std::thread::sleep(Duration::from_millis(100));
                (now, first)
            }
        };
        if w.last.is_some() && now.duration_since(last.0) < REMEASURE {
            return w.choice;
        }
        if let Some(t) = CpuTimes::read() {
            if let Some(free) = free_cores(&last.1, &t, self.most) {
                w.choice = threads_for(free, self.most);
            }
            w.last = Some((Instant::now(), t));
        }
        w.choice
    }
}

/// Threads for `free` cores: a core counts when at least 70% of it is free (a thread that
/// shares its core with a busy process holds every step up), at least 1, at most `most`.
fn threads_for(free: f64, most: usize) -> usize {
    ((free + 0.3).floor() as usize).clamp(1, most.max(1))
}

/// Cores other processes left free between two samples, out of the `most` this process may use.
fn free_cores(a: &CpuTimes, b: &CpuTimes, most: usize) -> Option<f64> {
    let total = b.total.checked_sub(a.total)?;
    if total == 0 {
        return None;
    }
    let others = b.busy.saturating_sub(a.busy).saturating_sub(b.own.saturating_sub(a.own));
    let busy_cores = others as f64 / total as f64 * b.cpus as f64;
    Some((most as f64).min(b.cpus as f64 - busy_cores))
}

impl CpuTimes {
    /// From `/proc/stat` and `/proc/self/stat`; `None` where there is no `/proc`.
    fn read() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let (busy, total) = parse_cpu_line(stat.lines().next()?)?;
        let cpus = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count().max(1);
        let own = parse_own_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        Some(CpuTimes { busy, total, own, cpus })
    }
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: (busy, total) ticks. Steal (time
/// the hypervisor gave another machine) counts as busy.
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    let idle = v[3] + v[4];
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Some((busy, busy + idle))
}

/// utime + stime of `/proc/self/stat` (fields 14 and 15; the name in parentheses may hold
/// spaces, so fields are counted after its closing parenthesis).
fn parse_own_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Cores this process may run on (its affinity and CPU quota), but no more than the physical
/// cores among them: a second thread on a hyper-thread sibling only competes for the same
/// memory bandwidth.
fn usable_cores() -> usize {
    let allowed = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    allowed.min(physical_cores().unwrap_or(allowed)).max(1)
}

/// Distinct (package, core) pairs under `/sys/devices/system/cpu`.
fn physical_cores() -> Option<usize> {
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/sys/devices/system/cpu").ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        if !name.strip_prefix("cpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(entry.path().join("topology").join(f)).ok();
        if let (Some(p), Some(c)) = (read("physical_package_id"), read("core_id")) {
            seen.insert((p.trim().to_string(), c.trim().to_string()));
        }
    }
    (!seen.is_empty()).then_some(seen.len())
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
        cores: Cores::new(),
        prefixes: Mutex::new(PrefixCache { limit: DEFAULT_PREFIX_CACHE_MB << 20, ..Default::default() }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn times(busy: u64, total: u64, own: u64) -> CpuTimes {
        CpuTimes { busy, total, own, cpus: 2 }
    }

    #[test]
    fn a_core_counts_as_free_when_at_least_70_percent_of_it_is() {
        assert_eq!(threads_for(2.0, 2), 2);
        assert_eq!(threads_for(1.7, 2), 2);
        assert_eq!(threads_for(1.69, 2), 1);
        // Never none, never more than the usable cores.
        assert_eq!(threads_for(0.0, 2), 1);
        assert_eq!(threads_for(7.5, 4), 4);
    }

    #[test]
    fn our_own_cpu_time_does_not_count_as_taken() {
        // 200 ticks over 2 CPUs; 190 busy, of which 100 were ours: others took 90 = 0.9 core.
        let free = free_cores(&times(0, 0, 0), &times(190, 200, 100), 2).unwrap();
        assert!((free - 1.1).abs() < 1e-9, "{free}");
        assert_eq!(threads_for(free, 2), 1);
        // A hog on one core and nothing of ours: one core free.
        let free = free_cores(&times(0, 0, 0), &times(100, 200, 0), 2).unwrap();
        assert_eq!(threads_for(free, 2), 1);
        // Only our own work: both cores are ours to use.
        let free = free_cores(&times(0, 0, 0), &times(200, 200, 200), 2).unwrap();
        assert_eq!(threads_for(free, 2), 2);
        // No time passed (or the counters went back): no measurement.
        assert!(free_cores(&times(5, 10, 0), &times(5, 10, 0), 2).is_none());
        assert!(free_cores(&times(5, 10, 0), &times(5, 9, 0), 2).is_none());
    }

    #[test]
    fn proc_stat_lines_parse() {
        let (busy, total) = parse_cpu_line("cpu  100 5 50 800 20 1 2 3 0 0").unwrap();
        assert_eq!((busy, total), (100 + 5 + 50 + 1 + 2 + 3, 100 + 5 + 50 + 1 + 2 + 3 + 800 + 20));
        assert!(parse_cpu_line("cpu  1 2 3").is_none());
        // The command name may hold spaces and parentheses.
        let own = "4242 (troupe (x) y) R 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(parse_own_ticks(own), Some(333));
        assert!(parse_own_ticks("garbage").is_none());
    }
}
