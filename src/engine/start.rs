//! Wiring one run: check the plan, open the run folder (lock, transcript file, journal), spawn
//! the metrics, supervisor and world actors, and hand their events to `collect`.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use super::collect::{Collect, Links, collect};
use super::{EngineError, RunHandle, RunOptions, SimulationEngine};
use crate::actors::metrics::{MetricsActor, MetricsArgs, MetricsMsg};
use crate::actors::remote::ToHosts;
use crate::actors::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};
use crate::actors::world::{Switch, WorldActor, WorldArgs, WorldMsg};
use crate::cost::Pricing;
use crate::fsutil::DirLock;
use crate::prompt::WorldFacts;
use crate::record::journal::{FILE_NAME as JOURNAL_FILE, Header, JournalWriter};
use crate::record::results::{AgentInfo, run_id, valid_run_id};
use crate::record::transcript::{FinalState, RunEvent};
use crate::rng::Stream;
use crate::scenario::RunPlan;

/// Tells apart the actors of runs in one process (their registered names carry it).
static INSTANCE: AtomicU64 = AtomicU64::new(1);

/// What a saved run writes as it goes.
struct RunFiles {
    lock: Option<DirLock>,
    transcript: Option<File>,
    journal: Option<JournalWriter>,
}

/// How a run's actors are connected to what started them.
struct Wiring {
    /// Where the run's events go (the collector).
    events: mpsc::UnboundedSender<RunEvent>,
    /// The shards' carrier, for a sharded run.
    remote: Option<mpsc::UnboundedSender<ToHosts>>,
    /// Whether the supervisor reports each exchange.
    exchanges: bool,
    /// Whether the process ends with the run.
    process_ends: bool,
}

/// The three actors of a run.
struct Actors {
    metrics: ActorRef<MetricsMsg>,
    supervisor: ActorRef<SupervisorMsg>,
    world: ActorRef<WorldMsg>,
}

