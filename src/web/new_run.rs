//! The New run page: a scenario file or an ad-hoc discussion, the settings a run may change,
//! the persona picker (validated database, search and tag filter), the estimate, the start.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use axum::Json;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};

use crate::config::{SimulationConfig, TurnPolicy};
use crate::estimate::Estimate;
use crate::persona::{PersonaDatabase, Severity, validate_database};
use crate::scenario::RunPlan;
use crate::scenario::{self, check::scenario_overrides};

use super::error::WebError;
use super::live::{ProviderChoice, engine_for, start_run};
use super::security::percent_decode;
use super::state::AppState;
use super::templates::{Nav, csrf_field, page as layout, provider_select};

/// The scenario files offered: `*.ron` directly in the scenarios folder.
fn scenario_files(st: &AppState) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&st.scenarios_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".ron") && super::security::valid_id(n.trim_end_matches(".ron")))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `GET /runs/new`.
pub async fn page_handler(st: &AppState) -> Result<Html<String>, WebError> {
    let cfg = st.config().clone();
    let path = cfg.simulation.personas_file.clone();
    let (db, invalid) = tokio::task::spawn_blocking(move || {
        let db = PersonaDatabase::load(&path).ok();
        let invalid: HashSet<String> = db
            .as_ref()
            .map(|db| {
                validate_database(db)
                    .findings
                    .into_iter()
                    .filter(|f| f.severity == Severity::Error)
                    .map(|f| f.persona)
                    .collect()
            })
            .unwrap_or_default();
        (db, invalid)
    })
    .await
    .map_err(|e| WebError::internal("loading personas", e))?;
    let body = html! {
        h1 { "New run" }
        form method="post" action="/runs" #new-run {
            (csrf_field(&st.csrf))
            (what_to_simulate(st, &cfg))
            (settings(st, &cfg))
            fieldset {
                legend { "Personas (ad-hoc runs)" }
                @match &db {
                    Some(db) => { (persona_picker(db, &invalid)) },
                    None => p.error { "The persona database could not be loaded; see Settings." },
                }
            }
            p { button type="button" #estimate { "Estimate cost" } " " button #start { "Start run" } }
            pre #estimate-out .estimate hidden {}
        }
    };
    Ok(layout("New run", Nav::NewRun, &st.csrf, body))
}

/// Ad-hoc or a scenario file (and its variant); the topic and the world's context.
fn what_to_simulate(st: &AppState, cfg: &SimulationConfig) -> Markup {
    html! {
        fieldset {
            legend { "What to simulate" }
            label { input type="radio" name="mode" value="adhoc" checked; " Ad-hoc discussion" } " "
            label { input type="radio" name="mode" value="scenario"; " Scenario file" }
            p {
                label {
                    "Scenario "
                    select name="scenario" {
                        option value="" { "(none)" }
                        @for f in scenario_files(st) { option { (f) } }
                    }
                }
                " "
                label { "Variant " input name="variant" placeholder="optional"; }
            }
            p {
                label {
                    "Topic "
                    input name="topic" #topic size="60" value=(cfg.simulation.topic)
                        placeholder="What the personas discuss";
                }
            }
            p {
                label {
                    "World context "
                    textarea name="context" rows="3" cols="60" placeholder="The situation (optional)" {}
                }
            }
        }
    }
}

/// The settings a run may change, filled with the server's configuration.
fn settings(st: &AppState, cfg: &SimulationConfig) -> Markup {
    let policy = cfg.simulation.policy();
    // The values are what `build` reads back.
    let policies = [
        (TurnPolicy::RoundRobin, "RoundRobin", "round robin"),
        (TurnPolicy::Parallel, "Parallel", "parallel"),
        (TurnPolicy::RandomOrder, "RandomOrder", "random order"),
    ];
    html! {
        fieldset {
            legend { "Settings" }
            label { "Turns " input type="number" name="turns" min="1" max="1000" value=(cfg.simulation.max_turns); } " "
            label {
                "Turn policy "
                select name="policy" {
                    @for (p, value, label) in policies { option value=(value) selected[p == policy] { (label) } }
                }
            }
            " "
            (provider_select(st.provider.name(), "simulated (offline, synthetic text)"))
            " "
            label { "Model " input name="model" value=(cfg.llm.model); } " "
            label {
                "Temperature "
                input type="number" name="temperature" min="0" max="2" step="0.1" value=(cfg.llm.temperature);
            }
            " "
            label { "Run seed " input type="number" name="run_seed" min="0" value=(cfg.simulation.run_seed); }
            p {
                label {
                    "Cost budget (USD) "
                    input type="number" name="max_cost_usd" min="0" step="0.01"
                        value=(cfg.llm.max_cost_usd.map(|c| c.to_string()).unwrap_or_default()) placeholder="none";
                }
                " "
                label {
                    "Max tokens per reply "
                    input type="number" name="max_tokens" min="1" value=(cfg.llm.max_tokens);
                }
                " "
                label {
                    "Run timeout (s) "
                    input type="number" name="timeout_seconds" min="1" value=(cfg.performance.timeout_seconds);
                }
            }
            p.hint {
                "Runs started here share the provider's request and token budgets \
                 (llm.requests_per_minute, llm.tokens_per_minute)."
            }
        }
    }
}

