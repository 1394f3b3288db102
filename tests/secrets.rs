//! The canary test: full simulations (the `troupe` binary and the library) with a canary API key
//! set through every route (`OPENAI_API_KEY`, `.troupe/secrets.toml`, `--set llm.api_key=`,
//! `TROUPE_LLM__API_KEY`, a config file) against the loopback mock, with trace logging, prompt
//! logging and log files in both formats; then runs where the server answers 401 and 500 with
//! bodies quoting the key back (as JSON, plain text, HTML, a stream error, and cut where the
//! error snippet ends), and one where the key is wrong. Stdout, stderr, every file written,
//! the logs, `troupe config show`, `troupe doctor` and the `Debug`/`Display`/JSON renderings of
//! the config, engine, provider, results and errors must never hold the key, nor any eight
//! characters of it in any letter case. The mock must have received it, so the test cannot pass
//! vacuously.
//!
//! Then servers that quote the key back where an exact match misses it (issue 12): upper-cased,
//! cut in two halves, the whole `Authorization` header, in the model's text (streamed and not,
//! OpenAI and Azure) and in error bodies; and one full run with such a server followed by every
//! export, the run folder, the trace log and the output all searched.
//!
//! Loopback only (127.0.0.1, port 0): nothing reaches the internet.

mod support {
    pub mod cli;
    pub mod mock_openai;
}

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use support::mock_openai::{Canned, MockConfig, MockServer};
use troupe_sim::config::{self, ConfigSources, Layer, SecretString};
use troupe_sim::engine::{RunOptions, RunPlan, SimulationEngine};
use troupe_sim::llm::azure::AzureOptions;
use troupe_sim::llm::openai::{OpenAiOptions, OpenAiProvider};
use troupe_sim::llm::{CallContext, ChatMessage, ChatRequest, Provider, RequestMeta, Role};
use troupe_sim::persona::PersonaDatabase;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CANARY: &str = "sk-canary-7f3a9c2e4b81d6f0a5c9e3b7";
/// The key the mock wants in the wrong-key runs.
const RIGHT_KEY: &str = "sk-the-right-key-0000";
/// Where the client cuts a server's message (`SNIPPET_CHARS` in `src/llm/openai.rs`).
const SNIPPET_CHARS: usize = 200;

// ---------------------------------------------------------------------------------------------
// Looking for the canary

/// The first piece of the canary (any 8 characters of it, in any letter case) found in `text`.
fn leaked(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    (0..=CANARY.len() - 8).map(|i| &CANARY[i..i + 8]).find(|w| lower.contains(w))
}

fn assert_clean(what: &str, text: &str) {
    if let Some(w) = leaked(text) {
        // ASCII lower-casing keeps byte offsets.
        let at = text.to_ascii_lowercase().find(w).unwrap();
        let from = text[..at].char_indices().rev().nth(120).map_or(0, |(i, _)| i);
        let to = text[at..].char_indices().nth(120).map_or(text.len(), |(i, _)| at + i);
        panic!("the key leaked into {what} (`{w}`): …{}…", &text[from..to]);
    }
}

/// Checks every file under `dir` except `skip` (where the test itself put the key). Returns the
/// paths checked.
fn assert_tree_clean(dir: &Path, skip: &[PathBuf]) -> Vec<PathBuf> {
    let mut checked = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !skip.contains(&p) {
                let bytes = std::fs::read(&p).unwrap();
                assert_clean(&p.display().to_string(), &String::from_utf8_lossy(&bytes));
                checked.push(p);
            }
        }
    }
    checked
}

/// Asserts the mock saw requests and every one carried the canary.
fn assert_key_received(m: &MockServer) -> usize {
    let recs = m.requests();
    assert!(!recs.is_empty(), "the mock got no request: the test would pass vacuously");
    for r in &recs {
        assert_eq!(r.header("authorization"), Some(format!("Bearer {CANARY}").as_str()), "{}", r.path);
    }
    recs.len()
}

// ---------------------------------------------------------------------------------------------
// How the server answers

#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    /// Wants the canary and answers normally.
    Healthy,
    /// Wants another key: 401 with the wanted key masked, as OpenAI does.
    WrongKey,
    /// 401, an OpenAI error quoting the whole `Authorization` header.
    Echo401,
    /// 500, plain text quoting the header.
    Echo500,
    /// 500, a FastAPI-style JSON error whose message quotes the key across the snippet's end.
    Echo500Cut,
    /// 200 but HTML quoting the key across the snippet's end (a proxy's error page).
    EchoHtmlCut,
    /// 200, a stream whose error event quotes the header.
    EchoStream,
}

