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
}

pub fn run(_g: &GlobalArgs, a: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let results = analysis::load_run(&a.run_dir)?;
    let dir = results.run_dir.clone().unwrap_or_else(|| a.run_dir.clone());
    // Writes into the run folder: only while no other troupe process owns it.
    let _lock = troupe_sim::fsutil::DirLock::acquire(&dir, "troupe analyze")?;
    let (analysis, files) = analysis::save_analysis(&results, &dir, !a.no_charts)?;
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
