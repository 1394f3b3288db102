//! What travels over NATS: a run to make ([`WorkItem`]), a finished run's report ([`Report`])
//! and live progress ([`Status`]). Everything read from the cluster is untrusted: it is parsed
//! with size bounds and checked (ids, paths, counts) before it is used.

use serde::{Deserialize, Serialize};

use super::{ClusterError, MAX_MESSAGE_BYTES};
use crate::experiment::{RunJob, RunRecord};
use crate::record::results::valid_run_id;
use crate::scenario::ExtractField;

/// What the queue holds: a run of an experiment, or one machine's part of a stress setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// A run of an experiment.
    Run(WorkItem),
    /// A shard of a stress sweep's setting.
    StressShard(super::stress::StressShard),
}

/// One run to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkItem {
    /// The experiment id.
    pub experiment: String,
    /// The run id the coordinator chose (also the deduplication id).
    pub run_id: String,
    /// The run.
    pub job: RunJob,
    /// Fields asked of each persona after the run.
    #[serde(default)]
    pub extract: Vec<ExtractField>,
}

/// One file of a finished run, stored in the files bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the run folder (`/`-separated, relative).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// A finished run, as a worker reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The experiment id.
    pub experiment: String,
    /// The run id.
    pub run_id: String,
    /// The delivery attempt that made it (1 = first).
    pub attempt: u32,
    /// The worker's name.
    pub worker: String,
    /// The run's record (its `dir` is the worker's and is replaced by the coordinator's).
    pub record: RunRecord,
    /// Its text was synthetic.
    pub synthetic: bool,
    /// The run folder's files: in the report message itself when `inline`, else stored in
    /// the files bucket under [`file_key`].
    pub files: Vec<FileEntry>,
    /// The files' bytes follow the report in its message ([`encode_report`]).
    #[serde(default)]
    pub inline: bool,
}

/// The start of a report message.
const REPORT_MAGIC: &[u8; 4] = b"TRP1";

/// A report message: `TRP1`, the JSON report's length (u32, little-endian), the JSON, then,
/// when the report is `inline`, each file's bytes in the order of `files`.
pub fn encode_report(r: &Report, inline: &[Vec<u8>]) -> Vec<u8> {
    let json = serde_json::to_vec(r).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + json.len() + inline.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(REPORT_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    for f in inline {
        out.extend_from_slice(f);
    }
    out
}

/// Reads a report message: the report and, when inline, each file's bytes (their sizes checked
/// against the report, and the message against its bound).
pub fn decode_report(payload: &[u8]) -> Result<(Report, Vec<Vec<u8>>), ClusterError> {
    let bad = |m: &str| ClusterError::Untrusted(format!("a run's report: {m}"));
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(bad("larger than a message may be"));
    }
    if payload.len() < 8 || &payload[..4] != REPORT_MAGIC {
        return Err(bad("not a report message (no TRP1 header)"));
    }
    let n = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]) as usize;
    let json = payload.get(8..8 + n).ok_or_else(|| bad("shorter than its header says"))?;
    let report: Report = parse("a run's report", json)?;
    let mut rest = &payload[8 + n..];
    let mut files = Vec::new();
    if report.inline {
        for f in &report.files {
            let len = usize::try_from(f.bytes).map_err(|_| bad("a file size out of range"))?;
            if rest.len() < len {
                return Err(bad("its files are shorter than it says"));
            }
            files.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
    }
    if !rest.is_empty() {
        return Err(bad("bytes left over after its files"));
    }
    Ok((report, files))
}

/// What a worker is doing with a run (live, not stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The run id.
    pub run_id: String,
    /// The worker.
    pub worker: String,
    /// `started`, `resumed`, `finished`, `failed` or `discarded`.
    pub state: String,
}

/// Most files a run folder may bring back.
pub const MAX_FILES: usize = 256;
/// Largest file of a run folder brought back.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Where a run folder's file is kept in the files bucket.
pub fn file_key(experiment: &str, run_id: &str, attempt: u32, path: &str) -> String {
    format!("{experiment}/{run_id}/{attempt}/{path}")
}

