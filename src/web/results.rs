//! The Results page (transcript with persona filter, search and pages; analysis and charts;
//! metrics; export downloads) and, while a run goes on, the Live page in its place.

use std::path::Path as FsPath;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use crate::analysis::ConversationAnalysis;
use crate::record::results::{AgentInfo, ResultsConfig, ResultsMetrics};
use crate::record::transcript::{StopReason, TranscriptEntry};

use super::error::{WebError, scrub_paths};
use super::security::resolve_under;
use super::state::AppState;
use super::templates::{Nav, csrf_field, duration, page as layout, url_encode};

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

/// Transcript entries, each tagged with its speaker's id for the persona filter.
pub fn transcript_list(entries: &[TranscriptEntry]) -> Markup {
    html! {
        ol.transcript {
            @for e in entries {
                li.msg data-speaker=(e.speaker_id) {
                    div.meta {
                        span.turn { "turn " (e.turn) } " "
                        strong.speaker { (e.speaker) } " "
                        span.role { (e.role) }
                        @if let Some(to) = &e.to { " → " (to) }
                    }
                    p.text { (e.text) }
                }
            }
        }
    }
}

/// What the Results page shows, read from the run's folder.
struct RunView {
    head: Option<ResultsHead>,
    page: TranscriptPage,
    analysis: Option<ConversationAnalysis>,
    charts: Vec<String>,
}

fn read_view(dir: &FsPath, q: &TranscriptQuery) -> RunView {
    let analysis = std::fs::read(dir.join("analysis.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let mut charts: Vec<String> = std::fs::read_dir(dir.join("charts"))
        .map(|rd| {
            rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| valid_chart(n)).collect()
        })
        .unwrap_or_default();
    charts.sort();
    RunView { head: read_head(dir), page: transcript_page(dir, q), analysis, charts }
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
    let (view, q) = tokio::task::spawn_blocking(move || (read_view(&dir, &q), q))
        .await
        .map_err(|e| WebError::internal("reading a run", e))?;
    let body = html! {
        h1 { "Run " code { (id) } }
        @match &view.head {
            Some(h) => (summary(h)),
            None => p.notice {
                "This run has no results.json: it was interrupted. "
                code { "troupe resume" } " can continue it; its transcript so far is below."
            },
        }
        (analysis_section(&st.csrf, &id, &view))
        @if view.head.is_some() {
            section {
                h2 { "Export" }
                p.exports {
                    @for f in FORMATS { a.button href=(format!("/runs/{id}/export/{f}")) download { (f) } " " }
                }
            }
        }
        (transcript_section(&id, &view, &q))
        form method="post" action=(format!("/runs/{id}/delete")) class="confirm" data-confirm="Delete this run?" {
            (csrf_field(&st.csrf))
            button.danger { "Delete run" }
        }
    };
    Ok(layout(&format!("Run {id}"), Nav::None, &st.csrf, body))
}

/// The run's status line, its notice and error, and its headline figures.
fn summary(h: &ResultsHead) -> Markup {
    let m = &h.metrics;
    let s = h.status_word();
    html! {
        p.lead {
            span class=(format!("status {s}")) { (s) } " "
            (h.scenario) " · " em { (h.topic) } " · " (h.provider) " · "
            (h.completed_turns) " turn(s) of " (h.config.turns)
        }
        @if let Some(n) = &h.notice { p.notice { (n) } }
        @if let Some(e) = &h.error { p.error { (scrub_paths(e)) } }
        section {
            h2 { "Metrics" }
            dl.metrics {
                dt { "Duration" } dd { (duration(m.duration)) }
                dt { "Messages" } dd { (m.total_messages) }
                dt { "API calls" } dd { (m.counts.api_calls) }
                dt { "Errors" } dd { (m.counts.errors) }
                dt { "Retries" } dd { (m.counts.retries) }
                dt { "Tokens" } dd { (m.counts.total_tokens) " (" (m.counts.prompt_tokens) " in, " (m.counts.completion_tokens) " out)" }
                dt { "Cost" } dd { (format!("${:.4}", m.counts.cost_usd)) }
                dt { "Latency p50 / p99" }
                dd { (format!("{:.0} / {:.0} ms", m.latency_p50 * 1000.0, m.latency_p99 * 1000.0)) }
                dt { "Throughput" } dd { (format!("{:.1} msg/min", m.throughput_per_min)) }
            }
        }
    }
}

/// The analysis summary and charts, or a button that makes them.
fn analysis_section(csrf: &str, id: &str, view: &RunView) -> Markup {
    html! {
        section {
            h2 { "Analysis" }
            @match &view.analysis {
                Some(a) => {
                    ul.summary { @for line in crate::analysis::summary_lines(a) { li { (line) } } }
                    div.charts {
                        @for c in &view.charts {
                            figure { img src=(format!("/runs/{id}/charts/{c}")) alt=(c); }
                        }
                    }
                },
                None if view.head.is_some() => form method="post" action=(format!("/runs/{id}/analyze")) {
                    (csrf_field(csrf))
                    button { "Analyse this run" }
                },
                None => p { "Analysis needs a finished run." },
            }
        }
    }
}

/// The transcript page with its persona filter, search and page links.
fn transcript_section(id: &str, view: &RunView, q: &TranscriptQuery) -> Markup {
    let agents = view.head.as_ref().map(|h| h.agents.as_slice()).unwrap_or_default();
    let options = agents.iter().map(|a| (a.id.as_str(), a.name.as_str())).chain([("moderator", "Moderator")]);
    let cur = q.persona.as_deref().unwrap_or("");
    let search = q.q.as_deref().unwrap_or("");
    let tp = &view.page;
    let link = |page: usize| format!("/runs/{id}?persona={}&q={}&page={page}", url_encode(cur), url_encode(search));
    html! {
        section {
            h2 { "Transcript" }
            form method="get" action=(format!("/runs/{id}")) class="filters" {
                label {
                    "Persona "
                    select name="persona" {
                        option value="" { "everyone" }
                        @for (value, name) in options { option value=(value) selected[value == cur] { (name) } }
                    }
                }
                " "
                label { "Search " input type="search" name="q" value=(search); }
                " "
                button { "Filter" }
            }
            p.count { (tp.matching) " message(s) · page " (tp.page) " of " (tp.pages) }
            (transcript_list(&tp.entries))
            @if tp.pages > 1 {
                nav.pages {
                    @if tp.page > 1 { a href=(link(tp.page - 1)) rel="prev" { "← previous" } " " }
                    @if tp.page < tp.pages { a href=(link(tp.page + 1)) rel="next" { "next →" } }
                }
            }
        }
    }
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
