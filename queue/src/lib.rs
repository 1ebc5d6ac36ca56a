//! drove's queue: everything that touches the queue tables lives here.
//!
//! - [`schema`]: the deployment schema name and SQL rendering.
//! - [`connect`], [`conn`]: opening connections (pure-Rust DNS, rustls), and a
//!   connection with a prepared-statement cache for hot paths.
//! - [`migrate`]: versioned, embedded migrations under an advisory lock.
//! - [`job`]: the job model and lifecycle.
//! - [`enqueue`]: single and batch enqueue on any client or transaction.
//! - [`claim`]: leasing due jobs with `FOR UPDATE SKIP LOCKED`.
//! - [`registry`]: worker rows; one heartbeat extends all of a worker's leases.
//! - [`complete`]: fenced success, failure with backoff, cancel, release, progress.
//! - [`reaper`]: reclaiming the jobs of workers whose lease expired.
//! - [`prune`], [`vacuum`]: deleting finished jobs past retention, and
//!   vacuuming the job tables as often as the job rate needs.
//! - [`inspect`], [`admin`], [`queues`], [`stats`]: operator reads and actions.
//!
//! Guarantee: execution is at-least-once (a job whose worker dies runs again
//! elsewhere); the recorded outcome is exactly-once (every state change is
//! fenced on job id, attempt and lease owner).

pub mod admin;
pub mod claim;
pub mod complete;
pub mod conn;
pub mod connect;
pub mod cron;
pub mod enqueue;
mod enqueue_copy;
pub mod error;
pub mod inspect;
pub mod job;
pub mod migrate;
pub mod prune;
pub mod queues;
pub mod reaper;
pub mod registry;
pub mod schedule;
pub mod schema;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tid;
pub mod unique;
pub mod vacuum;

pub use admin::{Cancelled, job_cancel, job_retry, jobs_retry, jobs_retry_dead};
pub use claim::{Claim, jobs_claim, jobs_claim_hinted};
pub use complete::{
    Completion, FailOutcome, Failure, job_set_progress, jobs_cancelled_many, jobs_complete_many,
    jobs_fail_many, jobs_release_many,
};
pub use conn::Conn;
pub use connect::DbConfig;
pub use enqueue::{jobs_enqueue, jobs_enqueue_detailed, jobs_enqueue_many};
pub use error::{Error, Result};
pub use inspect::{JobFilter, job_get, jobs_list};
pub use job::{ClaimedJob, JobId, JobInfo, JobState, NewJob};
pub use migrate::{LATEST as SCHEMA_VERSION, migrate};
pub use queues::{OrderingOnDead, QueueInfo, QueueSettings};
pub use reaper::{Reaped, leases_reclaim_expired};
pub use registry::{Heartbeat, WorkerInfo, worker_deregister, worker_heartbeat, worker_register};
pub use schema::Schema;
pub use stats::{Stats, stats_read};
pub use tid::Tid;
pub use unique::{Enqueued, UniqueScope};
