//! The `in_character` analysis of a run: for each persona, a judge call with a sample of its
//! messages and its own facts (no expectations), giving a score of how well what it said fits
//! who it is. Off by default (`validation.in_character`, `troupe analyze --in-character`): it
//! costs one call per persona.

use futures_util::StreamExt;

use super::Caller;
use super::facts::persona_facts;
use super::judge::{Evidence, JudgeInput, SampledMessage, judge};
use crate::analysis::in_character::{InCharacter, PersonaInCharacter};
use crate::config::SimulationConfig;
use crate::persona::PersonaSpec;
use crate::record::results::SimulationResults;
use crate::record::transcript::TranscriptEntry;

/// Up to `k` of a persona's messages, spread evenly over the run (the first and the last
/// included), in order.
pub fn sample_messages(transcript: &[TranscriptEntry], persona_id: &str, k: usize) -> (Vec<SampledMessage>, usize) {
    let all: Vec<SampledMessage> = transcript
        .iter()
        .filter(|e| e.speaker_id == persona_id && !e.text.trim().is_empty())
        .map(|e| SampledMessage { turn: e.turn, text: e.text.clone() })
        .collect();
    let total = all.len();
    if total <= k {
        return (all, total);
    }
    let k = k.max(1);
    let picked = (0..k)
        .map(|i| if k == 1 { 0 } else { i * (total - 1) / (k - 1) })
        .collect::<std::collections::BTreeSet<usize>>()
        .into_iter()
        .map(|i| all[i].clone())
        .collect();
    (picked, total)
}

async fn judge_one(
    caller: &Caller,
    p: &PersonaSpec,
    results: &SimulationResults,
    k: usize,
    judge_model: &str,
    seed: Option<u64>,
) -> PersonaInCharacter {
    let (messages, total) = sample_messages(&results.transcript, &p.id, k);
    let mut out = PersonaInCharacter {
        id: p.id.clone(),
        name: p.name.clone(),
        messages_judged: messages.len(),
        messages_total: total,
        score: None,
        verdict: None,
        error: None,
        calls: 0,
    };
    if messages.is_empty() {
        out.error = Some("it said nothing in the run, so there is nothing to judge".into());
        return out;
    }
    let (facts, left_out) = persona_facts(p);
    let input = JudgeInput {
        persona: &p.id,
        facts: &facts,
        facts_left_out: left_out,
        expectations: None,
        claims: &[],
        evidence: Evidence::Messages(&messages),
        model: judge_model,
        seed,
    };
    let o = judge(caller, &input).await;
    out.calls = o.requests;
    out.score = o.verdict.as_ref().map(|v| v.score);
    out.verdict = o.verdict;
    out.error = o.error;
    out
}

/// Judges every persona of `personas` that spoke in `results`, `performance.max_workers` at a
/// time, in the order given. `judge_model` is `validation.judge_model`, else the run's model.
pub async fn judge_run(
    caller: &Caller,
    cfg: &SimulationConfig,
    personas: &[PersonaSpec],
    results: &SimulationResults,
    judge_model: &str,
) -> InCharacter {
    let k = cfg.validation.in_character_messages;
    let stream = crate::rng::Stream::InCharacter { run_id: &results.run_id };
    let seed = cfg.llm.send_seed.then_some(crate::rng::derive(cfg.simulation.run_seed, stream));
    let before = caller.spend();
    // The futures are made first and then streamed: a closure inside the stream would make the
    // whole future lose `Send` (a higher-ranked lifetime rustc cannot prove).
    let jobs: Vec<_> = personas.iter().map(|p| judge_one(caller, p, results, k, judge_model, seed)).collect();
    let per: Vec<PersonaInCharacter> =
        futures_util::stream::iter(jobs).buffered(cfg.performance.max_workers.max(1)).collect().await;
    let scores: Vec<f64> = per.iter().filter_map(|p| p.score).collect();
    let after = caller.spend();
    InCharacter {
        judge_model: judge_model.to_string(),
        provider: caller.provider().name().to_string(),
        synthetic: caller.provider().synthetic(),
        messages_per_persona: k,
        mean_score: (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64),
        personas: per,
        calls: after.calls - before.calls,
        usage: crate::llm::Usage::new(
            after.usage.prompt_tokens - before.usage.prompt_tokens,
            after.usage.completion_tokens - before.usage.completion_tokens,
        ),
        cost_usd: (after.cost_usd - before.cost_usd).max(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_spreads_over_the_run() {
        let mut r = Vec::new();
        for i in 0..20u32 {
            r.push(TranscriptEntry {
                seq: i as u64,
                turn: i + 1,
                speaker: "A".into(),
                speaker_id: if i % 2 == 0 { "a".into() } else { "b".into() },
                role: String::new(),
                text: format!("message {i}"),
                to: None,
                timestamp: chrono::Utc::now(),
                model: None,
                prompt_tokens: None,
                completion_tokens: None,
                latency_ms: None,
                attempts: None,
            });
        }
        let (s, total) = sample_messages(&r, "a", 4);
        assert_eq!(total, 10);
        let turns: Vec<u32> = s.iter().map(|m| m.turn).collect();
        assert_eq!(turns, [1, 7, 13, 19]);
        let (s, _) = sample_messages(&r, "a", 40);
        assert_eq!(s.len(), 10);
        assert!(sample_messages(&r, "zz", 4).0.is_empty());
    }
}
