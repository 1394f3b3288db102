//! The actor runtime end to end (issue 3), against the real world, persona, supervisor and
//! metrics actors: determinism under every turn policy, each policy's ordering and the hearing
//! rules, timeouts, backoff, fallback and graceful degradation, a fault profile whose counters
//! must add up, restarts that keep memory, and prompts that stay flat as memory grows.
//!
//! Anything with latency, timeouts or backoff runs on tokio's paused clock
//! (`start_paused = true`): virtual time jumps ahead whenever every task waits, so no test
//! sleeps for real. The few real-time tests use latencies of a few milliseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use troupe_sim::actors::persona::PersonaMsg;
use troupe_sim::config::{
    ConfigSources, FaultProfile, LatencyModel, ProviderKind, SimulationConfig, TurnPolicy, load_config, scenario_layer,
};
use troupe_sim::engine::{RunHandle, RunOptions, RunPlan, SimulationEngine};
use troupe_sim::llm::retry::{RetryPolicy, backoff_ceiling};
use troupe_sim::llm::tokens::{count_request, count_tokens};
use troupe_sim::llm::{
    BoxFuture, CallContext, ChatRequest, ChatResponse, ErrorKind, FinishReason, LlmError, Provider, Role,
    SimulatedProvider, Usage,
};
use troupe_sim::memory::{EpisodicMemory, MemoryEvent, Utterance};
use troupe_sim::persona::{PersonaDatabase, PersonaSpec};
use troupe_sim::prompt::{Sampling, WorldFacts, act_request, system_prompt};
use troupe_sim::record::results::SimulationResults;
use troupe_sim::record::transcript::{RunEvent, StopReason, TranscriptEntry};
use troupe_sim::scenario::{self, Hearing, ResolvedAction};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOPIC: &str = "Should we ship AI-assisted content moderation this quarter?";
const FOUR: [&str; 4] = ["sarah_chen", "marcus_rivera", "aisha_okafor", "david_kim"];

// ---------------------------------------------------------------------------------------------
// Setup

fn personas_file() -> PathBuf {
    Path::new(ROOT).join("data/personas.agents.json")
}

fn personas(ids: &[&str]) -> Vec<PersonaSpec> {
    let db = PersonaDatabase::load(&personas_file()).unwrap();
    ids.iter().map(|id| db.get(id).unwrap_or_else(|| panic!("{id} is in the database")).clone()).collect()
}

fn ad_hoc(ids: &[&str]) -> RunPlan {
    RunPlan::ad_hoc(TOPIC, personas(ids))
}

/// Defaults with the simulated provider, no call spacing and a generous overall timeout.
fn config(turns: u32, policy: TurnPolicy) -> SimulationConfig {
    let mut c = SimulationConfig::default();
    c.llm.provider = ProviderKind::Simulated;
    c.simulation.max_turns = turns;
    c.simulation.turn_policy = Some(policy);
    c.simulation.personas_file = personas_file();
    c.simulation.topic = TOPIC.into();
    c.performance.rate_limit_delay = 0.0;
    c.performance.timeout_seconds = 100_000.0;
    // Saved runs go to temporary folders; an fsync per turn would cost real time, not virtual.
    c.output.journal_fsync = troupe_sim::config::FsyncPolicy::Never;
    c
}

/// A scenario file resolved the way `troupe run` does it, with `tweak` applied to the config
/// before personas are resolved.
fn scenario_plan(file: &str, tweak: impl FnOnce(&mut SimulationConfig)) -> (RunPlan, SimulationConfig) {
    let path = Path::new(ROOT).join(file);
    let s = scenario::load_scenario(&path).unwrap();
    let layer = scenario_layer(&path, &scenario::check::scenario_overrides(&s, None)).unwrap();
    // An empty config file stands in for config/troupe.toml, so local edits cannot change results.
    let empty = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    let sources = ConfigSources { toml: Some(empty.path().to_path_buf()), scenario: Some(layer), ..Default::default() };
    let mut cfg = load_config(&sources).unwrap().config;
    cfg.llm.provider = ProviderKind::Simulated;
    cfg.simulation.personas_file = personas_file();
    cfg.performance.rate_limit_delay = 0.0;
    cfg.performance.timeout_seconds = 100_000.0;
    tweak(&mut cfg);
    let db = PersonaDatabase::load(&cfg.simulation.personas_file).unwrap();
    let c = &cfg.simulation;
    let r = scenario::resolve(&s, &path, &db, None, c.max_turns, c.max_personas, c.run_seed).unwrap();
    (RunPlan::from_scenario(r, &cfg.simulation.topic), cfg)
}

fn simulated(cfg: &SimulationConfig) -> SimulatedProvider {
    SimulatedProvider::new(cfg.llm.simulated.clone())
}

async fn run(cfg: SimulationConfig, provider: Arc<dyn Provider>, plan: RunPlan) -> SimulationResults {
    SimulationEngine::with_provider(cfg, provider).run(plan, RunOptions::default()).await.unwrap()
}

async fn start(
    cfg: SimulationConfig,
    provider: Arc<dyn Provider>,
    plan: RunPlan,
    save_under: Option<PathBuf>,
) -> (RunHandle, mpsc::UnboundedReceiver<RunEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let h = SimulationEngine::with_provider(cfg, provider)
        .start(plan, RunOptions { save_under, events: Some(tx), ..Default::default() })
        .await
        .unwrap();
    (h, rx)
}

/// Reads events until `stop` matches one; returns everything read.
async fn events_until(rx: &mut mpsc::UnboundedReceiver<RunEvent>, stop: impl Fn(&RunEvent) -> bool) -> Vec<RunEvent> {
    let mut seen = Vec::new();
    while let Some(ev) = rx.recv().await {
        let done = stop(&ev);
        seen.push(ev);
        if done {
            break;
        }
    }
    seen
}

/// The registered-name prefix of this run's persona actors ("troupe-<n>-persona-").
fn actor_prefix(h: &RunHandle) -> String {
    let name = h.persona_name(0);
    name.strip_suffix('0').expect("name ends with the index").to_string()
}

