//! Reading a TinyTroupe-style `config.ini` into config keys.
//!
//! Sections and keys are matched in any letter case, as TinyTroupe's own files write them
//! (`[OpenAI]` / `MODEL=gpt-4o-mini`). [`KEYS`] holds every key of every `config.ini` TinyTroupe
//! has shipped (and of the engine troupe-sim replaces): each is mapped to a setting, with its
//! unit converted where TinyTroupe counts differently, or marked unused with the reason the
//! README's table gives. A real TinyTroupe file therefore always loads; a key the table does not
//! know (a typo) is reported with its line and the nearest known key, never applied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map as FMap, Value as FValue};
use figment::{Metadata, Profile, Provider};

use super::ConfigError;

/// The type a key's value must have, and how it is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Float,
    Int,
    Bool,
    /// TinyTroupe's MAX_ATTEMPTS counts the first try; `performance.max_retries` does not.
    AttemptsToRetries,
    /// A concurrency limit; `0` or `NONE` means "no limit", which troupe-sim has not.
    Concurrency,
    /// A log level; `CRITICAL` and `FATAL` are ERROR, `NONE` leaves the setting alone.
    LogLevel,
    /// `API_TYPE`: openai, azure or ollama.
    ApiType,
    /// `CACHE_API_CALLS`: true is the cache's `auto` mode (serve hits, store misses).
    CacheCalls,
}

