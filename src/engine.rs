//! The engine: builds the actors for one run, collects what they emit, and assembles results.
//!
//! Mirrors the library API of the engine troupe-sim replaces:
//! [`SimulationEngine::new`], [`SimulationEngine::run_simulation`] and
//! [`crate::results::save_results`]. [`SimulationEngine::start`] gives a [`RunHandle`] for
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
//! troupe_sim::results::save_results(&results, std::path::Path::new("outputs/demo"))?;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::actors::metrics::{MetricsActor, MetricsMsg, MetricsSnapshot};
use crate::actors::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};
use crate::actors::world::{Switch, WorldActor, WorldArgs, WorldMsg};
use crate::config::{PromptStyle, SimulationConfig};
use crate::cost::Pricing;
use crate::estimate::{Estimate, EstimateAccuracy};
use crate::journal::{FILE_NAME as JOURNAL_FILE, Header, JournalWriter};
use crate::llm::cache::{CacheMode, CachingProvider, ResponseCache};
use crate::llm::{Provider, provider_from_config};
use crate::persona::prompt::WorldFacts;
use crate::persona::{PersonaDatabase, PersonaSpec};
use crate::results::{AgentInfo, ResultsConfig, ResultsMetrics, SimulationResults, run_id, save_results};
use crate::scenario::{Hearing, ResolvedAction, ResolvedIntervention, ResolvedScenario};
use crate::transcript::{FinalState, RunEvent, StopReason, TranscriptEntry};

