//! The completer: records outcomes in batches (everything that arrived
//! while the previous batch was being written goes in the next), and
//! running jobs' progress at most about once a second per job.
//!
//! An outcome leaves memory only when the database has answered for it:
//! accepted, or fenced off because the lease was lost. If the database is
//! unreachable, outcomes wait and are retried with backoff, until `give_up`
//! fires at the end of a shutdown; what is still unwritten then is logged,
//! and those jobs are reclaimed and run again (at-least-once).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use drove_queue::{Completion, FailOutcome, Failure, JobId};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::executor::{Outcome, Report};
use crate::fetcher::Backoff;
use crate::state::{Loop, Shared};

/// Most outcomes written by one statement.
pub const MAX_BATCH: usize = 5000;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Added to a known due time before claiming it (clock granularity).
const DUE_SLACK: Duration = Duration::from_millis(15);

type Progress = HashMap<JobId, (i32, Box<RawValue>)>;

/// Runs until the report channel closes and everything is written (or
/// `give_up` fires).
pub async fn run(
    shared: Arc<Shared>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    mut progress_rx: mpsc::UnboundedReceiver<(JobId, i32, Box<RawValue>)>,
    give_up: CancellationToken,
) {
    let mut pending: Vec<Report> = Vec::new();
    let mut progress = Progress::new();
    let mut progress_tick = tokio::time::interval(PROGRESS_EVERY);
    progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::default();
    let mut closed = false;
    loop {
        shared.tick(Loop::Completer);
        if pending.is_empty() {
            if closed {
                break;
            }
            tokio::select! {
                r = reports.recv() => match r {
                    Some(r) => pending.push(r),
                    None => closed = true,
                },
                Some((id, attempt, value)) = progress_rx.recv() => {
                    progress.insert(id, (attempt, value));
                }
                _ = progress_tick.tick() => {
                    write_progress(&shared, &mut progress, None).await;
                }
            }
        }
        while pending.len() < MAX_BATCH {
            match reports.try_recv() {
                Ok(r) => pending.push(r),
                Err(_) => break,
            }
        }
        if pending.is_empty() {
            continue;
        }
        if !progress.is_empty() {
            let ids: HashSet<JobId> = pending.iter().map(|r| r.id).collect();
            write_progress(&shared, &mut progress, Some(&ids)).await;
        }
        match flush(&shared, &mut pending).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                shared
                    .metrics
                    .db_errors
                    .with_label_values(&["complete"])
                    .inc();
                if give_up.is_cancelled() {
                    tracing::error!(
                        error = %e,
                        unrecorded = pending.len(),
                        "giving up on recording outcomes; those jobs will be reclaimed and run again"
                    );
                    forget(&shared, pending.drain(..).map(|r| r.id));
                    continue;
                }
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, pending = pending.len(), retry_in = ?delay, "recording outcomes failed");
                tokio::select! {
                    _ = give_up.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Writes the pending progress of `only` these jobs (or all), best effort.
async fn write_progress(shared: &Shared, progress: &mut Progress, only: Option<&HashSet<JobId>>) {
    let ids: Vec<JobId> = progress
        .keys()
        .copied()
        .filter(|id| only.is_none_or(|s| s.contains(id)))
        .collect();
    for id in ids {
        let Some((attempt, value)) = progress.remove(&id) else {
            continue;
        };
        let me = &shared.me.id;
        let r = shared
            .done_link
            .run("progress", |conn| async move {
                drove_queue::job_set_progress(&conn, me, id, attempt, &value).await
            })
            .await;
        if let Err(e) = r {
            shared
                .metrics
                .db_errors
                .with_label_values(&["progress"])
                .inc();
            tracing::debug!(job = id, error = %e, "progress not recorded");
        }
    }
}

/// Writes every pending outcome, one statement per kind of outcome. Each
/// kind leaves `pending` as soon as its statement succeeded, so a retry
/// after a partial failure does not write anything twice.
async fn flush(shared: &Shared, pending: &mut Vec<Report>) -> drove_queue::Result<()> {
    let me = shared.me.id.as_str();

    // Successes with follow-up jobs: each in a transaction of its own.
    for r in pending.iter_mut() {
        if r.then.is_empty() || !matches!(r.outcome, Outcome::Succeeded(_)) {
            continue;
        }
        match complete_with_follow_ups(shared, r).await {
            Ok(true) => {
                r.meta.succeeded.inc();
                r.then.clear();
                // Recorded: nothing left for the batch below.
                r.outcome = Outcome::Recorded;
            }
            Ok(false) => {
                reject(shared, r, "success");
                r.then.clear();
                r.outcome = Outcome::Recorded;
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                // A follow-up the database refuses (unknown queue, bad
                // option): no retry can fix that.
                tracing::error!(job = r.id, error = %e, "follow-up job refused");
                r.then.clear();
                r.outcome = Outcome::Failed(crate::handler::JobError::permanent(format!(
                    "a follow-up job was refused: {e}"
                )));
            }
        }
    }
    settle(shared, pending, |o| matches!(o, Outcome::Recorded), |_| {});

    let done: Vec<Completion> = pending
        .iter_mut()
        .filter_map(|r| match &mut r.outcome {
            Outcome::Succeeded(v) => Some(Completion {
                id: r.id,
                attempt: r.attempt,
                result: v.take(),
                ctid: Some(r.ctid),
            }),
            _ => None,
        })
        .collect();
    if !done.is_empty() {
        let batch = &done;
        let accepted = shared
            .done_link
            .run("complete", |conn| async move {
                drove_queue::jobs_complete_many(&conn, me, batch).await
            })
            .await;
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Put the results back for the retry.
                restore_results(pending, done_results(&done));
                return Err(e);
            }
        };
        // Usually every one was accepted: no set to build then.
        let all = accepted.len() == done.len();
        let accepted: HashSet<JobId> = if all {
            HashSet::new()
        } else {
            accepted.into_iter().collect()
        };
        settle(
            shared,
            pending,
            |o| matches!(o, Outcome::Succeeded(_)),
            |r| {
                if all || accepted.contains(&r.id) {
                    r.meta.succeeded.inc();
                    tracing::debug!(job = r.id, "succeeded");
                } else {
                    reject(shared, r, "success");
                }
            },
        );
    }

    let failed: Vec<Failure> = pending
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Failed(e) => Some(Failure {
                id: r.id,
                attempt: r.attempt,
                error: e.message.clone(),
                retryable: e.retryable,
            }),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        let failed = &failed;
        let outcomes = shared
            .done_link
            .run("fail", |conn| async move {
                drove_queue::jobs_fail_many(&conn, me, failed).await
            })
            .await?;
        let by_id: HashMap<JobId, FailOutcome> = outcomes
            .into_iter()
            .map(|o| match o {
                FailOutcome::Retry { id, .. } | FailOutcome::Dead { id } => (id, o),
            })
            .collect();
        settle(
            shared,
            pending,
            |o| matches!(o, Outcome::Failed(_)),
            |r| {
                let Outcome::Failed(e) = &r.outcome else {
                    return;
                };
                let m = &shared.metrics;
                match by_id.get(&r.id) {
                    Some(FailOutcome::Retry { run_at, .. }) => {
                        // A little late rather than early: an early claim finds
                        // nothing and the next try would be the slow poll.
                        let wait = (*run_at - chrono::Utc::now()).to_std().unwrap_or_default();
                        shared.due_at(std::time::Instant::now() + wait + DUE_SLACK);
                        m.failed
                            .with_label_values(&[r.queue(), r.kind_label()])
                            .inc();
                        m.retried
                            .with_label_values(&[r.queue(), r.kind_label()])
                            .inc();
                        tracing::warn!(job = r.id, kind = r.kind_label(), attempt = r.attempt, error = %e, retry_at = %run_at, "job failed, will retry");
                    }
                    Some(FailOutcome::Dead { .. }) => {
                        m.failed
                            .with_label_values(&[r.queue(), r.kind_label()])
                            .inc();
                        m.dead.with_label_values(&[r.queue(), r.kind_label()]).inc();
                        tracing::error!(job = r.id, kind = r.kind_label(), attempt = r.attempt, error = %e, "job dead: no attempts left or not retryable");
                    }
                    None => reject(shared, r, "failure"),
                }
            },
        );
    }

    for (cancelled, label) in [(true, "cancel"), (false, "release")] {
        let wanted = |o: &Outcome| {
            if cancelled {
                matches!(o, Outcome::Cancelled)
            } else {
                matches!(o, Outcome::Released)
            }
        };
        let jobs: Vec<(JobId, i32)> = pending
            .iter()
            .filter(|r| wanted(&r.outcome))
            .map(|r| (r.id, r.attempt))
            .collect();
        if jobs.is_empty() {
            continue;
        }
        let jobs = &jobs;
        let accepted: HashSet<JobId> = shared
            .done_link
            .run(label, |conn| async move {
                if cancelled {
                    drove_queue::jobs_cancelled_many(&conn, me, jobs).await
                } else {
                    drove_queue::jobs_release_many(&conn, me, jobs).await
                }
            })
            .await?
            .into_iter()
            .collect();
        settle(shared, pending, wanted, |r| {
            match (accepted.contains(&r.id), cancelled) {
                (true, true) => {
                    shared
                        .metrics
                        .cancelled
                        .with_label_values(&[r.queue(), r.kind_label()])
                        .inc();
                    tracing::info!(job = r.id, "cancelled while running");
                }
                (true, false) => {
                    shared.metrics.released.inc();
                    tracing::info!(job = r.id, "released unfinished");
                }
                (false, _) => reject(shared, r, label),
            }
        });
    }
    Ok(())
}

