//! The validation rules of `troupe validate`. Every rule is checked and every finding reported.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::json::LineCol;
use super::load::PersonaDatabase;
use super::spec::{PersonaSpec, Personality, ValidationRules};
use Severity::{Error, Warning};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something to improve; the persona still loads.
    Warning,
    /// The persona (or database) is not usable as it is.
    Error,
}

/// One problem, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The file the persona came from.
    pub file: PathBuf,
    /// The persona's id, or `#index` when it has none.
    pub persona: String,
    /// Dotted field path, such as `personality.traits`.
    pub field: String,
    /// `line:col` in the file when known.
    pub position: Option<LineCol>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{p}")?;
        }
        write!(f, ": persona {}", self.persona)?;
        if !self.field.is_empty() {
            write!(f, ", field `{}`", self.field)?;
        }
        write!(f, ": {}\n  hint: {}", self.message, self.hint)
    }
}

/// The result of validating a database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ValidationReport {
    /// Personas checked.
    pub personas: usize,
    /// Files read.
    pub files: usize,
    /// Every finding, in file order.
    pub findings: Vec<Finding>,
}

impl ValidationReport {
    /// Number of error findings.
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }
    /// Number of warning findings.
    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }
    /// True when there is no error (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.errors() == 0
    }
}

/// Longest text accepted in a single field; a longer one is almost surely a broken file.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Bounds for `temperature`.
pub const TEMPERATURE_RANGE: std::ops::RangeInclusive<f64> = 0.0..=2.0;

/// A rule broken by one persona, before it is placed in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted field path.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

fn issue(severity: Severity, field: &str, message: String, hint: &str) -> Issue {
    Issue { severity, field: field.to_string(), message, hint: hint.to_string() }
}

/// Checks the rules that concern one persona alone (everything but duplicates).
pub fn check_persona(p: &PersonaSpec) -> Vec<Issue> {
    let mut out = Vec::new();
    check_identity(p, &mut out);
    if matches!(p.origin, super::spec::Origin::TinyTroupe { .. }) {
        check_imported_personality(&p.personality, &mut out);
    } else {
        check_personality(&p.personality, &mut out);
    }
    check_completeness(p, &mut out);
    check_lengths(p, &mut out);
    if let Some(rules) = &p.validation_rules {
        check_rules(&p.personality, rules, &mut out);
    }
    out
}

/// The required fields, the id's characters and the temperature.
fn check_identity(p: &PersonaSpec, out: &mut Vec<Issue>) {
    for (field, value) in [("id", &p.id), ("name", &p.name), ("role", &p.role), ("description", &p.description)] {
        if value.trim().is_empty() {
            out.push(issue(
                Error,
                field,
                format!("`{field}` is required and missing or empty"),
                &format!("add a non-empty \"{field}\""),
            ));
        }
    }
    if !p.id.is_empty() && !p.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        out.push(issue(
            Error,
            "id",
            format!("id {:?} has characters other than letters, digits, `_` and `-`", truncate(&p.id)),
            &format!("use an id such as {:?}", super::tinytroupe::id_from_name(&p.id)),
        ));
    }
    if let Some(t) = p.temperature
        && !TEMPERATURE_RANGE.contains(&t)
    {
        out.push(issue(
            Error,
            "temperature",
            format!("temperature {t} is outside 0.0..=2.0"),
            "use a value between 0.0 and 2.0 (0.7 is a common default)",
        ));
    }
}

