//! What every handler shares: the configuration, the providers (one per kind, reused by every
//! run, so concurrent runs share their rate budgets), the live runs and the tokens.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{LoadedConfig, ProviderKind, SimulationConfig};
use crate::engine::{EngineError, SimulationEngine, conversations_dir};
use crate::llm::{Provider, SimulatedProvider};

use super::live::LiveRun;
use super::logs::LogBuffer;

/// How `troupe serve` (or a test) sets the app up.
#[derive(Debug)]
pub struct ServeSettings {
    /// The merged configuration, with provenance for the Settings page.
    pub loaded: LoadedConfig,
    /// The access token every request must carry; `None` on loopback without `--token`.
    pub access_token: Option<String>,
    /// Recent log lines for the Settings page.
    pub logs: LogBuffer,
    /// The folder of scenario files the New run page offers (`scenarios`).
    pub scenarios_dir: PathBuf,
    /// How much any client may hold: time, connections, runs.
    pub limits: ServeLimits,
}

/// What keeps the server from being worn down: every wait a client can cause is bounded, and
/// so are the connections and runs it can hold at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeLimits {
    /// Longest wait for a request's headers, counted from the connection's start (or from the
    /// previous response on a kept-alive connection); then the connection is closed.
    pub header_timeout: Duration,
    /// Longest pause while a request body arrives; then the request ends with 408.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen queue until one closes.
    pub max_connections: usize,
    /// Runs going at once; a further start gets 429 with a page saying so.
    pub max_runs: usize,
    /// How long a finished run's events stay in memory for a Live page still open on it
    /// (its results are on disk; after this the events are dropped).
    pub finished_run_linger: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_runs: 4,
            finished_run_linger: Duration::from_secs(30),
        }
    }
}

/// The app's shared state: cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// The inside of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    pub(crate) loaded: Arc<LoadedConfig>,
    /// The configured provider, shared by every run that uses it.
    pub(crate) provider: Arc<dyn Provider>,
    /// A note about the provider choice (e.g. "using the simulated provider").
    pub(crate) notice: Option<String>,
    /// The simulated provider, for runs that ask for it explicitly.
    pub(crate) simulated: Arc<dyn Provider>,
    /// Runs started by this server, by id, until a while after they finish. A std mutex:
    /// nothing is awaited under it.
    pub(crate) runs: Mutex<HashMap<String, Arc<LiveRun>>>,
    /// One permit per run going (`limits.max_runs`): taken before a run starts, given back
    /// when it ends, so two starts at once cannot both take the last slot.
    pub(crate) run_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) csrf: String,
    pub(crate) access_token: Option<String>,
    pub(crate) logs: LogBuffer,
    pub(crate) scenarios_dir: PathBuf,
    pub(crate) limits: ServeLimits,
    /// Serialises persona saves (read, change, write back).
    pub(crate) persona_lock: tokio::sync::Mutex<()>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// `n` random bytes as lower-case hex, from the operating system's generator.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness is a broken machine; fall back on the hasher's per-process keys.
        use std::hash::{BuildHasher, Hasher};
        for chunk in buf.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64);
            let v = h.finish().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl AppState {
    /// Sets up the providers from the configuration.
    pub fn new(s: ServeSettings) -> Result<Self, EngineError> {
        let engine = SimulationEngine::new(s.loaded.config.clone())?;
        let provider = engine.provider().clone();
        let simulated: Arc<dyn Provider> = if s.loaded.config.llm.provider == ProviderKind::Simulated {
            provider.clone()
        } else {
            Arc::new(SimulatedProvider::new(s.loaded.config.llm.simulated.clone()))
        };
        Ok(AppState(Arc::new(Inner {
            notice: engine.notice().map(str::to_string),
            loaded: Arc::new(s.loaded),
            provider,
            simulated,
            runs: Mutex::new(HashMap::new()),
            run_slots: Arc::new(tokio::sync::Semaphore::new(s.limits.max_runs.max(1))),
            csrf: random_token(32),
            access_token: s.access_token,
            logs: s.logs,
            scenarios_dir: s.scenarios_dir,
            limits: s.limits,
            persona_lock: tokio::sync::Mutex::new(()),
        })))
    }

    /// The configuration in force.
    pub fn config(&self) -> &SimulationConfig {
        &self.loaded.config
    }

    /// The limits in force.
    pub fn limits(&self) -> &ServeLimits {
        &self.limits
    }

    /// The per-server CSRF token every POST must carry.
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// Where runs are saved: `output_dir/conversations`.
    pub fn conversations_dir(&self) -> PathBuf {
        conversations_dir(&self.config().output.output_dir)
    }

    /// Where experiments are saved: `output_dir/experiments`.
    pub fn experiments_dir(&self) -> PathBuf {
        self.config().output.output_dir.join("experiments")
    }

    /// A run this server started: going, or finished less than
    /// [`ServeLimits::finished_run_linger`] ago.
    pub fn live_run(&self, id: &str) -> Option<Arc<LiveRun>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Every run this server holds in memory (see [`AppState::live_run`]).
    pub fn live_runs(&self) -> Vec<Arc<LiveRun>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub(crate) fn add_run(&self, run: Arc<LiveRun>) {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).insert(run.id.clone(), run);
    }

    /// Drops a finished run from the registry, unless the id now names another run.
    pub(crate) fn forget_run(&self, run: &Arc<LiveRun>) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.get(&run.id).is_some_and(|r| Arc::ptr_eq(r, run)) {
            runs.remove(&run.id);
        }
    }

    pub(crate) fn remove_run(&self, id: &str) {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}
