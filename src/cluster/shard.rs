//! `troupe shard --nats URL`: hosts persona actors for any sharded run that gives it personas.
//!
//! It beats twice a second on the heartbeat subject and listens on its own subject. For each
//! run it makes a metrics actor, a supervisor (with this machine's provider and key, under the
//! cluster's shared rate budget) and a [`HostActor`] standing in for the world. What the
//! personas did goes to the run's exchanges stream, in batches, and only the broker's
//! acknowledgement counts as told: the coordinator hears it from the stream, so what a shard
//! paid for is on record before anyone acts on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::wire::{Heartbeat, Outcomes, ToShard, TurnPart, WireKind, WireOutcome, decode};
use super::worker::{Providers, provider_for};
use super::{Cluster, ClusterError, JsContext};
use crate::actors::host::{HostActor, HostArgs, HostMsg, HostReport};
use crate::actors::metrics::{MetricsActor, MetricsArgs, MetricsMsg};
use crate::actors::persona::PersonaSpawn;
use crate::actors::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};
use crate::config::{CacheMode, SimulationConfig};
use crate::llm::cache::{CachingProvider, ResponseCache};
use crate::memory::Utterance;
use crate::record::transcript::RunEvent;

/// How often a shard says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// A run nobody has sent anything for this long is dropped (its coordinator is gone).
const IDLE_RUN: Duration = Duration::from_secs(600);
/// Outcomes wait at most this long for others to share their message.
const LINGER: Duration = Duration::from_millis(5);
/// Outcomes in one message, at most.
const MAX_ITEMS: usize = 512;

/// How a shard works.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Its id: a subject token, unique in the cluster (host, process id and a random part).
    pub id: String,
}

/// What a shard did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    /// Runs it took part in.
    pub runs: u64,
    /// Persona acts it was asked for.
    pub acts: u64,
    /// Turn parts it could not take (malformed, out of bounds).
    pub rejected: u64,
}

/// One run hosted here.
struct Hosted {
    host: ActorRef<HostMsg>,
    /// A resumed run's recorded answers, served by the run's provider before it pays.
    recorded: Option<Arc<ResponseCache>>,
    supervisor: ActorRef<SupervisorMsg>,
    metrics: ActorRef<MetricsMsg>,
    last_seen: Instant,
}

