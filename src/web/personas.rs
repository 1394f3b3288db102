//! The Persona builder: the database, a form for the native schema with live validation (the
//! rules of `troupe validate`), TinyTroupe import (agents and fragments), drafting personas with
//! the model, review before saving, and saving atomically with a backup.

use std::collections::HashSet;
use std::path::PathBuf;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::persona::PersonaError;
use crate::persona::load::persona_from_value;
use crate::persona::validate::check_persona;
use crate::persona::{Fragment, PersonaDatabase, PersonaSpec, Personality, Severity, apply_fragment, save_personas};
use crate::prompt::generate::{GenerateRequest, MAX_COUNT, generate_personas};

use super::error::WebError;
use super::state::AppState;
use super::templates::{Nav, csrf_field, page as layout, provider_select};

/// The builder form: the native schema's fields as text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PersonaForm {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Background.
    pub description: String,
    /// Traits, comma-separated.
    pub traits: String,
    /// Goals, one per line.
    pub goals: String,
    /// Style.
    pub style: String,
    /// structured | visual | direct.
    pub communication: String,
    /// data-driven | intuitive | collaborative.
    pub decisions: String,
    /// systematic | creative | pragmatic.
    pub approach: String,
    /// Model override.
    pub model: String,
    /// Temperature override.
    pub temperature: String,
    /// Tags, comma-separated.
    pub tags: String,
}

fn split(s: &str, sep: char) -> Vec<String> {
    s.split(sep).map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

impl PersonaForm {
    /// The persona the form describes (a temperature that is not a number becomes a finding).
    pub fn to_spec(&self) -> (PersonaSpec, Option<Finding>) {
        let mut p = PersonaSpec::new(self.id.trim(), self.name.trim(), self.role.trim(), self.description.trim());
        p.personality = Personality {
            traits: split(&self.traits, ','),
            goals: split(&self.goals, '\n'),
            style: self.style.trim().to_string(),
            communication: self.communication.trim().to_string(),
            decisions: self.decisions.trim().to_string(),
            approach: self.approach.trim().to_string(),
            ..Default::default()
        };
        p.model = Some(self.model.trim().to_string()).filter(|m| !m.is_empty());
        p.tags = split(&self.tags, ',');
        let mut bad = None;
        let t = self.temperature.trim();
        if !t.is_empty() {
            match t.parse::<f64>() {
                Ok(v) => p.temperature = Some(v),
                Err(_) => {
                    bad = Some(Finding {
                        severity: "error",
                        field: "temperature".into(),
                        message: format!("`{t}` is not a number"),
                        hint: "use a number from 0.0 to 2.0, or leave it empty".into(),
                    })
                }
            }
        }
        (p, bad)
    }

    /// The form filled from a persona.
    pub fn from_spec(p: &PersonaSpec) -> Self {
        PersonaForm {
            id: p.id.clone(),
            name: p.name.clone(),
            role: p.role.clone(),
            description: p.description.clone(),
            traits: p.personality.traits.join(", "),
            goals: p.personality.goals.join("\n"),
            style: p.personality.style.clone(),
            communication: p.personality.communication.clone(),
            decisions: p.personality.decisions.clone(),
            approach: p.personality.approach.clone(),
            model: p.model.clone().unwrap_or_default(),
            temperature: p.temperature.map(|t| t.to_string()).unwrap_or_default(),
            tags: p.tags.join(", "),
        }
    }
}

/// A validation finding as the page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// "error" or "warning".
    pub severity: &'static str,
    /// Dotted field path.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// The findings of a persona: `troupe validate`'s per-persona rules, plus the database rules
/// (a name used by another persona) against `db`.
pub fn findings(p: &PersonaSpec, db: Option<&PersonaDatabase>) -> Vec<Finding> {
    let mut out: Vec<Finding> = check_persona(p)
        .into_iter()
        .map(|i| Finding {
            severity: if i.severity == Severity::Error { "error" } else { "warning" },
            field: i.field,
            message: i.message,
            hint: i.hint,
        })
        .collect();
    if let Some(db) = db {
        if let Some(other) = db.personas.iter().find(|o| o.id != p.id && o.name.eq_ignore_ascii_case(p.name.trim())) {
            out.push(Finding {
                severity: "error",
                field: "name".into(),
                message: format!("the name is already used by persona `{}`", other.id),
                hint: "names must be unique (case-insensitively); choose another".into(),
            });
        }
        if !p.id.is_empty() && db.get(&p.id).is_some() {
            out.push(Finding {
                severity: "warning",
                field: "id".into(),
                message: format!("persona `{}` exists; saving replaces it (the old file is backed up)", p.id),
                hint: "change the id to add a new persona instead".into(),
            });
        }
    }
    out
}

fn has_errors(f: &[Finding]) -> bool {
    f.iter().any(|f| f.severity == "error")
}

/// The findings of a persona, one line each with how to fix it.
fn findings_list(f: &[Finding]) -> Markup {
    html! {
        ul.findings #findings {
            @for x in f {
                li class=(x.severity) {
                    strong { (x.severity) } " " code { (x.field) } ": " (x.message) " " span.hint { (x.hint) }
                }
            }
        }
    }
}

