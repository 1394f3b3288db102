//! `troupe scenario check`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use troupe_sim::config::scenario_layer;
use troupe_sim::scenario::{self, check::scenario_overrides};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Check a scenario against the persona database and config
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The scenario file (.ron)
    pub file: PathBuf,
    /// Also check this variant
    #[arg(long)]
    pub variant: Option<String>,
}

pub fn run(g: &GlobalArgs, cmd: ScenarioCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ScenarioCmd::Check(a) => check(g, a),
    }
}

fn check(g: &GlobalArgs, a: CheckArgs) -> anyhow::Result<ExitCode> {
    let s = scenario::load_scenario(&a.file)?;
    let names: Vec<Option<&str>> = match &a.variant {
        Some(v) => vec![Some(v.as_str())],
        None => std::iter::once(None).chain(s.variants.keys().map(|v| Some(v.as_str()))).collect(),
    };
    // Every variant is checked with its own config, since each may change turns, limits or
    // personas.
    for variant in names {
        let layer = scenario_layer(&a.file, &scenario_overrides(&s, variant))?;
        let cfg = super::load_config(g, Some(layer), &super::Flags::default())
            .map_err(|e| e.context(format!("variant {}", variant.unwrap_or("(none)"))))?
            .config;
        let db = scenario::database_for(&s, &a.file, variant, &cfg.simulation.personas_file)?;
        let r = scenario::resolve(
            &s,
            &a.file,
            &db,
            variant,
            cfg.simulation.max_turns,
            cfg.simulation.max_personas,
            cfg.simulation.run_seed,
        )?;
        println!(
            "ok: {}{}: {} persona(s), {} turn(s), {} intervention(s)",
            a.file.display(),
            variant.map(|v| format!(" (variant {v})")).unwrap_or_default(),
            r.personas.len(),
            cfg.simulation.max_turns,
            r.interventions.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
