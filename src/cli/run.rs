//! `troupe run`: a scenario file, or the scenario-less single mode.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use troupe_sim::config::scenario_layer;
use troupe_sim::engine::{RunOptions, RunPlan, SimulationEngine, conversations_dir};
use troupe_sim::persona::PersonaDatabase;
use troupe_sim::scenario::{self, check::scenario_overrides};
use troupe_sim::transcript::RunEvent;

use super::{GlobalArgs, UsageError};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    RoundRobin,
    Parallel,
    RandomOrder,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario file (.ron); without it, give --seed and --personas
    pub scenario: Option<PathBuf>,
    /// Variant of the scenario to run
    #[arg(long)]
    pub variant: Option<String>,
    /// Discussion topic (simulation.seed)
    #[arg(long)]
    pub seed: Option<String>,
    /// Turns to run (simulation.max_turns)
    #[arg(long)]
    pub turns: Option<u32>,
    /// Persona ids, comma-separated (scenario-less mode)
    #[arg(long, value_delimiter = ',')]
    pub personas: Vec<String>,
    /// Model (llm.model)
    #[arg(long)]
    pub model: Option<String>,
    /// Temperature (llm.temperature)
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Turn policy (simulation.turn_policy)
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// Random seed that makes the run reproducible (simulation.run_seed)
    #[arg(long)]
    pub run_seed: Option<u64>,
    /// Concurrent LLM calls (performance.max_workers)
    #[arg(long)]
    pub max_workers: Option<usize>,
    /// Seconds between call starts, 0 to disable (performance.rate_limit_delay)
    #[arg(long)]
    pub rate_limit_delay: Option<f64>,
    /// Output folder (output.output_dir)
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Do not write any file
    #[arg(long)]
    pub no_save: bool,
    /// Do not stream the transcript or draw progress
    #[arg(long, short)]
    pub quiet: bool,
    /// Print results.json to stdout at the end
    #[arg(long)]
    pub json: bool,
    /// Also write logs to this file
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

impl RunArgs {
    fn sets(&self) -> Vec<String> {
        let mut s = Vec::new();
        let mut push = |k: &str, v: String| s.push(format!("{k}={v}"));
        if let Some(v) = &self.seed {
            push("simulation.seed", format!("\"{v}\""));
        }
        if let Some(v) = self.turns {
            push("simulation.max_turns", v.to_string());
        }
        if let Some(v) = &self.model {
            push("llm.model", format!("\"{v}\""));
        }
        if let Some(v) = self.temperature {
            push("llm.temperature", v.to_string());
        }
        if let Some(p) = self.policy {
            let name = match p {
                PolicyArg::RoundRobin => "RoundRobin",
                PolicyArg::Parallel => "Parallel",
                PolicyArg::RandomOrder => "RandomOrder",
            };
            push("simulation.turn_policy", name.into());
        }
        if let Some(v) = self.run_seed {
            push("simulation.run_seed", v.to_string());
        }
        if let Some(v) = self.max_workers {
            push("performance.max_workers", v.to_string());
        }
        if let Some(v) = self.rate_limit_delay {
            push("performance.rate_limit_delay", v.to_string());
        }
        if let Some(v) = &self.output_dir {
            push("output.output_dir", format!("\"{}\"", v.display()));
        }
        if let Some(v) = &self.log_file {
            push("monitoring.log_file", format!("\"{}\"", v.display()));
        }
        s
    }
}

pub fn run(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(run_async(g, a))
}

async fn run_async(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    let (plan, cfg) = match &a.scenario {
        Some(path) => {
            if !a.personas.is_empty() {
                return Err(UsageError(
                    "--personas is for runs without a scenario; list personas in the scenario file instead".into(),
                )
                .into());
            }
            let s = scenario::load_scenario(path)?;
            let layer = scenario_layer(path, &scenario_overrides(&s, a.variant.as_deref()))?;
            let cfg = super::load_config(g, Some(layer), &a.sets())?.config;
            let db = PersonaDatabase::load(&cfg.simulation.personas_file)?;
            let resolved = scenario::resolve(
                &s,
                path,
                &db,
                a.variant.as_deref(),
                cfg.simulation.max_turns,
                cfg.simulation.max_personas,
                cfg.simulation.run_seed,
            )?;
            (RunPlan::from_scenario(resolved, &cfg.simulation.seed), cfg)
        }
        None => {
            if a.variant.is_some() {
                return Err(UsageError("--variant needs a scenario file".into()).into());
            }
            let cfg = super::load_config(g, None, &a.sets())?.config;
            if a.personas.is_empty() {
                return Err(UsageError(
                    "give a scenario file, or --seed \"topic\" and --personas id1,id2 (see `troupe personas list`)"
                        .into(),
                )
                .into());
            }
            if cfg.simulation.seed.trim().is_empty() {
                return Err(UsageError("give the discussion topic with --seed \"...\"".into()).into());
            }
            let db = PersonaDatabase::load(&cfg.simulation.personas_file)?;
            let mut chosen = Vec::new();
            for id in &a.personas {
                match db.get(id) {
                    Some(p) => chosen.push(p.clone()),
                    None => {
                        let ids: Vec<&str> = db.personas.iter().map(|p| p.id.as_str()).collect();
                        let hint = scenario::did_you_mean(id, &ids)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        return Err(UsageError(format!(
                            "unknown persona id `{id}`{hint}; `troupe personas list` shows the ids"
                        ))
                        .into());
                    }
                }
            }
            if chosen.len() > cfg.simulation.max_personas {
                return Err(UsageError(format!(
                    "{} personas but simulation.max_personas is {}; raise it with --set simulation.max_personas=N",
                    chosen.len(),
                    cfg.simulation.max_personas
                ))
                .into());
            }
            (RunPlan::ad_hoc(&cfg.simulation.seed, chosen), cfg)
        }
    };
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
                        "{} msgs | {} in flight | {} errors | p50 {:.0} ms | {} tokens",
                        m.messages, m.in_flight, m.errors, m.llm_latency.p50_ms, m.total_tokens
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
