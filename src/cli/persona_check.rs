//! `troupe personas check`: interviews a persona through the configured provider and has a
//! judge model score the answers against expectations and the persona's own facts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use troupe_sim::config::SimulationConfig;
use troupe_sim::config::limits::MAX_QUESTIONS;
use troupe_sim::persona::validate::{Severity, check_persona};
use troupe_sim::persona::{PersonaDatabase, PersonaSpec};
use troupe_sim::scenario::{self, MAX_EXPECTATION_CHARS, ResolvedAction, check::scenario_overrides};
use troupe_sim::validation::Caller;
use troupe_sim::validation::check::{
    CheckOptions, PersonaCheck, check_persona as run_check, default_path, report_lines, save_json,
};

use super::{GlobalArgs, UsageError};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Persona id; with --scenario, only this one of the scenario's personas
    pub id: Option<String>,
    /// What you expect of the persona, in a sentence or two, e.g. "a cautious hospital
    /// administrator who distrusts cloud-only tools" (without it, and without a scenario's
    /// expectations, the persona is held to its own facts alone)
    #[arg(long, value_name = "TEXT")]
    pub expect: Option<String>,
    /// A scenario file: its personas (fragments applied) and its `expectations`; without ID,
    /// every persona with expectations is checked
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Variant of the scenario
    #[arg(long, requires = "scenario")]
    pub variant: Option<String>,
    /// Interview questions, 1 to 12 [default: validation.questions, 5]
    #[arg(long, value_name = "N")]
    pub questions: Option<usize>,
    /// The judge model [default: validation.judge_model, else llm.model]
    #[arg(long, value_name = "MODEL")]
    pub judge_model: Option<String>,
    /// Seed of the interview's questions and of the sampling [default: simulation.run_seed]
    #[arg(long, value_name = "N")]
    pub run_seed: Option<u64>,
    /// Pass mark, 0.0 to 1.0: a lower score exits 1 [default: validation.min_score, 0.7]
    #[arg(long, value_name = "SCORE")]
    pub min_score: Option<f64>,
    /// Fragment file(s) to deep-merge into the persona, in order
    #[arg(long = "fragment", value_name = "FILE")]
    pub fragments: Vec<PathBuf>,
    /// Persona file or folder [default: simulation.personas_file]
    #[arg(long, value_name = "PATH")]
    pub personas_file: Option<PathBuf>,
    /// Use the built-in simulated provider (offline and deterministic; its score is word overlap,
    /// not a model's judgement)
    #[arg(long)]
    pub simulated: bool,
    /// Print the result as JSON instead of the report
    #[arg(long)]
    pub json: bool,
    /// Save the JSON here [default: output_dir/checks/<persona>-<timestamp>.json]; with several
    /// personas the file holds a list
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// One persona to check, with what it is checked against.
struct Target {
    persona: PersonaSpec,
    expectations: Option<String>,
    expectations_from: Option<String>,
    source: String,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Flag values that clap cannot check, checked before anything is read or asked.
fn check_flags(a: &CheckArgs) -> anyhow::Result<()> {
    if let Some(n) = a.questions
        && !(1..=MAX_QUESTIONS).contains(&n)
    {
        return Err(usage(format!("--questions {n}: ask between 1 and {MAX_QUESTIONS} questions")));
    }
    if let Some(m) = a.min_score
        && !(m.is_finite() && (0.0..=1.0).contains(&m))
    {
        return Err(usage(format!("--min-score {m}: use a score between 0.0 and 1.0")));
    }
    if let Some(e) = &a.expect {
        if e.trim().is_empty() {
            return Err(usage(
                "--expect is empty: say what you expect of the persona, e.g. --expect \"a cautious nurse who distrusts alarms\"",
            ));
        }
        if e.chars().count() > MAX_EXPECTATION_CHARS {
            return Err(usage(format!(
                "--expect has {} characters; keep it under {MAX_EXPECTATION_CHARS} (a few sentences a judge can check claim by claim)",
                e.chars().count()
            )));
        }
    }
    if a.judge_model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(usage("--judge-model is empty: name a model, or leave the flag out to use llm.model"));
    }
    if a.scenario.is_none() && a.id.is_none() {
        return Err(usage(
            "name the persona to check (`troupe personas list` shows the ids), or give --scenario FILE to check every persona with expectations",
        ));
    }
    if a.scenario.is_some() && a.id.is_none() && a.expect.is_some() {
        return Err(usage(
            "--expect applies to one persona: name it (troupe personas check ID --scenario FILE --expect ...)",
        ));
    }
    Ok(())
}

