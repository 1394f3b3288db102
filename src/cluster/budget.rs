//! One rate budget for the whole cluster: the requests- and tokens-per-minute limits of an API
//! key hold across every worker that uses it, not per process.
//!
//! The budget is a GCRA (generic cell rate algorithm) whose state, the theoretical arrival times
//! of the next request and of the next token, is the last message on a subject per endpoint and
//! key (`{namespace}.budget.{id}`, the id a hash of the URL and the key, never the key) in a plain
//! stream keeping one message per subject. Each request reads the state, reserves the next slot
//! (`tat = max(tat, now) + interval`, tokens weighted by their count) and writes the state back
//! with a compare-and-set publish (`expected_last_subject_sequence`), retrying when another
//! worker wrote first; then it sleeps until its slot. So requests from every worker are spaced
//! as one client's would be. A worker's own calls reserve one at a time, so only workers race.
//! Cost: two JetStream round trips per request (measured on loopback in `tests/cluster_budget.rs`,
//! figures in the README).
//!
//! The state is wall-clock time (unix nanoseconds), so the workers' clocks must agree: keep them
//! NTP-synced. A worker whose clock is `d` ahead can send up to `d` worth of the budget early.
//!
//! Losing the broker does not stop the workers: a reservation that cannot be made within
//! [`RESERVE_BOUND`] (or at once, while the connection is down) falls back to an equal share of
//! the budget, `rate / workers`, counting the workers heard on a heartbeat subject
//! (`{namespace}.budgethb.{id}`) before the broker went, and at least `cluster.workers`. The
//! share starts after the last slot this worker saw reserved, so slots reserved before the loss
//! are not doubled. A warning is logged once per outage. Going back happens in two steps,
//! because the workers reconnect at different moments and one back on the whole shared budget
//! while another still spends its share would exceed the limit: once the broker answers, a
//! worker reserves on the shared state again but still keeps its share's spacing (so it is
//! safe next to a worker still on its share, and the shared state learns of its calls); once
//! every worker heard before the outage says on the heartbeat subject that it reserves on the
//! shared state too (or after 8 s at most: one that died is never heard again), it drops its
//! share's spacing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::{Cluster, ClusterError, JsContext};
use crate::llm::BoxFuture;
use crate::llm::budget::{SharedBudget, SharedBudgetFactory};

/// The longest a reservation may take before the worker falls back to its share.
pub const RESERVE_BOUND: Duration = Duration::from_secs(2);
/// How often a worker says it is alive, and checks whether a lost broker is back.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A worker not heard from for this long no longer counts.
const HEARD_WITHIN: Duration = Duration::from_millis(3500);
/// After the broker is back, how long a worker keeps its share's spacing at most while waiting
/// for the others it knew to say they reserve on the shared state (a worker that died meanwhile
/// is never heard again); longer than the NATS client's longest reconnection delay (4 s) plus a
/// heartbeat.
const RETURN_WAIT: Duration = Duration::from_secs(8);
/// Compare-and-set attempts per reservation before giving up (the bound above comes first).
const MAX_CAS_ATTEMPTS: u32 = 64;
/// A state further ahead than this is not believed (garbage, or a clock far off).
const MAX_AHEAD_NS: u64 = 3600 * 1_000_000_000;
/// Longest worker id read from a heartbeat.
const MAX_ID_BYTES: usize = 64;
/// Most workers remembered at once.
const MAX_HEARD: usize = 10_000;

/// Theoretical arrival times (unix nanoseconds) of the next request and the next token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tats {
    /// The next request's.
    pub requests: u64,
    /// The next token's.
    pub tokens: u64,
}

impl Tats {
    /// Reads the state `to_string` wrote; anything else reads as no state.
    pub fn parse(payload: &[u8]) -> Tats {
        let text = std::str::from_utf8(payload).unwrap_or_default();
        let mut parts = text.split_ascii_whitespace().map(|p| p.parse::<u64>().ok());
        match (parts.next().flatten(), parts.next().flatten(), parts.next()) {
            (Some(requests), Some(tokens), None) => Tats { requests, tokens },
            _ => Tats::default(),
        }
    }

