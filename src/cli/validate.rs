//! `troupe validate`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use troupe_sim::persona::{PersonaDatabase, validate_database};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Persona file or folder [default: simulation.personas_file]
    #[arg(long, value_name = "PATH")]
    pub personas_file: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Show errors only
    #[arg(long)]
    pub errors_only: bool,
}

pub fn run(g: &GlobalArgs, a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let path = match a.personas_file {
        Some(p) => p,
        None => super::load_config(g, None, &super::Flags::default())?.config.simulation.personas_file,
    };
    let db = match PersonaDatabase::load(&path) {
        Ok(db) => db,
        Err(e) if a.json => {
            let out = serde_json::json!({"valid": false, "readable": false, "error": e.to_string()});
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let mut report = validate_database(&db);
    if a.errors_only {
        report.findings.retain(|f| f.severity == troupe_sim::persona::Severity::Error);
    }
    if a.json {
        let out = serde_json::json!({
            "valid": report.is_valid(),
            "readable": true,
            "personas": report.personas,
            "files": report.files,
            "fragments": db.fragments.len(),
            "errors": report.errors(),
            "warnings": report.warnings(),
            "findings": report.findings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        println!(
            "{}: {} persona(s) in {} file(s), {} fragment(s): {} error(s), {} warning(s)",
            if report.is_valid() { "valid" } else { "INVALID" },
            report.personas,
            report.files,
            db.fragments.len(),
            report.errors(),
            report.warnings()
        );
    }
    Ok(if report.is_valid() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
