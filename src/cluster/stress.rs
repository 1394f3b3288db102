//! A stress sweep from several machines at once: `troupe stress SCENARIO --cluster URL
//! --machines K --workers 8,16,32`.
//!
//! Settings still run one after another (two settings at once would disturb each other's
//! figures), but each setting's load is split into `K` shards made by `K` workers at the same
//! moment (a common start time a couple of seconds ahead), so one setting can push more calls
//! than one machine can. Each shard reports its counters and its latency histogram at full
//! resolution; the coordinator adds them up and takes the percentiles of the merged histogram,
//! so the figures are those of one client making the whole load.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::messages::{check_id, parse};
use super::{Cluster, ClusterError, JsContext};
use crate::config::SimulationConfig;
use crate::scenario::RunPlan;
use crate::stress::{Progress, SettingResult, StressOptions, StressReport};

/// One machine's part of one setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StressShard {
    /// The sweep's id.
    pub sweep: String,
    /// Index of the setting in the sweep.
    pub setting: usize,
    /// This shard's index.
    pub shard: usize,
    /// `max_workers` of this shard.
    pub workers: usize,
    /// What to run.
    pub plan: RunPlan,
    /// The sweep's config (no key).
    pub cfg: SimulationConfig,
    /// When to start, Unix milliseconds.
    pub start_at_ms: i64,
}

/// A shard's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardReport {
    /// The sweep's id.
    pub sweep: String,
    /// Setting index.
    pub setting: usize,
    /// Shard index.
    pub shard: usize,
    /// The worker.
    pub worker: String,
    /// Its row.
    pub result: SettingResult,
    /// Attempt latency, (µs, count) at the histogram's resolution.
    pub latency: Vec<(u64, u64)>,
    /// When it started and ended, Unix milliseconds.
    pub started_ms: i64,
    /// .
    pub finished_ms: i64,
    /// The provider's name.
    pub provider: String,
    /// Synthetic text.
    pub synthetic: bool,
}

/// How long ahead of now a shard may be told to start.
pub const MAX_START_AHEAD: Duration = Duration::from_secs(60);
/// The lead the coordinator gives its shards.
const LEAD: Duration = Duration::from_secs(2);

/// `w` split over at most `k` shards as evenly as possible (no empty shard).
pub fn split(w: usize, k: usize) -> Vec<usize> {
    let k = k.clamp(1, w.max(1));
    (0..k).map(|i| w / k + usize::from(i < w % k)).collect()
}

