//! The interview of a persona check: which questions, in which order, and the requests that ask
//! them.
//!
//! Questions come from fixed templates; a seed picks among them, so the same persona,
//! expectation and run seed always get the same interview. No question states a claim of the
//! expectation as a fact about the persona ("are you cautious?" invites "yes"): identities and
//! traits are probed through the persona's work and decisions, attitudes through a situation that
//! names only their object ("your organisation is about to commit to cloud-only tools"). One
//! question carries a false premise (a job the persona never had) that a persona true to its
//! facts corrects.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::facts::{Claim, Fact};
use crate::llm::{ChatMessage, ChatRequest, RequestMeta, Role};
use crate::persona::PersonaSpec;
use crate::rng::SplitMix64;

/// What a question probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probe {
    /// Who the persona is, in its own words.
    Intro,
    /// An expectation claim (`E2`).
    Claim {
        /// The claim's label.
        claim: String,
    },
    /// One of the persona's own facts (`F7`).
    Fact {
        /// The fact's label.
        fact: String,
    },
    /// A general question (when there are too few claims and facts to fill the interview).
    General,
    /// A premise the facts do not support: the persona should correct it.
    FalsePremise {
        /// The job the question wrongly assumes.
        decoy: String,
    },
}

/// One question of the interview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// 1-based position.
    pub n: usize,
    /// The question asked.
    pub text: String,
    /// What it probes.
    pub probe: Probe,
}

/// The opening question of every interview.
pub const INTRO: &str =
    "To start, please introduce yourself: who are you, what do you do, and what matters most to you in your work?";

/// The words every false-premise question starts with (the simulated provider recognises them).
pub const FALSE_PREMISE_OPENING: &str = "Earlier you mentioned your years as";

const IDENTITY: &[&str] = &[
    "What does a typical working week look like for you?",
    "Tell me about a recent decision at work where a lot was at stake. How did you make it?",
    "What would the people you work with say is your biggest strength, and your biggest flaw?",
    "How did you get into your current line of work?",
];

const GOAL: &[&str] = &[
    "What are you trying to achieve in your work over the next year or two, and what stands in the way?",
    "If you could change one thing about how your organisation works, what would it be and why?",
];

// `{x}` is the object of the attitude ("cloud-only tools").
const ATTITUDE: &[&str] = &[
    "Your organisation is about to commit to {x}. What is your honest reaction?",
    "A colleague argues that {x} should become the default from now on. How do you respond?",
    "Tell me about your experience with {x}. What did it teach you?",
];

const GENERIC: &[&str] = &[
    "Tell me about a situation at work that shows who you really are.",
    "What is a view you hold that many people around you disagree with?",
];

/// Verbs that open an attitude ("distrusts cloud-only tools"), in the third person.
const ATTITUDE_VERBS: &[&str] = &[
    "distrusts",
    "mistrusts",
    "trusts",
    "loves",
    "likes",
    "hates",
    "dislikes",
    "prefers",
    "avoids",
    "fears",
    "supports",
    "opposes",
    "values",
    "doubts",
    "resists",
    "embraces",
    "favours",
    "favors",
    "champions",
    "rejects",
    "questions",
    "enjoys",
    "relies",
    "cares",
    "worries",
    "believes",
    "defends",
    "criticises",
    "criticizes",
    "welcomes",
    "dreads",
    "despises",
];

/// Verbs that, followed by "to", state a goal ("wants to cap costs").
const GOAL_VERBS: &[&str] = &["wants", "needs", "tries", "hopes", "plans", "aims", "intends", "wishes", "strives"];

/// Jobs the false premise may name, far from most personas; one sharing no word with the
/// persona's facts or the claims is chosen.
const DECOYS: &[&str] = &[
    "a lighthouse keeper",
    "a professional cyclist",
    "a pastry chef",
    "an airline pilot",
    "an opera singer",
    "a deep-sea diver",
    "a circus acrobat",
    "a ski instructor",
];

#[derive(Debug, Clone, PartialEq)]
enum ClaimKind {
    Identity,
    Goal,
    Attitude(String),
    Other,
}

/// What kind of claim this is, and the object of an attitude.
fn classify(claim: &str) -> ClaimKind {
    let words: Vec<&str> = claim.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let mut i = 0;
    // "is wary of X", "is against X", "is sceptical about X": an attitude towards X.
    if matches!(lower.first().map(String::as_str), Some("is" | "are" | "was")) {
        i = 1;
        let rest = &lower[1..];
        if let Some(p) =
            rest.iter().position(|w| matches!(w.as_str(), "of" | "about" | "against" | "towards" | "toward"))
            && p <= 2
            && 1 + p + 1 < words.len()
        {
            return ClaimKind::Attitude(words[1 + p + 1..].join(" "));
        }
    }
    let Some(first) = lower.get(i) else { return ClaimKind::Other };
    if GOAL_VERBS.contains(&first.as_str()) && lower.get(i + 1).is_some_and(|w| w == "to") {
        return ClaimKind::Goal;
    }
    if ATTITUDE_VERBS.contains(&first.as_str()) {
        let mut j = i + 1;
        if lower.get(j).is_some_and(|w| matches!(w.as_str(), "in" | "on" | "about" | "of" | "for")) {
            j += 1;
        }
        if j < words.len() {
            return ClaimKind::Attitude(words[j..].join(" ").trim_end_matches(['.', ',', ';']).to_string());
        }
        return ClaimKind::Other;
    }
    if matches!(first.as_str(), "a" | "an" | "the") || (i == 1 && words.len() <= 5) {
        return ClaimKind::Identity;
    }
    if words.len() <= 4 && !first.ends_with('s') {
        return ClaimKind::Identity;
    }
    ClaimKind::Other
}

