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
    /// Continue a sharded run on the `troupe shard`s of this NATS server (cluster.url): the
    /// recorded exchanges travel with the acts and are answered again without paying
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// Wait for this many shards before continuing (on --cluster or cluster.url)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub shards: Option<u16>,
    /// Seconds to wait for the shards to answer
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub shard_wait: f64,
}

pub fn run(g: &GlobalArgs, a: ResumeArgs) -> anyhow::Result<ExitCode> {
    let current = super::load_config(g, None, &super::Flags::default())?.config;
    super::block_on(async {
        super::logging::init(&current.monitoring, a.quiet)?;
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
        let mut opts =
            RunOptions { events: Some(tx), without_exchanges: true, process_ends: true, ..Default::default() };
        let sharded = match a.cluster.is_some() || a.shards.is_some() {
            true => {
                super::run::check_parallel(&config)?;
                super::run::check_shard_wait(a.shard_wait)?;
                let so = troupe_sim::cluster::sharding::ShardingOptions {
                    shards: a.shards.map(usize::from),
                    wait: std::time::Duration::from_secs_f64(a.shard_wait),
                    recorded: troupe_sim::cluster::sharding::ShardingOptions::recorded_from(&rec.exchanges),
                };
                Some(super::run::shard_with(&a.cluster, &rec.run_id, so, &config).await?)
            }
            false => None,
        };
        if let Some(s) = &sharded {
            opts.remote = Some(s.remote.clone());
        }
        let handle = match resume::resume(&a.run_dir, &current, allow, opts).await {
            Ok(h) => h,
            Err(troupe_sim::engine::EngineError::AlreadyComplete(dir)) => {
                eprintln!("{} already ran to its last turn; nothing to resume", dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(e.into()),
        };
        let code = drive(handle, rx, config.simulation.max_turns, &Mode { quiet: a.quiet, json: a.json }).await;
        if let Some(s) = sharded {
            super::run::report_sharded(s).await;
        }
        code
    })?
}
