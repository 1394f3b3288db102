//! The host actor: on a shard (`troupe shard`), it stands in for the world of one sharded run.
//!
//! The coordinator's world decides who acts and what each heard; the host makes the persona
//! actors it is given (under the shard's own supervisor, which makes their calls with the
//! shard's provider), hands each its batch, and reports what each did. Personas report to it
//! exactly as they report to a world (`WorldMsg::Acted`), so they are the same code.
//!
//! It is idempotent per act: the same act asked again (a resend after a lost message) is
//! answered from what the persona already did, never paid twice. A persona it does not have
//! (the shard restarted, or the persona failed) is reported `Lost`, and the coordinator sends
//! it again with its memory rebuilt from the world's record.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

use super::persona::{Outcome, PersonaMsg, PersonaSpawn, now_us};
use super::supervisor::SupervisorMsg;
use super::world::WorldMsg;
use crate::memory::MemoryEvent;
use crate::record::transcript::StopReason;

/// The host actor (holds no data; see `HostState`).
#[derive(Debug)]
pub struct HostActor;

/// What the host starts with.
#[derive(Debug)]
pub struct HostArgs {
    /// The shard's supervisor for this run (makes the calls).
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Where outcomes go (to the coordinator).
    pub out: mpsc::UnboundedSender<HostReport>,
}

/// Messages to the host.
#[derive(Debug)]
pub enum HostMsg {
    /// What personas and the supervisor tell a world.
    World(WorldMsg),
    /// Persona `idx` acts in `turn`; made first from `place` when given (its old actor, if
    /// any, is replaced).
    Act {
        /// Turn.
        turn: u32,
        /// Index in the world's persona list.
        idx: usize,
        /// What it heard since it last acted.
        batch: Vec<MemoryEvent>,
        /// The world's context.
        context: Arc<str>,
        /// Its spawn and memory, when it is (re)made here.
        place: Option<Box<(PersonaSpawn, Vec<MemoryEvent>)>>,
    },
}

impl From<WorldMsg> for HostMsg {
    fn from(m: WorldMsg) -> Self {
        HostMsg::World(m)
    }
}

impl TryFrom<HostMsg> for WorldMsg {
    type Error = HostMsg;
    fn try_from(m: HostMsg) -> Result<Self, HostMsg> {
        match m {
            HostMsg::World(w) => Ok(w),
            other => Err(other),
        }
    }
}

/// What the host reports.
#[derive(Debug, Clone, PartialEq)]
pub enum HostReport {
    /// Persona `idx` finished its act of `turn`.
    Acted {
        /// Turn.
        turn: u32,
        /// Index.
        idx: usize,
        /// Persona id (its calls' events are grouped by it).
        persona: Arc<str>,
        /// What it did.
        outcome: Outcome,
        /// A summary it made before acting.
        summary: Option<Arc<str>>,
    },
    /// The host has no persona `idx` for `turn` (send it again with its memory).
    Lost {
        /// Turn.
        turn: u32,
        /// Index.
        idx: usize,
    },
    /// The supervisor stopped the run (cost limit, a fatal provider error).
    Stop(StopReason),
}

/// One persona made here.
#[derive(Debug)]
struct Hosted {
    actor: ActorRef<PersonaMsg>,
    id: Arc<str>,
    /// The latest turn it was asked to act in, and what it did then once done.
    turn: u32,
    done: Option<(Outcome, Option<Arc<str>>)>,
}

/// The host's state.
#[derive(Debug)]
pub struct HostState {
    supervisor: ActorRef<SupervisorMsg>,
    out: mpsc::UnboundedSender<HostReport>,
    personas: HashMap<usize, Hosted>,
}

impl Actor for HostActor {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(&self, _myself: ActorRef<HostMsg>, a: HostArgs) -> Result<HostState, ActorProcessingErr> {
        Ok(HostState { supervisor: a.supervisor, out: a.out, personas: HashMap::new() })
    }

