//! The supervisor actor: every LLM call goes through it, and it supervises the persona actors.
//!
//! For calls it applies `max_workers` (concurrent calls), `rate_limit_delay` (spacing between
//! call starts), the per-call `persona_timeout`, retries with backoff and full jitter, the
//! fallback model, and finally gives up (the persona then records a skipped turn). The
//! decisions are the pure functions of [`policy`]. Calls run in tasks that post their result
//! back as a message, so the mailbox never waits on the network.
//!
//! For personas: they are spawned linked to it; one that panics is restarted with its memory,
//! rebuilt from the world's record of what it was told (asked for by message, never by a
//! blocking call, so the two actors cannot deadlock).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::Instrument;

use super::metrics::MetricsMsg;
use super::persona::{CallFailure, CallSuccess, CallTag, PersonaActor, PersonaArgs, PersonaMsg, PersonaSpawn};
use super::world::WorldMsg;
use crate::config::SimulationConfig;
use crate::cost::Pricing;
use crate::llm::retry::{self as policy, Decision, RetryPolicy, decide};
use crate::llm::{CallContext, CallStarted, ChatRequest, ChatResponse, ErrorKind, LlmError, Provider};
use crate::memory::MemoryEvent;
use crate::record::transcript::{RunEvent, StopReason};
use crate::rng::{self, SplitMix64, Stream};
use tokio::sync::mpsc;

/// The supervisor actor (holds no data; see `SupervisorState`).
#[derive(Debug)]
pub struct SupervisorActor;

/// What the supervisor is given at start.
#[derive(Debug)]
pub struct SupervisorArgs {
    /// The provider every call goes to.
    pub provider: Arc<dyn Provider>,
    /// Settings.
    pub config: Arc<SimulationConfig>,
    /// Where counters go.
    pub metrics: ActorRef<MetricsMsg>,
    /// Process-unique number of this simulation, used in actor names.
    pub instance: u64,
    /// Prices, for live cost and `max_cost_usd`.
    pub pricing: Arc<Pricing>,
    /// Where exchanges, retries and fallbacks are reported (the journal).
    pub events: Option<mpsc::UnboundedSender<RunEvent>>,
    /// Whether each exchange is reported to `events`: only a journal or a listener keeps them,
    /// and a run that saves nothing need not make them (a key and a copy of every answer).
    pub exchanges: bool,
}

/// Messages to the supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Spawn persona `idx` (linked) with this memory; reply with its ref.
    SpawnPersona {
        /// Index in the world's persona list.
        idx: usize,
        /// Everything the persona needs.
        spawn: Box<PersonaSpawn>,
        /// Its memory so far.
        history: Vec<MemoryEvent>,
        /// The new actor.
        reply: RpcReplyPort<Result<ActorRef<PersonaMsg>, String>>,
    },
    /// The world's answer to a restart: persona `idx`'s memory to respawn it with.
    Respawn {
        /// Index.
        idx: usize,
        /// Its memory.
        history: Vec<MemoryEvent>,
    },
    /// A persona asks for a completion.
    Call {
        /// Persona index (the answer goes back to it).
        persona: usize,
        /// Identifies the act, so stale answers are ignored.
        tag: CallTag,
        /// The request.
        request: ChatRequest,
        /// For an act's first call: how long the act waited in the persona's mailbox,
        /// microseconds (for the metrics).
        mailbox_us: Option<u64>,
    },
    /// An attempt finished (posted by the call's task).
    Done {
        /// Call id.
        id: u64,
        /// Attempt number it belongs to.
        attempt: u32,
        /// Outcome.
        result: Result<ChatResponse, LlmError>,
        /// Attempt latency.
        latency_us: u64,
    },
    /// A backoff elapsed.
    RetryDue {
        /// Call id.
        id: u64,
        /// The attempt that is due.
        attempt: u32,
    },
    /// The rate-limit spacing elapsed; start queued calls.
    Wake,
}

