//! Persona fidelity (issue 13, section 1): every fact a persona file holds reaches the model.
//! TinyTroupe-shaped agents (loose strings, lists, maps of lists, nested objects, numbers),
//! fragments merged into them, and a native persona with fields the schema does not know run
//! through the `troupe` binary against a loopback server that records every request; each leaf
//! of each persona must be in that persona's system prompt, or listed as left out for the budget
//! in `results.json`. Both prompt styles.

mod support {
    pub mod cli;
    pub mod mock_openai;
}

use std::time::Duration;

use serde_json::{Value, json};
use support::cli::{run_dirs, run_within, troupe};
use support::mock_openai::{MockConfig, MockServer};

fn port_director() -> Value {
    json!({"type": "TinyPerson", "persona": {
        "name": "Tomas Ferreira", "age": 52, "gender": "Male", "nationality": "Portuguese",
        "residence": "Porto, Portugal",
        "education": ["Civil engineering, University of Porto", "MBA, evening programme"],
        "occupation": {"title": "Port logistics director", "organization": "Leixoes Container Terminal",
                       "description": ["Runs crane scheduling for three berths.", "Negotiates with two unions."]},
        "long_term_goals": "Retire the diesel straddle carriers before 2030.",
        "style": "Blunt, numbers first,\n short sentences.",
        "personality": {"traits": ["stubborn", "fair to a fault"],
                        "big_five": {"openness": "Low. Distrusts fashions.", "neuroticism": "Medium."}},
        "preferences": {"interests": ["sailing", "port history"], "likes": "grilled sardines",
                        "dislikes": ["vendor slide decks"]},
        "skills": "Reads a berth plan faster than anyone in the building.",
        "beliefs": ["Automation should follow safety, not precede it."],
        "behaviors": {"meetings": ["arrives ten minutes early", "asks for the cost per container move"],
                      "under_pressure": "gets quieter, not louder"},
        "relationships": [{"name": "Rui", "description": "the union representative he trusts"},
                          {"name": "Ines", "relation": "daughter", "note": "studies marine biology in Aveiro"}],
        "health": "A bad knee from amateur football.",
        "other_facts": ["Keeps a logbook of every ship since 1998.", {"hobby": "restores a 1970s Vespa"}],
        "pet_peeves": {"email": ["reply-all chains"], "meetings": {"long": "anything over 45 minutes"}}
    }})
}

fn nurse() -> Value {
    json!({"type": "TinyPerson", "persona": {
        "name": "Aiyana Redcloud", "age": "mid-thirties", "occupation": "Night charge nurse",
        "long_term_goals": ["Fewer pointless pages at 3 a.m.", "A second nurse on weekend nights"],
        "style": "Calm, concrete, tells stories from real shifts.",
        "personality": ["patient", "protective of new nurses"],
        "routines": {"night": ["handover at 19:00", "medication round at 22:00"]},
        "union_member": true, "shifts_per_month": 14
    }})
}

fn native() -> Value {
    json!({"type": "TinyPerson", "id": "hal_okoro", "name": "Hal Okoro", "role": "Hospital CFO",
        "description": "Twenty years in hospital finance; came from an insurer.",
        "personality": {"traits": ["cautious"], "goals": ["Keep the capital budget flat"],
                        "style": "Formal, asks for the payback period.",
                        "communication": "structured", "decisions": "data-driven", "approach": "systematic",
                        "humour": "dry, rarely shown"},
        "temperature": 0.4, "tags": ["finance"],
        "board_seats": ["Regional blood bank", "A nursing school"],
        "pet_projects": {"2025": ["solar car park"], "stalled": {"reason": "planning permission"}}})
}

fn fragment_debater() -> Value {
    json!({"type": "Fragment", "persona": {
        "beliefs": ["Every claim needs a source.", "Silence is not agreement."],
        "behaviors": {"debate": ["interrupts politely", "summarises the other side before answering"]},
        "preferences": {"likes": ["a written agenda"]}
    }})
}

