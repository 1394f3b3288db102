//! The Results page (transcript with persona filter, search and pages; analysis and charts;
//! metrics; export downloads) and, while a run goes on, the Live page in its place.

use std::fmt::Write;
use std::path::Path as FsPath;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::analysis::ConversationAnalysis;
use crate::record::results::{AgentInfo, ResultsConfig, ResultsMetrics};
use crate::record::transcript::{StopReason, TranscriptEntry};

use super::error::{WebError, scrub_paths};
use super::security::resolve_under;
use super::state::AppState;
use super::templates::{Nav, csrf_field, duration, escape, page as layout, url_encode};

/// Messages per transcript page.
pub const PAGE_SIZE: usize = 100;
/// Export formats offered for download.
pub const FORMATS: [&str; 5] = ["json", "jsonl", "csv", "markdown", "html"];

/// `results.json` without its transcript (which the page reads, a page at a time, from
/// `transcript.jsonl`): serde skips the array without building it.
#[derive(Debug, Clone, Deserialize)]
pub struct ResultsHead {
    /// True when every turn ran.
    pub success: bool,
    /// Who took part.
    pub agents: Vec<AgentInfo>,
    /// Headline figures.
    pub metrics: ResultsMetrics,
    /// Settings used.
    pub config: ResultsConfig,
    /// Scenario name.
    pub scenario: String,
    /// Topic.
    pub topic: String,
    /// Provider name.
    pub provider: String,
    /// A statement about the text (synthetic).
    #[serde(default)]
    pub notice: Option<String>,
    /// Turns completed.
    pub completed_turns: u32,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Start.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The error that ended it.
    #[serde(default)]
    pub error: Option<String>,
}

impl ResultsHead {
    /// One word for the Runs table.
    pub fn status_word(&self) -> &'static str {
        match (&self.stop_reason, self.success) {
            (_, true) => "completed",
            (StopReason::Cancelled, _) => "cancelled",
            _ => "failed",
        }
    }
}

