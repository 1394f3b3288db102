//! What `troupe top` shows, derived from successive [`Scrape`]s: totals from the latest,
//! rates from the counters' increase between the last two, per-minute use over the last
//! minute, and latency quantiles over the last interval and overall. A counter that goes down
//! means the process behind the address restarted: its new value is all increase, as in
//! Prometheus' `rate`.

use std::collections::{BTreeMap, VecDeque};

use super::scrape::{Buckets, Scrape};

/// The latency histogram the view reads (every provider and model added up).
pub const LATENCY: &str = "troupe_llm_request_duration_seconds";

/// How far back the per-minute figures look, seconds.
pub const WINDOW_SECONDS: f64 = 60.0;

/// Points kept for the per-minute figures, whatever the interval (0.1 s gives 600).
const MAX_POINTS: usize = 1_000;

/// p50, p90 and p99 of a histogram, seconds, with its count and mean.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    /// Observations.
    pub count: f64,
    /// Mean, seconds.
    pub mean: Option<f64>,
    /// Median, seconds.
    pub p50: Option<f64>,
    /// 90th percentile, seconds.
    pub p90: Option<f64>,
    /// 99th percentile, seconds.
    pub p99: Option<f64>,
}

impl Quantiles {
    /// Estimated from `b` as `histogram_quantile` does.
    pub fn of(b: &Buckets) -> Quantiles {
        Quantiles {
            count: b.count(),
            mean: b.mean(),
            p50: b.quantile(0.5),
            p90: b.quantile(0.9),
            p99: b.quantile(0.99),
        }
    }
}

/// Everything the live view shows, for one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// LLM call attempts started (`troupe_llm_requests_total`).
    pub calls: f64,
    /// Attempts per second over the last interval (`None` before a second scrape).
    pub calls_per_second: Option<f64>,
    /// Attempts in flight.
    pub in_flight: f64,
    /// The stress sweep's concurrency setting running, when there is one.
    pub stress_workers: Option<f64>,
    /// Failed attempts.
    pub errors: f64,
    /// Failed attempts by kind (`rate_limited`, `timeout`, ...).
    pub errors_by_kind: BTreeMap<String, f64>,
    /// 429s (`kind="rate_limited"`).
    pub rate_limited: f64,
    /// 429s per second over the last interval.
    pub rate_limited_per_second: Option<f64>,
    /// Retries scheduled.
    pub retries: f64,
    /// Calls moved to the fallback model.
    pub fallbacks: f64,
    /// Attempts per minute over the last minute (or as much of it as was seen).
    pub requests_per_minute: Option<f64>,
    /// The configured requests-per-minute budget, when one is.
    pub budget_requests_per_minute: Option<f64>,
    /// Tokens per minute over the last minute.
    pub tokens_per_minute: Option<f64>,
    /// The configured tokens-per-minute budget, when one is.
    pub budget_tokens_per_minute: Option<f64>,
    /// How many seconds the per-minute figures cover (up to [`WINDOW_SECONDS`]).
    pub window_seconds: f64,
    /// Prompt tokens sent.
    pub prompt_tokens: f64,
    /// Completion tokens received.
    pub completion_tokens: f64,
    /// USD spent on priced models.
    pub cost_usd: f64,
    /// Transcript messages.
    pub messages: f64,
    /// Messages per second over the last interval.
    pub messages_per_second: Option<f64>,
    /// Runs started by the process.
    pub runs_started: f64,
    /// Runs in progress.
    pub runs_running: f64,
    /// Runs ended, by outcome.
    pub runs_finished: BTreeMap<String, f64>,
    /// Latency since the process started.
    pub latency: Quantiles,
    /// Latency over the last interval (`None` before a second scrape).
    pub latency_recent: Option<Quantiles>,
    /// The latency histogram since the process started.
    pub buckets: Buckets,
    /// The latency histogram of the last interval.
    pub buckets_recent: Option<Buckets>,
    /// `troupe_build_info`'s version.
    pub version: Option<String>,
}

/// The counters the per-minute figures need, at one moment.
#[derive(Debug, Clone, Copy)]
struct Point {
    at: f64,
    calls: f64,
    tokens: f64,
}

/// The scrapes seen so far: the last two whole, and the counters of the last minute.
#[derive(Debug, Clone, Default)]
pub struct History {
    last: Option<(f64, Scrape)>,
    previous: Option<(f64, Scrape)>,
    window: VecDeque<Point>,
}

