//! Reading personas from files and folders into a `PersonaDatabase`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use super::PersonaError;
use super::json::{LineCol, PositionIndex, parse_strict};
use super::spec::PersonaSpec;
use super::tinytroupe;
use super::validate::{Finding, Severity};

/// Where one persona was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Index into `PersonaDatabase::files`.
    pub file: usize,
    /// JSON pointer of the persona object inside the file (`""` for a whole-file persona).
    pub pointer: String,
}

/// One file that was read, with its text kept for `line:col` lookups.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as given or found.
    pub path: PathBuf,
    /// How the personas are laid out in this file (decides how saving writes it).
    pub layout: Layout,
    text: Vec<u8>,
    positions: OnceLock<PositionIndex>,
}

impl SourceFile {
    /// The `line:col` of the value at `pointer`, or of its nearest ancestor.
    pub fn locate(&self, pointer: &str) -> Option<LineCol> {
        self.positions.get_or_init(|| PositionIndex::build(&self.text)).locate(pointer)
    }

    /// The bytes read (saving parses them again to keep what the loader set aside).
    pub(super) fn text(&self) -> &[u8] {
        &self.text
    }
}

/// The shape of a persona file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A JSON array of personas.
    Array,
    /// An object with a `personas` array (other keys kept).
    Wrapped,
    /// A single persona or agent object.
    Single,
    /// A fragment file.
    Fragment,
}

/// A fragment: a partial persona deep-merged into others.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    /// File stem or the fragment's own `id`/`name`.
    pub name: String,
    /// The `persona` object to merge.
    pub persona: Map<String, Value>,
}

/// Personas and fragments read from one or more sources, with where each came from.
#[derive(Debug, Default)]
pub struct PersonaDatabase {
    /// Personas in file order.
    pub personas: Vec<PersonaSpec>,
    /// `locations[i]` is where `personas[i]` was read.
    pub locations: Vec<Location>,
    /// Fragments found in the sources.
    pub fragments: Vec<Fragment>,
    /// Files read, in order.
    pub files: Vec<SourceFile>,
    /// Problems met while reading (a persona of the wrong shape, an unreadable file in a folder).
    pub load_findings: Vec<Finding>,
    /// Index of the first persona of each id, built on the first lookup (so looking up many ids
    /// in a large database stays linear). Reset whenever personas are added through this type.
    index: std::sync::OnceLock<std::collections::HashMap<String, usize>>,
}

impl PersonaDatabase {
    /// Reads a file, or a folder of `*.json` files recursively.
    pub fn load(path: &Path) -> Result<Self, PersonaError> {
        let mut db = PersonaDatabase::default();
        db.add_source(path)?;
        Ok(db)
    }

