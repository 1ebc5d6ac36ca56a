//! latency: idle workers; jobs enqueued one at a time (each its own
//! transaction) at a steady pace; enqueue-to-start is the job's
//! `started_at` (the claim) minus its `created_at` (the enqueue), both
//! from the database's clock. It includes the enqueue's commit, the
//! NOTIFY, the worker waking and its claim statement.
//!
//! The enqueue's own durable commit (a WAL flush, slow on a shared disk) is
//! not drove's to shorten, so it is also reported apart: each enqueue call
//! is timed, and `after_commit` is enqueue-to-start minus that call, i.e.
//! from the enqueue's commit to the claim (NOTIFY, wake-up, claim), within
//! a network round trip. And before the jobs, the same number of durable
//! one-row inserts into a bare table at the same pace, with the workers
//! idle, give this machine's floor for one commit at that pace
//! (`commit_floor_p50/p99`): an idle machine wakes slower than a busy one.

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
    let Measured {
        mut lat,
        mut enqueue,
        mut after_commit,
        mut floor,
    } = measured?;
    stopped?;
    let mut f = Figure::new("latency", run, jobs, workers, 0.0)
        .with("rate_per_s", rate)
        .with_f("p50_ms", percentile(&mut lat, 0.50))
        .with_f("p90_ms", percentile(&mut lat, 0.90))
        .with_f("p99_ms", percentile(&mut lat, 0.99))
        .with_f("max_ms", percentile(&mut lat, 1.0))
        .with_f("enqueue_call_p50_ms", percentile(&mut enqueue, 0.50))
        .with_f("enqueue_call_p99_ms", percentile(&mut enqueue, 0.99))
        .with_f("after_commit_p50_ms", percentile(&mut after_commit, 0.50))
        .with_f("after_commit_p99_ms", percentile(&mut after_commit, 0.99))
        .with_f("commit_floor_p50_ms", percentile(&mut floor, 0.50))
        .with_f("commit_floor_p99_ms", percentile(&mut floor, 0.99));
    f.seconds = 0.0;
    f.jobs_per_s = rate;
    f.worker_args = Some(args.to_string());
    Ok(f)
}

/// Per job, in ms: enqueue-to-start, the enqueue call, and the difference;
/// and the paced one-row commits.
struct Measured {
    lat: Vec<f64>,
    enqueue: Vec<f64>,
    after_commit: Vec<f64>,
    floor: Vec<f64>,
}

async fn measure(t: &Target, procs: &mut [WorkerProc], jobs: u64, rate: f64) -> Result<Measured> {
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

    let pace = Duration::from_secs_f64(1.0 / rate);
    let floor = commit_floor(t, jobs, pace).await?;

    let progress = bar(jobs, "latency");
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut calls = std::collections::HashMap::with_capacity(jobs as usize);
    for _ in 0..jobs {
        tick.tick().await;
        let t0 = Instant::now();
        let id = drove_queue::jobs_enqueue(c, &t.schema, &job).await?;
        calls.insert(id, t0.elapsed().as_secs_f64() * 1000.0);
        progress.inc(1);
    }
    progress.finish_and_clear();
    wait_empty(t, procs).await?;
    let rows = c
        .query(
            &t.schema.sql(
                "SELECT id, extract(epoch FROM started_at - created_at)::float8 * 1000
                 FROM {s}.jobs_finished WHERE id > $1 AND bucket >= $1 >> 10 AND state = 'succeeded'",
            ),
            &[&warm],
        )
        .await?;
    if rows.len() as u64 != jobs {
        bail!("latency: {} of {jobs} jobs succeeded", rows.len());
    }
    let mut m = Measured {
        lat: Vec::with_capacity(rows.len()),
        enqueue: Vec::with_capacity(rows.len()),
        after_commit: Vec::with_capacity(rows.len()),
        floor,
    };
    for r in &rows {
        let (id, lat): (i64, f64) = (r.get(0), r.get(1));
        let call = calls.get(&id).copied().unwrap_or(0.0);
        m.lat.push(lat);
        m.enqueue.push(call);
        m.after_commit.push((lat - call).max(0.0));
    }
    Ok(m)
}

/// `n` durable one-row inserts into a bare table, one every `pace`; each
/// call's time in ms.
async fn commit_floor(t: &Target, n: u64, pace: Duration) -> Result<Vec<f64>> {
    let commit = super::enqueue::CommitFloor::create(t).await?;
    let progress = bar(n, "commit floor");
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut floor = Vec::with_capacity(n as usize);
    for _ in 0..n {
        tick.tick().await;
        floor.push(commit.time().await?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    commit.drop_table().await?;
    Ok(floor)
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
