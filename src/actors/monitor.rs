//! The monitor actor: one per process when metrics are exported (`--metrics-addr`). Every
//! run's metrics actor tells it when it starts and, with its last figures, when it stops; a
//! scrape asks the live ones for their figures and adds the finished runs' totals, so counters
//! only go up across runs, as Prometheus expects. It also keeps the last few transcript lines
//! of every run ([`said`], fed by the engine's collector), for `/messages` and `troupe top`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};

use serde::{Deserialize, Serialize};

use super::metrics::MetricsMsg;
use crate::record::exposition::Exposition;
use crate::record::transcript::TranscriptEntry;

/// How long a scrape waits for one run's metrics actor (busy actors answer within
/// microseconds; a stopping one may not answer at all).
const EXPORT_WAIT: Duration = Duration::from_secs(2);

/// Transcript lines the monitor keeps (the last ones said, across runs).
pub const RECENT_MESSAGES: usize = 20;

/// Characters kept of a line's text and of a speaker's name: enough to read, bounded so the
/// ring stays small whatever a persona says.
pub const RECENT_TEXT_CHARS: usize = 240;
const RECENT_NAME_CHARS: usize = 64;

/// One line of the transcript as `/messages` serves it: who said what, on one line, cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentMessage {
    /// The run's turn (0 for the opening).
    pub turn: u32,
    /// The speaker's display name.
    pub speaker: String,
    /// Whom it was said to, when spoken to one persona.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// What was said, on one line, at most [`RECENT_TEXT_CHARS`] characters.
    pub text: String,
}

impl RecentMessage {
    /// The bounded line of a transcript entry.
    pub fn of(e: &TranscriptEntry) -> Self {
        RecentMessage {
            turn: e.turn,
            speaker: crate::text::one_line(&e.speaker, RECENT_NAME_CHARS),
            to: e.to.as_deref().map(|t| crate::text::one_line(t, RECENT_NAME_CHARS)),
            text: crate::text::one_line(&e.text, RECENT_TEXT_CHARS),
        }
    }
}

/// The monitor actor (holds no data; see `MonitorState`).
#[derive(Debug)]
pub struct MonitorActor;

/// What the monitor hears.
#[derive(Debug)]
pub enum MonitorMsg {
    /// A run's metrics actor started.
    Attach(ActorRef<MetricsMsg>),
    /// A run's metrics actor stopped with these figures.
    Detach {
        /// Its id.
        id: ActorId,
        /// Its last figures.
        last: Exposition,
    },
    /// A run ended; `outcome` is one of `completed`, `timeout`, `cancelled`, `cost_limit`,
    /// `failed`.
    RunFinished {
        /// How it ended.
        outcome: &'static str,
    },
    /// Settings and levels of the process (a worker's runs by state, say), replacing those
    /// given before under the same names.
    Process(Exposition),
    /// Reply with every run's figures added up, in the Prometheus text format.
    Scrape(RpcReplyPort<String>),
    /// A scrape asked again a moment later: a run whose metrics actor stopped during the try
    /// before sends its final figures meanwhile (see `scrape_or_wait`).
    ScrapeAgain {
        /// Where the text goes.
        reply: RpcReplyPort<String>,
        /// Tries so far.
        tries: u32,
    },
    /// Transcript lines said since a run last told (see [`said`]), oldest first.
    Said(Vec<RecentMessage>),
    /// Reply with the last lines said, oldest first.
    Recent(RpcReplyPort<Vec<RecentMessage>>),
}

/// The monitor's state.
#[derive(Debug, Default)]
pub struct MonitorState {
    /// Live runs' metrics actors, with the figures they last gave (used when one does not
    /// answer because it is stopping: its final figures follow in `Detach`).
    live: BTreeMap<ActorId, (ActorRef<MetricsMsg>, Exposition)>,
    finished: Exposition,
    started: u64,
    outcomes: BTreeMap<&'static str, u64>,
    process: Exposition,
    recent: VecDeque<RecentMessage>,
}

