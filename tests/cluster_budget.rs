//! One rate budget for the whole cluster (issue 17, section 2): the requests-per-minute limit of
//! a key holds across every worker together, kept on a real `nats-server -js` (loopback, random
//! port); a worker that loses the broker keeps to its equal share. Through the library (the
//! reservations themselves, their cost, the fallback) and through the binary (3 `troupe worker`
//! processes against a loopback mock enforcing 600 requests per minute). Without `nats-server`
//! the tests skip with a note, unless `TROUPE_REQUIRE_NATS=1`, when they fail.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_sim::cluster::Cluster;
use troupe_sim::cluster::budget::{ClusterBudgets, JetStreamBudget, Rates};
use troupe_sim::config::ClusterConfig;
use troupe_sim::llm::budget::{SharedBudget, SharedBudgetFactory, budget_id};

mod support {
    pub mod cli;
    pub mod mock_openai;
    pub mod nats;
}

use support::cli::{ROOT, run_within, troupe};
use support::mock_openai::{MockConfig, MockServer, Recorded};
use support::nats;

const ID: &str = "0123456789abcdef0123456789abcdef";

async fn connect(url: &str, workers: Option<u32>) -> Cluster {
    let cfg = ClusterConfig { workers, ..ClusterConfig::default() };
    Cluster::connect(Some(url), &cfg, "budget test").await.unwrap()
}

/// Three workers (three connections) reserving at once from one 6000-per-minute budget: the
/// slots they get, merged, are 10 ms apart, as one client's would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_from_three_workers_are_spaced_as_one() {
    let Some(n) = nats::start() else { return };
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let budgets = ClusterBudgets::new(connect(&n.url, None).await);
        let b = budgets.shared_budget(ID, Some(6000), None).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut slots = Vec::new();
            for _ in 0..30 {
                // A slot without a wait went before the answer came back: its time is unknown.
                let wait = b.reserve(0).await;
                if !wait.is_zero() {
                    slots.push(Instant::now() + wait);
                }
            }
            (slots, budgets)
        }));
    }
    let mut slots = Vec::new();
    for t in tasks {
        slots.extend(t.await.unwrap().0);
    }
    slots.sort();
    let gaps: Vec<Duration> = slots.windows(2).map(|w| w[1] - w[0]).collect();
    // Each slot is computed from a wall-clock read moments apart, so allow a little jitter.
    let short = gaps.iter().filter(|g| **g < Duration::from_millis(9)).count();
    assert_eq!(short, 0, "slots closer than the 10 ms interval: {gaps:?}");
    let span = *slots.last().unwrap() - slots[0];
    assert!(slots.len() >= 88, "{} of 90 reservations waited", slots.len());
    assert!(span >= Duration::from_millis(860) && span < Duration::from_millis(1500), "90 slots over {span:?}");
}

