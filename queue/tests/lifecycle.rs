//! The job lifecycle against a real PostgreSQL: enqueue, claim, complete,
//! fail, reap, release, cancel, retry, with the fences that keep outcomes
//! exactly-once.

use std::time::Duration;

use drove_queue::testing::TestDb;
use drove_queue::*;

async fn registered(t: &TestDb, id: &str, ttl: Duration) -> Conn {
    t.registered(id, ttl).await
}

fn done(job: &ClaimedJob) -> Completion {
    Completion {
        id: job.id,
        attempt: job.attempt,
        result: None,
        ctid: Some(job.ctid),
    }
}

/// Enqueues `n` no-op jobs and analyzes `jobs`, so plans see the backlog.
async fn backlog(t: &TestDb, conn: &Conn, n: usize) {
    let jobs: Vec<NewJob> = (0..n).map(|_| NewJob::new("noop")).collect();
    jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    conn.client()
        .batch_execute(&t.schema.sql("ANALYZE {s}.jobs"))
        .await
        .unwrap();
}

#[tokio::test]
async fn enqueue_claim_complete_records_once() {
    let t = TestDb::new().await;
    let conn = registered(&t, "w1", Duration::from_secs(30)).await;
    let ids = jobs_enqueue_many(
        conn.client(),
        &t.schema,
        &(0..5)
            .map(|i| {
                NewJob::new("noop")
                    .with_payload(&serde_json::json!({"i": i}))
                    .unwrap()
            })
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), 5);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids come back in input order: {ids:?}"
    );

    let claimed = jobs_claim(&conn, "default", 3, "w1").await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), ids[..3]);
    assert!(claimed.iter().all(|j| j.attempt == 1));
    assert_eq!(claimed[1].payload.get(), r#"{"i": 1}"#);

    let result = serde_json::value::RawValue::from_string(r#"{"ok":true}"#.into()).unwrap();
    let mut batch: Vec<Completion> = claimed.iter().map(done).collect();
    batch[0].result = Some(result);
    let accepted = jobs_complete_many(&conn, "w1", &batch).await.unwrap();
    assert_eq!(accepted.len(), 3);
    // Completing again is fenced off: nothing is recorded twice.
    assert!(
        jobs_complete_many(&conn, "w1", &batch)
            .await
            .unwrap()
            .is_empty()
    );

    let job = job_get(conn.client(), &t.schema, ids[0]).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result, Some(serde_json::json!({"ok": true})));
    assert_eq!(job.worker.as_deref(), Some("w1"));
    let rest = jobs_claim(&conn, "default", 10, "w1").await.unwrap();
    assert_eq!(rest.len(), 2);
}

/// A completion finds its row by the address the claim returned; a row
/// that moved since (progress, a cancel request) is found by id instead,
/// and a stale address never completes another attempt or another job.
#[tokio::test]
async fn completion_of_a_moved_row_is_found_by_id() {
    let t = TestDb::new().await;
    let conn = registered(&t, "w1", Duration::from_secs(30)).await;
    let jobs: Vec<NewJob> = (0..3).map(|_| NewJob::new("noop")).collect();
    jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let claimed = jobs_claim(&conn, "default", 3, "w1").await.unwrap();
    // Progress rewrites the row: its address changes.
    let progress = serde_json::value::RawValue::from_string("{\"step\": 1}".into()).unwrap();
    assert!(
        job_set_progress(&conn, "w1", claimed[1].id, claimed[1].attempt, &progress)
            .await
            .unwrap()
    );
    let batch: Vec<Completion> = claimed.iter().map(done).collect();
    let mut accepted = jobs_complete_many(&conn, "w1", &batch).await.unwrap();
    accepted.sort_unstable();
    assert_eq!(accepted, claimed.iter().map(|j| j.id).collect::<Vec<_>>());
    let job = job_get(conn.client(), &t.schema, claimed[1].id)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.progress, Some(serde_json::json!({"step": 1})));

    // A stale address pointing at another job's row completes nothing.
    jobs_enqueue(conn.client(), &t.schema, &NewJob::new("noop"))
        .await
        .unwrap();
    let next = jobs_claim(&conn, "default", 1, "w1").await.unwrap();
    let wrong = Completion {
        id: claimed[0].id,
        attempt: claimed[0].attempt,
        result: None,
        ctid: Some(next[0].ctid),
    };
    assert!(
        jobs_complete_many(&conn, "w1", &[wrong])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        job_get(conn.client(), &t.schema, next[0].id)
            .await
            .unwrap()
            .state,
        JobState::Running
    );
}