impl SimulationEngine {
    /// Starts a plan and returns a handle for progress, streaming and cancellation.
    pub async fn start(&self, plan: RunPlan, opts: RunOptions) -> Result<RunHandle, EngineError> {
        check_plan(&plan)?;
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let started_at = chrono::Utc::now();
        let rid = self.run_id_for(&plan, opts.run_id.clone(), instance, started_at)?;
        let run_dir = opts.save_under.as_ref().map(|p| p.join(&rid));
        let files = match &run_dir {
            Some(dir) => self.open_run_folder(dir, (opts.lock, opts.journal_tap), &rid, &plan, started_at)?,
            None => RunFiles { lock: opts.lock, transcript: None, journal: None },
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let span = tracing::info_span!("simulation", run = %rid, scenario = %plan.name, personas = plan.personas.len());
        let exchanges = files.journal.is_some() || (opts.events.is_some() && !opts.without_exchanges);
        let wiring = Wiring { events: tx, remote: opts.remote, exchanges, process_ends: opts.process_ends };
        let actors = self.spawn_actors(&plan, instance, wiring, done_tx, span.clone()).await?;
        span.in_scope(|| tracing::info!("simulation started"));
        span.in_scope(|| {
            let _ = actors.world.cast(WorldMsg::Start);
        });
        let agents = plan
            .personas
            .iter()
            .map(|p| AgentInfo { name: p.name.clone(), role: p.role.clone(), id: p.id.clone() })
            .collect();
        let ctx = Collect {
            _lock: files.lock,
            journal: files.journal,
            cache: self.cache.clone(),
            estimate: self.estimate(&plan),
            config: self.config.clone(),
            provider_name: self.provider.name().to_string(),
            synthetic: self.provider.synthetic(),
            notice: self.notice.clone(),
            plan,
            agents,
            run_id: rid.clone(),
            run_dir: run_dir.clone(),
            started_at,
            t0: Instant::now(),
        };
        let links = Links {
            done: done_rx,
            file: files.transcript,
            forward: opts.events,
            world: actors.world.clone(),
            supervisor: actors.supervisor,
            metrics: actors.metrics.clone(),
        };
        let join = tokio::spawn(collect(ctx, rx, links).instrument(span));
        let (world, metrics) = (actors.world, actors.metrics);
        Ok(RunHandle { run_id: rid, run_dir, instance, world, metrics, join, engine: self.clone() })
    }

    /// The run's id: the caller's (how `resume` continues a run in place) or a new one.
    fn run_id_for(
        &self,
        plan: &RunPlan,
        given: Option<String>,
        instance: u64,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, EngineError> {
        let rid = given.unwrap_or_else(|| {
            let stream = Stream::RunId { instance, micros: started_at.timestamp_micros() as u64 };
            run_id(&plan.name, started_at, crate::rng::derive(self.config.simulation.run_seed, stream))
        });
        if valid_run_id(&rid) {
            return Ok(rid);
        }
        Err(EngineError::Output {
            path: PathBuf::from(&rid),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a run id: use 1 to 128 letters, digits, `_` or `-`",
            ),
        })
    }

    /// Creates the run folder, takes its lock (unless the caller holds it), starts the
    /// transcript file and the journal, whose header records the config (without the key).
    fn open_run_folder(
        &self,
        dir: &PathBuf,
        (lock, tap): (Option<DirLock>, Option<crate::record::journal::JournalTap>),
        rid: &str,
        plan: &RunPlan,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<RunFiles, EngineError> {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Output { path: dir.clone(), source })?;
        let lock = match lock {
            Some(l) => l,
            None => DirLock::acquire(dir, "troupe run")?,
        };
        let path = dir.join(crate::record::results::TRANSCRIPT_FILE);
        let transcript = File::create(&path).map_err(|source| EngineError::Output { path, source })?;
        let mut config = (*self.config).clone();
        config.llm.api_key = None;
        let header = Header {
            format: crate::record::journal::FORMAT,
            troupe_version: env!("CARGO_PKG_VERSION").to_string(),
            run_id: rid.to_string(),
            provider: self.provider.name().to_string(),
            endpoints: self.provider.endpoints(),
            config,
            plan: plan.clone(),
            started_at,
        };
        let journal =
            JournalWriter::create_tapped(&dir.join(JOURNAL_FILE), &header, self.config.output.journal_fsync, tap)
                .map_err(|e| EngineError::Output { path: dir.clone(), source: std::io::Error::other(e.to_string()) })?;
        Ok(RunFiles { lock: Some(lock), transcript: Some(transcript), journal: Some(journal) })
    }

    /// Spawns the metrics actor, the supervisor, then the world; stops those already started
    /// when a later one fails.
    async fn spawn_actors(
        &self,
        plan: &RunPlan,
        instance: u64,
        Wiring { events, remote, exchanges, process_ends }: Wiring,
        done: oneshot::Sender<FinalState>,
        span: tracing::Span,
    ) -> Result<Actors, EngineError> {
        let spawn_err = |e: ractor::SpawnErr| EngineError::Spawn(e.to_string());
        let margs = MetricsArgs {
            provider: self.provider.name().to_string(),
            requests_per_minute: self.config.llm.requests_per_minute,
            tokens_per_minute: self.config.llm.tokens_per_minute,
            monitor: crate::actors::monitor::installed(),
        };
        let (metrics, _) = Actor::spawn(None, MetricsActor, margs).await.map_err(spawn_err)?;
        let args = SupervisorArgs {
            provider: self.provider.clone(),
            config: self.config.clone(),
            metrics: metrics.clone(),
            instance,
            // Synthetic text costs nothing; the estimate still shows what the model would cost.
            pricing: if self.provider.synthetic() { Arc::new(Pricing::default()) } else { self.pricing.clone() },
            events: Some(events.clone()),
            exchanges,
        };
        let supervisor = match Actor::spawn(None, SupervisorActor, args).await {
            Ok((s, _)) => s,
            Err(e) => {
                metrics.stop(None);
                return Err(spawn_err(e));
            }
        };
        let mut world_args = self.world_args(plan, instance, &supervisor, &metrics, events, done, span.clone());
        world_args.remote = remote;
        world_args.process_ends = process_ends;
        match Actor::spawn(None, WorldActor, world_args).instrument(span).await {
            Ok((world, _)) => Ok(Actors { metrics, supervisor, world }),
            Err(e) => {
                supervisor.stop(None);
                metrics.stop(None);
                Err(spawn_err(e))
            }
        }
    }

    /// The world's start: the plan, or for a fork its recorded history, switching to the plan
    /// after `at_turn`.
    #[allow(clippy::too_many_arguments)]
    fn world_args(
        &self,
        plan: &RunPlan,
        instance: u64,
        supervisor: &ActorRef<SupervisorMsg>,
        metrics: &ActorRef<MetricsMsg>,
        events: mpsc::UnboundedSender<RunEvent>,
        done: oneshot::Sender<FinalState>,
        span: tracing::Span,
    ) -> WorldArgs {
        let (first, sampling_config, switch) = match &plan.fork {
            Some(f) => {
                let mut next = plan.clone();
                next.fork = None;
                let switch = Switch { at_turn: f.at_turn, plan: next, config: self.config.clone() };
                (&f.history, Arc::new(f.history_config.clone()), Some(switch))
            }
            None => (plan, self.config.clone(), None),
        };
        WorldArgs {
            personas: first.personas.clone(),
            facts: Arc::new(WorldFacts { world: first.world_name.as_str().into(), topic: first.topic.as_str().into() }),
            context: first.context.clone(),
            opening: first.opening.clone(),
            hearing: first.hearing.clone(),
            interventions: first.interventions.clone(),
            sampling_config,
            switch,
            span,
            provider: self.provider.clone(),
            activation: first.activation.clone(),
            remote: None,
            process_ends: false,
            config: self.config.clone(),
            supervisor: supervisor.clone(),
            metrics: metrics.clone(),
            events,
            done,
            instance,
        }
    }
}

/// The last line of defence for plans built by hand: a persona with an error finding (a
/// temperature of 3.5, a 50 MB field) never reaches a provider.
fn check_plan(plan: &RunPlan) -> Result<(), EngineError> {
    if plan.personas.is_empty() {
        return Err(EngineError::NoPersonas);
    }
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
    Ok(())
}
