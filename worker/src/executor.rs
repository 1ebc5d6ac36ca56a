//! The executor: one long-lived task per slot takes claimed jobs off the
//! queue in claim order, runs each with its timeout and its cancellation,
//! and reports every outcome to the completer. A job's future is dropped
//! when it must stop (an `exec` job's process group is killed with it).
//!
//! Slots are tasks rather than a semaphore guarding a task per job: a job
//! then costs no spawn, no task allocation and no permit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use drove_queue::{JobId, Tid};
use serde_json::value::RawValue;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{Job, JobError, ProgressTx};
use crate::state::{Held, JobMeta, Shared, StopReason, Task};

/// What became of one attempt, as the worker saw it.
#[derive(Debug)]
pub enum Outcome {
    Succeeded(Option<Box<RawValue>>),
    Failed(JobError),
    /// Stopped because someone cancelled it.
    Cancelled,
    /// Not finished and given back: shutdown, or lost lease.
    Released,
    /// Already written (a success with follow-up jobs, in a transaction of
    /// its own); the completer only forgets it.
    Recorded,
}

/// An outcome on its way to the database.
pub struct Report {
    pub id: JobId,
    pub attempt: i32,
    /// Where the claimed row is (see [`drove_queue::tid`]).
    pub ctid: Tid,
    /// Queue, kind and metric series of the job.
    pub meta: Arc<JobMeta>,
    pub outcome: Outcome,
    /// Follow-up jobs to enqueue with a success, in its transaction.
    pub then: Vec<drove_queue::NewJob>,
}

impl Report {
    /// The queue, for logs and metric labels.
    pub fn queue(&self) -> &str {
        &self.meta.queue
    }

    /// The `kind` metric label: the kind, or `unknown` without a handler.
    pub fn kind_label(&self) -> &str {
        &self.meta.label
    }
}

/// Runs jobs from `rx` in the worker's slots until it closes or `stop` (no
/// more starting) is cancelled; then releases what never started and waits
/// for the running jobs (the caller stops those when the grace is over).
pub async fn run(
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Task>,
    done: mpsc::UnboundedSender<Report>,
    progress: ProgressTx,
    stop: CancellationToken,
) {
    let rx = Arc::new(Mutex::new(rx));
    let slots = TaskTracker::new();
    for _ in 0..shared.settings.slots {
        slots.spawn(slot(
            shared.clone(),
            rx.clone(),
            done.clone(),
            progress.clone(),
            stop.clone(),
        ));
    }
    if !shared.gates.is_empty() {
        // Jobs waiting for their kind's turn still answer a cancel at once.
        let (shared, done, stop) = (shared.clone(), done.clone(), stop.clone());
        slots.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for gate in shared.gates.values() {
                    for task in gate.take_stopped() {
                        let outcome = if task.held.reason() == StopReason::Cancel {
                            Outcome::Cancelled
                        } else {
                            Outcome::Released
                        };
                        report(&done, task, outcome);
                    }
                }
            }
        });
    }
    slots.close();
    slots.wait().await;
    // Jobs claimed but never started go back at once.
    let mut rx = rx.lock().await;
    rx.close();
    while let Ok(task) = rx.try_recv() {
        report(&done, task, Outcome::Released);
    }
    for gate in shared.gates.values() {
        for task in gate.drain() {
            report(&done, task, Outcome::Released);
        }
    }
}

