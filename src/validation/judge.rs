//! The judge: the prompt ([`JUDGE_SYSTEM_PROMPT`], quoted verbatim in the README), the request
//! that shows it the facts, claims and what the persona said, and the reading of its verdict.
//!
//! The user message is laid out in labelled lines (`F1 (role): ...`, `E1: ...`, `Q1: ...`,
//! `A1: ...`, `M1 (turn 2): ...`), one item per line; the simulated provider reads that layout
//! to compute its deterministic verdict (`llm::simulated`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Caller;
use super::facts::{Claim, Fact, cut};
use super::interview::Probe;
use crate::analysis::in_character::{Finding, FindingVerdict, Verdict};
use crate::llm::json_action::parse_json_tolerant;
use crate::llm::{ChatMessage, ChatRequest, RequestMeta, Role};

/// The judge's instructions, sent as the system message of every judge request.
pub const JUDGE_SYSTEM_PROMPT: &str = r#"You are a strict judge of simulated personas. A language model was asked to play the persona described by the FACTS below; you see what it said. Decide, from what it said only, how well it matches the EXPECTATIONS and the persona's own FACTS.

You receive:
- FACTS F1, F2, ...: the persona's definition.
- EXPECTATIONS E1, E2, ...: claims someone expects to hold for this persona (there may be none).
- What the persona said: interview answers A1, A2, ... to questions Q1, Q2, ..., or messages M1, M2, ... from a group discussion.

Rules:
1. Judge every expectation claim: "supported" when something the persona said shows it, "partial" when it shows it only in part or weakly, "contradicted" when something it said goes against it, "not_addressed" when nothing it said speaks to it.
2. Check the facts: report each fact that what was said clearly supports or contradicts (leave out facts nothing speaks to). Stating a job, place, age, relationship or history the facts do not give counts against the facts, and so does going along with a question marked "false premise" instead of correcting it.
3. Quote your evidence: the words said, with their label, e.g. A3: "I would never sign that contract".
4. Judge what the answers show, not what the persona claims about itself; tone and style are evidence too.
5. Score from 0.0 to 1.0: 1.0 when every claim is supported and nothing contradicts the facts; about 0.5 when the claims are mixed or mostly not addressed; near 0.0 when what was said contradicts the expectations or describes someone else. A contradiction weighs more than a claim not addressed. With no expectations, score the consistency with the facts alone. Be rigorous, not kind.

Answer with one JSON object and nothing else:
{"score": <number from 0.0 to 1.0>, "justification": "<2-4 sentences>", "findings": [{"claim": "<E1, F2, ...>", "verdict": "supported|partial|contradicted|not_addressed", "evidence": "<A2: \"quoted words\", or empty>"}]}"#;

/// Longest judge reply, in tokens: room for a finding per claim and per fact touched.
pub const JUDGE_MAX_TOKENS: u32 = 1200;

/// One answered question of an interview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answered {
    /// 1-based position (`Q1`/`A1`).
    pub n: usize,
    /// The question.
    pub question: String,
    /// What it probes.
    pub probe: Probe,
    /// The persona's answer.
    pub answer: String,
}

/// One message of a run shown to the judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledMessage {
    /// The turn it was said in.
    pub turn: u32,
    /// What was said.
    pub text: String,
}

/// What the judge reads the persona's behaviour from.
#[derive(Debug, Clone, Copy)]
pub enum Evidence<'a> {
    /// A persona check's interview.
    Interview(&'a [Answered]),
    /// Messages from a run (the `in_character` analysis).
    Messages(&'a [SampledMessage]),
}

/// What is judged, and how the request is sent.
#[derive(Debug, Clone, Copy)]
pub struct JudgeInput<'a> {
    /// Persona id (for the request's metadata and logs).
    pub persona: &'a str,
    /// The persona's facts.
    pub facts: &'a [Fact],
    /// Facts left out of `facts` for length.
    pub facts_left_out: usize,
    /// The whole expectation text, if any.
    pub expectations: Option<&'a str>,
    /// The expectation's claims.
    pub claims: &'a [Claim],
    /// What the persona said.
    pub evidence: Evidence<'a>,
    /// The judge model.
    pub model: &'a str,
    /// Seed sent to providers that take one.
    pub seed: Option<u64>,
}

