//! Token counting: budgets and cost limits before a call, and usage when a server reports none.
//!
//! - [`count_tokens`], the approximate counter, runs before every call (rate budgets, the cost
//!   limit, prompt sizes) and must stay fast: each run of letters counts one token per started
//!   6 characters, each run of digits one per started 3 digits, and every other visible
//!   character one token; whitespace is free. It over-counts typical GPT tokenization (about
//!   20% on English prose), which is the safe side for budgets.
//! - [`Counter`] and [`estimate_usage`] count a finished call whose server reported no usage:
//!   with the model's own tokenizer where it is known (tiktoken's `o200k_base` and
//!   `cl100k_base`, embedded in the binary, loaded once on first use), else with the
//!   approximate counter; the [`Usage`] says which, and that it is an estimate. A real
//!   tokenizer costs tens of microseconds per call, so it runs only then.

use std::sync::OnceLock;

use super::{TokenCounters, Usage};

/// Approximate token count of `text`.
pub fn count_tokens(text: &str) -> u64 {
    let mut n = 0u64;
    let mut letters = 0u32;
    let mut digits = 0u32;
    let flush = |n: &mut u64, letters: &mut u32, digits: &mut u32| {
        *n += (*letters as u64).div_ceil(6) + (*digits as u64).div_ceil(3);
        *letters = 0;
        *digits = 0;
    };
    for c in text.chars() {
        if c.is_alphabetic() {
            if digits > 0 {
                flush(&mut n, &mut letters, &mut digits);
            }
            letters += 1;
        } else if c.is_ascii_digit() {
            if letters > 0 {
                flush(&mut n, &mut letters, &mut digits);
            }
            digits += 1;
        } else {
            flush(&mut n, &mut letters, &mut digits);
            if !c.is_whitespace() {
                n += 1;
            }
        }
    }
    flush(&mut n, &mut letters, &mut digits);
    n
}

/// Tokens of a chat request: the messages plus a small per-message overhead, as OpenAI counts.
pub fn count_request(req: &super::ChatRequest) -> u64 {
    req.messages.iter().map(|m| count_tokens(&m.content) + MESSAGE_OVERHEAD).sum::<u64>() + REQUEST_OVERHEAD
}

/// Tokens added per chat message.
pub const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens added per request.
pub const REQUEST_OVERHEAD: u64 = 3;

/// `count_request`, reusing the count recorded when the prompt was written when there is one.
pub fn prompt_tokens(req: &super::ChatRequest) -> u64 {
    if req.meta.prompt_tokens > 0 { req.meta.prompt_tokens } else { count_request(req) }
}

// tiktoken-rs keeps each table in a LazyLock of its own; these say whether it is loaded yet.
static CL100K: OnceLock<&'static tiktoken_rs::CoreBPE> = OnceLock::new();
static O200K: OnceLock<&'static tiktoken_rs::CoreBPE> = OnceLock::new();

/// A way of counting tokens, named in results when it made an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// [`count_tokens`]: any model, no tokenizer.
    Approximate,
    /// tiktoken's `cl100k_base` (gpt-4, gpt-3.5).
    Cl100kBase,
    /// tiktoken's `o200k_base` (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4).
    O200kBase,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 3] = [Counter::Approximate, Counter::Cl100kBase, Counter::O200kBase];

    /// The counter for `model`: its tiktoken encoding when it is an OpenAI chat model (tiktoken's
    /// own table; an `openai/` style prefix, a fine-tune's `ft:` and Azure's `gpt-35` spelling
    /// are understood), else the approximate counter.
    pub fn for_model(model: &str) -> Counter {
        let m = model.trim().to_ascii_lowercase();
        let m = m.strip_prefix("ft:").unwrap_or(&m);
        let m = m.rsplit('/').next().unwrap_or(m);
        let family =
            |base: &str| m.strip_prefix(base).is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', ':']));
        if ["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "o1", "o3", "o4", "o4-mini"].into_iter().any(family)
            || m.starts_with("gpt-5")
        {
            Counter::O200kBase
        } else if ["gpt-4", "gpt-3.5", "gpt-3.5-turbo", "gpt-35-turbo"].into_iter().any(family) {
            Counter::Cl100kBase
        } else {
            Counter::Approximate
        }
    }

    /// The name shown in results: "tiktoken o200k_base", "tiktoken cl100k_base", "approximate".
    pub fn name(self) -> &'static str {
        match self {
            Counter::Approximate => "approximate",
            Counter::Cl100kBase => "tiktoken cl100k_base",
            Counter::O200kBase => "tiktoken o200k_base",
        }
    }

    /// Tokens of `text`. The first count of a tiktoken encoding loads its table (about 0.3 s
    /// in a release build, once per process): see [`Counter::load`].
    pub fn count(self, text: &str) -> u64 {
        match self.bpe() {
            None => count_tokens(text),
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        }
    }

    /// True when counting needs no table load first (the approximate counter, or a tiktoken
    /// encoding already loaded).
    pub fn is_ready(self) -> bool {
        match self {
            Counter::Approximate => true,
            Counter::Cl100kBase => CL100K.get().is_some(),
            Counter::O200kBase => O200K.get().is_some(),
        }
    }

    /// Loads the encoding's table now (callers on an async runtime do it off the runtime's
    /// threads: it takes a few hundred milliseconds).
    pub fn load(self) {
        let _ = self.bpe();
    }

    fn bpe(self) -> Option<&'static tiktoken_rs::CoreBPE> {
        match self {
            Counter::Approximate => None,
            Counter::Cl100kBase => Some(CL100K.get_or_init(tiktoken_rs::cl100k_base_singleton)),
            Counter::O200kBase => Some(O200K.get_or_init(tiktoken_rs::o200k_base_singleton)),
        }
    }

    /// Tokens of a chat request as OpenAI counts them: each message's content plus
    /// [`MESSAGE_OVERHEAD`] (3 framing tokens and the role), plus [`REQUEST_OVERHEAD`] for the
    /// reply's priming. The approximate counter reuses the count made when the prompt was written.
    pub fn count_request(self, req: &super::ChatRequest) -> u64 {
        match self {
            Counter::Approximate => prompt_tokens(req),
            _ => req.messages.iter().map(|m| self.count(&m.content) + MESSAGE_OVERHEAD).sum::<u64>() + REQUEST_OVERHEAD,
        }
    }
}

