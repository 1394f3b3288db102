//! Reliability (issue 6): the journal survives kills, `resume` reproduces the uninterrupted run
//! without paying again for recorded exchanges, `--replay` reproduces a run offline under every
//! policy, forks keep their history, faults never lose or duplicate messages, and a disk that
//! fails mid-run stops the run with a clear error and without losing the journal.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_sim::config::{FaultProfile, LatencyModel, ProviderKind, SimulationConfig, TurnPolicy};
use troupe_sim::engine::{RunOptions, RunPlan, SimulationEngine};
use troupe_sim::llm::SimulatedProvider;
use troupe_sim::persona::PersonaDatabase;
use troupe_sim::record::journal::{self, Exchange};
use troupe_sim::record::results::SimulationResults;
use troupe_sim::record::transcript::{RunEvent, StopReason};

#[allow(dead_code)]
mod support {
    pub mod cli;
    pub mod mock_openai;
}

use support::cli::{ROOT, troupe};

/// The run's folder: the one entry of `<out>/conversations`.
fn run_dir(out: &Path) -> Option<PathBuf> {
    std::fs::read_dir(out.join("conversations")).ok()?.flatten().map(|e| e.path()).find(|p| p.is_dir())
}

/// Turn, speaker and text of every message: what must be identical between runs.
fn canonical(dir: &Path) -> Vec<(u32, String, String)> {
    let r: SimulationResults =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json")).expect("results");
    r.transcript.into_iter().map(|m| (m.turn, m.speaker, m.text)).collect()
}

fn exchanges(path: &Path) -> Vec<Exchange> {
    journal::read_journal(path).map(|j| j.exchanges().cloned().collect()).unwrap_or_default()
}

const RUN_FLAGS: &[&str] = &[
    "--seed",
    "Should the city replace its bus fleet with electric buses by 2030?",
    "--personas",
    "tom_becker,lucia_moreno,james_obrien",
    "--turns",
    "8",
    "--run-seed",
    "11",
    "--rate-limit-delay",
    "0",
    "-q",
    "--set",
    "llm.provider=simulated",
    "--set",
    "llm.simulated.latency.kind=uniform",
    "--set",
    "llm.simulated.latency.min_ms=2",
    "--set",
    "llm.simulated.latency.max_ms=12",
];

#[test]
fn killed_runs_resume_to_the_uninterrupted_transcript_without_paying_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let t0 = Instant::now();
    let ok = troupe().args(["run", "--output-dir"]).arg(&full).args(RUN_FLAGS).status().unwrap();
    assert!(ok.success());
    let span = t0.elapsed();
    let expected = canonical(&run_dir(&full).unwrap());
    // The opening and one line per persona-turn, but for the odd private thought or pass.
    assert!((1 + 3 * 8 - 3..=1 + 3 * 8).contains(&expected.len()), "{}", expected.len());

    // Kill points spread over the run (process start included), 24 of them.
    let mut killed_with_history = 0;
    for i in 0..24u32 {
        let out = tmp.path().join(format!("k{i}"));
        let at = span.mul_f64(0.05 + 0.9 * i as f64 / 23.0);
        let mut child = troupe()
            .args(["run", "--output-dir"])
            .arg(&out)
            .args(RUN_FLAGS)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let Some(dir) = run_dir(&out) else { continue };
        let before = exchanges(&dir.join(journal::FILE_NAME));
        if journal::read_journal(&dir.join(journal::FILE_NAME)).is_err() {
            continue; // killed before the header reached the disk: nothing to resume
        }
        if !before.is_empty() {
            killed_with_history += 1;
        }
        let out = troupe().arg("resume").arg(&dir).arg("-q").output().unwrap();
        match out.status.code() {
            // Resumed, or the kill landed after the run finished and saved (nothing to resume).
            Some(0) => {}
            other => {
                panic!("resume at kill point {i} ({at:?}) exited {other:?}: {}", String::from_utf8_lossy(&out.stderr))
            }
        }
        assert_eq!(canonical(&dir), expected, "kill point {i} at {at:?}");
        // Every exchange recorded before the kill was answered from the journal, not the provider.
        let after = exchanges(&dir.join(journal::FILE_NAME));
        let replayed: HashSet<&str> = after.iter().filter(|x| x.replayed).map(|x| x.key.as_str()).collect();
        if dir.join("journal.1.jsonl").exists() {
            for x in &before {
                assert!(replayed.contains(x.key.as_str()), "kill point {i}: exchange {} was requested again", x.key);
            }
        }
    }
    assert!(killed_with_history >= 20, "only {killed_with_history} kill points had recorded exchanges");
}

