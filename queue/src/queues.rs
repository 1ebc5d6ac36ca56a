//! Named queues and their settings: retry policy, timeout, fleet-wide
//! limits, retention, pause/resume.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use tokio_postgres::types::{ToSql, Type};

use crate::error::{DbResultExt, Error, Result};
use crate::job::{QUEUE_NAME_RULE, valid_queue_name};
use crate::schema::Schema;

/// A queue's settings as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueInfo {
    pub name: String,
    pub paused: bool,
    pub max_attempts: i32,
    pub backoff_base_ms: i32,
    pub backoff_max_ms: i32,
    pub timeout_ms: Option<i32>,
    pub max_running: Option<i32>,
    pub rate_per_sec: Option<f64>,
    pub keep_succeeded_s: f64,
    pub keep_dead_s: f64,
    /// What a dead job does to later jobs of its ordering key.
    pub ordering_on_dead: OrderingOnDead,
}

/// What a dead job does to the later jobs of its ordering key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderingOnDead {
    /// They wait until it is retried (and succeeds) or cancelled.
    #[default]
    Wait,
    /// They go on without it.
    Skip,
}

impl OrderingOnDead {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderingOnDead::Wait => "wait",
            OrderingOnDead::Skip => "skip",
        }
    }
}

impl std::str::FromStr for OrderingOnDead {
    type Err = Error;
    fn from_str(s: &str) -> Result<OrderingOnDead> {
        match s {
            "wait" => Ok(OrderingOnDead::Wait),
            "skip" => Ok(OrderingOnDead::Skip),
            _ => Err(Error::Invalid {
                what: "ordering_on_dead",
                value: s.to_string(),
                reason: "use wait or skip",
            }),
        }
    }
}

/// Changes to a queue's settings; `None` leaves a setting as it is.
/// For the nullable limits, `Some(None)` clears the limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub paused: Option<bool>,
    pub max_attempts: Option<i32>,
    pub backoff_base_ms: Option<i32>,
    pub backoff_max_ms: Option<i32>,
    #[serde(default, with = "double_option")]
    pub timeout_ms: Option<Option<i32>>,
    #[serde(default, with = "double_option")]
    pub max_running: Option<Option<i32>>,
    #[serde(default, with = "double_option")]
    pub rate_per_sec: Option<Option<f64>>,
    #[serde(default, with = "humantime_opt")]
    pub keep_succeeded: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    pub keep_dead: Option<Duration>,
    pub ordering_on_dead: Option<OrderingOnDead>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

mod humantime_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    /// `30s`, `5m`, `1day`, `7d 12h` (humantime syntax).
    pub fn parse_duration(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
    }
}

pub use humantime_opt::parse_duration;

const QUEUE_COLUMNS: &str = "name, paused, max_attempts, backoff_base_ms, backoff_max_ms, timeout_ms, max_running,
     rate_per_sec, EXTRACT(EPOCH FROM keep_succeeded)::float8, EXTRACT(EPOCH FROM keep_dead)::float8,
     ordering_on_dead";

fn queue_from_row(r: &tokio_postgres::Row) -> QueueInfo {
    QueueInfo {
        name: r.get(0),
        paused: r.get(1),
        max_attempts: r.get(2),
        backoff_base_ms: r.get(3),
        backoff_max_ms: r.get(4),
        timeout_ms: r.get(5),
        max_running: r.get(6),
        rate_per_sec: r.get(7),
        keep_succeeded_s: r.get(8),
        keep_dead_s: r.get(9),
        ordering_on_dead: r.get::<_, &str>(10).parse().unwrap_or(OrderingOnDead::Wait),
    }
}

fn check_name(name: &str) -> Result<()> {
    if valid_queue_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "queue name",
            value: name.to_string(),
            reason: QUEUE_NAME_RULE,
        })
    }
}

/// All queues, by name.
pub async fn queues_list(client: &impl GenericClient, schema: &Schema) -> Result<Vec<QueueInfo>> {
    let sql = schema.sql(&format!(
        "SELECT {QUEUE_COLUMNS} FROM {{s}}.queues ORDER BY name"
    ));
    let rows = client.query_typed(&sql, &[]).await.db()?;
    Ok(rows.iter().map(queue_from_row).collect())
}

/// One queue's settings.
pub async fn queue_get(
    client: &impl GenericClient,
    schema: &Schema,
    name: &str,
) -> Result<QueueInfo> {
    check_name(name)?;
    let sql = schema.sql(&format!(
        "SELECT {QUEUE_COLUMNS} FROM {{s}}.queues WHERE name = $1"
    ));
    let row = client
        .query_typed_opt(&sql, &[(&name, Type::TEXT)])
        .await
        .db()?;
    row.map(|r| queue_from_row(&r))
        .ok_or_else(|| Error::UnknownQueue(name.to_string()))
}

/// Creates a queue (no-op if it exists), then applies `settings`.
pub async fn queue_create(
    client: &impl GenericClient,
    schema: &Schema,
    name: &str,
    settings: &QueueSettings,
) -> Result<QueueInfo> {
    check_name(name)?;
    client
        .query_typed(
            &schema.sql("INSERT INTO {s}.queues (name) VALUES ($1) ON CONFLICT DO NOTHING"),
            &[(&name, Type::TEXT)],
        )
        .await
        .db()?;
    queue_update(client, schema, name, settings).await
}

