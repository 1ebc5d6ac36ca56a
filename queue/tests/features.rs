//! Queue features at the library level, against a real PostgreSQL: ordering
//! keys (including dead jobs), unique keys and their scopes under
//! concurrent enqueues, fleet-wide limits under concurrent claims. The
//! same features across real worker processes are in
//! `controller/tests/features.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use drove_queue::queues::{queue_create, queue_update};
use drove_queue::testing::TestDb;
use drove_queue::*;

async fn registered(t: &TestDb, id: &str) -> Conn {
    t.registered(id, Duration::from_secs(60)).await
}

fn ids(jobs: &[ClaimedJob]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

fn done(job: &ClaimedJob) -> Completion {
    Completion {
        id: job.id,
        attempt: job.attempt,
        result: None,
        ctid: Some(job.ctid),
    }
}

fn fail(job: &ClaimedJob) -> Failure {
    Failure {
        id: job.id,
        attempt: job.attempt,
        error: "boom".into(),
        retryable: true,
    }
}

/// Jobs of one key are claimed one at a time in id order, also while the
/// first retries; other keys and unkeyed jobs are not held back.
#[tokio::test]
async fn ordering_key_releases_one_job_at_a_time_in_order() {
    let t = TestDb::new().await;
    let c = registered(&t, "w1").await;
    let jobs = vec![
        NewJob::new("noop").with_ordering_key("a"),
        NewJob::new("noop").with_ordering_key("a"),
        NewJob::new("noop").with_ordering_key("b"),
        NewJob::new("noop"),
        NewJob::new("noop").with_ordering_key("a"),
    ];
    let id = jobs_enqueue_many(c.client(), &t.schema, &jobs)
        .await
        .unwrap();
    // a1, b1 and the unkeyed job; a2 and a3 wait for a1.
    let first = jobs_claim(&c, "default", 10, "w1").await.unwrap();
    assert_eq!(ids(&first), vec![id[0], id[2], id[3]]);
    // a1 fails and will retry (its backoff is in the future): a2 still waits.
    jobs_fail_many(&c, "w1", &[fail(&first[0])]).await.unwrap();
    assert!(
        jobs_claim(&c, "default", 10, "w1")
            .await
            .unwrap()
            .is_empty()
    );
    // Its retry comes due; it runs again, and still nobody else of key a.
    c.client()
        .execute(
            &t.schema
                .sql("UPDATE {s}.jobs SET run_at = now() WHERE id = $1"),
            &[&id[0]],
        )
        .await
        .unwrap();
    let again = jobs_claim(&c, "default", 10, "w1").await.unwrap();
    assert_eq!(ids(&again), vec![id[0]]);
    assert_eq!(again[0].attempt, 2);
    jobs_complete_many(&c, "w1", &[done(&again[0])])
        .await
        .unwrap();
    let next = jobs_claim(&c, "default", 10, "w1").await.unwrap();
    assert_eq!(ids(&next), vec![id[1]]);
    jobs_complete_many(&c, "w1", &[done(&next[0])])
        .await
        .unwrap();
    let last = jobs_claim(&c, "default", 10, "w1").await.unwrap();
    assert_eq!(ids(&last), vec![id[4]]);
}

/// A dead job holds back the later jobs of its key until it is cancelled
/// (or retried and done); a queue set to `skip` goes on without it.
#[tokio::test]
async fn dead_job_blocks_its_key_until_cancelled_unless_the_queue_skips() {
    let t = TestDb::new().await;
    let c = registered(&t, "w1").await;
    for (queue, on_dead) in [
        ("waits", OrderingOnDead::Wait),
        ("skips", OrderingOnDead::Skip),
    ] {
        let settings = QueueSettings {
            ordering_on_dead: Some(on_dead),
            ..Default::default()
        };
        queue_create(c.client(), &t.schema, queue, &settings)
            .await
            .unwrap();
        let jobs = vec![
            NewJob::new("noop")
                .with_queue(queue)
                .with_ordering_key("k")
                .with_max_attempts(1),
            NewJob::new("noop").with_queue(queue).with_ordering_key("k"),
        ];
        let id = jobs_enqueue_many(c.client(), &t.schema, &jobs)
            .await
            .unwrap();
        let first = jobs_claim(&c, queue, 10, "w1").await.unwrap();
        assert_eq!(ids(&first), vec![id[0]]);
        let out = jobs_fail_many(&c, "w1", &[fail(&first[0])]).await.unwrap();
        assert!(matches!(out[0], FailOutcome::Dead { .. }), "{out:?}");
        let after = jobs_claim(&c, queue, 10, "w1").await.unwrap();
        match on_dead {
            OrderingOnDead::Skip => assert_eq!(ids(&after), vec![id[1]]),
            OrderingOnDead::Wait => {
                assert!(after.is_empty(), "ran past a dead job: {after:?}");
                assert_eq!(
                    job_cancel(c.client(), &t.schema, id[0]).await.unwrap(),
                    Cancelled::Now
                );
                let job = job_get(c.client(), &t.schema, id[0]).await.unwrap();
                assert_eq!(job.state, JobState::Cancelled);
                let now = jobs_claim(&c, queue, 10, "w1").await.unwrap();
                assert_eq!(ids(&now), vec![id[1]]);
            }
        }
    }
}

/// Sixteen producers enqueue the same unique key at once: one job exists,
/// and every producer gets its id, all but one told it already existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unique_enqueues_create_one_job() {
    let t = Arc::new(TestDb::new().await);
    for round in 0..5 {
        let key = format!("report-{round}");
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (t, key) = (t.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let c = t.conn().await;
                let job = NewJob::new("noop").with_unique_key(key);
                jobs_enqueue_detailed(c.client(), &t.schema, &[job])
                    .await
                    .unwrap()[0]
            }));
        }
        let mut got = Vec::new();
        for task in tasks {
            got.push(task.await.unwrap());
        }
        let distinct: HashSet<JobId> = got.iter().map(|e| e.id).collect();
        assert_eq!(distinct.len(), 1, "round {round}: {got:?}");
        assert_eq!(got.iter().filter(|e| !e.existing).count(), 1, "{got:?}");
        let c = t.conn().await;
        let n: i64 = c
            .client()
            .query_one(
                &t.schema
                    .sql("SELECT count(*) FROM {s}.jobs WHERE unique_key = $1"),
                &[&key],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
    }
}