/// Runs the sweep with every setting split over `machines` workers of the cluster.
pub async fn run_stress_on_cluster(
    cluster: &Cluster,
    base: &SimulationConfig,
    plan: &RunPlan,
    opts: &StressOptions,
    machines: usize,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<StressReport, ClusterError> {
    let bad = |e: crate::stress::StressError| ClusterError::Untrusted(e.to_string());
    let workers = crate::stress::workers_to_run(&opts.workers).map_err(bad)?;
    let mut base = base.clone();
    let mut notes = Vec::new();
    if let Some(n) = opts.calls {
        notes.push(crate::stress::set_turns_for_calls(&mut base, plan, n).map_err(bad)?);
    }
    let started_at = chrono::Utc::now();
    let sweep = crate::record::results::run_id(
        &format!("{}-stress", plan.name),
        started_at,
        started_at.timestamp_micros() as u64,
    );
    check_id("sweep id", &sweep)?;
    let reports = cluster.reports_reader(&sweep).await?;
    let (mut rows, mut provider, mut synthetic, mut skew_ms) = (Vec::new(), String::new(), false, 0i64);
    for (index, &w) in workers.iter().enumerate() {
        progress(Progress::Started { index, total: workers.len(), workers: w });
        let parts = split(w, machines);
        let start_at_ms = (chrono::Utc::now() + LEAD).timestamp_millis();
        for (shard, &sw) in parts.iter().enumerate() {
            let s = StressShard {
                sweep: sweep.clone(),
                setting: index,
                shard,
                workers: sw,
                plan: plan.clone(),
                cfg: base.clone(),
                start_at_ms,
            };
            publish(cluster, &s).await?;
        }
        let got = gather(&reports, &sweep, index, parts.len(), setting_wait(&base)).await?;
        skew_ms = skew_ms.max(got.iter().map(|r| r.started_ms).max().unwrap_or(0) - start_at_ms);
        provider = got[0].provider.clone();
        synthetic = got.iter().all(|r| r.synthetic);
        let row = merge(w, &got);
        progress(Progress::Finished { index, total: workers.len(), result: &row });
        rows.push(row);
    }
    notes.push(format!(
        "each setting was made by {machines} worker(s) at once (cluster {}); the latest shard started {skew_ms} ms after the common start",
        crate::llm::openai::display_url(&cluster.url)
    ));
    if let Ok(s) = cluster.js.get_stream(cluster.names.done_stream()).await {
        let _ = s.purge().filter(cluster.names.done_subject(&sweep)).await;
    }
    Ok(crate::stress::assemble(&base, plan, (&workers, rows), (provider, synthetic), notes, started_at))
}

/// The longest a setting may take before its missing shards count as lost.
fn setting_wait(cfg: &SimulationConfig) -> Duration {
    Duration::from_secs_f64(cfg.performance.timeout_seconds.clamp(1.0, 86_400.0)) + LEAD + Duration::from_secs(60)
}

async fn publish(cluster: &Cluster, s: &StressShard) -> Result<(), ClusterError> {
    let body = serde_json::to_vec(&super::messages::Work::StressShard(s.clone())).unwrap_or_default();
    let mut publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(body.into())
        .message_id(format!("{}.{}.{}", s.sweep, s.setting, s.shard));
    // With traces exported, the shard's spans on its worker join the sweep's trace.
    if let Some(tp) = crate::monitoring::traces::traceparent(&tracing::Span::current()) {
        publish = publish.header(crate::monitoring::traces::TRACEPARENT, tp.as_str());
    }
    let ack = cluster.js.send_publish(cluster.names.runs_subject(&s.sweep), publish).await.ctx("queueing a shard")?;
    ack.await.ctx("queueing a shard")?;
    Ok(())
}

/// Waits for the `n` shards of setting `index` (one report each, the first wins).
async fn gather(
    reports: &consumer::PullConsumer,
    sweep: &str,
    index: usize,
    n: usize,
    wait: Duration,
) -> Result<Vec<ShardReport>, ClusterError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut got: BTreeMap<usize, ShardReport> = BTreeMap::new();
    while got.len() < n {
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::JetStream {
                what: format!("setting {}", index + 1),
                message: format!(
                    "{} of {n} shard(s) reported within {wait:?}; are there {n} `troupe worker`s on this server?",
                    got.len()
                ),
            });
        }
        let Ok(mut batch) = reports.batch().max_messages(16).expires(Duration::from_millis(500)).messages().await
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        while let Some(Ok(m)) = batch.next().await {
            match parse::<ShardReport>("a shard's report", &m.payload) {
                Ok(r) if r.sweep == sweep && r.setting == index && r.shard < n => {
                    got.entry(r.shard).or_insert(r);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("ignored: {e}"),
            }
        }
    }
    Ok(got.into_values().collect())
}

