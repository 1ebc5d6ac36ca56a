//! Pruning finished jobs: only past their queue's retention (succeeded and
//! dead kept for different times), in bounded batches, and finished jobs of
//! deleted queues after a week.

use drove_queue::testing::TestDb;
use drove_queue::*;

/// Finished jobs in `queue`, `state`, finished `age` ago.
async fn finished(conn: &Conn, t: &TestDb, queue: &str, state: &str, age: &str, n: i64) {
    conn.client()
        .execute(
            &t.schema
                .sql("INSERT INTO {s}.queues (name) VALUES ($1) ON CONFLICT DO NOTHING"),
            &[&queue],
        )
        .await
        .unwrap();
    conn.client()
        .execute(
            &t.schema.sql(&format!(
                "INSERT INTO {{s}}.jobs_done (id, queue, kind, state, priority, attempt, run_at,
                     created_at, started_at, finished_at, payload, errors)
                 SELECT nextval(pg_get_serial_sequence('{{s}}.jobs', 'id')), $1, 'noop',
                        '{state}', 0, 1, now(), now(), now(), now() - $2::text::interval, '{{}}', '[]'
                 FROM generate_series(1, $3::int8)"
            )),
            &[&queue, &age, &n],
        )
        .await
        .unwrap();
}

async fn left(conn: &Conn, t: &TestDb) -> Vec<(String, String, i64)> {
    conn.client()
        .query(
            &t.schema.sql(
                "SELECT queue, state::text, count(*) FROM {s}.jobs_done GROUP BY 1, 2 ORDER BY 1, 2",
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn prunes_only_past_each_queues_retention_in_batches() {
    let t = TestDb::new().await;
    let conn = t.conn().await;
    conn.client()
        .batch_execute(&t.schema.sql(
            "UPDATE {s}.queues SET keep_succeeded = '1 hour', keep_dead = '1 day' WHERE name = 'default'",
        ))
        .await
        .unwrap();
    finished(&conn, &t, "default", "succeeded", "2 hours", 25).await;
    finished(&conn, &t, "default", "succeeded", "10 minutes", 3).await;
    finished(&conn, &t, "default", "dead", "2 hours", 4).await;
    finished(&conn, &t, "default", "dead", "2 days", 5).await;

    // Batches of 10: call again while a batch comes back full.
    let mut calls = Vec::new();
    loop {
        let n = prune::jobs_prune(conn.client(), &t.schema, 10)
            .await
            .unwrap();
        calls.push(n);
        if n < 10 {
            break;
        }
    }
    assert_eq!(calls, [10, 10, 10, 0], "25 + 5 past retention");
    assert_eq!(
        left(&conn, &t).await,
        [
            ("default".into(), "dead".into(), 4),
            ("default".into(), "succeeded".into(), 3),
        ]
    );
}

#[tokio::test]
async fn prunes_finished_jobs_of_deleted_queues_after_a_week() {
    let t = TestDb::new().await;
    let conn = t.conn().await;
    finished(&conn, &t, "gone", "succeeded", "8 days", 6).await;
    finished(&conn, &t, "gone", "dead", "6 days", 2).await;
    conn.client()
        .execute(
            &t.schema.sql("DELETE FROM {s}.queues WHERE name = 'gone'"),
            &[],
        )
        .await
        .unwrap();
    let n = prune::jobs_prune(conn.client(), &t.schema, 100)
        .await
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(left(&conn, &t).await, [("gone".into(), "dead".into(), 2)]);
}
