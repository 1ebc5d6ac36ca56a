//! Queue and fleet statistics: what `drove stats`, the controller's metrics
//! and the scaling policy read. One statement reads everything.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::error::{DbResultExt, Result};
use crate::schema::Schema;

/// One queue's depth by state.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QueueStats {
    pub name: String,
    pub paused: bool,
    /// Due now, waiting for a worker.
    pub available: i64,
    /// Waiting for a future `run_at` (including retries in backoff).
    pub scheduled: i64,
    pub running: i64,
    pub dead: i64,
    /// Age in seconds of the longest-waiting due job (0 if none).
    pub oldest_wait_s: f64,
    /// Succeeded in the last minute.
    pub succeeded_1m: i64,
    /// Dead or cancelled in the last minute.
    pub failed_1m: i64,
    pub max_running: Option<i32>,
}

/// The worker fleet, from live registry rows.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FleetStats {
    pub workers: i64,
    pub slots: i64,
    pub busy: i64,
}

/// A snapshot of every queue and the fleet.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    pub at: Option<DateTime<Utc>>,
    pub queues: Vec<QueueStats>,
    pub fleet: FleetStats,
}

impl Stats {
    pub fn available(&self) -> i64 {
        self.queues
            .iter()
            .filter(|q| !q.paused)
            .map(|q| q.available)
            .sum()
    }
    pub fn running(&self) -> i64 {
        self.queues.iter().map(|q| q.running).sum()
    }
}

const STATS: &str = "
WITH live AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'available' AND run_at <= now()) AS available,
           count(*) FILTER (WHERE state = 'available' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           min(run_at) FILTER (WHERE state = 'available' AND run_at <= now()) AS oldest_due
    FROM {s}.jobs GROUP BY queue
), failed AS (
    SELECT queue, count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute') AS failed_1m
    FROM {s}.jobs_done WHERE state <> 'succeeded' GROUP BY queue
), recent AS (
    SELECT queue, count(*) AS succeeded_1m
    FROM {s}.jobs_done WHERE finished_at > now() - interval '1 minute' AND state = 'succeeded'
    GROUP BY queue
)
SELECT q.name, q.paused, COALESCE(l.available, 0), COALESCE(l.scheduled, 0), COALESCE(l.running, 0),
       COALESCE(f.dead, 0), COALESCE(EXTRACT(EPOCH FROM now() - l.oldest_due)::float8, 0),
       COALESCE(r.succeeded_1m, 0), COALESCE(f.failed_1m, 0), q.max_running, now()
FROM {s}.queues q
LEFT JOIN live l ON l.queue = q.name
LEFT JOIN failed f ON f.queue = q.name
LEFT JOIN recent r ON r.queue = q.name
ORDER BY q.name";

const FLEET: &str = "
SELECT count(*), COALESCE(sum(slots), 0)::int8, COALESCE(sum(busy), 0)::int8
FROM {s}.workers WHERE expires_at > now()";

/// Reads every queue's depth and the fleet's size. Cost grows with the
/// number of live jobs (a scan of `jobs`); the controller caches the result.
pub async fn stats_read(client: &impl GenericClient, schema: &Schema) -> Result<Stats> {
    let rows = client.query(&schema.sql(STATS), &[]).await.db()?;
    let fleet = client.query_one(&schema.sql(FLEET), &[]).await.db()?;
    let at = rows.first().map(|r| r.get(10));
    Ok(Stats {
        at,
        queues: rows
            .iter()
            .map(|r| QueueStats {
                name: r.get(0),
                paused: r.get(1),
                available: r.get(2),
                scheduled: r.get(3),
                running: r.get(4),
                dead: r.get(5),
                oldest_wait_s: r.get::<_, f64>(6).max(0.0),
                succeeded_1m: r.get(7),
                failed_1m: r.get(8),
                max_running: r.get(9),
            })
            .collect(),
        fleet: FleetStats {
            workers: fleet.get(0),
            slots: fleet.get(1),
            busy: fleet.get(2),
        },
    })
}
