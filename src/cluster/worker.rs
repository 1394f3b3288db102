//! `troupe worker`: makes the runs the queue hands it, with the same code as a local experiment.
//!
//! For each run: take the lease (the KV entry of the run holds the delivery attempt that owns
//! it; an older attempt never takes it back), rebuild the journal of earlier attempts from
//! JetStream and resume from it (or start afresh), stream the new journal lines as they are
//! written, keep the lease with progress acknowledgements, then store the run folder's files
//! under the attempt, check the lease once more (a stale worker discards its result) and report.
//! A run this worker cannot make (no provider, say) goes back to the queue for another worker,
//! until the last delivery, which reports it failed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use tokio::sync::{Mutex, Semaphore, watch};

use super::budget::ClusterBudgets;
use tracing::Instrument;

use super::messages::{FileEntry, MAX_FILES, Report, Status, Work, WorkItem, check_id, file_key, parse};
use super::{Cluster, ClusterError, JsContext, Take, journal_stream};
use crate::config::SimulationConfig;
use crate::experiment::{HowToRun, RunRecord, run_job};
use crate::llm::Provider;
use crate::llm::budget::SharedBudgetFactory;

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name in reports and progress (host and process id by default).
    pub name: String,
    /// Runs at once.
    pub max_parallel: usize,
    /// Where runs are made before their files are sent (each is removed once reported).
    pub work_dir: PathBuf,
    /// Stop after this many runs (tests, batch jobs); `None`: until stopped.
    pub max_runs: Option<u64>,
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    /// Runs reported (succeeded or failed).
    pub reported: u64,
    /// Runs resumed from an earlier attempt's journal.
    pub resumed: u64,
    /// Results discarded because a newer attempt owned the run.
    pub discarded: u64,
    /// Runs handed back to the queue.
    pub handed_back: u64,
    /// Work that could not be made at all (a broker error, a malformed message).
    pub errors: u64,
}

/// The worker's tally on `/metrics`, when metrics are served (`--metrics-addr`).
fn show_stats(s: &WorkerStats) {
    let Some(m) = crate::actors::monitor::installed() else { return };
    let mut e = crate::record::exposition::Exposition::default();
    let help = "Queued work this worker took, by what became of it.";
    for (outcome, n) in
        [("reported", s.reported), ("discarded", s.discarded), ("handed_back", s.handed_back), ("error", s.errors)]
    {
        e.counter("troupe_worker_runs_total", help, &[("outcome", outcome)], n as f64);
    }
    let help = "Runs this worker resumed from an earlier attempt's streamed journal.";
    e.counter("troupe_worker_runs_resumed_total", help, &[], s.resumed as f64);
    let _ = m.cast(crate::actors::monitor::MonitorMsg::Process(e));
}

/// Providers by endpoint settings, shared by the runs that use the same ones (one budget).
pub(super) type Providers = Arc<Mutex<ProviderCache>>;

/// The providers built so far, and the cluster-wide rate budgets they reserve their calls in.
#[derive(Default)]
pub(super) struct ProviderCache {
    by_settings: HashMap<String, Arc<dyn Provider>>,
    budgets: Option<Arc<ClusterBudgets>>,
}

/// What a worker's runs share.
#[derive(Clone, Default)]
struct Shared {
    providers: Providers,
    /// One stress shard at a time: a setting's shards must come from different machines.
    shard_busy: Arc<std::sync::atomic::AtomicBool>,
}

