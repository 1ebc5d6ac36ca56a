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
    /// Mean run time of jobs that succeeded in the last minute.
    pub run_avg_1m_s: Option<f64>,
    pub max_running: Option<i32>,
    pub rate_per_sec: Option<f64>,
    /// Of `available`: jobs held back by an earlier job of their ordering
    /// key (they cannot run yet, whatever the fleet's size).
    pub ordered_waiting: i64,
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
    /// Jobs that could start now if there were slots: due, in queues not
    /// paused, not held back by their ordering key, nor by the queue's
    /// `max_running` (the scaling backlog).
    pub fn available(&self) -> i64 {
        self.queues
            .iter()
            .filter(|q| !q.paused)
            .map(|q| {
                let free = q.available - q.ordered_waiting;
                match q.max_running {
                    Some(max) => free.min((i64::from(max) - q.running).max(0)),
                    None => free,
                }
            })
            .sum()
    }
    pub fn running(&self) -> i64 {
        self.queues.iter().map(|q| q.running).sum()
    }
}

// Each part reads only what an index can answer: available jobs through the
// partial claim index (queue, priority, run_at, id), running ones through the
// (small) running set, failures through the partial index on failed jobs,
// recent successes through the BRIN index on finish time.
const STATS: &str = "
WITH avail AS (
    SELECT queue,
           count(*) FILTER (WHERE run_at <= now()) AS available,
           count(*) FILTER (WHERE run_at > now()) AS scheduled,
           min(run_at) FILTER (WHERE run_at <= now()) AS oldest_due
    FROM {s}.jobs WHERE state = 'available' GROUP BY queue
), run AS (
    SELECT queue, count(*) AS running FROM {s}.jobs WHERE state = 'running' GROUP BY queue
), failed AS (
    SELECT queue, count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute') AS failed_1m
    FROM {s}.jobs_done WHERE state <> 'succeeded' GROUP BY queue
), ordered AS (
    -- Only jobs with an ordering key (a partial index holds them).
    SELECT j.queue, count(*) AS waiting FROM {s}.jobs j
    WHERE j.ordering_key IS NOT NULL AND j.state = 'available' AND j.run_at <= now()
      AND EXISTS (SELECT 1 FROM {s}.jobs o
                  WHERE o.queue = j.queue AND o.ordering_key = j.ordering_key AND o.id < j.id)
    GROUP BY j.queue
), recent AS (
    SELECT queue, count(*) AS succeeded_1m,
           avg(EXTRACT(EPOCH FROM finished_at - started_at))::float8 AS run_avg
    FROM {s}.jobs_finished WHERE finished_at > now() - interval '1 minute' AND state = 'succeeded'
    GROUP BY queue
)
SELECT q.name, q.paused, COALESCE(a.available, 0), COALESCE(a.scheduled, 0), COALESCE(r.running, 0),
       COALESCE(f.dead, 0), COALESCE(EXTRACT(EPOCH FROM now() - a.oldest_due)::float8, 0),
       COALESCE(c.succeeded_1m, 0), COALESCE(f.failed_1m, 0), q.max_running, now(), c.run_avg,
       q.rate_per_sec, COALESCE(o.waiting, 0)
FROM {s}.queues q
LEFT JOIN ordered o ON o.queue = q.name
LEFT JOIN avail a ON a.queue = q.name
LEFT JOIN run r ON r.queue = q.name
LEFT JOIN failed f ON f.queue = q.name
LEFT JOIN recent c ON c.queue = q.name
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
                run_avg_1m_s: r.get(11),
                rate_per_sec: r.get(12),
                ordered_waiting: r.get(13),
            })
            .collect(),
        fleet: FleetStats {
            workers: fleet.get(0),
            slots: fleet.get(1),
            busy: fleet.get(2),
        },
    })
}

/// Upper bounds (seconds) of the run-time histogram buckets.
pub const RUN_BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// What happened in a time window, per queue: for counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowCounts {
    pub queue: String,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Finished jobs whose run time is at most each bound of [`RUN_BUCKETS`] (cumulative).
    pub run_buckets: [u64; 12],
    pub run_count: u64,
    pub run_sum_s: f64,
}

