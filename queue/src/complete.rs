//! Recording what happened to leased jobs: success, failure (retry or dead),
//! cancellation, release on shutdown, progress.
//!
//! Every statement is fenced on (job id, attempt, lease owner): a worker
//! that lost its lease (partitioned, paused, declared dead) and comes back
//! late changes nothing, so a newer attempt is never overwritten and each
//! job's completion is recorded exactly once. Each returns the ids it
//! applied to; the rest were fenced off.
//!
//! A job has a lease owner exactly while it is `running` (a CHECK constraint
//! on `jobs`), so the owner test is also the state test, and the statements
//! do not repeat `state = 'running'`. (When there was a partial index on
//! running jobs, that condition let the planner join it against the
//! unnested batch in a nested loop, O(batch²): 178 µs per job at batch
//! 1000.) Successes find their rows by the address the claim returned (a
//! TID scan), and by primary key whatever has moved since.
//!
//! The statements are functions of migration 006 (successes: of 009 and
//! 010, which fences a batch without results with one TID scan and a
//! hashed (id, attempt) test), run with sequential scans off: each looks
//! the batch's rows up by address or primary key, whatever the statistics
//! say (they once made the planner scan all of `jobs` per batch: 60 ms per
//! completion of 500 instead of about 3).
//! `lifecycle.rs` checks that no outcome scans `jobs`.

use serde_json::value::RawValue;
use tokio_postgres::types::Json;

use crate::conn::Conn;
use crate::error::{DbResultExt, Result};
use crate::job::JobId;
use crate::tid::Tid;

/// Successes found at the address their claim returned. The accepted
/// ids come back as one array: one row to send, not one per job.
const JOBS_COMPLETE_AT: &str = "SELECT {s}.jobs_complete_at($1, $2, $3, $4, $5)";

/// Successes found by id (their row moved since the claim, or no address).
const JOBS_COMPLETE_MANY: &str = "SELECT {s}.jobs_complete_by_id($1, $2, $3, $4)";

/// One finished success: (id, attempt) as claimed, and the handler's result.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: JobId,
    pub attempt: i32,
    pub result: Option<Box<RawValue>>,
    /// The claimed row's address ([`crate::ClaimedJob::ctid`]), if known.
    pub ctid: Option<Tid>,
}

impl From<&crate::ClaimedJob> for Completion {
    /// The success of a claimed job, with no result, at its claimed address.
    fn from(job: &crate::ClaimedJob) -> Completion {
        Completion {
            id: job.id,
            attempt: job.attempt,
            result: None,
            ctid: Some(job.ctid),
        }
    }
}

/// Records successes: in one statement when every row is where its claim
/// left it, plus one by id for those that moved. Returns the ids accepted.
pub async fn jobs_complete_many(
    conn: &Conn,
    worker_id: &str,
    done: &[Completion],
) -> Result<Vec<JobId>> {
    let (at, rest): (Vec<&Completion>, Vec<&Completion>) =
        done.iter().partition(|c| c.ctid.is_some());
    let mut accepted = Vec::new();
    if !at.is_empty() {
        let ctids: Vec<Tid> = at.iter().filter_map(|c| c.ctid).collect();
        let ids: Vec<JobId> = at.iter().map(|c| c.id).collect();
        let attempts: Vec<i32> = at.iter().map(|c| c.attempt).collect();
        let results: Vec<Option<Json<&RawValue>>> =
            at.iter().map(|c| c.result.as_deref().map(Json)).collect();
        let stmt = conn.prepared(JOBS_COMPLETE_AT).await?;
        let row = conn
            .client()
            .query_one(&stmt, &[&ctids, &ids, &attempts, &results, &worker_id])
            .await
            .db()?;
        accepted = row.get(0);
    }
    let mut by_id = rest;
    if accepted.len() < at.len() {
        let found: std::collections::HashSet<JobId> = accepted.iter().copied().collect();
        by_id.extend(at.iter().filter(|c| !found.contains(&c.id)));
    }
    if by_id.is_empty() {
        return Ok(accepted);
    }
    let ids: Vec<JobId> = by_id.iter().map(|c| c.id).collect();
    let attempts: Vec<i32> = by_id.iter().map(|c| c.attempt).collect();
    let results: Vec<Option<Json<&RawValue>>> = by_id
        .iter()
        .map(|c| c.result.as_deref().map(Json))
        .collect();
    let stmt = conn.prepared(JOBS_COMPLETE_MANY).await?;
    let row = conn
        .client()
        .query_one(&stmt, &[&ids, &attempts, &results, &worker_id])
        .await
        .db()?;
    accepted.extend(row.get::<_, Vec<JobId>>(0));
    Ok(accepted)
}

