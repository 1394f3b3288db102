//! The OpenAI-compatible and Azure providers against a loopback mock server (no internet):
//! request shape, streaming assembly over arbitrary chunk splits, usage counting, error
//! classification and hints, Retry-After forms, the shared pause after a 429, endpoint
//! balancing and health, and a full simulation through the engine.
//!
//! Real sockets do not mix well with tokio's paused clock (it jumps ahead while a socket waits),
//! so these tests run on real time with delays of a few hundred milliseconds at most.

mod support {
    pub mod mock_openai;
}

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};

use support::mock_openai::{Canned, MockConfig, MockServer};
use troupe_sim::config::{ProviderKind, SecretString, SimulationConfig};
use troupe_sim::engine::{EngineError, SimulationEngine};
use troupe_sim::llm::azure::AzureOptions;
use troupe_sim::llm::openai::{EndpointSpec, OpenAiOptions};
use troupe_sim::llm::tokens::{count_tokens, prompt_tokens};
use troupe_sim::llm::{
    CallContext, ChatMessage, ChatRequest, ChatResponse, ErrorKind, FinishReason, LlmError, OpenAiProvider, Provider,
    Purpose, RequestMeta, ResponseFormat, Role, provider_from_config,
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const KEY: &str = "sk-canary-3f9a1c77b2e04d5e";

// ---------------------------------------------------------------------------------------------
// Helpers

fn request() -> ChatRequest {
    ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![
            ChatMessage::new(Role::System, "You are Sarah Chen, a product manager."),
            ChatMessage::new(Role::User, "Topic: content moderation. What do you say?"),
        ],
        temperature: None,
        top_p: None,
        max_tokens: None,
        seed: None,
        stop: Vec::new(),
        response_format: ResponseFormat::Text,
        meta: RequestMeta::default(),
    }
}

fn full_request() -> ChatRequest {
    ChatRequest {
        temperature: Some(0.7),
        top_p: Some(0.9),
        max_tokens: Some(128),
        seed: Some(42),
        stop: vec!["\n\n".into()],
        meta: RequestMeta {
            persona: "sarah_chen".into(),
            turn: 1,
            purpose: Purpose::Act,
            prompt_tokens: 0,
            ..Default::default()
        },
        ..request()
    }
}

fn provider(mock: &MockServer, tweak: impl FnOnce(&mut OpenAiOptions)) -> OpenAiProvider {
    let mut o = OpenAiOptions::new(mock.base_url(), Some(SecretString::new(KEY)));
    tweak(&mut o);
    OpenAiProvider::new(o).unwrap()
}

async fn chat(p: &OpenAiProvider, req: ChatRequest) -> Result<ChatResponse, LlmError> {
    p.chat(Arc::new(req), CallContext { attempt: 1, run_seed: 42 }).await
}