/// One call's progress.
#[derive(Debug)]
struct CallState {
    persona: usize,
    tag: CallTag,
    request: Arc<ChatRequest>,
    primary: String,
    attempt: u32,
    model_failures: u32,
    step: usize,
    created: Instant,
    queued_since: Instant,
    last_latency_us: u64,
    /// Worst-case cost reserved for the attempt in flight.
    reserved: f64,
    /// The span the call was asked for in (the persona's turn): each attempt's span is its
    /// child, never the child of whatever span started it (which would chain calls together).
    span: tracing::Span,
    /// The act's wait in the persona's mailbox, reported with the first attempt.
    mailbox_us: Option<u64>,
}

/// The supervisor's state.
#[derive(Debug)]
pub struct SupervisorState {
    provider: Arc<dyn Provider>,
    config: Arc<SimulationConfig>,
    metrics: ActorRef<MetricsMsg>,
    instance: u64,
    timeout: Duration,
    max_workers: usize,
    spacing: Duration,
    personas: HashMap<usize, (Box<PersonaSpawn>, ractor::ActorId)>,
    calls: HashMap<u64, CallState>,
    queue: VecDeque<u64>,
    in_flight: usize,
    next_start: Option<Instant>,
    wake_pending: bool,
    next_id: u64,
    jitter: SplitMix64,
    pricing: Arc<Pricing>,
    events: Option<mpsc::UnboundedSender<RunEvent>>,
    exchanges: bool,
    /// USD spent by finished calls.
    spent: f64,
    /// USD the calls in flight may still cost (their worst case).
    reserved: f64,
    /// Set once `max_cost_usd` would be exceeded: no call starts after that.
    cost_stop: bool,
    /// True once any call has been answered: before that, a server that refuses connections
    /// is not there, and the run stops at once.
    any_success: bool,
}

