//! Resume, replay and fork: running a recorded simulation again from its journal.
//!
//! - **resume** continues an interrupted run in its own folder: every exchange the journal holds
//!   answers its request again (no provider call), which rebuilds the world and the personas'
//!   memories exactly; requests past the interruption go to the provider.
//! - **replay** re-runs a recorded run offline at full speed: every answer must come from the
//!   journal, and a request without one stops the run naming the persona and turn.
//! - **fork** replays a run's first N turns and continues with a variant: the same history, a
//!   different future.
//!
//! A run folder is untrusted input (a colleague's zip, a download). Its identity and place come
//! from the folder itself, never from the journal's contents; everything that reaches outside
//! (the provider, endpoints, keys, log files, output folders, the cache and pricing files) comes
//! from the *current* configuration. From the journal only what defines the simulation is taken
//! (model, sampling, turns, policy, seeds, memory, timing), and it is checked against the same
//! bounds as any configuration. A resume whose calls would go to another provider or server than
//! the recorded ones stops and says so, unless the caller allows it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{EngineError, RunOptions, SimulationEngine};
use crate::config::{CacheMode, ProviderKind, SimulationConfig, limits};
use crate::fsutil::DirLock;
use crate::llm::cache::ResponseCache;
use crate::llm::{BoxFuture, CallContext, ChatRequest, ChatResponse, ErrorKind, LlmError, Provider};
use crate::record::journal::{self, Exchange, Header, JournalError};
use crate::record::results::valid_run_id;
use crate::record::transcript::StopReason;
use crate::scenario::RunPlan;

/// What a run folder's journals hold.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The run's id: the name of its folder (never the journal's `run_id`).
    pub run_id: String,
    /// The header of the first segment (the run as it was started).
    pub header: Header,
    /// Every exchange of every segment.
    pub exchanges: Vec<Exchange>,
    /// The journal files read, oldest first.
    pub segments: Vec<PathBuf>,
    /// How the latest segment ended, if it did.
    pub end: Option<crate::record::transcript::FinalState>,
    /// Turns completed in the latest segment.
    pub completed_turns: u32,
    /// True when a torn last line was ignored somewhere.
    pub torn: bool,
}

/// Longest provider name a journal may record.
const MAX_PROVIDER_NAME: usize = 64;

impl Recording {
    /// Reads every journal segment of `run_dir`.
    pub fn load(run_dir: &Path) -> Result<Self, JournalError> {
        let run_id = folder_run_id(run_dir)?;
        let segments = journal::segments(run_dir);
        if segments.is_empty() {
            return Err(JournalError::Io {
                path: run_dir.join(journal::FILE_NAME),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no journal here; give the folder of a run saved by troupe-sim 0.1 or later (outputs/conversations/<run-id>)",
                ),
            });
        }
        let mut header = None;
        let mut exchanges = Vec::new();
        let mut end = None;
        let mut completed_turns = 0;
        let mut torn = false;
        for p in &segments {
            let j = journal::read_journal(p)?;
            check_header(p, &j.header)?;
            torn |= j.torn_tail;
            exchanges.extend(j.exchanges().cloned());
            end = j.end().cloned();
            completed_turns = j.completed_turns();
            header.get_or_insert(j.header);
        }
        let header = header.expect("at least one segment was read");
        if header.run_id != run_id {
            tracing::warn!(
                folder = %run_id,
                "the journal names another run id; the folder's name is used (a run's identity comes from its folder)"
            );
        }
        Ok(Recording { run_id, header, exchanges, segments, end, completed_turns, torn })
    }

    /// The recorded answers, by request key.
    pub fn cache(&self) -> ResponseCache {
        let c = ResponseCache::in_memory();
        for x in &self.exchanges {
            if let Ok(k) = u64::from_str_radix(&x.key, 16) {
                c.insert(k, x.response.clone());
            }
        }
        c
    }

    /// True when the latest segment ran to its last turn.
    pub fn is_complete(&self) -> bool {
        matches!(self.end.as_ref().map(|e| &e.reason), Some(StopReason::Completed))
    }

    /// The configuration a run from this recording uses: `current` for everything that reaches
    /// outside, the recording's settings for what defines the simulation, all within bounds.
    pub fn config_with(&self, current: &SimulationConfig) -> Result<SimulationConfig, JournalError> {
        let merged = current.with_recorded_simulation(&self.header.config);
        limits::check(&merged).map_err(|e| JournalError::BadHeader {
            path: self.segments[0].clone(),
            line: 1,
            message: format!("`header.config.{}` = {}: {}", e.key, e.value, e.message),
        })?;
        Ok(merged)
    }

    /// Where the recorded calls went: the header's endpoints, or (journals written before they
    /// were recorded) what the recorded config named.
    pub fn recorded_endpoints(&self) -> Vec<String> {
        if !self.header.endpoints.is_empty() || !matches!(self.header.provider.as_str(), "openai" | "azure") {
            return self.header.endpoints.clone();
        }
        let llm = &self.header.config.llm;
        if self.header.provider == "azure" {
            return llm.azure_endpoint.iter().cloned().collect();
        }
        if !llm.endpoints.is_empty() {
            return llm.endpoints.iter().map(|e| e.base_url.clone()).collect();
        }
        vec![llm.base_url.clone().unwrap_or_else(|| crate::llm::openai::DEFAULT_BASE_URL.to_string())]
    }
}

