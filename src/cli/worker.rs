//! `troupe worker --nats URL`: makes experiment runs from a NATS JetStream queue.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use troupe_sim::cluster::Cluster;
use troupe_sim::cluster::worker::{WorkerOptions, run_worker};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The NATS server with JetStream (cluster.url), e.g. nats://10.0.0.5:4222
    #[arg(long)]
    pub nats: Option<String>,
    /// Runs at once (performance.max_parallel_runs)
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Where runs are made before their files are sent [default: output.output_dir/worker]
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// This worker's name in reports and progress [default: host name and process id]
    #[arg(long, env = "TROUPE_WORKER_NAME")]
    pub name: Option<String>,
    /// Stop after this many runs (batch jobs); default: until Ctrl-C or SIGTERM
    #[arg(long)]
    pub max_runs: Option<u64>,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,
}

pub fn run(g: &GlobalArgs, a: WorkerArgs) -> anyhow::Result<ExitCode> {
    super::block_on(run_async(g, a))?
}

async fn run_async(g: &GlobalArgs, a: WorkerArgs) -> anyhow::Result<ExitCode> {
    let mut flags = super::Flags::default();
    flags.performance.max_parallel_runs = a.max_parallel;
    a.metrics.apply(&mut flags);
    let cfg = super::load_config(g, None, &flags)?.config;
    super::logging::init_service(&cfg.monitoring)?;
    let exporter = super::metrics::start(&cfg.monitoring).await?;
    let name = a.name.clone().unwrap_or_else(default_name);
    let cluster = Cluster::connect(a.nats.as_deref(), &cfg.cluster, &format!("troupe worker {name}")).await?;
    let opts = WorkerOptions {
        name: name.clone(),
        max_parallel: cfg.performance.max_parallel_runs.max(1),
        work_dir: a.work_dir.clone().unwrap_or_else(|| cfg.output.output_dir.join("worker")),
        max_runs: a.max_runs,
    };
    eprintln!(
        "worker {name}: taking runs from {} ({} at once, lease {} s); Ctrl-C finishes the runs going and stops",
        troupe_sim::llm::openai::display_url(&cluster.url),
        opts.max_parallel,
        cfg.cluster.lease_seconds
    );
    let stop_rx = super::experiment::stop_on_signal_saying("stopping: finishing the runs going; no new run is taken");
    let stats = run_worker(cluster, cfg, opts, stop_rx).await;
    super::metrics::finish(exporter).await;
    let stats = stats?;
    eprintln!(
        "worker {name}: {} run(s) reported ({} resumed from another worker's journal), {} discarded as stale, {} handed back",
        stats.reported, stats.resumed, stats.discarded, stats.handed_back
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
    format!("{}-{}", if host.is_empty() { "worker" } else { &host }, std::process::id())
}