/// The registered name of persona `idx` in simulation `instance`.
pub fn persona_name(instance: u64, idx: usize) -> String {
    format!("troupe-{instance}-persona-{idx}")
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        a: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let p = &a.config.performance;
        Ok(SupervisorState {
            timeout: crate::config::limits::secs(p.persona_timeout),
            max_workers: p.max_workers.max(1),
            spacing: crate::config::limits::secs(p.rate_limit_delay),
            jitter: rng::stream(a.config.simulation.run_seed, Stream::SupervisorJitter),
            provider: a.provider,
            metrics: a.metrics,
            instance: a.instance,
            config: a.config,
            personas: HashMap::new(),
            calls: HashMap::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            next_start: None,
            wake_pending: false,
            next_id: 0,
            pricing: a.pricing,
            events: a.events,
            exchanges: a.exchanges,
            spent: 0.0,
            reserved: 0.0,
            cost_stop: false,
            any_success: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::SpawnPersona { idx, spawn, history, reply } => {
                let r = spawn_persona(&myself, st, idx, spawn, history).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::Respawn { idx, history } => {
                if let Some((spawn, _)) = st.personas.remove(&idx) {
                    let world = spawn.world.clone();
                    match spawn_persona(&myself, st, idx, spawn, history).await {
                        Ok(_) => {
                            let _ = st.metrics.cast(MetricsMsg::Restart);
                            let _ = world.send_message(WorldMsg::PersonaRestarted { idx });
                        }
                        Err(e) => {
                            tracing::error!(persona = idx, error = %e, "could not restart persona")
                        }
                    }
                }
            }
            SupervisorMsg::Call { persona, tag, request, mailbox_us } => {
                let id = st.next_id;
                st.next_id += 1;
                let now = Instant::now();
                // A recorded answer (resume, replay, fork) is free and instant: no worker, no
                // rate spacing, no timeout, no budget.
                let recorded = st.provider.recorded(&request);
                st.calls.insert(
                    id,
                    CallState {
                        persona,
                        tag,
                        primary: request.model.clone(),
                        request: Arc::new(request),
                        attempt: 0,
                        model_failures: 0,
                        step: 0,
                        created: now,
                        queued_since: now,
                        last_latency_us: 0,
                        reserved: 0.0,
                        span: tracing::Span::current(),
                        mailbox_us,
                    },
                );
                match recorded {
                    Some(resp) => {
                        if let Some(c) = st.calls.get_mut(&id) {
                            c.attempt = 1;
                        }
                        // Counted as a call of the run (its results cover the whole run), at no wait.
                        let mailbox_us = st.calls.get_mut(&id).and_then(|c| c.mailbox_us.take());
                        let _ = st.metrics.cast(MetricsMsg::CallStarted { queued_us: 0, mailbox_us });
                        succeed(st, id, resp, 0);
                    }
                    None => {
                        st.queue.push_back(id);
                        pump(&myself, st);
                    }
                }
            }
            SupervisorMsg::Done { id, attempt, result, latency_us } => {
                on_done(&myself, st, id, attempt, result, latency_us);
                pump(&myself, st);
            }
            SupervisorMsg::RetryDue { id, attempt } => {
                if st.calls.get(&id).is_some_and(|c| c.attempt == attempt) {
                    if let Some(c) = st.calls.get_mut(&id) {
                        c.queued_since = Instant::now();
                    }
                    st.queue.push_back(id);
                    pump(&myself, st);
                }
            }
            SupervisorMsg::Wake => {
                st.wake_pending = false;
                pump(&myself, st);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            let idx = st.personas.iter().find(|(_, (_, id))| *id == cell.get_id()).map(|(i, _)| *i);
            if let Some(idx) = idx {
                tracing::warn!(persona = idx, error = %err, "persona actor failed; restarting it with its memory");
                if let Some((spawn, _)) = st.personas.get(&idx) {
                    let _ = spawn.world.send_message(WorldMsg::PersonaFailed { idx });
                }
            }
        }
        // Normal exits and other events need nothing: the world decides when personas stop.
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, st: &mut Self::State) -> Result<(), ActorProcessingErr> {
        for idx in st.personas.keys() {
            if let Some(cell) = ractor::registry::where_is(persona_name(st.instance, *idx)) {
                cell.stop(None);
            }
        }
        Ok(())
    }
}

async fn spawn_persona(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    idx: usize,
    spawn: Box<PersonaSpawn>,
    history: Vec<MemoryEvent>,
) -> Result<ActorRef<PersonaMsg>, String> {
    let args = PersonaArgs { idx, spawn: (*spawn).clone(), history, supervisor: myself.clone() };
    let name = persona_name(st.instance, idx);
    let r = Actor::spawn_linked(Some(name), PersonaActor, args, myself.get_cell()).await;
    match r {
        Ok((actor, _)) => {
            st.personas.insert(idx, (spawn, actor.get_id()));
            Ok(actor)
        }
        Err(e) => Err(format!("could not spawn persona {idx}: {e}")),
    }
}

/// Starts queued calls while workers are free and the spacing allows.
fn pump(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState) {
    while st.in_flight < st.max_workers && !st.queue.is_empty() {
        let now = Instant::now();
        if let Some(at) = st.next_start
            && now < at
        {
            if !st.wake_pending {
                st.wake_pending = true;
                ractor::time::send_after(at - now, myself.get_cell(), || SupervisorMsg::Wake);
            }
            return;
        }
        let Some(id) = st.queue.pop_front() else {
            return;
        };
        if !within_cost_limit(st, id) {
            refuse_all(st, id);
            return;
        }
        if !st.spacing.is_zero() {
            st.next_start = Some(now + st.spacing);
        }
        start(myself, st, id, now);
    }
}

/// Worst case of the next attempt of call `id`: its prompt plus `max_tokens` of output.
fn worst_case_cost(st: &SupervisorState, id: u64) -> f64 {
    let Some(c) = st.calls.get(&id) else { return 0.0 };
    let usage = crate::llm::Usage::new(
        crate::llm::tokens::prompt_tokens(&c.request),
        c.request.max_tokens.unwrap_or(st.config.llm.max_tokens) as u64,
    );
    st.pricing.cost(&c.request.model, usage).unwrap_or(0.0)
}

/// True when starting call `id` cannot push the run past `max_cost_usd`.
fn within_cost_limit(st: &mut SupervisorState, id: u64) -> bool {
    let Some(max) = st.config.llm.max_cost_usd else { return true };
    if st.cost_stop {
        return false;
    }
    let next = worst_case_cost(st, id);
    if st.spent + st.reserved + next <= max {
        if let Some(c) = st.calls.get_mut(&id) {
            c.reserved = next;
        }
        st.reserved += next;
        return true;
    }
    st.cost_stop = true;
    let reason = format!(
        "max_cost_usd = {max:.4} reached: ${:.4} spent, ${:.4} in flight, the next call could cost ${next:.4}",
        st.spent, st.reserved
    );
    tracing::warn!(%reason, "stopping the run before it costs more");
    if let Some(world) = st.personas.values().next().map(|(s, _)| s.world.clone()) {
        let _ = world.send_message(WorldMsg::Stop(StopReason::CostLimit(reason)));
    }
    false
}

/// Fails call `id` and everything queued, once the cost limit is reached.
fn refuse_all(st: &mut SupervisorState, first: u64) {
    let ids: Vec<u64> = std::iter::once(first).chain(st.queue.drain(..)).collect();
    for id in ids {
        if let Some(c) = st.calls.remove(&id) {
            send_to_persona(
                st,
                c.persona,
                PersonaMsg::LlmDone {
                    tag: c.tag,
                    result: Err(CallFailure {
                        reason: "not sent: the run reached max_cost_usd".into(),
                        kind: ErrorKind::Budget,
                        attempts: c.attempt,
                    }),
                },
            );
        }
    }
}

fn start(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, id: u64, now: Instant) {
    let Some(c) = st.calls.get_mut(&id) else {
        return;
    };
    c.attempt += 1;
    st.in_flight += 1;
    let queued_us = now.duration_since(c.queued_since).as_micros() as u64;
    let _ = st.metrics.cast(MetricsMsg::CallStarted { queued_us, mailbox_us: c.mailbox_us.take() });
    let (started, on_start) = CallStarted::channel();
    let fut = st.provider.chat_timed(
        c.request.clone(),
        CallContext { attempt: c.attempt, run_seed: st.config.simulation.run_seed },
        started,
    );
    let timeout = st.timeout;
    let attempt = c.attempt;
    let me = myself.clone();
    let span = tracing::debug_span!(
        parent: &c.span,
        "llm_call",
        persona = %c.request.meta.persona,
        turn = c.tag.turn,
        attempt,
        model = %c.request.model,
        provider = st.provider.name(),
        outcome = tracing::field::Empty,
        prompt_tokens = tracing::field::Empty,
        completion_tokens = tracing::field::Empty,
    );
    if st.config.monitoring.log_prompts {
        span.in_scope(|| tracing::trace!(prompt = ?c.request.messages, "request"));
    }
    tokio::spawn(async move {
        let (result, latency_us) = async move {
            let t0 = Instant::now();
            let result = compute_deadline(fut, on_start, timeout).await;
            let latency_us = t0.elapsed().as_micros() as u64;
            record_outcome(&tracing::Span::current(), &result);
            (result, latency_us)
        }
        .instrument(span)
        .await;
        // The call's span is closed by now: the run may end as soon as this answer lands.
        let _ = me.cast(SupervisorMsg::Done { id, attempt, result, latency_us });
    });
}

/// The call span's outcome (`ok` or the error's kind) and tokens.
fn record_outcome(span: &tracing::Span, result: &Result<ChatResponse, LlmError>) {
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(r) => {
            span.record("outcome", "ok");
            span.record("prompt_tokens", r.usage.prompt_tokens);
            span.record("completion_tokens", r.usage.completion_tokens);
        }
        Err(e) => {
            span.record("outcome", e.kind.as_str());
        }
    }
}

/// Awaits a call with `persona_timeout` counted from when the provider began computing it
/// ([`Provider::chat_timed`]): a wait in the provider's own queue (the local model serving other
/// personas first) is not the call's fault and does not count. Dropping the future on timeout
/// tells the provider to stop.
async fn compute_deadline(
    fut: crate::llm::BoxFuture<Result<ChatResponse, LlmError>>,
    on_start: tokio::sync::oneshot::Receiver<()>,
    limit: Duration,
) -> Result<ChatResponse, LlmError> {
    let mut fut = fut;
    tokio::select! {
        biased;
        r = &mut fut => return r,
        // Told, or the signal was dropped: either way the computation has begun.
        _ = on_start => {}
    }
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(LlmError::new(
            ErrorKind::Timeout,
            format!("no answer within persona_timeout = {:.1} s", limit.as_secs_f64()),
        )),
    }
}

