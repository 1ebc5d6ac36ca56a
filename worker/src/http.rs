//! Health and metrics over HTTP.
//!
//! - `/healthz`: liveness of the process: 200 while its loops are alive,
//!   even if the database is down (a database outage must not make the MIG
//!   recreate every VM). 500 if a loop is stuck.
//! - `/readyz`: 200 when the worker can take work (registered, holding its
//!   lease, not draining); 503 with the reason otherwise.
//! - `/metrics`: Prometheus text format.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;

/// A loop that has not ticked for this long is considered stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let limit = STUCK_AFTER.max(s.settings.poll_interval * 3);
    let stuck: Vec<String> = s
        .since_ticks()
        .iter()
        .filter(|(_, d)| *d > limit)
        .map(|(l, d)| format!("{l:?} loop silent for {}s", d.as_secs()))
        .collect();
    if stuck.is_empty() {
        json(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "worker": s.me.id}),
        )
    } else {
        json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"status": "stuck", "problems": stuck}),
        )
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let reason = if s.draining.load(Ordering::Acquire) {
        Some("draining")
    } else if s.fenced.load(Ordering::Acquire) {
        Some("fenced: no lease (database unreachable?)")
    } else {
        None
    };
    match reason {
        None => json(
            StatusCode::OK,
            serde_json::json!({"status": "ready", "worker": s.me.id, "slots": s.settings.slots, "held": s.held_count()}),
        ),
        Some(r) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not ready", "reason": r}),
        ),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