/// Records one success and enqueues its follow-ups in one transaction on
/// the outcomes connection; holding [`Shared::done_tx`] keeps the fetcher's
/// claims off it meanwhile. False if the success was fenced off (then
/// nothing is enqueued).
async fn complete_with_follow_ups(shared: &Shared, r: &Report) -> drove_queue::Result<bool> {
    let _tx = shared.done_tx.lock().await;
    let me = shared.me.id.as_str();
    let Outcome::Succeeded(result) = &r.outcome else {
        return Ok(false);
    };
    let one = [Completion {
        id: r.id,
        attempt: r.attempt,
        result: result.clone(),
        ctid: Some(r.ctid),
    }];
    let (one, then, schema) = (&one, &r.then, &shared.schema);
    shared
        .done_link
        .run("complete", |conn| async move {
            let client = conn.client();
            client
                .batch_execute("BEGIN")
                .await
                .map_err(drove_queue::Error::Db)?;
            let work = async {
                let accepted = drove_queue::jobs_complete_many(&conn, me, one).await?;
                if accepted.is_empty() {
                    return Ok(false);
                }
                drove_queue::jobs_enqueue_many(client, schema, then).await?;
                Ok(true)
            };
            match work.await {
                Ok(done) => {
                    client
                        .batch_execute("COMMIT")
                        .await
                        .map_err(drove_queue::Error::Db)?;
                    Ok(done)
                }
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    Err(e)
                }
            }
        })
        .await
}