/// The run id of a folder: its own name, which must look like one.
fn folder_run_id(run_dir: &Path) -> Result<String, JournalError> {
    let io = |source| JournalError::Io { path: run_dir.to_path_buf(), source };
    let canonical = run_dir.canonicalize().map_err(io)?;
    let name = canonical.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    if !valid_run_id(&name) {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the folder name {name:?} is not a run id (1 to 128 letters, digits, `_` or `-`); give the run's own folder, or rename it"
            ),
        )));
    }
    Ok(name)
}

/// The header fields that are used as they are must be sane.
fn check_header(path: &Path, h: &Header) -> Result<(), JournalError> {
    let bad = |message: String| JournalError::BadHeader { path: path.to_path_buf(), line: 1, message };
    if h.provider.len() > MAX_PROVIDER_NAME || h.provider.chars().any(char::is_control) {
        return Err(bad("`header.provider` is not a provider name".into()));
    }
    for (i, p) in h.plan.personas.iter().enumerate() {
        if let Some(iss) = crate::persona::validate::check_persona(p)
            .into_iter()
            .find(|i| i.severity == crate::persona::Severity::Error)
        {
            return Err(bad(format!("`header.plan.personas[{i}].{}`: {}", iss.field, iss.message)));
        }
    }
    Ok(())
}

/// What a resume may do that it would otherwise refuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumePermissions {
    /// Continue even when new calls would go to another provider or server than the recorded
    /// ones (`troupe resume --allow-provider-change`).
    pub provider_change: bool,
}

/// An engine for a recording, with the recorded answers in front of the provider. `auto` is
/// pinned to the kind of provider that made the recording, so new calls go to the same kind of
/// provider, configured from `config` (the current configuration).
fn engine_for(rec: &Recording, mut config: SimulationConfig, mode: CacheMode) -> Result<SimulationEngine, EngineError> {
    if config.llm.provider == ProviderKind::Auto {
        config.llm.provider = match rec.header.provider.as_str() {
            "simulated" => ProviderKind::Simulated,
            "openai" => ProviderKind::OpenAi,
            "azure" => ProviderKind::Azure,
            "local" => ProviderKind::Local,
            _ => ProviderKind::Auto,
        };
    }
    let engine = SimulationEngine::new(config)?;
    Ok(engine.with_cache(Arc::new(rec.cache()), mode, &rec.header.provider))
}

/// Refuses, unless allowed, a resume whose new calls would go elsewhere than the recorded ones.
fn check_same_provider(rec: &Recording, engine: &SimulationEngine, allow: bool) -> Result<(), EngineError> {
    let now_name = engine.provider().name();
    let now_endpoints: Vec<String> = engine.provider().endpoints();
    let then_endpoints = rec.recorded_endpoints();
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v.iter().map(|u| u.trim().trim_end_matches('/').to_string()).collect();
        v.sort();
        v
    };
    if now_name == rec.header.provider && norm(&now_endpoints) == norm(&then_endpoints) {
        return Ok(());
    }
    let show = |name: &str, eps: &[String]| {
        if eps.is_empty() { name.to_string() } else { format!("{name} at {}", eps.join(", ")) }
    };
    let what = format!(
        "the journal was recorded with {}, but the current configuration sends new calls to {}",
        show(&rec.header.provider, &then_endpoints),
        show(now_name, &now_endpoints)
    );
    if allow {
        tracing::warn!("{what}; continuing (--allow-provider-change)");
        return Ok(());
    }
    Err(EngineError::ProviderChanged(what))
}

