//! The Settings page: the merged configuration with where each value came from (secrets
//! redacted), `troupe doctor`'s checks on demand (a POST: they call the provider), and a debug
//! view of the recent log lines.

use axum::extract::{Query, State};
use axum::response::Html;
use maud::{Markup, html};
use serde::Deserialize;

use crate::doctor::{Check, DoctorOptions, run_checks};

use super::error::WebError;
use super::state::AppState;
use super::templates::{Nav, csrf_field, page as layout};

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
    let token = if st.access_token.is_some() { "required" } else { "not required (loopback only)" };
    let body = html! {
        h1 { "Settings" }
        p {
            "Provider: " strong { (st.provider.name()) }
            @if let Some(n) = &st.notice { " " span.notice { (n) } }
            " · access token: " (token) " · runs share the provider's budgets."
        }
        section {
            h2 { "Health (troupe doctor)" }
            @if let Some(checks) = checks { (doctor_table(checks)) }
            form method="post" action=(if debug { "/settings/doctor?debug=1" } else { "/settings/doctor" }) {
                (csrf_field(&st.csrf))
                button #run-doctor { (if checks.is_some() { "Run the checks again" } else { "Run the checks" }) }
                " "
                span.hint { "The provider check sends one 1-token request." }
            }
        }
        section {
            h2 { "Debug" }
            @if debug {
                p { a href="/settings" #debug-toggle { "Hide the log" } }
                pre.log #log { @for line in st.logs.lines().iter().rev().take(300).rev() { (line) "\n" } }
            } @else {
                p { a href="/settings?debug=1" #debug-toggle { "Show the recent log lines" } }
            }
        }
        section {
            h2 { "Configuration" }
            table.config {
                thead { tr { th { "Key" } th { "Value" } th { "From" } } }
                tbody {
                    @for e in st.loaded.entries() {
                        tr { td { code { (e.key) } } td { code { (e.value) } } td { (e.source) } }
                    }
                }
            }
            @for n in &st.loaded.notes { p.notice { (n) } }
        }
    };
    layout("Settings", Nav::Settings, &st.csrf, body)
}

/// `troupe doctor`'s checks, one row each.
fn doctor_table(checks: &[Check]) -> Markup {
    html! {
        table #doctor {
            thead { tr { th { "Check" } th { "Status" } th { "Detail" } } }
            tbody {
                @for c in checks {
                    @let s = c.status.as_str();
                    tr { td { (c.name) } td { span class=(format!("status {s}")) { (s) } } td { (c.detail) } }
                }
            }
        }
    }
}
