//! What runs a job: the [`Handler`] trait, the [`Job`] a handler receives,
//! and the [`Handlers`] registry that maps job kinds to handlers.
//!
//! Embedding the worker with your own handler:
//!
//! ```no_run
//! use drove_worker::{Handlers, Job, JobError};
//!
//! #[derive(serde::Deserialize)]
//! struct Email { to: String }
//!
//! let handlers = Handlers::builtin().with("email", |job: Job| async move {
//!     let email: Email = job.payload()?;
//!     job.progress(&serde_json::json!({"step": "sending", "to": email.to}));
//!     // ... send it ...
//!     Ok(None)
//! });
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use drove_queue::JobId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a handler returns: an optional JSON result, or an error.
pub type JobResult = Result<Option<Box<RawValue>>, JobError>;

/// Runs jobs of one kind. Closures `Fn(Job) -> impl Future<Output = JobResult>`
/// implement it.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, job: Job) -> BoxFuture<JobResult>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobResult> + Send + 'static,
{
    fn run(&self, job: Job) -> BoxFuture<JobResult> {
        Box::pin(self(job))
    }
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub message: String,
    /// False when no retry can succeed (e.g. a malformed payload): the job
    /// goes to `dead` at once instead of using up its attempts.
    pub retryable: bool,
}

impl JobError {
    /// A failure worth retrying later.
    pub fn retry(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retryable: false,
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Any error converts into a retryable failure, so `?` works in handlers.
impl<E: std::error::Error> From<E> for JobError {
    fn from(e: E) -> JobError {
        JobError::retry(e.to_string())
    }
}

/// Progress reports on their way to the database: (job, attempt, value).
pub(crate) type ProgressTx = mpsc::UnboundedSender<(JobId, i32, Box<RawValue>)>;

/// A job as a handler sees it.
pub struct Job {
    pub id: JobId,
    pub queue: Arc<str>,
    pub kind: Arc<str>,
    /// 1 on the first run.
    pub attempt: i32,
    /// The payload as enqueued (JSON text, not re-encoded).
    pub payload: Box<RawValue>,
    /// Cancelled when the job must stop: timeout, cancel request, shutdown
    /// grace over, or the worker lost its lease. Long synchronous work
    /// should check it; async handlers are also dropped at that point.
    pub cancel: CancellationToken,
    pub(crate) progress_tx: Option<ProgressTx>,
    pub(crate) held: Option<Arc<crate::state::Held>>,
}

impl Job {
    /// Deserializes the payload; a mismatch is a permanent failure.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(self.payload.get())
            .map_err(|e| JobError::permanent(format!("invalid payload for {}: {e}", self.kind)))
    }

    /// Reports progress (any JSON). Cheap: the latest value per job is
    /// written at most about once a second.
    pub fn progress<T: Serialize + ?Sized>(&self, value: &T) {
        if let (Some(tx), Ok(text)) = (&self.progress_tx, serde_json::to_string(value)) {
            let raw = RawValue::from_string(text).expect("serde_json output is JSON");
            let _ = tx.send((self.id, self.attempt, raw));
        }
    }

    /// Enqueues `job` when this one succeeds, in the same transaction that
    /// records the success (a simple chain: a pipeline step and its
    /// successor commit together). Nothing is enqueued if this attempt
    /// fails or its lease was lost.
    pub fn then(&self, job: drove_queue::NewJob) {
        if let Some(held) = &self.held {
            held.then.lock().expect("then lock poisoned").push(job);
        }
    }

    /// A job for tests of handlers, outside a worker.
    pub fn for_test(kind: &str, payload: &str) -> Job {
        Job {
            id: 1,
            queue: "default".into(),
            kind: kind.into(),
            attempt: 1,
            payload: RawValue::from_string(payload.into()).expect("test payload is JSON"),
            cancel: CancellationToken::new(),
            progress_tx: None,
            held: None,
        }
    }
}

/// Job kind → handler.
#[derive(Clone, Default)]
pub struct Handlers {
    map: BTreeMap<String, Arc<dyn Handler>>,
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// The built-in `noop`, `sleep` and `spin`.
    pub fn builtin() -> Handlers {
        Handlers::new()
            .with("noop", crate::builtin::noop)
            .with("sleep", crate::builtin::sleep)
            .with("spin", crate::builtin::spin)
    }

    /// Adds (or replaces) the handler of `kind`.
    pub fn with(mut self, kind: impl Into<String>, handler: impl Handler) -> Handlers {
        self.map.insert(kind.into(), Arc::new(handler));
        self
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.map.get(kind).cloned()
    }

    /// Kinds this worker can run.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}
