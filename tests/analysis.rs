//! Conversation analysis on a hand-built transcript whose answers are known, and charts drawn
//! for a real (simulated) run.

use std::path::Path;

use troupe_sim::analysis::{self, Stance, analyze_conversation};
use troupe_sim::config::SimulationConfig;
use troupe_sim::engine::{RunOptions, RunPlan, SimulationEngine};
use troupe_sim::llm::SimulatedProvider;
use troupe_sim::persona::PersonaDatabase;
use troupe_sim::record::results::SimulationResults;

mod support {
    pub mod results;
}
use support::results::{entry, results_with};

const A: (&str, &str) = ("alice", "Alice Smith");
const B: (&str, &str) = ("bob", "Bob Jones");
const C: (&str, &str) = ("carol", "Carol White");
const M: (&str, &str) = ("moderator", "Moderator");

/// Alice speaks 3 times, Bob 2, Carol 1; the moderator twice.
fn hand_built() -> SimulationResults {
    let mut t = vec![
        entry(0, 0, M, "Welcome. Tonight: the bridge budget."),
        entry(1, 1, A, "Bob, I think the budget for the bridge is too high. What do you think?"),
        entry(2, 1, B, "I agree with you, Alice. The bridge budget needs trimming."),
        entry(3, 1, A, "Carol White should review the bridge numbers."),
        entry(4, 2, C, "I disagree. Parks matter more than bridges. Parks, parks, parks!"),
        entry(5, 2, M, "A reminder: ten minutes left."),
        entry(6, 2, A, "The bridge again: bridge safety first."),
        entry(7, 3, B, "I agree with you Alice, the bridge budget needs trimming."),
    ];
    t[2].to = Some("Alice Smith".into());
    for (e, (lat, p, c)) in [(1, (100.0, 50, 10)), (3, (200.0, 60, 12)), (6, (300.0, 70, 14))] {
        t[e].latency_ms = Some(lat);
        t[e].prompt_tokens = Some(p);
        t[e].completion_tokens = Some(c);
    }
    results_with(&[A, B, C], t)
}

#[test]
fn overview_counts_moderator_but_persona_figures_do_not() {
    let a = analyze_conversation(&hand_built());
    assert_eq!(a.overview.messages, 8);
    assert_eq!(a.overview.persona_messages, 6);
    assert_eq!(a.overview.moderator_messages, 2);
    assert_eq!(a.overview.turns, 3);
    assert_eq!(a.overview.duration_s, 12.5);
    assert_eq!(a.overview.questions, 1);
    let msgs: Vec<u64> = a.personas.iter().map(|p| p.messages).collect();
    assert_eq!(msgs, [3, 2, 1]);
    assert!((a.personas[0].share - 0.5).abs() < 1e-12);
    assert_eq!(a.personas[0].questions, 1);
    assert_eq!(a.personas.iter().map(|p| p.words).sum::<u64>(), a.overview.persona_words);
    assert!(a.overview.words > a.overview.persona_words, "moderator words count in the overview");
    assert_eq!((a.personas[0].first_turn, a.personas[0].last_turn), (Some(1), Some(2)));
}

#[test]
fn gini_of_three_two_one_is_two_ninths() {
    let a = analyze_conversation(&hand_built());
    // Σ|xi - xj| over ordered pairs = 8; 8 / (2 · 3² · 2) = 2/9.
    assert!((a.participation.gini_messages - 2.0 / 9.0).abs() < 1e-12, "{}", a.participation.gini_messages);
    assert_eq!(a.participation.most_active.as_deref(), Some("alice"));
    assert_eq!(a.participation.least_active.as_deref(), Some("carol"));
    let even = results_with(&[A, B], vec![entry(1, 1, A, "one"), entry(2, 1, B, "two")]);
    assert_eq!(analyze_conversation(&even).participation.gini_messages, 0.0);
}

