//! The security layer: the access token (when bound beyond loopback), a Host check against DNS
//! rebinding (on loopback without a token), CSRF on every state-changing request, security
//! headers on every response, and run-id validation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;

use super::error::WebError;
use super::state::AppState;
use super::templates::bare_page;

/// The cookie holding the access token after a `?token=` login.
pub const TOKEN_COOKIE: &str = "troupe_token";
/// The header a script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field a page sends the CSRF token in.
pub const CSRF_FIELD: &str = "csrf";

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True for run and experiment ids: 1 to 128 of `[A-Za-z0-9_-]` (so no `..`, `/` or `\`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `base/id` for a valid id whose folder exists and is a real folder (not a link out).
pub fn resolve_under(base: &Path, id: &str) -> Result<PathBuf, WebError> {
    if !valid_id(id) {
        return Err(WebError::NotFound);
    }
    let dir = base.join(id);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        _ => Err(WebError::NotFound),
    }
}

/// A static asset with a content type.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The login page: a form that sends the token as `?token=` (which sets the cookie).
pub async fn login_page() -> Html<String> {
    bare_page(
        "Log in · troupe",
        html! {
            h1 { "troupe" }
            p { "This server was started with an access token; it was printed when the server started." }
            form method="get" action="/" {
                label {
                    "Access token "
                    input name="token" type="password" autocomplete="current-password" required;
                }
                " "
                button { "Log in" }
            }
        },
    )
}

/// Not used by the router (logging in is a GET with `?token=`); kept so `/login` answers POSTs
/// with a clear message rather than 405.
pub async fn login() -> WebError {
    WebError::BadRequest("log in with GET /login?token=TOKEN".into())
}

/// The middleware: checks the request, then adds the security headers to whatever answers.
pub async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = match check(&st, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn check(st: &AppState, req: Request, next: Next) -> Result<Response, WebError> {
    if st.access_token.is_none()
        && let Some(host) = req.headers().get(header::HOST)
        && !loopback_host(host.to_str().unwrap_or(""))
    {
        // Without a token only loopback names are served: a page elsewhere cannot rebind its
        // own name to 127.0.0.1 and read ours.
        return Err(WebError::Forbidden(
            "without an access token this server answers to loopback addresses (127.0.0.0/8, ::1) and localhost only",
        ));
    }
    // A body larger than the limit is refused on its declaration, before any of it is read.
    if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .is_some_and(|n| n > super::BODY_LIMIT as u64)
    {
        return Err(WebError::TooLarge);
    }
    let path = req.uri().path().to_string();
    let exempt = path == "/login" || path.starts_with("/assets/");
    if let (Some(token), false) = (&st.access_token, exempt) {
        if let Some(q) = query_param(req.uri().query().unwrap_or(""), "token") {
            if req.method() != Method::GET || !same_secret(&q, token) {
                return Err(WebError::Unauthorized);
            }
            // Set the cookie and drop the token from the address bar (and the history).
            let to = if path == "/login" { "/" } else { local_redirect(&path) };
            let mut resp = Redirect::to(to).into_response();
            let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            resp.headers_mut()
                .insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|_| WebError::Unauthorized)?);
            return Ok(resp);
        }
        if !presented_token(req.headers()).is_some_and(|t| same_secret(&t, token)) {
            return Err(WebError::Unauthorized);
        }
    } else if exempt && path == "/login" && st.access_token.is_none() {
        return Ok(Redirect::to("/").into_response());
    }
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return Ok(next.run(req).await);
    }
    // Every other method changes state: it must carry the CSRF token.
    let header_ok =
        req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|v| same_secret(v, &st.csrf));
    if header_ok {
        return Ok(next.run(req).await);
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(WebError::Forbidden("missing CSRF token"));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, super::BODY_LIMIT).await.map_err(|e| {
        if caused_by_timeout(&e) {
            WebError::Timeout
        } else {
            WebError::BadRequest("the request body is too large or unreadable".into())
        }
    })?;
    let form = std::str::from_utf8(&bytes).unwrap_or("");
    if !query_param(form, CSRF_FIELD).is_some_and(|v| same_secret(&v, &st.csrf)) {
        return Err(WebError::Forbidden("missing or wrong CSRF token; reload the page and try again"));
    }
    Ok(next.run(Request::from_parts(parts, Body::from(bytes))).await)
}

/// `path` when a browser would read it as a path on this server, else `/`: it starts with
/// one `/` not followed by another or by `\` (browsers read both `//host` and `/\host` as
/// another server), before and after percent-decoding, and holds no `\` and no control
/// character (browsers drop tabs and newlines from addresses, so `/\t/host` is `//host`).
pub fn local_redirect(path: &str) -> &str {
    let local = |p: &str| p.starts_with('/') && !p[1..].starts_with(['/', '\\']);
    let decoded = percent_decode(path);
    let plain = |p: &str| !p.chars().any(|c| c == '\\' || c.is_control());
    if local(path) && local(&decoded) && plain(path) && plain(&decoded) { path } else { "/" }
}

/// True when the body timeout (tower-http's) is somewhere in the error's chain.
fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The token a request carries: `Authorization: Bearer`, `X-Troupe-Token`, or the cookie.
fn presented_token(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    if let Some(v) = h.get("x-troupe-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    for v in h.get_all(header::COOKIE) {
        for part in v.to_str().unwrap_or("").split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == TOKEN_COOKIE
            {
                return Some(val.to_string());
            }
        }
    }
    None
}

/// True for every loopback address: all of 127.0.0.0/8, `::1`, and 127.x mapped into IPv6.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// True for a Host header naming this machine by a loopback address or `localhost`: names a
/// page elsewhere could rebind to 127.0.0.1 are refused.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(n, _)| n).unwrap_or(host),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// The first value of `key` in a query string or form body, percent-decoded.
pub fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain-text response with a status (for small API answers).
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_leave_the_folder() {
        for bad in ["..", "../etc", "a/b", "a\\b", "", ".", "a b", "%2e%2e", &"x".repeat(200)] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert!(valid_id("quickstart-20261125T134051Z-e1f6"));
    }

    #[test]
    fn decoding_and_hosts() {
        assert_eq!(percent_decode("a+b%26c%2"), "a b&c%2");
        assert_eq!(query_param("x=1&csrf=ab%20c", "csrf").as_deref(), Some("ab c"));
        assert!(loopback_host("127.0.0.1:8080") && loopback_host("localhost") && loopback_host("[::1]:80"));
        assert!(!loopback_host("evil.example:8080") && !loopback_host("127.0.0.1.evil.example"));
        for host in ["127.0.0.2:8080", "127.255.255.254", "[::ffff:127.0.0.9]:1", "LocalHost:3000"] {
            assert!(loopback_host(host), "{host}");
        }
        for host in ["128.0.0.1", "0.0.0.0:80", "[::2]:80", "[::ffff:10.0.0.1]", "127.1", "localhost.evil.example", ""]
        {
            assert!(!loopback_host(host), "{host}");
        }
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }

    #[test]
    fn redirects_stay_on_this_server() {
        for ok in ["/", "/runs/new", "/runs/a-b_c", "/settings"] {
            assert_eq!(local_redirect(ok), ok);
        }
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "/%2Fevil.example",
            "/%5Cevil.example",
            "/%2f%2fevil.example",
            "/%09/evil.example",
            "/\t/evil.example",
            "https://evil.example",
            "evil.example",
            "",
        ] {
            assert_eq!(local_redirect(bad), "/", "{bad}");
        }
    }
}
