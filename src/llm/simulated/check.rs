//! The simulated provider's answers for persona checks (`validation`), so the feature works
//! offline and its tests can assert that scores move the right way:
//!
//! - `Purpose::Interview`: the persona answers from its own system prompt only (name, role,
//!   description, traits, goals, any other fact line), picking the fact sentence that shares the
//!   most words with the question. It never repeats the question's words back, so an answer
//!   matches an expectation only when the persona's facts do. A false-premise question is
//!   corrected.
//! - `Purpose::Judge`: a verdict computed from word overlap: each expectation claim's share
//!   of content words found in the answers (or messages) is its coverage; the score is the mean
//!   coverage (with no expectations: the share of answers that echo the persona's facts). The
//!   justification says it is word overlap, not a model's judgement.
//!
//! Both read the layouts written by `validation::interview` and `validation::judge`.

use std::collections::HashSet;

use serde_json::json;

use crate::llm::{ChatMessage, Role};
use crate::rng::SplitMix64;

const STOP: &[&str] = &[
    "that", "this", "with", "from", "into", "about", "very", "really", "someone", "somebody", "person", "people",
    "their", "they", "them", "have", "been", "being", "does", "would", "could", "should", "whose", "which", "what",
    "when", "where", "while", "also", "more", "most", "less", "much", "many", "some", "every", "each", "other", "such",
    "than", "then", "there", "here", "just", "only", "like", "want", "wants", "your", "yours", "will", "were", "what",
    "over", "under", "after", "before", "because", "make", "makes", "made", "good", "well", "them", "these", "those",
    "thing", "things", "work", "works",
];

/// Content words of `text`, crudely stemmed (four letters or more, common suffixes dropped, cut
/// to six letters), so "distrusts" meets "distrust" and "costs" meets "cost".
pub(super) fn stems(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 4 && !STOP.contains(&w.as_str()))
        .map(|w| {
            let mut w = w.as_str();
            for suf in ["ing", "ed", "es", "s"] {
                if let Some(s) = w.strip_suffix(suf)
                    && s.chars().count() >= 4
                {
                    w = s;
                    break;
                }
            }
            w.chars().take(6).collect()
        })
        .collect()
}

#[derive(Debug, Default)]
struct Persona {
    name: String,
    role: String,
    traits: Vec<String>,
    goals: Vec<String>,
    /// Sentences of the "About you" line (the description), in the first person.
    about: Vec<String>,
    /// Every other statement of the prompt, in the first person.
    sentences: Vec<String>,
}

/// "You are ..." as "I am ...": synthetic answers speak in the first person.
fn first_person(s: &str) -> String {
    if let Some(r) = s.strip_prefix("You are ") {
        format!("I am {r}")
    } else if let Some(r) = s.strip_prefix("You ") {
        format!("I {r}")
    } else if let Some(r) = s.strip_prefix("Your ") {
        format!("My {r}")
    } else {
        s.to_string()
    }
}