fn on_done(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    id: u64,
    attempt: u32,
    result: Result<ChatResponse, LlmError>,
    latency_us: u64,
) {
    // A stale attempt (superseded) is ignored; calls only ever have one attempt in flight.
    let Some(c) = st.calls.get_mut(&id) else {
        return;
    };
    if c.attempt != attempt {
        return;
    }
    st.in_flight = st.in_flight.saturating_sub(1);
    c.last_latency_us = latency_us;
    st.reserved = (st.reserved - std::mem::take(&mut c.reserved)).max(0.0);
    let result = result.and_then(|r| {
        if r.text.trim().is_empty() {
            Err(LlmError::new(ErrorKind::Empty, "the model returned empty text"))
        } else {
            Ok(r)
        }
    });
    match result {
        Ok(resp) => succeed(st, id, resp, latency_us),
        Err(err) => fail(myself, st, id, err, latency_us),
    }
}

/// Call `id`'s attempt failed: counts it, then retries (perhaps on the next model of the
/// fallback chain) or gives up and tells the persona. A fatal error stops the whole run.
fn fail(myself: &ActorRef<SupervisorMsg>, st: &mut SupervisorState, id: u64, err: LlmError, latency_us: u64) {
    let Some(c) = st.calls.get_mut(&id) else {
        return;
    };
    let _ = st.metrics.cast(MetricsMsg::CallFailed { model: c.request.model.clone(), kind: err.kind, latency_us });
    c.model_failures += 1;
    let policy = RetryPolicy::from_config(&st.config, &c.primary);
    let jitter = st.jitter.next_f64();
    tracing::debug!(persona = %c.request.meta.persona, turn = c.tag.turn, attempt = c.attempt, error = %err, "call failed");
    let decision = match policy::fatal(&err, st.any_success) {
        Some(reason) => {
            if let Some(world) = st.personas.values().next().map(|(s, _)| s.world.clone()) {
                let _ = world.send_message(WorldMsg::Stop(StopReason::Failed(reason.clone())));
            }
            Decision::GiveUp { reason }
        }
        None => decide(&policy, c.attempt, &err, c.model_failures, c.step, jitter),
    };
    match decision {
        Decision::Retry { delay, fallback } => retry(myself, st, id, &err, &policy, delay, fallback),
        Decision::GiveUp { reason } => {
            let c = st.calls.remove(&id).expect("call present");
            let result = Err(CallFailure { reason, kind: err.kind, attempts: c.attempt });
            send_to_persona(st, c.persona, PersonaMsg::LlmDone { tag: c.tag, result });
        }
    }
}