async fn mock(tweak: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut c = MockConfig::default();
    tweak(&mut c);
    MockServer::start(c).await
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// The error of a call answered by one canned response.
async fn error_for(canned: Canned) -> LlmError {
    let m = mock(|c| c.script.push_back(canned)).await;
    let p = provider(&m, |_| {});
    chat(&p, request()).await.unwrap_err()
}

fn assert_no_key(err: &LlmError) {
    for shown in [err.to_string(), format!("{err:?}"), serde_json::to_string(err).unwrap()] {
        assert!(!shown.contains(KEY), "the key leaked: {shown}");
        assert!(!shown.contains("3f9a1c77"), "part of the key leaked: {shown}");
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and answers

#[tokio::test]
async fn non_streaming_answer_and_usage() {
    let m = mock(|_| {}).await;
    let p = provider(&m, |_| {});
    let r = chat(&p, full_request()).await.unwrap();
    assert_eq!(r.text, MockConfig::default().reply);
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(r.model, "gpt-4o-mini");
    // The mock reports usage with the same counter, prompt plus nothing else.
    assert_eq!(r.usage.prompt_tokens, prompt_tokens(&full_request()));
    assert_eq!(r.usage.completion_tokens, count_tokens(&r.text));
    let rec = &m.requests()[0];
    assert_eq!(rec.path, "/v1/chat/completions");
    assert_eq!(rec.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(rec.header("content-type"), Some("application/json"));
    assert!(rec.header("user-agent").unwrap().starts_with("troupe-sim/"));
}

#[tokio::test]
async fn optional_fields_are_omitted_when_unset() {
    let m = mock(|_| {}).await;
    let p = provider(&m, |_| {});
    chat(&p, request()).await.unwrap();
    let body = &m.requests()[0].body;
    assert_eq!(keys(body), ["messages", "model"]);
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "You are Sarah Chen, a product manager."}));

    chat(&p, full_request()).await.unwrap();
    let body = &m.requests()[1].body;
    assert_eq!(keys(body), ["max_tokens", "messages", "model", "seed", "stop", "temperature", "top_p", "user"]);
    assert_eq!(body["temperature"], json!(0.7));
    assert_eq!(body["top_p"], json!(0.9));
    assert_eq!(body["max_tokens"], json!(128));
    assert_eq!(body["seed"], json!(42));
    assert_eq!(body["stop"], json!(["\n\n"]));
    assert_eq!(body["user"], json!("sarah_chen"));
}

#[tokio::test]
async fn stream_options_and_response_format_only_when_asked() {
    let m = mock(|_| {}).await;
    let p = provider(&m, |o| o.stream = true);
    chat(&p, ChatRequest { response_format: ResponseFormat::JsonObject, ..full_request() }).await.unwrap();
    chat(&p, full_request()).await.unwrap();
    let recs = m.requests();
    assert_eq!(recs[0].body["stream"], json!(true));
    assert_eq!(recs[0].body["stream_options"], json!({"include_usage": true}));
    assert_eq!(recs[0].body["response_format"], json!({"type": "json_object"}));
    // Free text: no response_format.
    assert!(recs[1].body.get("response_format").is_none());
}

/// JSON mode is the request's `response_format`, whatever the call is for: an act request that
/// asks for text gets none, an extraction or a summary that asks for JSON gets it.
#[tokio::test]
async fn json_mode_follows_the_requests_response_format_not_its_purpose() {
    let m = mock(|_| {}).await;
    let p = provider(&m, |_| {});
    let with = |purpose: Purpose, format: ResponseFormat| {
        let mut r = full_request();
        r.meta.purpose = purpose;
        r.response_format = format;
        r
    };
    chat(&p, with(Purpose::Act, ResponseFormat::Text)).await.unwrap();
    chat(&p, with(Purpose::Extract, ResponseFormat::JsonObject)).await.unwrap();
    chat(&p, with(Purpose::Summary, ResponseFormat::JsonObject)).await.unwrap();
    let formats: Vec<Option<Value>> = m.requests().iter().map(|r| r.body.get("response_format").cloned()).collect();
    let json_object = Some(json!({"type": "json_object"}));
    assert_eq!(formats, [None, json_object.clone(), json_object]);
}

/// Through the engine with `llm.json_actions`: the persona turns reach the server in JSON mode
/// (their prompt asks for a JSON action), the memory summaries do not.
#[tokio::test]
async fn json_actions_put_persona_turns_in_json_mode_and_nothing_else() {
    let m = mock(|_| {}).await;
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::OpenAi;
    cfg.llm.base_url = Some(m.base_url());
    cfg.llm.json_actions = true;
    cfg.simulation.personas_file = personas_file();
    cfg.simulation.consolidate_every = 1;
    cfg.performance.rate_limit_delay = 0.0;
    let results = SimulationEngine::new(cfg)
        .unwrap()
        .run_simulation("Should we ship AI-assisted moderation?", 3, &["sarah_chen", "marcus_rivera"], vec![])
        .await
        .unwrap();
    assert!(results.success, "{:?}", results.error);
    let (mut turns, mut others) = (0, 0);
    for r in m.requests() {
        let user = r.body["messages"][1]["content"].as_str().unwrap_or_default().to_string();
        if user.contains("with one JSON object") {
            turns += 1;
            assert_eq!(r.body["response_format"], json!({"type": "json_object"}), "{user}");
        } else {
            others += 1;
            assert!(r.body.get("response_format").is_none(), "{user}");
        }
    }
    assert_eq!(turns, 6, "two personas, three turns");
    assert!(others > 0, "no summary was asked for: the test shows nothing about other calls");
}

#[tokio::test]
async fn no_key_no_authorization_and_org_project_headers() {
    let m = mock(|_| {}).await;
    let p = OpenAiProvider::new(OpenAiOptions {
        organization: Some("org-troupe".into()),
        project: Some("proj_sim".into()),
        ..OpenAiOptions::new(m.base_url(), None)
    })
    .unwrap();
    chat(&p, request()).await.unwrap();
    let rec = &m.requests()[0];
    assert_eq!(rec.header("authorization"), None);
    assert_eq!(rec.header("openai-organization"), Some("org-troupe"));
    assert_eq!(rec.header("openai-project"), Some("proj_sim"));
}

/// tiktoken's count of a chat request, as OpenAI documents it: 3 tokens per message plus its
/// role and content, and 3 for the reply's priming.
fn tiktoken_request(bpe: &tiktoken_rs::CoreBPE, req: &ChatRequest) -> u64 {
    req.messages.iter().map(|m| 4 + bpe.encode_ordinary(&m.content).len() as u64).sum::<u64>() + 3
}

/// Without usage from the server, an OpenAI model's tokens are counted with its own tokenizer
/// (tiktoken), any other model's with the approximate counter, and either way the figures say
/// they are estimates and which counter made them.
#[tokio::test]
async fn usage_missing_is_counted_with_the_models_tokenizer_and_marked_estimated() {
    let m = mock(|c| c.omit_usage = true).await;
    let reply = MockConfig::default().reply;
    let o200k = tiktoken_rs::o200k_base_singleton();
    for stream in [false, true] {
        let p = provider(&m, |o| o.stream = stream);
        let r = chat(&p, full_request()).await.unwrap();
        assert_eq!(r.usage.prompt_tokens, tiktoken_request(o200k, &full_request()), "stream = {stream}");
        assert_eq!(r.usage.completion_tokens, o200k.encode_ordinary(&reply).len() as u64, "stream = {stream}");
        assert!(r.usage.prompt_estimated && r.usage.completion_estimated, "stream = {stream}");
        assert_eq!(r.usage.estimated_by.names(), ["tiktoken o200k_base"]);
    }
    let p = provider(&m, |_| {});
    let gpt4 = ChatRequest { model: "gpt-4-0613".into(), ..full_request() };
    let r = chat(&p, gpt4.clone()).await.unwrap();
    let cl100k = tiktoken_rs::cl100k_base_singleton();
    assert_eq!(r.usage.prompt_tokens, tiktoken_request(cl100k, &gpt4));
    assert_eq!(r.usage.estimated_by.names(), ["tiktoken cl100k_base"]);
    // A model whose tokenizer is unknown here: the approximate counter, named as such.
    let llama = ChatRequest { model: "llama3.1:8b".into(), ..full_request() };
    let r = chat(&p, llama.clone()).await.unwrap();
    assert_eq!(r.usage.prompt_tokens, prompt_tokens(&llama));
    assert_eq!(r.usage.completion_tokens, count_tokens(&reply));
    assert_eq!(r.usage.estimated_by.names(), ["approximate"]);
    assert_eq!(r.usage.estimated(), r.usage.total());

    // What the server reports always wins, and then nothing is marked.
    m.set(|c| c.omit_usage = false);
    let r = chat(&p, full_request()).await.unwrap();
    assert_eq!(r.usage.prompt_tokens, prompt_tokens(&full_request()), "the mock's own count");
    assert_eq!((r.usage.estimated(), r.usage.estimated_by.is_empty()), (0, true));
    let shown = serde_json::to_value(r.usage).unwrap();
    assert_eq!(keys(&shown), ["completion_tokens", "prompt_tokens"], "{shown}");
}

/// An estimated reply never counts more tokens than the request allowed.
#[tokio::test]
async fn an_estimated_completion_never_exceeds_max_tokens() {
    let m = mock(|c| {
        c.omit_usage = true;
        c.reply = "A long answer that a server cut at the limit, word after word after word.".into();
    })
    .await;
    for model in ["gpt-4o-mini", "llama3.1:8b"] {
        let p = provider(&m, |o| o.stream = true);
        let r = chat(&p, ChatRequest { model: model.into(), max_tokens: Some(5), ..full_request() }).await.unwrap();
        assert_eq!(r.usage.completion_tokens, 5, "{model}");
        assert!(r.usage.completion_estimated, "{model}");
    }
}

/// A server that reports only part of the usage: its figure is kept, the other estimated.
#[tokio::test]
async fn a_partial_usage_keeps_what_the_server_said() {
    let body = json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Fine by me."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 321},
    });
    let m = mock(|c| c.script.push_back(Canned::new(200, body.to_string()))).await;
    let p = provider(&m, |_| {});
    let r = chat(&p, full_request()).await.unwrap();
    assert_eq!((r.usage.prompt_tokens, r.usage.prompt_estimated), (321, false));
    let o200k = tiktoken_rs::o200k_base_singleton();
    assert_eq!(r.usage.completion_tokens, o200k.encode_ordinary("Fine by me.").len() as u64);
    assert!(r.usage.completion_estimated);
}

