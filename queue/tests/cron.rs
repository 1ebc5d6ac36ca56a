//! Cron firing rules against a real PostgreSQL.

use chrono::Duration;
use drove_queue::cron::{CatchUp, CronSpec, cron_fire_due, cron_upsert};
use drove_queue::testing::TestDb;

fn spec(catch_up: CatchUp) -> CronSpec {
    serde_json::from_value(
        serde_json::json!({"schedule": "* * * * *", "kind": "report", "catch_up": catch_up}),
    )
    .unwrap()
}

async fn pretend_down_for(t: &TestDb, name: &str, minutes: i32) {
    t.conn()
        .await
        .client()
        .execute(
            &t.schema.sql(
                "UPDATE {s}.cron_schedules SET next_fire_at = date_trunc('minute', now()) - make_interval(mins => $2) WHERE name = $1",
            ),
            &[&name, &minutes],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn after_a_long_downtime_skip_drops_old_times_and_once_fires_one_for_them() {
    let t = TestDb::new().await;
    let mut c = t.conn().await;
    cron_upsert(c.client(), &t.schema, "skip", &spec(CatchUp::Skip))
        .await
        .unwrap();
    cron_upsert(c.client(), &t.schema, "once", &spec(CatchUp::Once))
        .await
        .unwrap();
    pretend_down_for(&t, "skip", 60).await;
    pretend_down_for(&t, "once", 60).await;

    let schema = t.schema.clone();
    let fired = cron_fire_due(c.client_mut(), &schema, Duration::minutes(5))
        .await
        .unwrap();
    let jobs = |name: &str| {
        fired
            .iter()
            .filter(|f| f.name == name && f.job.is_some())
            .count()
    };
    let skipped = |name: &str| {
        fired
            .iter()
            .filter(|f| f.name == name && f.job.is_none())
            .count()
    };
    // Within the 5-minute tolerance: the minutes of the last 5 fire (5 or 6,
    // depending on where in the minute the test runs).
    let recent = jobs("skip");
    assert!(
        (5..=6).contains(&recent),
        "recent firings {recent}: {fired:?}"
    );
    assert_eq!(skipped("skip"), 1, "the older ones are skipped as one");
    assert_eq!(
        jobs("once"),
        recent + 1,
        "once: one job for all the older times"
    );
    // Every due time is consumed: nothing fires again now.
    assert!(
        cron_fire_due(c.client_mut(), &schema, Duration::minutes(5))
            .await
            .unwrap()
            .is_empty()
    );
    let next = drove_queue::cron::cron_list(c.client(), &schema)
        .await
        .unwrap()[0]
        .next_fire_at;
    assert!(next > chrono::Utc::now(), "next firing is in the future");
}

#[tokio::test]
async fn upsert_checks_the_queue_and_keeps_the_pending_time_if_the_schedule_did_not_change() {
    let t = TestDb::new().await;
    let c = t.conn().await;
    let mut s = spec(CatchUp::Skip);
    s.queue = "nope".into();
    let err = cron_upsert(c.client(), &t.schema, "x", &s)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown queue"), "{err}");
    let a = cron_upsert(c.client(), &t.schema, "x", &spec(CatchUp::Skip))
        .await
        .unwrap();
    pretend_down_for(&t, "x", 1).await;
    let mut changed = spec(CatchUp::Skip);
    changed.payload = serde_json::json!({"v": 2});
    let b = cron_upsert(c.client(), &t.schema, "x", &changed)
        .await
        .unwrap();
    assert!(
        b.next_fire_at < a.next_fire_at,
        "a payload change keeps the pending (past) time"
    );
    changed.schedule = "0 * * * *".into();
    let c2 = cron_upsert(c.client(), &t.schema, "x", &changed)
        .await
        .unwrap();
    assert!(
        c2.next_fire_at > chrono::Utc::now(),
        "a new schedule starts from now"
    );
}
