//! `troupe export RUN_DIR --format json|jsonl|csv|markdown|html [--out FILE]`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use troupe_sim::{analysis, export};

use super::GlobalArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Jsonl,
    Csv,
    Markdown,
    Html,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Markdown => "markdown",
            Format::Html => "html",
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run folder (outputs/conversations/<run-id>/) or its results.json
    pub run_dir: PathBuf,
    /// Output format
    #[arg(long, short, value_enum)]
    pub format: Format,
    /// Output file, or - for stdout [default: RUN_DIR/export.<extension>]
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

pub fn run(_g: &GlobalArgs, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let results = analysis::load_run(&a.run_dir)?;
    let analysis = analysis::analyze_conversation(&results);
    let exporter = export::exporter(a.format.name())?;
    let dir = results.run_dir.clone().unwrap_or_else(|| a.run_dir.clone());
    match a.out {
        Some(p) if p.as_os_str() == "-" => {
            let bytes = exporter.export(&results, &analysis)?;
            std::io::stdout().lock().write_all(&bytes).context("could not write to stdout")?;
        }
        out => {
            // Into the run folder only while no other troupe process owns it.
            let _lock = match &out {
                None => Some(troupe_sim::fsutil::DirLock::acquire(&dir, "troupe export")?),
                Some(_) => None,
            };
            let path = out.unwrap_or_else(|| dir.join(format!("export.{}", exporter.extension())));
            export::export_to_file(exporter.as_ref(), &results, &analysis, &path)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
