//! The RON scenario format. See `scenarios/README.md` for a commented example.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::TurnPolicy;

/// One simulation, as written in `scenarios/*.ron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; also the start of the run id.
    pub name: String,
    /// What the scenario is about.
    #[serde(default)]
    pub description: String,
    /// The world: its context, turn policy and who hears whom.
    #[serde(default)]
    pub world: WorldSpec,
    /// Who takes part.
    pub personas: Vec<PersonaRef>,
    /// Fragments to apply to personas.
    #[serde(default)]
    pub fragments: Vec<FragmentUse>,
    /// The discussion topic.
    #[serde(default)]
    pub topic: String,
    /// The topic under its old name, as the replaced engine's files have it; folded into
    /// `topic` when the file is read ([`crate::scenario::parse_scenario`]), never written.
    #[serde(default, skip_serializing)]
    pub(crate) seed: Option<String>,
    /// The opening message; defaults to the topic.
    #[serde(default)]
    pub opening: Option<String>,
    /// Number of turns (overrides `simulation.max_turns`).
    #[serde(default)]
    pub turns: Option<u32>,
    /// The provider to use (overrides `llm.provider`), e.g. "simulated".
    #[serde(default)]
    pub provider: Option<String>,
    /// Config overrides shaped like `config/troupe.toml`: `{"llm": {"temperature": 0.4}}`.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Things that happen at given turns.
    #[serde(default)]
    pub interventions: Vec<Intervention>,
    /// Named variants for experiments.
    #[serde(default)]
    pub variants: BTreeMap<String, Variant>,
    /// How `troupe experiment` runs this scenario: default variants and runs, persona
    /// assignment, blinding.
    #[serde(default)]
    pub experiment: ExperimentSettings,
    /// Structured answers asked of every persona at the end of each experiment run, e.g.
    /// `[(name: "final_stance", choices: ["support", "oppose", "undecided"]), (name: "top_concern")]`.
    #[serde(default)]
    pub extract: Vec<ExtractField>,
    /// How many personas act each turn (`(share: 0.05)` or `(count: 500)`, optionally
    /// `weight: "activity"`); unset: everyone, every turn.
    #[serde(default)]
    pub activation: Option<Activation>,
    /// What each persona is expected to be like, by persona id, in a sentence or two:
    /// `{"tom_becker": "a cautious council member who wants costs capped"}`. Read by
    /// `troupe personas check --scenario FILE`, which interviews each of these personas and has
    /// a judge model score the answers against the text.
    #[serde(default)]
    pub expectations: BTreeMap<String, String>,
}

/// The longest expectation text of one persona, in characters: a few sentences are what a
/// judge can check claim by claim.
pub const MAX_EXPECTATION_CHARS: usize = 4000;

/// The `experiment` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSettings {
    /// Variants to compare when `--variants` is not given ("baseline" is the scenario as written
    /// unless the scenario defines a variant of that name).
    #[serde(default)]
    pub variants: Vec<String>,
    /// Runs per variant when `--runs` is not given.
    #[serde(default)]
    pub runs: Option<usize>,
    /// Which personas take part in each variant's runs.
    #[serde(default)]
    pub assignment: Assignment,
    /// Label variants "A", "B", ... in the report until its last section reveals which is which.
    #[serde(default)]
    pub blind: bool,
}

/// How personas are assigned to variants in an experiment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Assignment {
    /// Every variant's runs use all of the scenario's personas.
    #[default]
    AllPersonas,
    /// The scenario's personas are shuffled with the experiment seed and dealt to the variants
    /// in turn (a between-subjects design): each persona takes part in one variant only.
    Random,
}

/// One field asked of every persona at the end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractField {
    /// The JSON key, e.g. "final_stance".
    pub name: String,
    /// What it means, shown to the model.
    #[serde(default)]
    pub description: String,
    /// Allowed answers; free text when empty.
    #[serde(default)]
    pub choices: Vec<String>,
}

/// The world block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSpec {
    /// The world's name ("Board room").
    #[serde(default)]
    pub name: String,
    /// Situation text every persona sees.
    #[serde(default)]
    pub context: String,
    /// Turn policy (overrides the config).
    #[serde(default)]
    pub policy: Option<TurnPolicy>,
    /// Who hears whom.
    #[serde(default)]
    pub hearing: Hearing,
}

