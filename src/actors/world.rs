//! The world actor: owns the clock and the turn loop.
//!
//! It opens with the seed message, asks personas to act according to the turn policy, delivers
//! each message to those who can hear it, applies interventions, and stops after the last turn,
//! on the overall timeout or on request, always emitting a final state.
//!
//! Delivery is batched: what a persona hears accumulates in its `pending` list (shared `Arc`s,
//! no mailbox traffic) and travels with its next `Act`. The world also keeps each persona's
//! `log` of everything it was told, which is how a restarted persona gets its memory back.

use std::sync::Arc;

use tokio::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};

use super::metrics::MetricsMsg;
use super::persona::{Outcome, PersonaMsg, PersonaSpawn, now_us};
use super::remote::{Rebuild, RemoteAct, RemoteSpawn, ToHosts};
use super::supervisor::{SupervisorMsg, persona_name};
use crate::config::{SimulationConfig, TurnPolicy};
use crate::memory::{MemoryEvent, Utterance};
use crate::persona::PersonaSpec;
use crate::prompt::{Reply, Sampling, WorldFacts};
use crate::record::transcript::{FinalState, RunEvent, SkipRecord, StopReason, TranscriptEntry};
use crate::rng::{self, Stream};
use crate::scenario::{Hearing, ResolvedAction, ResolvedIntervention};

/// The world actor (holds no data; see `WorldState`).
#[derive(Debug)]
pub struct WorldActor;

/// What the world starts from.
#[derive(Debug)]
pub struct WorldArgs {
    /// Personas at the start, in order.
    pub personas: Vec<PersonaSpec>,
    /// World name and topic.
    pub facts: Arc<WorldFacts>,
    /// Initial context.
    pub context: String,
    /// The opening message.
    pub opening: String,
    /// Who hears whom.
    pub hearing: Hearing,
    /// Interventions by turn.
    pub interventions: Vec<ResolvedIntervention>,
    /// Settings.
    pub config: Arc<SimulationConfig>,
    /// Spawns personas and carries calls.
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Counters.
    pub metrics: ActorRef<MetricsMsg>,
    /// Transcript events (never dropped).
    pub events: mpsc::UnboundedSender<RunEvent>,
    /// Receives the final state once.
    pub done: oneshot::Sender<FinalState>,
    /// Process-unique simulation number.
    pub instance: u64,
    /// The config sampling comes from (the recorded one until a fork's switch; else `config`).
    pub sampling_config: Arc<SimulationConfig>,
    /// A fork's switch to a new plan after its replayed history.
    pub switch: Option<Switch>,
    /// The run's span: every turn's span hangs from it, never from the turn before (spans that
    /// nested per turn would overflow the stack on long runs).
    pub span: tracing::Span,
    /// The provider, asked only for its models' context windows (the prompt budget).
    pub provider: Arc<dyn crate::llm::Provider>,
    /// How many personas act each turn (everyone when unset).
    pub activation: Option<crate::scenario::Activation>,
    /// Personas live elsewhere (a sharded run): acts go here, not to local actors.
    pub remote: Option<mpsc::UnboundedSender<ToHosts>>,
    /// The process ends with the run ([`crate::engine::handle::RunOptions::process_ends`]).
    pub process_ends: bool,
}

/// Where a fork leaves its recorded history: after turn `at_turn`, the world takes `plan` and
/// `config` (context, hearing, interventions, personas, sampling).
#[derive(Debug, Clone)]
pub struct Switch {
    /// The last replayed turn.
    pub at_turn: u32,
    /// The plan from then on.
    pub plan: crate::scenario::RunPlan,
    /// The config sampling comes from from then on.
    pub config: Arc<SimulationConfig>,
}

/// Messages to the world. Plain data apart from reply ports.
#[derive(Debug)]
pub enum WorldMsg {
    /// Open the simulation.
    Start,
    /// Begin the next turn.
    NextTurn,
    /// A persona finished acting.
    Acted {
        /// Turn it acted in.
        turn: u32,
        /// Persona index.
        idx: usize,
        /// What it did.
        outcome: Outcome,
        /// A new running summary it made before acting.
        summary: Option<Arc<str>>,
    },
    /// Stop now (timeout, Ctrl-C, cancel).
    Stop(StopReason),
    /// The supervisor saw persona `idx` fail; answer with its memory.
    PersonaFailed {
        /// Index.
        idx: usize,
    },
    /// Persona `idx` is running again.
    PersonaRestarted {
        /// Index.
        idx: usize,
    },
    /// Reply with persona `idx`'s memory log.
    GetLog(usize, RpcReplyPort<Vec<MemoryEvent>>),
    /// Reply with what rebuilds these personas elsewhere (a sharded run): their spawn and
    /// their memory before their latest batch.
    Rebuild(Vec<usize>, RpcReplyPort<Vec<Rebuild>>),
}

