//! Command-line arguments and dispatch. Each command lives in its own file under `cli/`.

mod analyze;
mod cluster;
mod config_cmd;
mod doctor;
mod estimate;
mod experiment;
mod export;
mod flags;
pub mod logging;
mod metrics;
mod model;
mod persona_check;
mod personas;
mod plan;
mod resume;
mod run;
mod scenario_cmd;
mod serve;
mod shard;
mod stress;
mod top;
mod validate;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use flags::Flags;
use troupe_sim::config::{self, ConfigSources, Layer, LoadedConfig};

/// troupe: run persona-based multi-agent LLM simulations.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments. `--set` may appear before and after the subcommand;
    /// clap would keep only the occurrences after it, so every occurrence is gathered here, in
    /// order (a later one for the same key wins).
    pub fn parse_args() -> Cli {
        let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let mut cli = Cli::parse_from(&raw);
        cli.global.sets = every_set(&raw);
        cli
    }
}

/// Every `--set VALUE` and `--set=VALUE` before a `--`, in order.
fn every_set(args: &[std::ffi::OsString]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--set" {
            out.extend(it.next().map(|v| v.into_owned()));
        } else if let Some(v) = a.strip_prefix("--set=") {
            out.push(v.to_string());
        }
    }
    out
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML config file [default: config/troupe.toml when it exists]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TinyTroupe config.ini [default: config/config.ini when it exists]
    #[arg(long, global = true, value_name = "FILE")]
    pub config_ini: Option<PathBuf>,
    /// Override any config key, e.g. --set llm.temperature=0.2 (repeatable)
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a simulation from a scenario file, or from --topic and --personas
    Run(Box<run::RunArgs>),
    /// Estimate calls, tokens and cost before running
    Estimate(Box<estimate::EstimateArgs>),
    /// Continue an interrupted run from its journal, without paying again for recorded calls
    Resume(resume::ResumeArgs),
    /// Check the persona database against every rule
    Validate(validate::ValidateArgs),
    /// List and inspect personas
    #[command(subcommand)]
    Personas(personas::PersonasCmd),
    /// Work with scenario files
    #[command(subcommand)]
    Scenario(scenario_cmd::ScenarioCmd),
    /// Show the merged configuration
    #[command(subcommand)]
    Config(config_cmd::ConfigCmd),
    /// Check that everything a run needs is in place (config, personas, disk, provider, key)
    Doctor(doctor::DoctorArgs),
    /// Run a scenario once per concurrency setting and compare throughput and latency
    Stress(Box<stress::StressArgs>),
    /// Fetch and list the embedded local model
    #[command(subcommand)]
    Model(model::ModelCmd),
    /// Analyse a saved run: analysis.json and SVG charts in its folder, and a summary
    Analyze(analyze::AnalyzeArgs),
    /// Export a saved run as json, jsonl, csv, markdown or html
    Export(export::ExportArgs),
    /// Run a scenario's variants several times each and compare them with statistics
    Experiment(Box<experiment::ExperimentArgs>),
    /// Serve the web app: build personas, run and watch simulations, explore and export results
    Serve(serve::ServeArgs),
    /// Make experiment runs from a NATS JetStream queue (see `troupe experiment --cluster`)
    Worker(worker::WorkerArgs),
    /// Watch a running simulation or stress sweep live in the terminal, from its --metrics-addr
    Top(top::TopArgs),
    /// Host personas of sharded runs from a NATS server (see `troupe run --cluster`)
    Shard(shard::ShardArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run::run(&cli.global, *a),
        Command::Estimate(a) => estimate::run(&cli.global, *a),
        Command::Resume(a) => resume::run(&cli.global, a),
        Command::Validate(a) => validate::run(&cli.global, a),
        Command::Personas(c) => personas::run(&cli.global, c),
        Command::Scenario(c) => scenario_cmd::run(&cli.global, c),
        Command::Config(c) => config_cmd::run(&cli.global, c),
        Command::Doctor(a) => doctor::run(&cli.global, a),
        Command::Analyze(a) => analyze::run(&cli.global, a),
        Command::Export(a) => export::run(&cli.global, a),
        Command::Experiment(a) => experiment::run(&cli.global, *a),
        Command::Stress(a) => stress::run(&cli.global, *a),
        Command::Model(c) => model::run(&cli.global, c),
        Command::Serve(a) => serve::run(&cli.global, a),
        Command::Worker(a) => worker::run(&cli.global, a),
        Command::Top(a) => top::run(&cli.global, a),
        Command::Shard(a) => shard::run(&cli.global, a),
    }
}

