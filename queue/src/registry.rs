//! The worker registry: one row per worker process, which is also the lease
//! on all of that process's jobs. One heartbeat statement extends it,
//! however many jobs the process holds.

use std::time::Duration;

use tokio_postgres::GenericClient;

use crate::conn::Conn;
use crate::error::{DbResultExt, Result};
use crate::job::JobId;
use crate::schema::Schema;

/// Who a worker is, as recorded in the registry.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub version: String,
    pub queues: Vec<String>,
    pub slots: i32,
}

const WORKER_REGISTER: &str = "
INSERT INTO {s}.workers (id, host, pid, version, queues, slots, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + $7 * interval '1 millisecond')
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at, busy = 0";

/// Adds (or revives) the worker's row with a lease of `ttl`.
pub async fn worker_register(conn: &Conn, me: &WorkerInfo, ttl: Duration) -> Result<()> {
    let stmt = conn.prepared(WORKER_REGISTER).await?;
    conn.client()
        .execute(
            &stmt,
            &[
                &me.id,
                &me.host,
                &me.pid,
                &me.version,
                &me.queues,
                &me.slots,
                &millis(ttl),
            ],
        )
        .await
        .db()?;
    Ok(())
}

const WORKER_HEARTBEAT: &str = "
WITH hb AS (
    UPDATE {s}.workers
    SET heartbeat_at = now(), expires_at = now() + $2 * interval '1 millisecond', busy = $3
    WHERE id = $1
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM hb),
       EXISTS (SELECT 1 FROM {s}.workers WHERE expires_at < now() AND id <> $1),
       ARRAY(SELECT id FROM {s}.jobs WHERE lease_owner = $1 AND cancel_requested)";

/// What a heartbeat learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// False if this worker's row was gone: it was declared dead and its jobs
    /// were reclaimed. Stop them, then register again.
    pub alive: bool,
    /// Another worker's lease has run out: run the reaper.
    pub others_expired: bool,
    /// Jobs of this worker that someone asked to cancel.
    pub cancel: Vec<JobId>,
}

/// Extends this worker's lease (and so the leases of all its jobs) by `ttl`.
pub async fn worker_heartbeat(
    conn: &Conn,
    worker_id: &str,
    ttl: Duration,
    busy: i32,
) -> Result<Heartbeat> {
    let stmt = conn.prepared(WORKER_HEARTBEAT).await?;
    let row = conn
        .client()
        .query_one(&stmt, &[&worker_id, &millis(ttl), &busy])
        .await
        .db()?;
    Ok(Heartbeat {
        alive: row.get(0),
        others_expired: row.get(1),
        cancel: row.get(2),
    })
}

const WORKER_DEREGISTER: &str = "DELETE FROM {s}.workers WHERE id = $1";

/// Removes the worker's row on an orderly exit (after releasing its jobs).
pub async fn worker_deregister(conn: &Conn, worker_id: &str) -> Result<()> {
    let stmt = conn.prepared(WORKER_DEREGISTER).await?;
    conn.client().execute(&stmt, &[&worker_id]).await.db()?;
    Ok(())
}

/// A registry row as shown to operators.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub version: String,
    pub queues: Vec<String>,
    pub slots: i32,
    pub busy: i32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Live workers (lease not expired), oldest first.
pub async fn workers_list(client: &impl GenericClient, schema: &Schema) -> Result<Vec<WorkerRow>> {
    let rows = client
        .query(
            &schema.sql(
                "SELECT id, host, pid, version, queues, slots, busy, started_at, heartbeat_at, expires_at
                 FROM {s}.workers WHERE expires_at > now() ORDER BY started_at, id",
            ),
            &[],
        )
        .await
        .db()?;
    Ok(rows
        .iter()
        .map(|r| WorkerRow {
            id: r.get(0),
            host: r.get(1),
            pid: r.get(2),
            version: r.get(3),
            queues: r.get(4),
            slots: r.get(5),
            busy: r.get(6),
            started_at: r.get(7),
            heartbeat_at: r.get(8),
            expires_at: r.get(9),
        })
        .collect())
}

pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
