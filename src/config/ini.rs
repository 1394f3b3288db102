//! Reading a TinyTroupe-style `config.ini` into config keys.
//!
//! Sections and keys are matched in any letter case, as TinyTroupe's own files write them
//! (`[OpenAI]` / `MODEL=gpt-4o-mini`). Keys TinyTroupe knows but troupe-sim has no use for are
//! listed as ignored, not errors, so a real TinyTroupe file always loads.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map as FMap, Value as FValue};
use figment::{Metadata, Profile, Provider};

use super::ConfigError;

/// The type a key's value must have.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Float,
    Int,
    Bool,
}

/// (section, key) -> (config path, kind). Sections and keys lower-cased.
const MAPPING: &[(&str, &str, &str, Kind)] = &[
    ("openai", "model", "llm.model", Kind::Str),
    ("openai", "temperature", "llm.temperature", Kind::Float),
    ("openai", "max_tokens", "llm.max_tokens", Kind::Int),
    ("openai", "top_p", "llm.top_p", Kind::Float),
    ("openai", "timeout", "performance.persona_timeout", Kind::Float),
    ("openai", "max_attempts", "performance.max_retries", Kind::Int),
    ("openai", "waiting_time", "performance.backoff_base", Kind::Float),
    ("openai", "exponential_backoff_factor", "performance.backoff_factor", Kind::Float),
    ("openai", "azure_api_version", "llm.azure_api_version", Kind::Str),
    ("openai", "fallback_model", "llm.fallback_model", Kind::Str),
    ("openai", "base_url", "llm.base_url", Kind::Str),
    ("simulation", "parallel_agent_actions", "simulation.parallel_execution", Kind::Bool),
    ("simulation", "max_turns", "simulation.max_turns", Kind::Int),
    ("simulation", "max_personas", "simulation.max_personas", Kind::Int),
    ("simulation", "seed", "simulation.seed", Kind::Str),
    ("simulation", "rate_limit_delay", "performance.rate_limit_delay", Kind::Float),
    ("simulation", "max_workers", "performance.max_workers", Kind::Int),
    ("simulation", "timeout_seconds", "performance.timeout_seconds", Kind::Float),
    ("performance", "rate_limit_delay", "performance.rate_limit_delay", Kind::Float),
    ("performance", "max_workers", "performance.max_workers", Kind::Int),
    ("performance", "batch_size", "performance.batch_size", Kind::Int),
    ("performance", "max_retries", "performance.max_retries", Kind::Int),
    ("performance", "timeout", "performance.persona_timeout", Kind::Float),
    ("performance", "persona_timeout", "performance.persona_timeout", Kind::Float),
    ("performance", "timeout_seconds", "performance.timeout_seconds", Kind::Float),
    ("performance", "graceful_degradation", "performance.graceful_degradation", Kind::Bool),
    ("monitoring", "enable_monitoring", "monitoring.enable_monitoring", Kind::Bool),
    ("monitoring", "log_level", "monitoring.log_level", Kind::Str),
    ("monitoring", "performance_tracking", "monitoring.performance_tracking", Kind::Bool),
    ("logging", "loglevel", "monitoring.log_level", Kind::Str),
    ("logging", "log_level", "monitoring.log_level", Kind::Str),
];

/// TinyTroupe keys that troupe-sim reads but does not use.
const IGNORED: &[&str] = &[
    "api_type",
    "embedding_model",
    "freq_penalty",
    "frequency_penalty",
    "presence_penalty",
    "cache_api_calls",
    "cache_file_name",
    "max_content_display_length",
    "azure_embedding_model_api_version",
    "rai_harmful_content_prevention",
    "rai_copyright_infringement_prevention",
    "parallel_agent_generation",
    "reasoning_model",
    "reasoning_effort",
    "enable_memory_consolidation",
    "min_episode_length",
    "max_episode_length",
    "episodic_memory_fixed_prefix_length",
    "episodic_memory_lookback_length",
    "loglevel_console",
    "loglevel_file",
    "enable_rai_checks",
];

/// A parsed `config.ini`: values as a figment provider, plus the keys that were ignored.
#[derive(Debug, Clone)]
pub struct IniProvider {
    path: PathBuf,
    dict: Dict,
    /// `section.key` entries that were ignored (TinyTroupe-only or unknown).
    pub ignored: Vec<String>,
}