/// A TinyTroupe agent's personality. TinyTroupe requires neither goals nor a style; the loader
/// derives them where the file allows, and says which TinyTroupe field to add where it does not.
fn check_imported_personality(pers: &Personality, out: &mut Vec<Issue>) {
    if pers.traits.iter().all(|t| t.trim().is_empty()) {
        out.push(issue(
            Error,
            "personality.traits",
            "the agent has no personality traits".into(),
            "add persona.personality.traits, e.g. [\"You are patient.\", \"You ask for evidence.\"]",
        ));
    }
    if pers.goals.iter().all(|t| t.trim().is_empty()) {
        out.push(issue(
            Warning,
            "personality.goals",
            "the agent has no goals (none of long_term_goals, goals, objectives, aspirations), so it argues for nothing in particular".into(),
            "add persona.long_term_goals, a list of what the agent wants",
        ));
    }
    if pers.style.trim().is_empty() {
        out.push(issue(
            Warning,
            "personality.style",
            "the agent has no speech style and no traits to build one from".into(),
            "add persona.style, e.g. \"Short sentences, dry humour\"",
        ));
    }
}

/// A native persona's personality: traits, goals and a style are all required.
fn check_personality(pers: &Personality, out: &mut Vec<Issue>) {
    if pers.traits.is_empty() && pers.goals.is_empty() && pers.style.is_empty() {
        out.push(issue(
            Error,
            "personality",
            "`personality` is required and missing or empty".into(),
            "add \"personality\": {\"traits\": [...], \"goals\": [...], \"style\": \"...\"}",
        ));
        return;
    }
    if pers.traits.iter().all(|t| t.trim().is_empty()) {
        out.push(issue(
            Error,
            "personality.traits",
            "`personality.traits` is empty".into(),
            "list at least one trait, e.g. [\"analytical\"]",
        ));
    }
    if pers.goals.iter().all(|t| t.trim().is_empty()) {
        out.push(issue(
            Error,
            "personality.goals",
            "`personality.goals` is empty".into(),
            "list at least one goal the persona pursues in a discussion",
        ));
    }
    if pers.style.trim().is_empty() {
        out.push(issue(
            Error,
            "personality.style",
            "`personality.style` is empty".into(),
            "describe how the persona speaks, e.g. \"concise and professional\"",
        ));
    }
}

/// Optional fields that make a persona complete, and a known prompt format.
fn check_completeness(p: &PersonaSpec, out: &mut Vec<Issue>) {
    let pers = &p.personality;
    for (field, value, choices) in [
        ("personality.communication", &pers.communication, "structured, visual or direct"),
        ("personality.decisions", &pers.decisions, "data-driven, intuitive or collaborative"),
        ("personality.approach", &pers.approach, "systematic, creative or pragmatic"),
    ] {
        if value.trim().is_empty() {
            out.push(issue(
                Warning,
                field,
                format!("`{field}` is not set; the persona is less complete"),
                &format!("set it to {choices}"),
            ));
        }
    }
    if let Some(pr) = &p.prompting
        && !pr.format.is_empty()
        && !matches!(pr.format.as_str(), "markdown" | "text")
    {
        out.push(issue(
            Warning,
            "prompting.format",
            format!("unknown prompt format {:?}", truncate(&pr.format)),
            "use \"markdown\" or \"text\"",
        ));
    }
}

/// Every text a persona holds is bounded by [`MAX_FIELD_BYTES`].
fn check_lengths(p: &PersonaSpec, out: &mut Vec<Issue>) {
    let pers = &p.personality;
    let long_fields =
        [("name", &p.name), ("role", &p.role), ("description", &p.description), ("personality.style", &pers.style)];
    for (field, value) in long_fields {
        if value.len() > MAX_FIELD_BYTES {
            out.push(issue(
                Error,
                field,
                format!("`{field}` is {} bytes long", value.len()),
                "keep each text field under 64 KiB; a longer value usually means a broken export",
            ));
        }
    }
    for (field, list) in [("personality.traits", &pers.traits), ("personality.goals", &pers.goals)] {
        if let Some(i) = list.iter().position(|s| s.len() > MAX_FIELD_BYTES) {
            out.push(issue(
                Error,
                &format!("{field}.{i}"),
                format!("item is {} bytes long", list[i].len()),
                "keep each item under 64 KiB",
            ));
        }
    }
    // Every other text a persona holds (unknown fields, a TinyTroupe agent's own object) may reach
    // the prompt too: bounded the same way.
    let mut long = None;
    for (k, v) in &p.extra {
        long_leaf(k, v, &mut long);
    }
    if let super::spec::Origin::TinyTroupe { original } = &p.origin {
        for (k, v) in original {
            long_leaf(k, v, &mut long);
        }
    }
    if let Some((field, len)) = long {
        out.push(issue(
            Error,
            &field,
            format!("`{field}` is {len} bytes long"),
            "keep each text field under 64 KiB; a longer value usually means a broken export",
        ));
    }
}

