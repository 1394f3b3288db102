//! `SimulationConfig`: every setting, grouped, with the defaults of the engine troupe-sim replaces.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::SecretString;

/// All settings of a run, grouped as in `config/troupe.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SimulationConfig {
    /// The language model and provider.
    pub llm: LlmConfig,
    /// The simulation itself.
    pub simulation: SimulationSettings,
    /// Concurrency, timeouts and failure handling.
    pub performance: PerformanceConfig,
    /// Logging and metrics.
    pub monitoring: MonitoringConfig,
    /// Where and what to save.
    pub output: OutputConfig,
    /// Persona checks (`troupe personas check`) and the `in_character` analysis: the judge
    /// model, the interview's length, the pass mark.
    pub validation: ValidationConfig,
    /// Running experiments on several machines over NATS JetStream (`troupe worker`,
    /// `troupe experiment --cluster`).
    pub cluster: ClusterConfig,
}

impl SimulationConfig {
    /// This configuration with `recorded`'s settings for what defines a simulation: the model
    /// and its sampling, the prompt style, the simulated provider's behaviour, the turns, policy,
    /// seeds and memory, the timing and failure handling. Everything that reaches outside (the
    /// provider and its endpoints, keys and headers, the local model's files, the pricing and
    /// cache files, budgets per minute, logging and output) stays as it is here: how a run from
    /// a journal (resume, replay, fork) treats the journal's recorded config, which is untrusted.
    /// A cost budget is the lower of the two.
    pub fn with_recorded_simulation(&self, recorded: &SimulationConfig) -> SimulationConfig {
        let mut c = self.clone();
        let (l, r) = (&mut c.llm, &recorded.llm);
        l.model = r.model.clone();
        l.fallback_model = r.fallback_model.clone();
        l.temperature = r.temperature;
        l.top_p = r.top_p;
        l.max_tokens = r.max_tokens;
        l.json_actions = r.json_actions;
        l.send_seed = r.send_seed;
        l.prompt_style = r.prompt_style;
        l.stop = r.stop.clone();
        l.simulated = r.simulated.clone();
        l.local.repeat_penalty = r.local.repeat_penalty;
        l.local.repeat_last_n = r.local.repeat_last_n;
        l.local.max_temperature = r.local.max_temperature;
        l.max_cost_usd = match (l.max_cost_usd, r.max_cost_usd) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let personas_file = std::mem::take(&mut c.simulation.personas_file);
        c.simulation = recorded.simulation.clone();
        c.simulation.personas_file = personas_file;
        c.performance = recorded.performance.clone();
        c
    }
}

/// Keys read under an old name, as (old, new): a layer that sets the old key sets the new one;
/// one that sets both to different values is an error naming both.
pub const RENAMED: &[(&str, &str)] = &[("simulation.seed", "simulation.topic")];

/// The current name of `key` (`simulation.seed` is `simulation.topic`).
pub fn current_key(key: &str) -> &str {
    RENAMED.iter().find(|(old, _)| *old == key).map_or(key, |(_, new)| new)
}

/// How persona turns are asked for (`llm.prompt_style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PromptStyle {
    /// `plain` when the embedded local model answers, else `full`.
    #[default]
    Auto,
    /// The reply protocol (`@Name:` to address one person, `THINK:`, `PASS`).
    Full,
    /// No reply protocol, the question restated last, a leading speaker label dropped from
    /// replies: what a 100M-1B parameter model can follow.
    Plain,
}

/// Which provider produces the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// An OpenAI-compatible provider when a key or base_url is configured, else the embedded
    /// local model (fetched on first use), else the simulated one (with a notice).
    #[default]
    Auto,
    /// The built-in simulated provider (synthetic text, offline, deterministic).
    Simulated,
    /// OpenAI or any server speaking its chat-completions protocol (Ollama, vLLM, llama.cpp,
    /// LiteLLM).
    #[serde(rename = "openai")]
    OpenAi,
    /// Azure OpenAI.
    Azure,
    /// The embedded local model (`[llm.local]`), run in-process; `troupe model fetch` gets it.
    Local,
}

/// One model or a chain of models, written as a string or a list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelChain(pub Vec<String>);

impl From<&str> for ModelChain {
    fn from(s: &str) -> Self {
        ModelChain(if s.trim().is_empty() { Vec::new() } else { vec![s.to_string()] })
    }
}

impl From<String> for ModelChain {
    fn from(s: String) -> Self {
        ModelChain::from(s.as_str())
    }
}

