//! Persona checks: does a persona behave as its definition and someone's expectations say?
//! (TinyTroupe's `TinyPersonValidator`, made reproducible and honest about failure.)
//!
//! A check ([`check::check_persona`]) has three steps:
//! 1. [`facts`]: the persona's own facts (`F1`, `F2`, ...) from every field it has, and the
//!    expectation text split into claims (`E1`, `E2`, ...).
//! 2. [`interview`]: a short interview. Its questions come from fixed templates, chosen with a
//!    seed derived from `simulation.run_seed`, the persona and the expectation, so the same
//!    inputs ask the same questions: an introduction, one question per claim (attitudes through
//!    a situation that names only their object, never "are you cautious?"), questions on the
//!    persona's own facts, and one question with a false premise the persona should correct.
//!    The persona answers through the run's provider with its own system prompt, one question
//!    after another, each seeing the earlier ones.
//! 3. [`judge`]: a judge model (`validation.judge_model`, default the run's model) reads the
//!    facts, the claims and the interview and answers with a JSON verdict: a score 0.0-1.0, a
//!    justification and per-claim findings with quoted evidence. The reply is read tolerantly;
//!    an unreadable one is asked for once more, saying what was wrong; when the judge still
//!    gives no readable verdict, the check has no score: none is made up.
//!
//! [`in_character`] puts a sample of each persona's messages from a run before the same judge.
//! Every call goes through a [`Caller`]: the run's retry policy (backoff with full jitter,
//! `Retry-After` honoured up to `llm.retry_after_max`), `performance.persona_timeout` per call,
//! and `llm.max_cost_usd` for all the calls of one check or analysis together.

pub mod check;
pub mod facts;
pub mod in_character;
pub mod interview;
pub mod judge;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::config::SimulationConfig;
use crate::cost::Pricing;
use crate::llm::retry::{RetryPolicy, attempt_within, retry_call};
use crate::llm::{CallContext, ChatRequest, ChatResponse, ErrorKind, LlmError, Provider, Usage};

/// What the calls of one check (or one in-character analysis) used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// Calls made, retries included.
    pub calls: u32,
    /// Tokens used.
    pub usage: Usage,
    /// What they cost, USD (priced models only; synthetic text is free).
    pub cost_usd: f64,
}

#[derive(Debug, Default)]
struct Ledger {
    spend: Spend,
    // Spent before this caller's first call (the run an in-character analysis follows): counts
    // against the budget, not in `spend`.
    prior_usd: f64,
    // The worst case of the calls in flight, so concurrent calls cannot pass the budget together.
    reserved: f64,
}

/// Sends the requests of a check with the run's retry policy and cost budget.
#[derive(Debug)]
pub struct Caller {
    provider: Arc<dyn Provider>,
    pricing: Pricing,
    config: SimulationConfig,
    // A std mutex: it guards a few numbers and nothing is awaited while it is held.
    ledger: Mutex<Ledger>,
}

impl Caller {
    /// A caller for `provider` with `config`'s retry settings and `llm.max_cost_usd`. `pricing`
    /// prices the models (ignored for synthetic providers, whose text is free).
    pub fn new(provider: Arc<dyn Provider>, config: &SimulationConfig, pricing: Pricing) -> Self {
        let pricing = if provider.synthetic() { Pricing::default() } else { pricing };
        Caller { provider, pricing, config: config.clone(), ledger: Mutex::new(Ledger::default()) }
    }

    /// Counts `usd` already spent (by the run these calls follow) against `llm.max_cost_usd`.
    pub fn with_prior_spend(self, usd: f64) -> Self {
        if let Ok(mut l) = self.ledger.lock() {
            l.prior_usd = usd.max(0.0);
        }
        self
    }

    /// The provider calls go to.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// What the calls so far used.
    pub fn spend(&self) -> Spend {
        self.ledger.lock().map(|l| l.spend).unwrap_or_default()
    }

    /// True when `model` has a price, or none is needed (synthetic text).
    pub fn priced(&self, model: &str) -> bool {
        self.provider.synthetic() || self.pricing.price(model).is_some()
    }

    /// Sends `req`, retrying retryable failures (429, 5xx, timeouts, connection errors,
    /// unreadable or empty answers) up to `performance.max_retries` times with the run's
    /// backoff. A call that could push the spend past `llm.max_cost_usd` is not sent: it fails
    /// with [`ErrorKind::Budget`].
    pub async fn call(&self, req: ChatRequest) -> Result<ChatResponse, LlmError> {
        let req = Arc::new(req);
        let policy = RetryPolicy::from_config(&self.config, &req.model);
        let timeout = crate::config::limits::secs(self.config.performance.persona_timeout.max(0.001));
        let run_seed = self.config.simulation.run_seed;
        let mut rng = crate::rng::stream(run_seed, crate::rng::Stream::ValidationJitter { request: req.fingerprint() });
        retry_call(&policy, &mut rng, |attempt| {
            let req = req.clone();
            async move {
                let reserved = self.reserve(&req)?;
                let ctx = CallContext { attempt, run_seed };
                let res = attempt_within(&self.provider, req.clone(), ctx, timeout).await;
                self.settle(reserved, &req.model, res.as_ref().ok());
                res
            }
        })
        .await
    }