impl History {
    /// Adds a scrape taken `at` seconds after some fixed start; one older than the last is
    /// ignored.
    pub fn push(&mut self, at: f64, s: Scrape) {
        if self.last.as_ref().is_some_and(|(t, _)| at <= *t) || !at.is_finite() {
            return;
        }
        let calls = s.sum("troupe_llm_requests_total").unwrap_or(0.0);
        let tokens = s.sum("troupe_llm_tokens_total").unwrap_or(0.0);
        self.window.push_back(Point { at, calls, tokens });
        // Keep one point at or before the window's start, so the figures cover all of it.
        while self.window.len() > 2 && (self.window[1].at <= at - WINDOW_SECONDS || self.window.len() > MAX_POINTS) {
            self.window.pop_front();
        }
        self.previous = self.last.replace((at, s));
    }

    /// Forgets everything (another address, say).
    pub fn clear(&mut self) {
        *self = History::default();
    }

    /// The figures of the latest scrape; `None` before the first.
    pub fn figures(&self) -> Option<Figures> {
        let (at, now) = self.last.as_ref()?;
        let mut f = totals(now);
        if let Some((before_at, before)) = &self.previous {
            interval(&mut f, now, before, at - before_at);
        }
        self.per_minute(&mut f);
        Some(f)
    }

    fn per_minute(&self, f: &mut Figures) {
        let (Some(first), Some(last)) = (self.window.front(), self.window.back()) else { return };
        let span = last.at - first.at;
        if span <= 0.0 {
            return;
        }
        let pairs = self.window.iter().zip(self.window.iter().skip(1));
        let (calls, tokens) =
            pairs.fold((0.0, 0.0), |(c, t), (a, b)| (c + increase(b.calls, a.calls), t + increase(b.tokens, a.tokens)));
        f.window_seconds = span.min(WINDOW_SECONDS);
        f.requests_per_minute = Some(calls * 60.0 / span);
        f.tokens_per_minute = Some(tokens * 60.0 / span);
    }
}

/// A counter's increase from `before` to `now`; all of `now` after a reset.
pub fn increase(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now.max(0.0) }
}

/// What one scrape says on its own.
fn totals(s: &Scrape) -> Figures {
    let n = |name: &str| s.sum(name).unwrap_or(0.0);
    let errors_by_kind = s.by_label("troupe_llm_request_errors_total", "kind");
    let buckets = s.histogram(LATENCY).unwrap_or_default();
    Figures {
        calls: n("troupe_llm_requests_total"),
        in_flight: n("troupe_llm_requests_in_flight"),
        stress_workers: s.sum("troupe_stress_workers"),
        // A fold from 0: an empty `sum()` of floats is -0.
        errors: errors_by_kind.values().fold(0.0, |a, b| a + b),
        rate_limited: errors_by_kind.get("rate_limited").copied().unwrap_or(0.0),
        errors_by_kind,
        retries: n("troupe_llm_retries_total"),
        fallbacks: n("troupe_llm_fallbacks_total"),
        budget_requests_per_minute: s.sum("troupe_budget_requests_per_minute"),
        budget_tokens_per_minute: s.sum("troupe_budget_tokens_per_minute"),
        prompt_tokens: s.sum_where("troupe_llm_tokens_total", "direction", "prompt").unwrap_or(0.0),
        completion_tokens: s.sum_where("troupe_llm_tokens_total", "direction", "completion").unwrap_or(0.0),
        cost_usd: n("troupe_llm_cost_usd_total"),
        messages: n("troupe_messages_total"),
        runs_started: n("troupe_runs_started_total"),
        runs_running: n("troupe_runs_running"),
        runs_finished: s.by_label("troupe_runs_finished_total", "outcome"),
        latency: Quantiles::of(&buckets),
        buckets,
        version: s.label("troupe_build_info", "version").map(|v| crate::text::one_line(v, 40)),
        ..Figures::default()
    }
}

