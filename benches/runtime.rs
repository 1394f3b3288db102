//! Runtime benchmarks (issue 3):
//! 1. framework overhead: 50 personas x 6 turns, everyone hears everyone, simulated provider at
//!    0 ms: CPU time per LLM call (target <= 50 us);
//! 2. latency-bound: 50 personas x 2 turns, Parallel, 200 ms fixed latency, max_workers 64:
//!    wall time against the ideal 400 ms (target within 1.15x);
//! 3. scale: 10,000 personas x 3 turns on a relation graph of average degree 8, 0 ms: wall time
//!    (target < 10 s) and peak memory (target < 2 GiB), memory per persona;
//! 4. LLM calls per persona-turn for 5..100 personas (target: 1 + consolidation rate).
//!
//! Figures 1, 3 and 4 are also printed as plain lines (`figure: ...`) for the README.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use troupe_sim::config::{LatencyModel, SimulationConfig, TurnPolicy};
use troupe_sim::engine::{RunOptions, RunPlan, SimulationEngine};
use troupe_sim::llm::SimulatedProvider;
use troupe_sim::persona::{PersonaSpec, Personality};
use troupe_sim::record::results::SimulationResults;
use troupe_sim::scenario::Hearing;

fn persona(i: usize) -> PersonaSpec {
    let traits = [
        ["analytical", "direct"],
        ["empathetic", "collaborative"],
        ["skeptical", "cautious"],
        ["creative", "curious"],
        ["pragmatic", "decisive"],
    ];
    PersonaSpec {
        kind: "TinyPerson".into(),
        id: format!("p{i}"),
        name: format!("Person {i}"),
        role: ["Engineer", "Designer", "Analyst", "Manager", "Researcher"][i % 5].into(),
        description: format!("Persona number {i}, with ten years in the field and strong opinions on process."),
        personality: Personality {
            traits: traits[i % 5].iter().map(|s| s.to_string()).collect(),
            goals: vec!["Reach a decision the team can live with".into(), "Keep costs under control".into()],
            style: "Concise and professional".into(),
            communication: "direct".into(),
            decisions: "data-driven".into(),
            approach: "pragmatic".into(),
            ..Default::default()
        },
        model: None,
        temperature: None,
        prompting: None,
        validation_rules: None,
        tags: vec![],
        extra: Default::default(),
        origin: Default::default(),
    }
}

fn config(turns: u32, policy: TurnPolicy, latency_ms: f64, workers: usize) -> SimulationConfig {
    let mut c = SimulationConfig::default();
    c.simulation.max_turns = turns;
    c.simulation.turn_policy = Some(policy);
    c.simulation.max_personas = usize::MAX;
    c.performance.rate_limit_delay = 0.0;
    c.performance.max_workers = workers;
    c.performance.batch_size = workers;
    c.performance.timeout_seconds = 3600.0;
    c.llm.simulated.latency = LatencyModel::fixed(latency_ms);
    c
}