/// Content words of `text`, lower-cased (four letters or more).
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() >= 4).map(str::to_lowercase).collect()
}

/// The question asked about one of the persona's own facts, by the field it comes from.
fn fact_template(field: &str) -> Option<&'static str> {
    Some(match field {
        "personality.goals" => "What are you working towards over the next few years?",
        "description" => "Tell me about your background: how did you end up doing what you do?",
        "personality.style" | "personality.communication" => {
            "How do you usually make your point in a meeting where people disagree with you?"
        }
        "personality.traits" => "How would a colleague who knows you well describe you, good and bad?",
        "personality.decisions" | "personality.approach" => {
            "Walk me through how you made an important decision recently."
        }
        "name" | "role" => return None,
        _ => "Outside your job title, what should people know about you to understand how you think?",
    })
}

/// Plans `n` questions (at least 1): the introduction first; one question per claim while there
/// is room (keeping one for the persona's facts when there are three or more slots); questions
/// on the persona's own facts in the rest; and, from four questions up, a false premise last.
/// A pure function of its inputs.
pub fn plan_questions(facts: &[Fact], claims: &[Claim], n: usize, seed: u64) -> Vec<Question> {
    let n = n.max(1);
    let mut rng = SplitMix64::new(seed);
    let mut used: HashSet<&'static str> = HashSet::new();
    let mut out = vec![Question { n: 1, text: INTRO.to_string(), probe: Probe::Intro }];
    let premise = n >= 4;
    let room = n - 1 - premise as usize;
    let claim_slots = if claims.len() >= room && room >= 3 { room - 1 } else { claims.len().min(room) };
    for c in claims.iter().take(claim_slots) {
        let text = match classify(&c.text) {
            ClaimKind::Identity => pick(IDENTITY, &mut used, &mut rng).to_string(),
            ClaimKind::Goal => pick(GOAL, &mut used, &mut rng).to_string(),
            // Attitude questions name their object, so they never repeat; no `used` bookkeeping.
            ClaimKind::Attitude(x) => rng.pick(ATTITUDE).replace("{x}", &x),
            ClaimKind::Other => pick(GENERIC, &mut used, &mut rng).to_string(),
        };
        out.push(Question { n: out.len() + 1, text, probe: Probe::Claim { claim: c.id.clone() } });
    }
    // Facts of distinct templates, in a seeded order; description and goals first when present.
    let mut candidates: Vec<(&Fact, &'static str)> =
        facts.iter().filter_map(|f| fact_template(&f.field).map(|t| (f, t))).collect();
    rng.shuffle(&mut candidates);
    candidates.sort_by_key(|(f, _)| match f.field.as_str() {
        "description" => 0,
        "personality.goals" => 1,
        _ => 2,
    });
    let mut fact_questions = Vec::new();
    let mut templates_seen = HashSet::new();
    for (f, t) in candidates {
        if fact_questions.len() + out.len() > room {
            break;
        }
        if used.contains(t) || !templates_seen.insert(t) {
            continue;
        }
        fact_questions.push((f, t));
    }
    for (f, t) in fact_questions {
        used.insert(t);
        out.push(Question { n: out.len() + 1, text: t.to_string(), probe: Probe::Fact { fact: f.id.clone() } });
    }
    // Any room left (few facts, few claims): general questions.
    while out.len() - 1 < room {
        let t = pick(GENERIC, &mut used, &mut rng);
        out.push(Question { n: out.len() + 1, text: t.to_string(), probe: Probe::General });
    }
    if premise {
        let known: HashSet<String> =
            facts.iter().flat_map(|f| words(&f.text)).chain(claims.iter().flat_map(|c| words(&c.text))).collect();
        let mut decoys: Vec<&str> = DECOYS.to_vec();
        rng.shuffle(&mut decoys);
        let decoy = decoys.iter().find(|d| words(d).is_disjoint(&known)).copied().unwrap_or(decoys[0]);
        out.push(Question {
            n: out.len() + 1,
            text: format!("{FALSE_PREMISE_OPENING} {decoy}. What did that job teach you?"),
            probe: Probe::FalsePremise { decoy: decoy.to_string() },
        });
    }
    out
}

/// An unused template of `bank` (seeded), else an unused one of `GENERIC`, else any of `bank`.
fn pick(bank: &[&'static str], used: &mut HashSet<&'static str>, rng: &mut SplitMix64) -> &'static str {
    let mut order: Vec<&'static str> = bank.to_vec();
    rng.shuffle(&mut order);
    let t =
        order.iter().chain(GENERIC.iter()).find(|t| !used.contains(**t)).copied().unwrap_or_else(|| *rng.pick(bank));
    used.insert(t);
    t
}

/// How the persona answers: its model and sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct InterviewSampling {
    /// The persona's model (its own, else `llm.model`).
    pub model: String,
    /// Its temperature (its own, else `llm.temperature`).
    pub temperature: f64,
    /// Longest answer, in tokens.
    pub max_tokens: u32,
    /// Seed sent to providers that take one.
    pub seed: Option<u64>,
}

