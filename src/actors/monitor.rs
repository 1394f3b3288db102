//! The monitor actor: one per process when metrics are exported (`--metrics-addr`). Every
//! run's metrics actor tells it when it starts and, with its last figures, when it stops; a
//! scrape asks the live ones for their figures and adds the finished runs' totals, so counters
//! only go up across runs, as Prometheus expects.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::metrics::MetricsMsg;
use crate::record::exposition::Exposition;

/// How long a scrape waits for one run's metrics actor (busy actors answer within
/// microseconds; a stopping one may not answer at all).
const EXPORT_WAIT: Duration = Duration::from_secs(2);

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
}

impl MonitorState {
    /// Adds everything up and renders it.
    async fn scrape(&mut self) -> String {
        let mut total = self.finished.clone();
        for (actor, last) in self.live.values_mut() {
            if let Ok(ractor::rpc::CallResult::Success(e)) = actor.call(MetricsMsg::Export, Some(EXPORT_WAIT)).await {
                *last = e;
            }
            total.merge(last);
        }
        total.merge(&self.process);
        self.add_runs(&mut total);
        total.render()
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
        _myself: ActorRef<Self::Msg>,
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
            MonitorMsg::Scrape(reply) => {
                let _ = reply.send(state.scrape().await);
            }
        }
        Ok(())
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
