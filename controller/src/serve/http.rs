//! The controller's HTTP surface: health, metrics, the `/v1` API.
//!
//! - `/healthz`: the process is up (its loops run); no database involved.
//! - `/readyz`: the database answers and the schema is at this build's version.
//! - `/metrics`: Prometheus text format, from cached statistics.
//! - `/v1/...`: the JSON API, bearer-token auth; `/v1/openapi.json` is public.
//!   With `--scaler docker`, `/v1/group` and `/v1/group/rolling-update` too.
//!
//! Every request has a body limit and a time limit, a panic in a handler
//! becomes a 500, and request metrics are labelled by route template.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use super::state::AppState;
use super::{api, auth};

/// Requests taking longer than this get a 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole HTTP surface. `extra_v1` are routes a scaling backend adds
/// under `/v1`, behind the same authentication (the docker group's API).
pub fn router(state: AppState, max_body: usize, extra_v1: Option<Router<AppState>>) -> Router {
    let v1 = Router::new()
        .route("/jobs", post(api::enqueue).get(api::list_jobs))
        .route("/jobs/batch", post(api::enqueue_batch))
        .route("/jobs/retry-dead", post(api::retry_dead))
        .route("/jobs/{id}", get(api::get_job))
        .route("/jobs/{id}/cancel", post(api::cancel_job))
        .route("/jobs/{id}/retry", post(api::retry_job))
        .route("/queues", get(api::list_queues))
        .route(
            "/queues/{name}",
            get(api::get_queue)
                .put(api::put_queue)
                .delete(api::delete_queue),
        )
        .route("/queues/{name}/pause", post(api::pause_queue))
        .route("/queues/{name}/resume", post(api::resume_queue))
        .route("/workers", get(api::list_workers))
        .route("/stats", get(api::stats))
        .route("/history", get(api::history))
        .route("/cron", get(api::list_cron))
        .route("/cron/{name}", put(api::put_cron).delete(api::delete_cron))
        .merge(extra_v1.unwrap_or_default())
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .route("/openapi.json", get(api::openapi));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/v1", v1)
        .merge(super::dashboard::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            super::error::ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response()
        }))
        .with_state(state)
}

async fn not_found() -> Response {
    super::error::ApiError::not_found("no such endpoint (see /v1/openapi.json)").into_response()
}

/// Counts and times requests by route template (never the raw path).
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .http_seconds
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    s.metrics
        .http_requests
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    resp
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let check = async {
        let c = crate::pool::get(&s.pool).await?;
        drove_queue::migrate::check_schema(c.client(), &s.schema).await
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(json!({ "status": "ready", "leader": *s.leader.borrow() })),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not ready", "reason": e.to_string() })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not ready", "reason": "database timeout" })),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.metrics;
    m.leader.set(i64::from(*s.leader.borrow()));
    if let Some(snap) = s.cache.get() {
        m.stats_age.set(snap.refreshed.elapsed().as_secs_f64());
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}