fn run(
    rt: &tokio::runtime::Runtime,
    cfg: SimulationConfig,
    personas: Vec<PersonaSpec>,
    hearing: Hearing,
) -> SimulationResults {
    let provider = Arc::new(SimulatedProvider::new(cfg.llm.simulated.clone()));
    let engine = SimulationEngine::with_provider(cfg, provider);
    let mut plan = RunPlan::ad_hoc("Should the team adopt a four-day week with on-call coverage?", personas);
    plan.hearing = hearing;
    rt.block_on(engine.run(plan, RunOptions::default())).expect("run")
}

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// True when the command line's filter (if any) selects `group`; the figure runs outside
/// criterion's own measurements honour the same filter.
fn wanted(group: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    filters.is_empty() || filters.iter().any(|f| group.contains(f.as_str()))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn overhead(c: &mut Criterion) {
    if !wanted("overhead_50x6") {
        return;
    }
    let rt = rt();
    let personas: Vec<PersonaSpec> = (0..50).map(persona).collect();
    let cfg = config(6, TurnPolicy::RoundRobin, 0.0, 3);
    let calls = run(&rt, cfg.clone(), personas.clone(), Hearing::Everyone).metrics.counts.api_calls;
    let mut g = c.benchmark_group("overhead_50x6");
    g.sample_size(20);
    // Measured in process CPU time (both runtime threads), so the figure is CPU per run.
    g.bench_function("cpu_per_run", |b| {
        b.iter_custom(|iters| {
            let start = cpu_time();
            for _ in 0..iters {
                black_box(run(&rt, cfg.clone(), personas.clone(), Hearing::Everyone));
            }
            cpu_time() - start
        })
    });
    g.finish();
    let n = 10;
    let start = cpu_time();
    let wall = Instant::now();
    for _ in 0..n {
        black_box(run(&rt, cfg.clone(), personas.clone(), Hearing::Everyone));
    }
    let cpu = (cpu_time() - start).as_secs_f64() / n as f64;
    let wall = wall.elapsed().as_secs_f64() / n as f64;
    println!(
        "figure: overhead 50x6 round-robin: {calls} calls/run, CPU {:.1} us/call, wall {:.1} us/call",
        cpu * 1e6 / calls as f64,
        wall * 1e6 / calls as f64
    );
}

fn latency_bound(c: &mut Criterion) {
    if !wanted("latency_bound_50x2_200ms") {
        return;
    }
    let rt = rt();
    let personas: Vec<PersonaSpec> = (0..50).map(persona).collect();
    let cfg = config(2, TurnPolicy::Parallel, 200.0, 64);
    let mut g = c.benchmark_group("latency_bound_50x2_200ms");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(6));
    g.bench_function("wall", |b| b.iter(|| black_box(run(&rt, cfg.clone(), personas.clone(), Hearing::Everyone))));
    g.finish();
    let t = Instant::now();
    let r = run(&rt, cfg, personas, Hearing::Everyone);
    let wall = t.elapsed().as_secs_f64();
    println!(
        "figure: latency-bound 50x2 at 200 ms: wall {:.3} s = {:.3}x the ideal 0.400 s ({} calls)",
        wall,
        wall / 0.4,
        r.metrics.counts.api_calls
    );
}

/// A relation graph where each persona is linked to 4 others (average degree 8, undirected).
fn graph(n: usize) -> Hearing {
    let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..n {
        let links = [1, 7, 31, 127].iter().map(|d| format!("p{}", (i + d) % n)).collect();
        g.insert(format!("p{i}"), links);
    }
    Hearing::Relations(g)
}

fn scale(c: &mut Criterion) {
    if !wanted("scale_10k_x3") {
        return;
    }
    let rt = rt();
    let n = 10_000;
    let personas: Vec<PersonaSpec> = (0..n).map(persona).collect();
    let hearing = graph(n);
    let mut cfg = config(3, TurnPolicy::Parallel, 0.0, 64);
    cfg.monitoring.performance_tracking = true;
    let before = peak_rss_kib();
    let t = Instant::now();
    let r = run(&rt, cfg.clone(), personas.clone(), hearing.clone());
    let wall = t.elapsed().as_secs_f64();
    let peak = peak_rss_kib();
    println!(
        "figure: scale 10,000 personas x 3 turns (degree 8): wall {:.2} s, {} calls, peak RSS {:.0} MiB, {:.1} KiB per persona above the baseline",
        wall,
        r.metrics.counts.api_calls,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / n as f64
    );
    let mut g = c.benchmark_group("scale_10k_x3");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("wall", |b| b.iter(|| black_box(run(&rt, cfg.clone(), personas.clone(), hearing.clone()))));
    g.finish();
}

fn calls_per_persona_turn(_c: &mut Criterion) {
    if !wanted("calls_per_persona_turn") {
        return;
    }
    let rt = rt();
    for every in [0usize, 10] {
        let mut row = Vec::new();
        for n in [5usize, 20, 50, 100] {
            let personas: Vec<PersonaSpec> = (0..n).map(persona).collect();
            let mut cfg = config(6, TurnPolicy::RoundRobin, 0.0, 8);
            cfg.simulation.consolidate_every = every;
            let r = run(&rt, cfg, personas, Hearing::Everyone);
            row.push(format!("{n}: {:.2}", r.metrics.counts.api_calls as f64 / (n * 6) as f64));
        }
        println!("figure: calls per persona-turn (consolidate_every = {every}): {}", row.join(", "));
    }
}

criterion_group!(benches, overhead, latency_bound, scale, calls_per_persona_turn);
criterion_main!(benches);
