//! `stress.csv`: one row per setting, RFC 4180 (CRLF line ends, fields quoted when needed).

use super::{Exporter, StressError, StressReport};

/// The header row.
pub const COLUMNS: [&str; 20] = [
    "workers",
    "wall_s",
    "calls",
    "answered",
    "calls_per_s",
    "tokens",
    "tokens_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "errors",
    "error_rate",
    "rate_limited",
    "retries",
    "skipped_turns",
    "completed_turns",
    "cost_usd",
    "cost_estimated",
    "errors_by_kind",
    "best",
];

/// Writes the settings table as CSV.
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvExporter;

impl Exporter for CsvExporter {
    fn file_name(&self) -> &'static str {
        "stress.csv"
    }

    fn render(&self, report: &StressReport) -> Result<Vec<u8>, StressError> {
        let mut out = String::new();
        push_record(&mut out, COLUMNS.iter().map(|c| c.to_string()));
        for r in &report.settings {
            let kinds = r.errors_by_kind.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(";");
            push_record(
                &mut out,
                [
                    r.workers.to_string(),
                    format!("{:.3}", r.wall_s),
                    r.calls.to_string(),
                    r.answered.to_string(),
                    format!("{:.3}", r.calls_per_s),
                    r.tokens.to_string(),
                    format!("{:.1}", r.tokens_per_s),
                    format!("{:.3}", r.p50_ms),
                    format!("{:.3}", r.p90_ms),
                    format!("{:.3}", r.p99_ms),
                    r.errors.to_string(),
                    format!("{:.4}", r.error_rate),
                    r.rate_limited.to_string(),
                    r.retries.to_string(),
                    r.skipped_turns.to_string(),
                    r.completed_turns.to_string(),
                    r.cost_usd.map(|c| format!("{c:.6}")).unwrap_or_default(),
                    r.cost_estimated.to_string(),
                    kinds,
                    (report.best_workers == Some(r.workers)).to_string(),
                ]
                .into_iter(),
            );
        }
        Ok(out.into_bytes())
    }
}

fn push_record(out: &mut String, fields: impl Iterator<Item = String>) {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&field(&f));
    }
    out.push_str("\r\n");
}

/// A field, quoted (with inner quotes doubled) when it holds a comma, a quote or a line break.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }
}