/// The persona's own `validation_rules`.
fn check_rules(pers: &Personality, rules: &ValidationRules, out: &mut Vec<Issue>) {
    for req in &rules.required_traits {
        if !pers.traits.iter().any(|t| t.eq_ignore_ascii_case(req)) {
            out.push(issue(
                Error,
                "personality.traits",
                format!("required trait {req:?} is missing (validation_rules.required_traits)"),
                &format!("add {req:?} to personality.traits or drop it from validation_rules.required_traits"),
            ));
        }
    }
    if let Some(max) = rules.max_goals
        && pers.goals.len() > max
    {
        out.push(issue(
            Error,
            "personality.goals",
            format!("{} goals exceed validation_rules.max_goals = {max}", pers.goals.len()),
            &format!("keep at most {max} goals or raise max_goals"),
        ));
    }
    let style = pers.style.to_lowercase();
    for c in &rules.style_constraints {
        if !style.contains(&c.to_lowercase()) {
            out.push(issue(
                Error,
                "personality.style",
                format!("style does not meet the constraint {c:?} (validation_rules.style_constraints)"),
                &format!("describe the style with the word {c:?}, or drop the constraint"),
            ));
        }
    }
}

/// The first string leaf under `v` (at dotted path `at`) longer than [`MAX_FIELD_BYTES`].
fn long_leaf(at: &str, v: &serde_json::Value, found: &mut Option<(String, usize)>) {
    if found.is_some() {
        return;
    }
    match v {
        serde_json::Value::String(s) if s.len() > MAX_FIELD_BYTES => *found = Some((at.to_string(), s.len())),
        serde_json::Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                long_leaf(&format!("{at}.{i}"), x, found);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                long_leaf(&format!("{at}.{k}"), x, found);
            }
        }
        _ => {}
    }
}

/// The personas `ids` names, for a run without a scenario, checked like a scenario's: an id
/// that is unknown, named twice, or held by two personas of the database is an error, and so is
/// any error finding of the persona itself. Returns the personas and the warnings to show.
pub fn select_personas(db: &PersonaDatabase, ids: &[String]) -> Result<(Vec<PersonaSpec>, Vec<Finding>), Vec<Finding>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut chosen = Vec::with_capacity(ids.len());
    let mut seen = std::collections::HashSet::new();
    let finding =
        |severity, file: PathBuf, position, persona: &str, field: &str, message: String, hint: &str| Finding {
            severity,
            file,
            persona: persona.to_string(),
            field: field.to_string(),
            position,
            message,
            hint: hint.to_string(),
        };
    for id in ids {
        if !seen.insert(id.as_str()) {
            errors.push(finding(
                Severity::Error,
                PathBuf::new(),
                None,
                id,
                "",
                format!("persona {id:?} is named twice"),
                "name each persona once",
            ));
            continue;
        }
        let found: Vec<usize> = db.personas.iter().enumerate().filter(|(_, p)| &p.id == id).map(|(i, _)| i).collect();
        let Some(&first) = found.first() else {
            continue;
        };
        if let Some(&second) = found.get(1) {
            let (file, position) = db.describe_location(second, "");
            errors.push(finding(
                Severity::Error,
                file,
                position,
                id,
                "id",
                format!("duplicate id {id:?}: also used at {}", where_is(db, first)),
                "give each persona a unique id (`troupe validate` lists every finding)",
            ));
            continue;
        }
        for iss in check_persona(&db.personas[first]) {
            let (file, position) = field_location(db, first, &iss.field);
            let f = finding(iss.severity, file, position, id, &iss.field, iss.message, &iss.hint);
            if f.severity == Severity::Error { errors.push(f) } else { warnings.push(f) }
        }
        chosen.push(db.personas[first].clone());
    }
    if errors.is_empty() { Ok((chosen, warnings)) } else { Err(errors) }
}

