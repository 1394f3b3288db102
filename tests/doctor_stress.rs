//! `troupe doctor` and `troupe stress` end to end. Every command runs from the crate root with
//! the user's `TROUPE_*`, key and endpoint variables removed (`support::cli::troupe`), against
//! the simulated provider or a closed loopback port (no network).

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod support {
    pub mod cli;
}

use support::cli::troupe;

const CANARY: &str = "sk-canary-d0c70r5ecret77";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd.output().unwrap();
    Out {
        code: out.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

// A fast simulated provider for every check that calls it.
const FAST: [&str; 6] = [
    "--set",
    "llm.provider=simulated",
    "--set",
    "llm.simulated.latency.kind=fixed",
    "--set",
    "llm.simulated.latency.ms=5",
];

// ---------------------------------------------------------------- doctor

#[test]
fn doctor_on_the_repo_is_healthy_and_prints_every_check() {
    let r = run(troupe().arg("doctor").args(FAST));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for name in ["configuration", "personas", "output folder", "disk space", "pricing", "api key", "provider"] {
        assert!(r.stdout.lines().any(|l| l.starts_with(name)), "no `{name}` row:\n{}", r.stdout);
    }
    assert!(r.stdout.contains("command line: 3 keys"), "{}", r.stdout);
    assert!(r.stdout.contains("simulated:") && r.stdout.contains(" ms"), "{}", r.stdout);
    assert!(r.stdout.contains("healthy"), "{}", r.stdout);
    assert!(r.stdout.contains("none needed: the simulated provider runs offline"), "{}", r.stdout);
}

#[test]
fn doctor_json_lists_checks_with_status() {
    let r = run(troupe().args(["doctor", "--json"]).args(FAST));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("stdout is one JSON document");
    assert_eq!(v["healthy"], true);
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 7);
    assert!(checks.iter().all(|c| ["ok", "warn"].contains(&c["status"].as_str().unwrap())), "{v}");
}

#[test]
fn doctor_fails_on_an_unwritable_output_folder_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let out = file.join("outputs");
    let r = run(troupe().arg("doctor").args(FAST).args(["--set", &format!("output.output_dir={}", out.display())]));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let row = r.stdout.lines().find(|l| l.starts_with("output folder")).unwrap();
    assert!(row.contains("FAIL") && row.contains(&out.display().to_string()), "{row}");
    assert!(row.contains("output.output_dir"), "says what to change: {row}");
    assert!(r.stdout.contains("NOT healthy"), "{}", r.stdout);
}

#[test]
fn doctor_fails_with_exit_1_when_the_config_does_not_load() {
    let r = run(troupe().args(["doctor", "--set", "llm.temprature=0.2"]));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("did you mean `llm.temperature`"), "{}", r.stdout);
    assert!(r.stdout.contains("skip"), "{}", r.stdout);
}

#[test]
fn doctor_never_prints_a_key_given_on_the_command_line() {
    let r = run(troupe().arg("doctor").args(FAST).args(["--set", &format!("llm.api_key={CANARY}")]));
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY), "the key leaked:\n{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 0, "a warning, not a failure:\n{}{}", r.stdout, r.stderr);
    let row = r.stdout.lines().find(|l| l.starts_with("api key")).unwrap();
    assert!(row.contains("WARN") && row.contains("command line") && row.contains("least safe"), "{row}");
    let r = run(troupe().args(["doctor", "--json"]).args(FAST).args(["--set", &format!("llm.api_key={CANARY}")]));
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY));
}

#[test]
fn doctor_never_prints_a_key_from_the_environment_even_when_the_server_is_down() {
    // A real HTTP provider pointed at a closed loopback port: the provider check fails fast,
    // and neither its error nor the key row shows the key.
    let r = run(troupe().env("OPENAI_API_KEY", CANARY).args([
        "doctor",
        "--set",
        "llm.provider=openai",
        "--set",
        "llm.base_url=http://127.0.0.1:9/v1",
        "--set",
        "performance.persona_timeout=2",
    ]));
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY), "the key leaked:\n{}{}", r.stdout, r.stderr);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let key = r.stdout.lines().find(|l| l.starts_with("api key")).unwrap();
    assert!(key.contains("ok") && key.contains("environment variable OPENAI_API_KEY"), "{key}");
    let provider = r.stdout.lines().find(|l| l.starts_with("provider")).unwrap();
    assert!(provider.contains("FAIL"), "{provider}");
}

