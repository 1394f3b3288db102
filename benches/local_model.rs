//! Throughput of the embedded local model (SmolLM2-135M-Instruct, Q4_1) on this machine, with
//! the prompts a persona sends (about 500 tokens: persona, scenario, conversation):
//!
//! 1. `prefill`: reading a prompt from scratch, tokens/s;
//! 2. `single`: one reply written alone (greedy, 64 tokens), tokens/s;
//! 3. `parallel4`: four personas' replies written together (one pass over the weights per step
//!    for all four), aggregate tokens/s, and its ratio to `single`;
//! 4. `prefix hit`: the next turn's prompt (one more line of conversation) read with the
//!    persona's earlier prompt in the prefix cache, against reading it cold.
//!
//! 5. `8-bit product`: the decode kernel alone on one thread, a 61 MB weight matrix (too big for
//!    the CPU's caches, as the model's are) times 1 and 4 sequences, GMAC/s and GB/s of weights.
//!
//! Each is printed as a plain `figure:` line for the README. Decoding figures leave the
//! prompt's reading out; `end-to-end` figures count it (what a server client sees).
//!
//! With `TROUPE_BENCH_LLAMA_URL` set (an OpenAI-compatible llama.cpp server on this machine,
//! for instance `python -m llama_cpp.server --model <same gguf> --n_threads 2`), the same
//! prompts go to it too, one alone and four at once, and the ratio is printed. Only that URL is
//! contacted. Skips with a note when the model is not cached (`troupe model fetch`).

#[cfg(feature = "local-model")]
use std::sync::Arc;
#[cfg(feature = "local-model")]
use std::time::{Duration, Instant};

use criterion::Criterion;
#[cfg(feature = "local-model")]
use criterion::Throughput;
#[cfg(feature = "local-model")]
use troupe_sim::llm::local::{GenerateParams, LocalModel, sampler::SamplingParams};
use troupe_sim::llm::{ChatMessage, Role};

/// Greedy replies of this many tokens (no stop: every reply is as long).
#[cfg(feature = "local-model")]
const REPLY: usize = 64;

const PEOPLE: [(&str, &str, &str); 4] = [
    ("Marcus Rivera", "Head of Customer Support", "Runs a 40-person support desk across two time zones."),
    ("Raj Patel", "Payments Engineering Lead", "Owns the payments on-call rotation and its availability objective."),
    ("Hannah Wright", "Head of People", "Leads hiring and retention; ran a four-day-week pilot at her last company."),
    ("Sarah Chen", "VP Product", "Owns the Q2 roadmap and the promises made to the largest customer."),
];

/// A persona's prompt as the plain prompt style builds it; `extra` lines of conversation.
fn prompt_messages(who: usize, extra: usize) -> Vec<ChatMessage> {
    let (name, role, about) = PEOPLE[who];
    let system = format!(
        "You are taking part in a simulated group discussion.\nYou are {name}, {role}.\nAbout you: {about}\n\
        Traits: pragmatic, direct, careful with numbers\nGoals: keep the team healthy; keep promises to customers\n\
        Style: Direct and concrete, with numbers\nStay in character. Speak in the first person, in 2-4 sentences, \
        and react to what others said."
    );
    let mut user = String::from(
        "World: Leadership offsite\nContext: Slotwise is a 140-person company selling clinic-scheduling software. \
        The CEO has asked three leads for a recommendation by Friday on a six-month pilot of a 32-hour, four-day week at full pay, \
        starting 1 March. The support desk answers customers Monday to Friday, 7 a.m. to 7 p.m.; the payments on-call rotation \
        has six engineers and a 99.95% availability objective; and the Q2 roadmap promises two features to the largest customer. \
        Any option has to say who covers the fifth day.\nTopic: Should Slotwise pilot a four-day week?\nConversation so far:\n\
        [0] Moderator: Should Slotwise pilot a 32-hour, four-day week at full pay for six months, and if so, how are support and \
        on-call covered on the fifth day?\n\
        [1] Raj Patel: I like the idea, but the on-call rotation is already thin. If we cut a day we need a seventh engineer or a \
        follow-the-sun agreement with the Lisbon team.\n[1] Hannah Wright: The research on four-day weeks is encouraging for \
        retention, and our attrition cost us two hires last year.\n",
    );
    for i in 0..extra {
        user.push_str(&format!(
            "[2] Sarah Chen: Point {i}: the roadmap can move one feature to Q3 if the customer agrees in writing.\n"
        ));
    }
    user.push_str(&format!("Reply as {name} with one short contribution (2-4 sentences)."));
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
        // Penalty 1.0: nothing steers the reply toward the stop token early, so every reply is
        // REPLY tokens long and the figures compare like with like.
        sampling: SamplingParams { temperature: 0.0, top_p: 1.0, repeat_penalty: 1.0, repeat_last_n: 64, seed: 0 },
        ..GenerateParams::default()
    }
}

