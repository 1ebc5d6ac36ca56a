//! footprint: how small a worker is.
//!
//! - start to ready: from spawning `drove-worker` (default flags) to its
//!   first 200 on `/readyz` (polled every millisecond); it includes
//!   connecting, the schema check and registering. Several starts, median.
//! - idle memory: resident set of a worker idle for a few seconds.
//! - memory under load with 64 slots: peak resident set (VmHWM) while it
//!   drains no-op jobs, and while 64 `sleep` jobs run at once.

use std::time::Duration;

use anyhow::Result;
use drove_queue::NewJob;

use super::report::{Figure, median};
use super::sys;
use super::target::Target;
use super::workers::Spawner;

/// Starts measured for start-to-ready.
const STARTS: usize = 9;

pub async fn run(t: &Target, spawner: &Spawner, jobs: u64, run: usize) -> Result<Vec<Figure>> {
    t.reset().await?;
    let mut out = Vec::new();

    let mut ready_ms = Vec::with_capacity(STARTS);
    let mut idle_rss = Vec::new();
    for i in 0..STARTS {
        let mut w = spawner.spawn(&[], &format!("start{i}"))?;
        let took = w
            .ready(Duration::from_secs(30), Duration::from_millis(1))
            .await?;
        ready_ms.push(took.as_secs_f64() * 1000.0);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            idle_rss.push(sys::status_kb(w.pid(), "VmRSS").unwrap_or(0) as f64 / 1024.0);
        }
        w.stop(Duration::from_secs(30)).await?;
    }
    let mut sorted = ready_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let mut f = Figure::new("footprint_start", run, 0, STARTS, 0.0)
        .with_f("start_to_ready_p50_ms", median(&mut ready_ms))
        .with_f("start_to_ready_max_ms", sorted.last().copied())
        .with_f("idle_rss_mb", idle_rss.first().copied());
    f.jobs_per_s = 0.0;
    out.push(f);

    // 64 slots draining no-op jobs (the prefetch is at its largest then).
    t.reset().await?;
    super::enqueue::noop_bulk(t, jobs, false).await?;
    let d = super::drain::drain(t, spawner, jobs, 1, "--slots 64").await?;
    let mut f = Figure::new("footprint_64_slots_noop", run, jobs, 1, d.seconds)
        .with_f(
            "peak_rss_mb",
            d.peak_rss_kb.iter().max().map(|k| *k as f64 / 1024.0),
        )
        .with("max_conns_per_worker", d.max_connections);
    f.worker_args = Some("--slots 64".into());
    out.push(f);

    // 64 slots all busy: sleep jobs of 50 ms.
    t.reset().await?;
    let n = 64 * 40;
    let job = NewJob::new("sleep").with_payload(&serde_json::json!({"ms": 50}))?;
    let chunk = vec![job; n];
    drove_queue::jobs_enqueue_many(t.conn.client(), &t.schema, &chunk).await?;
    let d = super::drain::drain(t, spawner, n as u64, 1, "--slots 64").await?;
    let mut f = Figure::new("footprint_64_slots_busy", run, n as u64, 1, d.seconds)
        .with_f(
            "peak_rss_mb",
            d.peak_rss_kb.iter().max().map(|k| *k as f64 / 1024.0),
        )
        .with("max_conns_per_worker", d.max_connections)
        .with("job", "sleep 50 ms");
    f.worker_args = Some("--slots 64".into());
    out.push(f);
    Ok(out)
}
