//! Resolving a scenario against the persona database and config, collecting every problem.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::schema::*;
use super::{ScenarioError, did_you_mean};
use crate::config::set_path;
use crate::persona::PersonaSpec;
use crate::persona::load::{PersonaDatabase, apply_fragment, persona_from_value};
use crate::persona::tinytroupe::deep_merge;
use crate::persona::validate::{Severity, check_persona};
use crate::rng::SplitMix64;

/// A scenario with its personas loaded and checked, ready to run.
#[derive(Debug, Clone)]
pub struct ResolvedScenario {
    /// Scenario name.
    pub name: String,
    /// World name.
    pub world_name: String,
    /// Situation text.
    pub context: String,
    /// The opening message (the topic when unset).
    pub opening: Option<String>,
    /// Personas at the start, in order.
    pub personas: Vec<PersonaSpec>,
    /// Who hears whom.
    pub hearing: Hearing,
    /// Interventions, with added personas loaded.
    pub interventions: Vec<ResolvedIntervention>,
    /// The variant applied, if any.
    pub variant: Option<String>,
    /// The scenario's `expectations` of personas that take part, by persona id.
    pub expectations: std::collections::BTreeMap<String, String>,
    /// How many personas act each turn (everyone when unset).
    pub activation: Option<Activation>,
}

/// An intervention ready to apply.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedIntervention {
    /// 1-based turn.
    pub turn: u32,
    /// What happens.
    pub action: ResolvedAction,
}

/// An intervention's effect, with personas loaded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ResolvedAction {
    /// A moderator message.
    Broadcast(String),
    /// A new world context.
    SetContext(String),
    /// A persona joins.
    AddPersona(Box<PersonaSpec>),
    /// A persona leaves.
    RemovePersona(String),
}

