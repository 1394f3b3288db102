//! A run's options, and the handle a started run gives: progress, live metrics, stopping,
//! waiting for the results.

use std::path::PathBuf;

use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{EngineError, SimulationEngine};
use crate::actors::metrics::MetricsMsg;
use crate::actors::world::WorldMsg;
use crate::record::metrics::MetricsSnapshot;
use crate::record::results::SimulationResults;
use crate::record::transcript::{RunEvent, StopReason};

/// Options for one run.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Save the run in `<save_under>/<run-id>/`: `transcript.jsonl` grows as messages arrive,
    /// `results.json` and `metrics.json` are written at the end (also when the run fails or is
    /// cancelled). `None`: keep everything in memory. The CLI uses `output_dir/conversations`.
    /// The run's analysis is not the engine's: see [`crate::review`].
    pub save_under: Option<PathBuf>,
    /// Also send every event here (for a terminal or web view). Never dropped.
    pub events: Option<mpsc::UnboundedSender<RunEvent>>,
    /// Leave each LLM exchange (its cache key and a copy of the answer) out of `events`: a view
    /// of the messages needs none. A saved run's journal still has them.
    pub without_exchanges: bool,
    /// The caller's process ends when the run does (the CLI): the world's record of what each
    /// persona heard is left for the operating system to reclaim instead of being freed entry
    /// by entry. Leave it off in a process that goes on.
    pub process_ends: bool,
    /// Use this run id (and so this folder) instead of a new one: how `resume` continues a
    /// run in place.
    pub run_id: Option<String>,
    /// The run folder's lock, when the caller already holds it (`resume` takes it before it
    /// reads the journal). Otherwise a saved run takes it itself; either way it is held until
    /// the run's files are written.
    pub lock: Option<crate::fsutil::DirLock>,
    /// Also send every journal line here as it is written (a cluster worker streams its
    /// journal to JetStream, so another worker can resume the run).
    pub journal_tap: Option<crate::record::journal::JournalTap>,
    /// The personas live elsewhere (a sharded run, `crate::cluster::sharding`): the world sends
    /// its turns here instead of asking local persona actors.
    pub remote: Option<tokio::sync::mpsc::UnboundedSender<crate::actors::remote::ToHosts>>,
}

/// A run in progress.
#[derive(Debug)]
pub struct RunHandle {
    /// The run's id.
    pub run_id: String,
    /// Where its files go, when saved.
    pub run_dir: Option<PathBuf>,
    pub(super) instance: u64,
    pub(super) world: ActorRef<WorldMsg>,
    pub(super) metrics: ActorRef<MetricsMsg>,
    pub(super) join: JoinHandle<Result<SimulationResults, EngineError>>,
    pub(super) engine: SimulationEngine,
}

impl RunHandle {
    /// The engine that runs it (its config, provider and prices), for what follows the run.
    pub fn engine(&self) -> &SimulationEngine {
        &self.engine
    }

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

pub(super) async fn snapshot(m: &ActorRef<MetricsMsg>) -> Option<MetricsSnapshot> {
    match m.call(MetricsMsg::Snapshot, Some(std::time::Duration::from_secs(5))).await {
        Ok(ractor::rpc::CallResult::Success(s)) => Some(s),
        _ => None,
    }
}
