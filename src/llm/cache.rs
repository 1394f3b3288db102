//! The response cache: answers a request it has seen before without calling the provider.
//!
//! Keyed by a hash of (provider, model, normalized request); kept in memory and, when given a
//! file, appended to it as JSON lines (one writer at a time, so concurrent calls in one process
//! never interleave lines). Modes:
//! - `off`: no cache;
//! - `record`: every answer is stored, nothing is served from the cache;
//! - `replay`: every answer must come from the cache; a miss is an error naming the persona and
//!   the turn (`troupe run --replay`);
//! - `auto`: a hit is served, a miss is asked and stored (`troupe resume`, forks).
//!
//! A journal's exchanges load into the same cache, which is how resume and replay avoid paying
//! twice.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, CallContext, ChatRequest, ChatResponse, ErrorKind, LlmError, Provider};
use crate::config::CacheMode;
use crate::rng::{hash_bytes, mix};

/// The key of a request: provider, model and normalized request.
pub fn request_key(provider: &str, req: &ChatRequest) -> u64 {
    mix(&[hash_bytes(provider.as_bytes()), req.fingerprint()])
}

/// A key as written in files (hex, since JSON numbers lose precision past 2^53).
pub fn key_hex(k: u64) -> String {
    format!("{k:016x}")
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    key: String,
    response: ChatResponse,
}

/// Stored answers.
#[derive(Debug, Default)]
pub struct ResponseCache {
    map: DashMap<u64, ChatResponse>,
    served: dashmap::DashSet<u64>,
    // A plain mutex around the append: held for one write, never across an await.
    file: Option<(PathBuf, Mutex<File>)>,
}

impl ResponseCache {
    /// An in-memory cache.
    pub fn in_memory() -> Self {
        ResponseCache::default()
    }

    /// A cache backed by `path` (created if missing; existing lines are loaded, a torn last
    /// line is ignored).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let map = DashMap::new();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                if let Ok(l) = serde_json::from_str::<Line>(&line)
                    && let Ok(k) = u64::from_str_radix(&l.key, 16)
                {
                    map.insert(k, l.response);
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ResponseCache { map, served: Default::default(), file: Some((path.to_path_buf(), Mutex::new(file))) })
    }

    /// Adds an answer (and appends it to the file, when there is one).
    pub fn insert(&self, key: u64, response: ChatResponse) {
        if let Some((path, f)) = &self.file {
            let mut line =
                serde_json::to_vec(&Line { key: key_hex(key), response: response.clone() }).unwrap_or_default();
            line.push(b'\n');
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = f.write_all(&line) {
                tracing::warn!(file = %path.display(), error = %e, "could not append to the response cache");
            }
        }
        self.map.insert(key, response);
    }

    /// The answer stored for `key`.
    pub fn get(&self, key: u64) -> Option<ChatResponse> {
        self.map.get(&key).map(|r| r.clone())
    }

    /// True when the cache answered `key` in this process (it was not paid for again).
    pub fn was_served(&self, key: u64) -> bool {
        self.served.contains(&key)
    }

    /// Number of stored answers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A provider in front of another, serving and storing answers by request key.
