//! The old engine's library API: a topic, persona ids from the database, a number of turns.

use std::sync::Arc;

use super::{EngineError, RunOptions, SimulationEngine};
use crate::persona::{PersonaDatabase, PersonaSpec};
use crate::record::results::SimulationResults;
use crate::scenario::RunPlan;

impl SimulationEngine {
    /// The old engine's single mode: `seed` is the topic, `personas` are ids from
    /// `simulation.personas_file`, `custom_personas` join them. Runs `turns` turns, everyone
    /// hearing everyone, and returns the results (nothing is written).
    pub async fn run_simulation(
        &self,
        seed: &str,
        turns: u32,
        personas: &[&str],
        custom_personas: Vec<PersonaSpec>,
    ) -> Result<SimulationResults, EngineError> {
        let mut chosen = Vec::new();
        if !personas.is_empty() {
            let db = PersonaDatabase::load(&self.config.simulation.personas_file)?;
            for id in personas {
                if db.get(id).is_none() {
                    let ids: Vec<&str> = db.personas.iter().map(|p| p.id.as_str()).collect();
                    let hint = crate::scenario::did_you_mean(id, &ids)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_else(|| "; `troupe personas list` shows the ids".into());
                    return Err(EngineError::UnknownPersona { id: id.to_string(), hint });
                }
            }
            let ids: Vec<String> = personas.iter().map(|s| s.to_string()).collect();
            match crate::persona::validate::select_personas(&db, &ids) {
                Ok((found, warnings)) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    chosen = found;
                }
                Err(errors) => {
                    let first = &errors[0];
                    return Err(EngineError::Persona(crate::persona::PersonaError::Invalid {
                        field: format!("{}.{}", first.persona, first.field),
                        message: first.to_string(),
                    }));
                }
            }
        }
        chosen.extend(custom_personas);
        let mut engine = self.clone();
        let mut cfg = (*self.config).clone();
        cfg.simulation.max_turns = turns;
        cfg.simulation.topic = seed.to_string();
        engine.config = Arc::new(cfg);
        engine.start(RunPlan::ad_hoc(seed, chosen), RunOptions::default()).await?.wait().await
    }
}
