//! `troupe analyze RUN_DIR`: writes `analysis.json` (and the SVG charts) into a saved run's
//! folder and prints a short summary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use troupe_sim::analysis;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A run folder (outputs/conversations/<run-id>/) or its results.json
    pub run_dir: PathBuf,
    /// Do not draw the SVG charts
    #[arg(long)]
    pub no_charts: bool,
    /// Print analysis.json to stdout instead of the summary
    #[arg(long)]
    pub json: bool,
    /// Also have a judge model score each persona's messages against its own facts: one call
    /// per persona through the configured provider (paid with a paid model), saved under
    /// `in_character` in analysis.json
    #[arg(long)]
    pub in_character: bool,
    /// The judge model for --in-character [default: validation.judge_model, else the run's model]
    #[arg(long, value_name = "MODEL", requires = "in_character")]
    pub judge_model: Option<String>,
    /// Use the built-in simulated provider for --in-character (offline; word overlap, not a
    /// model's judgement)
    #[arg(long, requires = "in_character")]
    pub simulated: bool,
}

pub fn run(g: &GlobalArgs, a: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let results = analysis::load_run(&a.run_dir)?;
    let dir = results.run_dir.clone().unwrap_or_else(|| a.run_dir.clone());
    // Writes into the run folder: only while no other troupe process owns it.
    let _lock = troupe_sim::fsutil::DirLock::acquire(&dir, "troupe analyze")?;
    // A judged section already paid for survives a new analysis unless it is judged again.
    let previous = if a.in_character { None } else { analysis::saved_in_character(&dir) };
    let (mut analysis, files) = analysis::save_analysis(&results, &dir, !a.no_charts)?;
    if a.in_character {
        analysis.in_character = Some(in_character(g, &a, &results, &dir)?);
        analysis::write_analysis(&analysis, &results, &dir, false)?;
    } else if let Some(ic) = previous {
        analysis.in_character = Some(ic);
        analysis::write_analysis(&analysis, &results, &dir, false)?;
        eprintln!("kept the in_character section of the previous analysis (--in-character judges again)");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&analysis)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} ({})", results.run_id, results.scenario);
    for line in analysis::summary_lines(&analysis) {
        println!("{line}");
    }
    eprintln!("wrote {}", files.analysis.display());
    for c in &files.charts {
        eprintln!("wrote {}", c.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Judges each persona's messages: the personas as the run's journal recorded them (else as the
/// current database has them), the provider and budget of the current configuration.
fn in_character(
    g: &GlobalArgs,
    a: &AnalyzeArgs,
    results: &troupe_sim::record::results::SimulationResults,
    dir: &std::path::Path,
) -> anyhow::Result<troupe_sim::analysis::in_character::InCharacter> {
    use std::sync::Arc;
    use troupe_sim::persona::PersonaDatabase;

    let mut cfg = super::load_config(g, None, &super::Flags::default())?.config;
    if let Some(m) = &a.judge_model {
        if m.trim().is_empty() {
            return Err(super::UsageError("--judge-model is empty: name a model, or leave the flag out".into()).into());
        }
        cfg.validation.judge_model = Some(m.trim().to_string());
    }
    let personas = match troupe_sim::record::journal::read_journal(&dir.join(troupe_sim::record::journal::FILE_NAME)) {
        Ok(j) => j.header.plan.all_personas(),
        Err(e) => {
            let db = PersonaDatabase::load(&cfg.simulation.personas_file)?;
            eprintln!(
                "note: the run's journal cannot be read ({e}); its personas are taken from {} by id",
                cfg.simulation.personas_file.display()
            );
            results.agents.iter().filter_map(|ag| db.get(&ag.id).cloned()).collect()
        }
    };
    let provider: Arc<dyn troupe_sim::llm::Provider> = if a.simulated {
        Arc::new(troupe_sim::llm::SimulatedProvider::new(cfg.llm.simulated.clone()))
    } else {
        let (p, notice) = troupe_sim::llm::provider_from_config(&cfg).map_err(|e| super::UsageError(e.to_string()))?;
        if let Some(n) = notice {
            eprintln!("note: {n}");
        }
        p
    };
    let pricing =
        troupe_sim::cost::Pricing::load(&cfg.llm.pricing_file).map_err(|e| super::UsageError(e.to_string()))?;
    let caller = troupe_sim::validation::Caller::new(provider.clone(), &cfg, pricing);
    let model = cfg.validation.judge_model_or(&results.config.model).to_string();
    eprintln!("judging {} persona(s) in character with {model} through {}", personas.len(), provider.name());
    let ic =
        super::block_on(troupe_sim::validation::in_character::judge_run(&caller, &cfg, &personas, results, &model))?;
    eprintln!(
        "{} call(s), {} tokens, ${:.4}{}",
        ic.calls,
        ic.usage.total(),
        ic.cost_usd,
        if ic.synthetic { " (synthetic text is free)" } else { "" }
    );
    Ok(ic)
}
