//! `troupe shard --nats URL`: hosts personas of sharded runs (`troupe run --cluster URL`).

use std::process::ExitCode;

use clap::Args;
use troupe_sim::cluster::Cluster;
use troupe_sim::cluster::shard::{ShardOptions, run_shard};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct ShardArgs {
    /// The NATS server with JetStream (cluster.url), e.g. nats://10.0.0.5:4222
    #[arg(long)]
    pub nats: Option<String>,
    /// This shard's id: letters, digits, `_` or `-`, unique in the cluster [default: host name,
    /// process id and a random part]
    #[arg(long, env = "TROUPE_SHARD_ID")]
    pub id: Option<String>,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,
}

pub fn run(g: &GlobalArgs, a: ShardArgs) -> anyhow::Result<ExitCode> {
    super::block_on(run_async(g, a))?
}

async fn run_async(g: &GlobalArgs, a: ShardArgs) -> anyhow::Result<ExitCode> {
    let mut flags = super::Flags::default();
    a.metrics.apply(&mut flags);
    let cfg = super::load_config(g, None, &flags)?.config;
    super::logging::init_service(&cfg.monitoring)?;
    let id = match a.id.clone() {
        Some(id) => {
            troupe_sim::cluster::messages::check_id("shard id", &id)
                .map_err(|_| super::UsageError(format!("--id {id:?}: use 1 to 128 letters, digits, `_` or `-`")))?;
            id
        }
        None => default_id(),
    };
    let exporter = super::metrics::start(&cfg.monitoring).await?;
    let cluster = Cluster::connect(a.nats.as_deref(), &cfg.cluster, &format!("troupe shard {id}")).await?;
    eprintln!(
        "shard {id}: hosting personas of sharded runs on {}; Ctrl-C stops (a run going moves its personas to the other shards)",
        troupe_sim::llm::openai::display_url(&cluster.url),
    );
    let stop_rx = super::experiment::stop_on_signal_saying("stopping: this shard's personas move to the others");
    let stats = run_shard(cluster, cfg, ShardOptions { id: id.clone() }, stop_rx).await;
    super::metrics::finish(exporter).await;
    let stats = stats?;
    eprintln!(
        "shard {id}: {} run(s), {} persona act(s) asked, {} malformed part(s) refused",
        stats.runs, stats.acts, stats.rejected
    );
    Ok(ExitCode::SUCCESS)
}

/// The worker's default name (host and process id) and a random part: a shard restarted with
/// the same process id on the same host is still a new shard.
fn default_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{:05x}", super::worker::default_name(), nanos & 0xfffff)
}
