//! Extraction: structured answers from every persona at the end of a run.
//!
//! One call per persona through the run's provider: the persona's own system prompt, then the
//! conversation (its last [`MAX_LINES`] messages) and a request for one JSON object with the
//! scenario's `extract` fields. The reply is read with
//! [`crate::llm::json_action::parse_json_tolerant`] and checked against the fields: a field with
//! `choices` must hold one of them (matched without regard to case), a free field any
//! non-empty text. An invalid reply is asked for once more, saying what was wrong. Calls are
//! retried on retryable failures with the run's backoff settings. The temperature is 0: the
//! answers measure the run, they are not part of it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::SimulationConfig;
use crate::cost::Pricing;
use crate::llm::json_action::parse_json_tolerant;
use crate::llm::retry::{RetryPolicy, attempt_within, retry_call};
use crate::llm::{CallContext, ChatMessage, ChatRequest, LlmError, Provider, RequestMeta, Role, Usage};
use crate::persona::PersonaSpec;
use crate::prompt::system_prompt;
use crate::record::results::SimulationResults;
use crate::scenario::ExtractField;

/// Messages of the conversation shown in an extraction prompt (the most recent).
pub const MAX_LINES: usize = 60;

/// What one persona answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaExtraction {
    /// Persona id.
    pub persona: String,
    /// Display name.
    pub name: String,
    /// The answers that passed validation, by field (choices in their declared spelling).
    pub values: BTreeMap<String, String>,
    /// True when every field was answered validly.
    pub valid: bool,
    /// What was wrong with the last reply, if anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The last reply as received.
    pub raw: String,
    /// Calls made (retries and the correction included).
    pub calls: u32,
    /// Tokens used.
    pub usage: Usage,
}

/// The extraction of one run (`extraction.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    /// The fields asked for.
    pub fields: Vec<ExtractField>,
    /// One entry per persona.
    pub personas: Vec<PersonaExtraction>,
    /// Tokens used by all extraction calls.
    pub usage: Usage,
    /// What they cost (priced models only).
    pub cost_usd: f64,
}

/// The request asking `persona` for the fields, after the run in `results`.
pub fn extraction_request(
    persona: &PersonaSpec,
    results: &SimulationResults,
    fields: &[ExtractField],
    cfg: &SimulationConfig,
    correction: Option<&str>,
) -> ChatRequest {
    let mut u = String::with_capacity(4096);
    let _ = writeln!(u, "Topic: {}", results.topic);
    u.push_str("Conversation so far:\n");
    let skip = results.transcript.len().saturating_sub(MAX_LINES);
    for e in &results.transcript[skip..] {
        let _ = write!(u, "[turn {}] {}", e.turn, e.speaker);
        if !e.role.is_empty() {
            let _ = write!(u, " ({})", e.role);
        }
        if let Some(to) = &e.to {
            let _ = write!(u, " to {to}");
        }
        let _ = writeln!(u, ": {}", e.text.replace('\n', " "));
    }
    let _ = writeln!(
        u,
        "The discussion is over. Answer as {} with one JSON object and nothing else, with exactly these fields:",
        persona.name
    );
    for f in fields {
        let spec = if f.choices.is_empty() {
            "free text (a few words)".to_string()
        } else {
            format!("one of {}", f.choices.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", "))
        };
        let desc = if f.description.is_empty() { String::new() } else { format!(" ({})", f.description) };
        let _ = writeln!(u, "- \"{}\": {spec}{desc}", f.name);
    }
    if let Some(c) = correction {
        let _ = writeln!(u, "Your previous answer was not usable: {c}. Reply with the JSON object only.");
    }
    let model = persona.model.clone().unwrap_or_else(|| cfg.llm.model.clone());
    ChatRequest {
        model,
        messages: vec![ChatMessage::new(Role::System, system_prompt(persona)), ChatMessage::new(Role::User, u)],
        temperature: Some(0.0),
        top_p: None,
        max_tokens: Some(cfg.llm.max_tokens.max(64)),
        seed: None,
        stop: Vec::new(),
        response_format: crate::llm::ResponseFormat::Text,
        meta: RequestMeta {
            persona: persona.id.clone(),
            turn: 0,
            purpose: crate::llm::Purpose::Extract,
            prompt_tokens: 0,
            ..Default::default()
        },
    }
}