/// Hosts personas until `stop` turns true.
pub async fn run_shard(
    cluster: Cluster,
    base: SimulationConfig,
    opts: ShardOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<ShardStats, ClusterError> {
    super::messages::check_id("shard id", &opts.id)?;
    let mut sub = cluster.client.subscribe(cluster.names.shard_subject(&opts.id)).await.ctx("listening for turns")?;
    let acts = Arc::new(AtomicU64::new(0));
    let runs_now = Arc::new(AtomicU64::new(0));
    let beat = heartbeat(cluster.clone(), opts.id.clone(), runs_now.clone(), acts.clone());
    let providers = Providers::default();
    let mut runs: HashMap<String, Hosted> = HashMap::new();
    let mut stats = ShardStats::default();
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    tracing::info!(shard = %opts.id, "hosting personas for sharded runs on {}", cluster.url);
    loop {
        tokio::select! {
            m = sub.next() => {
                let Some(m) = m else { break };
                match super::messages::parse::<ToShard>("a turn part", &m.payload) {
                    Ok(ToShard::Turn(part)) => {
                        let n = part.acts.len() as u64;
                        // The coordinator's turn is the parent: one trace for the whole run.
                        let span = tracing::info_span!("shard_turn", turn = part.turn, acts = n);
                        if let Some(tp) = m.headers.as_ref().and_then(|h| h.get(crate::monitoring::traces::TRACEPARENT)) {
                            crate::monitoring::traces::adopt(&span, tp.as_str());
                        }
                        let taken = take_part(&cluster, &base, &providers, &opts.id, &mut runs, *part).instrument(span).await;
                        match taken {
                            Ok(()) => {
                                stats.acts += n;
                                acts.store(stats.acts, Ordering::Relaxed);
                            }
                            Err(e) => {
                                stats.rejected += 1;
                                tracing::error!("a turn part could not be taken: {e}");
                            }
                        }
                    }
                    Ok(ToShard::End { run }) => {
                        if let Some(h) = runs.remove(&run) {
                            stats.runs += 1;
                            end(h);
                        }
                    }
                    Err(e) => {
                        stats.rejected += 1;
                        tracing::error!("{e}");
                    }
                }
                runs_now.store(runs.len() as u64, Ordering::Relaxed);
            }
            _ = sweep.tick() => {
                let idle: Vec<String> = runs.iter().filter(|(_, h)| h.last_seen.elapsed() > IDLE_RUN).map(|(r, _)| r.clone()).collect();
                for r in idle {
                    tracing::warn!(run = %r, "no word from the run's coordinator for {} s; dropping its personas", IDLE_RUN.as_secs());
                    if let Some(h) = runs.remove(&r) {
                        end(h);
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    beat.abort();
    for (_, h) in runs.drain() {
        end(h);
    }
    Ok(stats)
}

fn end(h: Hosted) {
    h.host.stop(Some("the run ended".into()));
    h.supervisor.stop(Some("the run ended".into()));
    h.metrics.stop(Some("the run ended".into()));
}

/// Says, twice a second, that this shard is alive (and how loaded).
fn heartbeat(cluster: Cluster, id: String, runs: Arc<AtomicU64>, acts: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let subject = cluster.names.shard_heartbeats();
        let mut every = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            every.tick().await;
            let hb = Heartbeat {
                shard: id.clone(),
                runs: runs.load(Ordering::Relaxed) as u32,
                acts: acts.load(Ordering::Relaxed),
            };
            let body = serde_json::to_vec(&hb).unwrap_or_default();
            // While the broker is away the client buffers a little and the rest is dropped:
            // a heartbeat that arrives late says nothing anyway.
            let _ = cluster.client.publish(subject.clone(), body.into()).await;
        }
    })
}

/// Hands a turn part's acts to the run's host (made on the run's first part).
async fn take_part(
    cluster: &Cluster,
    base: &SimulationConfig,
    providers: &Providers,
    shard: &str,
    runs: &mut HashMap<String, Hosted>,
    part: TurnPart,
) -> Result<(), ClusterError> {
    part.check()?;
    if !runs.contains_key(&part.run) {
        let h = host_run(cluster, base, providers, shard, &part).await?;
        runs.insert(part.run.clone(), h);
    }
    let Some(h) = runs.get_mut(&part.run) else { return Ok(()) };
    h.last_seen = Instant::now();
    let table: Vec<Arc<Utterance>> = part.table.into_iter().map(Arc::new).collect();
    let context: Arc<str> = part.context.into();
    for act in part.acts {
        if let Some(cache) = &h.recorded {
            for x in &act.recorded {
                if let Ok(k) = u64::from_str_radix(&x.key, 16) {
                    cache.insert(k, x.response.clone());
                }
            }
        }
        let batch = decode(&table, act.batch)?;
        let place = match act.place {
            Some(p) => {
                let history = decode(&table, p.history)?;
                let s = p.spawn;
                if let Some(i) = crate::persona::validate::check_persona(&s.spec)
                    .into_iter()
                    .find(|i| i.severity == crate::persona::Severity::Error)
                {
                    return Err(ClusterError::Untrusted(format!("persona {}: {}: {}", s.spec.id, i.field, i.message)));
                }
                let spawn = PersonaSpawn {
                    spec: Arc::new(s.spec),
                    system: s.system.into(),
                    facts: Arc::new(s.facts),
                    sampling: s.sampling,
                    memory_prefix: s.memory_prefix,
                    memory_recent: s.memory_recent,
                    consolidate_every: s.consolidate_every,
                    world: h.host.get_derived(),
                };
                Some(Box::new((spawn, history)))
            }
            None => None,
        };
        let msg = HostMsg::Act { turn: part.turn, idx: act.idx as usize, batch, context: context.clone(), place };
        let _ = h.host.cast(msg);
    }
    Ok(())
}

/// Process-unique numbers for the runs hosted here (they name the persona actors).
static INSTANCE: AtomicU64 = AtomicU64::new(1 << 40);

/// Makes a run's actors here: metrics, a supervisor with this machine's provider, the host,
/// and the task that journals what the personas did.
async fn host_run(
    cluster: &Cluster,
    base: &SimulationConfig,
    providers: &Providers,
    shard: &str,
    part: &TurnPart,
) -> Result<Hosted, ClusterError> {
    let cfg = base.with_recorded_simulation(&part.config);
    crate::config::limits::check(&cfg)
        .map_err(|e| ClusterError::Untrusted(format!("run {}: config {}: {}", part.run, e.key, e.message)))?;
    let mut provider = provider_for(cluster, providers, &cfg).await?;
    let recorded = part.resumed.then(|| Arc::new(ResponseCache::in_memory()));
    if let Some(cache) = &recorded {
        let name = provider.name().to_string();
        provider = Arc::new(CachingProvider::new(Some(provider), cache.clone(), CacheMode::Auto, &name));
    }
    let spawn_err = |e: ractor::SpawnErr| ClusterError::JetStream {
        what: "starting a run's actors".into(),
        message: e.to_string(),
    };
    let margs = MetricsArgs {
        provider: provider.name().to_string(),
        requests_per_minute: cfg.llm.requests_per_minute,
        tokens_per_minute: cfg.llm.tokens_per_minute,
        monitor: crate::actors::monitor::installed(),
    };
    let (metrics, _) = Actor::spawn(None, MetricsActor, margs).await.map_err(spawn_err)?;
    let pricing = crate::cost::Pricing::load(&cfg.llm.pricing_file).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "pricing table unreadable; costs count as 0");
        crate::cost::Pricing::default()
    });
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let args = SupervisorArgs {
        pricing: Arc::new(if provider.synthetic() { crate::cost::Pricing::default() } else { pricing }),
        provider,
        config: Arc::new(cfg),
        metrics: metrics.clone(),
        instance: INSTANCE.fetch_add(1, Ordering::Relaxed),
        events: Some(ev_tx),
        // Each exchange is journaled to JetStream before the shard answers.
        exchanges: true,
    };
    let (supervisor, _) = Actor::spawn(None, SupervisorActor, args).await.map_err(spawn_err)?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (host, _) = Actor::spawn(None, HostActor, HostArgs { supervisor: supervisor.clone(), out: out_tx })
        .await
        .map_err(spawn_err)?;
    tokio::spawn(journal_outcomes(cluster.clone(), part.run.clone(), shard.to_string(), out_rx, ev_rx));
    tracing::info!(run = %part.run, "hosting personas of a sharded run");
    Ok(Hosted { host, recorded, supervisor, metrics, last_seen: Instant::now() })
}

