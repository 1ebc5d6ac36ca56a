//! Successes recorded a batch at a time (migration 9): a completion's jobs
//! of one queue and one block of 1,024 ids go to one `jobs_succeeded` row
//! when there are 16 or more, to `jobs_done` row by row otherwise; every
//! reader sees both the same way.

use std::time::Duration;

use drove_queue::inspect::{jobs_count_by_state, jobs_timings};
use drove_queue::testing::TestDb;
use drove_queue::*;

/// (rows, jobs) in `jobs_succeeded`, and successes in `jobs_done`.
async fn recorded(t: &TestDb, conn: &Conn) -> (i64, i64, i64) {
    let row = conn
        .client()
        .query_one(
            &t.schema.sql(
                "SELECT (SELECT count(*) FROM {s}.jobs_succeeded),
                        (SELECT COALESCE(sum(n), 0)::int8 FROM {s}.jobs_succeeded),
                        (SELECT count(*) FROM {s}.jobs_done WHERE state = 'succeeded')",
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn enqueue_numbered(t: &TestDb, conn: &Conn, n: usize) -> Vec<JobId> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            NewJob::new("noop")
                .with_payload(&serde_json::json!({ "i": i }))
                .unwrap()
        })
        .collect();
    jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_big_completion_is_one_row_and_every_reader_sees_its_jobs() {
    let t = TestDb::new().await;
    let conn = t.registered("w1", Duration::from_secs(30)).await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(5);
    let ids = enqueue_numbered(&t, &conn, 100).await;
    let claimed = jobs_claim(&conn, "default", 100, "w1").await.unwrap();
    assert_eq!(claimed.len(), 100);
    let mut batch: Vec<Completion> = claimed.iter().map(Completion::from).collect();
    for (i, c) in batch.iter_mut().enumerate() {
        c.result =
            Some(serde_json::value::RawValue::from_string(format!("{{\"r\": {i}}}")).unwrap());
    }
    // One stale attempt in the middle is fenced off; the rest go through.
    batch[40].attempt += 1;
    let mut accepted = jobs_complete_many(&conn, "w1", &batch).await.unwrap();
    accepted.sort_unstable();
    let fenced = claimed[40].id;
    let expected: Vec<JobId> = ids.iter().copied().filter(|id| *id != fenced).collect();
    assert_eq!(accepted, expected);
    assert_eq!(
        recorded(&t, &conn).await,
        (1, 99, 0),
        "one batch row of 99 jobs"
    );
    assert_eq!(
        job_get(conn.client(), &t.schema, fenced)
            .await
            .unwrap()
            .state,
        JobState::Running
    );

    // One job by id: everything the row by row record had.
    let k = 7;
    let job = job_get(conn.client(), &t.schema, claimed[k].id)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.queue, "default");
    assert_eq!(job.attempt, 1);
    assert_eq!(job.worker.as_deref(), Some("w1"));
    assert_eq!(job.result, Some(serde_json::json!({ "r": k })));
    assert_eq!(job.payload, serde_json::json!({ "i": k }));
    assert!(job.finished_at.is_some() && job.started_at.is_some());

    // Lists, newest first, paged, filtered.
    let list = |f: JobFilter| {
        let (conn, t) = (&conn, &t);
        async move {
            jobs_list(conn.client(), &t.schema, &f)
                .await
                .unwrap()
                .iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    let newest: Vec<JobId> = expected.iter().rev().take(10).copied().collect();
    let page1 = list(JobFilter {
        state: Some(JobState::Succeeded),
        limit: Some(10),
        ..Default::default()
    })
    .await;
    assert_eq!(page1, newest);
    let page2 = list(JobFilter {
        state: Some(JobState::Succeeded),
        before_id: Some(page1[9]),
        limit: Some(10),
        ..Default::default()
    })
    .await;
    let next: Vec<JobId> = expected.iter().rev().skip(10).take(10).copied().collect();
    assert_eq!(page2, next);
    // Without a state filter: the running job and the 99 successes, merged
    // in id order.
    let all = list(JobFilter {
        limit: Some(1000),
        ..Default::default()
    })
    .await;
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first: {all:?}");
    assert!(
        list(JobFilter {
            state: Some(JobState::Dead),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert!(
        list(JobFilter {
            queue: Some("other".into()),
            state: Some(JobState::Succeeded),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // Summaries and counters.
    let timings = jobs_timings(conn.client(), &t.schema, &ids).await.unwrap();
    assert_eq!((timings.succeeded, timings.run_s.len()), (99, 99));
    let by_state = jobs_count_by_state(conn.client(), &t.schema, &ids)
        .await
        .unwrap();
    assert!(
        by_state.contains(&(JobState::Succeeded, 99)),
        "{by_state:?}"
    );
    assert!(by_state.contains(&(JobState::Running, 1)), "{by_state:?}");
    let window = stats::stats_window(
        conn.client(),
        &t.schema,
        started,
        chrono::Utc::now() + chrono::Duration::seconds(5),
    )
    .await
    .unwrap();
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].succeeded, 99);
    assert_eq!(window[0].run_count, 99);
    let enqueued = stats::stats_enqueued_between(conn.client(), &t.schema, 0, ids[99])
        .await
        .unwrap();
    assert_eq!(enqueued, vec![("default".to_string(), 100)]);
    // The highest id is the fenced job's or the last success's.
    conn.client()
        .batch_execute(&t.schema.sql("DELETE FROM {s}.jobs"))
        .await
        .unwrap();
    let top = stats::stats_max_job_id(conn.client(), &t.schema)
        .await
        .unwrap();
    assert_eq!(top, *expected.last().unwrap());
}

/// Groups under 16 jobs (a bucket's edge, a single job) are recorded row
/// by row, so a bucket never fills with tiny batch rows.
#[tokio::test]
async fn small_groups_are_recorded_row_by_row() {
    let t = TestDb::new().await;
    let conn = t.registered("w1", Duration::from_secs(30)).await;
    // Ids 1015..1044: 9 in bucket 0, 21 in bucket 1.
    conn.client()
        .batch_execute(
            &t.schema
                .sql("ALTER TABLE {s}.jobs ALTER COLUMN id RESTART WITH 1015"),
        )
        .await
        .unwrap();
    let ids = enqueue_numbered(&t, &conn, 30).await;
    assert_eq!((ids[0], ids[29]), (1015, 1044));
    let claimed = jobs_claim(&conn, "default", 30, "w1").await.unwrap();
    let batch: Vec<Completion> = claimed.iter().map(Completion::from).collect();
    assert_eq!(
        jobs_complete_many(&conn, "w1", &batch).await.unwrap().len(),
        30
    );
    assert_eq!(recorded(&t, &conn).await, (1, 21, 9));
    let bucket: i64 = conn
        .client()
        .query_one(&t.schema.sql("SELECT bucket FROM {s}.jobs_succeeded"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bucket, 1);
    for id in [1015, 1023, 1024, 1044] {
        let job = job_get(conn.client(), &t.schema, id).await.unwrap();
        assert_eq!((job.id, job.state), (id, JobState::Succeeded));
    }
    // The same through the by-id path (rows that moved since the claim):
    // 20 more in bucket 1 make a second row there; one of them moved.
    let more = enqueue_numbered(&t, &conn, 20).await;
    let claimed = jobs_claim(&conn, "default", 20, "w1").await.unwrap();
    let progress = serde_json::value::RawValue::from_string("{\"step\": 1}".into()).unwrap();
    assert!(
        job_set_progress(&conn, "w1", claimed[3].id, claimed[3].attempt, &progress)
            .await
            .unwrap()
    );
    let mut by_id: Vec<Completion> = claimed
        .iter()
        .map(|j| Completion {
            ctid: None,
            ..Completion::from(j)
        })
        .collect();
    // A stale attempt is fenced off on this path too.
    by_id[5].attempt += 1;
    let mut accepted = jobs_complete_many(&conn, "w1", &by_id).await.unwrap();
    accepted.sort_unstable();
    let expected: Vec<JobId> = more
        .iter()
        .copied()
        .filter(|id| *id != claimed[5].id)
        .collect();
    assert_eq!(accepted, expected);
    assert_eq!(recorded(&t, &conn).await, (2, 40, 9));
    let moved = job_get(conn.client(), &t.schema, claimed[3].id)
        .await
        .unwrap();
    assert_eq!(moved.state, JobState::Succeeded);
    assert_eq!(moved.progress, Some(serde_json::json!({"step": 1})));
}

/// Keys of batched jobs are released as the trigger on `jobs_done`
/// releases the others': an active key goes, a window key stays.
#[tokio::test]
async fn unique_keys_of_batched_jobs_are_released() {
    let t = TestDb::new().await;
    let conn = t.registered("w1", Duration::from_secs(30)).await;
    let jobs: Vec<NewJob> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                NewJob::new("noop").with_unique_key(format!("active-{i}"))
            } else {
                NewJob::new("noop").with_unique(format!("window-{i}"), UniqueScope::Window(3600))
            }
        })
        .collect();
    jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let keys = || async {
        conn.client()
            .query(
                &t.schema
                    .sql("SELECT scope, count(*) FROM {s}.unique_keys GROUP BY 1 ORDER BY 1"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys().await, [("active".into(), 20), ("window".into(), 20)]);
    let claimed = jobs_claim(&conn, "default", 40, "w1").await.unwrap();
    let batch: Vec<Completion> = claimed.iter().map(Completion::from).collect();
    assert_eq!(
        jobs_complete_many(&conn, "w1", &batch).await.unwrap().len(),
        40
    );
    assert_eq!(recorded(&t, &conn).await, (1, 40, 0));
    assert_eq!(keys().await, [("window".into(), 20)]);
    // The freed key can be taken again; the window key cannot.
    let again = jobs_enqueue_detailed(
        conn.client(),
        &t.schema,
        &[
            NewJob::new("noop").with_unique_key("active-0"),
            NewJob::new("noop").with_unique("window-1", UniqueScope::Window(3600)),
        ],
    )
    .await
    .unwrap();
    assert!(!again[0].existing, "active key released: {again:?}");
    assert!(again[1].existing, "window key held: {again:?}");
}

/// Batch rows go with their queue's success retention, whole, oldest
/// first, as many as hold the batch size asked for; the pruner counts the
/// jobs in them.
#[tokio::test]
async fn batched_successes_are_pruned_with_their_queue_retention() {
    let t = TestDb::new().await;
    let conn = t.registered("w1", Duration::from_secs(30)).await;
    conn.client()
        .batch_execute(&t.schema.sql(
            "INSERT INTO {s}.queues (name, keep_succeeded) VALUES ('keep', '1 day');
             UPDATE {s}.queues SET keep_succeeded = '1 second' WHERE name = 'default'",
        ))
        .await
        .unwrap();
    // Two completions of 100 in `default` (two rows), one in `keep`.
    for queue in ["default", "default", "keep"] {
        let jobs: Vec<NewJob> = (0..100)
            .map(|_| NewJob::new("noop").with_queue(queue))
            .collect();
        jobs_enqueue_many(conn.client(), &t.schema, &jobs)
            .await
            .unwrap();
        let claimed = jobs_claim(&conn, queue, 100, "w1").await.unwrap();
        let batch: Vec<Completion> = claimed.iter().map(Completion::from).collect();
        assert_eq!(
            jobs_complete_many(&conn, "w1", &batch).await.unwrap().len(),
            100
        );
    }
    let (rows, jobs, _) = recorded(&t, &conn).await;
    assert_eq!((rows, jobs), (3, 300), "whatever the buckets, 300 jobs");
    assert_eq!(
        prune::jobs_prune(conn.client(), &t.schema, 1000)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Asked for 50: the oldest row goes whole (100), not the next one.
    let first = prune::jobs_prune(conn.client(), &t.schema, 50)
        .await
        .unwrap();
    assert_eq!(first, 100);
    let rest = prune::jobs_prune(conn.client(), &t.schema, 1000)
        .await
        .unwrap();
    assert_eq!(first + rest, 200);
    let left = conn
        .client()
        .query(
            &t.schema
                .sql("SELECT DISTINCT queue FROM {s}.jobs_succeeded"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].get::<_, String>(0), "keep");
}
