//! Waking workers when delayed jobs come due.
//!
//! A job enqueued for later (or a retry in backoff) becomes due without
//! anyone telling the workers, who otherwise notice at their next slow poll.
//! The controller's scheduler calls [`jobs_wake_due`] a few times a second:
//! it finds the queues with jobs that came due since the last call and
//! NOTIFYs them, so delayed jobs start within a fraction of a second of
//! their `run_at`.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::error::{DbResultExt, Result};
use crate::schema::Schema;

/// The predicate of `jobs_scheduled_idx` must appear for the index to be used.
const JOBS_WAKE_DUE: &str = "
WITH due AS (
    SELECT DISTINCT queue FROM {s}.jobs
    WHERE state = 'available' AND run_at > created_at
      AND run_at > $1 AND run_at <= now()
), woken AS (
    SELECT count(pg_notify('{jobs_chan}', queue)) AS n FROM due
)
SELECT ARRAY(SELECT queue FROM due ORDER BY queue), (SELECT n FROM woken), now()";

/// NOTIFYs every queue with delayed jobs that came due in (`after`, now];
/// returns those queues and the time to pass as `after` next time.
pub async fn jobs_wake_due(
    client: &impl GenericClient,
    schema: &Schema,
    after: DateTime<Utc>,
) -> Result<(Vec<String>, DateTime<Utc>)> {
    let row = client
        .query_typed_one(&schema.sql(JOBS_WAKE_DUE), &[(&after, Type::TIMESTAMPTZ)])
        .await
        .db()?;
    Ok((row.get(0), row.get(2)))
}
