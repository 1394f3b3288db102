//! Stress-testing concurrency settings (`troupe stress`): the same plan runs once per
//! `max_workers` setting, nothing saved, and each run's throughput, latency, errors and cost
//! become one row of a [`StressReport`]. [`best_setting`] names the setting to use.
//!
//! The report is written by one [`Exporter`] per file: [`json`], [`csv`] and [`svg`] (a chart of
//! throughput and p99 latency against workers).

pub mod csv;
pub mod json;
pub mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{ProviderKind, SimulationConfig, TurnPolicy};
use crate::cost::Pricing;
use crate::engine::{EngineError, RunOptions, SimulationEngine};
use crate::llm::Usage;
use crate::record::metrics::MetricsSnapshot;
use crate::record::results::SimulationResults;
use crate::record::transcript::RunEvent;
use crate::scenario::RunPlan;

/// The highest error rate a setting may have and still be named best.
pub const MAX_ERROR_RATE: f64 = 0.05;

/// Settings within this share of the highest throughput count as equally fast: differences
/// that small are run-to-run noise, and fewer workers then cost less for the same result.
pub const TIE_TOLERANCE: f64 = 0.05;

/// How the best setting is chosen, as printed with every report.
pub const BEST_RULE: &str = "best = the highest calls/s among the settings whose run completed with no skipped turn and an error rate under 5%; settings within 5% of that throughput count as ties, and ties go to the fewest workers";

/// Errors of a stress test.
#[derive(Debug, thiserror::Error)]
pub enum StressError {
    /// No workers setting to try.
    #[error("no workers setting to try; give --workers 1,2,4,8 (positive numbers)")]
    NoWorkers,
    /// A setting of 0 workers.
    #[error("--workers 0 cannot run anything; use settings of 1 or more")]
    ZeroWorkers,
    /// A setting out of bounds.
    #[error("{0}")]
    OutOfRange(String),
    /// A run could not start or finish.
    #[error("the run with {workers} worker(s) failed: {source}")]
    Run {
        /// The setting.
        workers: usize,
        /// Why.
        #[source]
        source: EngineError,
    },
    /// A report file could not be written.
    #[error("could not write {}: {source}; check that the folder is writable (--out DIR or output.output_dir)", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A report could not be rendered.
    #[error("could not render {file}: {message}")]
    Render {
        /// The file.
        file: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// What to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StressOptions {
    /// `max_workers` settings, one run each.
    pub workers: Vec<usize>,
    /// Run about this many calls instead of the scenario's turns.
    pub calls: Option<u64>,
}

/// One setting's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingResult {
    /// `performance.max_workers`.
    pub workers: usize,
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// Call attempts (retries included).
    pub calls: u64,
    /// Attempts that got an answer.
    pub answered: u64,
    /// Answered calls per second of wall time.
    pub calls_per_s: f64,
    /// Tokens sent plus received.
    pub tokens: u64,
    /// Tokens per second of wall time.
    pub tokens_per_s: f64,
    /// Median attempt latency, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Failed attempts.
    pub errors: u64,
    /// Failed attempts / attempts.
    pub error_rate: f64,
    /// Failed attempts by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// 429 answers.
    pub rate_limited: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Persona turns skipped.
    pub skipped_turns: u64,
    /// Turns fully run.
    pub completed_turns: u32,
    /// USD: spent, or for synthetic text what the tokens would cost on the model; `None`
    /// when the model has no price.
    pub cost_usd: Option<f64>,
    /// True when `cost_usd` is an estimate (synthetic text).
    pub cost_estimated: bool,
    /// True when the run ended normally.
    pub completed: bool,
    /// Why the run ended early, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SettingResult {
    /// The row for a finished run. `pricing` prices synthetic runs' tokens.
    pub fn from_results(workers: usize, r: &SimulationResults, pricing: &Pricing) -> Self {
        let m: &MetricsSnapshot = &r.full_metrics;
        let wall = r.metrics.duration;
        let per_s = |n: u64| if wall > 0.0 { n as f64 / wall } else { 0.0 };
        let (cost_usd, cost_estimated) = if r.synthetic {
            let usage = Usage::new(m.counts.prompt_tokens, m.counts.completion_tokens);
            (pricing.cost(&r.config.model, usage), true)
        } else {
            (Some(r.metrics.counts.cost_usd), false)
        };
        SettingResult {
            workers,
            wall_s: wall,
            calls: m.counts.api_calls,
            answered: m.successful_calls,
            calls_per_s: per_s(m.successful_calls),
            tokens: m.counts.total_tokens,
            tokens_per_s: per_s(m.counts.total_tokens),
            p50_ms: m.llm_latency.p50_ms,
            p90_ms: m.llm_latency.p90_ms,
            p99_ms: m.llm_latency.p99_ms,
            errors: m.counts.errors,
            error_rate: m.counts.error_rate,
            errors_by_kind: m.errors_by_kind.clone(),
            rate_limited: m.errors_by_kind.get("rate_limited").copied().unwrap_or(0),
            retries: m.counts.retries,
            skipped_turns: m.counts.skipped_turns,
            completed_turns: r.completed_turns,
            cost_usd,
            cost_estimated,
            completed: r.success,
            error: r.error.clone(),
        }
    }