/// Retries (`retry_at` set) and burials (NULL) of the failed attempts.
const JOBS_FAIL_MANY: &str = "SELECT job_id, retry_at FROM {s}.jobs_fail($1, $2, $3, $4, $5)";

/// One failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: JobId,
    pub attempt: i32,
    pub error: String,
    /// False for errors that no retry can fix (bad payload): the job goes
    /// straight to `dead`.
    pub retryable: bool,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to `available`, due again at this time.
    Retry {
        id: JobId,
        run_at: chrono::DateTime<chrono::Utc>,
    },
    /// Attempts used up or not retryable.
    Dead { id: JobId },
}

/// Records failures in one statement: each job is retried after a capped,
/// jittered exponential backoff, or buried as `dead` when its attempts are
/// used up. Fenced jobs are left out of the result.
pub async fn jobs_fail_many(
    conn: &Conn,
    worker_id: &str,
    failed: &[Failure],
) -> Result<Vec<FailOutcome>> {
    if failed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = failed.iter().map(|f| f.id).collect();
    let attempts: Vec<i32> = failed.iter().map(|f| f.attempt).collect();
    let errors: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
    let retryable: Vec<bool> = failed.iter().map(|f| f.retryable).collect();
    let stmt = conn.prepared(JOBS_FAIL_MANY).await?;
    let rows = conn
        .client()
        .query(&stmt, &[&ids, &attempts, &errors, &retryable, &worker_id])
        .await
        .db()?;
    Ok(rows
        .iter()
        .map(
            |r| match r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(1) {
                Some(run_at) => FailOutcome::Retry {
                    id: r.get(0),
                    run_at,
                },
                None => FailOutcome::Dead { id: r.get(0) },
            },
        )
        .collect())
}

const JOBS_CANCELLED_MANY: &str = "SELECT * FROM {s}.jobs_cancelled($1, $2, $3)";

/// Records running jobs that were stopped because someone cancelled them.
pub async fn jobs_cancelled_many(
    conn: &Conn,
    worker_id: &str,
    jobs: &[(JobId, i32)],
) -> Result<Vec<JobId>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = jobs.iter().map(|j| j.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.1).collect();
    let stmt = conn.prepared(JOBS_CANCELLED_MANY).await?;
    let rows = conn
        .client()
        .query(&stmt, &[&ids, &attempts, &worker_id])
        .await
        .db()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

const JOBS_RELEASE_MANY: &str = "SELECT * FROM {s}.jobs_release($1, $2, $3)";

/// Gives leased jobs back at once (worker shutting down): they become
/// available immediately and the attempt is not counted.
pub async fn jobs_release_many(
    conn: &Conn,
    worker_id: &str,
    jobs: &[(JobId, i32)],
) -> Result<Vec<JobId>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = jobs.iter().map(|j| j.0).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.1).collect();
    let stmt = conn.prepared(JOBS_RELEASE_MANY).await?;
    let rows = conn
        .client()
        .query(&stmt, &[&ids, &attempts, &worker_id])
        .await
        .db()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

const JOB_SET_PROGRESS: &str = "
UPDATE {s}.jobs SET progress = $4
WHERE id = $1 AND attempt = $2 AND lease_owner = $3";

/// Stores a running job's progress (any JSON). False if the lease was lost.
pub async fn job_set_progress(
    conn: &Conn,
    worker_id: &str,
    id: JobId,
    attempt: i32,
    progress: &RawValue,
) -> Result<bool> {
    let stmt = conn.prepared(JOB_SET_PROGRESS).await?;
    let n = conn
        .client()
        .execute(&stmt, &[&id, &attempt, &worker_id, &Json(progress)])
        .await
        .db()?;
    Ok(n == 1)
}
