//! Sentiment of a message: VADER's rules (Hutto & Gilbert, 2014) over a compact lexicon.
//!
//! Why not the `vader_sentiment` crate: its one release dates from 2019 and is unmaintained,
//! and it iterates hash maps in random order while summing, so the same text can score
//! differently in the last digits from one process to the next; analyses must be reproducible.
//!
//! What is kept from VADER: word valences on a -4..+4 scale; boosters and dampeners ("very",
//! "slightly") up to three words before a sentiment word, with decay; negation in the same
//! window ("not good" flips and shrinks, ×-0.74); ALL-CAPS emphasis when the text mixes cases;
//! "but" (words before it count half, after it one and a half); "kind of" and "at least";
//! emphasis from "!" (up to four) and repeated "?"; the compound score `x / √(x² + 15)` in
//! -1..1, and the positive, negative and neutral proportions.
//!
//! What differs: the lexicon. It holds about 400 words chosen for the vocabulary of
//! discussions, panels and deliberations (agreement, risk, cost, fairness, trust), with
//! valences set on VADER's scale; it is not VADER's published 7,500-word lexicon. A plural or
//! third-person "-s" form falls back to its stem.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The sentiment of one text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    /// Normalised overall score, -1 (most negative) .. 1 (most positive).
    pub compound: f64,
    /// Share of positive weight.
    pub pos: f64,
    /// Share of negative weight.
    pub neg: f64,
    /// Share of neutral words.
    pub neu: f64,
}

const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
const C_INCR: f64 = 0.733;
const N_SCALAR: f64 = -0.74;
const ALPHA: f64 = 15.0;

/// Scores `text`.
pub fn score(text: &str) -> Sentiment {
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| {
            let s = w.trim_matches(|c: char| c.is_ascii_punctuation() || c == '“' || c == '”' || c == '’');
            if s.chars().count() <= 1 { w } else { s }
        })
        .filter(|w| w.chars().count() > 1 || w.chars().all(char::is_alphanumeric))
        .collect();
    // Most words are lower-case ASCII already: kept as they are rather than copied.
    let lower: Vec<std::borrow::Cow<'_, str>> = words
        .iter()
        .map(|w| {
            if w.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
                std::borrow::Cow::Borrowed(*w)
            } else {
                std::borrow::Cow::Owned(w.to_lowercase())
            }
        })
        .collect();
    let is_caps = |w: &str| w.chars().any(char::is_alphabetic) && !w.chars().any(char::is_lowercase);
    let mixed_caps = words.iter().any(|w| is_caps(w)) && words.iter().any(|w| !is_caps(w));

    let mut sentiments = Vec::with_capacity(words.len());
    for i in 0..words.len() {
        let w = &*lower[i];
        if booster(w).is_some() || (w == "kind" && lower.get(i + 1).is_some_and(|n| n == "of")) {
            sentiments.push(0.0);
            continue;
        }
        let Some(mut v) = valence(w) else {
            sentiments.push(0.0);
            continue;
        };
        if is_caps(words[i]) && mixed_caps {
            v += if v > 0.0 { C_INCR } else { -C_INCR };
        }
        for back in 0..3 {
            if i <= back {
                break;
            }
            let prev = &*lower[i - back - 1];
            if valence(prev).is_none()
                && let Some(b) = booster(prev)
            {
                let mut s = if v < 0.0 { -b } else { b };
                if is_caps(words[i - back - 1]) && mixed_caps {
                    s += if v > 0.0 { C_INCR } else { -C_INCR };
                }
                v += s * [1.0, 0.95, 0.9][back];
            }
            if is_negation(prev) {
                // "never so good" and "without doubt" intensify rather than negate.
                let between = &*lower[i - back];
                let intensifying = (prev == "never" && back > 0 && (between == "so" || between == "this"))
                    || (prev == "without" && between == "doubt");
                v *= if intensifying { 1.25 } else { N_SCALAR };
            }
        }
        if i > 0 && lower[i - 1] == "least" && !(i > 1 && lower[i - 2] == "at") {
            v *= N_SCALAR;
        }
        sentiments.push(v);
    }
    if let Some(b) = lower.iter().position(|w| *w == "but") {
        for (i, s) in sentiments.iter_mut().enumerate() {
            if i < b {
                *s *= 0.5;
            } else if i > b {
                *s *= 1.5;
            }
        }
    }
    total(&sentiments, punctuation_emphasis(text))
}