/// An id fit for a subject token and a folder name.
pub fn check_id(what: &str, id: &str) -> Result<(), ClusterError> {
    if valid_run_id(id) {
        Ok(())
    } else {
        Err(ClusterError::Untrusted(format!("{what} {:?} is not 1-128 characters of [A-Za-z0-9_-]", clip(id))))
    }
}

/// A relative path inside a run folder: `/`-separated names, none empty, `.` or `..`, each of
/// ordinary characters.
pub fn check_path(p: &str) -> Result<(), ClusterError> {
    let ok = !p.is_empty()
        && p.len() <= 512
        && p.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Untrusted(format!("file path {:?} is not a plain relative path", clip(p))))
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Parses a JSON message of at most [`MAX_MESSAGE_BYTES`].
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ClusterError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ClusterError::Untrusted(format!("{what}: {} bytes, more than {MAX_MESSAGE_BYTES}", bytes.len())));
    }
    serde_json::from_slice(bytes).map_err(|e| ClusterError::Untrusted(format!("{what}: {e}")))
}

impl WorkItem {
    /// Checks ids and the job's config bounds.
    pub fn check(&self) -> Result<(), ClusterError> {
        check_id("experiment id", &self.experiment)?;
        check_id("run id", &self.run_id)?;
        crate::config::limits::check(&self.job.cfg)
            .map_err(|e| ClusterError::Untrusted(format!("run {}: config {}: {}", self.run_id, e.key, e.message)))?;
        check_path(&self.job.folder())
    }
}

impl Report {
    /// Checks that the report is about `run_id` of `experiment` and its files are plain paths
    /// within bounds.
    pub fn check(&self, experiment: &str, run_id: &str) -> Result<(), ClusterError> {
        if self.experiment != experiment || self.run_id != run_id || self.record.run_id != run_id {
            return Err(ClusterError::Untrusted(format!(
                "a report for run {:?} of {:?} arrived as run {run_id}",
                clip(&self.run_id),
                clip(&self.experiment)
            )));
        }
        if self.files.len() > MAX_FILES {
            return Err(ClusterError::Untrusted(format!(
                "run {run_id}: {} files, more than {MAX_FILES}",
                self.files.len()
            )));
        }
        for f in &self.files {
            check_path(&f.path)?;
            if f.bytes > MAX_FILE_BYTES {
                return Err(ClusterError::Untrusted(format!("run {run_id}: {} is {} bytes", f.path, f.bytes)));
            }
        }
        if self.worker.len() > 128 {
            return Err(ClusterError::Untrusted(format!("run {run_id}: worker name longer than 128 bytes")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_messages_carry_their_files_and_refuse_a_mismatch() {
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "variant": "v", "label": "v", "k": 1, "run_seed": 1, "run_id": "r", "dir": null,
            "success": true, "personas": [], "metrics": {}
        }))
        .unwrap();
        let files = vec![FileEntry { path: "a.json".into(), bytes: 3 }, FileEntry { path: "b".into(), bytes: 2 }];
        let r = Report {
            experiment: "e".into(),
            run_id: "r".into(),
            attempt: 1,
            worker: "w".into(),
            record,
            synthetic: true,
            files,
            inline: true,
        };
        let msg = encode_report(&r, &[b"abc".to_vec(), b"de".to_vec()]);
        let (back, data) = decode_report(&msg).unwrap();
        assert_eq!((back.run_id.as_str(), data), ("r", vec![b"abc".to_vec(), b"de".to_vec()]));
        assert!(decode_report(&msg[..msg.len() - 1]).is_err());
        let mut longer = msg.clone();
        longer.push(b'x');
        assert!(decode_report(&longer).is_err());
        assert!(decode_report(b"{\"run_id\": 1}").is_err());
        assert!(decode_report(&msg[..6]).is_err());
    }

    #[test]
    fn paths_from_the_cluster_stay_inside_the_run_folder() {
        for ok in ["results.json", "charts/participation.svg", "journal.1.jsonl"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "./a", "a\\b", "a b", "c:x", &"a".repeat(600)] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_id("run id", "ok-1_2").is_ok());
        assert!(
            check_id("run id", "a.b").is_err() && check_id("run id", "*").is_err() && check_id("run id", ">").is_err()
        );
    }
}
