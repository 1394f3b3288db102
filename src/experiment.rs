//! Experiments: each variant of a scenario run several times, compared with statistics.
//!
//! [`run_experiment`] runs every (variant, k) pair with its own run seed derived from one
//! experiment seed, sequentially or `max_parallel` at a time (runs with the same provider
//! settings share one provider, so an HTTP provider's budget is shared by all of them). Every
//! run is saved under `<dir>/runs/<variant>-<k>/<run-id>/`; when the scenario declares
//! `extract` fields each persona is then asked for them ([`extract`]) and the answers saved as
//! `extraction.json` beside the run. The experiment folder gets `summary.json`
//! ([`ExperimentSummary`]), `report.md` and `report.html` ([`report`]): per variant, each
//! metric's mean, standard deviation and 95% confidence interval; per pair of variants and
//! metric, Welch's t-test, the Mann-Whitney U test and Cohen's d, with a plain sentence for
//! every difference with p < 0.05.
//!
//! Two designs from the scenario's `experiment` block: `assignment: Random` deals the
//! scenario's personas to the variants with a seeded shuffle (each persona in one variant
//! only), and `blind: true` labels the variants "A", "B", ... (seeded) in the report and its
//! run folders, revealing which is which only in the report's last section.
//!
//! Plans come from a [`Planner`]: [`planner::ScenarioPlanner`] reads a scenario file with the
//! config layers, as `troupe experiment` does.

pub mod extract;
pub mod planner;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::analysis::stats::{self, Summary, TestResult};
use crate::analysis::{ConversationAnalysis, analyze_conversation};
use crate::config::SimulationConfig;
use crate::engine::{RunOptions, SimulationEngine};
use crate::fsutil::write_atomic;
use crate::llm::Provider;
use crate::record::results::SimulationResults;
use crate::rng::{self, Stream};
use crate::scenario::RunPlan;
use crate::scenario::{Assignment, ExtractField};

pub use extract::Extraction;
pub use planner::ScenarioPlanner;

/// Significance level of the comparisons.
pub const ALPHA: f64 = 0.05;

/// The metrics compared, in report order: (key, description, unit).
pub const METRICS: &[(&str, &str, &str)] = &[
    ("messages", "messages per run", ""),
    ("words_per_message", "words per persona message", ""),
    ("participation_gini", "participation Gini (0 even .. 1 one voice)", ""),
    ("sentiment", "mean sentiment of persona messages", ""),
    ("latency_ms", "mean call latency", "ms"),
    ("tokens", "tokens per run", ""),
    ("cost_usd", "cost per run", "USD"),
    ("errors", "failed call attempts per run", ""),
];