/// What troupe-sim does with a key.
#[derive(Debug, Clone, Copy)]
enum Use {
    /// Sets this dotted setting.
    Map(&'static str, Kind),
    /// Read and ignored, for this reason.
    Unused(&'static str),
}

/// `(section, KEY, use)`, sections as TinyTroupe writes them. Matching ignores letter case.
const KEYS: &[(&str, &str, Use)] = &[
    ("OpenAI", "API_TYPE", Use::Map("llm.provider", Kind::ApiType)),
    ("OpenAI", "BASE_URL", Use::Map("llm.base_url", Kind::Str)),
    ("OpenAI", "AZURE_API_VERSION", Use::Map("llm.azure_api_version", Kind::Str)),
    ("OpenAI", "AZURE_OPENAI_ENDPOINT", Use::Map("llm.azure_endpoint", Kind::Str)),
    ("OpenAI", "MODEL", Use::Map("llm.model", Kind::Str)),
    ("OpenAI", "FALLBACK_MODEL", Use::Map("llm.fallback_model", Kind::Str)),
    ("OpenAI", "MAX_TOKENS", Use::Map("llm.max_tokens", Kind::Int)),
    ("OpenAI", "MAX_COMPLETION_TOKENS", Use::Map("llm.max_tokens", Kind::Int)),
    ("OpenAI", "TEMPERATURE", Use::Map("llm.temperature", Kind::Float)),
    ("OpenAI", "TOP_P", Use::Map("llm.top_p", Kind::Float)),
    ("OpenAI", "TIMEOUT", Use::Map("performance.persona_timeout", Kind::Float)),
    ("OpenAI", "MAX_ATTEMPTS", Use::Map("performance.max_retries", Kind::AttemptsToRetries)),
    ("OpenAI", "WAITING_TIME", Use::Map("performance.backoff_base", Kind::Float)),
    ("OpenAI", "EXPONENTIAL_BACKOFF_FACTOR", Use::Map("performance.backoff_factor", Kind::Float)),
    ("OpenAI", "MAX_CONCURRENT_MODEL_CALLS", Use::Map("performance.max_workers", Kind::Concurrency)),
    ("OpenAI", "CACHE_API_CALLS", Use::Map("llm.cache", Kind::CacheCalls)),
    (
        "OpenAI",
        "CACHE_FILE_NAME",
        Use::Unused(
            "TinyTroupe's cache is a Python pickle, which troupe-sim can neither read nor overwrite safely; its own cache file is `llm.cache_file`",
        ),
    ),
    (
        "OpenAI",
        "REASONING_MODEL",
        Use::Unused("TinyTroupe uses it for its own analyses; troupe-sim's analysis (`troupe analyze`) calls no model"),
    ),
    ("OpenAI", "REASONING_EFFORT", Use::Unused("troupe-sim sends no `reasoning_effort`; the model's default applies")),
    ("OpenAI", "EMBEDDING_MODEL", Use::Unused("troupe-sim keeps no semantic (embedding) memory")),
    ("OpenAI", "AZURE_EMBEDDING_MODEL_API_VERSION", Use::Unused("troupe-sim keeps no semantic (embedding) memory")),
    (
        "OpenAI",
        "FREQ_PENALTY",
        Use::Unused("troupe-sim's requests carry no frequency penalty; the server's default (0) applies"),
    ),
    (
        "OpenAI",
        "FREQUENCY_PENALTY",
        Use::Unused("troupe-sim's requests carry no frequency penalty; the server's default (0) applies"),
    ),
    (
        "OpenAI",
        "PRESENCE_PENALTY",
        Use::Unused("troupe-sim's requests carry no presence penalty; the server's default (0) applies"),
    ),
    (
        "OpenAI",
        "NUM_CTX",
        Use::Unused(
            "an Ollama-only option that TinyTroupe's own tests found ignored; set the context in the Ollama model (`PARAMETER num_ctx`)",
        ),
    ),
    (
        "OpenAI",
        "MAX_CONTENT_DISPLAY_LENGTH",
        Use::Unused("TinyTroupe cuts what it prints; troupe-sim prints whole turns (`--quiet` hides them)"),
    ),
    ("Simulation", "PARALLEL_AGENT_ACTIONS", Use::Map("simulation.parallel_execution", Kind::Bool)),
    ("Simulation", "MAX_TURNS", Use::Map("simulation.max_turns", Kind::Int)),
    ("Simulation", "MAX_PERSONAS", Use::Map("simulation.max_personas", Kind::Int)),
    ("Simulation", "SEED", Use::Map("simulation.topic", Kind::Str)),
    ("Simulation", "RATE_LIMIT_DELAY", Use::Map("performance.rate_limit_delay", Kind::Float)),
    ("Simulation", "MAX_WORKERS", Use::Map("performance.max_workers", Kind::Int)),
    ("Simulation", "TIMEOUT_SECONDS", Use::Map("performance.timeout_seconds", Kind::Float)),
    (
        "Simulation",
        "PARALLEL_AGENT_GENERATION",
        Use::Unused(
            "`troupe personas generate` drafts all personas in one request, so there is nothing to run in parallel",
        ),
    ),
    (
        "Simulation",
        "RAI_HARMFUL_CONTENT_PREVENTION",
        Use::Unused("troupe-sim adds no responsible-AI preamble to prompts; the provider's own content filter applies"),
    ),
    (
        "Simulation",
        "RAI_COPYRIGHT_INFRINGEMENT_PREVENTION",
        Use::Unused("troupe-sim adds no responsible-AI preamble to prompts; the provider's own content filter applies"),
    ),
    ("Cognition", "EPISODIC_MEMORY_FIXED_PREFIX_LENGTH", Use::Map("simulation.memory_prefix", Kind::Int)),
    ("Cognition", "EPISODIC_MEMORY_LOOKBACK_LENGTH", Use::Map("simulation.memory_recent", Kind::Int)),
    (
        "Cognition",
        "ENABLE_MEMORY_CONSOLIDATION",
        Use::Unused(
            "TinyTroupe consolidates episodes into embedding-based semantic memory; troupe-sim's running summary (`simulation.consolidate_every`) costs extra model calls, so it is turned on only on purpose",
        ),
    ),
    (
        "Cognition",
        "ENABLE_CONTINUOUS_CONTEXTUAL_SEMANTIC_MEMORY_RETRIEVAL",
        Use::Unused("troupe-sim keeps no semantic (embedding) memory to retrieve from"),
    ),
    (
        "Cognition",
        "MIN_EPISODE_LENGTH",
        Use::Unused("troupe-sim has no episodes: memory is a window (`simulation.memory_prefix`, `memory_recent`)"),
    ),
    (
        "Cognition",
        "MAX_EPISODE_LENGTH",
        Use::Unused("troupe-sim has no episodes: memory is a window (`simulation.memory_prefix`, `memory_recent`)"),
    ),
    (
        "ActionGenerator",
        "MAX_ATTEMPTS",
        Use::Unused(
            "troupe-sim does not grade and regenerate replies; failed calls are retried by `performance.max_retries`",
        ),
    ),
    ("ActionGenerator", "ENABLE_QUALITY_CHECKS", Use::Unused("troupe-sim does not grade and regenerate replies")),
    ("ActionGenerator", "ENABLE_REGENERATION", Use::Unused("troupe-sim does not grade and regenerate replies")),
    ("ActionGenerator", "ENABLE_DIRECT_CORRECTION", Use::Unused("troupe-sim does not grade and regenerate replies")),
    (
        "ActionGenerator",
        "ENABLE_QUALITY_CHECK_FOR_PERSONA_ADHERENCE",
        Use::Unused("troupe-sim does not grade and regenerate replies"),
    ),
    (
        "ActionGenerator",
        "ENABLE_QUALITY_CHECK_FOR_SELFCONSISTENCY",
        Use::Unused("troupe-sim does not grade and regenerate replies"),
    ),
    (
        "ActionGenerator",
        "ENABLE_QUALITY_CHECK_FOR_FLUENCY",
        Use::Unused("troupe-sim does not grade and regenerate replies"),
    ),
    (
        "ActionGenerator",
        "ENABLE_QUALITY_CHECK_FOR_SUITABILITY",
        Use::Unused("troupe-sim does not grade and regenerate replies"),
    ),
    (
        "ActionGenerator",
        "ENABLE_QUALITY_CHECK_FOR_SIMILARITY",
        Use::Unused("troupe-sim does not grade and regenerate replies"),
    ),
    ("ActionGenerator", "CONTINUE_ON_FAILURE", Use::Unused("troupe-sim does not grade and regenerate replies")),
    ("ActionGenerator", "QUALITY_THRESHOLD", Use::Unused("troupe-sim does not grade and regenerate replies")),
    ("Logging", "LOGLEVEL", Use::Map("monitoring.log_level", Kind::LogLevel)),
    ("Logging", "LOG_LEVEL", Use::Map("monitoring.log_level", Kind::LogLevel)),
    (
        "Logging",
        "LOGLEVEL_CONSOLE",
        Use::Unused("troupe-sim has one level for the terminal and the log file: `LOGLEVEL` (`monitoring.log_level`)"),
    ),
    (
        "Logging",
        "LOGLEVEL_FILE",
        Use::Unused("troupe-sim has one level for the terminal and the log file: `LOGLEVEL` (`monitoring.log_level`)"),
    ),
    (
        "Logging",
        "LOG_INCLUDE_THREAD_ID",
        Use::Unused("log lines carry the run, turn and persona instead; async tasks move between threads"),
    ),
    ("Performance", "RATE_LIMIT_DELAY", Use::Map("performance.rate_limit_delay", Kind::Float)),
    ("Performance", "MAX_WORKERS", Use::Map("performance.max_workers", Kind::Int)),
    ("Performance", "BATCH_SIZE", Use::Map("performance.batch_size", Kind::Int)),
    ("Performance", "MAX_RETRIES", Use::Map("performance.max_retries", Kind::Int)),
    ("Performance", "TIMEOUT", Use::Map("performance.persona_timeout", Kind::Float)),
    ("Performance", "PERSONA_TIMEOUT", Use::Map("performance.persona_timeout", Kind::Float)),
    ("Performance", "TIMEOUT_SECONDS", Use::Map("performance.timeout_seconds", Kind::Float)),
    ("Performance", "GRACEFUL_DEGRADATION", Use::Map("performance.graceful_degradation", Kind::Bool)),
    ("Monitoring", "ENABLE_MONITORING", Use::Map("monitoring.enable_monitoring", Kind::Bool)),
    ("Monitoring", "LOG_LEVEL", Use::Map("monitoring.log_level", Kind::LogLevel)),
    ("Monitoring", "PERFORMANCE_TRACKING", Use::Map("monitoring.performance_tracking", Kind::Bool)),
];

/// Keys that set the same setting as another key of the file and win over it whatever the line
/// order: TinyTroupe's newer MAX_COMPLETION_TOKENS replaced MAX_TOKENS.
const WINS_OVER: &[(&str, &str)] = &[("MAX_COMPLETION_TOKENS", "MAX_TOKENS")];

/// Where `API_TYPE=ollama` sends requests when the file has no `BASE_URL` (TinyTroupe's default).
pub const OLLAMA_BASE_URL: &str = "http://localhost:11434/v1";

/// One key of the table, for documentation and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    /// The section as TinyTroupe writes it (`OpenAI`).
    pub section: &'static str,
    /// The key as TinyTroupe writes it (`MAX_COMPLETION_TOKENS`).
    pub key: &'static str,
    /// The setting it maps to, or `None` when troupe-sim does not use it.
    pub target: Option<&'static str>,
    /// Why it is unused (empty when mapped).
    pub reason: &'static str,
}

/// Every key the reader knows, in table order.
pub fn known_keys() -> Vec<KnownKey> {
    KEYS.iter()
        .map(|(section, key, u)| match u {
            Use::Map(t, _) => KnownKey { section, key, target: Some(t), reason: "" },
            Use::Unused(r) => KnownKey { section, key, target: None, reason: r },
        })
        .collect()
}

/// A line of the file that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// 1-based line.
    pub line: usize,
    /// The section as written in the file.
    pub section: String,
    /// The key as written in the file.
    pub key: String,
    /// Why.
    pub why: Why,
}