impl PartialEq<&str> for ModelChain {
    fn eq(&self, other: &&str) -> bool {
        matches!(self.0.as_slice(), [one] if one == other)
    }
}

impl Serialize for ModelChain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ModelChain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) if s.trim().is_empty() => ModelChain(Vec::new()),
            OneOrMany::One(s) => ModelChain(vec![s]),
            OneOrMany::Many(v) => ModelChain(v.into_iter().filter(|m| !m.trim().is_empty()).collect()),
        })
    }
}

/// One server of a pool (several base URLs and/or keys for one provider).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Base URL, e.g. `http://10.0.0.5:8000/v1`.
    pub base_url: String,
    /// Name of the environment variable holding this endpoint's key (keys are not written in
    /// config files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Requests per minute for this endpoint (defaults to `llm.requests_per_minute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute for this endpoint (defaults to `llm.tokens_per_minute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
}

/// `[llm]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Provider kind.
    pub provider: ProviderKind,
    /// Model name.
    pub model: String,
    /// Model(s) used, in order, when the primary keeps failing: a name or a list.
    pub fallback_model: ModelChain,
    /// Sampling temperature (0.0..=2.0).
    pub temperature: f64,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Longest reply, in tokens.
    pub max_tokens: u32,
    /// OpenAI-compatible base URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// API key; prefer `.troupe/secrets.toml` or `OPENAI_API_KEY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretString>,
    /// OpenAI organisation header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// OpenAI project header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Stream completions (server-sent events).
    pub stream: bool,
    /// Ask personas for a JSON action (`{"action": "speak", "to": null, "text": "..."}`) and
    /// send `response_format` to servers that support it.
    pub json_actions: bool,
    /// Send a per-persona sampling seed (some servers ignore it; none should reject it).
    pub send_seed: bool,
    /// How persona turns are asked for: `full` (the reply protocol: `@Name:`, `THINK:`,
    /// `PASS`), `plain` (no protocol, the question last: small models follow it better), or
    /// `auto` (plain for the embedded local model, full otherwise).
    pub prompt_style: PromptStyle,
    /// Stop sequences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// A pool of servers or keys for this provider; requests are balanced across them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointConfig>,
    /// Stop the run gracefully before spending more than this (USD, from `pricing_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Prices per million tokens, by model.
    pub pricing_file: PathBuf,
    /// The response cache: "off", "record", "replay" or "auto".
    pub cache: CacheMode,
    /// Where the response cache is kept.
    pub cache_file: PathBuf,
    /// Azure OpenAI endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_endpoint: Option<String>,
    /// Azure deployment name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_deployment: Option<String>,
    /// Azure API version.
    pub azure_api_version: String,
    /// Client-side request budget per minute (none when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Client-side token budget per minute (none when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
    /// Tokens a persona's system prompt may take (its facts); unset: a quarter of the model's
    /// context window, between 256 and 8,000. Facts that do not fit are left out, least
    /// important first, and the run's results list them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persona_budget_tokens: Option<u32>,
    /// The longest wait a server's `Retry-After` (or `retry-after-ms`) is obeyed for, seconds;
    /// a longer one is cut to this and the retry record says so.
    pub retry_after_max: f64,
    /// Behaviour of the simulated provider.
    pub simulated: SimulatedConfig,
    /// The embedded local model.
    pub local: LocalConfig,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: ProviderKind::Auto,
            model: "gpt-4o-mini".into(),
            fallback_model: ModelChain(vec!["gpt-3.5-turbo".into()]),
            temperature: 0.7,
            top_p: None,
            max_tokens: 512,
            base_url: None,
            api_key: None,
            organization: None,
            project: None,
            stream: false,
            json_actions: false,
            send_seed: true,
            prompt_style: PromptStyle::Auto,
            stop: Vec::new(),
            endpoints: Vec::new(),
            max_cost_usd: None,
            pricing_file: PathBuf::from("config/pricing.toml"),
            cache: CacheMode::Off,
            cache_file: PathBuf::from("outputs/cache/responses.jsonl"),
            azure_endpoint: None,
            azure_deployment: None,
            azure_api_version: "2024-10-21".into(),
            requests_per_minute: None,
            tokens_per_minute: None,
            persona_budget_tokens: None,
            retry_after_max: 60.0,
            simulated: SimulatedConfig::default(),
            local: LocalConfig::default(),
        }
    }
}

