//! Experiments on several machines: a NATS JetStream work queue of runs, workers that make
//! them, and a coordinator that collects them into the same experiment folder a local
//! experiment writes.
//!
//! - [`coordinator`] publishes one message per run (the run id is the deduplication id) with
//!   everything a worker needs ([`crate::experiment::RunJob`]: the resolved plan, the variant's
//!   config without keys, the run seed), then gathers the workers' reports.
//! - [`worker`] (`troupe worker --nats URL`) pulls runs, at most `performance.max_parallel_runs`
//!   at once, and makes each with the same code a local experiment uses. It keeps its lease with
//!   progress acknowledgements, streams the run's journal to JetStream line by line as it is
//!   written ([`journal_stream`]), and a redelivered run resumes from that journal, so no paid
//!   exchange is paid twice. The run's files go to an object store, its report to a results
//!   stream, both under the delivery attempt, and a lease in a KV bucket fences stale workers.
//! - [`budget`]: one rate budget for the whole cluster: a GCRA whose state is kept on the
//!   broker, so the requests- and tokens-per-minute limits of a key hold across every worker;
//!   each worker keeps to an equal share while the broker is lost.
//! - [`sharding`] spreads one run's personas over `troupe shard` processes ([`shard`]): the
//!   world stays on the coordinator; per turn each shard gets one message (split only when it
//!   would pass the server's message size) with who acts and what each heard ([`wire`]); shards
//!   journal what their personas did to a stream before the coordinator hears it; heartbeats
//!   tell a lost shard, whose personas move, rebuilt from the world's record.
//! - Keys never travel: each worker reaches the provider with its own configuration. What comes
//!   from the cluster (jobs, reports, journals, files) is checked like any outside input.
//!
//! Names: every stream, bucket and subject starts with `cluster.namespace` ([`Names`]).

pub mod budget;
pub mod coordinator;
pub mod journal_stream;
pub mod messages;
pub mod shard;
pub mod sharding;
pub mod stress;
pub mod wire;
pub mod worker;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, object_store, stream};

use crate::config::ClusterConfig;

/// Errors of the cluster layer, each saying what to check.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No server given.
    #[error("no NATS server: give --nats URL (or --cluster URL), or set cluster.url")]
    NoServer,
    /// The server could not be reached or refused us.
    #[error(
        "cannot connect to the NATS server at {url}: {message}; check that nats-server runs with JetStream (`nats-server -js`) and the cluster credentials (cluster.credentials_file, cluster.token, cluster.nkey_file, cluster.tls_ca)"
    )]
    Connect {
        /// The URL (without credentials).
        url: String,
        /// Why.
        message: String,
    },
    /// A JetStream request failed.
    #[error("NATS JetStream: {what}: {message}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The server's or client's message.
        message: String,
    },
    /// Something from the cluster was malformed or out of bounds.
    #[error("from the cluster: {0}")]
    Untrusted(String),
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Maps any displayable error to a [`ClusterError::JetStream`] naming `what`.
pub(crate) trait JsContext<T> {
    fn ctx(self, what: &str) -> Result<T, ClusterError>;
}

impl<T, E: std::fmt::Display + 'static> JsContext<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, ClusterError> {
        self.map_err(|e| ClusterError::JetStream { what: what.to_string(), message: e.to_string() })
    }
}

/// The names of a namespace's streams, buckets and subjects.
#[derive(Debug, Clone)]
pub struct Names {
    ns: String,
}

impl Names {
    /// The names under `namespace` (checked by the config's bounds: `[A-Za-z0-9_-]{1,32}`).
    pub fn new(namespace: &str) -> Self {
        Names { ns: namespace.to_string() }
    }
    /// The work queue of runs.
    pub fn runs_stream(&self) -> String {
        format!("{}_runs", self.ns)
    }
    /// Subject of an experiment's runs.
    pub fn runs_subject(&self, exp: &str) -> String {
        format!("{}.runs.{exp}", self.ns)
    }
    /// The workers' durable consumer.
    pub fn workers_consumer(&self) -> String {
        format!("{}_workers", self.ns)
    }
    /// Reports of finished runs.
    pub fn done_stream(&self) -> String {
        format!("{}_done", self.ns)
    }
    /// Subject of an experiment's reports.
    pub fn done_subject(&self, exp: &str) -> String {
        format!("{}.done.{exp}", self.ns)
    }
    /// Journals, line by line.
    pub fn journal_stream(&self) -> String {
        format!("{}_journal", self.ns)
    }
    /// Subject of one run's journal.
    pub fn journal_subject(&self, exp: &str, run_id: &str) -> String {
        format!("{}.journal.{exp}.{run_id}", self.ns)
    }
    /// Live progress (core NATS, not stored).
    pub fn status_subject(&self, exp: &str) -> String {
        format!("{}.status.{exp}", self.ns)
    }
    /// Leases: which delivery attempt owns a run (one message per run, the latest kept).
    pub fn leases_stream(&self) -> String {
        format!("{}_leases", self.ns)
    }
    /// Subject of a run's lease.
    pub fn lease_subject(&self, exp: &str, run_id: &str) -> String {
        format!("{}.lease.{exp}.{run_id}", self.ns)
    }
    /// Run folders' files.
    pub fn files_bucket(&self) -> String {
        format!("{}_files", self.ns)
    }
    /// Shards' heartbeats (core NATS, not stored).
    pub fn shard_heartbeats(&self) -> String {
        format!("{}.shards.heartbeat", self.ns)
    }
    /// Where one shard is sent its part of each turn (core NATS).
    pub fn shard_subject(&self, shard: &str) -> String {
        format!("{}.shard.{shard}", self.ns)
    }
    /// What shards did, journaled before the coordinator hears it.
    pub fn exchanges_stream(&self) -> String {
        format!("{}_shardex", self.ns)
    }
    /// Subject of one sharded run's outcomes.
    pub fn exchanges_subject(&self, run_id: &str) -> String {
        format!("{}.ex.{run_id}", self.ns)
    }
}

