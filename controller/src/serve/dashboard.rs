//! The dashboard at `/` (behind the API token). A placeholder until the
//! page is written: it says where the API is.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(|| async { Html("<p>drove controller: see <a href=\"/v1/openapi.json\">/v1/openapi.json</a></p>") }))
}
