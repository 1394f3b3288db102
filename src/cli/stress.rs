//! `troupe stress`: runs a scenario once per `max_workers` setting and reports throughput,
//! latency, errors and cost per setting, names the best one, and writes `stress.json`,
//! `stress.csv` and `stress.svg`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use troupe_sim::stress::{self, Progress, StressOptions, StressReport};

use super::plan::PlanArgs;
use super::{GlobalArgs, UsageError};

#[derive(Debug, Args)]
pub struct StressArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// max_workers settings to try, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64", value_name = "N,N,...")]
    pub workers: Vec<usize>,
    /// Client-side requests per minute (llm.requests_per_minute)
    #[arg(long, value_name = "N")]
    pub rpm: Option<u32>,
    /// Client-side tokens per minute (llm.tokens_per_minute)
    #[arg(long, value_name = "N")]
    pub tpm: Option<u32>,
    /// Run about N calls per setting instead of the scenario's turns
    #[arg(long, value_name = "N")]
    pub calls: Option<u64>,
    /// Print stress.json to stdout instead of the table
    #[arg(long)]
    pub json: bool,
    /// Folder for the report [default: output_dir/stress/<id>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Make the load from `troupe worker`s on this NATS JetStream server (cluster.url)
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// With --cluster: how many workers make each setting's load together, at the same moment
    /// (a setting of 32 on 4 machines: 8 calls in flight from each)
    #[arg(long, value_name = "K", default_value_t = 1, requires = "cluster")]
    pub machines: usize,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,
}

impl StressArgs {
    fn check(&self) -> Result<(), UsageError> {
        if self.plan.max_workers.is_some() {
            return Err(UsageError(
                "--max-workers is what stress varies; list the settings with --workers 1,2,4".into(),
            ));
        }
        if self.workers.is_empty() || self.workers.contains(&0) {
            return Err(UsageError("--workers needs positive numbers, e.g. --workers 1,2,4,8".into()));
        }
        if self.calls == Some(0) {
            return Err(UsageError("--calls 0 runs nothing; give a positive number or leave it out".into()));
        }
        if self.calls.is_some() && self.plan.turns.is_some() {
            return Err(UsageError("--calls sets the number of turns; give --calls or --turns, not both".into()));
        }
        Ok(())
    }

    /// The plan's flags with the budgets, and no pacing unless asked for.
    fn flags(&self) -> Result<super::Flags, UsageError> {
        let mut f = self.plan.flags()?;
        f.llm.requests_per_minute = self.rpm;
        f.llm.tokens_per_minute = self.tpm;
        f.performance.rate_limit_delay = Some(self.plan.rate_limit_delay.unwrap_or(0.0));
        self.metrics.apply(&mut f);
        Ok(f)
    }
}

const STRESS_WORKERS_HELP: &str = "Concurrent calls (workers) of the stress setting running; 0 after the sweep.";

pub fn run(g: &GlobalArgs, a: StressArgs) -> anyhow::Result<ExitCode> {
    a.check()?;
    super::block_on(run_async(g, a))?
}

