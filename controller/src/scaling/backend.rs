//! What a scaling backend is: something that acts on the policy's decision.
//!
//! - `gcp-metric` publishes the signal as a Cloud Monitoring custom metric
//!   that the MIG autoscaler targets (it decides the size itself);
//! - `gcp-mig` resizes a managed instance group through the Compute API;
//! - `local` starts and stops `drove-worker` processes on this machine;
//! - `docker` starts, stops and replaces worker containers (the MIG
//!   simulation used by tests).
//!
//! The scaler loop calls [`Backend::apply`] once per tick with the latest
//! [`Decision`]; a backend must be idempotent (the same decision twice does
//! nothing the second time) and return quickly (it may start slow work,
//! like draining a worker, and finish it on later ticks).

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future borrowing from the backend.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The policy's decision and the facts it was made from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    /// Workers wanted now.
    pub desired: u32,
    /// Workers with a live registry row.
    pub live: u32,
    /// Live workers running at least one job (never scale in below this).
    pub busy: u32,
    /// Jobs due now on unpaused queues, waiting for a slot.
    pub backlog: i64,
    /// Jobs running.
    pub running: i64,
    /// Backlog plus running jobs: the work the group must hold. The
    /// `gcp-metric` backend publishes this; the MIG autoscaler divides it by
    /// its per-instance target.
    pub work: f64,
    /// The live workers (registry rows), so a backend scaling in can pick
    /// idle ones (`busy == 0`; `host` is the VM / container host name).
    #[serde(skip)]
    pub workers: Vec<drove_queue::registry::WorkerRow>,
}

/// What a backend reports after acting.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Applied {
    /// The group's size as the backend sees it (instances, processes,
    /// containers), if it manages one.
    pub size: Option<u32>,
    /// Human-readable note of what was done this tick ("resized 3 -> 5").
    pub action: Option<String>,
}

/// A backend failure; the scaler logs it, counts it and retries next tick.
#[derive(Debug, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct BackendError {
    pub backend: &'static str,
    pub message: String,
    /// True when retrying later may succeed (HTTP 5xx/429, timeouts).
    pub transient: bool,
}

impl BackendError {
    pub fn new(backend: &'static str, message: impl Into<String>, transient: bool) -> BackendError {
        BackendError {
            backend,
            message: message.into(),
            transient,
        }
    }
}

/// One way of acting on scaling decisions.
pub trait Backend: Send + Sync {
    /// `gcp-metric`, `gcp-mig`, `local`, `docker`.
    fn name(&self) -> &'static str;

    /// Moves the group toward `decision` (or publishes it).
    fn apply<'a>(&'a self, decision: &'a Decision) -> BoxFuture<'a, Result<Applied, BackendError>>;

    /// Stops what the backend started (local processes, containers), when
    /// the controller shuts down and owns its workers. Default: nothing.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
