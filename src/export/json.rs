//! `json`: the `results.json` shape, pretty-printed.

use super::{ExportError, Exporter};
use crate::analysis::ConversationAnalysis;
use crate::record::results::SimulationResults;

/// The results as JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn name(&self) -> &'static str {
        "json"
    }
    fn extension(&self) -> &'static str {
        "json"
    }
    fn export(&self, results: &SimulationResults, _: &ConversationAnalysis) -> Result<Vec<u8>, ExportError> {
        let mut out =
            serde_json::to_vec_pretty(results).map_err(|e| ExportError::Json { line: 0, message: e.to_string() })?;
        out.push(b'\n');
        Ok(out)
    }
}