    /// True when the setting may be named best (see [`BEST_RULE`]).
    pub fn eligible(&self) -> bool {
        self.completed && self.skipped_turns == 0 && self.error_rate < MAX_ERROR_RATE
    }
}

/// The workers setting [`BEST_RULE`] picks, if any qualifies.
pub fn best_setting(rows: &[SettingResult]) -> Option<usize> {
    let top = rows.iter().filter(|r| r.eligible()).map(|r| r.calls_per_s).max_by(f64::total_cmp)?;
    rows.iter().filter(|r| r.eligible() && r.calls_per_s >= top * (1.0 - TIE_TOLERANCE)).map(|r| r.workers).min()
}

/// A whole stress test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StressReport {
    /// Folder-safe id.
    pub id: String,
    /// Scenario name ("ad-hoc" without a file).
    pub scenario: String,
    /// Variant applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Provider name.
    pub provider: String,
    /// True for the simulated provider.
    pub synthetic: bool,
    /// Model asked.
    pub model: String,
    /// Turn policy.
    pub policy: TurnPolicy,
    /// Personas at the start.
    pub personas: usize,
    /// Turns per run.
    pub turns: u32,
    /// `llm.requests_per_minute`.
    pub requests_per_minute: Option<u32>,
    /// `llm.tokens_per_minute`.
    pub tokens_per_minute: Option<u32>,
    /// `performance.rate_limit_delay`, seconds.
    pub rate_limit_delay: f64,
    /// Start (RFC 3339 UTC).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// One row per setting, by workers.
    pub settings: Vec<SettingResult>,
    /// The best setting's workers.
    pub best_workers: Option<usize>,
    /// How it was chosen.
    pub best_rule: String,
    /// What to keep in mind reading the figures.
    pub notes: Vec<String>,
}

/// What a stress test reports while it runs.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A setting starts (`index` from 0).
    Started {
        /// Position.
        index: usize,
        /// Settings in all.
        total: usize,
        /// The setting.
        workers: usize,
    },
    /// Live figures of the running setting.
    Live {
        /// The setting.
        workers: usize,
        /// Its metrics so far.
        metrics: &'a MetricsSnapshot,
    },
    /// A setting finished.
    Finished {
        /// Position.
        index: usize,
        /// Settings in all.
        total: usize,
        /// Its row.
        result: &'a SettingResult,
    },
}

/// The config of one setting: `max_workers = workers` and a Parallel batch at least as wide.
pub fn setting_config(base: &SimulationConfig, workers: usize) -> SimulationConfig {
    let mut c = base.clone();
    c.performance.max_workers = workers;
    c.performance.batch_size = c.performance.batch_size.max(workers);
    c
}

/// Turns that make about `calls` calls with this plan (from the estimate's calls per turn).
pub fn turns_for_calls(plan: &RunPlan, cfg: &SimulationConfig, calls: u64) -> u32 {
    let turns = cfg.simulation.max_turns.max(1);
    let mut c = cfg.clone();
    c.simulation.max_turns = turns;
    let est = crate::estimate::estimate(plan, &c, &Pricing::default());
    let per_turn = if est.calls > 0 { est.calls as f64 / turns as f64 } else { plan.personas.len().max(1) as f64 };
    (calls as f64 / per_turn).ceil().clamp(1.0, u32::MAX as f64) as u32
}

