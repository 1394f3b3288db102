//! `markdown`: a readable report of a run: scenario, personas, the transcript, the analysis
//! summary and the metrics. Message text is escaped (HTML characters become entities).

use std::fmt::Write;

use super::{ExportError, Exporter, escape_markdown as esc, name_of};
use crate::analysis::ConversationAnalysis;
use crate::record::results::SimulationResults;

/// The Markdown report.
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkdownExporter;

impl Exporter for MarkdownExporter {
    fn name(&self) -> &'static str {
        "markdown"
    }
    fn extension(&self) -> &'static str {
        "md"
    }
    fn export(&self, results: &SimulationResults, analysis: &ConversationAnalysis) -> Result<Vec<u8>, ExportError> {
        Ok(report(results, analysis).into_bytes())
    }
}

/// The report as text.
pub fn report(r: &SimulationResults, a: &ConversationAnalysis) -> String {
    let mut s = String::with_capacity(4096 + r.transcript.len() * 300);
    header(&mut s, r);
    personas(&mut s, a);
    transcript(&mut s, r);
    analysis(&mut s, a);
    turn_taking(&mut s, a);
    mentions(&mut s, r, a);
    metrics(&mut s, r);
    s
}

/// Title, topic, notice and the run's facts.
fn header(s: &mut String, r: &SimulationResults) {
    let _ = writeln!(s, "# {}\n", esc(&r.scenario));
    if !r.topic.is_empty() {
        let _ = writeln!(s, "**Topic:** {}\n", esc(&r.topic));
    }
    if let Some(n) = &r.notice {
        let _ = writeln!(s, "> **Note:** {}\n", esc(n));
    }
    let _ = writeln!(s, "| | |\n| --- | --- |");
    let _ = writeln!(s, "| run | `{}` |", r.run_id);
    if let Some(v) = &r.variant {
        let _ = writeln!(s, "| variant | {} |", esc(v));
    }
    let _ = writeln!(s, "| provider | {} |", esc(&r.provider));
    let _ = writeln!(s, "| models | {} |", esc(&r.models_used.join(", ")));
    let _ = writeln!(s, "| started | {} |", r.started_at.to_rfc3339());
    let _ = writeln!(
        s,
        "| status | {} after {} turn(s) |",
        if r.success { "completed" } else { "stopped" },
        r.completed_turns
    );
    if let Some(e) = &r.error {
        let _ = writeln!(s, "| error | {} |", esc(e));
    }
}

fn personas(s: &mut String, a: &ConversationAnalysis) {
    s.push_str("\n## Personas\n\n| name | role | id |\n| --- | --- | --- |\n");
    for p in &a.personas {
        let _ = writeln!(s, "| {} | {} | `{}` |", esc(&p.name), esc(&p.role), p.id);
    }
}

fn transcript(s: &mut String, r: &SimulationResults) {
    s.push_str("\n## Transcript\n\n");
    for e in &r.transcript {
        let to = e.to.as_ref().map(|t| format!(" → {}", esc(t))).unwrap_or_default();
        let role = if e.role.is_empty() { String::new() } else { format!(" ({})", esc(&e.role)) };
        let _ = writeln!(s, "**[turn {}] {}**{role}{to}\n", e.turn, esc(&e.speaker));
        for line in e.text.lines() {
            let _ = writeln!(s, "> {}", esc(line));
        }
        s.push('\n');
    }
}

/// The analysis summary and the table of persona figures.
fn analysis(s: &mut String, a: &ConversationAnalysis) {
    s.push_str("## Analysis\n\n");
    for line in super::summary_lines(a, esc) {
        let _ = writeln!(s, "- {line}");
    }
    s.push('\n');

    s.push_str("| persona | messages | share | words/msg | questions | sentiment | agree | disagree | mentions made | mentioned | mean latency (ms) | tokens | keywords |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for p in &a.personas {
        let kws: Vec<String> = p.keywords.iter().take(5).map(|k| esc(&k.term)).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}% | {:.1} | {} | {:+.2} | {} | {} | {} | {} | {:.0} | {} | {} |",
            esc(&p.name),
            p.messages,
            p.share * 100.0,
            p.average_words,
            p.questions,
            p.sentiment_mean,
            p.agreements,
            p.disagreements,
            p.mentions_made,
            p.mentions_received,
            p.latency.mean_ms,
            p.prompt_tokens + p.completion_tokens,
            kws.join(", ")
        );
    }
}

fn turn_taking(s: &mut String, a: &ConversationAnalysis) {
    let tt = &a.turn_taking;
    if tt.names.is_empty() {
        return;
    }
    s.push_str("\n### Turn-taking (row: previous speaker, column: next)\n\n| |");
    for n in &tt.names {
        let _ = write!(s, " {} |", esc(n));
    }
    s.push_str("\n| --- |");
    for _ in &tt.names {
        s.push_str(" ---: |");
    }
    s.push('\n');
    for (i, row) in tt.matrix.iter().enumerate() {
        let _ = write!(s, "| **{}** |", esc(&tt.names[i]));
        for v in row {
            let _ = write!(s, " {v} |");
        }
        s.push('\n');
    }
}

fn mentions(s: &mut String, r: &SimulationResults, a: &ConversationAnalysis) {
    if a.mentions.edges.is_empty() {
        return;
    }
    s.push_str("\n### Mentions (who addresses or names whom)\n\n| from | to | addressed | named | messages |\n| --- | --- | ---: | ---: | ---: |\n");
    for e in &a.mentions.edges {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            esc(name_of(r, a, &e.from)),
            esc(name_of(r, a, &e.to)),
            e.addressed,
            e.named,
            e.total
        );
    }
}

fn metrics(s: &mut String, r: &SimulationResults) {
    let m = &r.metrics;
    s.push_str("\n## Metrics\n\n| metric | value |\n| --- | ---: |\n");
    let rows = super::metric_rows(m);
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
}
