//! The coordinator's side of a sharded run (`troupe run SCENARIO --cluster URL`).
//!
//! The world, the clock and the journal stay in the coordinator's process; persona actors live
//! on the `troupe shard` processes that answer on the heartbeat subject. The world hands this
//! carrier each turn ([`ToHosts`]); the carrier places every persona on a shard by rendezvous
//! hashing of its id over the live shards (stable: a lost shard moves only its own personas,
//! a new one takes only its share), sends each shard one message with its part of the turn
//! (split only past the server's message size), and hands what comes back to the world as
//! `Acted`, where delivery follows the world's order, never arrival order.
//!
//! What can go wrong, and what happens:
//! - A shard silent for `cluster.shard_deadline_seconds` (killed, stopped, cut off) is lost:
//!   its personas of the turn go to the others, rebuilt from the world's record. What it had
//!   already journaled to the exchanges stream is used, not asked again (nothing paid twice).
//! - A shard alive but silent on its part for three deadlines is sent it again; a shard
//!   answers a repeated act from what its persona already did.
//! - Every shard lost (the broker gone, say): the run waits for shards to come back, at most
//!   `max(60 s, 10 deadlines)`, then stops after its last complete turn, resumable from its
//!   journal (which holds every exchange the shards made).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wire::{Heartbeat, Outcomes, TableBuilder, ToShard, TurnPart, WireAct, WireKind, WirePlace};
use super::{Cluster, ClusterError, JsContext};
use crate::actors::metrics::MetricsMsg;
use crate::actors::persona::Outcome;
use crate::actors::remote::{Rebuild, RemoteAct, ToHosts};
use crate::actors::world::WorldMsg;
use crate::config::SimulationConfig;
use crate::record::journal::Exchange;
use crate::record::transcript::{RunEvent, StopReason};

/// How a sharded run finds its shards.
#[derive(Debug, Clone)]
pub struct ShardingOptions {
    /// Wait for this many live shards before the run starts (else: those heard within 1.5 s).
    pub shards: Option<usize>,
    /// How long to wait for them.
    pub wait: Duration,
    /// A resumed run's recorded exchanges by (persona id, turn): sent with each act, so the
    /// shards answer them again without paying.
    pub recorded: HashMap<(String, u32), Vec<Exchange>>,
}

impl ShardingOptions {
    /// Groups a recording's exchanges by persona and turn.
    pub fn recorded_from(exchanges: &[Exchange]) -> HashMap<(String, u32), Vec<Exchange>> {
        let mut m: HashMap<(String, u32), Vec<Exchange>> = HashMap::new();
        for x in exchanges {
            m.entry((x.persona.clone(), x.turn)).or_default().push(x.clone());
        }
        m
    }
}

/// What the carrier did, for the closing line and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ShardingReport {
    /// The shards the run started with.
    pub shards: Vec<String>,
    /// Turn parts sent.
    pub parts: u64,
    /// Bytes of turn parts sent.
    pub bytes_sent: u64,
    /// Bytes of outcomes received.
    pub bytes_received: u64,
    /// Persona acts asked for (first asks).
    pub acts: u64,
    /// Personas made on a shard (first placements and moves).
    pub placed: u64,
    /// Acts sent again (to a new shard after a loss, or after silence).
    pub resent: u64,
    /// Shards taken for lost.
    pub shards_lost: u64,
    /// Answers that came after another (a stopped shard waking up): ignored.
    pub duplicates: u64,
}

/// A sharded run's carrier: give `remote` to the engine (`RunOptions::remote`), await `task`
/// after the run.
#[derive(Debug)]
pub struct Sharded {
    /// Where the world sends its turns.
    pub remote: mpsc::UnboundedSender<ToHosts>,
    /// The carrier, ending when the run does.
    pub task: tokio::task::JoinHandle<ShardingReport>,
    /// The shards found at the start.
    pub shards: Vec<String>,
}

/// No shard: nobody answers for `u16::MAX`.
const NOWHERE: u16 = u16::MAX;