/// `pending` frees the key when the job starts, `active` when it finishes,
/// a window when it has passed; a batch with one key twice gets one job.
#[tokio::test]
async fn unique_scopes_release_the_key_when_they_should() {
    let t = TestDb::new().await;
    let c = registered(&t, "w1").await;
    let enqueue = |job: NewJob| enqueue_one(&c, &t, job);
    // pending
    let p1 = enqueue(NewJob::new("noop").with_unique("p", UniqueScope::Pending)).await;
    let p2 = enqueue(NewJob::new("noop").with_unique("p", UniqueScope::Pending)).await;
    assert_eq!((p2.id, p2.existing), (p1.id, true));
    let running = jobs_claim(&c, "default", 10, "w1").await.unwrap();
    assert_eq!(ids(&running), vec![p1.id]);
    let p3 = enqueue(NewJob::new("noop").with_unique("p", UniqueScope::Pending)).await;
    assert!(
        !p3.existing && p3.id != p1.id,
        "started job still held the key"
    );
    jobs_complete_many(&c, "w1", &[done(&running[0])])
        .await
        .unwrap();
    jobs_cancel_pending(&c, &t, p3.id).await;

    // active (the default)
    let a1 = enqueue(NewJob::new("noop").with_unique_key("a")).await;
    let running = jobs_claim(&c, "default", 10, "w1").await.unwrap();
    assert_eq!(ids(&running), vec![a1.id]);
    let a2 = enqueue(NewJob::new("noop").with_unique_key("a")).await;
    assert_eq!(
        (a2.id, a2.existing),
        (a1.id, true),
        "running job lost the key"
    );
    jobs_complete_many(&c, "w1", &[done(&running[0])])
        .await
        .unwrap();
    let a3 = enqueue(NewJob::new("noop").with_unique_key("a")).await;
    assert!(!a3.existing, "finished job still held the key");
    jobs_cancel_pending(&c, &t, a3.id).await;

    // a window outlives the job, then lapses
    let w1 = enqueue(NewJob::new("noop").with_unique("w", UniqueScope::Window(1))).await;
    let running = jobs_claim(&c, "default", 10, "w1").await.unwrap();
    jobs_complete_many(&c, "w1", &[done(&running[0])])
        .await
        .unwrap();
    let w2 = enqueue(NewJob::new("noop").with_unique("w", UniqueScope::Window(1))).await;
    assert_eq!(
        (w2.id, w2.existing),
        (w1.id, true),
        "window ended with the job"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let w3 = enqueue(NewJob::new("noop").with_unique("w", UniqueScope::Window(1))).await;
    assert!(!w3.existing, "window did not lapse");
    jobs_cancel_pending(&c, &t, w3.id).await;

    // twice in one batch, beside a job without a key
    let batch = vec![
        NewJob::new("noop").with_unique_key("b"),
        NewJob::new("noop"),
        NewJob::new("noop").with_unique_key("b"),
    ];
    let got = jobs_enqueue_detailed(c.client(), &t.schema, &batch)
        .await
        .unwrap();
    assert!(!got[0].existing && !got[1].existing);
    assert_eq!((got[2].id, got[2].existing), (got[0].id, true));

    // A scope without a key is refused, clearly.
    let mut bad = NewJob::new("noop");
    bad.unique_scope = Some(UniqueScope::Pending);
    let err = jobs_enqueue_many(c.client(), &t.schema, &[bad])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unique_key"), "{err}");
}

/// A dead or cancelled job that an operator retries holds its unique key
/// again, for its own scope, unless another job took the key meanwhile;
/// every path to dead or cancelled keeps the scope for that.
#[tokio::test]
async fn a_retried_job_takes_its_unique_key_again() {
    let t = TestDb::new().await;
    let c = registered(&t, "w1").await;
    let enqueue = |job: NewJob| enqueue_one(&c, &t, job);
    let kill = |id: JobId| {
        let (c, t) = (&c, &t);
        async move {
            let claimed = jobs_claim(c, "default", 10, "w1").await.unwrap();
            assert_eq!(ids(&claimed), vec![id]);
            let f = Failure {
                retryable: false,
                ..fail(&claimed[0])
            };
            jobs_fail_many(c, "w1", &[f]).await.unwrap();
            assert_eq!(
                job_get(c.client(), &t.schema, id).await.unwrap().state,
                JobState::Dead
            );
        }
    };
    let scope = |id: JobId| {
        let (c, t) = (&c, &t);
        async move {
            c.client()
                .query_one(
                    &t.schema.sql(
                        "SELECT unique_scope FROM {s}.jobs WHERE id = $1
                         UNION ALL SELECT unique_scope FROM {s}.jobs_finished WHERE id = $1",
                    ),
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
        }
    };

    // active: dead, retried, holds the key again
    let a1 = enqueue(NewJob::new("noop").with_unique_key("a")).await;
    kill(a1.id).await;
    assert_eq!(scope(a1.id).await.as_deref(), Some("active"));
    job_retry(c.client(), &t.schema, a1.id).await.unwrap();
    let again = enqueue(NewJob::new("noop").with_unique_key("a")).await;
    assert_eq!(
        (again.id, again.existing),
        (a1.id, true),
        "the retried job did not take its key"
    );

    // ... unless another job took it while it was dead: that one keeps it
    kill(a1.id).await;
    let a2 = enqueue(NewJob::new("noop").with_unique_key("a")).await;
    assert!(!a2.existing);
    job_retry(c.client(), &t.schema, a1.id).await.unwrap();
    let again = enqueue(NewJob::new("noop").with_unique_key("a")).await;
    assert_eq!((again.id, again.existing), (a2.id, true));
    jobs_cancel_pending(&c, &t, a1.id).await;
    jobs_cancel_pending(&c, &t, a2.id).await;

    // pending: cancelled while waiting, retried, held until it starts
    let p1 = enqueue(NewJob::new("noop").with_unique("p", UniqueScope::Pending)).await;
    jobs_cancel_pending(&c, &t, p1.id).await;
    assert_eq!(scope(p1.id).await.as_deref(), Some("pending"));
    job_retry(c.client(), &t.schema, p1.id).await.unwrap();
    let again = enqueue(NewJob::new("noop").with_unique("p", UniqueScope::Pending)).await;
    assert_eq!((again.id, again.existing), (p1.id, true));
    let running = jobs_claim(&c, "default", 10, "w1").await.unwrap();
    assert_eq!(ids(&running), vec![p1.id]);
    let p2 = enqueue(NewJob::new("noop").with_unique("p", UniqueScope::Pending)).await;
    assert!(!p2.existing, "a started job held its pending key");
    jobs_cancel_pending(&c, &t, p2.id).await;
    // cancelled by its worker while running
    assert_eq!(
        jobs_cancelled_many(&c, "w1", &[(p1.id, running[0].attempt)])
            .await
            .unwrap(),
        vec![p1.id]
    );
    assert_eq!(scope(p1.id).await.as_deref(), Some("pending"));

    // two dead jobs of one key retried together: the first holds it
    let d1 = enqueue(NewJob::new("noop").with_unique_key("d")).await;
    kill(d1.id).await;
    let d2 = enqueue(NewJob::new("noop").with_unique_key("d")).await;
    kill(d2.id).await;
    let back = jobs_retry_dead(c.client(), &t.schema, None).await.unwrap();
    assert!(back.contains(&d1.id) && back.contains(&d2.id), "{back:?}");
    let again = enqueue(NewJob::new("noop").with_unique_key("d")).await;
    assert_eq!((again.id, again.existing), (d1.id, true));

    // dead through the reaper (its worker's lease expired)
    let gone = t.registered("gone", Duration::from_millis(200)).await;
    let r1 = enqueue(
        NewJob::new("noop")
            .with_unique_key("r")
            .with_max_attempts(1),
    )
    .await;
    let mut taken = Vec::new();
    while !taken.contains(&r1.id) {
        taken.extend(ids(&jobs_claim(&gone, "default", 10, "gone")
            .await
            .unwrap()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reaped = leases_reclaim_expired(c.client(), &t.schema, false)
        .await
        .unwrap();
    assert!(reaped.dead >= 1, "{reaped:?}");
    assert_eq!(
        job_get(c.client(), &t.schema, r1.id).await.unwrap().state,
        JobState::Dead
    );
    assert_eq!(scope(r1.id).await.as_deref(), Some("active"));
    job_retry(c.client(), &t.schema, r1.id).await.unwrap();
    let again = enqueue(NewJob::new("noop").with_unique_key("r")).await;
    assert_eq!((again.id, again.existing), (r1.id, true));
}

/// Migration 8 gives live jobs that hold their key its scope, so that a
/// job enqueued before the upgrade can take its key again if it dies.
#[tokio::test]
async fn migration_8_gives_live_keyed_jobs_their_scope() {
    let t = TestDb::new().await;
    let mut c = t.conn().await;
    let jobs = [
        NewJob::new("noop").with_unique_key("a"),
        NewJob::new("noop").with_unique("p", UniqueScope::Pending),
        NewJob::new("noop"),
    ];
    let ids: Vec<JobId> = jobs_enqueue_detailed(c.client(), &t.schema, &jobs)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    // As a schema 7 database had it: no scope kept, version 7 (and
    // nothing of the migrations after 8).
    c.client()
        .batch_execute(&t.schema.sql(
            "UPDATE {s}.jobs SET unique_scope = NULL;
             DROP VIEW {s}.jobs_finished; DROP TABLE {s}.jobs_succeeded; DROP TYPE {s}.succeeded_job;
             DROP FUNCTION {s}.buckets(int8[]); DROP FUNCTION {s}.jobs_finished_max_id();
             DROP AGGREGATE {s}.array_cat_agg(anycompatiblearray);
             DROP FUNCTION {s}.jobs_complete_joined(tid[], int8[], int4[], jsonb[], text);
             DELETE FROM {s}.schema_migrations WHERE version >= 8",
        ))
        .await
        .unwrap();
    let out = migrate(c.client_mut(), &t.schema).await.unwrap();
    assert_eq!((out.from, out.to), (7, SCHEMA_VERSION));
    let scopes: Vec<Option<String>> = c
        .client()
        .query(
            &t.schema
                .sql("SELECT unique_scope FROM {s}.jobs WHERE id = ANY($1) ORDER BY id"),
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        scopes,
        vec![
            Some("active".to_string()),
            Some("pending".to_string()),
            None
        ]
    );
}

/// Gives the default queue these limits and `n` no-op jobs.
async fn limited_backlog(c: &Conn, t: &TestDb, settings: &QueueSettings, n: usize) {
    queue_update(c.client(), &t.schema, "default", settings)
        .await
        .unwrap();
    let jobs: Vec<NewJob> = (0..n).map(|_| NewJob::new("noop")).collect();
    jobs_enqueue_many(c.client(), &t.schema, &jobs)
        .await
        .unwrap();
}

async fn enqueue_one(c: &Conn, t: &TestDb, job: NewJob) -> Enqueued {
    jobs_enqueue_detailed(c.client(), &t.schema, &[job])
        .await
        .unwrap()[0]
}

async fn jobs_cancel_pending(c: &Conn, t: &TestDb, id: JobId) {
    assert_eq!(
        job_cancel(c.client(), &t.schema, id).await.unwrap(),
        Cancelled::Now
    );
}

/// Eight claimers race on a queue limited to 5 running jobs: never more
/// than 5 are running, and finishing one lets one more start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_running_holds_under_concurrent_claims() {
    let t = Arc::new(TestDb::new().await);
    let c = registered(&t, "w0").await;
    let settings = QueueSettings {
        max_running: Some(Some(5)),
        ..Default::default()
    };
    limited_backlog(&c, &t, &settings, 100).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("w{w}");
            let c = registered(&t, &id).await;
            let mut held = Vec::new();
            for _ in 0..5 {
                let claim = jobs_claim_hinted(&c, "default", 3, &id).await.unwrap();
                held.extend(claim.jobs);
            }
            held
        }));
    }
    let mut held = Vec::new();
    for task in tasks {
        held.extend(task.await.unwrap());
    }
    assert_eq!(held.len(), 5, "limit of 5 running, {} claimed", held.len());
    let claim = jobs_claim_hinted(&c, "default", 10, "w0").await.unwrap();
    assert!(claim.jobs.is_empty());
    assert!(claim.held_back.is_some(), "a held-back claim says so");
    // One finishes (recorded by its owner): exactly one more may start.
    let owner = &held[0];
    let oc = t.conn().await;
    let owner_id: String = c
        .client()
        .query_one(
            &t.schema
                .sql("SELECT lease_owner FROM {s}.jobs WHERE id = $1"),
            &[&owner.id],
        )
        .await
        .unwrap()
        .get(0);
    jobs_complete_many(&oc, &owner_id, &[done(owner)])
        .await
        .unwrap();
    let claim = jobs_claim_hinted(&c, "default", 10, "w0").await.unwrap();
    assert_eq!(claim.jobs.len(), 1);
    // Clearing the limit takes the fast path again.
    let settings = QueueSettings {
        max_running: Some(None),
        ..Default::default()
    };
    queue_update(c.client(), &t.schema, "default", &settings)
        .await
        .unwrap();
    let claim = jobs_claim_hinted(&c, "default", 10, "w0").await.unwrap();
    assert_eq!(claim.jobs.len(), 10);
    assert!(claim.held_back.is_none());
}

