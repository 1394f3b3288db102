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

/// The counters a run's live metrics and its results share: one type, filled by the metrics
/// actor and carried whole into `results.json` (flattened, so `metrics.json` and `results.json`
/// keep their keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Call attempts made.
    pub api_calls: u64,
    /// Failed call attempts.
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
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens received.
    pub completion_tokens: u64,
    /// Sent plus received.
    pub total_tokens: u64,
    /// USD spent (priced models only; see `unpriced_models` in `metrics.json`).
    pub cost_usd: f64,
    /// Call attempts per transcript message.
    pub calls_per_message: f64,
    /// Failed attempts / attempts.
    pub error_rate: f64,
    /// Of `total_tokens`, how many are estimates: counted by troupe-sim because the server
    /// reported no usage for those calls. Left out (with the next two) when the server reported
    /// every token.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_estimated: u64,
    /// Of `cost_usd`, how much was priced from estimated tokens.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub cost_usd_estimated: f64,
    /// What is estimated and how (the counters, the `max_tokens` cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_estimate_note: Option<String>,
}

/// Counters and derived figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Seconds since the metrics actor started.
    pub elapsed_s: f64,
    /// The counters `results.json` shares.
    #[serde(flatten)]
    pub counts: Counts,
    /// Attempts that succeeded.
    pub successful_calls: u64,
    /// Calls in flight now.
    pub in_flight: u64,
    /// Transcript messages.
    pub messages: u64,
    /// Of `prompt_tokens`, how many are estimates (the server reported no usage for those
    /// calls). This and the next four are left out of `metrics.json` when nothing was estimated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_tokens_estimated: u64,
    /// Of `completion_tokens`, how many are estimates (each cut to its request's `max_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completion_tokens_estimated: u64,
    /// The counters that made the estimates ("tiktoken o200k_base", "approximate").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens_estimated_by: Vec<String>,
    /// Models that answered but have no price in the pricing table.
    pub unpriced_models: Vec<String>,
    /// Failed attempts by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Messages per minute.
    pub throughput_per_min: f64,
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
    /// Attempt latency at the histogram's own resolution (3 significant figures): (µs, count)
    /// for every value recorded. Kept in memory only (not saved): how runs on several machines
    /// merge their latencies exactly (a cluster stress sweep).
    #[serde(skip)]
    pub latency_recorded: Vec<(u64, u64)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::results::ResultsMetrics;

    /// One `Counts` in both types, and both files keep the flat keys they always had (old
    /// `results.json` files still read).
    #[test]
    fn both_files_keep_their_flat_keys() {
        let counts = Counts { api_calls: 7, errors: 1, total_tokens: 90, cost_usd: 0.5, ..Counts::default() };
        let r =
            ResultsMetrics { duration: 2.0, total_messages: 6, counts: counts.clone(), ..ResultsMetrics::default() };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (v["api_calls"].as_u64(), v["errors"].as_u64(), v["duration"].as_f64()),
            (Some(7), Some(1), Some(2.0))
        );
        assert!(v.get("counts").is_none() && v.get("tokens_estimated").is_none(), "{v}");
        let old = r#"{"duration": 2.0, "total_messages": 6, "total_tokens": 90, "api_calls": 7, "errors": 1,
            "average_response_time": 0.1, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0, "timeouts": 0,
            "fallbacks": 0, "skipped_turns": 0, "restarts": 0, "throughput_per_min": 3.0, "calls_per_message": 1.0,
            "error_rate": 0.1, "cost_usd": 0.5, "latency_p50": 0.1, "latency_p99": 0.2}"#;
        let back: ResultsMetrics = serde_json::from_str(old).unwrap();
        assert_eq!((back.counts.api_calls, back.counts.cost_usd, back.counts.error_rate), (7, 0.5, 0.1));
        let snap = MetricsSnapshot { elapsed_s: 1.0, counts, ..MetricsSnapshot::default() };
        let v = serde_json::to_value(&snap).unwrap();
        assert_eq!((v["api_calls"].as_u64(), v["elapsed_s"].as_f64()), (Some(7), Some(1.0)));
        assert_eq!(serde_json::from_value::<MetricsSnapshot>(v).unwrap(), snap);
    }
}
