//! `troupe run`: a scenario file, or the scenario-less single mode.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

use troupe_sim::config::CacheMode;
use troupe_sim::engine::resume::{self, Recording};
use troupe_sim::engine::{RunHandle, RunOptions, SimulationEngine, conversations_dir};
use troupe_sim::llm::cache::ResponseCache;
use troupe_sim::record::results::SimulationResults;
use troupe_sim::record::transcript::RunEvent;

use super::GlobalArgs;
use super::plan::PlanArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Re-run a recorded run from its journal, offline, without calling any provider
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["fork", "scenario", "personas"])]
    pub replay: Option<PathBuf>,
    /// Replay a recorded run's first turns (--at-turn) from its journal, then continue with
    /// this scenario (and --variant)
    #[arg(long, value_name = "RUN_DIR", requires = "at_turn")]
    pub fork: Option<PathBuf>,
    /// The last turn a fork takes from the recording
    #[arg(long, value_name = "N", requires = "fork")]
    pub at_turn: Option<u32>,
    /// Do not write any file
    #[arg(long)]
    pub no_save: bool,
    /// Do not stream the transcript or draw progress
    #[arg(long, short)]
    pub quiet: bool,
    /// Print results.json to stdout at the end
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,
    /// Spread the personas over the `troupe shard` processes of this NATS server (cluster.url);
    /// the world, the clock and the journal stay here
    #[arg(long, value_name = "URL", conflicts_with_all = ["replay", "fork"])]
    pub cluster: Option<String>,
    /// A sharded run waits for this many shards before it starts (on --cluster or cluster.url)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000), conflicts_with_all = ["replay", "fork"])]
    pub shards: Option<u16>,
    /// Seconds a sharded run waits for its shards to answer
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub shard_wait: f64,
}

pub fn run(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = a.replay.clone() {
        return super::block_on(replay(g, &dir, a))?;
    }
    let mut flags = a.plan.flags()?;
    a.metrics.apply(&mut flags);
    let (plan, cfg) = super::plan::load(g, &a.plan, &flags)?;
    // The runtime's threads suit the provider: a run that waits on a server needs one.
    let threads = troupe_sim::engine::runtime_threads(&cfg);
    super::block_on_threads(Some(threads), async move {
        let (tx, rx) = mpsc::unbounded_channel();
        super::logging::init(&cfg.monitoring, a.quiet)?;
        let exporter = super::metrics::start(&cfg.monitoring).await?;
        let code = start_and_drive(plan, cfg, &a, rx, tx).await;
        super::metrics::finish(exporter).await;
        code
    })?
}

/// `troupe run --replay DIR`.
async fn replay(g: &GlobalArgs, dir: &std::path::Path, a: RunArgs) -> anyhow::Result<ExitCode> {
    let (tx, rx) = mpsc::unbounded_channel();
    // The run folder is untrusted: logging and output follow the current configuration
    // (with this command's flags), the journal only supplies the simulation.
    let current = super::load_config(g, None, &a.plan.flags()?)?.config;
    super::logging::init(&current.monitoring, a.quiet)?;
    let rec = Recording::load(dir)?;
    let turns = rec.config_with(&current)?.simulation.max_turns;
    let save_under = (!a.no_save).then(|| conversations_dir(&current.output.output_dir));
    let opts =
        RunOptions { save_under, events: Some(tx), without_exchanges: true, process_ends: true, ..Default::default() };
    drive(resume::replay(dir, &current, opts).await?, rx, turns, &a.mode()).await
}

/// Starts a new run (or a fork) and shows it until it ends.
async fn start_and_drive(
    plan: troupe_sim::scenario::RunPlan,
    cfg: troupe_sim::config::SimulationConfig,
    a: &RunArgs,
    rx: mpsc::UnboundedReceiver<RunEvent>,
    tx: mpsc::UnboundedSender<RunEvent>,
) -> anyhow::Result<ExitCode> {
    let save_under = (!a.no_save).then(|| conversations_dir(&cfg.output.output_dir));
    let mut opts =
        RunOptions { save_under, events: Some(tx), without_exchanges: true, process_ends: true, ..Default::default() };
    let turns = cfg.simulation.max_turns;
    let sharded = match a.cluster.is_some() || a.shards.is_some() {
        true => {
            // The run id names the run's outcomes on the cluster, so it is chosen here.
            let now = chrono::Utc::now();
            let stream = troupe_sim::rng::Stream::RunId {
                instance: u64::from(std::process::id()),
                micros: now.timestamp_micros() as u64,
            };
            let suffix = troupe_sim::rng::derive(cfg.simulation.run_seed, stream);
            let rid = troupe_sim::record::results::run_id(&plan.name, now, suffix);
            let s = shard_over_cluster(a, &cfg, &rid).await?;
            opts.run_id = Some(rid);
            Some(s)
        }
        false => None,
    };
    if let Some(s) = &sharded {
        opts.remote = Some(s.remote.clone());
    }
    let handle = match (&a.fork, a.at_turn) {
        (Some(dir), Some(at)) => resume::fork(dir, at, plan, cfg, opts).await?,
        _ => {
            let mut engine = SimulationEngine::new(cfg.clone())?;
            if let Some(n) = engine.notice() {
                eprintln!("note: {n}");
            }
            if cfg.llm.cache != CacheMode::Off {
                let cache = ResponseCache::open(&cfg.llm.cache_file).with_context(|| {
                    format!("cannot open the response cache {} (llm.cache_file)", cfg.llm.cache_file.display())
                })?;
                let name = engine.provider().name().to_string();
                engine = engine.with_cache(Arc::new(cache), cfg.llm.cache, &name);
            }
            engine.start(plan, opts).await?
        }
    };
    let code = drive(handle, rx, turns, &a.mode()).await;
    if let Some(s) = sharded {
        report_sharded(s).await;
    }
    code
}

