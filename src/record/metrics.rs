//! What the metrics actor reports: counters and latency percentiles at one moment, as saved in
//! `metrics.json` and shown live.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Counters and derived figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Seconds since the metrics actor started.
    pub elapsed_s: f64,
    /// Call attempts made.
    pub api_calls: u64,
    /// Attempts that succeeded.
    pub successful_calls: u64,
    /// Calls in flight now.
    pub in_flight: u64,
    /// Transcript messages.
    pub messages: u64,
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens received.
    pub completion_tokens: u64,
    /// Sent plus received.
    pub total_tokens: u64,
    /// USD spent (priced models only; see `unpriced_models`).
    pub cost_usd: f64,
    /// Of `prompt_tokens`, how many are estimates (the server reported no usage for those
    /// calls). This and the next four are left out of `metrics.json` when nothing was estimated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_tokens_estimated: u64,
    /// Of `completion_tokens`, how many are estimates (each cut to its request's `max_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completion_tokens_estimated: u64,
    /// Of `total_tokens`, how many are estimates.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_estimated: u64,
    /// Of `cost_usd`, how much was priced from estimated tokens.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub cost_usd_estimated: f64,
    /// The counters that made the estimates ("tiktoken o200k_base", "approximate").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens_estimated_by: Vec<String>,
    /// One sentence saying what is estimated and how, when anything is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_estimate_note: Option<String>,
    /// Models that answered but have no price in the pricing table.
    pub unpriced_models: Vec<String>,
    /// Failed attempts by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// All failed attempts.
    pub errors: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Calls moved to the fallback model.
    pub fallbacks: u64,
    /// Persona turns skipped.
    pub skipped_turns: u64,
    /// Persona actors restarted.
    pub restarts: u64,
    /// Messages per minute.
    pub throughput_per_min: f64,
    /// Call attempts per transcript message.
    pub calls_per_message: f64,
    /// Failed attempts / attempts.
    pub error_rate: f64,
    /// Attempt latency, all models.
    pub llm_latency: Percentiles,
    /// Attempt latency per model.
    pub llm_latency_by_model: BTreeMap<String, Percentiles>,
    /// A persona's response time (all attempts of one act).
    pub persona_response: Percentiles,
    /// Mean response time per persona index, milliseconds.
    pub persona_mean_ms: BTreeMap<usize, f64>,
    /// Turn duration.
    pub turn_duration: Percentiles,
    /// Time messages waited in persona mailboxes.
    pub mailbox_delay: Percentiles,
    /// Time calls waited in the supervisor's queue.
    pub queue_wait: Percentiles,
    /// Bucketed attempt latency for charts: (upper bound ms, count).
    pub latency_buckets: Vec<(f64, u64)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}