fn db() -> PersonaDatabase {
    PersonaDatabase::load(&Path::new(ROOT).join("data/personas.agents.json")).unwrap()
}

fn plan(ids: &[&str]) -> RunPlan {
    let d = db();
    let personas = ids.iter().map(|id| d.get(id).unwrap().clone()).collect();
    RunPlan::ad_hoc("Should the library open on Sundays?", personas)
}

/// The configuration "now", for runs made from a journal: it supplies what reaches outside.
fn cfg_now() -> SimulationConfig {
    config(TurnPolicy::RoundRobin, 1)
}

fn config(policy: TurnPolicy, turns: u32) -> SimulationConfig {
    let mut c = SimulationConfig::default();
    c.simulation.turn_policy = Some(policy);
    c.simulation.max_turns = turns;
    c.simulation.run_seed = 3;
    c.performance.rate_limit_delay = 0.0;
    c.performance.max_workers = 4;
    c.performance.batch_size = 4;
    c.llm.pricing_file = Path::new(ROOT).join("config/pricing.toml");
    c.llm.provider = ProviderKind::Simulated;
    c
}

async fn run_saved(cfg: SimulationConfig, plan: RunPlan, out: &Path) -> SimulationResults {
    let provider = Arc::new(SimulatedProvider::new(cfg.llm.simulated.clone()));
    let engine = SimulationEngine::with_provider(cfg, provider);
    engine.run(plan, RunOptions { save_under: Some(out.to_path_buf()), ..Default::default() }).await.unwrap()
}