/// Jobs finished in [from, to), per queue, with run-time buckets.
const WINDOW: &str = "
SELECT queue,
       count(*) FILTER (WHERE state = 'succeeded'),
       count(*) FILTER (WHERE state = 'dead'),
       count(*) FILTER (WHERE state = 'cancelled'),
       ARRAY[count(*) FILTER (WHERE d <= 0.005), count(*) FILTER (WHERE d <= 0.025),
             count(*) FILTER (WHERE d <= 0.1), count(*) FILTER (WHERE d <= 0.5),
             count(*) FILTER (WHERE d <= 1), count(*) FILTER (WHERE d <= 2.5),
             count(*) FILTER (WHERE d <= 5), count(*) FILTER (WHERE d <= 10),
             count(*) FILTER (WHERE d <= 30), count(*) FILTER (WHERE d <= 60),
             count(*) FILTER (WHERE d <= 300), count(*) FILTER (WHERE d <= 1800)],
       count(d), COALESCE(sum(d), 0)::float8
FROM (SELECT queue, state, EXTRACT(EPOCH FROM finished_at - started_at)::float8 AS d
      FROM {s}.jobs_finished WHERE finished_at >= $1 AND finished_at < $2) w
GROUP BY queue";

/// Counts jobs finished in [from, to) (use windows that tile, ending a
/// little in the past so late commits are not missed).
pub async fn stats_window(
    client: &impl GenericClient,
    schema: &Schema,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<WindowCounts>> {
    let rows = client
        .query(&schema.sql(WINDOW), &[&from, &to])
        .await
        .db()?;
    Ok(rows
        .iter()
        .map(|r| {
            let buckets: Vec<i64> = r.get(4);
            let mut run_buckets = [0u64; 12];
            for (i, b) in buckets.iter().enumerate().take(12) {
                run_buckets[i] = *b as u64;
            }
            WindowCounts {
                queue: r.get(0),
                succeeded: r.get::<_, i64>(1) as u64,
                dead: r.get::<_, i64>(2) as u64,
                cancelled: r.get::<_, i64>(3) as u64,
                run_buckets,
                run_count: r.get::<_, i64>(5) as u64,
                run_sum_s: r.get(6),
            }
        })
        .collect())
}

/// Jobs with ids in (after, upto], per queue. Ids grow with every enqueue,
/// so successive calls over adjacent ranges count each job once; a job is
/// missed only if its transaction had not committed when its range was
/// counted (see the controller's stats refresher for how it picks `upto`).
pub async fn stats_enqueued_between(
    client: &impl GenericClient,
    schema: &Schema,
    after: i64,
    upto: i64,
) -> Result<Vec<(String, u64)>> {
    let rows = client
        .query(
            &schema.sql(
                "SELECT queue, count(*) FROM (
                     SELECT queue FROM {s}.jobs WHERE id > $1 AND id <= $2
                     UNION ALL SELECT queue FROM {s}.jobs_finished
                     WHERE id > $1 AND id <= $2 AND bucket BETWEEN $1 >> 10 AND $2 >> 10) x
                 GROUP BY queue",
            ),
            &[&after, &upto],
        )
        .await
        .db()?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect())
}

/// The highest job id so far (0 if none): where enqueue counting starts.
pub async fn stats_max_job_id(client: &impl GenericClient, schema: &Schema) -> Result<i64> {
    let row = client
        .query_one(
            &schema.sql(
                "SELECT GREATEST((SELECT max(id) FROM {s}.jobs), {s}.jobs_finished_max_id(), 0)::int8",
            ),
            &[],
        )
        .await
        .db()?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_leaves_out_what_no_bigger_fleet_could_start() {
        let q = |name: &str, available, running, max_running, ordered_waiting| QueueStats {
            name: name.into(),
            available,
            running,
            max_running,
            ordered_waiting,
            ..Default::default()
        };
        let mut stats = Stats {
            queues: vec![
                q("plain", 10, 0, None, 0),
                q("keyed", 10, 1, None, 7),
                q("limited", 10, 3, Some(5), 0),
                q("full", 10, 6, Some(5), 0),
            ],
            ..Default::default()
        };
        assert_eq!(stats.available(), 10 + 3 + 2);
        stats.queues[0].paused = true;
        assert_eq!(stats.available(), 3 + 2);
    }
}
