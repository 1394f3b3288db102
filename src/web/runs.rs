//! The Runs page: saved and live runs, experiments; deleting a run; an experiment's report files.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::error::WebError;
use super::results::{ResultsHead, read_head};
use super::security::{resolve_under, valid_id};
use super::state::AppState;
use super::templates::{Nav, csrf_field, duration, page};

/// Files of an experiment folder the app serves.
const EXPERIMENT_FILES: [&str; 4] = ["report.html", "report.md", "summary.json", "extraction.json"];

struct Row {
    id: String,
    modified: std::time::SystemTime,
    head: Option<ResultsHead>,
    live: Option<std::sync::Arc<super::live::LiveRun>>,
}

fn list_dirs(base: &std::path::Path) -> Vec<(String, std::time::SystemTime)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(base) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() && valid_id(&name) {
                out.push((name, meta.modified().unwrap_or(std::time::UNIX_EPOCH)));
            }
        }
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    out
}

/// `GET /`: the runs and experiments.
pub async fn index(State(st): State<AppState>) -> Result<Html<String>, WebError> {
    let st2 = st.clone();
    let rows = tokio::task::spawn_blocking(move || {
        list_dirs(&st2.conversations_dir())
            .into_iter()
            .take(500)
            .map(|(id, modified)| Row {
                head: read_head(&st2.conversations_dir().join(&id)),
                live: st2.live_run(&id),
                id,
                modified,
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| WebError::internal("listing runs", e))?;
    let exps: Vec<(String, Vec<&str>)> = list_dirs(&st.experiments_dir())
        .into_iter()
        .take(200)
        .map(|(id, _)| {
            let dir = st.experiments_dir().join(&id);
            let files = EXPERIMENT_FILES.iter().copied().filter(|f| dir.join(f).is_file()).collect();
            (id, files)
        })
        .collect();
    let body = html! {
        h1 { "Runs" }
        p { a.button href="/runs/new" { "New run" } }
        @if let Some(n) = &st.notice { p.notice { (n) } }
        @if rows.is_empty() { p { "No runs yet." } } @else { (runs_table(&st.csrf, &rows)) }
        h2 { "Experiments" }
        @if exps.is_empty() {
            p { "No experiments yet (" code { "troupe experiment" } ")." }
        } @else {
            ul.experiments {
                @for (id, files) in &exps {
                    li {
                        strong { (id) } " "
                        @for (i, f) in files.iter().enumerate() {
                            @if i > 0 { " · " }
                            a href=(format!("/experiments/{id}/{f}")) { (f) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Runs", Nav::Runs, &st.csrf, body))
}

/// A row's cells as the table shows them: status, topic, start, duration, messages, cost.
fn cells(r: &Row, running: bool) -> [String; 6] {
    match (&r.head, running) {
        (_, true) => {
            let msgs = r.live.as_ref().map(|l| l.progress().messages).unwrap_or(0);
            ["running".into(), String::new(), String::new(), String::new(), msgs.to_string(), String::new()]
        }
        (Some(h), false) => [
            h.status_word().to_string(),
            h.topic.clone(),
            h.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            duration(h.metrics.duration),
            h.metrics.total_messages.to_string(),
            format!("${:.4}", h.metrics.counts.cost_usd),
        ],
        (None, false) => {
            let t: chrono::DateTime<chrono::Utc> = r.modified.into();
            let started = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
            ["incomplete".into(), String::new(), started, String::new(), String::new(), String::new()]
        }
    }
}

/// The runs, newest first; a run that is not going can be deleted from its row.
fn runs_table(csrf: &str, rows: &[Row]) -> Markup {
    html! {
        table.runs {
            thead {
                tr {
                    @for h in ["Run", "Topic", "Status", "Started", "Duration", "Messages", "Cost", ""] { th { (h) } }
                }
            }
            tbody {
                @for r in rows {
                    @let running = r.live.as_ref().is_some_and(|l| l.is_running());
                    @let [status, topic, started, dur, msgs, cost] = cells(r, running);
                    tr {
                        td { a href=(format!("/runs/{}", r.id)) { (r.id) } }
                        td { (topic) }
                        td { span class=(format!("status {status}")) { (status) } }
                        td { (started) }
                        td { (dur) }
                        td.num { (msgs) }
                        td.num { (cost) }
                        td {
                            @if !running {
                                form method="post" action=(format!("/runs/{}/delete", r.id)) class="inline confirm"
                                    data-confirm=(format!("Delete run {}?", r.id)) {
                                    (csrf_field(csrf))
                                    button.danger { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /runs/{id}/delete`: removes a saved run's folder (not a running one).
pub async fn delete(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, WebError> {
    let dir = resolve_under(&st.conversations_dir(), &id)?;
    if st.live_run(&id).is_some_and(|l| l.is_running()) {
        return Err(WebError::Conflict("the run is still going; cancel it first".into()));
    }
    // A folder another process owns (a `troupe resume` in a terminal, say) is left alone.
    let lock = crate::fsutil::DirLock::acquire(&dir, "troupe serve (deleting the run)").map_err(|e| match e {
        crate::fsutil::LockError::Busy { .. } => {
            WebError::Conflict("another troupe process is using this run's folder; try again when it is done".into())
        }
        e => WebError::internal("deleting a run", e),
    })?;
    tokio::fs::remove_dir_all(&dir).await.map_err(|e| WebError::internal("deleting a run", e))?;
    drop(lock);
    st.remove_run(&id);
    tracing::info!(run = %id, "run deleted from the web app");
    Ok(Redirect::to("/").into_response())
}

/// `GET /experiments/{id}/{file}`: one of an experiment's report files.
pub async fn experiment_file(
    State(st): State<AppState>,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let dir = resolve_under(&st.experiments_dir(), &id)?;
    let Some(name) = EXPERIMENT_FILES.iter().find(|f| **f == file) else {
        return Err(WebError::NotFound);
    };
    let bytes = tokio::fs::read(dir.join(name)).await.map_err(|_| WebError::NotFound)?;
    let ctype = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    };
    // The report is our own escaped export; the sandbox keeps any script in it inert anyway.
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
        ],
        bytes,
    )
        .into_response())
}
