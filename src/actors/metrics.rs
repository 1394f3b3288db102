//! The metrics actor: HDR latency histograms and counters, fed by messages from the other
//! actors; anyone can ask it for a snapshot while the run goes on.

use std::collections::BTreeMap;
use tokio::time::Instant;

use hdrhistogram::Histogram;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::monitor::MonitorMsg;
use crate::llm::{ErrorKind, TokenCounters, Usage};
use crate::record::exposition::{Exposition, HistogramSample};
use crate::record::metrics::{MetricsSnapshot, Percentiles};

/// The metrics actor (holds no data; see `MetricsState`).
#[derive(Debug)]
pub struct MetricsActor;

/// What the metrics actor records.
#[derive(Debug)]
pub enum MetricsMsg {
    /// A call attempt started after waiting `queued_us` in the supervisor's queue.
    CallStarted {
        /// Queue wait, microseconds.
        queued_us: u64,
        /// For an act's first call: how long the world's message waited in the persona's
        /// mailbox, microseconds (sent with the call rather than as a message of its own).
        mailbox_us: Option<u64>,
    },
    /// A call attempt succeeded.
    CallSucceeded {
        /// Model that answered.
        model: String,
        /// Persona index.
        persona: usize,
        /// Attempt latency, microseconds.
        latency_us: u64,
        /// Tokens (with how many are estimates).
        usage: Usage,
        /// What it cost, when the model has a price.
        cost_usd: Option<f64>,
        /// The part of `cost_usd` priced from estimated tokens.
        cost_usd_estimated: f64,
        /// The persona's whole response time for this act (all attempts), microseconds.
        response_us: u64,
    },
    /// A call attempt failed.
    CallFailed {
        /// Model.
        model: String,
        /// Class of failure.
        kind: ErrorKind,
        /// Attempt latency, microseconds.
        latency_us: u64,
    },
    /// A retry was scheduled.
    Retry,
    /// A call switched to the fallback model.
    Fallback,
    /// A persona's turn was skipped.
    Skipped,
    /// A persona actor was restarted.
    Restart,
    /// A message went into the transcript.
    Message,
    /// A turn finished after `us` microseconds.
    TurnDuration {
        /// Microseconds.
        us: u64,
    },
    /// Reply with a snapshot.
    Snapshot(RpcReplyPort<MetricsSnapshot>),
    /// Reply with the figures in the Prometheus families (`/metrics`).
    Export(RpcReplyPort<Exposition>),
}

/// What the metrics actor starts with.
#[derive(Debug, Clone, Default)]
pub struct MetricsArgs {
    /// The provider's name (a label on the call metrics).
    pub provider: String,
    /// `llm.requests_per_minute`, shown as the budget.
    pub requests_per_minute: Option<u32>,
    /// `llm.tokens_per_minute`, shown as the budget.
    pub tokens_per_minute: Option<u32>,
    /// The process' monitor, told when this actor starts and (with its last figures) stops.
    pub monitor: Option<ActorRef<MonitorMsg>>,
}

/// The metrics actor's state.
#[derive(Debug)]
pub struct MetricsState {
    started: Instant,
    args: MetricsArgs,
    snap: MetricsSnapshot,
    /// The counters behind estimated tokens.
    counters: TokenCounters,
    latency: Timing,
    by_model: BTreeMap<String, Timing>,
    persona_response: Timing,
    persona_sums: BTreeMap<usize, (u64, u64)>,
    turns: Timing,
    mailbox: Timing,
    queue: Timing,
}

/// A latency histogram (1 µs .. 1 hour at 3 significant figures; values above are clamped)
/// and the exact sum of what it recorded (Prometheus' `_sum`).
#[derive(Debug, Clone)]
struct Timing {
    h: Histogram<u64>,
    sum_us: u64,
}

fn hist() -> Timing {
    let h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid");
    Timing { h, sum_us: 0 }
}

fn record(t: &mut Timing, us: u64) {
    t.h.saturating_record(us.max(1));
    t.sum_us = t.sum_us.saturating_add(us);
}

impl Timing {
    fn sample(&self) -> HistogramSample {
        HistogramSample::from_hdr(&self.h, self.sum_us)
    }
}

