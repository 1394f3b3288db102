//! Persona checks (issue 13, section 4), end to end through the `troupe` binary: `troupe personas
//! check` against the simulated provider (scores move with the expectations, the interview is
//! reproducible, scenarios and TinyTroupe fragments work, bad input exits 2), against a loopback
//! mock that records what reaches the server (the persona's own system prompt, the judge's
//! prompt with the expectation and the answers, one retry of an unreadable verdict, no score
//! without a verdict, retries and the cost budget), and the `in_character` analysis of runs.

mod support {
    pub mod cli;
    pub mod mock_openai;
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::cli::{Done, run_dirs, run_within, troupe};
use support::mock_openai::{Canned, MockConfig, MockServer, Recorded};
use troupe_sim::persona::PersonaDatabase;
use troupe_sim::prompt::system_prompt;
use troupe_sim::validation::judge::JUDGE_SYSTEM_PROMPT;

const LIMIT: Duration = Duration::from_secs(120);
const KEY: &str = "sk-test-persona-check-0123456789";
const FITS: &str = "a cautious city council member who wants to cap costs";
const MISFITS: &str = "an optimistic startup founder who loves moving fast";

/// `troupe personas check ARGS` with the simulated provider, saving under `out`.
fn simulated(args: &[&str], out: &Path) -> Done {
    let mut c = troupe();
    c.args(["personas", "check"]).args(args).arg("--simulated").args(["--set", "performance.rate_limit_delay=0"]);
    c.arg("--set").arg(format!("output.output_dir={}", out.display()));
    run_within(&mut c, LIMIT)
}

/// `troupe personas check ARGS` against `mock`, saving the JSON to `out` (read back).
fn against(mock: &MockServer, args: &[&str], out: &Path) -> (Done, Value) {
    let mut c = troupe();
    c.args(["personas", "check"]).args(args).arg("--out").arg(out);
    c.args(["--set", "llm.provider=openai", "--set", &format!("llm.base_url={}", mock.base_url())]);
    c.args(["--set", "performance.backoff_base=0", "--set", "performance.persona_timeout=20"]);
    c.env("OPENAI_API_KEY", KEY);
    let d = run_within(&mut c, LIMIT);
    let v = std::fs::read(out).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    (d, v)
}

/// An OpenAI chat completion answering `text`.
fn chat(text: &str) -> Canned {
    Canned::new(
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        })
        .to_string(),
    )
}

