//! `stress.json`: the whole report.

use super::{Exporter, StressError, StressReport};

/// Writes the report as pretty JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn file_name(&self) -> &'static str {
        "stress.json"
    }

    fn render(&self, report: &StressReport) -> Result<Vec<u8>, StressError> {
        let mut out = serde_json::to_vec_pretty(report)
            .map_err(|e| StressError::Render { file: self.file_name(), message: e.to_string() })?;
        out.push(b'\n');
        Ok(out)
    }
}