    /// The later of each time.
    pub fn max(self, other: Tats) -> Tats {
        Tats { requests: self.requests.max(other.requests), tokens: self.tokens.max(other.tokens) }
    }

    /// Times more than an hour ahead of `now` taken as `now`: a bad state or a clock far off
    /// must not stop every worker for longer.
    fn believable(self, now: u64) -> Tats {
        let cap = |t: u64| if t > now.saturating_add(MAX_AHEAD_NS) { now } else { t };
        Tats { requests: cap(self.requests), tokens: cap(self.tokens) }
    }
}

impl std::fmt::Display for Tats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.requests, self.tokens)
    }
}

/// The GCRA's rates: nanoseconds per request and per token, and how many tokens may go at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    request_ns: Option<u64>,
    token_ns: Option<u64>,
    token_burst: u64,
}

impl Rates {
    /// `requests_per_minute` and `tokens_per_minute` (0 or unset: no limit). Requests are spaced
    /// evenly; ten seconds' worth of tokens may go at once (as the local budget allows), so one
    /// large request always fits.
    pub fn new(requests_per_minute: Option<u32>, tokens_per_minute: Option<u32>) -> Rates {
        let per = |n: u32| 60_000_000_000 / u64::from(n);
        let tpm = tokens_per_minute.filter(|t| *t > 0);
        Rates {
            request_ns: requests_per_minute.filter(|r| *r > 0).map(per),
            token_ns: tpm.map(per),
            token_burst: tpm.map_or(1, |t| (u64::from(t) / 6).max(1)),
        }
    }

    /// One of `workers` equal shares of these rates.
    pub fn share(self, workers: u32) -> Rates {
        let n = u64::from(workers.max(1));
        Rates {
            request_ns: self.request_ns.map(|r| r.saturating_mul(n)),
            token_ns: self.token_ns.map(|t| t.saturating_mul(n)),
            token_burst: (self.token_burst / n).max(1),
        }
    }

    /// Reserves the slot of one request of `tokens` tokens at `now`: the new state and when the
    /// request may be sent (both unix nanoseconds). A request held back by the token rate also
    /// moves the next request's slot, so requests stay spaced when they are sent.
    pub fn reserve(self, tats: Tats, now: u64, tokens: u64) -> (Tats, u64) {
        let mut next = tats;
        let mut send = now;
        if let Some(t) = self.token_ns {
            let n = tokens.clamp(1, self.token_burst);
            let tat = tats.tokens.max(now).saturating_add(n.saturating_mul(t));
            send = send.max(tat.saturating_sub(self.token_burst.saturating_mul(t)));
            next.tokens = tat;
        }
        if let Some(r) = self.request_ns {
            send = send.max(tats.requests);
            next.requests = send.saturating_add(r);
        }
        (next, send)
    }

    /// [`Rates::reserve`] on the shared state `tats`, and with `share` (while returning) no earlier
    /// than this worker's share allows after `own`: the new shared state, the new `own` and when
    /// the request may be sent.
    pub fn reserve_with(self, share: Option<Rates>, tats: Tats, own: Tats, now: u64, tokens: u64) -> (Tats, Tats, u64) {
        let Some(share) = share else {
            let (next, send) = self.reserve(tats, now, tokens);
            return (next, own, send);
        };
        let from = share.reserve(own, now, tokens).1;
        let (next, send) = self.reserve(tats, from, tokens);
        (next, share.reserve(own, send, tokens).0, send)
    }
}

/// Wall-clock time in unix nanoseconds.
fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The shared budgets of one worker, one per endpoint and key.
pub struct ClusterBudgets {
    cluster: Cluster,
    /// This process's id on the heartbeat subjects (random).
    me: String,
    budgets: Mutex<HashMap<String, Arc<JetStreamBudget>>>,
}

impl std::fmt::Debug for ClusterBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBudgets").field("cluster", &self.cluster).field("me", &self.me).finish_non_exhaustive()
    }
}

impl ClusterBudgets {
    /// The budgets kept on `cluster`'s broker.
    pub fn new(cluster: Cluster) -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        let me = format!("{}-{}", std::process::id(), u64::from_le_bytes(b));
        ClusterBudgets { cluster, me, budgets: Mutex::default() }
    }
}