/// Errors that stop an experiment.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The experiment is asked for nonsense (no variants, zero runs, ...).
    #[error("{0}")]
    Invalid(String),
    /// A variant's plan could not be made.
    #[error("variant `{variant}`: {message}")]
    Plan {
        /// The variant.
        variant: String,
        /// What went wrong.
        message: String,
    },
    /// A run could not start or finish.
    #[error("run {label}-{k}: {source}")]
    Run {
        /// Variant label.
        label: String,
        /// 1-based run number.
        k: usize,
        /// The engine's error.
        #[source]
        source: crate::engine::EngineError,
    },
    /// The provider cannot be set up.
    #[error("cannot set up the language-model provider: {0}")]
    Provider(#[from] crate::llm::LlmError),
    /// The experiment was asked to stop before this run started.
    #[error("stopped before this run started")]
    Stopped,
    /// A file could not be written.
    #[error("could not write {}: {source}; check output.output_dir", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Makes the plan and config of one run of a variant.
pub trait Planner: Send + Sync {
    /// The plan and config for `variant` with run seed `run_seed` (the config's
    /// `simulation.run_seed` must be set to it).
    fn plan(&self, variant: &str, run_seed: u64) -> Result<(RunPlan, SimulationConfig), ExperimentError>;
}

impl<F> Planner for F
where
    F: Fn(&str, u64) -> Result<(RunPlan, SimulationConfig), ExperimentError> + Send + Sync,
{
    fn plan(&self, variant: &str, run_seed: u64) -> Result<(RunPlan, SimulationConfig), ExperimentError> {
        self(variant, run_seed)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ExperimentSpec {
    /// Scenario name (the start of the experiment id).
    pub scenario: String,
    /// Variants to compare, at least two.
    pub variants: Vec<String>,
    /// Runs per variant.
    pub runs: usize,
    /// Run several at once.
    pub parallel: bool,
    /// How many at once when parallel.
    pub max_parallel: usize,
    /// The experiment seed every run seed derives from.
    pub seed: u64,
    /// The experiment folder (`output_dir/experiments/<id>`); see [`experiment_id`].
    pub dir: PathBuf,
    /// Persona assignment.
    pub assignment: Assignment,
    /// Blind the variants in the report.
    pub blind: bool,
    /// Fields asked of each persona after each run.
    pub extract: Vec<ExtractField>,
    /// Set to `true` to stop: runs going stop and save what they have, no new run starts, and
    /// the summary covers the runs done (Ctrl-C, SIGTERM). `None`: runs to the end.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Progress of an experiment, for a terminal or a web view.
#[derive(Debug, Clone, PartialEq)]
pub enum ExperimentEvent {
    /// A run began.
    RunStarted {
        /// Folder name of the run (`<label>-<k>`).
        run: String,
    },
    /// A run said a message.
    Message {
        /// Folder name of the run.
        run: String,
    },
    /// A run is asking its personas for the extraction fields.
    Extracting {
        /// Folder name of the run.
        run: String,
    },
    /// A run ended.
    RunFinished {
        /// Folder name of the run.
        run: String,
        /// True when every turn ran.
        success: bool,
        /// Its transcript length.
        messages: u64,
    },
}

/// One run of the experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Variant name.
    pub variant: String,
    /// Label in the report (the name, or "A", "B", ... when blinded).
    pub label: String,
    /// 1-based run number within the variant.
    pub k: usize,
    /// Its run seed.
    pub run_seed: u64,
    /// Its run id.
    pub run_id: String,
    /// Its folder.
    pub dir: Option<PathBuf>,
    /// True when every turn ran.
    pub success: bool,
    /// Why it stopped, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Persona ids that took part.
    pub personas: Vec<String>,
    /// The compared metrics' values.
    pub metrics: BTreeMap<String, f64>,
    /// Extraction answers, by persona id then field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extraction: BTreeMap<String, BTreeMap<String, String>>,
}

/// One field's answers across a variant's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldCounts {
    /// The field.
    pub field: String,
    /// Answers and how often each was given (declared choices first, all of them listed).
    pub counts: Vec<(String, u64)>,
    /// Personas whose answer for this field was missing or invalid.
    pub invalid: u64,
}

/// A variant's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    /// Variant name.
    pub variant: String,
    /// Label in the report.
    pub label: String,
    /// Runs made.
    pub runs: usize,
    /// Runs that completed.
    pub succeeded: usize,
    /// Personas assigned (all of the plan's unless assignment is random).
    pub personas: Vec<String>,
    /// Each metric's summary over the runs.
    pub metrics: BTreeMap<String, Summary>,
    /// Extraction answers counted per field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extraction: Vec<FieldCounts>,
}

/// One metric compared between two variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The metric's key.
    pub metric: String,
    /// First variant's label.
    pub a: String,
    /// Second variant's label.
    pub b: String,
    /// Mean of the first.
    pub mean_a: f64,
    /// Mean of the second.
    pub mean_b: f64,
    /// Welch's t-test (a against b).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welch: Option<TestResult>,
    /// Mann-Whitney U (U of a).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mann_whitney: Option<TestResult>,
    /// Cohen's d (a minus b); none when infinite or undefined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohens_d: Option<f64>,
    /// Welch's p < 0.05 (or Mann-Whitney's when Welch's test is undefined).
    pub significant: bool,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSummary {
    /// Experiment id (its folder name).
    pub id: String,
    /// Scenario name.
    pub scenario: String,
    /// The experiment seed.
    pub seed: u64,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it ended.
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// Runs per variant.
    pub runs_per_variant: usize,
    /// Runs at once (1 when sequential).
    pub parallelism: usize,
    /// Persona assignment.
    pub assignment: Assignment,
    /// Variants were blinded in the report.
    pub blind: bool,
    /// Label → variant, the key to the blinding (label = name when not blinded).
    pub labels: Vec<(String, String)>,
    /// Fields asked of each persona.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extract: Vec<ExtractField>,
    /// Per variant, in label order.
    pub variants: Vec<VariantSummary>,
    /// Every pair of variants, every metric.
    pub comparisons: Vec<Comparison>,
    /// A plain sentence per significant difference.
    pub findings: Vec<String>,
    /// Every run.
    pub runs: Vec<RunRecord>,
    /// True when the text was synthetic (simulated provider).
    pub synthetic: bool,
    /// True when the experiment was stopped before all its runs were made.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

/// Files written by an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentFiles {
    /// `summary.json`.
    pub summary: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
}

/// A folder-safe experiment id: `<scenario>-<UTC timestamp>-<seed suffix>`.
pub fn experiment_id(scenario: &str, at: chrono::DateTime<chrono::Utc>, seed: u64) -> String {
    crate::record::results::run_id(scenario, at, seed)
}

/// The run seed of run `k` (1-based) of `variant`: distinct per (variant, k), all derived from
/// the experiment seed.
pub fn run_seed(experiment_seed: u64, variant: &str, k: usize) -> u64 {
    rng::derive(experiment_seed, Stream::ExperimentRun { variant, k })
}

/// Report labels: the names, or "A", "B", ... in a seeded order when blinded.
pub fn labels(variants: &[String], blind: bool, seed: u64) -> Vec<String> {
    if !blind {
        return variants.to_vec();
    }
    let mut order: Vec<usize> = (0..variants.len()).collect();
    rng::stream(seed, Stream::BlindLabels).shuffle(&mut order);
    // order[i] is the label index of variant i.
    order.iter().map(|&l| label_name(l)).collect()
}

fn label_name(i: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    if i < 26 { (letters[i] as char).to_string() } else { format!("V{}", i + 1) }
}

/// Seeded random assignment: the pool's persona ids dealt to `n` variants in turn after a
/// shuffle. Every variant gets at least one when the pool has at least `n`.
pub fn assign(pool: &[String], n: usize, seed: u64) -> Vec<Vec<String>> {
    let mut ids = pool.to_vec();
    rng::stream(seed, Stream::Assignment).shuffle(&mut ids);
    let mut out = vec![Vec::new(); n];
    for (i, id) in ids.into_iter().enumerate() {
        out[i % n].push(id);
    }
    out
}

/// The compared metrics of one run.
pub fn run_metrics(r: &SimulationResults, a: &ConversationAnalysis) -> BTreeMap<String, f64> {
    let latency = if a.latency.samples > 0 { a.latency.mean_ms } else { r.metrics.average_response_time * 1000.0 };
    BTreeMap::from([
        ("messages".to_string(), r.transcript.len() as f64),
        ("words_per_message".to_string(), a.overview.words_per_message),
        ("participation_gini".to_string(), a.participation.gini_messages),
        ("sentiment".to_string(), a.sentiment.mean),
        ("latency_ms".to_string(), latency),
        ("tokens".to_string(), r.metrics.counts.total_tokens as f64),
        ("cost_usd".to_string(), r.metrics.counts.cost_usd),
        ("errors".to_string(), r.metrics.counts.errors as f64),
    ])
}

/// The provider settings that decide whether two runs can share one provider: the `llm`
/// section without the sampling and model choices, which go with each request.
pub fn provider_key(cfg: &SimulationConfig) -> String {
    let mut v = serde_json::to_value(&cfg.llm).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for k in [
            "temperature",
            "top_p",
            "max_tokens",
            "model",
            "fallback_model",
            "stop",
            "json_actions",
            "send_seed",
            "max_cost_usd",
        ] {
            m.remove(k);
        }
    }
    v.to_string()
}