/// Finds the live shards and starts the carrier for run `run` (the engine's run id, so a
/// resumed run reads what its shards journaled before the coordinator was lost).
pub async fn start(
    cluster: Cluster,
    run: &str,
    cfg: &SimulationConfig,
    opts: ShardingOptions,
) -> Result<Sharded, ClusterError> {
    super::messages::check_id("run id", run)?;
    let mut beats = cluster.client.subscribe(cluster.names.shard_heartbeats()).await.ctx("listening for shards")?;
    let found = find_shards(&mut beats, &opts).await;
    if found.is_empty() || opts.shards.is_some_and(|n| found.len() < n) {
        let url = crate::llm::openai::display_url(&cluster.url);
        return Err(ClusterError::Untrusted(format!(
            "{} shard(s) answered on {url} within {:.0} s{}: start `troupe shard --nats {url}` on each machine (or wait longer with --shard-wait)",
            found.len(),
            opts.wait.as_secs_f64(),
            opts.shards.map(|n| format!(", {n} wanted")).unwrap_or_default(),
        )));
    }
    let run = run.to_string();
    let subject = cluster.names.exchanges_subject(&run);
    let stream = cluster.js.get_stream(cluster.names.exchanges_stream()).await.ctx("opening the exchanges stream")?;
    let outcomes = read_outcomes(&stream, &subject, 0).await?;
    let mut wire_cfg = cfg.clone();
    wire_cfg.llm.api_key = None;
    wire_cfg.cluster.token = None;
    let now = Instant::now();
    let shards: Vec<Shard> = found.iter().map(|id| Shard::new(id.clone(), now)).collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let names: Vec<String> = found.clone();
    let carrier = Carrier {
        pricing: Arc::new(crate::cost::Pricing::load(&cfg.llm.pricing_file).unwrap_or_default()),
        max_cost: cfg.llm.max_cost_usd,
        deadline: Duration::from_secs_f64(cfg.cluster.shard_deadline_seconds),
        limit: cluster.message_limit(),
        cluster,
        run,
        cfg: wire_cfg,
        world: None,
        metrics: None,
        events: None,
        shards,
        placed: Vec::new(),
        hashes: Vec::new(),
        turn: 0,
        context: "".into(),
        outstanding: HashMap::new(),
        lost_all_since: None,
        spent: 0.0,
        traceparent: None,
        recorded: opts.recorded,
        early: HashMap::new(),
        report: ShardingReport { shards: names.clone(), ..Default::default() },
    };
    let task = tokio::spawn(carrier.run(rx, beats, outcomes, stream, subject));
    Ok(Sharded { remote: tx, task, shards: names })
}

/// The run's outcomes from stream sequence `after` on: an ephemeral consumer pulled
/// continuously (pulls expire and are made again, so a broker restart never leaves it hanging).
async fn read_outcomes(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
    after: u64,
) -> Result<OutcomeStream, ClusterError> {
    let deliver_policy = match after {
        0 => consumer::DeliverPolicy::All,
        n => consumer::DeliverPolicy::ByStartSequence { start_sequence: n + 1 },
    };
    let c = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.to_string(),
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(300),
            ..Default::default()
        })
        .await
        .ctx("reading the shards' outcomes")?;
    c.stream()
        .max_messages_per_batch(1000)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(2))
        .messages()
        .await
        .ctx("reading the shards' outcomes")
}

/// The shards heard: all that beat within 1.5 s, or the first `n` wanted (up to `wait`).
async fn find_shards(beats: &mut async_nats::Subscriber, opts: &ShardingOptions) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let until = Instant::now() + opts.wait;
    let mut settle: Option<Instant> = None;
    loop {
        let end = match (opts.shards, settle) {
            (Some(n), _) if found.len() >= n => break,
            (None, Some(s)) => s.min(until),
            _ => until,
        };
        match tokio::time::timeout_at(end, beats.next()).await {
            Ok(Some(m)) => {
                if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&m.payload)
                    && super::messages::check_id("shard id", &hb.shard).is_ok()
                    && !found.contains(&hb.shard)
                {
                    found.push(hb.shard);
                    settle.get_or_insert(Instant::now() + Duration::from_millis(1500));
                }
            }
            _ => break,
        }
    }
    found.sort();
    found
}

/// A shard as the carrier knows it.
#[derive(Debug)]
struct Shard {
    id: String,
    seed: u64,
    alive: bool,
    last_beat: Instant,
    last_progress: Instant,
}

impl Shard {
    fn new(id: String, now: Instant) -> Self {
        Shard { seed: fnv(id.as_bytes()), id, alive: true, last_beat: now, last_progress: now }
    }
}