/// Continues an interrupted run in its folder, with `current` as the configuration for
/// everything that reaches outside. Earlier journal segments are kept (`journal.N.jsonl`), so an
/// interrupted resume loses nothing either. The folder is locked for as long as the run lives.
pub async fn resume(
    run_dir: &Path,
    current: &SimulationConfig,
    allow: ResumePermissions,
    opts: RunOptions,
) -> Result<super::RunHandle, EngineError> {
    resume_on(run_dir, current, allow, opts, None).await
}

/// [`resume`], with new calls going to `provider` when one is given (a cluster worker's shared
/// provider, with its budget) instead of one made from `current`.
pub async fn resume_on(
    run_dir: &Path,
    current: &SimulationConfig,
    allow: ResumePermissions,
    opts: RunOptions,
    provider: Option<Arc<dyn Provider>>,
) -> Result<super::RunHandle, EngineError> {
    let lock = DirLock::acquire(run_dir, "troupe resume")?;
    let rec = Recording::load(run_dir)?;
    // Killed after the last turn but before results.json was written, a run still resumes:
    // the replay rebuilds its results without calling the provider.
    if rec.is_complete() && run_dir.join("results.json").exists() {
        return Err(EngineError::AlreadyComplete(run_dir.to_path_buf()));
    }
    let config = rec.config_with(current)?;
    let engine = match provider {
        Some(p) => SimulationEngine::with_provider(config, p).with_cache(
            Arc::new(rec.cache()),
            CacheMode::Auto,
            &rec.header.provider,
        ),
        None => engine_for(&rec, config, CacheMode::Auto)?,
    };
    check_same_provider(&rec, &engine, allow.provider_change)?;
    journal::rotate(run_dir)?;
    let canonical = run_dir.canonicalize().map_err(|source| EngineError::Output { path: run_dir.into(), source })?;
    let parent = canonical.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let opts = RunOptions { save_under: Some(parent), run_id: Some(rec.run_id.clone()), lock: Some(lock), ..opts };
    engine.start(rec.header.plan.clone(), opts).await
}

/// A provider that answers nothing: a replay's only answers are the recorded ones.
#[derive(Debug)]
struct Recorded {
    name: String,
}

impl Provider for Recorded {
    fn name(&self) -> &str {
        &self.name
    }
    fn synthetic(&self) -> bool {
        self.name == "simulated"
    }
    fn chat(&self, _req: Arc<ChatRequest>, _ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>> {
        Box::pin(async { Err(LlmError::new(ErrorKind::ReplayMiss, "a replay calls no provider")) })
    }
}

/// Re-runs a recorded run from its journal without calling (or even setting up) any provider.
/// The run stops at the first request the recording cannot answer. `current` supplies what
/// reaches outside (the pricing file, say); the caller chooses where it is saved.
pub async fn replay(
    run_dir: &Path,
    current: &SimulationConfig,
    opts: RunOptions,
) -> Result<super::RunHandle, EngineError> {
    let rec = Recording::load(run_dir)?;
    let mut config = rec.config_with(current)?;
    // A miss must stop the run, not be skipped, and nothing waits for rate limits.
    config.performance.graceful_degradation = false;
    config.performance.rate_limit_delay = 0.0;
    let provider = Arc::new(Recorded { name: rec.header.provider.clone() });
    let engine = SimulationEngine::with_provider(config, provider).with_cache(
        Arc::new(rec.cache()),
        CacheMode::Replay,
        &rec.header.provider,
    );
    let mut plan: RunPlan = rec.header.plan.clone();
    plan.name = format!("{} replay", plan.name);
    engine.start(plan, opts).await
}

/// Forks a recorded run: its first `at_turn` turns are replayed from the journal (same history),
/// then the run continues under `plan` and `config` (a variant, say). Requests the recording
/// cannot answer go to the provider `config` names.
pub async fn fork(
    run_dir: &Path,
    at_turn: u32,
    plan: RunPlan,
    config: SimulationConfig,
    opts: RunOptions,
) -> Result<super::RunHandle, EngineError> {
    let rec = Recording::load(run_dir)?;
    if at_turn > rec.completed_turns.max(rec.end.as_ref().map_or(0, |e| e.completed_turns)) {
        return Err(EngineError::Fork(format!(
            "the recording in {} completed {} turn(s); fork at a turn up to that",
            run_dir.display(),
            rec.completed_turns
        )));
    }
    let history_config = rec.config_with(&config)?;
    let engine = engine_for(&rec, config, CacheMode::Auto)?;
    let fork = crate::scenario::Fork { at_turn, history: rec.header.plan.clone(), history_config };
    engine.start_fork(plan, fork, opts).await
}