async fn load_db(st: &AppState) -> Option<PersonaDatabase> {
    let path = st.config().simulation.personas_file.clone();
    tokio::task::spawn_blocking(move || PersonaDatabase::load(&path).ok()).await.ok().flatten()
}

/// `?saved=` and `?edit=` on the builder page.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    saved: Option<String>,
    edit: Option<String>,
}

/// `GET /personas`.
pub async fn page(State(st): State<AppState>, Query(q): Query<PageQuery>) -> Result<Html<String>, WebError> {
    let db = load_db(&st).await;
    let form = q
        .edit
        .as_deref()
        .and_then(|id| db.as_ref().and_then(|db| db.get(id)))
        .map(PersonaForm::from_spec)
        .unwrap_or_default();
    let notice = q.saved.map(|id| format!("Saved persona(s): {id}. The previous file was backed up."));
    Ok(builder_page(&st, db.as_ref(), &form, &[], notice.as_deref()))
}

fn builder_page(
    st: &AppState,
    db: Option<&PersonaDatabase>,
    form: &PersonaForm,
    found: &[Finding],
    notice: Option<&str>,
) -> Html<String> {
    let file = super::error::scrub_paths(&st.config().simulation.personas_file.display().to_string());
    let body = html! {
        h1 { "Personas" }
        @if let Some(n) = notice { p.notice #saved { (n) } }
        p.hint { "Database: " code { (file) } }
        (persona_form(&st.csrf, form, found))
        section {
            h2 { "Import from TinyTroupe" }
            form method="post" action="/personas/import" {
                (csrf_field(&st.csrf))
                p {
                    label {
                        "Agent JSON (" code { "*.agent.json" } ", or an array of agents or personas), or a fragment"
                        br;
                        textarea name="json" rows="6" cols="70" {}
                    }
                }
                p { label { "Apply a fragment to persona id " input name="target" placeholder="for fragments only"; } }
                p { button { "Review import" } }
            }
        }
        (generate_form(st))
        section {
            h2 { "In the database" }
            @match db {
                Some(db) => { (database_table(db)) },
                None => p.error { "The persona database could not be loaded; see Settings (doctor)." },
            }
        }
    };
    layout("Personas", Nav::Personas, &st.csrf, body)
}

/// The builder: one field per part of the native schema, and the form's findings.
fn persona_form(csrf: &str, form: &PersonaForm, found: &[Finding]) -> Markup {
    // (name, label, value, multi-line)
    let fields: [(&str, &str, &str, bool); 13] = [
        ("id", "Id (letters, digits, _ and -)", &form.id, false),
        ("name", "Name", &form.name, false),
        ("role", "Role", &form.role, false),
        ("description", "Description", &form.description, true),
        ("traits", "Traits (comma-separated)", &form.traits, false),
        ("goals", "Goals (one per line)", &form.goals, true),
        ("style", "Communication style", &form.style, false),
        ("communication", "Communication (structured, visual, direct)", &form.communication, false),
        ("decisions", "Decisions (data-driven, intuitive, collaborative)", &form.decisions, false),
        ("approach", "Approach (systematic, creative, pragmatic)", &form.approach, false),
        ("model", "Model override (optional)", &form.model, false),
        ("temperature", "Temperature override (optional, 0 to 2)", &form.temperature, false),
        ("tags", "Tags (comma-separated)", &form.tags, false),
    ];
    html! {
        section {
            h2 { "Build a persona" }
            form method="post" action="/personas/save" #persona-form {
                (csrf_field(csrf))
                @for (name, label, value, multi_line) in fields {
                    p {
                        @if multi_line {
                            label { (label) br; textarea name=(name) rows="3" cols="70" { (value) } }
                        } @else {
                            label { (label) " " input name=(name) value=(value) size="50"; }
                        }
                    }
                }
                h3 { "Validation" }
                (findings_list(found))
                p { button #save-persona { "Save persona" } }
            }
        }
    }
}

/// Drafting personas with the model, for review.
fn generate_form(st: &AppState) -> Markup {
    html! {
        section {
            h2 { "Generate with the model" }
            form method="post" action="/personas/generate" #generate-form {
                (csrf_field(&st.csrf))
                p {
                    label {
                        "Population "
                        input name="context" size="60" placeholder="e.g. nurses in a rural hospital";
                    }
                    " "
                    label { "How many " input type="number" name="count" min="1" max=(MAX_COUNT) value="3"; }
                    " "
                    (provider_select(st.provider.name(), "simulated (offline drafts)"))
                }
                p {
                    button { "Draft personas" } " "
                    span.hint { "You review the drafts before anything is saved." }
                }
            }
        }
    }
}

