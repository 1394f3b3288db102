//! The coordinator's side of a cluster experiment: queue every run, gather the workers'
//! reports, write the experiment folder a local experiment writes.
//!
//! What was queued is saved first as `cluster.json` in the experiment folder ([`Pending`]), so
//! `troupe experiment collect ID --cluster URL` can gather later (after `--detach`, or after the
//! coordinator itself was stopped). A report is accepted once per run, and only from the
//! delivery attempt that holds the run's lease; its files are fetched from the files bucket,
//! checked, and written under `runs/<label>-<k>/<run-id>/`. Completion is judged from the
//! reports, never from stream counts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::messages::{MAX_FILE_BYTES, Report, Status, WorkItem, check_path, file_key, parse};
use super::{Cluster, ClusterError, JsContext};
use crate::experiment::{
    ExperimentError, ExperimentFiles, ExperimentSpec, ExperimentSummary, Prepared, RunRecord, conclude,
};
use crate::scenario::{Assignment, ExtractField};

/// `cluster.json`: an experiment queued on a cluster, enough to gather and conclude it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The experiment id.
    pub id: String,
    /// Scenario name.
    pub scenario: String,
    /// Variants compared.
    pub variants: Vec<String>,
    /// Runs per variant.
    pub runs: usize,
    /// The experiment seed.
    pub seed: u64,
    /// Persona assignment.
    pub assignment: Assignment,
    /// Blinded report.
    pub blind: bool,
    /// Extraction fields.
    #[serde(default)]
    pub extract: Vec<ExtractField>,
    /// Report labels by variant index.
    pub labels: Vec<String>,
    /// Personas dealt by variant index.
    pub assigned: Vec<Option<Vec<String>>>,
    /// When the experiment started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Every run queued, in job order.
    pub queued: Vec<QueuedRun>,
}

/// One queued run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedRun {
    /// Run id.
    pub run_id: String,
    /// Folder under `runs/`.
    pub folder: String,
    /// Its message's sequence in the runs stream (to recognise the server's "gave up" notice).
    pub seq: u64,
    /// Variant name.
    pub variant: String,
    /// Report label.
    pub label: String,
    /// 1-based run number within the variant.
    pub k: usize,
    /// Run seed.
    pub seed: u64,
}

/// Progress of a cluster experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Runs queued in all.
    pub total: usize,
    /// Runs reported.
    pub done: usize,
    /// Of which failed.
    pub failed: usize,
    /// Runs in progress, by worker.
    pub running: BTreeMap<String, usize>,
}

/// The file of a pending experiment.
pub const PENDING_FILE: &str = "cluster.json";

