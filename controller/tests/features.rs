//! Queue features across real `drove-worker` processes: ordering keys with
//! random failures, fleet-wide max running and rate limits, pause/resume,
//! weighted queues and per-kind concurrency. What is checked is read back
//! from the database (start and finish times of every job), not from the
//! workers' own reports.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use drove_queue::queues::{queue_create, queue_update};
use drove_queue::{NewJob, QueueSettings};
use rand::Rng;

fn sleep_job(queue: &str, ms: u64, fail_attempts: i32) -> NewJob {
    NewJob::new("sleep")
        .with_queue(queue)
        .with_payload(&serde_json::json!({ "ms": ms, "fail_attempts": fail_attempts }))
        .unwrap()
        .with_max_attempts(5)
        .with_backoff(30, 200)
}

struct Done {
    id: i64,
    kind: String,
    queue: String,
    ordering_key: Option<String>,
    attempt: i32,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
}

async fn finished(conn: &drove_queue::Conn, schema: &drove_queue::Schema) -> Vec<Done> {
    let rows = conn
        .client()
        .query(
            &schema.sql(
                "SELECT id, kind, queue, ordering_key, attempt, started_at, finished_at
                 FROM {s}.jobs_finished WHERE state = 'succeeded' ORDER BY id",
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| Done {
            id: r.get(0),
            kind: r.get(1),
            queue: r.get(2),
            ordering_key: r.get(3),
            attempt: r.get(4),
            started: r.get(5),
            finished: r.get(6),
        })
        .collect()
}

/// The most jobs of `done` that were running at one instant.
fn max_overlap<'a>(done: impl Iterator<Item = &'a Done>) -> usize {
    let mut events: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for d in done {
        events.push((d.started, 1));
        events.push((d.finished, -1));
    }
    // Ends before starts at the same instant.
    events.sort_by_key(|&(t, delta)| (t, delta));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    max as usize
}

/// `n` workers with `args`, each ready.
async fn ready_workers(
    t: &drove_queue::testing::TestDb,
    n: usize,
    args: &[&str],
) -> Vec<WorkerProc> {
    let workers: Vec<WorkerProc> = (0..n)
        .map(|_| WorkerProc::spawn(&t.url, &t.schema, args))
        .collect();
    for w in &workers {
        w.ready(Duration::from_secs(10)).await;
    }
    workers
}

/// Sets one queue's settings.
async fn configure(conn: &drove_queue::Conn, queue: &str, settings: QueueSettings) {
    queue_update(conn.client(), conn.schema(), queue, &settings)
        .await
        .unwrap();
}

/// Waits until `n` jobs succeeded, each recorded once; fails at once if
/// one died.
async fn all_succeeded(conn: &drove_queue::Conn, n: i64, limit: Duration) {
    wait_until(limit, "every job succeeded", || async {
        let (live, done, distinct, ok) = totals(conn).await;
        assert_eq!(done, distinct, "a job was recorded twice");
        if done > ok {
            let row = conn
                .client()
                .query_one(
                    &conn.schema().sql(
                        "SELECT id, state::text, errors::text FROM {s}.jobs_finished
                         WHERE state <> 'succeeded' LIMIT 1",
                    ),
                    &[],
                )
                .await
                .unwrap();
            panic!(
                "job {} ended {}: {}",
                row.get::<_, i64>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2)
            );
        }
        (live == 0 && ok == n).then_some(())
    })
    .await;
}

