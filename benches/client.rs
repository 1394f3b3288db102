//! OpenAI-compatible client benchmarks (issue 4), against the loopback mock (127.0.0.1, no
//! internet), on a tokio runtime of 2 worker threads that hosts both the client and the mock:
//! 1. client overhead at 0 ms latency: CPU time per call (target <= 150 us) and calls/s with
//!    64 calls in flight (target >= 3,000). Process CPU includes the in-process mock server, so
//!    the mock's own share is measured apart by a raw HTTP/1.1 loop (hand-written requests on
//!    keep-alive sockets, no reqwest or hyper client) and the client's share is the difference;
//! 2. budget adherence: a client budget of 600 requests per minute against a mock enforcing
//!    600 per minute, for a full 60 s (run once, outside criterion's loop): the share of the
//!    budget used (target >= 97%) and the 429s (target 0);
//! 3. token counting of one call whose server reported no usage (`token_counting`): the
//!    approximate counter against tiktoken's o200k_base on the same persona request and reply,
//!    and the call whose usage the server reported (nothing is counted then). The first use of
//!    o200k_base loads its BPE table, once per process: timed apart.
//!
//! The figures are also printed as plain lines (`figure: ...`) for the README. Select one
//! group with a filter: `cargo bench --bench client -- client_overhead`, `-- budget_600rpm` or
//! `-- token_counting`.

#[path = "../tests/support/mock_openai.rs"]
mod mock_openai;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mock_openai::{MockConfig, MockServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use troupe_sim::config::SecretString;
use troupe_sim::llm::openai::{OpenAiOptions, OpenAiProvider};
use troupe_sim::llm::{CallContext, ChatMessage, ChatRequest, ErrorKind, Provider, RequestMeta, Role};

/// Calls in flight in the overhead measurements.
const CONCURRENCY: usize = 64;
const KEY: &str = "sk-bench-0000000000000000";

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

/// A persona turn's request: a system prompt of about 1 KB and the conversation so far.
fn request() -> Arc<ChatRequest> {
    let system = "You are Sarah Chen, a product manager at a 140-person software company. You are analytical \
        and direct; you want decisions the team can live with and costs under control. Speak in the first \
        person, in two or three sentences, and answer the last speaker when you disagree. "
        .repeat(3);
    let history = "Marcus Rivera: I think we should pilot it with the support team first and measure response \
        times. Raj Patel: On-call needs six engineers; a four-day week leaves one day uncovered unless we \
        stagger it.";
    Arc::new(ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![
            ChatMessage::new(Role::System, system),
            ChatMessage::new(Role::User, format!("{history}\n\nWhat do you say?")),
        ],
        temperature: Some(0.7),
        top_p: None,
        max_tokens: Some(120),
        seed: None,
        stop: Vec::new(),
        response_format: troupe_sim::llm::ResponseFormat::Text,
        meta: RequestMeta {
            persona: "sarah_chen".into(),
            turn: 2,
            purpose: troupe_sim::llm::Purpose::Act,
            prompt_tokens: 0,
            ..Default::default()
        },
    })
}

fn provider(mock: &MockServer, rpm: Option<u32>) -> OpenAiProvider {
    let mut o = OpenAiOptions::new(mock.base_url(), Some(SecretString::new(KEY)));
    o.endpoints[0].requests_per_minute = rpm;
    OpenAiProvider::new(o).expect("provider")
}

