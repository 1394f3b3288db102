//! One simulation whose personas live in several processes (issue 18), through the binary: a
//! real `nats-server -js` on 127.0.0.1 (random port, temporary store), `troupe shard`
//! processes and the coordinator `troupe run --cluster`. Without `nats-server` the tests skip
//! with a note, unless `TROUPE_REQUIRE_NATS=1` (CI sets it), when they fail.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support {
    pub mod cli;
    pub mod mock_openai;
    pub mod nats;
    pub mod population;
}

use support::cli::{run_dirs, run_within, troupe};
use support::mock_openai::{MockConfig, MockServer};
use support::nats;
use support::population::{Shape, write};

/// A run's transcript as `(turn, speaker, text)` lines.
type Lines = Vec<(u64, String, String)>;

fn shard(url: &str, dir: &Path, id: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = troupe();
    cmd.args(["shard", "--nats", url, "--id", id]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn logs(dir: &Path, ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("--- {id}\n{}", std::fs::read_to_string(dir.join(format!("{id}.log"))).unwrap_or_default()))
        .collect()
}

/// `troupe run SCENARIO` into `out` (sharded when `cluster` is given), with `env`.
fn run(scenario: &Path, out: &Path, cluster: Option<&str>, env: &[(&str, String)]) -> Command {
    let mut c = troupe();
    c.arg("run").arg(scenario).args(["-q", "--policy", "parallel", "--output-dir"]).arg(out);
    if let Some(url) = cluster {
        c.args(["--cluster", url, "--shards", "3"]);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// The one run's transcript under `out`.
fn lines(out: &Path) -> Lines {
    let dirs = run_dirs(out);
    let dir = dirs.last().expect("a run folder");
    std::fs::read_to_string(dir.join("transcript.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e.get("text").is_some())
        .map(|e| {
            (e["turn"].as_u64().unwrap(), e["speaker_id"].as_str().unwrap().into(), e["text"].as_str().unwrap().into())
        })
        .collect()
}

fn first_difference(a: &Lines, b: &Lines) -> String {
    let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    format!("{} vs {} lines; first difference at {i}: {:?} vs {:?}", a.len(), b.len(), a.get(i), b.get(i))
}

/// Makes the population scenario's simulated calls take `ms` each (the scenario sets 0).
fn slow_calls(scenario: &Path, ms: u32) {
    let text = std::fs::read_to_string(scenario).unwrap();
    assert!(text.contains(r#""ms": 0.0"#));
    std::fs::write(scenario, text.replace(r#""ms": 0.0"#, &format!(r#""ms": {ms}.0"#))).unwrap();
}

/// 60 personas on a graph of degree 8, 3 turns, against a loopback OpenAI-compatible mock that
/// answers after `delay` (and a 2 s shard deadline).
async fn paid_setup(
    delay: Duration,
) -> (MockServer, tempfile::TempDir, support::population::Population, Vec<(&'static str, String)>) {
    let mock = MockServer::start(MockConfig { delay, ..MockConfig::default() }).await;
    let tmp = tempfile::tempdir().unwrap();
    let pop = write(tmp.path(), Shape { n: 60, turns: 3, degree: Some(8), active: None, policy: "Parallel" });
    let env = vec![
        ("TROUPE_LLM__PROVIDER", "openai".to_string()),
        ("TROUPE_LLM__BASE_URL", mock.base_url()),
        ("OPENAI_API_KEY", "sk-test-shards".to_string()),
        ("TROUPE_PERFORMANCE__MAX_WORKERS", "4".to_string()),
        ("TROUPE_CLUSTER__SHARD_DEADLINE_SECONDS", "2".to_string()),
    ];
    (mock, tmp, pop, env)
}

/// Requests the mock saw again whose first copy it answered well before `killed_at` (its own
/// `delay`, then 500 ms for the answer to be journaled on a busy machine): exchanges paid twice.
fn paid_twice(mock: &MockServer, delay: Duration, killed_at: Instant) -> usize {
    let mut first: HashMap<String, Instant> = HashMap::new();
    let mut twice = 0;
    for r in mock.requests() {
        let body = r.body.to_string();
        match first.get(&body) {
            Some(&at) if at + delay + Duration::from_millis(500) < killed_at => twice += 1,
            Some(_) => {}
            None => {
                first.insert(body, r.at.into());
            }
        }
    }
    twice
}

/// The same scenario run in one process (into `dir/local`) says what the sharded run in `out` said.
fn same_as_one_process(scenario: &Path, dir: &Path, out: &Path, env: &[(&str, String)]) {
    let local = run_within(&mut run(scenario, &dir.join("local"), None, env), Duration::from_secs(300));
    assert_eq!(local.code, Some(0), "{}", local.both());
    let (a, b) = (lines(&dir.join("local")), lines(out));
    assert!(a == b, "{}", first_difference(&a, &b));
}

fn signal(c: &Child, sig: i32) {
    // SAFETY: signals our own child.
    unsafe { libc::kill(c.id() as i32, sig) };
}

fn simulated(ms: u32) -> Vec<(&'static str, String)> {
    vec![
        ("TROUPE_LLM__PROVIDER", "simulated".into()),
        ("TROUPE_LLM__SIMULATED__LATENCY__KIND", "fixed".into()),
        ("TROUPE_LLM__SIMULATED__LATENCY__MS", ms.to_string()),
        ("TROUPE_CLUSTER__SHARD_DEADLINE_SECONDS", "2".into()),
    ]
}

/// 20,000 personas on a relation graph of average degree 8, 3 turns, over 3 shards: the
/// transcript is the single-process run's, line for line in `(turn, speaker, text)`.
#[test]
fn twenty_thousand_personas_over_three_shards_say_what_one_process_says() {
    let Some(n) = nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pop = write(tmp.path(), Shape { n: 20_000, turns: 3, degree: Some(8), active: None, policy: "Parallel" });
    let env = simulated(0);
    let ids = ["s1", "s2", "s3"];
    let shards: Vec<Child> = ids.iter().map(|id| shard(&n.url, tmp.path(), id, &env)).collect();
    let local = run_within(&mut run(&pop.scenario, &tmp.path().join("local"), None, &env), Duration::from_secs(600));
    assert_eq!(local.code, Some(0), "{}", local.both());
    let d =
        run_within(&mut run(&pop.scenario, &tmp.path().join("sharded"), Some(&n.url), &env), Duration::from_secs(600));
    for s in shards {
        support::cli::terminate(s, Duration::from_secs(10));
    }
    assert_eq!(d.code, Some(0), "{}\n{}", d.both(), logs(tmp.path(), &ids));
    assert!(d.stderr.contains("sharded over 3 shard(s)"), "{}", d.stderr);
    let (a, b) = (lines(&tmp.path().join("local")), lines(&tmp.path().join("sharded")));
    assert!(a.len() > 2 * 20_000, "{} lines: most personas speak each turn", a.len());
    assert!(a == b, "{}", first_difference(&a, &b));
}

/// A shard killed (SIGKILL) during turn 2: its personas move to the other two, rebuilt from the
/// world's record; the run completes with the single-process transcript, and no exchange the
/// killed shard was answered for is sent to the provider again (counted at a loopback
/// OpenAI-compatible mock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shards_personas_move_and_nothing_is_paid_twice() {
    let Some(n) = nats::start() else { return };
    let delay = Duration::from_millis(100);
    let (mock, tmp, pop, env) = paid_setup(delay).await;
    let ids = ["k1", "k2", "victim"];
    let mut shards: Vec<Child> = ids.iter().map(|id| shard(&n.url, tmp.path(), id, &env)).collect();
    let mut coord = run(&pop.scenario, &tmp.path().join("sharded"), Some(&n.url), &env);
    let coord = std::thread::spawn(move || run_within(&mut coord, Duration::from_secs(300)));
    // Kill during turn 2: past the first 60 calls, and some of turn 2's made.
    let t0 = Instant::now();
    while mock.request_count() < 75 && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut victim = shards.pop().unwrap();
    victim.kill().unwrap();
    let killed_at = Instant::now();
    victim.wait().unwrap();
    let d = tokio::task::spawn_blocking(move || coord.join().unwrap()).await.unwrap();
    for s in shards {
        support::cli::terminate(s, Duration::from_secs(10));
    }
    assert_eq!(d.code, Some(0), "{}\n{}", d.both(), logs(tmp.path(), &ids));
    assert!(d.stderr.contains("1 shard(s) lost"), "{}", d.stderr);
    let twice = paid_twice(&mock, delay, killed_at);
    assert_eq!(twice, 0, "{twice} exchange(s) paid twice");
    same_as_one_process(&pop.scenario, tmp.path(), &tmp.path().join("sharded"), &env);
}

/// A shard stopped (SIGSTOP) for longer than the deadline: it is taken for lost, its personas
/// move, and the transcript is the single-process one; when it continues, its late answers are
/// ignored.
#[test]
fn a_stalled_shard_is_detected_and_its_personas_move() {
    let Some(n) = nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pop = write(tmp.path(), Shape { n: 30, turns: 6, degree: Some(4), active: None, policy: "Parallel" });
    slow_calls(&pop.scenario, 500);
    let env = simulated(500);
    let ids = ["a", "b", "stalled"];
    let shards: Vec<Child> = ids.iter().map(|id| shard(&n.url, tmp.path(), id, &env)).collect();
    let mut coord = run(&pop.scenario, &tmp.path().join("sharded"), Some(&n.url), &env);
    let coord = std::thread::spawn(move || run_within(&mut coord, Duration::from_secs(300)));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!coord.is_finished(), "the run ended before the shard was stopped");
    signal(&shards[2], libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    signal(&shards[2], libc::SIGCONT);
    let d = coord.join().unwrap();
    for s in shards {
        support::cli::terminate(s, Duration::from_secs(10));
    }
    assert_eq!(d.code, Some(0), "{}\n{}", d.both(), logs(tmp.path(), &ids));
    assert!(d.stderr.contains("1 shard(s) lost"), "the stop was not detected: {}", d.stderr);
    let local = run_within(&mut run(&pop.scenario, &tmp.path().join("local"), None, &env), Duration::from_secs(300));
    assert_eq!(local.code, Some(0), "{}", local.both());
    let (a, b) = (lines(&tmp.path().join("local")), lines(&tmp.path().join("sharded")));
    assert!(a == b, "{}", first_difference(&a, &b));
}

/// The broker killed and restarted mid-run: the run pauses and completes (or stops resumably,
/// and `troupe resume` completes it), with the single-process transcript.
#[test]
fn a_broker_restart_mid_run_pauses_the_run_and_it_completes() {
    let Some(mut n) = nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pop = write(tmp.path(), Shape { n: 30, turns: 8, degree: Some(4), active: None, policy: "Parallel" });
    slow_calls(&pop.scenario, 400);
    let env = simulated(400);
    let ids = ["x", "y", "z"];
    let shards: Vec<Child> = ids.iter().map(|id| shard(&n.url, tmp.path(), id, &env)).collect();
    let mut coord = run(&pop.scenario, &tmp.path().join("sharded"), Some(&n.url), &env);
    let coord = std::thread::spawn(move || run_within(&mut coord, Duration::from_secs(300)));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!coord.is_finished(), "the run ended before the broker was killed");
    n.kill();
    std::thread::sleep(Duration::from_secs(3));
    n.restart();
    let d = coord.join().unwrap();
    let out = tmp.path().join("sharded");
    if d.code != Some(0) {
        // Stopped resumably: the journal holds what the shards did; resume completes it.
        let dir = run_dirs(&out).pop().expect("a run folder");
        let mut r = troupe();
        r.arg("resume").arg(&dir).arg("-q");
        for (k, v) in &env {
            r.env(k, v);
        }
        let done = run_within(&mut r, Duration::from_secs(300));
        assert_eq!(done.code, Some(0), "{}\n{}", d.both(), done.both());
    }
    for s in shards {
        support::cli::terminate(s, Duration::from_secs(10));
    }
    let local = run_within(&mut run(&pop.scenario, &tmp.path().join("local"), None, &env), Duration::from_secs(300));
    assert_eq!(local.code, Some(0), "{}", local.both());
    let (a, b) = (lines(&tmp.path().join("local")), lines(&out));
    assert!(a == b, "{}\n{}\n{}", first_difference(&a, &b), d.both(), logs(tmp.path(), &ids));
}

/// The coordinator killed (SIGKILL) during turn 2: `troupe resume RUN_DIR --cluster URL`
/// continues the run on the shards; the recorded exchanges travel with the acts and are
/// answered again without reaching the provider; the transcript is the one-process run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_resumes_on_the_shards_and_nothing_is_paid_twice() {
    let Some(n) = nats::start() else { return };
    let delay = Duration::from_millis(100);
    let (mock, tmp, pop, env) = paid_setup(delay).await;
    let ids = ["c1", "c2", "c3"];
    let shards: Vec<Child> = ids.iter().map(|id| shard(&n.url, tmp.path(), id, &env)).collect();
    let out = tmp.path().join("sharded");
    let mut coord = run(&pop.scenario, &out, Some(&n.url), &env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while mock.request_count() < 80 && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    coord.kill().unwrap();
    let killed_at = Instant::now();
    coord.wait().unwrap();
    let paid_before = mock.request_count();
    let dir = run_dirs(&out).pop().expect("a run folder");
    let mut r = troupe();
    r.arg("resume").arg(&dir).args(["-q", "--cluster", &n.url, "--shards", "3"]);
    for (k, v) in &env {
        r.env(k, v);
    }
    let done = tokio::task::spawn_blocking(move || run_within(&mut r, Duration::from_secs(300))).await.unwrap();
    for s in shards {
        support::cli::terminate(s, Duration::from_secs(10));
    }
    assert_eq!(done.code, Some(0), "{}\n{}", done.both(), logs(tmp.path(), &ids));
    assert!(done.stderr.contains("sharded over 3 shard(s)"), "{}", done.stderr);
    let twice = paid_twice(&mock, delay, killed_at);
    assert_eq!(twice, 0, "{twice} exchange(s) paid twice ({paid_before} made before the kill)");
    same_as_one_process(&pop.scenario, tmp.path(), &out, &env);
}
