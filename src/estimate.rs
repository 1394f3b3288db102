//! Estimating a run's calls, tokens and cost before it starts (`troupe estimate`), from the
//! plan, the config, the prompt layout and the pricing table.
//!
//! The estimate replays the schedule (turns, interventions, who hears whom, the memory window)
//! without calling anything. Replies are assumed to be `REPLY_TOKENS` long (the prompt asks for
//! 2-4 sentences), capped by `max_tokens`; every persona is assumed to speak every turn.

use std::collections::BTreeMap;

use crate::config::{SimulationConfig, TurnPolicy};
use crate::cost::Pricing;
use crate::llm::Usage;
use crate::llm::tokens::{MESSAGE_OVERHEAD, REQUEST_OVERHEAD, count_tokens};
use crate::persona::PersonaSpec;
use crate::prompt::system_prompt;
use crate::scenario::RunPlan;
use crate::scenario::{Hearing, ResolvedAction};

/// Tokens assumed per reply (2-4 sentences).
pub const REPLY_TOKENS: u64 = 80;
/// Tokens of a memory line's prefix ("[turn 3] Name (Role): ").
const LINE_PREFIX_TOKENS: u64 = 12;
/// Tokens of the per-turn instruction.
const INSTRUCTION_TOKENS: u64 = 60;

pub use crate::record::estimate::{Estimate, EstimateAccuracy, ModelEstimate};

struct Member {
    id: String,
    model: String,
    system_tokens: u64,
    /// Events in its memory (fractional when only a share of personas acts each turn).
    events: f64,
    since_summary: f64,
    active: bool,
}

/// Personas whose system prompt is written and counted exactly; the others are counted as the
/// mean of these (writing a million prompts to estimate a run would cost more than the run).
const EXACT_PROMPTS: usize = 1_000;

struct Members {
    list: Vec<Member>,
    counted: u64,
    counted_tokens: u64,
}

impl Members {
    fn add(&mut self, p: &PersonaSpec, cfg: &SimulationConfig) {
        let system_tokens = if self.list.len() < EXACT_PROMPTS {
            let t = count_tokens(&system_prompt(p));
            self.counted += 1;
            self.counted_tokens += t;
            t
        } else {
            self.counted_tokens / self.counted.max(1)
        };
        self.list.push(Member {
            id: p.id.clone(),
            model: p.model.clone().filter(|m| !m.trim().is_empty()).unwrap_or_else(|| cfg.llm.model.clone()),
            system_tokens,
            events: 0.0,
            since_summary: 0.0,
            active: true,
        });
    }
}

/// Who hears whom among the members: everyone, or each member's listeners.
enum Hearers {
    Everyone,
    Graph(Vec<Vec<usize>>),
}

/// Listeners of each member, built in time linear in members and relations.
fn hearers(plan: &RunPlan, members: &[Member]) -> Hearers {
    let index: std::collections::HashMap<&str, usize> =
        members.iter().enumerate().map(|(i, m)| (m.id.as_str(), i)).collect();
    let mut l = vec![Vec::new(); members.len()];
    let mut link = |listener: usize, speaker: usize| {
        if listener != speaker {
            l[speaker].push(listener);
        }
    };
    match &plan.hearing {
        Hearing::Everyone | Hearing::RelationsFile(_) | Hearing::DirectedFile(_) => return Hearers::Everyone,
        Hearing::Relations(g) => {
            for (a, bs) in g {
                for b in bs {
                    if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) {
                        link(i, j);
                        link(j, i);
                    }
                }
            }
        }
        Hearing::Directed(g) => {
            for (listener, speakers) in g {
                for s in speakers {
                    if let (Some(&li), Some(&si)) = (index.get(listener.as_str()), index.get(s.as_str())) {
                        link(li, si);
                    }
                }
            }
        }
        Hearing::Edges(e) => {
            let at: Vec<Option<usize>> = e.ids.iter().map(|id| index.get(id.as_str()).copied()).collect();
            for &(a, b) in &e.pairs {
                if let (Some(Some(i)), Some(Some(j))) = (at.get(a as usize), at.get(b as usize)) {
                    link(*i, *j);
                    if !e.directed {
                        link(*j, *i);
                    }
                }
            }
        }
    }
    for v in &mut l {
        v.sort_unstable();
        v.dedup();
    }
    Hearers::Graph(l)
}