/// Pulls and makes runs until `stop` turns true (runs going are finished first) or
/// `max_runs` runs are done. Pulls always carry an expiry, so a broker restart never hangs it.
pub async fn run_worker(
    cluster: Cluster,
    base: SimulationConfig,
    opts: WorkerOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<WorkerStats, ClusterError> {
    let slots = Arc::new(Semaphore::new(opts.max_parallel.max(1)));
    let stats = Arc::new(std::sync::Mutex::new(WorkerStats::default()));
    let shared = Shared::default();
    let mut consumer = cluster.workers_consumer().await?;
    let mut taken = 0u64;
    let mut backoff = Duration::from_millis(200);
    tracing::info!(worker = %opts.name, "waiting for runs on {}", cluster.url);
    show_stats(&WorkerStats::default());
    // `batch` waits up to its expiry for a run (a `fetch` would return at once when the queue is
    // empty, and the loop would spin).
    while !*stop.borrow() && opts.max_runs.is_none_or(|m| taken < m) {
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let fetched = consumer.batch().max_messages(1).expires(Duration::from_secs(2)).messages().await;
        let mut batch = match fetched {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot pull runs ({e}); retrying in {backoff:?}");
                tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = stop.changed() => {} }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if let Ok(c) = cluster.workers_consumer().await {
                    consumer = c;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let Some(msg) = batch.next().await else { continue };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("pull ended: {e}");
                continue;
            }
        };
        taken += 1;
        let (cluster, base, opts2, stats, shared) =
            (cluster.clone(), base.clone(), opts.clone(), stats.clone(), shared.clone());
        let span = tracing::info_span!("cluster_work", worker = %opts.name);
        if let Some(tp) = msg.headers.as_ref().and_then(|h| h.get(crate::monitoring::traces::TRACEPARENT)) {
            crate::monitoring::traces::adopt(&span, tp.as_str());
        }
        tokio::spawn(async move {
            let outcome = handle(&cluster, &base, &opts2, &shared, msg).instrument(span).await;
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(Outcome::Reported { resumed }) => {
                    s.reported += 1;
                    s.resumed += u64::from(resumed);
                }
                Ok(Outcome::Discarded) => s.discarded += 1,
                Ok(Outcome::HandedBack) => s.handed_back += 1,
                Err(e) => {
                    s.errors += 1;
                    tracing::error!("a run could not be made: {e}");
                }
            }
            show_stats(&s);
            drop(permit);
        });
    }
    // Wait for the runs going.
    let _all = slots.acquire_many(opts.max_parallel.max(1) as u32).await;
    let s = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(s)
}

enum Outcome {
    Reported { resumed: bool },
    Discarded,
    HandedBack,
}