/// Saves `cluster.json` in the experiment folder, then queues every job of `prepared` (so a
/// coordinator stopped while queueing can still be collected), then saves it again with each
/// run's place in the queue.
pub async fn queue(cluster: &Cluster, spec: &ExperimentSpec, prepared: &Prepared) -> Result<Pending, ClusterError> {
    let id = spec.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    super::messages::check_id("experiment id", &id)?;
    let mut queued = Vec::with_capacity(prepared.jobs.len());
    let mut bodies = Vec::with_capacity(prepared.jobs.len());
    for job in &prepared.jobs {
        let folder = job.folder();
        let run_id = format!("{}-{:016x}", folder, job.seed);
        let item = WorkItem {
            experiment: id.clone(),
            run_id: run_id.clone(),
            job: job.clone(),
            extract: spec.extract.clone(),
        };
        let body = serde_json::to_vec(&super::messages::Work::Run(item)).unwrap_or_default();
        if body.len() > cluster.message_limit() {
            return Err(ClusterError::Untrusted(format!(
                "run {run_id}: its plan is {} bytes, more than a queue message may hold ({} bytes, the server's \
                 max_payload); use fewer or smaller personas, or raise max_payload in the NATS server's configuration",
                body.len(),
                cluster.message_limit()
            )));
        }
        bodies.push(body);
        let (variant, label, k, seed) = (job.variant.clone(), job.label.clone(), job.k, job.seed);
        queued.push(QueuedRun { run_id, folder, seq: 0, variant, label, k, seed });
    }
    let mut pending = Pending {
        id: id.clone(),
        scenario: spec.scenario.clone(),
        variants: spec.variants.clone(),
        runs: spec.runs,
        seed: spec.seed,
        assignment: spec.assignment,
        blind: spec.blind,
        extract: spec.extract.clone(),
        labels: prepared.labels.clone(),
        assigned: prepared.assigned.clone(),
        started_at: prepared.started_at,
        queued,
    };
    save_pending(&pending, &spec.dir)?;
    let mut acks = Vec::with_capacity(bodies.len());
    // With traces exported, each run's spans on its worker join the experiment's trace.
    let traceparent = crate::monitoring::traces::traceparent(&tracing::Span::current());
    for (q, body) in pending.queued.iter().zip(bodies) {
        let mut publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(format!("{id}.{}", q.run_id))
            .header(super::worker::RUN_HEADER, q.run_id.as_str());
        if let Some(tp) = &traceparent {
            publish = publish.header(crate::monitoring::traces::TRACEPARENT, tp.as_str());
        }
        acks.push(cluster.js.send_publish(cluster.names.runs_subject(&id), publish).await.ctx("queueing a run")?);
    }
    for (q, ack) in pending.queued.iter_mut().zip(acks) {
        q.seq = ack.await.ctx("queueing a run")?.sequence;
    }
    save_pending(&pending, &spec.dir)?;
    Ok(pending)
}

fn save_pending(p: &Pending, dir: &Path) -> Result<(), ClusterError> {
    let path = dir.join(PENDING_FILE);
    let mut bytes = serde_json::to_vec_pretty(p).unwrap_or_default();
    bytes.push(b'\n');
    crate::fsutil::write_atomic(&path, &bytes).map_err(|source| ClusterError::Io { path, source })
}

/// Reads `cluster.json` of an experiment folder (untrusted: ids and folders checked).
pub fn read_pending(dir: &Path) -> Result<Pending, ClusterError> {
    let path = dir.join(PENDING_FILE);
    let bytes = crate::fsutil::read_input(&path, 64 << 20, "an experiment's cluster.json")
        .map_err(|source| ClusterError::Io { path: path.clone(), source })?;
    let p: Pending =
        serde_json::from_slice(&bytes).map_err(|e| ClusterError::Untrusted(format!("{}: {e}", path.display())))?;
    super::messages::check_id("experiment id", &p.id)?;
    for q in &p.queued {
        super::messages::check_id("run id", &q.run_id)?;
        check_path(&q.folder)?;
    }
    Ok(p)
}

/// The spec a pending experiment was run with, in `dir`.
pub fn spec_of(p: &Pending, dir: &Path) -> ExperimentSpec {
    ExperimentSpec {
        scenario: p.scenario.clone(),
        variants: p.variants.clone(),
        runs: p.runs,
        parallel: true,
        max_parallel: 1,
        seed: p.seed,
        dir: dir.to_path_buf(),
        assignment: p.assignment,
        blind: p.blind,
        extract: p.extract.clone(),
        stop: None,
    }
}

/// What has been gathered so far.
struct Gathered<'a> {
    pending: &'a Pending,
    index: HashMap<&'a str, usize>,
    by_seq: HashMap<u64, usize>,
    records: Vec<Option<RunRecord>>,
    synthetic: bool,
    running: HashMap<String, String>,
    progress: Progress,
}

impl<'a> Gathered<'a> {
    fn new(pending: &'a Pending) -> Self {
        Gathered {
            pending,
            index: pending.queued.iter().enumerate().map(|(i, q)| (q.run_id.as_str(), i)).collect(),
            by_seq: pending.queued.iter().enumerate().map(|(i, q)| (q.seq, i)).collect(),
            records: vec![None; pending.queued.len()],
            synthetic: true,
            running: HashMap::new(),
            progress: Progress { total: pending.queued.len(), ..Default::default() },
        }
    }

