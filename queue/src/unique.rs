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

const JOBS_ENQUEUE_UNIQUE: &str = "
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int2[], $5::timestamptz[],
                         $6::int4[], $7::int4[], $8::int4[], $9::int4[], $10::text[], $11::text[],
                         $12::text[], $13::int4[])
        WITH ORDINALITY AS t(queue, kind, payload, priority, run_at, max_attempts, backoff_base_ms,
                             backoff_max_ms, timeout_ms, unique_key, ordering_key, scope, window_s, ord)
), missing AS (
    SELECT {s}.unknown_queue(d.queue) FROM (SELECT DISTINCT queue FROM input) d
    WHERE NOT EXISTS (SELECT 1 FROM {s}.queues q WHERE q.name = d.queue)
), ids AS (
    SELECT ord, nextval(pg_get_serial_sequence('{s}.jobs', 'id')) AS id
    FROM input WHERE NOT EXISTS (SELECT 1 FROM missing)
), wanted AS (
    -- The first job of each key in the batch competes for it.
    SELECT DISTINCT ON (i.queue, i.unique_key) i.queue, i.unique_key, ids.id, i.scope, i.window_s
    FROM input i JOIN ids USING (ord)
    WHERE i.unique_key IS NOT NULL
    ORDER BY i.queue, i.unique_key, i.ord
), held AS (
    INSERT INTO {s}.unique_keys AS u (queue, key, job_id, scope, expires_at)
    SELECT queue, unique_key, id, scope,
           CASE WHEN scope = 'window' THEN now() + window_s * interval '1 second' END
    FROM wanted
    ON CONFLICT (queue, key) DO UPDATE SET
        -- An expired window is free again; any other holder keeps the key.
        job_id = CASE WHEN u.scope = 'window' AND u.expires_at <= now() THEN EXCLUDED.job_id ELSE u.job_id END,
        scope = CASE WHEN u.scope = 'window' AND u.expires_at <= now() THEN EXCLUDED.scope ELSE u.scope END,
        expires_at = CASE WHEN u.scope = 'window' AND u.expires_at <= now() THEN EXCLUDED.expires_at ELSE u.expires_at END
    RETURNING u.queue, u.key, u.job_id
), ins AS (
    INSERT INTO {s}.jobs (id, queue, kind, payload, priority, run_at, max_attempts,
                          backoff_base_ms, backoff_max_ms, timeout_ms, unique_key, ordering_key)
    SELECT ids.id, i.queue, i.kind, i.payload, i.priority, COALESCE(i.run_at, now()), i.max_attempts,
           i.backoff_base_ms, i.backoff_max_ms, i.timeout_ms, i.unique_key, i.ordering_key
    FROM input i JOIN ids USING (ord)
    WHERE i.unique_key IS NULL
       OR EXISTS (SELECT 1 FROM held h WHERE h.queue = i.queue AND h.key = i.unique_key AND h.job_id = ids.id)
    ORDER BY i.ord
    RETURNING id, queue, run_at
), woken AS (
    SELECT count(pg_notify('{jobs_chan}', d.queue)) AS n
    FROM (SELECT DISTINCT queue FROM ins WHERE run_at <= now()) d
)
SELECT COALESCE(ins.id, h.job_id), ins.id IS NULL
FROM input i
JOIN ids USING (ord)
LEFT JOIN ins ON ins.id = ids.id
LEFT JOIN held h ON h.queue = i.queue AND h.key = i.unique_key
CROSS JOIN woken
ORDER BY i.ord";

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
