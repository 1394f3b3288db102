//! Throughput of the embedded local model (SmolLM2-135M-Instruct, Q4_1) on this machine:
//!
//! 1. `prefill`: reading a persona-sized prompt (about 300 tokens) in one forward pass, tokens/s;
//! 2. `generate`: writing a reply token by token (greedy, up to 64 tokens), tokens/s.
//!
//! Both are also printed as plain lines (`figure: ...`) for the README, beside the reference
//! points of the issue: candle about 30 tokens/s and llama.cpp about 80 tokens/s generating.
//! Skips with a note when the model is not cached (`troupe model fetch`).

#[cfg(feature = "local-model")]
use std::sync::Arc;
#[cfg(feature = "local-model")]
use std::time::Duration;

use criterion::Criterion;
#[cfg(feature = "local-model")]
use criterion::Throughput;
#[cfg(feature = "local-model")]
use troupe_sim::llm::local::{GenerateParams, LocalModel, sampler::SamplingParams};
use troupe_sim::llm::{ChatMessage, Role};

fn prompt_messages() -> Vec<ChatMessage> {
    let system = "You are taking part in a simulated group discussion.\nYou are Marcus Rivera, Head of Customer Support.\n\
        About you: Runs a 40-person support desk across two time zones; was an agent for six years before leading the team.\n\
        Traits: pragmatic, protective of his team, blunt\nGoals: keep response times under two hours; avoid burnout\n\
        Style: Direct and concrete, with numbers\nStay in character. Speak in the first person, in 2-4 sentences, and react to what others said.";
    let user = "World: Leadership offsite\nContext: Slotwise is a 140-person company selling clinic-scheduling software. \
        The CEO has asked three leads for a recommendation by Friday on a six-month pilot of a 32-hour, four-day week at full pay, \
        starting 1 March. The support desk answers customers Monday to Friday, 7 a.m. to 7 p.m.; the payments on-call rotation \
        has six engineers and a 99.95% availability objective.\nTopic: Should Slotwise pilot a four-day week?\nConversation so far:\n\
        [1] Raj Patel: I like the idea, but the on-call rotation is already thin. If we cut a day we need a seventh engineer or a \
        follow-the-sun agreement with the Lisbon team.\n[1] Hannah Wright: The research on four-day weeks is encouraging for \
        retention, and our attrition cost us two hires last year.\nTurn 1: reply as Marcus Rivera with one short contribution \
        (2-4 sentences).";
    vec![ChatMessage::new(Role::System, system), ChatMessage::new(Role::User, user)]
}

#[cfg(feature = "local-model")]
fn load() -> Option<Arc<LocalModel>> {
    let path = troupe_sim::model::cache_dir(None).ok()?.join(troupe_sim::model::DEFAULT_MODEL.file_name);
    if !path.is_file() {
        println!("skipped: no model at {} (run `troupe model fetch`)", path.display());
        return None;
    }
    Some(LocalModel::shared(&path).expect("the cached model loads"))
}

#[cfg(feature = "local-model")]
fn params(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams { temperature: 0.0, top_p: 1.0, repeat_penalty: 1.1, repeat_last_n: 64, seed: 0 },
        ..GenerateParams::default()
    }
}

#[cfg(feature = "local-model")]
fn bench(c: &mut Criterion) {
    let Some(m) = load() else { return };
    let prompt = m.prompt_ids(&prompt_messages());
    let never = || false;
    let mut g = c.benchmark_group("local_model");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(prompt.len() as u64));
    g.bench_function("prefill", |b| b.iter(|| m.generate(&prompt, &params(1), &never).unwrap()));
    // Generation alone: the reply's length decides the throughput, so measure it once here.
    let sample = m.generate(&prompt, &params(64), &never).unwrap();
    g.throughput(Throughput::Elements(sample.ids.len() as u64));
    g.bench_function("generate", |b| b.iter(|| m.generate(&prompt, &params(64), &never).unwrap()));
    g.finish();

    // Plain figures: the median of a few runs, prefill and decoding timed apart.
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for _ in 0..5 {
        let r = m.generate(&prompt, &params(64), &never).unwrap();
        prefill.push(r.prompt_tokens as f64 / r.prefill.as_secs_f64());
        // The first token comes from the prefill's logits; every later one costs a forward pass.
        decode.push(r.ids.len().saturating_sub(1).max(1) as f64 / r.decode.as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("figure: local model prefill: {:.0} tokens/s ({} prompt tokens)", median(&mut prefill), prompt.len());
    println!(
        "figure: local model generation: {:.1} tokens/s ({} tokens, greedy; reference: candle 0.11 ~30, llama.cpp ~80)",
        median(&mut decode),
        sample.ids.len()
    );
    println!("figure: reply: {:?}", sample.text);
}

#[cfg(not(feature = "local-model"))]
fn bench(_c: &mut Criterion) {
    let _ = prompt_messages();
    println!("skipped: built without the `local-model` feature");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
