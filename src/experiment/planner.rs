//! [`ScenarioPlanner`]: plans of a scenario file's variants, with the config layers the CLI uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{ExperimentError, Planner};
use crate::config::{ConfigSources, SimulationConfig, load_config, scenario_layer};
use crate::persona::PersonaDatabase;
use crate::scenario::RunPlan;
use crate::scenario::check::scenario_overrides;
use crate::scenario::{Scenario, ScenarioError, did_you_mean, load_scenario, resolve};

/// The variant name that means "the scenario as written" unless the scenario defines it.
pub const BASELINE: &str = "baseline";

/// Plans a scenario file's variants. Config layers are those of `sources` with the scenario's
/// (and variant's) overrides in the scenario slot; the run seed is set last.
#[derive(Debug)]
pub struct ScenarioPlanner {
    path: PathBuf,
    scenario: Scenario,
    sources: ConfigSources,
    // Persona databases by file, read once: planning happens for every run. A std Mutex:
    // nothing is awaited while it is held.
    dbs: Mutex<HashMap<PathBuf, Arc<PersonaDatabase>>>,
}

impl ScenarioPlanner {
    /// Reads the scenario at `path`.
    pub fn new(path: &Path, sources: ConfigSources) -> Result<Self, ScenarioError> {
        let scenario = load_scenario(path)?;
        Ok(ScenarioPlanner { path: path.to_path_buf(), scenario, sources, dbs: Mutex::new(HashMap::new()) })
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The scenario's variant for an experiment variant name: `None` for [`BASELINE`] when the
    /// scenario does not define it.
    pub fn variant_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        if name == BASELINE && !self.scenario.variants.contains_key(BASELINE) { None } else { Some(name) }
    }

    /// Checks variant names; the error names the unknown one and suggests a known one.
    pub fn check_variants(&self, names: &[String]) -> Result<(), String> {
        let known: Vec<&str> = self.scenario.variants.keys().map(String::as_str).collect();
        for n in names {
            if let Some(v) = self.variant_of(n)
                && !self.scenario.variants.contains_key(v)
            {
                let hint = match did_you_mean(v, &known) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None if known.is_empty() => {
                        "; the scenario defines no variants (use `baseline` for it as written)".into()
                    }
                    None => format!("; known variants: baseline, {}", known.join(", ")),
                };
                return Err(format!("{}: unknown variant `{n}`{hint}", self.path.display()));
            }
        }
        Ok(())
    }

    /// The config of `variant` (no variant: the scenario as written).
    pub fn config(&self, variant: Option<&str>) -> Result<SimulationConfig, ExperimentError> {
        let name = variant.unwrap_or(BASELINE).to_string();
        let err = |message: String| ExperimentError::Plan { variant: name.clone(), message };
        let overrides = scenario_overrides(&self.scenario, variant.and_then(|v| self.variant_of(v)));
        let layer = scenario_layer(&self.path, &overrides).map_err(|e| err(e.to_string()))?;
        let mut sources = self.sources.clone();
        sources.scenario = Some(layer);
        Ok(load_config(&sources).map_err(|e| err(e.to_string()))?.config)
    }

    fn db(&self, path: &Path) -> Result<Arc<PersonaDatabase>, crate::persona::PersonaError> {
        let mut dbs = self.dbs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = dbs.get(path) {
            return Ok(d.clone());
        }
        let d = Arc::new(PersonaDatabase::load(path)?);
        dbs.insert(path.to_path_buf(), d.clone());
        Ok(d)
    }
}

impl Planner for ScenarioPlanner {
    fn plan(&self, variant: &str, run_seed: u64) -> Result<(RunPlan, SimulationConfig), ExperimentError> {
        let err = |message: String| ExperimentError::Plan { variant: variant.to_string(), message };
        let mut cfg = self.config(Some(variant))?;
        cfg.simulation.run_seed = run_seed;
        let db = if crate::scenario::uses_database(&self.scenario, self.variant_of(variant)) {
            let database = cfg.simulation.personas_file.clone();
            self.db(&database).map_err(|source| {
                err(crate::scenario::ScenarioError::Database {
                    scenario: self.path.clone(),
                    database,
                    source: Box::new(source),
                }
                .to_string())
            })?
        } else {
            Arc::new(PersonaDatabase::default())
        };
        let resolved = resolve(
            &self.scenario,
            &self.path,
            &db,
            self.variant_of(variant),
            cfg.simulation.max_turns,
            cfg.simulation.max_personas,
            run_seed,
        )
        .map_err(|e| err(e.to_string()))?;
        let mut plan = RunPlan::from_scenario(resolved, &cfg.simulation.topic);
        plan.variant = Some(variant.to_string());
        Ok((plan, cfg))
    }
}
