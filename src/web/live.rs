//! Live runs: each run's events are kept in memory, in order, so a reload or a second tab
//! replays them from any index (`Last-Event-ID` or `?from=`) and then follows new ones.
//!
//! Only while it matters: a finished run's events are dropped after
//! [`ServeLimits::finished_run_linger`](super::ServeLimits) (its results are on disk, and its
//! pages read them), and at most `max_runs` runs go at once.
//!
//! Followers are woken by a `watch` channel carrying the event count rather than by a
//! `broadcast` of the events themselves: a watch never lags or drops, so twenty slow viewers
//! cost one `Vec` and twenty cursors, and none of them can miss a message.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, watch};

use crate::config::SimulationConfig;
use crate::engine::{EngineError, RunHandle, RunOptions, SimulationEngine};
use crate::record::metrics::MetricsSnapshot;
use crate::record::transcript::RunEvent;
use crate::scenario::RunPlan;

use super::error::{WebError, scrub_paths};
use super::results::{ResultsHead, read_head};
use super::security::{resolve_under, valid_id};
use super::state::AppState;

/// One server-sent event: its name and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct SseItem {
    /// Event name (`message`, `turn`, `finished`, `done`, ...).
    pub name: &'static str,
    /// JSON, on one line.
    pub data: String,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Ended (results saved).
    Finished {
        /// True when every turn ran.
        success: bool,
        /// Why it failed, when it did (shown to the user).
        error: Option<String>,
    },
}

#[derive(Debug)]
struct Shared {
    events: Vec<Arc<SseItem>>,
    metrics: Option<MetricsSnapshot>,
    status: RunStatus,
    messages: u64,
    turn: u32,
    /// Once the events are released: the last one (`done`) and its index, for followers that
    /// were still behind.
    released: Option<(usize, Arc<SseItem>)>,
}

/// What a follower at some index gets next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The event at this index.
    Event(usize, Arc<SseItem>),
    /// Nothing yet: wait for a change.
    Wait,
    /// The run is over and the follower has everything.
    End,
}

/// A run started by this server.
#[derive(Debug)]
pub struct LiveRun {
    /// Run id (its folder name).
    pub id: String,
    /// Scenario name or "ad-hoc".
    pub title: String,
    /// Turns planned.
    pub turns: u32,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    // A std mutex: held to push or copy, never across an await.
    shared: Mutex<Shared>,
    count: watch::Sender<usize>,
    cancel: Notify,
}

