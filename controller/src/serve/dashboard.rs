//! The dashboard at `/`: one static page (HTML, CSS and vanilla JS embedded
//! in the binary with `include_str!`, no build step, nothing loaded from
//! elsewhere) that reads and acts through the `/v1` API.
//!
//! Sign-in: the page sits behind the API token. A browser presents it as the
//! `drove_token` cookie (which [`super::auth`] accepts like a bearer token),
//! set by the login form (`POST /login`) or by opening `/?token=...` (the
//! link `drove demo` prints), which sets the cookie and redirects to `/` so
//! the token leaves the address bar and history. Without a valid token `/`
//! answers 401 with the login page and no data; the page itself holds no
//! data either: everything it shows comes from authenticated API calls.
//!
//! The cookie is `HttpOnly` (page scripts cannot read it) and
//! `SameSite=Strict` (the browser does not send it on requests started by
//! another site, so another site cannot make a signed-in browser pause a
//! queue or retry a job: CSRF). "Same site" is looser than "same origin"
//! (another port on the same host is the same site), so [`super::auth`]
//! also requires cookie-authenticated writes to say
//! `Content-Type: application/json`, which an HTML form cannot send and a
//! cross-origin script can only send after a CORS preflight that this
//! server never grants. The page sends every action that way.
//!
//! Assets and pages carry a Content-Security-Policy allowing only this
//! origin's script and style, so a job's error text shown on the page can
//! never run as script (the page also inserts all data as text, not HTML).

use axum::Form;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::auth;
use super::state::AppState;

const PAGE: &str = include_str!("dashboard/index.html");
const LOGIN: &str = include_str!("dashboard/login.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Name of the cookie holding the API token (read by [`auth::presented`]).
pub const COOKIE: &str = "drove_token";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
}

/// `/`: the dashboard when the request carries the token; `/?token=T`
/// signs in and redirects; otherwise the login page with 401.
async fn index(State(s): State<AppState>, req: Request) -> Response {
    let secure = is_https(req.headers());
    if let Some(t) = query_token(req.uri()) {
        return if s.token.matches(&t) {
            signed_in(s.token.value(), secure)
        } else {
            login_page("That token is wrong: check the link or paste the token below.")
        };
    }
    match auth::presented(&req) {
        Some(t) if s.token.matches(&t) => page(PAGE, "text/html; charset=utf-8", StatusCode::OK),
        Some(_) => {
            let mut r = login_page(
                "Your saved token is no longer accepted (the controller's token changed?).",
            );
            r.headers_mut()
                .append(header::SET_COOKIE, clear_cookie(secure));
            r
        }
        None => login_page(""),
    }
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// `POST /login` (the login form): sets the cookie when the token is right.
async fn login(State(s): State<AppState>, headers: HeaderMap, form: Form<Login>) -> Response {
    if s.token.matches(form.token.trim()) {
        signed_in(s.token.value(), is_https(&headers))
    } else {
        login_page("That token is wrong.")
    }
}

/// `POST /logout`: forgets the cookie.
async fn logout(headers: HeaderMap) -> Response {
    let mut r = redirect_home();
    r.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(is_https(&headers)));
    r
}

async fn script() -> Response {
    page(SCRIPT, "text/javascript; charset=utf-8", StatusCode::OK)
}

async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8", StatusCode::OK)
}

/// The `token` parameter of the query string, percent-decoded.
fn query_token(uri: &Uri) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_string())
}

/// Behind a TLS-terminating proxy the cookie gets `Secure`.
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// 303 to `/` with the session cookie.
fn signed_in(token: &str, secure: bool) -> Response {
    let mut r = redirect_home();
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            r.headers_mut().append(header::SET_COOKIE, v);
            r
        }
        // A configured token with characters a cookie cannot carry.
        Err(_) => login_page(
            "This controller's token has characters a cookie cannot hold; \
             use the API with an Authorization header instead.",
        ),
    }
}

fn clear_cookie(secure: bool) -> HeaderValue {
    let v = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).expect("a constant cookie is a valid header")
}

fn redirect_home() -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/"), (header::CACHE_CONTROL, "no-store")],
    )
        .into_response()
}

/// The login page with `message` (401: no data without the token).
fn login_page(message: &str) -> Response {
    let body = LOGIN.replace("{{message}}", &escape(message)).replace(
        "{{message_class}}",
        if message.is_empty() {
            "hidden"
        } else {
            "error"
        },
    );
    page_owned(body, "text/html; charset=utf-8", StatusCode::UNAUTHORIZED)
}

fn page(body: &'static str, content_type: &'static str, status: StatusCode) -> Response {
    page_owned(body.to_string(), content_type, status)
}

fn page_owned(body: String, content_type: &'static str, status: StatusCode) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            // Fresh after an upgrade; never cached by a shared proxy.
            (header::CACHE_CONTROL, "no-cache, private"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// HTML-escapes text.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_from_the_query_string() {
        let q = |s: &str| query_token(&s.parse().unwrap());
        assert_eq!(q("/?token=abc%2Bd"), Some("abc+d".into()));
        assert_eq!(q("/?x=1&token=t"), Some("t".into()));
        assert_eq!(q("/?x=1"), None);
        assert_eq!(q("/"), None);
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