fn fragment_parent() -> Value {
    json!({"type": "Fragment", "persona": {
        "personality": {"traits": ["protective parent"]},
        "other_facts": ["Coaches an under-11 football team on Saturdays."],
        "family": {"children": [{"name": "Leo", "age": 9}], "partner": "works nights too"}
    }})
}

/// Every leaf of `v` as (dotted path, text), `skip` keys left out at the top.
fn leaves(v: &Value, path: &str, skip: &[&str], out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if path.is_empty() && skip.contains(&k.as_str()) {
                    continue;
                }
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                leaves(x, &p, &[], out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                leaves(x, &format!("{path}.{i}"), &[], out);
            }
        }
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Null => {}
        other => out.push((path.to_string(), other.to_string())),
    }
}

fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A persona's facts as the test expects them: the agent's `persona` object with the fragments
/// deep-merged (lists append, maps merge), or a native persona without its settings.
fn expected_leaves(p: &Value, fragments: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if p.get("persona").is_some() {
        let mut merged = p["persona"].clone();
        for f in fragments {
            troupe_sim::persona::tinytroupe::deep_merge(&mut merged, &f["persona"]);
        }
        leaves(&merged, "", &[], &mut out);
    } else {
        leaves(p, "", &["type", "id", "temperature", "tags", "model", "prompting", "validation_rules"], &mut out);
    }
    out
}

struct Setup {
    _tmp: tempfile::TempDir,
    scenario: std::path::PathBuf,
    out: std::path::PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let write = |name: &str, v: &Value| std::fs::write(dir.join(name), serde_json::to_vec_pretty(v).unwrap()).unwrap();
    write("tomas.agent.json", &port_director());
    write("aiyana.agent.json", &nurse());
    write("hal.json", &json!([native()]));
    write("debater.fragment.json", &fragment_debater());
    write("parent.fragment.json", &fragment_parent());
    let d = dir.display();
    let scenario = format!(
        r#"Scenario(
    name: "fidelity",
    world: (name: "Harbour hospital board", context: "A night-shift staffing decision.", policy: RoundRobin),
    personas: [File("{d}/tomas.agent.json"), File("{d}/aiyana.agent.json"), File("{d}/hal.json")],
    fragments: [
        (file: "{d}/debater.fragment.json", apply_to: ["tomas_ferreira"]),
        (file: "{d}/parent.fragment.json", apply_to: ["aiyana_redcloud", "tomas_ferreira"]),
    ],
    seed: "Should the hospital fund a second night nurse?",
    turns: 1,
    config: {{"performance": {{"rate_limit_delay": 0.0}}}},
)"#
    );
    std::fs::write(dir.join("fidelity.ron"), scenario).unwrap();
    Setup { scenario: dir.join("fidelity.ron"), out: dir.join("out"), _tmp: tmp }
}

/// Runs the scenario against the mock and returns (system prompt per persona name, results).
fn run(s: &Setup, mock: &MockServer, style: &str, extra: &[&str]) -> (Vec<(String, String)>, Value) {
    let before = mock.request_count();
    let mut c = troupe();
    c.arg("run")
        .arg(&s.scenario)
        .args(["-q", "--set", "llm.provider=openai", "--set", &format!("llm.base_url={}", mock.base_url())])
        .args(["--set", &format!("llm.prompt_style={style}"), "--output-dir"])
        .arg(&s.out)
        .args(extra);
    let d = run_within(&mut c, Duration::from_secs(120));
    assert_eq!(d.code, Some(0), "{}", d.both());
    let systems = mock.requests()[before..]
        .iter()
        .map(|r| {
            let sys = r.body["messages"][0]["content"].as_str().unwrap().to_string();
            let who = sys.lines().nth(1).unwrap().trim_start_matches("You are ").split(',').next().unwrap().to_string();
            (who, sys)
        })
        .collect();
    let dir = run_dirs(&s.out).into_iter().last().unwrap();
    let results: Value = serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (systems, results)
}

