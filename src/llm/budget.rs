//! Client-side rate budgets: requests and tokens per minute, shared by every call to one
//! endpoint (one server or one key), plus a pause that all callers respect after a 429.
//!
//! The limits are GCRA quotas from `governor`, driven by tokio's clock so they behave the same
//! under `tokio::time::pause()` in tests. Requests are spaced evenly (burst of one request), so a
//! budget that matches the server's limit uses it fully without tripping it. Tokens are counted
//! before sending (an estimate: prompt plus `max_tokens`) and reconciled with the reported usage.
//!
//! A budget may be kept together with other processes that call the same endpoint with the same
//! key (a cluster's workers): with a [`SharedBudget`] attached, each request reserves its slot
//! there instead of in the local limiters. The pause after a 429 and the header-driven slowdown
//! stay local. Providers get shared budgets from a [`SharedBudgetFactory`] given when they are
//! built (`llm::provider_from_config_with`); this layer knows nothing of who keeps them.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::BoxFuture;

/// governor's clock on top of tokio's (time since the budget was made).
#[derive(Debug, Clone)]
struct TokioClock {
    epoch: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Rate-limit headers a server sent (OpenAI's `x-ratelimit-*`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RateLimitHeaders {
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-requests`.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-reset-tokens`.
    pub reset_tokens: Option<Duration>,
}

/// A rate budget kept together with the other processes calling one endpoint with one key.
pub trait SharedBudget: Send + Sync + fmt::Debug + 'static {
    /// Reserves the next slot for one request of `tokens` tokens (the estimate plus any tokens
    /// owed from earlier calls) and says how long from now the request must wait for it. It
    /// must answer within a short bound even when the others cannot be reached (by falling back
    /// to a share of the budget of its own), since every call of the endpoint waits for it.
    fn reserve(&self, tokens: u64) -> BoxFuture<Duration>;
}

/// Gives a provider, as it is built, the shared budget of each of its rate-limited endpoints.
pub trait SharedBudgetFactory: Send + Sync + fmt::Debug + 'static {
    /// The shared budget of the endpoint `id` ([`budget_id`]: a hash of its URL and key) with
    /// these limits, or `None` to keep the endpoint's budget local.
    fn shared_budget(
        &self,
        id: &str,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
    ) -> Option<Arc<dyn SharedBudget>>;
}

