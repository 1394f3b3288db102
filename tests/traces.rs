//! OpenTelemetry traces from the `troupe` binary, received by an OTLP/HTTP receiver the test
//! starts on loopback: one trace per run; simulation > turn > persona_act > llm_call, every
//! turn a child of the run (never of the turn before); the call's provider, model, tokens and
//! outcome as attributes; no prompt text and no key anywhere.

mod support {
    pub mod cli;
    pub mod nats;
    pub mod otlp;
}

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::cli::{run_within, troupe};
use support::otlp;

const KEY: &str = "sk-trace-test-secret-0000000000000000";

/// Tests that start several processes (a NATS server, workers, shards) take turns with the
/// 20,000-turn run: sharing the two cores with them, its exporter falls behind, the bounded span
/// queue fills, and spans are dropped by design, which is not what that test is about.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_run_is_one_trace_of_turns_acts_and_calls_with_their_attributes() {
    let rx = otlp::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = troupe();
    cmd.args(["run", "scenarios/product_launch.ron", "-q", "--rate-limit-delay", "0", "--turns", "3"])
        .arg("--output-dir")
        .arg(tmp.path())
        .args(["--set", "llm.provider=simulated"])
        .args(["--set", "llm.simulated.faults.rate_limited=0.2", "--set", "llm.simulated.faults.retry_after_secs=0.01"])
        .args(["--set", &format!("monitoring.otlp_endpoint={}", rx.endpoint)])
        .env("OPENAI_API_KEY", KEY);
    let done = run_within(&mut cmd, Duration::from_secs(120));
    assert_eq!(done.code, Some(0), "{}", done.both());
    let spans = rx.spans();
    let by_name = |n: &str| spans.iter().filter(|s| s.name == n).collect::<Vec<_>>();
    let traces: BTreeSet<_> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace per run: {traces:?}");
    let run = by_name("simulation");
    assert_eq!(run.len(), 1, "{spans:#?}");
    assert!(run[0].parent.is_empty(), "the run's span is the root");
    assert_eq!(run[0].service, "troupe");
    assert_eq!(run[0].attributes.get("scenario").map(String::as_str), Some("product_launch"));

    let turns = by_name("turn");
    assert!(turns.len() >= 3, "a span per turn: {}", turns.len());
    assert!(
        turns.iter().all(|t| t.parent == run[0].span_id),
        "every turn hangs from the run, none from the turn before"
    );
    let turn_ids: BTreeSet<_> = turns.iter().map(|t| t.span_id.as_str()).collect();

    let acts = by_name("persona_act");
    assert!(acts.len() >= 15, "5 personas x 3 turns: {}", acts.len());
    assert!(acts.iter().all(|a| turn_ids.contains(a.parent.as_str())), "acts hang from their turn");
    let act_ids: BTreeSet<_> = acts.iter().map(|a| a.span_id.as_str()).collect();

    let calls = by_name("llm_call");
    assert!(calls.len() >= acts.len(), "{} calls for {} acts", calls.len(), acts.len());
    assert!(calls.iter().all(|c| act_ids.contains(c.parent.as_str())), "calls hang from their act");
    let outcomes: BTreeMap<&str, usize> = calls.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.attributes.get("outcome").map_or("(none)", String::as_str)).or_default() += 1;
        m
    });
    assert!(outcomes.contains_key("ok") && outcomes.contains_key("rate_limited"), "{outcomes:?}");
    let ok = calls.iter().find(|c| c.attributes.get("outcome").is_some_and(|o| o == "ok")).unwrap();
    for key in ["provider", "model", "persona", "turn", "attempt", "prompt_tokens", "completion_tokens"] {
        assert!(ok.attributes.contains_key(key), "llm_call has {key}: {:?}", ok.attributes);
    }
    assert_eq!(ok.attributes["provider"], "simulated");
    assert!(ok.attributes["prompt_tokens"].parse::<u64>().unwrap() > 0);
    assert!(calls.iter().any(|c| c.attributes.get("attempt").is_some_and(|a| a != "1")), "retries show as attempts");

    // Never a prompt, never the key.
    let scenario = std::fs::read_to_string("scenarios/product_launch.ron").unwrap();
    let context = scenario.split("context: \"").nth(1).unwrap().get(..60).unwrap().to_string();
    for s in &spans {
        for v in s.attributes.values() {
            assert!(!v.contains(KEY) && !v.contains(&context), "{}: {v}", s.name);
        }
    }
}

