//! Several controllers side by side: one leader at a time, failover within
//! seconds when the leader is killed, and cron firing each time exactly once,
//! including across a restart of every controller.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

async fn leaders(ctrls: &[ServeProc]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, c) in ctrls.iter().enumerate() {
        if c.metric("drove_controller_leader") == 1.0 {
            out.push(i);
        }
    }
    out
}

/// Scheduled times of the jobs a cron schedule enqueued, in seconds.
async fn fired(conn: &drove_queue::Conn) -> Vec<i64> {
    conn.client()
        .query(
            &conn.schema().sql(
                "SELECT EXTRACT(EPOCH FROM run_at)::int8 FROM (
                     SELECT run_at FROM {s}.jobs WHERE kind = 'tick'
                     UNION ALL SELECT run_at FROM {s}.jobs_finished WHERE kind = 'tick') x ORDER BY 1",
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_fails_over_within_seconds_and_cron_fires_once_per_time() {
    let (t, conn) = test_db().await;
    let extra = ["--stats-interval", "500ms"];
    let mut ctrls: Vec<ServeProc> = (0..3)
        .map(|_| ServeProc::spawn(&t.url, &t.schema, &extra))
        .collect();
    for c in &ctrls {
        c.ready(Duration::from_secs(15)).await;
    }
    let first = wait_until(Duration::from_secs(10), "a leader", || async {
        let l = leaders(&ctrls).await;
        (l.len() == 1).then(|| l[0])
    })
    .await;

    // A schedule firing every second (6-field crontab: seconds first).
    let r = api()
        .put(ctrls[0].url("/v1/cron/every-second"))
        .bearer_auth(TOKEN)
        .json(&json!({"schedule": "* * * * * *", "kind": "tick"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Kill the leader: another takes over.
    ctrls[first].kill();
    let killed = Instant::now();
    let second = wait_until(Duration::from_secs(20), "a new leader", || async {
        let l = leaders(&ctrls).await;
        (l.len() == 1 && l[0] != first).then(|| l[0])
    })
    .await;
    let failover = killed.elapsed();
    println!("FIGURE leader_failover_s={:.2}", failover.as_secs_f64());
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Stop every controller for a while, then start them again: the times
    // missed meanwhile still fire (within the late tolerance), once each.
    for c in &mut ctrls {
        c.kill();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted: Vec<ServeProc> = (0..2)
        .map(|_| ServeProc::spawn(&t.url, &t.schema, &extra))
        .collect();
    for c in &restarted {
        c.ready(Duration::from_secs(15)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        leaders(&restarted).await.len(),
        1,
        "exactly one leader after the restart"
    );
    let _ = second;

    let times = fired(&conn).await;
    let distinct: BTreeSet<i64> = times.iter().copied().collect();
    assert_eq!(times.len(), distinct.len(), "a time fired twice: {times:?}");
    let (lo, hi) = (*distinct.first().unwrap(), *distinct.last().unwrap());
    let missing: Vec<i64> = (lo..=hi).filter(|s| !distinct.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "times never fired: {missing:?} (fired {times:?})"
    );
    assert!(
        hi - lo >= 10,
        "covered {} seconds across failover and restart",
        hi - lo
    );
    println!(
        "FIGURE cron_times_fired={} duplicates=0 missed=0",
        times.len()
    );
}