/// How many of `n` personas act in a turn under `activation`.
fn acting(activation: Option<&crate::scenario::Activation>, n: usize) -> usize {
    match activation.map(|a| (a.share, a.count)) {
        Some((Some(s), _)) => ((n as f64 * s).ceil() as usize).clamp(1, n.max(1)).min(n),
        Some((None, Some(c))) => c.min(n),
        _ => n,
    }
}

/// What the size of a call depends on beside the persona: the reply, the memory window and the
/// prompt's fixed parts.
struct CallShape {
    reply: u64,
    window_cap: f64,
    /// Tokens of the world's name, context and topic.
    header: u64,
    consolidate_every: usize,
}

/// (calls, prompt tokens, completion tokens) by model, fractional under activation.
type ByModel = BTreeMap<String, (f64, f64, f64)>;

impl Members {
    /// Applies the interventions of `turn`; true when a persona joined (the hearers change).
    fn intervene(&mut self, plan: &RunPlan, turn: u32, cfg: &SimulationConfig) -> bool {
        let mut joined = false;
        for iv in plan.interventions.iter().filter(|i| i.turn == turn) {
            match &iv.action {
                ResolvedAction::Broadcast(_) | ResolvedAction::SetContext(_) => {
                    self.list.iter_mut().filter(|m| m.active).for_each(|m| m.events += 1.0)
                }
                ResolvedAction::AddPersona(p) => {
                    self.add(p, cfg);
                    if let Some(m) = self.list.last_mut() {
                        m.events = 1.0;
                    }
                    joined = true;
                }
                ResolvedAction::RemovePersona(id) => {
                    self.list.iter_mut().filter(|m| &m.id == id).for_each(|m| m.active = false)
                }
            }
        }
        joined
    }

    /// Counts the calls of the `active` members in one turn, `f` of a call each: a summary first
    /// when a member's memory is due one, then its act. `earlier` is what each heard before it
    /// spoke.
    fn count_calls(&mut self, active: &[usize], earlier: &[f64], f: f64, shape: &CallShape, by_model: &mut ByModel) {
        let reply = shape.reply;
        for &i in active {
            let m = &mut self.list[i];
            let events = m.events + earlier[i];
            let window = events.min(shape.window_cap);
            let omitted_line = if events > shape.window_cap { 8.0 } else { 0.0 };
            let prompt = (m.system_tokens + shape.header + INSTRUCTION_TOKENS + 2 * MESSAGE_OVERHEAD + REQUEST_OVERHEAD)
                as f64
                + window * (reply + LINE_PREFIX_TOKENS) as f64
                + omitted_line;
            let e = by_model.entry(m.model.clone()).or_default();
            if shape.consolidate_every > 0 && m.since_summary + earlier[i] >= shape.consolidate_every as f64 {
                *e = (e.0 + f, e.1 + f * prompt, e.2 + f * reply as f64);
                m.since_summary = 0.0;
            }
            *e = (e.0 + f, e.1 + f * prompt, e.2 + f * reply as f64);
        }
    }

    /// After a turn, every memory grows by what its member said and heard.
    fn grow_memories(&mut self, graph: &Hearers, active: &[usize], f: f64) {
        match graph {
            Hearers::Everyone => {
                let heard = f * active.len().saturating_sub(1) as f64;
                for &i in active {
                    let m = &mut self.list[i];
                    m.events += f + heard;
                    m.since_summary += f + heard;
                }
            }
            Hearers::Graph(l) => {
                for &speaker in active {
                    self.list[speaker].events += f;
                    self.list[speaker].since_summary += f;
                    for &listener in &l[speaker] {
                        if self.list[listener].active {
                            self.list[listener].events += f;
                            self.list[listener].since_summary += f;
                        }
                    }
                }
            }
        }
    }
}

