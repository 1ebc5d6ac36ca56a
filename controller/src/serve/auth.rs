//! Bearer-token authentication for the API and the dashboard. The token
//! comes from a file (a mounted secret) or the environment; comparison is
//! constant-time.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::AppState;

/// The API token.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A token of at least 16 characters (a short one is a configuration mistake).
    pub fn new(value: &str) -> Result<Token, String> {
        let v = value.trim();
        if v.len() < 16 {
            return Err("the API token must be at least 16 characters".into());
        }
        Ok(Token(v.to_string()))
    }

    /// A random token, for runs without a configured one.
    pub fn random() -> Token {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        Token(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn value(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// The bearer token of a request: `Authorization: Bearer ...`, or the
/// `drove_token` cookie the dashboard's login sets.
pub fn presented(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("drove_token=").map(str::to_string))
}

/// Rejects requests without the right token with 401 and a JSON error.
pub async fn require(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match presented(&req) {
        Some(t) if state.token.matches(&t) => {
            if cross_site_form_risk(&req) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "a change signed in by cookie must be sent with Content-Type: application/json",
                )
                .into_response();
            }
            next.run(req).await
        }
        Some(_) => unauthorized("wrong API token"),
        None => unauthorized("missing API token: send Authorization: Bearer <token>"),
    }
}

/// CSRF guard for the dashboard's cookie: a write authenticated by the
/// cookie (no Authorization header) must carry `Content-Type:
/// application/json`, which an HTML form on another site cannot send and a
/// cross-origin script can only send after a CORS preflight this server
/// never grants. (`SameSite=Strict` already keeps the cookie off requests
/// from other sites; this also covers other origins of the same site, such
/// as another port on the same host.)
fn cross_site_form_risk(req: &Request) -> bool {
    use axum::http::Method;
    let by_cookie = !req.headers().contains_key(header::AUTHORIZATION);
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    by_cookie && writes && !json
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_and_reject_short_ones() {
        let t = Token::new("0123456789abcdef").unwrap();
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeX"));
        assert!(!t.matches(""));
        assert!(Token::new("short").is_err());
        assert_eq!(Token::random().value().len(), 48);
    }
}
