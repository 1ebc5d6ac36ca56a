//! Bad input gets a clear error and loses nothing: malformed payloads,
//! unknown kinds and queues, wrong or unreachable databases, a database
//! that restarts under running workers.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use drove_controller::pgtemp::{PgTemp, PgTempOptions};
use drove_queue::NewJob;

fn drove(url: &str, schema: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(drove_bin())
        .args(["--database-url", url, "--schema", schema])
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_rejects_malformed_payloads_and_unknown_queues_and_inserts_nothing() {
    let (t, conn) = test_db().await;
    let s = t.schema.name();
    let (code, _, err) = drove(
        &t.url,
        s,
        &["jobs", "add", "--kind", "spin", "--payload", "{\"ms\": 5"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid payload") && err.contains("not valid JSON"),
        "{err}"
    );
    let (code, _, err) = drove(&t.url, s, &["add", "10", "3", "--queue", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown queue \"nope\"") && err.contains("drove queues create nope"),
        "{err}"
    );
    let (code, _, err) = drove(
        &t.url,
        s,
        &["jobs", "add", "--kind", "x", "--queue", "white space"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("invalid queue name"), "{err}");
    assert_eq!(totals(&conn).await, (0, 0, 0, 0), "nothing was enqueued");
    let (code, _, err) = drove(&t.url, s, &["jobs", "show", "424242"]);
    assert_eq!(code, 1);
    assert!(err.contains("job 424242 not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_buries_a_bad_payload_at_once_and_an_unknown_kind_after_its_attempts() {
    let (t, conn) = test_db().await;
    let w = WorkerProc::spawn(&t.url, &t.schema, &[]);
    w.ready(Duration::from_secs(10)).await;
    let bad = NewJob::new("spin")
        .with_payload(&serde_json::json!({"ms": "lots"}))
        .unwrap();
    let unknown = NewJob::new("transcode")
        .with_max_attempts(2)
        .with_backoff(50, 100);
    let ids = drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &[bad, unknown])
        .await
        .unwrap();
    for id in &ids {
        wait_until(Duration::from_secs(20), "job dead", || async {
            (job_state(&conn, *id).await.0 == "dead").then_some(())
        })
        .await;
    }
    let bad = drove_queue::job_get(conn.client(), &t.schema, ids[0])
        .await
        .unwrap();
    assert_eq!(bad.attempt, 1, "a malformed payload is not retried");
    assert!(
        bad.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid payload for spin"),
        "{}",
        bad.errors
    );
    let unknown = drove_queue::job_get(conn.client(), &t.schema, ids[1])
        .await
        .unwrap();
    assert_eq!(unknown.attempt, 2);
    assert!(
        unknown.errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("no handler for job kind \"transcode\"")
    );
    assert!(
        w.get("/healthz").is_some_and(|r| r.0 == 200),
        "the worker is unharmed"
    );
    // Both can be retried by hand once fixed.
    let (code, out, _) = drove(&t.url, t.schema.name(), &["jobs", "retry", "--dead"]);
    assert_eq!(code, 0);
    assert!(out.contains("2 dead jobs are available again"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_unreachable_database_is_a_clear_error_not_a_panic() {
    let cases: &[(&str, &str)] = &[
        ("not a url at all", "invalid database URL"),
        (
            "postgres://u@127.0.0.1:1/db?sslmode=disable",
            "database unreachable",
        ),
        (
            "postgres://u@no-such-host.invalid/db?sslmode=disable",
            "cannot resolve database host",
        ),
    ];
    for (url, expect) in cases {
        let started = Instant::now();
        let out = Command::new(worker_bin())
            .args([
                "--database-url",
                url,
                "--http",
                "127.0.0.1:0",
                "--startup-timeout",
                "1s",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {err}");
        assert!(err.contains(expect), "{url}: expected {expect:?} in {err}");
        assert!(!err.contains("panicked"), "{url}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{url}: took {:?}",
            started.elapsed()
        );
    }
    // The server answers but refuses: not retried, fails at once.
    let t = drove_queue::testing::TestDb::new().await;
    let wrong_db = t.url.replace("/postgres?", "/no_such_database?");
    let out = Command::new(worker_bin())
        .args([
            "--database-url",
            &wrong_db,
            "--http",
            "127.0.0.1:0",
            "--startup-timeout",
            "30s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("no_such_database"), "{err}");
    // An unmigrated schema says what to do.
    let (code, _, err) = drove(&t.url, "never_migrated", &["stats"]);
    assert_eq!(code, 1);
    assert!(err.contains("drove migrate"), "{err}");
}

/// A schema migrated by a newer release: the binaries work on it when its
/// newer migrations allow older builds (a rolling update migrates first),
/// and say to upgrade when they do not; `drove migrate` leaves it alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_schema_is_used_or_refused_as_its_migrations_say() {
    let t = drove_queue::testing::TestDb::new().await;
    let schema = t.schema.name().to_string();
    let c = t.conn().await;
    let next = drove_queue::SCHEMA_VERSION + 1;
    let add = |version: i32, oldest_reader: i32| {
        let sql = t.schema.sql(
            "INSERT INTO {s}.schema_migrations (version, name, oldest_reader) VALUES ($1, 'from a newer release', $2)",
        );
        let client = c.client();
        async move {
            client
                .execute(&sql, &[&version, &oldest_reader])
                .await
                .unwrap()
        }
    };
    add(next, drove_queue::SCHEMA_VERSION).await;

    let (code, out, err) = drove(&t.url, &schema, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("version {next}, newer than")),
        "{out}"
    );
    let (code, out, err) = drove(&t.url, &schema, &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("default"), "{out}");
    let w = WorkerProc::spawn(&t.url, &t.schema, &[]);
    w.ready(Duration::from_secs(10)).await;
    drop(w);

    add(next + 1, next + 1).await;
    let (code, _, err) = drove(&t.url, &schema, &["stats"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("version {}", next + 1)) && err.contains("upgrade it"),
        "{err}"
    );
    let out = Command::new(worker_bin())
        .args(["--database-url", &t.url, "--schema", &schema])
        .args(["--http", "127.0.0.1:0", "--startup-timeout", "5s"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("upgrade it"), "{err}");
}

/// The database restarts under running workers: they recover by
/// themselves and every job completes exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn workers_recover_from_a_postgres_restart() {
    let pg = tokio::task::spawn_blocking(|| PgTemp::start(PgTempOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let url = pg.url();
    let schema = drove_queue::Schema::new("restart").unwrap();
    let (code, _, err) = drove(&url, "restart", &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let db = drove_queue::DbConfig::parse(&url).unwrap();
    let conn = drove_queue::Conn::connect(&db, &schema).await.unwrap();
    let jobs: Vec<NewJob> = (0..400)
        .map(|_| {
            NewJob::new("sleep")
                .with_payload(&serde_json::json!({"ms": 20}))
                .unwrap()
        })
        .collect();
    drove_queue::jobs_enqueue_many(conn.client(), &schema, &jobs)
        .await
        .unwrap();
    drop(conn);
    let flags = ["--slots", "2", "--lease-ttl", "4s"];
    let workers: Vec<WorkerProc> = (0..2)
        .map(|_| WorkerProc::spawn(&url, &schema, &flags))
        .collect();
    for w in &workers {
        w.ready(Duration::from_secs(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| pg.restart()).unwrap();

    let conn = drove_queue::Conn::connect(&db, &schema).await.unwrap();
    // More work after the restart, to show the workers claim again.
    drove_queue::jobs_enqueue_many(conn.client(), &schema, &jobs[..100])
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(90),
        "all 500 jobs done after the restart",
        || async {
            let (live, _, _, done) = totals(&conn).await;
            (live == 0 && done == 500).then_some(())
        },
    )
    .await;
    assert_eq!(totals(&conn).await, (0, 500, 500, 500));
    for w in &workers {
        assert_eq!(
            w.get("/readyz").map(|r| r.0),
            Some(200),
            "worker recovered: {}",
            w.log_text()
        );
        assert!(
            w.metric("drove_worker_jobs_succeeded_total{kind=\"sleep\",queue=\"default\"}") > 0.0
        );
    }
}