/// The config overrides a scenario (and variant) carry, as one JSON map shaped like the config.
pub fn scenario_overrides(s: &Scenario, variant: Option<&str>) -> Value {
    let mut root = match &s.config {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if let Some(t) = s.turns {
        set_path(&mut root, "simulation.max_turns", t.into());
    }
    if !s.topic.is_empty() {
        set_path(&mut root, "simulation.topic", s.topic.clone().into());
    }
    if let Some(p) = &s.provider {
        set_path(&mut root, "llm.provider", p.clone().into());
    }
    if let Some(p) = s.world.policy {
        set_path(&mut root, "simulation.turn_policy", serde_json::to_value(p).unwrap_or_default());
    }
    let mut root = Value::Object(root);
    if let Some(v) = variant.and_then(|v| s.variants.get(v)) {
        if let Some(c) = &v.config {
            deep_merge(&mut root, c);
        }
        if let Some(m) = root.as_object_mut() {
            if let Some(topic) = &v.topic {
                set_path(m, "simulation.topic", topic.clone().into());
            }
            if let Some(p) = v.policy {
                set_path(m, "simulation.turn_policy", serde_json::to_value(p).unwrap_or_default());
            }
        }
    }
    root
}

/// Resolves `s` (read from `path`) against `db`. `turns` and `max_personas` come from the merged
/// config; `run_seed` drives `Sample`. Every problem is reported at once.
pub fn resolve(
    s: &Scenario,
    path: &Path,
    db: &PersonaDatabase,
    variant: Option<&str>,
    turns: u32,
    max_personas: usize,
    run_seed: u64,
) -> Result<ResolvedScenario, ScenarioError> {
    let mut problems = Vec::new();
    let var = variant.and_then(|v| find_variant(s, v, &mut problems));
    let mut r = Resolver {
        db,
        base: path.parent().unwrap_or(Path::new(".")),
        rng: crate::rng::stream(run_seed, crate::rng::Stream::ScenarioSample),
        max_personas,
        problems,
    };
    let (personas, removed) = r.cast(s, var);
    r.check_cast(&personas);
    let mut all_ids: Vec<String> = personas.iter().map(|p| p.id.clone()).collect();
    // Interventions are checked against the scenario's own length: a shorter run (--turns)
    // simply never reaches the later ones.
    let interventions = r.interventions(s, s.turns.unwrap_or(turns).max(turns), &mut all_ids);
    let known: std::collections::HashSet<&str> =
        all_ids.iter().map(String::as_str).chain(removed.iter().map(String::as_str)).collect();
    let hearing = resolve_hearing(&s.world.hearing, r.base, &known, &all_ids, &mut r.problems);
    if let Some(a) = &s.activation {
        check_activation(a, &mut r.problems);
    }
    let expectations = r.expectations(s, &removed, &all_ids);
    if !r.problems.is_empty() {
        return Err(ScenarioError::Invalid { path: path.to_path_buf(), problems: r.problems });
    }
    let context = var.and_then(|v| v.context.clone()).unwrap_or_else(|| s.world.context.clone());
    Ok(ResolvedScenario {
        name: s.name.clone(),
        world_name: s.world.name.clone(),
        context,
        opening: s.opening.clone(),
        personas,
        hearing,
        interventions,
        variant: variant.map(str::to_owned),
        expectations,
        activation: s.activation.clone(),
    })
}

/// The variant named `v`; `None`, with a problem that names the nearest one, when there is none.
/// Whether the scenario (with `variant`, or with any variant when `None`) takes personas from
/// the database (`Id`, `Sample`), which only then has to be read.
pub fn uses_database(s: &Scenario, variant: Option<&str>) -> bool {
    let from_db = |r: &PersonaRef| matches!(r, PersonaRef::Id(_) | PersonaRef::Sample { .. });
    let added = s.interventions.iter().filter_map(|i| match &i.action {
        Action::AddPersona(r) => Some(r),
        _ => None,
    });
    let variants = s.variants.iter().filter(|(name, _)| variant.is_none_or(|v| v == name.as_str()));
    s.personas.iter().chain(added).any(from_db) || variants.flat_map(|(_, v)| &v.add_personas).any(from_db)
}

/// The persona database a scenario needs: read from `personas_file` when the scenario takes
/// personas from it, empty otherwise (a scenario that brings its own personas runs anywhere,
/// whether or not the default database exists).
pub fn database_for(
    s: &Scenario,
    scenario_path: &Path,
    variant: Option<&str>,
    personas_file: &Path,
) -> Result<PersonaDatabase, ScenarioError> {
    if !uses_database(s, variant) {
        return Ok(PersonaDatabase::default());
    }
    PersonaDatabase::load(personas_file).map_err(|source| ScenarioError::Database {
        scenario: scenario_path.to_path_buf(),
        database: personas_file.to_path_buf(),
        source: Box::new(source),
    })
}

fn find_variant<'a>(s: &'a Scenario, v: &str, problems: &mut Vec<String>) -> Option<&'a Variant> {
    if let Some(var) = s.variants.get(v) {
        return Some(var);
    }
    let names: Vec<&String> = s.variants.keys().collect();
    let hint = match did_you_mean(v, &names.iter().map(|s| s.as_str()).collect::<Vec<_>>()) {
        Some(n) => format!("; did you mean `{n}`?"),
        None if names.is_empty() => "; this scenario defines no variants".into(),
        None => format!("; known variants: {}", names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
    };
    problems.push(format!("unknown variant `{v}`{hint}"));
    None
}

/// What resolving reads personas from, and the problems it collects.
struct Resolver<'a> {
    db: &'a PersonaDatabase,
    /// The scenario's folder: relative files are read from there.
    base: &'a Path,
    /// Draws `Sample`s.
    rng: SplitMix64,
    max_personas: usize,
    problems: Vec<String>,
}