/// A run's lease as read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lease {
    /// The delivery attempt holding it.
    pub attempt: Option<u32>,
    /// The run is reported.
    pub done: bool,
    /// Sequence of the lease message (0: none).
    pub seq: u64,
}

/// What taking a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// This attempt holds it now.
    Taken,
    /// A newer attempt holds it.
    Newer,
    /// The run is already reported.
    Reported,
}

/// A connection to the cluster with its JetStream objects, created when missing.
#[derive(Clone)]
pub struct Cluster {
    /// The NATS client.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// Names under the namespace.
    pub names: Names,
    /// The config's cluster section.
    pub config: ClusterConfig,
    /// The server URL (as given).
    pub url: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("url", &self.url).field("names", &self.names).finish_non_exhaustive()
    }
}

/// How long a JetStream request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest job or report message (NATS' default `max_payload` is 1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

impl Cluster {
    /// The largest message this server takes: its `max_payload`, at most
    /// [`MAX_MESSAGE_BYTES`].
    pub fn message_limit(&self) -> usize {
        match self.client.server_info().max_payload {
            0 => MAX_MESSAGE_BYTES,
            n => n.min(MAX_MESSAGE_BYTES),
        }
    }

    /// Connects to `url` (or `cluster.url`) with the configured credentials and makes sure the
    /// streams, the consumer and the buckets exist. A broker that goes away later is reconnected
    /// to without end, in the background.
    pub async fn connect(url: Option<&str>, config: &ClusterConfig, name: &str) -> Result<Self, ClusterError> {
        let url = url.map(str::to_string).or_else(|| config.url.clone()).ok_or(ClusterError::NoServer)?;
        let shown = crate::llm::openai::display_url(&url);
        let connect_err = |message: String| ClusterError::Connect { url: shown.clone(), message };
        let mut opts = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .max_reconnects(None);
        if let Some(f) = &config.credentials_file {
            opts = opts.credentials_file(f).await.map_err(|e| connect_err(format!("{}: {e}", f.display())))?;
        }
        if let Some(t) = &config.token {
            opts = opts.token(t.expose().to_string());
        }
        if let Some(f) = &config.nkey_file {
            let seed = crate::fsutil::read_input(f, 4096, "an NKey seed file")
                .map_err(|e| connect_err(format!("{}: {e}", f.display())))?;
            let seed = String::from_utf8_lossy(&seed).trim().to_string();
            opts = opts.nkey(seed);
        }
        if let Some(ca) = &config.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = opts.connect(url.as_str()).await.map_err(|e| connect_err(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let c = Cluster { client, js, names: Names::new(&config.namespace), config: config.clone(), url };
        c.ensure().await?;
        Ok(c)
    }

    /// The lease: how long a silent worker keeps a run.
    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.config.lease_seconds)
    }

