//! Receiving a run's events: each is journaled first (a crash loses nothing paid for; the
//! events that arrived together are written in one go), messages are appended to
//! `transcript.jsonl`, and everything is forwarded to the caller's view (and, with a monitor
//! installed, to its ring of last lines for `/messages`). At the end: in-flight calls are
//! drained, the results assembled and saved.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::EngineError;
use super::assemble::build_results;
use super::handle::snapshot;
use crate::actors::metrics::MetricsMsg;
use crate::actors::supervisor::SupervisorMsg;
use crate::actors::world::WorldMsg;
use crate::config::SimulationConfig;
use crate::estimate::Estimate;
use crate::llm::cache::ResponseCache;
use crate::record::journal::JournalWriter;
use crate::record::results::{AgentInfo, SimulationResults, save_results};
use crate::record::transcript::{FinalState, PromptTrim, RunEvent, SkipRecord, StopReason, TranscriptEntry};
use crate::scenario::RunPlan;

/// What the collector knows of the run.
pub(super) struct Collect {
    /// Held until the run's files are written.
    pub _lock: Option<crate::fsutil::DirLock>,
    pub journal: Option<JournalWriter>,
    pub cache: Option<Arc<ResponseCache>>,
    pub estimate: Estimate,
    pub config: Arc<SimulationConfig>,
    pub provider_name: String,
    pub synthetic: bool,
    pub notice: Option<String>,
    pub plan: RunPlan,
    pub agents: Vec<AgentInfo>,
    pub run_id: String,
    pub run_dir: Option<PathBuf>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub t0: Instant,
}

/// The collector's ends of the run: the world's final state, the transcript file, the caller's
/// event view and the actors to stop at the end.
pub(super) struct Links {
    pub done: oneshot::Receiver<FinalState>,
    pub file: Option<std::fs::File>,
    pub forward: Option<mpsc::UnboundedSender<RunEvent>>,
    pub world: ActorRef<WorldMsg>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub metrics: ActorRef<MetricsMsg>,
}

/// What the results keep besides the transcript.
#[derive(Default)]
pub(super) struct Extra {
    pub skipped: Vec<SkipRecord>,
    pub thoughts: Vec<(u32, String, String)>,
    pub passes: Vec<(u32, String)>,
    pub interventions: Vec<(u32, String)>,
    pub prompt_trimmed: Vec<PromptTrim>,
}

/// What was collected so far.
struct Gathered {
    transcript: Vec<TranscriptEntry>,
    extra: Extra,
    final_state: Option<FinalState>,
    write_error: Option<String>,
    /// Set when the journal cannot be written: from then on nothing counts (a resume would pay
    /// for it again), so events are drained but neither shown, kept nor forwarded.
    journal_failed: Option<String>,
    journaled_turns: u32,
    /// Transcript lines the process' monitor was told of, and when (see `monitor::said`).
    told: usize,
    told_at: Instant,
    /// Transcript lines not yet written.
    lines: Vec<u8>,
}

/// At most this many events that arrived together are journaled in one write.
const BATCH: usize = 512;

impl Default for Gathered {
    fn default() -> Self {
        Gathered {
            transcript: Vec::new(),
            extra: Extra::default(),
            final_state: None,
            write_error: None,
            journal_failed: None,
            journaled_turns: 0,
            told: 0,
            told_at: Instant::now(),
            lines: Vec::new(),
        }
    }
}

/// Collects the run's events until it finishes, then saves its results.
pub(super) async fn collect(
    mut ctx: Collect,
    mut rx: mpsc::UnboundedReceiver<RunEvent>,
    mut links: Links,
) -> Result<SimulationResults, EngineError> {
    let mut g = Gathered::default();
    let mut batch = Vec::new();
    while let Some(ev) = rx.recv().await {
        // What has arrived together is journaled and appended in one write each.
        batch.push(ev);
        while batch.len() < BATCH && !matches!(batch.last(), Some(RunEvent::Finished(_))) {
            let Ok(ev) = rx.try_recv() else { break };
            batch.push(ev);
        }
        if g.on_batch(&mut batch, &mut ctx, &mut links) {
            break;
        }
    }
    let final_state = match (g.journal_failed.take(), g.final_state.take()) {
        (Some(why), _) => {
            let _ = (&mut links.done).await;
            FinalState { success: false, completed_turns: g.journaled_turns, reason: StopReason::Failed(why) }
        }
        (None, Some(s)) => s,
        (None, None) => (&mut links.done).await.unwrap_or(FinalState {
            success: false,
            completed_turns: 0,
            reason: StopReason::Failed("the world actor stopped without a final state".into()),
        }),
    };
    let duration = ctx.t0.elapsed().as_secs_f64();
    if final_state.reason != StopReason::Completed {
        drain_in_flight(&mut ctx, &mut rx, &links.metrics).await;
    }
    let snap = snapshot(&links.metrics).await.unwrap_or_default();
    stop_actors(&links).await;
    if let Some(m) = crate::actors::monitor::installed() {
        crate::actors::monitor::said(&g.transcript, &mut g.told);
        let _ = m.cast(crate::actors::monitor::MonitorMsg::RunFinished { outcome: final_state.reason.as_str() });
    }
    let mut results = build_results(ctx, g.transcript, g.extra, final_state, snap, duration, g.write_error);
    if let Some(dir) = results.run_dir.clone()
        && let Err(e) = save_results(&results, &dir)
    {
        // An earlier failure (a full disk, say) explains this one: report both.
        let Some(first) = results.error.take() else { return Err(e.into()) };
        results.error = Some(format!("{first}; then {e}"));
    }
    tracing::info!(messages = results.transcript.len(), success = results.success, "simulation finished");
    Ok(results)
}