    /// Adds a file or folder to this database.
    pub fn add_source(&mut self, path: &Path) -> Result<(), PersonaError> {
        self.index = std::sync::OnceLock::new();
        let meta = std::fs::metadata(path).map_err(|e| PersonaError::Io { path: path.to_path_buf(), source: e })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk_json(path, &mut files).map_err(|e| PersonaError::Io { path: path.to_path_buf(), source: e })?;
            files.sort();
            if files.is_empty() {
                return Err(PersonaError::EmptyFolder { path: path.to_path_buf() });
            }
            for f in files {
                self.add_file(&f)?;
            }
            Ok(())
        } else {
            self.add_file(path)
        }
    }

    fn add_file(&mut self, path: &Path) -> Result<(), PersonaError> {
        let mut text = crate::fsutil::read_input(path, crate::fsutil::MAX_PERSONA_FILE_BYTES, "a persona file")
            .map_err(|e| PersonaError::Io { path: path.to_path_buf(), source: e })?;
        // Dropped once here, so every later reading of the text (positions, saving) agrees.
        if text.starts_with(b"\xEF\xBB\xBF") {
            text.drain(..3);
        }
        check_json_file(path, &text)?;
        let file = self.files.len();
        if let Some(personas) = native_array(&text) {
            self.locations.extend((0..personas.len()).map(|i| Location { file, pointer: format!("/{i}") }));
            self.personas.extend(personas);
            self.files.push(SourceFile {
                path: path.to_path_buf(),
                layout: Layout::Array,
                text,
                positions: OnceLock::new(),
            });
            return Ok(());
        }
        let value = parse_json_file(path, &text)?;
        let layout = match &value {
            Value::Array(_) => Layout::Array,
            Value::Object(o) if o.get("personas").is_some_and(Value::is_array) => Layout::Wrapped,
            Value::Object(o) if tinytroupe::is_fragment(o) => Layout::Fragment,
            Value::Object(_) => Layout::Single,
            _ => {
                return Err(PersonaError::Shape { path: path.to_path_buf(), found: json_kind(&value) });
            }
        };
        self.files.push(SourceFile { path: path.to_path_buf(), layout, text, positions: OnceLock::new() });
        match (layout, value) {
            (Layout::Array, Value::Array(items)) => self.add_items(file, "", items),
            (Layout::Wrapped, Value::Object(mut o)) => {
                if let Some(Value::Array(items)) = o.remove("personas") {
                    self.add_items(file, "/personas", items);
                }
            }
            (Layout::Fragment, Value::Object(o)) => self.fragments.push(fragment_from(path, o)),
            (_, v) => self.add_one(file, String::new(), v),
        }
        Ok(())
    }

    fn add_items(&mut self, file: usize, base: &str, items: Vec<Value>) {
        self.personas.reserve(items.len());
        self.locations.reserve(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let pointer = format!("{base}/{i}");
            match item {
                Value::Object(o) if tinytroupe::is_fragment(&o) => {
                    let path = self.files[file].path.clone();
                    self.fragments.push(fragment_from(&path, o));
                }
                v => self.add_one(file, pointer, v),
            }
        }
    }

    fn add_one(&mut self, file: usize, pointer: String, value: Value) {
        let label = persona_label(&value, &pointer);
        match persona_from_value(value) {
            Ok(p) => {
                self.personas.push(p);
                self.locations.push(Location { file, pointer });
            }
            Err((field, msg)) => {
                let at = if field.is_empty() { pointer.clone() } else { format!("{pointer}/{field}") };
                let f = &self.files[file];
                self.load_findings.push(Finding {
                    severity: Severity::Error,
                    file: f.path.clone(),
                    persona: label,
                    field: field.replace('/', "."),
                    position: f.locate(&at),
                    message: msg,
                    hint: "give the field the type the persona schema expects (see README, \"Personas\")".into(),
                });
            }
        }
    }

    /// Where persona `i` was read, as `file:line:col`.
    pub fn describe_location(&self, i: usize, field_pointer: &str) -> (PathBuf, Option<LineCol>) {
        let loc = &self.locations[i];
        let f = &self.files[loc.file];
        (f.path.clone(), f.locate(&format!("{}{}", loc.pointer, field_pointer)))
    }

    /// Indexes personas by lower-cased tag.
    pub fn tag_index(&self) -> HashMap<String, Vec<usize>> {
        let mut idx: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in self.personas.iter().enumerate() {
            for t in &p.tags {
                idx.entry(t.to_lowercase()).or_default().push(i);
            }
        }
        idx
    }

    /// Personas carrying any of `tags` (case-insensitive), in database order.
    pub fn by_tags(&self, tags: &[String]) -> Vec<&PersonaSpec> {
        if tags.is_empty() {
            return self.personas.iter().collect();
        }
        let wanted: Vec<String> = tags.iter().map(|t| t.to_lowercase()).collect();
        self.personas
            .iter()
            .filter(|p| p.tags.iter().any(|t| wanted.iter().any(|w| t.eq_ignore_ascii_case(w))))
            .collect()
    }

    /// The persona with this id.
    pub fn get(&self, id: &str) -> Option<&PersonaSpec> {
        // A database small enough is searched; a larger one is indexed once.
        if self.personas.len() <= 64 {
            return self.personas.iter().find(|p| p.id == id);
        }
        let index = self.index.get_or_init(|| {
            let mut m = std::collections::HashMap::with_capacity(self.personas.len());
            for (i, p) in self.personas.iter().enumerate() {
                m.entry(p.id.clone()).or_insert(i);
            }
            m
        });
        // The index was built from the personas as they were then: a stale entry is not trusted.
        match index.get(id).and_then(|&i| self.personas.get(i)).filter(|p| p.id == id) {
            Some(p) => Some(p),
            None if index.len() != self.personas.len() => self.personas.iter().find(|p| p.id == id),
            None => None,
        }
    }

    /// The fragment with this name.
    pub fn fragment(&self, name: &str) -> Option<&Fragment> {
        self.fragments.iter().find(|f| f.name == name)
    }
}

/// Loads the personas of `path` that carry any of `tags` (all of them when `tags` is empty).
pub fn load_personas_by_tags(path: &Path, tags: &[String]) -> Result<Vec<PersonaSpec>, PersonaError> {
    let db = PersonaDatabase::load(path)?;
    Ok(db.by_tags(tags).into_iter().cloned().collect())
}

/// Converts one JSON value (native or TinyTroupe) into a persona.
/// On failure returns the field path (slash-separated) and a message.
pub fn persona_from_value(value: Value) -> Result<PersonaSpec, (String, String)> {
    match value {
        Value::Object(o) if tinytroupe::is_agent(&o) => Ok(tinytroupe::from_agent(o)),
        v @ Value::Object(_) => {
            let de = serde_path_to_error::deserialize(v);
            de.map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." { String::new() } else { path.replace('.', "/") };
                (field, e.into_inner().to_string())
            })
            .map(|p: PersonaSpec| p)
        }
        other => Err((String::new(), format!("expected a persona object, found {}", json_kind(&other)))),
    }
}