/// Errors that stop a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Personas could not be loaded or are invalid.
    #[error(transparent)]
    Persona(#[from] crate::persona::PersonaError),
    /// A persona id is not in the database.
    #[error("unknown persona id `{id}`{hint}")]
    UnknownPersona {
        /// The id.
        id: String,
        /// A suggestion.
        hint: String,
    },
    /// The pricing table is unreadable.
    #[error(transparent)]
    Pricing(#[from] crate::cost::PricingError),
    /// A journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// `resume` on a run that already finished.
    #[error("{} already ran to its last turn; nothing to resume (use `troupe run --replay` to re-run it)", .0.display())]
    AlreadyComplete(PathBuf),
    /// A fork that cannot be made.
    #[error("cannot fork: {0}")]
    Fork(String),
    /// Nothing to simulate.
    #[error("no persona takes part; name at least one (--personas a,b or a scenario)")]
    NoPersonas,
    /// The output folder cannot be used.
    #[error("cannot write the run's output in {}: {source}; check output.output_dir", path.display())]
    Output {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Saving failed.
    #[error(transparent)]
    Save(#[from] crate::results::SaveError),
    /// An actor could not start.
    #[error("the runtime failed to start: {0}")]
    Spawn(String),
    /// The configured provider cannot be set up.
    #[error("cannot set up the language-model provider: {0}")]
    Provider(#[from] crate::llm::LlmError),
    /// Another process owns the run folder.
    #[error(transparent)]
    Busy(#[from] crate::fsutil::LockError),
    /// A resume would send new calls elsewhere than the recorded ones.
    #[error(
        "{0}; check llm.provider and llm.base_url (or --set them), or pass --allow-provider-change to continue with the current configuration"
    )]
    ProviderChanged(String),
}

static INSTANCE: AtomicU64 = AtomicU64::new(1);

/// What to simulate: personas, world and schedule (config comes from the engine).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunPlan {
    /// Scenario name ("ad-hoc" for runs without a scenario file).
    pub name: String,
    /// Variant applied.
    pub variant: Option<String>,
    /// World name.
    pub world_name: String,
    /// Situation text.
    pub context: String,
    /// Discussion topic.
    pub topic: String,
    /// Opening message (the topic when empty).
    pub opening: String,
    /// Personas at the start.
    pub personas: Vec<PersonaSpec>,
    /// Who hears whom.
    pub hearing: Hearing,
    /// Interventions.
    pub interventions: Vec<ResolvedIntervention>,
    /// How many personas act each turn (everyone when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<crate::scenario::Activation>,
    /// When this plan forks a recorded run: the recorded history it replays first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<Box<Fork>>,
}

impl RunPlan {
    /// Everyone who may speak in the run: the personas at the start, those the interventions
    /// add, and, for a fork, those of the recorded history.
    pub fn all_personas(&self) -> Vec<PersonaSpec> {
        let mut out: Vec<PersonaSpec> = Vec::new();
        let mut add = |p: &PersonaSpec| {
            if !out.iter().any(|q| q.id == p.id) {
                out.push(p.clone());
            }
        };
        let plans = std::iter::once(self).chain(self.fork.as_ref().map(|f| &f.history));
        for plan in plans {
            plan.personas.iter().for_each(&mut add);
            for iv in &plan.interventions {
                if let ResolvedAction::AddPersona(p) = &iv.action {
                    add(p);
                }
            }
        }
        out
    }
}

/// A fork point: the recorded plan and config replayed up to `at_turn`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fork {
    /// The last turn taken from the recording.
    pub at_turn: u32,
    /// The recorded plan.
    pub history: RunPlan,
    /// The recorded config (its sampling reproduces the recorded requests).
    pub history_config: SimulationConfig,
}

impl RunPlan {
    /// A plan from a resolved scenario; the topic is the config's `simulation.topic`.
    pub fn from_scenario(r: ResolvedScenario, topic: &str) -> Self {
        RunPlan {
            name: r.name,
            variant: r.variant,
            world_name: r.world_name,
            context: r.context,
            topic: topic.to_string(),
            opening: r.opening.unwrap_or_default(),
            personas: r.personas,
            hearing: r.hearing,
            interventions: r.interventions,
            activation: r.activation,
            fork: None,
        }
    }

    /// A plan for the scenario-less mode: a topic and some personas, everyone hearing everyone.
    pub fn ad_hoc(topic: &str, personas: Vec<PersonaSpec>) -> Self {
        RunPlan {
            name: "ad-hoc".into(),
            variant: None,
            world_name: String::new(),
            context: String::new(),
            topic: topic.to_string(),
            opening: String::new(),
            personas,
            hearing: Hearing::Everyone,
            interventions: Vec::new(),
            activation: None,
            fork: None,
        }
    }
}

/// Options for one run.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Save the run in `<save_under>/<run-id>/`: `transcript.jsonl` grows as messages arrive,
    /// `results.json` and `metrics.json` are written at the end (also when the run fails or is
    /// cancelled), then `analysis.json` and `charts/*.svg` when `output.auto_analysis` (and
    /// `output.save_visualizations`) are on. `None`: keep everything in memory. The CLI uses `output_dir/conversations`.
    pub save_under: Option<PathBuf>,
    /// Also send every event here (for a terminal or web view). Never dropped.
    pub events: Option<mpsc::UnboundedSender<RunEvent>>,
    /// Use this run id (and so this folder) instead of a new one: how `resume` continues a
    /// run in place.
    pub run_id: Option<String>,
    /// The run folder's lock, when the caller already holds it (`resume` takes it before it
    /// reads the journal). Otherwise a saved run takes it itself; either way it is held until
    /// the run's files are written.
    pub lock: Option<crate::fsutil::DirLock>,
}

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

/// A run in progress.
#[derive(Debug)]
pub struct RunHandle {
    /// The run's id.
    pub run_id: String,
    /// Where its files go, when saved.
    pub run_dir: Option<PathBuf>,
    instance: u64,
    world: ActorRef<WorldMsg>,
    metrics: ActorRef<MetricsMsg>,
    join: JoinHandle<Result<SimulationResults, EngineError>>,
}

impl RunHandle {
    /// Asks the run to stop; it saves what it has and ends as cancelled.
    pub fn stop(&self) {
        let _ = self.world.cast(WorldMsg::Stop(StopReason::Cancelled));
    }

    /// Something that can stop the run from elsewhere (a signal handler, say) while another
    /// task waits for it.
    pub fn stopper(&self) -> RunStopper {
        RunStopper { world: self.world.clone() }
    }

    /// The actor of persona `idx` (in scenario order), while the run lives.
    pub fn persona(&self, idx: usize) -> Option<ActorRef<crate::actors::persona::PersonaMsg>> {
        ractor::registry::where_is(self.persona_name(idx)).map(Into::into)
    }

    /// The registered name persona `idx`'s actor has when it runs (actors start when their persona
    /// first acts or hears something, so `persona` may be `None` before).
    pub fn persona_name(&self, idx: usize) -> String {
        crate::actors::supervisor::persona_name(self.instance, idx)
    }