impl SharedBudgetFactory for ClusterBudgets {
    fn shared_budget(
        &self,
        id: &str,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
    ) -> Option<Arc<dyn SharedBudget>> {
        let rates = Rates::new(requests_per_minute, tokens_per_minute);
        if rates.request_ns.is_none() && rates.token_ns.is_none() {
            return None;
        }
        // The id is a hash in hex, but it names a subject: keep to what NATS accepts.
        let id: String = id.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
        let key = format!("{id}/{requests_per_minute:?}/{tokens_per_minute:?}");
        let mut map = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(key).or_insert_with(|| JetStreamBudget::start(&self.cluster, &id, rates, &self.me));
        Some(b.clone() as Arc<dyn SharedBudget>)
    }
}

/// One endpoint's budget on the broker.
pub struct JetStreamBudget {
    inner: Arc<Inner>,
    keeper: Option<JoinHandle<()>>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    subject: String,
    rates: Rates,
    /// `cluster.workers`: at least this many workers share the budget.
    hint: u32,
    /// The workers heard on the heartbeat subject; what an outage remembers of them.
    peers: Mutex<Peers>,
    /// How reservations are made: [`SHARED`], [`SHARE`] or [`RETURNING`].
    mode: AtomicU8,
    /// Held by one reservation at a time, so this worker's calls never race each other.
    local: tokio::sync::Mutex<Local>,
}

/// Reservations on the shared state.
const SHARED: u8 = 0;
/// Reservations on this worker's share only: the broker cannot be reached.
const SHARE: u8 = 1;
/// Reservations on the shared state that also keep the share's spacing: the broker is back but
/// some worker known before the outage may still be on its share.
const RETURNING: u8 = 2;

/// What one worker remembers between reservations.
#[derive(Default)]
struct Local {
    /// The stream is known to exist.
    ready: bool,
    /// The latest state this worker reserved from (shared or its share).
    known: Tats,
    /// This worker's own calls spaced as its share (kept on its share and while returning).
    own: Tats,
}

impl std::fmt::Debug for JetStreamBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBudget")
            .field("subject", &self.inner.subject)
            .field("rates", &self.inner.rates)
            .field("mode", &self.inner.mode.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for JetStreamBudget {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
    }
}

impl SharedBudget for JetStreamBudget {
    fn reserve(&self, tokens: u64) -> BoxFuture<Duration> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.reserve(tokens).await })
    }
}

impl JetStreamBudget {
    /// The budget named `id` on `cluster`'s broker, with its heartbeat (when a runtime runs).
    pub fn start(cluster: &Cluster, id: &str, rates: Rates, me: &str) -> Arc<JetStreamBudget> {
        let ns = &cluster.names.ns;
        let inner = Arc::new(Inner {
            client: cluster.client.clone(),
            js: cluster.js.clone(),
            stream: format!("{ns}_budget"),
            subject: format!("{ns}.budget.{id}"),
            rates,
            hint: cluster.config.workers.unwrap_or(1).max(1),
            peers: Mutex::new(Peers::new(me)),
            mode: AtomicU8::new(SHARED),
            local: tokio::sync::Mutex::default(),
        });
        let keeper = tokio::runtime::Handle::try_current()
            .ok()
            .map(|h| h.spawn(keep(inner.clone(), format!("{ns}.budgethb.{id}"), me.to_string())));
        Arc::new(JetStreamBudget { inner, keeper })
    }

    /// The workers this one assumes share the budget while the broker is away.
    pub fn workers(&self) -> u32 {
        self.inner.workers()
    }

    /// True while reservations keep to this worker's share: the broker cannot be reached, or it
    /// is back but not every worker known before is known to use the shared state again.
    pub fn degraded(&self) -> bool {
        self.inner.mode() != SHARED
    }
}