/// Who hears whom.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Hearing {
    /// Everyone hears everyone.
    #[default]
    Everyone,
    /// Undirected relations: each listed pair hears each other.
    Relations(BTreeMap<String, Vec<String>>),
    /// Directed: `listener: [speakers it hears]`.
    Directed(BTreeMap<String, Vec<String>>),
    /// Undirected relations read from a file of `a,b` lines (one pair per line, ids separated by
    /// a comma, a tab or spaces; `#` starts a comment; a `source,target` header is skipped): for
    /// graphs too large to write in the scenario (a town of 100,000 with 8 neighbours each).
    RelationsFile(PathBuf),
    /// Directed relations read from a file of `listener,speaker` lines.
    DirectedFile(PathBuf),
    /// A graph by position in `ids`: what the file forms resolve to (and may be written
    /// directly); `directed` pairs are `(listener, speaker)`.
    Edges(EdgeList),
}

/// A graph of persona ids, stored compactly (a pair is two indexes into `ids`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeList {
    /// Directed (`(listener, speaker)` pairs) or undirected.
    #[serde(default)]
    pub directed: bool,
    /// The persona ids the pairs refer to.
    pub ids: Vec<String>,
    /// The pairs, by index into `ids`.
    pub pairs: Vec<(u32, u32)>,
}

/// How many personas act in each turn: the rest stay silent (they still hear what their
/// neighbours say). Population-scale runs need it: of a million personas, not everyone speaks
/// every turn (OASIS samples its active agents each step the same way).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    /// The share of personas that act each turn, in (0, 1].
    #[serde(default)]
    pub share: Option<f64>,
    /// Or how many act each turn.
    #[serde(default)]
    pub count: Option<usize>,
    /// A numeric persona field that weights the draw (a native persona's own field, or a
    /// TinyTroupe agent's `persona` field): a persona with weight 4 is drawn about four times as
    /// often as one with weight 1. Missing or non-numeric: 1; zero or less: never drawn.
    #[serde(default)]
    pub weight: Option<String>,
}

/// A persona taking part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PersonaRef {
    /// A persona of the database, by id.
    Id(String),
    /// A persona file (native or TinyTroupe `*.agent.json`).
    File(PathBuf),
    /// A persona written in the scenario, as a map in the native schema.
    Inline(serde_json::Value),
    /// `count` personas drawn (seeded) from those carrying any of `tags`.
    Sample {
        /// Tags to draw from.
        tags: Vec<String>,
        /// How many.
        count: usize,
    },
}

/// A fragment applied to some personas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentUse {
    /// The fragment file.
    pub file: PathBuf,
    /// Persona ids to apply it to (all personas when empty).
    #[serde(default)]
    pub apply_to: Vec<String>,
}

/// Something that happens at the start of a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intervention {
    /// 1-based turn.
    pub turn: u32,
    /// What happens.
    pub action: Action,
}

/// An intervention's effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// A message from the moderator, heard by everyone.
    Broadcast(String),
    /// Replace the world context.
    SetContext(String),
    /// Bring a persona in.
    AddPersona(PersonaRef),
    /// Take a persona out (by id).
    RemovePersona(String),
}

/// Named overrides for experiments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// What this variant changes.
    #[serde(default)]
    pub description: String,
    /// Config overrides, merged over the scenario's.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Another topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// `topic` under its old name; folded into it when the file is read, never written.
    #[serde(default, skip_serializing)]
    pub(crate) seed: Option<String>,
    /// Another world context.
    #[serde(default)]
    pub context: Option<String>,
    /// Another turn policy.
    #[serde(default)]
    pub policy: Option<TurnPolicy>,
    /// Personas added.
    #[serde(default)]
    pub add_personas: Vec<PersonaRef>,
    /// Persona ids removed.
    #[serde(default)]
    pub remove_personas: Vec<String>,
    /// Fragments applied.
    #[serde(default)]
    pub fragments: Vec<FragmentUse>,
}