async fn run_async(g: &GlobalArgs, a: StressArgs) -> anyhow::Result<ExitCode> {
    let (plan, cfg) = super::plan::load(g, &a.plan, &a.flags()?)?;
    // Retries are the point of the exercise: only errors reach the terminal (the log file,
    // when configured, gets everything).
    super::logging::init(&cfg.monitoring, true)?;
    let opts = StressOptions { workers: a.workers.clone(), calls: a.calls };
    let exporter = super::metrics::start(&cfg.monitoring).await?;
    // One trace for the sweep: its settings' runs (here or on workers) hang from this span.
    let span = tracing::info_span!("stress", scenario = %plan.name, settings = a.workers.len());
    let report = tracing::Instrument::instrument(sweep(&a, &cfg, &plan, &opts, exporter.as_ref()), span).await;
    if let Some(e) = &exporter {
        e.show_setting("troupe_stress_workers", STRESS_WORKERS_HELP, 0.0);
    }
    super::metrics::finish(exporter).await;
    let report = report?;
    let dir = a.out.clone().unwrap_or_else(|| stress::report_dir(&cfg.output.output_dir, &report));
    stress::save_report(&report, &dir)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    eprintln!("saved: {} (stress.json, stress.csv, stress.svg)", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs every setting (here or on the cluster), drawing progress; the setting being run is
/// also a gauge on `/metrics`.
async fn sweep(
    a: &StressArgs,
    cfg: &troupe_sim::config::SimulationConfig,
    plan: &troupe_sim::scenario::RunPlan,
    opts: &StressOptions,
    exporter: Option<&troupe_sim::monitoring::MetricsExporter>,
) -> anyhow::Result<StressReport> {
    let pb = ProgressBar::new(a.workers.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{spinner} setting {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut on_progress = |p: Progress<'_>| match p {
        Progress::Started { index, workers, .. } => {
            if let Some(e) = exporter {
                e.show_setting(
                    "troupe_stress_workers",
                    "Concurrent calls (workers) of the stress setting running.",
                    workers as f64,
                );
            }
            pb.set_position(index as u64);
            pb.set_message(format!("{workers} worker(s): starting"));
        }
        Progress::Live { workers, metrics: m } => pb.set_message(format!(
            "{workers} worker(s): {} calls | {} in flight | {} errors | p99 {:.0} ms",
            m.counts.api_calls, m.in_flight, m.counts.errors, m.llm_latency.p99_ms
        )),
        Progress::Finished { index, total, result: r } => {
            pb.set_position(index as u64 + 1);
            pb.suspend(|| {
                eprintln!(
                    "[{}/{total}] {} worker(s): {} calls in {:.2} s, {:.1} calls/s, p99 {:.0} ms, {} error(s), {} skipped",
                    index + 1,
                    r.workers,
                    r.calls,
                    r.wall_s,
                    r.calls_per_s,
                    r.p99_ms,
                    r.errors,
                    r.skipped_turns
                )
            });
        }
    };
    let report = match &a.cluster {
        Some(url) => {
            if a.machines == 0 || a.machines > 1024 {
                return Err(UsageError("--machines: give 1 to 1024 workers".into()).into());
            }
            let cluster = troupe_sim::cluster::Cluster::connect(Some(url), &cfg.cluster, "troupe stress").await?;
            troupe_sim::cluster::stress::run_stress_on_cluster(&cluster, cfg, plan, opts, a.machines, &mut on_progress)
                .await?
        }
        None => stress::run_stress(cfg, plan, opts, &mut on_progress).await?,
    };
    pb.finish_and_clear();
    Ok(report)
}

fn print_table(r: &StressReport) {
    println!(
        "{} on {} ({}), {} persona(s), {} turn(s), {:?} policy",
        r.scenario, r.provider, r.model, r.personas, r.turns, r.policy
    );
    println!(
        "{:>8} {:>8} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>5} {:>7} {:>7} {:>10}",
        "WORKERS",
        "WALL S",
        "CALLS",
        "CALLS/S",
        "TOKENS/S",
        "P50 MS",
        "P90 MS",
        "P99 MS",
        "ERRORS",
        "429S",
        "RETRIES",
        "SKIPPED",
        "COST USD"
    );
    for s in &r.settings {
        let mark = if r.best_workers == Some(s.workers) { "*" } else { " " };
        let cost = match s.cost_usd {
            Some(c) if s.cost_estimated => format!("~{c:.4}"),
            Some(c) => format!("{c:.4}"),
            None => "unpriced".into(),
        };
        println!(
            "{mark}{:>7} {:>8.2} {:>7} {:>9.1} {:>9.0} {:>8.0} {:>8.0} {:>8.0} {:>7} {:>5} {:>7} {:>7} {cost:>10}",
            s.workers,
            s.wall_s,
            s.calls,
            s.calls_per_s,
            s.tokens_per_s,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.errors,
            s.rate_limited,
            s.retries,
            s.skipped_turns
        );
        if let Some(e) = &s.error {
            println!("{:>8} run ended early: {e}", "");
        }
    }
    match r.best_workers {
        Some(w) => println!("\nbest: {w} worker(s) (marked *): {}", r.best_rule),
        None => println!("\nbest: none ({})", r.best_rule),
    }
    println!("calls/s counts answered calls per second of wall time; ~ marks an estimated cost");
    for n in &r.notes {
        println!("note: {n}");
    }
}
