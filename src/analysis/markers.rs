//! Agreement and disagreement markers: phrases that signal a speaker taking a side.
//!
//! A message counts as agreeing when it holds an agreement phrase, as disagreeing when it holds
//! a disagreement phrase (both can be true). Matching is on lower-cased text with whole-word
//! boundaries, so "agreed" matches "i agree" only where written as such.

use serde::{Deserialize, Serialize};

use super::text::contains_name;

/// Which side a marker signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stance {
    /// Agreement, support, building on someone.
    Agree,
    /// Disagreement, doubt, pushing back.
    Disagree,
}

const AGREE: &[&str] = &[
    "i agree",
    "i fully agree",
    "agree with you",
    "agreed",
    "fair point",
    "good point",
    "great point",
    "you're right",
    "you are right",
    "that's right",
    "exactly",
    "building on",
    "makes sense",
    "i support",
    "well said",
    "yes, and",
    "same here",
    "i'm with you",
    "i am with you",
    "that's true",
    "i like that",
    "i second",
];

const DISAGREE: &[&str] = &[
    "i disagree",
    "disagree with",
    "not convinced",
    "i'm not sure",
    "i am not sure",
    "i don't think",
    "i do not think",
    "differently",
    "with respect",
    "with all due respect",
    "on the contrary",
    "that's not",
    "that is not",
    "i doubt",
    "i object",
    "not the whole story",
    "underestimating",
    "i'm skeptical",
    "i am skeptical",
    "push back",
    "i can't support",
    "i cannot support",
    "that won't work",
    "i'm not convinced",
    "what evidence",
];

/// The markers found in `text`, each with its stance, in list order.
pub fn find(text: &str) -> Vec<(Stance, &'static str)> {
    let lower = text.to_lowercase().replace('’', "'");
    let mut out = Vec::new();
    for (stance, list) in [(Stance::Agree, AGREE), (Stance::Disagree, DISAGREE)] {
        for m in list {
            if contains_name(&lower, m) {
                out.push((stance, *m));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_sides() {
        let f = find("Marcus, I agree with you on cost, but I'm not convinced about the timeline.");
        assert!(f.contains(&(Stance::Agree, "i agree")));
        assert!(f.contains(&(Stance::Disagree, "not convinced")));
        assert!(find("The weather is nice.").is_empty());
        assert!(find("They disagreed").is_empty());
    }
}
