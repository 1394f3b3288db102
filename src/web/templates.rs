//! The pieces every page shares: the layout (head with the CSRF token, navigation), the CSRF
//! field, the bare page of errors and the login, and small formatting helpers.
//!
//! Pages are `maud` templates, like the HTML export and the experiment report. maud rather than
//! a file-based engine (askama, tera): the markup is Rust, checked when the crate compiles, with
//! no template folder beside `src/`; every value is HTML-escaped unless a template marks it
//! `PreEscaped` (no page does); and a partial is a plain function returning [`Markup`]. One
//! template per page, in the page's own file; the shared partials are here.

use std::fmt::Write;

use axum::response::Html;
use maud::{DOCTYPE, Markup, html};

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

/// The navigation bar, the current page's tab marked for assistive technology and the style.
fn navigation(current: Nav) -> Markup {
    const TABS: [(Nav, &str, &str); 4] = [
        (Nav::Runs, "/", "Runs"),
        (Nav::NewRun, "/runs/new", "New run"),
        (Nav::Personas, "/personas", "Personas"),
        (Nav::Settings, "/settings", "Settings"),
    ];
    html! {
        nav {
            @for (tab, href, label) in TABS {
                a href=(href) aria-current=[(tab == current).then_some("page")] { (label) }
            }
        }
    }
}

/// A whole page: head (the CSRF token in a meta tag for the script), navigation, `body`.
pub fn page(title: &str, nav: Nav, csrf: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(csrf);
                title { (title) " · troupe" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header { strong.brand { "troupe" } (navigation(nav)) }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// A page without navigation or script: error pages and the login form, which are shown
/// before (or instead of) the app.
pub fn bare_page(title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                link rel="stylesheet" href="/assets/app.css";
            }
            body { main { (body) } }
        }
    };
    Html(markup.into_string())
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// The provider choice of a form: the server's configured provider, or the simulated one
/// (`simulated` says what it gives on that page).
pub fn provider_select(configured: &str, simulated: &str) -> Markup {
    html! {
        label {
            "Provider "
            select name="provider" {
                option value="configured" { "configured (" (configured) ")" }
                option value="simulated" { (simulated) }
            }
        }
    }
}

/// Seconds as "1.2 s" or "3 min 4 s".
pub fn duration(s: f64) -> String {
    if s < 60.0 { format!("{s:.1} s") } else { format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_escapes_what_it_is_given() {
        let hostile = "<script>alert(1)</script>\"'&";
        let Html(p) = page(hostile, Nav::Runs, hostile, html! { p { (hostile) } });
        assert!(!p.contains("<script>alert"), "{p}");
        let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;";
        assert_eq!(p.matches(escaped).count(), 3, "title, CSRF meta and body: {p}");
        assert!(p.contains("<a href=\"/\" aria-current=\"page\">Runs</a>"), "{p}");
        assert_eq!(p.matches("aria-current").count(), 1);
        assert_eq!(url_encode("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }
}
