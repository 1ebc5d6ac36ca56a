//! Delayed jobs start at their run_at (sub-second), not at the workers'
//! next poll: the controller's scheduler wakes the workers.

mod common;

use std::time::Duration;

use common::*;
use drove_queue::NewJob;

#[tokio::test(flavor = "multi_thread")]
async fn delayed_jobs_start_within_a_second_of_their_run_at() {
    let (t, conn) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &[]);
    s.ready(Duration::from_secs(15)).await;
    // A minute-long fallback poll: only a wake-up can start the jobs in time.
    let w = WorkerProc::spawn(&t.url, &t.schema, &["--poll-interval", "60s"]);
    w.ready(Duration::from_secs(10)).await;
    let jobs: Vec<NewJob> = [1500u64, 2500, 3500]
        .iter()
        .map(|ms| NewJob::new("noop").with_delay(Duration::from_millis(*ms)))
        .collect();
    let ids = drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    for id in &ids {
        wait_until(Duration::from_secs(20), "delayed job done", || async {
            (job_state(&conn, *id).await.0 == "succeeded").then_some(())
        })
        .await;
    }
    let mut late = Vec::new();
    for id in &ids {
        let j = drove_queue::job_get(conn.client(), &t.schema, *id)
            .await
            .unwrap();
        let started = j.started_at.unwrap();
        assert!(started >= j.run_at, "job {id} started before its run_at");
        late.push((started - j.run_at).num_milliseconds());
    }
    println!("FIGURE delayed_start_late_ms={late:?}");
    assert!(
        late.iter().all(|ms| *ms < 3000),
        "started {late:?} ms after run_at; the fallback poll is 60 s"
    );
}
