//! Drafting personas from a short description of a population (TinyTroupe's person factory):
//! the model writes N personas in the native schema; the user reviews them before saving.
//! With a synthetic provider (the simulated one) the drafts are made here, deterministically
//! from the description and the seed, so the feature works offline and in tests.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use crate::llm::{CallContext, ChatMessage, ChatRequest, LlmError, Provider, RequestMeta, Role};
use crate::persona::load::persona_from_value;
use crate::persona::tinytroupe::slug;
use crate::persona::{PersonaSpec, Personality};

/// The most personas drafted at once.
pub const MAX_COUNT: usize = 20;

/// Errors while drafting.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Nothing to draft from, or too many asked for.
    #[error("{0}")]
    Invalid(String),
    /// The provider failed.
    #[error("the model could not draft personas: {0}")]
    Llm(#[from] LlmError),
    /// The answer held no usable persona.
    #[error("the model's answer held no usable persona JSON ({0}); try again or lower the count")]
    Unusable(String),
}

/// What to draft.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The population, in a sentence or two ("nurses in a rural hospital").
    pub context: String,
    /// How many personas (1..=`MAX_COUNT`).
    pub count: usize,
    /// The model asked.
    pub model: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Seed (varies the drafts; the simulated drafts are a pure function of it).
    pub seed: u64,
}

/// Drafts `req.count` personas. Ids are unique among themselves and not in `taken`.
pub async fn generate_personas(
    provider: &Arc<dyn Provider>,
    req: &GenerateRequest,
    taken: &HashSet<String>,
) -> Result<Vec<PersonaSpec>, GenerateError> {
    let context = req.context.trim();
    if context.is_empty() {
        return Err(GenerateError::Invalid("describe the population to draft personas from".into()));
    }
    if req.count == 0 || req.count > MAX_COUNT {
        return Err(GenerateError::Invalid(format!("ask for 1 to {MAX_COUNT} personas")));
    }
    let mut drafts = if provider.synthetic() {
        simulated_drafts(context, req.count, req.seed)
    } else {
        let chat = ChatRequest {
            model: req.model.clone(),
            messages: vec![
                ChatMessage::new(Role::System, SYSTEM_PROMPT),
                ChatMessage::new(
                    Role::User,
                    format!(
                        "Population: {context}\nWrite {} distinct personas. Answer with the JSON array only.",
                        req.count
                    ),
                ),
            ],
            temperature: Some(req.temperature),
            top_p: None,
            max_tokens: Some((400 * req.count as u32).min(8000)),
            seed: Some(req.seed),
            stop: Vec::new(),
            response_format: crate::llm::ResponseFormat::Text,
            meta: RequestMeta { purpose: crate::llm::Purpose::Generate, ..Default::default() },
        };
        let resp = provider.chat(Arc::new(chat), CallContext { attempt: 1, run_seed: req.seed }).await?;
        parse_drafts(&resp.text)?
    };
    drafts.truncate(req.count);
    let mut seen = taken.clone();
    for p in &mut drafts {
        let mut base = slug(if p.id.trim().is_empty() { &p.name } else { &p.id });
        if base.is_empty() {
            base = "persona".into();
        }
        let mut id = base.clone();
        let mut n = 2;
        while seen.contains(&id) {
            id = format!("{base}_{n}");
            n += 1;
        }
        seen.insert(id.clone());
        p.id = id;
        if !p.has_tag("generated") {
            p.tags.push("generated".into());
        }
    }
    Ok(drafts)
}

const SYSTEM_PROMPT: &str = "You design personas for multi-agent discussions. Answer with a JSON array only. \
Each element: {\"id\": snake_case, \"name\": full name, \"role\": job, \"description\": 2-3 sentences of background, \
\"personality\": {\"traits\": [3-5 adjectives], \"goals\": [2-3 goals], \"style\": one sentence}, \"tags\": [2-3 lower-case tags]}. \
Make the personas differ in age, background and opinion.";

/// Reads the personas out of a model's answer (the JSON array may be wrapped in prose or a
/// code fence).
pub fn parse_drafts(text: &str) -> Result<Vec<PersonaSpec>, GenerateError> {
    let (start, end) = match (text.find('['), text.rfind(']')) {
        (Some(s), Some(e)) if e > s => (s, e),
        _ => return Err(GenerateError::Unusable("no JSON array".into())),
    };
    let v: Value = serde_json::from_str(&text[start..=end]).map_err(|e| GenerateError::Unusable(e.to_string()))?;
    let items = v.as_array().cloned().unwrap_or_default();
    let out: Vec<PersonaSpec> = items.into_iter().filter_map(|v| persona_from_value(v).ok()).collect();
    if out.is_empty() {
        return Err(GenerateError::Unusable("no element reads as a persona".into()));
    }
    Ok(out)
}

