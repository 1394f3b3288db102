//! The `troupe` command end to end (issue 2): exit codes, reports, `--json`, `personas list`,
//! `scenario check` and `config show`. Every command runs from the crate root with the user's
//! `TROUPE_*`, key and endpoint variables removed (`support::cli::troupe`), so the machine's
//! environment cannot change results.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

mod support {
    pub mod cli;
    pub mod mock_openai;
}

use support::cli::{ROOT, troupe};

const CANARY: &str = "sk-canary-4b1d7e0f9a22";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn troupe_run(args: &[&str]) -> Run {
    run(troupe().args(args))
}

fn temp_file(name: &str, text: &[u8]) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    fs::write(&p, text).unwrap();
    (dir, p)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- validate

#[test]
fn validate_shipped_data_exits_0() {
    let r = troupe_run(&["validate"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("valid:") && r.stdout.contains("0 error(s), 0 warning(s)"), "{}", r.stdout);
    let r = troupe_run(&["validate", "--personas-file", "data/agents"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("2 fragment(s)"), "{}", r.stdout);
}

#[test]
fn validate_invalid_database_exits_1_with_a_report() {
    let (_d, p) = temp_file("bad.json", b"[\n  {\"id\": \"x y\", \"name\": \"X\"}\n]\n");
    let r = troupe_run(&["validate", "--personas-file", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let loc = format!("{}:2:10", p.display());
    assert!(r.stdout.contains(&format!("error: {loc}: persona x y, field `id`")), "{}", r.stdout);
    assert!(r.stdout.contains("field `role`") && r.stdout.contains("hint:"), "{}", r.stdout);
    assert!(r.stdout.contains("INVALID") && r.stdout.contains("4 error(s), 3 warning(s)"), "{}", r.stdout);
    // --errors-only drops the warnings.
    let r = troupe_run(&["validate", "--errors-only", "--personas-file", p.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(!r.stdout.contains("warning:"), "{}", r.stdout);
}

#[test]
fn validate_unreadable_or_malformed_input_exits_2() {
    let r = troupe_run(&["validate", "--personas-file", "/nonexistent/personas.json"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("/nonexistent/personas.json"), "{}", r.stderr);

    let (dir, p) = temp_file("trunc.json", b"[\n  {\"id\": \"x\",");
    let before = names_in(dir.path());
    let r = troupe_run(&["validate", "--personas-file", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&format!("{}:2:13", p.display())), "{}", r.stderr);
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
    assert_eq!(names_in(dir.path()), before, "nothing is written next to the input");

    let (_d, p) = temp_file("dup.json", b"[{\"id\": \"a\", \"id\": \"b\"}]");
    let r = troupe_run(&["validate", "--personas-file", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("duplicate key `id`") && r.stderr.contains(":1:"), "{}", r.stderr);

    let (_d, p) = temp_file("empty.json", b"");
    let r = troupe_run(&["validate", "--personas-file", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains(&format!("{}:1:1", p.display())), "{}", r.stderr);
}

#[test]
fn validate_json_output_parses_and_has_findings() {
    let (_d, p) = temp_file("bad.json", b"[\n  {\"id\": \"x y\", \"name\": \"X\"}\n]\n");
    let r = troupe_run(&["validate", "--json", "--personas-file", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).expect("stdout is one JSON document");
    assert_eq!(v["valid"], false);
    assert_eq!(v["readable"], true);
    assert_eq!((v["errors"].as_u64(), v["warnings"].as_u64()), (Some(4), Some(3)));
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 7);
    let id = findings.iter().find(|f| f["field"] == "id").unwrap();
    assert_eq!(id["severity"], "error");
    assert_eq!(id["persona"], "x y");
    assert_eq!(id["file"], p.to_str().unwrap());
    assert_eq!(id["position"], serde_json::json!({"line": 2, "col": 10}));
    assert!(id["hint"].as_str().unwrap().contains("x_y"));

    let r = troupe_run(&["validate", "--json"]);
    assert_eq!(r.code, 0);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((v["valid"].as_bool(), v["findings"].as_array().map(Vec::len)), (Some(true), Some(0)));

    let (_d, p) = temp_file("trunc.json", b"[{");
    let r = troupe_run(&["validate", "--json", "--personas-file", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["readable"], false);
    assert!(v["error"].as_str().unwrap().contains(&format!("{}:1:", p.display())), "{v}");
}

// ---------------------------------------------------------------- personas list

#[test]
fn personas_list_filters_by_tags() {
    let r = troupe_run(&["personas", "list", "--tags", "security,CIVIC"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ids: Vec<&str> = r.stdout.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    let all =
        troupe_sim::persona::load_personas_by_tags(&Path::new(ROOT).join("data/personas.agents.json"), &[]).unwrap();
    let expected: Vec<&str> =
        all.iter().filter(|p| p.has_tag("security") || p.has_tag("civic")).map(|p| p.id.as_str()).collect();
    assert!(expected.len() >= 2);
    assert_eq!(&ids[..expected.len()], &expected[..], "{}", r.stdout);
    assert!(r.stdout.trim_end().ends_with(&format!("{} of {} persona(s)", expected.len(), all.len())), "{}", r.stdout);

    let r = troupe_run(&["personas", "list", "--json", "--tags", "ml"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let listed = v.as_array().unwrap();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|p| p["tags"].as_array().unwrap().contains(&Value::from("ml"))), "{v}");

    let r = troupe_run(&["personas", "list", "--personas-file", "data/agents"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("lisa_carter") && r.stdout.contains("3 of 3"), "{}", r.stdout);
}

// ---------------------------------------------------------------- scenario check

fn scenario(body: &str) -> (TempDir, PathBuf) {
    temp_file("panel.ron", body.as_bytes())
}

const GOOD: &str = r#"Scenario(
    name: "moderation-panel",
    description: "Evaluate AI-powered content moderation",
    world: (name: "Review board", context: "A platform weighs automated moderation.", policy: RoundRobin),
    personas: [Id("sarah_chen"), Id("aisha_okafor"), Sample(tags: ["civic"], count: 1)],
    turns: 4,
    interventions: [(turn: 2, action: Broadcast("A new regulation was announced."))],
    variants: {"hot": (config: {"llm": {"temperature": 1.2}})},
)"#;

#[test]
fn scenario_check_accepts_a_good_scenario_and_every_variant() {
    let (_d, p) = scenario(GOOD);
    let r = troupe_run(&["scenario", "check", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("3 persona(s), 4 turn(s), 1 intervention(s)"), "{}", r.stdout);
    assert!(r.stdout.contains("(variant hot)"), "{}", r.stdout);
}

#[test]
fn shipped_scenarios_check_clean() {
    let mut checked = 0;
    for e in fs::read_dir(Path::new(ROOT).join("scenarios")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ron") {
            let r = troupe_run(&["scenario", "check", p.to_str().unwrap()]);
            assert_eq!(r.code, 0, "{}: {}", p.display(), r.stderr);
            checked += 1;
        }
    }
    assert!(checked >= 4, "at least four scenarios ship");
}

#[test]
fn scenario_check_unknown_persona_id_suggests_the_near_miss() {
    let (_d, p) = scenario(&GOOD.replace("Id(\"sarah_chen\")", "Id(\"sarah_chne\")"));
    let r = troupe_run(&["scenario", "check", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&p.display().to_string()), "{}", r.stderr);
    assert!(r.stderr.contains("unknown persona id `sarah_chne`; did you mean `sarah_chen`?"), "{}", r.stderr);
}

#[test]
fn scenario_check_bad_intervention_turn_exits_2() {
    for turn in ["0", "5"] {
        let (_d, p) = scenario(&GOOD.replace("(turn: 2,", &format!("(turn: {turn},")));
        let r = troupe_run(&["scenario", "check", p.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(&format!("interventions[0]: turn {turn} is outside the run's turns 1..=4")),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn scenario_check_unknown_variant_exits_2() {
    let (_d, p) = scenario(GOOD);
    let r = troupe_run(&["scenario", "check", "--variant", "hott", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("unknown variant `hott`; did you mean `hot`?"), "{}", r.stderr);
    let r = troupe_run(&["scenario", "check", "--variant", "baseline", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown variant `baseline`") && r.stderr.contains("hot"), "{}", r.stderr);
}

#[test]
fn scenario_check_ron_parse_error_names_file_line_col() {
    // A missing comma after the personas list, line 5.
    let broken = GOOD.replace("count: 1)],", "count: 1)]");
    let (_d, p) = scenario(&broken);
    let r = troupe_run(&["scenario", "check", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&format!("{}:6:5", p.display())), "{}", r.stderr);
    // A misspelt field gets a suggestion.
    let (_d, p) = scenario(&GOOD.replace("turns: 4", "turnz: 4"));
    let r = troupe_run(&["scenario", "check", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!("{}:6:", p.display())) && r.stderr.contains("did you mean `turns`?"),
        "{}",
        r.stderr
    );
}

#[test]
fn scenario_check_reports_every_problem_at_once() {
    let bad = GOOD.replace("Id(\"sarah_chen\")", "Id(\"sarah_chne\")").replace("(turn: 2,", "(turn: 99,");
    let (_d, p) = scenario(&bad);
    let r = troupe_run(&["scenario", "check", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("2 problem(s)"), "{}", r.stderr);
}

#[test]
fn scenario_check_missing_file_exits_2() {
    let r = troupe_run(&["scenario", "check", "/nonexistent/panel.ron"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("/nonexistent/panel.ron"), "{}", r.stderr);
}

// ---------------------------------------------------------------- config show

#[test]
fn config_show_prints_sources_and_redacts_the_key() {
    let set = format!("llm.api_key={CANARY}");
    let r = run(troupe().args(["--set", &set, "--set", "llm.temperature=0.3", "config", "show"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY), "the key leaked:\n{}{}", r.stdout, r.stderr);
    let line = |key: &str| {
        r.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key}:\n{}", r.stdout))
            .to_string()
    };
    assert!(line("llm.api_key").contains("[redacted]") && line("llm.api_key").contains("# command line"));
    assert!(line("llm.temperature").contains("0.3") && line("llm.temperature").contains("# command line"));
    assert!(line("llm.model").contains("\"gpt-4o-mini\"") && line("llm.model").contains("# built-in default"));
    for section in ["[llm]", "[simulation]", "[performance]", "[monitoring]", "[output]"] {
        assert!(r.stdout.contains(section), "{section}");
    }
    assert!(r.stdout.contains("api key:"), "{}", r.stdout);

    let r = run(troupe().args(["--set", &set, "config", "show", "--json"]));
    assert_eq!(r.code, 0);
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY));
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let entries = v["entries"].as_array().unwrap();
    let key = entries.iter().find(|e| e["key"] == "llm.api_key").unwrap();
    assert_eq!((key["value"].as_str(), key["source"].as_str()), (Some("\"[redacted]\""), Some("command line")));
}

#[test]
fn set_before_and_after_the_subcommand_both_count() {
    let r = run(troupe().args([
        "--set",
        "llm.temperature=0.1",
        "config",
        "show",
        "--json",
        "--set=llm.max_tokens=99",
        "--set",
        "llm.top_p=0.5",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let value = |k: &str| {
        v["entries"].as_array().unwrap().iter().find(|e| e["key"] == k).unwrap()["value"].as_str().unwrap().to_string()
    };
    assert_eq!(value("llm.temperature"), "0.1");
    assert_eq!(value("llm.max_tokens"), "99");
    assert_eq!(value("llm.top_p"), "0.5");
    // The later of two for the same key wins.
    let r = run(troupe().args(["--set", "llm.max_tokens=1", "config", "show", "--set", "llm.max_tokens=7"]));
    assert!(r.stdout.lines().any(|l| l.trim_start().starts_with("llm.max_tokens ") && l.contains('7')), "{}", r.stdout);
}

#[test]
fn config_show_never_prints_a_key_from_the_environment() {
    let r = run(troupe()
        .env("OPENAI_API_KEY", format!("{CANARY}-env"))
        .env("TROUPE_LLM__API_KEY", format!("{CANARY}-troupe"))
        .args(["config", "show"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains(CANARY) && !r.stderr.contains(CANARY), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("found in $OPENAI_API_KEY"), "{}", r.stdout);
    assert!(r.stdout.contains("environment"), "{}", r.stdout);
}

#[test]
fn config_show_with_a_toml_file_and_env() {
    let (_d, p) = temp_file("troupe.toml", b"[simulation]\nmax_turns = 9\n");
    let r = run(troupe().env("TROUPE_LLM__MODEL", "gpt-4o").args(["--config", p.to_str().unwrap(), "config", "show"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let turns = r.stdout.lines().find(|l| l.contains("simulation.max_turns")).unwrap();
    // figment shows the path relative to the working folder.
    let dir = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
    assert!(
        turns.contains(" 9 ") && turns.contains("TOML file (") && turns.contains(&format!("{dir}/troupe.toml)")),
        "{turns}"
    );
    let model = r.stdout.lines().find(|l| l.contains("llm.model ")).unwrap();
    assert!(model.contains("gpt-4o") && model.contains("TROUPE_"), "{model}");
}

#[test]
fn config_errors_exit_2_with_did_you_mean() {
    let r = troupe_run(&["--set", "llm.modle=gpt-4o", "config", "show"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("did you mean `llm.model`?"), "{}", r.stderr);
    let (_d, p) = temp_file("troupe.toml", b"[simulation]\nmax_turns = \"six\"\n");
    let r = troupe_run(&["--config", p.to_str().unwrap(), "config", "show"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("troupe.toml") && r.stderr.contains("simulation.max_turns"), "{}", r.stderr);
    let r = troupe_run(&["--set", "oops", "config", "show"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("KEY=VALUE"), "{}", r.stderr);
}

/// `--set` reads a value as its key's type: a number-like value for a text setting stays text,
/// a whole number for a float is that number, a run seed reaches `u64::MAX`, a list is a list.
#[test]
fn set_values_are_read_as_their_keys_type() {
    let r = run(troupe().args([
        "--set",
        "llm.model=4",
        "--set",
        "simulation.topic=2030",
        "--set",
        "llm.temperature=1",
        "--set",
        "simulation.run_seed=18446744073709551615",
        "--set",
        "llm.stop=[\"###\", \"END\"]",
        "config",
        "show",
        "--json",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let entry = |k: &str| v["entries"].as_array().unwrap().iter().find(|e| e["key"] == k).unwrap().clone();
    assert_eq!(entry("llm.model")["value"], "\"4\"");
    assert_eq!(entry("simulation.topic")["value"], "\"2030\"");
    assert_eq!(entry("llm.temperature")["value"], "1.0");
    assert_eq!(entry("simulation.run_seed")["value"], "18446744073709551615");
    assert_eq!(entry("llm.stop")["value"], "[\"###\",\"END\"]");
    assert_eq!(entry("simulation.run_seed")["source"], "command line");
}

/// A `--set` value its key cannot take is refused before anything runs, naming the key, what
/// it takes and what to change.
#[test]
fn a_bad_set_value_names_the_key_the_type_and_the_fix() {
    let r = troupe_run(&["--set", "simulation.run_seed=abc", "config", "show"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    for part in [
        "simulation.run_seed",
        "a whole number from 0 to 18446744073709551615 (u64)",
        "not \"abc\"",
        "change the value after `=`, e.g. --set simulation.run_seed=42",
    ] {
        assert!(r.stderr.contains(part), "{part:?} missing from: {}", r.stderr);
    }
    let r = troupe_run(&["--set", "simulation.max_turns=2.5", "config", "show"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("`simulation.max_turns` takes a whole number from 0 to 4294967295 (u32)"),
        "{}",
        r.stderr
    );
    let r = troupe_run(&["--set", "simulation.parallel_execution=yes", "config", "show"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("takes true or false") && r.stderr.contains("e.g. --set simulation.parallel_execution=false"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------- issue 13: TinyTroupe's config.ini and Azure

use std::time::Duration;

use support::cli::{Done, run_within};
use support::mock_openai::{MockConfig, MockServer};

const AZURE_KEY: &str = "azure-canary-5c8e1f3a7b90";

/// `troupe` from the shared helper (a scrubbed environment, the crate root), run to the end.
fn shared(args: &[&str], env: &[(&str, &str)]) -> Done {
    let mut c = troupe();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run_within(&mut c, Duration::from_secs(120))
}

#[test]
fn run_prints_config_ini_warnings_with_file_line_and_near_miss() {
    let (_d, ini) = temp_file("config.ini", b"[OpenAI]\nMODEL=gpt-4o-mini\nTEMPRATURE=0.3\n");
    let ini = ini.to_str().unwrap();
    let d = shared(
        &["--config-ini", ini, "run", "--seed", "t", "--personas", "sarah_chen", "--turns", "1", "--no-save", "-q"],
        &[("TROUPE_LLM__PROVIDER", "simulated"), ("TROUPE_PERFORMANCE__RATE_LIMIT_DELAY", "0")],
    );
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert!(d.stderr.contains(&format!("{ini}:3")) && d.stderr.contains("did you mean `TEMPERATURE`?"), "{}", d.both());
}

#[test]
fn config_show_lists_unset_keys_in_text_and_json() {
    let d = shared(&["config", "show"], &[]);
    assert_eq!(d.code, Some(0), "{}", d.both());
    let line = d.stdout.lines().find(|l| l.trim_start().starts_with("llm.base_url ")).expect(&d.stdout);
    assert!(line.contains("(unset)"), "{line}");
    let d = shared(&["config", "show", "--json"], &[]);
    let v: Value = serde_json::from_str(&d.stdout).unwrap();
    let e =
        v["entries"].as_array().unwrap().iter().find(|e| e["key"] == "llm.azure_deployment").expect("listed").clone();
    assert_eq!((e["value"].as_str(), e["unset"].as_bool()), (Some("(unset)"), Some(true)), "{e}");
}

/// A one-turn run against the mock's Azure route, with `env` set; returns the run's output.
fn azure_run(ini: Option<&Path>, env: &[(&str, &str)]) -> Done {
    let mut args = Vec::new();
    if let Some(p) = ini {
        args.extend(["--config-ini", p.to_str().unwrap()]);
    }
    args.extend([
        "run",
        "--seed",
        "t",
        "--personas",
        "sarah_chen",
        "--turns",
        "1",
        "--no-save",
        "--rate-limit-delay",
        "0",
    ]);
    // Should the choice go wrong, nothing is fetched from the network.
    let mut env = env.to_vec();
    env.push(("TROUPE_LLM__LOCAL__AUTO_FETCH", "false"));
    shared(&args, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_type_azure_in_config_ini_reaches_the_azure_route_with_its_key() {
    let mock = MockServer::start(MockConfig { require_key: Some(AZURE_KEY.into()), ..MockConfig::default() }).await;
    let (_d, ini) =
        temp_file("config.ini", b"[OpenAI]\nAPI_TYPE=azure\nMODEL=gpt-4o\nAZURE_API_VERSION=2024-12-01-preview\n");
    let endpoint = mock.azure_endpoint();
    let d = azure_run(Some(&ini), &[("AZURE_OPENAI_ENDPOINT", &endpoint), ("AZURE_OPENAI_KEY", AZURE_KEY)]);
    assert_eq!(d.code, Some(0), "{}", d.both());
    let reqs = mock.requests();
    assert!(!reqs.is_empty(), "no request reached the mock: {}", d.both());
    for r in &reqs {
        assert_eq!(r.path, "/openai/deployments/gpt-4o/chat/completions", "TinyTroupe's model is the deployment");
        assert_eq!(r.header("api-key"), Some(AZURE_KEY));
        assert!(r.query.as_deref().unwrap_or("").contains("api-version=2024-12-01-preview"), "{:?}", r.query);
    }
    assert!(!d.stdout.contains(AZURE_KEY) && !d.stderr.contains(AZURE_KEY), "the key printed: {}", d.both());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_azure_from_the_environment_and_says_why() {
    let mock = MockServer::start(MockConfig { require_key: Some(AZURE_KEY.into()), ..MockConfig::default() }).await;
    let endpoint = mock.azure_endpoint();
    let env = [
        ("AZURE_OPENAI_ENDPOINT", endpoint.as_str()),
        ("AZURE_OPENAI_API_KEY", AZURE_KEY),
        ("AZURE_OPENAI_DEPLOYMENT", "team-dep"),
    ];
    let d = azure_run(None, &env);
    assert_eq!(d.code, Some(0), "{}", d.both());
    let reqs = mock.requests();
    assert!(!reqs.is_empty(), "{}", d.both());
    assert!(reqs.iter().all(|r| r.path == "/openai/deployments/team-dep/chat/completions"), "{:?}", reqs[0].path);
    assert!(reqs.iter().all(|r| r.header("api-key") == Some(AZURE_KEY)));
    assert!(
        d.stderr.contains("Azure") && d.stderr.contains("AZURE_OPENAI_ENDPOINT"),
        "a notice says why: {}",
        d.both()
    );
    assert!(!d.stderr.contains("local model") || !d.stderr.contains("no API key"), "{}", d.both());
    assert!(!d.stdout.contains(AZURE_KEY) && !d.stderr.contains(AZURE_KEY));

    // `troupe doctor` says the same and finds the key (never showing it).
    let d = shared(&["doctor", "--json"], &[&env[..], &[("TROUPE_LLM__LOCAL__AUTO_FETCH", "false")]].concat());
    assert!(!d.stdout.contains(AZURE_KEY) && !d.stderr.contains(AZURE_KEY));
    let v: Value = serde_json::from_str(&d.stdout).unwrap_or_else(|e| panic!("{e}: {}", d.both()));
    let checks = v["checks"].as_array().unwrap_or_else(|| panic!("{v}"));
    let check = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}: {v}")).clone();
    let key = check("api key");
    assert!(key["detail"].as_str().unwrap().contains("AZURE_OPENAI_API_KEY"), "{key}");
    let provider = check("provider");
    let detail = provider["detail"].as_str().unwrap();
    assert!(detail.contains("azure") && detail.contains("AZURE_OPENAI_ENDPOINT"), "{provider}");
}

// ---------------------------------------------------------------- usage

#[test]
fn help_works_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["personas", "--help"],
        vec!["personas", "list", "--help"],
        vec!["scenario", "--help"],
        vec!["scenario", "check", "--help"],
        vec!["config", "--help"],
        vec!["config", "show", "--help"],
    ] {
        let r = troupe_run(&args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(r.stdout.contains("Usage:"), "{args:?}: {}", r.stdout);
    }
}

#[test]
fn bad_usage_exits_2() {
    let r = troupe_run(&["validate", "--no-such-flag"]);
    assert_eq!(r.code, 2);
    let r = troupe_run(&["no-such-command"]);
    assert_eq!(r.code, 2);
}
