//! What one run simulates: the personas, the world and its schedule, resolved from a scenario
//! (or ad hoc). Plain data: the engine runs a plan, the journal records it, a fork replays one.

use crate::config::SimulationConfig;
use crate::persona::PersonaSpec;

use super::{Activation, Hearing, ResolvedAction, ResolvedIntervention, ResolvedScenario};

/// What to simulate: personas, world and schedule (config comes from the engine).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunPlan {
    /// Scenario name ("ad-hoc" for runs without a scenario file).
    pub name: String,
    /// Variant applied.
    pub variant: Option<String>,
    /// World name.
    pub world_name: String,
    /// Situation text.
    pub context: String,
    /// Discussion topic.
    pub topic: String,
    /// Opening message (the topic when empty).
    pub opening: String,
    /// Personas at the start.
    pub personas: Vec<PersonaSpec>,
    /// Who hears whom.
    pub hearing: Hearing,
    /// Interventions.
    pub interventions: Vec<ResolvedIntervention>,
    /// How many personas act each turn (everyone when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// When this plan forks a recorded run: the recorded history it replays first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<Box<Fork>>,
}

impl RunPlan {
    /// Everyone who may speak in the run: the personas at the start, those the interventions
    /// add, and, for a fork, those of the recorded history.
    pub fn all_personas(&self) -> Vec<PersonaSpec> {
        let mut out: Vec<PersonaSpec> = Vec::new();
        let mut add = |p: &PersonaSpec| {
            if !out.iter().any(|q| q.id == p.id) {
                out.push(p.clone());
            }
        };
        let plans = std::iter::once(self).chain(self.fork.as_ref().map(|f| &f.history));
        for plan in plans {
            plan.personas.iter().for_each(&mut add);
            for iv in &plan.interventions {
                if let ResolvedAction::AddPersona(p) = &iv.action {
                    add(p);
                }
            }
        }
        out
    }
}

/// A fork point: the recorded plan and config replayed up to `at_turn`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fork {
    /// The last turn taken from the recording.
    pub at_turn: u32,
    /// The recorded plan.
    pub history: RunPlan,
    /// The recorded config (its sampling reproduces the recorded requests).
    pub history_config: SimulationConfig,
}

impl RunPlan {
    /// A plan from a resolved scenario; the topic is the config's `simulation.topic`.
    pub fn from_scenario(r: ResolvedScenario, topic: &str) -> Self {
        RunPlan {
            name: r.name,
            variant: r.variant,
            world_name: r.world_name,
            context: r.context,
            topic: topic.to_string(),
            opening: r.opening.unwrap_or_default(),
            personas: r.personas,
            hearing: r.hearing,
            interventions: r.interventions,
            activation: r.activation,
            fork: None,
        }
    }

    /// A plan for the scenario-less mode: a topic and some personas, everyone hearing everyone.
    pub fn ad_hoc(topic: &str, personas: Vec<PersonaSpec>) -> Self {
        RunPlan {
            name: "ad-hoc".into(),
            variant: None,
            world_name: String::new(),
            context: String::new(),
            topic: topic.to_string(),
            opening: String::new(),
            personas,
            hearing: Hearing::Everyone,
            interventions: Vec::new(),
            activation: None,
            fork: None,
        }
    }
}