fn unknown_persona(id: &str, known: &[&str], place: &str) -> anyhow::Error {
    let hint = scenario::did_you_mean(id, known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
    usage(format!("no persona `{id}` in {place}{hint}"))
}

fn apply_fragments(mut p: PersonaSpec, fragments: &[PathBuf]) -> anyhow::Result<PersonaSpec> {
    for f in fragments {
        let fdb = PersonaDatabase::load(f)?;
        let Some(frag) = fdb.fragments.first() else {
            return Err(usage(format!(
                "{} is not a fragment file (expected {{\"type\": \"Fragment\", \"persona\": {{...}}}})",
                f.display()
            )));
        };
        p = troupe_sim::persona::apply_fragment(&p, frag)?;
    }
    Ok(p)
}

/// The config (with the scenario's overrides) and the personas to check.
fn targets(g: &GlobalArgs, a: &CheckArgs) -> anyhow::Result<(SimulationConfig, Vec<Target>)> {
    let from_expect = || a.expect.as_ref().map(|_| "--expect".to_string());
    let Some(path) = &a.scenario else {
        let mut cfg = super::load_config(g, None, &[])?.config;
        if let Some(p) = &a.personas_file {
            cfg.simulation.personas_file = p.clone();
        }
        let file = cfg.simulation.personas_file.clone();
        let db = PersonaDatabase::load(&file)?;
        let id = a.id.as_deref().unwrap_or_default();
        let Some(p) = db.get(id).cloned() else {
            let ids: Vec<&str> = db.personas.iter().map(|p| p.id.as_str()).collect();
            return Err(unknown_persona(id, &ids, &file.display().to_string()));
        };
        let p = apply_fragments(p, &a.fragments)?;
        let t = Target {
            persona: p,
            expectations: a.expect.clone(),
            expectations_from: from_expect(),
            source: file.display().to_string(),
        };
        return Ok((cfg, vec![t]));
    };
    let s = scenario::load_scenario(path)?;
    let layer = troupe_sim::config::scenario_layer(path, &scenario_overrides(&s, a.variant.as_deref()))?;
    let mut cfg = super::load_config(g, Some(layer), &[])?.config;
    if let Some(p) = &a.personas_file {
        cfg.simulation.personas_file = p.clone();
    }
    let db = PersonaDatabase::load(&cfg.simulation.personas_file)?;
    let resolved = scenario::resolve(
        &s,
        path,
        &db,
        a.variant.as_deref(),
        cfg.simulation.max_turns,
        cfg.simulation.max_personas,
        cfg.simulation.run_seed,
    )?;
    let mut everyone = resolved.personas.clone();
    for iv in &resolved.interventions {
        if let ResolvedAction::AddPersona(p) = &iv.action {
            everyone.push((**p).clone());
        }
    }
    let source = format!("scenario {}", path.display());
    let from_scenario = Some(format!("scenario {}", path.display()));
    let chosen: Vec<Target> = match &a.id {
        Some(id) => {
            let Some(p) = everyone.iter().find(|p| &p.id == id).cloned() else {
                let ids: Vec<&str> = everyone.iter().map(|p| p.id.as_str()).collect();
                return Err(unknown_persona(id, &ids, &source));
            };
            let (expectations, expectations_from) = match &a.expect {
                Some(e) => (Some(e.clone()), from_expect()),
                None => (resolved.expectations.get(id).cloned(), from_scenario.clone()),
            };
            vec![Target { persona: apply_fragments(p, &a.fragments)?, expectations, expectations_from, source }]
        }
        None => {
            let mut v = Vec::new();
            for p in everyone.iter().filter(|p| resolved.expectations.contains_key(&p.id)) {
                v.push(Target {
                    persona: apply_fragments(p.clone(), &a.fragments)?,
                    expectations: resolved.expectations.get(&p.id).cloned(),
                    expectations_from: from_scenario.clone(),
                    source: source.clone(),
                });
            }
            if v.is_empty() {
                return Err(usage(format!(
                    "{} has no `expectations`; add `expectations: {{\"persona_id\": \"what you expect of it\"}}` (see scenarios/README.md), or name a persona ID and give --expect",
                    path.display()
                )));
            }
            v
        }
    };
    Ok((cfg, chosen))
}

pub fn run(g: &GlobalArgs, a: CheckArgs) -> anyhow::Result<ExitCode> {
    check_flags(&a)?;
    let (mut cfg, targets) = targets(g, &a)?;
    apply_flags(&mut cfg, &a);
    refuse_invalid(&targets)?;
    let provider = provider(&a, &cfg)?;
    let pricing = troupe_sim::cost::Pricing::load(&cfg.llm.pricing_file).map_err(|e| usage(e.to_string()))?;
    let caller = Caller::new(provider.clone(), &cfg, pricing);
    let judge_model = cfg.validation.judge_model_or(&cfg.llm.model).to_string();
    if cfg.llm.max_cost_usd.is_some() {
        note_unpriced(&caller, &cfg, &targets, &judge_model);
    }
    if provider.synthetic() {
        eprintln!(
            "note: the simulated provider answers and judges: its score measures word overlap between the expectations and the answers, not a model's judgement"
        );
    }
    let checks = run_checks(&caller, &cfg, targets, &a.fragments, &judge_model)?;
    // Saved first, so a result is kept even when printing fails (a closed pipe).
    let saved = save(&a, &cfg, &checks)?;
    print(&a, &checks)?;
    let spend = caller.spend();
    eprintln!(
        "{} call(s), {} tokens ({} in, {} out), ${:.4}{}",
        spend.calls,
        spend.usage.total(),
        spend.usage.prompt_tokens,
        spend.usage.completion_tokens,
        spend.cost_usd,
        if provider.synthetic() { " (synthetic text is free)" } else { "" }
    );
    for p in &saved {
        eprintln!("saved: {}", p.display());
    }
    let passed = checks.iter().filter(|c| c.passed()).count();
    if checks.len() > 1 {
        eprintln!("{passed} of {} persona(s) passed", checks.len());
    }
    Ok(if passed == checks.len() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The flags that override config values.
fn apply_flags(cfg: &mut SimulationConfig, a: &CheckArgs) {
    if let Some(seed) = a.run_seed {
        cfg.simulation.run_seed = seed;
    }
    if let Some(n) = a.questions {
        cfg.validation.questions = n;
    }
    if let Some(m) = a.min_score {
        cfg.validation.min_score = m;
    }
    if let Some(m) = &a.judge_model {
        cfg.validation.judge_model = Some(m.trim().to_string());
    }
}

/// A persona the runtime would refuse is refused here too, with the same findings.
fn refuse_invalid(targets: &[Target]) -> anyhow::Result<()> {
    for t in targets {
        let errors: Vec<String> = check_persona(&t.persona)
            .into_iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| format!("  {}: {} (hint: {})", i.field, i.message, i.hint))
            .collect();
        if !errors.is_empty() {
            return Err(usage(format!(
                "persona `{}` is not valid, so it cannot be checked:\n{}\n(`troupe validate` checks the whole database)",
                t.persona.id,
                errors.join("\n")
            )));
        }
    }
    Ok(())
}

/// The simulated provider with `--simulated`, else the configured one.
fn provider(a: &CheckArgs, cfg: &SimulationConfig) -> anyhow::Result<Arc<dyn troupe_sim::llm::Provider>> {
    if a.simulated {
        return Ok(Arc::new(troupe_sim::llm::SimulatedProvider::new(cfg.llm.simulated.clone())));
    }
    let (p, notice) = troupe_sim::llm::provider_from_config(cfg).map_err(|e| usage(e.to_string()))?;
    if let Some(n) = notice {
        eprintln!("note: {n}");
    }
    Ok(p)
}

/// Under a budget, says which models have no price (their calls count as $0, so the budget
/// cannot stop them).
fn note_unpriced(caller: &Caller, cfg: &SimulationConfig, targets: &[Target], judge_model: &str) {
    let models = targets.iter().map(|t| t.persona.model.clone().unwrap_or_else(|| cfg.llm.model.clone()));
    for m in models.chain(std::iter::once(judge_model.to_string())).collect::<std::collections::BTreeSet<_>>() {
        if !caller.priced(&m) {
            eprintln!(
                "note: {m} has no price in {}, so its calls count as $0 and llm.max_cost_usd cannot stop them",
                cfg.llm.pricing_file.display()
            );
        }
    }
}

/// Checks each target in turn.
fn run_checks(
    caller: &Caller,
    cfg: &SimulationConfig,
    targets: Vec<Target>,
    fragments: &[PathBuf],
    judge_model: &str,
) -> anyhow::Result<Vec<PersonaCheck>> {
    let rt = super::runtime()?;
    let mut checks: Vec<PersonaCheck> = Vec::new();
    for t in targets {
        eprintln!(
            "checking {}: {} question(s) to {} through {}, then the judge ({judge_model})",
            t.persona.id,
            cfg.validation.questions,
            t.persona.model.as_deref().unwrap_or(&cfg.llm.model),
            caller.provider().name()
        );
        let opts = CheckOptions {
            expectations: t.expectations,
            expectations_from: t.expectations_from,
            questions: cfg.validation.questions,
            judge_model: judge_model.to_string(),
            min_score: cfg.validation.min_score,
            source: t.source,
            fragments: fragments.iter().map(|f| f.display().to_string()).collect(),
        };
        checks.push(rt.block_on(run_check(caller, cfg, &t.persona, &opts)));
    }
    Ok(checks)
}

/// Saves the results: all in `--out`, else each in its default file. Returns the files.
fn save(a: &CheckArgs, cfg: &SimulationConfig, checks: &[PersonaCheck]) -> anyhow::Result<Vec<PathBuf>> {
    let mut saved = Vec::new();
    match &a.out {
        Some(out) => {
            let r = if checks.len() == 1 { save_json(out, &checks[0]) } else { save_json(out, &checks) };
            r.with_context(|| {
                format!("could not save the result to {}; check that its folder is writable", out.display())
            })?;
            saved.push(out.clone());
        }
        None => {
            for c in checks {
                let path = default_path(&cfg.output.output_dir, c);
                save_json(&path, c).with_context(|| {
                    format!(
                        "could not save the result to {}; check that output.output_dir is writable, or pass --out FILE",
                        path.display()
                    )
                })?;
                saved.push(path);
            }
        }
    }
    Ok(saved)
}

/// Prints the results: JSON with `--json`, else the report of each.
fn print(a: &CheckArgs, checks: &[PersonaCheck]) -> anyhow::Result<()> {
    if a.json {
        let text = if checks.len() == 1 {
            serde_json::to_string_pretty(&checks[0])?
        } else {
            serde_json::to_string_pretty(&checks)?
        };
        println!("{text}");
    } else {
        for (k, c) in checks.iter().enumerate() {
            if k > 0 {
                println!();
            }
            for line in report_lines(c) {
                println!("{line}");
            }
        }
    }
    Ok(())
}
