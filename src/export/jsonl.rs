//! `jsonl`: the transcript, one JSON object per line (the shape of `transcript.jsonl`).

use super::{ExportError, Exporter};
use crate::analysis::ConversationAnalysis;
use crate::record::results::SimulationResults;
use crate::record::transcript::TranscriptEntry;

/// The transcript as JSON lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonlExporter;

impl Exporter for JsonlExporter {
    fn name(&self) -> &'static str {
        "jsonl"
    }
    fn extension(&self) -> &'static str {
        "jsonl"
    }
    fn export(&self, results: &SimulationResults, _: &ConversationAnalysis) -> Result<Vec<u8>, ExportError> {
        Ok(crate::record::results::transcript_jsonl(&results.transcript))
    }
}

/// Reads JSON lines back into transcript entries (blank lines are skipped).
pub fn read_jsonl(bytes: &[u8]) -> Result<Vec<TranscriptEntry>, ExportError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ExportError::Json { line: 0, message: e.to_string() })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| ExportError::Json { line: i + 1, message: e.to_string() }))
        .collect()
}