#[derive(Debug)]
struct Slot {
    id: Arc<str>,
    name: Arc<str>,
    role: Arc<str>,
    /// The persona as it joined (or as a fork's plan has it): its actor is made from it when it
    /// first acts.
    spec: Arc<PersonaSpec>,
    /// Its weight in the per-turn draw (`activation.weight`), 1.0 without one.
    weight: f64,
    active: bool,
    pending: Vec<MemoryEvent>,
    log: Vec<MemoryEvent>,
    /// The persona's actor, started the first time it acts: a persona that never acts (most of
    /// a population when few act each turn) costs a slot, not an actor.
    actor: Option<ActorRef<PersonaMsg>>,
    /// Between `PersonaFailed` and `PersonaRestarted`: its respawn history is already fixed, so
    /// new events stay in `pending` until the new actor can take them.
    restarting: bool,
    /// Length of `log` before the latest batch it was sent (a remote persona's rebuild point).
    mark: usize,
    /// True once a remote rebuild wrote its system prompt (facts left out are told once).
    prompted: bool,
    /// Its place in this turn's order (finding it by a scan made a turn quadratic).
    order_pos: usize,
}

#[derive(Debug)]
enum Listeners {
    Everyone,
    Graph(Vec<Vec<usize>>),
}

/// The world's state.
#[derive(Debug)]
pub struct WorldState {
    config: Arc<SimulationConfig>,
    facts: Arc<WorldFacts>,
    context: Arc<str>,
    opening: String,
    hearing: Hearing,
    listeners: Listeners,
    interventions: Vec<ResolvedIntervention>,
    slots: Vec<Slot>,
    supervisor: ActorRef<SupervisorMsg>,
    metrics: ActorRef<MetricsMsg>,
    events: mpsc::UnboundedSender<RunEvent>,
    done: Option<oneshot::Sender<FinalState>>,
    instance: u64,
    policy: TurnPolicy,
    max_turns: u32,
    turn: u32,
    turn_started: Instant,
    order: Vec<usize>,
    next: usize,
    awaiting: Vec<bool>,
    /// Addressees by name, kept as slots are added.
    names: NameIndex,
    outstanding: usize,
    parallel_results: Vec<Option<Outcome>>,
    seq: u64,
    finished: bool,
    /// Persona turns with an outcome, and how many of them were skipped: a run is only a
    /// success when at most half were skipped (see [`outcome_rule`]).
    tally: Tally,
    /// True between the end of a turn and the start of the next.
    turn_complete: bool,
    sampling_config: Arc<SimulationConfig>,
    switch: Option<Switch>,
    run_span: tracing::Span,
    turn_span: tracing::Span,
    provider: Arc<dyn crate::llm::Provider>,
    activation: Option<crate::scenario::Activation>,
    remote: Option<mpsc::UnboundedSender<ToHosts>>,
    process_ends: bool,
}

