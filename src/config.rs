//! Configuration: `SimulationConfig` and its layers.
//!
//! Precedence, lowest first: built-in defaults, `config/troupe.toml`, a TinyTroupe `config.ini`
//! (`config/config.ini` or `--config-ini`), the scenario's `config` overrides, `TROUPE_*`
//! environment variables (`TROUPE_LLM__MODEL=gpt-4o`), then command-line flags. figment keeps
//! where each value came from, which `troupe config show` prints.

pub mod ini;
pub mod keys;
pub mod limits;
pub mod secret;
pub mod secrets;
pub mod settings;

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map as FMap, Value as FValue};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;

pub use ini::IniProvider;
pub use keys::{Leaf, leaves};
pub use secret::{Redactor, SecretString};
pub use secrets::{ApiKey, KeySource, resolve_api_key};
pub use settings::*;

/// Errors from reading or checking configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a `config.ini` is malformed or has a value of the wrong type.
    #[error("{}:{line}: {message}", path.display())]
    Ini {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// figment rejected a layer (unknown key, wrong type, syntax error).
    #[error("{0}")]
    Layer(String),
    /// A value is out of its allowed range.
    #[error("{source_name}: `{key}` = {value}: {message}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// The value, rendered.
        value: String,
        /// Where the value came from.
        source_name: String,
        /// What to change.
        message: String,
    },
    /// A `--set key=value` flag is malformed.
    #[error("--set {0:?}: expected KEY=VALUE with a dotted key such as llm.model=gpt-4o")]
    BadSet(String),
    /// A `--set key=value` whose value the key's type cannot take.
    #[error("--set {key}={value}: `{key}` takes {expected}, not {value:?}; change the value after `=`{example}")]
    BadSetValue {
        /// Dotted key.
        key: String,
        /// The value as given.
        value: String,
        /// What the key takes, in words.
        expected: String,
        /// ", e.g. --set key=default", when the key has a default to show.
        example: String,
    },
}

/// A named layer of plain values (defaults, scenario overrides, command-line flags).
#[derive(Clone)]
pub struct Layer {
    name: String,
    source: Option<PathBuf>,
    dict: Dict,
}

impl Layer {
    /// A layer from any serializable value shaped like the config (nested maps).
    pub fn new(name: impl Into<String>, source: Option<PathBuf>, value: &impl Serialize) -> Result<Self, ConfigError> {
        let name = name.into();
        let dict = match FValue::serialize(value) {
            Ok(FValue::Dict(_, d)) => d,
            Ok(_) => {
                return Err(ConfigError::Layer(format!("{name}: overrides must be a map of sections")));
            }
            Err(e) => return Err(ConfigError::Layer(format!("{name}: {e}"))),
        };
        Ok(Layer { name, source, dict })
    }

    /// A layer from `key=value` strings with dotted keys; see [`Layer::with_sets`].
    pub fn from_sets(name: &str, sets: &[String]) -> Result<Self, ConfigError> {
        Layer { name: name.to_string(), source: None, dict: Dict::new() }.with_sets(sets)
    }

    /// This layer with `key=value` strings (`--set`) applied over it, in order, so a later one
    /// for the same key wins. Each value is read as its setting's type reads it:
    /// `simulation.run_seed=18446744073709551615` is a `u64`, `llm.model=4` is the text "4", and
    /// a value the type cannot take is a [`ConfigError::BadSetValue`].
    pub fn with_sets(mut self, sets: &[String]) -> Result<Self, ConfigError> {
        let defaults = Layer::new("built-in default", None, &SimulationConfig::default())?;
        for s in sets {
            let (k, v) = s.split_once('=').ok_or_else(|| ConfigError::BadSet(s.clone()))?;
            let k = k.trim();
            if k.is_empty() || k.split('.').any(str::is_empty) {
                return Err(ConfigError::BadSet(s.clone()));
            }
            let k = current_key(k);
            set_dict_path(&mut self.dict, k, set_value(&defaults, k, v.trim())?);
        }
        Ok(self)
    }

    /// True when the layer sets nothing.
    pub fn is_empty(&self) -> bool {
        self.dict.is_empty()
    }
}

// By hand: the values may hold the API key (`--set llm.api_key=...`), so only keys show.
impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("keys", &self.dict.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let md = Metadata::named(self.name.clone());
        match &self.source {
            Some(p) => md.source(figment::Source::File(p.clone())),
            None => md,
        }
    }
    fn data(&self) -> Result<FMap<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// A layer that reads keys under their old names ([`RENAMED`]) as their current ones, so a file