/// Why a line of the file was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A TinyTroupe key troupe-sim does not use, with the reason.
    Unused(&'static str),
    /// A key this section does not have; the nearest known key when one is close.
    Unknown(Option<String>),
    /// A key of another section (`MODEL` under `[Simulation]`).
    OtherSection(&'static str),
    /// A section TinyTroupe does not have; the nearest known section when one is close.
    UnknownSection(Option<String>),
    /// A key before the first `[section]`.
    NoSection,
}

/// A parsed `config.ini`: values as a figment provider, the lines that were ignored, and notes
/// on values that were converted or overridden.
#[derive(Debug, Clone)]
pub struct IniProvider {
    path: PathBuf,
    dict: Dict,
    /// Lines that were not applied (unused, unknown or misplaced keys).
    pub ignored: Vec<Ignored>,
    /// Notes on applied values (a key overridden by another, a "no limit" kept as a limit).
    pub value_notes: Vec<String>,
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
        let mut reader = IniReader::new(path);
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = raw.trim().trim_start_matches('\u{feff}');
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            match line.strip_prefix('[') {
                Some(rest) => reader.header(line_no, line, rest)?,
                None => reader.entry(line_no, line)?,
            }
        }
        Ok(reader.finish())
    }

    /// True when `section.key` is a known TinyTroupe key that troupe-sim does not use.
    pub fn is_tinytroupe_only(entry: &str) -> bool {
        let (section, key) = entry.rsplit_once('.').unwrap_or(("", entry));
        KEYS.iter().any(|(s, k, u)| {
            matches!(u, Use::Unused(_))
                && k.eq_ignore_ascii_case(key)
                && (section.is_empty() || s.eq_ignore_ascii_case(section))
        })
    }

    /// What to tell the user about this file: a warning per unknown or misplaced key (with
    /// `file:line` and the nearest known key), one note naming the unused TinyTroupe keys, and
    /// the notes on converted values.
    pub fn notes(&self) -> Vec<String> {
        let file = self.path.display();
        let mut out = Vec::new();
        let mut unused: Vec<String> = Vec::new();
        for i in &self.ignored {
            let at = format!("{file}:{}", i.line);
            match &i.why {
                Why::Unused(_) => {
                    let label = format!("[{}] {}", i.section, i.key);
                    if !unused.contains(&label) {
                        unused.push(label);
                    }
                }
                Why::Unknown(near) => out.push(format!(
                    "{at}: unknown key `{}` in [{}], ignored; {}",
                    i.key,
                    i.section,
                    match near {
                        Some(k) => format!("did you mean `{k}`?"),
                        None => "see the config.ini table in the README for the keys troupe-sim reads".into(),
                    }
                )),
                Why::OtherSection(s) => out.push(format!(
                    "{at}: `{}` is not a key of [{}], ignored; did you mean [{s}] {}?",
                    i.key,
                    i.section,
                    same_case(KEYS.iter().find(|k| k.1.eq_ignore_ascii_case(&i.key)).map_or("", |k| k.1), &i.key)
                )),
                Why::UnknownSection(near) => out.push(format!(
                    "{at}: unknown section [{}], its keys are ignored; {}",
                    i.section,
                    match near {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("the sections are {}", section_names().join(", ")),
                    }
                )),
                Why::NoSection => out.push(format!(
                    "{at}: `{}` comes before any [section], ignored; put it under its section ([OpenAI], ...)",
                    i.key
                )),
            }
        }
        out.extend(self.value_notes.iter().cloned());
        if !unused.is_empty() {
            out.push(format!(
                "{file}: TinyTroupe settings troupe-sim does not use were ignored: {} (the README's config.ini table says why for each)",
                unused.join(", ")
            ));
        }
        out
    }
}