    /// A persona's memory log as the world recorded it (what a restart rebuilds from).
    pub async fn persona_log(&self, idx: usize) -> Option<Vec<crate::memory::MemoryEvent>> {
        match self.world.call(|r| WorldMsg::GetLog(idx, r), Some(std::time::Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(v)) => Some(v),
            _ => None,
        }
    }

    /// Live metrics, or `None` once the run is over.
    pub async fn metrics(&self) -> Option<MetricsSnapshot> {
        snapshot(&self.metrics).await
    }

    /// Waits for the run to end and returns its results.
    pub async fn wait(self) -> Result<SimulationResults, EngineError> {
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(EngineError::Spawn(format!("the run's task failed: {e}"))),
        }
    }
}

/// Stops one run (see [`RunHandle::stopper`]).
#[derive(Debug, Clone)]
pub struct RunStopper {
    world: ActorRef<WorldMsg>,
}

impl RunStopper {
    /// Asks the run to stop; it saves what it has and ends as cancelled.
    pub fn stop(&self) {
        let _ = self.world.cast(WorldMsg::Stop(StopReason::Cancelled));
    }
}

async fn snapshot(m: &ActorRef<MetricsMsg>) -> Option<MetricsSnapshot> {
    match m.call(MetricsMsg::Snapshot, Some(std::time::Duration::from_secs(5))).await {
        Ok(ractor::rpc::CallResult::Success(s)) => Some(s),
        _ => None,
    }
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

    /// The old engine's single mode: `seed` is the topic, `personas` are ids from
    /// `simulation.personas_file`, `custom_personas` join them. Runs `turns` turns, everyone
    /// hearing everyone, and returns the results (nothing is written).
    pub async fn run_simulation(
        &self,
        seed: &str,
        turns: u32,
        personas: &[&str],
        custom_personas: Vec<PersonaSpec>,
    ) -> Result<SimulationResults, EngineError> {
        let mut chosen = Vec::new();
        if !personas.is_empty() {
            let db = PersonaDatabase::load(&self.config.simulation.personas_file)?;
            for id in personas {
                if db.get(id).is_none() {
                    let ids: Vec<&str> = db.personas.iter().map(|p| p.id.as_str()).collect();
                    let hint = crate::scenario::did_you_mean(id, &ids)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_else(|| "; `troupe personas list` shows the ids".into());
                    return Err(EngineError::UnknownPersona { id: id.to_string(), hint });
                }
            }
            let ids: Vec<String> = personas.iter().map(|s| s.to_string()).collect();
            match crate::persona::validate::select_personas(&db, &ids) {
                Ok((found, warnings)) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    chosen = found;
                }
                Err(errors) => {
                    let first = &errors[0];
                    return Err(EngineError::Persona(crate::persona::PersonaError::Invalid {
                        field: format!("{}.{}", first.persona, first.field),
                        message: first.to_string(),
                    }));
                }
            }
        }
        chosen.extend(custom_personas);
        let mut engine = self.clone();
        let mut cfg = (*self.config).clone();
        cfg.simulation.max_turns = turns;
        cfg.simulation.topic = seed.to_string();
        engine.config = Arc::new(cfg);
        engine.start(RunPlan::ad_hoc(seed, chosen), RunOptions::default()).await?.wait().await
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

    /// Starts a plan and returns a handle for progress, streaming and cancellation.
    pub async fn start(&self, plan: RunPlan, opts: RunOptions) -> Result<RunHandle, EngineError> {
        if plan.personas.is_empty() {
            return Err(EngineError::NoPersonas);
        }
        // The last line of defence for plans built by hand: a persona with an error finding
        // (a temperature of 3.5, a 50 MB field) never reaches a provider.
        for p in &plan.personas {
            if let Some(iss) = crate::persona::validate::check_persona(p)
                .into_iter()
                .find(|i| i.severity == crate::persona::Severity::Error)
            {
                return Err(EngineError::Persona(crate::persona::PersonaError::Invalid {
                    field: format!("{}.{}", p.id, iss.field),
                    message: format!("{}; {}", iss.message, iss.hint),
                }));
            }
        }
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let started_at = chrono::Utc::now();
        let rid = opts.run_id.clone().unwrap_or_else(|| {
            run_id(
                &plan.name,
                started_at,
                crate::rng::derive(
                    self.config.simulation.run_seed,
                    crate::rng::Stream::RunId { instance, micros: started_at.timestamp_micros() as u64 },
                ),
            )
        });
        if !crate::resume::valid_run_id(&rid) {
            return Err(EngineError::Output {
                path: PathBuf::from(&rid),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a run id: use 1 to 128 letters, digits, `_` or `-`",
                ),
            });
        }
        let run_dir = opts.save_under.as_ref().map(|p| p.join(&rid));
        let mut transcript_file = None;
        let mut journal = None;
        let mut lock = opts.lock;
        if let Some(dir) = &run_dir {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::Output { path: dir.clone(), source })?;
            if lock.is_none() {
                lock = Some(crate::fsutil::DirLock::acquire(dir, "troupe run")?);
            }
            let path = dir.join("transcript.jsonl");
            let f = std::fs::File::create(&path).map_err(|source| EngineError::Output { path, source })?;
            transcript_file = Some(f);
            let mut config = (*self.config).clone();
            config.llm.api_key = None;
            let header = Header {
                format: crate::journal::FORMAT,
                troupe_version: env!("CARGO_PKG_VERSION").to_string(),
                run_id: rid.clone(),
                provider: self.provider.name().to_string(),
                endpoints: self.provider.endpoints(),
                config,
                plan: plan.clone(),
                started_at,
            };
            let w = JournalWriter::create(&dir.join(JOURNAL_FILE), &header, self.config.output.journal_fsync)
                .map_err(|e| EngineError::Output { path: dir.clone(), source: std::io::Error::other(e.to_string()) })?;
            journal = Some(w);
        }
        let (tx, rx) = mpsc::unbounded_channel();

        let span = tracing::info_span!("simulation", run = %rid, scenario = %plan.name, personas = plan.personas.len());
        let (metrics, _) = Actor::spawn(None, MetricsActor, ()).await.map_err(|e| EngineError::Spawn(e.to_string()))?;
        let supervisor = match Actor::spawn(
            None,
            SupervisorActor,
            SupervisorArgs {
                provider: self.provider.clone(),
                config: self.config.clone(),
                metrics: metrics.clone(),
                instance,
                // Synthetic text costs nothing; the estimate still shows what the model would cost.
                pricing: if self.provider.synthetic() { Arc::new(Pricing::default()) } else { self.pricing.clone() },
                events: Some(tx.clone()),
            },
        )
        .await
        {
            Ok((s, _)) => s,
            Err(e) => {
                metrics.stop(None);
                return Err(EngineError::Spawn(e.to_string()));
            }
        };
        let (done_tx, done_rx) = oneshot::channel();
        let agents: Vec<AgentInfo> = plan
            .personas
            .iter()
            .map(|p| AgentInfo { name: p.name.clone(), role: p.role.clone(), id: p.id.clone() })
            .collect();
        // A fork starts from its recorded history and switches to the plan after `at_turn`.
        let (first, sampling_config, switch) = match &plan.fork {
            Some(f) => {
                let mut next = plan.clone();
                next.fork = None;
                let switch = Switch { at_turn: f.at_turn, plan: next, config: self.config.clone() };
                (&f.history, Arc::new(f.history_config.clone()), Some(switch))
            }
            None => (&plan, self.config.clone(), None),
        };
        let world_args = WorldArgs {
            personas: first.personas.clone(),
            facts: Arc::new(WorldFacts { world: first.world_name.as_str().into(), topic: first.topic.as_str().into() }),
            context: first.context.clone(),
            opening: first.opening.clone(),
            hearing: first.hearing.clone(),
            interventions: first.interventions.clone(),
            sampling_config,
            switch,
            span: span.clone(),
            provider: self.provider.clone(),
            activation: first.activation.clone(),
            config: self.config.clone(),
            supervisor: supervisor.clone(),
            metrics: metrics.clone(),
            events: tx,
            done: done_tx,
            instance,
        };
        let world = match Actor::spawn(None, WorldActor, world_args).instrument(span.clone()).await {
            Ok((w, _)) => w,
            Err(e) => {
                supervisor.stop(None);
                metrics.stop(None);
                return Err(EngineError::Spawn(e.to_string()));
            }
        };
        span.in_scope(|| tracing::info!("simulation started"));
        span.in_scope(|| {
            let _ = world.cast(WorldMsg::Start);
        });

        let estimate = self.estimate(&plan);
        let ctx = Collect {
            _lock: lock,
            journal,
            cache: self.cache.clone(),
            estimate,
            config: self.config.clone(),
            provider_name: self.provider.name().to_string(),
            synthetic: self.provider.synthetic(),
            notice: self.notice.clone(),
            judge: self.config.validation.in_character.then(|| (self.provider.clone(), (*self.pricing).clone())),
            plan,
            agents,
            run_id: rid.clone(),
            run_dir: run_dir.clone(),
            started_at,
            t0: Instant::now(),
        };
        let join = tokio::spawn(
            collect(ctx, rx, done_rx, transcript_file, opts.events, world.clone(), supervisor, metrics.clone())
                .instrument(span),
        );
        Ok(RunHandle { run_id: rid, run_dir, instance, world, metrics, join })
    }
}