#[test]
fn turn_taking_counts_who_follows_whom_skipping_the_moderator() {
    let a = analyze_conversation(&hand_built());
    let tt = &a.turn_taking;
    assert_eq!(tt.personas, ["alice", "bob", "carol"]);
    assert_eq!(tt.names, ["Alice Smith", "Bob Jones", "Carol White"]);
    // Persona order: A B A C (moderator) A B.
    assert_eq!(tt.count("alice", "bob"), 2);
    assert_eq!(tt.count("bob", "alice"), 1);
    assert_eq!(tt.count("alice", "carol"), 1);
    assert_eq!(tt.count("carol", "alice"), 1);
    assert_eq!(tt.count("bob", "carol"), 0);
    assert_eq!(tt.transitions, 5);
    assert_eq!(tt.matrix, vec![vec![0, 2, 1], vec![1, 0, 0], vec![1, 0, 0]]);
}

#[test]
fn mentions_from_the_to_field_first_and_full_names() {
    let a = analyze_conversation(&hand_built());
    let ab = a.mentions.edge("alice", "bob").expect("Alice names Bob");
    assert_eq!((ab.addressed, ab.named, ab.total), (0, 1, 1));
    let ba = a.mentions.edge("bob", "alice").expect("Bob addresses and names Alice");
    assert_eq!((ba.addressed, ba.named, ba.total), (1, 2, 2));
    let ac = a.mentions.edge("alice", "carol").expect("Alice names Carol White");
    assert_eq!(ac.named, 1);
    assert!(a.mentions.edge("carol", "alice").is_none());
    assert_eq!(a.mentions.edges.len(), 3);
    let alice = &a.personas[0];
    assert_eq!((alice.mentions_made, alice.mentions_received), (2, 2));
}

#[test]
fn keywords_are_distinctive_per_persona_and_names_are_left_out() {
    let a = analyze_conversation(&hand_built());
    assert_eq!(a.personas[0].keywords[0].term, "bridge");
    assert_eq!(a.personas[0].keywords[0].count, 4);
    assert_eq!(a.personas[2].keywords[0].term, "parks");
    assert_eq!(a.personas[2].keywords[0].count, 4);
    let bob: Vec<&str> = a.personas[1].keywords.iter().take(3).map(|k| k.term.as_str()).collect();
    assert!(bob.contains(&"trimming"), "{bob:?}");
    let overall: Vec<&str> = a.keywords.iter().map(|k| k.term.as_str()).collect();
    assert!(overall[..3].contains(&"parks") && overall[..3].contains(&"bridge"), "{overall:?}");
    for k in a.keywords.iter().chain(a.personas.iter().flat_map(|p| &p.keywords)) {
        assert!(!["alice", "bob", "carol", "smith", "white", "the", "i"].contains(&k.term.as_str()), "{}", k.term);
    }
}

#[test]
fn sentiment_markers_repetition_latency_and_tokens() {
    let a = analyze_conversation(&hand_built());
    assert_eq!(a.sentiment.messages.len(), 8, "every message is scored");
    assert_eq!(a.personas[1].agreements, 2);
    assert_eq!(a.personas[2].disagreements, 1);
    assert_eq!((a.agreement.agreements, a.agreement.disagreements), (2, 1));
    assert!(a.agreement.markers.iter().any(|m| m.seq == 4 && m.stance == Stance::Disagree));
    assert!(a.personas[1].sentiment_mean > 0.0, "agreeing Bob is positive");
    assert_eq!(a.personas[0].sentiment_by_turn.iter().map(|t| t.turn).collect::<Vec<_>>(), [1, 2]);
    // Bob's second message repeats his first.
    assert_eq!(a.repetition.pairs.len(), 1);
    let p = &a.repetition.pairs[0];
    assert_eq!((p.first_seq, p.second_seq, p.similarity), (2, 7, 1.0));
    assert_eq!(a.repetition.repeated_messages, 1);
    let lat = &a.personas[0].latency;
    assert_eq!((lat.samples, lat.mean_ms, lat.p50_ms, lat.max_ms), (3, 200.0, 200.0, 300.0));
    assert_eq!((a.personas[0].prompt_tokens, a.personas[0].completion_tokens), (180, 36));
    let t1 = a.tokens_per_turn.iter().find(|t| t.turn == 1).unwrap();
    assert_eq!((t1.messages, t1.prompt_tokens, t1.completion_tokens), (3, 110, 22));
}