#[cfg(feature = "local-model")]
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One batch of replies: (tokens written, seconds decoding, seconds in all).
#[cfg(feature = "local-model")]
fn write(m: &LocalModel, prompts: &[Vec<u32>]) -> (usize, f64, f64) {
    let never = || false;
    let p = params(REPLY);
    let jobs: Vec<(&[u32], &GenerateParams)> = prompts.iter().map(|x| (x.as_slice(), &p)).collect();
    let t0 = Instant::now();
    let out: Vec<_> = m.generate_together(&jobs, &never).into_iter().map(Result::unwrap).collect();
    let all = t0.elapsed().as_secs_f64();
    let tokens: usize = out.iter().map(|g| g.ids.len()).sum();
    // Prompts are read one after another before the batch decodes.
    let reading: f64 = out.iter().map(|g| g.prefill.as_secs_f64()).sum();
    (tokens, all - reading, all)
}

/// The 8-bit product alone, from memory: (GMAC/s, GB/s of weights) for `n` sequences.
#[cfg(feature = "local-model")]
fn product(n: usize) -> (f64, f64) {
    use troupe_kernels::q8::{Q8, q8_rows};
    let (rows, cols) = (100_000, 576);
    let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let w = Q8::weights(&w, cols);
    let x: Vec<f32> = (0..n * cols).map(|i| ((i * 31) % 100) as f32 / 50.0 - 1.0).collect();
    let x = Q8::activations(&x, cols);
    let mut dst = vec![0f32; rows * n];
    q8_rows(&w, &x, 0, &mut dst);
    let times: Vec<f64> = (0..7)
        .map(|_| {
            let t0 = Instant::now();
            q8_rows(&w, &x, 0, &mut dst);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    let t = median(times);
    ((rows * cols * n) as f64 / t / 1e9, w.bytes() as f64 / t / 1e9)
}

#[cfg(feature = "local-model")]
fn bench(c: &mut Criterion) {
    for n in [1, 4] {
        let (gmac, gbs) = product(n);
        println!("figure: 8-bit product, one thread, {n} sequence(s): {gmac:.1} GMAC/s, {gbs:.1} GB/s of weights");
    }
    let Some(m) = load() else { return };
    let never = || false;
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| m.prompt_ids(&prompt_messages(i, 0))).collect();
    println!("threads: {} (llm.local.threads = 0: one per free core)", m.threads());

    let mut g = c.benchmark_group("local_model");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(prompts[0].len() as u64));
    g.bench_function("prefill", |b| {
        b.iter(|| {
            m.clear_prefix_cache();
            m.generate(&prompts[0], &params(1), &never).unwrap()
        })
    });
    g.throughput(Throughput::Elements(REPLY as u64));
    g.bench_function("single", |b| b.iter(|| write(&m, &prompts[..1])));
    g.throughput(Throughput::Elements(4 * REPLY as u64));
    g.bench_function("parallel4", |b| b.iter(|| write(&m, &prompts)));
    g.finish();

    // Plain figures: medians of five runs (the prefix cache is warm, as in a run's later turns).
    let runs = |prompts: &[Vec<u32>]| -> (f64, f64) {
        let r: Vec<_> = (0..5).map(|_| write(&m, prompts)).collect();
        (median(r.iter().map(|x| x.0 as f64 / x.1).collect()), median(r.iter().map(|x| x.0 as f64 / x.2).collect()))
    };
    let (single, single_e2e) = runs(&prompts[..1]);
    let (four, four_e2e) = runs(&prompts);
    let cold = median(
        (0..5)
            .map(|_| {
                m.clear_prefix_cache();
                let g = m.generate(&prompts[0], &params(1), &never).unwrap();
                g.prompt_tokens as f64 / g.prefill.as_secs_f64()
            })
            .collect(),
    );
    println!("figure: prefill (cold): {cold:.0} tokens/s ({} prompt tokens)", prompts[0].len());
    println!("figure: single stream: {single:.1} tokens/s decoding, {single_e2e:.1} end-to-end ({REPLY} tokens)");
    println!(
        "figure: 4 in parallel: {four:.1} tokens/s aggregate decoding ({:.2}x single), {four_e2e:.1} end-to-end ({:.2}x)",
        four / single,
        four_e2e / single_e2e
    );

    // The next turn's prompt: the same persona, one more line of conversation.
    let next = m.prompt_ids(&prompt_messages(0, 1));
    let mut cold_ms = Vec::new();
    let mut hit_ms = Vec::new();
    let mut cached = 0;
    for _ in 0..5 {
        m.clear_prefix_cache();
        cold_ms.push(m.generate(&next, &params(1), &never).unwrap().prefill.as_secs_f64() * 1e3);
        m.clear_prefix_cache();
        m.generate(&prompts[0], &params(1), &never).unwrap();
        let hit = m.generate(&next, &params(1), &never).unwrap();
        cached = hit.cached_tokens;
        hit_ms.push(hit.prefill.as_secs_f64() * 1e3);
    }
    let (cold_ms, hit_ms) = (median(cold_ms), median(hit_ms));
    println!(
        "figure: prefix cache hit: next turn's {}-token prompt read in {hit_ms:.0} ms with {cached} tokens cached, {cold_ms:.0} ms cold ({:.1}x)",
        next.len(),
        cold_ms / hit_ms
    );

    if let Ok(url) = std::env::var("TROUPE_BENCH_LLAMA_URL") {
        let texts: Vec<String> = (0..4).map(|i| m.template().render(&prompt_messages(i, 0))).collect();
        match llama_cpp(&url, &texts) {
            Ok((one, four_theirs)) => {
                println!(
                    "figure: llama.cpp server at {url}: single {one:.1} tokens/s end-to-end, 4 in parallel {four_theirs:.1} aggregate"
                );
                println!(
                    "figure: troupe / llama.cpp, end-to-end: single {:.2}, 4 in parallel {:.2}",
                    single_e2e / one,
                    four_e2e / four_theirs
                );
            }
            Err(e) => println!("llama.cpp comparison skipped: {e}"),
        }
    }
}