/// Applies `settings` to an existing queue and returns the result.
pub async fn queue_update(
    client: &impl GenericClient,
    schema: &Schema,
    name: &str,
    s: &QueueSettings,
) -> Result<QueueInfo> {
    check_name(name)?;
    let bad = |what: &'static str, value: String, reason: &'static str| Error::Invalid {
        what,
        value,
        reason,
    };
    if let Some(n) = s.max_attempts.filter(|n| !(1..=1000).contains(n)) {
        return Err(bad(
            "max_attempts",
            n.to_string(),
            "must be between 1 and 1000",
        ));
    }
    for (what, v) in [
        ("backoff_base_ms", s.backoff_base_ms),
        ("backoff_max_ms", s.backoff_max_ms),
        ("timeout_ms", s.timeout_ms.flatten()),
        ("max_running", s.max_running.flatten()),
    ] {
        if let Some(v) = v.filter(|v| *v <= 0) {
            return Err(bad(what, v.to_string(), "must be positive"));
        }
    }
    if let Some(r) = s
        .rate_per_sec
        .flatten()
        .filter(|r| !(r.is_finite() && *r > 0.0))
    {
        return Err(bad(
            "rate_per_sec",
            r.to_string(),
            "must be a positive number",
        ));
    }
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let (keep_ok, keep_dead) = (secs(s.keep_succeeded), secs(s.keep_dead));
    let on_dead = s.ordering_on_dead.map(OrderingOnDead::as_str);
    let params: [(&(dyn ToSql + Sync), Type); 15] = [
        (&name, Type::TEXT),
        (&s.paused, Type::BOOL),
        (&s.max_attempts, Type::INT4),
        (&s.backoff_base_ms, Type::INT4),
        (&s.backoff_max_ms, Type::INT4),
        (&s.timeout_ms.is_some(), Type::BOOL),
        (&s.timeout_ms.flatten(), Type::INT4),
        (&s.max_running.is_some(), Type::BOOL),
        (&s.max_running.flatten(), Type::INT4),
        (&s.rate_per_sec.is_some(), Type::BOOL),
        (&s.rate_per_sec.flatten(), Type::FLOAT8),
        (&keep_ok, Type::FLOAT8),
        (&keep_dead, Type::FLOAT8),
        (&s.paused.is_some(), Type::BOOL),
        (&on_dead, Type::TEXT),
    ];
    let sql = schema.sql(&format!(
        "WITH u AS (
            UPDATE {{s}}.queues SET
                paused = COALESCE($2, paused),
                max_attempts = COALESCE($3, max_attempts),
                backoff_base_ms = COALESCE($4, backoff_base_ms),
                backoff_max_ms = COALESCE($5, backoff_max_ms),
                timeout_ms = CASE WHEN $6 THEN $7 ELSE timeout_ms END,
                max_running = CASE WHEN $8 THEN $9 ELSE max_running END,
                rate_per_sec = CASE WHEN $10 THEN $11 ELSE rate_per_sec END,
                -- A new rate starts with a full bucket.
                rate_tokens = CASE WHEN $10 THEN NULL ELSE rate_tokens END,
                ordering_on_dead = COALESCE($15, ordering_on_dead),
                keep_succeeded = COALESCE($12 * interval '1 second', keep_succeeded),
                keep_dead = COALESCE($13 * interval '1 second', keep_dead),
                updated_at = now()
            WHERE name = $1
            RETURNING *
        ), woken AS (
            -- A resumed queue may have jobs waiting: wake the workers.
            SELECT count(pg_notify('{{jobs_chan}}', name)) AS n FROM u WHERE $14 AND NOT paused
        )
        SELECT {QUEUE_COLUMNS} FROM u, woken"
    ));
    let row = client.query_typed_opt(&sql, &params).await.db()?;
    row.map(|r| queue_from_row(&r))
        .ok_or_else(|| Error::UnknownQueue(name.to_string()))
}

/// Pauses (workers stop claiming from it) or resumes a queue.
pub async fn queue_set_paused(
    client: &impl GenericClient,
    schema: &Schema,
    name: &str,
    paused: bool,
) -> Result<QueueInfo> {
    queue_update(
        client,
        schema,
        name,
        &QueueSettings {
            paused: Some(paused),
            ..Default::default()
        },
    )
    .await
}

/// Deletes a queue that has no live jobs.
pub async fn queue_delete(client: &impl GenericClient, schema: &Schema, name: &str) -> Result<()> {
    check_name(name)?;
    let sql = schema.sql(
        "WITH busy AS (SELECT 1 FROM {s}.jobs WHERE queue = $1 LIMIT 1)
         DELETE FROM {s}.queues WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM busy) RETURNING name",
    );
    if client
        .query_typed_opt(&sql, &[(&name, Type::TEXT)])
        .await
        .db()?
        .is_none()
    {
        queue_get(client, schema, name).await?;
        return Err(Error::Invalid {
            what: "queue",
            value: name.to_string(),
            reason: "still has pending or running jobs",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1day").unwrap(), Duration::from_secs(86400));
        assert_eq!(
            parse_duration("7d 12h").unwrap(),
            Duration::from_secs(7 * 86400 + 12 * 3600)
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn settings_json_distinguishes_clear_from_keep() {
        let s: QueueSettings =
            serde_json::from_str(r#"{"max_running": null, "keep_dead": "3d"}"#).unwrap();
        assert_eq!(s.max_running, Some(None));
        assert_eq!(s.timeout_ms, None);
        assert_eq!(s.keep_dead, Some(Duration::from_secs(3 * 86400)));
        assert!(serde_json::from_str::<QueueSettings>(r#"{"max_runing": 3}"#).is_err());
    }
}