/// What each of `members` hears in a turn before it speaks, under a sequential policy: the
/// `active` members speak in order, each `f` of a message.
fn heard_before_speaking(graph: &Hearers, active: &[usize], f: f64, members: usize) -> Vec<f64> {
    let mut earlier = vec![0.0f64; members];
    match graph {
        Hearers::Everyone => {
            for (pos, &i) in active.iter().enumerate() {
                earlier[i] = f * pos as f64;
            }
        }
        Hearers::Graph(l) => {
            let mut pos_of = vec![usize::MAX; members];
            for (pos, &i) in active.iter().enumerate() {
                pos_of[i] = pos;
            }
            for &speaker in active {
                for &listener in &l[speaker] {
                    if pos_of[listener] != usize::MAX && pos_of[listener] > pos_of[speaker] {
                        earlier[listener] += f;
                    }
                }
            }
        }
    }
    earlier
}

/// Estimates a plan under a config, in time linear in personas, relations and turns.
pub fn estimate(plan: &RunPlan, cfg: &SimulationConfig, pricing: &Pricing) -> Estimate {
    let s = &cfg.simulation;
    let shape = CallShape {
        reply: REPLY_TOKENS.min(cfg.llm.max_tokens as u64),
        window_cap: (s.memory_prefix + s.memory_recent) as f64,
        header: count_tokens(&plan.world_name) + count_tokens(&plan.context) + count_tokens(&plan.topic) + 8,
        consolidate_every: s.consolidate_every,
    };
    let mut members = Members { list: Vec::with_capacity(plan.personas.len()), counted: 0, counted_tokens: 0 };
    for p in &plan.personas {
        members.add(p, cfg);
    }
    let mut by_model = ByModel::new();
    let opening = if plan.opening.trim().is_empty() { &plan.topic } else { &plan.opening };
    if !opening.trim().is_empty() {
        members.list.iter_mut().for_each(|m| m.events += 1.0);
    }
    let mut graph = hearers(plan, &members.list);
    let sequential = !matches!(s.policy(), TurnPolicy::Parallel);
    for turn in 1..=s.max_turns {
        if members.intervene(plan, turn, cfg) {
            graph = hearers(plan, &members.list);
        }
        let active: Vec<usize> = (0..members.list.len()).filter(|&i| members.list[i].active).collect();
        let n = active.len();
        // Under activation each persona acts with probability `f`: every figure is its expectation.
        let f = if n == 0 { 0.0 } else { acting(plan.activation.as_ref(), n) as f64 / n as f64 };
        let earlier = if sequential {
            heard_before_speaking(&graph, &active, f, members.list.len())
        } else {
            vec![0.0f64; members.list.len()]
        };
        members.count_calls(&active, &earlier, f, &shape, &mut by_model);
        members.grow_memories(&graph, &active, f);
    }
    priced(plan, members.list.len(), shape.reply, by_model, pricing)
}

/// The estimate of the counted calls: per model with its price, totals, and what was assumed.
fn priced(plan: &RunPlan, members: usize, reply: u64, by_model: ByModel, pricing: &Pricing) -> Estimate {
    let mut e = Estimate {
        assumptions: vec![
            format!("each reply is about {reply} tokens (2-4 sentences, capped by max_tokens)"),
            match &plan.activation {
                Some(_) => {
                    "each turn the drawn share of personas speaks (`activation`); retries are not predicted".into()
                }
                None => "every persona speaks every turn; retries are not predicted".into(),
            },
        ],
        ..Default::default()
    };
    if members > EXACT_PROMPTS {
        e.assumptions.push(format!(
            "system prompts were counted for the first {EXACT_PROMPTS} personas; the others are taken as their mean"
        ));
    }
    for (model, (calls, prompt, completion)) in by_model {
        let mut m = ModelEstimate {
            calls: calls.round() as u64,
            prompt_tokens: prompt.round() as u64,
            completion_tokens: completion.round() as u64,
            cost_usd: None,
        };
        m.cost_usd = pricing.cost(&model, Usage::new(m.prompt_tokens, m.completion_tokens));
        if m.cost_usd.is_none() {
            e.assumptions.push(format!("model {model} has no price in the pricing table; its cost counts as 0"));
        }
        e.calls += m.calls;
        e.prompt_tokens += m.prompt_tokens;
        e.completion_tokens += m.completion_tokens;
        e.cost_usd += m.cost_usd.unwrap_or(0.0);
        e.by_model.insert(model, m);
    }
    e.total_tokens = e.prompt_tokens + e.completion_tokens;
    e
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