impl MonitorState {
    /// Adds everything up and renders it; `None` when a live run's metrics actor did not answer
    /// and `patient` (it may have just stopped: its final figures are then already in the
    /// mailbox, behind this scrape, and a scrape asked again after them finds them).
    async fn scrape(&mut self, patient: bool) -> Option<String> {
        let mut total = self.finished.clone();
        for (actor, last) in self.live.values_mut() {
            match actor.call(MetricsMsg::Export, Some(EXPORT_WAIT)).await {
                Ok(ractor::rpc::CallResult::Success(e)) => *last = e,
                _ if patient => return None,
                _ => {}
            }
            total.merge(last);
        }
        total.merge(&self.process);
        self.add_runs(&mut total);
        Some(total.render())
    }

    fn add_runs(&self, e: &mut Exposition) {
        e.counter("troupe_runs_started_total", "Runs started by this process.", &[], self.started as f64);
        e.gauge("troupe_runs_running", "Runs in progress in this process.", &[], self.live.len() as f64);
        for outcome in ["completed", "timeout", "cancelled", "cost_limit", "failed"] {
            let n = self.outcomes.get(outcome).copied().unwrap_or(0);
            e.counter("troupe_runs_finished_total", "Runs ended, by outcome.", &[("outcome", outcome)], n as f64);
        }
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        e.gauge("troupe_build_info", "The troupe-sim version serving these metrics.", &version, 1.0);
    }
}

impl Actor for MonitorActor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, _: ()) -> Result<Self::State, ActorProcessingErr> {
        Ok(MonitorState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MonitorMsg::Attach(actor) => {
                state.started += 1;
                state.live.insert(actor.get_id(), (actor, Exposition::default()));
            }
            MonitorMsg::Detach { id, last } => {
                state.live.remove(&id);
                state.finished.merge(&last);
            }
            MonitorMsg::RunFinished { outcome } => *state.outcomes.entry(outcome).or_default() += 1,
            MonitorMsg::Process(e) => state.process = e,
            MonitorMsg::Scrape(reply) => scrape_or_wait(&myself, state, reply, 0).await,
            MonitorMsg::ScrapeAgain { reply, tries } => scrape_or_wait(&myself, state, reply, tries).await,
            MonitorMsg::Said(lines) => {
                for line in lines.into_iter().rev().take(RECENT_MESSAGES).rev() {
                    if state.recent.len() == RECENT_MESSAGES {
                        state.recent.pop_front();
                    }
                    state.recent.push_back(line);
                }
            }
            MonitorMsg::Recent(reply) => {
                let _ = reply.send(state.recent.iter().cloned().collect());
            }
        }
        Ok(())
    }
}

/// Tries a scrape a few times, 20 ms apart, while a live run does not answer: a metrics actor
/// that has just stopped sends its final figures (`Detach`) from its `post_stop`, and a scrape
/// made before they arrive would leave that run out, so its counters would seem to drop. After
/// 20 tries (400 ms) the run's last figures stand in.
async fn scrape_or_wait(
    myself: &ActorRef<MonitorMsg>,
    state: &mut MonitorState,
    reply: RpcReplyPort<String>,
    tries: u32,
) {
    match state.scrape(tries < 20).await {
        Some(text) => {
            let _ = reply.send(text);
        }
        None => {
            myself.send_after(Duration::from_millis(20), move || MonitorMsg::ScrapeAgain { reply, tries: tries + 1 });
        }
    }
}

/// The process' monitor, once [`install`]ed: runs started afterwards report to it.
static INSTALLED: OnceLock<ActorRef<MonitorMsg>> = OnceLock::new();

/// Makes `monitor` the process' monitor (one per process, like Prometheus' default registry);
/// false when another was installed first.
pub fn install(monitor: ActorRef<MonitorMsg>) -> bool {
    INSTALLED.set(monitor).is_ok()
}

/// The process' monitor, if one was installed.
pub fn installed() -> Option<ActorRef<MonitorMsg>> {
    INSTALLED.get().cloned()
}

/// How often a run tells the monitor what was said: a message per transcript line would wake
/// the monitor (and cost a few microseconds) per call.
pub const SAID_EVERY: Duration = Duration::from_millis(250);