/// The same prompts sent to a llama.cpp server's `/v1/completions`, greedy, `REPLY` tokens:
/// (single end-to-end tokens/s, 4 at once aggregate tokens/s), medians of three.
#[cfg(feature = "local-model")]
fn llama_cpp(url: &str, texts: &[String]) -> Result<(f64, f64), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let client = reqwest::Client::new();
    let one = |text: String| {
        let client = client.clone();
        let body = serde_json::json!({
            "prompt": text, "max_tokens": REPLY, "temperature": 0.0, "repeat_penalty": 1.0,
            "stop": [],
        });
        let url = format!("{}/v1/completions", url.trim_end_matches('/'));
        async move {
            let r: serde_json::Value = client
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            r["usage"]["completion_tokens"].as_u64().ok_or_else(|| format!("no usage in {r}"))
        }
    };
    rt.block_on(async {
        one(texts[0].clone()).await?; // warm-up
        let mut single = Vec::new();
        let mut four = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            let n = one(texts[0].clone()).await?;
            single.push(n as f64 / t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            let all = futures_util::future::join_all(texts.iter().cloned().map(&one)).await;
            let mut n = 0;
            for r in all {
                n += r?;
            }
            four.push(n as f64 / t0.elapsed().as_secs_f64());
        }
        Ok((median(single), median(four)))
    })
}

#[cfg(not(feature = "local-model"))]
fn bench(_c: &mut Criterion) {
    let _ = prompt_messages(0, 0);
    println!("skipped: built without the `local-model` feature");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