/// `[llm.local]`: the embedded local model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// A GGUF file to run instead of the fetched model (llama architecture, byte-level BPE
    /// tokenizer, ChatML template, e.g. another SmolLM2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_path: Option<PathBuf>,
    /// Where `troupe model fetch` caches models (default: `TROUPE_MODEL_DIR`, else
    /// `~/.cache/troupe/models`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<PathBuf>,
    /// Divides the logits of recently written tokens (1.0: off); small models repeat
    /// themselves without it.
    pub repeat_penalty: f64,
    /// How many recent tokens (prompt included) the repeat penalty looks at; reaching back into
    /// the conversation keeps a small model from copying the previous speaker.
    pub repeat_last_n: usize,
    /// Temperatures above this (from `llm.temperature` or a persona's own) are lowered to it:
    /// a small model's text falls apart where a large model's only gets livelier.
    pub max_temperature: f64,
    /// Let `provider = "auto"` fetch the model (with pip) the first time it is needed.
    pub auto_fetch: bool,
    /// CPU threads for the model; 0 (the default) measures the cores other processes leave
    /// free, every half second, and uses one thread per free core (at most the physical
    /// cores). The text does not depend on it.
    pub threads: usize,
    /// MB of attention caches kept for recent prompts' prefixes (a persona's system prompt and
    /// the conversation it already read are not read again next turn); 0 turns it off.
    pub prefix_cache_mb: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            model_path: None,
            model_dir: None,
            repeat_penalty: 1.1,
            repeat_last_n: 256,
            max_temperature: 0.5,
            auto_fetch: true,
            threads: 0,
            prefix_cache_mb: 256,
        }
    }
}

/// `[llm.simulated]`: latency and faults of the simulated provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedConfig {
    /// Latency distribution of each call.
    pub latency: LatencyModel,
    /// Injected failures.
    pub faults: FaultProfile,
}

/// The shape of the simulated latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LatencyKind {
    /// Always `ms`.
    #[default]
    Fixed,
    /// Uniform between `min_ms` and `max_ms`.
    Uniform,
    /// Log-normal with median `p50_ms` and 99th percentile `p99_ms`.
    LogNormal,
}

/// A latency distribution, in milliseconds. Only the fields of `kind` are used; keeping them
/// flat lets config layers change `kind` without clearing the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyModel {
    /// Which distribution.
    pub kind: LatencyKind,
    /// `fixed`: the latency.
    pub ms: f64,
    /// `uniform`: lower bound.
    pub min_ms: f64,
    /// `uniform`: upper bound.
    pub max_ms: f64,
    /// `log_normal`: median.
    pub p50_ms: f64,
    /// `log_normal`: 99th percentile.
    pub p99_ms: f64,
}

impl Default for LatencyModel {
    fn default() -> Self {
        LatencyModel { kind: LatencyKind::Fixed, ms: 0.0, min_ms: 0.0, max_ms: 0.0, p50_ms: 100.0, p99_ms: 1000.0 }
    }
}

impl LatencyModel {
    /// A fixed latency.
    pub fn fixed(ms: f64) -> Self {
        LatencyModel { kind: LatencyKind::Fixed, ms, ..Default::default() }
    }
    /// A uniform latency.
    pub fn uniform(min_ms: f64, max_ms: f64) -> Self {
        LatencyModel { kind: LatencyKind::Uniform, min_ms, max_ms, ..Default::default() }
    }
    /// A log-normal latency.
    pub fn log_normal(p50_ms: f64, p99_ms: f64) -> Self {
        LatencyModel { kind: LatencyKind::LogNormal, p50_ms, p99_ms, ..Default::default() }
    }
}

/// Failure rates (0.0..=1.0) injected by the simulated provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultProfile {
    /// Share of calls answered with 429 Too Many Requests.
    pub rate_limited: f64,
    /// Seconds announced in the 429's Retry-After.
    pub retry_after_secs: f64,
    /// Share of calls answered with 500.
    pub server_error: f64,
    /// Share of calls that never answer (they hit `persona_timeout`).
    pub timeout: f64,
    /// Share of calls answered with unusable text.
    pub malformed: f64,
    /// Share of calls answered with empty text.
    pub empty: f64,
}

impl Default for FaultProfile {
    fn default() -> Self {
        FaultProfile {
            rate_limited: 0.0,
            retry_after_secs: 1.0,
            server_error: 0.0,
            timeout: 0.0,
            malformed: 0.0,
            empty: 0.0,
        }
    }
}

