//! API errors: a JSON body `{"error": {"code", "message"}}` with the right
//! status, built from queue errors and request rejections. Internal details
//! (SQL, connection strings) are logged, never sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<drove_queue::Error> for ApiError {
    fn from(e: drove_queue::Error) -> ApiError {
        use drove_queue::Error as E;
        match &e {
            E::UnknownQueue(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_queue", e.to_string())
            }
            E::JobNotFound(_) => ApiError::not_found(e.to_string()),
            E::Invalid { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            E::WrongState { .. } => {
                ApiError::new(StatusCode::CONFLICT, "wrong_state", e.to_string())
            }
            E::NotMigrated(_) | E::SchemaVersion { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_migrated",
                e.to_string(),
            ),
            _ if e.is_transient() => {
                tracing::warn!(error = %e, "database unavailable for an API request");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; retry later",
                )
            }
            _ => {
                tracing::error!(error = %e, "API request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error (see the controller's log)",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let code = match &r {
            JsonRejection::JsonDataError(_) => "invalid",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            _ => "bad_request",
        };
        ApiError::new(r.status(), code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
    }
}
