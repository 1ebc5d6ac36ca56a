//! Unique jobs: a `unique_key` held by one job per queue, for a scope.
//!
//! - `pending`: while the job waits; released when it starts running.
//! - `active` (the default): while it waits or runs; released when it
//!   finishes, however it finishes (success, dead, cancelled).
//! - a duration (`"10m"`): for that long after the enqueue, whatever the job
//!   does meanwhile (a debounce window).
//!
//! An enqueue whose key is held returns the holding job's id and says it
//! already existed. The key is taken with `INSERT ... ON CONFLICT` on the
//! `unique_keys` primary key in the same statement as the job's insert, so
//! concurrent enqueues of one key get one job; keys are released by triggers
//! on the jobs' state changes (see the migration), so every path releases
//! them. Batches without unique keys never come here.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::error::{DbResultExt, Error, Result};
use crate::job::{JobId, NewJob};
use crate::schema::Schema;

/// How long a unique key is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UniqueScope {
    /// While the job waits.
    Pending,
    /// While it waits or runs.
    #[default]
    Active,
    /// For this many seconds after the enqueue.
    Window(u32),
}

impl UniqueScope {
    fn kind(self) -> &'static str {
        match self {
            UniqueScope::Pending => "pending",
            UniqueScope::Active => "active",
            UniqueScope::Window(_) => "window",
        }
    }

    fn window_s(self) -> Option<i32> {
        match self {
            UniqueScope::Window(s) => Some(s as i32),
            _ => None,
        }
    }
}

impl std::str::FromStr for UniqueScope {
    type Err = Error;
    fn from_str(s: &str) -> Result<UniqueScope> {
        match s {
            "pending" => Ok(UniqueScope::Pending),
            "active" => Ok(UniqueScope::Active),
            other => {
                let d = humantime::parse_duration(other).map_err(|_| Error::Invalid {
                    what: "unique_scope",
                    value: other.to_string(),
                    reason: "use pending, active, or a window such as 10m",
                })?;
                let secs =
                    u32::try_from(d.as_secs())
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or(Error::Invalid {
                            what: "unique_scope",
                            value: other.to_string(),
                            reason: "a window must be between 1 s and 136 years",
                        })?;
                Ok(UniqueScope::Window(secs))
            }
        }
    }
}

impl std::fmt::Display for UniqueScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UniqueScope::Window(s) => write!(
                f,
                "{}",
                humantime::format_duration(std::time::Duration::from_secs(u64::from(*s)))
            ),
            other => f.write_str(other.kind()),
        }
    }
}

impl Serialize for UniqueScope {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for UniqueScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<UniqueScope, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One enqueue's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: JobId,
    /// True when a unique key was held: `id` is the job holding it.
    pub existing: bool,
}

/// The statement is the function of migration 005 (its plan is kept by
/// the server): one row per input job, in input order.
const JOBS_ENQUEUE_UNIQUE: &str = "SELECT id, existing FROM {s}.jobs_enqueue_unique($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// Enqueues jobs of which some carry a unique key; see the module docs.
pub async fn jobs_enqueue_unique(
    client: &impl GenericClient,
    schema: &Schema,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>> {
    let cols = crate::enqueue::Columns::new(jobs);
    let scope: Vec<&str> = jobs
        .iter()
        .map(|j| j.unique_scope.unwrap_or_default().kind())
        .collect();
    let window: Vec<Option<i32>> = jobs
        .iter()
        .map(|j| j.unique_scope.and_then(UniqueScope::window_s))
        .collect();
    let mut params = cols.params();
    params.push((&scope, Type::TEXT_ARRAY));
    params.push((&window, Type::INT4_ARRAY));
    let rows = client
        .query_typed(&schema.sql(JOBS_ENQUEUE_UNIQUE), &params)
        .await
        .db()?;
    Ok(rows
        .iter()
        .map(|r| Enqueued {
            id: r.get(0),
            existing: r.get(1),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        assert_eq!(
            "pending".parse::<UniqueScope>().unwrap(),
            UniqueScope::Pending
        );
        assert_eq!(
            "active".parse::<UniqueScope>().unwrap(),
            UniqueScope::Active
        );
        assert_eq!(
            "10m".parse::<UniqueScope>().unwrap(),
            UniqueScope::Window(600)
        );
        assert_eq!(UniqueScope::Window(600).to_string(), "10m");
        assert!(
            "forever"
                .parse::<UniqueScope>()
                .unwrap_err()
                .to_string()
                .contains("unique_scope")
        );
        assert!("0s".parse::<UniqueScope>().is_err());
    }
}