impl LiveRun {
    fn new(id: String, title: String, turns: u32) -> Self {
        LiveRun {
            id,
            title,
            turns,
            started_at: chrono::Utc::now(),
            shared: Mutex::new(Shared {
                events: Vec::new(),
                metrics: None,
                status: RunStatus::Running,
                messages: 0,
                turn: 0,
                released: None,
            }),
            count: watch::channel(0).0,
            cancel: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event and wakes the followers.
    pub fn push(&self, item: SseItem) {
        let n = {
            let mut s = self.lock();
            s.events.push(Arc::new(item));
            s.events.len()
        };
        self.count.send_replace(n);
    }

    fn push_run_event(&self, ev: &RunEvent) {
        if let RunEvent::Message(_) = ev {
            self.lock().messages += 1;
        }
        if let RunEvent::TurnStarted { turn } = ev {
            self.lock().turn = *turn;
        }
        if let Some(item) = sse_item(ev, self.turns) {
            self.push(item);
        }
    }

    /// The event at `idx`, when there is one yet (and the events are not released).
    pub fn event(&self, idx: usize) -> Option<Arc<SseItem>> {
        self.lock().events.get(idx).cloned()
    }

    /// What a follower that has seen the events before `idx` gets next. After the release a
    /// follower still behind skips to the final `done` event, so its page offers the results.
    pub fn next(&self, idx: usize) -> Next {
        let s = self.lock();
        if let Some(item) = s.events.get(idx) {
            return Next::Event(idx, item.clone());
        }
        match (&s.released, &s.status) {
            (Some((last, done)), _) if idx <= *last => Next::Event(*last, done.clone()),
            (None, RunStatus::Running) => Next::Wait,
            _ => Next::End,
        }
    }

    /// Drops the events kept for replay, keeping the final one for followers still behind.
    fn release(&self) {
        let mut s = self.lock();
        if let Some(last) = s.events.last().cloned() {
            s.released = Some((s.events.len() - 1, last));
        }
        s.events = Vec::new();
    }

    /// Events held in memory (none once released).
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// True before the first event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The status.
    pub fn status(&self) -> RunStatus {
        self.lock().status.clone()
    }

    /// True while the run goes on.
    pub fn is_running(&self) -> bool {
        self.status() == RunStatus::Running
    }

    /// The latest metrics snapshot.
    pub fn metrics(&self) -> Option<MetricsSnapshot> {
        self.lock().metrics.clone()
    }

    /// Asks the run to stop (it saves what it has).
    pub fn cancel(&self) {
        self.cancel.notify_one();
    }

    fn finish(&self, success: bool, error: Option<String>) {
        let error = error.map(|e| scrub_paths(&e));
        let done = SseItem {
            name: "done",
            data: serde_json::json!({ "success": success, "error": error, "run_id": self.id }).to_string(),
        };
        // The `done` event and the finished status change together: whoever sees one sees both.
        let n = {
            let mut s = self.lock();
            s.events.push(Arc::new(done));
            s.status = RunStatus::Finished { success, error };
            s.events.len()
        };
        // Wake followers so they see the closed status and end their streams.
        self.count.send_replace(n);
    }

    /// A summary for the Live page's poller.
    pub fn progress(&self) -> Progress {
        let s = self.lock();
        Progress {
            status: s.status.clone(),
            turn: s.turn,
            turns: self.turns,
            messages: s.messages,
            elapsed_s: (chrono::Utc::now() - self.started_at).num_milliseconds() as f64 / 1000.0,
            metrics: s.metrics.clone(),
        }
    }
}

/// What `GET /api/runs/{id}/metrics` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Running or finished.
    pub status: RunStatus,
    /// The turn going on.
    pub turn: u32,
    /// Turns planned.
    pub turns: u32,
    /// Messages so far.
    pub messages: u64,
    /// Seconds since the start.
    pub elapsed_s: f64,
    /// Live metrics (calls in flight, latency percentiles and buckets, errors, tokens, cost).
    pub metrics: Option<MetricsSnapshot>,
}

/// The browser-facing form of a run event; `None` for what the page does not show (exchanges
/// carry whole requests and answers; thoughts are private).
pub fn sse_item(ev: &RunEvent, turns: u32) -> Option<SseItem> {
    let (name, data) = match ev {
        RunEvent::Message(e) => ("message", serde_json::to_string(e).ok()?),
        RunEvent::TurnStarted { turn } => ("turn", serde_json::json!({ "turn": turn, "of": turns }).to_string()),
        RunEvent::TurnEnded { turn } => ("turn_end", serde_json::json!({ "turn": turn, "of": turns }).to_string()),
        RunEvent::Skipped(s) => ("skipped", serde_json::to_string(s).ok()?),
        RunEvent::Passed { turn, persona } => {
            ("passed", serde_json::json!({ "turn": turn, "persona": persona }).to_string())
        }
        RunEvent::Intervention { turn, description } => {
            ("intervention", serde_json::json!({ "turn": turn, "description": description }).to_string())
        }
        RunEvent::Retry { persona, turn, attempt, error } => (
            "retry",
            serde_json::json!({ "persona": persona, "turn": turn, "attempt": attempt, "error": error }).to_string(),
        ),
        RunEvent::Fallback { persona, turn, to } => {
            ("fallback", serde_json::json!({ "persona": persona, "turn": turn, "to": to }).to_string())
        }
        RunEvent::Finished(f) => ("finished", serde_json::to_string(f).ok()?),
        RunEvent::PromptTrimmed(t) => ("prompt_trimmed", serde_json::to_string(t).ok()?),
        RunEvent::Exchange(_) | RunEvent::Thought { .. } => return None,
    };
    Some(SseItem { name, data })
}

/// Which shared provider a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    /// The configured one.
    Configured,
    /// The built-in simulated provider.
    Simulated,
}

/// The engine for a run: its own config, a shared provider (so budgets are shared).
pub fn engine_for(st: &AppState, cfg: SimulationConfig, choice: ProviderChoice) -> SimulationEngine {
    let provider = match choice {
        ProviderChoice::Configured => st.provider.clone(),
        ProviderChoice::Simulated => st.simulated.clone(),
    };
    SimulationEngine::with_provider(cfg, provider)
}

