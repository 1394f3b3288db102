//! The engine: builds the actors for one run, collects what they emit, and assembles results.
//! It does not analyse runs: the faces (CLI, web, experiments) call [`crate::review`] after.
//!
//! - [`error`]: why a run could not start or finish.
//! - [`handle`]: run options and the handle of a started run.
//! - `start`: wiring: checks the plan, opens the run folder and journal, spawns the actors.
//! - `collect`: receives the run's events, journals them, appends the transcript file.
//! - `assemble`: builds [`SimulationResults`] from what was collected.
//! - [`legacy`]: the old engine's `run_simulation`.
//! - [`resume`]: resume, replay and forks from a run's journal.
//!
//! Mirrors the library API of the engine troupe-sim replaces:
//! [`SimulationEngine::new`], [`SimulationEngine::run_simulation`] and
//! [`crate::record::results::save_results`]. [`SimulationEngine::start`] gives a [`RunHandle`] for
//! live progress, streaming and cancellation.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use troupe_sim::config::SimulationConfig;
//! use troupe_sim::engine::SimulationEngine;
//!
//! let mut config = SimulationConfig::default();
//! config.performance.rate_limit_delay = 0.0;
//! let engine = SimulationEngine::new(config)?;
//! let results = engine
//!     .run_simulation("Evaluate AI-powered content moderation", 3, &["sarah_chen", "marcus_rivera"], vec![])
//!     .await?;
//! troupe_sim::record::results::save_results(&results, std::path::Path::new("outputs/demo"))?;
//! # Ok(()) }
//! ```

mod assemble;
mod collect;
pub mod error;
pub mod handle;
pub mod legacy;
pub mod resume;
mod start;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::EngineError;
pub use handle::{RunHandle, RunOptions, RunStopper};

use crate::config::{CacheMode, PromptStyle, SimulationConfig};
use crate::cost::Pricing;
use crate::estimate::Estimate;
use crate::llm::cache::{CachingProvider, ResponseCache};
use crate::llm::{Provider, provider_from_config};
use crate::record::results::SimulationResults;
pub use crate::scenario::{Fork, RunPlan};

/// Runs simulations with one configuration and provider.
#[derive(Debug, Clone)]
pub struct SimulationEngine {
    config: Arc<SimulationConfig>,
    provider: Arc<dyn Provider>,
    notice: Option<String>,
    pricing: Arc<Pricing>,
    /// Recorded answers in front of the provider (resume, replay, forks, `llm.cache`).
    cache: Option<Arc<ResponseCache>>,
}

/// `llm.prompt_style = "auto"` made concrete for the provider that answers (plain for the
/// embedded local model), so the run's recorded config says what was sent.
fn resolve_prompt_style(mut config: SimulationConfig, provider: &str) -> SimulationConfig {
    if config.llm.prompt_style == PromptStyle::Auto {
        config.llm.prompt_style = if provider == "local" { PromptStyle::Plain } else { PromptStyle::Full };
    }
    config
}

impl SimulationEngine {
    /// An engine with the provider the config selects.
    pub fn new(config: SimulationConfig) -> Result<Self, EngineError> {
        let (provider, notice) = provider_from_config(&config)?;
        let pricing = Arc::new(Pricing::load(&config.llm.pricing_file)?);
        let config = Arc::new(resolve_prompt_style(config, provider.name()));
        Ok(SimulationEngine { config, provider, notice, pricing, cache: None })
    }

    /// An engine with a given provider (tests, custom providers).
    pub fn with_provider(config: SimulationConfig, provider: Arc<dyn Provider>) -> Self {
        let pricing = Pricing::load(&config.llm.pricing_file).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "pricing table unreadable; costs count as 0");
            Pricing::default()
        });
        let config = Arc::new(resolve_prompt_style(config, provider.name()));
        SimulationEngine { config, provider, notice: None, pricing: Arc::new(pricing), cache: None }
    }

    /// Puts a response cache in front of the provider. `name` is the provider name used in the
    /// cache keys (the recorded one when replaying); `Replay` mode never calls the provider.
    pub fn with_cache(mut self, cache: Arc<ResponseCache>, mode: CacheMode, name: &str) -> Self {
        let inner = (mode != CacheMode::Replay).then(|| self.provider.clone());
        self.provider = Arc::new(CachingProvider::new(inner, cache.clone(), mode, name));
        self.cache = Some(cache);
        self
    }

    /// The provider calls go to.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// The pricing table in use.
    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }

    /// Estimates a plan's calls, tokens and cost under this engine's config and prices.
    pub fn estimate(&self, plan: &RunPlan) -> Estimate {
        crate::estimate::estimate(plan, &self.config, &self.pricing)
    }

    /// The configuration in force.
    pub fn config(&self) -> &SimulationConfig {
        &self.config
    }

    /// A note for the user about the provider choice, if any.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Runs a plan to the end.
    pub async fn run(&self, plan: RunPlan, opts: RunOptions) -> Result<SimulationResults, EngineError> {
        self.start(plan, opts).await?.wait().await
    }

    /// Starts a fork: `fork.history` is replayed up to `fork.at_turn`, then `plan` takes over.
    pub async fn start_fork(&self, mut plan: RunPlan, fork: Fork, opts: RunOptions) -> Result<RunHandle, EngineError> {
        plan.name = format!("{} fork", plan.name);
        plan.fork = Some(Box::new(fork));
        self.start(plan, opts).await
    }
}

/// The folder runs are saved under: `output_dir/conversations`.
pub fn conversations_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("conversations")
}

/// The threads a run's async runtime should have: `performance.runtime_threads` when set, else
/// one when the text comes from a server or the local model (its own threads compute), and one
/// per core with the simulated provider. A run that waits on calls spends its CPU in short
/// bursts; with a second thread, nearly every message between actors wakes it (a futex call on
/// each side) for little parallel work: measured through the binary, one thread made a
/// 3,000-call run against a loopback server 0.75x the CPU and 0.82x the wall time.
pub fn runtime_threads(config: &SimulationConfig) -> usize {
    match config.performance.runtime_threads {
        0 => match crate::llm::choose_provider(config).kind {
            crate::config::ProviderKind::Simulated => std::thread::available_parallelism().map_or(1, |n| n.get()),
            _ => 1,
        },
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    #[test]
    fn a_run_that_waits_on_a_server_gets_one_thread() {
        let mut c = SimulationConfig::default();
        c.llm.provider = ProviderKind::OpenAi;
        assert_eq!(runtime_threads(&c), 1);
        c.llm.provider = ProviderKind::Local;
        assert_eq!(runtime_threads(&c), 1);
        c.llm.provider = ProviderKind::Simulated;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(runtime_threads(&c), cores);
        c.performance.runtime_threads = 3;
        assert_eq!(runtime_threads(&c), 3);
        c.llm.provider = ProviderKind::OpenAi;
        assert_eq!(runtime_threads(&c), 3);
    }
}