/// The personas to pick from, with the search and tag filter the script drives; a persona
/// with validation errors cannot be picked.
fn persona_picker(db: &PersonaDatabase, invalid: &HashSet<String>) -> Markup {
    let tags: BTreeSet<&str> = db.personas.iter().flat_map(|p| p.tags.iter().map(String::as_str)).collect();
    html! {
        p {
            label { "Search " input type="search" #persona-search placeholder="name, role, id"; }
            " "
            label {
                "Tag "
                select #persona-tag { option value="" { "any" } @for t in &tags { option { (t) } } }
            }
        }
        ul.picker #persona-list {
            @for p in &db.personas {
                @let bad = invalid.contains(&p.id);
                @let tags = p.tags.join(" ");
                li data-search=(format!("{} {} {}", p.name, p.role, p.id).to_lowercase()) data-tags=(tags) {
                    label {
                        input type="checkbox" name="personas" value=(p.id) disabled[bad];
                        " " strong { (p.name) } " " span.role { (p.role) } " " code { (p.id) } " "
                        span.tags { (tags) }
                        @if bad { " " em.error { "invalid: see Personas" } }
                    }
                }
            }
        }
    }
}

/// `GET /runs/new`.
pub async fn page(State(st): State<AppState>) -> Result<Html<String>, WebError> {
    page_handler(&st).await
}

/// The New run form, read from `application/x-www-form-urlencoded` (repeated `personas`).
#[derive(Debug, Default)]
pub struct RunForm {
    mode: String,
    scenario: String,
    variant: String,
    topic: String,
    context: String,
    turns: String,
    policy: String,
    provider: String,
    model: String,
    temperature: String,
    run_seed: String,
    max_cost_usd: String,
    max_tokens: String,
    timeout_seconds: String,
    personas: Vec<String>,
}

impl RunForm {
    /// Parses a form body.
    pub fn parse(body: &str) -> Self {
        let mut f = RunForm::default();
        for kv in body.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_decode(v);
            match percent_decode(k).as_str() {
                "mode" => f.mode = v,
                "scenario" => f.scenario = v,
                "variant" => f.variant = v,
                "topic" => f.topic = v,
                "context" => f.context = v,
                "turns" => f.turns = v,
                "policy" => f.policy = v,
                "provider" => f.provider = v,
                "model" => f.model = v,
                "temperature" => f.temperature = v,
                "run_seed" => f.run_seed = v,
                "max_cost_usd" => f.max_cost_usd = v,
                "max_tokens" => f.max_tokens = v,
                "timeout_seconds" => f.timeout_seconds = v,
                "personas" => f.personas.push(v),
                _ => {}
            }
        }
        f
    }
}

fn num<T: std::str::FromStr>(field: &str, v: &str) -> Result<Option<T>, WebError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| WebError::BadRequest(format!("{field}: `{v}` is not a number")))
}

/// A scenario file chosen on the form, with its path and variant.
type Chosen = (scenario::Scenario, PathBuf, Option<String>);

/// Builds the plan and the run's config from the form (the server's config, then the
/// scenario's overrides, then the form's fields).
pub fn build(st: &AppState, f: &RunForm) -> Result<(RunPlan, SimulationConfig, ProviderChoice), WebError> {
    let (mut cfg, scen) = base_config(st, f)?;
    apply_fields(&mut cfg, f)?;
    let choice = if f.provider == "simulated" { ProviderChoice::Simulated } else { ProviderChoice::Configured };
    let mut plan = plan_for(&cfg, f, scen)?;
    if !f.context.trim().is_empty() {
        plan.context = f.context.trim().to_string();
    }
    Ok((plan, cfg, choice))
}

/// The server's config, with the chosen scenario's overrides merged in (scenario mode).
fn base_config(st: &AppState, f: &RunForm) -> Result<(SimulationConfig, Option<Chosen>), WebError> {
    let base = st.config().clone();
    let scenario_mode = f.mode == "scenario";
    let mut scen = None;
    let cfg = if scenario_mode {
        if !scenario_files(st).contains(&f.scenario) {
            return Err(WebError::BadRequest("pick a scenario file from the list".into()));
        }
        let path: PathBuf = st.scenarios_dir.join(&f.scenario);
        let s = scenario::load_scenario(&path).map_err(|e| WebError::BadRequest(e.to_string()))?;
        let variant = Some(f.variant.trim()).filter(|v| !v.is_empty());
        let mut v = serde_json::to_value(&base).map_err(|e| WebError::internal("config", e))?;
        crate::persona::tinytroupe::deep_merge(&mut v, &scenario_overrides(&s, variant));
        let mut cfg: SimulationConfig =
            serde_json::from_value(v).map_err(|e| WebError::BadRequest(format!("the scenario's config: {e}")))?;
        cfg.llm.api_key = base.llm.api_key.clone();
        scen = Some((s, path, variant.map(str::to_string)));
        cfg
    } else {
        base.clone()
    };
    Ok((cfg, scen))
}

