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

/// The fast path, for queues without fleet-wide limits. Ordering keys: a
/// job with a key is taken only when no earlier live job of its key exists
/// (waiting, retrying or running), and, unless the queue skips past dead
/// jobs, no earlier dead one. Jobs without a key pay one NULL test. A
/// limited queue claims nothing here and gets one marker row back (id NULL)
/// telling the caller to use [`JOBS_CLAIM_LIMITED`].
///
/// The jobs are picked (and locked) in a sub-select whose addresses the
/// update takes as one array: written as a CTE, the picked addresses were
/// copied into a tuplestore first, about 2,000 more instructions per job
/// of 57,500 (callgrind, claims of 1,000). The sub-select names its rows
/// `p`: a `j.` in it would mean the row being updated, and make it run
/// once per row.
///
/// The update's guard is `state <> 'running'` on purpose (the CHECK on
/// `jobs` leaves `available` as the only other state): written as
/// `j.state = 'available'` it matches the claim index's predicate, and when
/// the statistics make `jobs` look nearly empty the planner then finds the
/// picked rows by walking the whole claim index, filtering on ctid, instead
/// of a TID scan. `drove bench drain` hit that in 3 of 20 drains (each claim
/// of 1,000 jobs ~900 ms, 200,000 jobs in 61 s instead of 4); with such
/// statistics forced on 200,000 jobs, one claim took 1,508 ms, and 10.5 ms
/// with a guard no index can serve (first `state::text`, whose cast cost
/// 340 instructions per job). The rows picked are locked by this statement,
/// so the guard is only a belt and braces.
const JOBS_CLAIM: &str = "
WITH me AS (
    SELECT id FROM {s}.workers WHERE id = $3 AND expires_at > now() FOR KEY SHARE
), qrow AS (
    SELECT timeout_ms, ordering_on_dead = 'skip' AS skip_dead,
           (max_running IS NOT NULL OR rate_per_sec IS NOT NULL) AS limited
    FROM {s}.queues WHERE name = $1 AND NOT paused
), q AS (
    SELECT timeout_ms, skip_dead FROM qrow WHERE NOT limited
), claimed AS (
    UPDATE {s}.jobs j
    SET state = 'running', attempt = j.attempt + 1, lease_owner = $3, started_at = now()
    WHERE j.ctid = ANY(ARRAY(
            SELECT p.ctid FROM {s}.jobs p
            WHERE p.queue = $1 AND p.state = 'available' AND p.run_at <= now()
              AND EXISTS (SELECT 1 FROM me) AND EXISTS (SELECT 1 FROM q)
              AND (p.ordering_key IS NULL OR (
                  NOT EXISTS (SELECT 1 FROM {s}.jobs o
                              WHERE o.queue = p.queue AND o.ordering_key = p.ordering_key AND o.id < p.id)
                  AND ((SELECT skip_dead FROM q) OR NOT EXISTS (
                              SELECT 1 FROM {s}.jobs_done d
                              WHERE d.queue = p.queue AND d.ordering_key = p.ordering_key
                                AND d.state = 'dead' AND d.id < p.id))))
            ORDER BY p.priority, p.run_at, p.id
            LIMIT $2
            FOR UPDATE SKIP LOCKED))
      AND j.state <> 'running'
    RETURNING j.id, j.kind, j.attempt, COALESCE(j.timeout_ms, (SELECT timeout_ms FROM q)) AS timeout_ms,
              j.payload, j.run_at, j.created_at, j.priority, j.ctid
)
SELECT * FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM qrow WHERE limited AND EXISTS (SELECT 1 FROM me)";

/// Queues with `max_running` or `rate_per_sec`: the claim locks the queue's
/// row, counts and spends tokens with a fresh snapshot (migration 004), so
/// the limits hold across any number of workers. Its last row (id NULL)
/// says whether the limit held the claim back, and for how long to wait.
const JOBS_CLAIM_LIMITED: &str =
    "SELECT id, kind, attempt, timeout_ms, payload, run_at, created_at, priority, job_ctid, held_back, wait_ms
     FROM {s}.jobs_claim_limited($1, $2::int4, $3)";

/// What a claim got.
#[derive(Debug, Default)]
pub struct Claim {
    /// In priority, due-time, id order.
    pub jobs: Vec<ClaimedJob>,
    /// Set when a fleet-wide limit (max running, rate) held the claim back:
    /// try again after this long, not on the next notification.
    pub held_back: Option<std::time::Duration>,
}

/// Leases up to `limit` due jobs of `queue` to `worker_id`, in priority,
/// then due-time, then id order. Returns fewer (or none) when the queue has
/// fewer due jobs, is paused, the worker's registry row has expired, or a
/// fleet-wide limit holds it back (see [`jobs_claim_hinted`]).
pub async fn jobs_claim(
    conn: &Conn,
    queue: &str,
    limit: i64,
    worker_id: &str,
) -> Result<Vec<ClaimedJob>> {
    Ok(jobs_claim_hinted(conn, queue, limit, worker_id).await?.jobs)
}

/// [`jobs_claim`], also saying whether a fleet-wide limit held it back.
pub async fn jobs_claim_hinted(
    conn: &Conn,
    queue: &str,
    limit: i64,
    worker_id: &str,
) -> Result<Claim> {
    let stmt = conn.prepared(JOBS_CLAIM).await?;
    let rows = conn
        .client()
        .query(&stmt, &[&queue, &limit, &worker_id])
        .await
        .db()?;
    let limited = rows
        .last()
        .is_some_and(|r| r.get::<_, Option<i64>>(0).is_none());
    let mut claim = if limited {
        let stmt = conn.prepared(JOBS_CLAIM_LIMITED).await?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = conn
            .client()
            .query(&stmt, &[&queue, &limit, &worker_id])
            .await
            .db()?;
        let mut claim = Claim::default();
        for row in &rows {
            if row.get::<_, Option<i64>>(0).is_none() {
                if row.get::<_, bool>(9) {
                    let ms: i32 = row.get(10);
                    claim.held_back =
                        Some(std::time::Duration::from_millis(ms.clamp(1, 60_000) as u64));
                }
            } else {
                claim.jobs.push(job_from_row(queue, row));
            }
        }
        claim
    } else {
        Claim {
            jobs: rows.iter().map(|r| job_from_row(queue, r)).collect(),
            held_back: None,
        }
    };
    // RETURNING order is arbitrary; a worker that starts them in this order
    // keeps the queue's order.
    claim
        .jobs
        .sort_unstable_by_key(|j| (j.priority, j.run_at, j.id));
    Ok(claim)
}

fn job_from_row(queue: &str, row: &tokio_postgres::Row) -> ClaimedJob {
    let payload: Json<Box<RawValue>> = row.get(4);
    ClaimedJob {
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
    }
}