fn canon(r: &SimulationResults) -> Vec<(u32, String, String)> {
    r.transcript.iter().map(|m| (m.turn, m.speaker.clone(), m.text.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reproduces_the_transcript_under_every_policy_whatever_the_completion_order() {
    for policy in [TurnPolicy::RoundRobin, TurnPolicy::Parallel, TurnPolicy::RandomOrder] {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(policy, 4);
        // Jittered latency so calls complete in a different order from the order they started.
        cfg.llm.simulated.latency = LatencyModel::uniform(0.0, 15.0);
        let original =
            run_saved(cfg, plan(&["sarah_chen", "marcus_rivera", "aisha_okafor", "david_kim"]), tmp.path()).await;
        let dir = original.run_dir.clone().unwrap();
        let t0 = Instant::now();
        let replayed = troupe_sim::engine::resume::replay(&dir, &cfg_now(), RunOptions::default())
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert!(replayed.success, "{policy:?}: {:?}", replayed.error);
        assert_eq!(canon(&replayed), canon(&original), "{policy:?}");
        assert!(replayed.synthetic);
        // Offline and at full speed: no latency is replayed.
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}

/// A journal records each exchange's purpose as the lowercase word it always held ("act",
/// "summary", ...), so journals written when the purpose was a plain string still load, each
/// word as its typed purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journals_keep_purposes_as_words_and_old_journals_load() {
    use troupe_sim::llm::Purpose;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(TurnPolicy::RoundRobin, 3);
    cfg.simulation.consolidate_every = 1;
    let r = run_saved(cfg, plan(&["sarah_chen", "marcus_rivera"]), tmp.path()).await;
    let path = r.run_dir.unwrap().join(journal::FILE_NAME);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""purpose":"act""#) && text.contains(r#""purpose":"summary""#), "{text}");
    let count = |j: &journal::Journal, p: Purpose| j.exchanges().filter(|e| e.purpose == p).count();
    let recorded = journal::read_journal(&path).unwrap();
    let (acts, summaries) = (count(&recorded, Purpose::Act), count(&recorded, Purpose::Summary));
    assert!(acts >= 6 && summaries > 0, "{acts} acts, {summaries} summaries");
    // Every word an older troupe wrote.
    for (word, purpose) in [
        ("act", Purpose::Act),
        ("summary", Purpose::Summary),
        ("extract", Purpose::Extract),
        ("generate", Purpose::Generate),
        ("health", Purpose::Health),
        ("interview", Purpose::Interview),
        ("judge", Purpose::Judge),
    ] {
        let old = text.replace(r#""purpose":"act""#, &format!(r#""purpose":"{word}""#));
        let j = journal::parse_journal(&path, old.as_bytes()).unwrap_or_else(|e| panic!("{word}: {e}"));
        let want = if purpose == Purpose::Summary { acts + summaries } else { acts };
        assert_eq!(count(&j, purpose), want, "{word}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_diverges_stops_and_names_the_persona_and_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let original =
        run_saved(config(TurnPolicy::RoundRobin, 2), plan(&["sarah_chen", "marcus_rivera"]), tmp.path()).await;
    let dir = original.run_dir.unwrap();
    // Damage the recording: drop the last exchange.
    let path = dir.join(journal::FILE_NAME);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let last_exchange = lines.iter().rposition(|l| l.contains("\"event\":\"exchange\"")).unwrap();
    lines.remove(last_exchange);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let r = troupe_sim::engine::resume::replay(&dir, &cfg_now(), RunOptions::default())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(!r.success);
    let e = r.error.unwrap();
    assert!(e.contains("replay miss") && e.contains("turn 2"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_keeps_its_history_and_changes_its_future() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = ["sarah_chen", "james_obrien", "priya_sharma"];
    let original = run_saved(config(TurnPolicy::RoundRobin, 5), plan(&ids), tmp.path()).await;
    let dir = original.run_dir.clone().unwrap();
    let mut next = plan(&ids);
    next.context = "Breaking: the council cut the library budget by 20%.".into();
    let mut cfg = config(TurnPolicy::RoundRobin, 5);
    cfg.llm.temperature = 1.3;
    let forked = troupe_sim::engine::resume::fork(
        &dir,
        2,
        next,
        cfg,
        RunOptions { save_under: Some(tmp.path().join("f")), ..Default::default() },
    )
    .await
    .unwrap()
    .wait()
    .await
    .unwrap();
    assert!(forked.success, "{:?}", forked.error);
    let (a, b) = (canon(&original), canon(&forked));
    let upto = |t: &[(u32, String, String)], last: u32| t.iter().filter(|m| m.0 <= last).cloned().collect::<Vec<_>>();
    let after =
        |t: &[(u32, String, String)], first: u32| t.iter().filter(|m| m.0 >= first).cloned().collect::<Vec<_>>();
    assert_eq!(upto(&a, 2), upto(&b, 2), "the first two turns are the recording's");
    assert_ne!(after(&a, 3), after(&b, 3), "the future differs");
    // The history was not paid for again.
    let j = journal::read_journal(&forked.run_dir.unwrap().join(journal::FILE_NAME)).unwrap();
    let replayed = j.exchanges().filter(|x| x.replayed).count();
    let history_calls = original.transcript.iter().filter(|m| (1..=2).contains(&m.turn)).count()
        + original.passes.iter().filter(|p| p.0 <= 2).count()
        + original.thoughts.iter().filter(|p| p.0 <= 2).count();
    assert_eq!(replayed, history_calls);
}

#[tokio::test(start_paused = true)]
async fn faults_never_lose_or_duplicate_a_message_and_counters_add_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(TurnPolicy::Parallel, 6);
    cfg.llm.simulated.latency = LatencyModel::log_normal(50.0, 400.0);
    cfg.llm.simulated.faults = FaultProfile {
        rate_limited: 0.20,
        retry_after_secs: 0.5,
        server_error: 0.05,
        timeout: 0.02,
        malformed: 0.02,
        empty: 0.0,
    };
    cfg.performance.persona_timeout = 2.0;
    cfg.performance.backoff_base = 0.2;
    let ids = ["sarah_chen", "marcus_rivera", "aisha_okafor", "david_kim", "elena_petrova"];
    let r = run_saved(cfg, plan(&ids), tmp.path()).await;
    assert!(r.success, "{:?}", r.error);
    // Every (turn, persona) is a message, a pass, a thought or a skip with its reason, once.
    let mut seen: HashMap<(u32, String), usize> = HashMap::new();
    for m in r.transcript.iter().filter(|m| m.turn > 0) {
        *seen.entry((m.turn, m.speaker_id.clone())).or_default() += 1;
    }
    for (t, p) in &r.passes {
        *seen.entry((*t, p.clone())).or_default() += 1;
    }
    for (t, p, _) in &r.thoughts {
        *seen.entry((*t, p.clone())).or_default() += 1;
    }
    for s in &r.skipped {
        assert!(!s.reason.is_empty());
        *seen.entry((s.turn, s.persona.clone())).or_default() += 1;
    }
    for t in 1..=6 {
        for id in ids {
            assert_eq!(seen.get(&(t, id.to_string())), Some(&1), "turn {t}, {id}");
        }
    }
    let seqs: Vec<u64> = r.transcript.iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "no duplicate or reordered message");
    let m = &r.full_metrics;
    assert!(m.counts.errors > 0, "the fault profile produced no failure");
    assert_eq!(m.counts.api_calls, m.successful_calls + m.counts.errors);
    assert_eq!(m.errors_by_kind.values().sum::<u64>(), m.counts.errors);
    assert_eq!(m.successful_calls, (r.transcript.len() - 1 + r.passes.len() + r.thoughts.len()) as u64);
    // The journal holds one exchange per successful call, and every retry.
    let j = journal::read_journal(&r.run_dir.unwrap().join(journal::FILE_NAME)).unwrap();
    assert_eq!(j.exchanges().count() as u64, m.successful_calls);
    let retries = j.records.iter().filter(|e| matches!(e, RunEvent::Retry { .. })).count() as u64;
    assert_eq!(retries, m.counts.retries);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_run_with_a_clear_error_and_keeps_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(TurnPolicy::RoundRobin, 3);
    // Slow enough that the run is still going when the first write fails.
    cfg.llm.simulated.latency = LatencyModel::fixed(30.0);
    let provider = Arc::new(SimulatedProvider::new(cfg.llm.simulated.clone()));
    let engine = SimulationEngine::with_provider(cfg, provider);
    // The transcript's file is a disk with no space left (/dev/full); the journal is fine.
    let dir = tmp.path().join("full-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let transcript = dir.join("transcript.jsonl");
    std::os::unix::fs::symlink("/dev/full", &transcript).unwrap();
    let opts = RunOptions {
        save_under: Some(tmp.path().to_path_buf()),
        run_id: Some("full-disk".into()),
        ..Default::default()
    };
    let r = engine.run(plan(&["sarah_chen", "marcus_rivera"]), opts).await.unwrap();
    assert!(!r.success);
    assert!(matches!(r.stop_reason, StopReason::Failed(_)), "{:?}", r.stop_reason);
    let e = r.error.unwrap();
    assert!(e.contains("could not write"), "{e}");
    // Nothing journaled is lost: the journal reads back, with the opening the transcript could
    // not take, and it ends with the failure.
    let j = journal::read_journal(&dir.join(journal::FILE_NAME)).unwrap();
    assert!(j.messages().count() >= 1);
    assert!(matches!(j.end().map(|e| &e.reason), Some(StopReason::Failed(_))));
    // results.json still says what happened.
    let saved: SimulationResults = serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    assert!(!saved.success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_from_a_real_http_server_never_lose_or_duplicate_a_message() {
    use support::mock_openai::{MockConfig, MockFaults, MockServer};
    use troupe_sim::llm::openai::{OpenAiOptions, OpenAiProvider};
    let mock = MockServer::start(MockConfig {
        error_rate: 0.05,
        faults: MockFaults { rate_limited: 0.20, hang: 0.02, malformed: 0.02 },
        ..MockConfig::default()
    })
    .await;
    let mut cfg = config(TurnPolicy::Parallel, 8);
    cfg.llm.provider = ProviderKind::OpenAi;
    cfg.performance.persona_timeout = 0.3;
    cfg.performance.backoff_base = 0.01;
    cfg.performance.backoff_max = 0.05;
    let provider = Arc::new(OpenAiProvider::new(OpenAiOptions::new(mock.base_url(), None)).unwrap());
    let engine = SimulationEngine::with_provider(cfg, provider);
    let tmp = tempfile::tempdir().unwrap();
    let ids = ["sarah_chen", "marcus_rivera", "aisha_okafor", "david_kim"];
    let r = engine
        .run(plan(&ids), RunOptions { save_under: Some(tmp.path().to_path_buf()), ..Default::default() })
        .await
        .unwrap();
    assert!(r.success, "{:?}", r.error);
    let m = &r.full_metrics;
    assert!(mock.rate_limited() > 0, "the fault profile did not fire");
    assert_eq!(m.errors_by_kind.get("rate_limited").copied().unwrap_or(0) as usize, mock.rate_limited());
    assert_eq!(m.errors_by_kind.get("server").copied().unwrap_or(0) as usize, mock.server_errors());
    // Every (turn, persona) accounted for exactly once; the server saw every attempt.
    for t in 1..=8 {
        for id in ids {
            let n = r.transcript.iter().filter(|e| e.turn == t && e.speaker_id == id).count()
                + r.skipped.iter().filter(|s| s.turn == t && s.persona == id).count()
                + r.passes.iter().filter(|p| p.0 == t && p.1 == id).count()
                + r.thoughts.iter().filter(|p| p.0 == t && p.1 == id).count();
            assert_eq!(n, 1, "turn {t}, {id}");
        }
    }
    assert_eq!(m.counts.api_calls, m.successful_calls + m.counts.errors);
    assert_eq!(m.errors_by_kind.values().sum::<u64>(), m.counts.errors);
    assert_eq!(m.counts.api_calls as usize, mock.request_count());
    let seqs: Vec<u64> = r.transcript.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}