    fn record(&mut self, i: usize, mut rec: RunRecord) {
        // Which run it is comes from this queue, never from a worker.
        let q = &self.pending.queued[i];
        (rec.variant, rec.label, rec.k, rec.run_seed) = (q.variant.clone(), q.label.clone(), q.k, q.seed);
        self.progress.failed += usize::from(!rec.success);
        self.progress.done += 1;
        self.running.remove(&self.pending.queued[i].run_id);
        self.records[i] = Some(rec);
    }

    /// A worker's progress message.
    fn status(&mut self, payload: &[u8]) {
        let Ok(s) = parse::<Status>("a progress message", payload) else { return };
        let Some(&i) = self.index.get(s.run_id.as_str()) else { return };
        if self.records[i].is_some() {
            return;
        }
        match s.state.as_str() {
            "started" | "resumed" => self.running.insert(s.run_id, s.worker.chars().take(64).collect()),
            _ => self.running.remove(&s.run_id),
        };
    }

    /// The server's notice that it gave up delivering a run.
    fn given_up(&mut self, payload: &[u8], max: u32) {
        let seq = serde_json::from_slice::<serde_json::Value>(payload).ok().and_then(|v| v["stream_seq"].as_u64());
        if let Some(&i) = seq.and_then(|s| self.by_seq.get(&s))
            && self.records[i].is_none()
        {
            self.record(i, given_up(self.pending, i, max));
        }
    }

    fn show(&mut self, on_progress: &mut (dyn FnMut(&Progress) + Send)) {
        self.progress.running = BTreeMap::new();
        for w in self.running.values() {
            *self.progress.running.entry(w.clone()).or_default() += 1;
        }
        on_progress(&self.progress);
    }
}

/// Gathers every run's report (waiting at most `wait`, if given), writes the run folders and
/// concludes the experiment. Runs the server gave up on (delivered `cluster.max_deliveries`
/// times without a report) count as failed runs.
pub async fn collect(
    cluster: &Cluster,
    pending: &Pending,
    dir: &Path,
    wait: Option<Duration>,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<(ExperimentSummary, ExperimentFiles), ClusterError> {
    let mut g = Gathered::new(pending);
    let mut status =
        cluster.client.subscribe(cluster.names.status_subject(&pending.id)).await.ctx("watching progress")?;
    let advisory = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
        cluster.names.runs_stream(),
        cluster.names.workers_consumer()
    );
    let mut gave_up = cluster.client.subscribe(advisory).await.ctx("watching for runs given up")?;
    let mut reports = reports_consumer(cluster, &pending.id).await?;
    let mut reread = false;
    let mut fetched: Vec<String> = Vec::new();
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    g.show(on_progress);
    while g.progress.done < g.progress.total && deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
        let mut batch = match reports.batch().max_messages(64).expires(Duration::from_millis(250)).messages().await {
            Ok(b) => b,
            Err(e) => {
                // A restarted broker may have lost the reading consumer: make a new one (reports
                // already gathered are recognised and skipped).
                tracing::warn!("cannot read results ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(c) = reports_consumer(cluster, &pending.id).await {
                    reports = c;
                }
                continue;
            }
        };
        while let Some(Ok(m)) = batch.next().await {
            let (i, (report, inline)) = match accept(cluster, pending, &g.index, &g.records, &m.payload).await {
                Verdict::Accept(i, accepted) => (i, *accepted),
                Verdict::Skip => continue,
                Verdict::Retry => {
                    // The broker could not answer: read every report again shortly (those
                    // gathered are recognised and skipped).
                    reread = true;
                    break;
                }
            };
            let mut rec = report.record.clone();
            match fetch_files(cluster, pending, (&report, inline), dir).await {
                Ok((d, keys)) => {
                    rec.dir = Some(d);
                    fetched.extend(keys);
                }
                Err(e @ ClusterError::Untrusted(_)) => {
                    tracing::warn!("run {}: report ignored: {e}", report.run_id);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("run {}: files not fetched yet ({e}); retrying", report.run_id);
                    reread = true;
                    break;
                }
            }
            g.synthetic &= report.synthetic;
            g.record(i, rec);
        }
        if std::mem::take(&mut reread) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(c) = reports_consumer(cluster, &pending.id).await {
                reports = c;
            }
        }
        while let Ok(Some(m)) = tokio::time::timeout(Duration::ZERO, status.next()).await {
            g.status(&m.payload);
        }
        while let Ok(Some(m)) = tokio::time::timeout(Duration::ZERO, gave_up.next()).await {
            g.given_up(&m.payload, cluster.config.max_deliveries);
        }
        g.show(on_progress);
    }
    let complete = g.records.iter().all(Option::is_some);
    let (mut summary, files) = conclude_gathered(pending, dir, g)?;
    summary.stopped = !complete;
    if complete {
        // The run folders reach the disk before the cluster's copies go.
        crate::fsutil::sync_filesystem(dir).map_err(|source| ClusterError::Io { path: dir.to_path_buf(), source })?;
        // Bounded: a slow or absent broker must not hold the finished experiment.
        if tokio::time::timeout(Duration::from_secs(60), tidy(cluster, pending, &fetched)).await.is_err() {
            tracing::warn!("the cluster's copies of this experiment were not all removed; they expire after a week");
        }
    }
    Ok((summary, files))
}