/// What a reservation costs on loopback: one worker alone, and three reserving at once (the
/// compare-and-set then sometimes loses and reads again). Printed for the README; bounded
/// loosely so a busy machine does not fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_per_reservation_on_loopback() {
    let Some(n) = nats::start() else { return };
    // A budget so large nobody waits: only the reservation itself is timed.
    let rpm = Some(u32::MAX);
    let alone = ClusterBudgets::new(connect(&n.url, None).await).shared_budget(ID, rpm, Some(u32::MAX)).unwrap();
    alone.reserve(1).await;
    let calls = 2000u32;
    let t0 = Instant::now();
    for _ in 0..calls {
        alone.reserve(100).await;
    }
    let one = t0.elapsed() / calls;
    let mut budgets: Vec<Arc<dyn SharedBudget>> = Vec::new();
    for _ in 0..3 {
        budgets.push(ClusterBudgets::new(connect(&n.url, None).await).shared_budget(ID, rpm, None).unwrap());
    }
    let t0 = Instant::now();
    let per_worker = 700u32;
    let tasks: Vec<_> = budgets
        .into_iter()
        .map(|b| {
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    b.reserve(0).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let three = t0.elapsed();
    eprintln!(
        "cost per reservation on loopback: {one:?} alone; 3 workers at once: {:?} per reservation each, {:.0} reservations/s together",
        three / per_worker,
        f64::from(3 * per_worker) / three.as_secs_f64()
    );
    assert!(one < Duration::from_millis(5), "a reservation took {one:?}");
}

/// The broker killed: a reservation falls back within the bound to this worker's share
/// (`cluster.workers = 3`: a third of 600 per minute, one every 300 ms), and once the broker is
/// back (same port, same store) reservations are shared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_broker_a_worker_keeps_to_its_share_then_comes_back() {
    let Some(mut n) = nats::start() else { return };
    let cluster = connect(&n.url, Some(3)).await;
    let b = JetStreamBudget::start(&cluster, ID, Rates::new(Some(600), None), "w1");
    for _ in 0..3 {
        b.reserve(0).await;
    }
    assert!(!b.degraded());
    n.kill();
    let t0 = Instant::now();
    let mut slots = Vec::new();
    for _ in 0..6 {
        slots.push(t0.elapsed() + b.reserve(0).await);
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "falling back took {:?}", t0.elapsed());
    assert!(b.degraded());
    assert_eq!(b.workers(), 3);
    let gaps: Vec<Duration> = slots.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(295)), "a third of 600 per minute: {gaps:?}");
    n.restart();
    let back = Instant::now();
    while b.degraded() && back.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!b.degraded(), "still on its share {:?} after the broker came back", back.elapsed());
    // Shared again: a second worker's reservation comes after this one's last slot.
    let other = JetStreamBudget::start(&connect(&n.url, Some(3)).await, ID, Rates::new(Some(600), None), "w2");
    let mine = Instant::now() + b.reserve(0).await;
    let theirs = Instant::now() + other.reserve(0).await;
    assert!(theirs >= mine + Duration::from_millis(95), "{:?} apart", theirs.saturating_duration_since(mine));
}

/// The heartbeats: each budget hears the others, so a worker knows how many share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_hear_each_other() {
    let Some(n) = nats::start() else { return };
    let mut all = Vec::new();
    for i in 0..3 {
        let c = connect(&n.url, None).await;
        all.push(JetStreamBudget::start(&c, ID, Rates::new(Some(600), None), &format!("w{i}")));
    }
    let t0 = Instant::now();
    while all.iter().any(|b| b.workers() != 3) && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(all.iter().all(|b| b.workers() == 3), "{:?}", all.iter().map(|b| b.workers()).collect::<Vec<_>>());
    // The budget's name is a hash: the key never reaches the broker.
    assert!(!budget_id("http://127.0.0.1/v1", Some("sk-test-canary")).contains("canary"));
}

// ------------------------------------------------------------------------------------------
// Through the binary

/// A worker against the mock with `TROUPE_LLM__REQUESTS_PER_MINUTE=600`.
fn worker(url: &str, dir: &Path, name: &str, mock: &str) -> Child {
    let mut cmd = troupe();
    cmd.args(["worker", "--nats", url, "--name", name, "--max-parallel", "3", "--work-dir"]).arg(dir.join(name));
    provider(&mut cmd, mock);
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn provider(cmd: &mut Command, mock: &str) {
    cmd.env("TROUPE_LLM__PROVIDER", "openai")
        .env("TROUPE_LLM__BASE_URL", mock)
        .env("OPENAI_API_KEY", "sk-test")
        .env("TROUPE_LLM__REQUESTS_PER_MINUTE", "600")
        .env("TROUPE_CLUSTER__LEASE_SECONDS", "10")
        // The return to the shared budget is said at info.
        .env("RUST_LOG", "warn,troupe_sim::cluster::budget=info");
}

fn experiment(url: &str, out: &Path, runs: u32, mock: &str) -> Command {
    let mut cmd = troupe();
    cmd.arg("experiment")
        .arg(Path::new(ROOT).join("scenarios/content_moderation.ron"))
        .args(["--variants", "baseline,creative", "--runs", &runs.to_string(), "--turns", "2", "--quiet"])
        .args(["--set", "performance.rate_limit_delay=0", "--cluster", url, "--output-dir"])
        .arg(out);
    provider(&mut cmd, mock);
    cmd
}

/// SIGTERM, then SIGKILL if it lingers.
fn stop(c: Child) {
    support::cli::terminate(c, Duration::from_secs(20));
}

fn logs(dir: &Path, names: &[&str]) -> String {
    names.iter().map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default()).collect()
}