/// An error at `line` of the file.
fn ini_error(path: &Path, line: usize, message: String) -> ConfigError {
    ConfigError::Ini { path: path.to_path_buf(), line, message }
}

/// `file:line`, for notes.
fn here(path: &Path, line: usize) -> String {
    format!("{}:{line}", path.display())
}

/// Reading one `config.ini` line by line: what is set so far and what was ignored.
struct IniReader<'a> {
    path: &'a Path,
    dict: Dict,
    ignored: Vec<Ignored>,
    value_notes: Vec<String>,
    /// (section, as written) once a header is read; `known` is the table's spelling.
    section: Option<(String, Option<&'static str>)>,
    /// Which key set each setting, to let MAX_COMPLETION_TOKENS win over MAX_TOKENS.
    set_by: HashMap<&'static str, (&'static str, usize)>,
    ollama: bool,
    base_url_set: bool,
}

impl<'a> IniReader<'a> {
    fn new(path: &'a Path) -> Self {
        IniReader {
            path,
            dict: Dict::new(),
            ignored: Vec::new(),
            value_notes: Vec::new(),
            section: None,
            set_by: HashMap::new(),
            ollama: false,
            base_url_set: false,
        }
    }

    /// A `[section]` line (`rest` follows the `[`).
    fn header(&mut self, line_no: usize, line: &str, rest: &str) -> Result<(), ConfigError> {
        let Some(name) = rest.strip_suffix(']') else {
            return Err(ini_error(self.path, line_no, format!("section header {line:?} has no closing `]`")));
        };
        let name = name.trim();
        let known = KEYS.iter().map(|k| k.0).find(|s| s.eq_ignore_ascii_case(name));
        if known.is_none() {
            let sections = section_names();
            let near = super::strsim_best(&name.to_lowercase(), &lowered(&sections))
                .and_then(|l| sections.iter().find(|s| s.to_lowercase() == l).map(|s| format!("[{s}]")));
            self.ignored.push(Ignored {
                line: line_no,
                section: name.to_string(),
                key: String::new(),
                why: Why::UnknownSection(near),
            });
        }
        self.section = Some((name.to_string(), known));
        Ok(())
    }