impl Inner {
    fn workers(&self) -> u32 {
        self.peers().workers().max(self.hint)
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn mode(&self) -> u8 {
        self.mode.load(Ordering::Relaxed)
    }

    /// Reserves a slot, shared when the broker answers within the bound, else of this worker's
    /// share; returns the wait until it.
    async fn reserve(&self, tokens: u64) -> Duration {
        let mut local = self.local.lock().await;
        let mode = self.mode();
        if mode != SHARE {
            let share = (mode == RETURNING).then(|| self.rates.share(self.workers()));
            let outcome = if self.connected() {
                tokio::time::timeout(RESERVE_BOUND, self.reserve_shared(&mut local, tokens, share)).await
            } else {
                Ok(Err(ClusterError::JetStream {
                    what: "reserving a rate slot".into(),
                    message: "disconnected".into(),
                }))
            };
            match outcome {
                Ok(Ok(send)) => return wait_until(send),
                Ok(Err(e)) => self.fall_back(&mut local, &e.to_string()),
                Err(_) => self.fall_back(&mut local, &format!("no answer within {RESERVE_BOUND:?}")),
            }
        }
        let (next, send) = self.rates.share(self.workers()).reserve(local.own, unix_ns(), tokens);
        local.own = next;
        local.known = local.known.max(next);
        wait_until(send)
    }

    fn fall_back(&self, local: &mut Local, why: &str) {
        if self.mode.swap(SHARE, Ordering::Relaxed) == SHARED {
            // The share starts after the last slot this worker saw reserved.
            local.own = local.known;
            self.peers().lost();
            tracing::warn!(
                workers = self.workers(),
                "the cluster's rate budget cannot be reached ({why}); this worker keeps to 1/{} of it until the NATS server answers again (check that it runs)",
                self.workers()
            );
        }
    }

    /// Read, reserve, compare-and-set; again when another worker wrote first. Returns when the
    /// request may be sent (unix ns).
    /// With `share`, the slot also keeps this worker's share's spacing (while returning).
    async fn reserve_shared(&self, local: &mut Local, tokens: u64, share: Option<Rates>) -> Result<u64, ClusterError> {
        if !local.ready {
            self.ensure_stream().await?;
            local.ready = true;
        }
        let stream = self.js.get_stream_no_info(&self.stream).await.ctx("opening the budget stream")?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (tats, seq) = match stream.get_last_raw_message_by_subject(&self.subject).await {
                Ok(m) => (Tats::parse(&m.payload), m.sequence),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => (Tats::default(), 0),
                Err(e) => {
                    local.ready = false;
                    return Err(e).ctx("reading the rate budget");
                }
            };
            let now = unix_ns();
            let (next, own, send) =
                self.rates.reserve_with(share, tats.believable(now).max(local.known), local.own, now, tokens);
            let publish = jetstream::message::PublishMessage::build()
                .payload(next.to_string().into())
                .expected_last_subject_sequence(seq);
            let ack = self.js.send_publish(self.subject.clone(), publish).await.ctx("reserving a rate slot")?;
            match ack.await {
                Ok(_) => {
                    local.known = next;
                    local.own = own;
                    return Ok(send);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
                Err(e) => {
                    local.ready = false;
                    return Err(e).ctx("reserving a rate slot");
                }
            }
        }
        Err(ClusterError::JetStream {
            what: "reserving a rate slot".into(),
            message: format!("{MAX_CAS_ATTEMPTS} workers wrote first in a row"),
        })
    }

    /// The budget stream: one message (the latest state) per endpoint and key.
    async fn ensure_stream(&self) -> Result<(), ClusterError> {
        let ns = self.stream.trim_end_matches("_budget");
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![format!("{ns}.budget.>")],
                max_messages_per_subject: 1,
                // A state a day old is in the past anyway: an idle key's state may go.
                max_age: Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await
            .ctx("creating the budget stream")?;
        Ok(())
    }

    /// Whether the broker is back: the state can be read.
    async fn probe(&self) -> bool {
        if !self.connected() {
            return false;
        }
        let read = async {
            let stream = self.js.get_stream_no_info(&self.stream).await.ok()?;
            match stream.get_last_raw_message_by_subject(&self.subject).await {
                Ok(_) => Some(()),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Some(()),
                Err(_) => None,
            }
        };
        matches!(tokio::time::timeout(RESERVE_BOUND / 2, read).await, Ok(Some(())))
    }
}

fn wait_until(send: u64) -> Duration {
    Duration::from_nanos(send.saturating_sub(unix_ns()))
}

/// Says this worker is alive every [`HEARTBEAT`] (and whether it reserves on the shared state),
/// counts the workers heard, and while the broker is lost checks whether it is back, then
/// whether the others are.
async fn keep(inner: Arc<Inner>, subject: String, me: String) {
    let mut sub = loop {
        match inner.client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(HEARTBEAT).await,
        }
    };
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let beat = heartbeat(&me, inner.mode() != SHARE);
                let _ = inner.client.publish(subject.clone(), beat.into()).await;
                if inner.mode() != SHARED {
                    come_back(&inner).await;
                }
            }
            m = sub.next() => {
                let Some(m) = m else { return };
                if let Some((id, on_shared)) = read_heartbeat(&m.payload) {
                    inner.peers().heard(id, on_shared, Instant::now());
                }
            }
        }
    }
}

