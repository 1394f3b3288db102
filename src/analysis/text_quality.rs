//! How readable a run's persona lines are, in the ways a small local model fails (issue 14.3):
//! lines that open as someone else, lines about the speaker in the third person, lines that
//! repeat the speaker's own or another's line, lines that stop mid-sentence, and lines that
//! never take up the question that was asked.
//!
//! The rules for one line are [`crate::text::lines`]'s (the local model's provider applies the
//! same ones while it writes). Near duplicates use [`super::repetition`]'s measure (word
//! 3-shingles, Jaccard at least [`super::repetition::DEFAULT_THRESHOLD`]) within a persona (a
//! line nearly repeating one of the persona's earlier lines) and across personas in one turn (a
//! line nearly repeating a line another persona said earlier in the same turn). Plain text
//! rules: the same text always gets the same figures.

use serde::{Deserialize, Serialize};

use super::repetition::{DEFAULT_THRESHOLD, jaccard, shingles};
use crate::record::results::{AgentInfo, SimulationResults};
use crate::record::transcript::TranscriptEntry;
pub use crate::text::lines::{LineFlags, NameForms, QuestionTerms, line_flags};

/// The text-quality figures of one run or of several added up: counts of persona lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextQuality {
    /// Persona lines looked at.
    pub replies: u64,
    /// Lines that open as a speaker other than the persona.
    pub invented_speaker: u64,
    /// Lines that speak of the persona in the third person.
    pub third_person: u64,
    /// Lines nearly repeating one of the same persona's earlier lines.
    pub near_duplicate_own: u64,
    /// Lines nearly repeating another persona's line of the same turn.
    pub near_duplicate_across: u64,
    /// Lines that end mid-sentence.
    pub mid_sentence: u64,
    /// Lines that take up the question's own words.
    pub takes_up_question: u64,
}

impl std::ops::AddAssign for TextQuality {
    fn add_assign(&mut self, o: TextQuality) {
        self.replies += o.replies;
        self.invented_speaker += o.invented_speaker;
        self.third_person += o.third_person;
        self.near_duplicate_own += o.near_duplicate_own;
        self.near_duplicate_across += o.near_duplicate_across;
        self.mid_sentence += o.mid_sentence;
        self.takes_up_question += o.takes_up_question;
    }
}

impl TextQuality {
    /// `count` as a share of the lines (0 when there are none).
    pub fn share(&self, count: u64) -> f64 {
        if self.replies == 0 { 0.0 } else { count as f64 / self.replies as f64 }
    }
}

/// The text-quality figures of a run: every line of a persona of `r.agents` in its transcript
/// (the moderator's lines only as context), against the run's topic as the question.
pub fn text_quality(r: &SimulationResults) -> TextQuality {
    lines_quality(&r.transcript, &r.agents, &r.topic)
}

/// [`text_quality`] of a transcript's lines by `agents`, asked `question`.
pub fn lines_quality(transcript: &[TranscriptEntry], agents: &[AgentInfo], question: &str) -> TextQuality {
    let room: Vec<NameForms> = agents.iter().map(|a| NameForms::new(&a.name)).collect();
    let question = QuestionTerms::new(question, &room);
    let mut q = TextQuality::default();
    // (persona index, turn, shingles) of every line so far.
    let mut seen: Vec<(usize, u32, Vec<u64>)> = Vec::new();
    for e in transcript {
        let Some(who) = agents.iter().position(|a| a.id == e.speaker_id) else { continue };
        let f = line_flags(&e.text, &room[who], &room, &question);
        let sh = shingles(&e.text);
        let near = |i: &&(usize, u32, Vec<u64>)| jaccard(&i.2, &sh) >= DEFAULT_THRESHOLD;
        q.replies += 1;
        q.invented_speaker += f.invented_speaker as u64;
        q.third_person += f.third_person as u64;
        q.mid_sentence += f.mid_sentence as u64;
        q.takes_up_question += f.takes_up_question as u64;
        q.near_duplicate_own += seen.iter().filter(|s| s.0 == who).any(|s| near(&s)) as u64;
        q.near_duplicate_across += seen.iter().filter(|s| s.0 != who && s.1 == e.turn).any(|s| near(&s)) as u64;
        seen.push((who, e.turn, sh));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_counted_line_by_line() {
        let line = |seq, turn, id: &str, text: &str| TranscriptEntry {
            seq,
            turn,
            speaker: id.into(),
            speaker_id: id.into(),
            role: String::new(),
            text: text.into(),
            to: None,
            timestamp: chrono::Utc::now(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: None,
            attempts: None,
        };
        let said = "I think the pilot can work if support and on-call get a second rota for the fifth day.";
        let agents = [
            AgentInfo { name: "Marcus Rivera".into(), role: "PM".into(), id: "m".into() },
            AgentInfo { name: "Raj Patel".into(), role: "Eng".into(), id: "r".into() },
        ];
        let transcript = [
            line(0, 0, "moderator", said),
            line(1, 1, "m", said),
            line(2, 1, "r", said),
            line(3, 2, "m", said),
            line(4, 2, "r", "Mike, Product Manager: flexible payment plans and"),
        ];
        let question = "How are support and on-call covered on the fifth day of a four-day pilot?";
        let q = lines_quality(&transcript, &agents, question);
        assert_eq!(q.replies, 4, "the moderator is context, not a line");
        assert_eq!(q.near_duplicate_across, 1, "Raj repeats Marcus in turn 1; the moderator does not count");
        assert_eq!(q.near_duplicate_own, 1, "Marcus repeats himself in turn 2");
        assert_eq!((q.invented_speaker, q.mid_sentence, q.takes_up_question), (1, 1, 3));
        assert_eq!(q.share(q.takes_up_question), 0.75);
    }
}
