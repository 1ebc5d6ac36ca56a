//! Enqueue: one statement for one job or thousands, on any client or
//! transaction, so "row written and job queued" can commit together.

use tokio_postgres::GenericClient;
use tokio_postgres::types::{Json, ToSql, Type};

use crate::error::{DbResultExt, Result};
use crate::job::{JobId, NewJob};
use crate::schema::Schema;

/// Inserts every job in one statement (the function of migration 005,
/// whose plan the server keeps) and wakes listening workers for the queues
/// that have jobs due now. Fails as a whole (nothing inserted) if any job
/// names an unknown queue. Returns the ids in input order.
const JOBS_ENQUEUE_MANY: &str =
    "SELECT * FROM {s}.jobs_enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// One job without a unique key: the same with scalar parameters.
const JOB_ENQUEUE_ONE: &str =
    "SELECT {s}.jobs_enqueue_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Batches of at least this many jobs (without unique keys) are written
/// with `COPY`, which inserts rows page by page instead of one by one.
pub const COPY_MIN_JOBS: usize = 1000;

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
    if let [job] = jobs
        && job.unique_key.is_none()
    {
        return Ok(vec![job_enqueue_one(client, schema, job).await?]);
    }
    if jobs.len() >= COPY_MIN_JOBS && copyable(jobs) {
        return crate::enqueue_copy::jobs_copy_in(client, schema, jobs).await;
    }
    let cols = Columns::new(jobs);
    let params = cols.params();
    let rows = client
        .query_typed(&schema.sql(JOBS_ENQUEUE_MANY), &params)
        .await
        .db()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn job_enqueue_one(
    client: &impl GenericClient,
    schema: &Schema,
    job: &NewJob,
) -> Result<JobId> {
    let payload = Json(&*job.payload);
    let row = client
        .query_typed_one(
            &schema.sql(JOB_ENQUEUE_ONE),
            &[
                (&job.queue, Type::TEXT),
                (&job.kind, Type::TEXT),
                (&payload, Type::JSONB),
                (&job.priority, Type::INT2),
                (&job.run_at, Type::TIMESTAMPTZ),
                (&job.max_attempts, Type::INT4),
                (&job.backoff_base_ms, Type::INT4),
                (&job.backoff_max_ms, Type::INT4),
                (&job.timeout_ms, Type::INT4),
                (&job.ordering_key, Type::TEXT),
            ],
        )
        .await
        .db()?;
    Ok(row.get(0))
}

/// COPY cannot fill a column from its default for some rows only: every
/// job must leave `run_at` to the database, or every job must set it.
fn copyable(jobs: &[NewJob]) -> bool {
    let first = jobs[0].run_at.is_some();
    jobs.iter()
        .all(|j| j.run_at.is_some() == first && j.unique_key.is_none())
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

/// A batch of jobs as one array per column, the parameters $1-$11 of the
/// enqueue statements (the unique path appends its own).
pub(crate) struct Columns<'a> {
    queue: Vec<&'a str>,
    kind: Vec<&'a str>,
    payload: Vec<Json<&'a serde_json::value::RawValue>>,
    priority: Vec<i16>,
    run_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    max_attempts: Vec<Option<i32>>,
    backoff_base: Vec<Option<i32>>,
    backoff_max: Vec<Option<i32>>,
    timeout: Vec<Option<i32>>,
    unique_key: Vec<Option<&'a str>>,
    ordering_key: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(jobs: &'a [NewJob]) -> Columns<'a> {
        Columns {
            queue: jobs.iter().map(|j| j.queue.as_str()).collect(),
            kind: jobs.iter().map(|j| j.kind.as_str()).collect(),
            payload: jobs.iter().map(|j| Json(&*j.payload)).collect(),
            priority: jobs.iter().map(|j| j.priority).collect(),
            run_at: jobs.iter().map(|j| j.run_at).collect(),
            max_attempts: jobs.iter().map(|j| j.max_attempts).collect(),
            backoff_base: jobs.iter().map(|j| j.backoff_base_ms).collect(),
            backoff_max: jobs.iter().map(|j| j.backoff_max_ms).collect(),
            timeout: jobs.iter().map(|j| j.timeout_ms).collect(),
            unique_key: jobs.iter().map(|j| j.unique_key.as_deref()).collect(),
            ordering_key: jobs.iter().map(|j| j.ordering_key.as_deref()).collect(),
        }
    }

    pub(crate) fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        vec![
            (&self.queue, Type::TEXT_ARRAY),
            (&self.kind, Type::TEXT_ARRAY),
            (&self.payload, Type::JSONB_ARRAY),
            (&self.priority, Type::INT2_ARRAY),
            (&self.run_at, Type::TIMESTAMPTZ_ARRAY),
            (&self.max_attempts, Type::INT4_ARRAY),
            (&self.backoff_base, Type::INT4_ARRAY),
            (&self.backoff_max, Type::INT4_ARRAY),
            (&self.timeout, Type::INT4_ARRAY),
            (&self.unique_key, Type::TEXT_ARRAY),
            (&self.ordering_key, Type::TEXT_ARRAY),
        ]
    }
}