/// The user message: facts, expectations and what the persona said, one labelled item a line.
pub fn judge_message(i: &JudgeInput<'_>) -> String {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut u = String::with_capacity(4096);
    u.push_str("FACTS (the persona's definition)\n");
    for f in i.facts {
        u.push_str(&format!("{} ({}): {}\n", f.id, f.field, one_line(&f.text)));
    }
    if i.facts_left_out > 0 {
        u.push_str(&format!("({} more facts were left out for length)\n", i.facts_left_out));
    }
    u.push_str("\nEXPECTATIONS\n");
    match i.expectations.map(str::trim).filter(|e| !e.is_empty()) {
        Some(text) => {
            u.push_str(&format!("The whole text: {}\n", one_line(text)));
            for c in i.claims {
                u.push_str(&format!("{}: {}\n", c.id, one_line(&c.text)));
            }
        }
        None => u.push_str("None given: judge the consistency with the facts alone.\n"),
    }
    match i.evidence {
        Evidence::Interview(answers) => {
            u.push_str("\nINTERVIEW\n");
            for a in answers {
                let mark = match &a.probe {
                    Probe::FalsePremise { decoy } => {
                        format!(" (false premise: nothing in the facts says the persona was {decoy})")
                    }
                    _ => String::new(),
                };
                u.push_str(&format!("Q{}{mark}: {}\n", a.n, one_line(&a.question)));
                u.push_str(&format!("A{}: {}\n", a.n, one_line(&a.answer)));
            }
        }
        Evidence::Messages(msgs) => {
            u.push_str("\nMESSAGES (a sample of what the persona said in a group discussion)\n");
            for (k, m) in msgs.iter().enumerate() {
                u.push_str(&format!("M{} (turn {}): {}\n", k + 1, m.turn, one_line(&m.text)));
            }
        }
    }
    u.push_str("\nAnswer with the JSON object only.");
    u
}

/// The judge request; with `retry` (the unreadable reply and why), the same request followed by
/// that reply and a request to answer again in the format given.
pub fn judge_request(i: &JudgeInput<'_>, retry: Option<(&str, &str)>) -> ChatRequest {
    let mut messages =
        vec![ChatMessage::new(Role::System, JUDGE_SYSTEM_PROMPT), ChatMessage::new(Role::User, judge_message(i))];
    if let Some((raw, why)) = retry {
        messages.push(ChatMessage::new(Role::Assistant, cut(raw, 4000)));
        messages.push(ChatMessage::new(
            Role::User,
            format!(
                "Your reply could not be read: {why}. Answer again with one JSON object only, in the format given: {{\"score\": ..., \"justification\": ..., \"findings\": [...]}}."
            ),
        ));
    }
    ChatRequest {
        model: i.model.to_string(),
        messages,
        temperature: Some(0.0),
        top_p: None,
        max_tokens: Some(JUDGE_MAX_TOKENS),
        seed: i.seed,
        stop: Vec::new(),
        response_format: crate::llm::ResponseFormat::Text,
        meta: RequestMeta {
            persona: i.persona.to_string(),
            turn: 0,
            purpose: crate::llm::Purpose::Judge,
            prompt_tokens: 0,
            ..Default::default()
        },
    }
}

/// Reads a judge's reply: one JSON object (in a code fence or prose, with the usual slips
/// repaired) with a `score` from 0.0 to 1.0 (a number, or a number in a string), a non-empty
/// `justification`, and `findings` (optional; unreadable items are left out and noted). Any
/// other reply is an error saying what is wrong; no score is ever guessed.
pub fn parse_verdict(text: &str) -> Result<Verdict, String> {
    let v = parse_json_tolerant(text).ok_or_else(|| "it holds no JSON object".to_string())?;
    let obj = match v {
        Value::Object(o) => o,
        Value::Array(a) => match a.into_iter().next() {
            Some(Value::Object(o)) => o,
            _ => return Err("its JSON is a list, not an object".into()),
        },
        _ => return Err("its JSON is not an object".into()),
    };
    let score = match obj.get("score") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| "it has no \"score\" number".to_string())?;
    if !(score.is_finite() && (0.0..=1.0).contains(&score)) {
        return Err(format!("its \"score\" is {score}, outside 0.0 to 1.0"));
    }
    let justification = obj
        .get("justification")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "it has no \"justification\" text".to_string())?
        .to_string();
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    if let Some(items) = obj.get("findings").and_then(Value::as_array) {
        for (k, item) in items.iter().enumerate() {
            match finding(item) {
                Ok(f) => findings.push(f),
                Err(why) => notes.push(format!("findings[{k}] left out: {why}")),
            }
        }
    } else if obj.contains_key("findings") {
        notes.push("\"findings\" is not a list; left out".into());
    }
    Ok(Verdict { score, justification, findings, notes })
}

