//! A run's estimate as saved in `results.json`, and how close it came. The estimate itself is
//! made by [`crate::estimate`] before the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Estimated figures for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelEstimate {
    /// Calls.
    pub calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// USD, when the model has a price.
    pub cost_usd: Option<f64>,
}

/// A run's estimate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// LLM calls (first attempts; retries are not predicted).
    pub calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt plus completion.
    pub total_tokens: u64,
    /// USD for the priced models.
    pub cost_usd: f64,
    /// Per model.
    pub by_model: BTreeMap<String, ModelEstimate>,
    /// What the estimate assumes.
    pub assumptions: Vec<String>,
}

/// How close an estimate came: actual divided by estimated (1.0 is exact).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EstimateAccuracy {
    /// Call attempts.
    pub calls_ratio: f64,
    /// Total tokens.
    pub tokens_ratio: f64,
    /// Cost (0 when nothing was priced).
    pub cost_ratio: f64,
}

impl EstimateAccuracy {
    /// Compares actual figures with an estimate.
    pub fn of(e: &Estimate, calls: u64, tokens: u64, cost: f64) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        EstimateAccuracy {
            calls_ratio: ratio(calls as f64, e.calls as f64),
            tokens_ratio: ratio(tokens as f64, e.total_tokens as f64),
            cost_ratio: ratio(cost, e.cost_usd),
        }
    }
}