/// Names the rate budget of an endpoint reached with `key`: 32 hex digits of SHA-256 over the
/// URL and the key, so processes sharing a key agree on it while the name reveals neither.
pub fn budget_id(base_url: &str, key: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(base_url.trim().trim_end_matches('/').as_bytes());
    h.update([0]);
    h.update(key.map(str::trim).unwrap_or_default().as_bytes());
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The budget of one endpoint.
#[derive(Debug)]
pub struct Budget {
    clock: TokioClock,
    requests: Option<Limiter>,
    tokens: Option<(Limiter, u32)>,
    /// When set, requests reserve their slots here instead of in `requests` and `tokens`.
    shared: Option<Arc<dyn SharedBudget>>,
    // A plain mutex: held for a compare-and-set, never across an await.
    paused_until: Mutex<Option<Instant>>,
    debt: AtomicU64,
    last_estimate: AtomicU64,
    waits: AtomicU64,
}

impl Budget {
    /// A budget of `requests_per_minute` and `tokens_per_minute` (each optional; 0 means none).
    pub fn new(requests_per_minute: Option<u32>, tokens_per_minute: Option<u32>) -> Self {
        let clock = TokioClock { epoch: Instant::now() };
        let requests = requests_per_minute.filter(|r| *r > 0).and_then(|rpm| {
            let q = Quota::with_period(Duration::from_secs_f64(60.0 / rpm as f64))?.allow_burst(NonZeroU32::MIN);
            Some(RateLimiter::direct_with_clock(q, clock.clone()))
        });
        let tokens = tokens_per_minute.filter(|t| *t > 0).and_then(|tpm| {
            // Ten seconds' worth of tokens may go at once, so one large request always fits.
            let burst = NonZeroU32::new((tpm / 6).max(1))?;
            let q = Quota::with_period(Duration::from_secs_f64(60.0 / tpm as f64))?.allow_burst(burst);
            Some((RateLimiter::direct_with_clock(q, clock.clone()), burst.get()))
        });
        Budget {
            clock,
            requests,
            tokens,
            shared: None,
            paused_until: Mutex::new(None),
            debt: AtomicU64::new(0),
            last_estimate: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        }
    }

    /// With a budget shared with other processes: requests reserve their slots there.
    pub fn with_shared(mut self, shared: Arc<dyn SharedBudget>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// True when requests reserve their slots in a shared budget.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// A budget with no limit.
    pub fn unlimited() -> Self {
        Budget::new(None, None)
    }

    /// True when neither requests nor tokens are limited.
    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// Times a caller had to wait (for metrics).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Waits until a request of `tokens` tokens may be sent: after any pause, within the
    /// request and token rates.
    pub async fn acquire(&self, tokens: u64) {
        self.last_estimate.store(tokens, Ordering::Relaxed);
        self.wait_pause().await;
        match &self.shared {
            Some(shared) => self.acquire_shared(shared.as_ref(), tokens).await,
            None => self.acquire_local(tokens).await,
        }
    }

    /// Reserves the slot in the shared budget (with the tokens owed), then waits for it.
    async fn acquire_shared(&self, shared: &dyn SharedBudget, tokens: u64) {
        let owed = self.debt.swap(0, Ordering::Relaxed);
        let wait = shared.reserve(tokens.saturating_add(owed)).await;
        if !wait.is_zero() {
            self.waits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            self.wait_pause().await;
        }
    }

    async fn acquire_local(&self, tokens: u64) {
        if let Some(r) = &self.requests {
            while let Err(not_until) = r.check() {
                self.waits.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                self.wait_pause().await;
            }
        }
        if let Some((t, burst)) = &self.tokens {
            let owed = self.debt.swap(0, Ordering::Relaxed);
            let n = (tokens + owed).clamp(1, *burst as u64) as u32;
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            loop {
                match t.check_n(n) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        self.waits.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                    }
                    // n is clamped to the burst, so this cannot happen; never block forever.
                    Err(_) => break,
                }
            }
        }
    }

    async fn wait_pause(&self) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(u) if u > Instant::now() => {
                    self.waits.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep_until(u).await;
                }
                _ => return,
            }
        }
    }

    /// Makes every caller wait at least `d` from now (after a 429, or when the server says the
    /// budget is spent).
    pub fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d.min(MAX_PAUSE);
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }

    /// Slows down before the server says no: when the remaining requests run out, or the
    /// remaining tokens would not cover another request like the last, wait for the reset.
    pub fn observe(&self, h: &RateLimitHeaders) {
        if let (Some(rem), Some(reset)) = (h.remaining_requests, h.reset_requests)
            && rem == 0
        {
            self.pause_for(reset);
        }
        if let (Some(rem), Some(reset)) = (h.remaining_tokens, h.reset_tokens)
            && rem < self.last_estimate.load(Ordering::Relaxed)
        {
            self.pause_for(reset);
        }
    }

    /// Charges the difference when a call used more tokens than estimated.
    pub fn reconcile(&self, estimated: u64, actual: u64) {
        if actual > estimated {
            self.debt.fetch_add(actual - estimated, Ordering::Relaxed);
        }
    }
}

/// Parses OpenAI's reset durations: "1s", "6m0s", "20ms", "0.5s", "1h2m3s".
pub fn parse_reset(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0 && secs <= MAX_PAUSE.as_secs_f64())
            .then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                0.001
            }
            ('h', _) => 3600.0,
            ('m', _) => 60.0,
            ('s', _) => 1.0,
            _ => return None,
        };
        let v: f64 = num.parse().ok()?;
        total += v * unit;
        num.clear();
        any = true;
    }
    // A reset further away than a day is not a rate-limit window; ignore it rather than wait.
    (any && num.is_empty() && total.is_finite() && total <= MAX_PAUSE.as_secs_f64())
        .then(|| Duration::from_secs_f64(total))
}