/// The usage of a finished call: what the server reported (`prompt`, `completion`) where it
/// did, the rest counted with [`Counter::for_model`] and marked as estimated. An estimated
/// completion is cut to the request's `max_tokens`, which the server cannot have exceeded.
pub fn estimate_usage(req: &super::ChatRequest, text: &str, prompt: Option<u64>, completion: Option<u64>) -> Usage {
    let mut u = Usage::new(prompt.unwrap_or(0), completion.unwrap_or(0));
    if prompt.is_some() && completion.is_some() {
        return u;
    }
    let counter = Counter::for_model(&req.model);
    if prompt.is_none() {
        u.prompt_tokens = counter.count_request(req);
        u.prompt_estimated = true;
    }
    if completion.is_none() {
        let n = counter.count(text);
        u.completion_tokens = req.max_tokens.map_or(n, |max| n.min(max as u64));
        u.completion_estimated = true;
    }
    if u.estimated() > 0 {
        u.estimated_by = TokenCounters::of(counter);
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("   "), 0);
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens("internationalization"), 4);
        assert_eq!(count_tokens("12345"), 2);
        assert_eq!(count_tokens("Hi, there!"), 4);
        assert_eq!(count_tokens("café"), 1);
    }

    #[test]
    fn openai_models_get_their_tokenizer_others_the_approximate_counter() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4o-2024-08-06",
            "GPT-4o-mini",
            "openai/gpt-4o-mini",
            "ft:gpt-4o-mini:acme::x1",
        ] {
            assert_eq!(Counter::for_model(m), Counter::O200kBase, "{m}");
        }
        for m in [
            "gpt-4.1",
            "gpt-4.1-nano",
            "o1",
            "o1-mini",
            "o3",
            "o3-mini",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "chatgpt-4o-latest",
        ] {
            assert_eq!(Counter::for_model(m), Counter::O200kBase, "{m}");
        }
        for m in
            ["gpt-4", "gpt-4-0613", "gpt-4-turbo", "gpt-4-32k", "gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-35-turbo"]
        {
            assert_eq!(Counter::for_model(m), Counter::Cl100kBase, "{m}");
        }
        for m in ["llama3.1:8b", "mistral", "qwen2.5:7b", "SmolLM2-135M-Instruct", "gpt-oss-20b", "o1x", "gpt-40", ""] {
            assert_eq!(Counter::for_model(m), Counter::Approximate, "{m}");
        }
    }

    #[test]
    fn tiktoken_counts_known_strings() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(Counter::Cl100kBase.count("hello world"), 2);
        assert_eq!(Counter::O200kBase.count("hello world"), 2);
        assert_eq!(Counter::O200kBase.count(""), 0);
        assert!(Counter::O200kBase.is_ready() && Counter::Approximate.is_ready());
        Counter::Cl100kBase.load();
        assert!(Counter::Cl100kBase.is_ready());
        // Special-token text is ordinary text here, never a control token.
        assert!(Counter::O200kBase.count("<|endoftext|>") > 1);
    }

    #[test]
    fn estimates_are_marked_clamped_and_lose_to_reports() {
        let req = crate::llm::ChatRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![crate::llm::ChatMessage::new(crate::llm::Role::User, "hello world")],
            temperature: None,
            top_p: None,
            max_tokens: Some(3),
            seed: None,
            stop: Vec::new(),
            response_format: crate::llm::ResponseFormat::Text,
            meta: Default::default(),
        };
        let u = estimate_usage(&req, "one two three four five six", None, None);
        assert_eq!(u.prompt_tokens, 2 + MESSAGE_OVERHEAD + REQUEST_OVERHEAD);
        assert_eq!((u.completion_tokens, u.completion_estimated, u.estimated()), (3, true, u.total()));
        assert_eq!(u.estimated_by.names(), ["tiktoken o200k_base"]);
        assert_eq!(estimate_usage(&req, "whatever", Some(7), Some(1)), Usage::new(7, 1));
        let partial = estimate_usage(&req, "hi", Some(7), None);
        assert_eq!((partial.prompt_tokens, partial.prompt_estimated, partial.completion_estimated), (7, false, true));
        assert_eq!(partial.estimated(), 1);
        let sum = u
            + Usage::new(5, 5)
            + estimate_usage(&crate::llm::ChatRequest { model: "llama3".into(), ..req }, "x", None, None);
        assert_eq!(sum.estimated_by.names(), ["approximate", "tiktoken o200k_base"]);
        let json = serde_json::to_string(&sum).unwrap();
        let back: Usage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sum);
        // Old records without the new fields still read.
        assert_eq!(
            serde_json::from_str::<Usage>(r#"{"prompt_tokens":1,"completion_tokens":2}"#).unwrap(),
            Usage::new(1, 2)
        );
    }
}
