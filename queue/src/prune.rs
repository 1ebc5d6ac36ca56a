//! Pruning finished jobs past their queue's retention (succeeded: 1 day,
//! dead and cancelled: 7 days, by default), in bounded batches so one pass
//! never holds locks or bloats WAL for long.

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::error::{DbResultExt, Result};
use crate::schema::Schema;

/// Deletes up to `$1` finished jobs past retention. The first condition,
/// against the shortest retention of any queue, is what the BRIN index on
/// `finished_at` can use; the join applies each queue's own retention.
///
/// The rows found are deleted by physical address (a TID scan), not joined
/// back by id: that join was planned as a second full scan of `jobs_done`
/// and a hash of it, for every batch. Measured in `drove bench sustained`
/// (1M jobs, 2 s retention), throughput fell by half as pruned but not yet
/// vacuumed rows piled up in the table both scans walked. A row updated
/// since it was found (not something drove does to finished jobs) has
/// moved and is left for the next pass.
const JOBS_PRUNE: &str = "
WITH doomed AS (
    SELECT d.ctid
    FROM {s}.jobs_done d
    JOIN {s}.queues q ON q.name = d.queue
    WHERE d.finished_at < now() - (SELECT least(min(keep_succeeded), min(keep_dead)) FROM {s}.queues)
      AND d.finished_at < now() - CASE WHEN d.state = 'succeeded' THEN q.keep_succeeded ELSE q.keep_dead END
    LIMIT $1
)
DELETE FROM {s}.jobs_done d WHERE d.ctid = ANY(ARRAY(SELECT ctid FROM doomed))";

/// Successes recorded in batches (migration 9): whole rows, each one
/// queue's jobs finished together, past that queue's retention (or, for a
/// queue that no longer exists, 7 days), oldest first, as many rows as
/// hold up to `$1` jobs (the last row may take it over by less than one
/// row's jobs). Returns the number of jobs pruned.
const SUCCEEDED_PRUNE: &str = "
WITH candidates AS (
    SELECT b.ctid, b.n, b.finished_at
    FROM {s}.jobs_succeeded b
    LEFT JOIN {s}.queues q ON q.name = b.queue
    WHERE b.finished_at < now() - (SELECT least(min(keep_succeeded), interval '7 days') FROM {s}.queues)
      AND b.finished_at < now() - COALESCE(q.keep_succeeded, interval '7 days')
    ORDER BY b.finished_at
    LIMIT greatest(($1 + 15) / 16, 1)
), doomed AS (
    SELECT ctid FROM (
        SELECT ctid, sum(n) OVER (ORDER BY finished_at, ctid ROWS UNBOUNDED PRECEDING) - n AS before
        FROM candidates
    ) c WHERE before < $1
), gone AS (
    DELETE FROM {s}.jobs_succeeded b WHERE b.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) RETURNING b.n
)
SELECT COALESCE(sum(n), 0)::int8 FROM gone";

/// Finished jobs of queues that no longer exist are pruned after this long.
const ORPHANS_PRUNE: &str = "
WITH doomed AS (
    SELECT d.ctid FROM {s}.jobs_done d
    WHERE d.finished_at < now() - interval '7 days'
      AND NOT EXISTS (SELECT 1 FROM {s}.queues q WHERE q.name = d.queue)
    LIMIT $1
)
DELETE FROM {s}.jobs_done d WHERE d.ctid = ANY(ARRAY(SELECT ctid FROM doomed))";

const UNIQUE_PRUNE: &str = "
DELETE FROM {s}.unique_keys u USING (
    SELECT queue, key FROM {s}.unique_keys
    WHERE scope = 'window' AND expires_at <= now() LIMIT $1
) x WHERE u.queue = x.queue AND u.key = x.key AND u.expires_at <= now()";

/// Deletes about `batch` finished jobs past retention (successes recorded
/// in batches go whole rows at a time, so up to 1,023 more); returns how
/// many. Call again while it returns `batch` or more.
pub async fn jobs_prune(client: &impl GenericClient, schema: &Schema, batch: i64) -> Result<u64> {
    let mut n = client
        .execute_typed(&schema.sql(JOBS_PRUNE), &[(&batch, Type::INT8)])
        .await
        .db()?;
    if n < batch as u64 {
        let row = client
            .query_typed_one(
                &schema.sql(SUCCEEDED_PRUNE),
                &[(&(batch - n as i64), Type::INT8)],
            )
            .await
            .db()?;
        n += row.get::<_, i64>(0) as u64;
    }
    if n < batch as u64 {
        n += client
            .execute_typed(
                &schema.sql(ORPHANS_PRUNE),
                &[(&(batch - n as i64), Type::INT8)],
            )
            .await
            .db()?;
    }
    if n < batch as u64 {
        // Unique keys whose window has passed (the rest are released by
        // their jobs' state changes).
        client
            .execute_typed(&schema.sql(UNIQUE_PRUNE), &[(&batch, Type::INT8)])
            .await
            .db()?;
    }
    Ok(n)
}
