//! Claim: one statement leases up to N due jobs of a queue to a worker.
//!
//! `FOR UPDATE SKIP LOCKED` lets any number of workers claim side by side
//! without waiting on each other. No transaction stays open while the jobs
//! run: the lease is the `lease_owner` column plus the owner's row in
//! `workers`, whose heartbeat keeps every lease of the process alive.
//!
//! The claim takes a KEY SHARE lock on the worker's own row and claims nothing
//! if that row is gone or expired. A reaper deleting the row therefore waits
//! for an in-flight claim to commit and then sees (and reclaims) its jobs: no
//! job can be leased to a worker that was already declared dead.
//!
//! The rows picked (and locked) through the claim index are updated by their
//! physical address rather than through the primary key, and each claimed
//! job carries the address of its new row version, which the completion
//! uses the same way (see [`crate::tid`]). Measured with callgrind on a
//! single-user backend, the two together cut the database's work per job
//! by 17% (123,553 -> 102,698 instructions).

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use tokio_postgres::types::Json;

use crate::conn::Conn;
use crate::error::{DbResultExt, Result};
use crate::job::ClaimedJob;

/// The outer guard compares `state` as text on purpose: written as
/// `j.state = 'available'` it matches the claim index's predicate, and when
/// the statistics make `jobs` look nearly empty the planner then finds the
/// picked rows by walking the whole claim index, filtering on ctid, instead
/// of a TID scan. `drove bench drain` hit that in 3 of 20 drains (each claim
/// of 1,000 jobs ~900 ms, 200,000 jobs in 61 s instead of 4); with such
/// statistics forced on 200,000 jobs, one claim took 1,508 ms, and 10.5 ms
/// with the text form, which no index can serve. The rows picked are
/// locked by this statement, so the guard is only a belt and braces.
const JOBS_CLAIM: &str = "
WITH me AS (
    SELECT id FROM {s}.workers WHERE id = $3 AND expires_at > now() FOR KEY SHARE
), q AS (
    SELECT timeout_ms FROM {s}.queues WHERE name = $1 AND NOT paused
), picked AS (
    SELECT j.ctid FROM {s}.jobs j
    WHERE j.queue = $1 AND j.state = 'available' AND j.run_at <= now()
      AND EXISTS (SELECT 1 FROM me) AND EXISTS (SELECT 1 FROM q)
    ORDER BY j.priority, j.run_at, j.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE {s}.jobs j
SET state = 'running', attempt = j.attempt + 1, lease_owner = $3, started_at = now()
WHERE j.ctid = ANY(ARRAY(SELECT ctid FROM picked)) AND j.state::text = 'available'
RETURNING j.id, j.kind, j.attempt, COALESCE(j.timeout_ms, (SELECT timeout_ms FROM q)),
          j.payload, j.run_at, j.created_at, j.priority, j.ctid";

/// Leases up to `limit` due jobs of `queue` to `worker_id`, in priority,
/// then due-time, then id order. Returns fewer (or none) when the queue has
/// fewer due jobs, is paused, or the worker's registry row has expired.
pub async fn jobs_claim(
    conn: &Conn,
    queue: &str,
    limit: i64,
    worker_id: &str,
) -> Result<Vec<ClaimedJob>> {
    let stmt = conn.prepared(JOBS_CLAIM).await?;
    let rows = conn
        .client()
        .query(&stmt, &[&queue, &limit, &worker_id])
        .await
        .db()?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let payload: Json<Box<RawValue>> = row.get(4);
        jobs.push(ClaimedJob {
            id: row.get(0),
            queue: queue.to_string(),
            kind: row.get(1),
            attempt: row.get(2),
            timeout_ms: row.get(3),
            payload: payload.0,
            run_at: row.get::<_, DateTime<Utc>>(5),
            created_at: row.get::<_, DateTime<Utc>>(6),
            priority: row.get(7),
            ctid: row.get(8),
        });
    }
    // RETURNING order is arbitrary; a worker that starts them in this order
    // keeps the queue's order.
    jobs.sort_unstable_by_key(|j| (j.priority, j.run_at, j.id));
    Ok(jobs)
}
