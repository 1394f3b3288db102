//! `troupe resume`: continues an interrupted run from its journal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use troupe_sim::engine::RunOptions;
use troupe_sim::resume::{self, Recording};

use super::GlobalArgs;
use super::run::{Mode, drive};

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run's folder (outputs/conversations/<run-id>)
    pub run_dir: PathBuf,
    /// Do not stream the transcript or draw progress
    #[arg(long, short)]
    pub quiet: bool,
    /// Print results.json to stdout at the end
    #[arg(long)]
    pub json: bool,
}

pub fn run(_g: &GlobalArgs, a: ResumeArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(async {
        let rec = Recording::load(&a.run_dir)?;
        let _log_guard = super::logging::init(&rec.header.config.monitoring, a.quiet)?;
        if !a.quiet && !a.json {
            eprintln!(
                "resuming {}: {} recorded exchange(s) will be replayed without calling the provider{}",
                rec.header.run_id,
                rec.exchanges.len(),
                if rec.torn { " (a torn last journal line was ignored)" } else { "" }
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = match resume::resume(&a.run_dir, RunOptions { events: Some(tx), ..Default::default() }).await {
            Ok(h) => h,
            Err(troupe_sim::engine::EngineError::AlreadyComplete(dir)) => {
                eprintln!("{} already ran to its last turn; nothing to resume", dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(e.into()),
        };
        drive(handle, rx, rec.header.config.simulation.max_turns, &Mode { quiet: a.quiet, json: a.json }).await
    })
}