/// One row from the shards of a setting: counters added, the wall time from the first start to
/// the last end, percentiles of the merged latency histogram.
pub fn merge(workers: usize, shards: &[ShardReport]) -> SettingResult {
    let mut r = SettingResult { workers, completed: true, ..Default::default() };
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds");
    for s in shards {
        let x = &s.result;
        r.calls += x.calls;
        r.answered += x.answered;
        r.tokens += x.tokens;
        r.errors += x.errors;
        r.rate_limited += x.rate_limited;
        r.retries += x.retries;
        r.skipped_turns += x.skipped_turns;
        r.completed &= x.completed;
        r.error = r.error.take().or_else(|| x.error.clone());
        r.cost_estimated |= x.cost_estimated;
        r.cost_usd = match (r.cost_usd, x.cost_usd) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        for (k, n) in &x.errors_by_kind {
            *r.errors_by_kind.entry(k.clone()).or_default() += n;
        }
        for &(us, n) in s.latency.iter().take(1_000_000) {
            let _ = h.record_n(us.clamp(1, 3_600_000_000), n);
        }
    }
    r.completed_turns = shards.iter().map(|s| s.result.completed_turns).min().unwrap_or(0);
    let start = shards.iter().map(|s| s.started_ms).min().unwrap_or(0);
    let end = shards.iter().map(|s| s.finished_ms).max().unwrap_or(0);
    r.wall_s = ((end - start).max(0) as f64 / 1000.0).max(1e-3);
    r.calls_per_s = r.answered as f64 / r.wall_s;
    r.tokens_per_s = r.tokens as f64 / r.wall_s;
    r.error_rate = if r.calls > 0 { r.errors as f64 / r.calls as f64 } else { 0.0 };
    if !h.is_empty() {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (r.p50_ms, r.p90_ms, r.p99_ms) = (ms(0.5), ms(0.9), ms(0.99));
    }
    r
}

/// A worker's side: waits for the common start, makes the shard, returns its report.
pub async fn make_shard(
    s: &StressShard,
    cfg: SimulationConfig,
    provider: std::sync::Arc<dyn crate::llm::Provider>,
    worker: &str,
) -> Result<ShardReport, ClusterError> {
    let now = chrono::Utc::now().timestamp_millis();
    let ahead = Duration::from_millis((s.start_at_ms - now).max(0) as u64).min(MAX_START_AHEAD);
    tokio::time::sleep(ahead).await;
    let cfg = crate::stress::setting_config(&cfg, s.workers);
    let engine = crate::engine::SimulationEngine::with_provider(cfg, provider);
    let started_ms = chrono::Utc::now().timestamp_millis();
    let results = engine.run(s.plan.clone(), crate::engine::RunOptions::default()).await.map_err(|e| {
        ClusterError::JetStream {
            what: format!("shard {} of setting {}", s.shard, s.setting + 1),
            message: e.to_string(),
        }
    })?;
    let finished_ms = chrono::Utc::now().timestamp_millis();
    Ok(ShardReport {
        sweep: s.sweep.clone(),
        setting: s.setting,
        shard: s.shard,
        worker: worker.to_string(),
        result: SettingResult::from_results(s.workers, &results, engine.pricing()),
        latency: results.full_metrics.latency_recorded.clone(),
        started_ms,
        finished_ms,
        provider: results.provider.clone(),
        synthetic: results.synthetic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_split_evenly_without_empty_shards() {
        assert_eq!(split(8, 3), vec![3, 3, 2]);
        assert_eq!(split(1, 3), vec![1]);
        assert_eq!(split(6, 2), vec![3, 3]);
        assert_eq!(split(5, 0), vec![5]);
    }

    #[test]
    fn merged_percentiles_are_those_of_the_whole_load() {
        let shard = |lat: Vec<(u64, u64)>, calls: u64| ShardReport {
            sweep: "s".into(),
            setting: 0,
            shard: 0,
            worker: "w".into(),
            result: SettingResult { calls, answered: calls, completed: true, ..Default::default() },
            latency: lat,
            started_ms: 1000,
            finished_ms: 3000,
            provider: "p".into(),
            synthetic: true,
        };
        // 90 fast calls on one machine, 10 slow on another: p50 fast, p99 slow.
        let r = merge(4, &[shard(vec![(10_000, 90)], 90), shard(vec![(500_000, 10)], 10)]);
        assert_eq!(r.calls, 100);
        assert!((r.calls_per_s - 50.0).abs() < 1e-9);
        assert!((r.p50_ms - 10.0).abs() < 0.1 && (r.p99_ms - 500.0).abs() < 1.0, "{r:?}");
    }
}