async fn memory_of(actor: &ActorRef<PersonaMsg>) -> EpisodicMemory {
    match actor.call(PersonaMsg::GetMemory, None).await {
        Ok(CallResult::Success(m)) => m,
        other => panic!("GetMemory failed: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading results

/// Everything of a run that must be reproducible: the transcript without timestamps and
/// latencies, then skips, thoughts, passes and interventions, serialized.
fn canonical(r: &SimulationResults) -> String {
    let mut out = String::new();
    for e in &r.transcript {
        let mut v = serde_json::to_value(e).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("timestamp");
        m.remove("latency_ms");
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out.push_str(&serde_json::to_string(&(&r.skipped, &r.thoughts, &r.passes, &r.interventions)).unwrap());
    out
}

fn spoken(r: &SimulationResults) -> Vec<&TranscriptEntry> {
    r.transcript.iter().filter(|e| e.speaker_id != "moderator").collect()
}

fn heard(memory: &[MemoryEvent]) -> Vec<&Utterance> {
    memory
        .iter()
        .filter_map(|e| match e {
            MemoryEvent::Heard(u) => Some(&**u),
            _ => None,
        })
        .collect()
}

fn said(memory: &[MemoryEvent]) -> Vec<&Utterance> {
    memory
        .iter()
        .filter_map(|e| match e {
            MemoryEvent::Said(u) => Some(&**u),
            _ => None,
        })
        .collect()
}

/// Each (turn, persona) of the run: how many times it spoke, thought, passed or was skipped.
fn outcomes(r: &SimulationResults) -> BTreeMap<(u32, String), Vec<&'static str>> {
    let mut m: BTreeMap<(u32, String), Vec<&'static str>> = BTreeMap::new();
    for e in spoken(r) {
        m.entry((e.turn, e.speaker_id.clone())).or_default().push("message");
    }
    for (t, p, _) in &r.thoughts {
        m.entry((*t, p.clone())).or_default().push("thought");
    }
    for (t, p) in &r.passes {
        m.entry((*t, p.clone())).or_default().push("pass");
    }
    for s in &r.skipped {
        m.entry((s.turn, s.persona.clone())).or_default().push("skip");
    }
    m
}

/// Every persona has exactly one outcome in every turn 1..=turns.
fn assert_one_outcome_each(r: &SimulationResults, ids: &[&str], turns: u32) {
    let o = outcomes(r);
    for t in 1..=turns {
        for id in ids {
            let got = o.get(&(t, id.to_string())).cloned().unwrap_or_default();
            assert_eq!(got.len(), 1, "turn {t}, {id}: {got:?}");
        }
    }
    assert_eq!(o.len(), ids.len() * turns as usize, "no outcome outside the expected turns: {o:?}");
}

fn assert_seq_is_the_position(r: &SimulationResults) {
    for (i, e) in r.transcript.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "seq is strictly increasing, unique and gap-free");
    }
}

// ---------------------------------------------------------------------------------------------
// Providers used by the tests

/// The simulated provider, noting the order in which calls complete.
#[derive(Debug)]
struct Recorder {
    inner: SimulatedProvider,
    done: Arc<Mutex<Vec<(u32, String)>>>,
}

impl Provider for Recorder {
    fn name(&self) -> &str {
        "simulated"
    }
    fn synthetic(&self) -> bool {
        true
    }
    fn chat(&self, req: Arc<ChatRequest>, ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>> {
        let fut = self.inner.chat(req.clone(), ctx);
        let done = self.done.clone();
        Box::pin(async move {
            let r = fut.await;
            done.lock().unwrap().push((req.meta.turn, req.meta.persona.clone()));
            r
        })
    }
}

/// One act as the probe saw it: the persona's memory at the moment it asked, and its prompt.
#[derive(Debug, Clone)]
struct Act {
    persona: String,
    turn: u32,
    memory: Vec<MemoryEvent>,
    prompt: String,
}

/// The simulated provider, asking the calling persona actor for its memory (`GetMemory`) at
/// the moment of each call: what the persona knew when it acted. The persona does not await
/// its call, so its mailbox answers.
#[derive(Debug)]
struct Probe {
    inner: SimulatedProvider,
    index: HashMap<String, usize>,
    prefix: watch::Receiver<Option<String>>,
    acts: Arc<Mutex<Vec<Act>>>,
}

impl Probe {
    /// A probe for personas known by index (in the world's order, joiners last).
    fn new(cfg: &SimulationConfig, ids: &[String]) -> (Arc<Probe>, watch::Sender<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        let index = ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        (Arc::new(Probe { inner: simulated(cfg), index, prefix: rx, acts: Arc::default() }), tx)
    }

    fn acts(&self) -> Vec<Act> {
        self.acts.lock().unwrap().clone()
    }
}

impl Provider for Probe {
    fn name(&self) -> &str {
        "simulated"
    }
    fn synthetic(&self) -> bool {
        true
    }
    fn chat(&self, req: Arc<ChatRequest>, ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>> {
        let fut = self.inner.chat(req.clone(), ctx);
        let mut prefix = self.prefix.clone();
        let idx = self.index.get(&req.meta.persona).copied();
        let acts = self.acts.clone();
        Box::pin(async move {
            let p = prefix.wait_for(Option::is_some).await.map(|p| p.clone()).ok().flatten();
            let actor = p.zip(idx).and_then(|(p, i)| ractor::registry::where_is(format!("{p}{i}")));
            // Never panic here: a panic would kill the call's task and hang the run.
            let memory = match actor {
                Some(cell) => match ActorRef::<PersonaMsg>::from(cell).call(PersonaMsg::GetMemory, None).await {
                    Ok(CallResult::Success(m)) => m.events().to_vec(),
                    _ => Vec::new(),
                },
                None => Vec::new(),
            };
            let prompt = req
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.to_string())
                .unwrap_or_default();
            acts.lock().unwrap().push(Act { persona: req.meta.persona.clone(), turn: req.meta.turn, memory, prompt });
            fut.await
        })
    }
}

/// What the scripted provider does with one attempt.
enum Step {
    /// Answer after a delay.
    Answer(Duration),
    /// Wait, run a side effect, then answer.
    AnswerAfter(Duration, Box<dyn FnOnce() + Send>),
    /// Fail after a delay.
    Fail(Duration, LlmError),
}

/// One attempt the scripted provider saw.
#[derive(Debug, Clone)]
struct Attempt {
    persona: String,
    turn: u32,
    attempt: u32,
    model: String,
    started: Instant,
    prompt: String,
}

type Script = Box<dyn Fn(&ChatRequest, CallContext) -> Step + Send + Sync>;

/// A provider driven by a script of (request, attempt) -> what happens; it records every
/// attempt and the peak number of attempts in flight.
struct Scripted {
    script: Script,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripted").finish_non_exhaustive()
    }
}

impl Scripted {
    fn new(script: impl Fn(&ChatRequest, CallContext) -> Step + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Scripted {
            script: Box::new(script),
            attempts: Arc::default(),
            in_flight: Arc::default(),
            peak: Arc::default(),
        })
    }
    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }
}

/// Decrements the in-flight count however the attempt ends (answer, error or timeout drop).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn chat(&self, req: Arc<ChatRequest>, ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>> {
        let step = (self.script)(&req, ctx);
        let prompt =
            req.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.to_string()).unwrap_or_default();
        self.attempts.lock().unwrap().push(Attempt {
            persona: req.meta.persona.clone(),
            turn: req.meta.turn,
            attempt: ctx.attempt,
            model: req.model.clone(),
            started: Instant::now(),
            prompt,
        });
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        Box::pin(async move {
            let _guard = guard;
            let answer = |req: &ChatRequest| {
                let text = format!(
                    "{} speaking in turn {} on attempt {} with {}.",
                    req.meta.persona, req.meta.turn, ctx.attempt, req.model
                );
                let usage = Usage::new(count_request(req), count_tokens(&text));
                Ok(ChatResponse { text, usage, model: req.model.clone(), finish_reason: FinishReason::Stop })
            };
            match step {
                Step::Answer(d) => {
                    tokio::time::sleep(d).await;
                    answer(&req)
                }
                Step::AnswerAfter(d, then) => {
                    tokio::time::sleep(d).await;
                    then();
                    answer(&req)
                }
                Step::Fail(d, e) => {
                    tokio::time::sleep(d).await;
                    Err(e)
                }
            }
        })
    }
}