struct Collect {
    /// Held until the run's files are written.
    _lock: Option<crate::fsutil::DirLock>,
    journal: Option<JournalWriter>,
    cache: Option<Arc<ResponseCache>>,
    estimate: Estimate,
    config: Arc<SimulationConfig>,
    provider_name: String,
    synthetic: bool,
    notice: Option<String>,
    /// The provider and prices for the `in_character` analysis, when it is on.
    judge: Option<(Arc<dyn Provider>, Pricing)>,
    plan: RunPlan,
    agents: Vec<AgentInfo>,
    run_id: String,
    run_dir: Option<PathBuf>,
    started_at: chrono::DateTime<chrono::Utc>,
    t0: Instant,
}

#[allow(clippy::too_many_arguments)]
async fn collect(
    mut ctx: Collect,
    mut rx: mpsc::UnboundedReceiver<RunEvent>,
    done_rx: oneshot::Receiver<FinalState>,
    mut file: Option<std::fs::File>,
    forward: Option<mpsc::UnboundedSender<RunEvent>>,
    world: ActorRef<WorldMsg>,
    supervisor: ActorRef<SupervisorMsg>,
    metrics: ActorRef<MetricsMsg>,
) -> Result<SimulationResults, EngineError> {
    let mut transcript: Vec<TranscriptEntry> = Vec::new();
    let mut results_extra = Extra::default();
    let mut final_state = None;
    let mut write_error = None;
    // Set when the journal cannot be written: from then on nothing counts (a resume would pay
    // for it again), so events are drained but neither shown, kept nor forwarded.
    let mut journal_failed: Option<String> = None;
    let mut journaled_turns = 0;
    while let Some(mut ev) = rx.recv().await {
        if journal_failed.is_some() {
            if matches!(ev, RunEvent::Finished(_)) {
                break;
            }
            continue;
        }
        if let (RunEvent::Exchange(x), Some(cache)) = (&mut ev, &ctx.cache) {
            x.replayed = u64::from_str_radix(&x.key, 16).is_ok_and(|k| cache.was_served(k));
        }
        if let Some(j) = ctx.journal.as_mut()
            && let Err(e) = j.append(&ev)
        {
            // Nothing already journaled is lost; the run stops at once rather than go on
            // unrecorded, and what it did after the failure is not kept.
            let why = format!("the journal could not be written: {e}");
            write_error.get_or_insert_with(|| e.to_string());
            ctx.journal = None;
            let _ = world.cast(WorldMsg::Stop(StopReason::Failed(why.clone())));
            journal_failed = Some(why);
            if matches!(ev, RunEvent::Finished(_)) {
                break;
            }
            continue;
        }
        if let RunEvent::TurnEnded { turn } = ev {
            journaled_turns = turn;
        }
        match &ev {
            RunEvent::Message(e) => {
                if let Some(f) = file.as_mut() {
                    // One write per line, straight to the file: a crash loses nothing already said.
                    let mut line = serde_json::to_vec(e).unwrap_or_default();
                    line.push(b'\n');
                    if let Err(err) = f.write_all(&line) {
                        write_error.get_or_insert_with(|| err.to_string());
                        file = None;
                        let _ = world
                            .cast(WorldMsg::Stop(StopReason::Failed("could not append to transcript.jsonl".into())));
                    }
                }
                transcript.push(e.clone());
            }
            RunEvent::Skipped(s) => results_extra.skipped.push(s.clone()),
            RunEvent::Thought { turn, persona, text } => {
                results_extra.thoughts.push((*turn, persona.clone(), text.clone()))
            }
            RunEvent::Passed { turn, persona } => results_extra.passes.push((*turn, persona.clone())),
            RunEvent::Intervention { turn, description } => {
                results_extra.interventions.push((*turn, description.clone()))
            }
            RunEvent::Finished(s) => final_state = Some(s.clone()),
            RunEvent::PromptTrimmed(t) => results_extra.prompt_trimmed.push(t.clone()),
            RunEvent::TurnStarted { .. }
            | RunEvent::TurnEnded { .. }
            | RunEvent::Exchange(_)
            | RunEvent::Retry { .. }
            | RunEvent::Fallback { .. } => {}
        }
        if let Some(fw) = &forward {
            let _ = fw.send(ev);
        }
        if final_state.is_some() {
            break;
        }
    }
    let final_state = match (journal_failed, final_state) {
        (Some(why), _) => {
            let _ = done_rx.await;
            FinalState { success: false, completed_turns: journaled_turns, reason: StopReason::Failed(why) }
        }
        (None, Some(s)) => s,
        (None, None) => done_rx.await.unwrap_or(FinalState {
            success: false,
            completed_turns: 0,
            reason: StopReason::Failed("the world actor stopped without a final state".into()),
        }),
    };
    let duration = ctx.t0.elapsed().as_secs_f64();
    if final_state.reason != StopReason::Completed {
        drain_in_flight(&mut ctx, &mut rx, &metrics).await;
    }
    let snap = snapshot(&metrics).await.unwrap_or_default();
    world.stop(None);
    supervisor.stop(None);
    metrics.stop(None);
    let output = ctx.config.output.clone();
    let in_character = ctx.judge.take().map(|(provider, pricing)| (provider, pricing, ctx.plan.all_personas()));
    let config = ctx.config.clone();
    let mut results = build_results(ctx, transcript, results_extra, final_state, snap, duration, write_error);
    if let Some(dir) = results.run_dir.clone() {
        if let Err(e) = save_results(&results, &dir) {
            // An earlier failure (a full disk, say) explains this one: report both.
            let Some(first) = results.error.take() else { return Err(e.into()) };
            results.error = Some(format!("{first}; then {e}"));
            return Ok(results);
        }
        if output.auto_analysis {
            match crate::analysis::save_analysis(&results, &dir, output.save_visualizations) {
                // The run itself is saved; its analysis is not, and the caller must say so.
                Err(e) => {
                    results.analysis_error = Some(format!(
                        "the run was saved but its analysis was not: {e}; run `troupe analyze` on the folder"
                    ))
                }
                Ok((mut analysis, _)) => {
                    if let Some((provider, pricing, personas)) = in_character {
                        let caller = crate::validation::Caller::new(provider, &config, pricing)
                            .with_prior_spend(results.metrics.cost_usd);
                        let model = config.validation.judge_model_or(&results.config.model).to_string();
                        let ic =
                            crate::validation::in_character::judge_run(&caller, &config, &personas, &results, &model)
                                .await;
                        tracing::info!(mean_score = ?ic.mean_score, calls = ic.calls, "in-character analysis done");
                        analysis.in_character = Some(ic);
                        if let Err(e) = crate::analysis::write_analysis(&analysis, &results, &dir, false) {
                            results.analysis_error = Some(format!(
                                "the run was saved but its in-character analysis was not: {e}; run `troupe analyze --in-character` on the folder"
                            ));
                        }
                    }
                }
            }
        }
    }
    tracing::info!(messages = results.transcript.len(), success = results.success, "simulation finished");
    Ok(results)
}

