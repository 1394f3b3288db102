//! One persona check from start to end: facts and claims, the interview, the judge, the result
//! saved as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::facts::{Claim, Fact, persona_facts, split_claims};
use super::interview::{InterviewSampling, Question, interview_request, plan_questions};
use super::judge::{Answered, Evidence, JudgeInput, JudgeOutcome, judge};
use super::{Caller, Spend};
use crate::analysis::in_character::FindingVerdict;
use crate::config::SimulationConfig;
use crate::persona::PersonaSpec;
use crate::prompt::{Reply, parse_reply, system_prompt};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Scored at or above the pass mark.
    Pass,
    /// Scored below the pass mark.
    BelowThreshold,
    /// An interview question got no answer (the call failed after its retries, or the budget
    /// stopped it); the judge was not asked.
    InterviewFailed,
    /// The judge gave no readable verdict (or its call failed): there is no score.
    JudgeFailed,
}

impl CheckStatus {
    /// The word printed on the verdict line.
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::BelowThreshold => "BELOW THRESHOLD",
            CheckStatus::InterviewFailed => "INTERVIEW FAILED",
            CheckStatus::JudgeFailed => "NO VERDICT",
        }
    }
}

/// The persona checked, as it was checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckedPersona {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Where it was read from (a persona file or folder, or a scenario).
    pub source: String,
    /// Fragment files merged into it, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fragments: Vec<String>,
    /// The system prompt the interview used.
    pub system_prompt: String,
}

/// A persona check's result, saved as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaCheck {
    /// The persona.
    pub persona: CheckedPersona,
    /// The expectation text, if one was given.
    pub expectations: Option<String>,
    /// Where it came from (`--expect`, or the scenario file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectations_from: Option<String>,
    /// The expectation's claims.
    pub claims: Vec<Claim>,
    /// The persona's facts shown to the judge.
    pub facts: Vec<Fact>,
    /// Facts left out for length.
    pub facts_left_out: usize,
    /// Questions planned (`--questions`, `validation.questions`).
    pub questions_planned: usize,
    /// The interview, question by question (fewer than planned when a call failed).
    pub interview: Vec<Answered>,
    /// The judge's outcome (absent when the interview failed).
    pub judge: Option<JudgeOutcome>,
    /// The score: the judge's, when it gave a readable verdict. Never made up.
    pub score: Option<f64>,
    /// The pass mark (`--min-score`, `validation.min_score`).
    pub min_score: f64,
    /// How the check ended.
    pub status: CheckStatus,
    /// What went wrong, when the check did not get a score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Claims the judge's findings do not mention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreported_claims: Vec<String>,
    /// The provider that answered and judged.
    pub provider: String,
    /// True when that was the simulated provider (its score measures word overlap).
    pub synthetic: bool,
    /// The persona's model.
    pub persona_model: String,
    /// The persona's temperature.
    pub persona_temperature: f64,
    /// `simulation.run_seed` (`--run-seed`).
    pub run_seed: u64,
    /// The seed of this interview, from the run seed, the persona and the expectation.
    pub seed: u64,
    /// Calls, tokens and cost of this check.
    #[serde(flatten)]
    pub spend: Spend,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it ended.
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// The troupe version.
    pub troupe_version: String,
}

impl PersonaCheck {
    /// True when the check scored at or above its pass mark.
    pub fn passed(&self) -> bool {
        self.status == CheckStatus::Pass
    }
}

/// What to check a persona against, and how.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// What is expected of the persona, if anything (else it is held to its facts alone).
    pub expectations: Option<String>,
    /// Where the expectation came from, for the record.
    pub expectations_from: Option<String>,
    /// Interview questions.
    pub questions: usize,
    /// The judge model.
    pub judge_model: String,
    /// The pass mark.
    pub min_score: f64,
    /// Where the persona was read from.
    pub source: String,
    /// Fragment files merged into it.
    pub fragments: Vec<String>,
}

/// The seed of a check: a pure function of the run seed, the persona and the expectation, so
/// the same inputs ask the same questions.
pub fn check_seed(run_seed: u64, persona_id: &str, expectations: Option<&str>) -> u64 {
    let stream = crate::rng::Stream::PersonaCheck { persona: persona_id, expectations: expectations.unwrap_or("") };
    crate::rng::derive(run_seed, stream)
}

