//! Reclaiming the jobs of dead workers.
//!
//! A worker whose registry row has expired (no heartbeat for a lease TTL) is
//! deleted, and in the same transaction its running jobs go back to
//! `available` (due at once; the lost attempt counts) or to `dead` when their
//! attempts are used up, so a job that kills its worker cannot loop forever.
//!
//! Safe from any number of processes at once: the DELETE serializes them on
//! the worker rows, and the reclaim runs as a second statement of the same
//! transaction, so it sees jobs claimed by a claim that committed while the
//! DELETE waited for it (see `claim`).

use tokio_postgres::Client;

use crate::error::{DbResultExt, Result};
use crate::schema::Schema;

const WORKERS_DELETE_EXPIRED: &str = "DELETE FROM {s}.workers WHERE expires_at < now() RETURNING id";

const LEASES_RECLAIM: &str = "
WITH lost AS (
    SELECT j.id, j.attempt >= COALESCE(j.max_attempts, q.max_attempts) AS final
    FROM {s}.jobs j
    JOIN {s}.queues q ON q.name = j.queue
    WHERE j.state = 'running'
      AND (j.lease_owner = ANY($1)
           OR NOT EXISTS (SELECT 1 FROM {s}.workers w WHERE w.id = j.lease_owner))
    FOR UPDATE OF j
), requeued AS (
    UPDATE {s}.jobs j
    SET state = 'available', run_at = now(), lease_owner = NULL, cancel_requested = false,
        errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(),
                 'error', 'worker lost: lease expired', 'worker', j.lease_owner)
    FROM lost
    WHERE j.id = lost.id AND NOT lost.final
    RETURNING j.id, j.queue
), dead AS (
    DELETE FROM {s}.jobs j USING lost
    WHERE j.id = lost.id AND lost.final
    RETURNING j.*
), buried AS (
    INSERT INTO {s}.jobs_done (id, queue, kind, state, priority, attempt, max_attempts, run_at,
                               created_at, started_at, finished_at, worker, unique_key, ordering_key,
                               payload, progress, result, errors)
    SELECT id, queue, kind, 'dead', priority, attempt, max_attempts, run_at, created_at, started_at,
           now(), lease_owner, unique_key, ordering_key, payload, progress, NULL,
           errors || jsonb_build_object('attempt', attempt, 'at', now(),
                     'error', 'worker lost: lease expired', 'worker', lease_owner)
    FROM dead
    RETURNING id
), woken AS (
    SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n FROM (SELECT DISTINCT queue FROM requeued) d
)
SELECT (SELECT count(*) FROM requeued), (SELECT count(*) FROM buried), (SELECT n FROM woken)";

/// What a reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Workers whose lease had expired.
    pub workers: Vec<String>,
    /// Their jobs put back to `available`.
    pub requeued: i64,
    /// Their jobs that had used up their attempts.
    pub dead: i64,
}

/// Deletes expired workers and reclaims their jobs. With `sweep_orphans`, it
/// also reclaims running jobs whose owner has no registry row at all (a
/// slower scan, for the controller's periodic pass).
pub async fn leases_reclaim_expired(client: &mut Client, schema: &Schema, sweep_orphans: bool) -> Result<Reaped> {
    let tx = client.transaction().await.db()?;
    let workers: Vec<String> = tx
        .query(&schema.sql(WORKERS_DELETE_EXPIRED), &[])
        .await
        .db()?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if workers.is_empty() && !sweep_orphans {
        tx.commit().await.db()?;
        return Ok(Reaped::default());
    }
    let row = tx.query_one(&schema.sql(LEASES_RECLAIM), &[&workers]).await.db()?;
    tx.commit().await.db()?;
    Ok(Reaped { workers, requeued: row.get(0), dead: row.get(1) })
}