/// One run of an experiment, with everything needed to make it anywhere: what a cluster worker
/// receives. The config carries no key (keys serialize as `[redacted]`); whoever runs the job
/// reaches the provider with its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunJob {
    /// Variant name.
    pub variant: String,
    /// Its label in the report.
    pub label: String,
    /// 1-based run number within the variant.
    pub k: usize,
    /// The run seed.
    pub seed: u64,
    /// The plan (personas resolved).
    pub plan: RunPlan,
    /// The variant's config with `simulation.run_seed = seed`.
    pub cfg: SimulationConfig,
}

impl RunJob {
    /// Its folder under `runs/`: `<label>-<k>`.
    pub fn folder(&self) -> String {
        format!("{}-{}", crate::persona::tinytroupe::slug(&self.label), self.k)
    }
}

/// An experiment planned: labels, the personas dealt, one job per run. Nothing has run yet.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Report labels by variant index.
    pub labels: Vec<String>,
    /// Personas dealt to each variant (random assignment only).
    pub assigned: Vec<Option<Vec<String>>>,
    /// Every run, variant by variant.
    pub jobs: Vec<RunJob>,
    /// When the experiment started.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// Checks the spec and plans every run (a bad variant fails before anything runs), and makes
/// the experiment's `runs/` folder.
pub fn prepare(spec: &ExperimentSpec, planner: &dyn Planner) -> Result<Prepared, ExperimentError> {
    check_spec(spec)?;
    let started_at = chrono::Utc::now();
    let labels = labels(&spec.variants, spec.blind, spec.seed);
    let assigned = deal_personas(spec, planner)?;
    let jobs = plan_jobs(spec, planner, &labels, &assigned)?;
    let runs_dir = spec.dir.join("runs");
    std::fs::create_dir_all(&runs_dir).map_err(|source| ExperimentError::Write { path: runs_dir.clone(), source })?;
    Ok(Prepared { labels, assigned, jobs, started_at })
}

