//! Shared set-up of Google Cloud clients: Application Default Credentials
//! in production; an endpoint override with anonymous credentials for
//! tests against a local fake.

use google_cloud_gax::error::Error as GaxError;

use super::backend::BackendError;

/// Where Google's APIs are and how to authenticate.
#[derive(Debug, Clone, Default)]
pub struct GcpConn {
    /// Override of the API endpoint (tests: `http://127.0.0.1:PORT`).
    pub endpoint: Option<String>,
    /// Send no credentials (only for a local fake).
    pub anonymous: bool,
}

/// rustls needs a process-wide crypto provider for Google's HTTP client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Maps a client error: 429, 5xx and transport errors are worth retrying.
pub fn backend_error(backend: &'static str, what: &str, e: GaxError) -> BackendError {
    let status = e.http_status_code();
    let transient = status.is_none_or(|s| s == 429 || s >= 500);
    let code = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    BackendError::new(backend, format!("{what}{code}: {e}"), transient)
}

macro_rules! configure {
    ($builder:expr, $conn:expr) => {{
        let mut b = $builder;
        if let Some(ep) = &$conn.endpoint {
            b = b.with_endpoint(ep.clone());
        }
        if $conn.anonymous {
            b = b.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        b
    }};
}
pub(crate) use configure;