/// A rate of 20 jobs/s: a burst of at most 20, then about 20 a second,
/// and the claim says when the next token is due.
#[tokio::test]
async fn rate_limit_spends_a_token_bucket() {
    let t = TestDb::new().await;
    let c = registered(&t, "w1").await;
    let settings = QueueSettings {
        rate_per_sec: Some(Some(20.0)),
        ..Default::default()
    };
    limited_backlog(&c, &t, &settings, 200).await;
    let burst = jobs_claim_hinted(&c, "default", 100, "w1").await.unwrap();
    assert_eq!(burst.jobs.len(), 20, "the bucket holds one second's worth");
    let wait = burst.held_back.expect("held back");
    assert!(wait <= Duration::from_millis(60), "next token in {wait:?}");
    let started = std::time::Instant::now();
    let mut taken = 0;
    while started.elapsed() < Duration::from_secs(1) {
        taken += jobs_claim_hinted(&c, "default", 100, "w1")
            .await
            .unwrap()
            .jobs
            .len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "FIGURE rate_limit_20_per_s_observed={:.1}",
        taken as f64 / secs
    );
    assert!(
        taken as f64 <= 20.0 * secs + 1.0,
        "{taken} jobs in {secs:.2} s at 20/s"
    );
    assert!(taken >= 10, "only {taken} jobs in {secs:.2} s at 20/s");
}

