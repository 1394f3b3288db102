//! Estimating a run's calls, tokens and cost before it starts (`troupe estimate`), from the
//! plan, the config, the prompt layout and the pricing table.
//!
//! The estimate replays the schedule (turns, interventions, who hears whom, the memory window)
//! without calling anything. Replies are assumed to be `REPLY_TOKENS` long (the prompt asks for
//! 2-4 sentences), capped by `max_tokens`; every persona is assumed to speak every turn.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{SimulationConfig, TurnPolicy};
use crate::cost::Pricing;
use crate::engine::RunPlan;
use crate::llm::Usage;
use crate::llm::tokens::{MESSAGE_OVERHEAD, REQUEST_OVERHEAD, count_tokens};
use crate::persona::PersonaSpec;
use crate::persona::prompt::system_prompt;
use crate::scenario::{Hearing, ResolvedAction};

/// Tokens assumed per reply (2-4 sentences).
pub const REPLY_TOKENS: u64 = 80;
/// Tokens of a memory line's prefix ("[turn 3] Name (Role): ").
const LINE_PREFIX_TOKENS: u64 = 12;
/// Tokens of the per-turn instruction.
const INSTRUCTION_TOKENS: u64 = 60;

/// Estimated figures for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelEstimate {
    /// Calls.
    pub calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// USD, when the model has a price.
    pub cost_usd: Option<f64>,
}

/// A run's estimate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// LLM calls (first attempts; retries are not predicted).
    pub calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt plus completion.
    pub total_tokens: u64,
    /// USD for the priced models.
    pub cost_usd: f64,
    /// Per model.
    pub by_model: BTreeMap<String, ModelEstimate>,
    /// What the estimate assumes.
    pub assumptions: Vec<String>,
}

/// How close an estimate came: actual divided by estimated (1.0 is exact).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EstimateAccuracy {
    /// Call attempts.
    pub calls_ratio: f64,
    /// Total tokens.
    pub tokens_ratio: f64,
    /// Cost (0 when nothing was priced).
    pub cost_ratio: f64,
}

impl EstimateAccuracy {
    /// Compares actual figures with an estimate.
    pub fn of(e: &Estimate, calls: u64, tokens: u64, cost: f64) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        EstimateAccuracy {
            calls_ratio: ratio(calls as f64, e.calls as f64),
            tokens_ratio: ratio(tokens as f64, e.total_tokens as f64),
            cost_ratio: ratio(cost, e.cost_usd),
        }
    }
}

struct Member {
    id: String,
    model: String,
    system_tokens: u64,
    events: u64,
    since_summary: u64,
    active: bool,
}

fn member(p: &PersonaSpec, cfg: &SimulationConfig) -> Member {
    Member {
        id: p.id.clone(),
        model: p.model.clone().filter(|m| !m.trim().is_empty()).unwrap_or_else(|| cfg.llm.model.clone()),
        system_tokens: count_tokens(&system_prompt(p)),
        events: 0,
        since_summary: 0,
        active: true,
    }
}