fn finding(item: &Value) -> Result<Finding, String> {
    let claim = match item.get("claim").or_else(|| item.get("id")) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().trim_end_matches(':').to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("no \"claim\" label".into()),
    };
    let word = item.get("verdict").and_then(Value::as_str).unwrap_or("").trim().to_lowercase().replace([' ', '-'], "_");
    let verdict = match word.as_str() {
        "supported" | "support" | "met" | "consistent" => FindingVerdict::Supported,
        "partial" | "partially_supported" | "partly_supported" | "partially" | "mixed" => FindingVerdict::Partial,
        "contradicted" | "contradicts" | "inconsistent" | "violated" => FindingVerdict::Contradicted,
        "not_addressed" | "unaddressed" | "not_shown" | "unknown" | "n/a" => FindingVerdict::NotAddressed,
        "" => return Err(format!("{claim}: no \"verdict\"")),
        other => return Err(format!("{claim}: unknown verdict \"{other}\"")),
    };
    let evidence = match item.get("evidence") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "),
        _ => String::new(),
    };
    Ok(Finding { claim, verdict, evidence })
}

/// What asking the judge came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeOutcome {
    /// The judge model.
    pub model: String,
    /// The verdict, when a reply could be read.
    pub verdict: Option<Verdict>,
    /// Why there is no verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Judge requests made: 1, or 2 when the first reply could not be read (each retried on
    /// failures by the caller's policy).
    pub requests: u32,
    /// The replies as received.
    pub replies: Vec<String>,
}

