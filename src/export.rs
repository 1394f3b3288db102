//! Exports of a saved run: one exporter per file behind the [`Exporter`] trait.
//!
//! | format | file | what |
//! | --- | --- | --- |
//! | `json` | [`json`] | the `results.json` shape |
//! | `jsonl` | [`jsonl`] | the transcript, one message per line |
//! | `csv` | [`csv`] | the transcript, RFC 4180 quoting (commas, quotes, newlines survive) |
//! | `markdown` | [`markdown`] | a readable report: scenario, personas, transcript, analysis, metrics |
//! | `html` | [`html`] | one self-contained page (inline CSS and SVG charts, no scripts), from a maud template that escapes every value |

pub mod csv;
pub mod html;
pub mod json;
pub mod jsonl;
pub mod markdown;

use std::path::{Path, PathBuf};

use crate::analysis::ConversationAnalysis;
use crate::record::results::SimulationResults;

/// Turns a run (and its analysis) into the bytes of one file format.
pub trait Exporter: Send + Sync + std::fmt::Debug {
    /// The format's name, as given to `--format`.
    fn name(&self) -> &'static str;
    /// The file extension, without the dot.
    fn extension(&self) -> &'static str;
    /// The file's bytes.
    fn export(&self, results: &SimulationResults, analysis: &ConversationAnalysis) -> Result<Vec<u8>, ExportError>;
}

/// Errors while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No exporter has this name.
    #[error("unknown export format `{name}`; use one of: {known}")]
    UnknownFormat {
        /// The name given.
        name: String,
        /// The names known, comma-separated.
        known: String,
    },
    /// The CSV writer or reader failed.
    #[error("CSV: {0}")]
    Csv(String),
    /// A JSON line could not be read back.
    #[error("line {line}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// serde_json's message.
        message: String,
    },
    /// Charts for the HTML page could not be drawn.
    #[error(transparent)]
    Chart(#[from] crate::analysis::AnalysisError),
    /// The file could not be written.
    #[error("could not write {}: {source}; check that the folder exists and is writable", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Every exporter, in the order of the table above.
pub fn exporters() -> Vec<Box<dyn Exporter>> {
    vec![
        Box::new(json::JsonExporter),
        Box::new(jsonl::JsonlExporter),
        Box::new(csv::CsvExporter),
        Box::new(markdown::MarkdownExporter),
        Box::new(html::HtmlExporter),
    ]
}

/// The exporter called `name` (`md` is accepted for markdown).
pub fn exporter(name: &str) -> Result<Box<dyn Exporter>, ExportError> {
    let want = match name.to_ascii_lowercase().as_str() {
        "md" => "markdown".to_string(),
        "htm" => "html".to_string(),
        other => other.to_string(),
    };
    let all = exporters();
    let known = all.iter().map(|e| e.name()).collect::<Vec<_>>().join(", ");
    all.into_iter().find(|e| e.name() == want).ok_or(ExportError::UnknownFormat { name: name.to_string(), known })
}

/// Exports into `path`, atomically.
pub fn export_to_file(
    exporter: &dyn Exporter,
    results: &SimulationResults,
    analysis: &ConversationAnalysis,
    path: &Path,
) -> Result<(), ExportError> {
    let bytes = exporter.export(results, analysis)?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|source| ExportError::Write { path: path.to_path_buf(), source })
}

/// Escapes text for Markdown: HTML-significant characters become entities (renderers would
/// otherwise pass `<script>` through), and the characters that start emphasis, code, links or
/// table cells in running text are backslash-escaped (`_` inside words is left alone).
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '[' | ']' | '|' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The analysis in one line per finding (overview, participation, sentiment, repetition,
/// keywords), for the report formats; `esc` escapes the keywords for the target format (the
/// HTML page passes them unchanged: its template escapes each whole line).
pub(crate) fn summary_lines(a: &ConversationAnalysis, esc: fn(&str) -> String) -> [String; 5] {
    let o = &a.overview;
    let kw: Vec<String> = a.keywords.iter().map(|k| esc(&k.term)).collect();
    [
        format!(
            "{} messages ({} by personas, {} by the moderator), {} words, {:.1} words per persona message, {} question(s)",
            o.messages, o.persona_messages, o.moderator_messages, o.words, o.words_per_message, o.questions
        ),
        format!(
            "participation: Gini {:.3} by messages, {:.3} by words ({})",
            a.participation.gini_messages,
            a.participation.gini_words,
            crate::analysis::balance_word(a.participation.gini_messages)
        ),
        format!(
            "sentiment: mean {:+.3}; {} agreeing and {} disagreeing message(s)",
            a.sentiment.mean, a.agreement.agreements, a.agreement.disagreements
        ),
        format!(
            "repetition: {} near-duplicate message(s) (shingled Jaccard ≥ {})",
            a.repetition.repeated_messages, a.repetition.threshold
        ),
        format!("keywords: {}", if kw.is_empty() { "-".into() } else { kw.join(", ") }),
    ]
}

/// The display name of a persona id in a run, or the id itself.
pub(crate) fn name_of<'a>(results: &'a SimulationResults, analysis: &'a ConversationAnalysis, id: &'a str) -> &'a str {
    analysis
        .personas
        .iter()
        .find(|p| p.id == id)
        .map(|p| p.name.as_str())
        .or_else(|| results.agents.iter().find(|a| a.id == id).map(|a| a.name.as_str()))
        .unwrap_or(id)
}

/// The run's headline figures, as label and value (the HTML and Markdown exports show these).
pub(crate) fn metric_rows(m: &crate::record::results::ResultsMetrics) -> [(&'static str, String); 14] {
    [
        ("duration (s)", format!("{:.2}", m.duration)),
        ("messages", m.total_messages.to_string()),
        ("API calls", m.counts.api_calls.to_string()),
        ("errors", m.counts.errors.to_string()),
        ("retries", m.counts.retries.to_string()),
        ("timeouts", m.counts.timeouts.to_string()),
        ("fallbacks", m.counts.fallbacks.to_string()),
        ("skipped turns", m.counts.skipped_turns.to_string()),
        ("prompt tokens", m.counts.prompt_tokens.to_string()),
        ("completion tokens", m.counts.completion_tokens.to_string()),
        ("cost (USD)", format!("{:.4}", m.counts.cost_usd)),
        ("mean response time (s)", format!("{:.3}", m.average_response_time)),
        ("latency p50 / p99 (s)", format!("{:.3} / {:.3}", m.latency_p50, m.latency_p99)),
        ("throughput (messages/min)", format!("{:.1}", m.throughput_per_min)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_markdown("a|b *c* <i> snake_case"), "a\\|b \\*c\\* &lt;i&gt; snake_case");
        assert!(exporter("md").is_ok());
        assert!(exporter("pdf").unwrap_err().to_string().contains("json, jsonl, csv, markdown, html"));
    }
}