/// A sharded run needs the parallel policy.
pub fn check_parallel(cfg: &troupe_sim::config::SimulationConfig) -> anyhow::Result<()> {
    if cfg.simulation.policy() != troupe_sim::config::TurnPolicy::Parallel {
        return Err(super::UsageError(
            "a sharded run asks every persona of a turn at once: give --policy parallel (or set simulation.turn_policy = \"parallel\"); round-robin and random order make each persona wait for the one before".into(),
        )
        .into());
    }
    Ok(())
}

/// `--shard-wait` within bounds.
pub fn check_shard_wait(s: f64) -> anyhow::Result<()> {
    if !(s.is_finite() && (0.1..=3600.0).contains(&s)) {
        return Err(super::UsageError(format!("--shard-wait {s}: give 0.1 to 3600 seconds")).into());
    }
    Ok(())
}

/// Finds the shards of a sharded run and starts its carrier.
async fn shard_over_cluster(
    a: &RunArgs,
    cfg: &troupe_sim::config::SimulationConfig,
    run_id: &str,
) -> anyhow::Result<troupe_sim::cluster::sharding::Sharded> {
    check_parallel(cfg)?;
    check_shard_wait(a.shard_wait)?;
    let opts = troupe_sim::cluster::sharding::ShardingOptions {
        shards: a.shards.map(usize::from),
        wait: Duration::from_secs_f64(a.shard_wait),
        recorded: Default::default(),
    };
    shard_with(&a.cluster, run_id, opts, cfg).await
}

/// Checks the policy, connects and starts a sharded run's carrier (`run` and `resume`).
pub async fn shard_with(
    url: &Option<String>,
    run_id: &str,
    opts: troupe_sim::cluster::sharding::ShardingOptions,
    cfg: &troupe_sim::config::SimulationConfig,
) -> anyhow::Result<troupe_sim::cluster::sharding::Sharded> {
    let cluster = troupe_sim::cluster::Cluster::connect(url.as_deref(), &cfg.cluster, "troupe run").await?;
    let sharded = troupe_sim::cluster::sharding::start(cluster, run_id, cfg, opts).await?;
    eprintln!("sharded run over {} shard(s): {}", sharded.shards.len(), sharded.shards.join(", "));
    Ok(sharded)
}

/// After a sharded run: waits for its carrier and prints what it did.
pub async fn report_sharded(s: troupe_sim::cluster::sharding::Sharded) {
    drop(s.remote);
    match tokio::time::timeout(Duration::from_secs(30), s.task).await {
        Ok(Ok(r)) => eprintln!(
            "sharded over {} shard(s): {} part(s), {:.1} MB sent ({} bytes per persona act), {:.1} MB of outcomes ({} bytes per act), {} persona(s) placed, {} act(s) sent again, {} shard(s) lost",
            r.shards.len(),
            r.parts,
            r.bytes_sent as f64 / 1e6,
            r.bytes_sent / r.acts.max(1),
            r.bytes_received as f64 / 1e6,
            r.bytes_received / r.acts.max(1),
            r.placed,
            r.resent,
            r.shards_lost
        ),
        _ => eprintln!("note: the shards were not all told that the run ended; they drop it after 10 minutes"),
    }
}

/// How a run is shown.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// No transcript, no progress bar.
    pub quiet: bool,
    /// Print results.json at the end.
    pub json: bool,
}

impl RunArgs {
    fn mode(&self) -> Mode {
        Mode { quiet: self.quiet, json: self.json }
    }
}