#[test]
fn empty_and_moderator_only_runs_do_not_panic() {
    let a = analyze_conversation(&results_with(&[A], vec![]));
    assert_eq!(a.overview.messages, 0);
    assert_eq!(a.participation.gini_messages, 0.0);
    let a = analyze_conversation(&results_with(&[A, B], vec![entry(0, 0, M, "hello")]));
    assert_eq!(a.overview.persona_messages, 0);
    assert!(a.participation.most_active.is_none());
    let charts = analysis::charts::render_all(&a, &results_with(&[A, B], vec![])).unwrap();
    assert_eq!(charts.len(), 5);
}

fn check_svg(path: &Path, must_contain: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg", "{}", path.display());
    let texts: String = doc.descendants().filter_map(|n| n.text()).collect::<Vec<_>>().join(" ");
    for s in must_contain {
        assert!(texts.contains(s), "{} lacks {s:?}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_run_gets_analysis_json_and_readable_charts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimulationConfig::default();
    cfg.performance.rate_limit_delay = 0.0;
    cfg.simulation.max_turns = 3;
    // Names with XML-special characters must come out escaped and still readable.
    let db = PersonaDatabase::load(Path::new("data/personas.agents.json")).unwrap();
    let mut personas: Vec<_> =
        ["sarah_chen", "marcus_rivera", "aisha_okafor"].iter().map(|id| db.get(id).unwrap().clone()).collect();
    personas[1].name = "Marcus <Rivera> & Co".into();
    let engine =
        SimulationEngine::with_provider(cfg.clone(), std::sync::Arc::new(SimulatedProvider::new(Default::default())));
    let mut results = engine
        .run(
            RunPlan::ad_hoc("Should the city fund the bridge?", personas),
            RunOptions { save_under: Some(dir.path().to_path_buf()), ..Default::default() },
        )
        .await
        .unwrap();
    let run_dir = results.run_dir.clone().unwrap();
    // The engine runs and saves; analysing is the review's, which the faces call after a run.
    assert!(!run_dir.join("analysis.json").exists(), "the engine does not analyse");
    troupe_sim::review::review(&mut results, &engine).await;
    assert_eq!(results.analysis_error, None);
    // output.auto_analysis and save_visualizations are on by default: the review wrote them.
    let saved: analysis::ConversationAnalysis =
        serde_json::from_slice(&std::fs::read(run_dir.join("analysis.json")).unwrap()).unwrap();
    assert_eq!(saved.run_id, results.run_id);
    assert_eq!(saved.personas.len(), 3);
    let names = ["Dr. Sarah Chen", "Marcus <Rivera> & Co", "Aisha Okafor"];
    for n in names {
        assert!(saved.personas.iter().any(|p| p.name == n), "{n}");
    }
    for (chart, needles) in [
        ("participation", &names[..]),
        ("sentiment", &names[..]),
        ("turn_taking", &names[..]),
        ("latency", &["Latency"][..]),
        ("tokens", &["Tokens per turn", "prompt tokens", "completion tokens"][..]),
    ] {
        check_svg(&run_dir.join("charts").join(format!("{chart}.svg")), needles);
    }
    // The library call gives the same analysis.
    let reloaded = analysis::load_run(&run_dir).unwrap();
    let again = analyze_conversation(&reloaded);
    assert_eq!(again.turn_taking, saved.turn_taking);
    assert_eq!(again.latency.buckets, saved.latency.buckets);
    assert!(!again.latency.buckets.is_empty(), "metrics.json's buckets are read back");

    // Off switches.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.output.save_visualizations = false;
    let e2 =
        SimulationEngine::with_provider(cfg2.clone(), std::sync::Arc::new(SimulatedProvider::new(Default::default())));
    let p2 = vec![db.get("sarah_chen").unwrap().clone(), db.get("david_kim").unwrap().clone()];
    let h2 = e2
        .start(
            RunPlan::ad_hoc("t", p2.clone()),
            RunOptions { save_under: Some(dir2.path().to_path_buf()), ..Default::default() },
        )
        .await
        .unwrap();
    let r2 = troupe_sim::review::finish(h2).await.unwrap();
    let d2 = r2.run_dir.unwrap();
    assert!(d2.join("analysis.json").exists() && !d2.join("charts").exists());
    cfg2.output.auto_analysis = false;
    let e3 = SimulationEngine::with_provider(cfg2, std::sync::Arc::new(SimulatedProvider::new(Default::default())));
    let h3 = e3
        .start(
            RunPlan::ad_hoc("t", p2),
            RunOptions { save_under: Some(dir2.path().to_path_buf()), ..Default::default() },
        )
        .await
        .unwrap();
    let r3 = troupe_sim::review::finish(h3).await.unwrap();
    assert!(!r3.run_dir.unwrap().join("analysis.json").exists());
}

#[test]
fn load_run_errors_say_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let e = analysis::load_run(dir.path()).unwrap_err().to_string();
    assert!(e.contains("results.json") && e.contains("run folder"), "{e}");
}

/// Mentions found by the word index equal a plain scan of every persona's name forms, for names
/// with titles, hyphens, shared first names and non-ASCII letters.
#[test]
fn mentions_match_a_scan_of_every_name() {
    let people = [
        ("p1", "Dr. Ana Lopez"),
        ("p2", "Ana Lopez-Diaz"),
        ("p3", "Jean-Luc Picard"),
        ("p4", "Zoë Brandt"),
        ("p5", "Kim"),
        ("p6", "Ben Okafor"),
        ("p7", "Ben Ito"),
    ];
    let texts = [
        "Dr. Ana Lopez and Zoë Brandt agree; Kim does not.",
        "Jean-Luc, what about Ben? Ben Ito said no. Kimberly is not Kim's name.",
        "ZoëBrandt and Ana Lopez-Diazz are not names here; Jean is not Jean-Luc.",
        "Zoë thinks Picard is right, and Ana Lopez-Diaz too.",
    ];
    let mut t = Vec::new();
    for (k, text) in texts.iter().enumerate() {
        t.push(entry(k as u64 + 1, 1, people[k % 2 + 5], text));
    }
    let a = analyze_conversation(&results_with(&people, t.clone()));
    // The plain scan: full names, and first names no one else shares.
    let first = |n: &str| analysis::text::first_name(n).to_string();
    let mut expected = std::collections::BTreeSet::new();
    for e in &t {
        for (id, name) in people.iter().filter(|(id, _)| *id != e.speaker_id) {
            let f = first(name);
            let unique = f != *name && people.iter().filter(|(_, n)| first(n) == f).count() == 1;
            if analysis::text::contains_name(&e.text, name) || (unique && analysis::text::contains_name(&e.text, &f)) {
                expected.insert((e.speaker_id.clone(), id.to_string()));
            }
        }
    }
    let got: std::collections::BTreeSet<(String, String)> =
        a.mentions.edges.iter().map(|e| (e.from.clone(), e.to.clone())).collect();
    assert_eq!(got, expected);
    assert!(got.contains(&("p6".into(), "p4".into())), "Zoë Brandt is found: {got:?}");
    assert!(got.contains(&("p7".into(), "p3".into())), "Jean-Luc is found: {got:?}");
}

/// Above the display limits, the turn-taking matrix keeps the most active personas and counts
/// the rest; above `PERSONA_FIGURES_LIMIT`, only personas who spoke get figures.
#[test]
fn a_population_is_analysed_in_bounded_sections() {
    let n = analysis::PERSONA_FIGURES_LIMIT + 5;
    let ids: Vec<(String, String)> = (0..n).map(|i| (format!("p{i}"), format!("Person {i}"))).collect();
    let people: Vec<(&str, &str)> = ids.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // 60 speakers; speaker k speaks k % 3 + 1 times, in rounds.
    let mut t = Vec::new();
    for round in 0..3u32 {
        for k in (0..60usize).filter(|k| (k % 3) as u32 >= round) {
            t.push(entry(t.len() as u64 + 1, round + 1, people[k * 7], "We should keep the buses running."));
        }
    }
    let a = analyze_conversation(&results_with(&people, t));
    assert_eq!(a.overview.personas, n);
    assert_eq!(a.personas.len(), 60, "only personas who spoke get figures");
    let tt = &a.turn_taking;
    assert_eq!(tt.personas.len(), analysis::TURN_TAKING_PERSONAS);
    let most: Vec<&str> = a.most_active(analysis::TURN_TAKING_PERSONAS).iter().map(|p| p.id.as_str()).collect();
    assert_eq!(tt.personas, most);
    assert!(tt.others > 0);
    let inside: u64 = tt.matrix.iter().flatten().sum();
    assert_eq!(inside + tt.others, tt.transitions);
    // Every message repeats the others: all pairs counted, a bounded number listed.
    assert_eq!(a.repetition.repeated_messages, a.overview.persona_messages - 1);
    assert_eq!(a.repetition.pairs_found, (120 * 119 / 2) as u64);
    assert_eq!(a.repetition.pairs.len(), analysis::DUPLICATE_PAIRS_KEPT);
}

/// A run of more than `RESULTS_TRANSCRIPT_LIMIT` messages keeps its transcript in
/// `transcript.jsonl` only; `results.json` names it and the run reads back whole. A folder whose
/// `results.json` points anywhere else, or whose transcript lost lines, is refused with a reason.
#[test]
fn a_transcript_too_long_to_embed_is_referenced_and_read_back() {
    use troupe_sim::record::results::{RESULTS_TRANSCRIPT_LIMIT, save_results};
    let n = RESULTS_TRANSCRIPT_LIMIT + 1;
    let transcript =
        (0..n as u64).map(|i| entry(i, 1 + i as u32 / 100, if i % 2 == 0 { A } else { B }, "Yes.")).collect();
    let results = results_with(&[A, B], transcript);
    let dir = tempfile::tempdir().unwrap();
    save_results(&results, dir.path()).unwrap();
    let file = dir.path().join("results.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("\"transcript\":"), "no embedded transcript");
    assert!(text.contains("\"transcript_file\": \"transcript.jsonl\""));
    assert!(text.contains(&format!("\"transcript_messages\": {n}")));
    assert!(text.len() < 100_000, "results.json is small: {} bytes", text.len());
    let back = analysis::load_run(dir.path()).unwrap();
    assert_eq!(back.transcript, results.transcript);

    // One message short: refused, saying so.
    let jsonl = dir.path().join("transcript.jsonl");
    let full = std::fs::read_to_string(&jsonl).unwrap();
    let cut = full.trim_end().rsplit_once('\n').unwrap().0.to_string() + "\n";
    std::fs::write(&jsonl, cut).unwrap();
    let err = analysis::load_run(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&format!("{} messages, where results.json says {n}", n - 1)), "{err}");

    // Pointing elsewhere: refused, nothing else read.
    std::fs::write(&jsonl, full).unwrap();
    std::fs::write(
        &file,
        text.replace("\"transcript_file\": \"transcript.jsonl\"", "\"transcript_file\": \"../../etc/passwd\""),
    )
    .unwrap();
    let err = analysis::load_run(dir.path()).unwrap_err().to_string();
    assert!(err.contains("only transcript.jsonl beside results.json is read"), "{err}");

    // A run of ordinary size keeps the old engine's shape.
    let small = results_with(&[A, B], vec![entry(0, 1, A, "Yes.")]);
    let dir = tempfile::tempdir().unwrap();
    save_results(&small, dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("results.json")).unwrap();
    assert!(text.contains("\"transcript\": [") && !text.contains("transcript_file"));
}
