//! Provider-neutral request and response types.

use std::ops::{Add, AddAssign};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The simulation speaking to the model.
    User,
    /// The model's earlier replies.
    Assistant,
}

/// One message of a chat request. Content is shared: the system prompt is rendered once per
/// persona and reused by every call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: Arc<str>,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: Role, content: impl Into<Arc<str>>) -> Self {
        ChatMessage { role, content: content.into() }
    }
}

/// What the call is for: shown in logs, used by the simulated provider and as the OpenAI
/// `user` field. Not part of the normalized request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// Persona id.
    pub persona: String,
    /// 1-based turn (0 for calls outside turns).
    pub turn: u32,
    /// Why: "act", "summary".
    pub purpose: String,
    /// The request's prompt tokens, counted by `llm::tokens` as the prompt was written
    /// (0 when unknown). Lets providers skip a second pass over the text.
    #[serde(default)]
    pub prompt_tokens: u64,
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Longest reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub stop: Vec<String>,
    /// Who and what the call is for.
    #[serde(default)]
    pub meta: RequestMeta,
}

impl ChatRequest {
    /// A stable hash of everything that decides the answer (model, messages, sampling),
    /// excluding `meta`.
    pub fn fingerprint(&self) -> u64 {
        let mut h = crate::rng::hash_bytes(self.model.as_bytes());
        for m in &self.messages {
            h = crate::rng::mix(&[h, m.role as u64, crate::rng::hash_bytes(m.content.as_bytes())]);
        }
        let t = self.temperature.map_or(u64::MAX, f64::to_bits);
        let p = self.top_p.map_or(u64::MAX, f64::to_bits);
        crate::rng::mix(&[h, t, p, self.max_tokens.unwrap_or(0) as u64, self.seed.unwrap_or(0)])
    }
}

/// Token counts of one call. Adds up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens received.
    pub completion_tokens: u64,
}

impl Usage {
    /// Sent plus received.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens + o.prompt_tokens,
            completion_tokens: self.completion_tokens + o.completion_tokens,
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        *self = *self + o;
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// Anything else the provider said.
    Other,
}

/// A completed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The reply text.
    pub text: String,
    /// Tokens used.
    pub usage: Usage,
    /// The model that answered.
    pub model: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}
