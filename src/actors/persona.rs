//! The persona actor: one per persona, with its own mailbox and memory.
//!
//! When the world asks it to act, it stores what it heard since it last acted (one batch, one
//! mailbox message), builds its request from its persona, the world and its bounded memory, and
//! hands the request to the supervisor. It never awaits the call: the supervisor posts the
//! result back as `LlmDone`, and the actor then tells the world what it did.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::supervisor::SupervisorMsg;
use super::world::WorldMsg;
use crate::llm::{ChatResponse, ErrorKind};
use crate::memory::{EpisodicMemory, MemoryEvent};
use crate::persona::PersonaSpec;
use crate::prompt::{
    Reply, Sampling, WorldFacts, act_request, parse_json_reply, parse_plain_reply, parse_reply, summary_request,
};

/// The persona actor (holds no data; see `PersonaState`).
#[derive(Debug)]
pub struct PersonaActor;

/// Identifies one act of one persona, so late answers to an older act are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTag {
    /// Turn.
    pub turn: u32,
    /// The persona's act counter.
    pub act: u64,
    /// True for the consolidation (summary) call.
    pub summary: bool,
}

/// Everything needed to (re)spawn a persona, apart from its memory.
#[derive(Debug, Clone)]
pub struct PersonaSpawn {
    /// The persona.
    pub spec: Arc<PersonaSpec>,
    /// Its system prompt, written by the world within the model's budget.
    pub system: Arc<str>,
    /// World name and topic.
    pub facts: Arc<WorldFacts>,
    /// Model and sampling (persona overrides applied).
    pub sampling: Sampling,
    /// Memory events kept first in prompts.
    pub memory_prefix: usize,
    /// Memory events kept last in prompts.
    pub memory_recent: usize,
    /// Summarize every N events (0: never).
    pub consolidate_every: usize,
    /// The world to report to (or, on a shard, the host standing in for it).
    pub world: DerivedActorRef<WorldMsg>,
}

/// Spawn arguments.
#[derive(Debug)]
pub struct PersonaArgs {
    /// Index in the world's list.
    pub idx: usize,
    /// What the persona is.
    pub spawn: PersonaSpawn,
    /// Memory to start with (empty, or rebuilt after a restart).
    pub history: Vec<MemoryEvent>,
    /// Where calls go (with the mailbox delays, for the metrics).
    pub supervisor: ActorRef<SupervisorMsg>,
}

/// A successful call as the persona sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSuccess {
    /// The answer.
    pub response: ChatResponse,
    /// Attempts it took.
    pub attempts: u32,
    /// True when the fallback model answered.
    pub fallback: bool,
    /// Latency of the successful attempt.
    pub latency_ms: f64,
    /// From request to answer, retries included.
    pub total_ms: f64,
}

/// A call the supervisor gave up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFailure {
    /// Why, for the skip record.
    pub reason: String,
    /// The last failure's class.
    pub kind: ErrorKind,
    /// Attempts made.
    pub attempts: u32,
}

/// Facts about the call behind a message, kept in the transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallInfo {
    /// Model that answered.
    pub model: String,
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens received.
    pub completion_tokens: u64,
    /// Latency of the successful attempt.
    pub latency_ms: f64,
    /// Attempts it took.
    pub attempts: u32,
    /// True when the fallback model answered.
    pub fallback: bool,
}

/// What a persona did with its turn, as reported to the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// It replied (speech, thought or pass).
    Replied {
        /// The reply.
        reply: Reply,
        /// The call behind it.
        call: CallInfo,
    },
    /// Its turn could not be completed.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// Messages to a persona. Plain data: a persona can be addressed from another node.
#[derive(Debug)]
pub enum PersonaMsg {
    /// Hear this batch, then act in `turn`.
    Act {
        /// Turn.
        turn: u32,
        /// Everything heard since the last act, in order.
        batch: Vec<MemoryEvent>,
        /// The world's current context.
        context: Arc<str>,
        /// When it was sent (microseconds on the process clock), for mailbox delay.
        sent_us: u64,
    },
    /// The supervisor's answer to a call.
    LlmDone {
        /// The act it belongs to.
        tag: CallTag,
        /// Outcome.
        result: Result<CallSuccess, CallFailure>,
    },
    /// Reply with a copy of the memory (for inspection and tests).
    GetMemory(RpcReplyPort<EpisodicMemory>),
    /// Reply with the size, in tokens, of the prompt this persona would send now.
    PromptTokens(RpcReplyPort<u64>),
    /// Fault injection: panic inside the handler (used to test supervision).
    Crash,
    /// A fork changes the persona, the world's facts or the sampling from the next act on.
    Reconfigure {
        /// The persona as the new plan has it.
        spec: Arc<PersonaSpec>,
        /// Its system prompt.
        system: Arc<str>,
        /// World name and topic.
        facts: Arc<WorldFacts>,
        /// Model and sampling.
        sampling: Sampling,
    },
}

/// The persona's state.
#[derive(Debug)]
pub struct PersonaState {
    idx: usize,
    spawn: PersonaSpawn,
    system: Arc<str>,
    memory: EpisodicMemory,
    supervisor: ActorRef<SupervisorMsg>,
    act: u64,
    current: Option<(u32, Arc<str>)>,
    /// The span of the act going on (its calls hang from it); closed when the act ends.
    act_span: tracing::Span,
    new_summary: Option<Arc<str>>,
}