async fn handle(
    cluster: &Cluster,
    base: &SimulationConfig,
    opts: &WorkerOptions,
    shared: &Shared,
    msg: Message,
) -> Result<Outcome, ClusterError> {
    let attempt = msg.info().map(|i| i.delivered.clamp(1, i64::from(u32::MAX)) as u32).unwrap_or(1);
    let checked = parse("queued work", &msg.payload).and_then(|w: Work| match &w {
        Work::Run(i) => i.check().map(|()| w),
        Work::StressShard(s) => check_id("sweep id", &s.sweep).map(|()| w),
    });
    let item = match checked {
        Ok(Work::Run(i)) => i,
        Ok(Work::StressShard(s)) => return shard(cluster, base, opts, shared, msg, s).await,
        Err(e) => return unreadable(cluster, opts, msg, attempt, e).await,
    };
    match cluster.take_lease(&item.experiment, &item.run_id, attempt).await? {
        Take::Taken => {}
        Take::Newer => {
            tracing::warn!(run = %item.run_id, attempt, "a newer attempt owns this run; leaving it");
            return Ok(Outcome::Discarded);
        }
        Take::Reported => {
            tracing::info!(run = %item.run_id, attempt, "delivered again after it was reported; skipped");
            let _ = msg.ack_with(AckKind::Term).await;
            return Ok(Outcome::Discarded);
        }
    }
    let msg = Arc::new(msg);
    let keeper = keep_lease(msg.clone(), cluster.lease());
    let result = make(cluster, base, opts, &shared.providers, &item, attempt).await;
    keeper.abort();
    let (record, synthetic, run_dir, resumed) = match result {
        Ok(r) => r,
        Err(e) if attempt < cluster.config.max_deliveries => {
            tracing::warn!(run = %item.run_id, "handing the run back to the queue: {e}");
            let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            return Ok(Outcome::HandedBack);
        }
        Err(e) => (failed_record(&item, &e.to_string()), false, None, false),
    };
    let (files, inline) = match &run_dir {
        Some(dir) => pack_files(cluster, &item, attempt, dir).await?,
        None => (Vec::new(), None),
    };
    let made = Made { record, synthetic, files, inline, resumed };
    let outcome = report(cluster, opts, &msg, (&item.experiment, &item.run_id), attempt, made).await?;
    if let Some(dir) = run_dir.as_ref().and_then(|d| d.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(outcome)
}

/// What a worker made of a run, to report.
struct Made {
    record: RunRecord,
    synthetic: bool,
    files: Vec<FileEntry>,
    /// The files' bytes when they travel in the report itself.
    inline: Option<Vec<Vec<u8>>>,
    /// Resumed from an earlier attempt's journal.
    resumed: bool,
}

/// Queued work this worker cannot read or refuses (from another troupe version, say, or
/// corrupted): handed back so another worker may read it, and on its last delivery reported as
/// a failed run with the reason (when the message names its run), so the coordinator never
/// waits for it; a message naming no run is left to the server, whose advisory after the last
/// delivery makes the coordinator count it failed.
async fn unreadable(
    cluster: &Cluster,
    opts: &WorkerOptions,
    msg: Message,
    attempt: u32,
    e: ClusterError,
) -> Result<Outcome, ClusterError> {
    let last = attempt >= cluster.config.max_deliveries;
    let Some((exp, run_id)) = named_run(&cluster.names, &msg).filter(|_| last) else {
        tracing::error!(attempt, "queued work this worker cannot read, handed back: {e}");
        let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        return Err(e);
    };
    match cluster.take_lease(&exp, &run_id, attempt).await? {
        Take::Taken => {}
        Take::Newer => return Ok(Outcome::Discarded),
        Take::Reported => {
            let _ = msg.ack_with(AckKind::Term).await;
            return Ok(Outcome::Discarded);
        }
    }
    let why = format!(
        "worker {} could not read this run's queued work ({e}); is it the same troupe version as the machine that queued it (`troupe --version`)?",
        opts.name
    );
    tracing::error!(run = %run_id, attempt, "{why}");
    // The coordinator fills in the variant, label, number and seed from its own queue.
    let record = failure(&run_id, why);
    let made = Made { record, synthetic: false, files: Vec::new(), inline: None, resumed: false };
    report(cluster, opts, &msg, (&exp, &run_id), attempt, made).await
}

/// The experiment and run a queued message is for, from its subject and its `Troupe-Run`
/// header (or, for messages queued by older versions, its `Nats-Msg-Id`), when both are ids.
fn named_run(names: &super::Names, msg: &Message) -> Option<(String, String)> {
    let exp = msg.subject.as_str().strip_prefix(&names.runs_subject(""))?;
    let headers = msg.headers.as_ref()?;
    let run = match headers.get(RUN_HEADER) {
        Some(r) => r.as_str().to_string(),
        None => headers.get("Nats-Msg-Id")?.as_str().strip_prefix(exp)?.strip_prefix('.')?.to_string(),
    };
    (check_id("experiment id", exp).is_ok() && check_id("run id", &run).is_ok()).then(|| (exp.to_string(), run))
}

/// The header naming a queued run's id, so even a worker that cannot read the run can report it.
pub const RUN_HEADER: &str = "Troupe-Run";

/// Reports what was made of run `run_id` of `exp` by delivery `attempt`, unless the run was
/// handed to another worker meanwhile (then the result is discarded), and acknowledges it.
async fn report(
    cluster: &Cluster,
    opts: &WorkerOptions,
    msg: &Message,
    (exp, run_id): (&str, &str),
    attempt: u32,
    made: Made,
) -> Result<Outcome, ClusterError> {
    let Made { record, synthetic, files, inline, resumed } = made;
    let lease = cluster.run_lease(exp, run_id).await?;
    if lease.done || lease.attempt != Some(attempt) {
        status(cluster, (exp, run_id), &opts.name, "discarded").await;
        tracing::warn!(run = %run_id, attempt, "the run was handed to another worker meanwhile; result discarded");
        return Ok(Outcome::Discarded);
    }
    let report = Report {
        experiment: exp.to_string(),
        run_id: run_id.to_string(),
        attempt,
        worker: opts.name.clone(),
        record,
        synthetic,
        files,
        inline: inline.is_some(),
    };
    let body = super::messages::encode_report(&report, inline.as_deref().unwrap_or_default());
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(body.into())
        .message_id(format!("{exp}.{run_id}.{attempt}"));
    let ack = cluster.js.send_publish(cluster.names.done_subject(exp), publish).await.ctx("reporting a run")?;
    ack.await.ctx("reporting a run")?;
    cluster.mark_reported(exp, run_id, attempt, lease.seq).await?;
    msg.double_ack().await.ctx("acknowledging a run")?;
    status(cluster, (exp, run_id), &opts.name, if report.record.success { "finished" } else { "failed" }).await;
    tracing::info!(run = %run_id, attempt, success = report.record.success, "run reported");
    Ok(Outcome::Reported { resumed })
}

/// Makes one machine's part of a stress setting and reports it (no journal: a shard that is
/// lost is made again later, and the coordinator notes how late the latest shard started).
async fn shard(
    cluster: &Cluster,
    base: &SimulationConfig,
    opts: &WorkerOptions,
    shared: &Shared,
    msg: Message,
    s: super::stress::StressShard,
) -> Result<Outcome, ClusterError> {
    use std::sync::atomic::Ordering;
    if shared.shard_busy.swap(true, Ordering::SeqCst) {
        // Another machine should make this one.
        let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_millis(100)))).await;
        return Ok(Outcome::HandedBack);
    }
    let out = make_and_report_shard(cluster, base, opts, &shared.providers, msg, s).await;
    shared.shard_busy.store(false, Ordering::SeqCst);
    out
}

