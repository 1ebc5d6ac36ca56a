//! The fetcher: claims due jobs for every free slot (plus the adaptive
//! prefetch) and hands them to the executor, in claim order.
//!
//! It sleeps until woken: by a NOTIFY for one of its queues (via the
//! listener), by capacity freed when outcomes are recorded (which only
//! matters while jobs are known to be waiting), or by the slow
//! jittered poll that covers missed notifications and due scheduled jobs.
//! An idle worker therefore sends almost no queries.
//!
//! Behind a backlog the fetcher claims on both of its database connections
//! at once (the claim connection and the completer's, while no transaction
//! is open on it), when the last round filled its limit and at least two
//! full batches are free (strict queue order only): a claim
//! is about two thirds of the database's work per job, and one connection
//! is one server process, so claims on one connection kept one core of the
//! database busy and the other half idle (`drove bench drain`: the claim
//! backend at 80% of the drain's time, the completion backend at 45%).
//! Two claims side by side are what two workers do: `SKIP LOCKED` gives
//! them different jobs, ordering keys and fleet-wide limits hold as they
//! do across workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::{Held, JobMeta, Loop, Shared, Task};

/// Runs until `stop` is cancelled. Jobs go to the executor through `tx`.
pub async fn run(shared: Arc<Shared>, tx: mpsc::UnboundedSender<Task>, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    // Set when the last claim filled its limit: more jobs are probably due.
    let mut more = true;
    let mut next_poll = Instant::now();
    // When a job this worker knows of (a retry it scheduled) becomes due;
    // kept until a claim runs after that time.
    let mut hint: Option<Instant> = None;
    // The last claim round filled its limit: a backlog is waiting.
    let mut backlog = false;
    while !stop.is_cancelled() {
        shared.tick(Loop::Fetcher);
        if let Some(at) = shared.take_due() {
            hint = Some(hint.map_or(at, |h| h.min(at)));
        }
        let wake_at = hint.map_or(next_poll, |h| h.min(next_poll));
        let capacity = shared.capacity();
        shared
            .metrics
            .prefetch
            .set((capacity - shared.settings.slots) as i64);
        let free = capacity.saturating_sub(shared.held_count());
        let threshold = (capacity / 4).clamp(1, shared.settings.max_batch as usize);
        let fenced = shared.fenced.load(std::sync::atomic::Ordering::Acquire);
        let due = more || Instant::now() >= wake_at;
        if fenced || free < threshold || !due {
            let wait = if fenced {
                Duration::from_millis(200)
            } else {
                wake_at.saturating_duration_since(Instant::now())
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = shared.wake.notified() => { more = true; }
                _ = shared.freed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let claiming_at = Instant::now();
        if hint.is_some_and(|h| claiming_at >= h) {
            hint = None;
        }
        match claim_round(&shared, &tx, free, backlog).await {
            Ok(filled) => {
                backoff.reset();
                more = filled;
                backlog = filled;
                if !filled {
                    next_poll = Instant::now() + jittered(shared.settings.poll_interval);
                }
            }
            Err(e) => {
                backlog = false;
                shared.metrics.db_errors.with_label_values(&["claim"]).inc();
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "claim failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Claims for `free` slots. In strict order each queue gets what the ones
/// before it left; with weights each first gets its share of `free`, then
/// the queues that had more take what the others left, in order. True if
/// some queue had more due jobs than were taken. With `backlog` (the last
/// round filled) and strict order, a queue with room for two full batches
/// is claimed on both connections at once ([`claim_twice`]).
async fn claim_round(
    shared: &Shared,
    tx: &mpsc::UnboundedSender<Task>,
    mut free: usize,
    backlog: bool,
) -> drove_queue::Result<bool> {
    let queues = &shared.settings.queues;
    let max_batch = shared.settings.max_batch as usize;
    let Some(weights) = &shared.settings.weights else {
        let mut filled = false;
        for queue in queues {
            if free == 0 {
                return Ok(true);
            }
            let limit = free.min(max_batch);
            let got = if backlog && free >= 2 * max_batch {
                let (got, full) = claim_twice(shared, tx, queue, limit).await?;
                filled |= full;
                got
            } else {
                let got = claim_from(shared, tx, queue, limit).await?;
                filled |= got == limit;
                got
            };
            free -= got;
        }
        return Ok(filled);
    };
    // Stride scheduling: each slot goes to the queue that has been served
    // least for its weight; `pass` carries that across rounds.
    let mut pass = shared
        .weighted_pass
        .lock()
        .expect("pass lock poisoned")
        .clone();
    pass.resize(queues.len(), 0.0);
    let mut share = vec![0usize; queues.len()];
    let mut virt = pass.clone();
    for _ in 0..free {
        let i = (0..queues.len())
            .min_by(|&a, &b| virt[a].total_cmp(&virt[b]))
            .expect("queues is not empty");
        share[i] += 1;
        virt[i] += 1.0 / f64::from(weights[i]);
    }
    let mut more = Vec::with_capacity(queues.len());
    for (i, queue) in queues.iter().enumerate() {
        let limit = share[i].min(max_batch);
        if limit == 0 {
            more.push(i);
            continue;
        }
        let got = claim_from(shared, tx, queue, limit).await?;
        free -= got;
        pass[i] += got as f64 / f64::from(weights[i]);
        if got == limit {
            more.push(i);
        }
    }
    let mut filled = false;
    for &i in &more {
        if free == 0 {
            filled = true;
            break;
        }
        let limit = free.min(max_batch);
        let got = claim_from(shared, tx, &queues[i], limit).await?;
        pass[i] += got as f64 / f64::from(weights[i]);
        filled |= got == limit;
        free -= got;
    }
    // A queue without work builds no credit while the others are served.
    let busiest = more.iter().map(|&i| pass[i]).fold(f64::INFINITY, f64::min);
    if busiest.is_finite() {
        for (i, p) in pass.iter_mut().enumerate() {
            if !more.contains(&i) {
                *p = p.max(busiest);
            }
        }
    }
    let floor = pass.iter().copied().fold(f64::INFINITY, f64::min);
    for p in &mut pass {
        *p -= floor;
    }
    *shared.weighted_pass.lock().expect("pass lock poisoned") = pass;
    Ok(filled)
}

/// Claims up to `limit` jobs of `queue` on the claim connection and hands
/// them to the executor. Returns how many.
async fn claim_from(
    shared: &Shared,
    tx: &mpsc::UnboundedSender<Task>,
    queue: &str,
    limit: usize,
) -> drove_queue::Result<usize> {
    let jobs = claim_on(shared, queue, limit, &shared.main_link).await?;
    Ok(dispatch(shared, tx, queue, jobs))
}

/// Two claims of up to `limit` jobs each, side by side, one on each
/// connection. The completer's connection is used only while no
/// transaction is open on it (a success with follow-up jobs holds
/// [`Shared::done_tx`]); otherwise this is one claim. The jobs of both go
/// to the executor in queue order, also when one of the claims failed
/// (its error is returned after the other's jobs are handed on: they are
/// leased to this worker).
async fn claim_twice(
    shared: &Shared,
    tx: &mpsc::UnboundedSender<Task>,
    queue: &str,
    limit: usize,
) -> drove_queue::Result<(usize, bool)> {
    let Ok(_no_tx) = shared.done_tx.try_lock() else {
        let got = claim_from(shared, tx, queue, limit).await?;
        return Ok((got, got == limit));
    };
    let (a, b) = tokio::join!(
        claim_on(shared, queue, limit, &shared.main_link),
        claim_on(shared, queue, limit, &shared.done_link),
    );
    let mut jobs = Vec::new();
    let mut filled = false;
    let mut failed = None;
    for r in [a, b] {
        match r {
            Ok(j) => {
                filled |= j.len() == limit;
                jobs.extend(j);
            }
            Err(e) => {
                if let Some(first) = failed.replace(e) {
                    shared.metrics.db_errors.with_label_values(&["claim"]).inc();
                    tracing::warn!(error = %first, "claim failed");
                }
            }
        }
    }
    jobs.sort_unstable_by_key(|j| (j.priority, j.run_at, j.id));
    let got = dispatch(shared, tx, queue, jobs);
    match failed {
        Some(e) => Err(e),
        None => Ok((got, filled)),
    }
}

/// Claims up to `limit` jobs of `queue` on `link`.
async fn claim_on(
    shared: &Shared,
    queue: &str,
    limit: usize,
    link: &crate::link::Link,
) -> drove_queue::Result<Vec<drove_queue::ClaimedJob>> {
    let limit = limit as i64;
    let started = Instant::now();
    let claim = link
        .run("claim", |conn| async move {
            drove_queue::jobs_claim_hinted(&conn, queue, limit, &shared.me.id).await
        })
        .await?;
    if let Some(wait) = claim.held_back {
        // A fleet-wide limit (max running, rate) held the queue back:
        // come back when it may allow more, not at the slow poll.
        shared.due_at(Instant::now() + wait);
    }
    shared
        .metrics
        .claim_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(claim.jobs)
}

/// Hands claimed jobs to the executor, in the order given. Returns how many.
fn dispatch(
    shared: &Shared,
    tx: &mpsc::UnboundedSender<Task>,
    queue: &str,
    jobs: Vec<drove_queue::ClaimedJob>,
) -> usize {
    if jobs.is_empty() {
        return 0;
    }
    let got = jobs.len();
    shared
        .metrics
        .claimed
        .with_label_values(&[queue])
        .inc_by(got as u64);
    // Kinds resolved once per run of equal kinds, not per job.
    let mut meta: Option<Arc<JobMeta>> = None;
    let tasks: Vec<Task> = jobs
        .into_iter()
        .map(|job| {
            let m = match &meta {
                Some(m) if *m.kind == *job.kind => m.clone(),
                _ => meta.insert(shared.job_meta(queue, &job.kind)).clone(),
            };
            tracing::debug!(job = job.id, kind = %job.kind, attempt = job.attempt, "claimed");
            Task {
                id: job.id,
                attempt: job.attempt,
                ctid: job.ctid,
                timeout_ms: job.timeout_ms,
                payload: job.payload,
                held: Arc::new(Held::new(job.attempt)),
                meta: m,
            }
        })
        .collect();
    {
        let mut held = shared.held.lock().expect("held lock poisoned");
        for t in &tasks {
            held.insert(t.id, t.held.clone());
        }
        shared.metrics.in_flight.set(held.len() as i64);
    }
    for task in tasks {
        // The executor outlives the fetcher, so the channel is open.
        let _ = tx.send(task);
    }
    got
}

/// ±20% so a fleet started together does not poll in lockstep.
pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// Exponential backoff for retrying database operations: 100 ms to 5 s.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d =
            Duration::from_millis(100 * 2u64.pow(self.failures.min(6))).min(Duration::from_secs(5));
        self.failures += 1;
        jittered(d)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}
