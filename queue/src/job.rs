//! The job model: what producers submit, what workers claim, what operators see.
//!
//! ```text
//!            enqueue                claim (lease)          complete
//!   ──────▶ available ───────────▶ running ──────────────▶ succeeded
//!           (run_at may be   ◀──── │  │  fail, attempts left:          ▲
//!            in the future)  retry │  │  back to available after a     │ prune after
//!              ▲                   │  │  capped, jittered backoff      │ retention
//!              │ manual retry      │  ├─ fail, attempts used up ──▶ dead
//!              └───────────────────┼──┤  lease lost (worker died): back to
//!                                  │  │  available now, counted as an attempt
//!                                  │  └─ released on shutdown: available, not counted
//!                                  └──── cancel ──────────────────▶ cancelled
//! ```
//!
//! `available` and `running` rows live in `jobs`; finished ones in `jobs_done`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// Job id, assigned by the database at enqueue.
pub type JobId = i64;

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Available,
    Running,
    Succeeded,
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Available,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True for states whose rows live in `jobs_done`.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<JobState> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::Invalid {
                what: "job state",
                value: s.to_string(),
                reason: "expected available, running, succeeded, dead or cancelled",
            })
    }
}

/// A job to enqueue. Build with [`NewJob::new`] and the `with_*` methods.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// Queue name (must exist); default `default`.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Handler name the worker dispatches on (`noop`, `spin`, `exec` kinds, ...).
    pub kind: String,
    /// Arguments for the handler, any JSON value; default `{}`.
    #[serde(default = "empty_object")]
    pub payload: Box<RawValue>,
    /// Lower runs first; default 0.
    #[serde(default)]
    pub priority: i16,
    /// Not before this time; default now.
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Overrides the queue's attempt limit.
    #[serde(default)]
    pub max_attempts: Option<i32>,
    /// Overrides the queue's first retry delay (doubles each attempt).
    #[serde(default)]
    pub backoff_base_ms: Option<i32>,
    /// Overrides the queue's retry delay cap.
    #[serde(default)]
    pub backoff_max_ms: Option<i32>,
    /// Overrides the queue's per-attempt timeout.
    #[serde(default)]
    pub timeout_ms: Option<i32>,
    /// At most one job per queue holds this key for `unique_scope`; a
    /// second enqueue returns the holder's id (see [`crate::unique`]).
    #[serde(default)]
    pub unique_key: Option<String>,
    /// `pending`, `active` (default) or a window such as `10m`.
    #[serde(default)]
    pub unique_scope: Option<crate::unique::UniqueScope>,
    /// Jobs sharing this key run one at a time, in enqueue order.
    #[serde(default)]
    pub ordering_key: Option<String>,
}

fn default_queue() -> String {
    "default".to_string()
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_string()).expect("{} is JSON")
}

impl NewJob {
    /// A job of `kind` on the `default` queue with an empty payload.
    pub fn new(kind: impl Into<String>) -> NewJob {
        NewJob {
            queue: default_queue(),
            kind: kind.into(),
            payload: empty_object(),
            priority: 0,
            run_at: None,
            max_attempts: None,
            backoff_base_ms: None,
            backoff_max_ms: None,
            timeout_ms: None,
            unique_key: None,
            unique_scope: None,
            ordering_key: None,
        }
    }

    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Serializes `payload` once; it is stored and delivered as is.
    pub fn with_payload<T: Serialize + ?Sized>(mut self, payload: &T) -> Result<Self> {
        let text = serde_json::to_string(payload).map_err(|_| Error::Invalid {
            what: "payload",
            value: String::new(),
            reason: "cannot be serialized to JSON",
        })?;
        self.payload = RawValue::from_string(text).expect("serde_json output is JSON");
        Ok(self)
    }

    /// Uses already-encoded JSON text as the payload, validating it.
    pub fn with_payload_json(mut self, json: &str) -> Result<Self> {
        self.payload = RawValue::from_string(json.to_string()).map_err(|e| Error::Invalid {
            what: "payload",
            value: truncate(json, 80),
            reason: leak_reason(e),
        })?;
        Ok(self)
    }

    pub fn with_priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn with_delay(self, delay: std::time::Duration) -> Self {
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.with_run_at(at)
    }