    /// Reserves the worst case of one attempt of `req` (its prompt plus `max_tokens` of reply)
    /// against `llm.max_cost_usd`; counts the call.
    fn reserve(&self, req: &ChatRequest) -> Result<f64, LlmError> {
        let usage = Usage::new(
            crate::llm::tokens::prompt_tokens(req),
            req.max_tokens.unwrap_or(self.config.llm.max_tokens) as u64,
        );
        let worst = self.pricing.cost(&req.model, usage).unwrap_or(0.0);
        let mut l = self.ledger.lock().map_err(|_| LlmError::new(ErrorKind::Budget, "the cost ledger is unusable"))?;
        if let Some(max) = self.config.llm.max_cost_usd
            && l.prior_usd + l.spend.cost_usd + l.reserved + worst > max
        {
            return Err(LlmError::new(
                ErrorKind::Budget,
                format!(
                    "not sent: llm.max_cost_usd = {max:.4} would be passed (${:.4} spent, the next call could cost ${worst:.4}); raise it (--set llm.max_cost_usd=...) or ask fewer questions",
                    l.prior_usd + l.spend.cost_usd + l.reserved
                ),
            ));
        }
        l.reserved += worst;
        l.spend.calls += 1;
        Ok(worst)
    }

    /// Releases a reservation and books what an answered call used.
    fn settle(&self, reserved: f64, model: &str, resp: Option<&ChatResponse>) {
        let Ok(mut l) = self.ledger.lock() else { return };
        l.reserved = (l.reserved - reserved).max(0.0);
        if let Some(r) = resp {
            l.spend.usage += r.usage;
            l.spend.cost_usd += self.pricing.cost(model, r.usage).unwrap_or(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, RequestMeta, Role};

    fn req(model: &str) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            messages: vec![ChatMessage::new(Role::User, "Hello there, how are you today?")],
            temperature: Some(0.0),
            top_p: None,
            max_tokens: Some(1000),
            seed: None,
            stop: Vec::new(),
            response_format: crate::llm::ResponseFormat::Text,
            meta: RequestMeta { purpose: crate::llm::Purpose::Judge, ..Default::default() },
        }
    }

    /// A provider that bills (not synthetic) and answers "ok".
    #[derive(Debug)]
    struct Billed;

    impl Provider for Billed {
        fn name(&self) -> &str {
            "billed"
        }
        fn chat(&self, req: Arc<ChatRequest>, _: CallContext) -> crate::llm::BoxFuture<Result<ChatResponse, LlmError>> {
            Box::pin(async move {
                Ok(ChatResponse {
                    text: "ok".into(),
                    usage: Usage::new(10, 1),
                    model: req.model.clone(),
                    finish_reason: crate::llm::FinishReason::Stop,
                })
            })
        }
    }

    #[tokio::test]
    async fn the_budget_stops_a_call_before_it_is_sent() {
        let pricing: Pricing = toml::from_str("[models.\"m\"]\ninput = 1000.0\noutput = 1000.0\n").unwrap();
        let mut cfg = SimulationConfig::default();
        // 1000 completion tokens at $1000 per million: $1 worst case per call.
        cfg.llm.max_cost_usd = Some(1.5);
        let c = Caller::new(Arc::new(Billed), &cfg, pricing);
        assert!(c.call(req("m")).await.is_ok());
        let spent = c.spend();
        assert_eq!(spent.calls, 1);
        assert!((spent.cost_usd - 11.0 * 1000.0 / 1e6).abs() < 1e-9, "{spent:?}");
        // $0.011 spent + $1.01 worst case still fits 1.5; a budget of 1.0 does not.
        let mut cfg = cfg.clone();
        cfg.llm.max_cost_usd = Some(1.0);
        let c = Caller::new(
            Arc::new(Billed),
            &cfg,
            toml::from_str("[models.\"m\"]\ninput = 1000.0\noutput = 1000.0\n").unwrap(),
        );
        let e = c.call(req("m")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Budget);
        assert!(e.message.contains("max_cost_usd"), "{e}");
        assert_eq!(c.spend().calls, 0, "nothing was sent");
    }
}
