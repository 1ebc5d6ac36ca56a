//! latency: idle workers; jobs enqueued one at a time (each its own
//! transaction) at a steady pace; enqueue-to-start is the job's
//! `started_at` (the claim) minus its `created_at` (the enqueue), both
//! from the database's clock. It includes the enqueue's commit, the
//! NOTIFY, the worker waking and its claim statement.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use drove_queue::NewJob;

use super::report::{Figure, bar, percentile};
use super::target::Target;
use super::workers::{Spawner, WorkerProc, stop_all};

pub async fn run(
    t: &Target,
    spawner: &Spawner,
    jobs: u64,
    rate: f64,
    workers: usize,
    args: &str,
    run: usize,
) -> Result<Figure> {
    t.reset().await?;
    let argv: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    let mut procs: Vec<WorkerProc> = Vec::new();
    for i in 0..workers {
        procs.push(spawner.spawn(&argv, &format!("latency{i}"))?);
    }
    let measured = measure(t, &mut procs, jobs, rate).await;
    let stopped = stop_all(procs).await;
    let mut lat = measured?;
    stopped?;
    let mut f = Figure::new("latency", run, jobs, workers, 0.0)
        .with("rate_per_s", rate)
        .with_f("p50_ms", percentile(&mut lat, 0.50))
        .with_f("p90_ms", percentile(&mut lat, 0.90))
        .with_f("p99_ms", percentile(&mut lat, 0.99))
        .with_f("max_ms", percentile(&mut lat, 1.0));
    f.seconds = 0.0;
    f.jobs_per_s = rate;
    f.worker_args = Some(args.to_string());
    Ok(f)
}

async fn measure(t: &Target, procs: &mut [WorkerProc], jobs: u64, rate: f64) -> Result<Vec<f64>> {
    for p in procs.iter_mut() {
        p.ready(Duration::from_secs(30), Duration::from_millis(20))
            .await?;
    }
    let c = t.conn.client();
    let job = NewJob::new("noop");
    // One job first: every worker is listening once it has run.
    let warm = drove_queue::jobs_enqueue(c, &t.schema, &job).await?;
    wait_empty(t, procs).await?;
    // Let the workers settle into idle (prefetch estimate, heartbeats).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let progress = bar(jobs, "latency");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..jobs {
        tick.tick().await;
        drove_queue::jobs_enqueue(c, &t.schema, &job).await?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    wait_empty(t, procs).await?;
    let rows = c
        .query(
            &t.schema.sql(
                "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000
                 FROM {s}.jobs_done WHERE id > $1 AND state = 'succeeded'",
            ),
            &[&warm],
        )
        .await?;
    if rows.len() as u64 != jobs {
        bail!("latency: {} of {jobs} jobs succeeded", rows.len());
    }
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn wait_empty(t: &Target, procs: &mut [WorkerProc]) -> Result<()> {
    let sql = t.schema.sql("SELECT EXISTS (SELECT 1 FROM {s}.jobs)");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live: bool = t.conn.client().query_one(&sql, &[]).await?.get(0);
        if !live {
            return Ok(());
        }
        for p in procs.iter_mut() {
            p.check_running()?;
        }
        if Instant::now() > deadline {
            bail!("jobs still waiting after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
