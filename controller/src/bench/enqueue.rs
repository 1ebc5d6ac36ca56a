//! enqueue: bulk enqueue throughput (no-op jobs through drove's batch
//! enqueue, in chunks), and the latency of enqueueing one job at a time
//! (each its own transaction, so each waits for its commit).

use std::time::{Duration, Instant};

use anyhow::Result;
use drove_queue::NewJob;

use super::report::{Figure, bar, percentile};
use super::target::Target;

/// Jobs per bulk enqueue statement.
pub const CHUNK: usize = 10_000;

pub async fn run(t: &Target, jobs: u64, singles: u64, run: usize) -> Result<Vec<Figure>> {
    t.reset().await?;
    let took = noop_bulk(t, jobs, true).await?;
    let bulk = Figure::new("enqueue", run, jobs, 0, took.as_secs_f64()).with("chunk", CHUNK);

    t.reset().await?;
    let job = NewJob::new("noop");
    let progress = bar(singles, "enqueue 1 by 1");
    let mut lat = Vec::with_capacity(singles as usize);
    let started = Instant::now();
    for _ in 0..singles {
        let t0 = Instant::now();
        drove_queue::jobs_enqueue(t.conn.client(), &t.schema, &job).await?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let single = Figure::new(
        "enqueue_one",
        run,
        singles,
        0,
        started.elapsed().as_secs_f64(),
    )
    .with_f("p50_ms", percentile(&mut lat, 0.50))
    .with_f("p99_ms", percentile(&mut lat, 0.99));
    t.reset().await?;
    Ok(vec![bulk, single])
}

/// Enqueues `n` no-op jobs in bulk, `CHUNK` per statement; returns the time taken.
pub async fn noop_bulk(t: &Target, n: u64, show: bool) -> Result<Duration> {
    let chunk = vec![NewJob::new("noop"); CHUNK];
    let progress = if show {
        bar(n, "enqueue bulk")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(CHUNK);
        drove_queue::jobs_enqueue_many(t.conn.client(), &t.schema, &chunk[..k]).await?;
        left -= k;
        progress.inc(k as u64);
    }
    progress.finish_and_clear();
    Ok(started.elapsed())
}
