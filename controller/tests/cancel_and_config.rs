//! Cancelling a running job stops it on its worker within seconds; serve's
//! configuration errors name the bad value; the worker's runtime threads.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use drove_queue::NewJob;

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_exec_job_kills_it_within_seconds_and_it_is_not_retried() {
    let (t, conn) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &[]);
    s.ready(Duration::from_secs(15)).await;
    let dir = std::env::temp_dir().join(format!("drove-cancel-{}", t.schema.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("pid");
    let cmd = format!(
        "long=/bin/sh -c 'echo $$ > {}; sleep 300'",
        pidfile.display()
    );
    let w = WorkerProc::spawn(&t.url, &t.schema, &["--exec", &cmd]);
    w.ready(Duration::from_secs(10)).await;
    let id = drove_queue::jobs_enqueue(conn.client(), &t.schema, &NewJob::new("long"))
        .await
        .unwrap();
    let pid: i32 = wait_until(
        Duration::from_secs(10),
        "the command is running",
        || async {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse().ok())
        },
    )
    .await;

    let asked = Instant::now();
    let r = api()
        .post(s.url(&format!("/v1/jobs/{id}/cancel")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["result"], "cancel_requested");
    wait_until(Duration::from_secs(10), "job cancelled", || async {
        (job_state(&conn, id).await.0 == "cancelled").then_some(())
    })
    .await;
    let took = asked.elapsed();
    println!(
        "FIGURE cancel_running_to_recorded_s={:.2}",
        took.as_secs_f64()
    );
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(
        !alive || is_zombie(pid),
        "the job's process {pid} was killed"
    );
    let job = drove_queue::job_get(conn.client(), &t.schema, id)
        .await
        .unwrap();
    assert_eq!(job.attempt, 1, "a cancelled job is not retried");
    assert_eq!(
        w.metric("drove_worker_jobs_cancelled_total{kind=\"long\",queue=\"default\"}"),
        1.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[test]
fn serve_config_errors_name_the_bad_value() {
    let cases: &[(&[&str], &str)] = &[
        (&["--target-backlog", "soon"], "soon"),
        (
            &["--scaler", "gcp-mig"],
            "--scaler gcp-mig needs --gcp-region or --gcp-zone",
        ),
        (
            &["--scaler", "gcp-mig", "--gcp-zone", "z"],
            "--scaler gcp-mig needs --gcp-project",
        ),
        (
            &[
                "--scaler",
                "gcp-mig",
                "--gcp-project",
                "p",
                "--gcp-mig",
                "g",
            ],
            "--gcp-region or --gcp-zone",
        ),
        (
            &["--min-workers", "5", "--max-workers", "2"],
            "--min-workers 5 is more than --max-workers 2",
        ),
        (&["--api-token", "short"], "at least 16 characters"),
        (&["--scaler", "kubernetes"], "kubernetes"),
        (&["--stats-interval", "sometimes"], "sometimes"),
        (
            &[
                "--scaler",
                "gcp-metric",
                "--gcp-project",
                "p",
                "--gcp-mig",
                "g",
                "--metric-interval",
                "2s",
                "--gcp-endpoint",
                "http://127.0.0.1:9",
                "--gcp-anonymous",
            ],
            "at least 10s",
        ),
    ];
    let t = drove_queue::testing::test_url();
    for (args, expect) in cases {
        let out = Command::new(drove_bin())
            .args([
                "--database-url",
                &t,
                "--schema",
                "never_used",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cron_schedules_from_the_cli_and_from_a_file() {
    let (t, _conn) = test_db().await;
    let run = |args: &[&str]| {
        let out = Command::new(drove_bin())
            .args([
                "--database-url",
                &t.url,
                "--schema",
                t.schema.name(),
                "cron",
            ])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "set",
        "hourly",
        "--schedule",
        "0 * * * *",
        "--kind",
        "report",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("hourly fires next at") && out.contains(":00:00 UTC"),
        "{out}"
    );
    let (code, _, err) = run(&["set", "bad", "--schedule", "99 * * * *", "--kind", "report"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("99 * * * *"), "{err}");
    let file = std::env::temp_dir().join(format!("{}-cron.json", t.schema.name()));
    std::fs::write(&file, r#"{"nightly": {"schedule": "30 2 * * *", "timezone": "Europe/Paris", "kind": "cleanup", "catch_up": "once"}}"#).unwrap();
    let s = ServeProc::spawn(&t.url, &t.schema, &["--cron-file", file.to_str().unwrap()]);
    s.ready(Duration::from_secs(15)).await;
    let (code, out, _) = run(&["list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("hourly") && out.contains("nightly") && out.contains("Europe/Paris"),
        "{out}"
    );
    let (code, _, _) = run(&["delete", "hourly"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = run(&["delete", "hourly"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no cron schedule named \"hourly\""), "{err}");
    let _ = std::fs::remove_file(file);
}

/// `--runtime-threads`: the worker's async runtime has one thread by
/// default, as many as asked, or one per CPU with 0; on each it runs jobs.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_threads_sets_the_workers_runtime_threads() {
    let (t, conn) = test_db().await;
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (flag, want) in [(None, 1), (Some("3"), 3), (Some("0"), cpus)] {
        let extra: Vec<&str> = match flag {
            Some(n) => vec!["--runtime-threads", n],
            None => vec![],
        };
        let w = WorkerProc::spawn(&t.url, &t.schema, &extra);
        w.ready(Duration::from_secs(10)).await;
        // Runtime threads are named so (tokio 1.50 and later); blocking-pool
        // threads share the name, but nothing here starts one.
        let threads = std::fs::read_dir(format!("/proc/{}/task", w.pid()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "tokio-rt-worker")
            .count();
        assert_eq!(threads, want, "--runtime-threads {flag:?}");
        let id = drove_queue::jobs_enqueue(conn.client(), &t.schema, &NewJob::new("noop"))
            .await
            .unwrap();
        wait_until(Duration::from_secs(10), "the job succeeded", || async {
            let job = drove_queue::job_get(conn.client(), &t.schema, id)
                .await
                .ok()?;
            (job.state == drove_queue::JobState::Succeeded).then_some(())
        })
        .await;
    }
}