impl Resolver<'_> {
    fn load(&mut self, r: &PersonaRef, place: &str) -> Vec<PersonaSpec> {
        load_ref(r, self.db, self.base, &mut self.rng, place, &mut self.problems)
    }

    /// The personas at the start: the scenario's and the variant's, less those the variant
    /// removes (returned too), with fragments applied.
    fn cast(&mut self, s: &Scenario, var: Option<&Variant>) -> (Vec<PersonaSpec>, Vec<String>) {
        let mut refs: Vec<&PersonaRef> = s.personas.iter().collect();
        if let Some(v) = var {
            refs.extend(v.add_personas.iter());
        }
        let mut personas = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            personas.extend(self.load(r, &format!("personas[{i}]")));
        }
        let mut removed = Vec::new();
        if let Some(v) = var {
            for id in &v.remove_personas {
                removed.push(id.clone());
                let before = personas.len();
                personas.retain(|p: &PersonaSpec| &p.id != id);
                if personas.len() == before {
                    self.problems.push(format!("variant removes `{id}`, which is not in the scenario"));
                }
            }
        }
        let mut uses: Vec<&FragmentUse> = s.fragments.iter().collect();
        if let Some(v) = var {
            uses.extend(v.fragments.iter());
        }
        for u in uses {
            apply_use(u, self.base, &mut personas, &mut self.problems);
        }
        (personas, removed)
    }

    /// Each persona once, at least one, at most `max_personas`, every one valid.
    fn check_cast(&mut self, personas: &[PersonaSpec]) {
        let mut seen = std::collections::HashSet::new();
        for p in personas {
            if !seen.insert(p.id.as_str()) {
                self.problems.push(format!("persona `{}` takes part twice; list it once", p.id));
            }
        }
        if personas.len() > self.max_personas {
            self.problems.push(format!(
                "{} personas take part but simulation.max_personas is {}; raise it or list fewer",
                personas.len(),
                self.max_personas
            ));
        }
        if personas.is_empty() {
            self.problems.push("no persona takes part; list at least one under `personas`".into());
        }
        for p in personas {
            for iss in check_persona(p).into_iter().filter(|i| i.severity == Severity::Error) {
                self.problems.push(format!("persona `{}`: {}: {} (hint: {})", p.id, iss.field, iss.message, iss.hint));
            }
        }
    }

    /// The interventions within `turns`, with added personas loaded; `all_ids` gains them.
    fn interventions(&mut self, s: &Scenario, turns: u32, all_ids: &mut Vec<String>) -> Vec<ResolvedIntervention> {
        let mut interventions = Vec::new();
        for (i, iv) in s.interventions.iter().enumerate() {
            if iv.turn == 0 || iv.turn > turns {
                self.problems.push(format!(
                    "interventions[{i}]: turn {} is outside the run's turns 1..={turns}; use a turn in that range or raise `turns`",
                    iv.turn
                ));
            }
            let action = match &iv.action {
                Action::Broadcast(m) => Some(ResolvedAction::Broadcast(m.clone())),
                Action::SetContext(c) => Some(ResolvedAction::SetContext(c.clone())),
                Action::AddPersona(r) => self.add_persona(i, r, all_ids),
                Action::RemovePersona(id) => {
                    if !all_ids.contains(id) {
                        self.problems.push(unknown_id(&format!("interventions[{i}]: RemovePersona"), id, all_ids));
                    }
                    Some(ResolvedAction::RemovePersona(id.clone()))
                }
            };
            if let Some(action) = action {
                interventions.push(ResolvedIntervention { turn: iv.turn, action });
            }
        }
        interventions
    }

    /// Intervention `i`'s `AddPersona`: one valid persona, not taking part yet, within
    /// `max_personas`.
    fn add_persona(&mut self, i: usize, r: &PersonaRef, all_ids: &mut Vec<String>) -> Option<ResolvedAction> {
        let loaded = self.load(r, &format!("interventions[{i}]"));
        if loaded.len() > 1 {
            self.problems.push(format!("interventions[{i}]: AddPersona must name one persona"));
        }
        let joined = loaded.into_iter().next();
        if let Some(p) = &joined {
            if all_ids.contains(&p.id) {
                self.problems.push(format!("interventions[{i}]: AddPersona `{}` already takes part", p.id));
            }
            for iss in check_persona(p).into_iter().filter(|i| i.severity == Severity::Error) {
                self.problems.push(format!(
                    "interventions[{i}]: persona `{}`: {}: {} (hint: {})",
                    p.id, iss.field, iss.message, iss.hint
                ));
            }
            all_ids.push(p.id.clone());
            if all_ids.len() > self.max_personas {
                self.problems.push(format!(
                    "interventions[{i}]: adding `{}` makes {} personas but simulation.max_personas is {}",
                    p.id,
                    all_ids.len(),
                    self.max_personas
                ));
            }
        }
        joined.map(|p| ResolvedAction::AddPersona(Box::new(p)))
    }

    /// The expectations of personas that take part (none for those a variant removed).
    fn expectations(
        &mut self,
        s: &Scenario,
        removed: &[String],
        all_ids: &[String],
    ) -> std::collections::BTreeMap<String, String> {
        let mut expectations = std::collections::BTreeMap::new();
        for (id, text) in &s.expectations {
            if removed.contains(id) {
                // A variant removed the persona: its expectation has no one to check.
                continue;
            }
            if !all_ids.contains(id) {
                self.problems.push(unknown_id("expectations", id, all_ids));
            } else if text.trim().is_empty() {
                self.problems.push(format!(
                    "expectations: `{id}` has an empty text; write what you expect of the persona, or remove the entry"
                ));
            } else if text.chars().count() > MAX_EXPECTATION_CHARS {
                self.problems.push(format!(
                    "expectations: `{id}` has {} characters; keep it under {MAX_EXPECTATION_CHARS} (a few sentences a judge can check claim by claim)",
                    text.chars().count()
                ));
            } else {
                expectations.insert(id.clone(), text.trim().to_string());
            }
        }
        expectations
    }
}