/// Loads the layered config with the global flags and, optionally, a scenario layer and the
/// command's own flags. Its notes (an unknown `config.ini` key, a key in the config file, ...)
/// go to stderr, so no command ignores them silently.
pub fn load_config(g: &GlobalArgs, scenario: Option<Layer>, flags: &Flags) -> anyhow::Result<LoadedConfig> {
    let loaded = load_config_quiet(g, scenario, flags)?;
    for n in &loaded.notes {
        eprintln!("note: {n}");
    }
    Ok(loaded)
}

/// As [`load_config`], leaving the notes to the caller (`config show` and `doctor` list them).
pub fn load_config_quiet(g: &GlobalArgs, scenario: Option<Layer>, flags: &Flags) -> anyhow::Result<LoadedConfig> {
    Ok(config::load_config(&sources(g, scenario, flags)?)?)
}

/// Where the config comes from: the files the global flags name, the scenario's layer, the
/// environment, and the command line (the command's flags, then every `--set`).
pub fn sources(g: &GlobalArgs, scenario: Option<Layer>, flags: &Flags) -> anyhow::Result<ConfigSources> {
    Ok(ConfigSources {
        toml: g.config.clone(),
        ini: g.config_ini.clone(),
        scenario,
        env: true,
        cli: flags.layer(&g.sets)?,
    })
}

/// Runs `fut` to completion on the one async runtime the CLI sets up (multi-threaded, with
/// time, I/O and signals). Every command that awaits goes through here, so they all run on the
/// same kind of runtime and fail the same way when it cannot start.
pub fn block_on<F: std::future::Future>(fut: F) -> anyhow::Result<F::Output> {
    block_on_threads(None, fut)
}

/// [`block_on`] with `threads` worker threads (`None`: one per core), for `troupe run`, which
/// chooses them for its provider ([`troupe_sim::engine::runtime_threads`]).
pub fn block_on_threads<F: std::future::Future>(threads: Option<usize>, fut: F) -> anyhow::Result<F::Output> {
    use anyhow::Context;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    let rt = builder.enable_all().build().context("could not start the async runtime")?;
    Ok(rt.block_on(fut))
}

/// Input errors (config, personas, scenarios) exit with 2; everything else with 1.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    let input = err.chain().any(|e| {
        e.is::<troupe_sim::config::ConfigError>()
            || e.is::<troupe_sim::persona::PersonaError>()
            || e.is::<troupe_sim::scenario::ScenarioError>()
            || e.is::<UsageError>()
            || e.is::<troupe_sim::record::journal::JournalError>()
            || matches!(
                e.downcast_ref::<troupe_sim::monitoring::MonitoringError>(),
                Some(
                    troupe_sim::monitoring::MonitoringError::Bind { .. }
                        | troupe_sim::monitoring::MonitoringError::BadAddress { .. }
                        | troupe_sim::monitoring::MonitoringError::BadEndpoint { .. }
                        | troupe_sim::monitoring::MonitoringError::Exporter(_)
                )
            )
            || matches!(
                e.downcast_ref::<troupe_sim::analysis::AnalysisError>(),
                Some(troupe_sim::analysis::AnalysisError::Read { .. })
            )
            || matches!(
                e.downcast_ref::<troupe_sim::experiment::ExperimentError>(),
                Some(
                    troupe_sim::experiment::ExperimentError::Invalid(_)
                        | troupe_sim::experiment::ExperimentError::Plan { .. }
                )
            )
            || matches!(
                e.downcast_ref::<troupe_sim::engine::EngineError>(),
                Some(
                    troupe_sim::engine::EngineError::Persona(_)
                        | troupe_sim::engine::EngineError::UnknownPersona { .. }
                        | troupe_sim::engine::EngineError::NoPersonas
                        | troupe_sim::engine::EngineError::Journal(_)
                        | troupe_sim::engine::EngineError::Fork(_)
                        | troupe_sim::engine::EngineError::Pricing(_)
                        | troupe_sim::engine::EngineError::Provider(_)
                        | troupe_sim::engine::EngineError::ProviderChanged(_)
                )
            )
    });
    if input { 2 } else { 1 }
}

/// A usage problem found after parsing (a flag combination clap cannot express).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// SIGTERM as a future that can be awaited again and again (never resolves where there is no
/// such signal, or when the handler cannot be installed).
pub struct Terminate {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Terminate {
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            Terminate { inner: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok() }
        }
        #[cfg(not(unix))]
        {
            Terminate {}
        }
    }

    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.inner.as_mut() {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}