/// Tells the process' monitor, when one is installed, the lines of `transcript` after the
/// first `*told` (at most the last [`RECENT_MESSAGES`]), cut; `*told` moves to the end.
pub fn said(transcript: &[TranscriptEntry], told: &mut usize) {
    let Some(m) = INSTALLED.get() else { return };
    let from = (*told).max(transcript.len().saturating_sub(RECENT_MESSAGES)).min(transcript.len());
    *told = transcript.len();
    if from < transcript.len() {
        let _ = m.cast(MonitorMsg::Said(transcript[from..].iter().map(RecentMessage::of).collect()));
    }
}

/// True when a monitor is installed (a run then tells it what was said every [`SAID_EVERY`]).
pub fn listening() -> bool {
    INSTALLED.get().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, text: &str) -> TranscriptEntry {
        TranscriptEntry {
            seq,
            turn: 1,
            speaker: "Ana\nLee".into(),
            speaker_id: "ana".into(),
            role: "persona".into(),
            text: text.into(),
            to: None,
            timestamp: chrono::Utc::now(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: None,
            attempts: None,
        }
    }

    /// A run that stops around a scrape is never left out of it: its counters never seem to
    /// drop (a scrape that finds a stopped actor waits for its final figures). The race is
    /// timing-dependent (CI hit it through the binary); this checks the counting across 20
    /// runs stopped right as a scrape is asked.
    #[tokio::test]
    async fn a_run_stopping_during_a_scrape_is_counted() {
        use crate::actors::metrics::{MetricsActor, MetricsArgs};
        let (m, _) = Actor::spawn(None, MonitorActor, ()).await.unwrap();
        for round in 1..=20u64 {
            let args = MetricsArgs { provider: "p".into(), monitor: Some(m.clone()), ..MetricsArgs::default() };
            let (metrics, handle) = Actor::spawn(None, MetricsActor, args).await.unwrap();
            metrics.cast(MetricsMsg::CallStarted { queued_us: 1, mailbox_us: None }).unwrap();
            // Processed before the stop (a stop is a signal and jumps the queue), as the engine
            // takes its last snapshot before stopping the actor.
            metrics.call(MetricsMsg::Snapshot, None).await.unwrap();
            // Never scraped while live: without waiting, a scrape right after the stop finds
            // no figures for it at all.
            let asked = m.call(MonitorMsg::Scrape, None);
            metrics.stop(None);
            let text = asked.await.unwrap().unwrap();
            handle.await.unwrap();
            let after = m.call(MonitorMsg::Scrape, None).await.unwrap().unwrap();
            for t in [&text, &after] {
                let line = t.lines().find(|l| l.starts_with("troupe_llm_requests_total")).unwrap_or_default();
                let n: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0);
                assert!(n >= round - 1, "round {round}: {line:?}");
            }
            let line = after.lines().find(|l| l.starts_with("troupe_llm_requests_total")).unwrap();
            assert!(line.ends_with(&format!(" {round}")), "round {round}: {line}");
        }
        m.stop(None);
    }

    #[tokio::test]
    async fn the_monitor_keeps_the_last_lines_bounded_and_cut() {
        let (m, handle) = Actor::spawn(None, MonitorActor, ()).await.unwrap();
        let long = "word ".repeat(1000);
        let lines: Vec<_> = (0..(RECENT_MESSAGES as u64 + 5))
            .map(|i| {
                let text = if i % 2 == 0 { format!("line {i}") } else { long.clone() };
                RecentMessage::of(&entry(i, &text))
            })
            .collect();
        m.cast(MonitorMsg::Said(lines[..3].to_vec())).unwrap();
        m.cast(MonitorMsg::Said(lines[3..].to_vec())).unwrap();
        let lines = m.call(MonitorMsg::Recent, None).await.unwrap().unwrap();
        assert_eq!(lines.len(), RECENT_MESSAGES);
        assert_eq!(lines.last().unwrap().text, format!("line {}", RECENT_MESSAGES + 4));
        assert_eq!(lines[0].speaker, "Ana Lee");
        assert!(lines.iter().all(|l| l.text.chars().count() <= RECENT_TEXT_CHARS));
        m.stop(None);
        handle.await.unwrap();
    }
}
