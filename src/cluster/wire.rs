//! What a sharded run's coordinator and shards say to each other, and its encoding.
//!
//! A turn's part for one shard carries every utterance its personas heard once (a table), and
//! each act refers to the table by position: a line heard by eight personas of a shard
//! travels once, not eight times. Everything here arrives from the network and is checked as
//! it is decoded (ids, table positions, sizes), never trusted.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::messages::check_id;
use crate::actors::persona::Outcome;
use crate::actors::remote::RemoteSpawn;
use crate::config::SimulationConfig;
use crate::memory::{MemoryEvent, Utterance};
use crate::record::journal::Exchange;
use crate::record::transcript::{RunEvent, StopReason};

/// A shard is alive: sent twice a second on the heartbeat subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The shard's id (its subject token).
    pub shard: String,
    /// Runs it hosts now.
    pub runs: u32,
    /// Persona acts it was asked for so far.
    pub acts: u64,
}

/// From the coordinator to one shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToShard {
    /// A part of a turn.
    Turn(Box<TurnPart>),
    /// The run is over: drop its personas.
    End {
        /// Run id.
        run: String,
    },
}

/// A shard's part of a turn (all of it, unless it would pass the server's message size).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnPart {
    /// Run id.
    pub run: String,
    /// Turn.
    pub turn: u32,
    /// The run's config (keys serialize redacted; the shard uses its own provider settings).
    pub config: SimulationConfig,
    /// The world's context now.
    pub context: String,
    /// Every utterance the acts below refer to, once.
    pub table: Vec<Utterance>,
    /// Who acts.
    pub acts: Vec<WireAct>,
    /// A resumed run: the shard answers recorded calls from what `acts` carry.
    #[serde(default)]
    pub resumed: bool,
}

/// One persona's act in a part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireAct {
    /// Index in the world's persona list.
    pub idx: u32,
    /// What it heard since it last acted.
    pub batch: Vec<WireEvent>,
    /// Its spawn and memory, when it is (re)made on this shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<Box<WirePlace>>,
    /// A resumed run's recorded answers to this act's calls: served again, not paid again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recorded: Vec<Exchange>,
}

/// A persona rebuilt on a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WirePlace {
    /// What it is.
    pub spawn: RemoteSpawn,
    /// Its memory before its batch.
    pub history: Vec<WireEvent>,
}

/// A memory event, with utterances as positions in the part's table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireEvent {
    /// Heard `table[i]`.
    H(u32),
    /// Said `table[i]`.
    S(u32),
    /// Anything else, as it is.
    E(MemoryEvent),
}

/// From a shard, journaled on the run's exchanges subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcomes {
    /// Run id.
    pub run: String,
    /// The shard.
    pub shard: String,
    /// What its personas did.
    pub items: Vec<WireOutcome>,
    /// The shard's supervisor stopped the run (a cost limit, a fatal provider error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopReason>,
}

/// One persona's act, done (or not found on the shard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireOutcome {
    /// Turn.
    pub turn: u32,
    /// Index.
    pub idx: u32,
    /// What became of it.
    pub kind: WireKind,
}

/// What became of an act.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireKind {
    /// It acted; `events` are its calls' exchanges, retries and fallbacks, for the journal.
    Acted {
        /// What it did.
        outcome: Outcome,
        /// A summary it made first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        /// Its calls' events.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<RunEvent>,
    },
    /// The shard has no such persona: send it again with its memory.
    Lost,
}

/// Builds a part's utterance table as events are encoded.
#[derive(Debug, Default)]
pub struct TableBuilder {
    table: Vec<Utterance>,
    at: HashMap<u64, u32>,
    bytes: usize,
}

impl TableBuilder {
    /// Encodes `events`, adding their utterances to the table once.
    pub fn encode(&mut self, events: &[MemoryEvent]) -> Vec<WireEvent> {
        events
            .iter()
            .map(|e| match e {
                MemoryEvent::Heard(u) => WireEvent::H(self.slot(u)),
                MemoryEvent::Said(u) => WireEvent::S(self.slot(u)),
                other => WireEvent::E(other.clone()),
            })
            .collect()
    }

    fn slot(&mut self, u: &Arc<Utterance>) -> u32 {
        let next = self.table.len() as u32;
        *self.at.entry(u.seq).or_insert_with(|| {
            self.bytes += u.text.len() + u.speaker.len() + u.role.len() + u.speaker_id.len() + 64;
            self.table.push((**u).clone());
            next
        })
    }

    /// Bytes of text in the table so far (a part's size, roughly), kept as it grows.
    pub fn text_bytes(&self) -> usize {
        self.bytes
    }

    /// The table.
    pub fn finish(self) -> Vec<Utterance> {
        self.table
    }
}

/// Decodes events against a part's table; a position outside it is an error.
pub fn decode(table: &[Arc<Utterance>], events: Vec<WireEvent>) -> Result<Vec<MemoryEvent>, ClusterError> {
    let at = |i: u32| {
        table.get(i as usize).cloned().ok_or_else(|| {
            ClusterError::Untrusted(format!("a turn part names utterance {i} of a table of {}", table.len()))
        })
    };
    events
        .into_iter()
        .map(|e| {
            Ok(match e {
                WireEvent::H(i) => MemoryEvent::Heard(at(i)?),
                WireEvent::S(i) => MemoryEvent::Said(at(i)?),
                WireEvent::E(e) => e,
            })
        })
        .collect()
}

impl TurnPart {
    /// Checks what a shard cannot take on trust: the run id and the config's bounds.
    pub fn check(&self) -> Result<(), ClusterError> {
        check_id("run id", &self.run)?;
        crate::config::limits::check(&self.config)
            .map_err(|e| ClusterError::Untrusted(format!("run {}: config {}: {}", self.run, e.key, e.message)))
    }
}

impl Outcomes {
    /// Checks the run and shard ids.
    pub fn check(&self) -> Result<(), ClusterError> {
        check_id("run id", &self.run)?;
        check_id("shard id", &self.shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(seq: u64, text: &str) -> Arc<Utterance> {
        Arc::new(Utterance::new(seq, 1, "a".into(), "A".into(), "r".into(), None, text.into()))
    }

    #[test]
    fn a_line_heard_twice_travels_once_and_decodes_to_the_same_events() {
        let (x, y) = (u(1, "hello"), u(2, "there"));
        let first = vec![MemoryEvent::Heard(x.clone()), MemoryEvent::Said(y.clone())];
        let second = vec![MemoryEvent::Heard(x.clone()), MemoryEvent::context(1, "ctx".into())];
        let mut t = TableBuilder::default();
        let (a, b) = (t.encode(&first), t.encode(&second));
        let table: Vec<Arc<Utterance>> = t.finish().into_iter().map(Arc::new).collect();
        assert_eq!(table.len(), 2);
        assert_eq!(decode(&table, a).unwrap(), first);
        assert_eq!(decode(&table, b).unwrap(), second);
    }

    #[test]
    fn a_position_outside_the_table_is_an_error_not_a_panic() {
        let e = decode(&[], vec![WireEvent::H(7)]).unwrap_err();
        assert!(e.to_string().contains("utterance 7 of a table of 0"), "{e}");
    }
}
