//! What a run produces as it goes: transcript entries and the events the world emits on a
//! channel that never drops (an unbounded tokio channel, not a lossy broadcast port).

use serde::{Deserialize, Serialize};

/// One message of the transcript (the `results.json` shape, plus optional call facts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// Position (0 is the opening).
    pub seq: u64,
    /// Turn (0 for the opening).
    pub turn: u32,
    /// Speaker's display name.
    pub speaker: String,
    /// Speaker's id ("moderator" for the world).
    pub speaker_id: String,
    /// Speaker's role.
    pub role: String,
    /// What was said.
    pub text: String,
    /// Addressee's name, when spoken to one persona.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// When it was said (RFC 3339, UTC).
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// Model that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tokens sent for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Tokens received for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Latency of the call that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Attempts the call took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// A persona turn that could not be completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkipRecord {
    /// Turn.
    pub turn: u32,
    /// Persona id.
    pub persona: String,
    /// Why.
    pub reason: String,
}

/// A persona whose facts did not all fit its prompt budget: what was left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptTrim {
    /// Persona id.
    pub persona: String,
    /// The model the prompt was written for.
    pub model: String,
    /// The budget (`llm.persona_budget_tokens`, or a quarter of the model's context).
    pub budget_tokens: u64,
    /// The prompt's tokens once trimmed.
    pub prompt_tokens: u64,
    /// The facts left out, by dotted path, least important first.
    pub dropped: Vec<String>,
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum StopReason {
    /// All turns ran.
    Completed,
    /// `timeout_seconds` elapsed.
    Timeout,
    /// The user asked to stop (Ctrl-C, cancel).
    Cancelled,
    /// The next calls would have exceeded `max_cost_usd`.
    CostLimit(String),
    /// A persona's turn failed with graceful degradation off, or the runtime failed.
    Failed(String),
}

impl StopReason {
    /// One word for how a run ended (the `outcome` label of `troupe_runs_finished_total`).
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::Timeout => "timeout",
            StopReason::Cancelled => "cancelled",
            StopReason::CostLimit(_) => "cost_limit",
            StopReason::Failed(_) => "failed",
        }
    }
}

/// The world's final state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalState {
    /// True when every turn ran.
    pub success: bool,
    /// Turns fully completed.
    pub completed_turns: u32,
    /// Why it ended.
    pub reason: StopReason,
}

/// Events of a run, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// A turn began.
    TurnStarted {
        /// Turn.
        turn: u32,
    },
    /// A message was said.
    Message(TranscriptEntry),
    /// A persona kept a private thought.
    Thought {
        /// Turn.
        turn: u32,
        /// Persona id.
        persona: String,
        /// The thought.
        text: String,
    },
    /// A persona stayed silent.
    Passed {
        /// Turn.
        turn: u32,
        /// Persona id.
        persona: String,
    },
    /// A persona's turn was skipped.
    Skipped(SkipRecord),
    /// An intervention was applied.
    Intervention {
        /// Turn.
        turn: u32,
        /// What happened.
        description: String,
    },
    /// A paid LLM exchange finished (from the supervisor).
    Exchange(crate::record::journal::Exchange),
    /// A failed attempt will be retried (from the supervisor).
    Retry {
        /// Persona id.
        persona: String,
        /// Turn.
        turn: u32,
        /// The attempt that failed.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// A call moved along the fallback chain (from the supervisor).
    Fallback {
        /// Persona id.
        persona: String,
        /// Turn.
        turn: u32,
        /// The model now used.
        to: String,
    },
    /// A turn finished.
    TurnEnded {
        /// Turn.
        turn: u32,
    },
    /// A persona's prompt could not hold all its facts (from the world, when it joins).
    PromptTrimmed(PromptTrim),
    /// The run ended.
    Finished(FinalState),
}
