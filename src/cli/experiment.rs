//! `troupe experiment SCENARIO --variants baseline,creative --runs 3 [--parallel]`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use troupe_sim::experiment::{
    self, ExperimentEvent, ExperimentFiles, ExperimentSpec, ExperimentSummary, ScenarioPlanner,
};

use super::{GlobalArgs, UsageError};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExperimentArgs {
    /// Gather an experiment queued on a cluster
    #[command(subcommand)]
    pub action: Option<ExperimentAction>,
    /// Scenario file (.ron) whose variants are compared
    #[arg(required = true)]
    pub scenario: Option<PathBuf>,
    /// Queue the runs on this NATS JetStream server for `troupe worker`s (cluster.url) and
    /// gather their results here
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// With --cluster: queue the runs and return; `troupe experiment collect ID` gathers later
    #[arg(long, requires = "cluster")]
    pub detach: bool,
    /// With --cluster: wait at most this many seconds for the runs (the report then covers the
    /// runs done, and `collect` can gather the rest later)
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<f64>,
    /// Variants to compare, comma-separated; "baseline" is the scenario as written
    /// [default: the scenario's experiment.variants]
    #[arg(long, value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Runs per variant [default: the scenario's experiment.runs, else 3]
    #[arg(long)]
    pub runs: Option<usize>,
    /// Run several runs at once (performance.max_parallel_runs at a time)
    #[arg(long)]
    pub parallel: bool,
    /// Runs at once with --parallel (performance.max_parallel_runs)
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// The experiment seed every run seed derives from (simulation.run_seed)
    #[arg(long)]
    pub run_seed: Option<u64>,
    /// Turns per run (simulation.max_turns)
    #[arg(long)]
    pub turns: Option<u32>,
    /// Output folder (output.output_dir); the experiment goes to <it>/experiments/<id>/
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Blind the variants in the report (labels A, B, ... revealed at the end)
    #[arg(long)]
    pub blind: bool,
    /// Do not draw progress
    #[arg(long, short)]
    pub quiet: bool,
    /// Print summary.json to stdout at the end
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,
}

/// `troupe experiment collect`.
#[derive(Debug, clap::Subcommand)]
pub enum ExperimentAction {
    /// Gather the runs of an experiment queued with --cluster and write its report
    Collect(CollectArgs),
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The experiment id (its folder name under output_dir/experiments/)
    pub id: String,
    /// The NATS server the runs were queued on (cluster.url)
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// Output folder (output.output_dir) holding experiments/<id>/
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Wait at most this many seconds for the runs
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<f64>,
    /// Do not draw progress
    #[arg(long, short)]
    pub quiet: bool,
    /// Print summary.json to stdout at the end
    #[arg(long)]
    pub json: bool,
}

/// The most runs per variant.
const MAX_RUNS: usize = 10_000;

pub fn run(g: &GlobalArgs, a: ExperimentArgs) -> anyhow::Result<ExitCode> {
    super::block_on(run_async(g, a))?
}

async fn run_async(g: &GlobalArgs, a: ExperimentArgs) -> anyhow::Result<ExitCode> {
    if let Some(ExperimentAction::Collect(c)) = &a.action {
        return super::cluster::collect_cmd(g, c).await;
    }
    let Some(scenario) = a.scenario.clone() else {
        return Err(UsageError("give a scenario file: troupe experiment SCENARIO --variants a,b".into()).into());
    };
    let mut flags = super::Flags::default();
    flags.simulation.run_seed = a.run_seed;
    flags.simulation.max_turns = a.turns;
    flags.performance.max_parallel_runs = a.max_parallel;
    flags.output.output_dir = a.output_dir.clone();
    a.metrics.apply(&mut flags);
    let sources = super::sources(g, None, &flags)?;
    // The planner loads the config once per variant; its notes are shown once, here.
    if let Ok(loaded) = troupe_sim::config::load_config(&sources) {
        for n in &loaded.notes {
            eprintln!("note: {n}");
        }
    }
    let planner = ScenarioPlanner::new(&scenario, sources)?;
    let s = planner.scenario();
    let (variants, runs) = variants_and_runs(&planner, &a)?;
    let base = planner.config(None)?;
    super::logging::init(&base.monitoring, a.quiet || a.json)?;
    let seed = base.simulation.run_seed;
    let id = experiment::experiment_id(&s.name, chrono::Utc::now(), seed);
    let stop_rx = stop_on_signal();
    let spec = ExperimentSpec {
        scenario: s.name.clone(),
        variants,
        runs,
        parallel: a.parallel,
        max_parallel: base.performance.max_parallel_runs.max(1),
        seed,
        dir: base.output.output_dir.join("experiments").join(&id),
        assignment: s.experiment.assignment,
        blind: a.blind || s.experiment.blind,
        extract: s.extract.clone(),
        stop: Some(stop_rx),
    };
    let exporter = super::metrics::start(&base.monitoring).await?;
    // One trace for the experiment: its runs' spans (here or on workers) hang from this one.
    let span = tracing::info_span!("experiment", id = %id, scenario = %spec.scenario);
    let code = tracing::Instrument::instrument(run_spec(&a, &base, &spec, &planner), span).await;
    super::metrics::finish(exporter).await;
    code
}

