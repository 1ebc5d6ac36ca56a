//! The fence of successes without a result (migration 10): one TID scan
//! over the batch's addresses, each row kept only if its (id, attempt) is
//! one the batch reports, by this worker. These call the database function
//! directly, without the by-id retry that `jobs_complete_many` adds.

use std::time::Duration;

use drove_queue::testing::TestDb;
use drove_queue::*;

/// `jobs_complete_at` as a worker calls it: (address, id, attempt) per job,
/// no results. Returns the accepted ids, sorted.
async fn complete_at(
    t: &TestDb,
    conn: &Conn,
    worker: &str,
    jobs: &[(Tid, JobId, i32)],
) -> Vec<JobId> {
    let ctids: Vec<Tid> = jobs.iter().map(|j| j.0).collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.1).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.2).collect();
    let results: Vec<Option<tokio_postgres::types::Json<serde_json::Value>>> =
        jobs.iter().map(|_| None).collect();
    let mut accepted: Vec<JobId> = conn
        .client()
        .query_one(
            &t.schema
                .sql("SELECT {s}.jobs_complete_at($1, $2, $3, $4, $5)"),
            &[&ctids, &ids, &attempts, &results, &worker],
        )
        .await
        .unwrap()
        .get(0);
    accepted.sort_unstable();
    accepted
}

/// Enqueues `n` no-op jobs in the default queue.
async fn noops(t: &TestDb, conn: &Conn, n: usize) {
    let jobs: Vec<NewJob> = (0..n).map(|_| NewJob::new("noop")).collect();
    jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
}

async fn state(t: &TestDb, conn: &Conn, id: JobId) -> JobState {
    job_get(conn.client(), &t.schema, id).await.unwrap().state
}

#[tokio::test]
async fn a_row_is_recorded_only_as_an_attempt_the_batch_reports() {
    let t = TestDb::new().await;
    let w1 = t.registered("w1", Duration::from_secs(30)).await;
    let w2 = t.registered("w2", Duration::from_secs(30)).await;
    noops(&t, &w1, 40).await;
    let mine = jobs_claim(&w1, "default", 30, "w1").await.unwrap();
    let theirs = jobs_claim(&w2, "default", 10, "w2").await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (30, 10));
    let at = |j: &ClaimedJob| (j.ctid, j.id, j.attempt);

    let mut batch: Vec<(Tid, JobId, i32)> = mine[..20].iter().map(at).collect();
    // Two jobs reported at each other's address: both rows are found.
    (batch[0].0, batch[1].0) = (batch[1].0, batch[0].0);
    // A stale attempt at the job's own address.
    batch[2].2 += 1;
    // Another worker's job, with its own address, id and attempt.
    batch.push(at(&theirs[0]));
    // The address of job 20, with job 21's id and attempt (21's own
    // address is not in the batch): 20 is not reported, 21 is not there.
    batch.push((mine[20].ctid, mine[21].id, mine[21].attempt));
    let accepted = complete_at(&t, &w1, "w1", &batch).await;

    let mut expected: Vec<JobId> = mine[..20].iter().map(|j| j.id).collect();
    expected.retain(|id| *id != mine[2].id);
    expected.sort_unstable();
    assert_eq!(accepted, expected);
    for job in [&mine[2], &mine[20], &mine[21], &theirs[0]] {
        assert_eq!(
            state(&t, &w1, job.id).await,
            JobState::Running,
            "{}",
            job.id
        );
    }
    for job in &mine[..2] {
        assert_eq!(state(&t, &w1, job.id).await, JobState::Succeeded);
    }

    // Reported again, nothing is recorded twice.
    assert!(complete_at(&t, &w1, "w1", &batch).await.is_empty());
    // A job reported twice in one batch is recorded once.
    let twice = [at(&mine[22]), at(&mine[22])];
    assert_eq!(complete_at(&t, &w1, "w1", &twice).await, vec![mine[22].id]);
    let (rows, done): (i64, i64) = {
        let r = w1
            .client()
            .query_one(
                &t.schema.sql(
                    "SELECT count(*), count(DISTINCT id) FROM {s}.jobs_finished WHERE state = 'succeeded'",
                ),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((rows, done), (20, 20));
}

#[tokio::test]
async fn a_batch_with_results_keeps_each_jobs_result() {
    let t = TestDb::new().await;
    let conn = t.registered("w1", Duration::from_secs(30)).await;
    noops(&t, &conn, 40).await;
    let claimed = jobs_claim(&conn, "default", 40, "w1").await.unwrap();
    // Every third job has a result; the others none.
    let batch: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, j)| Completion {
            result: (i % 3 == 0).then(|| {
                serde_json::value::RawValue::from_string(format!("{{\"i\": {i}}}")).unwrap()
            }),
            ..Completion::from(j)
        })
        .collect();
    let accepted = jobs_complete_many(&conn, "w1", &batch).await.unwrap();
    assert_eq!(accepted.len(), 40);
    for (i, j) in claimed.iter().enumerate() {
        let job = job_get(conn.client(), &t.schema, j.id).await.unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        let want = (i % 3 == 0).then(|| serde_json::json!({ "i": i }));
        assert_eq!(job.result, want, "job {i}");
    }
}

/// The fence as the function plans it (a generic plan, sequential scans
/// off): one TID scan and a hashed test, never a test that walks the batch
/// once per row (O(batch²)), even with statistics that say no job runs.
#[tokio::test]
async fn the_fence_is_one_tid_scan_and_a_hashed_test() {
    let t = TestDb::new().await;
    let conn = t.registered("w1", Duration::from_secs(30)).await;
    noops(&t, &conn, 5000).await;
    conn.client()
        .batch_execute(&t.schema.sql(
            "ANALYZE {s}.jobs;
             SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan;
             PREPARE fence(tid[], int8[], int4[], text) AS
                 DELETE FROM {s}.jobs j
                 WHERE j.ctid = ANY($1) AND j.lease_owner = $4
                   AND COALESCE((j.id, j.attempt) IN (SELECT unnest($2), unnest($3)), false)",
        ))
        .await
        .unwrap();
    let plan: String = conn
        .client()
        .query("EXPLAIN EXECUTE fence('{}', '{}', '{}', 'w1')", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0) + "\n")
        .collect();
    assert!(plan.contains("Tid Scan on jobs"), "{plan}");
    assert!(plan.contains("hashed SubPlan"), "{plan}");
    assert!(
        !plan.contains("Seq Scan") && !plan.contains("Nested Loop"),
        "{plan}"
    );
    // The function's own statement is the one planned here.
    let body: String = conn
        .client()
        .query_one(
            &t.schema.sql(
                "SELECT prosrc FROM pg_proc WHERE proname = 'jobs_complete_at'
                   AND pronamespace = '{s}'::regnamespace",
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        body.contains(
            "COALESCE((j.id, j.attempt) IN (SELECT unnest(p_id), unnest(p_attempt)), false)"
        ),
        "{body}"
    );
}