#[derive(Default)]
struct Extra {
    skipped: Vec<crate::transcript::SkipRecord>,
    thoughts: Vec<(u32, String, String)>,
    passes: Vec<(u32, String)>,
    interventions: Vec<(u32, String)>,
    prompt_trimmed: Vec<crate::transcript::PromptTrim>,
}

/// A run stopped early (Ctrl-C, timeout, failure) may still have calls in flight that will be
/// paid for. Waits a little for them and journals their answers, so a resume reuses them.
async fn drain_in_flight(
    ctx: &mut Collect,
    rx: &mut mpsc::UnboundedReceiver<RunEvent>,
    metrics: &ActorRef<MetricsMsg>,
) {
    let grace = crate::config::limits::secs(ctx.config.performance.persona_timeout.min(10.0));
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match snapshot(metrics).await {
            Some(m) if m.in_flight > 0 => {}
            _ => break,
        }
        if let Ok(Some(ev @ RunEvent::Exchange(_))) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await
            && let Some(j) = ctx.journal.as_mut()
        {
            let _ = j.append(&ev);
        }
    }
    if let Some(j) = ctx.journal.as_mut() {
        let _ = j.sync();
    }
}

fn build_results(
    ctx: Collect,
    transcript: Vec<TranscriptEntry>,
    extra: Extra,
    fs: FinalState,
    snap: MetricsSnapshot,
    duration: f64,
    write_error: Option<String>,
) -> SimulationResults {
    let c = &ctx.config;
    let models: BTreeSet<String> = transcript.iter().filter_map(|e| e.model.clone()).collect();
    let error = match (&fs.reason, write_error) {
        (_, Some(w)) => Some(format!("could not write the run's files: {w}")),
        (StopReason::Failed(m), None) => Some(m.clone()),
        (StopReason::Timeout, None) => Some(format!("the run hit timeout_seconds = {}", c.performance.timeout_seconds)),
        (StopReason::Cancelled, None) => Some("the run was cancelled".into()),
        (StopReason::CostLimit(m), None) => Some(m.clone()),
        (StopReason::Completed, None) => None,
    };
    SimulationResults {
        success: fs.success && error.is_none(),
        metrics: ResultsMetrics {
            duration,
            total_messages: transcript.len() as u64,
            total_tokens: snap.total_tokens,
            api_calls: snap.api_calls,
            errors: snap.errors,
            average_response_time: snap.persona_response.mean_ms / 1000.0,
            prompt_tokens: snap.prompt_tokens,
            completion_tokens: snap.completion_tokens,
            retries: snap.retries,
            timeouts: snap.timeouts,
            fallbacks: snap.fallbacks,
            skipped_turns: snap.skipped_turns,
            restarts: snap.restarts,
            throughput_per_min: if duration > 0.0 { transcript.len() as f64 * 60.0 / duration } else { 0.0 },
            calls_per_message: snap.calls_per_message,
            error_rate: snap.error_rate,
            cost_usd: snap.cost_usd,
            tokens_estimated: snap.tokens_estimated,
            cost_usd_estimated: snap.cost_usd_estimated,
            tokens_estimate_note: snap.tokens_estimate_note.clone(),
            latency_p50: snap.llm_latency.p50_ms / 1000.0,
            latency_p99: snap.llm_latency.p99_ms / 1000.0,
        },
        config: ResultsConfig {
            model: c.llm.model.clone(),
            prompt_style: c.llm.prompt_style,
            temperature: c.llm.temperature,
            turns: c.simulation.max_turns,
            policy: c.simulation.policy(),
            run_seed: c.simulation.run_seed,
            provider: ctx.provider_name.clone(),
            fallback_model: c.llm.fallback_model.clone(),
            max_workers: c.performance.max_workers,
            rate_limit_delay: c.performance.rate_limit_delay,
            persona_timeout: c.performance.persona_timeout,
            max_retries: c.performance.max_retries,
            graceful_degradation: c.performance.graceful_degradation,
        },
        transcript,
        agents: ctx.agents,
        run_id: ctx.run_id,
        scenario: ctx.plan.name,
        variant: ctx.plan.variant,
        topic: ctx.plan.topic,
        provider: ctx.provider_name,
        synthetic: ctx.synthetic,
        models_used: models.into_iter().collect(),
        notice: ctx
            .synthetic
            .then(|| "The text of this run is synthetic: it was written by troupe-sim's simulated provider, not by a language model.".to_string())
            .or(ctx.notice),
        completed_turns: fs.completed_turns,
        stop_reason: fs.reason,
        skipped: extra.skipped,
        thoughts: extra.thoughts,
        passes: extra.passes,
        interventions: extra.interventions,
        prompt_trimmed: extra.prompt_trimmed,
        started_at: ctx.started_at,
        finished_at: chrono::Utc::now(),
        error,
        estimate_accuracy: EstimateAccuracy::of(&ctx.estimate, snap.api_calls, snap.total_tokens, snap.cost_usd),
        estimate: ctx.estimate,
        full_metrics: snap,
        run_dir: ctx.run_dir,
        analysis_error: None,
    }
}

/// The folder runs are saved under: `output_dir/conversations`.
pub fn conversations_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("conversations")
}