/// `n` calls through the provider, `CONCURRENCY` at a time.
async fn client_calls(p: &OpenAiProvider, req: &Arc<ChatRequest>, n: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (p, req, next) = (p.clone(), req.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let r = p.chat(req.clone(), CallContext { attempt: 1, run_seed: 0 }).await.expect("call");
                    black_box(r);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

/// The bytes of one chat-completions request as the client sends it, for the raw loop.
fn raw_request(addr: SocketAddr, req: &ChatRequest) -> Vec<u8> {
    let body = serde_json::json!({
        "model": req.model,
        "messages": req.messages.iter().map(|m| serde_json::json!({
            "role": match m.role { Role::System => "system", Role::User => "user", Role::Assistant => "assistant" },
            "content": m.content,
        })).collect::<Vec<_>>(),
        "temperature": req.temperature,
        "max_tokens": req.max_tokens,
        "user": req.meta.persona,
    })
    .to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         authorization: Bearer {KEY}\r\naccept: */*\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body.into_bytes()].concat()
}

/// `n` requests on `CONCURRENCY` keep-alive sockets with no HTTP client library: what the mock
/// server costs on its own (plus a few microseconds of this loop).
async fn raw_calls(addr: SocketAddr, bytes: &Arc<Vec<u8>>, n: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (bytes, next) = (bytes.clone(), next.clone());
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                s.set_nodelay(true).expect("nodelay");
                let mut buf = Vec::with_capacity(4096);
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    s.write_all(&bytes).await.expect("write");
                    buf.clear();
                    read_response(&mut s, &mut buf).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

/// Reads one response with a `content-length` body.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        let k = s.read(&mut chunk).await.expect("read");
        assert!(k > 0, "the mock closed the connection");
        buf.extend_from_slice(&chunk[..k]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("ascii head");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

/// CPU time and wall time of `f`.
fn measure(rt: &tokio::runtime::Runtime, f: impl std::future::Future<Output = ()>) -> (Duration, Duration) {
    let (cpu, wall) = (cpu_time(), Instant::now());
    rt.block_on(f);
    (cpu_time() - cpu, wall.elapsed())
}

fn client_overhead(c: &mut Criterion) {
    if !wanted("client_overhead") {
        return;
    }
    let rt = rt();
    let req = request();

    // The figures first: criterion analyses and plots on background threads after each
    // benchmark, and process CPU time would count them. Each on a fresh mock (it keeps every
    // request it saw), after a warm-up that fills the connection pool.
    let n = 30_000u64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let (cpu, wall) = {
        let mock = rt.block_on(MockServer::start(MockConfig::default()));
        let p = provider(&mock, None);
        rt.block_on(client_calls(&p, &req, 5_000));
        measure(&rt, client_calls(&p, &req, n))
    };
    let (raw_cpu, raw_wall) = {
        let mock = rt.block_on(MockServer::start(MockConfig::default()));
        let bytes = Arc::new(raw_request(mock.addr, &req));
        rt.block_on(raw_calls(mock.addr, &bytes, 5_000));
        measure(&rt, raw_calls(mock.addr, &bytes, n))
    };
    println!(
        "figure: client overhead at 0 ms, {CONCURRENCY} in flight, 2 threads: client+mock CPU {:.1} us/call, {:.0} calls/s; mock alone (raw HTTP/1.1 loop) CPU {:.1} us/call, {:.0} calls/s; client share {:.1} us/call",
        per(cpu),
        n as f64 / wall.as_secs_f64(),
        per(raw_cpu),
        n as f64 / raw_wall.as_secs_f64(),
        per(cpu) - per(raw_cpu),
    );

    let mut g = c.benchmark_group("client_overhead");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    // Criterion's "time" is process CPU time per call here.
    let mock = rt.block_on(MockServer::start(MockConfig::default()));
    let p = provider(&mock, None);
    g.bench_function("client_and_mock_cpu_per_call", |b| {
        b.iter_custom(|iters| measure(&rt, client_calls(&p, &req, iters)).0)
    });
    let mock = rt.block_on(MockServer::start(MockConfig::default()));
    let bytes = Arc::new(raw_request(mock.addr, &req));
    g.bench_function("mock_alone_cpu_per_call", |b| {
        b.iter_custom(|iters| measure(&rt, raw_calls(mock.addr, &bytes, iters)).0)
    });
    g.finish();
}

fn budget_adherence(_c: &mut Criterion) {
    if !wanted("budget_600rpm") {
        return;
    }
    let rt = rt();
    let req = request();
    // One minute, once: a repeated measurement would add nothing but minutes.
    let mock = rt.block_on(MockServer::start(MockConfig { rpm: Some(600), ..MockConfig::default() }));
    let p = provider(&mock, Some(600));
    let window = Duration::from_secs(60);
    let ok = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + window;
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (p, req, ok, limited) = (p.clone(), req.clone(), ok.clone(), limited.clone());
                tokio::spawn(async move {
                    loop {
                        let r = tokio::time::timeout_at(deadline, p.chat(req.clone(), CallContext::default())).await;
                        match r {
                            Err(_) => return,
                            Ok(Ok(_)) => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(Err(e)) if e.kind == ErrorKind::RateLimited => limited.fetch_add(1, Ordering::Relaxed),
                            Ok(Err(e)) => panic!("unexpected error: {e}"),
                        };
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "figure: budget 600 rpm against a mock enforcing 600 rpm for 60 s: {ok} calls answered = {:.1}% of the budget, {} 429s (mock count {})",
        ok as f64 * 100.0 / 600.0,
        limited.load(Ordering::Relaxed),
        mock.rate_limited()
    );
}

fn token_counting(c: &mut Criterion) {
    use troupe_sim::llm::tokens::{Counter, count_request, count_tokens, estimate_usage};
    if !wanted("token_counting") {
        return;
    }
    let req = request();
    let reply = "I agree we should pilot it with support first, but we need a baseline: median first-response \
        time and reopen rate for the last quarter, or we will not know whether it helped.";
    let t0 = Instant::now();
    let first = Counter::O200kBase.count("warm up");
    println!("figure: loading tiktoken o200k_base (once per process, on the first estimate): {:?}", t0.elapsed());
    black_box(first);
    let mut g = c.benchmark_group("token_counting");
    g.bench_function("approximate", |b| b.iter(|| count_request(black_box(&req)) + count_tokens(black_box(reply))));
    g.bench_function("tiktoken_o200k", |b| b.iter(|| estimate_usage(black_box(&req), black_box(reply), None, None)));
    g.bench_function("server_reported", |b| {
        b.iter(|| estimate_usage(black_box(&req), black_box(reply), Some(300), Some(40)))
    });
    g.finish();
    let u = estimate_usage(&req, reply, None, None);
    println!(
        "figure: the bench request, {} bytes, counts {} prompt + {} reply tokens with tiktoken o200k_base, {} + {} approximately",
        req.messages.iter().map(|m| m.content.len()).sum::<usize>() + reply.len(),
        u.prompt_tokens,
        u.completion_tokens,
        count_request(&req),
        count_tokens(reply)
    );
}

criterion_group!(benches, client_overhead, budget_adherence, token_counting);
criterion_main!(benches);