fn punctuation_emphasis(text: &str) -> f64 {
    let ep = text.chars().filter(|c| *c == '!').count().min(4) as f64 * 0.292;
    let qm = text.chars().filter(|c| *c == '?').count();
    let qp = match qm {
        0 | 1 => 0.0,
        2 | 3 => qm as f64 * 0.18,
        _ => 0.96,
    };
    ep + qp
}

fn total(sentiments: &[f64], punct: f64) -> Sentiment {
    if sentiments.is_empty() {
        return Sentiment { compound: 0.0, pos: 0.0, neg: 0.0, neu: 0.0 };
    }
    let mut sum: f64 = sentiments.iter().sum();
    if sum > 0.0 {
        sum += punct;
    } else if sum < 0.0 {
        sum -= punct;
    }
    let compound = (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0);
    let (mut pos, mut neg, mut neu) = (0.0, 0.0, 0.0);
    for s in sentiments {
        if *s > 0.0 {
            pos += s + 1.0;
        } else if *s < 0.0 {
            neg += s - 1.0;
        } else {
            neu += 1.0;
        }
    }
    if pos > neg.abs() {
        pos += punct;
    } else if pos < neg.abs() {
        neg -= punct;
    }
    let t = pos + neg.abs() + neu;
    Sentiment { compound, pos: (pos / t).abs(), neg: (neg / t).abs(), neu: (neu / t).abs() }
}

fn is_negation(w: &str) -> bool {
    const NEG: &[&str] = &[
        "not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "cannot", "without", "rarely",
        "seldom", "despite", "aint", "isnt", "arent", "wasnt", "werent", "dont", "doesnt", "didnt", "cant", "couldnt",
        "shouldnt", "wouldnt", "wont", "hasnt", "havent", "hadnt", "mustnt", "neednt",
    ];
    NEG.contains(&w) || w.ends_with("n't")
}

fn booster(w: &str) -> Option<f64> {
    const UP: &[&str] = &[
        "absolutely",
        "completely",
        "considerably",
        "deeply",
        "enormously",
        "entirely",
        "especially",
        "exceptionally",
        "extremely",
        "fully",
        "greatly",
        "highly",
        "hugely",
        "incredibly",
        "intensely",
        "particularly",
        "purely",
        "really",
        "remarkably",
        "so",
        "substantially",
        "thoroughly",
        "totally",
        "tremendously",
        "truly",
        "unbelievably",
        "utterly",
        "very",
        "most",
        "more",
    ];
    const DOWN: &[&str] = &[
        "almost",
        "barely",
        "hardly",
        "kinda",
        "less",
        "little",
        "marginally",
        "partly",
        "scarcely",
        "slightly",
        "somewhat",
        "sorta",
        "occasionally",
        "fairly",
    ];
    if UP.contains(&w) {
        Some(B_INCR)
    } else if DOWN.contains(&w) {
        Some(B_DECR)
    } else {
        None
    }
}

fn valence(w: &str) -> Option<f64> {
    let lex = lexicon();
    lex.get(w).copied().or_else(|| w.strip_suffix('s').filter(|s| s.len() > 3).and_then(|s| lex.get(s).copied()))
}

fn lexicon() -> &'static foldhash::HashMap<&'static str, f64> {
    static LEX: OnceLock<foldhash::HashMap<&'static str, f64>> = OnceLock::new();
    LEX.get_or_init(|| LEXICON.iter().copied().collect())
}