impl Actor for WorldActor {
    type Msg = WorldMsg;
    type State = WorldState;
    type Arguments = WorldArgs;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, a: WorldArgs) -> Result<Self::State, ActorProcessingErr> {
        let c = a.config.clone();
        let mut st = WorldState {
            // Remote personas are asked all at once (the carrier refuses other policies).
            policy: if a.remote.is_some() { TurnPolicy::Parallel } else { c.simulation.policy() },
            max_turns: c.simulation.max_turns,
            config: a.config,
            facts: a.facts,
            context: a.context.into(),
            opening: a.opening,
            hearing: a.hearing,
            listeners: Listeners::Everyone,
            interventions: a.interventions,
            slots: Vec::with_capacity(a.personas.len()),
            supervisor: a.supervisor,
            metrics: a.metrics,
            events: a.events,
            done: Some(a.done),
            instance: a.instance,
            turn: 0,
            turn_started: Instant::now(),
            order: Vec::new(),
            next: 0,
            awaiting: Vec::new(),
            names: NameIndex::default(),
            outstanding: 0,
            parallel_results: Vec::new(),
            seq: 0,
            finished: false,
            tally: Tally::default(),
            turn_complete: true,
            sampling_config: a.sampling_config,
            switch: a.switch,
            turn_span: a.span.clone(),
            run_span: a.span,
            provider: a.provider,
            activation: a.activation,
            remote: a.remote,
            process_ends: a.process_ends,
        };
        st.slots.reserve(a.personas.len());
        for p in a.personas {
            add_persona(&mut st, p);
        }
        recompute_listeners(&mut st);
        Ok(st)
    }

    async fn post_start(&self, myself: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        let limit = crate::config::limits::secs(st.config.performance.timeout_seconds);
        ractor::time::send_after(limit, myself.get_cell(), || WorldMsg::Stop(StopReason::Timeout));
        if let Some(r) = &st.remote {
            let _ = r.send(ToHosts::Started { world: myself, metrics: st.metrics.clone(), events: st.events.clone() });
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if st.process_ends {
            // What every persona heard, one entry at a time: the operating system reclaims it
            // at once when the process ends (a 100,000-persona run spent 4% of its CPU freeing it).
            std::mem::forget(std::mem::take(&mut st.slots));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if st.finished {
            match msg {
                WorldMsg::GetLog(idx, reply) => {
                    let _ = reply.send(st.slots.get(idx).map(|s| s.log.clone()).unwrap_or_default());
                }
                WorldMsg::Rebuild(_, reply) => {
                    let _ = reply.send(Vec::new());
                }
                _ => {}
            }
            return Ok(());
        }
        match msg {
            WorldMsg::Start => {
                open(st);
                next_turn(&myself, &st.run_span);
            }
            WorldMsg::NextTurn => begin_turn(&myself, st).await,
            WorldMsg::Acted { turn, idx, outcome, summary } => on_acted(&myself, st, turn, idx, outcome, summary),
            WorldMsg::Stop(reason) => finish(st, reason),
            WorldMsg::PersonaFailed { idx } => {
                if let Some(s) = st.slots.get_mut(idx) {
                    s.restarting = true;
                    let _ = st.supervisor.cast(SupervisorMsg::Respawn { idx, history: s.log.clone() });
                }
            }
            WorldMsg::PersonaRestarted { idx } => on_restarted(st, idx),
            WorldMsg::GetLog(idx, reply) => {
                let _ = reply.send(st.slots.get(idx).map(|s| s.log.clone()).unwrap_or_default());
            }
            WorldMsg::Rebuild(idxs, reply) => {
                let n = st.slots.len();
                let r = idxs.into_iter().filter(|&i| i < n).map(|i| rebuild(st, i)).collect();
                let _ = reply.send(r);
            }
        }
        Ok(())
    }
}

/// The personas that act this turn, in persona order: `activation` draws them (seeded by the
/// run seed and the turn; weighted when it names a weight field) from `candidates`.
fn draw_active(
    a: &crate::scenario::Activation,
    candidates: &[usize],
    slots: &[Slot],
    run_seed: u64,
    turn: u32,
) -> Vec<usize> {
    let n = candidates.len();
    let k = match (a.share, a.count) {
        (Some(s), _) => ((n as f64 * s).ceil() as usize).clamp(1, n.max(1)),
        (None, Some(c)) => c.min(n),
        (None, None) => n,
    };
    if k >= n {
        return candidates.to_vec();
    }
    let weights: Vec<f64> = candidates.iter().map(|&i| slots[i].weight).collect();
    let mut rng = rng::stream(run_seed, Stream::Activation { turn });
    let mut picked: Vec<usize> =
        crate::rng::weighted_sample(&weights, k, &mut rng).into_iter().map(|j| candidates[j]).collect();
    picked.sort_unstable();
    picked
}

/// A persona's system prompt within its model's budget; facts left out are reported (journal,
/// results, a notice) when `tell`, never dropped silently (a remote rebuild tells them once).
fn persona_system(st: &WorldState, p: &PersonaSpec, model: &str, tell: bool) -> Arc<str> {
    let budget = crate::prompt::prompt_budget(st.config.llm.persona_budget_tokens, st.provider.context_window(model));
    let prompt = crate::prompt::persona_prompt(p, budget);
    if tell && !prompt.dropped.is_empty() {
        tracing::info!(persona = %p.id, dropped = prompt.dropped.len(), budget, "facts left out of the prompt");
        emit(
            st,
            RunEvent::PromptTrimmed(crate::record::transcript::PromptTrim {
                persona: p.id.clone(),
                model: model.to_string(),
                budget_tokens: budget,
                prompt_tokens: prompt.tokens.unwrap_or_default(),
                dropped: prompt.dropped,
            }),
        );
    }
    prompt.text
}

/// A persona's model and sampling: its own overrides, else the config's.
fn sampling_for(p: &PersonaSpec, c: &SimulationConfig) -> Sampling {
    Sampling {
        model: p.model.clone().filter(|m| !m.trim().is_empty()).unwrap_or_else(|| c.llm.model.clone()),
        temperature: p.temperature.unwrap_or(c.llm.temperature),
        top_p: c.llm.top_p,
        max_tokens: c.llm.max_tokens,
        seed: c.llm.send_seed.then(|| rng::derive(c.simulation.run_seed, Stream::PersonaSampling { persona: &p.id })),
        json_actions: c.llm.json_actions,
        plain: c.llm.prompt_style == crate::config::PromptStyle::Plain,
    }
}

/// Adds a persona's slot; its actor starts when it first acts ([`ensure_actor`]).
fn add_persona(st: &mut WorldState, p: PersonaSpec) -> usize {
    let idx = st.slots.len();
    let weight = match st.activation.as_ref().and_then(|a| a.weight.as_deref()) {
        Some(field) => activation_weight(&p, field),
        None => 1.0,
    };
    let spec = Arc::new(p);
    st.slots.push(Slot {
        id: spec.id.as_str().into(),
        name: spec.name.as_str().into(),
        role: spec.role.as_str().into(),
        spec,
        weight,
        active: true,
        pending: Vec::new(),
        log: Vec::new(),
        actor: None,
        restarting: false,
        mark: 0,
        prompted: false,
        order_pos: 0,
    });
    st.awaiting.push(false);
    st.names.add(&st.slots[idx], idx);
    idx
}

/// A persona's weight in the per-turn draw: the number in its field `field` (a native
/// persona's own field, or a TinyTroupe agent's `persona` field), 1 when it has none.
fn activation_weight(p: &PersonaSpec, field: &str) -> f64 {
    let v = match &p.origin {
        crate::persona::Origin::TinyTroupe { original } => original.get("persona").and_then(|o| o.get(field)),
        crate::persona::Origin::Native => p.extra.get(field),
    };
    match v {
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(1.0),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(1.0),
        _ => 1.0,
    }
}

/// Starts persona `idx`'s actor if it has none yet: its system prompt is written then (within
/// its model's budget), with the sampling in force.
async fn ensure_actor(myself: &ActorRef<WorldMsg>, st: &mut WorldState, idx: usize) -> Result<(), String> {
    if st.slots[idx].actor.is_some() {
        return Ok(());
    }
    let spec = st.slots[idx].spec.clone();
    let sampling = sampling_for(&spec, &st.sampling_config);
    let system = persona_system(st, &spec, &sampling.model, true);
    let c = &st.config;
    let spawn = PersonaSpawn {
        system,
        facts: st.facts.clone(),
        sampling,
        memory_prefix: c.simulation.memory_prefix,
        memory_recent: c.simulation.memory_recent,
        consolidate_every: c.simulation.consolidate_every,
        world: myself.get_derived(),
        spec,
    };
    let history = st.slots[idx].log.clone();
    let actor = st
        .supervisor
        .call(|reply| SupervisorMsg::SpawnPersona { idx, spawn: Box::new(spawn), history, reply }, None)
        .await
        .map_err(|e| format!("supervisor unreachable: {e}"))?;
    match actor {
        ractor::rpc::CallResult::Success(Ok(a)) => {
            st.slots[idx].actor = Some(a);
            Ok(())
        }
        ractor::rpc::CallResult::Success(Err(e)) => Err(e),
        _ => Err("the supervisor did not answer the spawn request".into()),
    }
}

fn recompute_listeners(st: &mut WorldState) {
    // Resolved into `Edges` when the scenario is read; a plan made by hand that still names a
    // file is read here, once.
    if let Hearing::RelationsFile(path) | Hearing::DirectedFile(path) = &st.hearing {
        let directed = matches!(st.hearing, Hearing::DirectedFile(_));
        st.hearing = match crate::scenario::edges::read_edges(path, directed) {
            Ok(e) => Hearing::Edges(e),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the hearing graph; everyone hears everyone");
                Hearing::Everyone
            }
        };
    }
    let by_id: std::collections::HashMap<&str, usize> = st.slots.iter().enumerate().map(|(i, s)| (&*s.id, i)).collect();
    let index_of = |id: &str| by_id.get(id).copied();
    st.listeners = match &st.hearing {
        Hearing::Everyone => Listeners::Everyone,
        Hearing::Relations(g) => {
            let mut l = vec![Vec::new(); st.slots.len()];
            for (a, bs) in g {
                for b in bs {
                    if let (Some(i), Some(j)) = (index_of(a), index_of(b))
                        && i != j
                    {
                        l[i].push(j);
                        l[j].push(i);
                    }
                }
            }
            for v in &mut l {
                v.sort_unstable();
                v.dedup();
            }
            Listeners::Graph(l)
        }
        Hearing::Directed(g) => {
            // listener -> speakers it hears; invert to speaker -> listeners.
            let mut l = vec![Vec::new(); st.slots.len()];
            for (listener, speakers) in g {
                for s in speakers {
                    if let (Some(li), Some(si)) = (index_of(listener), index_of(s))
                        && li != si
                    {
                        l[si].push(li);
                    }
                }
            }
            for v in &mut l {
                v.sort_unstable();
                v.dedup();
            }
            Listeners::Graph(l)
        }
        Hearing::Edges(e) => {
            // Positions in the file's id list, mapped once to slots: linear in ids and pairs.
            let slot: Vec<Option<usize>> = e.ids.iter().map(|id| index_of(id)).collect();
            let mut l = vec![Vec::new(); st.slots.len()];
            for &(a, b) in &e.pairs {
                let (Some(Some(i)), Some(Some(j))) = (slot.get(a as usize), slot.get(b as usize)) else { continue };
                if i == j {
                    continue;
                }
                if e.directed {
                    // (listener, speaker): the speaker's words reach the listener.
                    l[*j].push(*i);
                } else {
                    l[*i].push(*j);
                    l[*j].push(*i);
                }
            }
            for v in &mut l {
                v.sort_unstable();
                v.dedup();
            }
            Listeners::Graph(l)
        }
        // Read into `Edges` before this match.
        Hearing::RelationsFile(_) | Hearing::DirectedFile(_) => Listeners::Everyone,
    };
}