#[derive(Debug)]
pub struct CachingProvider {
    inner: Option<Arc<dyn Provider>>,
    cache: Arc<ResponseCache>,
    mode: CacheMode,
    name: String,
    synthetic: bool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CachingProvider {
    /// Wraps `inner` (none: replay only). `name` is the provider name used in keys: the
    /// recorded one when replaying a journal.
    pub fn new(inner: Option<Arc<dyn Provider>>, cache: Arc<ResponseCache>, mode: CacheMode, name: &str) -> Self {
        let synthetic = inner.as_ref().is_some_and(|p| p.synthetic()) || (inner.is_none() && name == "simulated");
        CachingProvider {
            inner,
            cache,
            mode,
            name: name.to_string(),
            synthetic,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Requests served from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Requests that went to the provider.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

impl Provider for CachingProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn synthetic(&self) -> bool {
        self.synthetic
    }

    fn endpoints(&self) -> Vec<String> {
        self.inner.as_ref().map(|p| p.endpoints()).unwrap_or_default()
    }

    fn context_window(&self, model: &str) -> Option<u32> {
        match &self.inner {
            Some(p) => p.context_window(model),
            None => super::models::context_window(model),
        }
    }

    fn recorded(&self, req: &ChatRequest) -> Option<ChatResponse> {
        if !matches!(self.mode, CacheMode::Replay | CacheMode::Auto) {
            return None;
        }
        let key = request_key(&self.name, req);
        let r = self.cache.get(key)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.cache.served.insert(key);
        Some(r)
    }

    fn chat(&self, req: Arc<ChatRequest>, ctx: CallContext) -> BoxFuture<Result<ChatResponse, LlmError>> {
        let key = request_key(&self.name, &req);
        if matches!(self.mode, CacheMode::Replay | CacheMode::Auto)
            && let Some(r) = self.cache.get(key)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.cache.served.insert(key);
            return Box::pin(async move { Ok(r) });
        }
        let inner = match (&self.inner, self.mode) {
            (Some(p), CacheMode::Off | CacheMode::Record | CacheMode::Auto) => p.clone(),
            _ => {
                let (persona, turn, purpose) = (req.meta.persona.clone(), req.meta.turn, req.meta.purpose);
                return Box::pin(async move {
                    Err(LlmError::new(
                        ErrorKind::ReplayMiss,
                        format!(
                            "replay miss: no recorded answer for persona {persona}, turn {turn} ({purpose}); the run diverged from the recording (a changed scenario, config or persona file?)"
                        ),
                    ))
                });
            }
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let fut = inner.chat(req, ctx);
        let store = (self.mode != CacheMode::Off).then(|| self.cache.clone());
        Box::pin(async move {
            let r = fut.await?;
            if let Some(c) = store {
                c.insert(key, r.clone());
            }
            Ok(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimulatedConfig;
    use crate::llm::{ChatMessage, Role, SimulatedProvider};

    fn req(text: &str) -> Arc<ChatRequest> {
        Arc::new(ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, text)],
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            stop: vec![],
            response_format: crate::llm::ResponseFormat::Text,
            meta: Default::default(),
        })
    }

    #[tokio::test]
    async fn record_then_replay_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cache.jsonl");
        let sim: Arc<dyn Provider> = Arc::new(SimulatedProvider::new(SimulatedConfig::default()));
        let rec =
            CachingProvider::new(Some(sim), Arc::new(ResponseCache::open(&f).unwrap()), CacheMode::Record, "simulated");
        let a = rec.chat(req("Topic: budgets"), CallContext::default()).await.unwrap();
        drop(rec);
        let rep =
            CachingProvider::new(None, Arc::new(ResponseCache::open(&f).unwrap()), CacheMode::Replay, "simulated");
        assert_eq!(rep.chat(req("Topic: budgets"), CallContext::default()).await.unwrap(), a);
        let miss = rep.chat(req("Topic: other"), CallContext::default()).await.unwrap_err();
        assert!(miss.message.contains("replay miss"), "{miss}");
        assert_eq!((rep.hits(), rep.misses()), (1, 0));
    }

    #[tokio::test]
    async fn concurrent_writers_never_interleave_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cache.jsonl");
        let cache = Arc::new(ResponseCache::open(&f).unwrap());
        let sim: Arc<dyn Provider> = Arc::new(SimulatedProvider::new(SimulatedConfig::default()));
        let p = Arc::new(CachingProvider::new(Some(sim), cache, CacheMode::Auto, "simulated"));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move { p.chat(req(&format!("Topic: t{i}")), CallContext::default()).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(ResponseCache::open(&f).unwrap().len(), 64);
    }
}