/// FNV-1a, then a finalizer: stable across machines and versions (the assignment is
/// reproducible from the shard ids and persona ids alone).
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The carrier's state.
struct Carrier {
    cluster: Cluster,
    run: String,
    cfg: SimulationConfig,
    pricing: Arc<crate::cost::Pricing>,
    max_cost: Option<f64>,
    deadline: Duration,
    limit: usize,
    world: Option<ActorRef<WorldMsg>>,
    metrics: Option<ActorRef<MetricsMsg>>,
    events: Option<mpsc::UnboundedSender<RunEvent>>,
    shards: Vec<Shard>,
    /// Which shard holds each persona's actor (`NOWHERE`: none).
    placed: Vec<u16>,
    /// Each persona id's hash, once.
    hashes: Vec<u64>,
    turn: u32,
    context: Arc<str>,
    /// Acts of this turn not answered yet, and the shard asked.
    outstanding: HashMap<usize, (u16, RemoteAct)>,
    lost_all_since: Option<Instant>,
    spent: f64,
    /// The current turn's trace context, sent with its parts.
    traceparent: Option<String>,
    /// A resumed run's recorded exchanges by (persona id, turn).
    recorded: HashMap<(String, u32), Vec<Exchange>>,
    /// Outcomes journaled for turns not asked yet: a resumed run finds its lost coordinator's
    /// last answers on the stream, and uses them instead of asking (and paying) again.
    early: HashMap<(u32, usize), WireKind>,
    report: ShardingReport,
}

type OutcomeStream = async_nats::jetstream::consumer::pull::Stream;