/// Shows a run as it goes (transcript, progress, live metrics), stops it cleanly on Ctrl-C,
/// prints the outcome and maps it to an exit code.
pub async fn drive(
    handle: RunHandle,
    mut rx: mpsc::UnboundedReceiver<RunEvent>,
    turns: u32,
    mode: &Mode,
) -> anyhow::Result<ExitCode> {
    let interactive = !mode.quiet && !mode.json;
    let pb = if interactive { ProgressBar::new(turns as u64) } else { ProgressBar::hidden() };
    pb.set_style(
        ProgressStyle::with_template("{spinner} turn {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut stopping = false;
    // SIGTERM (a container runtime, systemd, a scheduler) stops a run like Ctrl-C: it saves.
    let mut term = super::Terminate::new();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    if interactive { show(&pb, &ev); }
                    if let RunEvent::TurnStarted { turn } = ev { pb.set_position(turn.saturating_sub(1) as u64); }
                    if matches!(ev, RunEvent::Finished(_)) { break; }
                }
                None => break,
            },
            _ = tick.tick() => {
                if let Some(m) = handle.metrics().await {
                    pb.set_message(format!(
                        "{} msgs | {} in flight | {} errors | p50 {:.0} ms | {} tokens | ${:.4}",
                        m.messages, m.in_flight, m.counts.errors, m.llm_latency.p50_ms, m.counts.total_tokens, m.counts.cost_usd
                    ));
                }
            },
            _ = tokio::signal::ctrl_c(), if !stopping => {
                stopping = true;
                pb.println("stopping: saving what the run has so far (Ctrl-C)");
                handle.stop();
            }
            _ = term.recv(), if !stopping => {
                stopping = true;
                pb.println("stopping: saving what the run has so far (SIGTERM)");
                handle.stop();
            }
        }
    }
    pb.finish_and_clear();
    let run_dir = handle.run_dir.clone();
    // Saving waits for calls still in flight (they are paid for); a second Ctrl-C abandons them.
    let results = tokio::select! {
        r = troupe_sim::review::finish(handle) => r?,
        _ = tokio::signal::ctrl_c(), if stopping => {
            eprintln!("abandoned: calls still in flight were not saved; `troupe resume` continues from the journal");
            return Ok(ExitCode::from(130));
        }
        _ = term.recv(), if stopping => {
            eprintln!("abandoned: calls still in flight were not saved; `troupe resume` continues from the journal");
            return Ok(ExitCode::from(143));
        }
    };
    let code = report(&results, run_dir.as_deref(), mode);
    // The process ends after this: freeing a long run's transcript entry by entry is work
    // nobody waits for.
    std::mem::forget(results);
    code
}

/// Prints the outcome (results.json with --json, else a summary and notes) and maps it to an
/// exit code. Errors show even with --quiet: a quiet run that failed must not look like one
/// that worked.
fn report(results: &SimulationResults, run_dir: Option<&std::path::Path>, mode: &Mode) -> anyhow::Result<ExitCode> {
    if mode.json {
        println!("{}", serde_json::to_string_pretty(results)?);
    } else {
        let m = &results.metrics;
        eprintln!(
            "{} after {} turn(s): {} messages, {} calls, {} errors, {} tokens, {:.2} s",
            if results.success { "finished" } else { "stopped" },
            results.completed_turns,
            m.total_messages,
            m.counts.api_calls,
            m.counts.errors,
            m.counts.total_tokens,
            m.duration
        );
        if let Some(n) = &results.notice {
            eprintln!("note: {n}");
        }
        for t in &results.prompt_trimmed {
            eprintln!(
                "note: persona {}: {} fact(s) left out of its prompt to fit {} tokens for {} (results.json `prompt_trimmed` lists them; raise llm.persona_budget_tokens to keep them)",
                t.persona,
                t.dropped.len(),
                t.budget_tokens,
                t.model
            );
        }
        if let Some(dir) = run_dir {
            eprintln!("saved: {}", dir.display());
        }
    }
    if let Some(e) = &results.error {
        eprintln!("error: {e}");
    } else if !results.success {
        eprintln!("error: the run stopped: {}", describe_stop(&results.stop_reason));
    }
    if let Some(e) = &results.analysis_error {
        eprintln!("error: {e}");
    }
    Ok(if results.success && results.analysis_error.is_none() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn describe_stop(r: &troupe_sim::record::transcript::StopReason) -> String {
    use troupe_sim::record::transcript::StopReason;
    match r {
        StopReason::Completed => "completed".into(),
        StopReason::Timeout => "it hit performance.timeout_seconds".into(),
        StopReason::Cancelled => "it was cancelled".into(),
        StopReason::CostLimit(m) | StopReason::Failed(m) => m.clone(),
    }
}

/// Prints transcript lines to stdout, above the progress bar (which lives on stderr).
fn show(pb: &ProgressBar, ev: &RunEvent) {
    let line = match ev {
        RunEvent::Message(e) => {
            let to = e.to.as_ref().map(|t| format!(" → {t}")).unwrap_or_default();
            format!("[{}] {}{to}: {}", e.turn, e.speaker, e.text)
        }
        RunEvent::Skipped(s) => format!("[{}] {} skipped: {}", s.turn, s.persona, s.reason),
        RunEvent::Passed { turn, persona } => format!("[{turn}] {persona} passes"),
        RunEvent::Intervention { turn, description } => format!("[{turn}] * {description}"),
        _ => return,
    };
    pb.suspend(|| println!("{line}"));
}