/// Runs the plan once per workers setting and returns the report.
pub async fn run_stress(
    base: &SimulationConfig,
    plan: &RunPlan,
    opts: &StressOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<StressReport, StressError> {
    let workers = workers_to_run(&opts.workers)?;
    let mut base = base.clone();
    let mut notes = Vec::new();
    if let Some(n) = opts.calls {
        notes.push(set_turns_for_calls(&mut base, plan, n)?);
    }
    let started_at = chrono::Utc::now();
    let total = workers.len();
    let mut rows = Vec::with_capacity(total);
    let mut provider = String::new();
    let mut synthetic = false;
    for (index, &w) in workers.iter().enumerate() {
        progress(Progress::Started { index, total, workers: w });
        let engine = SimulationEngine::new(setting_config(&base, w))
            .map_err(|source| StressError::Run { workers: w, source })?;
        if index == 0
            && let Some(n) = engine.notice()
        {
            notes.push(n.to_string());
        }
        let results = run_one(&engine, plan.clone(), w, progress)
            .await
            .map_err(|source| StressError::Run { workers: w, source })?;
        provider = results.provider.clone();
        synthetic = results.synthetic;
        let row = SettingResult::from_results(w, &results, engine.pricing());
        progress(Progress::Finished { index, total, result: &row });
        rows.push(row);
    }
    Ok(assemble(&base, plan, (&workers, rows), (provider, synthetic), notes, started_at))
}

/// The report of a sweep whose settings (`workers`) gave `rows`: reading notes, the best
/// setting, the id.
pub fn assemble(
    base: &SimulationConfig,
    plan: &RunPlan,
    (workers, rows): (&[usize], Vec<SettingResult>),
    (provider, synthetic): (String, bool),
    mut notes: Vec<String>,
    started_at: chrono::DateTime<chrono::Utc>,
) -> StressReport {
    notes.extend(reading_notes(base, plan, workers, synthetic));
    let best_workers = best_setting(&rows);
    if best_workers.is_none() {
        notes.push("no setting qualified as best: every one skipped turns, failed, or had 5% errors or more".into());
    }
    StressReport {
        id: crate::record::results::run_id(
            &format!("{}-stress", plan.name),
            started_at,
            started_at.timestamp_micros() as u64,
        ),
        scenario: plan.name.clone(),
        variant: plan.variant.clone(),
        provider,
        synthetic,
        model: base.llm.model.clone(),
        policy: base.simulation.policy(),
        personas: plan.personas.len(),
        turns: base.simulation.max_turns,
        requests_per_minute: base.llm.requests_per_minute,
        tokens_per_minute: base.llm.tokens_per_minute,
        rate_limit_delay: base.performance.rate_limit_delay,
        started_at,
        settings: rows,
        best_workers,
        best_rule: BEST_RULE.into(),
        notes,
    }
}

/// The settings to run: sorted, each once, every one in 1..=`MAX_WORKERS`.
pub fn workers_to_run(asked: &[usize]) -> Result<Vec<usize>, StressError> {
    let mut workers = asked.to_vec();
    workers.sort_unstable();
    workers.dedup();
    if workers.is_empty() {
        return Err(StressError::NoWorkers);
    }
    if workers[0] == 0 {
        return Err(StressError::ZeroWorkers);
    }
    let most = crate::config::limits::MAX_WORKERS;
    if workers.last().is_some_and(|&w| w > most) {
        return Err(StressError::OutOfRange(format!("--workers: use settings between 1 and {most}")));
    }
    Ok(workers)
}

/// `--calls n`: sets the turns that make about `n` calls with this plan, and says so.
pub fn set_turns_for_calls(base: &mut SimulationConfig, plan: &RunPlan, n: u64) -> Result<String, StressError> {
    let was = base.simulation.max_turns;
    base.simulation.max_turns = turns_for_calls(plan, base, n);
    if base.simulation.max_turns > crate::config::limits::MAX_TURNS {
        return Err(StressError::OutOfRange(format!(
            "--calls {n} would take {} turns, more than the {} a run may have; ask for fewer calls",
            base.simulation.max_turns,
            crate::config::limits::MAX_TURNS
        )));
    }
    Ok(format!(
        "--calls {n}: each setting runs {} turn(s) (about {n} calls) instead of {was}",
        base.simulation.max_turns
    ))
}

async fn run_one(
    engine: &SimulationEngine,
    plan: RunPlan,
    workers: usize,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<SimulationResults, EngineError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = engine
        .start(plan, RunOptions { save_under: None, events: Some(tx), without_exchanges: true, ..Default::default() })
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(RunEvent::Finished(_)) | None => break,
                Some(_) => {}
            },
            _ = tick.tick() => {
                if let Some(m) = handle.metrics().await {
                    progress(Progress::Live { workers, metrics: &m });
                }
            }
        }
    }
    handle.wait().await
}

