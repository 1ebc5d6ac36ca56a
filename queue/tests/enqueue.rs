//! Enqueue through its three paths, checked against what the database
//! holds: one job (a function with scalar parameters), small batches (a
//! function taking arrays) and `COPY` (batches of at least
//! `COPY_MIN_JOBS`). Each case runs at sizes for every path, so they must
//! agree.

use std::time::Duration;

use chrono::Utc;
use drove_queue::enqueue::COPY_MIN_JOBS;
use drove_queue::testing::TestDb;
use drove_queue::*;
use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

/// One job, a batch below the COPY threshold, at it, and well above it.
const SIZES: [usize; 4] = [1, COPY_MIN_JOBS - 1, COPY_MIN_JOBS, 3 * COPY_MIN_JOBS + 7];

/// Jobs whose every field differs from the defaults and from each other.
fn varied(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| {
            let mut j = NewJob::new(format!("kind{}", i % 3))
                .with_payload(&serde_json::json!({ "i": i, "s": "é\"\\" }))
                .unwrap()
                .with_priority((i % 5) as i16 - 2)
                .with_max_attempts(1 + (i % 7) as i32)
                .with_timeout(Duration::from_millis(1000 + i as u64));
            if i % 2 == 0 {
                j = j.with_backoff(100 + i as i32, 10_000);
            }
            if i % 4 == 1 {
                j = j.with_ordering_key(format!("key{}", i % 11));
            }
            j
        })
        .collect()
}

#[tokio::test]
async fn both_paths_store_every_field_and_return_ids_in_input_order() {
    let t = TestDb::new().await;
    let conn = t.conn().await;
    let c = conn.client();
    for n in SIZES {
        let jobs = varied(n);
        let ids = jobs_enqueue_many(c, &t.schema, &jobs).await.unwrap();
        assert_eq!(ids.len(), n);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "n={n}: ids ascend in input order"
        );
        // A sample, both ends included: every field as given.
        for i in [0, n / 2, n - 1] {
            let got = job_get(c, &t.schema, ids[i]).await.unwrap();
            let want = &jobs[i];
            assert_eq!(got.kind, want.kind, "n={n} i={i}");
            assert_eq!(got.queue, "default");
            assert_eq!(got.state, JobState::Available);
            assert_eq!(got.priority, want.priority);
            assert_eq!(got.max_attempts, want.max_attempts.unwrap());
            assert_eq!(got.ordering_key, want.ordering_key);
            assert_eq!(
                got.payload,
                serde_json::from_str::<serde_json::Value>(want.payload.get()).unwrap()
            );
            assert_eq!(got.attempt, 0);
            assert!(got.run_at <= Utc::now());
        }
        let stored: (i64, i64, i64) = {
            let r = c
                .query_one(
                    &t.schema.sql(
                        "SELECT count(*), count(*) FILTER (WHERE backoff_base_ms IS NOT NULL),
                                count(*) FILTER (WHERE timeout_ms = 1000 + (payload->>'i')::int)
                         FROM {s}.jobs WHERE id = ANY($1)",
                    ),
                    &[&ids],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1), r.get(2))
        };
        assert_eq!(stored, (n as i64, n.div_ceil(2) as i64, n as i64), "n={n}");
    }
}

#[tokio::test]
async fn unknown_queue_fails_the_whole_batch_on_both_paths() {
    let t = TestDb::new().await;
    let conn = t.conn().await;
    for n in SIZES {
        let mut jobs: Vec<NewJob> = (0..n).map(|_| NewJob::new("noop")).collect();
        jobs[n - 1] = NewJob::new("noop").with_queue("nope");
        let err = jobs_enqueue_many(conn.client(), &t.schema, &jobs)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::UnknownQueue(q) if q == "nope"),
            "n={n}: {err}"
        );
        let live: i64 = conn
            .client()
            .query_one(&t.schema.sql("SELECT count(*) FROM {s}.jobs"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(live, 0, "n={n}: nothing of the failed batch was inserted");
    }
}