/// A heartbeat: the worker's id, and `shared` when it reserves on the shared state.
fn heartbeat(me: &str, on_shared: bool) -> String {
    format!("{me} {}", if on_shared { "shared" } else { "share" })
}

/// Reads a heartbeat; an id alone (or anything unknown after it) reads as not on the shared
/// state. None for what is not a heartbeat.
fn read_heartbeat(payload: &[u8]) -> Option<(String, bool)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (id, state) = text.split_once(' ').unwrap_or((text, ""));
    (!id.is_empty() && id.len() <= MAX_ID_BYTES).then(|| (id.to_string(), state == "shared"))
}

/// While on its share: once the broker answers, reserves on the shared state again at its
/// share's pace; once the workers known before the outage say they do too, uses it all.
async fn come_back(inner: &Inner) {
    if inner.mode() == SHARE {
        if inner.probe().await {
            inner.peers().answered(Instant::now());
            inner.mode.store(RETURNING, Ordering::Relaxed);
            tracing::info!(
                "the cluster's rate budget answers again; this worker reserves on it again, at its share's pace until the others are back on it"
            );
        }
    } else if inner.peers().may_return(Instant::now()) {
        inner.peers().returned();
        inner.mode.store(SHARED, Ordering::Relaxed);
        tracing::info!("every worker is back on the cluster's rate budget; this worker uses all of it again");
    }
}

/// The workers heard on the heartbeat subject, and what an outage remembers of them.
#[derive(Debug)]
struct Peers {
    me: String,
    /// When each was last heard, and whether it then reserved on the shared state.
    heard: HashMap<String, (Instant, bool)>,
    /// When anything was last heard.
    last: Option<Instant>,
    outage: Option<Outage>,
}

/// What a worker remembers of the others while the broker is lost.
#[derive(Debug)]
struct Outage {
    /// The other workers heard just before.
    before: Vec<String>,
    /// How many shared the budget then (this one included): the share is the budget over it.
    share_of: u32,
    /// When the broker answered again.
    back_at: Option<Instant>,
}

impl Peers {
    fn new(me: &str) -> Peers {
        Peers { me: me.to_string(), heard: HashMap::new(), last: None, outage: None }
    }

    /// `id` was heard at `now`, saying whether it reserves on the shared state.
    fn heard(&mut self, id: String, on_shared: bool, now: Instant) {
        if self.heard.len() < MAX_HEARD || self.heard.contains_key(&id) {
            self.heard.insert(id, (now, on_shared));
        }
        self.last = Some(now);
        self.heard.retain(|_, (at, _)| now.saturating_duration_since(*at) < HEARD_WITHIN);
    }

    /// The workers heard shortly before the last thing heard (so a lost broker freezes them).
    fn live(&self) -> impl Iterator<Item = &String> {
        let last = self.last;
        self.heard
            .iter()
            .filter(move |(_, (at, _))| last.is_some_and(|l| l.saturating_duration_since(*at) < HEARD_WITHIN))
            .map(|(id, _)| id)
    }

    /// How many workers share the budget: the live ones (this one at least), or during an
    /// outage as many as before it.
    fn workers(&self) -> u32 {
        match &self.outage {
            Some(o) => o.share_of,
            None => u32::try_from(self.live().count()).unwrap_or(u32::MAX).max(1),
        }
    }