/// Notes on what limits the figures (policy, batch width, budgets, synthetic cost).
fn reading_notes(cfg: &SimulationConfig, plan: &RunPlan, workers: &[usize], synthetic: bool) -> Vec<String> {
    let mut notes = Vec::new();
    let personas = plan.personas.len();
    match cfg.simulation.policy() {
        TurnPolicy::Parallel => {
            if workers.iter().any(|&w| w > personas) {
                notes.push(format!(
                    "a Parallel turn asks at most its {personas} persona(s) at once, so settings above {personas} worker(s) cannot have more calls in flight"
                ));
            }
        }
        p => notes.push(format!(
            "the turn policy is {p:?}: personas speak one at a time, so at most one call is in flight whatever the workers; add --policy parallel to measure concurrency"
        )),
    }
    let sim = synthetic || cfg.llm.provider == ProviderKind::Simulated;
    if sim && (cfg.llm.requests_per_minute.is_some() || cfg.llm.tokens_per_minute.is_some()) {
        notes.push("--rpm/--tpm budget the HTTP providers; the simulated provider ignores them (its 429s come from llm.simulated.faults)".into());
    }
    let f = &cfg.llm.simulated.faults;
    let injected = f.rate_limited + f.server_error + f.timeout + f.malformed + f.empty;
    if synthetic && injected > 0.0 {
        notes.push(format!(
            "the simulated provider fails {:.0}% of attempts by design (llm.simulated.faults), whatever the workers; set the faults to 0 to rank the settings by throughput alone",
            injected * 100.0
        ));
    }
    if synthetic {
        notes.push(format!(
            "the text is synthetic (simulated provider): cost is what its tokens would cost on {}",
            cfg.llm.model
        ));
    }
    notes
}

/// Writes one report file.
pub trait Exporter {
    /// File name inside the report folder.
    fn file_name(&self) -> &'static str;
    /// The file's bytes.
    fn render(&self, report: &StressReport) -> Result<Vec<u8>, StressError>;
}

/// Every exporter: `stress.json`, `stress.csv`, `stress.svg`.
pub fn exporters() -> Vec<Box<dyn Exporter>> {
    vec![Box::new(json::JsonExporter), Box::new(csv::CsvExporter), Box::new(svg::SvgExporter)]
}

/// The default folder of a report: `output_dir/stress/<id>`.
pub fn report_dir(output_dir: &Path, report: &StressReport) -> PathBuf {
    output_dir.join("stress").join(&report.id)
}

/// Writes every exporter's file into `dir` (created if needed), each atomically.
pub fn save_report(report: &StressReport, dir: &Path) -> Result<Vec<PathBuf>, StressError> {
    std::fs::create_dir_all(dir).map_err(|source| StressError::Write { path: dir.to_path_buf(), source })?;
    let mut written = Vec::new();
    for e in exporters() {
        let path = dir.join(e.file_name());
        let bytes = e.render(report)?;
        crate::fsutil::write_atomic(&path, &bytes)
            .map_err(|source| StressError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workers: usize, calls_per_s: f64) -> SettingResult {
        SettingResult { workers, calls_per_s, completed: true, ..Default::default() }
    }

    #[test]
    fn best_is_the_fastest_clean_setting() {
        let rows = vec![row(1, 10.0), row(2, 19.0), row(4, 35.0), row(8, 34.0)];
        assert_eq!(best_setting(&rows), Some(4));
    }

    #[test]
    fn skipped_turns_errors_and_failed_runs_disqualify() {
        let mut skipped = row(8, 90.0);
        skipped.skipped_turns = 1;
        let mut errors = row(16, 95.0);
        errors.error_rate = 0.05;
        let mut failed = row(32, 99.0);
        failed.completed = false;
        let mut almost = row(4, 40.0);
        almost.error_rate = 0.049;
        let rows = vec![row(1, 10.0), almost, skipped, errors, failed];
        assert_eq!(best_setting(&rows), Some(4));
    }

    #[test]
    fn ties_go_to_fewer_workers_and_none_may_qualify() {
        assert_eq!(best_setting(&[row(8, 50.0), row(4, 50.0), row(16, 50.0)]), Some(4));
        // Within 5% of the top is noise: the fewer workers win.
        assert_eq!(best_setting(&[row(1, 147.0), row(4, 149.6)]), Some(1));
        assert_eq!(best_setting(&[row(4, 95.1), row(8, 100.0)]), Some(4));
        assert_eq!(best_setting(&[row(4, 94.9), row(8, 100.0)]), Some(8));
        let mut bad = row(1, 10.0);
        bad.skipped_turns = 2;
        assert_eq!(best_setting(&[bad]), None);
        assert_eq!(best_setting(&[]), None);
    }

    #[test]
    fn settings_widen_the_batch() {
        let mut base = SimulationConfig::default();
        base.performance.batch_size = 5;
        let c = setting_config(&base, 16);
        assert_eq!((c.performance.max_workers, c.performance.batch_size), (16, 16));
        assert_eq!(setting_config(&base, 2).performance.batch_size, 5);
    }
}
