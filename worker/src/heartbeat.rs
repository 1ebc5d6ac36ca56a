//! The heartbeat: one statement per beat extends the worker's lease, and
//! with it the lease of every job it holds. The same beat
//!
//! - learns of cancel requests for its jobs (backing up the NOTIFY),
//! - notices expired workers and reclaims their jobs (any worker may),
//! - fences this worker off when it cannot beat for most of a lease: its
//!   running jobs are stopped and it claims nothing, because other workers
//!   are about to take those jobs over. It resumes when a beat succeeds
//!   again (registering anew if it had been declared dead).
//!
//! ```text
//!   beating ──(no successful beat for 70% of the lease)──▶ fenced
//!      ▲                                                    │ jobs stopped,
//!      └─────────(beat succeeds; re-register if needed)─────┘ no claims
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::{Loop, Shared, StopReason};

/// Beats until `stop` is cancelled. After a failed beat the next one comes
/// sooner than the period (see [`Settings::beat_retry`]), so that the lease
/// outlives a database restart or failover shorter than it.
///
/// [`Settings::beat_retry`]: crate::state::Settings::beat_retry
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    shared.beat_ok();
    let (mut failing, mut recovered) = (false, false);
    loop {
        let period = if failing {
            shared.settings.beat_retry()
        } else if shared.held_count() > 0 {
            shared.settings.busy_beat()
        } else {
            shared.settings.idle_beat()
        };
        // Jittered while failing and once after, so that a fleet that lost
        // the database together does not come back and beat in lockstep.
        let period = if failing || recovered {
            crate::fetcher::jittered(period)
        } else {
            period
        };
        if !beat_due(&stop, period).await {
            return;
        }
        shared.tick(Loop::Heartbeat);
        let ok = beat_once(&shared).await;
        recovered = ok && failing;
        failing = !ok;
    }
}

/// Waits out `period`: false if `stop` came first or at the same moment.
/// Stop wins a tie: a beat after the worker deregistered would find its row
/// gone and register it again, leaving a ghost counted as live for a lease
/// (seen in the demo under load, when the task was woken late).
async fn beat_due(stop: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(period) => true,
    }
}

/// One heartbeat, with everything that follows from its answer. True when
/// the lease was renewed.
pub async fn beat_once(shared: &Shared) -> bool {
    let me = &shared.me;
    let ttl = shared.settings.lease_ttl;
    let busy = shared.metrics.busy.get() as i32;
    // A beat that hangs (network partition) must fail in time to fence.
    let limit = shared.settings.busy_beat().max(Duration::from_millis(500));
    let beat = shared
        .main_link
        .run_within("heartbeat", limit, |conn| async move {
            drove_queue::worker_heartbeat(&conn, &me.id, ttl, busy).await
        })
        .await;
    let hb = match beat {
        Ok(hb) => hb,
        Err(e) => {
            shared.metrics.heartbeat_failures.inc();
            let silent = shared.since_beat_ok();
            tracing::warn!(error = %e, since_last_ok = ?silent, "heartbeat failed");
            if silent >= shared.settings.fence_after() {
                fence(
                    shared,
                    &format!(
                        "no successful heartbeat for {}",
                        humantime::format_duration(round(silent))
                    ),
                );
            }
            return false;
        }
    };
    if !hb.alive {
        // Declared dead while we could not beat: our jobs were reclaimed.
        fence(shared, "this worker was declared dead (lease expired)");
        if shared.draining.load(Ordering::Acquire) {
            // Shutting down: the row may be gone because we deregistered.
            return false;
        }
        let registered = shared
            .main_link
            .run("register", |conn| async move {
                drove_queue::worker_register(&conn, me, ttl).await
            })
            .await;
        if let Err(e) = registered {
            tracing::warn!(error = %e, "registering again failed");
            return false;
        }
        tracing::info!("registered again");
    }
    shared.beat_ok();
    if shared.fenced.swap(false, Ordering::AcqRel) {
        shared.metrics.fenced.set(0);
        tracing::info!("lease regained; claiming again");
        shared.wake.notify_one();
    }
    if !hb.cancel.is_empty() {
        let held = shared.held.lock().expect("held lock poisoned");
        for id in &hb.cancel {
            if let Some(h) = held.get(id) {
                tracing::info!(job = id, "cancel requested");
                h.stop(StopReason::Cancel);
            }
        }
    }
    if hb.others_expired && shared.settings.reap {
        reap(shared).await;
    }
    true
}

/// Reclaims the jobs of workers whose lease ran out.
pub async fn reap(shared: &Shared) {
    let schema = &shared.schema;
    let r = shared
        .main_link
        .run("reap", |conn| async move {
            drove_queue::leases_reclaim_expired(conn.client(), schema, false).await
        })
        .await;
    match r {
        Ok(reaped) if !reaped.workers.is_empty() => {
            shared
                .metrics
                .reaped_jobs
                .inc_by((reaped.requeued + reaped.dead) as u64);
            tracing::warn!(
                workers = ?reaped.workers,
                requeued = reaped.requeued,
                dead = reaped.dead,
                "reclaimed the jobs of dead workers"
            );
        }
        Ok(_) => {}
        Err(e) => {
            shared.metrics.db_errors.with_label_values(&["reap"]).inc();
            tracing::warn!(error = %e, "reaping failed");
        }
    }
}

/// Stops every job and all claiming until a heartbeat succeeds again.
fn fence(shared: &Shared, why: &str) {
    if !shared.fenced.swap(true, Ordering::AcqRel) {
        shared.metrics.fenced.set(1);
        tracing::error!(
            reason = why,
            jobs = shared.held_count(),
            "fencing: stopping all jobs, no claims until the lease is back"
        );
    }
    shared.stop_all(StopReason::Fenced);
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Poll;

    use super::*;

    /// The beat's sleep and the stop both ready when the loop is polled
    /// (it was woken late): stop wins, every time.
    #[tokio::test(start_paused = true)]
    async fn a_stop_due_with_the_next_beat_wins() {
        for _ in 0..100 {
            let stop = CancellationToken::new();
            let mut due = std::pin::pin!(beat_due(&stop, Duration::from_millis(10)));
            let pending =
                std::future::poll_fn(|cx| Poll::Ready(due.as_mut().poll(cx).is_pending()));
            assert!(pending.await);
            tokio::time::advance(Duration::from_millis(10)).await;
            stop.cancel();
            assert!(!due.await);
        }
        let stop = CancellationToken::new();
        assert!(beat_due(&stop, Duration::from_millis(10)).await);
    }
}