fn emit(st: &WorldState, e: RunEvent) {
    // The receiver lives as long as the engine waits for the run; a send error means the
    // engine is gone, and there is no one left to tell.
    let _ = st.events.send(e);
}

fn moderator_says(st: &mut WorldState, turn: u32, text: &str) {
    let u =
        Arc::new(Utterance::new(st.seq, turn, "moderator".into(), "Moderator".into(), "".into(), None, text.into()));
    st.seq += 1;
    for s in st.slots.iter_mut().filter(|s| s.active) {
        s.pending.push(MemoryEvent::Heard(u.clone()));
    }
    emit(st, RunEvent::Message(entry(&u, None)));
    let _ = st.metrics.cast(MetricsMsg::Message);
}

fn entry(u: &Utterance, call: Option<&super::persona::CallInfo>) -> TranscriptEntry {
    TranscriptEntry {
        seq: u.seq,
        turn: u.turn,
        speaker: u.speaker.to_string(),
        speaker_id: u.speaker_id.to_string(),
        role: if u.speaker_id.as_ref() == "moderator" { "moderator".into() } else { u.role.to_string() },
        text: u.text.to_string(),
        to: u.to.as_ref().map(|t| t.to_string()),
        timestamp: chrono::Utc::now(),
        model: call.map(|c| c.model.clone()),
        prompt_tokens: call.map(|c| c.prompt_tokens),
        completion_tokens: call.map(|c| c.completion_tokens),
        latency_ms: call.map(|c| c.latency_ms),
        attempts: call.map(|c| c.attempts),
    }
}

