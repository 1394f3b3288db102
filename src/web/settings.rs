//! The Settings page: the merged configuration with where each value came from (secrets
//! redacted), `troupe doctor`'s checks on demand (a POST: they call the provider), and a debug
//! view of the recent log lines.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;

use crate::doctor::{Check, DoctorOptions, run_checks};

use super::error::WebError;
use super::state::AppState;
use super::templates::{Nav, csrf_field, escape, page as layout};

/// `?debug=1` shows the log.
#[derive(Debug, Default, Deserialize)]
pub struct SettingsQuery {
    debug: Option<u8>,
}

/// `GET /settings`: never runs the checks (the provider check is a paid call), only offers them.
pub async fn page(State(st): State<AppState>, Query(q): Query<SettingsQuery>) -> Result<Html<String>, WebError> {
    Ok(render(&st, q.debug == Some(1), None))
}

/// `POST /settings/doctor` (with the CSRF token, like every POST): runs `troupe doctor`'s checks
/// and shows them on the page.
pub async fn doctor(State(st): State<AppState>, Query(q): Query<SettingsQuery>) -> Result<Html<String>, WebError> {
    let checks = run_checks(&st.loaded, &DoctorOptions::for_config(st.config())).await;
    Ok(render(&st, q.debug == Some(1), Some(&checks)))
}

fn render(st: &AppState, debug: bool, checks: Option<&[Check]>) -> Html<String> {
    let mut b = String::from("<h1>Settings</h1>");
    let _ = write!(
        b,
        "<p>Provider: <strong>{}</strong>{} · access token: {} · runs share the provider's budgets.</p>",
        escape(st.provider.name()),
        st.notice.as_ref().map(|n| format!(" <span class=\"notice\">{}</span>", escape(n))).unwrap_or_default(),
        if st.access_token.is_some() { "required" } else { "not required (loopback only)" },
    );
    b.push_str("<section><h2>Health (troupe doctor)</h2>");
    if let Some(checks) = checks {
        b.push_str("<table id=\"doctor\"><thead><tr><th>Check</th><th>Status</th><th>Detail</th></tr></thead><tbody>");
        for c in checks {
            let _ = write!(
                b,
                "<tr><td>{}</td><td><span class=\"status {s}\">{s}</span></td><td>{}</td></tr>",
                escape(&c.name),
                escape(&c.detail),
                s = c.status.as_str()
            );
        }
        b.push_str("</tbody></table>");
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/settings/doctor{}\">{}<button id=\"run-doctor\">{}</button> \
         <span class=\"hint\">The provider check sends one 1-token request.</span></form>",
        if debug { "?debug=1" } else { "" },
        csrf_field(&st.csrf),
        if checks.is_some() { "Run the checks again" } else { "Run the checks" },
    );
    b.push_str("</section><section><h2>Debug</h2>");
    if debug {
        b.push_str("<p><a href=\"/settings\" id=\"debug-toggle\">Hide the log</a></p><pre class=\"log\" id=\"log\">");
        for line in st.logs.lines().iter().rev().take(300).rev() {
            b.push_str(&escape(line));
            b.push('\n');
        }
        b.push_str("</pre>");
    } else {
        b.push_str("<p><a href=\"/settings?debug=1\" id=\"debug-toggle\">Show the recent log lines</a></p>");
    }
    b.push_str("</section><section><h2>Configuration</h2><table class=\"config\"><thead><tr><th>Key</th><th>Value</th><th>From</th></tr></thead><tbody>");
    for e in st.loaded.entries() {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&e.key),
            escape(&e.value),
            escape(&e.source)
        );
    }
    b.push_str("</tbody></table>");
    for n in &st.loaded.notes {
        let _ = write!(b, "<p class=\"notice\">{}</p>", escape(n));
    }
    b.push_str("</section>");
    layout("Settings", Nav::Settings, &st.csrf, &b)
}