/// Starts a run, saved under `output_dir/conversations`, and registers it; refused with
/// [`WebError::TooManyRuns`] while `max_runs` runs are going.
pub async fn start_run(
    st: &AppState,
    plan: RunPlan,
    cfg: SimulationConfig,
    choice: ProviderChoice,
) -> Result<Arc<LiveRun>, WebError> {
    let limit = st.limits.max_runs.max(1);
    let slot = st
        .run_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| WebError::TooManyRuns { running: limit - st.run_slots.available_permits().min(limit), limit })?;
    let turns = cfg.simulation.max_turns;
    let title = plan.name.clone();
    let engine = engine_for(st, cfg, choice);
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = RunOptions {
        save_under: Some(st.conversations_dir()),
        events: Some(tx),
        without_exchanges: true,
        ..Default::default()
    };
    let handle = engine.start(plan, opts).await.map_err(|e| match e {
        EngineError::Output { .. } | EngineError::Save(_) | EngineError::Spawn(_) => {
            WebError::internal("starting a run", e)
        }
        other => WebError::BadRequest(other.to_string()),
    })?;
    let live = Arc::new(LiveRun::new(handle.run_id.clone(), title, turns));
    st.add_run(live.clone());
    tokio::spawn(drive(st.clone(), live.clone(), handle, rx, slot));
    Ok(live)
}

/// Moves a run's events into its `LiveRun`, samples metrics, relays cancellation; when the run
/// ends, gives its slot back and, a little later, drops it from memory.
async fn drive(
    st: AppState,
    live: Arc<LiveRun>,
    handle: RunHandle,
    mut rx: mpsc::UnboundedReceiver<RunEvent>,
    slot: OwnedSemaphorePermit,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    let last = matches!(ev, RunEvent::Finished(_));
                    live.push_run_event(&ev);
                    if last { break; }
                }
                None => break,
            },
            _ = tick.tick() => {
                if let Some(m) = handle.metrics().await {
                    live.lock().metrics = Some(m);
                }
            }
            _ = live.cancel.notified() => handle.stop(),
        }
    }
    match crate::review::finish(handle).await {
        Ok(r) => {
            live.lock().metrics = Some(r.full_metrics.clone());
            live.finish(r.success, r.error.clone());
        }
        Err(e) => {
            tracing::error!(run = %live.id, error = %e, "run failed");
            live.finish(false, Some("the run failed; the server log has the details".into()));
        }
    }
    drop(slot);
    // A Live page open at the end has this long to read the last events; after that the saved
    // run answers for it.
    tokio::time::sleep(st.limits.finished_run_linger).await;
    live.release();
    st.forget_run(&live);
}

/// `?from=N`: the first event index to send.
#[derive(Debug, Deserialize)]
pub struct FromQuery {
    from: Option<usize>,
}

/// The server-sent events a Live page follows.
type EventStream = BoxStream<'static, Result<Event, Infallible>>;