/// A job with the provider it runs on.
type JobOn = (RunJob, Arc<dyn Provider>);

/// One provider per distinct endpoint settings, shared by the jobs that use it.
fn providers_for(jobs: Vec<RunJob>) -> Result<Vec<JobOn>, ExperimentError> {
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let key = provider_key(&job.cfg);
        let provider = match providers.get(&key) {
            Some(p) => p.clone(),
            None => {
                let (p, _) = crate::llm::provider_from_config(&job.cfg)?;
                providers.insert(key, p.clone());
                p
            }
        };
        out.push((job, provider));
    }
    Ok(out)
}

/// Runs the experiment and writes its files; see the module docs.
pub async fn run_experiment(
    spec: &ExperimentSpec,
    planner: &dyn Planner,
    events: Option<mpsc::UnboundedSender<ExperimentEvent>>,
) -> Result<(ExperimentSummary, ExperimentFiles), ExperimentError> {
    let prepared = prepare(spec, planner)?;
    let jobs = providers_for(prepared.jobs.clone())?;
    let runs_dir = spec.dir.join("runs");
    let parallelism = if spec.parallel { spec.max_parallel.max(1) } else { 1 };
    let extract_fields = spec.extract.clone();
    let records: Vec<Result<(RunRecord, bool), ExperimentError>> = futures_util::stream::iter(jobs)
        .map(|(job, provider)| {
            let how = HowToRun { events: events.clone(), stop: spec.stop.clone(), ..HowToRun::on(provider) };
            run_job(job, &runs_dir, &extract_fields, how)
        })
        .buffered(parallelism)
        .collect()
        .await;
    conclude(spec, prepared, records, parallelism)
}

/// Summarizes the runs made (a stopped run is left out and marks the experiment stopped; any
/// other error ends it) and writes `summary.json`, `report.md` and `report.html`.
pub fn conclude(
    spec: &ExperimentSpec,
    prepared: Prepared,
    records: Vec<Result<(RunRecord, bool), ExperimentError>>,
    parallelism: usize,
) -> Result<(ExperimentSummary, ExperimentFiles), ExperimentError> {
    let Prepared { labels, assigned, started_at, .. } = prepared;
    let mut runs = Vec::new();
    let mut synthetic = true;
    let mut stopped = false;
    for r in records {
        match r {
            Err(ExperimentError::Stopped) => stopped = true,
            r => {
                let (rec, syn) = r?;
                synthetic &= syn;
                runs.push(rec);
            }
        }
    }
    stopped |= spec.stop.as_ref().is_some_and(|s| *s.borrow());

    let mut summary = summarize(spec, labels, runs, started_at, parallelism, synthetic, &assigned);
    summary.stopped = stopped;
    let files = write_files(&summary, &spec.dir)?;
    Ok((summary, files))
}