/// One slot: takes the next job, runs it, reports it; until `stop`.
async fn slot(
    shared: Arc<Shared>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Task>>>,
    done: mpsc::UnboundedSender<Report>,
    progress: ProgressTx,
    stop: CancellationToken,
) {
    loop {
        let task = {
            let mut rx = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                rx = rx.lock() => rx,
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                task = rx.recv() => match task {
                    Some(t) => t,
                    None => return,
                },
            }
        };
        // A kind at its limit: the job waits aside, and the slot goes on.
        let mut task = match task.meta.gate.clone() {
            Some(gate) => match gate.enter(task) {
                Some(task) => task,
                None => continue,
            },
            None => task,
        };
        loop {
            let gate = task.meta.gate.clone();
            run_task(&shared, task, &done, &progress).await;
            // A job of a limited kind ended: run the next one waiting
            // (or, when stopping, give them all back).
            let Some(gate) = gate else { break };
            let mut next = gate.next();
            while stop.is_cancelled()
                && let Some(t) = next
            {
                report(&done, t, Outcome::Released);
                next = gate.next();
            }
            match next {
                Some(t) => task = t,
                None => break,
            }
        }
    }
}

/// Runs one job in the calling slot and reports its outcome.
async fn run_task(
    shared: &Shared,
    task: Task,
    done: &mpsc::UnboundedSender<Report>,
    progress: &ProgressTx,
) {
    if task.held.cancel.is_cancelled() {
        // Stopped while it waited for a slot.
        let outcome = if task.held.reason() == StopReason::Cancel {
            Outcome::Cancelled
        } else {
            Outcome::Released
        };
        report(done, task, outcome);
        return;
    }
    set_busy(shared, 1);
    let Task {
        id,
        attempt,
        ctid,
        timeout_ms,
        payload,
        held,
        meta,
    } = task;
    let ctx = Job {
        id,
        queue: meta.queue.clone(),
        kind: meta.kind.clone(),
        attempt,
        payload,
        cancel: held.cancel.clone(),
        progress_tx: Some(progress.clone()),
        held: Some(held.clone()),
    };
    let outcome = run_one(shared, ctx, &held, &meta, timeout_ms).await;
    set_busy(shared, -1);
    let then = match outcome {
        Outcome::Succeeded(_) => {
            std::mem::take(&mut *held.then.lock().expect("then lock poisoned"))
        }
        _ => Vec::new(),
    };
    let _ = done.send(Report {
        id,
        attempt,
        ctid,
        meta,
        outcome,
        then,
    });
}

fn set_busy(shared: &Shared, delta: isize) {
    let busy = if delta > 0 {
        shared.busy.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        shared.busy.fetch_sub(1, Ordering::Relaxed) - 1
    };
    shared.metrics.busy.set(busy as i64);
    shared
        .metrics
        .utilization
        .set(busy as f64 / shared.settings.slots as f64);
}

fn report(done: &mpsc::UnboundedSender<Report>, task: Task, outcome: Outcome) {
    // The completer outlives the executor, so the channel is open.
    let _ = done.send(Report {
        id: task.id,
        attempt: task.attempt,
        ctid: task.ctid,
        meta: task.meta,
        outcome,
        then: Vec::new(),
    });
}

async fn run_one(
    shared: &Shared,
    ctx: Job,
    held: &Held,
    meta: &JobMeta,
    timeout_ms: Option<i32>,
) -> Outcome {
    let Some(handler) = &meta.handler else {
        let kinds: Vec<&str> = shared.handlers.kinds().collect();
        return Outcome::Failed(JobError::retry(format!(
            "no handler for job kind {:?} on worker {} (version {}; it runs: {})",
            &*meta.kind,
            shared.me.id,
            shared.me.version,
            kinds.join(", ")
        )));
    };
    let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.max(0) as u64));
    tracing::debug!(job = ctx.id, kind = %meta.kind, attempt = ctx.attempt, "started");
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
    meta.run_seconds.observe(elapsed.as_secs_f64());
    // A job stopped from outside is recorded by why it was stopped, unless it
    // managed to succeed first.
    match (held.reason(), outcome) {
        (_, o @ Outcome::Succeeded(_)) | (StopReason::None, o) => o,
        (StopReason::Cancel, _) => Outcome::Cancelled,
        (StopReason::Shutdown | StopReason::Fenced, _) => Outcome::Released,
    }
}