/// Reads a persona's system prompt loosely: the "You are NAME, ROLE." line (a short,
/// capitalised name), "Traits:" and "Goals:" lines, and every other line that states something
/// (instructions left out).
fn read_persona(system: &str) -> Persona {
    let mut p = Persona::default();
    // The sectioned layout (`## Goals` or `Goals:` headings, `- Traits:` labels over items).
    let mut section = String::new();
    let mut label = String::new();
    for raw in system.lines() {
        let heading = raw.starts_with("## ") || (!raw.starts_with(['-', ' ']) && raw.ends_with(':'));
        let item = raw.trim_start().starts_with("- ");
        let line = raw.trim().trim_start_matches(['-', '*', '#', ' ']).replace("**", "");
        let line = line.trim();
        if heading {
            section = line.trim_end_matches(':').to_lowercase();
            label.clear();
            continue;
        }
        if item && line.ends_with(':') && !raw.starts_with("  ") {
            label = line.trim_end_matches(':').to_lowercase();
            continue;
        }
        if item && !line.is_empty() {
            let bare = line.trim_end_matches('.').to_string();
            if label == "traits" {
                p.traits.push(bare);
                continue;
            }
            if section == "goals" {
                p.goals.push(bare);
                continue;
            }
            if section == "about you" {
                let text = match line.split_once(": ") {
                    Some((l, rest)) if l.split_whitespace().count() <= 3 => format!("{l}: {rest}"),
                    _ => line.to_string(),
                };
                p.about.extend(sentences(&text).iter().map(|s| first_person(s)));
                continue;
            }
        }
        if line.is_empty()
            || line.starts_with("Stay in character")
            || line.starts_with("You are taking part")
            || line.eq_ignore_ascii_case("your persona")
        {
            continue;
        }
        if let Some(rest) = line.strip_prefix("You are ")
            && let Some((name, role)) = rest.split_once(", ")
            && name.split_whitespace().count() <= 5
            && name.starts_with(char::is_uppercase)
        {
            p.name = name.to_string();
            p.role = role.trim_end_matches('.').to_string();
            continue;
        }
        if let Some(rest) = line.strip_prefix("Traits: ") {
            p.traits = rest.split(", ").map(|t| t.trim().trim_end_matches('.').to_string()).collect();
            continue;
        }
        if let Some(rest) = line.strip_prefix("Goals: ") {
            p.goals = rest.split("; ").map(|g| g.trim().trim_end_matches('.').to_string()).collect();
            continue;
        }
        if let Some(rest) = line.strip_prefix("About you: ") {
            p.about.extend(sentences(rest).iter().map(|s| first_person(s)));
            continue;
        }
        // "Style: ...": the label goes, the statement stays.
        let text = match line.split_once(": ") {
            Some((label, rest)) if label.split_whitespace().count() <= 3 => rest,
            _ => line,
        };
        p.sentences.extend(sentences(text).iter().map(|s| first_person(s)));
    }
    p
}

/// How `validation::interview` opens its false-premise question.
const FALSE_PREMISE_OPENING: &str = "Earlier you mentioned your years as";

