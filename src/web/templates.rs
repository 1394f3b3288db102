//! The page layout and HTML escaping. Every piece of user, persona or transcript text goes
//! through [`escape`] before it reaches a page.

use std::fmt::Write;

use axum::response::Html;

/// Escapes text for HTML element content and quoted attribute values (the exporters' escaping,
/// so pages and the HTML export treat text the same way).
pub use crate::export::escape_html as escape;

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The pages in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Runs list.
    Runs,
    /// New run form.
    NewRun,
    /// Persona builder.
    Personas,
    /// Settings.
    Settings,
    /// A run's page (no tab highlighted).
    None,
}

/// A whole page: head (the CSRF token in a meta tag for the script), navigation, `body`.
pub fn page(title: &str, nav: Nav, csrf: &str, body: &str) -> Html<String> {
    let tab = |n: Nav, href: &str, label: &str| {
        let cur = if n == nav { " aria-current=\"page\"" } else { "" };
        format!("<a href=\"{href}\"{cur}>{label}</a>")
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"csrf-token\" content=\"{csrf}\">\
<title>{title} · troupe</title><link rel=\"stylesheet\" href=\"/assets/app.css\">\
<script src=\"/assets/app.js\" defer></script></head><body>\
<header><strong class=\"brand\">troupe</strong><nav>{}{}{}{}</nav></header>\
<main>{body}</main></body></html>",
        tab(Nav::Runs, "/", "Runs"),
        tab(Nav::NewRun, "/runs/new", "New run"),
        tab(Nav::Personas, "/personas", "Personas"),
        tab(Nav::Settings, "/settings", "Settings"),
        csrf = escape(csrf),
        title = escape(title),
    ))
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", escape(csrf))
}

/// Seconds as "1.2 s" or "3 min 4 s".
pub fn duration(s: f64) -> String {
    if s < 60.0 { format!("{s:.1} s") } else { format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;"
        );
        assert_eq!(url_encode("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }
}
