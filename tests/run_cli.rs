//! `troupe run` end to end (issue 3): the saved `results.json`, `transcript.jsonl` and
//! `metrics.json` have the documented shape, the scenario-less form works, and an unknown
//! persona id is a usage error with a suggestion. Every command runs from the crate root with
//! the provider-related variables removed (`support::cli::troupe`), and writes into a temporary
//! folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support {
    pub mod cli;
}

use support::cli::troupe;

/// The one run folder under `<out>/conversations/`.
fn run_dir(out: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = fs::read_dir(out.join("conversations")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok_and(|t| t.offset().local_minus_utc() == 0)
    })
}

/// Checks `results.json` field by field against the documented shape, and the two files
/// beside it; `wall` is the time measured around the whole process. Returns the transcript
/// length.
fn check_run_folder(dir: &Path, turns: u64, agents: &[&str], wall: Duration) -> usize {
    let r = read_json(&dir.join("results.json"));
    assert_eq!(r["success"], Value::Bool(true), "{r:#}");

    let transcript = r["transcript"].as_array().expect("transcript is an array");
    assert!(transcript.len() > agents.len(), "an opening and replies: {}", transcript.len());
    for e in transcript {
        assert!(e["turn"].is_u64(), "{e}");
        assert!(e["speaker"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
        assert!(e["role"].is_string(), "{e}");
        assert!(e["text"].as_str().is_some_and(|s| !s.trim().is_empty()), "{e}");
        assert!(is_rfc3339_utc(&e["timestamp"]), "timestamp is RFC 3339 UTC: {e}");
    }
    let max_turn = transcript.iter().map(|e| e["turn"].as_u64().unwrap()).max().unwrap();
    assert_eq!(max_turn, turns);

    let names: Vec<&str> = r["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, agents);
    assert!(r["agents"].as_array().unwrap().iter().all(|a| a["role"].as_str().is_some_and(|s| !s.is_empty())));

    let m = &r["metrics"];
    for k in ["duration", "total_messages", "total_tokens", "api_calls", "errors", "average_response_time"] {
        assert!(m[k].is_number(), "metrics.{k} is a number: {m}");
    }
    assert_eq!(m["total_messages"].as_u64().unwrap() as usize, transcript.len());
    assert!(m["api_calls"].as_u64().unwrap() >= turns * agents.len() as u64);
    assert!(m["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(m["errors"], 0);
    // The run took time, less than the process that ran it; no reply took longer than the run.
    let duration = m["duration"].as_f64().unwrap();
    assert!(duration > 0.0 && duration < wall.as_secs_f64(), "duration {duration} s, process {wall:?}");
    let mean = m["average_response_time"].as_f64().unwrap();
    assert!((0.0..=duration).contains(&mean), "average_response_time {mean} s, duration {duration} s");

    let c = &r["config"];
    assert!(c["model"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    assert!(c["temperature"].is_number(), "{c}");
    assert_eq!(c["turns"].as_u64(), Some(turns));
    assert_eq!(r["synthetic"], true, "the simulated provider's text is marked synthetic");

    let lines: Vec<Value> = fs::read_to_string(dir.join("transcript.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(&lines, transcript, "transcript.jsonl holds one line per message");

    let metrics = read_json(&dir.join("metrics.json"));
    for k in [
        "api_calls",
        "successful_calls",
        "errors",
        "retries",
        "timeouts",
        "fallbacks",
        "skipped_turns",
        "restarts",
        "messages",
    ] {
        assert!(metrics[k].is_u64(), "metrics.json {k}: {metrics}");
    }
    for k in ["llm_latency", "persona_response", "turn_duration", "mailbox_delay", "queue_wait"] {
        for p in ["p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"] {
            assert!(metrics[k][p].is_number(), "metrics.json {k}.{p}: {metrics}");
        }
    }
    assert_eq!(metrics["api_calls"], m["api_calls"]);
    assert!(metrics["llm_latency"]["count"].as_u64().unwrap() > 0);
    transcript.len()
}

#[test]
fn run_quickstart_saves_results_in_the_documented_shape() {
    let out = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let o = troupe()
        .args(["run", "scenarios/quickstart.ron", "--quiet", "--output-dir"])
        .arg(out.path())
        .args(["--set", "llm.provider=\"simulated\""])
        .output()
        .unwrap();
    let wall = t0.elapsed();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let dir = run_dir(out.path());
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("quickstart-") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{name}"
    );
    check_run_folder(&dir, 3, &["Marcus Rivera", "Raj Patel", "Hannah Wright"], wall);
    assert!(stderr.contains("synthetic"), "the user is told the text is synthetic: {stderr}");
}

#[test]
fn run_without_a_scenario_takes_seed_turns_and_personas() {
    let out = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let o = troupe()
        .args([
            "run",
            "--seed",
            "Evaluate AI-powered content moderation",
            "--turns",
            "2",
            "--personas",
            "sarah_chen,marcus_rivera",
        ])
        // Pinned to the simulated provider: offline, fast and deterministic whatever `auto` picks.
        .args(["--set", "performance.rate_limit_delay=0", "--set", "llm.provider=simulated", "--quiet", "--output-dir"])
        .arg(out.path())
        .output()
        .unwrap();
    let wall = t0.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = run_dir(out.path());
    assert!(dir.file_name().unwrap().to_str().unwrap().starts_with("ad_hoc-"));
    check_run_folder(&dir, 2, &["Dr. Sarah Chen", "Marcus Rivera"], wall);
    let r = read_json(&dir.join("results.json"));
    assert_eq!(r["topic"], "Evaluate AI-powered content moderation");
    assert_eq!(r["transcript"][0]["text"], "Evaluate AI-powered content moderation", "the topic opens the run");
}

/// A run seed is a `u64` from flag to results: `u64::MAX` is taken by `--run-seed` and by
/// `--set`, and recorded as given (it used to be read back as a float and refused).
#[test]
fn the_largest_run_seed_is_taken_by_run_seed_and_by_set() {
    for how in [["--run-seed", "18446744073709551615"], ["--set", "simulation.run_seed=18446744073709551615"]] {
        let out = tempfile::tempdir().unwrap();
        let o = troupe()
            .args(["run", "--seed", "Should the library open on Sundays?", "--turns", "1"])
            .args(["--personas", "sarah_chen,marcus_rivera", "--rate-limit-delay", "0", "--quiet"])
            .args(["--set", "llm.provider=simulated"])
            .args(how)
            .arg("--output-dir")
            .arg(out.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{how:?}: {}", String::from_utf8_lossy(&o.stderr));
        let r = read_json(&run_dir(out.path()).join("results.json"));
        assert_eq!(r["config"]["run_seed"].as_u64(), Some(u64::MAX), "{how:?}");
    }
}

/// Runs `troupe run` with the simulated provider and returns the exit code, stderr and (on
/// success) the saved results.
fn run_simulated(args: &[&str]) -> (Option<i32>, String, Option<Value>) {
    let out = tempfile::tempdir().unwrap();
    let o = troupe()
        .arg("run")
        .args(args)
        .args(["--turns", "1", "--rate-limit-delay", "0", "--quiet", "--set", "llm.provider=simulated"])
        .arg("--output-dir")
        .arg(out.path())
        .output()
        .unwrap();
    let results = o.status.success().then(|| read_json(&run_dir(out.path()).join("results.json")));
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned(), results)
}

/// `--topic` names the discussion topic; `--seed`, the replaced engine's name, still works and
/// `--help` says so; both with different topics is a usage error naming both.
#[test]
fn topic_by_topic_or_by_its_old_name_seed_on_the_command_line() {
    const PERSONAS: [&str; 2] = ["--personas", "sarah_chen,marcus_rivera"];
    for flag in ["--topic", "--seed"] {
        let (code, err, r) = run_simulated(&[&[flag, "Should the pool open at six?"][..], &PERSONAS].concat());
        assert_eq!(code, Some(0), "{flag}: {err}");
        assert_eq!(r.unwrap()["topic"], "Should the pool open at six?", "{flag}");
    }
    let (code, _, r) = run_simulated(&[&["--topic", "Same", "--seed", "Same"][..], &PERSONAS].concat());
    assert_eq!((code, r.unwrap()["topic"].as_str()), (Some(0), Some("Same")));
    let (code, err, _) = run_simulated(&[&["--topic", "One", "--seed", "Another"][..], &PERSONAS].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--topic") && err.contains("--seed"), "{err}");
    let help = troupe().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--topic <TOPIC>") && help.contains("Old name of --topic"), "{help}");
}

/// A scenario file gives the topic as `topic:` or, as the replaced engine's files do, `seed:`
/// (in a variant too); both with different values is an error naming both.
#[test]
fn topic_by_topic_or_by_its_old_name_seed_in_a_scenario_file() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = |name: &str, fields: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "Scenario(name: \"t\", personas: [Id(\"sarah_chen\"), Id(\"marcus_rivera\")], {fields} variants: {{\"later\": (seed: \"Variant topic\")}})"
            ),
        )
        .unwrap();
        p.to_string_lossy().into_owned()
    };
    for (name, field) in [("new.ron", "topic"), ("old.ron", "seed")] {
        let path = scenario(name, &format!("{field}: \"Should the pool open at six?\","));
        let (code, err, r) = run_simulated(&[&path]);
        assert_eq!(code, Some(0), "{field}: {err}");
        assert_eq!(r.unwrap()["topic"], "Should the pool open at six?", "{field}");
        let (code, err, r) = run_simulated(&[&path, "--variant", "later"]);
        assert_eq!(code, Some(0), "{field}: {err}");
        assert_eq!(r.unwrap()["topic"], "Variant topic", "{field}");
    }
    let path = scenario("both.ron", "topic: \"One\", seed: \"Another\",");
    let (code, err, _) = run_simulated(&[&path]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("both.ron") && err.contains("`topic`") && err.contains("`seed`"), "{err}");
}

#[test]
fn run_with_an_unknown_persona_exits_2_with_a_suggestion() {
    let out = tempfile::tempdir().unwrap();
    let o = troupe()
        .args([
            "run",
            "--seed",
            "x",
            "--turns",
            "2",
            "--personas",
            "sarah_chen,marcus_rivra",
            "--quiet",
            "--output-dir",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown persona id `marcus_rivra`") && stderr.contains("did you mean `marcus_rivera`?"),
        "{stderr}"
    );
    assert!(!out.path().join("conversations").exists(), "nothing is written for a bad command");
}

/// A scenario that brings its own personas (`File(...)`, inline) runs from any folder: the
/// default persona database (`data/personas.agents.json`, relative to the current folder) is
/// read only when the scenario names personas of it. When it does and the database is missing,
/// the error names the scenario, the setting and how to point it elsewhere.
#[test]
fn a_scenario_with_its_own_personas_runs_from_any_folder() {
    let elsewhere = tempfile::tempdir().unwrap();
    let scen = tempfile::tempdir().unwrap();
    for f in ["lisa_carter.agent.json", "mei_tanaka.agent.json"] {
        fs::copy(Path::new(support::cli::ROOT).join("data/agents").join(f), scen.path().join(f)).unwrap();
    }
    let own = scen.path().join("own.ron");
    fs::write(
        &own,
        r#"Scenario(name: "own", topic: "Should the library open on Sundays?", turns: 1,
            personas: [File("lisa_carter.agent.json"), File("mei_tanaka.agent.json"),
                       Inline({"id": "ana", "name": "Ana", "role": "librarian", "description": "Runs the branch library.",
                               "personality": {"traits": ["calm"], "goals": ["keep it open"], "style": "plain"}})],
            variants: {"more": (add_personas: [Inline({"id": "bo", "name": "Bo", "role": "student", "description": "Studies there at weekends.",
                               "personality": {"traits": ["busy"], "goals": ["a quiet desk"], "style": "short"}})])})"#,
    )
    .unwrap();
    let from_db = scen.path().join("from_db.ron");
    fs::write(&from_db, r#"Scenario(name: "db", topic: "Sundays?", turns: 1, personas: [Id("sarah_chen")])"#).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        support::cli::troupe_in(elsewhere.path())
            .args(args)
            .args(["--set", "llm.provider=simulated", "--quiet"])
            .output()
            .unwrap()
    };
    let o = run(&["run".as_ref(), own.as_os_str(), "--output-dir".as_ref(), out.path().as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results = read_json(&run_dir(out.path()).join("results.json"));
    let ids: Vec<&str> = results["agents"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let o = support::cli::troupe_in(elsewhere.path()).args(["scenario", "check"]).arg(&own).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[
        "experiment".as_ref(),
        own.as_os_str(),
        "--variants".as_ref(),
        "baseline,more".as_ref(),
        "--runs".as_ref(),
        "1".as_ref(),
        "--output-dir".as_ref(),
        out.path().as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = run(&["run".as_ref(), from_db.as_os_str(), "--output-dir".as_ref(), out.path().as_os_str()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("from_db.ron")
            && err.contains("simulation.personas_file = data/personas.agents.json")
            && err.contains("--set simulation.personas_file="),
        "{err}"
    );
}