/// Estimates a plan under a config.
pub fn estimate(plan: &RunPlan, cfg: &SimulationConfig, pricing: &Pricing) -> Estimate {
    let s = &cfg.simulation;
    let reply = REPLY_TOKENS.min(cfg.llm.max_tokens as u64);
    let window_cap = (s.memory_prefix + s.memory_recent) as u64;
    let header = count_tokens(&plan.world_name) + count_tokens(&plan.context) + count_tokens(&plan.topic) + 8;
    let mut members: Vec<Member> = plan.personas.iter().map(|p| member(p, cfg)).collect();
    let mut by_model: BTreeMap<String, ModelEstimate> = BTreeMap::new();
    let opening = if plan.opening.trim().is_empty() { &plan.topic } else { &plan.opening };
    if !opening.trim().is_empty() {
        members.iter_mut().for_each(|m| m.events += 1);
    }
    let mut charge = |model: &str, prompt: u64, completion: u64| {
        let e = by_model.entry(model.to_string()).or_default();
        e.calls += 1;
        e.prompt_tokens += prompt;
        e.completion_tokens += completion;
    };
    for turn in 1..=s.max_turns {
        for iv in plan.interventions.iter().filter(|i| i.turn == turn) {
            match &iv.action {
                ResolvedAction::Broadcast(_) | ResolvedAction::SetContext(_) => {
                    members.iter_mut().filter(|m| m.active).for_each(|m| m.events += 1)
                }
                ResolvedAction::AddPersona(p) => {
                    let mut m = member(p, cfg);
                    m.events = 1;
                    members.push(m);
                }
                ResolvedAction::RemovePersona(id) => {
                    members.iter_mut().filter(|m| &m.id == id).for_each(|m| m.active = false)
                }
            }
        }
        let active: Vec<usize> = (0..members.len()).filter(|&i| members[i].active).collect();
        let sequential = !matches!(s.policy(), TurnPolicy::Parallel);
        let listeners: Vec<Vec<usize>> = active.iter().map(|&i| hearers(plan, &members, &active, i)).collect();
        for (pos, &i) in active.iter().enumerate() {
            let same_turn = if sequential { (0..pos).filter(|&k| listeners[k].contains(&i)).count() as u64 } else { 0 };
            let m = &mut members[i];
            let events = m.events + same_turn;
            let window = events.min(window_cap);
            let omitted_line = if events > window_cap { 8 } else { 0 };
            let prompt = m.system_tokens
                + header
                + window * (reply + LINE_PREFIX_TOKENS)
                + omitted_line
                + INSTRUCTION_TOKENS
                + 2 * MESSAGE_OVERHEAD
                + REQUEST_OVERHEAD;
            if s.consolidate_every > 0 && m.since_summary + same_turn >= s.consolidate_every as u64 {
                charge(&m.model, prompt, reply);
                m.since_summary = 0;
            }
            charge(&m.model, prompt, reply);
        }
        for (k, &speaker) in active.iter().enumerate() {
            members[speaker].events += 1;
            members[speaker].since_summary += 1;
            for &l in &listeners[k] {
                members[l].events += 1;
                members[l].since_summary += 1;
            }
        }
    }
    let mut e = Estimate {
        assumptions: vec![
            format!("each reply is about {reply} tokens (2-4 sentences, capped by max_tokens)"),
            "every persona speaks every turn; retries are not predicted".into(),
        ],
        ..Default::default()
    };
    for (model, m) in by_model.iter_mut() {
        m.cost_usd = pricing.cost(model, Usage::new(m.prompt_tokens, m.completion_tokens));
        if m.cost_usd.is_none() {
            e.assumptions.push(format!("model {model} has no price in the pricing table; its cost counts as 0"));
        }
        e.calls += m.calls;
        e.prompt_tokens += m.prompt_tokens;
        e.completion_tokens += m.completion_tokens;
        e.cost_usd += m.cost_usd.unwrap_or(0.0);
    }
    e.total_tokens = e.prompt_tokens + e.completion_tokens;
    e.by_model = by_model;
    e
}

fn hearers(plan: &RunPlan, members: &[Member], active: &[usize], speaker: usize) -> Vec<usize> {
    let id = &members[speaker].id;
    let linked =
        |a: &str, b: &str, g: &BTreeMap<String, Vec<String>>| g.get(a).is_some_and(|v| v.iter().any(|x| x == b));
    active
        .iter()
        .copied()
        .filter(|&l| l != speaker)
        .filter(|&l| {
            let lid = &members[l].id;
            match &plan.hearing {
                Hearing::Everyone => true,
                Hearing::Relations(g) => linked(id, lid, g) || linked(lid, id, g),
                Hearing::Directed(g) => linked(lid, id, g),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize) -> RunPlan {
        let personas = (0..n)
            .map(|i| {
                let mut p = PersonaSpec::new(format!("p{i}"), format!("P {i}"), "Analyst", "Ten years in audits.");
                p.personality.traits = vec!["analytical".into()];
                p
            })
            .collect();
        RunPlan::ad_hoc("Should we ship?", personas)
    }

    #[test]
    fn calls_are_personas_times_turns() {
        let mut c = SimulationConfig::default();
        c.simulation.max_turns = 4;
        let e = estimate(&plan(3), &c, &Pricing::default());
        assert_eq!(e.calls, 12);
        assert!(e.prompt_tokens > 12 * 50);
        assert_eq!(e.completion_tokens, 12 * REPLY_TOKENS);
        assert!(e.assumptions.iter().any(|a| a.contains("no price")));
    }

    #[test]
    fn prompt_growth_is_bounded_by_the_window() {
        let mut c = SimulationConfig::default();
        c.simulation.max_turns = 100;
        let long = estimate(&plan(5), &c, &Pricing::default());
        c.simulation.max_turns = 50;
        let half = estimate(&plan(5), &c, &Pricing::default());
        // Once the window is full, each turn costs the same: doubling turns about doubles tokens.
        let r = long.prompt_tokens as f64 / half.prompt_tokens as f64;
        assert!((1.9..2.1).contains(&r), "{r}");
    }
}