/// 24 keys of 8 jobs each, plus unkeyed jobs, through 4 workers of 4 slots;
/// a third of the jobs fail once or twice first. Per key, each job's
/// (last) attempt starts after the previous job of its key finished, in id
/// order; different keys ran side by side.
#[tokio::test(flavor = "multi_thread")]
async fn ordering_keys_hold_across_workers_with_random_failures() {
    let (t, conn) = test_db().await;
    let mut rng = rand::rng();
    let mut jobs = Vec::new();
    for round in 0..8 {
        for key in 0..24 {
            let fails = if rng.random_bool(0.33) {
                rng.random_range(1..=2)
            } else {
                0
            };
            jobs.push(
                sleep_job("default", rng.random_range(5..40), fails)
                    .with_ordering_key(format!("key-{key}")),
            );
        }
        if round % 2 == 0 {
            jobs.push(sleep_job("default", 10, 0));
        }
    }
    let n = jobs.len() as i64;
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let _workers = ready_workers(&t, 4, &["--slots", "4"]).await;
    all_succeeded(&conn, n, Duration::from_secs(120)).await;

    let done = finished(&conn, &t.schema).await;
    let mut by_key: HashMap<&str, Vec<&Done>> = HashMap::new();
    for d in &done {
        if let Some(k) = &d.ordering_key {
            by_key.entry(k).or_default().push(d);
        }
    }
    assert_eq!(by_key.len(), 24);
    let mut retried = 0;
    for (key, jobs) in &by_key {
        assert_eq!(jobs.len(), 8);
        for pair in jobs.windows(2) {
            assert!(pair[0].id < pair[1].id);
            assert!(
                // Both times are their transactions' start times, taken a
                // few µs before each statement's snapshot: a claim can start
                // just before a completion that commits before the claim's
                // snapshot. Jobs run 5-40 ms, so a real overlap is far
                // larger than this 2 ms allowance.
                pair[1].started >= pair[0].finished - chrono::Duration::milliseconds(2),
                "key {key}: job {} started at {} before job {} finished at {}",
                pair[1].id,
                pair[1].started,
                pair[0].id,
                pair[0].finished
            );
        }
        retried += jobs.iter().filter(|j| j.attempt > 1).count();
    }
    let parallel = max_overlap(done.iter().filter(|d| d.ordering_key.is_some()));
    println!(
        "FIGURE ordering: {n} jobs, {retried} keyed jobs retried, up to {parallel} keys at once"
    );
    assert!(retried > 10, "too few failures to test anything: {retried}");
    assert!(parallel > 1, "keys never ran side by side");
}

/// max_running = 3 across 3 workers of 4 slots: at most 3 jobs of the queue
/// ever ran at once (from the recorded start and finish times), and the
/// limit was used.
#[tokio::test(flavor = "multi_thread")]
async fn max_running_holds_across_workers() {
    let (t, conn) = test_db().await;
    configure(
        &conn,
        "default",
        QueueSettings {
            max_running: Some(Some(3)),
            ..Default::default()
        },
    )
    .await;
    let jobs: Vec<NewJob> = (0..45).map(|_| sleep_job("default", 100, 0)).collect();
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let _workers = ready_workers(&t, 3, &["--slots", "4"]).await;
    let started = Instant::now();
    all_succeeded(&conn, 45, Duration::from_secs(60)).await;
    let took = started.elapsed();
    let done = finished(&conn, &t.schema).await;
    let max = max_overlap(done.iter());
    println!("FIGURE max_running=3: observed max {max}, 45 jobs of 100 ms in {took:?}");
    assert!(max <= 3, "{max} jobs ran at once under max_running 3");
    assert_eq!(max, 3, "the limit was never reached");
}

/// rate 10/s across 3 workers: in any stretch of time, starts stay within
/// the bucket (10) plus 10 per second (plus one for clock rounding).
#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_holds_across_workers() {
    let (t, conn) = test_db().await;
    configure(
        &conn,
        "default",
        QueueSettings {
            rate_per_sec: Some(Some(10.0)),
            ..Default::default()
        },
    )
    .await;
    let jobs: Vec<NewJob> = (0..40).map(|_| NewJob::new("noop")).collect();
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let _workers = ready_workers(&t, 3, &["--slots", "8"]).await;
    all_succeeded(&conn, 40, Duration::from_secs(60)).await;
    let mut starts: Vec<DateTime<Utc>> = finished(&conn, &t.schema)
        .await
        .iter()
        .map(|d| d.started)
        .collect();
    starts.sort();
    let mut worst = 0.0f64;
    for i in 0..starts.len() {
        for j in i..starts.len() {
            let secs = (starts[j] - starts[i]).num_microseconds().unwrap() as f64 / 1e6;
            let allowed = 10.0 + 10.0 * secs + 1.0;
            worst = worst.max((j - i + 1) as f64 - allowed);
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} jobs started within {secs:.3} s at 10/s",
                j - i + 1
            );
        }
    }
    let span = (starts[39] - starts[0]).num_milliseconds();
    println!(
        "FIGURE rate 10/s: 40 starts over {span} ms (bucket 10, then 10/s: >= 3000 ms expected)"
    );
    assert!(span >= 2500, "40 jobs at 10/s started within {span} ms");
}

