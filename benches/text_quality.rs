//! The text-quality measurement of the embedded local model (issue 14.3): runs shipped scenarios
//! with the local model, several run seeds each, and counts what `troupe_sim::analysis::
//! text_quality` finds in the persona lines (invented speakers, third person, near duplicates
//! within a persona and across personas in a turn, mid-sentence endings, lines that take up the
//! question).
//!
//! ```sh
//! cargo bench --bench text_quality                      # the README's table: 3 scenarios x 5 seeds
//! cargo bench --bench text_quality -- --seeds 2 --scenarios quickstart --show
//! # another build, e.g. the code before a change, from its own checkout:
//! cargo bench --bench text_quality -- --troupe /tmp/before/troupe --root /tmp/before
//! ```
//!
//! Options (after `--`): `--seeds N` (run seeds 1..=N, default 5), `--scenarios a,b,c` (names
//! under `scenarios/`, default `quickstart,content_moderation,product_launch`), `--turns N`
//! (default 3), `--max-tokens N` (default 60, the quickstart's own), `--troupe PATH` (the binary
//! that runs the scenarios, default the one built with this bench), `--root DIR` (where the
//! scenarios and `config/` are read, default this package), `--keep DIR` (keep each run's
//! `results.json` as `DIR/NAME-SEED.json` and read it from there instead of running again when
//! it is present: a measurement can be stopped and resumed), `--out FILE` (every run's lines and
//! figures as JSON, default `target/text_quality.json`), `--show` (print every line with its
//! flags), `--set key=value` (any config key, repeatable: to compare settings).
//!
//! Each run is `troupe run scenarios/NAME.ron --run-seed SEED --turns 3 --json` with
//! `llm.provider = "local"`, `llm.max_tokens = 60` and a long `persona_timeout` (600 s, so a
//! slow shared machine measures text, not timeouts); three turns and 60 tokens keep the 15 runs
//! to minutes on 2 cores. `TROUPE_*` variables other than `TROUPE_MODEL_DIR` are not passed on;
//! `CANDLE_NUM_THREADS` is 1 unless set.
//! The text is deterministic per seed, so the figures are too; the time is not. Skips with a
//! note when the model is not cached (`troupe model fetch`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use troupe_sim::analysis::text_quality::{NameForms, QuestionTerms, TextQuality, line_flags, text_quality};
use troupe_sim::record::results::SimulationResults;

struct Options {
    seeds: u64,
    scenarios: Vec<String>,
    turns: u32,
    max_tokens: u32,
    troupe: PathBuf,
    root: PathBuf,
    keep: Option<PathBuf>,
    out: PathBuf,
    show: bool,
    sets: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        seeds: 5,
        scenarios: ["quickstart", "content_moderation", "product_launch"].map(String::from).to_vec(),
        turns: 3,
        max_tokens: 60,
        troupe: PathBuf::from(env!("CARGO_BIN_EXE_troupe")),
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        keep: None,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/text_quality.json"),
        show: false,
        sets: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--seeds" => o.seeds = value("--seeds")?.parse().map_err(|_| "--seeds takes a number")?,
            "--scenarios" => o.scenarios = value("--scenarios")?.split(',').map(|s| s.trim().to_string()).collect(),
            "--turns" => o.turns = value("--turns")?.parse().map_err(|_| "--turns takes a number")?,
            "--max-tokens" => {
                o.max_tokens = value("--max-tokens")?.parse().map_err(|_| "--max-tokens takes a number")?
            }
            "--troupe" => o.troupe = value("--troupe")?.into(),
            "--root" => o.root = value("--root")?.into(),
            "--keep" => o.keep = Some(value("--keep")?.into()),
            "--out" => o.out = value("--out")?.into(),
            "--set" => o.sets.push(value("--set")?),
            "--show" => o.show = true,
            // What `cargo bench` adds.
            "--bench" => {}
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            _ => {}
        }
    }
    Ok(o)
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("text_quality: {e}");
            std::process::exit(2);
        }
    };
    let model = troupe_sim::model::cache_dir(None).ok().map(|d| d.join(troupe_sim::model::DEFAULT_MODEL.file_name));
    if !model.as_ref().is_some_and(|p| p.is_file()) {
        println!("skipped: the local model is not cached (run `troupe model fetch`)");
        return;
    }
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    let mut all = TextQuality::default();
    for name in &o.scenarios {
        let mut sum = TextQuality::default();
        for seed in 1..=o.seeds {
            let started = Instant::now();
            let r = match run(name, seed, &o) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("text_quality: {name}, seed {seed}: {e}");
                    std::process::exit(1);
                }
            };
            let q = text_quality(&r);
            println!(
                "{name} seed {seed}: {} lines, {} skipped, {:.0} s: {}",
                q.replies,
                r.skipped.len(),
                started.elapsed().as_secs_f64(),
                serde_json::to_string(&q).unwrap_or_default()
            );
            let lines = flagged_lines(&r);
            if o.show {
                for l in &lines {
                    println!("  {l}");
                }
            }
            runs.push(json!({
                "scenario": name, "seed": seed, "figures": q, "skipped": r.skipped,
                "seconds": started.elapsed().as_secs_f64(), "lines": lines,
            }));
            sum += q;
        }
        rows.push((name.clone(), sum));
        all += sum;
    }
    rows.push(("all".into(), all));
    println!("\n{}", table(&rows, o.seeds));
    let doc = json!({ "seeds": o.seeds, "sets": o.sets, "turns": o.turns, "max_tokens": o.max_tokens, "troupe": o.troupe, "totals": rows.iter().map(|(n, q)| json!({"scenario": n, "figures": q})).collect::<Vec<_>>(), "runs": runs });
    if let Some(dir) = o.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&o.out, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
        Ok(()) => println!("every line and its flags: {}", o.out.display()),
        Err(e) => eprintln!("text_quality: cannot write {}: {e}", o.out.display()),
    }
}

