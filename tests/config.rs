//! Configuration (issue 2): the defaults, the layering and where each value came from, TinyTroupe
//! `config.ini` files, errors that name the source and key, and the API key that never prints.
//!
//! Every test passes its own config files, so files under `config/` in the repository never leak
//! in. Tests that read the environment hold `ENV_LOCK`, so they never see each other's variables.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tempfile::TempDir;
use troupe_sim::config::{
    self, ConfigError, ConfigSources, KeySource, Layer, LoadedConfig, SecretString, SimulationConfig, TurnPolicy,
    load_config, resolve_api_key,
};

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Environment variables set for the life of the guard.
struct EnvVars {
    names: Vec<String>,
    _lock: MutexGuard<'static, ()>,
}

fn env_vars(vars: &[(&str, &str)]) -> EnvVars {
    let lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in vars {
        // SAFETY: every test that sets or reads these variables holds ENV_LOCK, and std's own
        // environment lock covers the other threads' reads (TMPDIR).
        unsafe { std::env::set_var(k, v) };
    }
    EnvVars { names: vars.iter().map(|(k, _)| k.to_string()).collect(), _lock: lock }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for k in &self.names {
            // SAFETY: as in `env_vars`; the lock is still held here.
            unsafe { std::env::remove_var(k) };
        }
    }
}

/// A folder of config files for one test.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Self {
        Files { dir: tempfile::tempdir().unwrap() }
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
    }
    /// Sources with an empty TOML file and an empty ini file unless given.
    fn sources(&self, toml: Option<&str>, ini: Option<&str>) -> ConfigSources {
        ConfigSources {
            toml: Some(self.write("troupe.toml", toml.unwrap_or(""))),
            ini: Some(self.write("config.ini", ini.unwrap_or(""))),
            scenario: None,
            env: false,
            cli: None,
        }
    }
}