/// written for the replaced engine (`[simulation] seed = "..."`) overrides, and is overridden
/// by, the layers that say `topic`. Where the values come from is unchanged.
struct OldNames<P>(P);

impl<P: Provider> Provider for OldNames<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }
    fn data(&self) -> Result<FMap<Profile, Dict>, figment::Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            for (old, new) in RENAMED {
                rename(dict, old, new).map_err(|message| {
                    let mut e = figment::Error::from(message);
                    e.metadata = Some(self.metadata());
                    e
                })?;
            }
        }
        Ok(data)
    }
}

/// Moves the value at dotted `old` to `new` in `dict`; both set to different values is an error.
fn rename(dict: &mut Dict, old: &str, new: &str) -> Result<(), String> {
    let (Some((parent, old_leaf)), Some((new_parent, new_leaf))) = (old.rsplit_once('.'), new.rsplit_once('.')) else {
        return Ok(());
    };
    if parent != new_parent {
        return Ok(()); // every rename so far stays in its section
    }
    let mut d = dict;
    for k in parent.split('.') {
        d = match d.get_mut(k) {
            Some(FValue::Dict(_, inner)) => inner,
            _ => return Ok(()),
        };
    }
    let Some(v) = d.remove(old_leaf) else { return Ok(()) };
    match d.get(new_leaf) {
        Some(current) if *current != v => {
            Err(format!("both `{new}` and `{old}` (its old name) are set, to different values; keep `{new}` only"))
        }
        Some(_) => Ok(()),
        None => {
            d.insert(new_leaf.to_string(), v);
            Ok(())
        }
    }
}

/// Sets a dotted path in a JSON map, creating maps on the way.
pub fn set_path(root: &mut serde_json::Map<String, serde_json::Value>, key: &str, v: serde_json::Value) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let e = root.entry(head.to_string()).or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !e.is_object() {
                *e = serde_json::Value::Object(Default::default());
            }
            if let Some(m) = e.as_object_mut() {
                set_path(m, rest, v);
            }
        }
        None => {
            root.insert(key.to_string(), v);
        }
    }
}

/// Sets a dotted path in a figment dictionary, creating dictionaries on the way.
fn set_dict_path(dict: &mut Dict, key: &str, v: FValue) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let e = dict.entry(head.to_string()).or_insert_with(|| FValue::from(Dict::new()));
            if !matches!(e, FValue::Dict(..)) {
                *e = FValue::from(Dict::new());
            }
            if let FValue::Dict(_, d) = e {
                set_dict_path(d, rest, v);
            }
        }
        None => {
            dict.insert(key.to_string(), v);
        }
    }
}

/// The ways the text of a `--set` value can be read, most specific first: a TOML value
/// (number, boolean, quoted string, array, inline table), a whole number beyond TOML's `i64`
/// (run seeds reach `u64::MAX`), then the text itself.
fn readings(text: &str) -> Vec<FValue> {
    let mut out = Vec::new();
    if let Ok(t) = toml::from_str::<toml::Table>(&format!("v = {text}"))
        && t.len() == 1
        && let Some(v) = t.get("v")
        && !matches!(v, toml::Value::Float(f) if !f.is_finite())
        && let Ok(v) = FValue::serialize(v)
    {
        out.push(v);
    }
    if let Ok(n) = text.parse::<u64>()
        && n > i64::MAX as u64
    {
        out.push(FValue::from(n));
    }
    out.push(FValue::from(text));
    out
}

/// The value of `--set key=text`, read as the setting's type reads it: each reading of the
/// text (see [`readings`]) is given to the setting alone, over the defaults, and the first its
/// type takes is kept. No table of types to keep in step: the config's own `Deserialize`
/// decides, optional settings included. A key the config does not have is left for the load
/// to report (with a "did you mean"); a value no reading fits is a [`ConfigError::BadSetValue`]
/// naming the key, what it takes and an example.
fn set_value(defaults: &Layer, key: &str, text: &str) -> Result<FValue, ConfigError> {
    let readings = readings(text);
    let mut last = None;
    for r in &readings {
        let mut probe = Layer { name: "probe".into(), source: None, dict: Dict::new() };
        set_dict_path(&mut probe.dict, key, r.clone());
        let err = match Figment::from(defaults.clone()).merge(probe).extract::<SimulationConfig>() {
            Ok(_) => return Ok(r.clone()),
            Err(e) => e,
        };
        let errors: Vec<figment::Error> = err.into_iter().collect();
        if errors.iter().any(|e| matches!(e.kind, figment::error::Kind::UnknownField(..))) {
            return Ok(r.clone());
        }
        last = errors.into_iter().next();
    }
    match last.map(|e| e.kind) {
        Some(figment::error::Kind::InvalidType(_, expected)) => Err(ConfigError::BadSetValue {
            key: key.to_string(),
            value: text.to_string(),
            expected: in_words(&expected),
            example: example(key),
        }),
        // An unknown variant and the like: the load says what is allowed, naming the layer.
        _ => Ok(readings.last().cloned().unwrap_or_else(|| FValue::from(text))),
    }
}