/// The form's settings over the config, each checked against its range.
fn apply_fields(cfg: &mut SimulationConfig, f: &RunForm) -> Result<(), WebError> {
    if !f.topic.trim().is_empty() {
        cfg.simulation.topic = f.topic.trim().to_string();
    }
    if let Some(t) = num::<u32>("turns", &f.turns)? {
        if !(1..=1000).contains(&t) {
            return Err(WebError::BadRequest("turns: use 1 to 1000".into()));
        }
        cfg.simulation.max_turns = t;
    }
    cfg.simulation.turn_policy = match f.policy.as_str() {
        "RoundRobin" => Some(TurnPolicy::RoundRobin),
        "Parallel" => Some(TurnPolicy::Parallel),
        "RandomOrder" => Some(TurnPolicy::RandomOrder),
        "" => cfg.simulation.turn_policy,
        _ => return Err(WebError::BadRequest("policy: use RoundRobin, Parallel or RandomOrder".into())),
    };
    if !f.model.trim().is_empty() {
        cfg.llm.model = f.model.trim().to_string();
    }
    if let Some(t) = num::<f64>("temperature", &f.temperature)? {
        if !(0.0..=2.0).contains(&t) {
            return Err(WebError::BadRequest("temperature: use 0.0 to 2.0".into()));
        }
        cfg.llm.temperature = t;
    }
    if let Some(s) = num::<u64>("run seed", &f.run_seed)? {
        cfg.simulation.run_seed = s;
    }
    if let Some(c) = num::<f64>("cost budget", &f.max_cost_usd)? {
        if !(c.is_finite() && c >= 0.0) {
            return Err(WebError::BadRequest("cost budget: use 0 or more USD".into()));
        }
        cfg.llm.max_cost_usd = Some(c);
    }
    if let Some(t) = num::<u32>("max tokens", &f.max_tokens)? {
        cfg.llm.max_tokens = t.max(1);
    }
    if let Some(t) = num::<f64>("run timeout", &f.timeout_seconds)? {
        if !(t.is_finite() && t > 0.0) {
            return Err(WebError::BadRequest("run timeout: use more than 0 seconds".into()));
        }
        cfg.performance.timeout_seconds = t;
    }
    Ok(())
}

/// The plan: the scenario resolved against the persona database, or an ad-hoc discussion of
/// the picked personas.
fn plan_for(cfg: &SimulationConfig, f: &RunForm, scen: Option<Chosen>) -> Result<RunPlan, WebError> {
    let plan = match scen {
        Some((s, path, variant)) => {
            let db = scenario::database_for(&s, &path, variant.as_deref(), &cfg.simulation.personas_file)
                .map_err(|e| WebError::BadRequest(e.to_string()))?;
            let resolved = scenario::resolve(
                &s,
                &path,
                &db,
                variant.as_deref(),
                cfg.simulation.max_turns,
                cfg.simulation.max_personas,
                cfg.simulation.run_seed,
            )
            .map_err(|e| WebError::BadRequest(e.to_string()))?;
            RunPlan::from_scenario(resolved, &cfg.simulation.topic)
        }
        None => {
            if f.personas.is_empty() {
                return Err(WebError::BadRequest("pick at least one persona".into()));
            }
            if cfg.simulation.topic.trim().is_empty() {
                return Err(WebError::BadRequest("give the discussion topic".into()));
            }
            if f.personas.len() > cfg.simulation.max_personas {
                return Err(WebError::BadRequest(format!(
                    "{} personas but simulation.max_personas is {}",
                    f.personas.len(),
                    cfg.simulation.max_personas
                )));
            }
            let db = PersonaDatabase::load(&cfg.simulation.personas_file)
                .map_err(|e| WebError::BadRequest(e.to_string()))?;
            let mut chosen = Vec::new();
            for id in &f.personas {
                let p = db.get(id).ok_or_else(|| WebError::BadRequest(format!("unknown persona id `{id}`")))?;
                chosen.push(p.clone());
            }
            RunPlan::ad_hoc(&cfg.simulation.topic, chosen)
        }
    };
    Ok(plan)
}

/// `POST /runs`: starts the run and shows its Live page.
pub async fn start(State(st): State<AppState>, body: String) -> Result<Response, WebError> {
    let form = RunForm::parse(&body);
    let st2 = st.clone();
    let (plan, cfg, choice) = tokio::task::spawn_blocking(move || build(&st2, &form))
        .await
        .map_err(|e| WebError::internal("building a run", e))??;
    let live = start_run(&st, plan, cfg, choice).await?;
    tracing::info!(run = %live.id, "run started from the web app");
    Ok(Redirect::to(&format!("/runs/{}", live.id)).into_response())
}

/// `POST /api/estimate`: the estimate of the form's run, as JSON.
pub async fn estimate(State(st): State<AppState>, body: String) -> Result<Json<Estimate>, WebError> {
    let form = RunForm::parse(&body);
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || {
        let (plan, cfg, choice) = build(&st2, &form)?;
        Ok(Json(engine_for(&st2, cfg, choice).estimate(&plan)))
    })
    .await
    .map_err(|e| WebError::internal("estimating", e))?
}