fn done_results(done: &[Completion]) -> HashMap<JobId, Option<Box<RawValue>>> {
    done.iter().map(|c| (c.id, c.result.clone())).collect()
}

fn restore_results(pending: &mut [Report], mut results: HashMap<JobId, Option<Box<RawValue>>>) {
    for r in pending {
        if let Outcome::Succeeded(v) = &mut r.outcome {
            *v = results.remove(&r.id).flatten();
        }
    }
}

fn reject(shared: &Shared, r: &Report, what: &str) {
    shared.metrics.rejected.inc();
    tracing::warn!(
        job = r.id,
        attempt = r.attempt,
        "{what} not recorded: the lease was lost (the job was reclaimed)"
    );
}

/// Removes the reports matching `which` from `pending`, applying `each`,
/// and frees their capacity.
fn settle(
    shared: &Shared,
    pending: &mut Vec<Report>,
    which: impl Fn(&Outcome) -> bool,
    each: impl Fn(&Report),
) {
    let mut ids = Vec::new();
    pending.retain(|r| {
        if which(&r.outcome) {
            each(r);
            ids.push(r.id);
            false
        } else {
            true
        }
    });
    forget(shared, ids.into_iter());
}

fn forget(shared: &Shared, ids: impl Iterator<Item = JobId>) {
    let mut held = shared.held.lock().expect("held lock poisoned");
    for id in ids {
        held.remove(&id);
    }
    shared.metrics.in_flight.set(held.len() as i64);
    drop(held);
    shared.freed.notify_one();
}