#[tokio::test]
async fn streaming_usage_in_the_finish_chunk_or_after_it() {
    let m = mock(|c| {
        c.usage_in_finish_chunk = true;
        c.chunk_sizes = vec![5, 17, 1];
    })
    .await;
    let p = provider(&m, |o| o.stream = true);
    let r = chat(&p, request()).await.unwrap();
    assert_eq!(r.text, MockConfig::default().reply);
    assert_eq!(r.usage.prompt_tokens, prompt_tokens(&request()));
    m.set(|c| c.usage_in_finish_chunk = false);
    let r2 = chat(&p, request()).await.unwrap();
    assert_eq!(r2.usage, r.usage);
}

/// A server that refuses `stream_options` (older vLLM, llama.cpp and Azure API versions answer
/// 400, FastAPI servers 422) gets the request again without it, once per provider: later
/// streamed calls leave it out from the start.
#[tokio::test]
async fn a_server_refusing_stream_options_is_asked_again_without_it_for_good() {
    let m = mock(|c| c.reject_stream_options = true).await;
    let p = provider(&m, |o| o.stream = true);
    for _ in 0..2 {
        let r = chat(&p, request()).await.unwrap();
        assert_eq!(r.text, MockConfig::default().reply);
    }
    let recs = m.requests();
    assert_eq!(recs.len(), 3, "one refusal, then one request per call");
    assert_eq!(recs[0].body["stream_options"], json!({"include_usage": true}));
    for r in &recs[1..] {
        assert_eq!(r.body["stream"], json!(true));
        assert!(r.body.get("stream_options").is_none(), "{}", r.body);
    }

    // A FastAPI-style 422 naming the field is understood the same way.
    let detail = json!({"detail": [{"type": "extra_forbidden", "loc": ["body", "stream_options"], "msg": "Extra inputs are not permitted"}]});
    let m = mock(|c| c.script.push_back(Canned::new(422, detail.to_string()))).await;
    let p = provider(&m, |o| o.stream = true);
    chat(&p, request()).await.unwrap();
    let recs = m.requests();
    assert_eq!(recs.len(), 2);
    assert!(recs[1].body.get("stream_options").is_none());

    // Any other 400 is an error as before, and stream_options stays.
    let m = mock(|c| c.script.push_back(Canned::error(400, "temperature must be at most 2", "invalid_value"))).await;
    let p = provider(&m, |o| o.stream = true);
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    chat(&p, request()).await.unwrap();
    assert_eq!(m.request_count(), 2);
    assert!(m.requests()[1].body.get("stream_options").is_some());
}