fn open(st: &mut WorldState) {
    let text = if st.opening.trim().is_empty() { st.facts.topic.to_string() } else { st.opening.clone() };
    if !text.trim().is_empty() {
        moderator_says(st, 0, &text);
    }
}

async fn begin_turn(myself: &ActorRef<WorldMsg>, st: &mut WorldState) {
    if st.turn >= st.max_turns {
        let reason = outcome_rule(st.tally.turns, st.tally.skipped, st.tally.last_skip.as_deref());
        finish(st, reason);
        return;
    }
    st.turn += 1;
    st.turn_complete = false;
    st.turn_started = Instant::now();
    // A sibling of the last turn's span, under the run's: what a message sent in this turn carries.
    st.turn_span = tracing::info_span!(parent: &st.run_span, "turn", turn = st.turn);
    let turn = st.turn;
    emit(st, RunEvent::TurnStarted { turn });
    if st.switch.as_ref().is_some_and(|s| s.at_turn + 1 == turn)
        && let Some(sw) = st.switch.take()
    {
        apply_switch(st, sw);
    }
    let due: Vec<ResolvedIntervention> = st.interventions.iter().filter(|i| i.turn == turn).cloned().collect();
    for iv in due {
        apply_intervention(st, iv.action);
    }
    let mut order: Vec<usize> = (0..st.slots.len()).filter(|&i| st.slots[i].active).collect();
    if let Some(a) = &st.activation {
        order = draw_active(a, &order, &st.slots, st.sampling_config.simulation.run_seed, turn);
    }
    if st.policy == TurnPolicy::RandomOrder {
        rng::stream(st.sampling_config.simulation.run_seed, Stream::TurnOrder { turn }).shuffle(&mut order);
    }
    if st.remote.is_some() {
        ask_remote(myself, st, order);
        return;
    }
    // Actors start when their persona first acts.
    let mut ready = Vec::with_capacity(order.len());
    for i in order {
        match ensure_actor(myself, st, i).await {
            Ok(()) => ready.push(i),
            Err(e) => {
                tracing::error!(persona = %st.slots[i].id, error = %e, "could not start the persona; it sits this turn out")
            }
        }
    }
    let order = ready;
    for (pos, &i) in order.iter().enumerate() {
        st.slots[i].order_pos = pos;
    }
    st.order = order;
    st.next = 0;
    st.outstanding = 0;
    st.parallel_results = vec![None; st.order.len()];
    if st.order.is_empty() {
        end_turn(myself, st);
        return;
    }
    match st.policy {
        TurnPolicy::Parallel => {
            let first = st.config.performance.batch_size.max(1).min(st.order.len());
            for _ in 0..first {
                ask_next(st);
            }
        }
        TurnPolicy::RoundRobin | TurnPolicy::RandomOrder => ask_next(st),
    }
}