/// The user message that asks one question.
pub fn ask(name: &str, question: &str) -> String {
    format!("An interviewer asks you: {question}\nAnswer as {name}, in the first person, in 2-4 sentences.")
}

/// The request asking question `q` after the exchanges in `earlier` (question, answer): the
/// persona's own system prompt, then the interview so far as user and assistant turns.
pub fn interview_request(
    persona: &PersonaSpec,
    system: &Arc<str>,
    earlier: &[(String, String)],
    q: &Question,
    s: &InterviewSampling,
) -> ChatRequest {
    let mut messages = vec![ChatMessage { role: Role::System, content: system.clone() }];
    for (question, answer) in earlier {
        messages.push(ChatMessage::new(Role::User, ask(&persona.name, question)));
        messages.push(ChatMessage::new(Role::Assistant, answer.as_str()));
    }
    messages.push(ChatMessage::new(Role::User, ask(&persona.name, &q.text)));
    ChatRequest {
        model: s.model.clone(),
        messages,
        temperature: Some(s.temperature),
        top_p: None,
        max_tokens: Some(s.max_tokens),
        seed: s.seed,
        stop: Vec::new(),
        response_format: crate::llm::ResponseFormat::Text,
        meta: RequestMeta {
            persona: persona.id.clone(),
            turn: q.n as u32,
            purpose: crate::llm::Purpose::Interview,
            prompt_tokens: 0,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::facts::{persona_facts, split_claims};

    #[test]
    fn claims_are_classified_without_leading_questions() {
        assert_eq!(classify("a cautious hospital administrator"), ClaimKind::Identity);
        assert_eq!(classify("distrusts cloud-only tools"), ClaimKind::Attitude("cloud-only tools".into()));
        assert_eq!(classify("is wary of vendor lock-in"), ClaimKind::Attitude("vendor lock-in".into()));
        assert_eq!(classify("cares about patient privacy"), ClaimKind::Attitude("patient privacy".into()));
        assert_eq!(classify("wants to cap costs"), ClaimKind::Goal);
    }

    #[test]
    fn the_plan_is_seeded_and_covers_claims_facts_and_a_false_premise() {
        let mut p = PersonaSpec::new("tom", "Tom Becker", "City Council Member", "Tom chairs the budget committee.");
        p.personality.traits = vec!["cautious".into()];
        p.personality.goals = vec!["Cap total costs".into()];
        p.personality.style = "Measured.".into();
        let (facts, _) = persona_facts(&p);
        let claims = split_claims("a cautious council member who distrusts cloud-only tools");
        let q = plan_questions(&facts, &claims, 5, 7);
        assert_eq!(q, plan_questions(&facts, &claims, 5, 7));
        assert_eq!(q.len(), 5);
        assert_eq!(q[0].probe, Probe::Intro);
        assert_eq!(q[1].probe, Probe::Claim { claim: "E1".into() });
        assert_eq!(q[2].probe, Probe::Claim { claim: "E2".into() });
        assert!(q[2].text.contains("cloud-only tools"), "{q:?}");
        assert!(matches!(q[3].probe, Probe::Fact { .. }), "{q:?}");
        assert!(matches!(&q[4].probe, Probe::FalsePremise { .. }), "{q:?}");
        assert!(q[4].text.starts_with(FALSE_PREMISE_OPENING));
        // No question asserts a claim about the persona.
        assert!(q.iter().all(|q| !q.text.to_lowercase().contains("cautious")), "{q:?}");
        let texts: HashSet<&str> = q.iter().map(|q| q.text.as_str()).collect();
        assert_eq!(texts.len(), 5, "no question twice: {q:?}");
        // Another seed may word them differently, never changes their number.
        for seed in 0..50 {
            let q = plan_questions(&facts, &claims, 5, seed);
            assert_eq!(q.len(), 5);
            for n in 1..=12 {
                assert_eq!(plan_questions(&facts, &claims, n, seed).len(), n);
                assert_eq!(plan_questions(&facts, &[], n, seed).len(), n);
                assert_eq!(plan_questions(&[], &[], n, seed).len(), n);
            }
        }
    }
}