fn percentiles(t: &Timing) -> Percentiles {
    let h = &t.h;
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

impl MetricsState {
    /// Fresh state.
    pub fn new() -> Self {
        Self::with_args(MetricsArgs::default())
    }

    /// Fresh state with the labels and budget of `args`.
    pub fn with_args(args: MetricsArgs) -> Self {
        MetricsState {
            started: Instant::now(),
            args,
            snap: MetricsSnapshot::default(),
            counters: TokenCounters::default(),
            latency: hist(),
            by_model: BTreeMap::new(),
            persona_response: hist(),
            persona_sums: BTreeMap::new(),
            turns: hist(),
            mailbox: hist(),
            queue: hist(),
        }
    }

    /// Applies one message (everything but `Snapshot`).
    pub fn apply(&mut self, msg: MetricsMsg) {
        let s = &mut self.snap;
        match msg {
            MetricsMsg::CallStarted { queued_us, mailbox_us } => {
                s.counts.api_calls += 1;
                s.in_flight += 1;
                record(&mut self.queue, queued_us);
                if let Some(us) = mailbox_us {
                    record(&mut self.mailbox, us);
                }
            }
            MetricsMsg::CallSucceeded {
                model,
                persona,
                latency_us,
                usage,
                cost_usd,
                cost_usd_estimated,
                response_us,
            } => {
                record(&mut self.persona_response, response_us);
                let e = self.persona_sums.entry(persona).or_default();
                e.0 += 1;
                e.1 += response_us;
                match cost_usd {
                    Some(c) => s.counts.cost_usd += c,
                    None => {
                        if !s.unpriced_models.contains(&model) {
                            s.unpriced_models.push(model.clone());
                        }
                    }
                }
                s.in_flight = s.in_flight.saturating_sub(1);
                s.successful_calls += 1;
                s.counts.prompt_tokens += usage.prompt_tokens;
                s.counts.completion_tokens += usage.completion_tokens;
                let estimated = usage.estimated_part();
                s.prompt_tokens_estimated += estimated.prompt_tokens;
                s.completion_tokens_estimated += estimated.completion_tokens;
                s.counts.cost_usd_estimated += cost_usd_estimated;
                self.counters = self.counters.union(usage.estimated_by);
                record(&mut self.latency, latency_us);
                record(self.by_model.entry(model).or_insert_with(hist), latency_us);
            }
            MetricsMsg::CallFailed { model, kind, latency_us } => {
                s.in_flight = s.in_flight.saturating_sub(1);
                s.counts.errors += 1;
                *s.errors_by_kind.entry(kind.as_str().to_string()).or_default() += 1;
                if kind == ErrorKind::Timeout {
                    s.counts.timeouts += 1;
                }
                record(&mut self.latency, latency_us);
                record(self.by_model.entry(model).or_insert_with(hist), latency_us);
            }
            MetricsMsg::Retry => s.counts.retries += 1,
            MetricsMsg::Fallback => s.counts.fallbacks += 1,
            MetricsMsg::Skipped => s.counts.skipped_turns += 1,
            MetricsMsg::Restart => s.counts.restarts += 1,
            MetricsMsg::Message => s.messages += 1,
            MetricsMsg::TurnDuration { us } => record(&mut self.turns, us),
            MetricsMsg::Snapshot(_) | MetricsMsg::Export(_) => {}
        }
    }

    /// The current figures.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut s = self.snap.clone();
        s.elapsed_s = self.started.elapsed().as_secs_f64();
        s.counts.total_tokens = s.counts.prompt_tokens + s.counts.completion_tokens;
        s.counts.tokens_estimated = s.prompt_tokens_estimated + s.completion_tokens_estimated;
        s.tokens_estimated_by = self.counters.names().into_iter().map(String::from).collect();
        s.counts.tokens_estimate_note = estimate_note(&s);
        s.throughput_per_min = if s.elapsed_s > 0.0 { s.messages as f64 * 60.0 / s.elapsed_s } else { 0.0 };
        s.counts.calls_per_message = if s.messages > 0 { s.counts.api_calls as f64 / s.messages as f64 } else { 0.0 };
        s.counts.error_rate =
            if s.counts.api_calls > 0 { s.counts.errors as f64 / s.counts.api_calls as f64 } else { 0.0 };
        s.llm_latency = percentiles(&self.latency);
        s.llm_latency_by_model = self.by_model.iter().map(|(k, h)| (k.clone(), percentiles(h))).collect();
        s.persona_response = percentiles(&self.persona_response);
        s.persona_mean_ms =
            self.persona_sums.iter().map(|(k, (n, sum))| (*k, *sum as f64 / (*n).max(1) as f64 / 1000.0)).collect();
        s.turn_duration = percentiles(&self.turns);
        s.mailbox_delay = percentiles(&self.mailbox);
        s.queue_wait = percentiles(&self.queue);
        s.latency_buckets = buckets(&self.latency.h);
        s.latency_recorded =
            self.latency.h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        s
    }
}

