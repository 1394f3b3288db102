//! Prompt building for a TinyTroupe-sized persona (issue 13): the shipped `lisa_carter` agent
//! with the `skeptic` fragment merged, about 70 facts. Fidelity must not cost the runtime's
//! speed: writing the whole system prompt, writing it within a small model's budget, and
//! writing one turn's request (the per-call work: the system prompt is written once per persona
//! and shared) each stay under 20 µs.
//!
//! The figures are also printed as plain lines (`figure: ...`) for the README.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use troupe_sim::memory::{EpisodicMemory, MemoryEvent, Utterance};
use troupe_sim::persona::{PersonaDatabase, PersonaSpec, apply_fragment};
use troupe_sim::prompt::{Sampling, WorldFacts, act_request, persona_prompt};

fn lisa() -> PersonaSpec {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/agents");
    let db = PersonaDatabase::load(&root).unwrap();
    let frag = db.fragment("skeptic").expect("the skeptic fragment").clone();
    apply_fragment(db.get("lisa_carter").unwrap(), &frag).unwrap()
}

fn memory() -> EpisodicMemory {
    let mut m = EpisodicMemory::new(10, 20);
    for i in 0..40u64 {
        let u = Utterance::new(
            i,
            1 + i as u32 / 4,
            "raj_patel".into(),
            "Raj Patel".into(),
            "Payments lead".into(),
            None,
            format!("Point {i}: the on-call rotation has six engineers and a 99.95% objective, so cover matters.")
                .into(),
        );
        m.push(MemoryEvent::Heard(Arc::new(u)));
    }
    m
}

/// Median of `n` timed runs of `f`, in microseconds.
fn median_us(n: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

fn bench(c: &mut Criterion) {
    let p = lisa();
    let full = persona_prompt(&p, u64::MAX);
    let facts = troupe_sim::persona::facts::fact_lines(&p, true).facts();
    let small = persona_prompt(&p, 512);
    let facts_ = WorldFacts { world: "Offsite".into(), topic: "Should we pilot a four-day week?".into() };
    let sampling = Sampling {
        model: "gpt-4o-mini".into(),
        temperature: 0.7,
        top_p: None,
        max_tokens: 200,
        seed: Some(7),
        json_actions: false,
        plain: false,
    };
    let mem = memory();
    let mut g = c.benchmark_group("prompt");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.bench_function("system_prompt_all_facts", |b| b.iter(|| persona_prompt(black_box(&p), u64::MAX)));
    g.bench_function("system_prompt_budget_512", |b| b.iter(|| persona_prompt(black_box(&p), 512)));
    g.bench_function("act_request", |b| {
        b.iter(|| act_request(&full.text, black_box(&p), &mem, &facts_, "A context.", 5, &sampling))
    });
    g.finish();
    let all = median_us(2001, || {
        black_box(persona_prompt(black_box(&p), u64::MAX));
    });
    let trimmed = median_us(2001, || {
        black_box(persona_prompt(black_box(&p), 512));
    });
    let act = median_us(2001, || {
        black_box(act_request(&full.text, black_box(&p), &mem, &facts_, "A context.", 5, &sampling));
    });
    println!(
        "figure: prompt for lisa_carter + skeptic ({facts} facts, {} tokens): whole system prompt {all:.1} us; within 512 tokens ({} facts left out) {trimmed:.1} us; one turn's request {act:.1} us",
        troupe_sim::llm::tokens::count_tokens(&full.text),
        small.dropped.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
