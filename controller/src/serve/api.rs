//! The JSON API under `/v1` (bearer-token auth; see `openapi.json`).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drove_queue::cron::CronSpec;
use drove_queue::{JobFilter, JobId, NewJob, QueueSettings};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;

type ApiResult = Result<Response, ApiError>;

async fn conn(state: &AppState) -> Result<crate::pool::Pooled, ApiError> {
    Ok(crate::pool::get(&state.pool).await?)
}

pub async fn enqueue(
    State(s): State<AppState>,
    body: Result<Json<NewJob>, JsonRejection>,
) -> ApiResult {
    let Json(job) = body?;
    let c = conn(&s).await?;
    let done =
        drove_queue::jobs_enqueue_detailed(c.client(), &s.schema, std::slice::from_ref(&job))
            .await?;
    let e = done[0];
    if e.existing {
        // A unique key was held: nothing was created.
        return Ok(Json(json!({ "id": e.id, "existing": true })).into_response());
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": e.id, "existing": false })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    jobs: Vec<NewJob>,
}

pub async fn enqueue_batch(
    State(s): State<AppState>,
    body: Result<Json<Batch>, JsonRejection>,
) -> ApiResult {
    let Json(batch) = body?;
    if batch.jobs.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "jobs is empty",
        ));
    }
    if batch.jobs.len() > s.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{} jobs in one batch; at most {}",
                batch.jobs.len(),
                s.max_batch
            ),
        ));
    }
    let c = conn(&s).await?;
    let done = drove_queue::jobs_enqueue_detailed(c.client(), &s.schema, &batch.jobs).await?;
    let ids: Vec<JobId> = done.iter().map(|e| e.id).collect();
    // Positions whose unique key was held by an existing job.
    let existing: Vec<usize> = (0..done.len()).filter(|&i| done[i].existing).collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "ids": ids, "existing": existing })),
    )
        .into_response())
}

pub async fn get_job(
    State(s): State<AppState>,
    id: Result<Path<JobId>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let c = conn(&s).await?;
    Ok(Json(drove_queue::job_get(c.client(), &s.schema, id).await?).into_response())
}

pub async fn list_jobs(
    State(s): State<AppState>,
    q: Result<Query<JobFilter>, QueryRejection>,
) -> ApiResult {
    let Query(filter) = q?;
    let c = conn(&s).await?;
    let jobs = drove_queue::jobs_list(c.client(), &s.schema, &filter).await?;
    let limit = filter.limit.unwrap_or(50).clamp(1, 1000) as usize;
    let next = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    Ok(Json(json!({ "jobs": jobs, "next_before_id": next })).into_response())
}

pub async fn cancel_job(
    State(s): State<AppState>,
    id: Result<Path<JobId>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let c = conn(&s).await?;
    let result = match drove_queue::job_cancel(c.client(), &s.schema, id).await? {
        drove_queue::Cancelled::Now => "cancelled",
        drove_queue::Cancelled::Requested => "cancel_requested",
    };
    Ok(Json(json!({ "id": id, "result": result })).into_response())
}

