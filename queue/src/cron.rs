//! Cron schedules: a job enqueued at every time matching a crontab
//! expression, in a time zone.
//!
//! Firing is exactly-once per matching time: the due schedule's row is
//! locked, its job enqueued and its next time written in one transaction,
//! so two controllers (or a restarted one) cannot fire the same time twice,
//! and a time that came due while no controller ran is fired when one
//! returns (within the late tolerance), or per the schedule's catch-up
//! policy after a longer downtime: `skip` the missed times, or run `once`.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Client, GenericClient, Row};

use crate::error::{DbResultExt, Error, Result};
use crate::job::{JobId, NewJob, QUEUE_NAME_RULE, valid_queue_name};
use crate::schema::Schema;

/// A schedule as created or changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CronSpec {
    /// crontab syntax: `min hour day month weekday`, or with seconds first.
    pub schedule: String,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    pub kind: String,
    #[serde(default = "empty")]
    pub payload: serde_json::Value,
    #[serde(default)]
    pub priority: i16,
    #[serde(default)]
    pub max_attempts: Option<i32>,
    #[serde(default)]
    pub timeout_ms: Option<i32>,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn utc() -> String {
    "UTC".into()
}
fn default_queue() -> String {
    "default".into()
}
fn empty() -> serde_json::Value {
    serde_json::json!({})
}
fn yes() -> bool {
    true
}

/// What to do with times missed during a downtime longer than the late tolerance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire nothing for them; continue with the next time.
    #[default]
    Skip,
    /// Fire one job for all of them, then continue.
    Once,
}

impl CatchUp {
    fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
        }
    }
}

/// A stored schedule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CronInfo {
    pub name: String,
    #[serde(flatten)]
    pub spec: CronSpec,
    pub next_fire_at: DateTime<Utc>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_job_id: Option<JobId>,
}

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).build()
}

/// Parses a schedule and its time zone, with errors that name the bad part.
pub fn cron_parse(schedule: &str, timezone: &str) -> Result<(Cron, chrono_tz::Tz)> {
    let cron = parser().parse(schedule).map_err(|e| Error::Invalid {
        what: "cron schedule",
        value: format!("{schedule} ({e})"),
        reason: "use crontab syntax: minute hour day-of-month month day-of-week (optionally seconds first)",
    })?;
    let tz: chrono_tz::Tz = timezone.parse().map_err(|_| Error::Invalid {
        what: "time zone",
        value: timezone.to_string(),
        reason: "use an IANA name such as UTC or Europe/Paris",
    })?;
    Ok((cron, tz))
}

/// The first time strictly after `after` that matches the schedule.
pub fn cron_next(schedule: &str, timezone: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let (cron, tz) = cron_parse(schedule, timezone)?;
    let local = after.with_timezone(&tz);
    let next = cron
        .find_next_occurrence(&local, false)
        .map_err(|e| Error::Invalid {
            what: "cron schedule",
            value: format!("{schedule} ({e})"),
            reason: "it never matches",
        })?;
    Ok(next.with_timezone(&Utc))
}

fn check(name: &str, spec: &CronSpec) -> Result<()> {
    if !valid_queue_name(name) {
        return Err(Error::Invalid {
            what: "schedule name",
            value: name.to_string(),
            reason: QUEUE_NAME_RULE,
        });
    }
    cron_parse(&spec.schedule, &spec.timezone)?;
    NewJob::new(spec.kind.clone())
        .with_queue(spec.queue.clone())
        .with_payload(&spec.payload)?
        .validate()
}

const CRON_COLUMNS: &str =
    "name, schedule, timezone, queue, kind, payload, priority, max_attempts, timeout_ms,
     catch_up, enabled, next_fire_at, last_fired_at, last_job_id";

fn from_row(r: &Row) -> CronInfo {
    CronInfo {
        name: r.get(0),
        spec: CronSpec {
            schedule: r.get(1),
            timezone: r.get(2),
            queue: r.get(3),
            kind: r.get(4),
            payload: r.get(5),
            priority: r.get(6),
            max_attempts: r.get(7),
            timeout_ms: r.get(8),
            catch_up: if r.get::<_, &str>(9) == "once" {
                CatchUp::Once
            } else {
                CatchUp::Skip
            },
            enabled: r.get(10),
        },
        next_fire_at: r.get(11),
        last_fired_at: r.get(12),
        last_job_id: r.get(13),
    }
}

