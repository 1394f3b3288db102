//! `troupe config show`

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use troupe_sim::config::{self, KeySource};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the merged configuration and where each value came from
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalArgs, cmd: ConfigCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCmd::Show(a) => show(g, a),
    }
}

fn show(g: &GlobalArgs, a: ShowArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load_config(g, None, &[])?;
    let entries = loaded.entries();
    let key = config::resolve_api_key(&loaded.config, Path::new(config::secrets::SECRETS_FILE), "OPENAI_API_KEY");
    let key_line = match &key.source {
        KeySource::SecretsFile(p) => {
            format!("found in {} ({})", p.display(), config::secret::REDACTED)
        }
        KeySource::Env(v) => format!("found in ${v} ({})", config::secret::REDACTED),
        KeySource::Config => format!("found in the config file ({})", config::secret::REDACTED),
        KeySource::Missing => "not set (not needed for the simulated provider)".to_string(),
    };
    if a.json {
        let out = serde_json::json!({"entries": entries, "api_key": key_line, "notes": loaded.notes, "warnings": key.warnings});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let kw = entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
    let vw = entries.iter().map(|e| e.value.len()).max().unwrap_or(0).min(40);
    let mut section = "";
    for e in &entries {
        let s = e.key.split('.').next().unwrap_or("");
        if s != section {
            println!("[{s}]");
            section = s;
        }
        println!("  {:kw$} = {:vw$}  # {}", e.key, e.value, e.source);
    }
    println!("api key: {key_line}");
    for n in loaded.notes.iter().chain(&key.warnings) {
        println!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}
