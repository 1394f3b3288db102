//! The `in_character` section of `analysis.json`, and the judge's verdict it shares with persona
//! checks (`troupe personas check`).
//!
//! The section is filled by `validation::in_character` when `validation.in_character` is on (or
//! `troupe analyze --in-character`): a judge model reads a sample of each persona's messages and
//! scores them against the persona's own facts. The types live here, with the file they are
//! saved in; the calls that fill them live with the other judge calls in `validation`.

use serde::{Deserialize, Serialize};

use crate::llm::Usage;

/// What the judge concluded about one claim or fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingVerdict {
    /// Something the persona said shows it.
    Supported,
    /// Shown in part, or weakly.
    Partial,
    /// Something the persona said goes against it.
    Contradicted,
    /// Nothing the persona said speaks to it.
    NotAddressed,
}

impl FindingVerdict {
    /// The word used in prompts and files.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingVerdict::Supported => "supported",
            FindingVerdict::Partial => "partial",
            FindingVerdict::Contradicted => "contradicted",
            FindingVerdict::NotAddressed => "not_addressed",
        }
    }
}

/// The judge's finding on one expectation claim (`E1`, ...) or persona fact (`F3`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The claim or fact judged, by its label.
    pub claim: String,
    /// What the judge concluded.
    pub verdict: FindingVerdict,
    /// The words the judge quotes as evidence, with their label (`A2: "..."`); may be empty.
    #[serde(default)]
    pub evidence: String,
}

/// A judge's readable verdict. There is no verdict (and so no score) when the judge could not
/// give a readable one: a score is never made up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// 0.0 (contradicts the expectations and facts) to 1.0 (matches them all).
    pub score: f64,
    /// The judge's reasons, in a few sentences.
    pub justification: String,
    /// Per claim and per fact the answers touched.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Parts of the reply that were left out because they could not be read (a finding without
    /// a claim, an unknown verdict word).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One persona's in-character verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaInCharacter {
    /// Persona id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Messages shown to the judge.
    pub messages_judged: usize,
    /// Its messages in the run.
    pub messages_total: usize,
    /// The score (the verdict's), when the judge gave a readable verdict.
    pub score: Option<f64>,
    /// The judge's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why there is no verdict (the call failed, the reply could not be read, the persona said
    /// nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Judge calls made (a retry for an unreadable reply included).
    pub calls: u32,
}

/// The `in_character` section: how well each persona's messages match its own facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InCharacter {
    /// The model that judged.
    pub judge_model: String,
    /// The provider it was asked through.
    pub provider: String,
    /// True when the simulated provider judged (word overlap, not a model's judgement).
    pub synthetic: bool,
    /// The most messages shown per persona (`validation.in_character_messages`).
    pub messages_per_persona: usize,
    /// One entry per persona, in the run's order.
    pub personas: Vec<PersonaInCharacter>,
    /// Mean score of the personas that have one.
    pub mean_score: Option<f64>,
    /// Calls made, all personas together.
    pub calls: u32,
    /// Tokens used.
    pub usage: Usage,
    /// What the calls cost (priced models only).
    pub cost_usd: f64,
}

/// A few lines for a terminal or a report.
pub fn summary_lines(ic: &InCharacter) -> Vec<String> {
    let mean = ic.mean_score.map_or("no score".to_string(), |m| format!("mean {m:.2}"));
    let mut v = vec![format!(
        "in character (judge {}{}): {mean}",
        ic.judge_model,
        if ic.synthetic { ", simulated: word overlap" } else { "" }
    )];
    for p in &ic.personas {
        v.push(match (p.score, &p.error) {
            (Some(s), _) => format!("  {}: {s:.2} ({} of {} messages)", p.name, p.messages_judged, p.messages_total),
            (None, Some(e)) => format!("  {}: no score: {e}", p.name),
            (None, None) => format!("  {}: no score", p.name),
        });
    }
    v
}
