//! The shard's host actor, in process: a persona placed on it with a history acts exactly as
//! the same persona does in a local run, a repeated act is answered from what it did (never
//! paid twice), and an act for a persona it does not have is reported lost.

use std::sync::Arc;

use ractor::Actor;
use tokio::sync::mpsc;
use troupe_sim::actors::host::{HostActor, HostArgs, HostMsg, HostReport};
use troupe_sim::actors::metrics::{MetricsActor, MetricsArgs};
use troupe_sim::actors::persona::{Outcome, PersonaSpawn};
use troupe_sim::actors::supervisor::{SupervisorActor, SupervisorArgs};
use troupe_sim::config::{ProviderKind, SimulationConfig};
use troupe_sim::memory::{MemoryEvent, Utterance};
use troupe_sim::persona::PersonaSpec;
use troupe_sim::prompt::{Sampling, WorldFacts};

async fn host() -> (
    ractor::ActorRef<HostMsg>,
    mpsc::UnboundedReceiver<HostReport>,
    mpsc::UnboundedReceiver<troupe_sim::record::transcript::RunEvent>,
) {
    host_with_latency(0.0).await
}

async fn host_with_latency(
    ms: f64,
) -> (
    ractor::ActorRef<HostMsg>,
    mpsc::UnboundedReceiver<HostReport>,
    mpsc::UnboundedReceiver<troupe_sim::record::transcript::RunEvent>,
) {
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::Simulated;
    cfg.llm.simulated.latency.ms = ms;
    let (provider, _) = troupe_sim::llm::provider_from_config(&cfg).unwrap();
    let margs =
        MetricsArgs { provider: "simulated".into(), requests_per_minute: None, tokens_per_minute: None, monitor: None };
    let (metrics, _) = Actor::spawn(None, MetricsActor, margs).await.unwrap();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let args = SupervisorArgs {
        provider,
        config: Arc::new(cfg),
        metrics,
        instance: 1 << 50,
        pricing: Arc::new(Default::default()),
        events: Some(ev_tx),
        exchanges: true,
    };
    let (supervisor, _) = Actor::spawn(None, SupervisorActor, args).await.unwrap();
    let (out, rx) = mpsc::unbounded_channel();
    let (h, _) = Actor::spawn(None, HostActor, HostArgs { supervisor, out }).await.unwrap();
    (h, rx, ev_rx)
}

fn spawn_for(h: &ractor::ActorRef<HostMsg>) -> PersonaSpawn {
    let spec: PersonaSpec =
        serde_json::from_value(serde_json::json!({"id": "ana", "name": "Ana Lima", "role": "Nurse"})).unwrap();
    PersonaSpawn {
        spec: Arc::new(spec),
        system: "You are Ana Lima, a nurse.".into(),
        facts: Arc::new(WorldFacts { world: "Ward".into(), topic: "Night shifts".into() }),
        sampling: Sampling {
            model: "m".into(),
            temperature: 0.7,
            top_p: Some(1.0),
            max_tokens: 100,
            seed: Some(7),
            json_actions: false,
            plain: false,
        },
        memory_prefix: 2,
        memory_recent: 8,
        consolidate_every: 0,
        world: h.get_derived(),
    }
}

#[tokio::test]
async fn a_placed_persona_acts_and_a_repeated_act_is_answered_from_what_it_did() {
    let (h, mut rx, _ev) = host().await;
    let heard = MemoryEvent::Heard(Arc::new(Utterance::new(
        0,
        0,
        "moderator".into(),
        "Moderator".into(),
        "".into(),
        None,
        "Should we change the rota?".into(),
    )));
    let place = Some(Box::new((spawn_for(&h), Vec::new())));
    h.cast(HostMsg::Act { turn: 1, idx: 3, batch: vec![heard.clone()], context: "ctx".into(), place }).unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    let HostReport::Acted { turn: 1, idx: 3, outcome: Outcome::Replied { .. }, .. } = &first else {
        panic!("{first:?}")
    };
    h.cast(HostMsg::Act { turn: 1, idx: 3, batch: vec![heard], context: "ctx".into(), place: None }).unwrap();
    let again = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(first, again);
    h.cast(HostMsg::Act { turn: 1, idx: 9, batch: vec![], context: "ctx".into(), place: None }).unwrap();
    let lost = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(lost, HostReport::Lost { turn: 1, idx: 9 });
}

fn heard(text: &str) -> MemoryEvent {
    MemoryEvent::Heard(Arc::new(Utterance::new(
        0,
        0,
        "moderator".into(),
        "Moderator".into(),
        "".into(),
        None,
        text.into(),
    )))
}

/// A new turn's act for a persona whose last act has not finished here (the world took another
/// shard's answer) is reported lost, so the coordinator rebuilds it: its memory lacks that act.
/// An act for a turn older than the one it is in is ignored: acting on it would give the
/// persona a batch twice.
#[tokio::test(start_paused = true)]
async fn an_unfinished_act_makes_the_next_one_lost_and_an_older_act_is_ignored() {
    let (h, mut rx, _ev) = host_with_latency(300.0).await;
    let place = Some(Box::new((spawn_for(&h), Vec::new())));
    h.cast(HostMsg::Act { turn: 1, idx: 0, batch: vec![heard("first?")], context: "c".into(), place }).unwrap();
    h.cast(HostMsg::Act { turn: 2, idx: 0, batch: vec![heard("second?")], context: "c".into(), place: None }).unwrap();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(r, HostReport::Lost { turn: 2, idx: 0 });
    // Rebuilt for turn 2; then a held-back part of turn 1 arrives: nothing more is done.
    let place = Some(Box::new((spawn_for(&h), vec![heard("first?")])));
    h.cast(HostMsg::Act { turn: 2, idx: 0, batch: vec![heard("second?")], context: "c".into(), place }).unwrap();
    h.cast(HostMsg::Act { turn: 1, idx: 0, batch: vec![heard("first?")], context: "c".into(), place: None }).unwrap();
    let mut reports = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await {
        reports.push(r);
    }
    // The first act's answer (turn 1) may still come from the replaced actor's call; turn 2's
    // comes once, and nothing for turn 1 after it.
    let turns: Vec<u32> = reports
        .iter()
        .filter_map(|r| match r {
            HostReport::Acted { turn, .. } => Some(*turn),
            _ => None,
        })
        .collect();
    assert_eq!(turns.iter().filter(|t| **t == 2).count(), 1, "{reports:?}");
    assert!(turns.iter().all(|t| *t == 2), "an older act was acted on: {reports:?}");
}