/// The personas of a file that is an array of native personas only, read straight into
/// `PersonaSpec`s; `None` for anything else (agents, fragments, a wrong type), which the general
/// path then reads item by item. Skipping the `Value` in between is most of what makes 100,000
/// personas load in well under a second. The text must have passed `check_json_file`.
fn native_array(text: &[u8]) -> Option<Vec<PersonaSpec>> {
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return None;
    }
    let personas: Vec<PersonaSpec> = serde_json::from_slice(text).ok()?;
    let native = |p: &PersonaSpec| p.kind != "Fragment" && !p.extra.get("persona").is_some_and(Value::is_object);
    personas.iter().all(native).then_some(personas)
}

/// Checks a JSON file strictly without building a value; errors as `parse_json_file` gives them.
fn check_json_file(path: &Path, text: &[u8]) -> Result<(), PersonaError> {
    if super::json::strip_bom(text).iter().all(u8::is_ascii_whitespace) {
        return Err(PersonaError::Empty { path: path.to_path_buf() });
    }
    super::json::check_strict(text).map_err(|e| json_error(path, &e))
}

fn json_error(path: &Path, e: &serde_json::Error) -> PersonaError {
    PersonaError::Json {
        path: path.to_path_buf(),
        at: LineCol { line: e.line(), col: e.column() },
        message: e.to_string(),
        hint: json_hint(e),
    }
}

/// Parses a JSON file strictly, turning errors into `PersonaError::Json` with `line:col`.
pub fn parse_json_file(path: &Path, text: &[u8]) -> Result<Value, PersonaError> {
    if super::json::strip_bom(text).iter().all(u8::is_ascii_whitespace) {
        return Err(PersonaError::Empty { path: path.to_path_buf() });
    }
    parse_strict(text).map_err(|e| json_error(path, &e))
}

fn json_hint(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.contains("recursion limit") {
        "the JSON nests deeper than 128 levels; a persona file never needs that, so check that the file is really a persona database".into()
    } else if msg.contains("duplicate key") {
        "remove one of the two keys; JSON readers disagree on which one wins".into()
    } else if e.is_eof() {
        "the file ends in the middle of a value: it may be truncated; restore it from backups/ or finish the last persona".into()
    } else if msg.contains("invalid unicode") || msg.contains("UTF-8") {
        "the file is not valid UTF-8; re-save it as UTF-8".into()
    } else {
        "fix the JSON syntax at that position (a missing comma, quote or bracket is the usual cause)".into()
    }
}

/// A persona's id when it has one, else its index (`#3`) in the file.
fn persona_label(v: &Value, pointer: &str) -> String {
    let id = v.get("id").or_else(|| v.get("persona").and_then(|p| p.get("name")));
    match id.and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => match pointer.rsplit('/').next() {
            Some(i) if !i.is_empty() => format!("#{i}"),
            _ => "#0".to_string(),
        },
    }
}

fn fragment_from(path: &Path, o: Map<String, Value>) -> Fragment {
    let name = o.get("id").or_else(|| o.get("name")).and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| {
        let stem = path.file_name().and_then(|s| s.to_str()).unwrap_or("fragment");
        stem.split('.').next().unwrap_or(stem).to_string()
    });
    let persona = match o.get("persona") {
        Some(Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    Fragment { name, persona }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn walk_json(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Applies a fragment to a persona: deep-merges into the TinyTroupe `persona` object, or into
/// the native JSON for native personas, and re-reads the result.
pub fn apply_fragment(p: &PersonaSpec, fragment: &Fragment) -> Result<PersonaSpec, PersonaError> {
    let patch = Value::Object(fragment.persona.clone());
    let mut value = p.to_saved_value();
    match &p.origin {
        super::spec::Origin::TinyTroupe { .. } => {
            if let Some(inner) = value.get_mut("persona") {
                tinytroupe::deep_merge(inner, &patch);
            }
        }
        super::spec::Origin::Native => {
            // TinyTroupe vocabulary that has a native home goes there; the rest merges as is.
            let mut patch = patch;
            if let Some(obj) = patch.as_object_mut()
                && let Some(goals) = obj.remove("long_term_goals")
            {
                let goals: Vec<Value> = tinytroupe::texts(&goals).into_iter().map(Value::String).collect();
                let extra = serde_json::json!({ "personality": { "goals": goals } });
                tinytroupe::deep_merge(&mut value, &extra);
            }
            tinytroupe::deep_merge(&mut value, &patch);
        }
    }
    persona_from_value(value).map_err(|(field, message)| PersonaError::Fragment {
        fragment: fragment.name.clone(),
        persona: p.id.clone(),
        message: if field.is_empty() { message } else { format!("{field}: {message}") },
    })
}

/// Serde helper used by scenario inline personas.
pub fn persona_from_json_str(text: &str) -> Result<PersonaSpec, PersonaError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let v = parse_strict(text.as_bytes()).map_err(|e| PersonaError::Json {
        path: PathBuf::from("<inline>"),
        at: LineCol { line: e.line(), col: e.column() },
        message: e.to_string(),
        hint: json_hint(&e),
    })?;
    persona_from_value(v).map_err(|(field, message)| PersonaError::Invalid { field, message })
}

/// Shared, read-only persona handle used by the runtime.
pub type SharedPersona = Arc<PersonaSpec>;