#[test]
fn streaming_assembly_whatever_the_chunk_boundaries() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let m = rt.block_on(mock(|_| {}));
    let p = provider(&m, |o| o.stream = true);
    let mut runner =
        TestRunner::new(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() });
    let strategy =
        ("[a-zA-Z ,.!?éü—🎭\"\\\\\n]{1,60}", proptest::collection::vec(1usize..40, 0..5), 1usize..12, any::<bool>());
    runner
        .run(&strategy, |(reply, sizes, delta_chars, usage_in_finish)| {
            m.set(|c| {
                c.reply = reply.clone();
                c.chunk_sizes = sizes.clone();
                c.delta_chars = delta_chars;
                c.usage_in_finish_chunk = usage_in_finish;
            });
            let r = rt.block_on(chat(&p, request())).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&r.text, &reply);
            prop_assert_eq!(r.finish_reason, FinishReason::Stop);
            prop_assert_eq!(r.usage.completion_tokens, count_tokens(&reply));
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn a_stream_cut_short_is_a_connection_error() {
    let body = support::mock_openai::sse_body("m", "hello there", 3, None, false);
    let cut = body.split("\"finish_reason\":\"stop\"").next().unwrap();
    let cut = &cut[..cut.rfind("data:").unwrap()];
    let c = Canned::new(200, cut).header("content-type", "text/event-stream");
    let err = {
        let m = mock(|mc| mc.script.push_back(c)).await;
        let p = provider(&m, |o| o.stream = true);
        chat(&p, request()).await.unwrap_err()
    };
    assert_eq!(err.kind, ErrorKind::Connection, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Errors

#[tokio::test]
async fn unauthorized_says_check_the_key_and_never_shows_it() {
    let m = mock(|c| c.require_key = Some("sk-the-right-one".into())).await;
    let p = provider(&m, |_| {});
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert_eq!(err.status, Some(401));
    assert!(err.message.contains("check the API key: .troupe/secrets.toml or OPENAI_API_KEY"), "{err}");
    assert!(!err.kind.retryable());
    assert_no_key(&err);

    // A server that echoes the key back in full: scrubbed.
    let echo = Canned::error(
        401,
        &format!("Incorrect API key provided: {KEY}. Find yours at the dashboard."),
        "invalid_api_key",
    );
    let err = error_for(echo).await;
    assert!(err.message.contains("Incorrect API key provided"), "{err}");
    assert_no_key(&err);
    assert!(!format!("{p:?}").contains(KEY));

    let err = error_for(Canned::error(403, "You are not allowed to use this model", "forbidden")).await;
    assert_eq!((err.kind, err.status), (ErrorKind::Auth, Some(403)));
}

#[tokio::test]
async fn not_found_names_model_and_base_url() {
    let err = error_for(Canned::error(404, "The model `gpt-9` does not exist", "model_not_found")).await;
    assert_eq!((err.kind, err.status), (ErrorKind::NotFound, Some(404)));
    assert!(err.message.contains("unknown model or endpoint: check llm.model and llm.base_url"), "{err}");
    assert!(err.message.contains("gpt-9"), "the server's words are kept: {err}");
    // A wrong base_url: axum's plain 404 without a body.
    let m = mock(|_| {}).await;
    let p = OpenAiProvider::new(OpenAiOptions::new(format!("http://{}/wrong", m.addr), None)).unwrap();
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn context_length_exceeded_says_what_to_lower() {
    let hint = "the prompt is longer than the model's context; lower simulation.memory_recent or llm.max_tokens";
    let openai = Canned::error(
        400,
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens.",
        "context_length_exceeded",
    );
    let vllm = Canned::new(
        400,
        r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","code":400}"#,
    );
    let llama = Canned::new(
        400,
        r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
    );
    for c in [openai, vllm, llama] {
        let err = error_for(c).await;
        assert_eq!((err.kind, err.status), (ErrorKind::BadRequest, Some(400)));
        assert!(err.message.contains(hint), "{err}");
        assert!(!err.kind.retryable());
    }
    let other = error_for(Canned::error(400, "temperature must be at most 2", "invalid_value")).await;
    assert_eq!(other.kind, ErrorKind::BadRequest);
    assert!(!other.message.contains("context"), "{other}");
    assert!(other.message.contains("temperature must be at most 2"), "{other}");
}

#[tokio::test]
async fn malformed_body_keeps_status_and_snippet() {
    let m = mock(|c| c.malformed = true).await;
    let p = provider(&m, |_| {});
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!((err.kind, err.status), (ErrorKind::Malformed, Some(200)));
    assert!(err.message.contains("<!DOCTYPE html><html><body><h1>502 Bad Gateway"), "{err}");
    assert!(err.kind.retryable());

    // Long bodies are cut to about 200 characters.
    let long = format!("{{\"choices\": \"{}\"}}", "x".repeat(5000));
    let err = error_for(Canned::new(200, long)).await;
    assert_eq!(err.kind, ErrorKind::Malformed);
    assert!(err.message.len() < 400, "{} chars", err.message.len());

    // A 5xx HTML page from a proxy is a server error that keeps its first words.
    let err =
        error_for(Canned::new(502, "<html>Bad Gateway from the proxy</html>").header("content-type", "text/html"))
            .await;
    assert_eq!((err.kind, err.status), (ErrorKind::Server, Some(502)));
    assert!(err.message.contains("Bad Gateway from the proxy"), "{err}");

    // Valid JSON of the wrong shape.
    let err = error_for(Canned::new(200, r#"{"choices": []}"#)).await;
    assert_eq!((err.kind, err.status), (ErrorKind::Malformed, Some(200)));
}

#[tokio::test]
async fn server_and_connection_errors_are_retryable() {
    let err = error_for(Canned::error(503, "overloaded", "server_error").header("retry-after", "2")).await;
    assert_eq!((err.kind, err.status, err.retry_after), (ErrorKind::Server, Some(503), Some(Duration::from_secs(2))));
    assert!(err.kind.retryable());

    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p =
        OpenAiProvider::new(OpenAiOptions::new(format!("http://127.0.0.1:{port}/v1"), Some(SecretString::new(KEY))))
            .unwrap();
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connection, "{err}");
    assert!(err.message.contains("check llm.base_url"), "{err}");
    assert!(err.kind.retryable());
    assert_no_key(&err);
}

#[tokio::test]
async fn retry_after_seconds_http_date_and_ms() {
    let err = error_for(Canned::error(429, "slow down", "rate_limit_exceeded").header("retry-after", "7")).await;
    assert_eq!((err.kind, err.status), (ErrorKind::RateLimited, Some(429)));
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));

    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5));
    let err = error_for(Canned::error(429, "slow down", "rate_limit_exceeded").header("retry-after", date)).await;
    let ra = err.retry_after.unwrap();
    assert!(ra > Duration::from_secs(3) && ra <= Duration::from_secs(5), "{ra:?}");

    let err = error_for(
        Canned::error(429, "slow down", "rate_limit_exceeded")
            .header("retry-after-ms", "250")
            .header("retry-after", "1"),
    )
    .await;
    assert_eq!(err.retry_after, Some(Duration::from_millis(250)));

    let err = error_for(Canned::error(429, "slow down", "rate_limit_exceeded")).await;
    assert_eq!((err.kind, err.retry_after), (ErrorKind::RateLimited, None));

    // Out of credit is not worth retrying.
    let err = error_for(Canned::error(429, "You exceeded your current quota", "insufficient_quota")).await;
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(!err.kind.retryable());
}

#[tokio::test]
async fn a_429_pauses_every_caller_of_the_endpoint() {
    let m = mock(|c| {
        c.script.push_back(Canned::error(429, "slow down", "rate_limit_exceeded").header("retry-after-ms", "300"));
    })
    .await;
    let p = provider(&m, |_| {});
    let t0 = Instant::now();
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited);
    // Three other callers: none is sent before the pause is over.
    let calls: Vec<_> = (0..3).map(|_| chat(&p, request())).collect();
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    let recs = m.requests();
    assert_eq!(recs.len(), 4);
    for r in &recs[1..] {
        let after = r.at.duration_since(recs[0].at);
        assert!(after >= Duration::from_millis(290), "sent {after:?} after the 429");
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn ratelimit_headers_slow_down_before_a_429() {
    // 120 requests per minute with a burst of one: one every 500 ms; the headers say so.
    let m = mock(|c| {
        c.rpm = Some(120);
        c.burst_secs = 0.0;
        c.ratelimit_headers = true;
    })
    .await;
    let p = provider(&m, |_| {});
    chat(&p, request()).await.unwrap();
    chat(&p, request()).await.unwrap();
    assert_eq!(m.rate_limited(), 0, "the client waited for the reset the headers announced");
    let recs = m.requests();
    assert!(recs[1].at.duration_since(recs[0].at) >= Duration::from_millis(450));
}

#[tokio::test]
async fn the_mock_enforces_its_limits_and_a_matching_budget_avoids_429s() {
    // 60 requests per minute, no burst: a second request at once is refused with Retry-After.
    let m = mock(|c| {
        c.rpm = Some(60);
        c.burst_secs = 0.0;
    })
    .await;
    let p = provider(&m, |_| {});
    chat(&p, request()).await.unwrap();
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!((err.kind, err.status), (ErrorKind::RateLimited, Some(429)));
    let ra = err.retry_after.unwrap();
    assert!(ra > Duration::from_millis(800) && ra <= Duration::from_secs(1), "{ra:?}");
    assert_eq!(m.rate_limited(), 1);

    // Tokens: 6,000 per minute hold 100 at once; a request of about 105 tokens empties them.
    let m = mock(|c| c.tpm = Some(6000)).await;
    let p = provider(&m, |_| {});
    let mut big = full_request();
    big.max_tokens = Some(80);
    chat(&p, big.clone()).await.unwrap();
    assert_eq!(chat(&p, big).await.unwrap_err().kind, ErrorKind::RateLimited);

    // A client budget matching the server's limit: no 429 at all.
    let m = mock(|c| c.rpm = Some(600)).await;
    let p = provider(&m, |o| o.endpoints[0].requests_per_minute = Some(600));
    let calls: Vec<_> = (0..6).map(|_| chat(&p, request())).collect();
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!((m.rate_limited(), m.request_count()), (0, 6));
}

#[tokio::test]
async fn the_mock_lists_models() {
    let m = mock(|_| {}).await;
    let body: Value = reqwest::get(format!("{}/models", m.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(body["data"][0]["id"], json!("gpt-4o-mini"));
}

// ---------------------------------------------------------------------------------------------
// Azure

#[tokio::test]
async fn azure_request_shape() {
    let m = mock(|c| c.require_key = Some(KEY.into())).await;
    let mut opts = OpenAiOptions::new(m.azure_endpoint(), Some(SecretString::new(KEY)));
    opts.stream = true;
    let azure = AzureOptions {
        model: "gpt-4o-mini".into(),
        deployment: Some("troupe-chat".into()),
        api_version: "2024-10-21".into(),
    };
    let p = OpenAiProvider::azure(opts, azure).unwrap();
    assert_eq!(p.name(), "azure");
    let r = chat(&p, request()).await.unwrap();
    assert_eq!(r.text, MockConfig::default().reply);
    // A fallback model is taken as a deployment name.
    let mut fallback = request();
    fallback.model = "gpt-35-turbo".into();
    chat(&p, fallback).await.unwrap();

    let recs = m.requests();
    assert_eq!(recs[0].path, "/openai/deployments/troupe-chat/chat/completions");
    assert_eq!(recs[0].query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(recs[0].header("api-key"), Some(KEY));
    assert_eq!(recs[0].header("authorization"), None);
    assert_eq!(recs[1].path, "/openai/deployments/gpt-35-turbo/chat/completions");

    // Its errors name Azure's settings.
    let m = mock(|c| c.script.push_back(Canned::new(404, r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#))).await;
    let azure = AzureOptions { model: "gpt-4o-mini".into(), deployment: None, api_version: "2024-10-21".into() };
    let p = OpenAiProvider::azure(OpenAiOptions::new(m.azure_endpoint(), Some(SecretString::new(KEY))), azure).unwrap();
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains("llm.azure_deployment"), "{err}");
    assert_eq!(m.requests()[0].path, "/openai/deployments/gpt-4o-mini/chat/completions");
}

#[tokio::test]
async fn azure_unauthorized_names_its_variable() {
    let m = mock(|c| c.require_key = Some("right".into())).await;
    let azure = AzureOptions { model: "m".into(), deployment: None, api_version: "2024-10-21".into() };
    let p = OpenAiProvider::azure(OpenAiOptions::new(m.azure_endpoint(), Some(SecretString::new(KEY))), azure).unwrap();
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(err.message.contains("AZURE_OPENAI_API_KEY"), "{err}");
    assert_no_key(&err);
}

// ---------------------------------------------------------------------------------------------
// Several endpoints

#[tokio::test]
async fn endpoints_balance_by_least_in_flight() {
    let slow = mock(|c| c.delay = Duration::from_millis(300)).await;
    let fast = mock(|_| {}).await;
    let p = OpenAiProvider::new(OpenAiOptions::with_endpoints(vec![
        EndpointSpec::new(slow.base_url()),
        EndpointSpec::new(fast.base_url()),
    ]))
    .unwrap();
    // Round-robin among equals: the first call goes to endpoint 0 (slow) and stays there.
    let held = tokio::spawn({
        let p = p.clone();
        async move { chat(&p, request()).await }
    });
    while p.endpoints()[0].in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // While it is busy, every other call goes to the idle endpoint.
    for _ in 0..5 {
        chat(&p, request()).await.unwrap();
    }
    held.await.unwrap().unwrap();
    assert_eq!((slow.request_count(), fast.request_count()), (1, 5));
    // Idle again: round-robin.
    for _ in 0..4 {
        chat(&p, request()).await.unwrap();
    }
    assert_eq!((slow.request_count(), fast.request_count()), (3, 7));
    assert!(p.endpoints().iter().all(|e| e.in_flight() == 0));
}

#[tokio::test]
async fn a_failing_endpoint_is_taken_out_then_retried() {
    let broken = mock(|c| c.error_rate = 1.0).await;
    let good = mock(|_| {}).await;
    let p = OpenAiProvider::new(OpenAiOptions {
        failure_threshold: 3,
        cool_down: Duration::from_millis(300),
        ..OpenAiOptions::with_endpoints(vec![EndpointSpec::new(broken.base_url()), EndpointSpec::new(good.base_url())])
    })
    .unwrap();
    let mut server_errors = 0;
    for _ in 0..12 {
        match chat(&p, request()).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Server);
                server_errors += 1;
            }
        }
    }
    // Three failures in a row, then it is out: the rest go to the good endpoint.
    assert_eq!(broken.request_count(), 3);
    assert_eq!(server_errors, 3);
    assert_eq!(good.request_count(), 9);
    assert!(p.endpoints()[0].is_down(tokio::time::Instant::now()));

    // After the cool-down it is tried again (and taken out again at once while it fails).
    tokio::time::sleep(Duration::from_millis(350)).await;
    broken.set(|c| c.error_rate = 0.0);
    for _ in 0..4 {
        chat(&p, request()).await.unwrap();
    }
    assert!(broken.request_count() > 3);
    assert_eq!(p.endpoints()[0].failures(), 0);
}

#[tokio::test]
async fn each_endpoint_has_its_own_budget() {
    let a = mock(|_| {}).await;
    let b = mock(|_| {}).await;
    let p = OpenAiProvider::new(OpenAiOptions::with_endpoints(vec![
        EndpointSpec::new(a.base_url()),
        EndpointSpec::new(b.base_url()),
    ]))
    .unwrap();
    // A 429 on endpoint 0 pauses endpoint 0 only.
    a.set(|c| c.script.push_back(Canned::error(429, "slow down", "rate_limit_exceeded").header("retry-after", "30")));
    let err = chat(&p, request()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited);
    let t0 = Instant::now();
    chat(&p, request()).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(b.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Config and the engine

fn personas_file() -> std::path::PathBuf {
    Path::new(ROOT).join("data/personas.agents.json")
}

#[tokio::test]
async fn provider_from_config_picks_openai_or_azure() {
    let m = mock(|_| {}).await;
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::Auto;
    cfg.llm.base_url = Some(m.base_url());
    let (p, notice) = provider_from_config(&cfg).unwrap();
    assert_eq!(p.name(), "openai");
    assert!(notice.is_none());
    p.chat(Arc::new(request()), CallContext::default()).await.unwrap();
    // llm settings become request fields.
    let body = &m.requests()[0].body;
    assert_eq!(body["model"], json!("gpt-4o-mini"));

    cfg.llm.provider = ProviderKind::OpenAi;
    cfg.llm.endpoints = vec![troupe_sim::config::EndpointConfig {
        base_url: m.base_url(),
        api_key_env: Some("TROUPE_TEST_SURELY_UNSET_KEY_VAR".into()),
        requests_per_minute: None,
        tokens_per_minute: None,
    }];
    let err = provider_from_config(&cfg).unwrap_err();
    assert!(err.message.contains("TROUPE_TEST_SURELY_UNSET_KEY_VAR"), "{err}");

    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::Azure;
    cfg.llm.azure_endpoint = Some(m.azure_endpoint());
    cfg.llm.azure_deployment = Some("dep".into());
    let (p, _) = provider_from_config(&cfg).unwrap();
    assert_eq!(p.name(), "azure");

    // Unusable settings stop the engine with a message saying what to fix.
    cfg.llm.azure_endpoint = None;
    if std::env::var_os("AZURE_OPENAI_ENDPOINT").is_none() {
        let err = SimulationEngine::new(cfg).unwrap_err();
        assert!(matches!(err, EngineError::Provider(_)));
        assert!(err.to_string().contains("llm.azure_endpoint"), "{err}");
    }
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::OpenAi;
    cfg.llm.base_url = Some("not a url".into());
    assert_eq!(provider_from_config(&cfg).unwrap_err().kind, ErrorKind::BadRequest);
}

/// `llm.stop` as the user set it reaches OpenAI-compatible and Azure servers as OpenAI's `stop`
/// array, after a request's own stop sequences, on every request of a run built from the config.
#[tokio::test]
async fn llm_stop_is_sent_to_openai_compatible_and_azure_servers() {
    let m = mock(|_| {}).await;
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::OpenAi;
    cfg.llm.base_url = Some(m.base_url());
    cfg.llm.stop = vec!["\nModerator:".into(), "###".into()];
    let (p, _) = provider_from_config(&cfg).unwrap();
    p.chat(Arc::new(request()), CallContext::default()).await.unwrap();
    // A request's own stop sequences come first; one already in llm.stop is not repeated.
    let mut own = full_request();
    own.stop = vec!["\n\n".into(), "###".into()];
    p.chat(Arc::new(own), CallContext::default()).await.unwrap();

    cfg.llm.provider = ProviderKind::Azure;
    cfg.llm.azure_endpoint = Some(m.azure_endpoint());
    let (p, _) = provider_from_config(&cfg).unwrap();
    p.chat(Arc::new(request()), CallContext::default()).await.unwrap();

    let recs = m.requests();
    assert_eq!(recs[0].body["stop"], json!(["\nModerator:", "###"]));
    assert_eq!(recs[1].body["stop"], json!(["\n\n", "###", "\nModerator:"]));
    assert!(recs[2].path.starts_with("/openai/deployments/"), "{}", recs[2].path);
    assert_eq!(recs[2].body["stop"], json!(["\nModerator:", "###"]));

    // Through the engine: every persona request of a run carries it.
    let m = mock(|_| {}).await;
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::OpenAi;
    cfg.llm.base_url = Some(m.base_url());
    cfg.llm.stop = vec!["\nModerator:".into()];
    cfg.simulation.personas_file = personas_file();
    cfg.performance.rate_limit_delay = 0.0;
    let results = SimulationEngine::new(cfg)
        .unwrap()
        .run_simulation("Should we ship AI-assisted moderation?", 1, &["sarah_chen", "marcus_rivera"], vec![])
        .await
        .unwrap();
    assert!(results.success, "{:?}", results.error);
    assert_eq!(m.request_count(), 2);
    for r in m.requests() {
        assert_eq!(r.body["stop"], json!(["\nModerator:"]), "{}", r.body);
    }
}

/// A run whose server reports no usage says so in `results.json` and `metrics.json`: how many
/// tokens (and how much of the cost) are estimates, and with which counter; a run whose server
/// reported everything shows none of it.
#[tokio::test]
async fn estimated_tokens_are_marked_in_results_and_metrics() {
    async fn run(m: &MockServer, dir: &Path) -> (Value, Value) {
        let mut cfg = SimulationConfig::default();
        cfg.llm.provider = ProviderKind::OpenAi;
        cfg.simulation.personas_file = personas_file();
        cfg.performance.rate_limit_delay = 0.0;
        let p = OpenAiProvider::new(OpenAiOptions { stream: true, ..OpenAiOptions::new(m.base_url(), None) }).unwrap();
        let results = SimulationEngine::with_provider(cfg, Arc::new(p))
            .run_simulation("Should we ship AI-assisted moderation?", 1, &["sarah_chen", "marcus_rivera"], vec![])
            .await
            .unwrap();
        assert!(results.success, "{:?}", results.error);
        troupe_sim::record::results::save_results(&results, dir).unwrap();
        let read = |f: &str| serde_json::from_slice::<Value>(&std::fs::read(dir.join(f)).unwrap()).unwrap();
        (read("results.json"), read("metrics.json"))
    }
    let dir = tempfile::tempdir().unwrap();
    let m = mock(|c| c.omit_usage = true).await;
    let (results, metrics) = run(&m, &dir.path().join("estimated")).await;
    let r = &results["metrics"];
    assert!(r["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(r["tokens_estimated"], r["total_tokens"], "{r}");
    assert_eq!(r["cost_usd_estimated"], r["cost_usd"], "{r}");
    let note = r["tokens_estimate_note"].as_str().unwrap();
    assert!(note.contains("tiktoken o200k_base") && note.contains("max_tokens"), "{note}");
    assert_eq!(metrics["tokens_estimated"], r["total_tokens"]);
    assert_eq!(metrics["prompt_tokens_estimated"], metrics["prompt_tokens"]);
    assert_eq!(metrics["completion_tokens_estimated"], metrics["completion_tokens"]);
    assert_eq!(metrics["cost_usd_estimated"], metrics["cost_usd"]);
    assert_eq!(metrics["tokens_estimated_by"], json!(["tiktoken o200k_base"]));
    assert_eq!(metrics["tokens_estimate_note"], r["tokens_estimate_note"]);
    // Old readers: the fields they know are all still there.
    assert!(troupe_sim::record::results::load_results(&dir.path().join("estimated/results.json")).is_ok());

    let m = mock(|_| {}).await;
    let (results, metrics) = run(&m, &dir.path().join("reported")).await;
    for (what, v) in [("results.json metrics", &results["metrics"]), ("metrics.json", &metrics)] {
        let extra: Vec<&str> = keys(v).into_iter().filter(|k| k.contains("estimat")).collect();
        assert!(extra.is_empty(), "{what} shows {extra:?} though the server reported every token");
    }
}

/// OpenAI's API takes at most 4 stop sequences: a fifth is refused when the configuration loads,
/// naming `llm.stop` and the file, rather than dropped without a word (or sent to a 400).
#[test]
fn more_than_four_stop_sequences_are_refused_at_config_load() {
    use troupe_sim::config::{ConfigSources, load_config};
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("troupe.toml");
    std::fs::write(&toml, "[llm]\nstop = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n").unwrap();
    let src = |path: &Path| ConfigSources {
        toml: Some(path.to_path_buf()),
        ini: None,
        scenario: None,
        env: false,
        cli: None,
    };
    let err = load_config(&src(&toml)).expect_err("five stop sequences are refused").to_string();
    assert!(err.contains("llm.stop") && err.contains("at most 4") && err.contains("troupe.toml"), "{err}");
    std::fs::write(&toml, "[llm]\nstop = [\"a\", \"\"]\n").unwrap();
    let err = load_config(&src(&toml)).expect_err("an empty stop sequence is refused").to_string();
    assert!(err.contains("llm.stop") && err.contains("empty"), "{err}");
    std::fs::write(&toml, "[llm]\nstop = [\"a\", \"b\", \"c\", \"d\"]\n").unwrap();
    assert_eq!(load_config(&src(&toml)).unwrap().config.llm.stop.len(), 4);
}

#[tokio::test]
async fn a_full_simulation_through_the_mock() {
    // Some 500s and one 429 on the way: the supervisor retries them.
    let m = mock(|c| {
        c.error_rate = 0.2;
        c.script.push_back(Canned::error(429, "slow down", "rate_limit_exceeded").header("retry-after-ms", "20"));
    })
    .await;
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::OpenAi;
    cfg.llm.stream = true;
    cfg.simulation.personas_file = personas_file();
    cfg.performance.rate_limit_delay = 0.0;
    cfg.performance.backoff_base = 0.01;
    cfg.performance.backoff_max = 0.05;
    cfg.performance.max_retries = 8;
    cfg.performance.persona_timeout = 5.0;
    let p = OpenAiProvider::new(OpenAiOptions { stream: true, ..OpenAiOptions::new(m.base_url(), None) }).unwrap();
    let engine = SimulationEngine::with_provider(cfg, Arc::new(p));
    let t0 = Instant::now();
    let results = engine
        .run_simulation("Should we ship AI-assisted moderation?", 2, &["sarah_chen", "marcus_rivera"], vec![])
        .await
        .unwrap();
    assert!(results.success, "{:?}", results.error);
    assert_eq!(results.provider, "openai");
    assert!(!results.synthetic);
    assert_eq!(results.completed_turns, 2);
    let spoken: Vec<&str> = results
        .transcript
        .iter()
        .filter(|e| ["sarah_chen", "marcus_rivera"].contains(&e.speaker_id.as_str()))
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(spoken.len(), 4, "{spoken:?}");
    assert!(spoken.iter().all(|t| t.contains("start small")), "{spoken:?}");
    // Four answers, the scripted 429 and the 500s.
    assert_eq!(m.server_errors() + 1 + 4, m.request_count());
    // Each 500 and the 429 were retried.
    assert!(results.full_metrics.counts.retries as usize > m.server_errors());
    // Every request was a streamed chat completion from a persona.
    for r in m.requests() {
        assert_eq!(r.body["stream"], json!(true));
        assert!(["sarah_chen", "marcus_rivera"].contains(&r.body["user"].as_str().unwrap()));
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
}