fn saved_checks(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(out.join("checks")).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn read(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn persona(id: &str) -> troupe_sim::persona::PersonaSpec {
    let db = PersonaDatabase::load(Path::new(support::cli::ROOT).join("data/personas.agents.json").as_path()).unwrap();
    db.get(id).unwrap().clone()
}

#[test]
fn a_fitting_expectation_passes_and_a_misfit_fails_with_the_json_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let d = simulated(&["tom_becker", "--expect", FITS], tmp.path());
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert!(d.stdout.contains("score 1.00 / 1.00  PASS"), "{}", d.both());
    assert!(d.stdout.contains("justification: Simulated judge (word overlap"), "{}", d.both());
    assert!(d.stdout.contains("E1   supported") && d.stdout.contains("E2   supported"), "{}", d.both());
    assert!(
        d.stderr.contains("6 call(s)") && d.stderr.contains("tokens") && d.stderr.contains("$0.0000"),
        "{}",
        d.both()
    );
    let files = saved_checks(tmp.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("tom_becker-") && name.ends_with("Z.json"), "{name}");
    assert!(d.stderr.contains(&format!("saved: {}", files[0].display())), "{}", d.both());
    let fit = read(&files[0]);
    assert_eq!(fit["status"], "pass");
    assert_eq!(fit["expectations"], FITS);
    assert_eq!(fit["expectations_from"], "--expect");
    assert_eq!(fit["claims"].as_array().unwrap().len(), 2);
    assert_eq!(fit["interview"].as_array().unwrap().len(), 5);
    assert_eq!(fit["provider"], "simulated");
    assert_eq!(fit["synthetic"], true);
    assert_eq!(fit["calls"], 6);
    assert_eq!(fit["judge"]["requests"], 1);
    let kinds: Vec<&str> =
        fit["interview"].as_array().unwrap().iter().map(|q| q["probe"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["intro", "claim", "claim", "fact", "false_premise"]);
    // The persona corrects the false premise instead of inventing a past.
    assert!(fit["interview"][4]["answer"].as_str().unwrap().contains("never done that job"), "{fit}");

    let d = simulated(&["tom_becker", "--expect", MISFITS], tmp.path());
    assert_eq!(d.code, Some(1), "{}", d.both());
    assert!(d.stdout.contains("BELOW THRESHOLD") && d.stdout.contains("not addressed"), "{}", d.both());
    let files = saved_checks(tmp.path());
    assert_eq!(files.len(), 2, "every check is saved, passed or not: {files:?}");
    let misfit = files.iter().map(|f| read(f)).find(|v| v["expectations"] == MISFITS).unwrap();
    assert_eq!(misfit["status"], "below_threshold");
    assert!(misfit["score"].as_f64().unwrap() < fit["score"].as_f64().unwrap());
    assert!(misfit["score"].as_f64().unwrap() < 0.7);

    // The pass mark is a flag: the misfit passes a mark of 0.
    let d = simulated(&["tom_becker", "--expect", MISFITS, "--min-score", "0"], tmp.path());
    assert_eq!(d.code, Some(0), "{}", d.both());
}

#[test]
fn the_same_inputs_ask_the_same_interview_and_the_seed_changes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |seed: &str, file: &str| {
        let out = tmp.path().join(file);
        let d = simulated(
            &[
                "sarah_chen",
                "--expect",
                "a methodical architect who distrusts vendor lock-in",
                "--run-seed",
                seed,
                "--json",
                "--out",
                out.to_str().unwrap(),
            ],
            tmp.path(),
        );
        assert!(d.code.is_some_and(|c| c <= 1), "{}", d.both());
        let printed: Value = serde_json::from_str(&d.stdout).expect("--json prints the result");
        let saved = read(&out);
        assert_eq!(printed, saved, "--json prints what --out saves");
        saved
    };
    let strip = |mut v: Value| {
        for k in ["started_at", "finished_at"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    let a = run("7", "a.json");
    let b = run("7", "b.json");
    assert_eq!(strip(a.clone()), strip(b), "same persona, expectation and seed: the same check, byte for byte");
    let questions = |v: &Value| -> Vec<String> {
        v["interview"].as_array().unwrap().iter().map(|q| q["question"].as_str().unwrap().to_string()).collect()
    };
    let others: Vec<Vec<String>> =
        ["1", "2", "3", "4"].iter().map(|s| questions(&run(s, &format!("{s}.json")))).collect();
    assert!(others.iter().all(|q| q.len() == 5));
    assert!(others.iter().any(|q| *q != questions(&a)), "another seed words the interview differently: {others:?}");
    // The claim about vendor lock-in is probed through a situation that names only its object.
    assert!(questions(&a).iter().any(|q| q.contains("vendor lock-in")), "{:?}", questions(&a));
    assert!(questions(&a).iter().all(|q| !q.contains("methodical")), "no leading question: {:?}", questions(&a));
}

#[test]
fn a_tinytroupe_persona_with_a_fragment_is_interviewed_with_every_fact() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("oscar.json");
    let fragment = "data/agents/fragments/skeptic.fragment.json";
    let d = simulated(
        &[
            "oscar_alvarez",
            "--personas-file",
            "data/agents",
            "--fragment",
            fragment,
            "--expect",
            "an architect who questions claims until he sees evidence",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(d.code.is_some_and(|c| c <= 1), "{}", d.both());
    let v = read(&out);
    assert_eq!(v["persona"]["fragments"], json!([fragment]));
    assert_eq!(v["persona"]["source"], "data/agents");
    // The interview used the persona's own system prompt, fragment applied.
    let db = PersonaDatabase::load(&Path::new(support::cli::ROOT).join("data/agents")).unwrap();
    let frag_db = PersonaDatabase::load(&Path::new(support::cli::ROOT).join(fragment)).unwrap();
    let oscar = troupe_sim::persona::apply_fragment(db.get("oscar_alvarez").unwrap(), &frag_db.fragments[0]).unwrap();
    assert_eq!(v["persona"]["system_prompt"], system_prompt(&oscar).as_ref());
    // The judge holds it to every fact, the agent's own fields and the fragment's included.
    let facts: Vec<&str> = v["facts"].as_array().unwrap().iter().map(|f| f["text"].as_str().unwrap()).collect();
    assert!(facts.contains(&"Extraordinary claims require extraordinary evidence."), "{facts:?}");
    assert!(facts.contains(&"You question claims until you see evidence."), "{facts:?}");
    assert!(facts.iter().any(|f| f.starts_with("openness: High")), "the Big Five: {facts:?}");
    let fields: Vec<&str> = v["facts"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"persona.beliefs") && fields.contains(&"persona.behaviors"), "{fields:?}");
}

#[test]
fn a_scenario_checks_every_persona_that_has_expectations() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("panel.ron");
    std::fs::write(
        &scenario,
        r#"Scenario(
    name: "panel",
    personas: [Id("tom_becker"), Id("marcus_rivera"), File("data/agents/oscar_alvarez.agent.json")],
    fragments: [(file: "data/agents/fragments/skeptic.fragment.json", apply_to: ["oscar_alvarez"])],
    seed: "Should the city pilot an AI permit assistant?",
    provider: "simulated",
    expectations: {
        "tom_becker": "a cautious city council member who wants to cap costs",
        "oscar_alvarez": "a retired fisherman who hates buildings",
    },
)"#,
    )
    .unwrap();
    let list = tmp.path().join("all.json");
    let sc = scenario.to_str().unwrap();
    let d = simulated(&["--scenario", sc, "--out", list.to_str().unwrap()], tmp.path());
    assert_eq!(d.code, Some(1), "one of two fails: {}", d.both());
    assert!(d.stderr.contains("1 of 2 persona(s) passed"), "{}", d.both());
    let v = read(&list);
    let checks = v.as_array().expect("several personas: a list");
    let ids: Vec<&str> = checks.iter().map(|c| c["persona"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tom_becker", "oscar_alvarez"], "marcus_rivera has no expectations");
    assert_eq!(checks[0]["status"], "pass");
    assert_eq!(checks[1]["status"], "below_threshold");
    assert_eq!(checks[1]["expectations_from"], format!("scenario {sc}"));
    let facts: Vec<&str> = checks[1]["facts"].as_array().unwrap().iter().map(|f| f["text"].as_str().unwrap()).collect();
    assert!(
        facts.contains(&"Extraordinary claims require extraordinary evidence."),
        "the scenario's fragment: {facts:?}"
    );

    // One persona of the scenario, with an expectation from the command line.
    let one = tmp.path().join("one.json");
    let d = simulated(
        &[
            "marcus_rivera",
            "--scenario",
            sc,
            "--expect",
            "a persuasive product manager",
            "--out",
            one.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert_eq!(read(&one)["persona"]["id"], "marcus_rivera");

    // `troupe scenario check` holds expectations to the scenario's personas.
    let bad = tmp.path().join("bad.ron");
    std::fs::write(
        &bad,
        r#"Scenario(name: "b", personas: [Id("tom_becker")], expectations: {"tom_beker": "x", "tom_becker": "  "})"#,
    )
    .unwrap();
    let mut c = troupe();
    c.args(["scenario", "check"]).arg(&bad);
    let d = run_within(&mut c, LIMIT);
    assert_eq!(d.code, Some(2), "{}", d.both());
    assert!(
        d.stderr.contains("expectations: unknown persona id `tom_beker`; did you mean `tom_becker`?"),
        "{}",
        d.both()
    );
    assert!(d.stderr.contains("`tom_becker` has an empty text"), "{}", d.both());
}

#[test]
fn bad_input_exits_2_saves_nothing_and_says_how_to_fix_it() {
    let tmp = tempfile::tempdir().unwrap();
    let no_expectations = tmp.path().join("plain.ron");
    std::fs::write(&no_expectations, r#"Scenario(name: "p", personas: [Id("tom_becker")])"#).unwrap();
    let not_a_fragment = tmp.path().join("persona.json");
    std::fs::write(&not_a_fragment, serde_json::to_vec(&persona("tom_becker").to_saved_value()).unwrap()).unwrap();
    let long = "x".repeat(5000);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "name the persona to check"),
        (vec!["tom_beker".into()], "did you mean `tom_becker`?"),
        (vec!["tom_becker".into(), "--questions".into(), "0".into()], "between 1 and 12"),
        (vec!["tom_becker".into(), "--questions".into(), "13".into()], "between 1 and 12"),
        (vec!["tom_becker".into(), "--min-score".into(), "1.5".into()], "between 0.0 and 1.0"),
        (vec!["tom_becker".into(), "--expect".into(), "  ".into()], "--expect is empty"),
        (vec!["tom_becker".into(), "--expect".into(), long], "keep it under 4000"),
        (vec!["tom_becker".into(), "--judge-model".into(), "".into()], "--judge-model is empty"),
        (vec!["--scenario".into(), no_expectations.display().to_string()], "has no `expectations`"),
        (vec!["--scenario".into(), no_expectations.display().to_string(), "--expect".into(), "x".into()], "name it"),
        (
            vec!["tom_becker".into(), "--fragment".into(), not_a_fragment.display().to_string()],
            "is not a fragment file",
        ),
        (vec!["tom_becker".into(), "--set".into(), "validation.questions=99".into()], "validation.questions"),
    ];
    for (args, hint) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = simulated(&args, tmp.path());
        assert_eq!(d.code, Some(2), "{args:?}: {}", d.both());
        assert!(d.stderr.contains(hint), "{args:?}: want {hint:?} in {}", d.both());
        assert!(!d.stderr.contains("panicked"), "{}", d.both());
    }
    assert!(saved_checks(tmp.path()).is_empty(), "nothing is saved for bad input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sees_the_persona_prompt_then_a_judge_prompt_with_the_expectation_and_answers() {
    let answers = [
        "I'm Tom Becker. I chair the budget committee and I read every contract twice.",
        "Tom Becker: Mostly committee hearings and constituent email.",
        "Cloud-only? Not without an exit clause and a local copy of our records.",
        "I was a CPA and then the city's finance director for nine years.",
        "I've never been a pastry chef; I'm a council member.",
    ];
    let verdict = r#"Here is my verdict:
```json
{"score": 0.85, "justification": "Tom sounds cautious and cost-minded; he distrusts cloud-only tools.",
 "findings": [{"claim": "E1", "verdict": "supported", "evidence": "A1: \"I read every contract twice\""},
              {"claim": "E2", "verdict": "supported", "evidence": "A3: \"Not without an exit clause\""},
              {"claim": "F8", "verdict": "supported", "evidence": "A4: \"finance director\""}]}
```"#;
    let mut cfg = MockConfig::default();
    for a in answers {
        cfg.script.push_back(chat(a));
    }
    cfg.script.push_back(chat(verdict));
    let mock = MockServer::start(cfg).await;
    let tmp = tempfile::tempdir().unwrap();
    let expectation = "a cautious hospital administrator who distrusts cloud-only tools";
    let (d, v) = against(
        &mock,
        &["tom_becker", "--expect", expectation, "--judge-model", "judge-x"],
        &tmp.path().join("c.json"),
    );
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert!(d.stdout.contains("score 0.85 / 1.00  PASS  (pass mark 0.70; judge judge-x)"), "{}", d.both());
    assert!(d.stdout.contains("justification: Tom sounds cautious"), "{}", d.both());
    assert!(d.stdout.contains("E2   supported") && d.stdout.contains("Not without an exit clause"), "{}", d.both());
    assert!(!d.stdout.contains(KEY) && !d.stderr.contains(KEY));

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 6, "five questions, one verdict");
    // A leading "Tom Becker:" label is the model's, not the answer's: it is dropped.
    let shown: Vec<&str> = answers.iter().map(|a| a.strip_prefix("Tom Becker: ").unwrap_or(a)).collect();
    let tom = persona("tom_becker");
    let prompt = system_prompt(&tom);
    for (k, r) in reqs[..5].iter().enumerate() {
        let b = &r.body;
        assert_eq!(b["model"], "gpt-4o-mini", "the persona answers with the run's model");
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(b["messages"][0]["content"], prompt.as_ref(), "the interview uses the persona's system prompt");
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2 + 2 * k, "each question sees the earlier ones");
        for (j, a) in shown[..k].iter().enumerate() {
            assert_eq!(msgs[2 + 2 * j]["role"], "assistant");
            assert_eq!(msgs[2 + 2 * j]["content"], *a);
        }
        assert!(msgs.last().unwrap()["content"].as_str().unwrap().starts_with("An interviewer asks you: "));
    }
    assert!(reqs[0].body["messages"][1]["content"].as_str().unwrap().contains("introduce yourself"));
    let judge = &reqs[5].body;
    assert_eq!(judge["model"], "judge-x");
    assert_eq!(judge["temperature"], 0.0);
    assert_eq!(judge["messages"][0]["content"], JUDGE_SYSTEM_PROMPT);
    let user = judge["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains(&format!("The whole text: {expectation}")), "{user}");
    assert!(user.contains("E1: a cautious hospital administrator\nE2: distrusts cloud-only tools\n"), "{user}");
    assert!(user.contains("F1 (name): Tom Becker\nF2 (role): City Council Member\n"), "{user}");
    for (k, a) in shown.iter().enumerate() {
        assert!(user.contains(&format!("A{}: {a}\n", k + 1)), "answer {} reaches the judge: {user}", k + 1);
    }
    assert!(user.contains("Q5 (false premise: nothing in the facts says the persona was"), "{user}");

    assert_eq!(v["score"], 0.85);
    assert_eq!(v["status"], "pass");
    assert_eq!(v["provider"], "openai");
    assert_eq!(v["synthetic"], false);
    assert_eq!(v["judge"]["model"], "judge-x");
    assert_eq!(v["judge"]["requests"], 1);
    assert_eq!(v["judge"]["verdict"]["findings"][2]["claim"], "F8");
    assert_eq!(v["interview"][1]["answer"], "Mostly committee hearings and constituent email.");
    assert_eq!(v["calls"], 6);
    assert_eq!(v["usage"]["prompt_tokens"], 600);
    assert!(v["cost_usd"].as_f64().unwrap() > 0.0, "gpt-4o-mini and judge-x usage is priced where known: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_verdict_is_asked_for_once_more_and_two_give_no_score() {
    let tmp = tempfile::tempdir().unwrap();
    // Unreadable, then readable: one retry that says what was wrong.
    let mut cfg = MockConfig::default();
    for a in ["I'm Tom.", "Budgets.", "I've never done that."] {
        cfg.script.push_back(chat(a));
    }
    cfg.script.push_back(chat("I'd say about 0.8, it mostly fits."));
    cfg.script.push_back(chat("{\"score\": 0.4, \"justification\": \"Thin answers.\", \"findings\": []}"));
    let mock = MockServer::start(cfg).await;
    let (d, v) = against(&mock, &["tom_becker", "--expect", FITS, "--questions", "3"], &tmp.path().join("a.json"));
    assert_eq!(d.code, Some(1), "0.4 is below the pass mark: {}", d.both());
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 5);
    let retry = reqs[4].body["messages"].as_array().unwrap();
    assert_eq!(retry.len(), 4);
    assert_eq!(retry[2]["role"], "assistant");
    assert_eq!(retry[2]["content"], "I'd say about 0.8, it mostly fits.");
    assert!(retry[3]["content"].as_str().unwrap().contains("could not be read: it holds no JSON object"), "{retry:?}");
    assert_eq!(v["score"], 0.4);
    assert_eq!(v["status"], "below_threshold");
    assert_eq!(v["judge"]["requests"], 2);
    assert_eq!(v["unreported_claims"], json!(["E1", "E2"]));

    // Unreadable twice: no score is made up.
    let mut cfg = MockConfig::default();
    for a in ["I'm Tom.", "Budgets.", "I've never done that."] {
        cfg.script.push_back(chat(a));
    }
    cfg.script.push_back(chat("Pretty good, 8/10."));
    cfg.script.push_back(chat("{\"score\": 8, \"justification\": \"out of ten\"}"));
    let mock = MockServer::start(cfg).await;
    let (d, v) = against(&mock, &["tom_becker", "--expect", FITS, "--questions", "3"], &tmp.path().join("b.json"));
    assert_eq!(d.code, Some(1), "{}", d.both());
    assert!(d.stdout.contains("score none  NO VERDICT"), "{}", d.both());
    assert!(d.stdout.contains("could not be read as a verdict, twice"), "{}", d.both());
    assert_eq!(mock.request_count(), 5, "one retry, not more");
    assert_eq!(v["score"], Value::Null);
    assert_eq!(v["status"], "judge_failed");
    assert!(v["error"].as_str().unwrap().contains("outside 0.0 to 1.0"), "{v}");
    assert_eq!(v["judge"]["replies"].as_array().unwrap().len(), 2, "both replies are kept for inspection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_retried_with_the_run_policy_and_the_budget_stops_them_before_they_are_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = MockConfig::default();
    cfg.script.push_back(Canned::new(500, r#"{"error": {"message": "boom", "type": "server_error"}}"#));
    cfg.script.push_back(chat("I'm Tom."));
    cfg.script.push_back(chat("Budgets."));
    cfg.script.push_back(chat("{\"score\": 0.9, \"justification\": \"Fits.\", \"findings\": []}"));
    let mock = MockServer::start(cfg).await;
    let (d, v) = against(&mock, &["tom_becker", "--expect", FITS, "--questions", "2"], &tmp.path().join("r.json"));
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert_eq!(mock.request_count(), 4, "the 500 was retried");
    assert_eq!(v["calls"], 4);
    assert!(d.stderr.contains("4 call(s)"), "{}", d.both());

    let mock = MockServer::start(MockConfig::default()).await;
    let (d, v) = against(
        &mock,
        &["tom_becker", "--expect", FITS, "--set", "llm.max_cost_usd=0.000001"],
        &tmp.path().join("b.json"),
    );
    assert_eq!(d.code, Some(1), "{}", d.both());
    assert_eq!(mock.request_count(), 0, "nothing is sent past the budget");
    assert_eq!(v["status"], "interview_failed");
    assert_eq!(v["score"], Value::Null);
    assert!(v["error"].as_str().unwrap().contains("llm.max_cost_usd"), "{v}");
    assert!(d.stdout.contains("INTERVIEW FAILED") && d.stdout.contains("max_cost_usd"), "{}", d.both());

    // An unpriced model cannot be stopped by the budget, and the command says so.
    let mock = MockServer::start(MockConfig {
        reply: "{\"score\": 0.9, \"justification\": \"Fits.\", \"findings\": []}".into(),
        ..MockConfig::default()
    })
    .await;
    let (d, _) = against(
        &mock,
        &["tom_becker", "--questions", "1", "--judge-model", "unpriced-judge", "--set", "llm.max_cost_usd=5"],
        &tmp.path().join("u.json"),
    );
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert!(d.stderr.contains("unpriced-judge has no price") && d.stderr.contains("cannot stop them"), "{}", d.both());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_character_scores_a_runs_personas_and_survives_a_new_analysis() {
    let tmp = tempfile::tempdir().unwrap();
    // Off by default: no section, no extra call.
    let plain = run_clinic(&[], &tmp.path().join("plain"));
    assert!(read(&plain.join("analysis.json")).get("in_character").is_none());

    let dir = run_clinic(&["--set", "validation.in_character=true"], &tmp.path().join("judged"));
    let ic = read(&dir.join("analysis.json"))["in_character"].clone();
    assert_judged_by_the_simulated_provider(&ic);

    // A plain re-analysis keeps the section; --in-character judges again, here against a mock.
    let mut c = troupe();
    c.arg("analyze").arg(&dir).arg("--no-charts");
    let d = run_within(&mut c, LIMIT);
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert!(d.stdout.contains("in character (judge gpt-4o-mini, simulated: word overlap)"), "{}", d.both());
    assert_eq!(read(&dir.join("analysis.json"))["in_character"], ic);

    let mock = MockServer::start(MockConfig {
        reply: "{\"score\": 0.6, \"justification\": \"Partly in character.\", \"findings\": [{\"claim\": \"F2\", \"verdict\": \"contradicted\", \"evidence\": \"M1: \\\"...\\\"\"}]}".into(),
        ..MockConfig::default()
    })
    .await;
    let d = analyze_in_character(&mock, &dir, &["--judge-model", "judge-y"]);
    assert_eq!(d.code, Some(0), "{}", d.both());
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert_the_judge_saw_every_message(&dir, &reqs);
    let ic = read(&dir.join("analysis.json"))["in_character"].clone();
    assert_eq!(ic["judge_model"], "judge-y");
    assert_eq!(ic["mean_score"], 0.6);
    assert_eq!(ic["personas"][0]["verdict"]["findings"][0]["verdict"], "contradicted");

    // A judge that never answers readably: no score, and it says why.
    let mock = MockServer::start(MockConfig { reply: "They seem fine to me.".into(), ..MockConfig::default() }).await;
    let d = analyze_in_character(&mock, &dir, &[]);
    assert_eq!(d.code, Some(0), "{}", d.both());
    assert_eq!(mock.request_count(), 4, "each persona's judge is asked twice");
    let ic = read(&dir.join("analysis.json"))["in_character"].clone();
    assert_eq!(ic["mean_score"], Value::Null);
    for p in ic["personas"].as_array().unwrap() {
        assert_eq!(p["score"], Value::Null);
        assert!(p["error"].as_str().unwrap().contains("could not be read as a verdict"), "{p}");
    }
    assert!(d.stdout.contains("no score: the judge's reply could not be read"), "{}", d.both());
}

/// A three-turn run of two personas on the simulated provider, with `extra` flags, saved under
/// `out`; returns its run folder.
fn run_clinic(extra: &[&str], out: &Path) -> PathBuf {
    let mut c = troupe();
    c.args(["run", "--seed", "Should the clinic open on Saturdays?", "--personas", "tom_becker,hannah_wright"])
        .args(["--turns", "3", "--run-seed", "3", "--rate-limit-delay", "0", "-q", "--set", "llm.provider=simulated"])
        .arg("--output-dir")
        .arg(out)
        .args(extra);
    let d = run_within(&mut c, LIMIT);
    assert_eq!(d.code, Some(0), "{}", d.both());
    run_dirs(out).pop().unwrap()
}

/// The `in_character` section of a run judged by the simulated provider with the run's model.
fn assert_judged_by_the_simulated_provider(ic: &Value) {
    assert_eq!(ic["provider"], "simulated");
    assert_eq!(ic["judge_model"], "gpt-4o-mini", "the run's model by default");
    let personas = ic["personas"].as_array().unwrap();
    let ids: Vec<&str> = personas.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tom_becker", "hannah_wright"]);
    for p in personas {
        assert!(p["score"].as_f64().is_some_and(|s| (0.0..=1.0).contains(&s)), "{p}");
        assert_eq!(p["messages_judged"], p["messages_total"]);
    }
    assert_eq!(ic["calls"], 2, "one judge call per persona");
}

/// `troupe analyze RUN --no-charts --in-character` (with `extra` flags) judged through `mock`.
fn analyze_in_character(mock: &MockServer, dir: &Path, extra: &[&str]) -> Done {
    let mut c = troupe();
    c.arg("analyze").arg(dir).args(["--no-charts", "--in-character"]).args(extra);
    c.args(["--set", "llm.provider=openai", "--set", &format!("llm.base_url={}", mock.base_url())]);
    c.env("OPENAI_API_KEY", KEY);
    run_within(&mut c, LIMIT)
}

/// Each judge request (model judge-y) carries every message of the persona it is about.
fn assert_the_judge_saw_every_message(dir: &Path, reqs: &[Recorded]) {
    let transcript: Vec<Value> = std::fs::read_to_string(dir.join("transcript.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in reqs {
        assert_eq!(r.body["model"], "judge-y");
        let user = r.body["messages"][1]["content"].as_str().unwrap();
        assert!(user.contains("MESSAGES (a sample of what the persona said"), "{user}");
        // Every message of the persona the request is about reaches the judge.
        let id = if user.contains("F1 (name): Tom Becker") { "tom_becker" } else { "hannah_wright" };
        for e in transcript.iter().filter(|e| e["speaker_id"] == id) {
            let text = e["text"].as_str().unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(user.contains(&text), "{id}'s message {text:?} is missing from {user}");
        }
    }
}

#[test]
fn the_readme_quotes_the_judge_prompt_verbatim() {
    let readme = std::fs::read_to_string(Path::new(support::cli::ROOT).join("README.md")).unwrap();
    assert!(
        readme.contains(JUDGE_SYSTEM_PROMPT),
        "README.md's Persona checks section must quote JUDGE_SYSTEM_PROMPT as it is"
    );
}
