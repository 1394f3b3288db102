//! `html`: one self-contained page: inline CSS, the SVG charts inline, no scripts and nothing
//! loaded from elsewhere. Every piece of run text is HTML-escaped, so a persona saying
//! `<script>` shows it as text.

use std::fmt::Write;

use super::{ExportError, Exporter, escape_html as esc, name_of};
use crate::analysis::{ConversationAnalysis, charts};
use crate::record::results::SimulationResults;

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

/// The page.
pub fn page(r: &SimulationResults, a: &ConversationAnalysis, charts: &[charts::Chart]) -> String {
    let mut s = String::with_capacity(16_384 + r.transcript.len() * 400);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&format!("{} · {}", r.scenario, r.run_id))
    );
    let _ = writeln!(s, "<h1>{}</h1>", esc(&r.scenario));
    if !r.topic.is_empty() {
        let _ = writeln!(s, "<p><strong>Topic:</strong> {}</p>", esc(&r.topic));
    }
    if let Some(n) = &r.notice {
        let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(n));
    }
    s.push_str("<table>\n");
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    kv("run", r.run_id.clone());
    if let Some(v) = &r.variant {
        kv("variant", v.clone());
    }
    kv("provider", r.provider.clone());
    kv("models", r.models_used.join(", "));
    kv("started", r.started_at.to_rfc3339());
    kv("status", format!("{} after {} turn(s)", if r.success { "completed" } else { "stopped" }, r.completed_turns));
    if let Some(e) = &r.error {
        kv("error", e.clone());
    }
    s.push_str("</table>\n");

    s.push_str("<h2>Personas</h2>\n<table><tr><th>name</th><th>role</th><th>id</th></tr>\n");
    for p in &a.personas {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&p.name),
            esc(&p.role),
            esc(&p.id)
        );
    }
    s.push_str("</table>\n");

    s.push_str("<h2>Analysis</h2>\n<ul>\n");
    for line in super::summary_lines(a, esc) {
        let _ = writeln!(s, "<li>{line}</li>");
    }
    s.push_str("</ul>\n");

    s.push_str("<table><tr><th>persona</th><th>messages</th><th>share</th><th>words/msg</th><th>questions</th><th>sentiment</th><th>agree</th><th>disagree</th><th>mentions made</th><th>mentioned</th><th>mean latency (ms)</th><th>tokens</th><th>keywords</th></tr>\n");
    for p in &a.personas {
        let kws: Vec<String> = p.keywords.iter().take(5).map(|k| esc(&k.term)).collect();
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.0}%</td><td class=\"n\">{:.1}</td><td class=\"n\">{}</td><td class=\"n\">{:+.2}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{}</td><td>{}</td></tr>",
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
    s.push_str("</table>\n");
    if !a.mentions.edges.is_empty() {
        s.push_str("<h3>Mentions</h3>\n<table><tr><th>from</th><th>to</th><th>addressed</th><th>named</th><th>messages</th></tr>\n");
        for e in &a.mentions.edges {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(name_of(r, a, &e.from)),
                esc(name_of(r, a, &e.to)),
                e.addressed,
                e.named,
                e.total
            );
        }
        s.push_str("</table>\n");
    }

    s.push_str("<h2>Charts</h2>\n");
    for c in charts {
        let _ = writeln!(s, "<figure aria-label=\"{}\">\n{}\n</figure>", esc(&c.title), inline_svg(&c.svg));
    }

    s.push_str("<h2>Transcript</h2>\n");
    for e in &r.transcript {
        let cls = if e.speaker_id == crate::analysis::MODERATOR_ID { "msg mod" } else { "msg" };
        let to = e.to.as_ref().map(|t| format!(" → {}", esc(t))).unwrap_or_default();
        let role = if e.role.is_empty() { String::new() } else { format!(" ({})", esc(&e.role)) };
        let _ = writeln!(
            s,
            "<div class=\"{cls}\"><span class=\"who\">{}</span>{role}{to} <span class=\"meta\">turn {} · #{}</span><div class=\"text\">{}</div></div>",
            esc(&e.speaker),
            e.turn,
            e.seq,
            esc(&e.text)
        );
    }

    let m = &r.metrics;
    s.push_str("<h2>Metrics</h2>\n<table>\n");
    let rows: [(&str, String); 14] = [
        ("duration (s)", format!("{:.2}", m.duration)),
        ("messages", m.total_messages.to_string()),
        ("API calls", m.api_calls.to_string()),
        ("errors", m.errors.to_string()),
        ("retries", m.retries.to_string()),
        ("timeouts", m.timeouts.to_string()),
        ("fallbacks", m.fallbacks.to_string()),
        ("skipped turns", m.skipped_turns.to_string()),
        ("prompt tokens", m.prompt_tokens.to_string()),
        ("completion tokens", m.completion_tokens.to_string()),
        ("cost (USD)", format!("{:.4}", m.cost_usd)),
        ("mean response time (s)", format!("{:.3}", m.average_response_time)),
        ("latency p50 / p99 (s)", format!("{:.3} / {:.3}", m.latency_p50, m.latency_p99)),
        ("throughput (messages/min)", format!("{:.1}", m.throughput_per_min)),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th>{k}</th><td class=\"n\">{v}</td></tr>");
    }
    s.push_str("</table>\n</body>\n</html>\n");
    s
}

/// An SVG document ready to sit inside HTML: without an XML declaration, if it has one.
pub fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}