/// What serde's "expected" means, for someone typing a flag.
fn in_words(expected: &str) -> String {
    let whole = |max: u64| format!("a whole number from 0 to {max} ({expected})");
    match expected {
        "u8" => whole(u8::MAX.into()),
        "u16" => whole(u16::MAX.into()),
        "u32" => whole(u32::MAX.into()),
        "u64" | "usize" => whole(u64::MAX),
        "i8" | "i16" | "i32" | "i64" | "isize" => format!("a whole number ({expected})"),
        "f32" | "f64" => format!("a number such as 0.5 ({expected})"),
        "a boolean" => "true or false".into(),
        "a string" | "a path string" | "path string" => "text".into(),
        other => other.to_string(),
    }
}

/// ", e.g. --set key=DEFAULT" when the key has a default value to show.
fn example(key: &str) -> String {
    let shown = leaves(&SimulationConfig::default()).into_iter().find(|l| l.key == key).and_then(|l| l.value);
    match shown {
        Some(serde_json::Value::String(s)) if !s.is_empty() => format!(", e.g. --set {key}={s}"),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => format!(", e.g. --set {key}={v}"),
        _ => String::new(),
    }
}

/// Where to read configuration from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// The TOML file (`config/troupe.toml` when `None` and it exists).
    pub toml: Option<PathBuf>,
    /// A TinyTroupe `config.ini` (`config/config.ini` when `None` and it exists).
    pub ini: Option<PathBuf>,
    /// The scenario's overrides.
    pub scenario: Option<Layer>,
    /// Read `TROUPE_*` variables (on by default in the CLI; tests turn it off).
    pub env: bool,
    /// Command-line overrides.
    pub cli: Option<Layer>,
}

/// The merged configuration, with the figment that knows where each value came from.
pub struct LoadedConfig {
    /// The settings in force.
    pub config: SimulationConfig,
    /// The merged layers, for provenance.
    pub figment: Figment,
    /// Notes for the user (ignored ini keys, an API key in the config file).
    pub notes: Vec<String>,
}

// By hand: the figment holds every raw value, the API key included, so it is left out.
impl std::fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedConfig").field("config", &self.config).field("notes", &self.notes).finish_non_exhaustive()
    }
}

/// One line of `troupe config show`.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigEntry {
    /// Dotted key.
    pub key: String,
    /// The value as TOML-ish text (secrets redacted); `(unset)` for an optional setting no
    /// layer sets.
    pub value: String,
    /// Where it came from.
    pub source: String,
    /// True for an optional setting no layer sets (`llm.base_url`, ...).
    pub unset: bool,
}

const DEFAULT_TOML: &str = "config/troupe.toml";
const DEFAULT_INI: &str = "config/config.ini";

/// Builds the layered configuration.
pub fn load_config(src: &ConfigSources) -> Result<LoadedConfig, ConfigError> {
    let mut notes = Vec::new();
    let defaults = Layer::new("built-in default", None, &SimulationConfig::default())?;
    let mut fig = Figment::from(defaults);

    let toml_path = src.toml.clone().or_else(|| existing(DEFAULT_TOML));
    if let Some(p) = &toml_path {
        if src.toml.is_some() && !p.exists() {
            return Err(ConfigError::Io {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "config file not found"),
            });
        }
        // Checked with a size limit first (an endless file must not grow memory); figment then
        // reads it again itself, so its errors and `config show` name the file.
        crate::fsutil::read_input(p, crate::fsutil::MAX_CONFIG_BYTES, "a config file")
            .map_err(|source| ConfigError::Io { path: p.clone(), source })?;
        fig = fig.merge(OldNames(Toml::file_exact(p)));
    }
    let ini_path = src.ini.clone().or_else(|| existing(DEFAULT_INI));
    if let Some(p) = &ini_path {
        let ini = IniProvider::read(p)?;
        notes.extend(ini.notes());
        fig = fig.merge(OldNames(ini));
    }
    if let Some(l) = &src.scenario {
        fig = fig.merge(OldNames(l.clone()));
    }
    if src.env {
        let env = Env::prefixed("TROUPE_").filter(|k| k.as_str().contains("__")).split("__");
        fig = fig.merge(OldNames(env));
    }
    if let Some(l) = &src.cli {
        fig = fig.merge(OldNames(l.clone()));
    }
    let config: SimulationConfig = fig.extract().map_err(|e| ConfigError::Layer(describe(e)))?;
    check_ranges(&config, &fig)?;
    if config.llm.api_key.is_some() {
        let from = source_of(&fig, "llm.api_key");
        notes.push(format!(
            "the API key is set in {from}, the least safe place; move it to .troupe/secrets.toml (mode 600) or OPENAI_API_KEY"
        ));
    }
    Ok(LoadedConfig { config, figment: fig, notes })
}