/// A fork leaves its history: the new plan's context, hearing, interventions and personas, and
/// the new config's sampling, from this turn on.
fn apply_switch(st: &mut WorldState, sw: Switch) {
    let turn = st.turn;
    let plan = sw.plan;
    st.sampling_config = sw.config;
    st.facts = Arc::new(WorldFacts { world: plan.world_name.as_str().into(), topic: plan.topic.as_str().into() });
    if *st.context != *plan.context {
        st.context = plan.context.as_str().into();
        let e = MemoryEvent::context(turn, st.context.clone());
        for s in st.slots.iter_mut().filter(|s| s.active) {
            s.pending.push(e.clone());
        }
    }
    st.interventions = plan.interventions.iter().filter(|i| i.turn > sw.at_turn).cloned().collect();
    st.hearing = plan.hearing.clone();
    st.activation = plan.activation.clone();
    let wanted: Vec<&str> = plan.personas.iter().map(|p| p.id.as_str()).collect();
    for s in st.slots.iter_mut().filter(|s| s.active && !wanted.contains(&&*s.id)) {
        s.active = false;
        s.pending.clear();
        if let Some(a) = &s.actor {
            a.stop(Some("not in the fork's plan".into()));
        }
    }
    for p in &plan.personas {
        match st.slots.iter().position(|s| *s.id == *p.id) {
            Some(i) => {
                let spec = Arc::new(p.clone());
                st.slots[i].spec = spec.clone();
                // A persona that has not acted yet takes the new spec when its actor starts.
                if let Some(actor) = st.slots[i].actor.clone() {
                    let sampling = sampling_for(p, &st.sampling_config);
                    let system = persona_system(st, p, &sampling.model, true);
                    let _ = actor.cast(PersonaMsg::Reconfigure { spec, system, facts: st.facts.clone(), sampling });
                }
            }
            None => {
                add_persona(st, p.clone());
            }
        }
    }
    recompute_listeners(st);
    emit(
        st,
        RunEvent::Intervention {
            turn,
            description: format!("fork: the run leaves its recorded history after turn {}", sw.at_turn),
        },
    );
}

fn apply_intervention(st: &mut WorldState, action: ResolvedAction) {
    let turn = st.turn;
    let description = match action {
        ResolvedAction::Broadcast(text) => {
            moderator_says(st, turn, &text);
            format!("broadcast: {text}")
        }
        ResolvedAction::SetContext(text) => {
            st.context = text.as_str().into();
            let e = MemoryEvent::context(turn, st.context.clone());
            for s in st.slots.iter_mut().filter(|s| s.active) {
                s.pending.push(e.clone());
            }
            format!("context changed: {text}")
        }
        ResolvedAction::AddPersona(p) => {
            let name = p.name.clone();
            let idx = add_persona(st, *p);
            recompute_listeners(st);
            let e = MemoryEvent::context(turn, st.context.clone());
            st.slots[idx].pending.push(e);
            format!("{name} joined")
        }
        ResolvedAction::RemovePersona(id) => match st.slots.iter_mut().find(|s| &*s.id == id.as_str()) {
            Some(s) => {
                s.active = false;
                s.pending.clear();
                if let Some(a) = &s.actor {
                    a.stop(Some("removed by an intervention".into()));
                }
                format!("{} left", s.name)
            }
            None => format!("{id} was not present"),
        },
    };
    tracing::info!(turn, %description, "intervention");
    emit(st, RunEvent::Intervention { turn, description });
}

/// A sharded run's turn: everyone in `order` is asked at once, in one message to the carrier
/// (the `Parallel` policy: all act on the same snapshot, delivered in persona order).
fn ask_remote(myself: &ActorRef<WorldMsg>, st: &mut WorldState, order: Vec<usize>) {
    st.next = order.len();
    st.outstanding = order.len();
    st.parallel_results = vec![None; order.len()];
    let mut acts = Vec::with_capacity(order.len());
    for (pos, &idx) in order.iter().enumerate() {
        st.awaiting[idx] = true;
        let s = &mut st.slots[idx];
        s.order_pos = pos;
        let batch = std::mem::take(&mut s.pending);
        s.mark = s.log.len();
        s.log.extend(batch.iter().cloned());
        acts.push(RemoteAct { idx, id: s.id.clone(), batch });
    }
    st.order = order;
    if st.order.is_empty() {
        end_turn(myself, st);
        return;
    }
    let turn = ToHosts::Turn { turn: st.turn, context: st.context.clone(), acts, span: st.turn_span.clone() };
    if st.remote.as_ref().is_none_or(|r| r.send(turn).is_err()) {
        finish(st, StopReason::Failed("the shards' carrier is gone; the run cannot go on".into()));
    }
}

/// What rebuilds persona `idx` on a shard: its spawn (the system prompt within its model's
/// budget) and its memory before its latest batch.
fn rebuild(st: &mut WorldState, idx: usize) -> Rebuild {
    let spec = st.slots[idx].spec.clone();
    let sampling = sampling_for(&spec, &st.sampling_config);
    // Written again for a move rather than kept: 100,000 prompts would weigh on the coordinator.
    let tell = !std::mem::replace(&mut st.slots[idx].prompted, true);
    let system = persona_system(st, &spec, &sampling.model, tell);
    let c = &st.config.simulation;
    let spawn = RemoteSpawn {
        spec: (*spec).clone(),
        system: system.to_string(),
        facts: (*st.facts).clone(),
        sampling,
        memory_prefix: c.memory_prefix,
        memory_recent: c.memory_recent,
        consolidate_every: c.consolidate_every,
    };
    let s = &st.slots[idx];
    Rebuild { idx, spawn, history: s.log[..s.mark.min(s.log.len())].to_vec() }
}