async fn make_and_report_shard(
    cluster: &Cluster,
    base: &SimulationConfig,
    opts: &WorkerOptions,
    providers: &Providers,
    msg: Message,
    s: super::stress::StressShard,
) -> Result<Outcome, ClusterError> {
    let cfg = base.with_recorded_simulation(&s.cfg);
    crate::config::limits::check(&cfg)
        .map_err(|e| ClusterError::Untrusted(format!("sweep {}: config {}: {}", s.sweep, e.key, e.message)))?;
    let provider = provider_for(cluster, providers, &cfg).await?;
    let msg = Arc::new(msg);
    let keeper = keep_lease(msg.clone(), cluster.lease());
    tracing::info!(sweep = %s.sweep, setting = s.setting + 1, shard = s.shard, workers = s.workers, "stress shard started");
    let report = super::stress::make_shard(&s, cfg, provider, &opts.name).await;
    keeper.abort();
    let report = report?;
    let body = serde_json::to_vec(&report).unwrap_or_default();
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(body.into())
        .message_id(format!("{}.{}.{}.report", s.sweep, s.setting, s.shard));
    let ack = cluster.js.send_publish(cluster.names.done_subject(&s.sweep), publish).await.ctx("reporting a shard")?;
    ack.await.ctx("reporting a shard")?;
    msg.double_ack().await.ctx("acknowledging a shard")?;
    Ok(Outcome::Reported { resumed: false })
}

