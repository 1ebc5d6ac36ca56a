//! Reading jobs for operators: one job by id, or a filtered list.

use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::error::{DbResultExt, Error, Result};
use crate::job::{JobId, JobInfo, JobState};
use crate::schema::Schema;

/// Live and finished jobs as one relation with the same columns.
/// `bucket_cond` picks the rows of `jobs_succeeded` to unnest (by `b.bucket`,
/// the job id >> 10): without it every batch row would be read.
fn all_jobs(bucket_cond: &str) -> String {
    format!(
        "(
    SELECT j.id, j.queue, j.kind, j.state::text AS state, j.priority, j.attempt,
           COALESCE(j.max_attempts, q.max_attempts) AS max_attempts, j.run_at, j.created_at,
           j.started_at, NULL::timestamptz AS finished_at, j.lease_owner AS worker, j.unique_key,
           j.ordering_key, j.cancel_requested, j.payload, j.progress, NULL::jsonb AS result, j.errors
    FROM {{s}}.jobs j LEFT JOIN {{s}}.queues q ON q.name = j.queue
    UNION ALL
    SELECT d.id, d.queue, d.kind, d.state::text, d.priority, d.attempt,
           COALESCE(d.max_attempts, q.max_attempts), d.run_at, d.created_at,
           d.started_at, d.finished_at, d.worker, d.unique_key,
           d.ordering_key, false, d.payload, d.progress, d.result, d.errors
    FROM {{s}}.jobs_done d LEFT JOIN {{s}}.queues q ON q.name = d.queue
    UNION ALL
    SELECT u.id, b.queue, u.kind, 'succeeded', u.priority, u.attempt,
           COALESCE(u.max_attempts, q.max_attempts), u.run_at, u.created_at,
           u.started_at, b.finished_at, b.worker, u.unique_key,
           u.ordering_key, false, u.payload, u.progress, u.result, u.errors
    FROM {{s}}.jobs_succeeded b CROSS JOIN LATERAL unnest(b.jobs) u
    LEFT JOIN {{s}}.queues q ON q.name = b.queue
    WHERE {bucket_cond}
) AS a"
    )
}

fn job_from_row(r: &Row) -> JobInfo {
    let state: String = r.get(3);
    JobInfo {
        id: r.get(0),
        queue: r.get(1),
        kind: r.get(2),
        state: state.parse().unwrap_or(JobState::Available),
        priority: r.get(4),
        attempt: r.get(5),
        max_attempts: r.get::<_, Option<i32>>(6).unwrap_or(0),
        run_at: r.get(7),
        created_at: r.get(8),
        started_at: r.get(9),
        finished_at: r.get(10),
        worker: r.get(11),
        unique_key: r.get(12),
        ordering_key: r.get(13),
        cancel_requested: r.get(14),
        payload: r.get(15),
        progress: r.get(16),
        result: r.get(17),
        errors: r.get(18),
    }
}

/// One job, live or finished.
pub async fn job_get(client: &impl GenericClient, schema: &Schema, id: JobId) -> Result<JobInfo> {
    let all = all_jobs("b.bucket = $1 >> 10");
    let sql = schema.sql(&format!("SELECT * FROM {all} WHERE a.id = $1"));
    let row = client
        .query_typed_opt(&sql, &[(&id, Type::INT8)])
        .await
        .db()?;
    row.map(|r| job_from_row(&r)).ok_or(Error::JobNotFound(id))
}

/// Filters for [`jobs_list`]; empty means all.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub state: Option<JobState>,
    /// Only jobs with (true) or without (false) a failed attempt on record.
    pub failed: Option<bool>,
    /// Only jobs with an id below this (pagination: pass the last id seen).
    pub before_id: Option<JobId>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<i64>,
}

