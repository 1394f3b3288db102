//! A finished run's [`SimulationResults`], from what the collector gathered and the metrics
//! actor's last snapshot.

use std::collections::BTreeSet;

use super::collect::{Collect, Extra};
use crate::config::SimulationConfig;
use crate::record::estimate::EstimateAccuracy;
use crate::record::metrics::MetricsSnapshot;
use crate::record::results::{ResultsConfig, ResultsMetrics, SimulationResults};
use crate::record::transcript::{FinalState, StopReason, TranscriptEntry};

pub(super) fn build_results(
    ctx: Collect,
    transcript: Vec<TranscriptEntry>,
    extra: Extra,
    fs: FinalState,
    snap: MetricsSnapshot,
    duration: f64,
    write_error: Option<String>,
) -> SimulationResults {
    let c = &ctx.config;
    let models: BTreeSet<String> = transcript.iter().filter_map(|e| e.model.clone()).collect();
    let error = match (&fs.reason, write_error) {
        (_, Some(w)) => Some(format!("could not write the run's files: {w}")),
        (StopReason::Failed(m), None) => Some(m.clone()),
        (StopReason::Timeout, None) => Some(format!("the run hit timeout_seconds = {}", c.performance.timeout_seconds)),
        (StopReason::Cancelled, None) => Some("the run was cancelled".into()),
        (StopReason::CostLimit(m), None) => Some(m.clone()),
        (StopReason::Completed, None) => None,
    };
    SimulationResults {
        success: fs.success && error.is_none(),
        metrics: results_metrics(&snap, duration, transcript.len() as u64),
        config: results_config(c, &ctx.provider_name),
        transcript,
        agents: ctx.agents,
        run_id: ctx.run_id,
        scenario: ctx.plan.name,
        variant: ctx.plan.variant,
        topic: ctx.plan.topic,
        provider: ctx.provider_name,
        synthetic: ctx.synthetic,
        models_used: models.into_iter().collect(),
        notice: ctx
            .synthetic
            .then(|| "The text of this run is synthetic: it was written by troupe-sim's simulated provider, not by a language model.".to_string())
            .or(ctx.notice),
        completed_turns: fs.completed_turns,
        stop_reason: fs.reason,
        skipped: extra.skipped,
        thoughts: extra.thoughts,
        passes: extra.passes,
        interventions: extra.interventions,
        prompt_trimmed: extra.prompt_trimmed,
        started_at: ctx.started_at,
        finished_at: chrono::Utc::now(),
        error,
        estimate_accuracy: EstimateAccuracy::of(&ctx.estimate, snap.counts.api_calls, snap.counts.total_tokens, snap.counts.cost_usd),
        estimate: ctx.estimate,
        full_metrics: snap,
        run_dir: ctx.run_dir,
        analysis_error: None,
    }
}

/// The old engine's `metrics` section of `results.json`, from the last snapshot.
fn results_metrics(snap: &MetricsSnapshot, duration: f64, messages: u64) -> ResultsMetrics {
    ResultsMetrics {
        duration,
        total_messages: messages,
        counts: snap.counts.clone(),
        average_response_time: snap.persona_response.mean_ms / 1000.0,
        throughput_per_min: if duration > 0.0 { messages as f64 * 60.0 / duration } else { 0.0 },
        latency_p50: snap.llm_latency.p50_ms / 1000.0,
        latency_p99: snap.llm_latency.p99_ms / 1000.0,
    }
}

/// The settings `results.json` records.
fn results_config(c: &SimulationConfig, provider: &str) -> ResultsConfig {
    ResultsConfig {
        model: c.llm.model.clone(),
        prompt_style: c.llm.prompt_style,
        temperature: c.llm.temperature,
        turns: c.simulation.max_turns,
        policy: c.simulation.policy(),
        run_seed: c.simulation.run_seed,
        provider: provider.to_string(),
        fallback_model: c.llm.fallback_model.clone(),
        max_workers: c.performance.max_workers,
        rate_limit_delay: c.performance.rate_limit_delay,
        persona_timeout: c.performance.persona_timeout,
        max_retries: c.performance.max_retries,
        graceful_degradation: c.performance.graceful_degradation,
    }
}