/// Checks a reply against the fields: the valid values, and what is wrong.
pub fn validate(raw: &str, fields: &[ExtractField]) -> (BTreeMap<String, String>, Vec<String>) {
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    let Some(Value::Object(obj)) = parse_json_tolerant(raw) else {
        return (values, vec!["the reply holds no JSON object".into()]);
    };
    for f in fields {
        let got = match obj.get(&f.name) {
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        };
        match got {
            None => problems.push(format!("field \"{}\" is missing or not text", f.name)),
            Some(s) if s.is_empty() => problems.push(format!("field \"{}\" is empty", f.name)),
            Some(s) if f.choices.is_empty() => {
                values.insert(f.name.clone(), s);
            }
            Some(s) => match f.choices.iter().find(|c| c.eq_ignore_ascii_case(&s)) {
                Some(c) => {
                    values.insert(f.name.clone(), c.clone());
                }
                None => problems.push(format!(
                    "field \"{}\" is \"{s}\", not one of {}",
                    f.name,
                    f.choices.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
                )),
            },
        }
    }
    (values, problems)
}

async fn call_with_retries(
    provider: &Arc<dyn Provider>,
    req: ChatRequest,
    cfg: &SimulationConfig,
    calls: &mut u32,
) -> Result<crate::llm::ChatResponse, LlmError> {
    let req = Arc::new(req);
    let policy = RetryPolicy::from_config(cfg, &req.model);
    let timeout = crate::config::limits::secs(cfg.performance.persona_timeout.max(0.001));
    let run_seed = cfg.simulation.run_seed;
    let mut rng = crate::rng::stream(run_seed, crate::rng::Stream::ExtractJitter { request: req.fingerprint() });
    retry_call(&policy, &mut rng, |attempt| {
        *calls += 1;
        attempt_within(provider, req.clone(), CallContext { attempt, run_seed }, timeout)
    })
    .await
}

async fn one(
    provider: &Arc<dyn Provider>,
    persona: &PersonaSpec,
    results: &SimulationResults,
    fields: &[ExtractField],
    cfg: &SimulationConfig,
) -> PersonaExtraction {
    let mut out = PersonaExtraction {
        persona: persona.id.clone(),
        name: persona.name.clone(),
        values: BTreeMap::new(),
        valid: false,
        problems: Vec::new(),
        raw: String::new(),
        calls: 0,
        usage: Usage::default(),
    };
    let mut correction: Option<String> = None;
    // The first answer, and one corrected answer if the first does not validate.
    for _ in 0..2 {
        let req = extraction_request(persona, results, fields, cfg, correction.as_deref());
        match call_with_retries(provider, req, cfg, &mut out.calls).await {
            Ok(r) => {
                out.usage += r.usage;
                let (values, problems) = validate(&r.text, fields);
                out.raw = r.text;
                out.values = values;
                out.valid = problems.is_empty();
                if out.valid {
                    out.problems.clear();
                    return out;
                }
                correction = Some(problems.join("; "));
                out.problems = problems;
            }
            Err(e) => {
                out.problems = vec![format!("the call failed: {e}")];
                return out;
            }
        }
    }
    out
}

/// Asks every persona for the fields, `performance.max_workers` at a time; results are in
/// persona order.
pub async fn extract(
    provider: Arc<dyn Provider>,
    cfg: &SimulationConfig,
    pricing: &Pricing,
    personas: &[PersonaSpec],
    results: &SimulationResults,
    fields: &[ExtractField],
) -> Extraction {
    // By index: a closure over `&PersonaSpec` would make the future not `Send` for every
    // lifetime, and a worker spawns runs onto the runtime.
    let per: Vec<PersonaExtraction> = futures_util::stream::iter(0..personas.len())
        .map(|i| one(&provider, &personas[i], results, fields, cfg))
        .buffered(cfg.performance.max_workers.max(1))
        .collect()
        .await;
    let mut usage = Usage::default();
    let mut cost = 0.0;
    for (p, e) in personas.iter().zip(&per) {
        usage += e.usage;
        let model = p.model.clone().unwrap_or_else(|| cfg.llm.model.clone());
        if !provider.synthetic() {
            cost += pricing.cost(&model, e.usage).unwrap_or(0.0);
        }
    }
    Extraction { fields: fields.to_vec(), personas: per, usage, cost_usd: cost }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<ExtractField> {
        vec![
            ExtractField {
                name: "final_stance".into(),
                description: String::new(),
                choices: vec!["support".into(), "oppose".into(), "undecided".into()],
            },
            ExtractField { name: "top_concern".into(), description: String::new(), choices: vec![] },
        ]
    }

    #[test]
    fn validation_accepts_choices_and_text_and_names_problems() {
        let (v, p) = validate("```json\n{\"final_stance\": \"Support\", \"top_concern\": \"cost\"}\n```", &fields());
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(v["final_stance"], "support");
        let (_, p) = validate("{\"final_stance\": \"maybe\"}", &fields());
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("not one of"));
        let (_, p) = validate("no json here", &fields());
        assert_eq!(p, ["the reply holds no JSON object"]);
    }
}