/// Schedules call `id`'s next attempt after `delay`, reporting the retry (and the move to the
/// next model, with `fallback`).
fn retry(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut SupervisorState,
    id: u64,
    err: &LlmError,
    policy: &RetryPolicy,
    delay: std::time::Duration,
    fallback: bool,
) {
    let Some(c) = st.calls.get_mut(&id) else {
        return;
    };
    let _ = st.metrics.cast(MetricsMsg::Retry);
    let capped = policy::retry_after_capped(policy, err.retry_after);
    if let Some(note) = &capped {
        tracing::warn!(persona = %c.request.meta.persona, "{note}");
    }
    if let Some(tx) = &st.events {
        let (persona, turn, attempt) = (c.request.meta.persona.clone(), c.tag.turn, c.attempt);
        let error = match capped {
            Some(note) => format!("{err} ({note})"),
            None => err.to_string(),
        };
        let _ = tx.send(RunEvent::Retry { persona, turn, attempt, error });
    }
    if fallback {
        c.step += 1;
        c.model_failures = 0;
        let next = policy.model_at(&c.primary, c.step).to_string();
        let _ = st.metrics.cast(MetricsMsg::Fallback);
        tracing::info!(persona = %c.request.meta.persona, from = %c.request.model, to = %next, "switching to the next model of the fallback chain");
        if let Some(tx) = &st.events {
            let _ = tx.send(RunEvent::Fallback {
                persona: c.request.meta.persona.clone(),
                turn: c.tag.turn,
                to: next.clone(),
            });
        }
        let mut req = (*c.request).clone();
        req.model = next;
        c.request = Arc::new(req);
    }
    let due = SupervisorMsg::RetryDue { id, attempt: c.attempt };
    if delay.is_zero() {
        let _ = myself.cast(due);
    } else {
        ractor::time::send_after(delay, myself.get_cell(), move || due);
    }
}