/// The most unknown ids reported from one hearing graph (the rest are counted).
const MAX_REPORTED: usize = 10;

/// Checks the hearing graph against the scenario's persona ids (`known`, in a hash set: a graph
/// of millions of pairs is checked in linear time) and reads a graph file into `Edges`.
fn resolve_hearing(
    h: &Hearing,
    base: &Path,
    known: &std::collections::HashSet<&str>,
    all_ids: &[String],
    problems: &mut Vec<String>,
) -> Hearing {
    let mut unknown = Vec::new();
    let check = |id: &str, unknown: &mut Vec<String>| {
        if !known.contains(id) && !unknown.iter().any(|u| u == id) {
            unknown.push(id.to_string());
        }
    };
    let resolved = match h {
        Hearing::Relations(g) | Hearing::Directed(g) => {
            for (k, vs) in g {
                for id in std::iter::once(k).chain(vs) {
                    // A variant may remove a persona the shared graph names; that is fine.
                    check(id, &mut unknown);
                }
            }
            h.clone()
        }
        Hearing::RelationsFile(f) | Hearing::DirectedFile(f) => {
            let path = resolve_path(base, f);
            match super::edges::read_edges(&path, matches!(h, Hearing::DirectedFile(_))) {
                Ok(e) => {
                    for id in &e.ids {
                        check(id, &mut unknown);
                    }
                    Hearing::Edges(e)
                }
                Err(e) => {
                    problems.push(format!("world.hearing: {e}"));
                    Hearing::Everyone
                }
            }
        }
        Hearing::Edges(e) => {
            if let Some((a, b)) = e.pairs.iter().find(|(a, b)| *a as usize >= e.ids.len() || *b as usize >= e.ids.len())
            {
                problems.push(format!(
                    "world.hearing: the pair ({a}, {b}) points past the {} ids listed; pairs index into `ids`",
                    e.ids.len()
                ));
            }
            for id in &e.ids {
                check(id, &mut unknown);
            }
            h.clone()
        }
        Hearing::Everyone => Hearing::Everyone,
    };
    let more = unknown.len().saturating_sub(MAX_REPORTED);
    for id in unknown.iter().take(MAX_REPORTED) {
        problems.push(unknown_id("world.hearing", id, all_ids));
    }
    if more > 0 {
        problems.push(format!("world.hearing: {more} more unknown persona id(s)"));
    }
    resolved
}