    /// The broker is lost: remember who was there.
    fn lost(&mut self) {
        if self.outage.is_none() {
            let share_of = self.workers();
            let before = self.live().filter(|id| **id != self.me).cloned().collect();
            self.outage = Some(Outage { before, share_of, back_at: None });
        }
    }

    /// The broker answered at `now` (again, after a second loss while returning).
    fn answered(&mut self, now: Instant) {
        if let Some(o) = &mut self.outage {
            o.back_at = Some(now);
        }
    }

    /// True once the broker answered and every worker known before has since said it reserves
    /// on the shared state (or [`RETURN_WAIT`] has passed: one that died is never heard again).
    fn may_return(&self, now: Instant) -> bool {
        let Some(o) = &self.outage else { return true };
        let Some(back) = o.back_at else { return false };
        now.saturating_duration_since(back) >= RETURN_WAIT
            || o.before.iter().all(|id| self.heard.get(id).is_some_and(|(at, shared)| *shared && *at >= back))
    }

    fn returned(&mut self) {
        self.outage = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000_000_000;

    #[test]
    fn requests_are_spaced_by_the_interval() {
        let r = Rates::new(Some(600), None);
        let mut tats = Tats::default();
        let mut sends = Vec::new();
        for _ in 0..4 {
            let (next, send) = r.reserve(tats, T0, 0);
            tats = next;
            sends.push(send - T0);
        }
        // 600 per minute: one every 100 ms, the first at once.
        assert_eq!(sends, vec![0, 100 * MS, 200 * MS, 300 * MS]);
        // A state in the past counts from now: no burst for time nobody used.
        let (next, send) = r.reserve(tats, T0 + 10_000 * MS, 0);
        assert_eq!((send, next.requests), (T0 + 10_000 * MS, T0 + 10_100 * MS));
    }

    #[test]
    fn tokens_go_by_weight_after_a_ten_second_burst() {
        // 6000 per minute: 100 per second, 1000 at once.
        let r = Rates::new(None, Some(6000));
        let (tats, send) = r.reserve(Tats::default(), T0, 1000);
        assert_eq!(send, T0);
        let (tats, send) = r.reserve(tats, T0, 500);
        assert_eq!(send - T0, 5_000 * MS);
        // More than the burst is charged as the burst, so it never waits forever.
        let (_, send) = r.reserve(tats, T0, 1_000_000);
        assert_eq!(send - T0, 15_000 * MS);
    }

    #[test]
    fn a_request_held_back_by_tokens_moves_the_next_request() {
        let r = Rates::new(Some(600), Some(6000));
        let (tats, _) = r.reserve(Tats::default(), T0, 1000);
        let (tats, send) = r.reserve(tats, T0, 200);
        assert_eq!(send - T0, 2_000 * MS);
        assert_eq!(tats.requests - T0, 2_100 * MS);
        let (_, send) = r.reserve(tats, T0, 0);
        assert_eq!(send - T0, 2_100 * MS);
    }

    #[test]
    fn a_share_is_the_rate_divided_by_the_workers() {
        let share = Rates::new(Some(600), Some(6000)).share(3);
        assert_eq!(share, Rates { request_ns: Some(300 * MS), token_ns: Some(30 * MS), token_burst: 333 });
        assert_eq!(Rates::new(Some(600), None).share(0), Rates::new(Some(600), None));
        // A share continues after the last shared slot this worker saw.
        let known = Tats { requests: T0 + 700 * MS, tokens: 0 };
        let (_, send) = Rates::new(Some(600), None).share(3).reserve(known, T0, 0);
        assert_eq!(send, T0 + 700 * MS);
    }

    #[test]
    fn the_state_reads_back_and_garbage_reads_as_none() {
        let t = Tats { requests: T0, tokens: T0 + 5 };
        assert_eq!(Tats::parse(t.to_string().as_bytes()), t);
        for bad in ["", "1", "1 2 3", "x y", "-1 2", "99999999999999999999999 1"] {
            assert_eq!(Tats::parse(bad.as_bytes()), Tats::default(), "{bad}");
        }
        // A state hours ahead is not believed.
        let far = Tats { requests: T0 + 2 * MAX_AHEAD_NS, tokens: T0 + MS };
        assert_eq!(far.believable(T0), Tats { requests: T0, tokens: T0 + MS });
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn an_outage_keeps_the_share_until_the_others_are_back() {
        let t0 = Instant::now();
        let mut p = Peers::new("me");
        for id in ["me", "b", "c"] {
            p.heard(id.into(), true, at(t0, 0));
        }
        assert_eq!(p.workers(), 3);
        // Nothing heard for a long while (the broker is gone): the count stays.
        p.lost();
        assert_eq!(p.workers(), 3);
        assert!(!p.may_return(at(t0, 30_000)), "not before the broker answers");
        p.answered(at(t0, 5_000));
        // Back, but the others are not heard yet: they may still be spending their shares.
        p.heard("me".into(), true, at(t0, 5_100));
        assert_eq!(p.workers(), 3);
        assert!(!p.may_return(at(t0, 5_200)));
        p.heard("b".into(), true, at(t0, 5_300));
        assert!(!p.may_return(at(t0, 5_400)));
        // Heard, but still on its share: not yet.
        p.heard("c".into(), false, at(t0, 5_500));
        assert!(!p.may_return(at(t0, 5_600)));
        p.heard("c".into(), true, at(t0, 6_000));
        assert!(p.may_return(at(t0, 6_000)));
        p.returned();
        assert_eq!(p.workers(), 3);
    }

    #[test]
    fn a_worker_that_died_meanwhile_is_waited_for_a_bounded_time() {
        let t0 = Instant::now();
        let mut p = Peers::new("me");
        p.heard("me".into(), true, at(t0, 0));
        p.heard("dead".into(), true, at(t0, 100));
        p.lost();
        p.answered(at(t0, 4_000));
        assert!(!p.may_return(at(t0, 4_000) + RETURN_WAIT - Duration::from_millis(1)));
        assert!(p.may_return(at(t0, 4_000) + RETURN_WAIT));
        p.returned();
        // Heard no more: after a while only this worker counts.
        p.heard("me".into(), true, at(t0, 20_000));
        assert_eq!(p.workers(), 1);
    }

    #[test]
    fn heartbeats_say_who_reserves_on_the_shared_state() {
        assert_eq!(read_heartbeat(heartbeat("w-1", true).as_bytes()), Some(("w-1".into(), true)));
        assert_eq!(read_heartbeat(heartbeat("w-1", false).as_bytes()), Some(("w-1".into(), false)));
        // An id alone (an older worker) is not taken as back on the shared state.
        assert_eq!(read_heartbeat(b"w-1"), Some(("w-1".into(), false)));
        assert_eq!(read_heartbeat(b""), None);
        assert_eq!(read_heartbeat(&[0xff, 0xfe]), None);
        assert_eq!(read_heartbeat("x".repeat(MAX_ID_BYTES + 1).as_bytes()), None);
    }

    /// Three workers at 600 a minute: one back on the shared state while the other two are still
    /// on their shares. Returning, it keeps its share's pace, so the three together send the
    /// rate's 30 in three seconds; on the whole shared state they would send 50.
    #[test]
    fn returning_keeps_the_share_next_to_workers_still_on_theirs() {
        let rates = Rates::new(Some(600), None);
        let share = rates.share(3);
        let sends_in_three_seconds = |returning: bool| {
            let (mut shared, mut own) = (Tats::default(), Tats::default());
            let mut sends = 0;
            loop {
                let (next, next_own, send) = rates.reserve_with(returning.then_some(share), shared, own, T0, 0);
                if send >= T0 + 3_000 * MS {
                    return sends;
                }
                (shared, own) = (next, next_own);
                sends += 1;
            }
        };
        let others = 2 * sends_in_three_seconds_on_a_share(share);
        assert_eq!(sends_in_three_seconds(true) + others, 30);
        assert_eq!(sends_in_three_seconds(false) + others, 50);
    }

    fn sends_in_three_seconds_on_a_share(share: Rates) -> u32 {
        let (mut own, mut sends) = (Tats::default(), 0);
        loop {
            let (next, send) = share.reserve(own, T0, 0);
            if send >= T0 + 3_000 * MS {
                return sends;
            }
            own = next;
            sends += 1;
        }
    }
}
