//! `SimulationResults` (the `results.json` shape) and saving a run's files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::record::metrics::MetricsSnapshot;
use crate::record::transcript::{SkipRecord, StopReason, TranscriptEntry};

/// A participant, as listed in results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Display name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Persona id.
    pub id: String,
}

/// The run's headline figures (durations in seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultsMetrics {
    /// Wall time of the run, seconds.
    pub duration: f64,
    /// Transcript messages (the opening and moderator messages included).
    pub total_messages: u64,
    /// Calls, errors, tokens and cost: the metrics actor's own counters.
    #[serde(flatten)]
    pub counts: crate::record::metrics::Counts,
    /// Mean time for a persona to get its answer (retries included), seconds.
    pub average_response_time: f64,
    /// Messages per minute.
    pub throughput_per_min: f64,
    /// Median call latency, seconds.
    pub latency_p50: f64,
    /// 99th percentile call latency, seconds.
    pub latency_p99: f64,
}

/// The settings the run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsConfig {
    /// Default model.
    pub model: String,
    /// How persona turns were asked for (`auto` already resolved for the provider).
    #[serde(default)]
    pub prompt_style: crate::config::PromptStyle,
    /// Default temperature.
    pub temperature: f64,
    /// Turns asked for.
    pub turns: u32,
    /// Turn policy.
    pub policy: crate::config::TurnPolicy,
    /// Run seed.
    pub run_seed: u64,
    /// Provider name.
    pub provider: String,
    /// Fallback model(s).
    pub fallback_model: crate::config::ModelChain,
    /// Concurrent calls allowed.
    pub max_workers: usize,
    /// Spacing between call starts, seconds.
    pub rate_limit_delay: f64,
    /// Per-call timeout, seconds.
    pub persona_timeout: f64,
    /// Retries allowed.
    pub max_retries: u32,
    /// Skip failed turns instead of failing.
    pub graceful_degradation: bool,
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationResults {
    /// True when every turn ran.
    pub success: bool,
    /// The messages, in order. `results.json` holds them up to [`RESULTS_TRANSCRIPT_LIMIT`];
    /// beyond, only `transcript.jsonl` does (and [`load_results`] reads them back from it).
    #[serde(default, skip_serializing_if = "beyond_limit")]
    pub transcript: Vec<TranscriptEntry>,
    /// Who took part.
    pub agents: Vec<AgentInfo>,
    /// Headline figures.
    pub metrics: ResultsMetrics,
    /// Settings used.
    pub config: ResultsConfig,
    /// Folder-safe run id.
    pub run_id: String,
    /// Scenario name (or "ad-hoc").
    pub scenario: String,
    /// Variant applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The discussion topic.
    pub topic: String,
    /// Who produced the text.
    pub provider: String,
    /// True when the text is synthetic (simulated provider).
    pub synthetic: bool,
    /// Models that answered.
    pub models_used: Vec<String>,
    /// A plain statement about the text, when it matters (synthetic text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// Turns fully completed.
    pub completed_turns: u32,
    /// Why the run ended.
    pub stop_reason: StopReason,
    /// Skipped persona turns with reasons.
    pub skipped: Vec<SkipRecord>,
    /// Private thoughts: (turn, persona id, text).
    pub thoughts: Vec<(u32, String, String)>,
    /// Silent turns: (turn, persona id).
    pub passes: Vec<(u32, String)>,
    /// Interventions applied: (turn, description).
    pub interventions: Vec<(u32, String)>,
    /// Start (RFC 3339 UTC).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// End (RFC 3339 UTC).
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// The error that ended the run, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was estimated before the run.
    pub estimate: crate::record::estimate::Estimate,
    /// Actual divided by estimated.
    pub estimate_accuracy: crate::record::estimate::EstimateAccuracy,
    /// Full metrics (also saved as `metrics.json`).
    #[serde(skip)]
    pub full_metrics: MetricsSnapshot,
    /// Personas whose facts did not all fit their prompt budget, with what was left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_trimmed: Vec<crate::record::transcript::PromptTrim>,
    /// The folder the run was saved in, when it was.
    #[serde(skip)]
    pub run_dir: Option<PathBuf>,
    /// Set when the run was saved but its analysis (`analysis.json`, charts) could not be
    /// written: the run's outcome stands, but the command that made it fails.
    #[serde(skip)]
    pub analysis_error: Option<String>,
}

/// Messages up to which `results.json` holds the transcript itself, as the old engine's did.
/// A longer run's `results.json` leaves it out and says `"transcript_file": "transcript.jsonl"`
/// and `"transcript_messages": N` instead: a million messages are written once, not twice.
pub const RESULTS_TRANSCRIPT_LIMIT: usize = 100_000;

/// The file beside `results.json` with the transcript, one message per line.
pub const TRANSCRIPT_FILE: &str = "transcript.jsonl";

fn beyond_limit(t: &[TranscriptEntry]) -> bool {
    t.len() > RESULTS_TRANSCRIPT_LIMIT
}

/// `results.json` of a run too long to embed its transcript: where the transcript is instead.
#[derive(Serialize)]
struct Referenced<'a> {
    #[serde(flatten)]
    results: &'a SimulationResults,
    transcript_file: &'static str,
    transcript_messages: usize,
}

