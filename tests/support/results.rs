//! A hand-built `SimulationResults` for tests: a transcript and agents, every other field
//! filled with plain values.
#![allow(dead_code)]

use troupe_sim::record::results::{AgentInfo, ResultsConfig, ResultsMetrics, SimulationResults};
use troupe_sim::record::transcript::{StopReason, TranscriptEntry};

/// A transcript entry by `who = (id, name)` ("moderator" for the world).
pub fn entry(seq: u64, turn: u32, who: (&str, &str), text: &str) -> TranscriptEntry {
    TranscriptEntry {
        seq,
        turn,
        speaker: who.1.into(),
        speaker_id: who.0.into(),
        role: if who.0 == "moderator" { "moderator".into() } else { "Resident".into() },
        text: text.into(),
        to: None,
        timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).unwrap(),
        model: None,
        prompt_tokens: None,
        completion_tokens: None,
        latency_ms: None,
        attempts: None,
    }
}

/// Results holding `transcript`, with `agents` as `(id, name)`.
pub fn results_with(agents: &[(&str, &str)], transcript: Vec<TranscriptEntry>) -> SimulationResults {
    SimulationResults {
        success: true,
        transcript,
        agents: agents
            .iter()
            .map(|(id, name)| AgentInfo { id: id.to_string(), name: name.to_string(), role: "Resident".into() })
            .collect(),
        metrics: ResultsMetrics { duration: 12.5, ..Default::default() },
        config: ResultsConfig {
            model: "m".into(),
            prompt_style: Default::default(),
            temperature: 0.7,
            turns: 3,
            policy: troupe_sim::config::TurnPolicy::RoundRobin,
            run_seed: 1,
            provider: "simulated".into(),
            fallback_model: Default::default(),
            max_workers: 1,
            rate_limit_delay: 0.0,
            persona_timeout: 30.0,
            max_retries: 0,
            graceful_degradation: true,
        },
        run_id: "hand-built".into(),
        scenario: "hand".into(),
        variant: None,
        topic: "the bridge budget".into(),
        provider: "simulated".into(),
        synthetic: true,
        models_used: vec![],
        notice: None,
        completed_turns: 3,
        stop_reason: StopReason::Completed,
        skipped: vec![],
        thoughts: vec![],
        passes: vec![],
        interventions: vec![],
        started_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        finished_at: chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
        error: None,
        estimate: Default::default(),
        estimate_accuracy: Default::default(),
        full_metrics: Default::default(),
        prompt_trimmed: Vec::new(),
        run_dir: None,
        analysis_error: None,
    }
}