#[test]
fn a_collector_that_is_down_costs_the_run_nothing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = troupe();
    cmd.args(["run", "scenarios/product_launch.ron", "-q", "--rate-limit-delay", "0", "--turns", "2"])
        .arg("--output-dir")
        .arg(tmp.path())
        .args(["--set", "llm.provider=simulated"])
        .args(["--set", &format!("monitoring.otlp_endpoint=http://{closed}")]);
    let done = run_within(&mut cmd, Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "{}", done.both());
    assert!(done.took < Duration::from_secs(30), "{:?}", done.took);
    // ... but it says the spans were lost, and where they were to go.
    assert!(
        done.stderr.contains("could not be sent to") && done.stderr.contains(&closed.to_string()),
        "{}",
        done.stderr
    );
    for bad in ["grpc://x:4317", "http://127.0.0.1:99999", "https://[::1", "127.0.0.1:4318"] {
        let out = troupe()
            .args(["run", "scenarios/product_launch.ron", "-q", "--no-save"])
            .args(["--set", &format!("monitoring.otlp_endpoint={bad}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("monitoring.otlp_endpoint") && err.contains("http://127.0.0.1:4318"), "{bad}: {err}");
    }
}

/// A long run traced: spans never nest per turn (a stack or memory that grows with the turns),
/// so 20,000 turns finish, every turn's span hangs from the run's, and memory stays bounded
/// (measured: about 150 MiB peak in a debug build, the same as untraced).
#[test]
fn twenty_thousand_turns_traced_stay_flat_and_bounded() {
    let _heavy = heavy();
    let rx = otlp::start();
    let mut cmd = troupe();
    cmd.args(["run", "--topic", "The town budget", "--personas", "sarah_chen", "--turns", "20000", "-q", "--no-save"])
        .args(["--rate-limit-delay", "0", "--set", "llm.provider=simulated"])
        .args(["--set", &format!("monitoring.otlp_endpoint={}", rx.endpoint)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let usage = support::cli::measure(&mut cmd);
    assert_eq!(usage.code, Some(0));
    let spans = rx.spans();
    let run: Vec<_> = spans.iter().filter(|s| s.name == "simulation").collect();
    let mut names = std::collections::BTreeMap::<&str, usize>::new();
    for s in &spans {
        *names.entry(s.name.as_str()).or_default() += 1;
    }
    assert_eq!(run.len(), 1, "spans received by name: {names:?}");
    let turns: Vec<_> = spans.iter().filter(|s| s.name == "turn").collect();
    assert!(turns.len() >= 20_000, "every turn exported: {}", turns.len());
    assert!(turns.iter().all(|t| t.parent == run[0].span_id), "a turn nested under another");
    let mib = usage.max_rss as f64 / (1024.0 * 1024.0);
    assert!(mib < 400.0, "peak RSS {mib:.0} MiB for 20,000 traced turns");
}

/// An experiment on a cluster is one trace: the coordinator's `experiment` span travels in each
/// queued run's NATS headers, and the worker's `simulation` spans hang from it (through its
/// `cluster_work` span), though they come from another process with its own service name.
#[test]
fn a_cluster_experiment_is_one_trace_across_coordinator_and_worker() {
    let _heavy = heavy();
    let Some(n) = support::nats::start() else { return };
    let rx = otlp::start();
    let tmp = tempfile::tempdir().unwrap();
    let env = |cmd: &mut std::process::Command, service: &str| {
        cmd.env("TROUPE_LLM__PROVIDER", "simulated")
            .env("TROUPE_MONITORING__OTLP_ENDPOINT", &rx.endpoint)
            .env("TROUPE_MONITORING__OTLP_SERVICE_NAME", service);
    };
    let mut w = troupe();
    w.args(["worker", "--nats", &n.url, "--name", "w1", "--max-parallel", "2", "--work-dir"])
        .arg(tmp.path().join("w1"));
    env(&mut w, "troupe-worker");
    let worker = w.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut e = troupe();
    e.args(["experiment", "scenarios/content_moderation.ron", "--variants", "baseline,creative", "--runs", "1"])
        .args(["--turns", "2", "--quiet", "--set", "performance.rate_limit_delay=0", "--cluster", &n.url])
        .arg("--output-dir")
        .arg(tmp.path().join("out"));
    env(&mut e, "troupe");
    let done = run_within(&mut e, Duration::from_secs(300));
    support::cli::terminate(worker, Duration::from_secs(30));
    assert_eq!(done.code, Some(0), "{}", done.both());
    let spans = rx.spans();
    let exp: Vec<_> = spans.iter().filter(|s| s.name == "experiment").collect();
    assert_eq!(exp.len(), 1, "{spans:#?}");
    assert_eq!(exp[0].service, "troupe");
    let runs: Vec<_> = spans.iter().filter(|s| s.name == "simulation").collect();
    assert_eq!(runs.len(), 2, "two runs made on the worker");
    for r in &runs {
        assert_eq!(r.service, "troupe-worker");
        assert_eq!(r.trace_id, exp[0].trace_id, "the worker's run is in the experiment's trace");
        let work = spans.iter().find(|s| s.span_id == r.parent).expect("the run's parent span was exported");
        assert_eq!((work.name.as_str(), work.parent.as_str()), ("cluster_work", exp[0].span_id.as_str()));
    }
}

/// A sharded run is one trace: each turn part carries its turn's trace context in NATS headers,
/// and the shard's `persona_act` and `llm_call` spans hang from the coordinator's `turn`
/// (through the shard's `shard_turn`), though another process exports them.
#[test]
fn a_sharded_run_is_one_trace_across_coordinator_and_shard() {
    let _heavy = heavy();
    let Some(n) = support::nats::start() else { return };
    let rx = otlp::start();
    let env = |cmd: &mut std::process::Command, service: &str| {
        cmd.env("TROUPE_LLM__PROVIDER", "simulated")
            .env("TROUPE_MONITORING__OTLP_ENDPOINT", &rx.endpoint)
            .env("TROUPE_MONITORING__OTLP_SERVICE_NAME", service);
    };
    let mut s = troupe();
    s.args(["shard", "--nats", &n.url, "--id", "traced"]);
    env(&mut s, "troupe-shard");
    let shard = s.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut r = troupe();
    r.args(["run", "scenarios/quickstart.ron", "-q", "--policy", "parallel", "--turns", "2", "--cluster", &n.url])
        .args(["--shards", "1", "--output-dir"])
        .arg(tmp.path());
    env(&mut r, "troupe");
    let done = run_within(&mut r, Duration::from_secs(120));
    support::cli::terminate(shard, Duration::from_secs(30));
    assert_eq!(done.code, Some(0), "{}", done.both());
    let spans = rx.spans();
    let runs: Vec<_> = spans.iter().filter(|s| s.name == "simulation" && s.service == "troupe").collect();
    assert_eq!(runs.len(), 1, "{spans:#?}");
    let turns: BTreeSet<&str> = spans.iter().filter(|s| s.name == "turn").map(|s| s.span_id.as_str()).collect();
    let parts: Vec<_> = spans.iter().filter(|s| s.name == "shard_turn").collect();
    assert!(!parts.is_empty(), "no shard_turn span exported: {spans:#?}");
    for p in &parts {
        assert_eq!(p.service, "troupe-shard");
        assert_eq!(p.trace_id, runs[0].trace_id, "the shard's part is in the run's trace");
        assert!(turns.contains(p.parent.as_str()), "a shard_turn hangs from a coordinator turn");
    }
    let acts: Vec<_> = spans.iter().filter(|s| s.name == "persona_act").collect();
    assert!(!acts.is_empty());
    assert!(acts.iter().all(|a| a.service == "troupe-shard" && a.trace_id == runs[0].trace_id), "{acts:#?}");
}