/// A full bucket gives its whole size every time: the bucket's age was
/// two clock readings apart, and about 2% of new buckets came out one
/// token short (a negative age, floored).
#[tokio::test]
async fn a_new_bucket_is_always_full() {
    let t = TestDb::new().await;
    let c = registered(&t, "w1").await;
    let settings = QueueSettings {
        rate_per_sec: Some(Some(20.0)),
        ..Default::default()
    };
    limited_backlog(&c, &t, &settings, 200 * 20).await;
    let mut short = Vec::new();
    for round in 0..200 {
        // A bucket never spent from, as when a limit is first set.
        c.client()
            .batch_execute(&t.schema.sql(
                "UPDATE {s}.queues SET rate_tokens = NULL, rate_at = NULL WHERE name = 'default'",
            ))
            .await
            .unwrap();
        let got = jobs_claim_hinted(&c, "default", 100, "w1")
            .await
            .unwrap()
            .jobs
            .len();
        if got != 20 {
            short.push((round, got));
        }
    }
    assert!(
        short.is_empty(),
        "(round, jobs) of short buckets: {short:?}"
    );
}

/// Jobs waiting behind an earlier job of their key are counted apart: they
/// are not backlog a bigger fleet could work off.
#[tokio::test]
async fn stats_count_jobs_waiting_for_their_key_apart() {
    let t = TestDb::new().await;
    let c = t.conn().await;
    let mut jobs: Vec<NewJob> = (0..5)
        .map(|_| NewJob::new("noop").with_ordering_key("k"))
        .collect();
    jobs.extend((0..3).map(|_| NewJob::new("noop")));
    jobs_enqueue_many(c.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let stats = stats_read(c.client(), &t.schema).await.unwrap();
    let q = stats.queues.iter().find(|q| q.name == "default").unwrap();
    assert_eq!((q.available, q.ordered_waiting), (8, 4));
    assert_eq!(
        stats.available(),
        4,
        "scaling backlog: 3 unkeyed + the key's first"
    );
}