/// Creates or replaces the schedule `name`. The next firing is computed
/// from now (a changed schedule does not fire for times already past).
pub async fn cron_upsert(
    client: &impl GenericClient,
    schema: &Schema,
    name: &str,
    spec: &CronSpec,
) -> Result<CronInfo> {
    check(name, spec)?;
    let exists: bool = client
        .query_typed_one(
            &schema.sql("SELECT EXISTS (SELECT 1 FROM {s}.queues WHERE name = $1)"),
            &[(&spec.queue, Type::TEXT)],
        )
        .await
        .db()?
        .get(0);
    if !exists {
        return Err(Error::UnknownQueue(spec.queue.clone()));
    }
    let next = cron_next(&spec.schedule, &spec.timezone, Utc::now())?;
    let sql = schema.sql(&format!(
        "INSERT INTO {{s}}.cron_schedules AS c (name, schedule, timezone, queue, kind, payload, priority,
                                                max_attempts, timeout_ms, catch_up, enabled, next_fire_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (name) DO UPDATE SET
             schedule = EXCLUDED.schedule, timezone = EXCLUDED.timezone, queue = EXCLUDED.queue,
             kind = EXCLUDED.kind, payload = EXCLUDED.payload, priority = EXCLUDED.priority,
             max_attempts = EXCLUDED.max_attempts, timeout_ms = EXCLUDED.timeout_ms,
             catch_up = EXCLUDED.catch_up, enabled = EXCLUDED.enabled,
             -- Keep the pending time unless what decides it changed.
             next_fire_at = CASE WHEN c.schedule = EXCLUDED.schedule AND c.timezone = EXCLUDED.timezone
                                 THEN c.next_fire_at ELSE EXCLUDED.next_fire_at END,
             updated_at = now()
         RETURNING {CRON_COLUMNS}"
    ));
    let params: [(&(dyn ToSql + Sync), Type); 12] = [
        (&name, Type::TEXT),
        (&spec.schedule, Type::TEXT),
        (&spec.timezone, Type::TEXT),
        (&spec.queue, Type::TEXT),
        (&spec.kind, Type::TEXT),
        (&Json(&spec.payload), Type::JSONB),
        (&spec.priority, Type::INT2),
        (&spec.max_attempts, Type::INT4),
        (&spec.timeout_ms, Type::INT4),
        (&spec.catch_up.as_str(), Type::TEXT),
        (&spec.enabled, Type::BOOL),
        (&next, Type::TIMESTAMPTZ),
    ];
    let row = client.query_typed_one(&sql, &params).await.db()?;
    Ok(from_row(&row))
}

/// Every schedule, by name.
pub async fn cron_list(client: &impl GenericClient, schema: &Schema) -> Result<Vec<CronInfo>> {
    let sql = schema.sql(&format!(
        "SELECT {CRON_COLUMNS} FROM {{s}}.cron_schedules ORDER BY name"
    ));
    Ok(client
        .query_typed(&sql, &[])
        .await
        .db()?
        .iter()
        .map(from_row)
        .collect())
}

/// Deletes a schedule; false if there was none.
pub async fn cron_delete(client: &impl GenericClient, schema: &Schema, name: &str) -> Result<bool> {
    let n = client
        .execute_typed(
            &schema.sql("DELETE FROM {s}.cron_schedules WHERE name = $1"),
            &[(&name, Type::TEXT)],
        )
        .await
        .db()?;
    Ok(n == 1)
}

/// Most times one schedule fires in one pass (a very frequent schedule after
/// a long pause catches up over several passes).
const MAX_FIRINGS_PER_PASS: usize = 1000;

/// One firing decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub name: String,
    /// The scheduled time that came due.
    pub due: DateTime<Utc>,
    /// The job enqueued, or None if the time was skipped (catch-up `skip`).
    pub job: Option<JobId>,
    pub next: DateTime<Utc>,
}