    async fn post_stop(&self, _myself: ActorRef<HostMsg>, st: &mut HostState) -> Result<(), ActorProcessingErr> {
        for h in st.personas.values() {
            h.actor.stop(Some("the sharded run is over".into()));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<HostMsg>,
        msg: HostMsg,
        st: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HostMsg::Act { turn, idx, batch, context, place } => {
                on_act(&myself, st, (turn, idx), batch, context, place).await
            }
            HostMsg::World(WorldMsg::Acted { turn, idx, outcome, summary }) => {
                if let Some(h) = st.personas.get_mut(&idx)
                    && h.turn == turn
                    && h.done.is_none()
                {
                    h.done = Some((outcome.clone(), summary.clone()));
                    let persona = h.id.clone();
                    let _ = st.out.send(HostReport::Acted { turn, idx, persona, outcome, summary });
                }
            }
            HostMsg::World(WorldMsg::PersonaFailed { idx }) => {
                // Its memory is the world's to give: the coordinator rebuilds it.
                if let Some(h) = st.personas.remove(&idx) {
                    tracing::warn!(persona = %h.id, "persona failed on this shard; asking the coordinator to rebuild it");
                    if h.done.is_none() {
                        let _ = st.out.send(HostReport::Lost { turn: h.turn, idx });
                    }
                }
            }
            HostMsg::World(WorldMsg::Stop(reason)) => {
                let _ = st.out.send(HostReport::Stop(reason));
            }
            HostMsg::World(_) => {}
        }
        Ok(())
    }
}

async fn on_act(
    myself: &ActorRef<HostMsg>,
    st: &mut HostState,
    (turn, idx): (u32, usize),
    batch: Vec<MemoryEvent>,
    context: Arc<str>,
    place: Option<Box<(PersonaSpawn, Vec<MemoryEvent>)>>,
) {
    if let Some(h) = st.personas.get(&idx)
        && h.turn > turn
    {
        // A part that arrives after a later one (held back while the broker was away): acting
        // on it would give the persona a batch twice.
        return;
    }
    if let Some(h) = st.personas.get(&idx)
        && h.turn == turn
    {
        // Asked again: answer from what it did (or will do); never act twice.
        if let Some((outcome, summary)) = h.done.clone() {
            let persona = h.id.clone();
            let _ = st.out.send(HostReport::Acted { turn, idx, persona, outcome, summary });
        }
        return;
    }
    if let Some(place) = place {
        let (mut spawn, history) = *place;
        spawn.world = myself.get_derived();
        if let Some(old) = st.personas.remove(&idx) {
            // Replaced by the world's record; the name must be free before the new one starts.
            let _ = old.actor.stop_and_wait(Some("rebuilt from the world's record".into()), None).await;
        }
        let id: Arc<str> = spawn.spec.id.as_str().into();
        tracing::debug!(persona = %id, turn, history = history.len(), "placed");
        let made = st
            .supervisor
            .call(|reply| SupervisorMsg::SpawnPersona { idx, spawn: Box::new(spawn), history, reply }, None)
            .await;
        match made {
            Ok(ractor::rpc::CallResult::Success(Ok(actor))) => {
                st.personas.insert(idx, Hosted { actor, id, turn: 0, done: None });
            }
            other => {
                tracing::error!(persona = %id, "could not make the persona here: {other:?}");
                let outcome = Outcome::Skipped { reason: "the shard could not start the persona's actor".into() };
                let _ = st.out.send(HostReport::Acted { turn, idx, persona: id, outcome, summary: None });
                return;
            }
        }
    }
    let Some(h) = st.personas.get_mut(&idx) else {
        let _ = st.out.send(HostReport::Lost { turn, idx });
        return;
    };
    if h.done.is_none() && h.turn > 0 && h.turn < turn {
        // Its last act never finished here (the world took another shard's answer): its
        // memory lacks what it did then, so it must be rebuilt from the world's record.
        let _ = st.out.send(HostReport::Lost { turn, idx });
        return;
    }
    h.turn = turn;
    h.done = None;
    tracing::debug!(persona = %h.id, turn, batch = batch.len(), "act");
    let _ = h.actor.cast(PersonaMsg::Act { turn, batch, context, sent_us: now_us() });
}