    /// A `key = value` line.
    fn entry(&mut self, line_no: usize, line: &str) -> Result<(), ConfigError> {
        let Some((k, v)) = line.split_once(['=', ':']) else {
            return Err(ini_error(self.path, line_no, format!("expected `key = value`, found {line:?}")));
        };
        let key = k.trim();
        let value = strip_inline_comment(v.trim());
        let Some((table_key, target, kind)) = self.lookup(line_no, key) else {
            return Ok(());
        };
        if let Some(parsed) = self.value(line_no, key, value, target, kind)? {
            self.set(line_no, key, table_key, target, parsed);
        }
        Ok(())
    }

    /// The table's spelling of `key`, the setting it maps to and its kind; `None`, with the line
    /// recorded as ignored, when the key is not applied.
    fn lookup(&mut self, line_no: usize, key: &str) -> Option<(&'static str, &'static str, Kind)> {
        let Some((written_section, known_section)) = &self.section else {
            self.ignored.push(Ignored { line: line_no, section: String::new(), key: key.into(), why: Why::NoSection });
            return None;
        };
        // Without `known_section` the section itself was reported; its keys go with it.
        let known_section = (*known_section)?;
        let why = match KEYS.iter().find(|(s, k2, _)| *s == known_section && k2.eq_ignore_ascii_case(key)) {
            Some((_, table_key, Use::Map(t, k))) => return Some((table_key, t, *k)),
            Some((_, _, Use::Unused(reason))) => Why::Unused(reason),
            None => not_in_section(known_section, key),
        };
        self.ignored.push(Ignored { line: line_no, section: written_section.clone(), key: key.into(), why });
        None
    }

