//! Experiments: the statistics against reference values (SciPy 1.17 on the same data), and
//! whole experiments on the simulated provider whose variants truly differ: summary, reports,
//! extraction, blinding and seeded persona assignment.

use std::path::{Path, PathBuf};

use troupe_sim::analysis::stats::{ci95, cohens_d, gini, mann_whitney_u, mean, std_dev, welch_t_test};
use troupe_sim::config::{ConfigSources, Layer};
use troupe_sim::experiment::{
    ExperimentError, ExperimentFiles, ExperimentSpec, ExperimentSummary, Planner, ScenarioPlanner, experiment_id,
    run_experiment,
};
use troupe_sim::scenario::Assignment;

mod support {
    pub mod cli;
}

use support::cli::troupe;

fn close(got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol * want.abs().max(1.0), "got {got}, want {want}");
}

// ---------------------------------------------------------------- statistics

const A: [f64; 15] = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4];
const B: [f64; 15] = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4];

#[test]
fn welch_t_test_matches_scipy() {
    // scipy.stats.ttest_ind(A, B, equal_var=False)
    let r = welch_t_test(&A, &B).unwrap();
    close(r.statistic.unwrap(), -2.455356398286006, 1e-9);
    close(r.df.unwrap(), 24.988529290231416, 1e-9);
    close(r.p_value, 0.021378001462866992, 1e-6);
    let x = [12.0, 14.0, 11.0, 15.0, 13.0];
    let y = [9.0, 10.0, 8.0, 11.5];
    let r = welch_t_test(&x, &y).unwrap();
    close(r.statistic.unwrap(), 3.2822856388160866, 1e-9);
    close(r.df.unwrap(), 6.733130003812428, 1e-9);
    close(r.p_value, 0.014209543962581167, 1e-6);
    // Constant samples: certain difference, or none; too few values: no test.
    let r = welch_t_test(&[5.0, 5.0, 5.0], &[9.0, 9.0, 9.0]).unwrap();
    assert_eq!((r.statistic, r.p_value), (None, 0.0));
    assert_eq!(welch_t_test(&[5.0, 5.0], &[5.0, 5.0]).unwrap().p_value, 1.0);
    assert!(welch_t_test(&[1.0], &[1.0, 2.0]).is_none());
}

#[test]
fn mann_whitney_u_matches_scipy() {
    // scipy.stats.mannwhitneyu(x, y, alternative="two-sided"), method "auto".
    let r = mann_whitney_u(&A, &B).unwrap();
    assert_eq!(r.statistic, Some(53.5));
    close(r.p_value, 0.015201303821215302, 1e-6);
    let r = mann_whitney_u(&[1.1, 2.2, 3.3], &[4.4, 5.5, 6.6, 7.7]).unwrap();
    assert_eq!(r.statistic, Some(0.0));
    close(r.p_value, 0.05714285714285714, 1e-12);
    let r = mann_whitney_u(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
    close(r.p_value, 0.1, 1e-12);
    let r = mann_whitney_u(&[3.0, 5.0, 7.0, 9.0, 11.0], &[2.0, 4.0, 4.0, 6.0, 8.0, 10.0]).unwrap();
    assert_eq!(r.statistic, Some(19.0));
    close(r.p_value, 0.5218690919074656, 1e-6);
    assert_eq!(mann_whitney_u(&[2.0, 2.0], &[2.0, 2.0]).unwrap().p_value, 1.0);
    assert!(mann_whitney_u(&[], &[1.0]).is_none());
}

#[test]
fn cohens_d_ci_mean_sd_and_gini_on_known_data() {
    let x = [12.0, 14.0, 11.0, 15.0, 13.0];
    let y = [9.0, 10.0, 8.0, 11.5];
    close(cohens_d(&x, &y).unwrap(), 2.185884234729838, 1e-12);
    close(cohens_d(&A, &B).unwrap(), -0.8965693907039232, 1e-12);
    assert_eq!(cohens_d(&[1.0, 1.0], &[2.0, 2.0]), None, "infinite");
    assert_eq!(mean(&x), 13.0);
    close(std_dev(&x), 1.5811388300841898, 1e-12);
    // mean ± t(0.975, 4) · sd / √5
    let (lo, hi) = ci95(&x).unwrap();
    close(lo, 11.036756838522443, 1e-9);
    close(hi, 14.963243161477557, 1e-9);
    assert!(ci95(&[1.0]).is_none());
    close(gini(&[3.0, 2.0, 1.0]), 2.0 / 9.0, 1e-12);
    close(gini(&[0.0, 0.0, 0.0, 4.0]), 0.75, 1e-12);
}

// ---------------------------------------------------------------- experiments

const SCENARIO: &str = r#"Scenario(
    name: "exp_test",
    personas: [Id("sarah_chen"), Id("marcus_rivera"), Id("aisha_okafor"), Id("david_kim")],
    seed: "Should the marketplace let an AI classifier remove listings automatically?",
    turns: 2,
    provider: "simulated",
    config: {"performance": {"rate_limit_delay": 0.0}},
    variants: {
        "pair": (description: "Only two of the four personas.", remove_personas: ["aisha_okafor", "david_kim"]),
        "hot": (description: "A hotter panel.", config: {"llm": {"temperature": 1.3}}),
    },
    extract: [
        (name: "final_stance", choices: ["support", "oppose", "undecided"]),
        (name: "top_concern", description: "the issue that worries you most"),
    ],
)"#;

