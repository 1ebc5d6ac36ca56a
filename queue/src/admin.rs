//! Operator actions on jobs: retry finished ones, cancel pending or running ones.

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::error::{DbResultExt, Error, Result};
use crate::job::{JobId, JobState};
use crate::schema::Schema;

const JOBS_RETRY: &str = "
WITH back AS (
    DELETE FROM {s}.jobs_done d
    WHERE d.state IN ('dead', 'cancelled')
      AND ($1::int8[] IS NULL OR d.id = ANY($1))
      AND ($2::text IS NULL OR d.queue = $2)
      AND ($3::bool OR d.state = 'dead')
    RETURNING d.*
), ins AS (
    INSERT INTO {s}.jobs (id, queue, kind, priority, attempt, run_at, created_at, max_attempts,
                          unique_key, unique_scope, ordering_key, payload, progress, errors)
    OVERRIDING SYSTEM VALUE
    SELECT id, queue, kind, priority, 0, now(), created_at, max_attempts,
           unique_key, unique_scope, ordering_key, payload, NULL, errors
    FROM back
    RETURNING id, queue
), keys AS (
    -- The job takes its unique key again unless another job holds it (the
    -- first of several retried together wins; an expired window is free).
    -- A window key is not taken again: the window ran from the enqueue.
    INSERT INTO {s}.unique_keys AS u (queue, key, job_id, scope)
    SELECT DISTINCT ON (queue, unique_key) queue, unique_key, id, unique_scope
    FROM back
    WHERE unique_key IS NOT NULL AND unique_scope IN ('pending', 'active')
    ORDER BY queue, unique_key, id
    ON CONFLICT (queue, key) DO UPDATE SET job_id = EXCLUDED.job_id, scope = EXCLUDED.scope, expires_at = NULL
        WHERE u.scope = 'window' AND u.expires_at <= now()
), woken AS (
    SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n FROM (SELECT DISTINCT queue FROM ins) d
)
SELECT ins.id FROM ins, woken ORDER BY ins.id";

/// Puts dead (or cancelled) jobs back to `available` with a fresh attempt
/// budget; their error history is kept. A job with a unique key (scope
/// pending or active) holds it again, unless another job took it meanwhile:
/// then the retry goes ahead and that other job keeps the key.
pub async fn jobs_retry(
    client: &impl GenericClient,
    schema: &Schema,
    ids: &[JobId],
) -> Result<Vec<JobId>> {
    let sql = schema.sql(JOBS_RETRY);
    let no_queue: Option<&str> = None;
    let rows = client
        .query_typed(
            &sql,
            &[
                (&ids, Type::INT8_ARRAY),
                (&no_queue, Type::TEXT),
                (&true, Type::BOOL),
            ],
        )
        .await
        .db()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Retries one job, explaining why not when it cannot be retried.
pub async fn job_retry(client: &impl GenericClient, schema: &Schema, id: JobId) -> Result<()> {
    if jobs_retry(client, schema, &[id]).await?.is_empty() {
        let job = crate::inspect::job_get(client, schema, id).await?;
        return Err(Error::WrongState {
            id,
            state: job.state.to_string(),
            action: "retry",
            needs: "dead or cancelled",
        });
    }
    Ok(())
}

/// Retries every dead job (of one queue, or all).
pub async fn jobs_retry_dead(
    client: &impl GenericClient,
    schema: &Schema,
    queue: Option<&str>,
) -> Result<Vec<JobId>> {
    let sql = schema.sql(JOBS_RETRY);
    let ids: Option<Vec<JobId>> = None;
    let rows = client
        .query_typed(
            &sql,
            &[
                (&ids, Type::INT8_ARRAY),
                (&queue, Type::TEXT),
                (&false, Type::BOOL),
            ],
        )
        .await
        .db()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

const JOB_CANCEL: &str = "
WITH pending AS (
    DELETE FROM {s}.jobs WHERE id = $1 AND state = 'available' RETURNING *
), buried AS (
    INSERT INTO {s}.jobs_done (id, queue, kind, state, priority, attempt, max_attempts, run_at,
                               created_at, started_at, finished_at, worker, unique_key, unique_scope,
                               ordering_key, payload, progress, result, errors)
    SELECT id, queue, kind, 'cancelled', priority, attempt, max_attempts, run_at, created_at, started_at,
           now(), NULL, unique_key, unique_scope, ordering_key, payload, progress, NULL, errors
    FROM pending
    RETURNING id
), running AS (
    UPDATE {s}.jobs SET cancel_requested = true
    WHERE id = $1 AND state = 'running'
    RETURNING id, lease_owner
), told AS (
    SELECT count(pg_notify('{cancel_chan}', lease_owner || ' ' || id)) AS n FROM running
), dead AS (
    -- Cancelling a dead job settles it: later jobs of its ordering key stop
    -- waiting for it.
    UPDATE {s}.jobs_done SET state = 'cancelled' WHERE id = $1 AND state = 'dead' RETURNING id
)
SELECT (SELECT count(*) FROM buried) + (SELECT count(*) FROM dead), (SELECT count(*) FROM running),
       (SELECT n FROM told)";

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was waiting (or dead): it is `cancelled` now.
    Now,
    /// It is running: its worker was told to stop it and will record it
    /// `cancelled` within seconds.
    Requested,
}

/// Cancels a pending job at once, or asks the worker running it to stop it.
pub async fn job_cancel(
    client: &impl GenericClient,
    schema: &Schema,
    id: JobId,
) -> Result<Cancelled> {
    let row = client
        .query_typed_one(&schema.sql(JOB_CANCEL), &[(&id, Type::INT8)])
        .await
        .db()?;
    let (now, requested): (i64, i64) = (row.get(0), row.get(1));
    if now == 1 {
        return Ok(Cancelled::Now);
    }
    if requested == 1 {
        return Ok(Cancelled::Requested);
    }
    let job = crate::inspect::job_get(client, schema, id).await?;
    Err(Error::WrongState {
        id,
        state: job.state.to_string(),
        action: "cancel",
        needs: if job.state == JobState::Cancelled {
            "a job not already cancelled"
        } else {
            "available, running or dead"
        },
    })
}