fn ask_next(st: &mut WorldState) {
    let Some(&idx) = st.order.get(st.next) else {
        return;
    };
    st.next += 1;
    st.outstanding += 1;
    st.awaiting[idx] = true;
    send_act(st, idx);
}

fn send_act(st: &mut WorldState, idx: usize) {
    let s = &mut st.slots[idx];
    if s.restarting {
        return; // `on_restarted` asks again, with everything still pending
    }
    let batch = std::mem::take(&mut s.pending);
    s.log.extend(batch.iter().cloned());
    let msg = PersonaMsg::Act { turn: st.turn, batch, context: st.context.clone(), sent_us: now_us() };
    let sent = match &s.actor {
        Some(a) => st.turn_span.in_scope(|| a.cast(msg)).is_ok(),
        None => false,
    };
    if !sent {
        tracing::warn!(persona = %s.id, "persona mailbox closed; waiting for its restart");
    }
}

fn on_acted(
    myself: &ActorRef<WorldMsg>,
    st: &mut WorldState,
    turn: u32,
    idx: usize,
    outcome: Outcome,
    summary: Option<Arc<str>>,
) {
    if turn != st.turn || !st.awaiting.get(idx).copied().unwrap_or(false) {
        return; // a late answer from an earlier turn or an unknown persona
    }
    st.awaiting[idx] = false;
    st.outstanding -= 1;
    if let Some(s) = summary {
        st.slots[idx].log.push(MemoryEvent::summary(turn, s));
    }
    match st.policy {
        TurnPolicy::Parallel => {
            let pos = st.slots[idx].order_pos;
            if st.order.get(pos) == Some(&idx) {
                st.parallel_results[pos] = Some(outcome);
            }
            if st.next < st.order.len() {
                ask_next(st);
            } else if st.outstanding == 0 {
                // Everyone acted on the same snapshot; deliver in persona order.
                let results = std::mem::take(&mut st.parallel_results);
                let order = st.order.clone();
                for (idx, r) in order.into_iter().zip(results) {
                    if let Some(o) = r {
                        record(st, idx, o);
                        if st.finished {
                            return;
                        }
                    }
                }
                end_turn(myself, st);
            }
        }
        TurnPolicy::RoundRobin | TurnPolicy::RandomOrder => {
            record(st, idx, outcome);
            if st.finished {
                return;
            }
            if st.next < st.order.len() {
                ask_next(st);
            } else {
                end_turn(myself, st);
            }
        }
    }
}

fn listeners_of(st: &WorldState, speaker: usize) -> Vec<usize> {
    match &st.listeners {
        Listeners::Everyone => (0..st.slots.len()).filter(|&i| i != speaker && st.slots[i].active).collect(),
        Listeners::Graph(l) => {
            l.get(speaker).map(|v| v.iter().copied().filter(|&i| st.slots[i].active).collect()).unwrap_or_default()
        }
    }
}

/// Persona turns that ended, and the skipped among them.
#[derive(Debug, Default)]
struct Tally {
    turns: u64,
    skipped: u64,
    skipped_this_turn: u64,
    turns_this_turn: u64,
    last_skip: Option<String>,
}

/// How a run that reached its last turn ends: completed, unless more than half of its persona
/// turns were skipped (then it did not do its work, and says so).
pub fn outcome_rule(turns: u64, skipped: u64, last_skip: Option<&str>) -> StopReason {
    if turns > 0 && skipped * 2 > turns {
        return StopReason::Failed(format!(
            "{skipped} of {turns} persona turns were skipped, more than half; the run did not do its work{}",
            last_skip.map(|r| format!(" (last reason: {r})")).unwrap_or_default()
        ));
    }
    StopReason::Completed
}

/// Applies one persona's outcome: transcript, delivery, counters.
fn record(st: &mut WorldState, idx: usize, outcome: Outcome) {
    let turn = st.turn;
    let id = st.slots[idx].id.to_string();
    st.tally.turns += 1;
    st.tally.turns_this_turn += 1;
    if let Outcome::Skipped { reason } = &outcome {
        st.tally.skipped += 1;
        st.tally.skipped_this_turn += 1;
        st.tally.last_skip = Some(reason.clone());
    }
    match outcome {
        Outcome::Replied { reply: Reply::Speak { text, to }, call } => {
            let to_name = to.and_then(|t| resolve_name(st, &t));
            let s = &st.slots[idx];
            let u = Arc::new(Utterance::new(
                st.seq,
                turn,
                s.id.clone(),
                s.name.clone(),
                s.role.clone(),
                to_name,
                text.into(),
            ));
            st.seq += 1;
            for l in listeners_of(st, idx) {
                st.slots[l].pending.push(MemoryEvent::Heard(u.clone()));
            }
            st.slots[idx].pending.push(MemoryEvent::Said(u.clone()));
            let _ = st.metrics.cast(MetricsMsg::Message);
            emit(st, RunEvent::Message(entry(&u, Some(&call))));
        }
        Outcome::Replied { reply: Reply::Think(text), .. } => {
            st.slots[idx].log.push(MemoryEvent::thought(turn, text.as_str().into()));
            emit(st, RunEvent::Thought { turn, persona: id, text });
        }
        Outcome::Replied { reply: Reply::Pass, .. } => emit(st, RunEvent::Passed { turn, persona: id }),
        Outcome::Skipped { reason } => {
            let _ = st.metrics.cast(MetricsMsg::Skipped);
            tracing::warn!(turn, persona = %id, %reason, "turn skipped");
            emit(st, RunEvent::Skipped(SkipRecord { turn, persona: id.clone(), reason: reason.clone() }));
            if !st.config.performance.graceful_degradation {
                finish(
                    st,
                    StopReason::Failed(format!(
                        "persona {id} could not complete turn {turn}: {reason} (graceful_degradation is off)"
                    )),
                );
            }
        }
    }
}