/// Reads a run folder's `results.json` head, when it has one.
pub fn read_head(dir: &FsPath) -> Option<ResultsHead> {
    let bytes = std::fs::read(dir.join("results.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The transcript page query.
#[derive(Debug, Default, Deserialize)]
pub struct TranscriptQuery {
    /// 1-based page.
    pub page: Option<usize>,
    /// Persona id to show only.
    pub persona: Option<String>,
    /// Text to search for (case-insensitive).
    pub q: Option<String>,
}

/// One page of a transcript, filtered.
#[derive(Debug, Default)]
pub struct TranscriptPage {
    /// The entries on the page.
    pub entries: Vec<TranscriptEntry>,
    /// Entries matching the filter.
    pub matching: usize,
    /// The page shown (1-based).
    pub page: usize,
    /// Pages.
    pub pages: usize,
}

/// Reads one page of `transcript.jsonl`. Without a filter only the page's lines are parsed,
/// which keeps a 10,000-message transcript quick to open.
pub fn transcript_page(dir: &FsPath, q: &TranscriptQuery) -> TranscriptPage {
    let text = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap_or_default();
    let persona = q.persona.as_deref().filter(|p| !p.is_empty());
    let needle = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_lowercase);
    let want = q.page.unwrap_or(1).max(1);
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    if persona.is_none() && needle.is_none() {
        let all: Vec<&str> = lines.collect();
        let pages = all.len().div_ceil(PAGE_SIZE).max(1);
        let page = want.min(pages);
        let entries = all
            .iter()
            .skip((page - 1) * PAGE_SIZE)
            .take(PAGE_SIZE)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        return TranscriptPage { entries, matching: all.len(), page, pages };
    }
    let matching: Vec<TranscriptEntry> = lines
        .filter_map(|l| serde_json::from_str::<TranscriptEntry>(l).ok())
        .filter(|e| persona.is_none_or(|p| e.speaker_id == p))
        .filter(|e| {
            needle.as_ref().is_none_or(|n| e.text.to_lowercase().contains(n) || e.speaker.to_lowercase().contains(n))
        })
        .collect();
    let pages = matching.len().div_ceil(PAGE_SIZE).max(1);
    let page = want.min(pages);
    let n = matching.len();
    let entries = matching.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).collect();
    TranscriptPage { entries, matching: n, page, pages }
}

/// Renders transcript entries (every text escaped).
pub fn render_entries(out: &mut String, entries: &[TranscriptEntry]) {
    out.push_str("<ol class=\"transcript\">");
    for e in entries {
        let to = e.to.as_ref().map(|t| format!(" → {}", escape(t))).unwrap_or_default();
        let _ = write!(
            out,
            "<li class=\"msg\" data-speaker=\"{sid}\"><div class=\"meta\"><span class=\"turn\">turn {}</span> \
             <strong class=\"speaker\">{}</strong> <span class=\"role\">{}</span>{to}</div><p class=\"text\">{}</p></li>",
            e.turn,
            escape(&e.speaker),
            escape(&e.role),
            escape(&e.text),
            sid = escape(&e.speaker_id),
        );
    }
    out.push_str("</ol>");
}

/// `GET /runs/{id}`: the Live page while the run goes on, its results after.
pub async fn page(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TranscriptQuery>,
) -> Result<Html<String>, WebError> {
    if let Some(live) = st.live_run(&id)
        && live.is_running()
    {
        return Ok(super::live::live_page(&st, &live));
    }
    let dir = resolve_under(&st.conversations_dir(), &id)?;
    let (head, tp, analysis, charts) = tokio::task::spawn_blocking(move || {
        let head = read_head(&dir);
        let tp = transcript_page(&dir, &q);
        let analysis: Option<ConversationAnalysis> =
            std::fs::read(dir.join("analysis.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let mut charts: Vec<String> = std::fs::read_dir(dir.join("charts"))
            .map(|rd| {
                rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| valid_chart(n)).collect()
            })
            .unwrap_or_default();
        charts.sort();
        (head, (tp, q), analysis, charts)
    })
    .await
    .map_err(|e| WebError::internal("reading a run", e))?;
    let (tp, q) = tp;
    let eid = escape(&id);
    let mut b = String::new();
    let _ = write!(b, "<h1>Run <code>{eid}</code></h1>");
    match &head {
        Some(h) => {
            let _ = write!(
                b,
                "<p class=\"lead\"><span class=\"status {s}\">{s}</span> {} · <em>{}</em> · {} · {} turn(s) of {}</p>",
                escape(&h.scenario),
                escape(&h.topic),
                escape(&h.provider),
                h.completed_turns,
                h.config.turns,
                s = h.status_word(),
            );
            if let Some(n) = &h.notice {
                let _ = write!(b, "<p class=\"notice\">{}</p>", escape(n));
            }
            if let Some(e) = &h.error {
                let _ = write!(b, "<p class=\"error\">{}</p>", escape(&scrub_paths(e)));
            }
            let m = &h.metrics;
            let _ = write!(
                b,
                "<section><h2>Metrics</h2><dl class=\"metrics\">\
                 <dt>Duration</dt><dd>{}</dd><dt>Messages</dt><dd>{}</dd><dt>API calls</dt><dd>{}</dd>\
                 <dt>Errors</dt><dd>{}</dd><dt>Retries</dt><dd>{}</dd><dt>Tokens</dt><dd>{} ({} in, {} out)</dd>\
                 <dt>Cost</dt><dd>${:.4}</dd><dt>Latency p50 / p99</dt><dd>{:.0} / {:.0} ms</dd>\
                 <dt>Throughput</dt><dd>{:.1} msg/min</dd></dl></section>",
                duration(m.duration),
                m.total_messages,
                m.api_calls,
                m.errors,
                m.retries,
                m.total_tokens,
                m.prompt_tokens,
                m.completion_tokens,
                m.cost_usd,
                m.latency_p50 * 1000.0,
                m.latency_p99 * 1000.0,
                m.throughput_per_min,
            );
        }
        None => b.push_str(
            "<p class=\"notice\">This run has no results.json: it was interrupted. \
             <code>troupe resume</code> can continue it; its transcript so far is below.</p>",
        ),
    }
    // Analysis and charts.
    b.push_str("<section><h2>Analysis</h2>");
    match &analysis {
        Some(a) => {
            b.push_str("<ul class=\"summary\">");
            for line in crate::analysis::summary_lines(a) {
                let _ = write!(b, "<li>{}</li>", escape(&line));
            }
            b.push_str("</ul><div class=\"charts\">");
            for c in &charts {
                let _ = write!(b, "<figure><img src=\"/runs/{eid}/charts/{c}\" alt=\"{c}\"></figure>", c = escape(c));
            }
            b.push_str("</div>");
        }
        None if head.is_some() => {
            let _ = write!(
                b,
                "<form method=\"post\" action=\"/runs/{eid}/analyze\">{}<button>Analyse this run</button></form>",
                csrf_field(&st.csrf)
            );
        }
        None => b.push_str("<p>Analysis needs a finished run.</p>"),
    }
    b.push_str("</section>");
    if head.is_some() {
        b.push_str("<section><h2>Export</h2><p class=\"exports\">");
        for f in FORMATS {
            let _ = write!(b, "<a class=\"button\" href=\"/runs/{eid}/export/{f}\" download>{f}</a> ");
        }
        b.push_str("</p></section>");
    }
    // Transcript with filters and pages.
    let _ = write!(b, "<section><h2>Transcript</h2><form method=\"get\" action=\"/runs/{eid}\" class=\"filters\">");
    b.push_str("<label>Persona <select name=\"persona\"><option value=\"\">everyone</option>");
    let agents = head.as_ref().map(|h| h.agents.clone()).unwrap_or_default();
    let cur = q.persona.clone().unwrap_or_default();
    for a in agents.iter().map(|a| (a.id.as_str(), a.name.as_str())).chain([("moderator", "Moderator")]) {
        let sel = if a.0 == cur { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{}\"{sel}>{}</option>", escape(a.0), escape(a.1));
    }
    let _ = write!(
        b,
        "</select></label> <label>Search <input type=\"search\" name=\"q\" value=\"{}\"></label> <button>Filter</button></form>",
        escape(q.q.as_deref().unwrap_or(""))
    );
    let _ = write!(b, "<p class=\"count\">{} message(s) · page {} of {}</p>", tp.matching, tp.page, tp.pages);
    render_entries(&mut b, &tp.entries);
    if tp.pages > 1 {
        let base =
            format!("/runs/{eid}?persona={}&amp;q={}", url_encode(&cur), url_encode(q.q.as_deref().unwrap_or("")));
        b.push_str("<nav class=\"pages\">");
        if tp.page > 1 {
            let _ = write!(b, "<a href=\"{base}&amp;page={}\" rel=\"prev\">← previous</a> ", tp.page - 1);
        }
        if tp.page < tp.pages {
            let _ = write!(b, "<a href=\"{base}&amp;page={}\" rel=\"next\">next →</a>", tp.page + 1);
        }
        b.push_str("</nav>");
    }
    b.push_str("</section>");
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/runs/{eid}/delete\" class=\"confirm\" data-confirm=\"Delete this run?\">{}<button class=\"danger\">Delete run</button></form>",
        csrf_field(&st.csrf)
    );
    Ok(layout(&format!("Run {id}"), Nav::None, &st.csrf, &b))
}

fn valid_chart(name: &str) -> bool {
    name.strip_suffix(".svg")
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
}

/// `POST /runs/{id}/analyze`: writes `analysis.json` and the charts, then shows the run.
pub async fn analyze(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, WebError> {
    let dir = resolve_under(&st.conversations_dir(), &id)?;
    let run = id.clone();
    tokio::task::spawn_blocking(move || {
        let results = crate::analysis::load_run(&dir).map_err(|e| {
            tracing::warn!(%run, error = %e, "cannot analyse a run");
            WebError::Conflict(
                "this run's results.json is missing or damaged, so it cannot be analysed; the server log has the details"
                    .into(),
            )
        })?;
        let _lock = crate::fsutil::DirLock::acquire(&dir, "troupe serve (analysing the run)").map_err(|e| match e {
            crate::fsutil::LockError::Busy { .. } => {
                WebError::Conflict("another troupe process is using this run's folder; try again when it is done".into())
            }
            e => WebError::internal("analysing a run", e),
        })?;
        crate::analysis::save_analysis(&results, &dir, true).map_err(|e| WebError::internal("analysing a run", e))
    })
    .await
    .map_err(|e| WebError::internal("analysing a run", e))??;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// `GET /runs/{id}/export/{format}`: the run in one export format, as a download.
pub async fn export(
    State(st): State<AppState>,
    Path((id, format)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let dir = resolve_under(&st.conversations_dir(), &id)?;
    if !FORMATS.contains(&format.as_str()) {
        return Err(WebError::NotFound);
    }
    let (bytes, ext) = tokio::task::spawn_blocking(move || {
        let exporter = crate::export::exporter(&format).map_err(|_| WebError::NotFound)?;
        let results = crate::analysis::load_run(&dir).map_err(|_| WebError::NotFound)?;
        let analysis: ConversationAnalysis = std::fs::read(dir.join("analysis.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| crate::analysis::analyze_conversation(&results));
        let bytes = exporter.export(&results, &analysis).map_err(|e| WebError::internal("exporting a run", e))?;
        Ok::<_, WebError>((bytes, exporter.extension()))
    })
    .await
    .map_err(|e| WebError::internal("exporting a run", e))??;
    let ctype = match ext {
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        "csv" => "text/csv; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        _ => "text/markdown; charset=utf-8",
    };
    let disposition = format!("attachment; filename=\"{id}.{ext}\"");
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:".into(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /runs/{id}/charts/{name}.svg`: a chart, as an image (scripts inert under its policy).
pub async fn chart(State(st): State<AppState>, Path((id, name)): Path<(String, String)>) -> Result<Response, WebError> {
    let dir = resolve_under(&st.conversations_dir(), &id)?;
    if !valid_chart(&name) {
        return Err(WebError::NotFound);
    }
    let svg = tokio::fs::read(dir.join("charts").join(&name)).await.map_err(|_| WebError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"),
        ],
        svg,
    )
        .into_response())
}