/// How personas take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TurnPolicy {
    /// One after another; each hears everything said before it.
    RoundRobin,
    /// All at once on the same snapshot; delivered at the end of the turn in persona order.
    Parallel,
    /// One after another in a seeded shuffle each turn.
    RandomOrder,
}

/// `[simulation]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulationSettings {
    /// The discussion topic. The replaced engine called it `seed`, and files written for it
    /// still say so: every config layer reads `seed` as `topic` (see [`RENAMED`]), and a
    /// recorded config (a journal's) with `seed` loads too.
    #[serde(alias = "seed")]
    pub topic: String,
    /// Turns to run.
    pub max_turns: u32,
    /// The persona database.
    pub personas_file: PathBuf,
    /// The most personas in one run.
    pub max_personas: usize,
    /// Shorthand for `turn_policy = "Parallel"` when no policy is given.
    pub parallel_execution: bool,
    /// Turn policy; when unset, `Parallel` if `parallel_execution` else `RoundRobin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_policy: Option<TurnPolicy>,
    /// The random seed that makes a run reproducible.
    pub run_seed: u64,
    /// Memory events always kept at the start of a persona's prompt.
    pub memory_prefix: usize,
    /// Most recent memory events kept in the prompt.
    pub memory_recent: usize,
    /// Make a running summary every N memory events (0: off).
    pub consolidate_every: usize,
}

impl Default for SimulationSettings {
    fn default() -> Self {
        SimulationSettings {
            topic: String::new(),
            max_turns: 6,
            personas_file: PathBuf::from("data/personas.agents.json"),
            max_personas: 10,
            parallel_execution: false,
            turn_policy: None,
            run_seed: 42,
            memory_prefix: 10,
            memory_recent: 20,
            consolidate_every: 0,
        }
    }
}

impl SimulationSettings {
    /// The policy in force.
    pub fn policy(&self) -> TurnPolicy {
        self.turn_policy.unwrap_or(if self.parallel_execution { TurnPolicy::Parallel } else { TurnPolicy::RoundRobin })
    }
}

/// `[performance]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// Seconds one LLM call may take.
    pub persona_timeout: f64,
    /// Concurrent LLM calls across the simulation.
    pub max_workers: usize,
    /// Minimum seconds between the starts of two calls (0 disables it).
    pub rate_limit_delay: f64,
    /// Retries of a retryable failure.
    pub max_retries: u32,
    /// Personas asked at once under the Parallel policy.
    pub batch_size: usize,
    /// Seconds the whole simulation may take.
    pub timeout_seconds: f64,
    /// Skip a persona's turn (recorded) instead of failing the run.
    pub graceful_degradation: bool,
    /// First backoff delay, seconds.
    pub backoff_base: f64,
    /// Backoff growth per attempt.
    pub backoff_factor: f64,
    /// Longest backoff delay, seconds.
    pub backoff_max: f64,
    /// Failed attempts on the primary model before switching to the fallback model.
    pub fallback_after: u32,
    /// Runs of an experiment (`troupe experiment --parallel`) that go at once; they share the
    /// provider and its budget.
    pub max_parallel_runs: usize,
    /// Threads of `troupe run`'s async runtime; 0 chooses ([`crate::engine::runtime_threads`]):
    /// one when the text comes from a server or the local model (the calls wait; a thread
    /// drives thousands of them, and waking a second costs more than it brings), one per core
    /// with the simulated provider (the run is all computing).
    pub runtime_threads: usize,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            persona_timeout: 30.0,
            max_workers: 3,
            rate_limit_delay: 1.0,
            max_retries: 5,
            batch_size: 5,
            timeout_seconds: 300.0,
            graceful_degradation: true,
            backoff_base: 1.0,
            backoff_factor: 2.0,
            backoff_max: 60.0,
            fallback_after: 3,
            max_parallel_runs: 2,
            runtime_threads: 0,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[monitoring]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Collect metrics.
    pub enable_monitoring: bool,
    /// ERROR, WARN, INFO, DEBUG or TRACE (overridden by `RUST_LOG`).
    pub log_level: String,
    /// Record latency histograms.
    pub performance_tracking: bool,
    /// Also write logs to this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Format of the log file.
    pub log_format: LogFormat,
    /// Log prompt text at `trace` level (off by default: prompts may hold private data).
    pub log_prompts: bool,
    /// Serve Prometheus metrics at `http://ADDR/metrics` while the command works
    /// (`--metrics-addr`); e.g. `127.0.0.1:9464`. Unset: not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// Seconds `/metrics` keeps serving after the work ends, so a scraper sees the final
    /// figures (`--metrics-linger`; 0 to 3600).
    pub metrics_linger_seconds: f64,
    /// Export traces with OTLP/HTTP to this collector (`http://127.0.0.1:4318`; `/v1/traces` is
    /// added). Unset: no traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` traces carry.
    pub otlp_service_name: String,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enable_monitoring: true,
            log_level: "INFO".into(),
            performance_tracking: true,
            log_file: None,
            log_format: LogFormat::Text,
            log_prompts: false,
            metrics_addr: None,
            metrics_linger_seconds: 0.0,
            otlp_endpoint: None,
            otlp_service_name: "troupe".into(),
        }
    }
}