impl MetricsState {
    /// The figures as Prometheus families (names and labels in the README's "Monitoring").
    pub fn export(&self) -> Exposition {
        let mut e = Exposition::default();
        let s = &self.snap;
        let p = [("provider", self.args.provider.as_str())];
        e.counter("troupe_llm_requests_total", "LLM call attempts started.", &p, s.counts.api_calls as f64);
        e.gauge("troupe_llm_requests_in_flight", "LLM call attempts in flight.", &p, s.in_flight as f64);
        let help = "Failed LLM call attempts by kind.";
        // The 429s' series is there from the start (a dashboard shows 0, not "no data").
        let rate_limited = [p[0], ("kind", ErrorKind::RateLimited.as_str())];
        e.counter("troupe_llm_request_errors_total", help, &rate_limited, 0.0);
        for (kind, n) in &s.errors_by_kind {
            let l = [p[0], ("kind", kind.as_str())];
            e.counter("troupe_llm_request_errors_total", help, &l, *n as f64);
        }
        e.counter("troupe_llm_retries_total", "Retries scheduled.", &p, s.counts.retries as f64);
        e.counter("troupe_llm_fallbacks_total", "Calls moved to the fallback model.", &p, s.counts.fallbacks as f64);
        for (dir, n) in [("prompt", s.counts.prompt_tokens), ("completion", s.counts.completion_tokens)] {
            let l = [p[0], ("direction", dir)];
            e.counter("troupe_llm_tokens_total", "Tokens sent (prompt) and received (completion).", &l, n as f64);
        }
        e.counter("troupe_llm_cost_usd_total", "USD spent on priced models.", &p, s.counts.cost_usd);
        for (model, t) in &self.by_model {
            let l = [p[0], ("model", model.as_str())];
            e.histogram("troupe_llm_request_duration_seconds", "LLM call attempt latency.", &l, t.sample());
        }
        e.histogram(
            "troupe_llm_queue_wait_seconds",
            "Time calls waited in the supervisor's queue.",
            &[],
            self.queue.sample(),
        );
        let help = "A persona's response time for one act, all attempts.";
        e.histogram("troupe_persona_response_duration_seconds", help, &[], self.persona_response.sample());
        let help = "Time messages waited in persona mailboxes.";
        e.histogram("troupe_persona_mailbox_delay_seconds", help, &[], self.mailbox.sample());
        e.histogram("troupe_turn_duration_seconds", "Turn duration.", &[], self.turns.sample());
        e.counter("troupe_messages_total", "Transcript messages.", &[], s.messages as f64);
        e.counter("troupe_persona_turns_skipped_total", "Persona turns skipped.", &[], s.counts.skipped_turns as f64);
        e.counter("troupe_persona_restarts_total", "Persona actors restarted.", &[], s.counts.restarts as f64);
        if let Some(rpm) = self.args.requests_per_minute {
            let help = "The requests-per-minute budget (llm.requests_per_minute).";
            e.setting("troupe_budget_requests_per_minute", help, &p, f64::from(rpm));
        }
        if let Some(tpm) = self.args.tokens_per_minute {
            let help = "The tokens-per-minute budget (llm.tokens_per_minute).";
            e.setting("troupe_budget_tokens_per_minute", help, &p, f64::from(tpm));
        }
        e
    }
}

impl Default for MetricsState {
    fn default() -> Self {
        Self::new()
    }
}

/// What is estimated in `s` and how, in one sentence; `None` when the servers reported every
/// token.
fn estimate_note(s: &MetricsSnapshot) -> Option<String> {
    if s.counts.tokens_estimated == 0 {
        return None;
    }
    let approximate = s.tokens_estimated_by.iter().any(|c| c == "approximate");
    let mut note = format!(
        "{} of {} tokens are estimates: the server reported no usage for some calls, so they were counted with {}{}; \
         an estimated reply never counts more than its request's max_tokens",
        s.counts.tokens_estimated,
        s.counts.total_tokens,
        s.tokens_estimated_by.join(" and "),
        if approximate {
            " (the approximate counter, for models whose tokenizer is unknown, runs about 20% high)"
        } else {
            ""
        },
    );
    if s.counts.cost_usd_estimated > 0.0 {
        note.push_str(&format!("; ${:.6} of the cost is priced from them", s.counts.cost_usd_estimated));
    }
    Some(note)
}

