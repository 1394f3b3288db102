//! Agreement and disagreement markers: phrases that signal a speaker taking a side.
//!
//! A message counts as agreeing when it holds an agreement phrase, as disagreeing when it holds
//! a disagreement phrase (both can be true). Matching is on lower-cased text with whole-word
//! boundaries, so "agreed" matches "i agree" only where written as such.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};

#[cfg(test)]
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

/// Every marker with its stance, in list order, and one automaton over all of them (`None` only
/// if the automaton could not be built).
struct Markers {
    list: Vec<(Stance, &'static str)>,
    automaton: Option<AhoCorasick>,
}

/// Built once: a message is read once, not once per marker.
static MARKERS: LazyLock<Markers> = LazyLock::new(|| {
    let list: Vec<(Stance, &'static str)> =
        AGREE.iter().map(|m| (Stance::Agree, *m)).chain(DISAGREE.iter().map(|m| (Stance::Disagree, *m))).collect();
    let automaton = AhoCorasick::new(list.iter().map(|(_, m)| m)).ok();
    Markers { list, automaton }
});

/// The markers found in `text`, each with its stance, in list order.
pub fn find(text: &str) -> Vec<(Stance, &'static str)> {
    let lower = text.to_lowercase().replace('’', "'");
    let Markers { list, automaton } = &*MARKERS;
    let Some(ac) = automaton else { return Vec::new() };
    let mut hit = vec![false; list.len()];
    for m in ac.find_overlapping_iter(&lower) {
        let before_ok = lower[..m.start()].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after_ok = lower[m.end()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        if before_ok && after_ok {
            hit[m.pattern().as_usize()] = true;
        }
    }
    list.iter().zip(hit).filter(|(_, h)| *h).map(|(m, _)| *m).collect()
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

    /// The one-pass search finds what a search per marker finds, in the same order.
    #[test]
    fn one_pass_equals_a_search_per_marker() {
        let by_marker = |text: &str| -> Vec<(Stance, &'static str)> {
            let lower = text.to_lowercase().replace('’', "'");
            let mut out = Vec::new();
            for (stance, list) in [(Stance::Agree, AGREE), (Stance::Disagree, DISAGREE)] {
                out.extend(list.iter().filter(|m| contains_name(&lower, m)).map(|m| (stance, *m)));
            }
            out
        };
        let all: Vec<&str> = AGREE.iter().chain(DISAGREE).copied().collect();
        let mut texts: Vec<String> = all.iter().map(|m| format!("Well, {m}, said Ann.")).collect();
        texts.push(all.join(" "));
        texts.push(all.join(""));
        texts.push("I AGREE, but I’m not convinced; absolutely. Exactly! disagreeing".into());
        for t in &texts {
            assert_eq!(find(t), by_marker(t), "{t}");
        }
        assert!(!find(&all.join(" ")).is_empty());
    }
}