/// Jobs matching the filter, newest first.
pub async fn jobs_list(
    client: &impl GenericClient,
    schema: &Schema,
    f: &JobFilter,
) -> Result<Vec<JobInfo>> {
    let limit = f.limit.unwrap_or(50).clamp(1, 1000);
    let state = f.state.map(|s| s.as_str().to_string());
    // Each branch only reads the table that can hold the requested state.
    let live = f.state.is_none_or(|s| !s.is_finished());
    let done = f.state.is_none_or(|s| s.is_finished());
    let mut branches = Vec::new();
    let filter = "($1::text IS NULL OR x.queue = $1) AND ($2::text IS NULL OR x.kind = $2)
                  AND ($3::text IS NULL OR x.state::text = $3) AND ($4::int8 IS NULL OR x.id < $4)
                  AND ($6::bool IS NULL OR (x.errors <> '[]'::jsonb) = $6)";
    // Waiting jobs that failed before (the dashboard's "will retry" list)
    // are all in the index of jobs due later than their creation (retries,
    // and jobs scheduled ahead): a retry, a requeue after a lost worker and
    // an operator's retry each set run_at to now() or later. Spelling out
    // that index's predicate lets the planner read it instead of walking
    // every waiting job of a backlog. (A database clock stepped back by
    // more than a job's age could hide it from this list until it runs.)
    let live_only = if f.failed == Some(true) && f.state == Some(JobState::Available) {
        " AND x.state = 'available' AND x.run_at > x.created_at"
    } else {
        ""
    };
    if live {
        branches.push(format!(
            "(SELECT x.id FROM {{s}}.jobs x WHERE {filter}{live_only} ORDER BY x.id DESC LIMIT $5)"
        ));
    }
    if done {
        branches.push(format!(
            "(SELECT x.id FROM {{s}}.jobs_done x WHERE {filter} ORDER BY x.id DESC LIMIT $5)"
        ));
    }
    if f.state.is_none_or(|s| s == JobState::Succeeded) {
        // Successes recorded in batches: newest bucket first (its index),
        // sorted within each bucket, so the walk stops after $5 matches.
        branches.push(
            "(SELECT x.id FROM {s}.jobs_succeeded b CROSS JOIN LATERAL unnest(b.jobs) x
              WHERE ($1::text IS NULL OR b.queue = $1) AND ($2::text IS NULL OR x.kind = $2)
                AND ($3::text IS NULL OR $3 = 'succeeded')
                AND ($4::int8 IS NULL OR (b.bucket <= $4 >> 10 AND x.id < $4))
                AND ($6::bool IS NULL OR (x.errors <> '[]'::jsonb) = $6)
              ORDER BY b.bucket DESC, x.id DESC LIMIT $5)"
                .to_string(),
        );
    }
    let all = all_jobs("b.bucket = ANY(ARRAY(SELECT id >> 10 FROM ids))");
    let sql = schema.sql(&format!(
        "WITH ids AS ({}) SELECT * FROM {all} WHERE a.id IN (SELECT id FROM ids) ORDER BY a.id DESC LIMIT $5",
        branches.join(" UNION ALL ")
    ));
    let params: [(&(dyn ToSql + Sync), Type); 6] = [
        (&f.queue, Type::TEXT),
        (&f.kind, Type::TEXT),
        (&state, Type::TEXT),
        (&f.before_id, Type::INT8),
        (&limit, Type::INT8),
        (&f.failed, Type::BOOL),
    ];
    let rows = client.query_typed(&sql, &params).await.db()?;
    Ok(rows.iter().map(job_from_row).collect())
}

/// Timing of finished jobs, for summaries: per job, queue wait and run time.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    /// Seconds from due to (last) start, one per finished job.
    pub wait_s: Vec<f64>,
    /// Seconds from (last) start to finish, one per finished job.
    pub run_s: Vec<f64>,
}

/// Wait and run times of the given finished jobs.
pub async fn jobs_timings(
    client: &impl GenericClient,
    schema: &Schema,
    ids: &[JobId],
) -> Result<Timings> {
    let rows = client
        .query_typed(
            &schema.sql(
                "SELECT state::text, EXTRACT(EPOCH FROM started_at - run_at)::float8,
                        EXTRACT(EPOCH FROM finished_at - started_at)::float8
                 FROM {s}.jobs_finished WHERE id = ANY($1) AND bucket = ANY({s}.buckets($1))",
            ),
            &[(&ids, Type::INT8_ARRAY)],
        )
        .await
        .db()?;
    let mut t = Timings::default();
    for r in rows {
        match r.get::<_, &str>(0) {
            "succeeded" => t.succeeded += 1,
            "dead" => t.dead += 1,
            _ => t.cancelled += 1,
        }
        if let (Some(w), Some(run)) = (r.get::<_, Option<f64>>(1), r.get::<_, Option<f64>>(2)) {
            t.wait_s.push(w.max(0.0));
            t.run_s.push(run.max(0.0));
        }
    }
    Ok(t)
}

/// Counts of the given jobs by state (finished ones included).
pub async fn jobs_count_by_state(
    client: &impl GenericClient,
    schema: &Schema,
    ids: &[JobId],
) -> Result<Vec<(JobState, i64)>> {
    let rows = client
        .query_typed(
            &schema.sql(
                "SELECT state::text, count(*) FROM (
                     SELECT CASE WHEN state = 'available' AND run_at > now() THEN 'available' ELSE state::text END AS state
                     FROM {s}.jobs WHERE id = ANY($1)
                     UNION ALL SELECT state::text FROM {s}.jobs_finished
                     WHERE id = ANY($1) AND bucket = ANY({s}.buckets($1))) x
                 GROUP BY 1",
            ),
            &[(&ids, Type::INT8_ARRAY)],
        )
        .await
        .db()?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get::<_, &str>(0).parse().ok()?, r.get(1))))
        .collect())
}