fn sets(s: &[&str]) -> Layer {
    Layer::from_sets("command line", &s.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

/// The value and source `troupe config show` prints for `key`.
fn entry(loaded: &LoadedConfig, key: &str) -> (String, String) {
    let e = loaded.entries().into_iter().find(|e| e.key == key).unwrap_or_else(|| panic!("no entry {key}"));
    (e.value, e.source)
}

fn layer_error(src: &ConfigSources) -> String {
    match load_config(src) {
        Err(e) => e.to_string(),
        Ok(c) => panic!("expected an error, got {:?}", c.config),
    }
}

// ---------------------------------------------------------------- defaults

#[test]
fn defaults_match_the_issue() {
    let c = SimulationConfig::default();
    assert_eq!(c.llm.model, "gpt-4o-mini");
    assert_eq!(c.llm.temperature, 0.7);
    assert_eq!(c.simulation.max_turns, 6);
    assert_eq!(c.simulation.topic, "");
    assert_eq!(c.simulation.personas_file, Path::new("data/personas.agents.json"));
    assert_eq!(c.simulation.max_personas, 10);
    assert_eq!(c.performance.persona_timeout, 30.0);
    assert!(!c.simulation.parallel_execution);
    assert_eq!(c.performance.max_workers, 3);
    assert_eq!(c.performance.rate_limit_delay, 1.0);
    assert_eq!(c.performance.max_retries, 5);
    assert_eq!(c.performance.batch_size, 5);
    assert!(c.monitoring.enable_monitoring);
    assert_eq!(c.monitoring.log_level, "INFO");
    assert!(c.monitoring.performance_tracking);
    assert_eq!(c.output.output_dir, Path::new("outputs"));
    assert!(c.output.auto_analysis);
    assert!(c.output.save_visualizations);
    assert_eq!(c.performance.timeout_seconds, 300.0);
    assert!(c.performance.graceful_degradation);
    assert_eq!(c.llm.fallback_model, "gpt-3.5-turbo");
    // Provider settings the later issues need are present and empty by default.
    assert!(c.llm.base_url.is_none() && c.llm.api_key.is_none());
    assert!(c.llm.azure_endpoint.is_none() && c.llm.azure_deployment.is_none());
    assert!(!c.llm.azure_api_version.is_empty());
    assert!(c.llm.max_tokens > 0);
    assert!(c.llm.requests_per_minute.is_none() && c.llm.tokens_per_minute.is_none());
    assert_eq!(c.simulation.policy(), TurnPolicy::RoundRobin);
    assert_eq!(config::defaults_only(), c);
}

#[test]
fn defaults_load_with_their_source_and_their_section() {
    let f = Files::new();
    let loaded = load_config(&f.sources(None, None)).unwrap();
    assert_eq!(loaded.config, SimulationConfig::default());
    let entries = loaded.entries();
    assert!(entries.iter().all(|e| e.source == "built-in default"), "{entries:#?}");
    for key in [
        "llm.model",
        "llm.temperature",
        "llm.fallback_model",
        "simulation.max_turns",
        "simulation.topic",
        "simulation.personas_file",
        "simulation.max_personas",
        "simulation.parallel_execution",
        "performance.persona_timeout",
        "performance.max_workers",
        "performance.rate_limit_delay",
        "performance.max_retries",
        "performance.batch_size",
        "performance.timeout_seconds",
        "performance.graceful_degradation",
        "monitoring.enable_monitoring",
        "monitoring.log_level",
        "monitoring.performance_tracking",
        "output.output_dir",
        "output.auto_analysis",
        "output.save_visualizations",
    ] {
        assert!(entries.iter().any(|e| e.key == key), "{key} is grouped under its section");
    }
    assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
}

// ---------------------------------------------------------------- layering

#[test]
fn layers_apply_lowest_first_and_say_where_each_value_came_from() {
    let f = Files::new();
    // Each key is set by one more layer than the one before, so each layer wins exactly once.
    let toml = "[llm]\nmax_tokens = 100\ntemperature = 0.1\n[simulation]\nmax_turns = 7\n\
                [performance]\nmax_workers = 2\nbatch_size = 2\n";
    let ini = "[OpenAI]\nTEMPERATURE=0.2\n[Simulation]\nMAX_TURNS=8\n[Performance]\nMAX_WORKERS=4\nBATCH_SIZE=3\n";
    let mut src = f.sources(Some(toml), Some(ini));
    let scenario_file = f.write("panel.ron", "");
    let overrides =
        serde_json::json!({"simulation": {"max_turns": 9}, "performance": {"max_workers": 5, "batch_size": 4}});
    src.scenario = Some(config::scenario_layer(&scenario_file, &overrides).unwrap());
    src.env = true;
    src.cli = Some(sets(&["performance.batch_size=8"]));
    let loaded = {
        let _env = env_vars(&[("TROUPE_PERFORMANCE__MAX_WORKERS", "6"), ("TROUPE_PERFORMANCE__BATCH_SIZE", "7")]);
        load_config(&src).unwrap()
    };
    let c = &loaded.config;
    assert_eq!(
        (
            c.llm.max_tokens,
            c.llm.temperature,
            c.simulation.max_turns,
            c.performance.max_workers,
            c.performance.batch_size
        ),
        (100, 0.2, 9, 6, 8)
    );
    // figment shows file paths relative to the working folder, so match on their last parts.
    let tail = |p: &Path| {
        format!(
            "{}/{}",
            p.parent().unwrap().file_name().unwrap().to_str().unwrap(),
            p.file_name().unwrap().to_str().unwrap()
        )
    };
    let toml = tail(&f.dir.path().join("troupe.toml"));
    let ini = tail(&f.dir.path().join("config.ini"));
    let scenario = tail(&scenario_file);
    let cases = [
        ("llm.fallback_model", "\"gpt-3.5-turbo\"", "built-in default", ""),
        ("llm.max_tokens", "100", "TOML file", toml.as_str()),
        ("llm.temperature", "0.2", "TinyTroupe config.ini", ini.as_str()),
        ("simulation.max_turns", "9", "scenario", scenario.as_str()),
        ("performance.max_workers", "6", "`TROUPE_` environment", ""),
        ("performance.batch_size", "8", "command line", ""),
    ];
    for (key, value, label, path) in cases {
        let (v, s) = entry(&loaded, key);
        assert_eq!(v, value, "{key}");
        assert!(s.starts_with(label) && s.contains(path), "{key}: source {s:?} should be {label} {path}");
    }
}

#[test]
fn env_layer_needs_the_prefix_and_double_underscores() {
    let f = Files::new();
    let mut src = f.sources(None, None);
    src.env = true;
    let loaded = {
        let _env = env_vars(&[
            ("TROUPE_LLM__MODEL", "gpt-4o"),
            ("TROUPE_SIMULATION__PARALLEL_EXECUTION", "true"),
            ("TROUPE_UNRELATED", "ignored: no double underscore"),
            ("OTHER_LLM__MODEL", "ignored: other prefix"),
        ]);
        load_config(&src).unwrap()
    };
    assert_eq!(loaded.config.llm.model, "gpt-4o");
    assert_eq!(loaded.config.simulation.policy(), TurnPolicy::Parallel);
    // With `env: false` the same variables are not read.
    let _env = env_vars(&[("TROUPE_LLM__MODEL", "gpt-4o")]);
    assert_eq!(load_config(&f.sources(None, None)).unwrap().config.llm.model, "gpt-4o-mini");
}

#[test]
fn cli_sets_parse_scalars_and_reject_malformed_flags() {
    let f = Files::new();
    let mut src = f.sources(None, None);
    src.cli = Some(sets(&[
        "llm.temperature=0.25",
        "simulation.max_turns=12",
        "simulation.parallel_execution=true",
        "simulation.seed=Should cities tax drones?",
        "llm.model=\"gpt-4o\"",
    ]));
    let c = load_config(&src).unwrap().config;
    assert_eq!(c.llm.temperature, 0.25);
    assert_eq!(c.simulation.max_turns, 12);
    assert!(c.simulation.parallel_execution);
    assert_eq!(c.simulation.topic, "Should cities tax drones?");
    assert_eq!(c.llm.model, "gpt-4o");
    // Each value is read as its key's type: text stays text, a seed reaches u64::MAX, an
    // optional float and a list are what they look like.
    let mut src = f.sources(None, None);
    src.cli = Some(sets(&[
        "llm.model=4",
        "simulation.topic=true",
        "simulation.run_seed=18446744073709551615",
        "llm.top_p=1",
        "llm.stop=[\"###\"]",
        "llm.base_url=http://127.0.0.1:9/v1",
    ]));
    let c = load_config(&src).unwrap().config;
    assert_eq!((c.llm.model.as_str(), c.simulation.topic.as_str()), ("4", "true"));
    assert_eq!(c.simulation.run_seed, u64::MAX);
    assert_eq!((c.llm.top_p, c.llm.stop), (Some(1.0), vec!["###".to_string()]));
    assert_eq!(c.llm.base_url.as_deref(), Some("http://127.0.0.1:9/v1"));
    for bad in ["novalue", "=1", "llm..model=x", ".x=1"] {
        let e = Layer::from_sets("command line", &[bad.to_string()]).unwrap_err();
        assert!(matches!(e, ConfigError::BadSet(_)), "{bad}: {e}");
        assert!(e.to_string().contains("KEY=VALUE"), "{e}");
    }
}

// ---------------------------------------------------------------- topic, and seed its old name

/// The topic is `simulation.topic`; `simulation.seed`, the replaced engine's name for it, is
/// read as `topic` in every layer, so a file saying `seed` and a flag saying `topic` override
/// each other by layer order, not by name.
#[test]
fn topic_and_its_old_name_seed_in_a_config_file() {
    let f = Files::new();
    for (file, source) in
        [("[simulation]\nseed = \"Old name\"\n", "TOML file"), ("[simulation]\ntopic = \"Old name\"\n", "TOML file")]
    {
        let loaded = load_config(&f.sources(Some(file), None)).unwrap();
        assert_eq!(loaded.config.simulation.topic, "Old name", "{file}");
        let (value, from) = entry(&loaded, "simulation.topic");
        assert_eq!(value, "\"Old name\"");
        assert!(from.starts_with(source), "{from}");
    }
    // A later layer wins whatever name either uses.
    let mut src = f.sources(Some("[simulation]\nseed = \"From the file\"\n"), None);
    src.cli = Some(sets(&["simulation.topic=From the flag"]));
    assert_eq!(load_config(&src).unwrap().config.simulation.topic, "From the flag");
    let mut src = f.sources(Some("[simulation]\ntopic = \"From the file\"\n"), None);
    src.cli = Some(sets(&["simulation.seed=From the flag"]));
    assert_eq!(load_config(&src).unwrap().config.simulation.topic, "From the flag");
    {
        let _env = env_vars(&[("TROUPE_SIMULATION__SEED", "From the environment")]);
        let mut src = f.sources(Some("[simulation]\ntopic = \"From the file\"\n"), None);
        src.env = true;
        assert_eq!(load_config(&src).unwrap().config.simulation.topic, "From the environment");
    }
    // Both in one file: the same value is fine, different values name both keys and the file.
    let same = "[simulation]\nseed = \"A\"\ntopic = \"A\"\n";
    assert_eq!(load_config(&f.sources(Some(same), None)).unwrap().config.simulation.topic, "A");
    let e = layer_error(&f.sources(Some("[simulation]\nseed = \"A\"\ntopic = \"B\"\n"), None));
    assert!(e.contains("`simulation.topic`") && e.contains("`simulation.seed`") && e.contains("troupe.toml"), "{e}");
    // A config recorded before the rename (a journal's header) still reads.
    let old: SimulationConfig = serde_json::from_str(r#"{"simulation": {"seed": "Recorded"}}"#).unwrap();
    assert_eq!(old.simulation.topic, "Recorded");
}

// ---------------------------------------------------------------- TinyTroupe config.ini

/// Shaped like the `config.ini` TinyTroupe ships: upper-case keys, sections troupe-sim does not
/// use, comments, a trailing space and a spaced `KEY = value`.
const TINYTROUPE_INI: &str = "[OpenAI]
#
# OpenAI or Azure OpenAI Service
#
API_TYPE=openai
AZURE_API_VERSION=2024-12-01-preview

# Models
MODEL=gpt-5-mini
REASONING_MODEL=o3-mini
EMBEDDING_MODEL=text-embedding-3-small 

MAX_COMPLETION_TOKENS=32000
TIMEOUT=480
MAX_ATTEMPTS=5
WAITING_TIME=1
EXPONENTIAL_BACKOFF_FACTOR=5
MAX_CONCURRENT_MODEL_CALLS=4
REASONING_EFFORT=high
CACHE_API_CALLS=False
CACHE_FILE_NAME=openai_api_cache.pickle
MAX_CONTENT_DISPLAY_LENGTH=4000

[Simulation]
PARALLEL_AGENT_GENERATION=True
PARALLEL_AGENT_ACTIONS=True
RAI_HARMFUL_CONTENT_PREVENTION=True
RAI_COPYRIGHT_INFRINGEMENT_PREVENTION=True

[Cognition]
ENABLE_MEMORY_CONSOLIDATION=True
MIN_EPISODE_LENGTH=10

[ActionGenerator]
MAX_ATTEMPTS=2
QUALITY_THRESHOLD = 5

[Logging]
LOGLEVEL=ERROR
LOGLEVEL_CONSOLE=INFO
LOGLEVEL_FILE=DEBUG
";

#[test]
fn a_real_tinytroupe_config_ini_loads() {
    let f = Files::new();
    let loaded = load_config(&f.sources(None, Some(TINYTROUPE_INI))).unwrap();
    let c = &loaded.config;
    assert_eq!(c.llm.model, "gpt-5-mini");
    assert_eq!(c.llm.azure_api_version, "2024-12-01-preview");
    assert_eq!(c.performance.persona_timeout, 480.0);
    // TinyTroupe's MAX_ATTEMPTS counts the first try; max_retries does not.
    assert_eq!(c.performance.max_retries, 4, "[OpenAI] MAX_ATTEMPTS, not [ActionGenerator]'s");
    assert_eq!(c.performance.backoff_base, 1.0);
    assert_eq!(c.performance.backoff_factor, 5.0);
    assert!(c.simulation.parallel_execution);
    assert_eq!(c.monitoring.log_level, "ERROR");
    let (_, source) = entry(&loaded, "llm.model");
    assert!(source.contains("config.ini"), "{source}");
    // Keys TinyTroupe has and troupe-sim does not use are noted, not errors (issue 13: the
    // completion tokens and the concurrency limit are used now).
    assert_eq!(c.llm.max_tokens, 32000);
    assert_eq!(c.performance.max_workers, 4);
    assert!(loaded.notes.iter().any(|n| n.contains("REASONING_MODEL")), "{:?}", loaded.notes);
    assert!(!loaded.notes.iter().any(|n| n.contains("MAX_COMPLETION_TOKENS")), "{:?}", loaded.notes);
}

#[test]
fn config_ini_sections_and_keys_match_in_any_letter_case() {
    let f = Files::new();
    let ini = "[openai]\nModel = gpt-4o\ntemperature=1.1\nMax_Tokens=900\n\
               [SIMULATION]\nmax_turns=11\nParallel_Agent_Actions=true\n\
               [Performance]\nRATE_LIMIT_DELAY=0.5\nmax_workers=7\nBatch_Size=2\n\
               [monitoring]\nENABLE_MONITORING=FALSE\nLog_Level=debug\n";
    let c = load_config(&f.sources(None, Some(ini))).unwrap().config;
    assert_eq!(c.llm.model, "gpt-4o");
    assert_eq!(c.llm.temperature, 1.1);
    assert_eq!(c.llm.max_tokens, 900);
    assert_eq!(c.simulation.max_turns, 11);
    assert!(c.simulation.parallel_execution);
    assert_eq!(c.performance.rate_limit_delay, 0.5);
    assert_eq!(c.performance.max_workers, 7);
    assert_eq!(c.performance.batch_size, 2);
    assert!(!c.monitoring.enable_monitoring);
    assert_eq!(c.monitoring.log_level, "debug");
}

#[test]
fn config_ini_wrong_type_names_file_line_and_key() {
    let f = Files::new();
    let e = layer_error(&f.sources(None, Some("[OpenAI]\nMODEL=gpt-4o\n\nMAX_TOKENS=lots\n")));
    assert!(e.contains("config.ini:4"), "{e}");
    assert!(e.contains("max_tokens") && e.contains("lots") && e.contains("whole number"), "{e}");
    let e = layer_error(&f.sources(None, Some("[Simulation]\nPARALLEL_AGENT_ACTIONS=maybe\n")));
    assert!(e.contains("config.ini:2") && e.contains("true or false"), "{e}");
    let e = layer_error(&f.sources(None, Some("[OpenAI\nMODEL=x\n")));
    assert!(e.contains("config.ini:1") && e.contains("]"), "{e}");
}

// ---------------------------------------------------------------- issue 13: config.ini as users have it

/// Every key of every `config.ini` TinyTroupe has shipped (`tinytroupe/config.ini` and its
/// examples, including the Ollama one), each with a value of the type TinyTroupe reads.
const EVERY_TINYTROUPE_KEY: &str = "[OpenAI]
API_TYPE=openai
AZURE_API_VERSION=2024-12-01-preview
MODEL=gpt-5-mini
REASONING_MODEL=o3-mini
EMBEDDING_MODEL=text-embedding-3-small
AZURE_EMBEDDING_MODEL_API_VERSION=2023-05-15
MAX_TOKENS=4000
MAX_COMPLETION_TOKENS=32000
TEMPERATURE=1.2
TOP_P=1.0
FREQ_PENALTY=0.1
PRESENCE_PENALTY=0.1
NUM_CTX=32768
TIMEOUT=480
MAX_ATTEMPTS=5
WAITING_TIME=1
EXPONENTIAL_BACKOFF_FACTOR=5
MAX_CONCURRENT_MODEL_CALLS=4
REASONING_EFFORT=high
CACHE_API_CALLS=False
CACHE_FILE_NAME=openai_api_cache.pickle
MAX_CONTENT_DISPLAY_LENGTH=4000

[Simulation]
PARALLEL_AGENT_GENERATION=True
PARALLEL_AGENT_ACTIONS=True
RAI_HARMFUL_CONTENT_PREVENTION=True
RAI_COPYRIGHT_INFRINGEMENT_PREVENTION=True

[Cognition]
ENABLE_MEMORY_CONSOLIDATION=True
ENABLE_CONTINUOUS_CONTEXTUAL_SEMANTIC_MEMORY_RETRIEVAL=True
MIN_EPISODE_LENGTH=10
MAX_EPISODE_LENGTH=15
EPISODIC_MEMORY_FIXED_PREFIX_LENGTH=12
EPISODIC_MEMORY_LOOKBACK_LENGTH=25

[ActionGenerator]
MAX_ATTEMPTS=2
ENABLE_QUALITY_CHECKS=False
ENABLE_REGENERATION=True
ENABLE_DIRECT_CORRECTION=False
ENABLE_QUALITY_CHECK_FOR_PERSONA_ADHERENCE=True
ENABLE_QUALITY_CHECK_FOR_SELFCONSISTENCY=False
ENABLE_QUALITY_CHECK_FOR_FLUENCY=False
ENABLE_QUALITY_CHECK_FOR_SUITABILITY=False
ENABLE_QUALITY_CHECK_FOR_SIMILARITY=False
CONTINUE_ON_FAILURE=True
QUALITY_THRESHOLD = 5

[Logging]
LOGLEVEL=WARNING
LOGLEVEL_CONSOLE=INFO
LOGLEVEL_FILE=DEBUG
LOG_INCLUDE_THREAD_ID=False
";

#[test]
fn every_tinytroupe_key_is_mapped_or_explained() {
    let f = Files::new();
    let loaded = load_config(&f.sources(None, Some(EVERY_TINYTROUPE_KEY))).unwrap();
    let c = &loaded.config;
    assert_eq!(c.llm.provider, config::ProviderKind::OpenAi, "API_TYPE");
    assert_eq!(c.llm.model, "gpt-5-mini");
    assert_eq!(c.llm.azure_api_version, "2024-12-01-preview");
    assert_eq!(c.llm.max_tokens, 32000, "MAX_COMPLETION_TOKENS wins over MAX_TOKENS");
    assert_eq!(c.llm.temperature, 1.2);
    assert_eq!(c.llm.top_p, Some(1.0));
    assert_eq!(c.performance.persona_timeout, 480.0, "TIMEOUT, seconds");
    assert_eq!(c.performance.max_retries, 4, "MAX_ATTEMPTS = 5 tries = 4 retries");
    assert_eq!(c.performance.backoff_base, 1.0, "WAITING_TIME");
    assert_eq!(c.performance.backoff_factor, 5.0);
    assert_eq!(c.performance.max_workers, 4, "MAX_CONCURRENT_MODEL_CALLS");
    assert_eq!(c.llm.cache, troupe_sim::config::CacheMode::Off, "CACHE_API_CALLS=False");
    assert!(c.simulation.parallel_execution);
    assert_eq!(c.simulation.memory_prefix, 12, "EPISODIC_MEMORY_FIXED_PREFIX_LENGTH");
    assert_eq!(c.simulation.memory_recent, 25, "EPISODIC_MEMORY_LOOKBACK_LENGTH");
    assert_eq!(c.monitoring.log_level, "WARNING");
    for key in ["llm.max_tokens", "performance.max_workers", "simulation.memory_recent", "llm.provider"] {
        let (_, source) = entry(&loaded, key);
        assert!(source.contains("config.ini"), "{key}: {source}");
    }
    // No key is unknown; the unused ones are named in one note that points at the README.
    assert!(!loaded.notes.iter().any(|n| n.contains("unknown")), "{:#?}", loaded.notes);
    let unused = loaded.notes.iter().find(|n| n.contains("not use")).expect("a note on unused keys");
    for k in ["REASONING_MODEL", "EMBEDDING_MODEL", "FREQ_PENALTY", "CACHE_FILE_NAME", "ENABLE_QUALITY_CHECKS"] {
        assert!(unused.contains(k), "{k} not in {unused}");
    }
    assert!(unused.contains("README"), "{unused}");
    assert!(!unused.contains("MAX_COMPLETION_TOKENS") && !unused.contains("MAX_CONCURRENT_MODEL_CALLS"), "{unused}");
}

#[test]
fn the_shipped_config_ini_example_is_the_built_in_defaults() {
    let f = Files::new();
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.ini.example")).unwrap();
    let loaded = load_config(&f.sources(None, Some(&text))).unwrap();
    assert_eq!(loaded.config, SimulationConfig::default());
    assert!(loaded.notes.is_empty(), "{:#?}", loaded.notes);
}

#[test]
fn the_readme_table_covers_every_known_config_ini_key() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `[")).collect();
    let mut missing = Vec::new();
    for k in config::ini::known_keys() {
        let section = format!("`[{}]`", k.section);
        let key = format!("`{}`", k.key);
        match rows.iter().find(|r| r.contains(&section) && r.contains(&key)) {
            None => missing.push(format!("{section} {key}")),
            Some(row) => match k.target {
                Some(t) => assert!(row.contains(&format!("`{t}`")), "{section} {key} -> {t}: {row}"),
                None => assert!(row.contains("not used"), "{section} {key} says why it is not used: {row}"),
            },
        }
    }
    assert!(missing.is_empty(), "the README's config.ini table lacks: {missing:?}");
    // And every TinyTroupe key is known to the reader.
    for line in EVERY_TINYTROUPE_KEY.lines().filter(|l| l.contains('=')) {
        let key = line.split('=').next().unwrap().trim();
        assert!(config::ini::known_keys().iter().any(|k| k.key == key), "{key} is not in the reader's table");
    }
}

#[test]
fn a_misspelt_config_ini_key_warns_with_file_line_and_a_near_miss() {
    let f = Files::new();
    let loaded = load_config(&f.sources(None, Some("[OpenAI]\nMODEL=gpt-4o\nTEMPRATURE=0.3\nZZZ_QQQ=1\n"))).unwrap();
    assert_eq!(loaded.config.llm.temperature, 0.7, "the misspelt key is not applied");
    let ini = f.dir.path().join("config.ini").display().to_string();
    let typo = loaded.notes.iter().find(|n| n.contains("TEMPRATURE")).expect("a warning on the typo");
    assert!(typo.contains(&format!("{ini}:3")), "{typo}");
    assert!(typo.contains("did you mean `TEMPERATURE`?"), "{typo}");
    let far = loaded.notes.iter().find(|n| n.contains("ZZZ_QQQ")).expect("a warning on the unknown key");
    assert!(far.contains(&format!("{ini}:4")) && far.contains("unknown"), "{far}");
    assert!(!far.contains("did you mean"), "{far}");

    // A known key in the wrong section, and a misspelt section.
    let loaded =
        load_config(&f.sources(None, Some("[Simulation]\nMODEL=gpt-4o\n[Cogniton]\nMIN_EPISODE_LENGTH=3\n"))).unwrap();
    assert_eq!(loaded.config.llm.model, "gpt-4o-mini");
    let wrong = loaded.notes.iter().find(|n| n.contains("MODEL")).expect("a warning on MODEL");
    assert!(wrong.contains(":2") && wrong.contains("[OpenAI]"), "{wrong}");
    let section = loaded.notes.iter().find(|n| n.contains("Cogniton")).expect("a warning on the section");
    assert!(section.contains(":3") && section.contains("did you mean `[Cognition]`?"), "{section}");
}

#[test]
fn completion_tokens_and_concurrency_map_whatever_their_order() {
    let f = Files::new();
    for ini in [
        "[OpenAI]\nMAX_TOKENS=100\nMAX_COMPLETION_TOKENS=2000\nMAX_CONCURRENT_MODEL_CALLS=8\n",
        "[OpenAI]\nMAX_COMPLETION_TOKENS=2000\nMAX_TOKENS=100\nMAX_CONCURRENT_MODEL_CALLS=8\n",
    ] {
        let loaded = load_config(&f.sources(None, Some(ini))).unwrap();
        assert_eq!(loaded.config.llm.max_tokens, 2000, "{ini}");
        assert_eq!(loaded.config.performance.max_workers, 8, "{ini}");
        let n = loaded.notes.iter().find(|n| n.contains("MAX_TOKENS")).expect("a note on the overridden key");
        assert!(n.contains("MAX_COMPLETION_TOKENS"), "{n}");
    }
    // 0 or NONE: TinyTroupe's "no limit", which troupe-sim has not; the setting stays and a note says so.
    for v in ["0", "NONE"] {
        let loaded =
            load_config(&f.sources(None, Some(&format!("[OpenAI]\nMAX_CONCURRENT_MODEL_CALLS={v}\n")))).unwrap();
        assert_eq!(loaded.config.performance.max_workers, 3);
        assert!(loaded.notes.iter().any(|n| n.contains("MAX_CONCURRENT_MODEL_CALLS") && n.contains("max_workers")));
    }
    let e = layer_error(&f.sources(None, Some("[OpenAI]\nMAX_CONCURRENT_MODEL_CALLS=many\n")));
    assert!(e.contains("config.ini:2") && e.contains("MAX_CONCURRENT_MODEL_CALLS"), "{e}");
}

#[test]
fn api_type_chooses_the_provider() {
    use config::ProviderKind;
    let f = Files::new();
    let load = |ini: &str| load_config(&f.sources(None, Some(ini))).map(|l| l.config);
    assert_eq!(load("[OpenAI]\nAPI_TYPE=azure\n").unwrap().llm.provider, ProviderKind::Azure);
    assert_eq!(load("[OpenAI]\nAPI_TYPE=openai\n").unwrap().llm.provider, ProviderKind::OpenAi);
    let ollama = load("[OpenAI]\nAPI_TYPE=ollama\nMODEL=gemma3:1b\n").unwrap();
    assert_eq!(ollama.llm.provider, ProviderKind::OpenAi, "Ollama speaks the OpenAI protocol");
    assert_eq!(ollama.llm.base_url.as_deref(), Some("http://localhost:11434/v1"), "TinyTroupe's default");
    let own = load("[OpenAI]\nAPI_TYPE=ollama\nBASE_URL=http://10.1.1.1:11434/v1\n").unwrap();
    assert_eq!(own.llm.base_url.as_deref(), Some("http://10.1.1.1:11434/v1"));
    for (bad, words) in [("litellm", "BASE_URL"), ("bedrock", "openai, azure")] {
        let e = load(&format!("[OpenAI]\n\nAPI_TYPE={bad}\n")).unwrap_err().to_string();
        assert!(e.contains("config.ini:3") && e.contains("API_TYPE") && e.contains(words), "{e}");
    }
    // The command line still wins over the ini.
    let mut src = f.sources(None, Some("[OpenAI]\nAPI_TYPE=azure\n"));
    src.cli = Some(sets(&["llm.provider=simulated"]));
    assert_eq!(load_config(&src).unwrap().config.llm.provider, ProviderKind::Simulated);
}

#[test]
fn auto_picks_azure_from_tinytroupes_environment_and_bills_for_it() {
    use troupe_sim::llm::{choose_provider, provider_bills};
    let mut cfg = SimulationConfig::default();
    cfg.llm.model = "gpt-4o".into();
    {
        let _env = env_vars(&[("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9"), ("AZURE_OPENAI_KEY", CANARY)]);
        let choice = choose_provider(&cfg);
        assert_eq!(choice.kind, config::ProviderKind::Azure);
        assert!(
            choice.why.contains("AZURE_OPENAI_ENDPOINT") && choice.why.contains("AZURE_OPENAI_KEY"),
            "{}",
            choice.why
        );
        assert!(!choice.why.contains(CANARY));
        assert!(provider_bills(&cfg), "an Azure run is not free");
        let (p, notice) = troupe_sim::llm::provider_from_config(&cfg).unwrap();
        assert_eq!(p.name(), "azure");
        let notice = notice.expect("auto says what it chose");
        assert!(notice.contains("Azure") && notice.contains("gpt-4o") && !notice.contains(CANARY), "{notice}");
    }
    {
        // TinyTroupe's other spelling of the key, and a deployment of its own.
        let _env = env_vars(&[
            ("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9"),
            ("AZURE_OPENAI_API_KEY", CANARY),
            ("AZURE_OPENAI_DEPLOYMENT", "my-dep"),
        ]);
        assert_eq!(choose_provider(&cfg).kind, config::ProviderKind::Azure);
        let (_, notice) = troupe_sim::llm::provider_from_config(&cfg).unwrap();
        assert!(notice.unwrap().contains("my-dep"));
    }
    {
        // An endpoint without a key is not enough to bill anyone.
        let _env = env_vars(&[("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9")]);
        assert_ne!(choose_provider(&cfg).kind, config::ProviderKind::Azure);
    }
}

// ---------------------------------------------------------------- issue 13: config/troupe.toml and config show

/// `config/troupe.toml` with every commented `# key = value` and `# [section]` line
/// uncommented; returns the TOML text and the keys whose line says `(example)`.
fn uncommented_troupe_toml() -> (String, Vec<String>) {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/troupe.toml")).unwrap();
    let mut out = String::new();
    let mut examples = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let body = t.strip_prefix('#').map(str::trim_start).unwrap_or(t);
        if let Some(rest) = body.strip_prefix('[')
            && let Some(end) = rest.find(']')
            && rest[..end].chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        {
            section = rest[..end].to_string();
            out.push_str(&format!("[{section}]\n"));
            continue;
        }
        let Some((k, v)) = body.split_once('=') else { continue };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            continue;
        }
        // The value is the shortest prefix (cut before a `#`) that parses as TOML: a `#` inside a
        // string does not end it, the first one after it starts the comment.
        let v = v.trim();
        let cuts = v.match_indices('#').map(|(i, _)| i).chain([v.len()]);
        let (value, comment) = cuts
            .filter_map(|i| {
                let cand = v[..i].trim();
                toml::from_str::<toml::Table>(&format!("x = {cand}")).ok().map(|_| (cand, &v[i..]))
            })
            .next()
            .unwrap_or_else(|| panic!("no TOML value in: {line}"));
        if comment.contains("(example)") {
            examples.push(if section.is_empty() { k.to_string() } else { format!("{section}.{k}") });
        }
        out.push_str(&format!("{k} = {value}\n"));
    }
    (out, examples)
}

fn toml_leaves(prefix: &str, v: &toml::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                toml_leaves(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        other => out.push((prefix.to_string(), serde_json::to_value(other).unwrap())),
    }
}

fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[test]
fn troupe_toml_lists_every_key_with_its_built_in_default() {
    let (text, examples) = uncommented_troupe_toml();
    let parsed: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut file = Vec::new();
    toml_leaves("", &parsed, &mut file);
    // The uncommented file is a valid configuration.
    let f = Files::new();
    load_config(&f.sources(Some(&text), None)).unwrap_or_else(|e| panic!("{e}"));

    let leaves = config::leaves(&SimulationConfig::default());
    let mut problems = Vec::new();
    for leaf in &leaves {
        match (file.iter().find(|(k, _)| *k == leaf.key), &leaf.value) {
            (None, _) => problems.push(format!("{} is missing", leaf.key)),
            (Some((_, v)), Some(default)) if !same(v, default) => {
                problems.push(format!("{} = {v} in the file, built-in default {default}", leaf.key))
            }
            (Some(_), None) if !examples.contains(&leaf.key) => {
                problems.push(format!("{} is unset by default: mark its line (example)", leaf.key))
            }
            _ => {}
        }
    }
    for (k, _) in &file {
        if !leaves.iter().any(|l| l.key == *k) {
            problems.push(format!("{k} is in the file but not a setting"));
        }
    }
    for k in &examples {
        if leaves.iter().any(|l| l.key == *k && l.value.is_some()) {
            problems.push(format!("{k} has a built-in default: show it, not an example"));
        }
    }
    assert!(problems.is_empty(), "config/troupe.toml:\n{}", problems.join("\n"));
}

#[test]
fn config_entries_list_unset_keys_too() {
    let f = Files::new();
    let loaded = load_config(&f.sources(None, None)).unwrap();
    let entries = loaded.entries();
    for key in [
        "llm.base_url",
        "llm.top_p",
        "llm.api_key",
        "llm.azure_endpoint",
        "simulation.turn_policy",
        "monitoring.log_file",
    ] {
        let e = entries.iter().find(|e| e.key == key).unwrap_or_else(|| panic!("{key} is not listed"));
        assert_eq!(e.value, "(unset)", "{key}");
        assert!(e.unset, "{key}");
    }
    let model = entries.iter().find(|e| e.key == "llm.model").unwrap();
    assert!(!model.unset);
    // Set later, it is listed with its value.
    let loaded = load_config(&f.sources(Some("[llm]\nbase_url = \"http://127.0.0.1:1/v1\"\n"), None)).unwrap();
    let (v, source) = entry(&loaded, "llm.base_url");
    assert_eq!(v, "\"http://127.0.0.1:1/v1\"");
    assert!(source.contains("troupe.toml"), "{source}");
}

// ---------------------------------------------------------------- errors

#[test]
fn unknown_key_names_the_file_and_suggests_the_near_miss() {
    let f = Files::new();
    let e = layer_error(&f.sources(Some("[llm]\nmodle = \"gpt-4o\"\n"), None));
    assert!(e.contains("troupe.toml"), "{e}");
    assert!(e.contains("unknown key `llm.modle`"), "{e}");
    assert!(e.contains("did you mean `llm.model`?"), "{e}");
    let e = layer_error(&f.sources(Some("[simulaton]\nmax_turns = 3\n"), None));
    assert!(e.contains("did you mean `simulation`?") && e.contains("troupe.toml"), "{e}");
    let e = layer_error(&f.sources(Some("[performance]\nmax_worker = 3\n"), None));
    assert!(e.contains("did you mean `performance.max_workers`?"), "{e}");
    // Far from every key: the known keys are listed instead.
    let e = layer_error(&f.sources(Some("[output]\nzzz = 1\n"), None));
    assert!(e.contains("known keys here") && e.contains("output_dir"), "{e}");
}

#[test]
fn unknown_key_from_the_command_line_or_environment_names_that_source() {
    let f = Files::new();
    let mut src = f.sources(None, None);
    src.cli = Some(sets(&["llm.temprature=0.3"]));
    let e = layer_error(&src);
    assert!(e.contains("command line") && e.contains("did you mean `llm.temperature`?"), "{e}");

    let mut src = f.sources(None, None);
    src.env = true;
    let e = {
        let _env = env_vars(&[("TROUPE_SIMULATION__MAX_TURN", "3")]);
        layer_error(&src)
    };
    assert!(e.contains("`TROUPE_` environment") && e.contains("`simulation.max_turn`"), "{e}");
    assert!(e.contains("did you mean `simulation.max_turns`?"), "{e}");
}

#[test]
fn wrong_type_names_the_file_and_key() {
    let f = Files::new();
    let e = layer_error(&f.sources(Some("[simulation]\nmax_turns = \"six\"\n"), None));
    assert!(e.contains("troupe.toml") && e.contains("`simulation.max_turns`"), "{e}");
    assert!(e.contains("wrong type") && e.contains("\"six\""), "{e}");
    // A `--set` of the wrong type is refused as the flag is read, naming the flag.
    let e = Layer::from_sets("command line", &["performance.graceful_degradation=sometimes".into()]).unwrap_err();
    assert!(matches!(e, ConfigError::BadSetValue { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("--set performance.graceful_degradation=sometimes") && e.contains("true or false"), "{e}");
    let e = layer_error(&f.sources(Some("[llm]\nprovider = \"openia\"\n"), None));
    assert!(e.contains("llm.provider") && e.contains("simulated"), "unknown variants list the choices: {e}");
}

#[test]
fn out_of_range_values_name_their_source() {
    let f = Files::new();
    let e = layer_error(&f.sources(Some("[llm]\ntemperature = 3.5\n"), None));
    assert!(e.contains("llm.temperature") && e.contains("3.5") && e.contains("troupe.toml"), "{e}");
    let mut src = f.sources(None, None);
    src.cli = Some(sets(&["performance.max_workers=0"]));
    let e = layer_error(&src);
    assert!(e.contains("performance.max_workers") && e.contains("command line"), "{e}");
    let e = layer_error(&f.sources(None, Some("[Logging]\nLOGLEVEL=LOUD\n")));
    assert!(e.contains("monitoring.log_level") && e.contains("config.ini"), "{e}");
}

#[test]
fn a_missing_explicit_toml_file_is_an_error() {
    let f = Files::new();
    let mut src = f.sources(None, None);
    src.toml = Some(f.dir.path().join("nope.toml"));
    let e = layer_error(&src);
    assert!(e.contains("nope.toml"), "{e}");
}

#[test]
fn malformed_toml_names_the_file() {
    let f = Files::new();
    let e = layer_error(&f.sources(Some("[llm\nmodel = 1\n"), None));
    assert!(e.contains("troupe.toml"), "{e}");
}

// ---------------------------------------------------------------- the API key

const CANARY: &str = "sk-canary-7f3e9a1c55d2";

/// A secrets file with the given Unix mode.
fn secrets_file(f: &Files, mode: u32) -> PathBuf {
    let p = f.write("secrets.toml", &format!("api_key = \"{CANARY}-file\"\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    p
}

fn config_with_key() -> SimulationConfig {
    let mut c = SimulationConfig::default();
    c.llm.api_key = Some(SecretString::new(format!("{CANARY}-config")));
    c
}

// A variable only this file uses, so no other test's environment matters.
const KEY_VAR: &str = "TROUPE_TEST_CONFIG_RS_API_KEY";

#[test]
fn api_key_secrets_file_beats_env_beats_config() {
    let f = Files::new();
    let secrets = secrets_file(&f, 0o600);
    let none = f.dir.path().join("no-secrets.toml");
    let _env = env_vars(&[(KEY_VAR, &format!("{CANARY}-env"))]);

    let k = resolve_api_key(&config_with_key(), &secrets, KEY_VAR);
    assert_eq!(k.source, KeySource::SecretsFile(secrets.clone()));
    assert_eq!(k.key.unwrap().expose(), format!("{CANARY}-file"));
    assert!(k.warnings.is_empty(), "a 0600 secrets file is fine: {:?}", k.warnings);

    let k = resolve_api_key(&config_with_key(), &none, KEY_VAR);
    assert_eq!(k.source, KeySource::Env(KEY_VAR));
    assert_eq!(k.key.unwrap().expose(), format!("{CANARY}-env"));

    drop(_env);
    let k = resolve_api_key(&config_with_key(), &none, KEY_VAR);
    assert_eq!(k.source, KeySource::Config);
    assert_eq!(k.key.unwrap().expose(), format!("{CANARY}-config"));
    assert!(k.warnings.iter().any(|w| w.contains("least safe")), "{:?}", k.warnings);

    let k = resolve_api_key(&SimulationConfig::default(), &none, KEY_VAR);
    assert_eq!((k.source, k.key), (KeySource::Missing, None));
}

#[cfg(unix)]
#[test]
fn api_key_secrets_file_readable_by_others_is_warned() {
    let f = Files::new();
    let k = resolve_api_key(&SimulationConfig::default(), &secrets_file(&f, 0o644), KEY_VAR);
    assert!(k.warnings.iter().any(|w| w.contains("chmod 600")), "{:?}", k.warnings);
}

#[test]
fn api_key_in_the_config_file_is_noted_as_least_safe() {
    let f = Files::new();
    let loaded = load_config(&f.sources(Some(&format!("[llm]\napi_key = \"{CANARY}\"\n")), None)).unwrap();
    assert_eq!(loaded.config.llm.api_key.as_ref().unwrap().expose(), CANARY);
    assert!(loaded.notes.iter().any(|n| n.contains("least safe") && n.contains("troupe.toml")), "{:?}", loaded.notes);
    assert!(!loaded.notes.concat().contains(CANARY));
}

#[test]
fn a_broken_secrets_file_does_not_quote_the_key() {
    let f = Files::new();
    let p = f.write("secrets.toml", &format!("api_key = \"{CANARY}\nother = 1\n"));
    let k = resolve_api_key(&SimulationConfig::default(), &p, KEY_VAR);
    assert!(!k.warnings.is_empty());
    assert!(!format!("{k:?}").contains(CANARY), "{k:?}");
}

#[test]
fn the_api_key_never_prints() {
    let f = Files::new();
    let mut src = f.sources(Some(&format!("[llm]\napi_key = \"{CANARY}\"\n")), None);
    src.cli = Some(sets(&[&format!("llm.api_key={CANARY}")]));
    let loaded = load_config(&src).unwrap();
    assert_eq!(loaded.config.llm.api_key.as_ref().unwrap().expose(), CANARY, "the key is usable");

    let secret = SecretString::new(CANARY);
    let key = resolve_api_key(&loaded.config, &f.dir.path().join("none.toml"), KEY_VAR);
    let entries = loaded.entries();
    let rendered = [
        format!("{secret} {secret:?} {secret:#?}"),
        serde_json::to_string(&secret).unwrap(),
        format!("{:?} {:#?}", loaded.config, loaded.config),
        serde_json::to_string(&loaded.config).unwrap(),
        toml::to_string(&loaded.config).unwrap(),
        format!("{entries:?}"),
        serde_json::to_string(&entries).unwrap(),
        format!("{loaded:?}"),
        format!("{loaded:#?}"),
        format!("{key:?}"),
        format!("{src:?}"),
        loaded.notes.join("\n"),
    ];
    for (i, text) in rendered.iter().enumerate() {
        assert!(!text.contains(CANARY), "rendering {i} shows the key: {text}");
    }
    let (value, source) = entry(&loaded, "llm.api_key");
    assert_eq!(value, "\"[redacted]\"");
    assert_eq!(source, "command line");
}

#[test]
fn errors_about_the_key_do_not_quote_it() {
    let f = Files::new();
    let e = layer_error(&f.sources(Some(&format!("[llm]\napi_key = [\"{CANARY}\"]\n")), None));
    assert!(e.contains("llm.api_key"), "{e}");
    assert!(!e.contains(CANARY), "{e}");
}

#[test]
fn scenario_layer_is_named_after_its_file() {
    let f = Files::new();
    let path = f.write("budget.ron", "");
    let mut src = f.sources(None, None);
    let o = serde_json::json!({"llm": {"model": "gpt-4o"}, "simulation": {"turn_policy": "RandomOrder"}});
    src.scenario = Some(config::scenario_layer(&path, &o).unwrap());
    let loaded = load_config(&src).unwrap();
    assert_eq!(loaded.config.simulation.policy(), TurnPolicy::RandomOrder);
    let (_, source) = entry(&loaded, "llm.model");
    assert!(source.starts_with("scenario") && source.contains("budget.ron"), "{source}");
    // A scenario override with an unknown key is an error naming the scenario.
    let mut src = f.sources(None, None);
    let bad = serde_json::json!({"simulation": {"max_turnz": 3}});
    src.scenario = Some(config::scenario_layer(&path, &bad).unwrap());
    let e = layer_error(&src);
    assert!(e.contains("budget.ron") && e.contains("did you mean `simulation.max_turns`?"), "{e}");
}
