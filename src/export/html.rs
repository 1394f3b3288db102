//! `html`: one self-contained page: inline CSS, the SVG charts inline, no scripts and nothing
//! loaded from elsewhere.
//!
//! The page is a `maud` template, as are the web app's pages and the experiment report: the
//! markup is Rust, checked when the crate compiles (no template folder, nothing parsed at run
//! time), and every value is HTML-escaped unless it is wrapped in `PreEscaped` (here only the
//! style and the charts' SVG, which escapes its own text), so a persona saying `<script>` shows
//! it as text. The pieces the reports share are plain functions returning [`Markup`]:
//! [`document`], [`kv_table`] and [`persona_table`].

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{ExportError, Exporter, name_of};
use crate::analysis::{ConversationAnalysis, charts};
use crate::record::results::SimulationResults;
use crate::record::transcript::TranscriptEntry;

/// The HTML page.
#[derive(Debug, Clone, Copy, Default)]
pub struct HtmlExporter;

impl Exporter for HtmlExporter {
    fn name(&self) -> &'static str {
        "html"
    }
    fn extension(&self) -> &'static str {
        "html"
    }
    fn export(&self, results: &SimulationResults, analysis: &ConversationAnalysis) -> Result<Vec<u8>, ExportError> {
        let charts = charts::render_all(analysis, results)?;
        Ok(page(results, analysis, &charts).into_bytes())
    }
}

/// Shared page style (also used by the experiment report).
pub const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b1b1b;line-height:1.45}\
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}\
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f5f7}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.note{background:#fff6db;border-left:4px solid #e6a700;padding:.5em .8em}\
.msg{margin:.6em 0;padding:.5em .8em;border-left:4px solid #0072b2;background:#f7f9fb}\
.msg.mod{border-left-color:#888;background:#f4f4f4}.who{font-weight:600}.meta{color:#666;font-size:.85em}\
.text{white-space:pre-wrap;margin-top:.2em}figure{margin:1em 0}figure svg{max-width:100%;height:auto}\
.sig{color:#8a1c1c;font-weight:600}";

/// The columns of [`persona_table`].
const PERSONA_COLUMNS: [&str; 13] = [
    "persona",
    "messages",
    "share",
    "words/msg",
    "questions",
    "sentiment",
    "agree",
    "disagree",
    "mentions made",
    "mentioned",
    "mean latency (ms)",
    "tokens",
    "keywords",
];

/// A whole self-contained report: the head with [`STYLE`] inline, then `body`.
pub fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

/// A two-column table of labels and values; `numeric` right-aligns the values.
pub fn kv_table(rows: &[(&str, String)], numeric: bool) -> Markup {
    html! {
        table {
            @for (k, v) in rows {
                tr { th { (k) } td class=[numeric.then_some("n")] { (v) } }
            }
        }
    }
}

/// Each persona's figures in one row: messages, share, words, questions, sentiment, agreement,
/// mentions, latency, tokens and the top five keywords.
pub fn persona_table(a: &ConversationAnalysis) -> Markup {
    html! {
        table {
            tr { @for c in PERSONA_COLUMNS { th { (c) } } }
            @for p in &a.personas {
                @let keywords = p.keywords.iter().take(5).map(|k| k.term.as_str()).collect::<Vec<_>>().join(", ");
                tr {
                    td { (p.name) }
                    td.n { (p.messages) }
                    td.n { (format!("{:.0}%", p.share * 100.0)) }
                    td.n { (format!("{:.1}", p.average_words)) }
                    td.n { (p.questions) }
                    td.n { (format!("{:+.2}", p.sentiment_mean)) }
                    td.n { (p.agreements) }
                    td.n { (p.disagreements) }
                    td.n { (p.mentions_made) }
                    td.n { (p.mentions_received) }
                    td.n { (format!("{:.0}", p.latency.mean_ms)) }
                    td.n { (p.prompt_tokens + p.completion_tokens) }
                    td { (keywords) }
                }
            }
        }
    }
}

/// The page.
pub fn page(r: &SimulationResults, a: &ConversationAnalysis, charts: &[charts::Chart]) -> String {
    let body = html! {
        (run_header(r))
        h2 { "Personas" }
        table {
            tr { th { "name" } th { "role" } th { "id" } }
            @for p in &a.personas {
                tr { td { (p.name) } td { (p.role) } td { code { (p.id) } } }
            }
        }
        h2 { "Analysis" }
        ul { @for line in super::summary_lines(a, str::to_string) { li { (line) } } }
        (persona_table(a))
        (mentions(r, a))
        h2 { "Charts" }
        @for c in charts {
            figure aria-label=(c.title) { (PreEscaped(inline_svg(&c.svg))) }
        }
        h2 { "Transcript" }
        @for e in &r.transcript { (message(e)) }
        h2 { "Metrics" }
        (kv_table(&super::metric_rows(&r.metrics), true))
    };
    document(&format!("{} · {}", r.scenario, r.run_id), body).into_string()
}

/// Scenario, topic, notice and what the run was.
fn run_header(r: &SimulationResults) -> Markup {
    let mut rows = vec![("run", r.run_id.clone())];
    if let Some(v) = &r.variant {
        rows.push(("variant", v.clone()));
    }
    rows.push(("provider", r.provider.clone()));
    rows.push(("models", r.models_used.join(", ")));
    rows.push(("started", r.started_at.to_rfc3339()));
    let done = if r.success { "completed" } else { "stopped" };
    rows.push(("status", format!("{done} after {} turn(s)", r.completed_turns)));
    if let Some(e) = &r.error {
        rows.push(("error", e.clone()));
    }
    html! {
        h1 { (r.scenario) }
        @if !r.topic.is_empty() {
            p { strong { "Topic:" } " " (r.topic) }
        }
        @if let Some(n) = &r.notice {
            p.note { (n) }
        }
        (kv_table(&rows, false))
    }
}

/// Who addressed or named whom, when anyone did.
fn mentions(r: &SimulationResults, a: &ConversationAnalysis) -> Markup {
    html! {
        @if !a.mentions.edges.is_empty() {
            h3 { "Mentions" }
            table {
                tr { th { "from" } th { "to" } th { "addressed" } th { "named" } th { "messages" } }
                @for e in &a.mentions.edges {
                    tr {
                        td { (name_of(r, a, &e.from)) }
                        td { (name_of(r, a, &e.to)) }
                        td.n { (e.addressed) }
                        td.n { (e.named) }
                        td.n { (e.total) }
                    }
                }
            }
        }
    }
}

/// One transcript message.
fn message(e: &TranscriptEntry) -> Markup {
    let moderator = e.speaker_id == crate::analysis::MODERATOR_ID;
    html! {
        div.msg.mod[moderator] {
            span.who { (e.speaker) }
            @if !e.role.is_empty() { " (" (e.role) ")" }
            @if let Some(to) = &e.to { " → " (to) }
            " "
            span.meta { "turn " (e.turn) " · #" (e.seq) }
            div.text { (e.text) }
        }
    }
}

/// An SVG document ready to sit inside HTML: without an XML declaration, if it has one.
pub fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}
