//! The `local` backend: the controller grows a group of worker processes
//! with the backlog, then shrinks it (idle workers only) down to zero.

mod common;

use std::time::{Duration, Instant};

use common::*;
use drove_queue::NewJob;

#[tokio::test(flavor = "multi_thread")]
async fn local_group_grows_with_the_backlog_and_shrinks_to_zero() {
    let (t, conn) = test_db().await;
    let s = ServeProc::spawn(
        &t.url,
        &t.schema,
        &[
            "--scaler",
            "local",
            "--max-workers",
            "3",
            "--target-backlog",
            "1",
            "--local-worker-args",
            "--slots 1",
            "--scale-in-after",
            "2s",
            "--scale-to-zero-after",
            "3s",
            "--stats-interval",
            "250ms",
            "--local-worker-bin",
            worker_bin().to_str().unwrap(),
        ],
    );
    s.ready(Duration::from_secs(15)).await;
    assert_eq!(s.metric("drove_workers"), 0.0, "starts with no workers");
    let jobs: Vec<NewJob> = (0..6)
        .map(|_| {
            NewJob::new("sleep")
                .with_payload(&serde_json::json!({"ms": 1500}))
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    wait_until(Duration::from_secs(20), "three live workers", || async {
        (s.metric("drove_workers") == 3.0).then_some(())
    })
    .await;
    println!(
        "FIGURE local_backlog_to_3_live_workers_s={:.2}",
        started.elapsed().as_secs_f64()
    );
    wait_until(Duration::from_secs(60), "all jobs done", || async {
        let (live, _, _, done) = totals(&conn).await;
        (live == 0 && done == 6).then_some(())
    })
    .await;
    wait_until(Duration::from_secs(30), "group back to zero", || async {
        let registry = drove_queue::registry::workers_list(conn.client(), &t.schema)
            .await
            .unwrap();
        (registry.is_empty() && s.metric("drove_scaling_desired_workers") == 0.0).then_some(())
    })
    .await;
    assert_eq!(
        totals(&conn).await,
        (0, 6, 6, 6),
        "every job succeeded once"
    );
    assert!(
        s.log_text().contains("started 3 worker(s)"),
        "{}",
        s.log_text()
    );
}