impl Gathered {
    /// Journals the events that arrived together, then keeps and forwards them; true when the
    /// run is over. When the journal cannot be written, none of them is kept.
    fn on_batch(&mut self, batch: &mut Vec<RunEvent>, ctx: &mut Collect, links: &mut Links) -> bool {
        let finished = batch.iter().any(|e| matches!(e, RunEvent::Finished(_)));
        if self.journal_failed.is_some() {
            batch.clear();
            return finished;
        }
        if let Some(cache) = &ctx.cache {
            for ev in batch.iter_mut() {
                if let RunEvent::Exchange(x) = ev {
                    x.replayed = u64::from_str_radix(&x.key, 16).is_ok_and(|k| cache.was_served(k));
                }
            }
        }
        if let Some(j) = ctx.journal.as_mut()
            && let Err(e) = batch.iter().try_for_each(|ev| j.queue(ev)).and_then(|()| j.flush())
        {
            // Nothing already journaled is lost; the run stops at once rather than go on
            // unrecorded, and what it did after the failure is not kept.
            let why = format!("the journal could not be written: {e}");
            self.write_error.get_or_insert_with(|| e.to_string());
            ctx.journal = None;
            let _ = links.world.cast(WorldMsg::Stop(StopReason::Failed(why.clone())));
            self.journal_failed = Some(why);
            batch.clear();
            return finished;
        }
        for ev in batch.drain(..) {
            if let RunEvent::TurnEnded { turn } = ev {
                self.journaled_turns = turn;
            }
            self.keep(&ev, links);
            if let Some(fw) = &links.forward {
                let _ = fw.send(ev);
            }
        }
        self.write_lines(links);
        self.final_state.is_some()
    }

    /// Keeps what the results need; appends messages to the transcript file and shows them to
    /// the process' monitor.
    fn keep(&mut self, ev: &RunEvent, links: &mut Links) {
        let x = &mut self.extra;
        match ev {
            RunEvent::Message(e) => {
                self.append_line(e, links);
                self.transcript.push(e.clone());
                if crate::actors::monitor::listening() && self.told_at.elapsed() >= crate::actors::monitor::SAID_EVERY {
                    crate::actors::monitor::said(&self.transcript, &mut self.told);
                    self.told_at = Instant::now();
                }
            }
            RunEvent::Skipped(s) => x.skipped.push(s.clone()),
            RunEvent::Thought { turn, persona, text } => x.thoughts.push((*turn, persona.clone(), text.clone())),
            RunEvent::Passed { turn, persona } => x.passes.push((*turn, persona.clone())),
            RunEvent::Intervention { turn, description } => x.interventions.push((*turn, description.clone())),
            RunEvent::Finished(s) => self.final_state = Some(s.clone()),
            RunEvent::PromptTrimmed(t) => x.prompt_trimmed.push(t.clone()),
            RunEvent::TurnStarted { .. }
            | RunEvent::TurnEnded { .. }
            | RunEvent::Exchange(_)
            | RunEvent::Retry { .. }
            | RunEvent::Fallback { .. } => {}
        }
    }

    /// Queues a message's line for `transcript.jsonl`.
    fn append_line(&mut self, e: &TranscriptEntry, links: &Links) {
        if links.file.is_some() && serde_json::to_writer(&mut self.lines, e).is_ok() {
            self.lines.push(b'\n');
        }
    }

    /// Writes the queued transcript lines, straight to the file: a crash loses nothing already
    /// journaled. A failed write stops the run.
    fn write_lines(&mut self, links: &mut Links) {
        let Some(f) = links.file.as_mut() else { return };
        if self.lines.is_empty() {
            return;
        }
        if let Err(err) = f.write_all(&self.lines) {
            self.write_error.get_or_insert_with(|| err.to_string());
            links.file = None;
            let _ = links.world.cast(WorldMsg::Stop(StopReason::Failed("could not append to transcript.jsonl".into())));
        }
        self.lines.clear();
    }
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

/// Stops the run's actors and waits (a bounded time) until they are gone: a persona, world or
/// metrics actor left running after its run would keep its queued messages, and the trace
/// spans they carry, open until the process ends.
async fn stop_actors(links: &Links) {
    let bound = Some(std::time::Duration::from_secs(5));
    links.world.stop(None);
    links.supervisor.stop_children_and_wait(None, bound).await;
    let _ = links.supervisor.stop_and_wait(None, bound).await;
    let _ = links.world.stop_and_wait(None, bound).await;
    let _ = links.metrics.stop_and_wait(None, bound).await;
}
