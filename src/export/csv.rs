//! `csv`: the transcript as CSV with RFC 4180 quoting (the `csv` crate): a field holding a
//! comma, a quote or a line break is quoted, quotes doubled, so any text survives a round trip
//! ([`read_csv`]). Empty cells are absent optional values.

use serde::{Deserialize, Serialize};

use super::{ExportError, Exporter};
use crate::analysis::ConversationAnalysis;
use crate::results::SimulationResults;
use crate::transcript::TranscriptEntry;

/// The transcript as CSV.
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvExporter;

/// One CSV row: every column always present (the JSON shape skips absent fields, CSV cannot).
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    seq: u64,
    turn: u32,
    speaker: String,
    speaker_id: String,
    role: String,
    to: Option<String>,
    text: String,
    timestamp: chrono::DateTime<chrono::Utc>,
    model: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    latency_ms: Option<f64>,
    attempts: Option<u32>,
}

impl From<&TranscriptEntry> for Row {
    fn from(e: &TranscriptEntry) -> Self {
        Row {
            seq: e.seq,
            turn: e.turn,
            speaker: e.speaker.clone(),
            speaker_id: e.speaker_id.clone(),
            role: e.role.clone(),
            to: e.to.clone(),
            text: e.text.clone(),
            timestamp: e.timestamp,
            model: e.model.clone(),
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            latency_ms: e.latency_ms,
            attempts: e.attempts,
        }
    }
}

impl From<Row> for TranscriptEntry {
    fn from(r: Row) -> Self {
        TranscriptEntry {
            seq: r.seq,
            turn: r.turn,
            speaker: r.speaker,
            speaker_id: r.speaker_id,
            role: r.role,
            text: r.text,
            to: r.to,
            timestamp: r.timestamp,
            model: r.model,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            latency_ms: r.latency_ms,
            attempts: r.attempts,
        }
    }
}

/// The transcript as CSV bytes (header row first).
pub fn write_csv(t: &[TranscriptEntry]) -> Result<Vec<u8>, ExportError> {
    let mut w = ::csv::WriterBuilder::new().terminator(::csv::Terminator::CRLF).from_writer(Vec::new());
    for e in t {
        w.serialize(Row::from(e)).map_err(|e| ExportError::Csv(e.to_string()))?;
    }
    if t.is_empty() {
        // serde writes the header with the first row; an empty transcript still gets one.
        w.write_record([
            "seq",
            "turn",
            "speaker",
            "speaker_id",
            "role",
            "to",
            "text",
            "timestamp",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "attempts",
        ])
        .map_err(|e| ExportError::Csv(e.to_string()))?;
    }
    w.into_inner().map_err(|e| ExportError::Csv(e.to_string()))
}

/// Reads CSV written by [`write_csv`] back into transcript entries.
pub fn read_csv(bytes: &[u8]) -> Result<Vec<TranscriptEntry>, ExportError> {
    let mut r = ::csv::Reader::from_reader(bytes);
    r.deserialize::<Row>()
        .map(|row| row.map(TranscriptEntry::from).map_err(|e| ExportError::Csv(e.to_string())))
        .collect()
}

impl Exporter for CsvExporter {
    fn name(&self) -> &'static str {
        "csv"
    }
    fn extension(&self) -> &'static str {
        "csv"
    }
    fn export(&self, results: &SimulationResults, _: &ConversationAnalysis) -> Result<Vec<u8>, ExportError> {
        write_csv(&results.transcript)
    }
}
