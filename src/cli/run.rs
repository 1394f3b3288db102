//! `troupe run`: a scenario file, or the scenario-less single mode.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use troupe_sim::engine::{RunOptions, SimulationEngine, conversations_dir};
use troupe_sim::transcript::RunEvent;

use super::GlobalArgs;
use super::plan::PlanArgs;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Do not write any file
    #[arg(long)]
    pub no_save: bool,
    /// Do not stream the transcript or draw progress
    #[arg(long, short)]
    pub quiet: bool,
    /// Print results.json to stdout at the end
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(run_async(g, a))
}

async fn run_async(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    let (plan, cfg) = super::plan::load(g, &a.plan, &[])?;
    let _log_guard = super::logging::init(&cfg.monitoring, a.quiet)?;
    let engine = SimulationEngine::new(cfg.clone())?;
    if let Some(n) = engine.notice() {
        eprintln!("note: {n}");
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let save_under = (!a.no_save).then(|| conversations_dir(&cfg.output.output_dir));
    let handle = engine.start(plan, RunOptions { save_under, events: Some(tx) }).await?;
    let interactive = !a.quiet && !a.json;
    let turns = cfg.simulation.max_turns as u64;
    let pb = if interactive { ProgressBar::new(turns) } else { ProgressBar::hidden() };
    pb.set_style(
        ProgressStyle::with_template("{spinner} turn {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut stopping = false;
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
                        m.messages, m.in_flight, m.errors, m.llm_latency.p50_ms, m.total_tokens, m.cost_usd
                    ));
                }
            },
            _ = tokio::signal::ctrl_c(), if !stopping => {
                stopping = true;
                pb.println("stopping: saving what the run has so far (Ctrl-C)");
                handle.stop();
            }
        }
    }
    pb.finish_and_clear();
    let run_dir = handle.run_dir.clone();
    let results = handle.wait().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        let m = &results.metrics;
        eprintln!(
            "{} after {} turn(s): {} messages, {} calls, {} errors, {} tokens, {:.2} s",
            if results.success { "finished" } else { "stopped" },
            results.completed_turns,
            m.total_messages,
            m.api_calls,
            m.errors,
            m.total_tokens,
            m.duration
        );
        if let Some(n) = &results.notice {
            eprintln!("note: {n}");
        }
        if let Some(dir) = run_dir {
            eprintln!("saved: {}", dir.display());
        }
    }
    if let Some(e) = &results.error {
        eprintln!("error: {e}");
    }
    Ok(if results.success { ExitCode::SUCCESS } else { ExitCode::from(1) })
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
