//! What the world says to personas that live in other processes (the shards of a sharded run,
//! `crate::cluster::sharding`), and what it gives to rebuild one there.
//!
//! No actor here: the world speaks these messages over a channel to whatever carries them (the
//! cluster layer), and hears the outcomes back as ordinary [`super::world::WorldMsg::Acted`].
//! The world stays the record: a persona's memory on a shard is always rebuilt from the
//! world's log of it, exactly as a restarted local persona is.

use std::sync::Arc;

use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::metrics::MetricsMsg;
use super::world::WorldMsg;
use crate::memory::MemoryEvent;
use crate::persona::PersonaSpec;
use crate::prompt::{Sampling, WorldFacts};
use crate::record::transcript::RunEvent;

/// From the world to the carrier of remote personas, in order.
#[derive(Debug)]
pub enum ToHosts {
    /// The world started: where outcomes, counters and journal events go.
    Started {
        /// The world (outcomes as `Acted`, rebuild requests as `Rebuild`).
        world: ActorRef<WorldMsg>,
        /// The run's metrics actor (calls made on shards are counted here too).
        metrics: ActorRef<MetricsMsg>,
        /// The run's events (exchanges made on shards go to the journal through it).
        events: mpsc::UnboundedSender<RunEvent>,
    },
    /// These personas act in `turn`, on the same snapshot (the `Parallel` policy).
    Turn {
        /// Turn.
        turn: u32,
        /// The world's context now.
        context: Arc<str>,
        /// Who acts, in the world's order, with what each heard since it last acted.
        acts: Vec<RemoteAct>,
        /// The turn's span: the shards' persona acts hang from it (trace context in the parts).
        span: tracing::Span,
    },
    /// The run is over: nothing more will be asked.
    Ended,
}

/// One persona's part of a turn.
#[derive(Debug, Clone)]
pub struct RemoteAct {
    /// Index in the world's persona list.
    pub idx: usize,
    /// Persona id (what the shards are chosen by).
    pub id: Arc<str>,
    /// What it heard (and said) since it last acted.
    pub batch: Vec<MemoryEvent>,
}

/// Everything a shard needs to make a persona's actor, apart from its memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteSpawn {
    /// The persona.
    pub spec: PersonaSpec,
    /// Its system prompt, written by the world within the model's budget.
    pub system: String,
    /// World name and topic.
    pub facts: WorldFacts,
    /// Model and sampling (persona overrides applied).
    pub sampling: Sampling,
    /// Memory events kept first in prompts.
    pub memory_prefix: usize,
    /// Memory events kept last in prompts.
    pub memory_recent: usize,
    /// Summarize every N events (0: never).
    pub consolidate_every: usize,
}

/// A persona rebuilt from the world's record: its actor is made from `spawn` with `history`
/// as its memory, then given its [`RemoteAct`]'s batch with this turn's act.
#[derive(Debug, Clone)]
pub struct Rebuild {
    /// Index in the world's persona list.
    pub idx: usize,
    /// What it is.
    pub spawn: RemoteSpawn,
    /// Its memory before its latest batch.
    pub history: Vec<MemoryEvent>,
}