/// `GET /runs/{id}/events`: the run's events as server-sent events, from `Last-Event-ID + 1`
/// or `?from=`, then live until the run ends. A run no longer in memory answers with one
/// `done` event from its saved results.
pub async fn events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FromQuery>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if !valid_id(&id) {
        return Err(WebError::NotFound);
    }
    let Some(live) = st.live_run(&id) else {
        let head = saved_head(&st, &id).await?;
        let (success, error) = match head {
            Some(h) => (h.success, h.error.map(|e| scrub_paths(&e))),
            None => (false, Some("this run has no results.json: it was interrupted".to_string())),
        };
        let data = serde_json::json!({ "success": success, "error": error, "run_id": id }).to_string();
        let done = Event::default().id("0").event("done").data(data);
        let once: EventStream = futures_util::stream::iter([Ok(done)]).boxed();
        return Ok(Sse::new(once).into_response());
    };
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
    let from = last.map(|l| l + 1).or(q.from).unwrap_or(0);
    let rx = live.count.subscribe();
    let stream = futures_util::stream::unfold((live, rx, from), |(live, mut rx, idx)| async move {
        loop {
            match live.next(idx) {
                Next::Event(at, item) => {
                    let ev = Event::default().id(at.to_string()).event(item.name).data(item.data.as_str());
                    return Some((Ok::<_, Infallible>(ev), (live, rx, at + 1)));
                }
                Next::End => return None,
                // Returns at once when events arrived since the last look.
                Next::Wait => {
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// The saved results' head of a run this server no longer holds; `None` when the folder has
/// no readable results.json.
async fn saved_head(st: &AppState, id: &str) -> Result<Option<ResultsHead>, WebError> {
    let dir = resolve_under(&st.conversations_dir(), id)?;
    tokio::task::spawn_blocking(move || read_head(&dir)).await.map_err(|e| WebError::internal("reading a run", e))
}

/// `GET /api/runs/{id}/metrics`: progress and live metrics as JSON (for a run no longer in
/// memory, its saved figures without the live metrics).
pub async fn metrics(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Progress>, WebError> {
    if !valid_id(&id) {
        return Err(WebError::NotFound);
    }
    if let Some(live) = st.live_run(&id) {
        return Ok(Json(live.progress()));
    }
    let h = saved_head(&st, &id).await?.ok_or(WebError::NotFound)?;
    Ok(Json(Progress {
        status: RunStatus::Finished { success: h.success, error: h.error.map(|e| scrub_paths(&e)) },
        turn: h.completed_turns,
        turns: h.config.turns,
        messages: h.metrics.total_messages,
        elapsed_s: h.metrics.duration,
        metrics: None,
    }))
}

/// `POST /runs/{id}/cancel`: asks the run to stop; it saves what it has. A run that already
/// ended just shows its results.
pub async fn cancel(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, WebError> {
    if !valid_id(&id) {
        return Err(WebError::NotFound);
    }
    match st.live_run(&id) {
        Some(live) => live.cancel(),
        None => {
            resolve_under(&st.conversations_dir(), &id)?;
        }
    }
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// The Live page: the script fills it from the SSE stream and the metrics poller.
pub fn live_page(st: &AppState, live: &LiveRun) -> axum::response::Html<String> {
    use super::templates::{Nav, csrf_field, page};
    let (id, turns) = (live.id.as_str(), live.turns);
    let body = html! {
        h1 { "Live run " code { (id) } }
        div #live data-run=(id) data-turns=(turns) {
            p.lead {
                span #status .status.running { "running" } " " (live.title) " "
                progress #progress max=(turns) value="0" {} " "
                span #turn-label { "turn 0 of " (turns) }
            }
            form method="post" action=(format!("/runs/{id}/cancel")) #cancel-form .inline {
                (csrf_field(&st.csrf))
                button.danger { "Cancel run" }
            }
            p #done-link hidden { a.button href=(format!("/runs/{id}")) { "Open the results" } }
            (live_metrics())
            section { h2 { "Transcript" } ol #transcript .transcript {} }
        }
    };
    page(&format!("Live {id}"), Nav::None, &st.csrf, body)
}

/// The Live page's metrics, each filled in by the script through its id.
fn live_metrics() -> Markup {
    const FIGURES: [(&str, &str, &str); 8] = [
        ("Messages", "m-messages", "0"),
        ("Calls in flight", "m-inflight", "0"),
        ("API calls", "m-calls", "0"),
        ("Latency p50 / p99", "m-lat", "–"),
        ("Tokens", "m-tokens", "0"),
        ("Cost", "m-cost", "$0.0000"),
        ("Errors by kind", "m-errors", "none"),
        ("Elapsed", "m-elapsed", "0 s"),
    ];
    html! {
        section.live-metrics {
            h2 { "Live metrics" }
            dl.metrics { @for (label, id, start) in FIGURES { dt { (label) } dd id=(id) { (start) } } }
            h3 { "Latency histogram" }
            div #histogram .histogram {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> SseItem {
        SseItem { name: "message", data: format!("{{\"n\":{n}}}") }
    }

    #[test]
    fn a_released_run_keeps_only_its_end_for_followers_behind() {
        let run = LiveRun::new("r".into(), "t".into(), 3);
        assert_eq!(run.next(0), Next::Wait, "nothing yet, still running");
        for n in 0..5 {
            run.push(item(n));
        }
        assert!(matches!(run.next(4), Next::Event(4, _)));
        assert_eq!(run.next(5), Next::Wait);
        run.finish(true, None);
        assert_eq!(run.len(), 6);
        assert_eq!(run.next(6), Next::End, "a follower with everything ends");
        run.release();
        assert_eq!(run.len(), 0, "the events are dropped");
        for behind in [0, 3, 5] {
            match run.next(behind) {
                Next::Event(5, done) => assert_eq!(done.name, "done"),
                other => panic!("a follower at {behind} got {other:?}"),
            }
        }
        assert_eq!(run.next(6), Next::End);
    }
}
