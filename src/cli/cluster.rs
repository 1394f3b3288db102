//! The coordinator's commands: `troupe experiment SCENARIO --cluster URL [--detach]` and
//! `troupe experiment collect ID --cluster URL`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use troupe_sim::cluster::Cluster;
use troupe_sim::cluster::coordinator::{self, Pending, Progress};
use troupe_sim::config::SimulationConfig;
use troupe_sim::experiment::{self, ExperimentSpec, ScenarioPlanner};

use super::experiment::{CollectArgs, ExperimentArgs, print_outcome};
use super::{GlobalArgs, UsageError};

fn wait_for(secs: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 30.0 * 24.0 * 3600.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(UsageError(format!("--wait {s}: give a number of seconds above 0 (at most 30 days)")).into()),
    }
}

/// Queues the experiment's runs and, unless detached, gathers them.
pub async fn experiment_on_cluster(
    a: &ExperimentArgs,
    base: &SimulationConfig,
    spec: &ExperimentSpec,
    planner: &ScenarioPlanner,
) -> anyhow::Result<ExitCode> {
    let wait = wait_for(a.wait)?;
    let cluster = Cluster::connect(a.cluster.as_deref(), &base.cluster, "troupe experiment").await?;
    let prepared = experiment::prepare(spec, planner)?;
    let pending = coordinator::queue(&cluster, spec, &prepared).await?;
    let url = troupe_sim::llm::openai::display_url(&cluster.url);
    eprintln!("queued {} run(s) of experiment {} on {url}", pending.queued.len(), pending.id);
    if a.detach {
        println!("{}", pending.id);
        eprintln!("gather them with: troupe experiment collect {} --cluster {url}", pending.id);
        return Ok(ExitCode::SUCCESS);
    }
    gather(&cluster, &pending, &spec.dir, wait, a.quiet || a.json, a.json).await
}

/// `troupe experiment collect ID`.
pub async fn collect_cmd(g: &GlobalArgs, c: &CollectArgs) -> anyhow::Result<ExitCode> {
    troupe_sim::cluster::messages::check_id("experiment id", &c.id)
        .map_err(|_| UsageError(format!("{:?} is not an experiment id (the folder name under experiments/)", c.id)))?;
    let wait = wait_for(c.wait)?;
    let mut flags = super::Flags::default();
    flags.output.output_dir = c.output_dir.clone();
    let cfg = super::load_config(g, None, &flags)?.config;
    super::logging::init(&cfg.monitoring, c.quiet || c.json)?;
    let dir = cfg.output.output_dir.join("experiments").join(&c.id);
    let pending = coordinator::read_pending(&dir)?;
    let cluster = Cluster::connect(c.cluster.as_deref(), &cfg.cluster, "troupe experiment collect").await?;
    gather(&cluster, &pending, &dir, wait, c.quiet || c.json, c.json).await
}

async fn gather(
    cluster: &Cluster,
    pending: &Pending,
    dir: &Path,
    wait: Option<Duration>,
    quiet: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pb = if quiet { ProgressBar::hidden() } else { ProgressBar::new(pending.queued.len() as u64) };
    pb.set_style(
        ProgressStyle::with_template("{spinner} runs {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    let mut show = |p: &Progress| {
        pb.set_position(p.done as u64);
        let running: Vec<String> = p.running.iter().map(|(w, n)| format!("{w}: {n}")).collect();
        let queued = p.total - p.done - p.running.values().sum::<usize>();
        pb.set_message(format!(
            "{queued} queued, {} failed | running: {}",
            p.failed,
            if running.is_empty() { "-".into() } else { running.join(", ") }
        ));
    };
    let (summary, files) = coordinator::collect(cluster, pending, dir, wait, &mut show).await?;
    pb.finish_and_clear();
    let spec = coordinator::spec_of(pending, dir);
    print_outcome(&summary, &files, &spec, json)?;
    if summary.stopped {
        eprintln!(
            "error: {} of {} run(s) reported before the wait ended; the report covers those. Gather the rest with: troupe experiment collect {} --cluster URL",
            summary.runs.len(),
            pending.queued.len(),
            pending.id
        );
    }
    let all_ok = summary.runs.iter().all(|r| r.success) && !summary.stopped;
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