impl IniProvider {
    /// Reads and maps `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let io = |source| ConfigError::Io { path: path.to_path_buf(), source };
        let bytes = crate::fsutil::read_input(path, crate::fsutil::MAX_CONFIG_BYTES, "a config file").map_err(io)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}"))))?;
        Self::parse(path, &text)
    }

    /// Maps the text of an ini file read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut dict = Dict::new();
        let mut ignored = Vec::new();
        let mut section = String::new();
        let err = |line: usize, message: String| ConfigError::Ini { path: path.to_path_buf(), line, message };
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = raw.trim().trim_start_matches('\u{feff}');
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(err(line_no, format!("section header {line:?} has no closing `]`")));
                };
                section = name.trim().to_lowercase();
                continue;
            }
            let Some((k, v)) = line.split_once(['=', ':']) else {
                return Err(err(line_no, format!("expected `key = value`, found {line:?}")));
            };
            let key = k.trim().to_lowercase();
            let value = strip_inline_comment(v.trim());
            let Some((_, _, target, kind)) = MAPPING.iter().find(|(s, k2, _, _)| *s == section && *k2 == key) else {
                ignored.push(format!("{section}.{key}"));
                continue;
            };
            let parsed = convert(value, *kind)
                .ok_or_else(|| err(line_no, format!("`{key}` = {value:?} is not {}", kind_name(*kind))))?;
            insert_path(&mut dict, target, parsed);
        }
        Ok(IniProvider { path: path.to_path_buf(), dict, ignored })
    }

    /// True when `section.key` is a known TinyTroupe key that troupe-sim ignores.
    pub fn is_tinytroupe_only(entry: &str) -> bool {
        entry.rsplit('.').next().is_some_and(|k| IGNORED.contains(&k))
    }
}

fn strip_inline_comment(v: &str) -> &str {
    match v.find(" ;").or_else(|| v.find(" #")) {
        Some(i) => v[..i].trim(),
        None => v,
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Str => "text",
        Kind::Float => "a number",
        Kind::Int => "a whole number",
        Kind::Bool => "true or false",
    }
}

fn convert(v: &str, kind: Kind) -> Option<FValue> {
    let v = v.trim_matches('"');
    Some(match kind {
        Kind::Str => FValue::from(v.to_string()),
        Kind::Float => FValue::from(v.parse::<f64>().ok().filter(|f| f.is_finite())?),
        Kind::Int => FValue::from(v.parse::<u64>().ok()?),
        Kind::Bool => FValue::from(match v.to_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return None,
        }),
    })
}

fn insert_path(dict: &mut Dict, path: &str, value: FValue) {
    match path.split_once('.') {
        Some((head, rest)) => {
            let entry = dict.entry(head.to_string()).or_insert_with(|| FValue::from(Dict::new()));
            if let FValue::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
        None => {
            dict.insert(path.to_string(), value);
        }
    }
}

impl Provider for IniProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("TinyTroupe config.ini").source(figment::Source::File(self.path.clone()))
    }
    fn data(&self) -> Result<FMap<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINYTROUPE: &str = "[OpenAI]\nAPI_TYPE=openai\nMODEL=gpt-4o\nMAX_TOKENS=4000\nTEMPERATURE=1.2\nTIMEOUT=60\nMAX_ATTEMPTS=5\nWAITING_TIME=2\nEXPONENTIAL_BACKOFF_FACTOR=5\nCACHE_API_CALLS=False\n\n[Simulation]\nPARALLEL_AGENT_ACTIONS=True\nRAI_HARMFUL_CONTENT_PREVENTION=True\n\n[Logging]\nLOGLEVEL=ERROR\n";

    #[test]
    fn reads_tinytroupe_file() {
        let p = IniProvider::parse(Path::new("config.ini"), TINYTROUPE).unwrap();
        let cfg: crate::config::SimulationConfig = figment::Figment::from(figment::providers::Serialized::defaults(
            crate::config::SimulationConfig::default(),
        ))
        .merge(p.clone())
        .extract()
        .unwrap();
        assert_eq!(cfg.llm.model, "gpt-4o");
        assert_eq!(cfg.llm.max_tokens, 4000);
        assert_eq!(cfg.performance.persona_timeout, 60.0);
        assert_eq!(cfg.performance.backoff_factor, 5.0);
        assert!(cfg.simulation.parallel_execution);
        assert_eq!(cfg.monitoring.log_level, "ERROR");
        assert!(p.ignored.contains(&"openai.api_type".to_string()));
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = IniProvider::parse(Path::new("c.ini"), "[openai]\n\ntemperature = warm\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("c.ini:3") && s.contains("temperature"), "{s}");
    }
}
