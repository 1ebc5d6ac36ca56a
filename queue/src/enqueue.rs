//! Enqueue: one statement for one job or thousands, on any client or
//! transaction, so "row written and job queued" can commit together.

use tokio_postgres::GenericClient;
use tokio_postgres::types::{Json, ToSql, Type};

use crate::error::{DbResultExt, Result};
use crate::job::{JobId, NewJob};
use crate::schema::Schema;

/// Inserts every job in one statement and wakes listening workers for the
/// queues that have jobs due now. Fails as a whole (nothing inserted) if any
/// job names an unknown queue. Returns the ids in input order.
const JOBS_ENQUEUE_MANY: &str = "
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int2[], $5::timestamptz[],
                         $6::int4[], $7::int4[], $8::int4[], $9::int4[], $10::text[], $11::text[])
        WITH ORDINALITY AS t(queue, kind, payload, priority, run_at, max_attempts,
                             backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, ordering_key, ord)
), missing AS (
    SELECT {s}.unknown_queue(d.queue) FROM (SELECT DISTINCT queue FROM input) d
    WHERE NOT EXISTS (SELECT 1 FROM {s}.queues q WHERE q.name = d.queue)
), ins AS (
    INSERT INTO {s}.jobs (queue, kind, payload, priority, run_at, max_attempts,
                          backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, ordering_key)
    SELECT queue, kind, payload, priority, COALESCE(run_at, now()), max_attempts,
           backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, ordering_key
    FROM input
    WHERE NOT EXISTS (SELECT 1 FROM missing)
    ORDER BY ord
    RETURNING id, queue, run_at
), woken AS (
    SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n
    FROM (SELECT DISTINCT queue FROM ins WHERE run_at <= now()) d
)
SELECT ins.id FROM ins, woken ORDER BY ins.id";

/// Enqueues one job; see [`jobs_enqueue_many`].
pub async fn jobs_enqueue(
    client: &impl GenericClient,
    schema: &Schema,
    job: &NewJob,
) -> Result<JobId> {
    let ids = jobs_enqueue_many(client, schema, std::slice::from_ref(job)).await?;
    Ok(ids[0])
}

/// Enqueues many jobs in one statement (thousands per call are fine).
/// Workers listening on the queues are woken when the transaction commits.
/// A job whose unique key is held is not inserted: its place in the result
/// holds the holder's id ([`jobs_enqueue_detailed`] says which those are).
pub async fn jobs_enqueue_many(
    client: &impl GenericClient,
    schema: &Schema,
    jobs: &[NewJob],
) -> Result<Vec<JobId>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    for job in jobs {
        job.validate()?;
    }
    if jobs.iter().any(|j| j.unique_key.is_some()) {
        let done = crate::unique::jobs_enqueue_unique(client, schema, jobs).await?;
        return Ok(done.into_iter().map(|e| e.id).collect());
    }
    let queue: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let kind: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let payload: Vec<Json<&serde_json::value::RawValue>> =
        jobs.iter().map(|j| Json(&*j.payload)).collect();
    let priority: Vec<i16> = jobs.iter().map(|j| j.priority).collect();
    let run_at: Vec<_> = jobs.iter().map(|j| j.run_at).collect();
    let max_attempts: Vec<_> = jobs.iter().map(|j| j.max_attempts).collect();
    let backoff_base: Vec<_> = jobs.iter().map(|j| j.backoff_base_ms).collect();
    let backoff_max: Vec<_> = jobs.iter().map(|j| j.backoff_max_ms).collect();
    let timeout: Vec<_> = jobs.iter().map(|j| j.timeout_ms).collect();
    let unique_key: Vec<_> = jobs.iter().map(|j| j.unique_key.as_deref()).collect();
    let ordering_key: Vec<_> = jobs.iter().map(|j| j.ordering_key.as_deref()).collect();
    let params: [(&(dyn ToSql + Sync), Type); 11] = [
        (&queue, Type::TEXT_ARRAY),
        (&kind, Type::TEXT_ARRAY),
        (&payload, Type::JSONB_ARRAY),
        (&priority, Type::INT2_ARRAY),
        (&run_at, Type::TIMESTAMPTZ_ARRAY),
        (&max_attempts, Type::INT4_ARRAY),
        (&backoff_base, Type::INT4_ARRAY),
        (&backoff_max, Type::INT4_ARRAY),
        (&timeout, Type::INT4_ARRAY),
        (&unique_key, Type::TEXT_ARRAY),
        (&ordering_key, Type::TEXT_ARRAY),
    ];
    let rows = client
        .query_typed(&schema.sql(JOBS_ENQUEUE_MANY), &params)
        .await
        .db()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// [`jobs_enqueue_many`], saying for each job whether it was inserted or a
/// job already holding its unique key was returned instead.
pub async fn jobs_enqueue_detailed(
    client: &impl GenericClient,
    schema: &Schema,
    jobs: &[NewJob],
) -> Result<Vec<crate::unique::Enqueued>> {
    for job in jobs {
        job.validate()?;
    }
    if jobs.iter().any(|j| j.unique_key.is_some()) {
        return crate::unique::jobs_enqueue_unique(client, schema, jobs).await;
    }
    let ids = jobs_enqueue_many(client, schema, jobs).await?;
    Ok(ids
        .into_iter()
        .map(|id| crate::unique::Enqueued {
            id,
            existing: false,
        })
        .collect())
}