fn write_scenario(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("exp.ron");
    std::fs::write(&p, text).unwrap();
    p
}

fn planner(path: &Path) -> ScenarioPlanner {
    let sources = ConfigSources {
        env: false,
        cli: Some(Layer::from_sets("test", &["llm.provider=simulated".to_string()]).unwrap()),
        ..Default::default()
    };
    ScenarioPlanner::new(path, sources).unwrap()
}

fn spec(dir: &Path, p: &ScenarioPlanner, variants: &[&str], seed: u64) -> ExperimentSpec {
    let s = p.scenario();
    ExperimentSpec {
        scenario: s.name.clone(),
        variants: variants.iter().map(|v| v.to_string()).collect(),
        runs: 3,
        parallel: true,
        max_parallel: 2,
        seed,
        dir: dir.join("experiments").join(experiment_id(&s.name, chrono::Utc::now(), seed)),
        assignment: s.experiment.assignment,
        blind: s.experiment.blind,
        extract: s.extract.clone(),
        stop: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_variants_that_differ_three_runs_each_give_a_summary_with_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(tmp.path(), SCENARIO);
    let p = planner(&path);
    let spec = spec(tmp.path(), &p, &["baseline", "pair"], 7);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (summary, files) = run_experiment(&spec, &p, Some(tx)).await.unwrap();

    // Progress covered every run.
    let mut finished = 0;
    let mut messages = 0;
    while let Ok(ev) = rx.try_recv() {
        match ev {
            troupe_sim::experiment::ExperimentEvent::RunFinished { .. } => finished += 1,
            troupe_sim::experiment::ExperimentEvent::Message { .. } => messages += 1,
            _ => {}
        }
    }
    assert_eq!(finished, 6);
    assert_eq!(messages as f64, summary.runs.iter().map(|r| r.metrics["messages"]).sum::<f64>());

    // Files.
    let on_disk: ExperimentSummary = serde_json::from_slice(&std::fs::read(&files.summary).unwrap()).unwrap();
    assert_eq!(on_disk, summary);
    assert_runs_saved(&spec, &summary);
    assert_variant_statistics(&summary);
    assert_comparisons(&summary);
    assert_reports(&files);

    // The same experiment seed reproduces every run's text-derived figures.
    let spec2 = ExperimentSpec { parallel: false, dir: tmp.path().join("again"), ..spec.clone() };
    let (again, _) = run_experiment(&spec2, &p, None).await.unwrap();
    assert_same_text_figures(&summary, &again);
}

/// Every run succeeded, with its own seed, and saved its files (an extraction of each persona)
/// under the experiment's folder.
fn assert_runs_saved(spec: &ExperimentSpec, summary: &ExperimentSummary) {
    assert_eq!(summary.runs.len(), 6);
    let seeds: std::collections::HashSet<u64> = summary.runs.iter().map(|r| r.run_seed).collect();
    assert_eq!(seeds.len(), 6, "every run has its own seed");
    for r in &summary.runs {
        assert!(r.success, "{r:?}");
        let d = r.dir.as_ref().unwrap();
        assert!(d.starts_with(spec.dir.join("runs").join(format!("{}-{}", r.variant, r.k))), "{}", d.display());
        for f in ["results.json", "transcript.jsonl", "metrics.json", "analysis.json", "extraction.json"] {
            assert!(d.join(f).exists(), "{}/{f}", d.display());
        }
        let ex: troupe_sim::experiment::Extraction =
            serde_json::from_slice(&std::fs::read(d.join("extraction.json")).unwrap()).unwrap();
        assert_eq!(ex.personas.len(), r.personas.len());
        for pe in &ex.personas {
            assert!(pe.valid, "{pe:?}");
            assert!(["support", "oppose", "undecided"].contains(&pe.values["final_stance"].as_str()));
            assert!(!pe.values["top_concern"].is_empty());
        }
        assert_eq!(r.personas.len(), if r.variant == "pair" { 2 } else { 4 });
    }
}

/// Per-variant statistics: every metric over three runs with a confidence interval, and the
/// extracted stances counted.
fn assert_variant_statistics(summary: &ExperimentSummary) {
    assert_eq!(summary.variants.len(), 2);
    for v in &summary.variants {
        assert_eq!((v.runs, v.succeeded), (3, 3));
        for m in [
            "messages",
            "words_per_message",
            "participation_gini",
            "sentiment",
            "latency_ms",
            "tokens",
            "cost_usd",
            "errors",
        ] {
            let s = &v.metrics[m];
            assert_eq!(s.n, 3, "{m}");
            assert!(s.ci95_low.unwrap() <= s.mean && s.mean <= s.ci95_high.unwrap(), "{m}: {s:?}");
        }
        let stance = v.extraction.iter().find(|f| f.field == "final_stance").unwrap();
        let total: u64 = stance.counts.iter().map(|c| c.1).sum();
        assert_eq!(total, 3 * v.personas.len() as u64);
        assert_eq!(stance.invalid, 0);
        assert_eq!(stance.counts.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["support", "oppose", "undecided"]);
    }
    let (base, pair) = (&summary.variants[0], &summary.variants[1]);
    assert_eq!((base.variant.as_str(), pair.variant.as_str()), ("baseline", "pair"));
    assert!(base.metrics["messages"].mean > pair.metrics["messages"].mean + 2.0);
}

/// Comparisons: one pair, every metric, the persona-set difference found.
fn assert_comparisons(summary: &ExperimentSummary) {
    assert_eq!(summary.comparisons.len(), 8);
    let msgs = summary.comparisons.iter().find(|c| c.metric == "messages").unwrap();
    assert!(msgs.significant, "{msgs:?}");
    assert!(msgs.welch.as_ref().unwrap().p_value < 0.05);
    assert!(msgs.mann_whitney.is_some());
    assert!(msgs.cohens_d.is_none_or(|d| d > 0.8));
    assert!(
        summary.findings.iter().any(|f| f.starts_with("baseline has a higher messages per run than pair")),
        "{:?}",
        summary.findings
    );
}

/// The Markdown report has every section; the HTML one a chart and no script.
fn assert_reports(files: &ExperimentFiles) {
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    for s in [
        "## Results per variant",
        "95% CI",
        "Welch t",
        "Mann-Whitney U",
        "Cohen's d",
        "## Findings",
        "## Extraction",
        "final_stance",
        "**p < 0.05**",
    ] {
        assert!(md.contains(s), "report.md lacks {s}");
    }
    assert!(md.contains("smallest possible two-sided Mann-Whitney p is 0.100"), "small-sample note");
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg") && !html.to_lowercase().contains("<script"));
}

/// The same experiment seed reproduces every run's text-derived figures.
fn assert_same_text_figures(summary: &ExperimentSummary, again: &ExperimentSummary) {
    for (a, b) in summary.runs.iter().zip(&again.runs) {
        assert_eq!(a.run_seed, b.run_seed);
        for m in ["messages", "words_per_message", "sentiment", "tokens"] {
            assert_eq!(a.metrics[m], b.metrics[m], "{m}");
        }
        assert_eq!(a.extraction, b.extraction);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blinded_random_assignment_deals_personas_and_reveals_labels_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let text = SCENARIO
        .replace("turns: 2,", "turns: 1,\n    experiment: (assignment: Random, blind: true),")
        .replace(
            r#""pair": (description: "Only two of the four personas.", remove_personas: ["aisha_okafor", "david_kim"]),"#,
            r#""control_q": (description: "The scenario as written."),"#,
        )
        .replace("\"hot\"", "\"treat_z\"");
    assert!(text.contains("control_q") && !text.contains("\"pair\""));
    let path = write_scenario(tmp.path(), &text);
    let p = planner(&path);
    let spec = spec(tmp.path(), &p, &["control_q", "treat_z"], 11);
    assert_eq!((spec.assignment, spec.blind), (Assignment::Random, true));
    let (summary, files) = run_experiment(&spec, &p, None).await.unwrap();

    let labels: Vec<&str> = summary.variants.iter().map(|v| v.label.as_str()).collect();
    assert_eq!(labels, ["A", "B"]);
    let mut key: Vec<&str> = summary.labels.iter().map(|(_, v)| v.as_str()).collect();
    key.sort();
    assert_eq!(key, ["control_q", "treat_z"]);
    let (a, b) = (&summary.variants[0].personas, &summary.variants[1].personas);
    assert_eq!((a.len(), b.len()), (2, 2));
    assert!(a.iter().all(|x| !b.contains(x)), "each persona in one variant only");
    for r in &summary.runs {
        let v = summary.variants.iter().find(|v| v.variant == r.variant).unwrap();
        assert_eq!(&r.personas, &v.personas);
        assert_eq!(r.label, v.label);
        let folder = r.dir.as_ref().unwrap().parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(folder, format!("{}-{}", r.label.to_lowercase(), r.k), "run folders are blinded too");
    }
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    let (before, after) = md.split_once("## Unblinding").expect("the report ends by unblinding");
    for name in ["control_q", "treat_z"] {
        assert!(!before.contains(name), "{name} appears before the unblinding");
        assert!(after.contains(name), "{name} revealed");
    }
    let html = std::fs::read_to_string(&files.html).unwrap();
    let (before, _) = html.split_once("<h2>Unblinding</h2>").unwrap();
    assert!(!before.contains("control_q") && !before.contains("treat_z"));

    // The assignment is seeded: the same seed deals the same way.
    let (again, _) =
        run_experiment(&ExperimentSpec { dir: tmp.path().join("again"), ..spec.clone() }, &p, None).await.unwrap();
    assert_eq!(again.variants[0].personas, summary.variants[0].personas);
    assert_eq!(again.labels, summary.labels);
}

/// A report whose every piece of text is hostile: scenario, labels, variant and persona names,
/// findings, extraction fields and answers, run ids and errors.
fn hostile_summary(evil: &str) -> ExperimentSummary {
    use troupe_sim::analysis::stats::Summary;
    use troupe_sim::experiment::{Comparison, FieldCounts, RunRecord, VariantSummary};
    let summary =
        Summary { n: 2, mean: 3.0, std_dev: 1.0, ci95_low: Some(1.0), ci95_high: Some(5.0), min: 2.0, max: 4.0 };
    let variant = |label: &str| VariantSummary {
        variant: format!("{evil}{label}"),
        label: format!("{evil}{label}"),
        runs: 2,
        succeeded: 1,
        personas: vec![evil.to_string()],
        metrics: [("messages".to_string(), summary.clone())].into(),
        extraction: vec![FieldCounts { field: evil.into(), counts: vec![(evil.into(), 2)], invalid: 0 }],
    };
    let run = RunRecord {
        variant: evil.into(),
        label: evil.into(),
        k: 1,
        run_seed: u64::MAX,
        run_id: evil.into(),
        dir: None,
        success: false,
        error: Some(evil.into()),
        personas: vec![evil.into()],
        metrics: [("messages".to_string(), 4.0)].into(),
        extraction: Default::default(),
    };
    ExperimentSummary {
        id: evil.into(),
        scenario: evil.into(),
        seed: 1,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        runs_per_variant: 2,
        parallelism: 1,
        assignment: Assignment::AllPersonas,
        blind: true,
        labels: vec![(evil.into(), evil.into())],
        extract: vec![troupe_sim::scenario::ExtractField {
            name: evil.into(),
            description: evil.into(),
            choices: vec![evil.into()],
        }],
        variants: vec![variant("a"), variant("b")],
        comparisons: vec![Comparison {
            metric: evil.into(),
            a: evil.into(),
            b: evil.into(),
            mean_a: 1.0,
            mean_b: 2.0,
            welch: None,
            mann_whitney: None,
            cohens_d: None,
            significant: true,
        }],
        findings: vec![evil.into()],
        runs: vec![run],
        synthetic: true,
        stopped: false,
    }
}

#[test]
fn the_html_report_escapes_every_text_it_shows() {
    let evil = "<script>alert(1)</script>\"'&";
    let html = troupe_sim::experiment::report::html(&hostile_summary(evil));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.to_lowercase().contains("<script"), "{html}");
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;";
    for (what, shown) in [
        ("title", format!("<title>Experiment: {escaped}</title>")),
        ("heading", format!("<h1>Experiment: {escaped}</h1>")),
        ("a variant's label", format!("<td><strong>{escaped}a</strong></td>")),
        ("its personas", format!("<td>{escaped}</td>")),
        ("a finding", format!("<li class=\"sig\">{escaped}</li>")),
        ("a comparison", format!("<tr class=\"sig\"><td>{escaped} vs {escaped}</td><td>{escaped}</td>")),
        ("an extraction answer", format!("<td>{escaped} 2</td>")),
        ("a run id", format!("<code>{escaped}</code>")),
        ("the unblinding", format!("<tr><td>{escaped}</td><td>{escaped}</td></tr>")),
    ] {
        assert!(html.contains(&shown), "{what}: {html}");
    }
}

#[tokio::test]
async fn bad_experiments_say_how_to_fix_them() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(tmp.path(), SCENARIO);
    let p = planner(&path);
    let e = run_experiment(&spec(tmp.path(), &p, &["baseline"], 1), &p, None).await.unwrap_err();
    assert!(matches!(e, ExperimentError::Invalid(_)) && e.to_string().contains("--variants"), "{e}");
    let e = run_experiment(&spec(tmp.path(), &p, &["pair", "pair"], 1), &p, None).await.unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    let err = p.check_variants(&["baseline".into(), "piar".into()]).unwrap_err();
    assert!(err.contains("unknown variant `piar`") && err.contains("did you mean `pair`"), "{err}");
    assert!(p.check_variants(&["baseline".into(), "hot".into()]).is_ok());
    // "baseline" is the scenario as written; its plan has all four personas.
    let (plan, cfg) = p.plan("baseline", 5).unwrap();
    assert_eq!((plan.personas.len(), cfg.simulation.run_seed), (4, 5));
    assert_eq!(p.plan("hot", 5).unwrap().1.llm.temperature, 1.3);
}