const FIRST: [&str; 16] = [
    "Amara", "Ben", "Chiara", "Dmitri", "Elif", "Farid", "Grace", "Hiroshi", "Ines", "Jonas", "Keiko", "Luis", "Maya",
    "Noah", "Olga", "Priya",
];
const LAST: [&str; 12] =
    ["Okafor", "Lindqvist", "Rossi", "Petrov", "Yilmaz", "Haddad", "Kim", "Sato", "Moreau", "Weber", "Garcia", "Nair"];
const ROLES: [&str; 8] = [
    "Newcomer",
    "Veteran practitioner",
    "Team lead",
    "Sceptic",
    "Advocate",
    "Budget holder",
    "Front-line worker",
    "Outside expert",
];
const TRAITS: [&str; 12] = [
    "analytical",
    "empathetic",
    "pragmatic",
    "curious",
    "cautious",
    "outspoken",
    "patient",
    "ambitious",
    "skeptical",
    "collaborative",
    "detail-oriented",
    "optimistic",
];
const STYLES: [&str; 4] = [
    "Speaks plainly and backs claims with examples.",
    "Asks questions before giving an opinion.",
    "Direct and brief; gets to the point.",
    "Warm and inclusive; summarises what others said.",
];

/// Plausible drafts made without a model: a pure function of the description, count and seed.
pub fn simulated_drafts(context: &str, count: usize, seed: u64) -> Vec<PersonaSpec> {
    let h = crate::rng::derive(seed, crate::rng::Stream::PersonaDrafts { context });
    let topic: String = context.split_whitespace().take(8).collect::<Vec<_>>().join(" ");
    (0..count)
        .map(|i| {
            let r = crate::rng::mix(&[h, i as u64]);
            let pick = |n: usize, shift: u32| ((r >> shift) as usize) % n;
            let name = format!("{} {}", FIRST[(pick(FIRST.len(), 0) + i) % FIRST.len()], LAST[pick(LAST.len(), 8)]);
            let role = ROLES[(pick(ROLES.len(), 16) + i) % ROLES.len()];
            let t0 = pick(TRAITS.len(), 24);
            let traits: Vec<String> =
                (0..3).map(|k| TRAITS[(t0 + k * 5 + i) % TRAITS.len()].to_string()).collect();
            let age = 24 + pick(40, 32);
            let mut p = PersonaSpec::new(
                slug(&name),
                name.clone(),
                role,
                format!(
                    "{name} is {age} and belongs to this population: {topic}. As a {} they bring {} years of first-hand experience and a view of their own.",
                    role.to_lowercase(),
                    if role == "Newcomer" { 1 + pick(2, 40) } else { 2 + pick(age - 22, 40) }
                ),
            );
            p.personality = Personality {
                traits,
                goals: vec![
                    format!("make sure the discussion of {topic} reflects the {} view", role.to_lowercase()),
                    "leave with a concrete next step".to_string(),
                ],
                style: STYLES[pick(STYLES.len(), 48)].to_string(),
                ..Default::default()
            };
            p.tags = vec![slug(role), "generated".into()];
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_drafts_are_deterministic_and_valid() {
        let a = simulated_drafts("nurses in a rural hospital", 5, 7);
        assert_eq!(a, simulated_drafts("nurses in a rural hospital", 5, 7));
        assert_eq!(a.len(), 5);
        for p in &a {
            let errors: Vec<_> = crate::persona::validate::check_persona(p)
                .into_iter()
                .filter(|i| i.severity == crate::persona::Severity::Error)
                .collect();
            assert!(errors.is_empty(), "{p:?}: {errors:?}");
        }
    }

    #[test]
    fn reads_a_fenced_array() {
        let text = "Here:\n```json\n[{\"id\":\"a\",\"name\":\"A B\",\"role\":\"r\",\"description\":\"d\"}]\n```";
        assert_eq!(parse_drafts(text).unwrap()[0].name, "A B");
        assert!(parse_drafts("no json").is_err());
    }
}