#[tokio::test]
async fn unknown_queue_is_a_clear_error_and_inserts_nothing() {
    let t = TestDb::new().await;
    let conn = t.conn().await;
    let jobs = vec![NewJob::new("noop"), NewJob::new("noop").with_queue("nope")];
    let err = jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownQueue(q) if q == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains("drove queues create nope"));
    let stats = stats_read(conn.client(), &t.schema).await.unwrap();
    assert_eq!(
        stats.available(),
        0,
        "the valid job of the failed batch was not inserted"
    );
}

#[tokio::test]
async fn enqueue_inside_the_callers_transaction_commits_or_rolls_back_with_it() {
    let t = TestDb::new().await;
    let mut conn = t.conn().await;
    let schema = t.schema.clone();
    let tx = conn.client_mut().transaction().await.unwrap();
    jobs_enqueue(&tx, &schema, &NewJob::new("noop"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = conn.client_mut().transaction().await.unwrap();
    let kept = jobs_enqueue(&tx, &schema, &NewJob::new("noop"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let listed = jobs_list(conn.client(), &schema, &JobFilter::default())
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![kept]);
}

#[tokio::test]
async fn batch_of_thousands_in_one_statement() {
    let t = TestDb::new().await;
    let conn = t.conn().await;
    let jobs: Vec<NewJob> = (0..5000).map(|_| NewJob::new("noop")).collect();
    let ids = jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    assert_eq!(ids.len(), 5000);
    let stats = stats_read(conn.client(), &t.schema).await.unwrap();
    assert_eq!(stats.available(), 5000);
}

#[tokio::test]
async fn failures_back_off_with_growing_delays_then_die() {
    let t = TestDb::new().await;
    let conn = registered(&t, "w1", Duration::from_secs(30)).await;
    let id = jobs_enqueue(
        conn.client(),
        &t.schema,
        &NewJob::new("boom")
            .with_max_attempts(4)
            .with_backoff(1000, 60_000),
    )
    .await
    .unwrap();
    let mut delays = Vec::new();
    for attempt in 1..=4 {
        // Make the retry due now so the test need not wait out the backoff.
        conn.client()
            .execute(
                &t.schema
                    .sql("UPDATE {s}.jobs SET run_at = now() WHERE id = $1"),
                &[&id],
            )
            .await
            .unwrap();
        let claimed = jobs_claim(&conn, "default", 1, "w1").await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].attempt, attempt);
        let out = jobs_fail_many(
            &conn,
            "w1",
            &[Failure {
                id,
                attempt,
                error: format!("boom {attempt}"),
                retryable: true,
            }],
        )
        .await
        .unwrap();
        match &out[..] {
            [FailOutcome::Retry { run_at, .. }] => {
                delays.push((*run_at - chrono::Utc::now()).num_milliseconds());
            }
            [FailOutcome::Dead { .. }] => assert_eq!(attempt, 4, "dead only after max attempts"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Equal jitter: attempt n waits between base*2^(n-1)/2 and base*2^(n-1).
    assert_eq!(delays.len(), 3);
    for (n, d) in delays.iter().enumerate() {
        let cap = 1000 * (1 << n);
        assert!(
            *d >= cap / 2 - 200 && *d <= cap,
            "delay {n} = {d} ms outside [{}, {cap}]",
            cap / 2
        );
    }
    assert!(delays[0] < delays[2], "delays grow: {delays:?}");
    let job = job_get(conn.client(), &t.schema, id).await.unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.errors.as_array().unwrap().len(), 4);
    assert_eq!(job.errors[3]["error"], "boom 4");

    // Manual retry gives it a fresh budget and keeps the history.
    job_retry(conn.client(), &t.schema, id).await.unwrap();
    let job = job_get(conn.client(), &t.schema, id).await.unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Available, 0));
    assert_eq!(job.errors.as_array().unwrap().len(), 4);
    let err = job_retry(conn.client(), &t.schema, id).await.unwrap_err();
    assert!(matches!(err, Error::WrongState { .. }), "{err}");
}

/// The dashboard's "failing, will retry" list: a failed job behind a big
/// backlog is found (the list used to be filtered from the 200 newest
/// waiting jobs), from the small index of jobs due after their creation.
#[tokio::test]
async fn failed_jobs_are_listed_however_deep_the_backlog() {
    let t = TestDb::new().await;
    let conn = registered(&t, "w1", Duration::from_secs(30)).await;
    let first = jobs_enqueue_many(
        conn.client(),
        &t.schema,
        &[NewJob::new("a"), NewJob::new("b")],
    )
    .await
    .unwrap();
    let claimed = jobs_claim(&conn, "default", 2, "w1").await.unwrap();
    assert_eq!(claimed.len(), 2);
    let failure = |id, retryable| Failure {
        id,
        attempt: 1,
        error: "boom".into(),
        retryable,
    };
    jobs_fail_many(
        &conn,
        "w1",
        &[failure(first[0], true), failure(first[1], false)],
    )
    .await
    .unwrap();
    backlog(&t, &conn, 20_000).await;

    let list = |state, failed| {
        let filter = JobFilter {
            state,
            failed,
            limit: Some(20),
            ..JobFilter::default()
        };
        let client = conn.client();
        let schema = t.schema.clone();
        async move {
            jobs_list(client, &schema, &filter)
                .await
                .unwrap()
                .iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(Some(JobState::Available), Some(true)).await,
        vec![first[0]]
    );
    assert_eq!(list(Some(JobState::Dead), Some(true)).await, vec![first[1]]);
    assert_eq!(list(None, Some(true)).await, vec![first[1], first[0]]);
    let clean = list(Some(JobState::Available), Some(false)).await;
    assert_eq!(clean.len(), 20);
    assert!(!clean.contains(&first[0]), "{clean:?}");

    // The list reads the scheduled-jobs index, not the backlog.
    let scans = || async {
        conn.client()
            .batch_execute("SELECT pg_stat_force_next_flush()")
            .await
            .unwrap();
        conn.client()
            .query_one(
                "SELECT idx_scan FROM pg_stat_user_indexes
                 WHERE schemaname = $1 AND indexrelname = 'jobs_scheduled_idx'",
                &[&t.schema.name()],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = scans().await;
    assert_eq!(
        list(Some(JobState::Available), Some(true)).await,
        vec![first[0]]
    );
    assert!(
        scans().await > before,
        "the list did not use jobs_scheduled_idx"
    );
}

#[tokio::test]
async fn non_retryable_failure_goes_straight_to_dead() {
    let t = TestDb::new().await;
    let conn = registered(&t, "w1", Duration::from_secs(30)).await;
    let id = jobs_enqueue(conn.client(), &t.schema, &NewJob::new("x"))
        .await
        .unwrap();
    let c = jobs_claim(&conn, "default", 1, "w1").await.unwrap();
    let out = jobs_fail_many(
        &conn,
        "w1",
        &[Failure {
            id,
            attempt: c[0].attempt,
            error: "bad payload".into(),
            retryable: false,
        }],
    )
    .await
    .unwrap();
    assert_eq!(out, vec![FailOutcome::Dead { id }]);
}

#[tokio::test]
async fn expired_worker_is_reaped_and_its_late_completion_rejected() {
    let t = TestDb::new().await;
    let zombie = registered(&t, "zombie", Duration::from_millis(300)).await;
    let healthy = registered(&t, "healthy", Duration::from_secs(30)).await;
    let id = jobs_enqueue(zombie.client(), &t.schema, &NewJob::new("noop"))
        .await
        .unwrap();
    let first = jobs_claim(&zombie, "default", 1, "zombie").await.unwrap();
    assert_eq!(first[0].attempt, 1);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let hb = worker_heartbeat(&healthy, "healthy", Duration::from_secs(30), 0)
        .await
        .unwrap();
    assert!(hb.alive && hb.others_expired);
    let reaper = t.conn().await;
    let schema = t.schema.clone();
    let reaped = leases_reclaim_expired(reaper.client(), &schema, false)
        .await
        .unwrap();
    assert_eq!(reaped.workers, vec!["zombie".to_string()]);
    assert_eq!(reaped.requeued, 1);

    let second = jobs_claim(&healthy, "default", 1, "healthy").await.unwrap();
    assert_eq!((second[0].id, second[0].attempt), (id, 2));
    // The zombie comes back: its completion is fenced off, and so are its
    // failure and release; a heartbeat tells it that it was declared dead.
    assert!(
        jobs_complete_many(&zombie, "zombie", &[done(&first[0])])
            .await
            .unwrap()
            .is_empty()
    );
    let fail = Failure {
        id,
        attempt: 1,
        error: "late".into(),
        retryable: true,
    };
    assert!(
        jobs_fail_many(&zombie, "zombie", &[fail])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        jobs_release_many(&zombie, "zombie", &[(id, 1)])
            .await
            .unwrap()
            .is_empty()
    );
    let hb = worker_heartbeat(&zombie, "zombie", Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert!(!hb.alive);
    // A dead worker cannot claim until it registers again.
    jobs_enqueue(zombie.client(), &t.schema, &NewJob::new("noop"))
        .await
        .unwrap();
    assert!(
        jobs_claim(&zombie, "default", 5, "zombie")
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        jobs_complete_many(&healthy, "healthy", &[done(&second[0])])
            .await
            .unwrap(),
        vec![id]
    );
    let job = job_get(healthy.client(), &t.schema, id).await.unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Succeeded, 2));
    assert_eq!(job.errors[0]["error"], "worker lost: lease expired");
}

#[tokio::test]
async fn reaping_a_job_out_of_attempts_buries_it() {
    let t = TestDb::new().await;
    let w = registered(&t, "w", Duration::from_millis(100)).await;
    let id = jobs_enqueue(
        w.client(),
        &t.schema,
        &NewJob::new("oom").with_max_attempts(1),
    )
    .await
    .unwrap();
    jobs_claim(&w, "default", 1, "w").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reaper = t.conn().await;
    let schema = t.schema.clone();
    let reaped = leases_reclaim_expired(reaper.client(), &schema, false)
        .await
        .unwrap();
    assert_eq!((reaped.requeued, reaped.dead), (0, 1));
    assert_eq!(
        job_get(w.client(), &t.schema, id).await.unwrap().state,
        JobState::Dead
    );
}

#[tokio::test]
async fn concurrent_reapers_reclaim_each_job_once() {
    let t = TestDb::new().await;
    let w = registered(&t, "w", Duration::from_millis(200)).await;
    let jobs: Vec<NewJob> = (0..200).map(|_| NewJob::new("noop")).collect();
    jobs_enqueue_many(w.client(), &t.schema, &jobs)
        .await
        .unwrap();
    assert_eq!(
        jobs_claim(&w, "default", 200, "w").await.unwrap().len(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut handles = Vec::new();
    for _ in 0..4 {
        let c = t.conn().await;
        let schema = t.schema.clone();
        handles.push(tokio::spawn(async move {
            leases_reclaim_expired(c.client(), &schema, true)
                .await
                .unwrap()
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap().requeued;
    }
    assert_eq!(total, 200);
    let rows = w
        .client()
        .query(
            &t.schema
                .sql("SELECT attempt, jsonb_array_length(errors) FROM {s}.jobs"),
            &[],
        )
        .await
        .unwrap();
    assert!(
        rows.iter()
            .all(|r| r.get::<_, i32>(0) == 1 && r.get::<_, i32>(1) == 1)
    );
}

#[tokio::test]
async fn release_on_shutdown_does_not_count_an_attempt() {
    let t = TestDb::new().await;
    let w = registered(&t, "w", Duration::from_secs(30)).await;
    let id = jobs_enqueue(w.client(), &t.schema, &NewJob::new("long"))
        .await
        .unwrap();
    let c = jobs_claim(&w, "default", 1, "w").await.unwrap();
    assert_eq!(
        jobs_release_many(&w, "w", &[(id, c[0].attempt)])
            .await
            .unwrap(),
        vec![id]
    );
    let job = job_get(w.client(), &t.schema, id).await.unwrap();
    assert_eq!(
        (job.state, job.attempt, job.worker),
        (JobState::Available, 0, None)
    );
    let again = jobs_claim(&w, "default", 1, "w").await.unwrap();
    assert_eq!(again[0].attempt, 1);
}

#[tokio::test]
async fn cancel_pending_at_once_and_running_by_request() {
    let t = TestDb::new().await;
    let w = registered(&t, "w", Duration::from_secs(30)).await;
    let a = jobs_enqueue(w.client(), &t.schema, &NewJob::new("x"))
        .await
        .unwrap();
    assert_eq!(
        job_cancel(w.client(), &t.schema, a).await.unwrap(),
        Cancelled::Now
    );
    assert_eq!(
        job_get(w.client(), &t.schema, a).await.unwrap().state,
        JobState::Cancelled
    );
    assert!(matches!(
        job_cancel(w.client(), &t.schema, a).await,
        Err(Error::WrongState { .. })
    ));
    assert!(matches!(
        job_cancel(w.client(), &t.schema, 999_999).await,
        Err(Error::JobNotFound(999_999))
    ));

    let b = jobs_enqueue(w.client(), &t.schema, &NewJob::new("x"))
        .await
        .unwrap();
    let c = jobs_claim(&w, "default", 1, "w").await.unwrap();
    assert_eq!(
        job_cancel(w.client(), &t.schema, b).await.unwrap(),
        Cancelled::Requested
    );
    let hb = worker_heartbeat(&w, "w", Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(hb.cancel, vec![b]);
    assert_eq!(
        jobs_cancelled_many(&w, "w", &[(b, c[0].attempt)])
            .await
            .unwrap(),
        vec![b]
    );
    let job = job_get(w.client(), &t.schema, b).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
}

#[tokio::test]
async fn paused_queue_is_not_claimed_and_scheduled_jobs_wait() {
    let t = TestDb::new().await;
    let w = registered(&t, "w", Duration::from_secs(30)).await;
    jobs_enqueue(w.client(), &t.schema, &NewJob::new("x"))
        .await
        .unwrap();
    jobs_enqueue(
        w.client(),
        &t.schema,
        &NewJob::new("later").with_delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    queues::queue_set_paused(w.client(), &t.schema, "default", true)
        .await
        .unwrap();
    assert!(jobs_claim(&w, "default", 10, "w").await.unwrap().is_empty());
    queues::queue_set_paused(w.client(), &t.schema, "default", false)
        .await
        .unwrap();
    let c = jobs_claim(&w, "default", 10, "w").await.unwrap();
    assert_eq!(
        c.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(),
        vec!["x"]
    );
    let stats = stats_read(w.client(), &t.schema).await.unwrap();
    let q = &stats.queues[0];
    assert_eq!((q.available, q.scheduled, q.running), (0, 1, 1));
    assert_eq!((stats.fleet.workers, stats.fleet.slots), (1, 64));
}

#[tokio::test]
async fn priority_orders_the_claim() {
    let t = TestDb::new().await;
    let w = registered(&t, "w", Duration::from_secs(30)).await;
    let jobs = vec![
        NewJob::new("low").with_priority(5),
        NewJob::new("high").with_priority(-1),
        NewJob::new("mid"),
    ];
    jobs_enqueue_many(w.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let c = jobs_claim(&w, "default", 3, "w").await.unwrap();
    assert_eq!(
        c.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(),
        vec!["high", "mid", "low"]
    );
}

#[tokio::test]
async fn concurrent_migrations_both_succeed_once() {
    let t = TestDb::new().await;
    let schema = Schema::new(&format!("{}_m", t.schema.name())).unwrap();
    let mut a = Conn::connect(&t.db, &schema).await.unwrap();
    let mut b = Conn::connect(&t.db, &schema).await.unwrap();
    let (sa, sb) = (schema.clone(), schema.clone());
    let (ra, rb) = tokio::join!(migrate(a.client_mut(), &sa), migrate(b.client_mut(), &sb));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        SCHEMA_VERSION as usize,
        "{ra:?} {rb:?}"
    );
    assert_eq!(ra.to, SCHEMA_VERSION);
    assert_eq!(rb.to, SCHEMA_VERSION);
    a.client()
        .batch_execute(&schema.sql("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

/// A schema newer than this build works when its newer migrations say
/// builds for this version can still use it (a rolling update migrates
/// first, then replaces workers), and is refused with a clear error when
/// they do not; an older schema asks for `drove migrate`. A schema whose
/// rows predate the recorded floor gets it on the next migrate.
#[tokio::test]
async fn newer_schemas_are_used_when_their_migrations_allow_it() {
    let t = TestDb::new().await;
    let c = t.conn().await;
    let sql = |q: &str| t.schema.sql(q);
    migrate::check_schema(c.client(), &t.schema).await.unwrap();
    let floor: i32 = c
        .client()
        .query_one(
            &sql("SELECT max(oldest_reader) FROM {s}.schema_migrations"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        floor < SCHEMA_VERSION,
        "5 to 8 only add columns older builds ignore, or add or replace functions: {floor}"
    );

    let next = SCHEMA_VERSION + 1;
    c.client()
        .execute(
            &sql("INSERT INTO {s}.schema_migrations (version, name, oldest_reader) VALUES ($1, 'additive', $2)"),
            &[&next, &SCHEMA_VERSION],
        )
        .await
        .unwrap();
    migrate::check_schema(c.client(), &t.schema).await.unwrap();
    assert_eq!(
        migrate::schema_version(c.client(), &t.schema)
            .await
            .unwrap(),
        next
    );

    c.client()
        .execute(
            &sql("INSERT INTO {s}.schema_migrations (version, name, oldest_reader) VALUES ($1, 'breaking', $1)"),
            &[&(next + 1)],
        )
        .await
        .unwrap();
    let err = migrate::check_schema(c.client(), &t.schema)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("version {}", next + 1)) && text.contains("upgrade"),
        "{text}"
    );

    // Older than this build: migrate.
    c.client()
        .batch_execute(&sql(&format!(
            "DELETE FROM {{s}}.schema_migrations WHERE version > {SCHEMA_VERSION};
             UPDATE {{s}}.schema_migrations SET version = -version WHERE version = {SCHEMA_VERSION}"
        )))
        .await
        .unwrap();
    let err = migrate::check_schema(c.client(), &t.schema)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("drove migrate"), "{err}");

    // Rows without a floor (written by a build from before it was
    // recorded) count as their own version until migrate fills it in.
    c.client()
        .batch_execute(&sql(
            "UPDATE {s}.schema_migrations SET version = -version WHERE version < 0;
             ALTER TABLE {s}.schema_migrations DROP COLUMN oldest_reader",
        ))
        .await
        .unwrap();
    migrate::check_schema(c.client(), &t.schema).await.unwrap();
    let mut m = Conn::connect(&t.db, &t.schema).await.unwrap();
    let out = migrate(m.client_mut(), &t.schema).await.unwrap();
    assert_eq!(
        (out.from, out.applied.len()),
        (SCHEMA_VERSION, 0),
        "{out:?}"
    );
    let rows: Vec<(i32, Option<i32>)> = c
        .client()
        .query(
            &sql("SELECT version, oldest_reader FROM {s}.schema_migrations ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows.len(), SCHEMA_VERSION as usize, "{rows:?}");
    assert!(rows.iter().all(|(_, r)| r.is_some()), "{rows:?}");
    migrate::check_schema(c.client(), &t.schema).await.unwrap();
}

#[tokio::test]
async fn schemas_are_isolated_deployments() {
    let prod = TestDb::new().await;
    let staging = TestDb::new().await;
    let p = registered(&prod, "w", Duration::from_secs(30)).await;
    let s = registered(&staging, "w", Duration::from_secs(30)).await;
    jobs_enqueue(p.client(), &prod.schema, &NewJob::new("in-prod"))
        .await
        .unwrap();
    assert!(jobs_claim(&s, "default", 10, "w").await.unwrap().is_empty());
    assert_eq!(
        jobs_claim(&p, "default", 10, "w").await.unwrap()[0].kind,
        "in-prod"
    );
}

#[tokio::test]
async fn unmigrated_schema_says_run_migrate() {
    let t = TestDb::new().await;
    let empty = Schema::new(&format!("{}_none", t.schema.name())).unwrap();
    let conn = t.conn().await;
    let err = jobs_enqueue(conn.client(), &empty, &NewJob::new("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("drove migrate"), "{err}");
}

/// Statistics taken while every job waited (an ANALYZE of a big backlog)
/// say no job has a lease owner. Recording outcomes must still find the
/// batch's rows by address or id: a plan that scans all of `jobs` for the
/// owner's rows made each completion of 500 jobs cost 60 ms instead of 3.
#[tokio::test]
async fn outcomes_never_scan_jobs_even_when_statistics_say_nothing_runs() {
    let t = TestDb::new().await;
    let conn = registered(&t, "w1", Duration::from_secs(60)).await;
    backlog(&t, &conn, 20_000).await;
    let seq_scans = || async {
        conn.client()
            .query_one(
                &t.schema.sql(
                    "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = '{s}.jobs'::regclass",
                ),
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    for step in [
        "complete at",
        "complete by id",
        "fail",
        "cancelled",
        "release",
    ] {
        let claimed = jobs_claim(&conn, "default", 500, "w1").await.unwrap();
        assert_eq!(claimed.len(), 500);
        let pairs: Vec<(JobId, i32)> = claimed.iter().map(|j| (j.id, j.attempt)).collect();
        conn.client().batch_execute("BEGIN").await.unwrap();
        let before = seq_scans().await;
        let n = match step {
            "complete at" | "complete by id" => {
                let done: Vec<Completion> = claimed
                    .iter()
                    .map(|j| Completion {
                        ctid: (step == "complete at").then_some(j.ctid),
                        ..done(j)
                    })
                    .collect();
                jobs_complete_many(&conn, "w1", &done).await.unwrap().len()
            }
            "fail" => {
                let failed: Vec<Failure> = claimed
                    .iter()
                    .map(|j| Failure {
                        id: j.id,
                        attempt: j.attempt,
                        error: "boom".into(),
                        retryable: true,
                    })
                    .collect();
                jobs_fail_many(&conn, "w1", &failed).await.unwrap().len()
            }
            "cancelled" => jobs_cancelled_many(&conn, "w1", &pairs)
                .await
                .unwrap()
                .len(),
            _ => jobs_release_many(&conn, "w1", &pairs).await.unwrap().len(),
        };
        let scans = seq_scans().await - before;
        conn.client().batch_execute("COMMIT").await.unwrap();
        assert_eq!(n, 500, "{step}: every outcome recorded");
        assert_eq!(scans, 0, "{step}: scanned all of jobs");
    }
}

/// A claim updates the rows it picked by their addresses (a TID scan), also
/// when the statistics say `jobs` is nearly empty (taken just after a
/// drain, before a new backlog): an update guard the claim index could
/// serve once made the planner walk that whole index per claim (900 ms per
/// claim of 1,000 instead of a few).
#[tokio::test]
async fn claims_find_their_rows_by_address_even_when_statistics_say_jobs_is_empty() {
    let t = TestDb::new().await;
    let setup = registered(&t, "w1", Duration::from_secs(60)).await;
    backlog(&t, &setup, 20_000).await;
    // No autovacuum to put the true statistics back (checked at the end).
    // Writing pg_class needs a superuser, as the test database is.
    setup
        .client()
        .batch_execute(&t.schema.sql(
            "ALTER TABLE {s}.jobs SET (autovacuum_enabled = off);
             UPDATE pg_class SET reltuples = 1, relpages = 10000 WHERE oid = '{s}.jobs'::regclass",
        ))
        .await
        .unwrap();
    // A new connection: no plan cached from the true statistics.
    let conn = t.conn().await;
    let read = || async {
        conn.client()
            .query_one(
                &t.schema
                    .sql("SELECT pg_stat_get_xact_tuples_returned('{s}.jobs_claim_idx'::regclass)"),
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // Enough claims for the statement to be planned generically too (after
    // five); in one transaction for the counter, which ends before anything
    // is asserted.
    conn.client().batch_execute("BEGIN").await.unwrap();
    let mut rounds: Vec<(usize, i64)> = Vec::new();
    let mut failed = None;
    for _ in 0..6 {
        let before = read().await;
        match jobs_claim(&conn, "default", 1000, "w1").await {
            Ok(claimed) => rounds.push((claimed.len(), read().await - before)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    conn.client().batch_execute("COMMIT").await.unwrap();
    assert!(failed.is_none(), "a claim failed: {failed:?}");
    let reltuples: f32 = conn
        .client()
        .query_one(
            &t.schema
                .sql("SELECT reltuples FROM pg_class WHERE oid = '{s}.jobs'::regclass"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reltuples, 1.0, "the statistics were not the forced ones");
    for (round, (claimed, entries)) in rounds.into_iter().enumerate() {
        assert_eq!(claimed, 1000);
        // The picking walks past the entries of the jobs claimed earlier
        // in this transaction (not yet dead to anyone): round r reads about
        // (r + 1) x 1,000. Walking the whole index reads all 20,000.
        assert!(
            entries <= 10_000,
            "claim {round} read {entries} claim index entries for 1,000 jobs"
        );
    }
}