fn server_error() -> LlmError {
    LlmError::new(ErrorKind::Server, "scripted 500").with_status(500)
}

// ---------------------------------------------------------------------------------------------
// 1. Determinism

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_gives_a_byte_identical_transcript_under_every_policy_whatever_the_latency() {
    for policy in [TurnPolicy::RoundRobin, TurnPolicy::Parallel, TurnPolicy::RandomOrder] {
        let setup = |latency: LatencyModel, run_seed: u64| {
            scenario_plan("scenarios/incident_postmortem.ron", |c| {
                c.simulation.turn_policy = Some(policy);
                c.simulation.max_turns = 4;
                c.simulation.run_seed = run_seed;
                c.performance.max_workers = 4;
                c.llm.simulated.latency = latency;
            })
        };
        let mut canon = Vec::new();
        let mut completions = Vec::new();
        let mut first = None;
        // Real time with jitter of a few ms: calls finish in a different order than they start.
        for latency in
            [LatencyModel::uniform(0.0, 4.0), LatencyModel::uniform(0.0, 4.0), LatencyModel::log_normal(1.0, 4.0)]
        {
            let (plan, cfg) = setup(latency, 7);
            let done = Arc::new(Mutex::new(Vec::new()));
            let provider = Arc::new(Recorder { inner: simulated(&cfg), done: done.clone() });
            let r = run(cfg, provider, plan).await;
            assert!(r.success, "{policy:?}: {:?}", r.error);
            assert!(spoken(&r).len() >= 15, "{policy:?}: a real conversation, not an empty one");
            canon.push(canonical(&r));
            completions.push(done.lock().unwrap().clone());
            first.get_or_insert(r);
        }
        assert_eq!(canon[0], canon[1], "{policy:?}: same seed, same latency model");
        assert_eq!(canon[0], canon[2], "{policy:?}: same seed, another latency distribution");

        if policy == TurnPolicy::Parallel {
            // The jitter did reorder completions, yet the transcript stayed in persona order.
            let first = first.as_ref().unwrap();
            let order: Vec<&str> = first.agents.iter().map(|a| a.id.as_str()).collect();
            let reordered = completions.iter().flatten().collect::<Vec<_>>().chunk_by(|a, b| a.0 == b.0).any(|turn| {
                let ids: Vec<&str> = turn.iter().map(|(_, p)| p.as_str()).collect();
                let mut sorted = ids.clone();
                sorted.sort_by_key(|id| order.iter().position(|o| o == id));
                ids != sorted
            });
            assert!(reordered, "the latency jitter should have changed completion order: {completions:?}");
        }

        let (plan, cfg) = setup(LatencyModel::fixed(0.0), 8);
        let provider = Arc::new(simulated(&cfg));
        let other = run(cfg, provider, plan).await;
        let texts = |r: &SimulationResults| spoken(r).iter().map(|e| e.text.clone()).collect::<Vec<_>>();
        assert_ne!(texts(&other), texts(first.as_ref().unwrap()), "{policy:?}: another run_seed writes other text");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Ordering and hearing

/// Under a sequential policy, the persona acting at position `pos` of turn `t` had heard every
/// same-turn message of those before it, none of those after it, and everything said in
/// earlier turns (its own words as `Said`).
fn assert_sequential_hearing(acts: &[Act], r: &SimulationResults, turn_orders: &BTreeMap<u32, Vec<String>>) {
    for a in acts {
        let order = &turn_orders[&a.turn];
        let pos = order.iter().position(|p| *p == a.persona).unwrap();
        let heard_seqs: BTreeSet<u64> = heard(&a.memory).iter().map(|u| u.seq).collect();
        let said_seqs: BTreeSet<u64> = said(&a.memory).iter().map(|u| u.seq).collect();
        for e in &r.transcript {
            let k = order.iter().position(|p| *p == e.speaker_id);
            let should_know =
                e.turn < a.turn || (e.turn == a.turn && (e.speaker_id == "moderator" || k.is_some_and(|k| k < pos)));
            if e.speaker_id == a.persona {
                assert_eq!(
                    said_seqs.contains(&e.seq),
                    e.turn < a.turn,
                    "{} in turn {} remembers saying #{}",
                    a.persona,
                    a.turn,
                    e.seq
                );
            } else {
                assert_eq!(
                    heard_seqs.contains(&e.seq),
                    should_know,
                    "{} acting at position {pos} of turn {} and message #{} ({} in turn {})",
                    a.persona,
                    a.turn,
                    e.seq,
                    e.speaker_id,
                    e.turn
                );
            }
            if should_know && e.speaker_id != a.persona && e.speaker_id != "moderator" {
                // And the prompt it sent says so.
                assert!(a.prompt.contains(&e.text), "{} turn {} prompt lacks #{}", a.persona, a.turn, e.seq);
            }
        }
    }
}

fn turn_orders(acts: &[Act]) -> BTreeMap<u32, Vec<String>> {
    let mut m: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for a in acts {
        m.entry(a.turn).or_default().push(a.persona.clone());
    }
    m
}

async fn probed_run(cfg: SimulationConfig, plan: RunPlan) -> (SimulationResults, Vec<Act>) {
    let mut ids: Vec<String> = plan.personas.iter().map(|p| p.id.clone()).collect();
    for iv in &plan.interventions {
        if let ResolvedAction::AddPersona(p) = &iv.action {
            ids.push(p.id.clone());
        }
    }
    let (probe, prefix) = Probe::new(&cfg, &ids);
    let (h, _rx) = start(cfg, probe.clone(), plan, None).await;
    prefix.send(Some(actor_prefix(&h))).unwrap();
    let r = h.wait().await.unwrap();
    let acts = probe.acts();
    assert!(acts.iter().all(|a| !a.memory.is_empty()), "the probe reached every persona");
    (r, acts)
}

#[tokio::test(start_paused = true)]
async fn round_robin_speaks_in_persona_order_and_each_hears_the_earlier_speakers_of_its_turn() {
    let mut cfg = config(3, TurnPolicy::RoundRobin);
    cfg.performance.max_workers = 4;
    cfg.llm.simulated.latency = LatencyModel::uniform(5.0, 300.0);
    let (r, acts) = probed_run(cfg, ad_hoc(&FOUR)).await;
    assert!(r.success);
    assert_one_outcome_each(&r, &FOUR, 3);
    let orders = turn_orders(&acts);
    for t in 1..=3 {
        assert_eq!(orders[&t], FOUR, "turn {t} acts in persona order");
        let speakers: Vec<&str> = spoken(&r).iter().filter(|e| e.turn == t).map(|e| e.speaker_id.as_str()).collect();
        let mut sorted = speakers.clone();
        sorted.sort_by_key(|s| FOUR.iter().position(|f| f == s));
        assert_eq!(speakers, sorted, "turn {t} transcript in persona order");
    }
    assert_sequential_hearing(&acts, &r, &orders);
}

#[tokio::test(start_paused = true)]
async fn parallel_acts_on_one_snapshot_and_delivers_in_persona_order() {
    let mut cfg = config(3, TurnPolicy::Parallel);
    cfg.performance.max_workers = 4;
    cfg.performance.batch_size = 4;
    // Persona order and completion order disagree: latencies are drawn per request.
    cfg.llm.simulated.latency = LatencyModel::uniform(5.0, 400.0);
    let (r, acts) = probed_run(cfg, ad_hoc(&FOUR)).await;
    assert!(r.success);
    assert_one_outcome_each(&r, &FOUR, 3);
    for t in 1..=3u32 {
        let turn: Vec<&TranscriptEntry> = spoken(&r).into_iter().filter(|e| e.turn == t).collect();
        let pos: Vec<usize> = turn.iter().map(|e| FOUR.iter().position(|f| *f == e.speaker_id).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "turn {t} delivered in persona order: {pos:?}");
        let seqs: Vec<u64> = turn.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "turn {t} delivered together: {seqs:?}");
    }
    for a in &acts {
        let heard = heard(&a.memory);
        assert!(
            heard.iter().all(|u| u.turn < a.turn || u.speaker_id.as_ref() == "moderator"),
            "{} heard a message of turn {} before acting in it",
            a.persona,
            a.turn
        );
        // The same snapshot: everything the others said in the previous turn.
        for e in spoken(&r).iter().filter(|e| e.turn + 1 == a.turn && e.speaker_id != a.persona) {
            assert!(heard.iter().any(|u| u.seq == e.seq), "{} in turn {} missed #{}", a.persona, a.turn, e.seq);
        }
    }
    assert_eq!(acts.len(), 12);
    // All four start together, so a shorter latency means an earlier finish: in some turn a
    // later persona finished first, and the transcript still kept persona order.
    let finished_out_of_order = (1..=3u32).any(|t| {
        let lat: Vec<f64> = spoken(&r).iter().filter(|e| e.turn == t).map(|e| e.latency_ms.unwrap()).collect();
        lat.windows(2).any(|w| w[1] < w[0])
    });
    assert!(finished_out_of_order);
}

#[tokio::test(start_paused = true)]
async fn random_order_shuffles_each_turn_reproducibly() {
    let five = ["sarah_chen", "marcus_rivera", "aisha_okafor", "david_kim", "elena_petrova"];
    let go = |seed: u64| async move {
        let mut cfg = config(5, TurnPolicy::RandomOrder);
        cfg.simulation.run_seed = seed;
        cfg.llm.simulated.latency = LatencyModel::fixed(50.0);
        probed_run(cfg, ad_hoc(&five)).await
    };
    let (r1, acts1) = go(11).await;
    let (r2, acts2) = go(11).await;
    let (_, acts3) = go(12).await;
    let (o1, o2, o3) = (turn_orders(&acts1), turn_orders(&acts2), turn_orders(&acts3));
    for order in o1.values() {
        let mut sorted = order.clone();
        sorted.sort();
        let mut all: Vec<String> = five.iter().map(|s| s.to_string()).collect();
        all.sort();
        assert_eq!(sorted, all, "each turn is a permutation of the personas");
    }
    let distinct: BTreeSet<&Vec<String>> = o1.values().collect();
    assert!(distinct.len() > 1, "the order changes between turns: {o1:?}");
    assert_eq!(o1, o2, "the same seed gives the same orders");
    assert_eq!(canonical(&r1), canonical(&r2));
    assert_ne!(o1, o3, "another seed gives other orders");
    // The transcript follows the shuffled order, and each persona heard those before it.
    for (t, order) in &o1 {
        let speakers: Vec<&str> = spoken(&r1).iter().filter(|e| e.turn == *t).map(|e| e.speaker_id.as_str()).collect();
        let expected: Vec<&str> = order.iter().map(String::as_str).filter(|p| speakers.contains(p)).collect();
        assert_eq!(speakers, expected, "turn {t}");
    }
    assert_sequential_hearing(&acts1, &r1, &o1);
}

/// Speaker -> the personas who hear it, from a scenario's hearing rule.
fn listeners(h: &Hearing) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    match h {
        Hearing::Everyone => panic!("use a scenario with a hearing graph"),
        Hearing::Relations(g) => {
            for (a, bs) in g {
                for b in bs {
                    m.entry(a.clone()).or_default().insert(b.clone());
                    m.entry(b.clone()).or_default().insert(a.clone());
                }
            }
        }
        Hearing::Directed(g) => {
            for (listener, speakers) in g {
                for s in speakers {
                    m.entry(s.clone()).or_default().insert(listener.clone());
                }
            }
        }
        Hearing::Edges(e) => {
            for &(a, b) in &e.pairs {
                let (a, b) = (e.ids[a as usize].clone(), e.ids[b as usize].clone());
                // Directed pairs are (listener, speaker).
                m.entry(b.clone()).or_default().insert(a.clone());
                if !e.directed {
                    m.entry(a).or_default().insert(b);
                }
            }
        }
        Hearing::RelationsFile(_) | Hearing::DirectedFile(_) => panic!("a resolved plan holds the file's edges"),
    }
    m
}

