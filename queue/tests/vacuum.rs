//! The vacuumer's pass against a real PostgreSQL: nothing below the
//! policy's thresholds, a VACUUM of `jobs` once claims and completions have
//! left enough dead rows, and the dead rows gone afterwards.

use std::time::Duration;

use drove_queue::testing::TestDb;
use drove_queue::vacuum::{VacuumPolicy, tables_vacuum_due};
use drove_queue::*;

/// (dead rows, vacuums so far) of one of the test schema's tables.
async fn table_stats(conn: &Conn, schema: &Schema, table: &str) -> (i64, i64) {
    let r = conn
        .client()
        .query_one(
            "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
            &[&schema.name(), &table],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn vacuums_jobs_once_enough_rows_are_dead() {
    let t = TestDb::new().await;
    let conn = t.registered("w1", Duration::from_secs(60)).await;
    let jobs: Vec<NewJob> = (0..2000).map(|_| NewJob::new("noop")).collect();
    jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    loop {
        let claimed = jobs_claim(&conn, "default", 500, "w1").await.unwrap();
        if claimed.is_empty() {
            break;
        }
        let done: Vec<Completion> = claimed
            .iter()
            .map(|j| Completion {
                id: j.id,
                attempt: j.attempt,
                result: None,
                ctid: Some(j.ctid),
            })
            .collect();
        jobs_complete_many(&conn, "w1", &done).await.unwrap();
    }
    // 100 jobs left waiting: live rows for the fraction.
    let waiting: Vec<NewJob> = (0..100).map(|_| NewJob::new("noop")).collect();
    let waiting = jobs_enqueue_many(conn.client(), &t.schema, &waiting)
        .await
        .unwrap();
    // This connection's counts reach the statistics now, not in a second.
    conn.client()
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    let (dead, vacuums) = table_stats(&conn, &t.schema, "jobs").await;
    // Each job left two dead versions: the claimed row's old one, and the
    // completed row.
    assert!(dead >= 4000, "dead rows {dead}");

    let strict = VacuumPolicy {
        min_dead: dead + 1,
        dead_fraction: 0.0,
    };
    let ran = tables_vacuum_due(conn.client(), &t.schema, &strict)
        .await
        .unwrap();
    assert!(ran.is_empty(), "below the floor: {ran:?}");
    // 100 live rows: a fraction of 100 per live row asks for 10,000 dead.
    let ratio = VacuumPolicy {
        min_dead: 1,
        dead_fraction: 100.0,
    };
    assert!(
        tables_vacuum_due(conn.client(), &t.schema, &ratio)
            .await
            .unwrap()
            .is_empty(),
        "below the fraction of live rows"
    );

    let due = VacuumPolicy {
        min_dead: 1000,
        dead_fraction: 0.0,
    };
    let ran = tables_vacuum_due(conn.client(), &t.schema, &due)
        .await
        .unwrap();
    assert_eq!(
        ran.iter().map(|v| v.table).collect::<Vec<_>>(),
        ["jobs"],
        "{ran:?}"
    );
    assert_eq!(ran[0].dead, dead);
    let (left, vacuums_after) = table_stats(&conn, &t.schema, "jobs").await;
    assert_eq!(vacuums_after, vacuums + 1);
    assert!(left < 100, "dead rows left after VACUUM: {left}");
    // The waiting jobs are still there, in order.
    let claimed = jobs_claim(&conn, "default", 1000, "w1").await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), waiting);
}
