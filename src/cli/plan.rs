//! The simulation a command works on: a scenario file (and variant), or the scenario-less
//! single mode, plus the flags that override config keys. Shared by `run`, `estimate` and
//! `stress`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use troupe_sim::config::{SimulationConfig, TurnPolicy, scenario_layer};
use troupe_sim::persona::PersonaDatabase;
use troupe_sim::persona::validate::select_personas;
use troupe_sim::scenario::RunPlan;
use troupe_sim::scenario::{self, check::scenario_overrides};

use super::{Flags, GlobalArgs, UsageError};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    RoundRobin,
    Parallel,
    RandomOrder,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Scenario file (.ron); without it, give --topic and --personas
    pub scenario: Option<PathBuf>,
    /// Variant of the scenario
    #[arg(long)]
    pub variant: Option<String>,
    /// Discussion topic (simulation.topic)
    #[arg(long)]
    pub topic: Option<String>,
    /// Old name of --topic (the replaced engine's), still accepted
    #[arg(long, value_name = "TOPIC")]
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
    /// Also write logs to this file (monitoring.log_file)
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

impl PlanArgs {
    /// The config keys these flags set, typed as the config's fields.
    pub fn flags(&self) -> Result<Flags, UsageError> {
        let mut f = Flags::default();
        f.simulation.topic = match (&self.topic, &self.seed) {
            (Some(t), Some(s)) if t != s => {
                return Err(UsageError(
                    "--topic and --seed (its old name) give different topics; give the topic once, with --topic".into(),
                ));
            }
            (t, s) => t.clone().or_else(|| s.clone()),
        };
        f.simulation.max_turns = self.turns;
        f.simulation.run_seed = self.run_seed;
        f.simulation.turn_policy = self.policy.map(|p| match p {
            PolicyArg::RoundRobin => TurnPolicy::RoundRobin,
            PolicyArg::Parallel => TurnPolicy::Parallel,
            PolicyArg::RandomOrder => TurnPolicy::RandomOrder,
        });
        f.llm.model = self.model.clone();
        f.llm.temperature = self.temperature;
        f.performance.max_workers = self.max_workers;
        f.performance.rate_limit_delay = self.rate_limit_delay;
        f.output.output_dir = self.output_dir.clone();
        f.monitoring.log_file = self.log_file.clone();
        Ok(f)
    }
}

/// Loads the config (with the scenario's layer and `flags`, which start from
/// [`PlanArgs::flags`]) and builds the plan.
pub fn load(g: &GlobalArgs, a: &PlanArgs, flags: &Flags) -> anyhow::Result<(RunPlan, SimulationConfig)> {
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
            let cfg = super::load_config(g, Some(layer), flags)?.config;
            let db = scenario::database_for(&s, path, a.variant.as_deref(), &cfg.simulation.personas_file)?;
            let resolved = scenario::resolve(
                &s,
                path,
                &db,
                a.variant.as_deref(),
                cfg.simulation.max_turns,
                cfg.simulation.max_personas,
                cfg.simulation.run_seed,
            )?;
            (RunPlan::from_scenario(resolved, &cfg.simulation.topic), cfg)
        }
        None => {
            if a.variant.is_some() {
                return Err(UsageError("--variant needs a scenario file".into()).into());
            }
            let cfg = super::load_config(g, None, flags)?.config;
            if a.personas.is_empty() {
                return Err(UsageError(
                    "give a scenario file, or --topic \"...\" and --personas id1,id2 (see `troupe personas list`)"
                        .into(),
                )
                .into());
            }
            if cfg.simulation.topic.trim().is_empty() {
                return Err(UsageError("give the discussion topic with --topic \"...\"".into()).into());
            }
            let db = PersonaDatabase::load(&cfg.simulation.personas_file)?;
            for id in &a.personas {
                if db.get(id).is_none() {
                    let ids: Vec<&str> = db.personas.iter().map(|p| p.id.as_str()).collect();
                    let hint =
                        scenario::did_you_mean(id, &ids).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                    return Err(UsageError(format!(
                        "unknown persona id `{id}`{hint}; `troupe personas list` shows the ids"
                    ))
                    .into());
                }
            }
            // The personas a run uses are checked as a scenario's would be: errors stop it.
            let chosen = match select_personas(&db, &a.personas) {
                Ok((chosen, warnings)) => {
                    for w in warnings {
                        eprintln!("{w}");
                    }
                    chosen
                }
                Err(errors) => {
                    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return Err(UsageError(format!(
                        "the personas of this run are not valid:\n{}\n(`troupe validate` checks the whole database)",
                        text.join("\n")
                    ))
                    .into());
                }
            };
            if chosen.len() > cfg.simulation.max_personas {
                return Err(UsageError(format!(
                    "{} personas but simulation.max_personas is {}; raise it with --set simulation.max_personas=N",
                    chosen.len(),
                    cfg.simulation.max_personas
                ))
                .into());
            }
            (RunPlan::ad_hoc(&cfg.simulation.topic, chosen), cfg)
        }
    };
    Ok((plan, cfg))
}