/// Word valences on VADER's -4..+4 scale.
const LEXICON: &[(&str, f64)] = &[
    // Agreement, support, approval.
    ("agree", 1.5),
    ("agreed", 1.5),
    ("agreement", 1.5),
    ("support", 1.7),
    ("supported", 1.5),
    ("supportive", 1.8),
    ("approve", 1.8),
    ("approval", 1.6),
    ("endorse", 1.5),
    ("welcome", 2.0),
    ("welcomed", 1.8),
    ("yes", 1.2),
    ("right", 0.4),
    ("fair", 1.3),
    ("fairness", 1.6),
    ("exactly", 0.8),
    ("absolutely", 0.8),
    ("definitely", 0.6),
    ("sure", 1.3),
    ("appreciate", 2.0),
    ("appreciated", 2.0),
    ("thank", 1.5),
    ("thanks", 1.9),
    ("grateful", 2.1),
    ("respect", 2.1),
    ("respected", 1.8),
    ("convinced", 1.0),
    ("compelling", 1.9),
    ("persuasive", 1.5),
    ("reasonable", 1.3),
    ("sensible", 1.3),
    ("sound", 0.9),
    ("solid", 1.3),
    ("valid", 1.1),
    ("accept", 1.2),
    ("acceptable", 1.1),
    // Quality and outcome.
    ("good", 1.9),
    ("great", 3.1),
    ("excellent", 3.2),
    ("amazing", 2.8),
    ("wonderful", 2.7),
    ("fantastic", 2.6),
    ("brilliant", 2.8),
    ("outstanding", 3.0),
    ("perfect", 2.7),
    ("best", 3.2),
    ("better", 1.9),
    ("improve", 1.9),
    ("improved", 2.1),
    ("improvement", 2.0),
    ("improves", 1.9),
    ("benefit", 2.0),
    ("beneficial", 1.9),
    ("useful", 1.9),
    ("helpful", 1.9),
    ("help", 1.7),
    ("helps", 1.6),
    ("valuable", 2.1),
    ("value", 1.4),
    ("effective", 2.1),
    ("efficient", 1.8),
    ("success", 2.7),
    ("successful", 2.8),
    ("succeed", 2.2),
    ("win", 2.8),
    ("wins", 2.7),
    ("gain", 2.0),
    ("gains", 1.8),
    ("progress", 1.7),
    ("promising", 1.7),
    ("opportunity", 1.8),
    ("opportunities", 1.6),
    ("strong", 2.3),
    ("strength", 2.2),
    ("strengths", 1.9),
    ("robust", 1.4),
    ("reliable", 1.7),
    ("stable", 1.2),
    ("safe", 1.9),
    ("safer", 1.8),
    ("safety", 1.8),
    ("secure", 1.4),
    ("protect", 1.6),
    ("protected", 1.5),
    ("healthy", 1.7),
    ("clear", 1.6),
    ("clearly", 1.4),
    ("simple", 1.0),
    ("easy", 1.9),
    ("easier", 1.6),
    ("smart", 1.7),
    ("wise", 1.8),
    ("creative", 1.9),
    ("innovative", 1.9),
    ("innovation", 1.6),
    ("exciting", 2.2),
    ("excited", 1.4),
    ("interesting", 1.7),
    ("love", 3.2),
    ("liked", 1.8),
    ("enjoy", 2.2),
    ("happy", 2.7),
    ("glad", 2.0),
    ("pleased", 1.9),
    ("hope", 1.9),
    ("hopeful", 1.9),
    ("optimistic", 1.3),
    ("confident", 2.2),
    ("confidence", 2.3),
    ("trust", 2.3),
    ("trusted", 2.1),
    ("transparent", 1.4),
    ("transparency", 1.3),
    ("accountable", 0.9),
    ("accountability", 0.9),
    ("honest", 2.3),
    ("honesty", 2.2),
    ("care", 2.2),
    ("caring", 2.2),
    ("kind", 2.4),
    ("empathy", 1.9),
    ("together", 1.0),
    ("collaborate", 1.3),
    ("collaboration", 1.4),
    ("cooperate", 1.2),
    ("consensus", 1.2),
    ("solution", 1.3),
    ("solutions", 1.3),
    ("solve", 1.5),
    ("solved", 1.6),
    ("resolve", 1.4),
    ("resolved", 1.6),
    ("fix", 0.9),
    ("fixed", 1.1),
    ("works", 0.8),
    ("worth", 0.9),
    ("worthwhile", 1.8),
    ("affordable", 1.2),
    ("save", 2.2),
    ("saves", 2.0),
    ("saving", 1.7),
    ("savings", 1.5),
    ("fast", 0.9),
    ("faster", 1.0),
    ("quick", 0.9),
    ("fair-minded", 1.5),
    ("inclusive", 1.6),
    ("equitable", 1.5),
    ("justice", 2.3),
    ("freedom", 2.3),
    ("free", 2.3),
    ("proud", 2.1),
    ("celebrate", 2.7),
    ("advantage", 1.0),
    ("advantages", 1.0),
    ("ideal", 2.4),
    ("positive", 2.6),
    ("nice", 1.8),
    ("ready", 1.5),
    ("thrive", 2.3),
    ("welcoming", 2.0),
    ("encourage", 2.3),
    ("encouraging", 2.4),
    ("reassure", 1.6),
    ("reassuring", 1.7),
    ("relief", 2.1),
    ("calm", 1.3),
    ("balanced", 1.2),
    ("feasible", 1.1),
    ("viable", 1.1),
    ("practical", 0.9),
    ("pragmatic", 0.7),
    ("bold", 1.1),
    ("vision", 1.0),
    ("commit", 1.1),
    ("committed", 1.1),
    ("commitment", 1.2),
    // Disagreement, doubt, objection.
    ("disagree", -1.6),
    ("disagreed", -1.5),
    ("disagreement", -1.5),
    ("oppose", -1.6),
    ("opposed", -1.4),
    ("opposition", -1.3),
    ("object", -0.8),
    ("objection", -1.2),
    ("reject", -1.7),
    ("rejected", -1.9),
    ("doubt", -1.5),
    ("doubts", -1.4),
    ("doubtful", -1.4),
    ("skeptical", -1.2),
    ("sceptical", -1.2),
    ("unconvinced", -1.3),
    ("unclear", -1.0),
    ("uncertain", -1.2),
    ("uncertainty", -1.4),
    ("wrong", -2.1),
    ("mistake", -1.4),
    ("mistakes", -1.5),
    ("error", -1.4),
    ("errors", -1.4),
    ("flawed", -1.9),
    ("flaw", -1.7),
    ("flaws", -1.6),
    ("naive", -1.1),
    ("unrealistic", -1.5),
    ("unfair", -2.1),
    ("unacceptable", -2.0),
    ("unreasonable", -1.6),
    ("misleading", -1.7),
    ("irresponsible", -1.9),
    ("no", -1.2),
    ("refuse", -1.2),
    ("against", -0.8),
    ("deny", -1.4),
    ("denied", -1.9),
    // Risk, harm, cost.
    ("risk", -1.1),
    ("risks", -1.1),
    ("risky", -1.4),
    ("danger", -2.4),
    ("dangerous", -2.1),
    ("threat", -2.4),
    ("threaten", -2.0),
    ("harm", -2.5),
    ("harmful", -2.6),
    ("hurt", -2.4),
    ("hurts", -2.1),
    ("damage", -2.2),
    ("damaging", -2.3),
    ("worry", -1.9),
    ("worried", -1.2),
    ("worrying", -1.4),
    ("worries", -1.6),
    ("concern", -0.6),
    ("concerns", -0.7),
    ("concerned", -0.6),
    ("fear", -2.2),
    ("fears", -1.8),
    ("afraid", -2.0),
    ("anxious", -1.0),
    ("problem", -1.7),
    ("problems", -1.7),
    ("problematic", -1.9),
    ("issue", -0.6),
    ("issues", -0.6),
    ("trouble", -1.7),
    ("difficult", -1.5),
    ("hard", -0.4),
    ("costly", -1.3),
    ("expensive", -0.9),
    ("loss", -1.3),
    ("losses", -1.7),
    ("lose", -1.7),
    ("losing", -1.6),
    ("lost", -1.3),
    ("fail", -2.3),
    ("fails", -2.2),
    ("failed", -2.3),
    ("failing", -2.3),
    ("failure", -2.3),
    ("failures", -2.0),
    ("broken", -2.0),
    ("break", -0.8),
    ("bad", -2.5),
    ("worse", -2.1),
    ("worst", -3.1),
    ("poor", -2.1),
    ("poorly", -1.9),
    ("weak", -1.9),
    ("weakness", -1.8),
    ("terrible", -2.1),
    ("awful", -2.0),
    ("horrible", -2.5),
    ("disaster", -3.1),
    ("crisis", -3.1),
    ("chaos", -2.7),
    ("mess", -1.5),
    ("waste", -1.8),
    ("wasted", -2.2),
    ("wasteful", -1.8),
    ("burden", -1.9),
    ("burnout", -2.0),
    ("stress", -1.8),
    ("stressful", -2.2),
    ("pressure", -1.2),
    ("angry", -2.3),
    ("anger", -2.7),
    ("frustrated", -2.4),
    ("frustrating", -1.9),
    ("frustration", -2.1),
    ("upset", -1.6),
    ("annoyed", -1.6),
    ("disappointed", -1.9),
    ("disappointing", -2.2),
    ("sad", -2.1),
    ("unhappy", -1.8),
    ("hate", -2.7),
    ("dislike", -1.6),
    ("blame", -1.4),
    ("blamed", -2.1),
    ("guilty", -1.8),
    ("fault", -1.7),
    ("careless", -1.5),
    ("reckless", -1.7),
    ("unsafe", -1.9),
    ("vulnerable", -0.9),
    ("exposed", -0.5),
    ("breach", -1.4),
    ("abuse", -3.2),
    ("unfairly", -2.0),
    ("bias", -0.4),
    ("biased", -1.1),
    ("discrimination", -2.2),
    ("exclude", -1.0),
    ("excluded", -1.4),
    ("ignore", -1.3),
    ("ignored", -1.4),
    ("neglect", -2.0),
    ("neglected", -2.4),
    ("delay", -1.3),
    ("delays", -1.2),
    ("delayed", -0.9),
    ("slow", -0.7),
    ("confusing", -1.3),
    ("confused", -1.3),
    ("complicated", -1.1),
    ("impossible", -1.6),
    ("hidden", -0.6),
    ("penalty", -1.6),
    ("penalties", -1.5),
    ("lawsuit", -1.6),
    ("complaint", -1.6),
    ("complaints", -1.5),
    ("wrongful", -2.0),
    ("downgrade", -1.5),
    ("cut", -1.1),
    ("cuts", -1.0),
    ("layoffs", -2.0),
    ("shortfall", -1.4),
    ("deficit", -1.3),
    ("debt", -1.5),
    ("crash", -1.7),
    ("outage", -1.6),
    ("incident", -0.9),
    ("victim", -2.0),
    ("victims", -2.0),
    ("suffer", -2.1),
    ("suffering", -2.1),
    ("pain", -2.3),
    ("painful", -2.4),
    ("toxic", -2.2),
    ("hostile", -1.7),
    ("attack", -2.1),
    ("conflict", -1.3),
    ("dispute", -1.7),
    ("controversial", -0.8),
    ("negative", -2.7),
    ("unfortunately", -1.4),
    ("sorry", -0.3),
    ("regret", -1.8),
    ("shame", -2.1),
    ("stupid", -2.4),
    ("useless", -1.8),
    ("pointless", -1.8),
    ("unnecessary", -1.0),
    ("overpriced", -1.6),
    ("underestimate", -0.9),
    ("underestimating", -0.9),
    ("overlook", -0.7),
    ("overlooked", -0.9),
    ("reverse", -0.3),
    ("reversed", -0.4),
    ("lack", -1.0),
    ("lacks", -1.1),
    ("missing", -1.2),
    ("short", -0.3),
    ("struggle", -1.7),
    ("struggling", -1.8),
    ("cautious", -0.4),
    ("caution", -0.3),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polarity_negation_boosters_and_but() {
        assert!(score("This is a great plan.").compound > 0.5);
        assert!(score("This is a terrible plan.").compound < -0.4);
        assert!(score("This is not a great plan.").compound < 0.0);
        assert!(score("This is a very good plan.").compound > score("This is a good plan.").compound);
        assert!(score("This is a good plan!!!").compound > score("This is a good plan.").compound);
        assert!(score("The plan is good, but the risk is terrible").compound < 0.0);
        assert_eq!(score("The meeting is on Tuesday.").compound, 0.0);
        assert_eq!(score("").compound, 0.0);
        let s = score("I agree, but I worry about the cost.");
        assert!((s.pos + s.neg + s.neu - 1.0).abs() < 1e-9);
    }

    #[test]
    fn same_text_same_score() {
        let t = "I really don't think this is FAIR to the people affected, and I'm worried!";
        assert_eq!(score(t), score(t));
    }
}