    /// `value` converted as `kind` says; `None` when it leaves the setting alone (a note says
    /// why).
    fn value(
        &mut self,
        line_no: usize,
        key: &str,
        value: &str,
        target: &str,
        kind: Kind,
    ) -> Result<Option<FValue>, ConfigError> {
        let path = self.path;
        let bad =
            |what: &str| ini_error(path, line_no, format!("`{key}` = {value:?} is not {what} (it sets {target})"));
        let parsed = match kind {
            Kind::ApiType => self.api_type(line_no, key, value)?,
            Kind::Concurrency => {
                let v = value.trim_matches('"');
                if v.eq_ignore_ascii_case("none") || v == "0" {
                    self.value_notes.push(format!(
                        "{}: `{key}` = {v} means \"no limit\" in TinyTroupe; troupe-sim always has one, so performance.max_workers keeps its value",
                        here(path, line_no)
                    ));
                    return Ok(None);
                }
                FValue::from(v.parse::<u64>().map_err(|_| bad("a whole number, 0 or NONE"))?)
            }
            Kind::AttemptsToRetries => {
                let attempts = value.trim_matches('"').parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 0.0);
                // TinyTroupe reads it as a float (`5.0`); a fraction makes no sense.
                let attempts = attempts.filter(|f| f.fract() == 0.0).ok_or_else(|| bad("a whole number"))?;
                FValue::from((attempts as u64).saturating_sub(1))
            }
            Kind::LogLevel => {
                let v = value.trim_matches('"');
                match v.to_uppercase().as_str() {
                    "NONE" => {
                        self.value_notes.push(format!(
                            "{}: `{key}` = NONE leaves the level to others in TinyTroupe; troupe-sim keeps monitoring.log_level",
                            here(path, line_no)
                        ));
                        return Ok(None);
                    }
                    "CRITICAL" | "FATAL" => FValue::from("ERROR"),
                    _ => FValue::from(v.to_string()),
                }
            }
            Kind::CacheCalls => {
                let on = convert(value, Kind::Bool).ok_or_else(|| bad(kind_name(Kind::Bool)))?;
                FValue::from(if matches!(on, FValue::Bool(_, true)) { "auto" } else { "off" })
            }
            k => convert(value, k).ok_or_else(|| bad(kind_name(k)))?,
        };
        Ok(Some(parsed))
    }

    /// `API_TYPE`: the provider; Ollama is OpenAI-compatible.
    fn api_type(&mut self, line_no: usize, key: &str, value: &str) -> Result<FValue, ConfigError> {
        match value.trim_matches('"').to_lowercase().as_str() {
            "openai" => Ok(FValue::from("openai")),
            "azure" => Ok(FValue::from("azure")),
            "ollama" => {
                self.ollama = true;
                Ok(FValue::from("openai"))
            }
            "litellm" => Err(ini_error(
                self.path,
                line_no,
                format!(
                    "`{key}` = {value:?}: troupe-sim has no LiteLLM library client; run the LiteLLM proxy and set API_TYPE=openai with BASE_URL=http://HOST:4000"
                ),
            )),
            _ => Err(ini_error(
                self.path,
                line_no,
                format!("`{key}` = {value:?} is not a provider troupe-sim has; use openai, azure or ollama"),
            )),
        }
    }

    /// Sets `target`, unless a key that wins over this one (`WINS_OVER`) set it already.
    fn set(&mut self, line_no: usize, key: &str, table_key: &'static str, target: &'static str, parsed: FValue) {
        if target == "llm.base_url" {
            self.base_url_set = true;
        }
        if let Some((prev_key, prev_line)) = self.set_by.get(target).copied() {
            if WINS_OVER.contains(&(prev_key, table_key)) {
                self.value_notes.push(overridden(&here(self.path, line_no), key, prev_key, prev_line));
                return;
            }
            if WINS_OVER.contains(&(table_key, prev_key)) {
                self.value_notes.push(overridden(&here(self.path, prev_line), prev_key, key, line_no));
            }
        }
        self.set_by.insert(target, (table_key, line_no));
        insert_path(&mut self.dict, target, parsed);
    }

    fn finish(mut self) -> IniProvider {
        if self.ollama && !self.base_url_set {
            insert_path(&mut self.dict, "llm.base_url", FValue::from(OLLAMA_BASE_URL));
        }
        IniProvider {
            path: self.path.to_path_buf(),
            dict: self.dict,
            ignored: self.ignored,
            value_notes: self.value_notes,
        }
    }
}