#[tokio::test]
async fn scheduled_and_mixed_batches_keep_their_times() {
    let t = TestDb::new().await;
    let conn = t.registered("w1", Duration::from_secs(30)).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    for n in [1, 10, COPY_MIN_JOBS] {
        // All scheduled (COPY writes run_at itself at n >= COPY_MIN_JOBS).
        let jobs: Vec<NewJob> = (0..n)
            .map(|_| NewJob::new("noop").with_run_at(later))
            .collect();
        let ids = jobs_enqueue_many(conn.client(), &t.schema, &jobs)
            .await
            .unwrap();
        let got = job_get(conn.client(), &t.schema, ids[n - 1]).await.unwrap();
        assert_eq!(
            got.run_at.timestamp_micros(),
            later.timestamp_micros(),
            "n={n}"
        );
        assert!(
            jobs_claim(&conn, "default", 10, "w1")
                .await
                .unwrap()
                .is_empty(),
            "n={n}: nothing due"
        );
        // Mixed: the due half is claimable now, the rest waits.
        let jobs: Vec<NewJob> = (0..n)
            .map(|i| match i % 2 {
                0 => NewJob::new("noop"),
                _ => NewJob::new("noop").with_run_at(later),
            })
            .collect();
        let ids = jobs_enqueue_many(conn.client(), &t.schema, &jobs)
            .await
            .unwrap();
        let claimed = jobs_claim(&conn, "default", n as i64, "w1").await.unwrap();
        let mut claimed: Vec<JobId> = claimed.iter().map(|j| j.id).collect();
        claimed.sort_unstable();
        let due: Vec<JobId> = ids.iter().step_by(2).copied().collect();
        assert_eq!(claimed, due, "n={n}");
        jobs_release_many(
            &conn,
            "w1",
            &claimed.iter().map(|id| (*id, 1)).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
        conn.client()
            .execute(&t.schema.sql("DELETE FROM {s}.jobs"), &[])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn copy_path_commits_and_rolls_back_with_the_callers_transaction() {
    let t = TestDb::new().await;
    let mut conn = t.conn().await;
    let schema = t.schema.clone();
    let jobs: Vec<NewJob> = (0..COPY_MIN_JOBS).map(|_| NewJob::new("noop")).collect();
    let tx = conn.client_mut().transaction().await.unwrap();
    jobs_enqueue_many(&tx, &schema, &jobs).await.unwrap();
    tx.rollback().await.unwrap();
    let tx = conn.client_mut().transaction().await.unwrap();
    let kept = jobs_enqueue_many(&tx, &schema, &jobs).await.unwrap();
    tx.commit().await.unwrap();
    let live: Vec<JobId> = conn
        .client()
        .query(&schema.sql("SELECT id FROM {s}.jobs ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(live, kept);
}

/// Workers wake on a batch written by either path, once it commits, and
/// not for a batch that is only scheduled.
#[tokio::test]
async fn both_paths_wake_listeners_for_due_jobs_only() {
    let t = TestDb::new().await;
    let (listener, mut connection) = t.db.connect_raw().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener
        .batch_execute(&format!("LISTEN {}", t.schema.jobs_channel()))
        .await
        .unwrap();
    let conn = t.conn().await;
    let later = Utc::now() + chrono::Duration::hours(1);
    for n in [1, 10, COPY_MIN_JOBS] {
        let scheduled: Vec<NewJob> = (0..n)
            .map(|_| NewJob::new("noop").with_run_at(later))
            .collect();
        jobs_enqueue_many(conn.client(), &t.schema, &scheduled)
            .await
            .unwrap();
        let due: Vec<NewJob> = (0..n).map(|_| NewJob::new("noop")).collect();
        jobs_enqueue_many(conn.client(), &t.schema, &due)
            .await
            .unwrap();
        let (channel, payload) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a notification within 5 s")
            .unwrap();
        assert_eq!(
            (channel.as_str(), payload.as_str()),
            (t.schema.jobs_channel().as_str(), "default")
        );
        // The scheduled batch came first and sent nothing.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            rx.try_recv().is_err(),
            "n={n}: one notification, for the due batch"
        );
    }
    driver.abort();
}