impl Carrier {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<ToHosts>,
        mut beats: async_nats::Subscriber,
        mut outcomes: OutcomeStream,
        stream: async_nats::jetstream::stream::Stream,
        subject: String,
    ) -> ShardingReport {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut seen = 0u64;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(ToHosts::Started { world, metrics, events }) => {
                        self.world = Some(world);
                        self.metrics = Some(metrics);
                        self.events = Some(events);
                    }
                    Some(ToHosts::Turn { turn, context, acts, span }) => {
                        self.turn = turn;
                        self.context = context;
                        self.traceparent = crate::monitoring::traces::traceparent(&span);
                        self.report.acts += acts.len() as u64;
                        self.dispatch(acts, false).await;
                    }
                    Some(ToHosts::Ended) | None => break,
                },
                b = beats.next() => {
                    if let Some(b) = b {
                        self.heard(&b.payload).await;
                    }
                }
                o = outcomes.next() => match o {
                    Some(Ok(m)) => {
                        self.report.bytes_received += m.payload.len() as u64;
                        seen = m.info().map(|i| i.stream_sequence).unwrap_or(seen);
                        self.outcomes(&m.payload).await;
                    }
                    other => {
                        // An error or the end: read again from after the last one seen.
                        if let Some(Err(e)) = other {
                            tracing::warn!("reading the shards' outcomes: {e}; reading again");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        match read_outcomes(&stream, &subject, seen).await {
                            Ok(o) => outcomes = o,
                            Err(e) => tracing::warn!("{e}"),
                        }
                    }
                },
                _ = tick.tick() => self.check().await,
            }
        }
        for s in &self.shards {
            let end = serde_json::to_vec(&ToShard::End { run: self.run.clone() }).unwrap_or_default();
            let _ = self.cluster.client.publish(self.cluster.names.shard_subject(&s.id), end.into()).await;
        }
        let _ = self.cluster.client.flush().await;
        // The run's journal holds every exchange; the stream's copy is no longer needed.
        if let Err(e) = stream.purge().filter(subject).await {
            tracing::warn!("could not clear the run's outcomes from the exchanges stream: {e}");
        }
        self.report
    }

    /// The live shard persona `idx` belongs on: the highest hash of (persona, shard).
    fn owner(&mut self, idx: usize, id: &str) -> u16 {
        if self.hashes.len() <= idx {
            self.hashes.resize(idx + 1, 0);
            self.placed.resize(idx + 1, NOWHERE);
        }
        if self.hashes[idx] == 0 {
            self.hashes[idx] = fnv(id.as_bytes()) | 1;
        }
        let h = self.hashes[idx];
        let mut best = (NOWHERE, 0u64);
        for (i, s) in self.shards.iter().enumerate() {
            let score = mix(h ^ s.seed);
            if s.alive && (best.0 == NOWHERE || score > best.1) {
                best = (i as u16, score);
            }
        }
        best.0
    }

    /// Sends acts to their shards: those not placed there already (or all, with `again`) are
    /// rebuilt there from the world's record.
    async fn dispatch(&mut self, acts: Vec<RemoteAct>, again: bool) {
        let mut by_shard: HashMap<u16, Vec<(RemoteAct, bool)>> = HashMap::new();
        let mut rebuild = Vec::new();
        let acts = self.answer_early(acts);
        for act in acts {
            let s = self.owner(act.idx, &act.id);
            if s == NOWHERE {
                self.outstanding.insert(act.idx, (NOWHERE, act));
                continue;
            }
            let place = again || self.placed[act.idx] != s;
            if place {
                rebuild.push(act.idx);
            }
            by_shard.entry(s).or_default().push((act, place));
        }
        let mut built: HashMap<usize, Rebuild> = HashMap::new();
        if !rebuild.is_empty()
            && let Some(world) = &self.world
        {
            self.report.placed += rebuild.len() as u64;
            match world.call(|r| WorldMsg::Rebuild(rebuild, r), Some(Duration::from_secs(120))).await {
                Ok(ractor::rpc::CallResult::Success(v)) => built = v.into_iter().map(|r| (r.idx, r)).collect(),
                other => tracing::error!("the world did not give the personas' records: {other:?}"),
            }
        }
        let mut shards: Vec<u16> = by_shard.keys().copied().collect();
        shards.sort_unstable();
        for s in shards {
            let acts = by_shard.remove(&s).unwrap_or_default();
            self.send_acts(s, acts, &mut built).await;
        }
    }

    /// Answers the acts whose outcome is already on the stream; returns the others. A persona
    /// answered so is rebuilt wherever it acts next (its actor, if any, missed this batch).
    fn answer_early(&mut self, acts: Vec<RemoteAct>) -> Vec<RemoteAct> {
        if self.early.is_empty() {
            return acts;
        }
        let mut rest = Vec::with_capacity(acts.len());
        for act in acts {
            match self.early.remove(&(self.turn, act.idx)) {
                Some(WireKind::Acted { outcome, summary, events }) => {
                    self.owner(act.idx, &act.id);
                    self.placed[act.idx] = NOWHERE;
                    self.accept(self.turn, act.idx, outcome, summary, events);
                }
                _ => rest.push(act),
            }
        }
        self.early.retain(|(t, _), _| *t > self.turn);
        rest
    }

    /// Sends one shard its acts, in as few parts as the server's message size allows.
    async fn send_acts(&mut self, s: u16, acts: Vec<(RemoteAct, bool)>, built: &mut HashMap<usize, Rebuild>) {
        let budget = self.limit / 2;
        let mut table = TableBuilder::default();
        let mut part: Vec<WireAct> = Vec::new();
        let mut extra = 0usize;
        for (act, place) in acts {
            let place = place.then(|| built.remove(&act.idx)).flatten().map(|r| {
                extra += r.spawn.system.len() + 2048 + r.history.len() * 48;
                Box::new(WirePlace { spawn: r.spawn, history: table.encode(&r.history) })
            });
            let batch = table.encode(&act.batch);
            let recorded = self.recorded.get(&(act.id.to_string(), self.turn)).cloned().unwrap_or_default();
            extra += batch.len() * 8 + 32 + recorded.iter().map(|x| x.response.text.len() + 512).sum::<usize>();
            part.push(WireAct { idx: act.idx as u32, batch, place, recorded });
            self.placed[act.idx] = s;
            self.outstanding.insert(act.idx, (s, act));
            if table.text_bytes() + extra >= budget {
                let full = std::mem::take(&mut table);
                self.send_part(s, full, std::mem::take(&mut part)).await;
                extra = 0;
            }
        }
        if !part.is_empty() {
            self.send_part(s, table, part).await;
        }
        self.shards[s as usize].last_progress = Instant::now();
    }

    async fn send_part(&mut self, s: u16, table: TableBuilder, acts: Vec<WireAct>) {
        let part = TurnPart {
            run: self.run.clone(),
            turn: self.turn,
            config: self.cfg.clone(),
            context: self.context.to_string(),
            table: table.finish(),
            acts,
            resumed: !self.recorded.is_empty(),
        };
        let body = match serde_json::to_vec(&ToShard::Turn(Box::new(part))) {
            Ok(b) => b,
            Err(e) => return tracing::error!("cannot encode a turn part: {e}"),
        };
        if body.len() > self.limit {
            // One persona's memory past the server's message size: it cannot travel.
            tracing::error!(bytes = body.len(), limit = self.limit, "a turn part is larger than the server takes");
        }
        self.report.parts += 1;
        self.report.bytes_sent += body.len() as u64;
        let subject = self.cluster.names.shard_subject(&self.shards[s as usize].id);
        let mut headers = async_nats::HeaderMap::new();
        if let Some(tp) = &self.traceparent {
            headers.insert(crate::monitoring::traces::TRACEPARENT, tp.as_str());
        }
        if let Err(e) = self.cluster.client.publish_with_headers(subject, headers, body.into()).await {
            tracing::warn!("sending a turn part: {e} (sent again if unanswered)");
        }
    }

    /// A heartbeat: a known shard is alive (again); a new one joins.
    async fn heard(&mut self, payload: &[u8]) {
        let Ok(hb) = serde_json::from_slice::<Heartbeat>(payload) else { return };
        if super::messages::check_id("shard id", &hb.shard).is_err() {
            return;
        }
        let now = Instant::now();
        let room = self.shards.len() < usize::from(NOWHERE);
        match self.shards.iter_mut().find(|s| s.id == hb.shard) {
            Some(s) => {
                s.last_beat = now;
                if !s.alive {
                    tracing::info!(shard = %s.id, "shard back");
                    s.alive = true;
                    s.last_progress = now;
                }
            }
            None if room => {
                tracing::info!(shard = %hb.shard, "shard joined");
                self.shards.push(Shard::new(hb.shard, now));
            }
            None => {}
        }
        // Acts that waited for any shard go now.
        let waiting: Vec<usize> =
            self.outstanding.iter().filter(|(_, (s, _))| *s == NOWHERE).map(|(i, _)| *i).collect();
        if !waiting.is_empty() {
            self.lost_all_since = None;
            let acts = waiting.into_iter().filter_map(|i| self.outstanding.remove(&i).map(|(_, a)| a)).collect();
            self.dispatch(acts, true).await;
        }
    }

    /// A batch of outcomes from the exchanges stream.
    async fn outcomes(&mut self, payload: &[u8]) {
        let o: Outcomes = match super::messages::parse("shard outcomes", payload) {
            Ok(o) => o,
            Err(e) => return tracing::error!("{e}"),
        };
        if o.check().is_err() || o.run != self.run {
            return tracing::error!("outcomes for another run or from a malformed shard id were ignored");
        }
        let from = self.shards.iter().position(|s| s.id == o.shard).map_or(NOWHERE, |i| i as u16);
        if let Some(s) = self.shards.get_mut(usize::from(from)) {
            s.last_progress = Instant::now();
        }
        let mut lost = Vec::new();
        for item in o.items {
            let idx = item.idx as usize;
            if item.turn > self.turn && matches!(item.kind, WireKind::Acted { .. }) {
                self.early.insert((item.turn, idx), item.kind);
                continue;
            }
            if item.turn != self.turn || !self.outstanding.contains_key(&idx) {
                self.report.duplicates += 1;
                continue;
            }
            match item.kind {
                WireKind::Lost => {
                    if let Some((_, act)) = self.outstanding.remove(&idx) {
                        self.placed[idx] = NOWHERE;
                        lost.push(act);
                    }
                }
                WireKind::Acted { outcome, summary, events } => {
                    self.outstanding.remove(&idx);
                    if self.placed.get(idx) != Some(&from) {
                        // Answered by a shard the persona has since moved from: the actor it
                        // acts with next did not make this answer, so it is rebuilt.
                        self.placed[idx] = NOWHERE;
                    }
                    self.accept(item.turn, idx, outcome, summary, events);
                }
            }
        }
        if let Some(reason) = o.stop {
            self.stop(reason);
        }
        if !lost.is_empty() {
            self.report.resent += lost.len() as u64;
            self.dispatch(lost, true).await;
        }
        if let Some(max) = self.max_cost
            && self.spent > max
        {
            self.stop(StopReason::CostLimit(format!(
                "max_cost_usd = {max:.4} reached: ${:.4} spent on all shards together",
                self.spent
            )));
        }
    }

    /// Takes a persona's answer: its calls into the metrics and the journal, its act to the world.
    fn accept(&mut self, turn: u32, idx: usize, outcome: Outcome, summary: Option<String>, events: Vec<RunEvent>) {
        self.record_calls(idx, &outcome, events);
        if let Some(w) = &self.world {
            let summary = summary.map(|s| s.into());
            let _ = w.cast(WorldMsg::Acted { turn, idx, outcome, summary });
        }
    }

    /// Counts a persona's calls made on a shard in the run's metrics, and journals them.
    fn record_calls(&mut self, idx: usize, outcome: &Outcome, events: Vec<RunEvent>) {
        let latency_us = match outcome {
            Outcome::Replied { call, .. } => (call.latency_ms * 1000.0) as u64,
            Outcome::Skipped { .. } => 0,
        };
        for e in events {
            if let Some(m) = &self.metrics {
                match &e {
                    RunEvent::Exchange(x) => {
                        let cost_usd = self.pricing.cost(&x.response.model, x.response.usage);
                        self.spent += cost_usd.unwrap_or(0.0);
                        let _ = m.cast(MetricsMsg::CallStarted { queued_us: 0, mailbox_us: None });
                        let _ = m.cast(MetricsMsg::CallSucceeded {
                            model: x.response.model.clone(),
                            persona: idx,
                            latency_us,
                            usage: x.response.usage,
                            cost_usd,
                            cost_usd_estimated: 0.0,
                            response_us: latency_us,
                        });
                    }
                    RunEvent::Retry { .. } => {
                        let _ = m.cast(MetricsMsg::Retry);
                    }
                    RunEvent::Fallback { .. } => {
                        let _ = m.cast(MetricsMsg::Fallback);
                    }
                    _ => {}
                }
            }
            if let Some(ev) = &self.events {
                let _ = ev.send(e);
            }
        }
    }

    fn stop(&self, reason: StopReason) {
        if let Some(w) = &self.world {
            let _ = w.cast(WorldMsg::Stop(reason));
        }
    }

    /// Every 200 ms: lost shards, silent parts, and a run with no shard at all.
    async fn check(&mut self) {
        let now = Instant::now();
        let mut moved = Vec::new();
        for i in 0..self.shards.len() {
            let s = &mut self.shards[i];
            if s.alive && now.duration_since(s.last_beat) > self.deadline {
                s.alive = false;
                self.report.shards_lost += 1;
                tracing::warn!(shard = %s.id, "shard lost (no heartbeat for {:?}); its personas move", self.deadline);
                let i = i as u16;
                for p in self.placed.iter_mut().filter(|p| **p == i) {
                    *p = NOWHERE;
                }
                moved.extend(self.outstanding.iter().filter(|(_, (s, _))| *s == i).map(|(idx, _)| *idx));
            } else if s.alive && now.duration_since(s.last_progress) > self.deadline * 3 {
                let i = i as u16;
                let silent: Vec<usize> =
                    self.outstanding.iter().filter(|(_, (s, _))| *s == i).map(|(idx, _)| *idx).collect();
                s.last_progress = now;
                if !silent.is_empty() {
                    tracing::warn!(shard = %s.id, acts = silent.len(), "no answer for {:?}; asking again", self.deadline * 3);
                    moved.extend(silent);
                }
            }
        }
        if !moved.is_empty() {
            self.report.resent += moved.len() as u64;
            moved.sort_unstable();
            let acts = moved.into_iter().filter_map(|i| self.outstanding.remove(&i).map(|(_, a)| a)).collect();
            self.dispatch(acts, true).await;
        }
        let waiting = self.outstanding.values().any(|(s, _)| *s == NOWHERE);
        if waiting && self.shards.iter().all(|s| !s.alive) {
            let since = *self.lost_all_since.get_or_insert(now);
            let patience = (self.deadline * 10).max(Duration::from_secs(60));
            if now.duration_since(since) > patience {
                self.stop(StopReason::Failed(format!(
                    "no shard answered for {} s (is the NATS server up, are `troupe shard` processes running?); the run stopped after its last complete turn and can be continued with `troupe resume`",
                    patience.as_secs()
                )));
                self.lost_all_since = None;
            }
        }
    }
}
