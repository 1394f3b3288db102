//! A persona's episodic memory and the bounded window of it that goes into prompts.
//!
//! The prompt holds a fixed prefix of the first K events and the last M events, plus an
//! optional running summary, so its size stays flat however long the run. Each event's token
//! count is computed once, when the event is created.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::llm::tokens::count_tokens;

/// A message said in the world, shared (`Arc`) by everyone who hears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utterance {
    /// Position in the transcript (0 is the opening).
    pub seq: u64,
    /// 1-based turn (0 for the opening).
    pub turn: u32,
    /// Speaker id ("moderator" for the world).
    pub speaker_id: Arc<str>,
    /// Speaker display name.
    pub speaker: Arc<str>,
    /// Speaker role.
    pub role: Arc<str>,
    /// Addressee's name, when spoken to one persona.
    pub to: Option<Arc<str>>,
    /// What was said.
    pub text: Arc<str>,
    /// Token count of `text`.
    pub tokens: u32,
    /// The line's head as a listener's prompt shows it, made once for all who hear it.
    #[serde(skip)]
    heard_head: HeadCache,
}

/// A heard line's head ("[turn 3] Ana (nurse) to Ben: ") and its tokens, made on first use. Not
/// part of what an utterance is: it is neither sent, saved nor compared.
#[derive(Clone, Default)]
struct HeadCache(std::sync::OnceLock<(Box<str>, u32)>);

impl PartialEq for HeadCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for HeadCache {}

impl std::fmt::Debug for HeadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

impl Utterance {
    /// Builds an utterance and counts its tokens.
    pub fn new(
        seq: u64,
        turn: u32,
        speaker_id: Arc<str>,
        speaker: Arc<str>,
        role: Arc<str>,
        to: Option<Arc<str>>,
        text: Arc<str>,
    ) -> Self {
        let tokens = count_tokens(&text).min(u32::MAX as u64) as u32;
        Utterance { seq, turn, speaker_id, speaker, role, to, text, tokens, heard_head: HeadCache::default() }
    }

    /// The head of this utterance's line in a listener's prompt, and its tokens.
    fn heard_head(&self) -> (&str, u32) {
        let (head, tokens) = self.heard_head.0.get_or_init(|| {
            use std::fmt::Write;
            let mut h = format!("[turn {}] {}", self.turn, self.speaker);
            if !self.role.is_empty() {
                let _ = write!(h, " ({})", self.role);
            }
            if let Some(to) = &self.to {
                let _ = write!(h, " to {to}");
            }
            h.push_str(": ");
            let tokens = count_tokens(&h).min(u32::MAX as u64) as u32;
            (h.into_boxed_str(), tokens)
        });
        (head, *tokens)
    }
}

/// One thing a persona remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryEvent {
    /// Something it heard.
    Heard(Arc<Utterance>),
    /// Something it said.
    Said(Arc<Utterance>),
    /// A private thought.
    Thought {
        /// Turn.
        turn: u32,
        /// Text.
        text: Arc<str>,
        /// Tokens of `text`.
        tokens: u32,
    },
    /// The world's situation changed.
    Context {
        /// Turn.
        turn: u32,
        /// The new context.
        text: Arc<str>,
        /// Tokens of `text`.
        tokens: u32,
    },
    /// A running summary of the events before it.
    Summary {
        /// Turn it was made in.
        turn: u32,
        /// Text.
        text: Arc<str>,
        /// Tokens of `text`.
        tokens: u32,
    },
}