impl Server {
    async fn start(self) -> MockServer {
        // Puts `{key}` so that the snippet the client keeps ends inside it.
        let cut = format!("{}'{{key}}' was rejected", "x".repeat(SNIPPET_CHARS - 14));
        let mut c = MockConfig::default();
        match self {
            Server::Healthy => c.require_key = Some(CANARY.into()),
            Server::WrongKey => c.require_key = Some(RIGHT_KEY.into()),
            Server::Echo401 => {
                c.echo = Some(Canned::error(401, "Incorrect API key provided: {auth}. Check it.", "invalid_api_key"))
            }
            Server::Echo500 => {
                c.echo = Some(
                    Canned::new(500, "upstream failed; request headers: authorization: {auth}")
                        .header("content-type", "text/plain"),
                )
            }
            Server::Echo500Cut => {
                c.echo = Some(Canned::new(500, serde_json::json!({"detail": cut}).to_string()));
            }
            Server::EchoHtmlCut => {
                c.echo = Some(Canned::new(200, format!("<p>{cut}</p>")).header("content-type", "text/html"))
            }
            Server::EchoStream => {
                let ev = serde_json::json!({"error": {"message": "stream aborted for {auth}", "type": "server_error"}});
                c.echo = Some(Canned::new(200, format!("data: {ev}\n\n")).header("content-type", "text/event-stream"));
            }
        }
        MockServer::start(c).await
    }

    /// A phrase the user sees when this server answered (so the error path really ran).
    fn evidence(self) -> &'static str {
        match self {
            Server::Healthy => "start small",
            Server::WrongKey => "check the API key",
            Server::Echo401 => "Incorrect API key provided",
            Server::Echo500 => "upstream failed",
            Server::Echo500Cut => "xxxxxxxxxx",
            Server::EchoHtmlCut => "not the expected JSON",
            Server::EchoStream => "stream aborted",
        }
    }
}

const ALL_SERVERS: [Server; 7] = [
    Server::Healthy,
    Server::WrongKey,
    Server::Echo401,
    Server::Echo500,
    Server::Echo500Cut,
    Server::EchoHtmlCut,
    Server::EchoStream,
];

// ---------------------------------------------------------------------------------------------
// Where the key comes from

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    /// `OPENAI_API_KEY`.
    Env,
    /// `.troupe/secrets.toml` in the working directory.
    SecretsFile,
    /// `--set llm.api_key=...` (a command-line layer in the library).
    Set,
    /// `TROUPE_LLM__API_KEY`.
    TroupeEnv,
    /// `llm.api_key` in a `--config` file.
    ConfigFile,
}

const ALL_ROUTES: [Route; 5] = [Route::Env, Route::SecretsFile, Route::Set, Route::TroupeEnv, Route::ConfigFile];

/// A working directory holding copies of `config/`, `data/` and `scenarios/`.
struct Workspace {
    dir: tempfile::TempDir,
    /// Files the test wrote the key into.
    keyed: Vec<PathBuf>,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["config", "data", "scenarios"] {
            copy_dir(&Path::new(ROOT).join(d), &dir.path().join(d));
        }
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        Workspace { dir, keyed: Vec::new() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Puts the key where `route` reads it from, for the files; returns the `--config` file.
    fn place_key(&mut self, route: Route) -> Option<PathBuf> {
        match route {
            Route::SecretsFile => {
                let d = self.path().join(".troupe");
                std::fs::create_dir_all(&d).unwrap();
                let f = d.join("secrets.toml");
                std::fs::write(&f, format!("api_key = \"{CANARY}\"\n")).unwrap();
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
                }
                self.keyed.push(f);
                None
            }
            Route::ConfigFile => {
                let f = self.path().join("keyed.toml");
                std::fs::write(&f, format!("[llm]\napi_key = \"{CANARY}\"\n")).unwrap();
                self.keyed.push(f.clone());
                Some(f)
            }
            _ => None,
        }
    }

    /// Checks every file but the keyed ones.
    fn assert_clean(&self) -> Vec<PathBuf> {
        assert_tree_clean(self.path(), &self.keyed)
    }