    /// Creates the streams, the workers' consumer and the buckets when missing.
    async fn ensure(&self) -> Result<(), ClusterError> {
        let n = &self.names;
        let week = Duration::from_secs(7 * 24 * 3600);
        self.js
            .get_or_create_stream(stream::Config {
                name: n.runs_stream(),
                subjects: vec![format!("{}.runs.>", n.ns)],
                retention: stream::RetentionPolicy::WorkQueue,
                max_age: week,
                max_message_size: MAX_MESSAGE_BYTES as i32,
                duplicate_window: Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await
            .ctx("creating the runs stream")?;
        for (name, subjects) in [
            (n.done_stream(), format!("{}.done.>", n.ns)),
            (n.journal_stream(), format!("{}.journal.>", n.ns)),
            (n.exchanges_stream(), format!("{}.ex.>", n.ns)),
        ] {
            self.js
                .get_or_create_stream(stream::Config {
                    name,
                    subjects: vec![subjects],
                    max_age: week,
                    max_message_size: MAX_MESSAGE_BYTES as i32,
                    duplicate_window: Duration::from_secs(3600),
                    ..Default::default()
                })
                .await
                .ctx("creating a stream")?;
        }
        // Leases on a plain stream with compare-and-set publishes (the KV API's account query
        // fails against Debian's nats-server 2.9).
        self.js
            .get_or_create_stream(stream::Config {
                name: n.leases_stream(),
                subjects: vec![format!("{}.lease.>", n.ns)],
                max_messages_per_subject: 1,
                max_age: week,
                ..Default::default()
            })
            .await
            .ctx("creating the leases stream")?;
        if self.js.get_object_store(n.files_bucket()).await.is_err() {
            let made = self
                .js
                .create_object_store(object_store::Config {
                    bucket: n.files_bucket(),
                    max_age: week,
                    ..Default::default()
                })
                .await;
            // Processes starting together race to create it: the loser is told the subjects
            // overlap, and the bucket is there.
            if made.is_err() && self.js.get_object_store(n.files_bucket()).await.is_ok() {
                return Ok(());
            }
            made.ctx("creating the files bucket")?;
        }
        Ok(())
    }

    /// The workers' durable pull consumer on the runs stream.
    pub async fn workers_consumer(&self) -> Result<consumer::PullConsumer, ClusterError> {
        let stream = self.js.get_stream(self.names.runs_stream()).await.ctx("opening the runs stream")?;
        stream
            .get_or_create_consumer(
                &self.names.workers_consumer(),
                consumer::pull::Config {
                    durable_name: Some(self.names.workers_consumer()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.lease(),
                    max_deliver: i64::from(self.config.max_deliveries),
                    ..Default::default()
                },
            )
            .await
            .ctx("creating the workers' consumer")
    }

    /// A run's lease: which attempt holds it, whether the run is reported, and the lease's
    /// sequence for compare-and-set (0: no lease yet).
    pub async fn run_lease(&self, exp: &str, run_id: &str) -> Result<Lease, ClusterError> {
        let stream = self.js.get_stream_no_info(self.names.leases_stream()).await.ctx("opening the leases stream")?;
        match stream.get_last_raw_message_by_subject(&self.names.lease_subject(exp, run_id)).await {
            Ok(m) => {
                let text = String::from_utf8_lossy(&m.payload);
                let (done, attempt) = match text.trim().strip_prefix("done ") {
                    Some(rest) => (true, rest.parse().ok()),
                    None => (false, text.trim().parse().ok()),
                };
                Ok(Lease { attempt, done, seq: m.sequence })
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(Lease::default()),
            Err(e) => Err(e).ctx("reading a lease"),
        }
    }

    /// Takes a run's lease for `attempt` unless a newer attempt holds it or the run is already
    /// reported (compare-and-set on the lease's sequence).
    pub async fn take_lease(&self, exp: &str, run_id: &str, attempt: u32) -> Result<Take, ClusterError> {
        // A first delivery usually finds no lease: create it in one request.
        if attempt == 1 && self.set_lease(exp, run_id, "1", 0).await {
            return Ok(Take::Taken);
        }
        for _ in 0..20 {
            let lease = self.run_lease(exp, run_id).await?;
            if lease.done {
                return Ok(Take::Reported);
            }
            match lease.attempt {
                Some(h) if h > attempt => return Ok(Take::Newer),
                Some(h) if h == attempt => return Ok(Take::Taken),
                _ => {}
            }
            if self.set_lease(exp, run_id, &attempt.to_string(), lease.seq).await {
                return Ok(Take::Taken);
            }
        }
        Err(ClusterError::JetStream { what: "taking a lease".into(), message: "the lease kept changing".into() })
    }

    /// Marks a run reported by `attempt`: a copy of its message delivered again (a broker
    /// restored from an unclean stop can bring acknowledged messages back) is then skipped.
    /// `seq`: the lease's sequence as last read, tried first.
    pub async fn mark_reported(&self, exp: &str, run_id: &str, attempt: u32, seq: u64) -> Result<(), ClusterError> {
        if self.set_lease(exp, run_id, &format!("done {attempt}"), seq).await {
            return Ok(());
        }
        for _ in 0..20 {
            let lease = self.run_lease(exp, run_id).await?;
            if lease.done || self.set_lease(exp, run_id, &format!("done {attempt}"), lease.seq).await {
                return Ok(());
            }
        }
        Err(ClusterError::JetStream {
            what: "marking a run reported".into(),
            message: "the lease kept changing".into(),
        })
    }

    async fn set_lease(&self, exp: &str, run_id: &str, value: &str, expected_seq: u64) -> bool {
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(value.to_string().into())
            .expected_last_subject_sequence(expected_seq);
        match self.js.send_publish(self.names.lease_subject(exp, run_id), publish).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    }

    /// A consumer reading every report published under `id` (an experiment or a sweep) from
    /// the start, without acknowledgements; dropped by the server after 5 idle minutes.
    pub async fn reports_reader(&self, id: &str) -> Result<consumer::PullConsumer, ClusterError> {
        let stream = self.js.get_stream(self.names.done_stream()).await.ctx("opening the results stream")?;
        stream
            .create_consumer(consumer::pull::Config {
                filter_subject: self.names.done_subject(id),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(300),
                ..Default::default()
            })
            .await
            .ctx("reading the reports")
    }

    /// The files bucket.
    pub async fn files(&self) -> Result<object_store::ObjectStore, ClusterError> {
        self.js.get_object_store(self.names.files_bucket()).await.ctx("opening the files bucket")
    }
}