/// Sentences, split after `.`, `!` or `?` and a space (crude, and enough for synthetic text).
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        cur.push(c);
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|n| *n == ' ') {
            let t = cur.trim();
            if !t.is_empty() {
                out.push(t.to_string());
            }
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// An interview answer (see the module docs).
pub(crate) fn interview_answer(system: &str, user: &str, rng: &mut SplitMix64) -> String {
    let question = user.strip_prefix("An interviewer asks you: ").unwrap_or(user).lines().next().unwrap_or("");
    let p = read_persona(system);
    let role = if p.role.is_empty() { "who I am".to_string() } else { p.role.clone() };
    if question.starts_with(FALSE_PREMISE_OPENING) {
        return format!("That must be a mix-up: I have never done that job. I am {role}, and that is the work I know.");
    }
    let goal = |rng: &mut SplitMix64| -> Option<String> {
        if p.goals.is_empty() {
            return None;
        }
        let g: &String = rng.pick(&p.goals);
        Some(lower_first(g))
    };
    if question.contains("introduce yourself") {
        let mut a = format!("I'm {}, {role}.", if p.name.is_empty() { "glad to be here" } else { &p.name });
        if let Some(s) = p.about.first().or(p.sentences.first()) {
            a.push(' ');
            a.push_str(s);
        }
        if !p.traits.is_empty() {
            a.push_str(&format!(" People who work with me would call me {}.", p.traits.join(", ").to_lowercase()));
        }
        if let Some(g) = p.goals.first() {
            a.push_str(&format!(" What matters most to me: {}.", lower_first(g)));
        }
        return a;
    }
    // The statement sharing the most words with the question; with none, one about the persona.
    let q = stems(question);
    let all: Vec<&String> = p.about.iter().chain(&p.sentences).collect();
    let scored: Vec<(usize, &String)> = all.iter().map(|s| (stems(s).intersection(&q).count(), *s)).collect();
    let best = scored.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let pool: Vec<&String> = match best {
        0 if !p.about.is_empty() => p.about.iter().collect(),
        _ => scored.iter().filter(|(n, _)| *n == best).map(|(_, s)| *s).collect(),
    };
    let mut a = match pool.is_empty() {
        true => format!("Speaking as {role}, it depends on the situation."),
        false => format!("Speaking for myself: {}", rng.pick(&pool)),
    };
    if let Some(g) = goal(rng) {
        a.push_str(&format!(" In the end I want to {g}."));
    }
    a
}

struct Labelled {
    label: String,
    text: String,
}

/// A line of the judge prompt such as "F1 (role): text", "E1: text", "A1: text" or
/// "M1 (turn 2): text", with its letter.
fn labelled(line: &str) -> Option<(char, Labelled)> {
    let first = line.chars().next()?;
    let after = &line[first.len_utf8()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let label = format!("{first}{digits}");
    let rest = &after[digits.len()..];
    let text = match rest.split_once(": ") {
        Some((head, text)) if head.is_empty() || head.starts_with(" (") => text.to_string(),
        _ => return None,
    };
    Some((first, Labelled { label, text }))
}

/// What the persona said (answers or messages), with the stems of each and of all.
struct Said<'a> {
    items: &'a [Labelled],
    stems: Vec<HashSet<String>>,
    all: HashSet<String>,
}

impl<'a> Said<'a> {
    fn new(items: &'a [Labelled]) -> Self {
        let each: Vec<HashSet<String>> = items.iter().map(|s| stems(&s.text)).collect();
        let all = each.iter().flatten().cloned().collect();
        Said { items, stems: each, all }
    }

    /// The item sharing the most stems with `with` (the first of equals).
    fn closest(&self, with: &HashSet<String>) -> Option<usize> {
        (0..self.items.len()).max_by_key(|&i| (self.stems[i].intersection(with).count(), usize::MAX - i))
    }

    /// Item `i` as evidence: its label and its first 100 characters.
    fn quote(&self, i: usize) -> String {
        let t = &self.items[i].text;
        let short: String = t.chars().take(100).collect();
        format!("{}: \"{}{}\"", self.items[i].label, short, if t.chars().count() > 100 { "..." } else { "" })
    }
}

/// A judge verdict (see the module docs) as the JSON the judge prompt asks for.
pub(crate) fn judge_verdict(messages: &[ChatMessage]) -> String {
    let user = messages.iter().find(|m| m.role == Role::User).map(|m| &*m.content).unwrap_or("");
    let (mut facts, mut claims, mut said) = (Vec::new(), Vec::new(), Vec::new());
    for (first, item) in user.lines().filter_map(labelled) {
        match first {
            'F' => facts.push(item),
            'E' => claims.push(item),
            'A' | 'M' => said.push(item),
            _ => {}
        }
    }
    let said = Said::new(&said);
    let mut findings = Vec::new();
    let (coverages, supported) = claim_findings(&claims, &said, &mut findings);
    let fact_stems: Vec<HashSet<String>> = facts.iter().map(|f| stems(&f.text)).collect();
    let facts_echoed = fact_findings(&facts, &fact_stems, &said, &mut findings);
    let (score, what) = if !coverages.is_empty() {
        let s = coverages.iter().sum::<f64>() / coverages.len() as f64;
        (s, format!("{supported} of {} expectation claims found in what the persona said", claims.len()))
    } else {
        let all_facts: HashSet<String> = fact_stems.iter().flatten().cloned().collect();
        let fitting = said.stems.iter().filter(|s| s.intersection(&all_facts).count() >= 2).count();
        let s = if said.items.is_empty() { 0.0 } else { fitting as f64 / said.items.len() as f64 };
        (s, format!("{fitting} of {} answers or messages echo the persona's facts", said.items.len()))
    };
    let score = (score * 100.0).round() / 100.0;
    json!({
        "score": score,
        "justification": format!(
            "Simulated judge (word overlap, not a model's judgement): {what}; {facts_echoed} of {} facts echoed.",
            facts.len()
        ),
        "findings": findings,
    })
    .to_string()
}

/// A finding per expectation claim that has content words, and each one's coverage (the share
/// of its words the persona said); also how many are supported (coverage 0.6 or more).
fn claim_findings(claims: &[Labelled], said: &Said<'_>, findings: &mut Vec<serde_json::Value>) -> (Vec<f64>, usize) {
    let mut coverages = Vec::new();
    let mut supported = 0;
    for c in claims {
        let cs = stems(&c.text);
        if cs.is_empty() {
            continue;
        }
        let cov = cs.intersection(&said.all).count() as f64 / cs.len() as f64;
        coverages.push(cov);
        let verdict = if cov >= 0.6 {
            supported += 1;
            "supported"
        } else if cov > 0.0 {
            "partial"
        } else {
            "not_addressed"
        };
        let evidence = match said.closest(&cs) {
            Some(i) if cov > 0.0 => said.quote(i),
            _ => String::new(),
        };
        findings.push(json!({"claim": c.label, "verdict": verdict, "evidence": evidence}));
    }
    (coverages, supported)
}

/// A "supported" finding for each of the (at most five) facts the persona echoed best; returns
/// how many facts it echoed (half their words or more).
fn fact_findings(
    facts: &[Labelled],
    fact_stems: &[HashSet<String>],
    said: &Said<'_>,
    findings: &mut Vec<serde_json::Value>,
) -> usize {
    let mut echoed: Vec<(f64, usize)> = fact_stems
        .iter()
        .enumerate()
        .filter(|(_, s)| s.len() >= 2)
        .map(|(i, s)| (s.intersection(&said.all).count() as f64 / s.len() as f64, i))
        .filter(|(cov, _)| *cov >= 0.5)
        .collect();
    let facts_echoed = echoed.len();
    echoed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in echoed.into_iter().take(5) {
        let evidence = said.closest(&fact_stems[i]).map(|k| said.quote(k)).unwrap_or_default();
        findings.push(json!({"claim": facts[i].label, "verdict": "supported", "evidence": evidence}));
    }
    facts_echoed
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM: &str = "You are taking part in a simulated group discussion.\nYou are Tom Becker, City Council Member.\nAbout you: Tom chairs the budget committee. He distrusts vendors who promise savings.\nTraits: cautious, shrewd\nGoals: Cap total costs and secure an exit clause; Survive a public hearing\nStyle: Measured and polite.\nStay in character.";

    #[test]
    fn answers_come_from_the_facts_and_correct_a_false_premise() {
        let mut rng = SplitMix64::new(1);
        let intro = interview_answer(
            SYSTEM,
            "An interviewer asks you: To start, please introduce yourself: who are you?\nAnswer as Tom.",
            &mut rng,
        );
        assert!(intro.starts_with("I'm Tom Becker, City Council Member."), "{intro}");
        assert!(intro.contains("cautious, shrewd") && intro.contains("cap total costs"), "{intro}");
        let a =
            interview_answer(SYSTEM, "An interviewer asks you: Tell me about vendors and savings.\nAnswer.", &mut rng);
        assert!(a.contains("He distrusts vendors"), "{a}");
        // A long "You are ..." line is a statement, not the name.
        let a = interview_answer(
            &format!("You are an elected official, careful with money.\n{SYSTEM}"),
            "An interviewer asks you: Earlier you mentioned your years as a chef.\n",
            &mut rng,
        );
        assert!(a.contains("I am City Council Member"), "{a}");
        let a = interview_answer(
            SYSTEM,
            "An interviewer asks you: Earlier you mentioned your years as a pastry chef. What?\n",
            &mut rng,
        );
        assert!(a.contains("never done that job") && !a.contains("pastry"), "{a}");
        // The question's own words are not repeated back.
        let a = interview_answer(
            SYSTEM,
            "An interviewer asks you: Your organisation is about to commit to quantum blockchains.\n",
            &mut rng,
        );
        assert!(!a.to_lowercase().contains("quantum"), "{a}");
    }
}