/// One run of `o.troupe` on a shipped scenario, read back from its `--json` output (or from
/// `--keep`'s copy of it).
fn run(name: &str, seed: u64, o: &Options) -> Result<SimulationResults, String> {
    let kept = o.keep.as_ref().map(|d| d.join(format!("{name}-{seed}.json")));
    if let Some(k) = kept.as_ref().filter(|k| k.is_file()) {
        let bytes = std::fs::read(k).map_err(|e| format!("cannot read {}: {e}", k.display()))?;
        return serde_json::from_slice(&bytes).map_err(|e| format!("{} is not results.json: {e}", k.display()));
    }
    let mut cmd = Command::new(&o.troupe);
    cmd.current_dir(&o.root).args(["run", &format!("scenarios/{name}.ron"), "--json", "--quiet", "--no-save"]).args([
        "--run-seed",
        &seed.to_string(),
        "--turns",
        &o.turns.to_string(),
    ]);
    for set in [
        "llm.provider=local".to_string(),
        format!("llm.max_tokens={}", o.max_tokens),
        "performance.persona_timeout=600".into(),
        "performance.timeout_seconds=3600".into(),
        "output.auto_analysis=false".into(),
    ]
    .iter()
    .chain(&o.sets)
    {
        cmd.args(["--set", set]);
    }
    // One thread unless told otherwise: on a shared machine the text must not wait on cores
    // the others hold (the figures are the same either way; the time is not).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        cmd.env("CANDLE_NUM_THREADS", "1");
    }
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("TROUPE_") && k != "TROUPE_MODEL_DIR") {
            cmd.env_remove(&k);
        }
    }
    let out = cmd.output().map_err(|e| format!("cannot start {}: {e}", o.troupe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} exited with {}: {}",
            o.troupe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ));
    }
    let r = serde_json::from_slice(&out.stdout).map_err(|e| format!("its --json output is not results.json: {e}"))?;
    if let Some(k) = kept {
        let _ = k.parent().map(std::fs::create_dir_all);
        std::fs::write(&k, &out.stdout).map_err(|e| format!("cannot write {}: {e}", k.display()))?;
    }
    Ok(r)
}

/// Every persona line with what is wrong with it, for `--show` and the JSON.
fn flagged_lines(r: &SimulationResults) -> Vec<String> {
    let room: Vec<NameForms> = r.agents.iter().map(|a| NameForms::new(&a.name)).collect();
    let q = QuestionTerms::new(&r.topic, &room);
    r.transcript
        .iter()
        .filter_map(|e| {
            let who = r.agents.iter().position(|a| a.id == e.speaker_id)?;
            let f = line_flags(&e.text, &room[who], &room, &q);
            let mut tags = Vec::new();
            for (on, tag) in [
                (f.invented_speaker, "INVENTED"),
                (f.third_person, "THIRD"),
                (f.mid_sentence, "MID"),
                (!f.takes_up_question, "OFF-QUESTION"),
            ] {
                if on {
                    tags.push(tag);
                }
            }
            Some(format!("[t{} {}] {} {{{}}}", e.turn, e.speaker, e.text.replace('\n', " / "), tags.join(",")))
        })
        .collect()
}

fn pct(q: &TextQuality, n: u64) -> String {
    format!("{n} ({:.0}%)", 100.0 * q.share(n))
}

/// The README's table: one row per scenario and one for all of them.
fn table(rows: &[(String, TextQuality)], seeds: u64) -> String {
    let mut t = format!(
        "| scenario ({seeds} seeds) | lines | invented speaker | third person | near-dup own | near-dup across (turn) | mid-sentence | takes up the question |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    for (name, q) in rows {
        t.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
            q.replies,
            pct(q, q.invented_speaker),
            pct(q, q.third_person),
            pct(q, q.near_duplicate_own),
            pct(q, q.near_duplicate_across),
            pct(q, q.mid_sentence),
            pct(q, q.takes_up_question),
        ));
    }
    t
}
