//! Cost control (issue 4): live cost from the pricing table, `max_cost_usd` stopping a run
//! gracefully before it overspends, and the estimate recorded against the actual figures.

#[allow(dead_code)]
mod support {
    pub mod cli;
    pub mod mock_openai;
}

use std::path::Path;
use std::sync::Arc;

use support::cli::{ROOT, troupe};
use support::mock_openai::{MockConfig, MockServer};
use troupe_sim::config::{ProviderKind, SimulationConfig};
use troupe_sim::engine::{RunOptions, RunPlan, SimulationEngine};
use troupe_sim::llm::openai::{OpenAiOptions, OpenAiProvider};
use troupe_sim::persona::PersonaDatabase;
use troupe_sim::record::transcript::StopReason;

fn plan() -> RunPlan {
    let db = PersonaDatabase::load(&Path::new(ROOT).join("data/personas.agents.json")).unwrap();
    let personas =
        ["sarah_chen", "marcus_rivera", "aisha_okafor"].iter().map(|id| db.get(id).unwrap().clone()).collect();
    RunPlan::ad_hoc("Should we price the product per seat or per use?", personas)
}

fn config() -> SimulationConfig {
    let mut c = SimulationConfig::default();
    c.llm.provider = ProviderKind::OpenAi;
    c.llm.model = "gpt-4o".into();
    c.llm.pricing_file = Path::new(ROOT).join("config/pricing.toml");
    c.simulation.max_turns = 6;
    c.performance.rate_limit_delay = 0.0;
    c
}

async fn engine(c: SimulationConfig, mock: &MockServer) -> SimulationEngine {
    let p = OpenAiProvider::new(OpenAiOptions::new(mock.base_url(), None)).unwrap();
    SimulationEngine::with_provider(c, Arc::new(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_is_priced_live_and_compared_with_the_estimate() {
    let mock = MockServer::start(MockConfig::default()).await;
    let r = engine(config(), &mock).await.run(plan(), RunOptions::default()).await.unwrap();
    assert!(r.success, "{:?}", r.error);
    let m = &r.metrics;
    // gpt-4o: $2.50 in, $10.00 out per million tokens.
    let expected = (m.counts.prompt_tokens as f64 * 2.5 + m.counts.completion_tokens as f64 * 10.0) / 1e6;
    assert!((m.counts.cost_usd - expected).abs() < 1e-9, "{} vs {expected}", m.counts.cost_usd);
    assert!(m.counts.cost_usd > 0.0);
    assert_eq!(r.estimate.calls, 18);
    assert!((r.estimate_accuracy.calls_ratio - 1.0).abs() < 1e-9);
    assert!(r.estimate_accuracy.cost_ratio > 0.2 && r.estimate_accuracy.cost_ratio < 5.0, "{:?}", r.estimate_accuracy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_stops_the_run_before_it_overspends_and_saves() {
    let mock = MockServer::start(MockConfig::default()).await;
    let full = engine(config(), &mock).await.run(plan(), RunOptions::default()).await.unwrap();
    let mut c = config();
    let limit = full.metrics.counts.cost_usd / 3.0;
    c.llm.max_cost_usd = Some(limit);
    let tmp = tempfile::tempdir().unwrap();
    let r = engine(c, &mock)
        .await
        .run(plan(), RunOptions { save_under: Some(tmp.path().to_path_buf()), ..Default::default() })
        .await
        .unwrap();
    assert!(!r.success);
    assert!(matches!(r.stop_reason, StopReason::CostLimit(_)), "{:?}", r.stop_reason);
    assert!(r.metrics.counts.cost_usd <= limit, "spent {} over the limit {limit}", r.metrics.counts.cost_usd);
    assert!(r.metrics.counts.cost_usd > 0.0 && r.transcript.len() > 1, "it ran until the limit");
    assert!(r.error.unwrap().contains("max_cost_usd"));
    // Saved like any other stopped run.
    assert!(r.run_dir.unwrap().join("results.json").exists());
}

#[test]
fn troupe_estimate_prints_calls_tokens_and_cost() {
    let out = troupe().args(["estimate", "scenarios/content_moderation.ron", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["calls"], 30);
    assert!(v["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(v["by_model"]["gpt-4o-mini"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn troupe_estimate_never_fetches_the_local_model() {
    // No key, no server, an empty model cache and no pip on PATH: building the provider would
    // try to fetch; an estimate must not, and says the run would cost nothing.
    let empty = tempfile::tempdir().unwrap();
    let out = troupe()
        .env("TROUPE_MODEL_DIR", empty.path())
        .env("PATH", empty.path())
        .args(["estimate", "scenarios/quickstart.ron"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("fetch") && !stderr.contains("pip"), "{stderr}");
    assert!(stdout.contains("costs nothing"), "{stdout}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "the model cache was touched");
}
