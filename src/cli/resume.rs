//! `troupe resume`: continues an interrupted run from its journal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio::sync::mpsc;
use troupe_sim::engine::RunOptions;
use troupe_sim::engine::resume::{self, Recording, ResumePermissions};

use super::GlobalArgs;
use super::run::{Mode, drive};

#[derive(Debug, Args)]
#[command(after_help = "A run folder is untrusted input: its place and id come from the folder, and the provider, \
endpoints, keys, log file and output settings come from your current configuration (--config, --set), never from \
the journal. From the journal only the simulation's own settings are taken (model, sampling, turns, seeds).")]
pub struct ResumeArgs {
    /// The run's folder (outputs/conversations/<run-id>)
    pub run_dir: PathBuf,
    /// Continue even when the current configuration sends new calls to another provider or
    /// server than the recorded ones
    #[arg(long)]
    pub allow_provider_change: bool,
    /// Do not stream the transcript or draw progress
    #[arg(long, short)]
    pub quiet: bool,
    /// Print results.json to stdout at the end
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalArgs, a: ResumeArgs) -> anyhow::Result<ExitCode> {
    let current = super::load_config(g, None, &super::Flags::default())?.config;
    super::block_on(async {
        let _log_guard = super::logging::init(&current.monitoring, a.quiet)?;
        let rec = Recording::load(&a.run_dir)?;
        let config = rec.config_with(&current)?;
        if !a.quiet && !a.json {
            eprintln!(
                "resuming {}: {} recorded exchange(s) will be replayed without calling the provider{}",
                rec.run_id,
                rec.exchanges.len(),
                if rec.torn { " (a torn last journal line was ignored)" } else { "" }
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let allow = ResumePermissions { provider_change: a.allow_provider_change };
        let opts = RunOptions { events: Some(tx), ..Default::default() };
        let handle = match resume::resume(&a.run_dir, &current, allow, opts).await {
            Ok(h) => h,
            Err(troupe_sim::engine::EngineError::AlreadyComplete(dir)) => {
                eprintln!("{} already ran to its last turn; nothing to resume", dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(e.into()),
        };
        drive(handle, rx, config.simulation.max_turns, &Mode { quiet: a.quiet, json: a.json }).await
    })?
}