/// Makes the run: rebuilds earlier attempts' journal, resumes or starts, streams the journal.
async fn make(
    cluster: &Cluster,
    base: &SimulationConfig,
    opts: &WorkerOptions,
    providers: &Providers,
    item: &WorkItem,
    attempt: u32,
) -> Result<(RunRecord, bool, Option<PathBuf>, bool), ClusterError> {
    let mut job = item.job.clone();
    job.cfg = base.with_recorded_simulation(&item.job.cfg);
    crate::config::limits::check(&job.cfg)
        .map_err(|e| ClusterError::Untrusted(format!("run {}: config {}: {}", item.run_id, e.key, e.message)))?;
    let provider = provider_for(cluster, providers, &job.cfg).await?;
    let runs_dir = opts.work_dir.join(&item.experiment).join("runs");
    let run_dir = runs_dir.join(job.folder()).join(&item.run_id);
    // What an earlier attempt on this machine left is replaced by what the cluster recorded.
    let _ = std::fs::remove_dir_all(&run_dir);
    let subject = cluster.names.journal_subject(&item.experiment, &item.run_id);
    // Only a run delivered before can have a journal in the cluster.
    let rebuilt = if attempt > 1 {
        journal_stream::rebuild(&cluster.js, &cluster.names.journal_stream(), &subject, &run_dir).await
    } else {
        Ok(0)
    };
    let segments = match rebuilt {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(run = %item.run_id, "earlier attempts' journal unusable ({e}); starting afresh");
            let _ = std::fs::remove_dir_all(&run_dir);
            0
        }
    };
    let resumed = segments > 0;
    status(cluster, (&item.experiment, &item.run_id), &opts.name, if resumed { "resumed" } else { "started" }).await;
    tracing::info!(run = %item.run_id, attempt, "run {}", if resumed { "resumed from the cluster's journal" } else { "started" });
    let (tap, uploader) = journal_stream::upload(cluster.js.clone(), subject, attempt, cluster.message_limit());
    let how = HowToRun {
        run_id: Some(item.run_id.clone()),
        resume: resumed,
        journal_tap: Some(tap),
        ..HowToRun::on(provider)
    };
    let result = run_job(job, &runs_dir, &item.extract, how).await;
    // Every journal line is stored before the run is reported.
    let _ = uploader.await;
    let (mut record, synthetic) =
        result.map_err(|e| ClusterError::JetStream { what: format!("run {}", item.run_id), message: e.to_string() })?;
    record.run_id = item.run_id.clone();
    Ok((record, synthetic, Some(run_dir), resumed))
}

/// The provider for `cfg`'s endpoint settings. When the config limits requests or tokens per
/// minute, its endpoints reserve their calls in the cluster-wide budget of their URL and key.
pub(super) async fn provider_for(
    cluster: &Cluster,
    providers: &Providers,
    cfg: &SimulationConfig,
) -> Result<Arc<dyn Provider>, ClusterError> {
    let key = crate::experiment::provider_key(cfg);
    let mut cache = providers.lock().await;
    if let Some(p) = cache.by_settings.get(&key) {
        return Ok(p.clone());
    }
    let shared = rate_limited(cfg).then(|| {
        let budgets = cache.budgets.get_or_insert_with(|| Arc::new(ClusterBudgets::new(cluster.clone())));
        budgets.clone() as Arc<dyn SharedBudgetFactory>
    });
    let (p, _) = crate::llm::provider_from_config_with(cfg, shared).map_err(|e| ClusterError::JetStream {
        what: "setting up this worker's provider".into(),
        message: e.to_string(),
    })?;
    cache.by_settings.insert(key, p.clone());
    Ok(p)
}

/// True when `llm` limits requests or tokens per minute, for all endpoints or for one.
fn rate_limited(cfg: &SimulationConfig) -> bool {
    let set = |v: Option<u32>| v.is_some_and(|n| n > 0);
    let l = &cfg.llm;
    set(l.requests_per_minute)
        || set(l.tokens_per_minute)
        || l.endpoints.iter().any(|e| set(e.requests_per_minute) || set(e.tokens_per_minute))
}

/// A run that could not be made at all, as the experiment records it.
fn failed_record(item: &WorkItem, why: &str) -> RunRecord {
    RunRecord {
        variant: item.job.variant.clone(),
        label: item.job.label.clone(),
        k: item.job.k,
        run_seed: item.job.seed,
        personas: item.job.plan.personas.iter().map(|p| p.id.clone()).collect(),
        ..failure(&item.run_id, why.to_string())
    }
}

