//! A run's journal, streamed to JetStream line by line as it is written, and rebuilt from there
//! by the worker that gets the run next.
//!
//! Each message holds whole lines of one delivery attempt (header `Troupe-Attempt`); a resumed
//! attempt writes a new segment starting with its own header line, as `troupe resume` does in a
//! run folder. Rebuilding writes the attempts in order as `journal.1.jsonl`, `journal.2.jsonl`,
//! ... and the latest as `journal.jsonl`, which [`crate::engine::resume::resume`] then reads like
//! any run folder (untrusted input, checked the same way).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ClusterError, JsContext};
use crate::record::journal::{FILE_NAME, JournalTap};

/// The header naming a message's delivery attempt.
pub const ATTEMPT_HEADER: &str = "Troupe-Attempt";
/// Largest journal rebuilt from the cluster.
pub const MAX_REBUILT_BYTES: u64 = 1 << 30;
/// How long the first line of a burst waits for the rest.
const COALESCE: Duration = Duration::from_millis(5);
/// Starts sending a journal's lines to `subject`, in messages of at most half `limit` (the
/// server's largest message): a burst of lines is gathered up to a quarter of it, and a line
/// longer than that (a header holding a large plan) is cut into pieces, which the rebuild joins
/// again (it concatenates an attempt's messages in order). Returns the tap to give the run and
/// the task, which ends once the tap's last sender is dropped and every line is stored, with
/// the number of lines sent. While the broker is away it keeps trying (the lines stay in memory
/// and on disk).
pub fn upload(js: jetstream::Context, subject: String, attempt: u32, limit: usize) -> (JournalTap, JoinHandle<u64>) {
    let batch_bytes = (limit / 4).max(1024);
    let piece = (limit / 2).max(1024);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let task = tokio::spawn(async move {
        let mut sent = 0u64;
        while let Some(first) = rx.recv().await {
            let mut batch = first;
            let mut lines = 1u64;
            // Lines come in bursts (an exchange, then its message): gather a burst into one
            // message. A crash loses at most this much more than it would anyway.
            tokio::time::sleep(COALESCE).await;
            while batch.len() < batch_bytes {
                match rx.try_recv() {
                    Ok(more) => {
                        batch.extend_from_slice(&more);
                        lines += 1;
                    }
                    Err(_) => break,
                }
            }
            let batch = bytes::Bytes::from(batch);
            let mut at = 0;
            while at < batch.len() {
                let end = (at + piece).min(batch.len());
                publish_until_stored(&js, &subject, attempt, batch.slice(at..end)).await;
                at = end;
            }
            sent += lines;
        }
        sent
    });
    (tx, task)
}

async fn publish_until_stored(js: &jetstream::Context, subject: &str, attempt: u32, payload: bytes::Bytes) {
    let mut wait = Duration::from_millis(100);
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ATTEMPT_HEADER, attempt.to_string().as_str());
        let sent = match js.publish_with_headers(subject.to_string(), headers, payload.clone()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match sent {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(subject, "journal lines not stored yet ({e}); retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Rebuilds a run's journal segments from `subject` into `run_dir`. Returns how many segments
/// were written (0: nothing was recorded, the run starts afresh).
pub async fn rebuild(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    run_dir: &Path,
) -> Result<usize, ClusterError> {
    let stream = js.get_stream(stream).await.ctx("opening the journal stream")?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.to_string(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .ctx("reading a run's journal")?;
    let mut c = consumer;
    let mut left = c.info().await.ctx("reading a run's journal")?.num_pending;
    let mut by_attempt: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    while left > 0 {
        let mut batch = c
            .fetch()
            .max_messages(left.min(256) as usize)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .ctx("reading a run's journal")?;
        let mut got = 0u64;
        while let Some(m) = batch.next().await {
            let m = m.ctx("reading a run's journal")?;
            got += 1;
            let attempt = m
                .headers
                .as_ref()
                .and_then(|h| h.get(ATTEMPT_HEADER))
                .and_then(|v| v.as_str().parse::<u32>().ok())
                .ok_or_else(|| {
                    ClusterError::Untrusted(format!("{subject}: a journal message without {ATTEMPT_HEADER}"))
                })?;
            total += m.payload.len() as u64;
            if total > MAX_REBUILT_BYTES {
                return Err(ClusterError::Untrusted(format!(
                    "{subject}: journal larger than {MAX_REBUILT_BYTES} bytes"
                )));
            }
            by_attempt.entry(attempt).or_default().extend_from_slice(&m.payload);
        }
        if got == 0 {
            return Err(ClusterError::JetStream {
                what: "reading a run's journal".into(),
                message: format!("{left} message(s) announced but none arrived"),
            });
        }
        left = left.saturating_sub(got);
    }
    if by_attempt.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(run_dir).map_err(|source| ClusterError::Io { path: run_dir.into(), source })?;
    let n = by_attempt.len();
    for (i, (_, bytes)) in by_attempt.into_iter().enumerate() {
        let name = if i + 1 == n { FILE_NAME.to_string() } else { format!("journal.{}.jsonl", i + 1) };
        let path = run_dir.join(name);
        crate::fsutil::write_atomic(&path, &bytes).map_err(|source| ClusterError::Io { path, source })?;
    }
    Ok(n)
}
