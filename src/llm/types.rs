//! Provider-neutral request and response types.

use std::ops::{Add, AddAssign};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::tokens::Counter;

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

/// What a call is for. Shown in logs, recorded with each exchange in the journal (as the
/// lowercase word, which is what journals held when it was a string), and read by the simulated
/// provider to write a fitting answer. It never decides how a request is sent: a caller that
/// needs JSON says so with [`ChatRequest::response_format`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// A persona's turn (also what a request that names no purpose is taken for).
    #[default]
    Act,
    /// A persona's running summary of its memory (`simulation.consolidate_every`).
    Summary,
    /// An experiment's questions to a persona after its run.
    Extract,
    /// Persona drafts from a description (`troupe personas generate`).
    Generate,
    /// A provider's 1-token health probe (`troupe doctor`).
    Health,
    /// A question of a persona check's interview.
    Interview,
    /// A judge model's verdict (persona checks, `in_character`).
    Judge,
}

impl Purpose {
    /// The word journals and logs show.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Act => "act",
            Purpose::Summary => "summary",
            Purpose::Extract => "extract",
            Purpose::Generate => "generate",
            Purpose::Health => "health",
            Purpose::Interview => "interview",
            Purpose::Judge => "judge",
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The form a reply must take, as OpenAI's `response_format` (async-openai and rig carry it on
/// the request the same way). Providers without such a mode ignore it; the prompt of a request
/// that asks for JSON says so too (OpenAI requires the word in the messages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// One JSON object (`{"type": "json_object"}`).
    JsonObject,
}

impl ResponseFormat {
    /// True for free text, which is what a request without the field means.
    pub fn is_text(&self) -> bool {
        *self == ResponseFormat::Text
    }
}

/// Who and what the call is for: shown in logs, used by the simulated provider and as the
/// OpenAI `user` field. Not part of the normalized request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// Persona id.
    pub persona: String,
    /// 1-based turn (0 for calls outside turns).
    pub turn: u32,
    /// Why the call is made.
    pub purpose: Purpose,
    /// The request's prompt tokens, counted by `llm::tokens` as the prompt was written
    /// (0 when unknown). Lets providers skip a second pass over the text.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Who speaks and what was said lately, for providers that check a persona's reply before
    /// the room hears it (the embedded local model: see `llm::local::reply`). Only a persona's
    /// plain-style act requests carry it; never sent to a server.
    #[serde(skip)]
    pub reply: Option<Arc<ReplyContext>>,
}

/// What a persona's reply is checked against: the speaker, the names it has heard in the room,
/// and the lines it may not repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyContext {
    /// The persona's full name.
    pub speaker: Arc<str>,
    /// Its role, as the scenario gives it.
    pub role: Arc<str>,
    /// The other personas' names it has heard (the moderator's left out).
    pub room: Vec<Arc<str>>,
    /// Its own earlier lines, oldest first.
    pub own_lines: Vec<Arc<str>>,
    /// Lines the others said lately (the moderator's included), oldest first.
    pub other_lines: Vec<Arc<str>>,
    /// The question under discussion.
    pub question: Arc<str>,
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
    /// The form the reply must take; set by the caller that needs JSON.
    #[serde(default, skip_serializing_if = "ResponseFormat::is_text")]
    pub response_format: ResponseFormat,
    /// Who and what the call is for.
    #[serde(default)]
    pub meta: RequestMeta,
}

impl ChatRequest {
    /// A stable hash of everything that decides the answer (model, messages, sampling),
    /// excluding `meta`. `response_format` is left out too: a request that asks for JSON asks
    /// for it in its messages as well, and counting it would change every request key and
    /// provider seed recorded so far.
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

/// Token counts of one call (or of several, added up), and whether they are estimates.
///
/// Figures a server reports are taken as they are. When it reports none (a stream from a server
/// that ignores `stream_options`, or an older server), the provider counts them itself and says
/// so here: `prompt_estimated` / `completion_estimated` mark the figure as an estimate and
/// `estimated_by` names the counters that made it. Flags rather than counts keep a `Usage` at
/// 24 bytes: it rides in every persona's messages. Per call a flag covers the whole figure; in a
/// sum it means "includes estimates" (the metrics actor counts estimated tokens per call).
/// All three are left out of JSON when nothing was estimated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens received.
    pub completion_tokens: u64,
    /// `prompt_tokens` was counted here because the server reported none.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prompt_estimated: bool,
    /// `completion_tokens` was counted here because the server reported none (and is never more
    /// than the request's `max_tokens`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub completion_estimated: bool,
    /// The counters that made the estimates (empty when nothing was estimated).
    #[serde(default, skip_serializing_if = "TokenCounters::is_empty")]
    pub estimated_by: TokenCounters,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Usage {
    /// Counts a provider knows (a server's report, or a model that counted its own tokens).
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage { prompt_tokens, completion_tokens, ..Usage::default() }
    }

    /// Sent plus received.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Only the estimated figures (the others as 0): what a call's estimated tokens are, to
    /// count and price them apart.
    pub fn estimated_part(&self) -> Usage {
        Usage {
            prompt_tokens: if self.prompt_estimated { self.prompt_tokens } else { 0 },
            completion_tokens: if self.completion_estimated { self.completion_tokens } else { 0 },
            ..*self
        }
    }

    /// How many of `total()` are estimates (per call; see the type's note on sums).
    pub fn estimated(&self) -> u64 {
        self.estimated_part().total()
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens + o.prompt_tokens,
            completion_tokens: self.completion_tokens + o.completion_tokens,
            prompt_estimated: self.prompt_estimated || o.prompt_estimated,
            completion_estimated: self.completion_estimated || o.completion_estimated,
            estimated_by: self.estimated_by.union(o.estimated_by),
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        *self = *self + o;
    }
}

/// A set of [`Counter`]s, written in JSON as their names (`["tiktoken o200k_base",
/// "approximate"]`); names it does not know are ignored when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenCounters(u8);

impl TokenCounters {
    /// The set holding `c` alone.
    pub fn of(c: Counter) -> Self {
        TokenCounters(1 << c as u8)
    }
    /// True when no counter is in the set.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    /// Both sets' counters.
    pub fn union(self, o: TokenCounters) -> Self {
        TokenCounters(self.0 | o.0)
    }
    /// The counters, in [`Counter::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Counter> {
        Counter::ALL.into_iter().filter(move |c| self.0 & (1 << *c as u8) != 0)
    }
    /// Their names.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Counter::name).collect()
    }
}

impl Serialize for TokenCounters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Counter::name))
    }
}

impl<'de> Deserialize<'de> for TokenCounters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Ok(names
            .iter()
            .filter_map(|n| Counter::ALL.into_iter().find(|c| c.name() == n))
            .fold(TokenCounters::default(), |set, c| set.union(TokenCounters::of(c))))
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
