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
    let loaded = super::load_config_quiet(g, None, &super::Flags::default())?;
    let entries = loaded.entries();
    // The key of the provider the config selects (Azure's has two names).
    let choice = troupe_sim::llm::choose_provider(&loaded.config);
    let key = config::secrets::resolve_api_key_from(
        &loaded.config,
        Path::new(config::secrets::SECRETS_FILE),
        choice.key_vars,
    );
    let key_line = match &key.source {
        KeySource::SecretsFile(p) => {
            format!("found in {} ({})", p.display(), config::secret::REDACTED)
        }
        KeySource::Env(v) => format!("found in ${v} ({})", config::secret::REDACTED),
        KeySource::Config => format!("found in the config file ({})", config::secret::REDACTED),
        KeySource::Missing => format!(
            "not set (looked in {} and ${}; not needed for the local or simulated provider)",
            config::secrets::SECRETS_FILE,
            choice.key_vars.join(", $")
        ),
    };
    if a.json {
        let provider = provider_name(choice.kind, loaded.config.llm.provider);
        let out = serde_json::json!({"entries": entries, "provider": {"chosen": provider, "why": choice.why}, "api_key": key_line, "notes": loaded.notes, "warnings": key.warnings});
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
    println!("provider: {} ({})", provider_name(choice.kind, loaded.config.llm.provider), choice.why);
    println!("api key: {key_line}");
    for n in loaded.notes.iter().chain(&key.warnings) {
        println!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn provider_name(chosen: config::ProviderKind, asked: config::ProviderKind) -> &'static str {
    use config::ProviderKind::*;
    match (chosen, asked) {
        (OpenAi, _) => "openai",
        (Azure, _) => "azure",
        (Simulated, _) => "simulated",
        // For `auto`: the local model when it can run, else the simulated provider.
        (Local | Auto, Auto) => "local, else simulated",
        (Local | Auto, _) => "local",
    }
}