/// A consumer reading every report of an experiment from the start (reports are kept until the
/// experiment is collected, so `collect` can run any number of times).
async fn reports_consumer(cluster: &Cluster, id: &str) -> Result<consumer::PullConsumer, ClusterError> {
    cluster.reports_reader(id).await
}

/// Writes the experiment's summary and reports from what was gathered (runs without a report
/// are left out, as a stopped local experiment leaves out runs not made).
fn conclude_gathered(
    pending: &Pending,
    dir: &Path,
    g: Gathered<'_>,
) -> Result<(ExperimentSummary, ExperimentFiles), ClusterError> {
    let spec = spec_of(pending, dir);
    let prepared = Prepared {
        labels: pending.labels.clone(),
        assigned: pending.assigned.clone(),
        jobs: Vec::new(),
        started_at: pending.started_at,
    };
    let synthetic = g.synthetic;
    let results: Vec<Result<(RunRecord, bool), ExperimentError>> = g
        .records
        .into_iter()
        .map(|r| match r {
            Some(r) => Ok((r, synthetic)),
            None => Err(ExperimentError::Stopped),
        })
        .collect();
    let parallelism = g.progress.running.len().max(1);
    conclude(&spec, prepared, results, parallelism)
        .map_err(|e| ClusterError::Io { path: dir.to_path_buf(), source: std::io::Error::other(e.to_string()) })
}

/// A report to accept: for a queued run without one yet, from the attempt holding its lease.
/// What to do with a report.
enum Verdict {
    /// The report and, when it carries them, its files' bytes.
    Accept(usize, Box<(Report, Vec<Vec<u8>>)>),
    Skip,
    /// The lease could not be read: try again later.
    Retry,
}

async fn accept(
    cluster: &Cluster,
    pending: &Pending,
    index: &HashMap<&str, usize>,
    records: &[Option<RunRecord>],
    payload: &[u8],
) -> Verdict {
    let (report, inline) = match super::messages::decode_report(payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("ignored: {e}");
            return Verdict::Skip;
        }
    };
    let Some(&i) = index.get(report.run_id.as_str()) else { return Verdict::Skip };
    if records[i].is_some() {
        return Verdict::Skip;
    }
    if let Err(e) = report.check(&pending.id, &pending.queued[i].run_id) {
        tracing::warn!("ignored: {e}");
        return Verdict::Skip;
    }
    let holder = match cluster.run_lease(&pending.id, &report.run_id).await {
        Ok(l) => l.attempt,
        Err(e) => {
            tracing::warn!("cannot read run {}'s lease ({e}); retrying", report.run_id);
            return Verdict::Retry;
        }
    };
    if holder.is_some_and(|h| h != report.attempt) {
        tracing::info!(run = %report.run_id, attempt = report.attempt, "a stale attempt's report; discarded");
        return Verdict::Skip;
    }
    Verdict::Accept(i, Box::new((report, inline)))
}