/// Publishes what the personas did to the run's exchanges stream, in batches, each with the
/// events of its calls; a batch counts once the broker has acknowledged it.
async fn journal_outcomes(
    cluster: Cluster,
    run: String,
    shard: String,
    mut reports: mpsc::UnboundedReceiver<HostReport>,
    mut events: mpsc::UnboundedReceiver<RunEvent>,
) {
    let subject = cluster.names.exchanges_subject(&run);
    let limit = cluster.message_limit() / 2;
    let mut calls: HashMap<String, Vec<RunEvent>> = HashMap::new();
    let mut batch = Outcomes { run: run.clone(), shard: shard.clone(), items: Vec::new(), stop: None };
    let mut bytes = 0usize;
    let mut sent = 0u64;
    let mut reports_open = true;
    loop {
        let deadline = tokio::time::sleep(LINGER);
        // Events first: a call's exchange is sent before its persona can report, so when a
        // report is ready its exchange already waits here and goes with it.
        tokio::select! {
            biased;
            e = events.recv() => match e {
                Some(e) => {
                    if let Some(p) = event_persona(&e) {
                        calls.entry(p.to_string()).or_default().push(e);
                    }
                }
                None if !reports_open => break,
                None => {}
            },
            r = reports.recv(), if reports_open => match r {
                Some(r) => bytes += add_report(&mut batch, &mut calls, r),
                None => reports_open = false,
            },
            _ = deadline, if !batch.items.is_empty() || batch.stop.is_some() => {
                publish(&cluster, &subject, &mut batch, &mut sent).await;
                bytes = 0;
            }
        }
        if batch.items.len() >= MAX_ITEMS || bytes >= limit {
            publish(&cluster, &subject, &mut batch, &mut sent).await;
            bytes = 0;
        }
        if !reports_open && batch.items.is_empty() {
            break;
        }
    }
    if !batch.items.is_empty() {
        publish(&cluster, &subject, &mut batch, &mut sent).await;
    }
}