fn check_activation(a: &Activation, problems: &mut Vec<String>) {
    match (a.share, a.count) {
        (Some(s), None) if !(s.is_finite() && s > 0.0 && s <= 1.0) => problems
            .push(format!("activation: share = {s}; use a share above 0 and at most 1 (0.05: 5% act each turn)")),
        (None, Some(0)) => problems.push("activation: count = 0; at least one persona must act each turn".into()),
        (Some(_), Some(_)) => {
            problems.push("activation: give `share` or `count`, not both".into());
        }
        (None, None) => problems.push("activation: give `share: 0.05` or `count: 500`".into()),
        _ => {}
    }
    if a.weight.as_deref().is_some_and(|w| w.trim().is_empty()) {
        problems.push("activation: `weight` names no field; give a numeric persona field, or leave it out".into());
    }
}

fn unknown_id(place: &str, id: &str, known: &[String]) -> String {
    match did_you_mean(id, known) {
        Some(s) => format!("{place}: unknown persona id `{id}`; did you mean `{s}`?"),
        None => format!("{place}: unknown persona id `{id}`; `troupe personas list` shows the ids"),
    }
}

fn resolve_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() { p.to_path_buf() } else { base.join(p) }
}

fn load_ref(
    r: &PersonaRef,
    db: &PersonaDatabase,
    base: &Path,
    rng: &mut SplitMix64,
    place: &str,
    problems: &mut Vec<String>,
) -> Vec<PersonaSpec> {
    match r {
        PersonaRef::Id(id) => match db.get(id) {
            Some(p) => vec![p.clone()],
            None => {
                let ids: Vec<String> = db.personas.iter().map(|p| p.id.clone()).collect();
                problems.push(unknown_id(place, id, &ids));
                vec![]
            }
        },
        PersonaRef::File(f) => {
            let path = resolve_path(base, f);
            match PersonaDatabase::load(&path) {
                Ok(d) if d.personas.is_empty() => {
                    problems.push(format!("{place}: {} holds no persona", path.display()));
                    vec![]
                }
                Ok(d) => d.personas,
                Err(e) => {
                    problems.push(format!("{place}: {e}"));
                    vec![]
                }
            }
        }
        PersonaRef::Inline(v) => match persona_from_value(v.clone()) {
            Ok(p) => vec![p],
            Err((field, msg)) => {
                problems.push(format!("{place}: inline persona, field `{field}`: {msg}"));
                vec![]
            }
        },
        PersonaRef::Sample { tags, count } => {
            let mut pool: Vec<&PersonaSpec> = db.by_tags(tags);
            if pool.len() < *count {
                problems.push(format!(
                    "{place}: Sample wants {count} personas tagged {tags:?} but the database has {}",
                    pool.len()
                ));
                return vec![];
            }
            rng.shuffle(&mut pool);
            pool.truncate(*count);
            pool.into_iter().cloned().collect()
        }
    }
}

fn apply_use(u: &FragmentUse, base: &Path, personas: &mut [PersonaSpec], problems: &mut Vec<String>) {
    let path = resolve_path(base, &u.file);
    let db = match PersonaDatabase::load(&path) {
        Ok(d) => d,
        Err(e) => {
            problems.push(format!("fragments: {e}"));
            return;
        }
    };
    let Some(frag) = db.fragments.first() else {
        problems.push(format!(
            "fragments: {} is not a fragment file (expected {{\"type\": \"Fragment\", \"persona\": {{...}}}})",
            path.display()
        ));
        return;
    };
    let ids: Vec<String> = personas.iter().map(|p| p.id.clone()).collect();
    for id in &u.apply_to {
        if !ids.contains(id) {
            problems.push(unknown_id("fragments.apply_to", id, &ids));
        }
    }
    for p in personas.iter_mut() {
        if u.apply_to.is_empty() || u.apply_to.contains(&p.id) {
            match apply_fragment(p, frag) {
                Ok(np) => *p = np,
                Err(e) => problems.push(format!("fragments: {e}")),
            }
        }
    }
}

/// Checks a scenario: parse, resolve, and report every problem (the `troupe scenario check`
/// command). Returns the resolved scenario when there is none.
pub fn check_scenario(
    path: &Path,
    db: &PersonaDatabase,
    variant: Option<&str>,
    turns: u32,
    max_personas: usize,
    run_seed: u64,
) -> Result<ResolvedScenario, ScenarioError> {
    let s = super::load_scenario(path)?;
    resolve(&s, path, db, variant, turns, max_personas, run_seed)
}