/// Call `id` has its answer: counts it, reports the exchange and hands the answer to the persona.
fn succeed(st: &mut SupervisorState, id: u64, resp: ChatResponse, latency_us: u64) {
    let Some(c) = st.calls.remove(&id) else {
        return;
    };
    st.any_success = true;
    let total = c.created.elapsed();
    let cost_usd = st.pricing.cost(&resp.model, resp.usage);
    st.spent += cost_usd.unwrap_or(0.0);
    // The part priced from tokens the provider estimated (the server reported none).
    let cost_usd_estimated = match resp.usage.estimated() {
        0 => 0.0,
        _ => st.pricing.cost(&resp.model, resp.usage.estimated_part()).unwrap_or(0.0),
    };
    let _ = st.metrics.cast(MetricsMsg::CallSucceeded {
        cost_usd,
        cost_usd_estimated,
        model: resp.model.clone(),
        persona: c.persona,
        latency_us,
        usage: resp.usage,
        response_us: total.as_micros() as u64,
    });
    emit_exchange(st, || {
        RunEvent::Exchange(crate::record::journal::Exchange {
            persona: c.request.meta.persona.clone(),
            turn: c.tag.turn,
            purpose: c.request.meta.purpose,
            key: crate::llm::cache::key_hex(crate::llm::cache::request_key(st.provider.name(), &c.request)),
            response: resp.clone(),
            attempts: c.attempt,
            replayed: false,
        })
    });
    send_to_persona(
        st,
        c.persona,
        PersonaMsg::LlmDone {
            tag: c.tag,
            result: Ok(CallSuccess {
                response: resp,
                attempts: c.attempt,
                fallback: c.step > 0,
                latency_ms: latency_us as f64 / 1000.0,
                total_ms: total.as_secs_f64() * 1000.0,
            }),
        },
    );
}

/// Reports an exchange, made only when someone keeps it.
fn emit_exchange(st: &SupervisorState, e: impl FnOnce() -> RunEvent) {
    if let Some(tx) = &st.events
        && st.exchanges
    {
        let _ = tx.send(e());
    }
}

fn send_to_persona(st: &SupervisorState, idx: usize, msg: PersonaMsg) {
    // By name: after a restart the persona is a new actor with the same name.
    match ractor::registry::where_is(persona_name(st.instance, idx)) {
        Some(cell) => {
            let _ = ActorRef::<PersonaMsg>::from(cell).cast(msg);
        }
        None => tracing::debug!(persona = idx, "persona gone; dropping its call result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> ChatResponse {
        ChatResponse {
            text: "ok".into(),
            usage: crate::llm::Usage::new(1, 1),
            model: "m".into(),
            finish_reason: crate::llm::FinishReason::Stop,
        }
    }

    /// A call that waits `queued` in the provider's queue, then computes for `computing`.
    fn queued_call(
        queued: Duration,
        computing: Duration,
    ) -> (crate::llm::BoxFuture<Result<ChatResponse, LlmError>>, tokio::sync::oneshot::Receiver<()>) {
        let (started, on_start) = CallStarted::channel();
        let fut = Box::pin(async move {
            tokio::time::sleep(queued).await;
            started.now();
            tokio::time::sleep(computing).await;
            Ok(answer())
        });
        (fut, on_start)
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_counts_computing_not_waiting_in_the_providers_queue() {
        let limit = Duration::from_secs(30);
        // 100 s behind other calls, then 20 s of work: within the limit.
        let (fut, on_start) = queued_call(Duration::from_secs(100), Duration::from_secs(20));
        assert!(compute_deadline(fut, on_start, limit).await.is_ok());
        // 31 s of work is too long, however short the wait.
        let (fut, on_start) = queued_call(Duration::ZERO, Duration::from_secs(31));
        let t0 = Instant::now();
        let err = compute_deadline(fut, on_start, limit).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert_eq!(t0.elapsed(), limit);
        // A provider that never says (the default begins at once) is timed from the start.
        let (started, on_start) = CallStarted::channel();
        drop(started);
        let fut: crate::llm::BoxFuture<_> = Box::pin(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(answer())
        });
        assert_eq!(compute_deadline(fut, on_start, limit).await.unwrap_err().kind, ErrorKind::Timeout);
    }
}