/// Runs the experiment here or on the cluster, shows its progress and outcome.
async fn run_spec(
    a: &ExperimentArgs,
    base: &troupe_sim::config::SimulationConfig,
    spec: &ExperimentSpec,
    planner: &ScenarioPlanner,
) -> anyhow::Result<ExitCode> {
    let runs = spec.runs;
    if a.cluster.is_some() || a.detach {
        return super::cluster::experiment_on_cluster(a, base, spec, planner).await;
    }
    let total = (spec.variants.len() * runs) as u64;
    let pb = if a.quiet || a.json { ProgressBar::hidden() } else { ProgressBar::new(total) };
    let (tx, rx) = mpsc::unbounded_channel();
    let (res, ()) = tokio::join!(experiment::run_experiment(spec, planner, Some(tx)), show_progress(&pb, rx));
    pb.finish_and_clear();
    let (summary, files) = res?;
    print_outcome(&summary, &files, spec, a.json)?;
    if summary.stopped {
        eprintln!("error: the experiment was stopped before all its runs were made; the report covers the runs made");
    }
    let all_ok = summary.runs.iter().all(|r| r.success) && !summary.stopped;
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The variants to compare and the runs of each: the flags', else the scenario's `experiment`
/// section; fewer than two variants or a run count out of range is a usage error.
fn variants_and_runs(planner: &ScenarioPlanner, a: &ExperimentArgs) -> anyhow::Result<(Vec<String>, usize)> {
    let s = planner.scenario();
    let variants = if a.variants.is_empty() { s.experiment.variants.clone() } else { a.variants.clone() };
    if variants.len() < 2 {
        return Err(UsageError(format!(
            "give at least two variants to compare, e.g. --variants baseline,{} (\"baseline\" is the scenario as written)",
            s.variants.keys().next().map(String::as_str).unwrap_or("other")
        ))
        .into());
    }
    planner.check_variants(&variants).map_err(UsageError)?;
    let runs = a.runs.or(s.experiment.runs).unwrap_or(3);
    if runs == 0 || runs > MAX_RUNS {
        return Err(UsageError(format!(
            "--runs must be between 1 and {MAX_RUNS} (3 or more for statistics); got {runs}"
        ))
        .into());
    }
    Ok((variants, runs))
}

/// Ctrl-C or SIGTERM: the runs going save what they have, no new run starts, and the summary
/// covers the runs made.
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    stop_on_signal_saying("stopping: the runs going save what they have; no new run starts")
}

/// A receiver that turns true on Ctrl-C or SIGTERM, after `note` is printed.
pub(super) fn stop_on_signal_saying(note: &'static str) -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = super::Terminate::new();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("{note}");
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Draws the experiment's progress from its events until the channel closes.
async fn show_progress(pb: &ProgressBar, mut rx: mpsc::UnboundedReceiver<ExperimentEvent>) {
    pb.set_style(
        ProgressStyle::with_template("{spinner} runs {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut messages = 0u64;
    let mut failed = 0u64;
    while let Some(ev) = rx.recv().await {
        match ev {
            ExperimentEvent::RunStarted { run } => {
                running.insert(run);
            }
            ExperimentEvent::Message { .. } => messages += 1,
            ExperimentEvent::Extracting { run } => {
                running.insert(format!("{run} (extracting)"));
                running.remove(&run);
            }
            ExperimentEvent::RunFinished { run, success, .. } => {
                running.remove(&run);
                running.remove(&format!("{run} (extracting)"));
                failed += u64::from(!success);
                pb.inc(1);
            }
        }
        let now: Vec<&str> = running.iter().map(String::as_str).collect();
        pb.set_message(format!(
            "{messages} messages, {failed} failed | running: {}",
            if now.is_empty() { "-".into() } else { now.join(", ") }
        ));
    }
}

/// Prints the summary (JSON with `--json`, else the findings and where the files are).
pub(super) fn print_outcome(
    summary: &ExperimentSummary,
    files: &ExperimentFiles,
    spec: &ExperimentSpec,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        eprintln!(
            "{} runs of {} variant(s) done, {} completed",
            summary.runs.len(),
            summary.variants.len(),
            summary.runs.iter().filter(|r| r.success).count()
        );
        if summary.findings.is_empty() {
            eprintln!("no difference reached p < 0.05");
        }
        for f in &summary.findings {
            eprintln!("- {f}");
        }
        if summary.blind {
            let key: Vec<String> = summary.labels.iter().map(|(l, v)| format!("{l} = {v}")).collect();
            eprintln!("unblinded: {}", key.join(", "));
        }
        eprintln!("saved: {}", spec.dir.display());
        eprintln!("report: {}", files.html.display());
    }
    Ok(())
}