/// The `doctor --json` row named `name`: (status, detail).
fn row(stdout: &str, name: &str) -> (String, String) {
    let v: Value = serde_json::from_str(stdout).expect("stdout is one JSON document");
    let c = v["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).expect(name).clone();
    (c["status"].as_str().unwrap().to_string(), c["detail"].as_str().unwrap().to_string())
}

#[test]
fn doctor_says_a_base_url_without_a_key_is_called_without_one() {
    // `auto` with llm.base_url and no key calls that server (here a closed loopback port), so
    // the key row must not claim the run is offline; credentials in the URL never show.
    let r = run(troupe().args([
        "doctor",
        "--json",
        "--set",
        "llm.base_url=http://troupe:hunter22secret@127.0.0.1:9/v1",
        "--set",
        "performance.persona_timeout=2",
    ]));
    assert_eq!(r.code, 1, "the closed port fails the provider check:\n{}{}", r.stdout, r.stderr);
    let (status, key) = row(&r.stdout, "api key");
    assert_eq!(status, "ok", "{key}");
    assert!(
        key.contains("no key found")
            && key.contains("llm.base_url = http://127.0.0.1:9/v1 will be called without a key"),
        "{key}"
    );
    assert!(!key.contains("offline") && !key.contains("local model"), "{key}");
    assert!(!r.stdout.contains("hunter22secret"), "{}", r.stdout);
    let (status, provider) = row(&r.stdout, "provider");
    assert_eq!(status, "fail");
    assert!(provider.starts_with("openai"), "the same choice as the run's: {provider}");
}

#[test]
fn doctor_says_what_auto_runs_with_no_key_and_no_server() {
    // No key, no server, no cached local model and no fetching: a run would use the simulated
    // provider, and both rows say so.
    let models = tempfile::tempdir().unwrap();
    let r = run(troupe().args(["doctor", "--json", "--set", "llm.local.auto_fetch=false"]).args([
        "--set",
        &format!("llm.local.model_dir={}", models.path().display()),
        "--set",
        "llm.simulated.latency.ms=5",
    ]));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let (status, key) = row(&r.stdout, "api key");
    assert_eq!(status, "warn", "synthetic text is worth a warning: {key}");
    assert!(key.contains("no key and no server") && key.contains("simulated provider"), "{key}");
    assert!(key.contains("troupe model fetch") && key.contains("llm.base_url"), "says how to get real text: {key}");
    let (_, provider) = row(&r.stdout, "provider");
    assert!(provider.starts_with("simulated"), "{provider}");
}

#[test]
fn doctor_names_the_server_a_found_key_goes_to_and_never_the_key() {
    let r = run(troupe().env("OPENAI_API_KEY", CANARY).args([
        "doctor",
        "--json",
        "--set",
        "llm.base_url=http://127.0.0.1:9/v1",
        "--set",
        "performance.persona_timeout=2",
    ]));
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY), "the key leaked:\n{}{}", r.stdout, r.stderr);
    let (status, key) = row(&r.stdout, "api key");
    assert_eq!(status, "ok", "{key}");
    assert!(key.contains("OPENAI_API_KEY (sk-…redacted)") && key.contains("sent to http://127.0.0.1:9/v1"), "{key}");
}

// ---------------------------------------------------------------- stress

#[test]
fn stress_writes_json_csv_and_svg_with_one_row_per_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let r = run(troupe()
        .args(["stress", "scenarios/quickstart.ron", "--workers", "1,4", "--out", out.to_str().unwrap()])
        .args(FAST));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("best:") && r.stdout.contains("error rate under 5%"), "{}", r.stdout);
    assert!(r.stderr.contains("[1/2] 1 worker(s)") && r.stderr.contains("[2/2] 4 worker(s)"), "{}", r.stderr);

    let v: Value = serde_json::from_str(&fs::read_to_string(out.join("stress.json")).unwrap()).unwrap();
    let rows = v["settings"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["workers"].as_u64(), rows[1]["workers"].as_u64()), (Some(1), Some(4)));
    assert!(rows.iter().all(|s| s["calls"].as_u64().unwrap() >= 9 && s["calls_per_s"].as_f64().unwrap() > 0.0));
    assert!(rows.iter().all(|s| s["cost_estimated"] == true), "synthetic text: the cost is an estimate");
    assert!(v["best_workers"].is_u64(), "{v}");
    assert_eq!(v["provider"], "simulated");

    let mut csv = csv::Reader::from_path(out.join("stress.csv")).unwrap();
    let header = csv.headers().unwrap().clone();
    assert_eq!(&header[0], "workers");
    assert!(header.iter().any(|h| h == "p99_ms") && header.iter().any(|h| h == "rate_limited"));
    let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.len() == header.len()));
    assert_eq!(&records[1][0], "4");
    assert!(fs::read_to_string(out.join("stress.csv")).unwrap().contains("\r\n"), "RFC 4180 line ends");

    let svg = fs::read_to_string(out.join("stress.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let text: String = doc.descendants().filter_map(|n| n.text()).collect::<Vec<_>>().join("\n");
    for s in ["workers", "throughput (calls/s)", "p99 latency (ms)", "quickstart"] {
        assert!(text.contains(s), "the chart lacks `{s}`:\n{text}");
    }
}

#[test]
fn stress_json_goes_to_stdout_and_the_default_folder_is_under_output_dir() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(troupe()
        .args(["stress", "scenarios/quickstart.ron", "--workers", "2", "--calls", "4", "--json", "--output-dir"])
        .arg(dir.path())
        .args(FAST));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("stdout is the report");
    // 3 personas a turn: 2 turns make about 4 calls.
    assert_eq!(v["turns"], 2, "{v}");
    let id = v["id"].as_str().unwrap();
    let folder = dir.path().join("stress").join(id);
    for f in ["stress.json", "stress.csv", "stress.svg"] {
        assert!(Path::new(&folder.join(f)).exists(), "{f} missing in {}", folder.display());
    }
}

#[test]
fn stress_bad_usage_exits_2_and_says_what_to_do() {
    let r = run(troupe().args(["stress", "scenarios/quickstart.ron", "--workers", "0,2"]).args(FAST));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("positive numbers"), "{}", r.stderr);
    let r = run(troupe().args(["stress", "scenarios/quickstart.ron", "--max-workers", "3"]).args(FAST));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--workers"), "{}", r.stderr);
}