/// Pausing stops claims within a second; resuming starts them again within
/// a second (the workers are woken, not left to their poll).
#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume_take_effect_within_a_second() {
    let (t, conn) = test_db().await;
    let _workers = ready_workers(&t, 2, &["--slots", "4"]).await;
    let jobs: Vec<NewJob> = (0..400).map(|_| sleep_job("default", 50, 0)).collect();
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused_at: DateTime<Utc> = conn
        .client()
        .query_one("SELECT now()", &[])
        .await
        .unwrap()
        .get(0);
    drove_queue::queues::queue_set_paused(conn.client(), &t.schema, "default", true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last_start = |after: DateTime<Utc>| {
        let (conn, t) = (&conn, &t);
        async move {
            let row = conn
                .client()
                .query_one(
                    &t.schema.sql(
                        "SELECT max(started_at), count(*) FROM (
                            SELECT started_at FROM {s}.jobs WHERE started_at > $1
                            UNION ALL SELECT started_at FROM {s}.jobs_finished WHERE started_at > $1) x",
                    ),
                    &[&after],
                )
                .await
                .unwrap();
            (row.get::<_, Option<DateTime<Utc>>>(0), row.get::<_, i64>(1))
        }
    };
    let (last, _) = last_start(paused_at).await;
    let stopped_after = last.map_or(0, |l| (l - paused_at).num_milliseconds());
    let (live, _, _, _) = totals(&conn).await;
    assert!(live > 100, "the queue drained before the pause could show");
    assert!(
        stopped_after <= 1000,
        "a job started {stopped_after} ms after the pause"
    );

    let resumed_at: DateTime<Utc> = conn
        .client()
        .query_one("SELECT now()", &[])
        .await
        .unwrap()
        .get(0);
    drove_queue::queues::queue_set_paused(conn.client(), &t.schema, "default", false)
        .await
        .unwrap();
    let first = wait_until(Duration::from_secs(5), "a start after resume", || async {
        let row = conn
            .client()
            .query_one(
                &t.schema.sql(
                    "SELECT min(started_at) FROM (
                        SELECT started_at FROM {s}.jobs WHERE started_at > $1
                        UNION ALL SELECT started_at FROM {s}.jobs_finished WHERE started_at > $1) x",
                ),
                &[&resumed_at],
            )
            .await
            .unwrap();
        row.get::<_, Option<DateTime<Utc>>>(0)
    })
    .await;
    let resumed_after = (first - resumed_at).num_milliseconds();
    println!(
        "FIGURE pause: last start {stopped_after} ms after pausing; resume: first start {resumed_after} ms after"
    );
    assert!(
        resumed_after <= 1000,
        "first start {resumed_after} ms after resume"
    );
    all_succeeded(&conn, 400, Duration::from_secs(60)).await;
}