/// A number telling this process' start from another with the same shard id.
fn process_nonce() -> u64 {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        (t as u64) ^ u64::from(std::process::id()).rotate_left(40)
    })
}

/// The persona an event of the supervisor belongs to.
fn event_persona(e: &RunEvent) -> Option<&str> {
    match e {
        RunEvent::Exchange(x) => Some(&x.persona),
        RunEvent::Retry { persona, .. } | RunEvent::Fallback { persona, .. } => Some(persona),
        _ => None,
    }
}

/// Adds a report to the batch; returns roughly how many bytes it adds.
fn add_report(batch: &mut Outcomes, calls: &mut HashMap<String, Vec<RunEvent>>, r: HostReport) -> usize {
    match r {
        HostReport::Acted { turn, idx, persona, outcome, summary } => {
            let events = calls.remove(&*persona).unwrap_or_default();
            let size = 256
                + summary.as_ref().map_or(0, |s| s.len())
                + events
                    .iter()
                    .map(|e| if let RunEvent::Exchange(x) = e { x.response.text.len() + 256 } else { 128 })
                    .sum::<usize>()
                + match &outcome {
                    crate::actors::persona::Outcome::Replied { reply, .. } => format!("{reply:?}").len(),
                    crate::actors::persona::Outcome::Skipped { reason } => reason.len(),
                };
            let kind = WireKind::Acted { outcome, summary: summary.map(|s| s.to_string()), events };
            batch.items.push(WireOutcome { turn, idx: idx as u32, kind });
            size
        }
        HostReport::Lost { turn, idx } => {
            batch.items.push(WireOutcome { turn, idx: idx as u32, kind: WireKind::Lost });
            64
        }
        HostReport::Stop(reason) => {
            batch.stop = Some(reason);
            64
        }
    }
}

/// Publishes a batch and waits for the broker's acknowledgement, retrying while the broker is
/// away (for up to ten minutes; past that the coordinator has asked again anyway).
async fn publish(cluster: &Cluster, subject: &str, batch: &mut Outcomes, sent: &mut u64) {
    let body = serde_json::to_vec(&*batch).unwrap_or_default();
    batch.items.clear();
    batch.stop = None;
    *sent += 1;
    // Unique per run, shard and process start (the stream drops a repeated id as a duplicate).
    let id = format!("{}.{}.{}.{}", batch.run, batch.shard, process_nonce(), sent);
    let mut wait = Duration::from_millis(100);
    let started = Instant::now();
    loop {
        let msg =
            async_nats::jetstream::message::PublishMessage::build().payload(body.clone().into()).message_id(id.clone());
        let acked = match cluster.js.send_publish(subject.to_string(), msg).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match acked {
            Ok(()) => return,
            Err(e) if started.elapsed() < Duration::from_secs(600) => {
                tracing::warn!("cannot journal outcomes yet ({e}); retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!("gave up journaling outcomes after ten minutes: {e}");
                return;
            }
        }
    }
}