/// The personas in the database with their validation counts and an edit link.
fn database_table(db: &PersonaDatabase) -> Markup {
    let report = crate::persona::validate_database(db);
    let count = |id: &str, severity: Severity| {
        report.findings.iter().filter(|f| f.persona == id && f.severity == severity).count()
    };
    html! {
        table #persona-table {
            thead { tr { @for h in ["Id", "Name", "Role", "Tags", "Checks", ""] { th { (h) } } } }
            tbody {
                @for p in &db.personas {
                    @let (errs, warns) = (count(&p.id, Severity::Error), count(&p.id, Severity::Warning));
                    tr {
                        td { code { (p.id) } }
                        td { (p.name) }
                        td { (p.role) }
                        td { (p.tags.join(", ")) }
                        td {
                            @if errs > 0 { (errs) " error(s), " } @else { "ok, " }
                            (warns) " warning(s)"
                        }
                        td { a href=(format!("/personas?edit={}", p.id)) { "edit" } }
                    }
                }
            }
        }
    }
}

/// `POST /api/personas/validate`: the findings of the form's persona, as JSON.
pub async fn validate(State(st): State<AppState>, Json(form): Json<PersonaForm>) -> Json<Value> {
    let db = load_db(&st).await;
    let (p, bad) = form.to_spec();
    let mut f = findings(&p, db.as_ref());
    f.extend(bad);
    Json(serde_json::json!({ "valid": !has_errors(&f), "findings": f }))
}