    pub fn with_max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    pub fn with_backoff(mut self, base_ms: i32, max_ms: i32) -> Self {
        self.backoff_base_ms = Some(base_ms);
        self.backoff_max_ms = Some(max_ms);
        self
    }

    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout_ms = Some(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX));
        self
    }

    pub fn with_unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// A unique key held for `scope` (see [`crate::unique`]).
    pub fn with_unique(
        mut self,
        key: impl Into<String>,
        scope: crate::unique::UniqueScope,
    ) -> Self {
        self.unique_key = Some(key.into());
        self.unique_scope = Some(scope);
        self
    }

    pub fn with_ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Checks what the database would otherwise reject with a less clear message.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what, value: String, reason| {
            Err(Error::Invalid {
                what,
                value,
                reason,
            })
        };
        if !valid_queue_name(&self.queue) {
            return invalid("queue name", self.queue.clone(), QUEUE_NAME_RULE);
        }
        if self.kind.is_empty() || self.kind.len() > 128 || self.kind.chars().any(char::is_control)
        {
            return invalid(
                "job kind",
                self.kind.clone(),
                "must be 1-128 printable characters",
            );
        }
        if let Some(n) = self.max_attempts
            && !(1..=1000).contains(&n)
        {
            return invalid("max_attempts", n.to_string(), "must be between 1 and 1000");
        }
        for (what, v) in [
            ("timeout_ms", self.timeout_ms),
            ("backoff_base_ms", self.backoff_base_ms),
            ("backoff_max_ms", self.backoff_max_ms),
        ] {
            if v.is_some_and(|v| v <= 0) {
                return invalid(what, v.unwrap_or_default().to_string(), "must be positive");
            }
        }
        for (what, key) in [
            ("unique_key", &self.unique_key),
            ("ordering_key", &self.ordering_key),
        ] {
            if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 512) {
                return invalid(what, key.clone().unwrap_or_default(), "must be 1-512 bytes");
            }
        }
        if let (Some(scope), None) = (self.unique_scope, &self.unique_key) {
            return invalid("unique_scope", scope.to_string(), "needs a unique_key");
        }
        Ok(())
    }
}

/// The rule [`valid_queue_name`] checks, for error messages.
pub const QUEUE_NAME_RULE: &str =
    "use 1-63 letters, digits and _ . : - (starting with a letter or digit)";

/// Queue names: `[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}` (the same check as the table's).
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn leak_reason(e: serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "not valid JSON (unexpected end)",
        serde_json::error::Category::Syntax => "not valid JSON (syntax error)",
        _ => "not valid JSON",
    }
}

/// A job leased to a worker by a claim.
#[derive(Debug)]
pub struct ClaimedJob {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub priority: i16,
    /// 1 for the first run, 2 for the first retry, ...
    pub attempt: i32,
    /// The job's timeout, or its queue's default.
    pub timeout_ms: Option<i32>,
    pub payload: Box<RawValue>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Where the claimed row version is: lets the completion find it
    /// without an index lookup (a hint, see [`crate::tid`]).
    pub ctid: crate::tid::Tid,
}

/// Everything known about one job, live or finished.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Worker holding the lease (running) or that finished the job.
    pub worker: Option<String>,
    pub unique_key: Option<String>,
    pub ordering_key: Option<String>,
    pub cancel_requested: bool,
    pub payload: serde_json::Value,
    pub progress: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    /// One entry per failed attempt.
    pub errors: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_job_from_json_rejects_unknown_fields_and_bad_payload() {
        let ok: NewJob = serde_json::from_str(r#"{"kind":"spin","payload":{"ms":5}}"#).unwrap();
        assert_eq!(
            (ok.queue.as_str(), ok.payload.get()),
            ("default", r#"{"ms":5}"#)
        );
        assert!(serde_json::from_str::<NewJob>(r#"{"kind":"x","colour":"red"}"#).is_err());
        let err = NewJob::new("x").with_payload_json("{\"a\":").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        assert!(NewJob::new("x").validate().is_ok());
        let e = NewJob::new("x")
            .with_queue("no spaces")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("queue name"), "{e}");
        let e = NewJob::new("x")
            .with_max_attempts(0)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("max_attempts"), "{e}");
        assert!(NewJob::new("").validate().is_err());
    }

    #[test]
    fn states_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("done".parse::<JobState>().is_err());
    }
}