    /// The saved runs' folders.
    fn runs(&self) -> Vec<PathBuf> {
        let conv = self.path().join("outputs/conversations");
        let Ok(rd) = std::fs::read_dir(conv) else { return Vec::new() };
        rd.map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Every file's text under `dir`, joined.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
                out.push('\n');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The binary

/// `troupe` running `sub` in `ws` (the shared helper: the user's own keys, endpoints and
/// `TROUPE_*` variables removed), the key placed by `route`, pointed at the mock with trace
/// logging and prompt logging on. The global flags follow the subcommand: clap keeps only one
/// level's `--set` values.
fn troupe(ws: &mut Workspace, route: Route, mock: &MockServer, sub: &[&str]) -> Command {
    let mut cmd = support::cli::troupe_in(ws.path());
    cmd.args(sub);
    cmd.env("RUST_LOG", "trace").env("NO_COLOR", "1");
    if let Some(f) = ws.place_key(route) {
        cmd.arg("--config").arg(f);
    }
    match route {
        Route::Env => {
            cmd.env("OPENAI_API_KEY", CANARY);
        }
        Route::TroupeEnv => {
            cmd.env("TROUPE_LLM__API_KEY", CANARY);
        }
        Route::Set => {
            cmd.args(["--set", &format!("llm.api_key={CANARY}")]);
        }
        Route::SecretsFile | Route::ConfigFile => {}
    }
    cmd.args(["--set", "llm.provider=openai", "--set", &format!("llm.base_url={}", mock.base_url())]);
    cmd.args(["--set", "monitoring.log_prompts=true", "--set", "monitoring.log_level=TRACE"]);
    // Failing calls end fast.
    cmd.args(["--set", "performance.backoff_base=0.01", "--set", "performance.backoff_max=0.05"]);
    cmd.args(["--set", "performance.max_retries=2", "--set", "performance.persona_timeout=5"]);
    cmd
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn output(cmd: &mut Command) -> Out {
    let o = cmd.output().unwrap();
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// One full `troupe run` of the quickstart scenario, then `config show` and `doctor` (text and
/// JSON), all searched for the key along with every file they left behind.
async fn binary_case(route: Route, server: Server, json_log: bool) {
    let mock = server.start().await;
    let mut ws = Workspace::new();
    let format = if json_log { "json" } else { "text" };
    let log = ws.path().join(format!("logs/run-{format}.log"));
    let what = format!("{route:?} / {server:?} / {format} log");

    let ws_ref = &mut ws;
    let run = tokio::task::block_in_place(|| {
        output(
            troupe(ws_ref, route, &mock, &["run", "scenarios/quickstart.ron"])
                .args(["--rate-limit-delay", "0", "--log-file"])
                .arg(&log)
                .args(["--set", &format!("monitoring.log_format={format}")]),
        )
    });
    assert!(matches!(run.code, Some(0 | 1)), "{what}: exit {:?}\n{}{}", run.code, run.stdout, run.stderr);
    assert_clean(&format!("{what}: run stdout"), &run.stdout);
    assert_clean(&format!("{what}: run stderr"), &run.stderr);
    assert!(mock.request_count() > 0, "{what}: the mock got no request:\n{}{}", run.stdout, run.stderr);
    assert_key_received(&mock);

    // The run was saved, the logs hold trace-level lines with the prompts, and what the server
    // said reached the user, scrubbed.
    let runs = ws.runs();
    assert_eq!(runs.len(), 1, "{what}: {}", run.stderr);
    for f in ["results.json", "metrics.json", "transcript.jsonl", "journal.jsonl"] {
        assert!(runs[0].join(f).is_file(), "{what}: no {f}");
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    let trace = if json_log { "\"level\":\"TRACE\"" } else { "TRACE" };
    assert!(log_text.contains(trace), "{what}: no trace line in the log file");
    assert!(log_text.contains("prompt"), "{what}: prompts were not logged");
    let shown = format!("{}{}{}", run.stdout, run.stderr, all_text(&runs[0]));
    assert!(shown.contains(server.evidence()), "{what}: `{}` not shown:\n{}", server.evidence(), run.stderr);
    if matches!(server, Server::Echo401 | Server::Echo500 | Server::EchoStream) {
        assert!(shown.contains("[redacted]"), "{what}: the echoed key should show as [redacted]");
    }
    if server == Server::Healthy {
        assert_eq!(run.code, Some(0), "{what}: {}", run.stderr);
        assert!(runs[0].join("analysis.json").is_file(), "{what}: no analysis.json");
    }

    for args in [&["config", "show"][..], &["config", "show", "--json"], &["doctor"], &["doctor", "--json"]] {
        let ws_ref = &mut ws;
        let o = tokio::task::block_in_place(|| output(&mut troupe(ws_ref, route, &mock, args)));
        assert!(o.code.is_some(), "{what}: {args:?} was killed");
        assert_clean(&format!("{what}: {args:?} stdout"), &o.stdout);
        assert_clean(&format!("{what}: {args:?} stderr"), &o.stderr);
        if args[0] == "config" {
            assert!(o.stdout.contains("[redacted]"), "{what}: {args:?} should say the key is there:\n{}", o.stdout);
        }
    }
    let checked = ws.assert_clean();
    assert!(checked.len() >= 6, "{what}: only {checked:?}");
    // Doctor's 1-token request went through the mock too.
    assert_key_received(&mock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_through_every_route_never_show_the_key() {
    for (i, route) in ALL_ROUTES.into_iter().enumerate() {
        binary_case(route, Server::Healthy, i % 2 == 0).await;
    }
    // Both log formats for the route the issue names first.
    binary_case(Route::Env, Server::Healthy, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_against_servers_that_quote_the_key_never_show_it() {
    for (i, server) in ALL_SERVERS.into_iter().filter(|s| *s != Server::Healthy).enumerate() {
        binary_case(ALL_ROUTES[i % ALL_ROUTES.len()], server, i % 2 == 1).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The library

/// Logs of this test binary, captured at trace level.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(w.clone()))
            .try_init();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets or removes an environment variable.
fn set_env(k: &str, v: Option<&str>) {
    // SAFETY: only the library test changes the environment; the other tests read it only
    // through std (which locks) when they spawn `troupe`.
    unsafe {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
}

/// One full run through the engine, key from `route`, saved under the workspace; every
/// rendering of the config, engine, provider, results and errors checked.
async fn library_case(route: Route, server: Server) {
    let mock = server.start().await;
    let mut ws = Workspace::new();
    let what = format!("library {route:?} / {server:?}");
    let toml = ws.place_key(route);
    let out = ws.path().join("outputs");
    let cfg = library_config(route, &mock, ws.path(), toml, &out, &what);
    let engine = library_engine(&cfg, ws.path(), &what);

    let db = PersonaDatabase::load(&cfg.simulation.personas_file).unwrap();
    let personas = ["sarah_chen", "marcus_rivera"].iter().map(|id| db.get(id).unwrap().clone()).collect();
    let plan = RunPlan::ad_hoc("Should we ship AI-assisted moderation?", personas);
    let results = engine.run(plan, RunOptions { save_under: Some(out.clone()), ..Default::default() }).await;
    assert_key_received(&mock);
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            assert_clean(&format!("{what}: engine error"), &format!("{e} {e:?}"));
            panic!("{what}: the run did not end with results: {e}");
        }
    };
    let rendered = format!("{results:?}\n{}", serde_json::to_string(&results).unwrap());
    assert_clean(&format!("{what}: results"), &rendered);
    let saved = all_text(&out);
    assert!(saved.contains(server.evidence()) || rendered.contains(server.evidence()), "{what}: {:?}", results.error);
    let checked = ws.assert_clean();
    assert!(checked.iter().any(|p| p.ends_with("results.json")), "{what}: not saved: {checked:?}");

    provider_answers_are_clean(&mock, &what).await;
}

/// The config of a library run against `mock`, the key placed by `route` (`toml`: the config
/// file holding it), loaded in the workspace `ws`; the layer's and the config's renderings
/// checked.
fn library_config(
    route: Route,
    mock: &MockServer,
    ws: &Path,
    toml: Option<PathBuf>,
    out: &Path,
    what: &str,
) -> config::SimulationConfig {
    let mut sets = vec![
        "llm.provider=openai".to_string(),
        format!("llm.base_url={}", mock.base_url()),
        format!("simulation.personas_file={ROOT}/data/personas.agents.json"),
        format!("llm.pricing_file={ROOT}/config/pricing.toml"),
        format!("output.output_dir={}", out.display()),
        "monitoring.log_prompts=true".into(),
        "monitoring.log_level=TRACE".into(),
        "performance.rate_limit_delay=0".into(),
        "performance.backoff_base=0.01".into(),
        "performance.backoff_max=0.05".into(),
        "performance.max_retries=2".into(),
        "simulation.max_turns=2".into(),
    ];
    match route {
        Route::Env => set_env("OPENAI_API_KEY", Some(CANARY)),
        Route::TroupeEnv => set_env("TROUPE_LLM__API_KEY", Some(CANARY)),
        Route::Set => sets.push(format!("llm.api_key={CANARY}")),
        Route::SecretsFile | Route::ConfigFile => {}
    }
    // `.troupe/secrets.toml` is read from the working directory.
    std::env::set_current_dir(ws).unwrap();
    let layer = Layer::from_sets("command line", &sets).unwrap();
    assert_clean(&format!("{what}: the layer's Debug"), &format!("{layer:?}"));
    let loaded =
        config::load_config(&ConfigSources { toml, ini: None, scenario: None, env: true, cli: Some(layer) }).unwrap();
    std::env::set_current_dir(ROOT).unwrap();
    let cfg = loaded.config.clone();
    for (name, text) in [
        ("LoadedConfig Debug", format!("{loaded:?} {loaded:#?}")),
        ("SimulationConfig Debug", format!("{cfg:?} {cfg:#?}")),
        ("config JSON", serde_json::to_string(&cfg).unwrap()),
        ("config entries", format!("{:?}", loaded.entries())),
        ("config notes", loaded.notes.join("\n")),
    ] {
        assert_clean(&format!("{what}: {name}"), &text);
    }
    cfg
}

/// The engine, built in the workspace `ws` (where `.troupe/secrets.toml` is), after which the
/// key's environment variables are removed; the key it resolved and the renderings of the key,
/// engine and provider checked.
fn library_engine(cfg: &config::SimulationConfig, ws: &Path, what: &str) -> SimulationEngine {
    std::env::set_current_dir(ws).unwrap();
    let key = config::resolve_api_key(cfg, Path::new(config::secrets::SECRETS_FILE), "OPENAI_API_KEY");
    let engine = SimulationEngine::new(cfg.clone());
    std::env::set_current_dir(ROOT).unwrap();
    set_env("OPENAI_API_KEY", None);
    set_env("TROUPE_LLM__API_KEY", None);
    assert_eq!(key.key.as_ref().map(SecretString::expose), Some(CANARY), "{what}: {:?}", key.source);
    assert_clean(&format!("{what}: ApiKey Debug"), &format!("{key:?} {:?}", key.warnings));
    let engine = engine.unwrap();
    assert_eq!(engine.provider().name(), "openai");
    assert_clean(&format!("{what}: engine Debug"), &format!("{engine:?} {engine:#?}"));
    assert_clean(&format!("{what}: provider Debug"), &format!("{:?}", engine.provider()));
    engine
}

/// The provider's own answer or error, as every caller may show it, streamed and not.
async fn provider_answers_are_clean(mock: &MockServer, what: &str) {
    let p = OpenAiProvider::new(OpenAiOptions::new(mock.base_url(), Some(SecretString::new(CANARY)))).unwrap();
    let opts = OpenAiOptions::new(mock.base_url(), Some(SecretString::new(CANARY)));
    assert_clean(&format!("{what}: options Debug"), &format!("{opts:?} {p:?} {:?}", p.endpoints()));
    let req = ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage::new(Role::User, "Say something.")],
        temperature: None,
        top_p: None,
        max_tokens: None,
        seed: None,
        stop: Vec::new(),
        response_format: troupe_sim::llm::ResponseFormat::Text,
        meta: RequestMeta::default(),
    };
    for stream in [false, true] {
        let p = OpenAiProvider::new(OpenAiOptions { stream, ..opts.clone() }).unwrap();
        match p.chat(Arc::new(req.clone()), CallContext::default()).await {
            Ok(r) => assert_clean(&format!("{what}: answer"), &format!("{r:?}")),
            Err(e) => assert_clean(
                &format!("{what}: LlmError (stream {stream})"),
                &format!("{e}\n{e:?}\n{}", serde_json::to_string(&e).unwrap()),
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_runs_through_every_route_and_bad_server_never_show_the_key() {
    let logs = captured_logs();
    for route in ALL_ROUTES {
        library_case(route, Server::Healthy).await;
    }
    for (i, server) in ALL_SERVERS.into_iter().filter(|s| *s != Server::Healthy).enumerate() {
        library_case(ALL_ROUTES[i % ALL_ROUTES.len()], server).await;
    }
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("TRACE") && text.contains("prompt"), "trace logging with prompts was not captured");
    assert_clean("the library's trace logs", &text);
}

// ---------------------------------------------------------------------------------------------
// The client's scrubbing on its own

/// A server message quoting the key so that the 200-character snippet ends inside it: the
/// snippet must not keep the key's first characters.
#[tokio::test]
async fn a_key_cut_by_the_error_snippet_leaves_no_prefix() {
    for server in [Server::Echo500Cut, Server::EchoHtmlCut] {
        let m = server.start().await;
        let p = OpenAiProvider::new(OpenAiOptions::new(m.base_url(), Some(SecretString::new(CANARY)))).unwrap();
        let req = ChatRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![ChatMessage::new(Role::User, "Hello.")],
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            stop: Vec::new(),
            response_format: troupe_sim::llm::ResponseFormat::Text,
            meta: RequestMeta::default(),
        };
        let e = p.chat(Arc::new(req), CallContext::default()).await.unwrap_err();
        assert_key_received(&m);
        assert!(e.message.contains("xxxxxxxxxx"), "{server:?}: the server's words are kept: {e}");
        assert_clean(&format!("{server:?}: the error"), &format!("{e} {e:?}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Servers quoting the key where an exact match misses it (issue 12)

fn hello() -> ChatRequest {
    ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![ChatMessage::new(Role::User, "Hello.")],
        temperature: None,
        top_p: None,
        max_tokens: None,
        seed: None,
        stop: Vec::new(),
        response_format: troupe_sim::llm::ResponseFormat::Text,
        meta: RequestMeta::default(),
    }
}

/// The provider's answer from a mock replying `reply` (credentials filled in), streamed or not,
/// through the OpenAI flavour and the Azure one: the words around the key arrive, the key in no
/// form does.
async fn assert_reply_redacted(reply: &str, kept: &str) {
    let m = MockServer::start(MockConfig { reply: reply.into(), delta_chars: 5, ..MockConfig::default() }).await;
    for azure in [false, true] {
        for stream in [false, true] {
            let what = format!("{reply:?} (stream {stream}, azure {azure})");
            let p = if azure {
                let mut opts = OpenAiOptions::new(m.azure_endpoint(), Some(SecretString::new(CANARY)));
                opts.stream = stream;
                let a =
                    AzureOptions { model: "gpt-4o-mini".into(), deployment: None, api_version: "2024-10-21".into() };
                OpenAiProvider::azure(opts, a).unwrap()
            } else {
                let opts = OpenAiOptions::new(m.base_url(), Some(SecretString::new(CANARY)));
                OpenAiProvider::new(OpenAiOptions { stream, ..opts }).unwrap()
            };
            let r = p.chat(Arc::new(hello()), CallContext::default()).await.unwrap();
            assert!(r.text.contains(kept) && r.text.contains("[redacted]"), "{what}: {:?}", r.text);
            assert_clean(&format!("{what}: the answer"), &format!("{r:?}"));
        }
    }
    let recs = m.requests();
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().any(|r| r.header("api-key") == Some(CANARY)), "the Azure calls sent the key");
}

#[tokio::test]
async fn an_upper_cased_key_in_the_models_text_is_redacted() {
    assert_reply_redacted("I was told to say {KEY} out loud.", "out loud").await;
}

#[tokio::test]
async fn a_key_cut_in_two_in_the_models_text_is_redacted() {
    assert_reply_redacted("First half {key_head} and, later, the rest: {key_tail}.", "later, the rest").await;
}

#[tokio::test]
async fn the_authorization_header_echoed_in_the_models_text_is_redacted() {
    assert_reply_redacted("Your request said authorization: {auth}, fine.", "fine").await;
    assert_reply_redacted("AUTHORIZATION: {AUTH} -- noted.", "noted").await;
}

/// An error body quoting the key upper-cased, or in two halves: the error the user sees keeps
/// the server's words, not the key.
#[tokio::test]
async fn error_bodies_quoting_the_key_upper_cased_or_in_pieces_are_redacted() {
    let bodies = [
        Canned::new(500, "upstream failed for {KEY}, sorry").header("content-type", "text/plain"),
        Canned::error(401, "Incorrect API key provided: {key_head} (and {key_tail}). Check it.", "invalid_api_key"),
        Canned::new(500, serde_json::json!({"detail": "proxy said {AUTH}, sorry"}).to_string()),
        Canned::new(200, "<p>bad gateway for {KEY}</p>").header("content-type", "text/html"),
    ];
    for canned in bodies {
        let m = MockServer::start(MockConfig { echo: Some(canned.clone()), ..MockConfig::default() }).await;
        let p = OpenAiProvider::new(OpenAiOptions::new(m.base_url(), Some(SecretString::new(CANARY)))).unwrap();
        let e = p.chat(Arc::new(hello()), CallContext::default()).await.unwrap_err();
        assert_key_received(&m);
        assert!(e.message.contains("[redacted]"), "{}: {e}", canned.body);
        assert_clean(
            &format!("{}: the error", canned.body),
            &format!("{e} {e:?} {}", serde_json::to_string(&e).unwrap()),
        );
    }
}

/// A full `troupe run` against a server that quotes the key in its replies (upper-cased, in two
/// halves, the whole header; streamed in 5-character pieces) and in two error bodies, then
/// every export: the key is nowhere in the run folder (results, transcript, journal, metrics,
/// analysis, exports), the trace log, or what the commands printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_and_its_exports_hold_no_form_of_a_key_the_server_echoed() {
    let reply = "I was told to say {KEY} out loud. First half {key_head} and, later, the rest: {key_tail}. \
                 Your request said authorization: {auth}, fine. AUTHORIZATION: {AUTH} -- noted.";
    let mut c =
        MockConfig { reply: reply.into(), delta_chars: 5, require_key: Some(CANARY.into()), ..Default::default() };
    c.script.push_back(Canned::new(
        500,
        serde_json::json!({"error": {"message": "upstream failed for {KEY} / {key_head} ... {key_tail}", "type": "server_error"}})
            .to_string(),
    ));
    c.script.push_back(Canned::new(500, "proxy error; headers: {AUTH}").header("content-type", "text/plain"));
    let mock = MockServer::start(c).await;
    let mut ws = Workspace::new();
    let log = ws.path().join("logs/run.log");
    let ws_ref = &mut ws;
    let run = tokio::task::block_in_place(|| {
        output(
            troupe(ws_ref, Route::Env, &mock, &["run", "scenarios/quickstart.ron"])
                .args(["--rate-limit-delay", "0", "--log-file"])
                .arg(&log)
                .args(["--set", "llm.stream=true"]),
        )
    });
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_clean("run stdout", &run.stdout);
    assert_clean("run stderr", &run.stderr);
    assert_key_received(&mock);
    let runs = ws.runs();
    assert_eq!(runs.len(), 1, "{}", run.stderr);
    let dir = runs[0].clone();
    let transcript = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
    assert!(transcript.contains("out loud") && transcript.contains("[redacted]"), "the echoing replies were recorded");
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(journal.contains("upstream failed"), "the echoing errors were journalled");
    assert!(std::fs::read_to_string(&log).unwrap().contains("TRACE"), "the log is at trace level");

    for (fmt, ext) in [("json", "json"), ("jsonl", "jsonl"), ("csv", "csv"), ("markdown", "md"), ("html", "html")] {
        let ws_ref = &mut ws;
        let dir_s = dir.display().to_string();
        let o = tokio::task::block_in_place(|| {
            output(&mut troupe(ws_ref, Route::Env, &mock, &["export", &dir_s, "--format", fmt]))
        });
        assert_eq!(o.code, Some(0), "{fmt}: {}", o.stderr);
        assert_clean(&format!("export {fmt} stdout"), &o.stdout);
        assert_clean(&format!("export {fmt} stderr"), &o.stderr);
        assert!(dir.join(format!("export.{ext}")).is_file(), "{fmt}");
    }
    let checked = ws.assert_clean();
    for f in [
        "results.json",
        "transcript.jsonl",
        "journal.jsonl",
        "metrics.json",
        "analysis.json",
        "export.csv",
        "export.html",
        "export.md",
        "run.log",
    ] {
        assert!(checked.iter().any(|p| p.ends_with(f)), "{f} was not checked: {checked:?}");
    }
}