/// Writes personas into the database (replacing those with the same id), atomically, with a
/// backup. A folder database gets them in `web_personas.json`.
async fn save_specs(st: &AppState, specs: Vec<PersonaSpec>) -> Result<(), WebError> {
    let _guard = st.persona_lock.lock().await;
    let path = st.config().simulation.personas_file.clone();
    tokio::task::spawn_blocking(move || {
        let target: PathBuf = if path.is_dir() { path.join("web_personas.json") } else { path.clone() };
        let mut personas = if target.exists() {
            PersonaDatabase::load(&target).map_err(|e| WebError::BadRequest(e.to_string()))?.personas
        } else {
            Vec::new()
        };
        for s in specs {
            match personas.iter().position(|p| p.id == s.id) {
                Some(i) => personas[i] = s,
                None => personas.push(s),
            }
        }
        let backups = target.parent().map(|p| p.join("backups")).unwrap_or_else(|| PathBuf::from("backups"));
        save_personas(&target, &personas, &backups).map_err(|e| match e {
            // The user can fix these: say why (paths are cut from the page).
            PersonaError::SingleFile { .. } | PersonaError::Unreadable { .. } => WebError::BadRequest(e.to_string()),
            e => WebError::internal("saving personas", e),
        })?;
        tracing::info!(file = %target.display(), "personas saved from the web app");
        Ok(())
    })
    .await
    .map_err(|e| WebError::internal("saving personas", e))?
}

/// `POST /personas/save`: validates the form and saves the persona.
pub async fn save(State(st): State<AppState>, Form(form): Form<PersonaForm>) -> Result<Response, WebError> {
    let db = load_db(&st).await;
    let (p, bad) = form.to_spec();
    let mut f = findings(&p, db.as_ref());
    f.extend(bad);
    if has_errors(&f) {
        let page = builder_page(&st, db.as_ref(), &form, &f, Some("Not saved: fix the errors below."));
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let id = p.id.clone();
    save_specs(&st, vec![p]).await?;
    Ok(Redirect::to(&format!("/personas?saved={}", super::templates::url_encode(&id))).into_response())
}

/// The review page: drafts with their findings, and the JSON (editable) to save.
fn review_page(
    st: &AppState,
    title: &str,
    drafts: &[PersonaSpec],
    db: Option<&PersonaDatabase>,
    note: &str,
) -> Html<String> {
    let values: Vec<Value> = drafts.iter().map(PersonaSpec::to_saved_value).collect();
    let json = serde_json::to_string_pretty(&values).unwrap_or_else(|_| "[]".into());
    let body = html! {
        h1 { (title) }
        p.notice { (note) }
        ol.drafts {
            @for p in drafts {
                li.draft {
                    strong { (p.name) } " " code { (p.id) } " " span.role { (p.role) }
                    p { (p.description) }
                    p.hint { "traits: " (p.personality.traits.join(", ")) " · tags: " (p.tags.join(", ")) }
                    (findings_list(&findings(p, db)))
                }
            }
        }
        form method="post" action="/personas/save-batch" #batch-form {
            (csrf_field(&st.csrf))
            p {
                label {
                    "The personas to save (edit before saving if you like)"
                    br;
                    // The JSON is element text here, so HTML escaping is the whole of its encoding.
                    textarea name="batch" rows="16" cols="90" { (json) }
                }
            }
            p { button #save-batch { "Save these personas" } " " a href="/personas" { "Discard" } }
        }
    };
    layout(title, Nav::Personas, &st.csrf, body)
}

/// The import form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImportForm {
    json: String,
    target: String,
}

/// `POST /personas/import`: reads TinyTroupe agents, native personas or a fragment (applied to
/// `target`) and shows them for review.
pub async fn import(State(st): State<AppState>, Form(f): Form<ImportForm>) -> Result<Html<String>, WebError> {
    let db = load_db(&st).await;
    let v: Value = crate::persona::json::parse_strict(f.json.as_bytes()).map_err(|e| {
        WebError::BadRequest(format!("the JSON does not parse at line {} column {}: {e}", e.line(), e.column()))
    })?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(o) if o.get("personas").is_some_and(Value::is_array) => {
            o.get("personas").and_then(Value::as_array).cloned().unwrap_or_default()
        }
        other => vec![other],
    };
    let mut drafts = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::Object(o) if crate::persona::tinytroupe::is_fragment(&o) => {
                let db =
                    db.as_ref().ok_or_else(|| WebError::BadRequest("the persona database does not load".into()))?;
                let target = db.get(f.target.trim()).ok_or_else(|| {
                    WebError::BadRequest("this is a fragment: give the id of the persona to apply it to".into())
                })?;
                let persona = o.get("persona").and_then(Value::as_object).cloned().unwrap_or_default();
                let frag = Fragment { name: "imported fragment".into(), persona };
                drafts.push(apply_fragment(target, &frag).map_err(|e| WebError::BadRequest(e.to_string()))?);
            }
            other => drafts.push(
                persona_from_value(other)
                    .map_err(|(field, msg)| WebError::BadRequest(format!("item {}: {field}: {msg}", i + 1)))?,
            ),
        }
    }
    if drafts.is_empty() {
        return Err(WebError::BadRequest("nothing to import".into()));
    }
    Ok(review_page(&st, "Review the import", &drafts, db.as_ref(), "Nothing is saved until you press Save."))
}