/// Why `key` is not a key of `section`: it belongs to another, or it is unknown (with the
/// nearest key of the section, when one is close).
fn not_in_section(section: &str, key: &str) -> Why {
    match KEYS.iter().find(|(_, k2, _)| k2.eq_ignore_ascii_case(key)) {
        Some((other, _, _)) => Why::OtherSection(other),
        None => {
            let here_keys: Vec<&str> = KEYS.iter().filter(|(s, _, _)| *s == section).map(|(_, k, _)| *k).collect();
            let near = super::strsim_best(&key.to_lowercase(), &lowered(&here_keys))
                .and_then(|l| here_keys.iter().find(|k| k.to_lowercase() == l))
                .map(|k| same_case(k, key));
            Why::Unknown(near)
        }
    }
}

fn overridden(at: &str, key: &str, by: &str, by_line: usize) -> String {
    format!("{at}: `{key}` is overridden by `{by}` (line {by_line}), as in TinyTroupe")
}

/// The table's sections, each once, in order.
fn section_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for (s, _, _) in KEYS {
        if !v.contains(s) {
            v.push(s);
        }
    }
    v
}

fn lowered(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_lowercase()).collect()
}

/// `known` in the letter case the user wrote `typed` in (TinyTroupe files are upper case).
fn same_case(known: &str, typed: &str) -> String {
    if typed.chars().any(|c| c.is_ascii_lowercase()) && !typed.chars().any(|c| c.is_ascii_uppercase()) {
        known.to_lowercase()
    } else {
        known.to_string()
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
        Kind::Str | Kind::ApiType | Kind::LogLevel => "text",
        Kind::Float => "a number",
        Kind::Int | Kind::AttemptsToRetries | Kind::Concurrency => "a whole number",
        Kind::Bool | Kind::CacheCalls => "true or false",
    }
}

fn convert(v: &str, kind: Kind) -> Option<FValue> {
    let v = v.trim_matches('"');
    Some(match kind {
        Kind::Float => FValue::from(v.parse::<f64>().ok().filter(|f| f.is_finite())?),
        Kind::Int => FValue::from(v.parse::<u64>().ok()?),
        Kind::Bool => FValue::from(match v.to_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return None,
        }),
        _ => FValue::from(v.to_string()),
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
        assert_eq!(cfg.performance.max_retries, 4);
        assert_eq!(cfg.performance.backoff_factor, 5.0);
        assert!(cfg.simulation.parallel_execution);
        assert_eq!(cfg.monitoring.log_level, "ERROR");
        assert_eq!(cfg.llm.provider, crate::config::ProviderKind::OpenAi);
        assert_eq!(p.ignored.len(), 1);
        assert_eq!((p.ignored[0].line, p.ignored[0].key.as_str()), (14, "RAI_HARMFUL_CONTENT_PREVENTION"));
        assert!(matches!(p.ignored[0].why, Why::Unused(_)));
        assert!(IniProvider::is_tinytroupe_only("simulation.rai_harmful_content_prevention"));
        assert!(IniProvider::is_tinytroupe_only("actiongenerator.MAX_ATTEMPTS"));
        assert!(!IniProvider::is_tinytroupe_only("openai.max_attempts"));
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = IniProvider::parse(Path::new("c.ini"), "[openai]\n\ntemperature = warm\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("c.ini:3") && s.contains("temperature"), "{s}");
    }

    #[test]
    fn the_table_has_each_key_once_per_section() {
        for (i, (s, k, _)) in KEYS.iter().enumerate() {
            assert!(!KEYS[..i].iter().any(|(s2, k2, _)| s2 == s && k2 == k), "[{s}] {k} is in the table twice");
            assert_eq!(k.to_uppercase(), *k, "{k}: keys are written as TinyTroupe writes them");
        }
    }
}
