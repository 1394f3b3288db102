//! `csv`: the transcript as CSV with RFC 4180 quoting (the `csv` crate): a field holding a
//! comma, a quote or a line break is quoted, quotes doubled, so any text survives a round trip
//! ([`read_csv`]). Empty cells are absent optional values.
//!
//! Formula injection: run text is written by a model and read in a spreadsheet, where a cell
//! starting with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula
//! (`=HYPERLINK(...)`, `+cmd|' /C calc'!A0`). As OWASP's "CSV Injection" page says, such a text
//! cell gets a leading `'`, which spreadsheets read as "this is text". Text already starting with
//! `'` before one of those characters gets one more `'`, so [`read_csv`] can strip exactly one and
//! give every text back. Numbers the exporter writes itself (seq, turn, tokens, latency) are
//! never changed.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{ExportError, Exporter};
use crate::analysis::ConversationAnalysis;
use crate::record::results::SimulationResults;
use crate::record::transcript::TranscriptEntry;

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

/// The characters that make a spreadsheet read a cell as a formula when they come first.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// True when `s`, after any leading `'`s, starts a formula: such a cell is written with one more
/// `'` in front.
fn needs_quote_prefix(s: &str) -> bool {
    s.trim_start_matches('\'').starts_with(FORMULA_STARTS)
}

/// A text cell as written: `'` before a cell that would start a formula (OWASP).
pub fn neutralize(s: &str) -> Cow<'_, str> {
    if needs_quote_prefix(s) { Cow::Owned(format!("'{s}")) } else { Cow::Borrowed(s) }
}

/// The text [`neutralize`] was given.
pub fn unneutralize(s: String) -> String {
    match s.strip_prefix('\'') {
        Some(rest) if needs_quote_prefix(rest) => rest.to_string(),
        _ => s,
    }
}

fn cell(s: &str) -> String {
    neutralize(s).into_owned()
}

impl From<&TranscriptEntry> for Row {
    fn from(e: &TranscriptEntry) -> Self {
        Row {
            seq: e.seq,
            turn: e.turn,
            speaker: cell(&e.speaker),
            speaker_id: cell(&e.speaker_id),
            role: cell(&e.role),
            to: e.to.as_deref().map(cell),
            text: cell(&e.text),
            timestamp: e.timestamp,
            model: e.model.as_deref().map(cell),
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
            speaker: unneutralize(r.speaker),
            speaker_id: unneutralize(r.speaker_id),
            role: unneutralize(r.role),
            text: unneutralize(r.text),
            to: r.to.map(unneutralize),
            timestamp: r.timestamp,
            model: r.model.map(unneutralize),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            latency_ms: r.latency_ms,
            attempts: r.attempts,
        }
    }
}

/// The transcript as CSV bytes (header row first), formula-like text cells neutralized.
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

/// Reads CSV written by [`write_csv`] back into transcript entries (the `'` added before
/// formula-like text removed again).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutralize_prefixes_exactly_the_formula_starts() {
        for s in ["=1", "+1", "-1", "@x", "\t=1", "\r=1", "'=1", "''-x"] {
            assert_eq!(neutralize(s), format!("'{s}"), "{s:?}");
            assert_eq!(unneutralize(neutralize(s).into_owned()), s);
        }
        for s in ["", "a=1", " =1", "'", "'a", "it's", "\n=1", "1-2"] {
            assert!(matches!(neutralize(s), Cow::Borrowed(_)), "{s:?}");
            assert_eq!(unneutralize(s.to_string()), s);
        }
    }
}
