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

    /// A layer from `key=value` strings with dotted keys; values are parsed as TOML scalars
    /// (numbers, booleans) and fall back to plain strings.
    pub fn from_sets(name: &str, sets: &[String]) -> Result<Self, ConfigError> {
        let mut root = serde_json::Map::new();
        for s in sets {
            let (k, v) = s.split_once('=').ok_or_else(|| ConfigError::BadSet(s.clone()))?;
            let k = k.trim();
            if k.is_empty() || k.split('.').any(str::is_empty) {
                return Err(ConfigError::BadSet(s.clone()));
            }
            set_path(&mut root, k, parse_scalar(v.trim()));
        }
        Layer::new(name, None, &root)
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

fn parse_scalar(v: &str) -> serde_json::Value {
    if let Ok(b) = v.parse::<bool>() {
        return b.into();
    }
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        return f.into();
    }
    v.trim_matches('"').to_string().into()
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
        fig = fig.merge(Toml::file_exact(p));
    }
    let ini_path = src.ini.clone().or_else(|| existing(DEFAULT_INI));
    if let Some(p) = &ini_path {
        let ini = IniProvider::read(p)?;
        notes.extend(ini.notes());
        fig = fig.merge(ini);
    }
    if let Some(l) = &src.scenario {
        fig = fig.merge(l.clone());
    }
    if src.env {
        let env = Env::prefixed("TROUPE_").filter(|k| k.as_str().contains("__")).split("__");
        fig = fig.merge(env);
    }
    if let Some(l) = &src.cli {
        fig = fig.merge(l.clone());
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