/// The longest pause a header or a 429 can impose.
pub const MAX_PAUSE: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_formats() {
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_reset("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_reset("2"), Some(Duration::from_secs(2)));
        for bad in ["", "s", "1x", "abc", "1s2", "99999999999999999999999h", "1e300"] {
            assert_eq!(parse_reset(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_evenly() {
        let b = Budget::new(Some(600), None);
        let t0 = Instant::now();
        for _ in 0..11 {
            b.acquire(0).await;
        }
        // 600 per minute = one every 100 ms; the first goes at once.
        assert_eq!(t0.elapsed(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_per_minute_are_respected() {
        let b = Budget::new(None, Some(6000));
        let t0 = Instant::now();
        // Burst is 1000 tokens; then 100 tokens per second.
        b.acquire(1000).await;
        b.acquire(500).await;
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_secs(5) && waited <= Duration::from_millis(5100), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller() {
        let b = std::sync::Arc::new(Budget::new(None, None));
        b.pause_for(Duration::from_secs(3));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire(10).await })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn headers_slow_down_before_the_limit() {
        let b = Budget::new(None, None);
        b.acquire(100).await;
        b.observe(&RateLimitHeaders {
            remaining_requests: Some(0),
            reset_requests: Some(Duration::from_secs(2)),
            ..Default::default()
        });
        let t0 = Instant::now();
        b.acquire(100).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        b.observe(&RateLimitHeaders {
            remaining_tokens: Some(50),
            reset_tokens: Some(Duration::from_secs(1)),
            ..Default::default()
        });
        let t1 = Instant::now();
        b.acquire(100).await;
        assert_eq!(t1.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn reconcile_charges_the_difference() {
        let b = Budget::new(None, Some(600));
        // Burst 100 tokens, then 10 per second.
        b.acquire(100).await;
        b.reconcile(100, 150);
        let t0 = Instant::now();
        b.acquire(10).await; // 10 + 50 owed
        assert!(t0.elapsed() >= Duration::from_secs(6), "{:?}", t0.elapsed());
    }

    /// A shared budget that spaces requests 100 ms apart and records what it was asked.
    #[derive(Debug, Default)]
    struct Spacing {
        asked: Mutex<Vec<u64>>,
        next: Mutex<Option<Instant>>,
    }

    impl SharedBudget for Spacing {
        fn reserve(&self, tokens: u64) -> BoxFuture<Duration> {
            self.asked.lock().unwrap().push(tokens);
            let now = Instant::now();
            let mut next = self.next.lock().unwrap();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + Duration::from_millis(100));
            let wait = slot - now;
            Box::pin(async move { wait })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_budget_takes_the_place_of_the_local_one() {
        let shared = Arc::new(Spacing::default());
        // The local limit (6 per minute) would make this take 100 s; the shared one spaces 100 ms.
        let b = Budget::new(Some(6), Some(600)).with_shared(shared.clone());
        assert!(b.is_shared());
        let t0 = Instant::now();
        b.acquire(40).await;
        b.reconcile(40, 65);
        b.acquire(40).await;
        b.acquire(40).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
        // The tokens a call used beyond its estimate are charged with the next reservation.
        assert_eq!(*shared.asked.lock().unwrap(), vec![40, 65, 40]);
        assert_eq!(b.waits(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_callers_of_a_shared_budget_too() {
        let b = Budget::new(Some(600), None).with_shared(Arc::new(Spacing::default()));
        b.pause_for(Duration::from_secs(2));
        let t0 = Instant::now();
        b.acquire(1).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn budget_ids_name_url_and_key_without_revealing_them() {
        let a = budget_id("https://api.openai.com/v1", Some("sk-abcdefgh12345678"));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!a.contains("abcdefgh"));
        assert_eq!(a, budget_id("https://api.openai.com/v1/ ", Some("sk-abcdefgh12345678")));
        assert_ne!(a, budget_id("https://api.openai.com/v1", Some("sk-other-key-000000")));
        assert_ne!(a, budget_id("http://localhost:11434/v1", Some("sk-abcdefgh12345678")));
        assert_ne!(a, budget_id("https://api.openai.com/v1", None));
    }
}