impl MemoryEvent {
    /// A thought, with its tokens counted.
    pub fn thought(turn: u32, text: Arc<str>) -> Self {
        let tokens = count_tokens(&text) as u32;
        MemoryEvent::Thought { turn, text, tokens }
    }
    /// A context change, with its tokens counted.
    pub fn context(turn: u32, text: Arc<str>) -> Self {
        let tokens = count_tokens(&text) as u32;
        MemoryEvent::Context { turn, text, tokens }
    }
    /// A summary, with its tokens counted.
    pub fn summary(turn: u32, text: Arc<str>) -> Self {
        let tokens = count_tokens(&text) as u32;
        MemoryEvent::Summary { turn, text, tokens }
    }
    /// Tokens this event adds to a prompt (text only).
    pub fn tokens(&self) -> u32 {
        match self {
            MemoryEvent::Heard(u) | MemoryEvent::Said(u) => u.tokens,
            MemoryEvent::Thought { tokens, .. }
            | MemoryEvent::Context { tokens, .. }
            | MemoryEvent::Summary { tokens, .. } => *tokens,
        }
    }
    /// Appends this event as one prompt line and returns the line's tokens. The text's count
    /// was made when the event was created; only the short prefix is counted here. Lines are
    /// separated by whitespace, so the counts add up exactly.
    pub fn render(&self, out: &mut String) -> u64 {
        use std::fmt::Write;
        let start = out.len();
        let (text, tokens) = match self {
            MemoryEvent::Heard(u) => {
                // Everyone who heard it shows the same line: its head is made once.
                let (head, head_tokens) = u.heard_head();
                out.push_str(head);
                out.push_str(&u.text);
                out.push('\n');
                return head_tokens as u64 + u.tokens as u64;
            }
            MemoryEvent::Said(u) => {
                let _ = write!(out, "[turn {}] You said", u.turn);
                if let Some(to) = &u.to {
                    let _ = write!(out, " to {to}");
                }
                (&u.text, u.tokens)
            }
            MemoryEvent::Thought { turn, text, tokens } => {
                let _ = write!(out, "[turn {turn}] (your private thought)");
                (text, *tokens)
            }
            MemoryEvent::Context { turn, text, tokens } => {
                let _ = write!(out, "[turn {turn}] (the situation changed)");
                (text, *tokens)
            }
            MemoryEvent::Summary { .. } => return 0,
        };
        let sep = if matches!(self, MemoryEvent::Heard(_) | MemoryEvent::Said(_)) { ": " } else { " " };
        out.push_str(sep);
        let prefix_tokens = count_tokens(&out[start..]);
        out.push_str(text);
        out.push('\n');
        prefix_tokens + tokens as u64
    }

    /// Bytes this event adds to a prompt, roughly (for buffer sizing).
    pub fn text_len(&self) -> usize {
        match self {
            MemoryEvent::Heard(u) | MemoryEvent::Said(u) => u.text.len() + u.speaker.len() + u.role.len() + 24,
            MemoryEvent::Thought { text, .. }
            | MemoryEvent::Context { text, .. }
            | MemoryEvent::Summary { text, .. } => text.len() + 32,
        }
    }
}

/// A persona's memory: every event, plus the latest summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodicMemory {
    events: Vec<MemoryEvent>,
    summary: Option<(Arc<str>, usize)>,
    prefix: usize,
    recent: usize,
}

/// The part of memory that goes into a prompt.
#[derive(Debug)]
pub struct Window<'a> {
    /// The first events.
    pub prefix: &'a [MemoryEvent],
    /// Events left out between prefix and recent.
    pub omitted: usize,
    /// The latest events.
    pub recent: &'a [MemoryEvent],
    /// The running summary, when there is one.
    pub summary: Option<&'a str>,
}

impl EpisodicMemory {
    /// An empty memory keeping `prefix` first and `recent` last events in prompts.
    pub fn new(prefix: usize, recent: usize) -> Self {
        EpisodicMemory { events: Vec::new(), summary: None, prefix, recent }
    }

    /// Stores an event. A `Summary` event replaces the running summary.
    pub fn push(&mut self, e: MemoryEvent) {
        if let MemoryEvent::Summary { text, .. } = &e {
            self.summary = Some((text.clone(), self.events.len()));
        }
        self.events.push(e);
    }

    /// Every event, oldest first.
    pub fn events(&self) -> &[MemoryEvent] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events since the last summary (what a consolidation would cover).
    pub fn since_summary(&self) -> usize {
        self.events.len() - self.summary.as_ref().map_or(0, |(_, at)| *at)
    }

    /// The bounded window used in prompts.
    pub fn window(&self) -> Window<'_> {
        let n = self.events.len();
        let p = self.prefix.min(n);
        let r = self.recent.min(n - p);
        Window {
            prefix: &self.events[..p],
            omitted: n - p - r,
            recent: &self.events[n - r..],
            summary: self.summary.as_ref().map(|(s, _)| &**s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(seq: u64) -> MemoryEvent {
        MemoryEvent::Heard(Arc::new(Utterance::new(
            seq,
            1,
            "a".into(),
            "A".into(),
            "R".into(),
            None,
            "hello there".into(),
        )))
    }

    #[test]
    fn window_is_prefix_plus_recent() {
        let mut m = EpisodicMemory::new(2, 3);
        for i in 0..10 {
            m.push(said(i));
        }
        let w = m.window();
        assert_eq!(w.prefix.len(), 2);
        assert_eq!(w.recent.len(), 3);
        assert_eq!(w.omitted, 5);
        assert!(matches!(&w.recent[2], MemoryEvent::Heard(u) if u.seq == 9));
    }

    #[test]
    fn short_memory_has_no_gap() {
        let mut m = EpisodicMemory::new(10, 20);
        for i in 0..4 {
            m.push(said(i));
        }
        let w = m.window();
        assert_eq!((w.prefix.len(), w.omitted, w.recent.len()), (4, 0, 0));
    }
}