/// Matches an addressee as written ("Marcus", "@Marcus Rivera") to a persona name: the first
/// persona whose whole name (any case) or id matches, else the first with a name word that does.
fn resolve_name(st: &WorldState, written: &str) -> Option<Arc<str>> {
    let w = written.trim().trim_start_matches('@').to_lowercase();
    st.names.exact.get(&w).or_else(|| st.names.word.get(&w)).map(|&i| st.slots[i].name.clone())
}

/// Addressee lookups in constant time (a reply's `@Name` among a million personas), first slot
/// wins, as a scan in slot order would find.
#[derive(Debug, Default)]
struct NameIndex {
    /// Lower-cased whole names, and ids as written.
    exact: std::collections::HashMap<String, usize>,
    /// Lower-cased words of names.
    word: std::collections::HashMap<String, usize>,
}

impl NameIndex {
    fn add(&mut self, s: &Slot, idx: usize) {
        let lower = s.name.to_lowercase();
        for part in lower.split_whitespace() {
            self.word.entry(part.to_string()).or_insert(idx);
        }
        // A name and an id both match in the first pass; the earlier slot wins either way.
        self.exact.entry(lower).or_insert(idx);
        self.exact.entry(s.id.to_string()).or_insert(idx);
    }
}

fn end_turn(myself: &ActorRef<WorldMsg>, st: &mut WorldState) {
    let _ = st.metrics.cast(MetricsMsg::TurnDuration { us: st.turn_started.elapsed().as_micros() as u64 });
    emit(st, RunEvent::TurnEnded { turn: st.turn });
    st.turn_complete = true;
    st.turn_span = st.run_span.clone();
    let t = &mut st.tally;
    let (this_turn, skipped) = (std::mem::take(&mut t.turns_this_turn), std::mem::take(&mut t.skipped_this_turn));
    // Nothing has ever worked and every persona of this turn failed: the provider cannot
    // answer, and more turns would only pay for more failures.
    if this_turn > 0 && skipped == this_turn && t.skipped == t.turns {
        let reason = t.last_skip.clone().unwrap_or_default();
        finish(
            st,
            StopReason::Failed(format!(
                "every persona turn so far failed ({skipped} in turn {}); stopped rather than go on failing: {reason}",
                st.turn
            )),
        );
        return;
    }
    next_turn(myself, &st.run_span);
}

/// Asks for the next turn, carrying the run's span (never the span of whatever ended this turn:
/// spans that nest per turn would overflow the stack on long runs).
fn next_turn(myself: &ActorRef<WorldMsg>, run_span: &tracing::Span) {
    let _in_run = run_span.enter();
    let _ = myself.cast(WorldMsg::NextTurn);
}

fn on_restarted(st: &mut WorldState, idx: usize) {
    let Some(cell) = ractor::registry::where_is(persona_name(st.instance, idx)) else {
        return;
    };
    st.slots[idx].actor = Some(cell.into());
    st.slots[idx].restarting = false;
    if st.awaiting.get(idx).copied().unwrap_or(false) {
        // Its memory already holds the batch it was given; ask again for this turn.
        send_act(st, idx);
    }
}

fn finish(st: &mut WorldState, reason: StopReason) {
    if st.finished {
        return;
    }
    st.finished = true;
    let completed_turns = if st.turn_complete { st.turn } else { st.turn.saturating_sub(1) };
    let state = FinalState { success: reason == StopReason::Completed, completed_turns, reason };
    if let Some(r) = &st.remote {
        let _ = r.send(ToHosts::Ended);
    }
    emit(st, RunEvent::Finished(state.clone()));
    // The run's spans close before anyone hears it ended (so an exporter flushed at exit has
    // them), whatever becomes of this actor afterwards.
    st.turn_span = tracing::Span::none();
    st.run_span = tracing::Span::none();
    if let Some(done) = st.done.take() {
        let _ = done.send(state);
    }
}