async fn assert_hearing_follows_the_graph(file: &str) {
    let (plan, mut cfg) = scenario_plan(file, |_| {});
    cfg.llm.simulated.latency = LatencyModel::fixed(20.0);
    let graph = listeners(&plan.hearing);
    let hears = |listener: &str, speaker: &str| {
        speaker == "moderator" || graph.get(speaker).is_some_and(|l| l.contains(listener))
    };
    let mut ids: Vec<String> = plan.personas.iter().map(|p| p.id.clone()).collect();
    for iv in &plan.interventions {
        if let ResolvedAction::AddPersona(p) = &iv.action {
            ids.push(p.id.clone());
        }
    }
    let turns = cfg.simulation.max_turns;
    let (probe, prefix) = Probe::new(&cfg, &ids);
    let (h, mut rx) = start(cfg, probe.clone(), plan, None).await;
    prefix.send(Some(actor_prefix(&h))).unwrap();

    // The world's own record of what each persona was told, read between turns.
    let mut logs_checked = 0;
    for t in 1..turns {
        events_until(&mut rx, |e| matches!(e, RunEvent::TurnEnded { turn } if *turn == t)).await;
        for (i, id) in ids.iter().enumerate() {
            let Some(log) = h.persona_log(i).await else { continue };
            for u in heard(&log) {
                assert!(hears(id, &u.speaker_id), "{file}: {id}'s log holds #{} by {}", u.seq, u.speaker_id);
            }
            logs_checked += 1;
        }
    }
    assert!(logs_checked >= ids.len());
    let r = h.wait().await.unwrap();
    assert!(r.success, "{file}: {:?}", r.error);
    let acts = probe.acts();

    // What each persona knew when it acted: only its neighbours (and the moderator).
    for a in &acts {
        for u in heard(&a.memory) {
            assert!(
                hears(&a.persona, &u.speaker_id),
                "{file}: {} in turn {} heard {} (#{})",
                a.persona,
                a.turn,
                u.speaker_id,
                u.seq
            );
        }
    }
    // And everything its neighbours said while it was present, by its last act.
    let mut excluded = 0;
    for id in &ids {
        let mine: Vec<&Act> = acts.iter().filter(|a| &a.persona == id).collect();
        let (first, last) = (mine.first().unwrap(), mine.last().unwrap());
        let seqs: BTreeSet<u64> = heard(&last.memory).iter().map(|u| u.seq).collect();
        for e in spoken(&r).iter().filter(|e| &e.speaker_id != id && e.turn >= first.turn && e.turn < last.turn) {
            if hears(id, &e.speaker_id) {
                assert!(seqs.contains(&e.seq), "{file}: {id} never heard neighbour {} (#{})", e.speaker_id, e.seq);
            } else {
                excluded += 1;
            }
        }
    }
    assert!(excluded > 0, "{file}: the graph must keep someone from hearing someone");
}