/// What makes an experiment unrunnable, said before anything runs.
fn check_spec(spec: &ExperimentSpec) -> Result<(), ExperimentError> {
    if spec.variants.len() < 2 {
        return Err(ExperimentError::Invalid(
            "an experiment compares at least two variants; give --variants a,b (\"baseline\" is the scenario as written)"
                .into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = spec.variants.iter().find(|v| !seen.insert(v.as_str())) {
        return Err(ExperimentError::Invalid(format!("variant `{d}` is listed twice; list each variant once")));
    }
    let mut names = std::collections::HashSet::new();
    for f in &spec.extract {
        if f.name.trim().is_empty() || !names.insert(f.name.as_str()) {
            return Err(ExperimentError::Invalid(format!(
                "extract: field name `{}` is empty or listed twice; give each field its own name",
                f.name
            )));
        }
    }
    if spec.runs == 0 {
        return Err(ExperimentError::Invalid("--runs must be at least 1 (3 or more for statistics)".into()));
    }
    Ok(())
}

/// With `Assignment::Random`, the personas each variant is dealt (by variant index); `None`
/// for every variant otherwise.
fn deal_personas(spec: &ExperimentSpec, planner: &dyn Planner) -> Result<Vec<Option<Vec<String>>>, ExperimentError> {
    let mut assigned: Vec<Option<Vec<String>>> = vec![None; spec.variants.len()];
    if spec.assignment != Assignment::Random {
        return Ok(assigned);
    }
    // The pool is the scenario as written ("baseline"), or the first variant for planners that
    // do not know it.
    let (first, _) = match planner.plan(planner::BASELINE, spec.seed) {
        Ok(p) => p,
        Err(_) => planner.plan(&spec.variants[0], spec.seed)?,
    };
    let pool: Vec<String> = first.personas.iter().map(|p| p.id.clone()).collect();
    if pool.len() < spec.variants.len() {
        return Err(ExperimentError::Invalid(format!(
            "assignment: Random deals the scenario's {} persona(s) to {} variants; list at least one persona per variant",
            pool.len(),
            spec.variants.len()
        )));
    }
    for (i, ids) in assign(&pool, spec.variants.len(), spec.seed).into_iter().enumerate() {
        assigned[i] = Some(ids);
    }
    Ok(assigned)
}

/// One job per variant and repetition, each with its plan, config and run seed.
fn plan_jobs(
    spec: &ExperimentSpec,
    planner: &dyn Planner,
    labels: &[String],
    assigned: &[Option<Vec<String>>],
) -> Result<Vec<RunJob>, ExperimentError> {
    let mut jobs = Vec::new();
    for (vi, variant) in spec.variants.iter().enumerate() {
        for k in 1..=spec.runs {
            let seed = run_seed(spec.seed, variant, k);
            let (mut plan, mut cfg) = planner.plan(variant, seed)?;
            cfg.simulation.run_seed = seed;
            if let Some(ids) = &assigned[vi] {
                // Keep the dealt personas and any the variant itself adds.
                let base: std::collections::HashSet<&String> = assigned.iter().flatten().flatten().collect();
                plan.personas.retain(|p| ids.contains(&p.id) || !base.contains(&p.id));
            }
            jobs.push(RunJob { variant: variant.clone(), label: labels[vi].clone(), k, seed, plan, cfg });
        }
    }
    Ok(jobs)
}

/// Asks each persona of a finished run for the experiment's fields, adds what that cost to the
/// run's metrics and saves `extraction.json` in the run folder.
async fn extract_run(
    (provider, cfg): (&Arc<dyn Provider>, &SimulationConfig),
    pricing: &crate::cost::Pricing,
    personas: &[crate::persona::PersonaSpec],
    results: &crate::record::results::SimulationResults,
    fields: &[ExtractField],
    metrics: &mut BTreeMap<String, f64>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, ExperimentError> {
    let ex = extract::extract(provider.clone(), cfg, pricing, personas, results, fields).await;
    *metrics.entry("tokens".into()).or_default() += ex.usage.total() as f64;
    *metrics.entry("cost_usd".into()).or_default() += ex.cost_usd;
    let values = ex.personas.iter().map(|p| (p.persona.clone(), p.values.clone())).collect();
    if let Some(dir) = &results.run_dir {
        let path = dir.join("extraction.json");
        let mut bytes = serde_json::to_vec_pretty(&ex).unwrap_or_default();
        bytes.push(b'\n');
        write_atomic(&path, &bytes).map_err(|source| ExperimentError::Write { path, source })?;
    }
    Ok(values)
}

/// How [`run_job`] makes a run.
#[derive(Debug)]
pub struct HowToRun {
    /// The provider its calls go to.
    pub provider: Arc<dyn Provider>,
    /// Progress, for a terminal or web view.
    pub events: Option<mpsc::UnboundedSender<ExperimentEvent>>,
    /// Stops the run (it saves what it has).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Use this run id (a cluster's coordinator names its runs); `None`: a new one.
    pub run_id: Option<String>,
    /// The run folder already holds journal segments of an earlier attempt: resume from them
    /// (their exchanges answer again without a call), with the current provider even when it is
    /// another server than the recorded one.
    pub resume: bool,
    /// Every journal line also goes here.
    pub journal_tap: Option<crate::record::journal::JournalTap>,
}

impl HowToRun {
    /// A fresh run on `provider`, with nothing else.
    pub fn on(provider: Arc<dyn Provider>) -> Self {
        HowToRun { provider, events: None, stop: None, run_id: None, resume: false, journal_tap: None }
    }
}

/// Makes one run of an experiment in `<runs_dir>/<label>-<k>/<run-id>/`, asks its personas for
/// the extraction fields, and returns its record (and whether its text was synthetic).
pub async fn run_job(
    job: RunJob,
    runs_dir: &Path,
    fields: &[ExtractField],
    how: HowToRun,
) -> Result<(RunRecord, bool), ExperimentError> {
    let HowToRun { provider, events, mut stop, run_id, resume, journal_tap } = how;
    if stop.as_ref().is_some_and(|s| *s.borrow()) {
        return Err(ExperimentError::Stopped);
    }
    let name = job.folder();
    let send = |e: ExperimentEvent| {
        if let Some(tx) = &events {
            let _ = tx.send(e);
        }
    };
    send(ExperimentEvent::RunStarted { run: name.clone() });
    let engine = SimulationEngine::with_provider(job.cfg.clone(), provider.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let forward = events.clone().map(|ev| {
        let name = name.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if matches!(e, crate::record::transcript::RunEvent::Message(_)) {
                    let _ = ev.send(ExperimentEvent::Message { run: name.clone() });
                }
            }
        })
    });
    let personas = job.plan.personas.clone();
    let opts = RunOptions {
        save_under: Some(runs_dir.join(&name)),
        events: events.as_ref().map(|_| tx),
        run_id: run_id.clone(),
        journal_tap,
        ..Default::default()
    };
    let run_err = |source| ExperimentError::Run { label: job.label.clone(), k: job.k, source };
    let resume_from = run_id.as_ref().filter(|_| resume).map(|id| runs_dir.join(&name).join(id));
    let handle = start_or_resume(&engine, job.plan, &job.cfg, opts, resume_from).await.map_err(run_err)?;
    // On stop, the run saves what it has (cancelled) and still counts in the summary.
    let watcher = stop.take().map(|mut s| {
        let stopper = handle.stopper();
        tokio::spawn(async move {
            if s.wait_for(|v| *v).await.is_ok() {
                stopper.stop();
            }
        })
    });
    let results = crate::review::finish(handle).await;
    if let Some(w) = watcher {
        w.abort();
    }
    let results = results.map_err(run_err)?;
    if let Some(f) = forward {
        let _ = f.await;
    }
    let analysis = analyze_conversation(&results);
    let mut metrics = run_metrics(&results, &analysis);
    let mut extraction_values = BTreeMap::new();
    if !fields.is_empty() {
        send(ExperimentEvent::Extracting { run: name.clone() });
        extraction_values =
            extract_run((&provider, &job.cfg), engine.pricing(), &personas, &results, fields, &mut metrics).await?;
    }
    send(ExperimentEvent::RunFinished {
        run: name,
        success: results.success,
        messages: results.transcript.len() as u64,
    });
    let record = RunRecord {
        variant: job.variant,
        label: job.label,
        k: job.k,
        run_seed: job.seed,
        run_id: results.run_id.clone(),
        dir: results.run_dir.clone(),
        success: results.success,
        error: results.error.clone(),
        personas: personas.iter().map(|p| p.id.clone()).collect(),
        metrics,
        extraction: extraction_values,
    };
    Ok((record, results.synthetic))
}

/// Starts the run, or resumes it from the journal segments in `resume_from` (with the current
/// provider even when it is another server than the recorded one: each cluster worker has its
/// own).
async fn start_or_resume(
    engine: &SimulationEngine,
    plan: RunPlan,
    cfg: &SimulationConfig,
    opts: RunOptions,
    resume_from: Option<PathBuf>,
) -> Result<crate::engine::RunHandle, crate::engine::EngineError> {
    match resume_from {
        Some(dir) => {
            let allow = crate::engine::resume::ResumePermissions { provider_change: true };
            let provider = Some(engine.provider().clone());
            crate::engine::resume::resume_on(&dir, cfg, allow, RunOptions { save_under: None, ..opts }, provider).await
        }
        None => engine.start(plan, opts).await,
    }
}

fn summarize(
    spec: &ExperimentSpec,
    labels: Vec<String>,
    runs: Vec<RunRecord>,
    started_at: chrono::DateTime<chrono::Utc>,
    parallelism: usize,
    synthetic: bool,
    assigned: &[Option<Vec<String>>],
) -> ExperimentSummary {
    // Variants in label order, so a blinded report reads A, B, C.
    let mut order: Vec<usize> = (0..spec.variants.len()).collect();
    order.sort_by(|a, b| labels[*a].cmp(&labels[*b]));
    if !spec.blind {
        order = (0..spec.variants.len()).collect();
    }
    let values = |vi: usize, metric: &str| -> Vec<f64> {
        runs.iter().filter(|r| r.variant == spec.variants[vi]).filter_map(|r| r.metrics.get(metric).copied()).collect()
    };
    let variants: Vec<VariantSummary> = order
        .iter()
        .map(|&vi| {
            let mine: Vec<&RunRecord> = runs.iter().filter(|r| r.variant == spec.variants[vi]).collect();
            let personas = match &assigned[vi] {
                Some(ids) => ids.clone(),
                None => mine.first().map(|r| r.personas.clone()).unwrap_or_default(),
            };
            VariantSummary {
                variant: spec.variants[vi].clone(),
                label: labels[vi].clone(),
                runs: mine.len(),
                succeeded: mine.iter().filter(|r| r.success).count(),
                personas,
                metrics: METRICS.iter().map(|(m, _, _)| (m.to_string(), Summary::of(&values(vi, m)))).collect(),
                extraction: count_fields(&spec.extract, &mine),
            }
        })
        .collect();
    let mut comparisons = Vec::new();
    let mut findings = Vec::new();
    for (x, &i) in order.iter().enumerate() {
        for &j in &order[x + 1..] {
            for (m, desc, unit) in METRICS {
                let (a, b) = (values(i, m), values(j, m));
                let welch = stats::welch_t_test(&a, &b);
                let mw = stats::mann_whitney_u(&a, &b);
                let d = stats::cohens_d(&a, &b);
                let significant = match (&welch, &mw) {
                    (Some(w), _) => w.p_value < ALPHA,
                    (None, Some(u)) => u.p_value < ALPHA,
                    _ => false,
                };
                let c = Comparison {
                    metric: m.to_string(),
                    a: labels[i].clone(),
                    b: labels[j].clone(),
                    mean_a: stats::mean(&a),
                    mean_b: stats::mean(&b),
                    welch,
                    mann_whitney: mw,
                    cohens_d: d,
                    significant,
                };
                if significant {
                    findings.push(finding(&c, desc, unit));
                }
                comparisons.push(c);
            }
        }
    }
    ExperimentSummary {
        id: spec.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        scenario: spec.scenario.clone(),
        seed: spec.seed,
        started_at,
        finished_at: chrono::Utc::now(),
        runs_per_variant: spec.runs,
        parallelism,
        assignment: spec.assignment,
        blind: spec.blind,
        labels: order.iter().map(|&i| (labels[i].clone(), spec.variants[i].clone())).collect(),
        extract: spec.extract.clone(),
        variants,
        comparisons,
        findings,
        runs,
        synthetic,
        stopped: false,
    }
}

fn count_fields(fields: &[ExtractField], runs: &[&RunRecord]) -> Vec<FieldCounts> {
    fields
        .iter()
        .map(|f| {
            let mut counts: Vec<(String, u64)> = f.choices.iter().map(|c| (c.clone(), 0)).collect();
            let mut invalid = 0;
            for r in runs {
                for p in &r.personas {
                    match r.extraction.get(p).and_then(|v| v.get(&f.name)) {
                        Some(v) => match counts.iter_mut().find(|(c, _)| c == v) {
                            Some(c) => c.1 += 1,
                            None => counts.push((v.clone(), 1)),
                        },
                        None => invalid += 1,
                    }
                }
            }
            if f.choices.is_empty() {
                // Free text: the most frequent answers first.
                counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                counts.truncate(10);
            }
            FieldCounts { field: f.name.clone(), counts, invalid }
        })
        .collect()
}

/// The plain sentence for a significant comparison.
pub fn finding(c: &Comparison, desc: &str, unit: &str) -> String {
    let (hi, lo, mhi, mlo) =
        if c.mean_a >= c.mean_b { (&c.a, &c.b, c.mean_a, c.mean_b) } else { (&c.b, &c.a, c.mean_b, c.mean_a) };
    let rel =
        if mlo.abs() > f64::EPSILON { format!(" ({:+.0}%)", (mhi - mlo) / mlo.abs() * 100.0) } else { String::new() };
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    let p = |t: &Option<TestResult>| t.as_ref().map_or("n/a".to_string(), |t| fmt_p(t.p_value));
    let d = match c.cohens_d {
        Some(d) => format!("{:.2}", d.abs()),
        None => "∞".into(),
    };
    format!(
        "{hi} has a higher {desc} than {lo}: {}{unit} vs {}{unit}{rel}; Welch's t-test p = {}, Mann-Whitney p = {}, Cohen's d = {d} ({}).",
        fmt_num(mhi),
        fmt_num(mlo),
        p(&c.welch),
        p(&c.mann_whitney),
        stats::effect_size_label(c.cohens_d),
    )
}

/// A p-value as text.
pub fn fmt_p(p: f64) -> String {
    if p < 0.001 { "< 0.001".into() } else { format!("{p:.3}") }
}

/// A number as text with sensible precision.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn write_files(s: &ExperimentSummary, dir: &Path) -> Result<ExperimentFiles, ExperimentError> {
    let files = ExperimentFiles {
        summary: dir.join("summary.json"),
        markdown: dir.join("report.md"),
        html: dir.join("report.html"),
    };
    let w = |path: &Path, bytes: &[u8]| {
        write_atomic(path, bytes).map_err(|source| ExperimentError::Write { path: path.to_path_buf(), source })
    };
    let mut json = serde_json::to_vec_pretty(s).unwrap_or_default();
    json.push(b'\n');
    w(&files.summary, &json)?;
    w(&files.markdown, report::markdown(s).as_bytes())?;
    w(&files.html, report::html(s).as_bytes())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_labels_and_assignment_are_seeded_and_distinct() {
        let v = vec!["baseline".to_string(), "creative".to_string()];
        let seeds: std::collections::HashSet<u64> =
            v.iter().flat_map(|n| (1..=3).map(move |k| run_seed(7, n, k))).collect();
        assert_eq!(seeds.len(), 6);
        assert_eq!(run_seed(7, "baseline", 1), run_seed(7, "baseline", 1));
        let l = labels(&v, true, 7);
        let mut sorted = l.clone();
        sorted.sort();
        assert_eq!(sorted, ["A", "B"]);
        assert_eq!(labels(&v, false, 7), v);
        let pool: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let a = assign(&pool, 2, 7);
        assert_eq!(a[0].len() + a[1].len(), 5);
        assert_eq!(a, assign(&pool, 2, 7));
        assert!(a[0].iter().all(|x| !a[1].contains(x)));
    }
}