/// The generate form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GenerateForm {
    context: String,
    count: String,
    provider: String,
}

/// `POST /personas/generate`: the model drafts personas from a population description.
pub async fn generate(State(st): State<AppState>, Form(f): Form<GenerateForm>) -> Result<Html<String>, WebError> {
    let db = load_db(&st).await;
    let count: usize = f.count.trim().parse().map_err(|_| WebError::BadRequest("how many: give a number".into()))?;
    let provider = if f.provider == "simulated" { st.simulated.clone() } else { st.provider.clone() };
    let cfg = st.config();
    let req = GenerateRequest {
        context: f.context.clone(),
        count,
        model: cfg.llm.model.clone(),
        temperature: cfg.llm.temperature.max(0.7),
        seed: cfg.simulation.run_seed,
    };
    let taken: HashSet<String> =
        db.as_ref().map(|d| d.personas.iter().map(|p| p.id.clone()).collect()).unwrap_or_default();
    let drafts = generate_personas(&provider, &req, &taken).await.map_err(|e| match e {
        crate::prompt::generate::GenerateError::Llm(inner) => {
            tracing::warn!(error = %inner, "persona generation failed");
            WebError::BadRequest("the model could not draft personas; see the log (Settings, debug)".into())
        }
        other => WebError::BadRequest(other.to_string()),
    })?;
    let note = if provider.synthetic() {
        "Drafts from the simulated provider (synthetic, deterministic). Nothing is saved until you press Save."
    } else {
        "Drafts written by the model. Nothing is saved until you press Save."
    };
    Ok(review_page(&st, "Review the drafts", &drafts, db.as_ref(), note))
}

/// The review form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BatchForm {
    batch: String,
}

/// `POST /personas/save-batch`: saves reviewed personas when none has an error.
pub async fn save_batch(State(st): State<AppState>, Form(f): Form<BatchForm>) -> Result<Response, WebError> {
    let db = load_db(&st).await;
    let v: Value = serde_json::from_str(&f.batch)
        .map_err(|e| WebError::BadRequest(format!("line {} column {}: {e}", e.line(), e.column())))?;
    let items =
        v.as_array().cloned().ok_or_else(|| WebError::BadRequest("expected a JSON array of personas".into()))?;
    let mut specs = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        specs.push(
            persona_from_value(item)
                .map_err(|(field, msg)| WebError::BadRequest(format!("item {}: {field}: {msg}", i + 1)))?,
        );
    }
    let ids: HashSet<&str> = specs.iter().map(|p| p.id.as_str()).collect();
    if ids.len() != specs.len() {
        return Err(WebError::BadRequest("two personas in the batch share an id".into()));
    }
    if specs.iter().any(|p| has_errors(&findings(p, db.as_ref()))) {
        let page =
            review_page(&st, "Not saved", &specs, db.as_ref(), "Not saved: fix the errors below and save again.");
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let saved = specs.iter().map(|p| p.id.clone()).collect::<Vec<_>>().join(", ");
    save_specs(&st, specs).await?;
    Ok(Redirect::to(&format!("/personas?saved={}", super::templates::url_encode(&saved))).into_response())
}
