//! Every stage linear (issue 15): the same population scenario at 2,000 and 8,000 personas,
//! one turn, a relation graph of degree 8, run through the `troupe` binary with saving on. Four
//! times the personas may take at most six times the CPU: a quadratic stage anywhere on the
//! path a user runs (loading, validation, resolution, the hearing graph, the estimate, the run,
//! the journal, the results, the analysis) would take sixteen.

mod support {
    pub mod cli;
    pub mod population;
}

use support::cli::{measure, troupe};
use support::population::{Shape, write};

fn cpu_of(n: usize, dir: &std::path::Path) -> f64 {
    let pop = write(dir, Shape { n, turns: 1, degree: Some(8), active: None, policy: "Parallel" });
    let mut c = troupe();
    c.arg("run").arg(&pop.scenario).args(["-q", "--output-dir"]).arg(dir.join(format!("out-{n}")));
    let u = measure(&mut c);
    assert_eq!(u.code, Some(0), "the {n}-persona run failed");
    u.cpu.as_secs_f64()
}

#[cfg(unix)]
#[test]
fn four_times_the_personas_cost_at_most_six_times_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    // A first run warms the disk cache and the binary's pages.
    cpu_of(500, tmp.path());
    let small = cpu_of(2_000, tmp.path());
    let large = cpu_of(8_000, tmp.path());
    let ratio = large / small;
    eprintln!("2,000 personas: {small:.2} s CPU; 8,000: {large:.2} s; ratio {ratio:.2}");
    assert!(
        ratio <= 6.0,
        "CPU grew {ratio:.1}x for 4x the personas ({small:.2} s -> {large:.2} s): a stage is quadratic"
    );
}

/// Who acted in each turn: persona messages, passes and thoughts, from `results.json`.
fn acted(out: &std::path::Path) -> std::collections::BTreeMap<u64, std::collections::BTreeSet<String>> {
    let dirs = support::cli::run_dirs(out);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs.last().expect("a run folder").join("results.json")).unwrap())
            .unwrap();
    let mut m: std::collections::BTreeMap<u64, std::collections::BTreeSet<String>> = Default::default();
    for e in r["transcript"].as_array().unwrap().iter().filter(|e| e["speaker_id"] != "moderator") {
        m.entry(e["turn"].as_u64().unwrap()).or_default().insert(e["speaker_id"].as_str().unwrap().into());
    }
    // A persona that acts speaks, passes, or only thinks.
    for p in r["passes"].as_array().unwrap().iter().chain(r["thoughts"].as_array().unwrap()) {
        m.entry(p[0].as_u64().unwrap()).or_default().insert(p[1].as_str().unwrap().into());
    }
    m
}

/// A 10% activation over 200 personas: 20 act each turn, drawn again each turn, the same with
/// the same run seed and others with another; a persona whose weight field is 0 never acts.
#[test]
fn activation_draws_a_seeded_share_each_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let pop = write(tmp.path(), Shape { n: 200, turns: 3, degree: Some(8), active: Some(0.1), policy: "Parallel" });
    // Every fourth persona gets weight 0 ("activity": 0).
    let text = std::fs::read_to_string(&pop.personas).unwrap();
    let mut v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    for (i, p) in v.iter_mut().enumerate().filter(|(i, _)| i % 4 == 0) {
        p["activity"] = serde_json::json!(0);
        assert_eq!(p["id"], format!("p{i}"));
    }
    std::fs::write(&pop.personas, serde_json::to_string(&v).unwrap()).unwrap();
    let go = |seed: u64, name: &str| {
        let out = tmp.path().join(name);
        let mut c = troupe();
        c.arg("run").arg(&pop.scenario).args(["-q", "--run-seed", &seed.to_string(), "--output-dir"]).arg(&out);
        let d = support::cli::run_within(&mut c, std::time::Duration::from_secs(120));
        assert_eq!(d.code, Some(0), "{}", d.both());
        acted(&out)
    };
    let (a, b, c) = (go(7, "a"), go(7, "b"), go(8, "c"));
    assert_eq!(a.len(), 3, "three turns: {a:?}");
    for (turn, who) in &a {
        assert_eq!(who.len(), 20, "turn {turn}: 10% of 200 act");
        for id in who {
            let i: usize = id[1..].parse().unwrap();
            assert_ne!(i % 4, 0, "{id} has weight 0 and acted in turn {turn}");
        }
    }
    assert_ne!(a[&1], a[&2], "a new draw each turn");
    assert_eq!(a, b, "the same run seed draws the same personas");
    assert_ne!(a, c, "another run seed draws others");
}

/// A graph file with a bad line names the file and the line, and says what to write.
#[test]
fn a_bad_graph_file_names_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let pop = write(tmp.path(), Shape { n: 20, turns: 1, degree: Some(4), active: None, policy: "Parallel" });
    let graph = tmp.path().join("graph-20.csv");
    let mut text = std::fs::read_to_string(&graph).unwrap();
    text.push_str("p1,p2,p3\np4,nobody\n");
    std::fs::write(&graph, text).unwrap();
    let mut c = troupe();
    c.arg("run").arg(&pop.scenario).args(["-q", "--no-save"]);
    let d = support::cli::run_within(&mut c, std::time::Duration::from_secs(60));
    assert_eq!(d.code, Some(2), "{}", d.both());
    assert!(d.stderr.contains("graph-20.csv:42"), "the file and line: {}", d.stderr);
}
