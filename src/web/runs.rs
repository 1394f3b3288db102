//! The Runs page: saved and live runs, experiments; deleting a run; an experiment's report files.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::error::WebError;
use super::results::{ResultsHead, read_head};
use super::security::{resolve_under, valid_id};
use super::state::AppState;
use super::templates::{Nav, csrf_field, duration, escape, page};

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
    let mut b = String::from("<h1>Runs</h1><p><a class=\"button\" href=\"/runs/new\">New run</a></p>");
    if let Some(n) = &st.notice {
        let _ = write!(b, "<p class=\"notice\">{}</p>", escape(n));
    }
    if rows.is_empty() {
        b.push_str("<p>No runs yet.</p>");
    } else {
        b.push_str(
            "<table class=\"runs\"><thead><tr><th>Run</th><th>Topic</th><th>Status</th><th>Started</th>\
             <th>Duration</th><th>Messages</th><th>Cost</th><th></th></tr></thead><tbody>",
        );
        for r in &rows {
            let running = r.live.as_ref().is_some_and(|l| l.is_running());
            let (status, topic, started, dur, msgs, cost) = match (&r.head, running) {
                (_, true) => {
                    let l = r.live.as_ref().map(|l| l.progress());
                    let msgs = l.as_ref().map(|p| p.messages).unwrap_or(0);
                    (
                        "running".to_string(),
                        String::new(),
                        String::new(),
                        String::new(),
                        msgs.to_string(),
                        String::new(),
                    )
                }
                (Some(h), false) => (
                    h.status_word().to_string(),
                    h.topic.clone(),
                    h.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    duration(h.metrics.duration),
                    h.metrics.total_messages.to_string(),
                    format!("${:.4}", h.metrics.cost_usd),
                ),
                (None, false) => {
                    let t: chrono::DateTime<chrono::Utc> = r.modified.into();
                    (
                        "incomplete".to_string(),
                        String::new(),
                        t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        String::new(),
                        String::new(),
                        String::new(),
                    )
                }
            };
            let id = escape(&r.id);
            let del = if running {
                String::new()
            } else {
                format!(
                    "<form method=\"post\" action=\"/runs/{id}/delete\" class=\"inline confirm\" data-confirm=\"Delete run {id}?\">{}<button class=\"danger\">Delete</button></form>",
                    csrf_field(&st.csrf)
                )
            };
            let _ = write!(
                b,
                "<tr><td><a href=\"/runs/{id}\">{id}</a></td><td>{}</td><td><span class=\"status {s}\">{s}</span></td>\
                 <td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{del}</td></tr>",
                escape(&topic),
                escape(&started),
                escape(&dur),
                escape(&msgs),
                escape(&cost),
                s = escape(&status),
            );
        }
        b.push_str("</tbody></table>");
    }
    let exps = list_dirs(&st.experiments_dir());
    b.push_str("<h2>Experiments</h2>");
    if exps.is_empty() {
        b.push_str("<p>No experiments yet (<code>troupe experiment</code>).</p>");
    } else {
        b.push_str("<ul class=\"experiments\">");
        for (id, _) in exps.iter().take(200) {
            let dir = st.experiments_dir().join(id);
            let links: Vec<String> = EXPERIMENT_FILES
                .iter()
                .filter(|f| dir.join(f).is_file())
                .map(|f| format!("<a href=\"/experiments/{}/{f}\">{f}</a>", escape(id)))
                .collect();
            let _ = write!(b, "<li><strong>{}</strong> {}</li>", escape(id), links.join(" · "));
        }
        b.push_str("</ul>");
    }
    Ok(page("Runs", Nav::Runs, &st.csrf, &b))
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
