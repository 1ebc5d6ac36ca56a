//! The controller's housekeeping: one background loop per module, each with
//! the same shape (a `Config` with defaults, `run_once` that tests can step,
//! errors logged and counted, never fatal), driven by [`run_loop`].
//!
//! - [`reaper`]: reclaims the jobs of workers whose lease expired.
//! - [`pruner`]: deletes finished jobs past their queue's retention.
//! - [`cron`]: fires cron schedules.
//! - [`scheduler`]: wakes workers when delayed jobs come due.
//! - [`stats`]: refreshes the cached queue statistics behind `/metrics`,
//!   the dashboard and the scaling policy.
//! - [`vacuumer`]: vacuums the job tables as often as the job rate needs.
//!
//! The reaper, pruner, cron, scheduler and vacuumer run only on the leader;
//! every controller refreshes its own statistics.

pub mod cron;
pub mod pruner;
pub mod reaper;
pub mod scheduler;
pub mod stats;
pub mod vacuumer;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::serve::metrics::ControllerMetrics;

/// A background task stepped by [`run_loop`].
pub trait Service: Send + Sync {
    /// Name used in logs and metric labels.
    fn name(&self) -> &'static str;
    /// Time between passes.
    fn interval(&self) -> Duration;
    /// Runs only while this controller is the leader.
    fn leader_only(&self) -> bool;
    /// One pass; returns a short description of what it did, if anything.
    fn run_once(&self) -> impl Future<Output = anyhow::Result<Option<String>>> + Send;
    /// A pass taking longer than this is abandoned.
    fn timeout(&self) -> Duration {
        PASS_TIMEOUT
    }
}

/// Each pass may take at most this long before it is abandoned (unless the
/// service says otherwise).
pub const PASS_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `svc` every interval until `stop`; a failed pass is logged and
/// counted, and the loop goes on.
pub async fn run_loop<S: Service>(
    svc: S,
    leader: watch::Receiver<bool>,
    metrics: ControllerMetrics,
    stop: CancellationToken,
) {
    let name = svc.name();
    loop {
        if !svc.leader_only() || *leader.borrow() {
            let timeout = svc.timeout();
            let pass = tokio::time::timeout(timeout, svc.run_once());
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = pass => r,
            };
            metrics.loop_runs.with_label_values(&[name]).inc();
            match result {
                Ok(Ok(Some(did))) => tracing::info!(task = name, "{did}"),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    metrics.loop_errors.with_label_values(&[name]).inc();
                    tracing::warn!(task = name, error = %format!("{e:#}"), "pass failed");
                }
                Err(_) => {
                    metrics.loop_errors.with_label_values(&[name]).inc();
                    tracing::warn!(task = name, "pass timed out after {timeout:?}");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(svc.interval()) => {}
        }
    }
}