pub async fn retry_job(
    State(s): State<AppState>,
    id: Result<Path<JobId>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let c = conn(&s).await?;
    drove_queue::job_retry(c.client(), &s.schema, id).await?;
    Ok(Json(json!({ "id": id, "state": "available" })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryDead {
    #[serde(default)]
    queue: Option<String>,
}

pub async fn retry_dead(
    State(s): State<AppState>,
    body: Result<Json<RetryDead>, JsonRejection>,
) -> ApiResult {
    let Json(r) = body?;
    let c = conn(&s).await?;
    if let Some(q) = &r.queue {
        drove_queue::queues::queue_get(c.client(), &s.schema, q).await?;
    }
    let ids = drove_queue::jobs_retry_dead(c.client(), &s.schema, r.queue.as_deref()).await?;
    Ok(Json(json!({ "ids": ids })).into_response())
}

/// A queue's settings with its live depth from the cached statistics.
fn with_stats(s: &AppState, q: drove_queue::QueueInfo) -> serde_json::Value {
    let stats = s
        .cache
        .get()
        .and_then(|snap| snap.stats.queues.iter().find(|x| x.name == q.name).cloned());
    let mut v = serde_json::to_value(&q).expect("queue info serializes");
    v["stats"] = serde_json::to_value(stats).expect("stats serialize");
    v
}

pub async fn list_queues(State(s): State<AppState>) -> ApiResult {
    let c = conn(&s).await?;
    let queues = drove_queue::queues::queues_list(c.client(), &s.schema).await?;
    let queues: Vec<serde_json::Value> = queues.into_iter().map(|q| with_stats(&s, q)).collect();
    Ok(Json(json!({ "queues": queues })).into_response())
}

pub async fn get_queue(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let c = conn(&s).await?;
    let q = drove_queue::queues::queue_get(c.client(), &s.schema, &name).await?;
    Ok(Json(with_stats(&s, q)).into_response())
}

pub async fn put_queue(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<QueueSettings>, JsonRejection>,
) -> ApiResult {
    let (Path(name), Json(settings)) = (name?, body?);
    let c = conn(&s).await?;
    let q = drove_queue::queues::queue_create(c.client(), &s.schema, &name, &settings).await?;
    Ok(Json(with_stats(&s, q)).into_response())
}

pub async fn delete_queue(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let c = conn(&s).await?;
    drove_queue::queues::queue_delete(c.client(), &s.schema, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn pause_queue(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    set_paused(s, name, true).await
}

pub async fn resume_queue(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    set_paused(s, name, false).await
}

async fn set_paused(
    s: AppState,
    name: Result<Path<String>, PathRejection>,
    paused: bool,
) -> ApiResult {
    let Path(name) = name?;
    let c = conn(&s).await?;
    let q = drove_queue::queues::queue_set_paused(c.client(), &s.schema, &name, paused).await?;
    Ok(Json(with_stats(&s, q)).into_response())
}

pub async fn list_workers(State(s): State<AppState>) -> ApiResult {
    let c = conn(&s).await?;
    let workers = drove_queue::registry::workers_list(c.client(), &s.schema).await?;
    Ok(Json(json!({ "workers": workers })).into_response())
}

pub async fn stats(State(s): State<AppState>) -> ApiResult {
    let snap = s.cache.get();
    let scaling = s
        .scaling
        .lock()
        .expect("scaling status lock poisoned")
        .clone();
    Ok(Json(json!({
        "stats": snap.as_ref().map(|x| &x.stats),
        "age_s": snap.as_ref().map(|x| x.refreshed.elapsed().as_secs_f64()),
        "query_s": snap.as_ref().map(|x| x.took.as_secs_f64()),
        "error": s.cache.error(),
        "leader": *s.leader.borrow(),
        "scaling": scaling,
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only points after this time (the dashboard asks for what is new).
    since: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn history(
    State(s): State<AppState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let mut points = s.cache.history();
    if let Some(since) = q.since {
        points.retain(|p| p.at > since);
    }
    Ok(Json(json!({ "points": points })).into_response())
}

pub async fn list_cron(State(s): State<AppState>) -> ApiResult {
    let c = conn(&s).await?;
    Ok(
        Json(json!({ "schedules": drove_queue::cron::cron_list(c.client(), &s.schema).await? }))
            .into_response(),
    )
}

pub async fn put_cron(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<CronSpec>, JsonRejection>,
) -> ApiResult {
    let (Path(name), Json(spec)) = (name?, body?);
    let c = conn(&s).await?;
    Ok(
        Json(drove_queue::cron::cron_upsert(c.client(), &s.schema, &name, &spec).await?)
            .into_response(),
    )
}

pub async fn delete_cron(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let Path(name) = name?;
    let c = conn(&s).await?;
    if drove_queue::cron::cron_delete(c.client(), &s.schema, &name).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!(
            "no cron schedule named {name:?}"
        )))
    }
}

pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}
