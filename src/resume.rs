//! Resume, replay and fork: running a recorded simulation again from its journal.
//!
//! - **resume** continues an interrupted run in its own folder: every exchange the journal holds
//!   answers its request again (no provider call), which rebuilds the world and the personas'
//!   memories exactly; requests past the interruption go to the provider.
//! - **replay** re-runs a recorded run offline at full speed: every answer must come from the
//!   journal, and a request without one stops the run naming the persona and turn.
//! - **fork** replays a run's first N turns and continues with a variant: the same history, a
//!   different future.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{ProviderKind, SimulationConfig};
use crate::engine::{EngineError, RunOptions, RunPlan, SimulationEngine};
use crate::journal::{self, Exchange, Header, JournalError};
use crate::llm::cache::{CacheMode, ResponseCache};
use crate::transcript::StopReason;

/// What a run folder's journals hold.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The header of the first segment (the run as it was started).
    pub header: Header,
    /// Every exchange of every segment.
    pub exchanges: Vec<Exchange>,
    /// The journal files read, oldest first.
    pub segments: Vec<PathBuf>,
    /// How the latest segment ended, if it did.
    pub end: Option<crate::transcript::FinalState>,
    /// Turns completed in the latest segment.
    pub completed_turns: u32,
    /// True when a torn last line was ignored somewhere.
    pub torn: bool,
}

impl Recording {
    /// Reads every journal segment of `run_dir`.
    pub fn load(run_dir: &Path) -> Result<Self, JournalError> {
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
            torn |= j.torn_tail;
            exchanges.extend(j.exchanges().cloned());
            end = j.end().cloned();
            completed_turns = j.completed_turns();
            header.get_or_insert(j.header);
        }
        let header = header.expect("at least one segment was read");
        Ok(Recording { header, exchanges, segments, end, completed_turns, torn })
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
}

/// An engine for a recording's config, with the recorded answers in front of the provider.
/// `auto` is pinned to the provider that made the recording, so new calls go where the recorded
/// ones went.
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

/// Continues an interrupted run in its folder. Earlier journal segments are kept
/// (`journal.N.jsonl`), so an interrupted resume loses nothing either.
pub async fn resume(run_dir: &Path, opts: RunOptions) -> Result<crate::engine::RunHandle, EngineError> {
    let rec = Recording::load(run_dir)?;
    // Killed after the last turn but before results.json was written, a run still resumes:
    // the replay rebuilds its results without calling the provider.
    if rec.is_complete() && run_dir.join("results.json").exists() {
        return Err(EngineError::AlreadyComplete(run_dir.to_path_buf()));
    }
    let engine = engine_for(&rec, rec.header.config.clone(), CacheMode::Auto)?;
    journal::rotate(run_dir)?;
    let parent = run_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let opts = RunOptions { save_under: Some(parent), run_id: Some(rec.header.run_id.clone()), ..opts };
    engine.start(rec.header.plan.clone(), opts).await
}

/// Re-runs a recorded run from its journal without calling any provider. The run stops at the
/// first request the recording cannot answer.
pub async fn replay(run_dir: &Path, opts: RunOptions) -> Result<crate::engine::RunHandle, EngineError> {
    let rec = Recording::load(run_dir)?;
    let mut config = rec.header.config.clone();
    // A miss must stop the run, not be skipped, and nothing waits for rate limits.
    config.performance.graceful_degradation = false;
    config.performance.rate_limit_delay = 0.0;
    let engine = engine_for(&rec, config, CacheMode::Replay)?;
    let mut plan: RunPlan = rec.header.plan.clone();
    plan.name = format!("{} replay", plan.name);
    engine.start(plan, opts).await
}

/// Forks a recorded run: its first `at_turn` turns are replayed from the journal (same history),
/// then the run continues under `plan` and `config` (a variant, say). Requests the recording
/// cannot answer go to the provider.
pub async fn fork(
    run_dir: &Path,
    at_turn: u32,
    plan: RunPlan,
    config: SimulationConfig,
    opts: RunOptions,
) -> Result<crate::engine::RunHandle, EngineError> {
    let rec = Recording::load(run_dir)?;
    if at_turn > rec.completed_turns.max(rec.end.as_ref().map_or(0, |e| e.completed_turns)) {
        return Err(EngineError::Fork(format!(
            "the recording in {} completed {} turn(s); fork at a turn up to that",
            run_dir.display(),
            rec.completed_turns
        )));
    }
    let engine = engine_for(&rec, config, CacheMode::Auto)?;
    let fork =
        crate::engine::Fork { at_turn, history: rec.header.plan.clone(), history_config: rec.header.config.clone() };
    engine.start_fork(plan, fork, opts).await
}
