//! Recording what happened to leased jobs: success, failure (retry or dead),
//! cancellation, release on shutdown, progress.
//!
//! Every statement is fenced on (job id, attempt, lease owner): a worker
//! that lost its lease (partitioned, paused, declared dead) and comes back
//! late changes nothing, so a newer attempt is never overwritten and each
//! job's completion is recorded exactly once. Each returns the ids it
//! applied to; the rest were fenced off.
//!
//! A job has a lease owner exactly while it is `running` (a CHECK constraint
//! on `jobs`), so the owner test is also the state test, and the statements
//! do not repeat `state = 'running'`. (When there was a partial index on
//! running jobs, that condition let the planner join it against the
//! unnested batch in a nested loop, O(batch²): 178 µs per job at batch
//! 1000.) Successes find their rows by the address the claim returned (a
//! TID scan), and by primary key whatever has moved since.

use serde_json::value::RawValue;
use tokio_postgres::types::Json;

use crate::conn::Conn;
use crate::error::{DbResultExt, Result};
use crate::job::JobId;
use crate::tid::Tid;

/// Columns copied from `jobs` into `jobs_done` when a job finishes.
macro_rules! done_columns {
    () => {
        "id, queue, kind, state, priority, attempt, max_attempts, run_at, created_at, started_at, \
         finished_at, worker, unique_key, ordering_key, payload, progress, result, errors"
    };
}