/// What a `results.json` without a transcript says about it.
#[derive(Deserialize)]
struct TranscriptRef {
    #[serde(default)]
    transcript_file: Option<String>,
    #[serde(default)]
    transcript_messages: Option<usize>,
}

/// Files written by `save_results`.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedPaths {
    /// `results.json`.
    pub results: PathBuf,
    /// `transcript.jsonl`.
    pub transcript: PathBuf,
    /// `metrics.json`.
    pub metrics: PathBuf,
}

/// Errors while saving.
#[derive(Debug, thiserror::Error)]
#[error("could not write {}: {source}; check that the output folder is writable and the disk has space (output.output_dir)", path.display())]
pub struct SaveError {
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Writes `results.json`, `transcript.jsonl` and `metrics.json` into `dir` (created if
/// needed), each atomically.
pub fn save_results(results: &SimulationResults, dir: &Path) -> Result<SavedPaths, SaveError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SaveError { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let paths = SavedPaths {
        results: dir.join("results.json"),
        transcript: dir.join(TRANSCRIPT_FILE),
        metrics: dir.join("metrics.json"),
    };
    let body = if beyond_limit(&results.transcript) {
        pretty(&Referenced { results, transcript_file: TRANSCRIPT_FILE, transcript_messages: results.transcript.len() })
    } else {
        pretty(results)
    };
    write_atomic(&paths.results, &body).map_err(err(&paths.results))?;
    write_atomic(&paths.metrics, &pretty(&results.full_metrics)).map_err(err(&paths.metrics))?;
    write_atomic(&paths.transcript, &transcript_jsonl(&results.transcript)).map_err(err(&paths.transcript))?;
    Ok(paths)
}

/// The transcript as JSON lines.
pub fn transcript_jsonl(t: &[TranscriptEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len() * 256);
    for e in t {
        // Serializing our own plain struct cannot fail.
        if serde_json::to_writer(&mut out, e).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Reads a saved `results.json`, and the transcript from `transcript.jsonl` beside it when the
/// run was too long to embed it (see [`RESULTS_TRANSCRIPT_LIMIT`]).
pub fn load_results(path: &Path) -> Result<SimulationResults, String> {
    let text = crate::fsutil::read_input(path, crate::fsutil::MAX_RUN_FILE_BYTES, "results.json")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let at = |e: serde_json::Error| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column());
    let mut results: SimulationResults = serde_json::from_slice(&text).map_err(at)?;
    if results.transcript.is_empty() {
        let r: TranscriptRef = serde_json::from_slice(&text).map_err(at)?;
        if let Some(file) = r.transcript_file {
            results.transcript = referenced_transcript(path, &file, r.transcript_messages)?;
        }
    }
    Ok(results)
}

/// The transcript a `results.json` refers to. Only `transcript.jsonl` in the same folder is read,
/// whatever the file names: a run folder is untrusted and must not point elsewhere.
fn referenced_transcript(results: &Path, named: &str, count: Option<usize>) -> Result<Vec<TranscriptEntry>, String> {
    if named != TRANSCRIPT_FILE {
        return Err(format!(
            "{}: \"transcript_file\" is {named:?}; only {TRANSCRIPT_FILE} beside results.json is read (was the file edited?)",
            results.display()
        ));
    }
    let path = results.parent().unwrap_or(Path::new(".")).join(TRANSCRIPT_FILE);
    let bytes = crate::fsutil::read_input(&path, crate::fsutil::MAX_RUN_FILE_BYTES, TRANSCRIPT_FILE)
        .map_err(|e| format!("{}: {e}; results.json keeps its transcript there", path.display()))?;
    // The count is the file's word: room is made for no more lines than the bytes could hold.
    let mut out = Vec::with_capacity(count.unwrap_or(0).min(bytes.len() / 64));
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let e =
            serde_json::from_slice(line).map_err(|e| format!("{}:{}:{}: {e}", path.display(), i + 1, e.column()))?;
        out.push(e);
    }
    match count {
        Some(n) if n != out.len() => Err(format!(
            "{}: {} messages, where results.json says {n}; the run folder is incomplete (copy it again, or resume the run)",
            path.display(),
            out.len()
        )),
        _ => Ok(out),
    }
}

/// A folder-safe run id: the scenario name as a slug (at most 40 characters), a UTC timestamp
/// and a short suffix.
pub fn run_id(name: &str, at: chrono::DateTime<chrono::Utc>, suffix: u64) -> String {
    let mut slug = crate::persona::tinytroupe::slug(name);
    if slug.is_empty() {
        slug = "run".into();
    }
    slug.truncate(40);
    let slug = slug.trim_end_matches('_');
    format!("{slug}-{}-{:04x}", at.format("%Y%m%dT%H%M%SZ"), suffix & 0xffff)
}

/// A run id as troupe-sim writes them: 1 to 128 characters of `[A-Za-z0-9_-]`.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_folder_safe() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(run_id("City Budget: 2027!", at, 0xabc), "city_budget_2027-20260102T030405Z-0abc");
        for evil in ["../../etc", "a/b\\c", "", "CON", "x\0y", &"n".repeat(300)] {
            let id = run_id(evil, at, 1);
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{id}");
            assert!(id.len() < 80);
        }
    }
}