/// Requests per whole second from the first request, and the share of the budget (10 a
/// second) used between the first and the last request.
fn usage(reqs: &[Recorded]) -> (Vec<usize>, f64) {
    let (first, last) = (reqs[0].at, reqs[reqs.len() - 1].at);
    let mut per_sec = vec![0usize; (last - first).as_secs() as usize + 1];
    for r in reqs {
        per_sec[(r.at - first).as_secs() as usize] += 1;
    }
    let used = (reqs.len() - 1) as f64 / ((last - first).as_secs_f64() * 10.0);
    (per_sec, used)
}

/// 3 workers, each configured with the key's 600 requests per minute, against a mock that
/// enforces 600 per minute: no 429, and at least 90% of the budget used while they work. (Each
/// worker on its own budget would send up to three times the limit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_keep_to_one_budget_and_use_it() {
    let Some(n) = nats::start() else { return };
    let mock = MockServer::start(MockConfig { rpm: Some(600), ..MockConfig::default() }).await;
    let tmp = tempfile::tempdir().unwrap();
    let names = ["w1", "w2", "w3"];
    let workers: Vec<Child> = names.iter().map(|w| worker(&n.url, tmp.path(), w, &mock.base_url())).collect();
    let mut coord = experiment(&n.url, &tmp.path().join("out"), 8, &mock.base_url());
    let d = tokio::task::spawn_blocking(move || run_within(&mut coord, Duration::from_secs(90))).await;
    for w in workers {
        stop(w);
    }
    let d =
        d.unwrap_or_else(|_| panic!("the experiment did not finish; the workers said:\n{}", logs(tmp.path(), &names)));
    assert_eq!(d.code, Some(0), "{}\n{}", d.both(), logs(tmp.path(), &names));
    let reqs = mock.requests();
    let (per_sec, used) = usage(&reqs);
    eprintln!("{} requests; per second: {per_sec:?}; {:.1}% of the budget used", reqs.len(), used * 100.0);
    assert_eq!(mock.rate_limited(), 0, "429s at the mock; per second: {per_sec:?}");
    assert!(used >= 0.9, "{:.1}% of the budget used; per second: {per_sec:?}", used * 100.0);
}

/// The broker killed mid-run for 4 seconds, then restarted: the workers keep calling on their
/// equal share meanwhile (no 429, calls made while it was down), go back to the shared budget,
/// and the experiment completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_broker_the_workers_keep_to_their_share() {
    let Some(mut n) = nats::start() else { return };
    let mock = MockServer::start(MockConfig { rpm: Some(600), ..MockConfig::default() }).await;
    let tmp = tempfile::tempdir().unwrap();
    let names = ["w1", "w2", "w3"];
    let workers: Vec<Child> = names.iter().map(|w| worker(&n.url, tmp.path(), w, &mock.base_url())).collect();
    let mut coord = experiment(&n.url, &tmp.path().join("out"), 6, &mock.base_url());
    let coord = tokio::task::spawn_blocking(move || run_within(&mut coord, Duration::from_secs(120)));
    let t0 = Instant::now();
    while mock.request_count() < 40 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n.kill();
    let (before, down) = (mock.request_count(), tokio::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = mock.requests().iter().filter(|r| r.at > down).count();
    n.restart();
    let d = coord.await;
    for w in workers {
        stop(w);
    }
    let log = logs(tmp.path(), &names);
    let d = d.unwrap_or_else(|_| panic!("the experiment did not finish; the workers said:\n{log}"));
    assert_eq!(d.code, Some(0), "{}\n{log}", d.both());
    let (per_sec, used) = usage(&mock.requests());
    eprintln!(
        "{before} requests before the kill, {during} in the 4 s without the broker; per second: {per_sec:?}; {:.1}% used",
        used * 100.0
    );
    assert_eq!(mock.rate_limited(), 0, "429s at the mock; per second: {per_sec:?}");
    assert!(during >= 10, "only {during} calls in the 4 s without the broker");
    assert!(log.contains("rate budget cannot be reached"), "no worker said it fell back:\n{log}");
    assert!(log.contains("rate budget answers again"), "no worker went back to the shared budget:\n{log}");
}