/// Rates and the latency of the `dt` seconds between `before` and `now`.
fn interval(f: &mut Figures, now: &Scrape, before: &Scrape, dt: f64) {
    if dt <= 0.0 {
        return;
    }
    let rate = |name: &str| increase(now.sum(name).unwrap_or(0.0), before.sum(name).unwrap_or(0.0)) / dt;
    f.calls_per_second = Some(rate("troupe_llm_requests_total"));
    f.messages_per_second = Some(rate("troupe_messages_total"));
    let limited = |s: &Scrape| s.sum_where("troupe_llm_request_errors_total", "kind", "rate_limited").unwrap_or(0.0);
    f.rate_limited_per_second = Some(increase(limited(now), limited(before)) / dt);
    let recent = f.buckets.since(&before.histogram(LATENCY).unwrap_or_default());
    f.latency_recent = Some(Quantiles::of(&recent));
    f.buckets_recent = Some(recent);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape of `calls` attempts, `tokens` tokens, `fast` calls at 0.25 s and `slow` at 2 s.
    fn scrape(calls: u32, tokens: u32, fast: u32, slow: u32) -> Scrape {
        let text = format!(
            "troupe_llm_requests_total{{provider=\"p\"}} {calls}\n\
             troupe_llm_tokens_total{{direction=\"prompt\",provider=\"p\"}} {tokens}\n\
             troupe_llm_tokens_total{{direction=\"completion\",provider=\"p\"}} 0\n\
             troupe_llm_request_errors_total{{kind=\"rate_limited\",provider=\"p\"}} 2\n\
             troupe_llm_request_errors_total{{kind=\"timeout\",provider=\"p\"}} 1\n\
             troupe_budget_requests_per_minute{{provider=\"p\"}} 600\n\
             troupe_runs_finished_total{{outcome=\"completed\"}} 1\n\
             troupe_build_info{{version=\"9.9.9\"}} 1\n\
             {LATENCY}_bucket{{model=\"m\",provider=\"p\",le=\"0.25\"}} {fast}\n\
             {LATENCY}_bucket{{model=\"m\",provider=\"p\",le=\"2.5\"}} {all}\n\
             {LATENCY}_bucket{{model=\"m\",provider=\"p\",le=\"+Inf\"}} {all}\n\
             {LATENCY}_sum{{model=\"m\",provider=\"p\"}} {sum}\n",
            all = fast + slow,
            sum = f64::from(fast) * 0.25 + f64::from(slow) * 2.0,
        );
        Scrape::parse(&text).unwrap()
    }

    #[test]
    fn totals_come_from_one_scrape_and_rates_from_two() {
        let mut h = History::default();
        assert_eq!(h.figures(), None);
        h.push(10.0, scrape(100, 1000, 100, 0));
        let f = h.figures().unwrap();
        assert_eq!((f.calls, f.errors, f.rate_limited, f.prompt_tokens), (100.0, 3.0, 2.0, 1000.0));
        assert_eq!((f.calls_per_second, f.latency_recent, f.requests_per_minute), (None, None, None));
        assert_eq!((f.budget_requests_per_minute, f.version.as_deref()), (Some(600.0), Some("9.9.9")));
        assert_eq!(f.runs_finished["completed"], 1.0);
        assert!(f.latency.p99.unwrap() <= 0.25);

        h.push(12.0, scrape(120, 1400, 100, 20));
        let f = h.figures().unwrap();
        assert_eq!(f.calls_per_second, Some(10.0));
        assert_eq!(f.rate_limited_per_second, Some(0.0));
        assert_eq!(f.requests_per_minute, Some(600.0));
        assert_eq!(f.tokens_per_minute, Some(12_000.0));
        let recent = f.latency_recent.unwrap();
        assert_eq!(recent.count, 20.0);
        assert!(recent.p50.unwrap() > 0.25, "the last interval's calls were all slow: {recent:?}");
        assert_eq!(recent.mean, Some(2.0));
        assert!(f.latency.p50.unwrap() <= 0.25, "most calls overall were fast: {:?}", f.latency);
    }

    #[test]
    fn absent_families_are_zero_or_none() {
        let mut h = History::default();
        h.push(0.0, Scrape::parse("troupe_llm_requests_total 1\n").unwrap());
        let f = h.figures().unwrap();
        assert!(f.errors == 0.0 && f.errors.is_sign_positive(), "{}", f.errors);
        assert_eq!((f.budget_requests_per_minute, f.stress_workers, f.latency.p99), (None, None, None));
    }

    #[test]
    fn a_restart_behind_the_address_is_a_reset_not_a_negative_rate() {
        let mut h = History::default();
        h.push(0.0, scrape(500, 0, 500, 0));
        h.push(1.0, scrape(7, 0, 7, 0));
        let f = h.figures().unwrap();
        assert_eq!(f.calls_per_second, Some(7.0));
        assert_eq!(f.latency_recent.unwrap().count, 7.0);
        assert_eq!(increase(3.0, 5.0), 3.0);
    }

    #[test]
    fn per_minute_figures_cover_the_last_minute_only() {
        let mut h = History::default();
        for t in 0..=120u32 {
            // 1 call a second for the first minute, then 3.
            let calls = if t <= 60 { t } else { 60 + 3 * (t - 60) };
            h.push(f64::from(t), scrape(calls, 0, calls, 0));
        }
        let f = h.figures().unwrap();
        assert_eq!(f.window_seconds, 60.0);
        assert_eq!(f.requests_per_minute, Some(180.0));
        h.push(100.0, scrape(0, 0, 0, 0));
        assert_eq!(h.figures().unwrap().calls, 240.0, "an older scrape is ignored");
        for t in 0..5_000u32 {
            h.push(200.0 + f64::from(t) * 0.001, scrape(t, 0, 0, 0));
        }
        assert!(h.window.len() <= MAX_POINTS);
    }
}