fn truncate(s: &str) -> String {
    if s.len() <= 60 {
        return s.to_string();
    }
    let mut end = 60;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Where persona `i`'s `field` (dotted) is: its file and, when known, `line:col`.
fn field_location(db: &PersonaDatabase, i: usize, field: &str) -> (PathBuf, Option<LineCol>) {
    let pointer = if matches!(db.personas[i].origin, super::spec::Origin::TinyTroupe { .. }) {
        super::tinytroupe::agent_pointer(field).to_string()
    } else if field.is_empty() {
        String::new()
    } else {
        format!("/{}", field.replace('.', "/"))
    };
    db.describe_location(i, &pointer)
}

/// Validates a whole database: every rule, every persona, plus duplicates across files.
pub fn validate_database(db: &PersonaDatabase) -> ValidationReport {
    let mut findings = db.load_findings.clone();
    let place = |i: usize, field: &str, mut iss: Issue| {
        let tinytroupe = matches!(db.personas[i].origin, super::spec::Origin::TinyTroupe { .. });
        let derivable = matches!(field, "personality.communication" | "personality.decisions" | "personality.approach");
        if tinytroupe && derivable {
            iss.hint =
                format!("{}; in a TinyTroupe agent file, add personality.big_five so it can be derived", iss.hint);
        }
        let (file, position) = field_location(db, i, field);
        Finding {
            severity: iss.severity,
            file,
            persona: label(&db.personas[i], i),
            field: iss.field,
            position,
            message: iss.message,
            hint: iss.hint,
        }
    };
    for (i, p) in db.personas.iter().enumerate() {
        for iss in check_persona(p) {
            let field = iss.field.clone();
            findings.push(place(i, &field, iss));
        }
    }
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(db.personas.len());
    let mut names: HashMap<String, usize> = HashMap::with_capacity(db.personas.len());
    for (i, p) in db.personas.iter().enumerate() {
        if !p.id.is_empty()
            && let Some(&first) = ids.get(p.id.as_str())
        {
            let other = where_is(db, first);
            findings.push(place(
                i,
                "id",
                issue(
                    Severity::Error,
                    "id",
                    format!("duplicate id {:?}: also used at {other}", p.id),
                    "give each persona a unique id",
                ),
            ));
        } else {
            ids.insert(&p.id, i);
        }
        let key = p.name.to_lowercase();
        if !key.is_empty() {
            if let Some(&first) = names.get(&key) {
                let other = where_is(db, first);
                findings.push(place(
                    i,
                    "name",
                    issue(
                        Severity::Error,
                        "name",
                        format!("duplicate name {:?} (names are compared ignoring case): also used at {other}", p.name),
                        "give each persona a distinct name",
                    ),
                ));
            } else {
                names.insert(key, i);
            }
        }
    }
    ValidationReport { personas: db.personas.len(), files: db.files.len(), findings }
}

fn label(p: &PersonaSpec, i: usize) -> String {
    if p.id.is_empty() { format!("#{i}") } else { p.id.clone() }
}

fn where_is(db: &PersonaDatabase, i: usize) -> String {
    let (file, pos) = db.describe_location(i, "");
    match pos {
        Some(p) => format!("{}:{p} (persona {})", file.display(), label(&db.personas[i], i)),
        None => format!("{} (persona {})", file.display(), label(&db.personas[i], i)),
    }
}
