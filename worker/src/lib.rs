//! The drove worker: runs queued jobs on a VM of a managed instance group.
//!
//! One process serves some queues with a fixed number of slots. Its parts,
//! one task each, all stopped through one shutdown token:
//!
//! - [`fetcher`]: claims due jobs for all free slots (plus an adaptive
//!   prefetch) in one statement, woken by [`listener`] or a jittered poll.
//! - [`executor`]: runs each job in a slot with its timeout and cancellation.
//! - [`completer`]: records outcomes in batches, never dropping one.
//! - [`heartbeat`]: extends the worker's lease (all its jobs at once), reaps
//!   dead workers, delivers cancel requests, and fences this worker off
//!   (stops its jobs) when it cannot reach the database for most of a lease.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`.
//!
//! Handlers: [`builtin`] (`noop`, `sleep`, `spin`), [`exec`] (a command per
//! kind), or your own type implementing [`Handler`].
//!
//! Connections: at most three per process whatever the slot count (claims
//! and heartbeats; completions; LISTEN), two in poll-only mode.

pub mod builtin;
pub mod completer;
pub mod config;
pub mod exec;
pub mod executor;
pub mod fetcher;
pub mod handler;
pub mod heartbeat;
pub mod http;
pub mod link;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod state;
pub mod worker;

pub use config::{LogFormat, WorkerConfig};
pub use handler::{Handler, Handlers, Job, JobError, JobResult};
pub use worker::Worker;

/// This build's version, as recorded in the worker registry.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