/// Successes found at the address their claim returned ($1). The accepted
/// ids come back as one array: one row to send, not one per job.
const JOBS_COMPLETE_AT: &str = concat!(
    "
WITH c AS (
    SELECT * FROM unnest($1::tid[], $2::int8[], $3::int4[], $4::jsonb[]) AS c(ctid, id, attempt, result)
), done AS (
    DELETE FROM {s}.jobs j USING c
    WHERE j.ctid = c.ctid AND j.id = c.id AND j.attempt = c.attempt AND j.lease_owner = $5
    RETURNING j.*, c.result
), ins AS (
    INSERT INTO {s}.jobs_done (",
    done_columns!(),
    ")
    SELECT id, queue, kind, 'succeeded', priority, attempt, max_attempts, run_at, created_at, started_at,
           now(), $5, unique_key, ordering_key, payload, progress, result, errors
    FROM done
    RETURNING id
), woken AS (
    -- The next job of a finished job's ordering key can run now: wake the
    -- workers (nothing to do for jobs without a key).
    SELECT count(pg_notify('{jobs_chan}', q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM done WHERE ordering_key IS NOT NULL) q
)
SELECT (SELECT COALESCE(array_agg(id), '{}') FROM ins), (SELECT n FROM woken)"
);

/// Successes found by id (their row moved since the claim, or no address).
const JOBS_COMPLETE_MANY: &str = concat!(
    "
WITH c AS (
    SELECT * FROM unnest($1::int8[], $2::int4[], $3::jsonb[]) AS c(id, attempt, result)
), done AS (
    DELETE FROM {s}.jobs j USING c
    WHERE j.id = c.id AND j.attempt = c.attempt AND j.lease_owner = $4
    RETURNING j.*, c.result
), ins AS (
    INSERT INTO {s}.jobs_done (",
    done_columns!(),
    ")
    SELECT id, queue, kind, 'succeeded', priority, attempt, max_attempts, run_at, created_at, started_at,
           now(), $4, unique_key, ordering_key, payload, progress, result, errors
    FROM done
    RETURNING id
), woken AS (
    -- The next job of a finished job's ordering key can run now: wake the
    -- workers (nothing to do for jobs without a key).
    SELECT count(pg_notify('{jobs_chan}', q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM done WHERE ordering_key IS NOT NULL) q
)
SELECT (SELECT COALESCE(array_agg(id), '{}') FROM ins), (SELECT n FROM woken)"
);

/// One finished success: (id, attempt) as claimed, and the handler's result.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: JobId,
    pub attempt: i32,
    pub result: Option<Box<RawValue>>,
    /// The claimed row's address ([`crate::ClaimedJob::ctid`]), if known.
    pub ctid: Option<Tid>,
}

/// Records successes: in one statement when every row is where its claim
/// left it, plus one by id for those that moved. Returns the ids accepted.
pub async fn jobs_complete_many(
    conn: &Conn,
    worker_id: &str,
    done: &[Completion],
) -> Result<Vec<JobId>> {
    let (at, rest): (Vec<&Completion>, Vec<&Completion>) =
        done.iter().partition(|c| c.ctid.is_some());
    let mut accepted = Vec::new();
    if !at.is_empty() {
        let ctids: Vec<Tid> = at.iter().filter_map(|c| c.ctid).collect();
        let ids: Vec<JobId> = at.iter().map(|c| c.id).collect();
        let attempts: Vec<i32> = at.iter().map(|c| c.attempt).collect();
        let results: Vec<Option<Json<&RawValue>>> =
            at.iter().map(|c| c.result.as_deref().map(Json)).collect();
        let stmt = conn.prepared(JOBS_COMPLETE_AT).await?;
        let row = conn
            .client()
            .query_one(&stmt, &[&ctids, &ids, &attempts, &results, &worker_id])
            .await
            .db()?;
        accepted = row.get(0);
    }
    let mut by_id = rest;
    if accepted.len() < at.len() {
        let found: std::collections::HashSet<JobId> = accepted.iter().copied().collect();
        by_id.extend(at.iter().filter(|c| !found.contains(&c.id)));
    }
    if by_id.is_empty() {
        return Ok(accepted);
    }
    let ids: Vec<JobId> = by_id.iter().map(|c| c.id).collect();
    let attempts: Vec<i32> = by_id.iter().map(|c| c.attempt).collect();
    let results: Vec<Option<Json<&RawValue>>> = by_id
        .iter()
        .map(|c| c.result.as_deref().map(Json))
        .collect();
    let stmt = conn.prepared(JOBS_COMPLETE_MANY).await?;
    let row = conn
        .client()
        .query_one(&stmt, &[&ids, &attempts, &results, &worker_id])
        .await
        .db()?;
    accepted.extend(row.get::<_, Vec<JobId>>(0));
    Ok(accepted)
}

const JOBS_FAIL_MANY: &str = concat!(
    "
WITH f AS (
    SELECT * FROM unnest($1::int8[], $2::int4[], $3::text[], $4::bool[]) AS f(id, attempt, error, retryable)
), t AS (
    SELECT j.id, f.error,
           (NOT f.retryable OR j.attempt >= COALESCE(j.max_attempts, q.max_attempts)) AS final,
           LEAST(COALESCE(j.backoff_max_ms, q.backoff_max_ms)::float8,
                 COALESCE(j.backoff_base_ms, q.backoff_base_ms) * power(2::float8, j.attempt - 1)) AS cap_ms
    FROM {s}.jobs j
    JOIN f ON f.id = j.id AND f.attempt = j.attempt
    JOIN {s}.queues q ON q.name = j.queue
    WHERE j.lease_owner = $5
    FOR UPDATE OF j
), retried AS (
    UPDATE {s}.jobs j
    SET state = 'available', lease_owner = NULL, cancel_requested = false,
        -- Equal jitter: half the capped exponential delay, plus a random half.
        run_at = now() + t.cap_ms * (0.5 + random() * 0.5) * interval '1 millisecond',
        errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(), 'error', t.error, 'worker', $5::text)
    FROM t
    WHERE j.id = t.id AND NOT t.final
    RETURNING j.id, j.run_at
), dead AS (
    DELETE FROM {s}.jobs j USING t
    WHERE j.id = t.id AND t.final
    RETURNING j.*, t.error
), buried AS (
    INSERT INTO {s}.jobs_done (",
    done_columns!(),
    ")
    SELECT id, queue, kind, 'dead', priority, attempt, max_attempts, run_at, created_at, started_at,
           now(), $5, unique_key, ordering_key, payload, progress, NULL,
           errors || jsonb_build_object('attempt', attempt, 'at', now(), 'error', error, 'worker', $5::text)
    FROM dead
    RETURNING id
)
SELECT id, run_at FROM retried
UNION ALL
SELECT id, NULL FROM buried"
);

/// One failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: JobId,
    pub attempt: i32,
    pub error: String,
    /// False for errors that no retry can fix (bad payload): the job goes
    /// straight to `dead`.
    pub retryable: bool,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to `available`, due again at this time.
    Retry {
        id: JobId,
        run_at: chrono::DateTime<chrono::Utc>,
    },
    /// Attempts used up or not retryable.
    Dead { id: JobId },
}

/// Records failures in one statement: each job is retried after a capped,
/// jittered exponential backoff, or buried as `dead` when its attempts are
/// used up. Fenced jobs are left out of the result.
pub async fn jobs_fail_many(
    conn: &Conn,
    worker_id: &str,
    failed: &[Failure],
) -> Result<Vec<FailOutcome>> {
    if failed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = failed.iter().map(|f| f.id).collect();
    let attempts: Vec<i32> = failed.iter().map(|f| f.attempt).collect();
    let errors: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
    let retryable: Vec<bool> = failed.iter().map(|f| f.retryable).collect();
    let stmt = conn.prepared(JOBS_FAIL_MANY).await?;
    let rows = conn
        .client()
        .query(&stmt, &[&ids, &attempts, &errors, &retryable, &worker_id])
        .await
        .db()?;
    Ok(rows
        .iter()
        .map(
            |r| match r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(1) {
                Some(run_at) => FailOutcome::Retry {
                    id: r.get(0),
                    run_at,
                },
                None => FailOutcome::Dead { id: r.get(0) },
            },
        )
        .collect())
}

const JOBS_CANCELLED_MANY: &str = concat!(
    "
WITH gone AS (
    DELETE FROM {s}.jobs j
    USING unnest($1::int8[], $2::int4[]) AS c(id, attempt)
    WHERE j.id = c.id AND j.attempt = c.attempt AND j.lease_owner = $3
    RETURNING j.*
)
INSERT INTO {s}.jobs_done (",
    done_columns!(),
    ")
SELECT id, queue, kind, 'cancelled', priority, attempt, max_attempts, run_at, created_at, started_at,
       now(), $3, unique_key, ordering_key, payload, progress, NULL,
       errors || jsonb_build_object('attempt', attempt, 'at', now(), 'error', 'cancelled while running', 'worker', $3::text)
FROM gone
RETURNING id"
);

/// Records running jobs that were stopped because someone cancelled them.
pub async fn jobs_cancelled_many(
    conn: &Conn,
    worker_id: &str,
    jobs: &[(JobId, i32)],
) -> Result<Vec<JobId>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = jobs.iter().map(|j| j.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.1).collect();
    let stmt = conn.prepared(JOBS_CANCELLED_MANY).await?;
    let rows = conn
        .client()
        .query(&stmt, &[&ids, &attempts, &worker_id])
        .await
        .db()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

const JOBS_RELEASE_MANY: &str = "
WITH released AS (
    UPDATE {s}.jobs j
    SET state = 'available', attempt = j.attempt - 1, lease_owner = NULL, started_at = NULL,
        cancel_requested = false
    FROM unnest($1::int8[], $2::int4[]) AS r(id, attempt)
    WHERE j.id = r.id AND j.attempt = r.attempt AND j.lease_owner = $3
    RETURNING j.id, j.queue
), woken AS (
    SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n FROM (SELECT DISTINCT queue FROM released) d
)
SELECT released.id FROM released, woken";

/// Gives leased jobs back at once (worker shutting down): they become
/// available immediately and the attempt is not counted.
pub async fn jobs_release_many(
    conn: &Conn,
    worker_id: &str,
    jobs: &[(JobId, i32)],
) -> Result<Vec<JobId>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = jobs.iter().map(|j| j.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.1).collect();
    let stmt = conn.prepared(JOBS_RELEASE_MANY).await?;
    let rows = conn
        .client()
        .query(&stmt, &[&ids, &attempts, &worker_id])
        .await
        .db()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

const JOB_SET_PROGRESS: &str = "
UPDATE {s}.jobs SET progress = $4
WHERE id = $1 AND attempt = $2 AND lease_owner = $3";

/// Stores a running job's progress (any JSON). False if the lease was lost.
pub async fn job_set_progress(
    conn: &Conn,
    worker_id: &str,
    id: JobId,
    attempt: i32,
    progress: &RawValue,
) -> Result<bool> {
    let stmt = conn.prepared(JOB_SET_PROGRESS).await?;
    let n = conn
        .client()
        .execute(&stmt, &[&id, &attempt, &worker_id, &Json(progress)])
        .await
        .db()?;
    Ok(n == 1)
}