/// Asks the judge; an unreadable reply is asked for once more, saying what was wrong. When the
/// call fails or no reply can be read, the outcome has an error and no verdict.
pub async fn judge(caller: &Caller, input: &JudgeInput<'_>) -> JudgeOutcome {
    let mut out =
        JudgeOutcome { model: input.model.to_string(), verdict: None, error: None, requests: 0, replies: Vec::new() };
    let mut why_first: Option<String> = None;
    for _ in 0..2 {
        let retry = match (&why_first, out.replies.last()) {
            (Some(why), Some(raw)) => Some((raw.clone(), why.clone())),
            _ => None,
        };
        let req = judge_request(input, retry.as_ref().map(|(r, w)| (r.as_str(), w.as_str())));
        out.requests += 1;
        match caller.call(req).await {
            Err(e) => {
                out.error = Some(format!("the judge call failed: {e}"));
                return out;
            }
            Ok(r) => {
                let parsed = parse_verdict(&r.text);
                out.replies.push(r.text);
                match parsed {
                    Ok(v) => {
                        out.verdict = Some(v);
                        return out;
                    }
                    Err(why) => match &why_first {
                        None => why_first = Some(why),
                        Some(first) => {
                            out.error = Some(format!(
                                "the judge's reply could not be read as a verdict, twice ({first}; then {why}), so there is no score; try another judge model (--judge-model) or run the check again"
                            ));
                            return out;
                        }
                    },
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::llm::simulated::check::{interview_answer, judge_verdict};
    use crate::llm::{ChatMessage, Role};
    use crate::rng::SplitMix64;

    proptest! {
        #[test]
        fn reading_a_verdict_never_panics_and_never_invents_a_score(s in "\\PC{0,120}") {
            if let Ok(v) = parse_verdict(&s) {
                prop_assert!((0.0..=1.0).contains(&v.score));
                prop_assert!(!v.justification.trim().is_empty());
            }
        }

        #[test]
        fn any_valid_verdict_is_read_back(score in 0.0f64..=1.0, why in "[a-zA-Z .,]{1,40}", prose in "[a-zA-Z .]{0,20}") {
            prop_assume!(!why.trim().is_empty());
            let body = serde_json::json!({"score": score, "justification": why, "findings": [{"claim": "E1", "verdict": "supported", "evidence": ""}]});
            let v = parse_verdict(&format!("{prose}\n```json\n{body}\n```")).unwrap();
            prop_assert_eq!(v.score, score);
            prop_assert_eq!(v.findings.len(), 1);
        }
    }

    #[test]
    fn verdicts_are_read_tolerantly_and_never_guessed() {
        let v = parse_verdict(
            "Here you go:\n```json\n{'score': '0.8', 'justification': 'Mostly fits.', 'findings': [{'claim': 'E1', 'verdict': 'Partially supported', 'evidence': 'A2: \"we wait\"'}, {'verdict': 'supported'}, {'claim': 'F3', 'verdict': 'meh'},],}\n```",
        )
        .unwrap();
        assert_eq!(v.score, 0.8);
        assert_eq!(
            v.findings,
            [Finding { claim: "E1".into(), verdict: FindingVerdict::Partial, evidence: "A2: \"we wait\"".into() }]
        );
        assert_eq!(v.notes.len(), 2, "{:?}", v.notes);
        for (bad, why) in [
            ("I think it is about 0.7.", "no JSON"),
            ("{\"justification\": \"x\"}", "no \"score\""),
            ("{\"score\": 7, \"justification\": \"x\"}", "outside"),
            ("{\"score\": \"high\", \"justification\": \"x\"}", "no \"score\""),
            ("{\"score\": 0.5}", "justification"),
            ("{\"score\": 0.5, \"justification\": \"  \"}", "justification"),
            ("[1, 2]", "list"),
        ] {
            let e = parse_verdict(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_message_labels_every_item_on_its_own_line() {
        let facts = vec![Fact { id: "F1".into(), field: "role".into(), text: "Nurse\nlead".into() }];
        let claims = vec![Claim { id: "E1".into(), text: "a nurse".into() }];
        let answers = vec![Answered {
            n: 1,
            question: "Who?".into(),
            probe: Probe::FalsePremise { decoy: "a pilot".into() },
            answer: "I am a nurse.\nNot a pilot.".into(),
        }];
        let i = JudgeInput {
            persona: "p",
            facts: &facts,
            facts_left_out: 2,
            expectations: Some("a nurse"),
            claims: &claims,
            evidence: Evidence::Interview(&answers),
            model: "judge-m",
            seed: None,
        };
        let m = judge_message(&i);
        assert!(m.contains("F1 (role): Nurse lead\n(2 more facts"), "{m}");
        assert!(m.contains("E1: a nurse\n"), "{m}");
        assert!(m.contains("Q1 (false premise: nothing in the facts says the persona was a pilot): Who?\nA1: I am a nurse. Not a pilot.\n"), "{m}");
        let r = judge_request(&i, Some(("garbage", "it holds no JSON object")));
        assert_eq!(r.model, "judge-m");
        assert_eq!(r.messages.len(), 4);
        assert!(r.messages[3].content.contains("could not be read: it holds no JSON object"));
        assert_eq!(r.temperature, Some(0.0));
    }

    // The simulated provider's judge writes verdicts this module reads.
    proptest! {
        #[test]
        fn any_request_gets_an_answer_and_a_readable_verdict(system in "\\PC{0,200}", user in "\\PC{0,200}") {
            let _ = interview_answer(&system, &user, &mut SplitMix64::new(1));
            let lines = format!("F1 (x): {system}\nE1: {user}\nA1: {system}\n{user}");
            let v = judge_verdict(&[ChatMessage::new(Role::User, lines)]);
            prop_assert!(parse_verdict(&v).is_ok(), "{}", v);
        }
    }

    #[test]
    fn the_verdict_follows_word_overlap() {
        let msg = |claims: &str| {
            vec![
                ChatMessage::new(Role::System, "judge"),
                ChatMessage::new(
                    Role::User,
                    format!(
                        "FACTS (x)\nF1 (role): City Council Member\nF2 (personality.traits): cautious\n\nEXPECTATIONS\nThe whole text: x\n{claims}\nINTERVIEW\nQ1: Who?\nA1: I'm Tom, City Council Member. I am cautious.\n"
                    ),
                ),
            ]
        };
        let good: serde_json::Value =
            serde_json::from_str(&judge_verdict(&msg("E1: a cautious council member"))).unwrap();
        assert_eq!(good["score"], 1.0);
        assert_eq!(good["findings"][0]["verdict"], "supported");
        assert!(good["findings"][0]["evidence"].as_str().unwrap().starts_with("A1: \""));
        let bad: serde_json::Value =
            serde_json::from_str(&judge_verdict(&msg("E1: an optimistic startup founder"))).unwrap();
        assert_eq!(bad["score"], 0.0);
        assert_eq!(bad["findings"][0]["verdict"], "not_addressed");
        let v = parse_verdict(&judge_verdict(&msg("E1: a cautious founder"))).unwrap();
        assert!(v.score > 0.0 && v.score < 1.0, "{v:?}");
        assert!(v.justification.contains("word overlap"));
    }
}