/// A failed run known only by its id.
fn failure(run_id: &str, why: String) -> RunRecord {
    RunRecord {
        variant: String::new(),
        label: String::new(),
        k: 0,
        run_seed: 0,
        run_id: run_id.to_string(),
        dir: None,
        success: false,
        error: Some(why),
        personas: Vec::new(),
        metrics: Default::default(),
        extraction: Default::default(),
    }
}

/// Sends a progress acknowledgement every third of the lease.
fn keep_lease(msg: Arc<Message>, lease: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            if let Err(e) = msg.ack_with(AckKind::Progress).await {
                tracing::debug!("progress acknowledgement not sent: {e}");
            }
        }
    })
}

async fn status(cluster: &Cluster, (exp, run_id): (&str, &str), worker: &str, state: &str) {
    let s = Status { run_id: run_id.to_string(), worker: worker.to_string(), state: state.to_string() };
    let body = serde_json::to_vec(&s).unwrap_or_default();
    let _ = cluster.client.publish(cluster.names.status_subject(exp), body.into()).await;
}

/// Stores every file of the run folder (hidden ones, such as the lock, left out) under the
/// attempt.
/// The run folder's files: carried in the report itself when they fit in a message with room to
/// spare (the usual case, and the cheapest for the broker), else stored in the files bucket.
async fn pack_files(
    cluster: &Cluster,
    item: &WorkItem,
    attempt: u32,
    dir: &Path,
) -> Result<(Vec<FileEntry>, Option<Vec<Vec<u8>>>), ClusterError> {
    let list = list_files(dir)?;
    let mut total = 0u64;
    for (_, path) in &list {
        total += std::fs::metadata(path).map_err(|source| ClusterError::Io { path: path.clone(), source })?.len();
    }
    // Inline, the files and the report must fit in one message of this server's size.
    if total > (cluster.message_limit() / 2) as u64 {
        tracing::info!(run = %item.run_id, bytes = total, "sending the run's files through the object store");
        return Ok((store_files(cluster, item, attempt, dir).await?, None));
    }
    let mut entries = Vec::with_capacity(list.len());
    let mut data = Vec::with_capacity(list.len());
    for (rel, path) in list {
        let bytes = std::fs::read(&path).map_err(|source| ClusterError::Io { path, source })?;
        entries.push(FileEntry { path: rel, bytes: bytes.len() as u64 });
        data.push(bytes);
    }
    Ok((entries, Some(data)))
}

async fn store_files(
    cluster: &Cluster,
    item: &WorkItem,
    attempt: u32,
    dir: &Path,
) -> Result<Vec<FileEntry>, ClusterError> {
    let bucket = cluster.files().await?;
    let mut out = Vec::new();
    for (rel, path) in list_files(dir)? {
        check_id("experiment id", &item.experiment)?;
        let mut f =
            tokio::fs::File::open(&path).await.map_err(|source| ClusterError::Io { path: path.clone(), source })?;
        let info = bucket
            .put(file_key(&item.experiment, &item.run_id, attempt, &rel).as_str(), &mut f)
            .await
            .ctx("storing a run's file")?;
        out.push(FileEntry { path: rel, bytes: info.size as u64 });
    }
    Ok(out)
}

/// The run folder's files, relative, sorted; hidden names skipped.
fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, ClusterError> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, d)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| ClusterError::Io { path: d.clone(), source })?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let ft = e.file_type().map_err(|source| ClusterError::Io { path: e.path(), source })?;
            if ft.is_dir() {
                stack.push((rel, e.path()));
            } else if ft.is_file() {
                out.push((rel, e.path()));
            }
        }
    }
    out.sort();
    if out.len() > MAX_FILES {
        return Err(ClusterError::Untrusted(format!("{}: more than {MAX_FILES} files", dir.display())));
    }
    Ok(out)
}