/// A worker serving `hi:3,lo:1` with both queues full shares its slots
/// about 3 to 1 (strict order would give `lo` nothing); per-kind
/// concurrency caps one kind while others use the rest of the slots.
#[tokio::test(flavor = "multi_thread")]
async fn weighted_queues_share_slots_and_kind_limits_cap_a_kind() {
    let (t, conn) = test_db().await;
    for q in ["hi", "lo"] {
        queue_create(conn.client(), &t.schema, q, &QueueSettings::default())
            .await
            .unwrap();
    }
    let mut jobs: Vec<NewJob> = Vec::new();
    for _ in 0..200 {
        jobs.push(sleep_job("hi", 40, 0));
        jobs.push(sleep_job("lo", 40, 0));
    }
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let w = WorkerProc::spawn(
        &t.url,
        &t.schema,
        &[
            "--slots",
            "8",
            "--queues",
            "hi:3,lo:1",
            "--max-prefetch",
            "0",
        ],
    );
    w.ready(Duration::from_secs(10)).await;
    wait_until(Duration::from_secs(60), "100 jobs done", || async {
        let (_, ok, _, _) = totals(&conn).await;
        (ok >= 100).then_some(())
    })
    .await;
    let done = finished(&conn, &t.schema).await;
    let hi = done.iter().filter(|d| d.queue == "hi").count();
    let lo = done.iter().filter(|d| d.queue == "lo").count();
    println!("FIGURE weights hi:3,lo:1 -> done hi {hi}, lo {lo}");
    assert!(lo > 0, "the low-weight queue got nothing");
    assert!(
        hi as f64 >= 2.0 * lo as f64 && (hi as f64) <= 4.5 * lo as f64,
        "hi {hi} vs lo {lo} for weights 3:1"
    );
    drop(w);

    // Per-kind: `stamp` (an exec job that prints when it really ran)
    // limited to 1 of 4 slots, sleep jobs beside it. The claim time in the
    // database is no use here: limited jobs wait aside after their claim.
    let (t, conn) = test_db().await;
    let mut jobs: Vec<NewJob> = (0..6).map(|_| NewJob::new("stamp")).collect();
    jobs.extend((0..30).map(|_| sleep_job("default", 50, 0)));
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    let w = WorkerProc::spawn(
        &t.url,
        &t.schema,
        &[
            "--slots",
            "4",
            "--kind-concurrency",
            "stamp=1",
            "--exec",
            "stamp=sh -c 'date +%s%N; sleep 0.1; date +%s%N'",
        ],
    );
    w.ready(Duration::from_secs(10)).await;
    all_succeeded(&conn, 36, Duration::from_secs(60)).await;
    let rows = conn
        .client()
        .query(
            &t.schema
                .sql("SELECT result #>> '{}' FROM {s}.jobs_finished WHERE kind = 'stamp'"),
            &[],
        )
        .await
        .unwrap();
    let mut runs: Vec<(i64, i64)> = rows
        .iter()
        .map(|r| {
            let out: String = r.get(0);
            let ns: Vec<i64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
            (ns[0], ns[1])
        })
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 6);
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two stamp jobs overlapped with a limit of 1: {pair:?}"
        );
    }
    let done = finished(&conn, &t.schema).await;
    let all = max_overlap(done.iter().filter(|d| d.kind == "sleep"));
    println!(
        "FIGURE kind-concurrency stamp=1: 6 runs one at a time; sleep jobs up to {all} at once"
    );
    assert!(all > 1, "the other kinds did not use the free slots");
}

/// A job enqueues its successor in the transaction that records its
/// success: a three-step chain runs in order; an attempt that fails
/// enqueues nothing (the retry does); a malformed follow-up line fails the
/// job for good and enqueues nothing.
#[tokio::test(flavor = "multi_thread")]
async fn follow_up_jobs_commit_with_the_success_that_enqueues_them() {
    let (t, conn) = test_db().await;
    // step N prints a follow-up for step N+1 until 3; attempt 1 of step 2 fails after printing it.
    let script = r#"
        step=$(sed 's/[^0-9]//g')
        if [ "$step" -lt 3 ]; then
            echo "DROVE_ENQUEUE {\"kind\": \"step\", \"payload\": {\"step\": $((step + 1))}}" >&2
        fi
        if [ "$step" = 2 ] && [ "$DROVE_JOB_ATTEMPT" = 1 ]; then exit 1; fi
        echo "{\"step\": $step}"
    "#;
    let w = WorkerProc::spawn(
        &t.url,
        &t.schema,
        &[
            "--slots",
            "2",
            "--exec",
            &format!("step=sh -c '{}'", script.replace('\'', "'\\''")),
            "--exec",
            "bad=sh -c 'echo \"DROVE_ENQUEUE {not json\" >&2'",
        ],
    );
    w.ready(Duration::from_secs(10)).await;
    let first = NewJob::new("step")
        .with_payload(&serde_json::json!({ "step": 1 }))
        .unwrap()
        .with_backoff(50, 100);
    drove_queue::jobs_enqueue(conn.client(), &t.schema, &first)
        .await
        .unwrap();
    all_succeeded(&conn, 3, Duration::from_secs(30)).await;
    let rows = conn
        .client()
        .query(
            &t.schema.sql(
                "SELECT (payload->>'step')::int, attempt, started_at, finished_at
                 FROM {s}.jobs_finished ORDER BY id",
            ),
            &[],
        )
        .await
        .unwrap();
    let steps: Vec<(i32, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // Step 2 failed once: still exactly one step 3 (from the attempt that succeeded).
    assert_eq!(steps, vec![(1, 1), (2, 2), (3, 1)]);
    for pair in rows.windows(2) {
        let done: DateTime<Utc> = pair[0].get(3);
        let next: DateTime<Utc> = pair[1].get(2);
        assert!(
            next >= done,
            "a step started before its predecessor was recorded"
        );
    }

    let id = drove_queue::jobs_enqueue(conn.client(), &t.schema, &NewJob::new("bad"))
        .await
        .unwrap();
    let job = wait_until(Duration::from_secs(15), "bad job finished", || async {
        let j = drove_queue::job_get(conn.client(), &t.schema, id)
            .await
            .unwrap();
        (j.state != drove_queue::JobState::Available && j.state != drove_queue::JobState::Running)
            .then_some(j)
    })
    .await;
    assert_eq!(job.state, drove_queue::JobState::Dead);
    assert_eq!(job.attempt, 1, "a malformed follow-up is not retried");
    let (live, _, _, _) = totals(&conn).await;
    assert_eq!(live, 0, "something was enqueued by the bad job");
}

/// A job waiting for its kind's turn (per-kind limit) is still cancelled
/// within a second, not when the job ahead of it ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_waiting_for_its_kind_is_cancelled_at_once() {
    let (t, conn) = test_db().await;
    let w = WorkerProc::spawn(
        &t.url,
        &t.schema,
        &["--slots", "2", "--kind-concurrency", "sleep=1"],
    );
    w.ready(Duration::from_secs(10)).await;
    let jobs = vec![
        sleep_job("default", 20_000, 0),
        sleep_job("default", 20_000, 0),
    ];
    let ids = drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "both claimed", || async {
        let (a, _, _) = job_state(&conn, ids[0]).await;
        let (b, _, _) = job_state(&conn, ids[1]).await;
        (a == "running" && b == "running").then_some(())
    })
    .await;
    let asked = Instant::now();
    let outcome = drove_queue::job_cancel(conn.client(), &t.schema, ids[1])
        .await
        .unwrap();
    assert_eq!(outcome, drove_queue::Cancelled::Requested);
    wait_until(Duration::from_secs(10), "waiting job cancelled", || async {
        (job_state(&conn, ids[1]).await.0 == "cancelled").then_some(())
    })
    .await;
    let took = asked.elapsed();
    println!("FIGURE cancel of a job waiting for its kind: recorded after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(job_state(&conn, ids[0]).await.0, "running");
}