fn personas() -> Vec<(&'static str, Value, Vec<Value>)> {
    vec![
        ("Tomas Ferreira", port_director(), vec![fragment_debater(), fragment_parent()]),
        ("Aiyana Redcloud", nurse(), vec![fragment_parent()]),
        ("Hal Okoro", native(), vec![]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fact_of_every_persona_reaches_the_server_in_both_styles() {
    let mock = MockServer::start(MockConfig::default()).await;
    let s = setup();
    for style in ["full", "plain"] {
        let (systems, results) = run(&s, &mock, style, &[]);
        assert!(results.get("prompt_trimmed").is_none(), "{style}: nothing is left out without a budget");
        for (name, persona, fragments) in personas() {
            let sys = &systems.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} never asked")).1;
            let text = norm(sys);
            let facts = expected_leaves(&persona, &fragments);
            assert!(facts.len() >= 8, "{name}: {facts:?}");
            for (path, leaf) in facts {
                assert!(text.contains(&norm(&leaf)), "{style}: {name}'s `{path}` ({leaf:?}) is not in:\n{sys}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_leaves_out_the_least_important_facts_and_says_which() {
    let mock = MockServer::start(MockConfig::default()).await;
    let s = setup();
    let (systems, results) = run(&s, &mock, "full", &["--set", "llm.persona_budget_tokens=200"]);
    let trimmed = results["prompt_trimmed"].as_array().expect("prompt_trimmed in results.json");
    let tomas = trimmed.iter().find(|t| t["persona"] == "tomas_ferreira").expect("Tomas was trimmed");
    assert_eq!(tomas["budget_tokens"], 200);
    assert!(tomas["prompt_tokens"].as_u64().unwrap() <= 200);
    let dropped: Vec<&str> = tomas["dropped"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    // The least important go first: unknown fields and other facts before behaviors before
    // beliefs; goals, style and traits stay.
    let other = |d: &str| ["pet_peeves", "family", "other_facts"].iter().any(|k| d.starts_with(k));
    assert!(other(dropped[0]), "{dropped:?}");
    let first_behavior = dropped.iter().position(|d| d.starts_with("behaviors")).unwrap();
    let first_belief = dropped.iter().position(|d| d.starts_with("beliefs")).unwrap_or(usize::MAX);
    assert!(
        dropped[..first_behavior].iter().all(|d| other(d) || d.starts_with("health") || d.starts_with("relationships"))
    );
    assert!(first_behavior < first_belief, "{dropped:?}");
    let sys = &systems.iter().find(|(n, _)| n == "Tomas Ferreira").unwrap().1;
    let text = norm(sys);
    for (path, leaf) in expected_leaves(&port_director(), &[fragment_debater(), fragment_parent()]) {
        let listed = dropped.iter().any(|d| path == *d || path.starts_with(&format!("{d}.")));
        assert!(
            text.contains(&norm(&leaf)) != listed,
            "`{path}` ({leaf:?}) must be either in the prompt or listed as left out, not {}",
            if listed { "both" } else { "neither" }
        );
    }
    for kept in
        ["Retire the diesel straddle carriers before 2030.", "stubborn", "Blunt, numbers first, short sentences."]
    {
        assert!(text.contains(kept), "{kept} was dropped before less important facts:\n{sys}");
    }
}

#[test]
fn the_prompt_of_a_persona_can_be_printed_with_its_budget() {
    let s = setup();
    let dir = s.scenario.parent().unwrap();
    let mut c = troupe();
    c.args(["personas", "show", "tomas_ferreira", "--prompt", "--budget", "150", "--personas-file"])
        .arg(dir.join("tomas.agent.json"))
        .arg("--fragment")
        .arg(dir.join("debater.fragment.json"));
    let d = run_within(&mut c, Duration::from_secs(60));
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert!(d.stdout.starts_with("You are taking part in a simulated group discussion.\nYou are Tomas Ferreira"));
    assert!(d.stderr.contains("budget of 150") && d.stderr.contains("left out"), "{}", d.both());
}