#[test]
fn experiment_command_prints_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(tmp.path(), SCENARIO);
    let o = troupe()
        .arg("experiment")
        .arg(&path)
        .args(["--variants", "baseline,pair", "--runs", "2", "--parallel", "--json", "--output-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: ExperimentSummary = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((s.runs.len(), s.runs_per_variant, s.parallelism), (4, 2, 2));
    let dir = tmp.path().join("experiments").join(&s.id);
    for f in ["summary.json", "report.md", "report.html"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let o = troupe().arg("experiment").arg(&path).args(["--variants", "baseline,piar"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("did you mean `pair`"));
}

/// Turn, speaker and text of every message of the run saved in `dir`.
fn transcript_in(dir: &Path) -> Vec<(u32, String, String)> {
    let r: troupe_sim::record::results::SimulationResults =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    r.transcript.into_iter().map(|m| (m.turn, m.speaker, m.text)).collect()
}

/// Every run seed an experiment records can be given back to `troupe run --run-seed` (with the
/// run's variant) and makes that run again: the same transcript. Half of all run seeds are
/// above `i64::MAX`; this experiment's runs include some.
#[test]
fn every_recorded_run_seed_reproduces_its_run_through_troupe_run() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_scenario(tmp.path(), SCENARIO);
    let o = support::cli::troupe()
        .arg("experiment")
        .arg(&path)
        .args(["--variants", "baseline,pair", "--runs", "3", "--run-seed", "7", "--json", "-q", "--output-dir"])
        .arg(tmp.path().join("exp"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: ExperimentSummary = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.runs.len(), 6);
    assert!(s.runs.iter().any(|r| r.run_seed > i64::MAX as u64), "no run seed above i64::MAX: pick another --run-seed");
    for r in &s.runs {
        let out = tmp.path().join(format!("again-{}-{}", r.variant, r.k));
        let mut c = support::cli::troupe();
        c.arg("run").arg(&path);
        if r.variant != "baseline" {
            c.args(["--variant", &r.variant]);
        }
        let o = c.args(["--run-seed", &r.run_seed.to_string(), "-q", "--output-dir"]).arg(&out).output().unwrap();
        let what = format!("{} run {} (run seed {})", r.variant, r.k, r.run_seed);
        assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        let again: Vec<PathBuf> =
            std::fs::read_dir(out.join("conversations")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(again.len(), 1, "{what}: {again:?}");
        let original = transcript_in(r.dir.as_ref().unwrap());
        assert!(original.len() > 2, "{what}: {original:?}");
        assert_eq!(transcript_in(&again[0]), original, "{what}");
    }
}