#[tokio::test(start_paused = true)]
async fn relations_graph_limits_hearing_to_neighbours() {
    // Undirected relations, RandomOrder, a persona joining at turn 3 and one leaving at turn 5.
    assert_hearing_follows_the_graph("scenarios/city_budget.ron").await;
}

#[tokio::test(start_paused = true)]
async fn directed_graph_limits_hearing_to_the_speakers_each_listener_follows() {
    assert_hearing_follows_the_graph("scenarios/incident_postmortem.ron").await;
}

#[tokio::test(start_paused = true)]
async fn max_workers_batch_size_and_rate_limit_delay_bound_the_calls() {
    let six = ["sarah_chen", "marcus_rivera", "aisha_okafor", "david_kim", "elena_petrova", "priya_sharma"];
    let go = |workers: usize, batch: usize, spacing: f64| async move {
        let mut cfg = config(2, TurnPolicy::Parallel);
        cfg.performance.max_workers = workers;
        cfg.performance.batch_size = batch;
        cfg.performance.rate_limit_delay = spacing;
        let p = Scripted::new(|_, _| Step::Answer(Duration::from_millis(100)));
        let r = run(cfg, p.clone(), ad_hoc(&six)).await;
        assert!(r.success);
        assert_eq!(spoken(&r).len(), 12);
        p
    };
    assert_eq!(go(8, 2, 0.0).await.peak.load(Ordering::SeqCst), 2, "batch_size bounds Parallel");
    assert_eq!(go(3, 10, 0.0).await.peak.load(Ordering::SeqCst), 3, "max_workers bounds every call");
    assert_eq!(go(8, 10, 0.0).await.peak.load(Ordering::SeqCst), 6);
    let spaced = go(8, 10, 0.5).await.attempts();
    for w in spaced.windows(2) {
        assert!(w[1].started - w[0].started >= Duration::from_millis(500), "rate_limit_delay spaces call starts");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Timeouts, backoff, fallback, graceful degradation (paused time)

#[tokio::test(start_paused = true)]
async fn a_call_exceeding_persona_timeout_is_retried_and_then_succeeds() {
    let mut cfg = config(1, TurnPolicy::RoundRobin);
    cfg.performance.persona_timeout = 2.0;
    let p = Scripted::new(|_, ctx| match ctx.attempt {
        1 => Step::Answer(Duration::from_secs(600)),
        _ => Step::Answer(Duration::from_millis(100)),
    });
    let t0 = Instant::now();
    let r = run(cfg, p.clone(), ad_hoc(&["sarah_chen"])).await;
    let elapsed = t0.elapsed();
    assert!(r.success, "{:?}", r.error);
    let msg = spoken(&r)[0];
    assert_eq!(msg.attempts, Some(2));
    assert!(msg.text.contains("attempt 2"), "the answer comes from the retry: {}", msg.text);
    let m = &r.full_metrics;
    assert_eq!(
        (m.counts.api_calls, m.successful_calls, m.counts.errors, m.counts.timeouts, m.counts.retries),
        (2, 1, 1, 1, 1)
    );
    assert_eq!(m.errors_by_kind.get("timeout"), Some(&1));
    let a = p.attempts();
    assert!(a[1].started - a[0].started >= Duration::from_secs(2), "the retry starts after the timeout");
    assert!(
        elapsed >= Duration::from_millis(2100) && elapsed < Duration::from_secs(600),
        "{elapsed:?}: timed out, did not wait"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_honouring_retry_after_and_the_exponential_ceiling() {
    // 429 with Retry-After 2 s three times: each retry waits at least 2 s.
    let mut cfg = config(1, TurnPolicy::RoundRobin);
    cfg.performance.backoff_base = 0.5;
    cfg.performance.backoff_factor = 2.0;
    cfg.performance.backoff_max = 8.0;
    cfg.llm.fallback_model = Default::default();
    let p = Scripted::new(|_, ctx| match ctx.attempt {
        1..=3 => Step::Fail(
            Duration::ZERO,
            LlmError::new(ErrorKind::RateLimited, "scripted 429")
                .with_status(429)
                .with_retry_after(Duration::from_secs(2)),
        ),
        _ => Step::Answer(Duration::ZERO),
    });
    let t0 = Instant::now();
    let r = run(cfg.clone(), p.clone(), ad_hoc(&["sarah_chen"])).await;
    assert!(r.success);
    assert_eq!(spoken(&r)[0].attempts, Some(4));
    assert_eq!((r.full_metrics.counts.retries, r.full_metrics.counts.errors), (3, 3));
    assert_eq!(r.full_metrics.errors_by_kind.get("rate_limited"), Some(&3));
    let a = p.attempts();
    for w in a.windows(2) {
        let gap = w[1].started - w[0].started;
        // Full jitter draws below the ceiling (at most 2 s here), so Retry-After decides.
        assert!(gap >= Duration::from_secs(2) && gap < Duration::from_millis(2010), "{gap:?}");
    }
    assert!(t0.elapsed() >= Duration::from_secs(6), "the paused clock advanced by the backoff");

    // 500s, no Retry-After: each wait is a full-jitter draw below base * factor^(n-1).
    cfg.performance.backoff_base = 4.0;
    cfg.performance.backoff_max = 100.0;
    let p = Scripted::new(|_, ctx| {
        if ctx.attempt <= 4 { Step::Fail(Duration::ZERO, server_error()) } else { Step::Answer(Duration::ZERO) }
    });
    let t0 = Instant::now();
    let r = run(cfg.clone(), p.clone(), ad_hoc(&["sarah_chen"])).await;
    assert!(r.success);
    assert_eq!(r.full_metrics.counts.retries, 4);
    let policy = RetryPolicy::from_config(&cfg, &cfg.llm.model);
    let gaps: Vec<Duration> = p.attempts().windows(2).map(|w| w[1].started - w[0].started).collect();
    assert_eq!(gaps.len(), 4);
    for (n, gap) in gaps.iter().enumerate() {
        let ceiling = Duration::from_secs_f64(backoff_ceiling(&policy, n as u32 + 1));
        assert!(*gap <= ceiling + Duration::from_millis(2), "wait {n}: {gap:?} above the ceiling {ceiling:?}");
    }
    assert!(gaps.iter().any(|g| *g > Duration::from_secs(4)), "later waits may exceed the first ceiling: {gaps:?}");
    assert!(t0.elapsed() >= gaps.iter().sum::<Duration>());
}

#[tokio::test(start_paused = true)]
async fn the_fallback_model_answers_after_the_primary_keeps_failing() {
    let mut cfg = config(2, TurnPolicy::RoundRobin);
    cfg.llm.model = "primary-model".into();
    cfg.llm.fallback_model = "fallback-model".into();
    cfg.performance.fallback_after = 2;
    cfg.performance.max_retries = 4;
    cfg.performance.backoff_base = 0.1;
    let p = Scripted::new(|req, _| {
        if req.model == "primary-model" {
            Step::Fail(Duration::from_millis(50), server_error())
        } else {
            Step::Answer(Duration::from_millis(50))
        }
    });
    let r = run(cfg, p.clone(), ad_hoc(&FOUR[..2])).await;
    assert!(r.success, "{:?}", r.error);
    for e in spoken(&r) {
        assert_eq!(e.model.as_deref(), Some("fallback-model"), "{e:?}");
        assert_eq!(e.attempts, Some(3), "two failures on the primary, then the fallback");
    }
    assert_eq!(r.models_used, ["fallback-model"]);
    let m = &r.full_metrics;
    assert_eq!(m.counts.fallbacks, 4, "one switch per call");
    assert_eq!((m.counts.errors, m.counts.retries, m.counts.api_calls), (8, 8, 12));
    assert!(
        m.llm_latency_by_model.contains_key("primary-model") && m.llm_latency_by_model.contains_key("fallback-model")
    );
    // Every call tried the primary exactly twice before switching.
    let a = p.attempts();
    assert!(a.iter().all(|a| (a.attempt <= 2) == (a.model == "primary-model")), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn graceful_degradation_on_skips_the_failing_persona_and_completes() {
    let mut cfg = config(3, TurnPolicy::RoundRobin);
    cfg.performance.max_retries = 2;
    cfg.performance.backoff_base = 0.2;
    cfg.performance.graceful_degradation = true;
    let p = Scripted::new(|req, _| match req.meta.persona.as_str() {
        "marcus_rivera" => Step::Fail(Duration::from_millis(20), server_error()),
        "david_kim" => Step::Fail(
            Duration::from_millis(20),
            LlmError::new(ErrorKind::Auth, "scripted 401: bad key").with_status(401),
        ),
        _ => Step::Answer(Duration::from_millis(20)),
    });
    let r = run(cfg, p, ad_hoc(&FOUR)).await;
    assert!(r.success, "{:?}", r.error);
    assert_eq!(r.stop_reason, StopReason::Completed);
    assert_eq!(r.completed_turns, 3);
    assert!(r.error.is_none());
    assert_one_outcome_each(&r, &FOUR, 3);
    assert_eq!(r.skipped.len(), 6);
    for s in &r.skipped {
        match s.persona.as_str() {
            "marcus_rivera" => assert!(
                s.reason.contains("gave up after 3 attempt(s)") && s.reason.contains("HTTP 500"),
                "{}",
                s.reason
            ),
            "david_kim" => assert!(s.reason.contains("not retryable") && s.reason.contains("HTTP 401"), "{}", s.reason),
            other => panic!("{other} was skipped"),
        }
    }
    let speakers: BTreeSet<&str> = spoken(&r).iter().map(|e| e.speaker_id.as_str()).collect();
    assert_eq!(speakers, BTreeSet::from(["sarah_chen", "aisha_okafor"]));
    let m = &r.full_metrics;
    assert_eq!(m.counts.skipped_turns, 6);
    assert_eq!((m.counts.errors, m.counts.retries), (3 * 3 + 3, 3 * 2), "401 is never retried");
}

#[tokio::test(start_paused = true)]
async fn graceful_degradation_off_stops_the_run_and_saves_partial_results() {
    let mut cfg = config(3, TurnPolicy::RoundRobin);
    cfg.performance.max_retries = 1;
    cfg.performance.backoff_base = 0.2;
    cfg.performance.graceful_degradation = false;
    let p = Scripted::new(|req, _| {
        if req.meta.persona == "marcus_rivera" && req.meta.turn >= 2 {
            Step::Fail(Duration::from_millis(20), server_error())
        } else {
            Step::Answer(Duration::from_millis(20))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (h, _rx) = start(cfg, p.clone(), ad_hoc(&FOUR[..3]), Some(dir.path().to_path_buf())).await;
    let run_dir = h.run_dir.clone().unwrap();
    let r = h.wait().await.unwrap();
    assert!(!r.success);
    match &r.stop_reason {
        StopReason::Failed(m) => assert!(
            m.contains("marcus_rivera") && m.contains("turn 2") && m.contains("graceful_degradation is off"),
            "{m}"
        ),
        other => panic!("stopped with {other:?}"),
    }
    assert!(r.error.as_deref().is_some_and(|e| e.contains("marcus_rivera")), "{:?}", r.error);
    assert_eq!(r.completed_turns, 1);
    // The opening, turn 1, and what Sarah said in turn 2 before Marcus failed.
    let said: Vec<(u32, &str)> = r.transcript.iter().map(|e| (e.turn, e.speaker_id.as_str())).collect();
    assert_eq!(
        said,
        [(0, "moderator"), (1, "sarah_chen"), (1, "marcus_rivera"), (1, "aisha_okafor"), (2, "sarah_chen")]
    );
    assert_eq!(r.skipped.len(), 1);
    let late = p.attempts().into_iter().filter(|a| a.turn > 2 || (a.turn == 2 && a.persona == "aisha_okafor")).count();
    assert_eq!(late, 0, "nobody acts after the failure");

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(saved["success"], false);
    assert_eq!(saved["transcript"].as_array().unwrap().len(), 5);
    assert!(saved["error"].as_str().unwrap().contains("graceful_degradation is off"));
    let lines = std::fs::read_to_string(run_dir.join("transcript.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5);
    assert!(run_dir.join("metrics.json").exists());
}

/// Every attempt ends as a success or an error (none is in flight at the end); every error is
/// either retried or given up on, and with no consolidation calls each give-up is exactly one
/// skipped turn (supervisor::fail, retry::decide).
fn assert_counters_add_up(r: &SimulationResults) {
    let m = &r.full_metrics;
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.counts.api_calls, m.successful_calls + m.counts.errors);
    assert_eq!(m.errors_by_kind.values().sum::<u64>(), m.counts.errors);
    assert_eq!(m.counts.retries, m.counts.errors - m.counts.skipped_turns);
    assert_eq!(m.counts.skipped_turns, r.skipped.len() as u64);
    assert_eq!(m.counts.timeouts, m.errors_by_kind.get("timeout").copied().unwrap_or(0));
    assert_eq!(m.successful_calls as usize, spoken(r).len() + r.thoughts.len() + r.passes.len());
    assert_eq!(m.messages as usize, r.transcript.len());
    for kind in ["rate_limited", "server", "timeout"] {
        assert!(m.errors_by_kind.get(kind).copied().unwrap_or(0) > 0, "{kind} happened: {:?}", m.errors_by_kind);
    }
    assert_eq!(m.errors_by_kind.len(), 3, "{:?}", m.errors_by_kind);
    assert!(
        m.counts.retries > 0 && !r.skipped.is_empty(),
        "the profile exercised retries ({}) and skips",
        m.counts.retries
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A fault profile: nothing lost, nothing duplicated, counters add up

#[tokio::test(start_paused = true)]
async fn under_a_fault_profile_every_turn_is_accounted_for_and_counters_add_up() {
    let owned: Vec<String> =
        PersonaDatabase::load(&personas_file()).unwrap().personas.iter().map(|p| p.id.clone()).collect();
    let ids: Vec<&str> = owned.iter().map(String::as_str).collect();
    assert!(ids.len() >= 10);
    let turns = 30; // ~500 attempts: every fault kind and some give-ups show up whatever the text
    let mut cfg = config(turns, TurnPolicy::Parallel);
    cfg.llm.model = "primary-model".into();
    cfg.llm.fallback_model = "fallback-model".into();
    cfg.llm.simulated.latency = LatencyModel::uniform(10.0, 200.0);
    cfg.llm.simulated.faults = FaultProfile {
        rate_limited: 0.20,
        retry_after_secs: 0.05,
        server_error: 0.05,
        timeout: 0.02,
        ..FaultProfile::default()
    };
    cfg.performance.persona_timeout = 1.0;
    cfg.performance.max_retries = 2;
    cfg.performance.fallback_after = 2;
    cfg.performance.backoff_base = 0.1;
    cfg.performance.max_workers = 6;
    cfg.performance.batch_size = 20;
    cfg.simulation.max_personas = 20;

    let dir = tempfile::tempdir().unwrap();
    let (h, mut rx) = start(
        cfg.clone(),
        Arc::new(simulated(&cfg)),
        RunPlan::ad_hoc(TOPIC, personas(&ids)),
        Some(dir.path().to_path_buf()),
    )
    .await;
    let run_dir = h.run_dir.clone().unwrap();
    let events = events_until(&mut rx, |e| matches!(e, RunEvent::Finished(_))).await;
    let r = h.wait().await.unwrap();
    assert!(r.success, "{:?}", r.error);

    // Every (turn, persona): exactly one message, thought, pass or skip with a reason.
    assert_one_outcome_each(&r, &ids, turns);
    for s in &r.skipped {
        assert!(s.reason.contains("gave up after 3 attempt(s) (max_retries = 2)"), "{}", s.reason);
    }
    // No message lost or duplicated: the stream, the transcript and the saved file agree.
    assert_seq_is_the_position(&r);
    let streamed: Vec<&TranscriptEntry> =
        events.iter().filter_map(|e| if let RunEvent::Message(m) = e { Some(m) } else { None }).collect();
    assert_eq!(streamed, r.transcript.iter().collect::<Vec<_>>());
    let saved: Vec<TranscriptEntry> = std::fs::read_to_string(run_dir.join("transcript.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(saved, r.transcript);

    assert_counters_add_up(&r);
    let m = &r.full_metrics;
    // Attempts: messages say how many they took; skips took max_retries + 1.
    let tries = |e: &&TranscriptEntry| e.attempts.unwrap() as u64;
    let known: u64 = spoken(&r).iter().map(tries).sum::<u64>() + 3 * r.skipped.len() as u64;
    let quiet = (r.thoughts.len() + r.passes.len()) as u64;
    assert!(
        known + quiet <= m.counts.api_calls && m.counts.api_calls <= known + 3 * quiet,
        "{known} + {quiet} vs {}",
        m.counts.api_calls
    );
    // The fallback takes over exactly at the third attempt.
    for e in spoken(&r) {
        let on_fallback = e.attempts == Some(3);
        assert_eq!(e.model.as_deref(), Some(if on_fallback { "fallback-model" } else { "primary-model" }), "{e:?}");
    }
    let switched = spoken(&r).iter().filter(|e| e.attempts == Some(3)).count() as u64 + r.skipped.len() as u64;
    assert!(switched <= m.counts.fallbacks && m.counts.fallbacks <= switched + quiet);
    // The headline metrics in results.json are the same counters.
    assert_eq!(
        (r.metrics.counts.api_calls, r.metrics.counts.errors, r.metrics.counts.retries),
        (m.counts.api_calls, m.counts.errors, m.counts.retries)
    );

    // And the faulty run is as reproducible as a clean one.
    let again = run(cfg.clone(), Arc::new(simulated(&cfg)), RunPlan::ad_hoc(TOPIC, personas(&ids))).await;
    assert_eq!(canonical(&again), canonical(&r));
}

// ---------------------------------------------------------------------------------------------
// 5. Restarts

#[tokio::test(start_paused = true)]
async fn a_panicking_persona_is_restarted_with_its_memory() {
    let three = &FOUR[..3];
    let mut cfg = config(4, TurnPolicy::RoundRobin);
    cfg.llm.simulated.latency = LatencyModel::fixed(1000.0);
    let (h, mut rx) = start(cfg.clone(), Arc::new(simulated(&cfg)), ad_hoc(three), None).await;
    events_until(&mut rx, |e| matches!(e, RunEvent::TurnStarted { turn: 2 })).await;

    let old = h.persona(1).unwrap();
    let before = memory_of(&old).await;
    // What it was given for turn 1: the opening and Sarah's first message.
    assert!(heard(before.events()).len() >= 2, "{:?}", before.events());
    old.cast(PersonaMsg::Crash).unwrap();
    let mut new = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Some(a) = h.persona(1).filter(|a| a.get_id() != old.get_id()) {
            new = Some(a);
            break;
        }
    }
    let new = new.expect("persona 1 came back");
    assert_eq!(h.metrics().await.unwrap().counts.restarts, 1);
    let after = memory_of(&new).await;
    assert!(after.len() >= before.len());
    assert_eq!(&after.events()[..before.len()], before.events(), "memory from before the crash is intact");
    assert_eq!(Some(after.events().to_vec()), h.persona_log(1).await, "memory matches the world's record");

    let r = h.wait().await.unwrap();
    assert!(r.success, "{:?}", r.error);
    assert_eq!(r.metrics.counts.restarts, 1);
    assert_one_outcome_each(&r, three, 4);
    assert_eq!(r.full_metrics.counts.api_calls, 12);
}

#[tokio::test(start_paused = true)]
async fn a_persona_that_panics_while_acting_is_asked_again_and_speaks_once() {
    let three = &FOUR[..3];
    let mut cfg = config(3, TurnPolicy::RoundRobin);
    cfg.llm.simulated.latency = LatencyModel::fixed(1000.0);
    let (h, mut rx) = start(cfg.clone(), Arc::new(simulated(&cfg)), ad_hoc(three), None).await;
    events_until(&mut rx, |e| matches!(e, RunEvent::TurnStarted { turn: 2 })).await;
    // Persona 0 speaks for 1 s, then persona 1's call is in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.persona(1).unwrap().cast(PersonaMsg::Crash).unwrap();
    let r = h.wait().await.unwrap();
    assert!(r.success, "{:?}", r.error);
    assert_eq!(r.metrics.counts.restarts, 1);
    assert_one_outcome_each(&r, three, 3);
    assert_seq_is_the_position(&r);
    // The answer to the lost act is ignored; the restarted persona asks once more.
    assert_eq!(r.full_metrics.counts.api_calls, 10);
}

#[tokio::test(start_paused = true)]
async fn a_restart_racing_with_delivery_loses_nothing_the_persona_heard() {
    // Sarah's turn-2 answer crashes Marcus at the very moment it arrives, so the world learns
    // of the failure while it is delivering her message and asking Marcus to act.
    let three = &FOUR[..3];
    let cfg = config(3, TurnPolicy::RoundRobin);
    let (tx, rx) = watch::channel::<Option<String>>(None);
    let p = Scripted::new(move |req, _| {
        if req.meta.persona == "sarah_chen" && req.meta.turn == 2 {
            let rx = rx.clone();
            Step::AnswerAfter(
                Duration::from_secs(1),
                Box::new(move || {
                    let name = format!("{}1", rx.borrow().clone().unwrap());
                    if let Some(cell) = ractor::registry::where_is(name) {
                        let _ = ActorRef::<PersonaMsg>::from(cell).cast(PersonaMsg::Crash);
                    }
                }),
            )
        } else {
            Step::Answer(Duration::from_secs(1))
        }
    });
    let (h, mut ev) = start(cfg, p.clone(), ad_hoc(three), None).await;
    tx.send(Some(actor_prefix(&h))).unwrap();
    events_until(&mut ev, |e| matches!(e, RunEvent::TurnStarted { turn: 3 })).await;
    let memory = memory_of(&h.persona(1).unwrap()).await;
    assert_eq!(
        Some(memory.events().to_vec()),
        h.persona_log(1).await,
        "the restarted memory matches the world's record"
    );
    let r = h.wait().await.unwrap();
    assert!(r.success, "{:?}", r.error);
    assert_eq!(r.metrics.counts.restarts, 1);
    assert_one_outcome_each(&r, three, 3);
    let sarah2 = spoken(&r).into_iter().find(|e| e.turn == 2 && e.speaker_id == "sarah_chen").unwrap().text.clone();
    let marcus2: Vec<Attempt> =
        p.attempts().into_iter().filter(|a| a.persona == "marcus_rivera" && a.turn == 2).collect();
    assert!(!marcus2.is_empty());
    for a in &marcus2 {
        assert!(
            a.prompt.contains(&sarah2),
            "Marcus acted in turn 2 without hearing Sarah's turn-2 message:\n{}",
            a.prompt
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Prompt size stays flat

#[test]
fn prompt_tokens_are_bounded_by_the_memory_window() {
    let spec = personas(&["sarah_chen"]).remove(0);
    let system = system_prompt(&spec);
    let facts = WorldFacts { world: "Board room".into(), topic: TOPIC.into() };
    let sampling = Sampling {
        model: "m".into(),
        temperature: 0.7,
        top_p: None,
        max_tokens: 200,
        seed: None,
        json_actions: false,
        plain: false,
    };
    let speakers = ["Marcus Rivera", "Aisha Okafor", "David Kim"];
    let tokens = |n: u64| {
        let mut m = EpisodicMemory::new(10, 20);
        for i in 0..n {
            let who = speakers[(i % 3) as usize];
            let text = format!("Point {} about moderation latency, appeals and reviewer workload.", i % 7);
            m.push(MemoryEvent::Heard(Arc::new(Utterance::new(
                i,
                (i / 3) as u32,
                who.into(),
                who.into(),
                "Lead".into(),
                None,
                text.into(),
            ))));
        }
        count_request(&act_request(&system, &spec, &m, &facts, "context", n as u32, &sampling))
    };
    let (t50, t500, t5000) = (tokens(50), tokens(500), tokens(5000));
    // Only the digits of turn numbers and the "N earlier events omitted" line grow.
    assert!(t500 as f64 <= t50 as f64 * 1.05 && t5000 as f64 <= t50 as f64 * 1.05, "{t50} {t500} {t5000}");
    let per_event =
        count_tokens("[turn 1] Marcus Rivera (Lead): Point 1 about moderation latency, appeals and reviewer workload.");
    assert!(t5000 < tokens(0) + 31 * (per_event + 2), "bounded by prefix + recent: {t5000}");
}

#[tokio::test(start_paused = true)]
async fn prompt_size_stays_flat_over_a_long_run() {
    let three = &FOUR[..3];
    let turns = 40;
    let mut cfg = config(turns, TurnPolicy::RoundRobin);
    cfg.llm.simulated.latency = LatencyModel::fixed(10.0);
    let (h, mut rx) = start(cfg.clone(), Arc::new(simulated(&cfg)), ad_hoc(three), None).await;
    let mut asked = Vec::new();
    for t in [12, turns] {
        events_until(&mut rx, |e| matches!(e, RunEvent::TurnStarted { turn } if *turn == t)).await;
        let actor = h.persona(2).unwrap();
        let n = match actor.call(PersonaMsg::PromptTokens, None).await {
            Ok(CallResult::Success(n)) => n,
            other => panic!("{other:?}"),
        };
        asked.push((n, memory_of(&actor).await.len()));
    }
    let r = h.wait().await.unwrap();
    assert!(r.success);
    let (early, late) = (asked[0], asked[1]);
    assert!(late.1 > 3 * early.1, "memory kept growing: {asked:?}");
    assert!((late.0 as f64) < early.0 as f64 * 1.25, "the prompt did not: {asked:?}");

    let mean = |from: u32, to: u32| {
        let v: Vec<u64> =
            spoken(&r).iter().filter(|e| (from..=to).contains(&e.turn)).map(|e| e.prompt_tokens.unwrap()).collect();
        v.iter().sum::<u64>() as f64 / v.len() as f64
    };
    let (mid, end) = (mean(12, 16), mean(36, 40));
    assert!(end < mid * 1.25 && end > mid * 0.8, "mean prompt tokens {mid:.0} at turns 12-16, {end:.0} at 36-40");
}