/// Log-spaced buckets (1 ms .. 1 h) with their counts, for the latency chart.
fn buckets(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut lo = 0u64;
    let mut hi = 1_000u64;
    while lo <= h.max() && hi <= 3_600_000_000 {
        let n = h.count_between(lo, hi.saturating_sub(1));
        out.push((hi as f64 / 1000.0, n));
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    out
}

impl Actor for MetricsActor {
    type Msg = MetricsMsg;
    type State = MetricsState;
    type Arguments = MetricsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MetricsArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        if let Some(m) = &args.monitor {
            let _ = m.cast(MonitorMsg::Attach(myself));
        }
        Ok(MetricsState::with_args(args))
    }

    async fn post_stop(&self, myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(m) = &state.args.monitor {
            let _ = m.cast(MonitorMsg::Detach { id: myself.get_id(), last: state.export() });
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MetricsMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
            MetricsMsg::Export(reply) => {
                let _ = reply.send(state.export());
            }
            other => state.apply(other),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_percentiles() {
        let mut s = MetricsState::new();
        for i in 1..=100u64 {
            // Every other call is an act's first: it carries the act's mailbox delay.
            s.apply(MetricsMsg::CallStarted { queued_us: 0, mailbox_us: (i % 2 == 0).then_some(i) });
            s.apply(MetricsMsg::CallSucceeded {
                model: "m".into(),
                persona: (i % 4) as usize,
                latency_us: i * 1000,
                usage: Usage::new(10, 5),
                cost_usd: Some(0.001),
                cost_usd_estimated: 0.0,
                response_us: i * 2000,
            });
            s.apply(MetricsMsg::Message);
        }
        s.apply(MetricsMsg::CallStarted { queued_us: 0, mailbox_us: None });
        s.apply(MetricsMsg::CallFailed { model: "m".into(), kind: ErrorKind::Timeout, latency_us: 5 });
        let snap = s.snapshot();
        assert_eq!(snap.counts.api_calls, 101);
        assert_eq!(snap.counts.errors, 1);
        assert_eq!(snap.counts.timeouts, 1);
        assert_eq!(snap.in_flight, 0);
        assert_eq!(snap.counts.total_tokens, 1500);
        assert!((snap.llm_latency_by_model["m"].p50_ms - 50.0).abs() < 1.0);
        assert!((snap.counts.calls_per_message - 1.01).abs() < 1e-9);
        // Each success also times its persona's whole response, and first calls the mailbox.
        assert_eq!(snap.persona_response.count, 100);
        assert!((snap.persona_response.p50_ms - 100.0).abs() < 2.0, "{:?}", snap.persona_response);
        assert_eq!(snap.persona_mean_ms.len(), 4);
        assert_eq!(snap.mailbox_delay.count, 50);
        let bucketed: u64 = snap.latency_buckets.iter().map(|b| b.1).sum();
        assert_eq!(bucketed, 101);
        assert_eq!((snap.counts.tokens_estimated, snap.counts.tokens_estimate_note.as_deref()), (0, None));
        let json = serde_json::to_value(&snap).unwrap();
        assert!(json.as_object().unwrap().keys().all(|k| !k.contains("estimat")), "{json}");
    }

    #[test]
    fn estimated_tokens_and_their_cost_are_counted_apart() {
        use crate::llm::tokens::Counter;
        let mut s = MetricsState::new();
        let ok = |usage: Usage, cost: f64, estimated: f64| MetricsMsg::CallSucceeded {
            model: "gpt-4o-mini".into(),
            persona: 0,
            latency_us: 1000,
            usage,
            cost_usd: Some(cost),
            cost_usd_estimated: estimated,
            response_us: 1000,
        };
        s.apply(ok(Usage::new(100, 20), 0.002, 0.0));
        let estimated = Usage {
            prompt_estimated: true,
            completion_estimated: true,
            estimated_by: TokenCounters::of(Counter::O200kBase),
            ..Usage::new(50, 10)
        };
        s.apply(ok(estimated, 0.001, 0.001));
        let approximate = Usage {
            completion_estimated: true,
            estimated_by: TokenCounters::of(Counter::Approximate),
            ..Usage::new(30, 5)
        };
        s.apply(ok(approximate, 0.0005, 0.0001));
        let snap = s.snapshot();
        assert_eq!(
            (snap.counts.prompt_tokens, snap.counts.completion_tokens, snap.counts.total_tokens),
            (180, 35, 215)
        );
        assert_eq!(
            (snap.prompt_tokens_estimated, snap.completion_tokens_estimated, snap.counts.tokens_estimated),
            (50, 15, 65)
        );
        assert!((snap.counts.cost_usd_estimated - 0.0011).abs() < 1e-12);
        assert_eq!(snap.tokens_estimated_by, ["approximate", "tiktoken o200k_base"]);
        let note = snap.counts.tokens_estimate_note.unwrap();
        assert!(note.starts_with("65 of 215 tokens are estimates"), "{note}");
        assert!(
            note.contains("tiktoken o200k_base") && note.contains("20% high") && note.contains("max_tokens"),
            "{note}"
        );
    }
}