/// Fires every due schedule. Every time at most `late_tolerance` old fires
/// (a controller restart or failover loses nothing); older times follow the
/// schedule's catch-up policy: `skip` them, or fire `once` for all of them.
/// Safe to run from several processes.
pub async fn cron_fire_due(
    client: &mut Client,
    schema: &Schema,
    late_tolerance: chrono::Duration,
) -> Result<Vec<Fired>> {
    let tx = client.transaction().await.db()?;
    let sql = schema.sql(&format!(
        "SELECT {CRON_COLUMNS}, now() FROM {{s}}.cron_schedules
         WHERE enabled AND next_fire_at <= now()
         ORDER BY next_fire_at
         FOR UPDATE SKIP LOCKED"
    ));
    let rows = tx.query(&sql, &[]).await.db()?;
    let mut fired = Vec::new();
    for row in rows {
        let s = from_row(&row);
        let now: DateTime<Utc> = row.get(14);
        let next = |t: DateTime<Utc>| cron_next(&s.spec.schedule, &s.spec.timezone, t);
        // Times older than the tolerance: one job (catch-up `once`) or none.
        let horizon = now - late_tolerance;
        let mut due = s.next_fire_at;
        let mut to_fire = Vec::new();
        let mut skipped = Vec::new();
        let evaluated = (|| -> Result<DateTime<Utc>> {
            if due < horizon {
                if s.spec.catch_up == CatchUp::Once {
                    to_fire.push(due);
                } else {
                    skipped.push(due);
                }
                due = next(horizon - chrono::Duration::microseconds(1))?;
            }
            // Every time within the tolerance fires (bounded per pass; the
            // next pass continues).
            while due <= now && to_fire.len() < MAX_FIRINGS_PER_PASS {
                to_fire.push(due);
                due = next(due)?;
            }
            Ok(due)
        })();
        let next_due = match evaluated {
            Ok(t) => t,
            Err(e) => {
                // A schedule that no longer parses (time zone database
                // changed) is disabled rather than retried every tick.
                tracing::error!(schedule = %s.name, error = %e, "disabling a cron schedule that cannot be evaluated");
                tx.execute(
                    &schema.sql("UPDATE {s}.cron_schedules SET enabled = false WHERE name = $1"),
                    &[&s.name],
                )
                .await
                .db()?;
                continue;
            }
        };
        let mut last_job = None;
        for at in &to_fire {
            let mut job = NewJob::new(s.spec.kind.clone())
                .with_queue(s.spec.queue.clone())
                .with_payload(&s.spec.payload)?
                .with_priority(s.spec.priority)
                // Due at the scheduled time: identifies the firing, and
                // orders late firings correctly.
                .with_run_at(*at);
            job.max_attempts = s.spec.max_attempts;
            job.timeout_ms = s.spec.timeout_ms;
            let id = crate::enqueue::jobs_enqueue(&tx, schema, &job).await?;
            last_job = Some(id);
            fired.push(Fired {
                name: s.name.clone(),
                due: *at,
                job: Some(id),
                next: next_due,
            });
        }
        for at in skipped {
            fired.push(Fired {
                name: s.name.clone(),
                due: at,
                job: None,
                next: next_due,
            });
        }
        let last_fired = to_fire.last().copied();
        tx.execute(
            &schema.sql(
                "UPDATE {s}.cron_schedules
                 SET next_fire_at = $2, last_fired_at = COALESCE($3, last_fired_at),
                     last_job_id = COALESCE($4, last_job_id)
                 WHERE name = $1",
            ),
            &[&s.name, &next_due, &last_fired, &last_job],
        )
        .await
        .db()?;
    }
    tx.commit().await.db()?;
    Ok(fired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_times_follow_the_time_zone() {
        let t: DateTime<Utc> = "2026-03-28T12:00:00Z".parse().unwrap();
        // 09:00 in Paris is 08:00 UTC before the DST switch (29 March), 07:00 after.
        assert_eq!(
            cron_next("0 9 * * *", "Europe/Paris", t)
                .unwrap()
                .to_rfc3339(),
            "2026-03-29T07:00:00+00:00"
        );
        assert_eq!(
            cron_next("*/15 * * * *", "UTC", t).unwrap().to_rfc3339(),
            "2026-03-28T12:15:00+00:00"
        );
        assert_eq!(
            cron_next("30 * * * * *", "UTC", t).unwrap().to_rfc3339(),
            "2026-03-28T12:00:30+00:00"
        );
    }

    #[test]
    fn bad_schedules_and_zones_are_named() {
        let e = cron_parse("61 * * * *", "UTC").unwrap_err().to_string();
        assert!(
            e.contains("cron schedule") && e.contains("61 * * * *"),
            "{e}"
        );
        let e = cron_parse("* * * * *", "Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }
}