/// Interviews `persona` and has the judge score the answers; see the module docs of
/// [`crate::validation`]. Never fails: a failed call or an unreadable verdict is recorded in the
/// result (with no score).
pub async fn check_persona(
    caller: &Caller,
    cfg: &SimulationConfig,
    persona: &PersonaSpec,
    opts: &CheckOptions,
) -> PersonaCheck {
    let started_at = chrono::Utc::now();
    let before = caller.spend();
    let system = system_prompt(persona);
    let expectations = opts.expectations.as_deref().map(str::trim).filter(|e| !e.is_empty());
    let (facts, facts_left_out) = persona_facts(persona);
    let claims = expectations.map(split_claims).unwrap_or_default();
    let run_seed = cfg.simulation.run_seed;
    let seed = check_seed(run_seed, &persona.id, expectations);
    let sampling = InterviewSampling {
        model: persona.model.clone().unwrap_or_else(|| cfg.llm.model.clone()),
        temperature: persona.temperature.unwrap_or(cfg.llm.temperature),
        max_tokens: cfg.llm.max_tokens,
        seed: cfg.llm.send_seed.then_some(seed),
    };
    let questions = plan_questions(&facts, &claims, opts.questions, seed);
    let (interview, mut error) = interview(caller, persona, &system, &questions, &sampling).await;
    let judge_model = opts.judge_model.clone();
    let outcome = if error.is_none() {
        let input = JudgeInput {
            persona: &persona.id,
            facts: &facts,
            facts_left_out,
            expectations,
            claims: &claims,
            evidence: Evidence::Interview(&interview),
            model: &judge_model,
            seed: cfg.llm.send_seed.then_some(seed),
        };
        Some(judge(caller, &input).await)
    } else {
        None
    };
    let score = outcome.as_ref().and_then(|o| o.verdict.as_ref()).map(|v| v.score);
    let status = status_of(error.is_some(), score, opts.min_score);
    if status == CheckStatus::JudgeFailed {
        error = outcome.as_ref().and_then(|o| o.error.clone());
    }
    let unreported_claims = unreported(&claims, outcome.as_ref());
    let spend = spent_since(&before, &caller.spend());
    PersonaCheck {
        persona: CheckedPersona {
            id: persona.id.clone(),
            name: persona.name.clone(),
            role: persona.role.clone(),
            source: opts.source.clone(),
            fragments: opts.fragments.clone(),
            system_prompt: system.to_string(),
        },
        expectations: expectations.map(str::to_owned),
        expectations_from: expectations.and(opts.expectations_from.clone()),
        claims,
        facts,
        facts_left_out,
        questions_planned: questions.len(),
        interview,
        judge: outcome,
        score,
        min_score: opts.min_score,
        status,
        error,
        unreported_claims,
        provider: caller.provider().name().to_string(),
        synthetic: caller.provider().synthetic(),
        persona_model: sampling.model,
        persona_temperature: sampling.temperature,
        run_seed,
        seed,
        spend,
        started_at,
        finished_at: chrono::Utc::now(),
        troupe_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Asks the questions in turn, each with the answers so far; stops at the first that gets no
/// answer, with what went wrong.
async fn interview(
    caller: &Caller,
    persona: &PersonaSpec,
    system: &Arc<str>,
    questions: &[Question],
    sampling: &InterviewSampling,
) -> (Vec<Answered>, Option<String>) {
    let mut interview: Vec<Answered> = Vec::new();
    for q in questions {
        let earlier: Vec<(String, String)> = interview.iter().map(|a| (a.question.clone(), a.answer.clone())).collect();
        let req = interview_request(persona, system, &earlier, q, sampling);
        match caller.call(req).await {
            Ok(r) => {
                // A leading "Tom Becker:" is the model labelling its line, not part of the answer.
                let answer = match parse_reply(&r.text, &persona.name) {
                    Reply::Speak { text, to: None } => text,
                    _ => r.text.trim().to_string(),
                };
                interview.push(Answered { n: q.n, question: q.text.clone(), probe: q.probe.clone(), answer });
            }
            Err(e) => return (interview, Some(format!("question {} of the interview got no answer: {e}", q.n))),
        }
    }
    (interview, None)
}

/// How a check ended: whether the interview failed, and the judge's score against the pass mark.
fn status_of(interview_failed: bool, score: Option<f64>, min_score: f64) -> CheckStatus {
    match (interview_failed, score) {
        (true, _) => CheckStatus::InterviewFailed,
        (false, None) => CheckStatus::JudgeFailed,
        (false, Some(s)) if s >= min_score => CheckStatus::Pass,
        (false, Some(_)) => CheckStatus::BelowThreshold,
    }
}

/// The ids of the claims the judge's findings do not mention (none without a verdict).
fn unreported(claims: &[Claim], outcome: Option<&JudgeOutcome>) -> Vec<String> {
    match outcome.and_then(|o| o.verdict.as_ref()) {
        Some(v) => claims
            .iter()
            .filter(|c| !v.findings.iter().any(|f| f.claim.eq_ignore_ascii_case(&c.id)))
            .map(|c| c.id.clone())
            .collect(),
        None => Vec::new(),
    }
}

/// Calls, tokens and cost between two readings of a caller's spend.
fn spent_since(before: &Spend, after: &Spend) -> Spend {
    Spend {
        calls: after.calls - before.calls,
        usage: crate::llm::Usage::new(
            after.usage.prompt_tokens - before.usage.prompt_tokens,
            after.usage.completion_tokens - before.usage.completion_tokens,
        ),
        cost_usd: (after.cost_usd - before.cost_usd).max(0.0),
    }
}

/// Lines for a terminal: the score and verdict line, the justification, the findings.
pub fn report_lines(c: &PersonaCheck) -> Vec<String> {
    let mut v = vec![format!("{} ({}, {})", c.persona.id, c.persona.name, c.persona.role)];
    match &c.expectations {
        Some(e) => v.push(format!("expectations: {e}")),
        None => v.push("expectations: none given; checked against its own facts only".into()),
    }
    let judge_model = c.judge.as_ref().map_or("-", |j| j.model.as_str());
    v.push(match c.score {
        Some(s) => {
            format!("score {s:.2} / 1.00  {}  (pass mark {:.2}; judge {judge_model})", c.status.label(), c.min_score)
        }
        None => format!("score none  {}  (pass mark {:.2}; judge {judge_model})", c.status.label(), c.min_score),
    });
    if let Some(e) = &c.error {
        v.push(format!("why: {e}"));
    }
    if let Some(verdict) = c.judge.as_ref().and_then(|j| j.verdict.as_ref()) {
        v.push(format!("justification: {}", verdict.justification));
        if !verdict.findings.is_empty() {
            v.push("findings:".into());
        }
        for f in &verdict.findings {
            let what = c
                .claims
                .iter()
                .find(|x| x.id.eq_ignore_ascii_case(&f.claim))
                .map(|x| x.text.as_str())
                .or_else(|| c.facts.iter().find(|x| x.id.eq_ignore_ascii_case(&f.claim)).map(|x| x.text.as_str()))
                .unwrap_or("");
            let mark = match f.verdict {
                FindingVerdict::Supported => "supported",
                FindingVerdict::Partial => "partial",
                FindingVerdict::Contradicted => "CONTRADICTED",
                FindingVerdict::NotAddressed => "not addressed",
            };
            let evidence = if f.evidence.is_empty() {
                String::new()
            } else {
                format!(" | {}", super::facts::cut(&f.evidence, 160))
            };
            v.push(format!("  {:<4} {mark:<13} {}{evidence}", f.claim, super::facts::cut(what, 70)));
        }
        if !c.unreported_claims.is_empty() {
            v.push(format!("  (the judge reported nothing on {})", c.unreported_claims.join(", ")));
        }
    }
    v.push(format!(
        "interview: {} of {} question(s) answered by {} (temperature {}); {} fact(s) and {} claim(s) judged",
        c.interview.len(),
        c.questions_planned,
        c.persona_model,
        c.persona_temperature,
        c.facts.len(),
        c.claims.len()
    ));
    v
}

/// Where a check is saved by default: `<output_dir>/checks/<persona>-<UTC timestamp>.json`,
/// with `-2`, `-3`, ... when that name is taken.
pub fn default_path(output_dir: &Path, c: &PersonaCheck) -> PathBuf {
    let dir = output_dir.join("checks");
    let stamp = c.started_at.format("%Y%m%dT%H%M%SZ");
    let id = crate::persona::tinytroupe::slug(&c.persona.id);
    let mut p = dir.join(format!("{id}-{stamp}.json"));
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("{id}-{stamp}-{n}.json"));
        n += 1;
    }
    p
}

/// Writes `value` as pretty JSON to `path` atomically, creating its folder.
pub fn save_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::fsutil::write_atomic(path, &bytes)
}