/// Microseconds on a process-wide monotonic clock (comparable across actors).
pub fn now_us() -> u64 {
    // tokio's clock, so tests with paused time see consistent values.
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(tokio::time::Instant::now).elapsed().as_micros() as u64
}

impl Actor for PersonaActor {
    type Msg = PersonaMsg;
    type State = PersonaState;
    type Arguments = PersonaArgs;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, a: PersonaArgs) -> Result<Self::State, ActorProcessingErr> {
        let mut memory = EpisodicMemory::new(a.spawn.memory_prefix, a.spawn.memory_recent);
        for e in a.history {
            memory.push(e);
        }
        Ok(PersonaState {
            idx: a.idx,
            system: a.spawn.system.clone(),
            spawn: a.spawn,
            memory,
            supervisor: a.supervisor,
            act: 0,
            current: None,
            act_span: tracing::Span::none(),
            new_summary: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PersonaMsg::Act { turn, batch, context, sent_us } => {
                on_act(st, turn, batch, context, now_us().saturating_sub(sent_us));
            }
            PersonaMsg::LlmDone { tag, result } => on_done(st, tag, result),
            PersonaMsg::GetMemory(reply) => {
                let _ = reply.send(st.memory.clone());
            }
            PersonaMsg::PromptTokens(reply) => {
                let req =
                    act_request(&st.system, &st.spawn.spec, &st.memory, &st.spawn.facts, "", 1, &st.spawn.sampling);
                let _ = reply.send(crate::llm::tokens::count_request(&req));
            }
            PersonaMsg::Crash => panic!("persona {} was asked to crash (fault injection)", st.spawn.spec.id),
            PersonaMsg::Reconfigure { spec, system, facts, sampling } => {
                st.system = system.clone();
                st.spawn.system = system;
                st.spawn.spec = spec;
                st.spawn.facts = facts;
                st.spawn.sampling = sampling;
            }
        }
        Ok(())
    }
}

/// Hears `batch` and asks for the act's first call, which carries how long the world's message
/// waited in the mailbox (`mailbox_us`) to the metrics.
fn on_act(st: &mut PersonaState, turn: u32, batch: Vec<MemoryEvent>, context: Arc<str>, mailbox_us: u64) {
    for e in batch {
        st.memory.push(e);
    }
    st.act += 1;
    st.new_summary = None;
    st.current = Some((turn, context));
    // Under the turn's span, which the world's message carried in.
    st.act_span = tracing::debug_span!("persona_act", persona = %st.spawn.spec.id, turn, act = st.act);
    let every = st.spawn.consolidate_every;
    let summary = every > 0 && st.memory.since_summary() >= every;
    send(st, summary, Some(mailbox_us));
}

fn send(st: &mut PersonaState, summary: bool, mailbox_us: Option<u64>) {
    let Some((turn, context)) = st.current.clone() else {
        return;
    };
    let s = &st.spawn;
    let req = if summary {
        summary_request(&st.system, &s.spec, &st.memory, &s.facts, &context, turn, &s.sampling)
    } else {
        act_request(&st.system, &s.spec, &st.memory, &s.facts, &context, turn, &s.sampling)
    };
    let tag = CallTag { turn, act: st.act, summary };
    let _in_act = st.act_span.enter();
    let _ = st.supervisor.cast(SupervisorMsg::Call { persona: st.idx, tag, request: req, mailbox_us });
}

fn on_done(st: &mut PersonaState, tag: CallTag, result: Result<CallSuccess, CallFailure>) {
    let Some((turn, _)) = st.current.clone() else {
        return;
    };
    if tag.turn != turn || tag.act != st.act {
        return; // an answer to an act that is over
    }
    if tag.summary {
        match result {
            Ok(ok) => {
                let text: Arc<str> = ok.response.text.trim().into();
                st.memory.push(MemoryEvent::summary(turn, text.clone()));
                st.new_summary = Some(text);
            }
            Err(e) => {
                tracing::warn!(persona = %st.spawn.spec.id, turn, reason = %e.reason, "memory consolidation failed; acting without a new summary")
            }
        }
        send(st, false, None);
        return;
    }
    st.current = None;
    let outcome = match result {
        Ok(ok) => {
            let reply = if st.spawn.sampling.json_actions {
                parse_json_reply(&ok.response.text, &st.spawn.spec.name)
            } else if st.spawn.sampling.plain {
                parse_plain_reply(&ok.response.text)
            } else {
                parse_reply(&ok.response.text, &st.spawn.spec.name)
            };
            if let Reply::Think(t) = &reply {
                st.memory.push(MemoryEvent::thought(turn, t.as_str().into()));
            }
            Outcome::Replied {
                reply,
                call: CallInfo {
                    model: ok.response.model,
                    prompt_tokens: ok.response.usage.prompt_tokens,
                    completion_tokens: ok.response.usage.completion_tokens,
                    latency_ms: ok.latency_ms,
                    attempts: ok.attempts,
                    fallback: ok.fallback,
                },
            }
        }
        Err(e) => Outcome::Skipped { reason: e.reason },
    };
    let summary = st.new_summary.take();
    // The act's span closes before the world hears of it: the world may end the run at once.
    st.act_span = tracing::Span::none();
    let _ = st.spawn.world.send_message(WorldMsg::Acted { turn, idx: st.idx, outcome, summary });
}