/// Fetches a report's files into `<dir>/runs/<folder>/<run-id>/`, each checked for its size;
/// returns the folder and the keys fetched.
async fn fetch_files(
    cluster: &Cluster,
    pending: &Pending,
    (report, inline): (&Report, Vec<Vec<u8>>),
    dir: &Path,
) -> Result<(PathBuf, Vec<String>), ClusterError> {
    let q = pending
        .queued
        .iter()
        .find(|q| q.run_id == report.run_id)
        .ok_or_else(|| ClusterError::Untrusted(format!("run {} was not queued", report.run_id)))?;
    let run_dir = dir.join("runs").join(&q.folder).join(&q.run_id);
    std::fs::create_dir_all(&run_dir).map_err(|source| ClusterError::Io { path: run_dir.clone(), source })?;
    if report.inline {
        for (f, bytes) in report.files.iter().zip(inline) {
            write_file(&run_dir, &f.path, &bytes)?;
        }
        return Ok((run_dir, Vec::new()));
    }
    let bucket = cluster.files().await?;
    for f in &report.files {
        let key = file_key(&pending.id, &report.run_id, report.attempt, &f.path);
        let mut obj = bucket.get(key.as_str()).await.ctx("fetching a run's file")?;
        let mut bytes = Vec::new();
        (&mut obj)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|source| ClusterError::Io { path: run_dir.join(&f.path), source })?;
        if bytes.len() as u64 != f.bytes {
            return Err(ClusterError::Untrusted(format!(
                "run {}: {} holds {} bytes, the report says {}",
                report.run_id,
                f.path,
                bytes.len(),
                f.bytes
            )));
        }
        write_file(&run_dir, &f.path, &bytes)?;
    }
    let keys = report.files.iter().map(|f| file_key(&pending.id, &report.run_id, report.attempt, &f.path)).collect();
    Ok((run_dir, keys))
}

/// Writes one of a run's files (its path checked by [`Report::check`]).
fn write_file(run_dir: &Path, rel: &str, bytes: &[u8]) -> Result<(), ClusterError> {
    let path = run_dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ClusterError::Io { path: parent.into(), source })?;
    }
    // Made durable all together (one `syncfs`) before the cluster's copies are removed.
    crate::fsutil::write_replace(&path, bytes).map_err(|source| ClusterError::Io { path, source })
}

fn given_up(p: &Pending, i: usize, max: u32) -> RunRecord {
    let q = &p.queued[i];
    RunRecord {
        variant: q.variant.clone(),
        label: q.label.clone(),
        k: q.k,
        run_seed: q.seed,
        run_id: q.run_id.clone(),
        dir: None,
        success: false,
        error: Some(format!(
            "handed out {max} time(s) (cluster.max_deliveries) without a report: workers died or stalled on it"
        )),
        personas: Vec::new(),
        metrics: Default::default(),
        extraction: Default::default(),
    }
}

/// Removes what the cluster kept for a collected experiment: journals, reports, files.
async fn tidy(cluster: &Cluster, p: &Pending, fetched: &[String]) {
    let n = &cluster.names;
    for (stream, subject) in [
        (n.journal_stream(), format!("{}.journal.{}.>", cluster.config.namespace, p.id)),
        (n.done_stream(), n.done_subject(&p.id)),
    ] {
        if let Ok(s) = cluster.js.get_stream(stream).await {
            let _ = s.purge().filter(subject).await;
        }
    }
    // The files fetched (a stale attempt's, never fetched, expire with the bucket's age limit).
    if let Ok(bucket) = cluster.files().await {
        for key in fetched {
            let _ = bucket.delete(key.as_str()).await;
        }
    }
}