fn existing(p: &str) -> Option<PathBuf> {
    let p = PathBuf::from(p);
    p.exists().then_some(p)
}

/// Renders figment errors with their source and a "did you mean" for unknown keys.
fn describe(err: figment::Error) -> String {
    let mut lines = Vec::new();
    for e in err {
        let source = e
            .metadata
            .as_ref()
            .map(|m| match &m.source {
                Some(s) => format!("{} ({s})", m.name),
                None => m.name.to_string(),
            })
            .unwrap_or_else(|| "configuration".into());
        let path = e.path.join(".");
        let line = match &e.kind {
            figment::error::Kind::UnknownField(field, expected) => {
                // figment's path already ends with the unknown field.
                let parent = e.path.split_last().map(|(_, p)| p.join(".")).unwrap_or_default();
                let full = if path.is_empty() { field.clone() } else { path.clone() };
                let in_parent = |s: &str| {
                    if parent.is_empty() { s.to_string() } else { format!("{parent}.{s}") }
                };
                let hint = match strsim_best(field, expected) {
                    Some(s) => format!("; did you mean `{}`?", in_parent(s)),
                    None => format!("; known keys here: {}", expected.join(", ")),
                };
                format!("{source}: unknown key `{full}`{hint}")
            }
            figment::error::Kind::InvalidType(actual, expected) => {
                format!("{source}: `{path}` has the wrong type: found {actual}, expected {expected}")
            }
            figment::error::Kind::UnknownVariant(v, expected) => {
                format!("{source}: `{path}` = {v:?} is not allowed; use one of: {}", expected.join(", "))
            }
            other if path.is_empty() => format!("{source}: {other}"),
            other => format!("{source}: `{path}`: {other}"),
        };
        lines.push(line);
    }
    lines.join("\n")
}

/// The entry of `expected` nearest to `field` (Jaro-Winkler above 0.8), for "did you mean".
pub(crate) fn strsim_best<'a, S: AsRef<str>>(field: &str, expected: &'a [S]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (strsim::jaro_winkler(field, e.as_ref()), e.as_ref()))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, e)| e)
}

/// Where `key` came from, as "name (path)".
pub fn source_of(fig: &Figment, key: &str) -> String {
    match fig.find_metadata(key) {
        Some(m) => match &m.source {
            Some(s) => format!("{} ({s})", m.name),
            None => m.name.to_string(),
        },
        None => "built-in default".into(),
    }
}

fn check_ranges(c: &SimulationConfig, fig: &Figment) -> Result<(), ConfigError> {
    limits::check(c).map_err(|e| ConfigError::Invalid {
        source_name: source_of(fig, &e.key),
        key: e.key,
        value: e.value,
        message: e.message,
    })
}

impl LoadedConfig {
    /// Every setting with its value and where it came from, in the order of the config's
    /// sections; optional settings that no layer sets are listed as `(unset)`. Secrets redacted.
    pub fn entries(&self) -> Vec<ConfigEntry> {
        leaves(&self.config)
            .into_iter()
            .map(|l| {
                let source = source_of(&self.figment, &l.key);
                match l.value {
                    Some(v) => ConfigEntry { key: l.key, value: v.to_string(), source, unset: false },
                    None => ConfigEntry { key: l.key, value: "(unset)".into(), source, unset: true },
                }
            })
            .collect()
    }
}

/// Loads the config with defaults only (no files, no environment): what tests and benches use.
pub fn defaults_only() -> SimulationConfig {
    SimulationConfig::default()
}

/// Convenience: the layered config with the default file locations and the environment.
pub fn load_default(cli: Option<Layer>) -> Result<LoadedConfig, ConfigError> {
    load_config(&ConfigSources { env: true, cli, ..Default::default() })
}

/// Reads a scenario's override map into a layer named after the scenario file.
pub fn scenario_layer(path: &Path, overrides: &serde_json::Value) -> Result<Layer, ConfigError> {
    Layer::new(format!("scenario {}", path.display()), Some(path.to_path_buf()), overrides)
}
