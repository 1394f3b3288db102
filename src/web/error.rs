//! The web app's error type: what the user is told, never the internals (paths, OS errors and
//! causes go to the log).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::templates::bare_page;

/// An error a handler returns; it becomes a small HTML page with the right status.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No such run, persona or file.
    #[error("not found")]
    NotFound,
    /// The request is malformed or asks for something impossible; the message is shown.
    #[error("{0}")]
    BadRequest(String),
    /// The access token is missing or wrong.
    #[error("an access token is required")]
    Unauthorized,
    /// A POST without the right CSRF token, or a Host that is not this server.
    #[error("forbidden")]
    Forbidden(&'static str),
    /// The request conflicts with the state (deleting a run that is still going).
    #[error("{0}")]
    Conflict(String),
    /// The declared body is larger than [`super::BODY_LIMIT`].
    #[error("request too large")]
    TooLarge,
    /// The body stopped arriving for longer than the body timeout.
    #[error("request timeout")]
    Timeout,
    /// As many runs as the limit allows are going already.
    #[error("too many runs")]
    TooManyRuns {
        /// Runs going.
        running: usize,
        /// `--max-runs`.
        limit: usize,
    },
    /// Anything else: logged in full, shown as a generic message.
    #[error("internal error")]
    Internal(String),
}

impl WebError {
    /// An internal error, logged with its cause.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        WebError::Internal(format!("{context}: {e}"))
    }

    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Timeout => StatusCode::REQUEST_TIMEOUT,
            WebError::TooManyRuns { .. } => StatusCode::TOO_MANY_REQUESTS,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let shown = match &self {
            WebError::Internal(detail) => {
                // The detail (paths, OS errors) stays in the log.
                tracing::error!(%detail, "web request failed");
                "Something went wrong on the server; the log has the details.".to_string()
            }
            WebError::Forbidden(why) => format!("Forbidden: {why}."),
            WebError::Unauthorized => {
                "This server needs its access token: open the address printed at start (it ends in ?token=...), or send the header Authorization: Bearer TOKEN.".into()
            }
            WebError::TooLarge => format!(
                "The request is larger than this server accepts ({} MiB).",
                super::BODY_LIMIT / (1024 * 1024)
            ),
            WebError::Timeout => {
                "The request stopped arriving before it was complete; send it again.".into()
            }
            WebError::TooManyRuns { running, limit } => format!(
                "{running} {} going, as many as this server runs at once ({limit}). Wait for one to finish \
                 or cancel one, then start this one again; to allow more, restart the server with \
                 `troupe serve --max-runs N`.",
                if *running == 1 { "run is" } else { "runs are" }
            ),
            other => {
                let full = other.to_string();
                let shown = scrub_paths(&full);
                if shown != full {
                    tracing::info!(detail = %full, "request refused (paths left out of the page)");
                }
                shown
            }
        };
        let code = status.as_u16().to_string();
        let body = html! {
            h1 { (code) }
            p.error { (shown) }
            p { a href="/" { "Runs" } }
        };
        let mut resp = (status, bare_page(&code, body)).into_response();
        if matches!(self, WebError::TooManyRuns { .. }) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        }
        resp
    }
}

/// `text` with every absolute filesystem path cut to its last part (`/srv/out/run/results.json`
/// becomes `results.json`; a `:line:col` after it stays): for messages shown in pages, where
/// the server keeps its files is none of the browser's business. A path is a run of non-space
/// characters after a space, a quote, `(`, `[`, `=` or `,` that starts with `/`, `~/` or a
/// drive (`C:\`) and holds one more separator (so `/login` stays).
pub fn scrub_paths(text: &str) -> String {
    let b = text.as_bytes();
    let ends_path = |c: u8| c.is_ascii_whitespace() || b"'\"`()[]<>,;:".contains(&c);
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        let after_gap = i == 0 || b[i - 1].is_ascii_whitespace() || b"'\"`([=,".contains(&b[i - 1]);
        let head = match (b[i], b.get(i + 1), b.get(i + 2)) {
            (b'/', _, _) => 1,
            (b'~', Some(b'/'), _) => 2,
            (d, Some(b':'), Some(b'\\' | b'/')) if d.is_ascii_alphabetic() => 3,
            _ => 0,
        };
        if !after_gap || head == 0 {
            i += 1;
            continue;
        }
        let end = b[i + head..].iter().position(|&c| ends_path(c)).map_or(b.len(), |n| i + head + n);
        let path = &text[i..end];
        if path[head..].contains(['/', '\\']) {
            let name = path.trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next().unwrap_or("");
            out.push_str(&text[copied..i]);
            out.push_str(name);
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cut_to_their_last_part() {
        for (text, want) in [
            (
                "cannot read the run at /tmp/x/out/conversations/r: /tmp/x/out/conversations/r/results.json:1:2: bad",
                "cannot read the run at r: results.json:1:2: bad",
            ),
            ("personas file '/home/ana/data/personas.json' (line 3)", "personas file 'personas.json' (line 3)"),
            ("see ~/.troupe/secrets.toml, or C:\\Users\\ana\\troupe.toml", "see secrets.toml, or troupe.toml"),
            ("a folder /srv/out/ is full", "a folder out is full"),
            ("log in with GET /login?token=TOKEN", "log in with GET /login?token=TOKEN"),
            ("http://127.0.0.1:8080/runs/x and a/b/c and 1/2", "http://127.0.0.1:8080/runs/x and a/b/c and 1/2"),
            ("/", "/"),
            ("", ""),
            ("émoji /ü/ñ/ß.json ok", "émoji ß.json ok"),
        ] {
            assert_eq!(scrub_paths(text), want, "{text}");
        }
    }
}