/// `[cluster]`: the NATS server workers and experiments share, and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The NATS server (`nats://host:4222`, `tls://host:4222`); `--nats` / `--cluster` override it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A `.creds` file (user JWT and NKey seed), as `nsc` writes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// A token the server accepts (`authorization { token: ... }`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretString>,
    /// A file holding an NKey seed (`SU...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_file: Option<PathBuf>,
    /// A PEM file of the certificate authority that signed the server's certificate (TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Prefix of every stream, bucket and subject, so teams can share one server.
    pub namespace: String,
    /// How long a worker holds a run without reporting progress before the run is handed to
    /// another worker (JetStream's ack wait), in seconds. Workers report every third of it.
    pub lease_seconds: f64,
    /// How many times a run is handed out before it is given up as failed.
    pub max_deliveries: u32,
    /// How many workers share the provider's rate limits, at least: while the broker cannot be
    /// reached, each worker keeps to the budget divided by the larger of this and the workers
    /// it last heard from. Unset: only the workers heard from count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// A shard silent this long (no heartbeat; shards beat twice a second) is taken for lost in
    /// a sharded run, and its personas move to the other shards, in seconds.
    pub shard_deadline_seconds: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            url: None,
            credentials_file: None,
            token: None,
            nkey_file: None,
            tls_ca: None,
            namespace: "troupe".into(),
            lease_seconds: 30.0,
            max_deliveries: 5,
            shard_deadline_seconds: 5.0,
            workers: None,
        }
    }
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Root folder for results.
    pub output_dir: PathBuf,
    /// Analyse every run.
    pub auto_analysis: bool,
    /// Save charts with the analysis.
    pub save_visualizations: bool,
    /// When the run journal is forced to disk: "record", "turn" or "never".
    pub journal_fsync: FsyncPolicy,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            output_dir: PathBuf::from("outputs"),
            auto_analysis: true,
            save_visualizations: true,
            journal_fsync: FsyncPolicy::Turn,
        }
    }
}

/// `[validation]`: checking personas against expectations with a judge model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// The model that judges (unset: `llm.model`, the run's model). It goes through the same
    /// provider as the personas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_model: Option<String>,
    /// Questions in a persona check's interview.
    pub questions: usize,
    /// The pass mark of a persona check, 0.0..=1.0: a lower score exits 1.
    pub min_score: f64,
    /// After each saved run, judge every persona's messages against its facts (one call per
    /// persona) and add the scores to `analysis.json` under `in_character`.
    pub in_character: bool,
    /// Messages per persona shown to the judge by the `in_character` analysis (spread over
    /// the run).
    pub in_character_messages: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            judge_model: None,
            questions: 5,
            min_score: 0.7,
            in_character: false,
            in_character_messages: 8,
        }
    }
}

impl ValidationConfig {
    /// The judge model: `judge_model` when set (and not blank), else `run_model`.
    pub fn judge_model_or<'a>(&'a self, run_model: &'a str) -> &'a str {
        self.judge_model.as_deref().map(str::trim).filter(|m| !m.is_empty()).unwrap_or(run_model)
    }
}

/// How the cache is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// No cache.
    #[default]
    Off,
    /// Store every answer; never serve from the cache.
    Record,
    /// Serve only from the cache; a miss is an error.
    Replay,
    /// Serve hits, ask and store misses.
    Auto,
}

/// When the journal is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every record (safest, slowest).
    Record,
    /// At the end of every turn and at the end of the run.
    #[default]
    Turn,
    /// Never explicitly (the OS decides).
    Never,
}