/// A success with follow-up jobs is recorded in a transaction on the
/// completer's connection, and behind a backlog the fetcher claims on that
/// connection too: never inside such a transaction. A claim rolled back
/// with a refused follow-up would leave jobs running here that the
/// database shows waiting: their completions fenced off, they would run
/// again (attempt 2).
#[tokio::test(flavor = "multi_thread")]
async fn claims_never_run_inside_a_follow_up_transaction() {
    let (t, conn) = test_db().await;
    // Every 20th job asks for a follow-up in a queue that does not exist:
    // its transaction is rolled back and the job dies.
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|i| NewJob::new(if i % 20 == 0 { "refused" } else { "noop" }))
        .collect();
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    // Small batches and a deep prefetch: two claims side by side all along.
    let w = WorkerProc::spawn(
        &t.url,
        &t.schema,
        &[
            "--slots",
            "4",
            "--max-batch",
            "20",
            "--prefetch-window",
            "10s",
            "--exec",
            r#"refused=sh -c 'echo "DROVE_ENQUEUE {\"kind\": \"x\", \"queue\": \"nowhere\"}" >&2'"#,
        ],
    );
    w.ready(Duration::from_secs(10)).await;
    wait_until(Duration::from_secs(120), "every job finished", || async {
        let (live, done, _, _) = totals(&conn).await;
        (live == 0 && done == 10_000).then_some(())
    })
    .await;
    let rows = conn
        .client()
        .query(
            &t.schema.sql(
                "SELECT kind, state::text, attempt, count(*) FROM {s}.jobs_finished
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            ),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, i32, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("noop".into(), "succeeded".into(), 1, 9_500),
            ("refused".into(), "dead".into(), 1, 500),
        ]
    );
    // A claim undone by a rollback shows here: its jobs' outcomes are
    // fenced off and the jobs claimed again.
    assert_eq!(w.metric("drove_worker_outcomes_rejected_total"), 0.0);
    assert_eq!(
        w.metric(r#"drove_worker_jobs_claimed_total{queue="default"}"#),
        10_000.0
    );
}
