//! The one retry policy: retry, backoff and fallback decisions as pure functions. The
//! supervisor applies them to persona calls (with its queue and fallback chain); [`retry_call`]
//! applies them to the single calls of checks, judges and extraction.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::SimulationConfig;
use crate::llm::{CallContext, ChatRequest, ChatResponse, ErrorKind, LlmError, Provider};
use crate::rng::SplitMix64;

/// The knobs of failure handling.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff ceiling, seconds.
    pub base: f64,
    /// Growth per attempt.
    pub factor: f64,
    /// Largest backoff ceiling, seconds.
    pub max: f64,
    /// The longest Retry-After obeyed, seconds (`llm.retry_after_max`).
    pub retry_after_max: f64,
    /// Failed attempts on one model before moving to the next of the chain.
    pub fallback_after: u32,
    /// The fallback chain, in order (never containing the primary itself).
    pub fallback_models: Vec<String>,
}

impl RetryPolicy {
    /// The policy a config asks for, for calls whose primary model is `primary`.
    pub fn from_config(c: &SimulationConfig, primary: &str) -> Self {
        RetryPolicy {
            max_retries: c.performance.max_retries,
            base: c.performance.backoff_base,
            factor: c.performance.backoff_factor,
            max: c.performance.backoff_max,
            retry_after_max: c.llm.retry_after_max,
            fallback_after: c.performance.fallback_after.max(1),
            fallback_models: c
                .llm
                .fallback_model
                .0
                .iter()
                .map(|m| m.trim())
                .filter(|m| !m.is_empty() && *m != primary)
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The model to use after `step` moves along the chain (0: the primary).
    pub fn model_at<'a>(&'a self, primary: &'a str, step: usize) -> &'a str {
        if step == 0 { primary } else { self.fallback_models.get(step - 1).map_or(primary, String::as_str) }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Try again after `delay`; with `fallback`, on the next model of the chain from now on.
    Retry {
        /// Wait before the next attempt.
        delay: Duration,
        /// Move to the next model of the fallback chain.
        fallback: bool,
    },
    /// Stop trying; the reason goes into the transcript's skip record.
    GiveUp {
        /// Why.
        reason: String,
    },
}

/// The backoff ceiling before attempt `attempt + 1`: `min(max, base * factor^(attempt-1))`.
pub fn backoff_ceiling(p: &RetryPolicy, attempt: u32) -> f64 {
    let exp = attempt.saturating_sub(1).min(64) as i32;
    (p.base * p.factor.powi(exp)).min(p.max).max(0.0)
}

/// Full jitter: a uniform draw (`jitter` in [0, 1)) below the ceiling, but never sooner than
/// the provider's Retry-After, itself cut to `retry_after_max`.
pub fn backoff_delay(p: &RetryPolicy, attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let d = crate::config::limits::secs(backoff_ceiling(p, attempt) * jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(ra) => d.max(ra.min(crate::config::limits::secs(p.retry_after_max))),
        None => d,
    }
}

/// When `retry_after` is longer than the policy obeys, a note saying it was cut (for the retry
/// record and the log).
pub fn retry_after_capped(p: &RetryPolicy, retry_after: Option<Duration>) -> Option<String> {
    let ra = retry_after?;
    let cap = crate::config::limits::secs(p.retry_after_max);
    (ra > cap).then(|| {
        format!(
            "the server asked to wait {:.0} s (Retry-After); waited {:.0} s, the most llm.retry_after_max allows",
            ra.as_secs_f64(),
            cap.as_secs_f64()
        )
    })
}

/// A failure at the start of a run that no retry and no later call can fix, so the whole run
/// stops at once: before any call has been answered, the key is refused (401/403, or no quota
/// left) or the server cannot be reached at all. Returns the stop reason, in the words of
/// `troupe doctor`. Later, the same failures are taken one call at a time (an authentication
/// failure is still never retried; a pool may hold one bad key among good ones).
pub fn fatal(err: &LlmError, any_success: bool) -> Option<String> {
    const DOCTOR: &str = "`troupe doctor` checks the configuration, the key and the server";
    if any_success {
        return None;
    }
    match err.kind {
        ErrorKind::Auth => {
            Some(format!("the provider refused the request, so the run stopped at once: {err}; {DOCTOR}"))
        }
        ErrorKind::Connection => {
            Some(format!("the provider cannot be reached, so the run stopped at once: {err}; {DOCTOR}"))
        }
        _ => None,
    }
}

/// Decides after attempt number `attempt` (1-based) failed with `err`.
/// `model_failures` counts failed attempts on the model in use (this one included); `step` is
/// how far along the fallback chain the call is (0: the primary).
pub fn decide(
    p: &RetryPolicy,
    attempt: u32,
    err: &LlmError,
    model_failures: u32,
    step: usize,
    jitter: f64,
) -> Decision {
    let can_fallback = step < p.fallback_models.len();
    if !err.kind.retryable() {
        // An unknown model is the one non-retryable failure a different model can fix.
        if err.kind == ErrorKind::NotFound && can_fallback && attempt <= p.max_retries {
            return Decision::Retry { delay: Duration::ZERO, fallback: true };
        }
        return Decision::GiveUp { reason: format!("not retryable: {err}") };
    }
    if attempt > p.max_retries {
        return Decision::GiveUp {
            reason: format!("gave up after {attempt} attempt(s) (max_retries = {}): last error {err}", p.max_retries),
        };
    }
    Decision::Retry {
        delay: backoff_delay(p, attempt, jitter, err.retry_after),
        fallback: can_fallback && model_failures >= p.fallback_after,
    }
}

/// Makes attempts until one gives a non-empty reply, the error is not worth retrying, or
/// `policy.max_retries` retries are spent, sleeping the policy's backoff (jittered by `rng`,
/// Retry-After obeyed up to its cap) between them. `attempt(n)` makes attempt `n` (from 1).
pub async fn retry_call<F, Fut>(
    policy: &RetryPolicy,
    rng: &mut SplitMix64,
    mut attempt: F,
) -> Result<ChatResponse, LlmError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<ChatResponse, LlmError>>,
{
    let mut n = 1;
    loop {
        let err = match attempt(n).await {
            Ok(r) if !r.text.trim().is_empty() => return Ok(r),
            Ok(_) => LlmError::new(ErrorKind::Empty, "the model's reply was empty"),
            Err(e) => e,
        };
        if !err.kind.retryable() || n > policy.max_retries {
            return Err(err);
        }
        let delay = backoff_delay(policy, n, rng.next_f64(), err.retry_after);
        tracing::debug!(attempt = n, error = %err, delay_s = delay.as_secs_f64(), "retrying");
        tokio::time::sleep(delay).await;
        n += 1;
    }
}

/// One attempt of `req` that gives up after `timeout` (a timeout counts as a failed attempt).
pub async fn attempt_within(
    provider: &Arc<dyn Provider>,
    req: Arc<ChatRequest>,
    ctx: CallContext,
    timeout: Duration,
) -> Result<ChatResponse, LlmError> {
    match tokio::time::timeout(timeout, provider.chat(req, ctx)).await {
        Ok(r) => r,
        Err(_) => Err(LlmError::new(ErrorKind::Timeout, "no answer within performance.persona_timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base: 1.0,
            factor: 2.0,
            max: 5.0,
            retry_after_max: 60.0,
            fallback_after: 2,
            fallback_models: vec!["fb".into(), "fb2".into()],
        }
    }

    fn err(kind: ErrorKind) -> LlmError {
        LlmError::new(kind, "x")
    }

    fn retry(fallback: bool) -> impl Fn(&Decision) -> bool {
        move |d| matches!(d, Decision::Retry { fallback: f, .. } if *f == fallback)
    }

    #[test]
    fn ceilings_grow_then_cap() {
        let p = policy();
        let c: Vec<f64> = (1..=5).map(|a| backoff_ceiling(&p, a)).collect();
        assert_eq!(c, vec![1.0, 2.0, 4.0, 5.0, 5.0]);
    }

    #[test]
    fn full_jitter_stays_below_ceiling_and_honours_retry_after() {
        let p = policy();
        assert_eq!(backoff_delay(&p, 3, 0.5, None), Duration::from_secs(2));
        assert_eq!(backoff_delay(&p, 1, 0.0, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(backoff_delay(&p, 3, 0.99, Some(Duration::from_millis(10))), Duration::from_secs_f64(3.96));
    }

    #[test]
    fn a_refused_key_or_an_absent_server_stops_the_run() {
        assert!(fatal(&err(ErrorKind::Auth), false).unwrap().contains("troupe doctor"));
        assert!(fatal(&err(ErrorKind::Connection), false).is_some());
        // Once the server has answered, a refused connection is a hiccup to retry, and a refused
        // key one bad key of a pool (not retried, but not the end of the run).
        assert_eq!(fatal(&err(ErrorKind::Connection), true), None);
        assert_eq!(fatal(&err(ErrorKind::Auth), true), None);
        assert_eq!(fatal(&err(ErrorKind::Server), false), None);
        assert_eq!(fatal(&err(ErrorKind::RateLimited), false), None);
    }

    #[test]
    fn a_long_retry_after_is_cut_and_said() {
        let p = policy();
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(backoff_delay(&p, 1, 0.0, hour), Duration::from_secs(60));
        let note = retry_after_capped(&p, hour).expect("capped");
        assert!(note.contains("3600 s") && note.contains("60 s") && note.contains("llm.retry_after_max"), "{note}");
        assert_eq!(retry_after_capped(&p, Some(Duration::from_secs(5))), None);
        assert_eq!(retry_after_capped(&p, None), None);
    }

    #[test]
    fn retries_retryable_until_the_limit() {
        let p = policy();
        assert!(retry(false)(&decide(&p, 1, &err(ErrorKind::Server), 1, 0, 0.5)));
        assert!(matches!(decide(&p, 3, &err(ErrorKind::Timeout), 0, 2, 0.5), Decision::Retry { .. }));
        assert!(matches!(decide(&p, 4, &err(ErrorKind::Timeout), 0, 2, 0.5), Decision::GiveUp { .. }));
    }

    #[test]
    fn non_retryable_gives_up_at_once() {
        let p = policy();
        assert!(matches!(decide(&p, 1, &err(ErrorKind::Auth), 1, 0, 0.5), Decision::GiveUp { .. }));
        assert!(matches!(decide(&p, 1, &err(ErrorKind::BadRequest), 1, 0, 0.5), Decision::GiveUp { .. }));
    }

    #[test]
    fn walks_the_fallback_chain_after_repeated_failures() {
        let p = RetryPolicy { max_retries: 6, ..policy() };
        let rl = err(ErrorKind::RateLimited);
        assert!(retry(false)(&decide(&p, 1, &rl, 1, 0, 0.5)));
        assert!(retry(true)(&decide(&p, 2, &rl, 2, 0, 0.5)));
        // On the first fallback, a second failure there moves to the second fallback.
        assert!(retry(false)(&decide(&p, 3, &rl, 1, 1, 0.5)));
        assert!(retry(true)(&decide(&p, 4, &rl, 2, 1, 0.5)));
        // At the end of the chain: no further switch.
        assert!(retry(false)(&decide(&p, 6, &rl, 2, 2, 0.5)));
        // Unknown model: switch at once.
        assert_eq!(
            decide(&p, 1, &err(ErrorKind::NotFound), 1, 0, 0.5),
            Decision::Retry { delay: Duration::ZERO, fallback: true }
        );
        assert_eq!(p.model_at("m", 0), "m");
        assert_eq!(p.model_at("m", 2), "fb2");
    }

    #[test]
    fn no_fallback_when_it_is_the_primary() {
        let mut c = SimulationConfig::default();
        c.llm.fallback_model = "gpt-4o-mini".into();
        assert!(RetryPolicy::from_config(&c, "gpt-4o-mini").fallback_models.is_empty());
        c.llm.fallback_model = crate::config::ModelChain(vec!["gpt-4o-mini".into(), "b".into()]);
        assert_eq!(RetryPolicy::from_config(&c, "gpt-4o-mini").fallback_models, vec!["b".to_string()]);
    }
}
