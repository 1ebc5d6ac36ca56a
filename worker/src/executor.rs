//! The executor: runs claimed jobs in slots, in the order they were claimed,
//! each with its timeout and its cancellation, and reports every outcome to
//! the completer. A job's future is dropped when it must stop (an `exec`
//! job's process group is killed with it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use drove_queue::{ClaimedJob, JobId};
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{Job, JobError, ProgressTx};
use crate::state::{Held, Shared, StopReason};

/// What became of one attempt, as the worker saw it.
#[derive(Debug)]
pub enum Outcome {
    Succeeded(Option<Box<RawValue>>),
    Failed(JobError),
    /// Stopped because someone cancelled it.
    Cancelled,
    /// Not finished and given back: shutdown, or lost lease.
    Released,
}

/// An outcome on its way to the database.
#[derive(Debug)]
pub struct Report {
    pub id: JobId,
    pub attempt: i32,
    pub queue: String,
    /// Metric label: the kind, or `unknown` if this worker has no handler.
    pub kind: String,
    pub outcome: Outcome,
}

/// Runs jobs from `rx` until it closes or `stop` (no more starting) is
/// cancelled; then releases what never started and waits for the running
/// jobs (the caller stops those when the grace is over).
pub async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<ClaimedJob>,
    done: mpsc::UnboundedSender<Report>,
    progress: ProgressTx,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(shared.settings.slots));
    let tasks = TaskTracker::new();
    loop {
        let job = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            job = rx.recv() => match job { Some(j) => j, None => break },
        };
        let Some(held) = shared
            .held
            .lock()
            .expect("held lock poisoned")
            .get(&job.id)
            .cloned()
        else {
            continue;
        };
        let permit = tokio::select! {
            biased;
            _ = held.cancel.cancelled() => {
                let outcome = if held.reason() == StopReason::Cancel { Outcome::Cancelled } else { Outcome::Released };
                report(&done, &shared, &job, outcome);
                continue;
            }
            _ = stop.cancelled() => {
                report(&done, &shared, &job, Outcome::Released);
                break;
            }
            permit = slots.clone().acquire_owned() => permit.expect("the slot semaphore is never closed"),
        };
        let (shared, done, progress, slots) = (
            shared.clone(),
            done.clone(),
            progress.clone(),
            slots.clone(),
        );
        tasks.spawn(async move {
            set_busy(&shared, &slots);
            let outcome = run_one(&shared, &job, &held, progress).await;
            drop(permit);
            set_busy(&shared, &slots);
            report(&done, &shared, &job, outcome);
        });
    }
    // Jobs claimed but never started go back at once.
    rx.close();
    while let Ok(job) = rx.try_recv() {
        report(&done, &shared, &job, Outcome::Released);
    }
    tasks.close();
    tasks.wait().await;
}

fn set_busy(shared: &Shared, slots: &Semaphore) {
    let busy = shared.settings.slots - slots.available_permits();
    shared.metrics.busy.set(busy as i64);
    shared
        .metrics
        .utilization
        .set(busy as f64 / shared.settings.slots as f64);
}

fn kind_label(shared: &Shared, kind: &str) -> String {
    if shared.handlers.get(kind).is_some() {
        kind.to_string()
    } else {
        "unknown".to_string()
    }
}

fn report(
    done: &mpsc::UnboundedSender<Report>,
    shared: &Shared,
    job: &ClaimedJob,
    outcome: Outcome,
) {
    // The completer outlives the executor, so the channel is open.
    let _ = done.send(Report {
        id: job.id,
        attempt: job.attempt,
        queue: job.queue.clone(),
        kind: kind_label(shared, &job.kind),
        outcome,
    });
}

async fn run_one(shared: &Shared, job: &ClaimedJob, held: &Held, progress: ProgressTx) -> Outcome {
    let Some(handler) = shared.handlers.get(&job.kind) else {
        let kinds: Vec<&str> = shared.handlers.kinds().collect();
        return Outcome::Failed(JobError::retry(format!(
            "no handler for job kind {:?} on worker {} (version {}; it runs: {})",
            job.kind,
            shared.me.id,
            shared.me.version,
            kinds.join(", ")
        )));
    };
    let timeout = job
        .timeout_ms
        .map(|ms| Duration::from_millis(ms.max(0) as u64));
    let ctx = Job {
        id: job.id,
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        attempt: job.attempt,
        payload: job.payload.clone(),
        cancel: held.cancel.clone(),
        progress_tx: Some(progress),
    };
    tracing::debug!(job = job.id, kind = %job.kind, attempt = job.attempt, "started");
    let started = Instant::now();
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        r = handler.run(ctx) => match r {
            Ok(v) => Outcome::Succeeded(v),
            Err(e) => Outcome::Failed(e),
        },
        _ = held.cancel.cancelled() => Outcome::Released,
        _ = deadline => {
            // Cooperative handlers (spin) watch the token; async ones were dropped.
            held.cancel.cancel();
            Outcome::Failed(JobError::retry(format!(
                "timed out after {}",
                humantime::format_duration(timeout.unwrap_or_default())
            )))
        }
    };
    let elapsed = started.elapsed();
    shared.observe_run(elapsed);
    shared
        .metrics
        .run_seconds
        .with_label_values(&[&job.queue, &kind_label(shared, &job.kind)])
        .observe(elapsed.as_secs_f64());
    // A job stopped from outside is recorded by why it was stopped, unless it
    // managed to succeed first.
    match (held.reason(), outcome) {
        (_, o @ Outcome::Succeeded(_)) | (StopReason::None, o) => o,
        (StopReason::Cancel, _) => Outcome::Cancelled,
        (StopReason::Shutdown | StopReason::Fenced, _) => Outcome::Released,
    }
}
