//! drain: N no-op jobs enqueued in bulk, then W real `drove-worker`
//! processes started with the flags under test; timed from their start
//! until the last job is recorded succeeded.
//!
//! The database is watched every 50 ms for progress and for the end. The
//! figure itself is taken from the database's clocks: the time read just
//! before the workers start, and the latest `finished_at`; polling adds no
//! error to it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};

use super::report::{Figure, bar};
use super::target::Target;
use super::workers::{Spawner, WorkerProc, stop_all};

/// How often the database is read for progress.
pub const POLL: Duration = Duration::from_millis(50);
/// A drain that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);

/// What one drain did.
pub struct Drained {
    pub seconds: f64,
    /// CPU time of the database server while draining, if it runs here.
    pub db_cpu_s: Option<f64>,
    /// WAL written while draining, in bytes (the whole server's).
    pub wal_bytes: f64,
    /// CPU time of all the workers.
    pub worker_cpu_s: f64,
    /// Largest resident set of each worker while draining, in kB.
    pub peak_rss_kb: Vec<u64>,
    /// Most connections any one worker held, from pg_stat_activity.
    pub max_connections: i64,
}

pub async fn run(
    t: &Target,
    spawner: &Spawner,
    jobs: u64,
    workers: usize,
    args: &str,
    run: usize,
) -> Result<Figure> {
    t.reset().await?;
    super::enqueue::noop_bulk(t, jobs, false).await?;
    let d = drain(t, spawner, jobs, workers, args).await?;
    let per_job = |s: f64| s * 1e6 / jobs as f64;
    let mut f = Figure::new("drain", run, jobs, workers, d.seconds)
        .with_f("db_cpu_us_per_job", d.db_cpu_s.map(per_job))
        .with_f("wal_bytes_per_job", Some(d.wal_bytes / jobs as f64))
        .with_f("worker_cpu_us_per_job", Some(per_job(d.worker_cpu_s)))
        .with_f(
            "peak_rss_mb",
            d.peak_rss_kb.iter().max().map(|k| *k as f64 / 1024.0),
        )
        .with("max_conns_per_worker", d.max_connections);
    f.worker_args = Some(args.to_string());
    Ok(f)
}

/// Starts the workers on the jobs already enqueued and waits for all of
/// them to be recorded; verifies every job succeeded exactly once.
pub async fn drain(
    t: &Target,
    spawner: &Spawner,
    jobs: u64,
    workers: usize,
    args: &str,
) -> Result<Drained> {
    let argv: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    let c = t.conn.client();
    let row = c
        .query_one("SELECT clock_timestamp(), pg_current_wal_lsn()::text", &[])
        .await?;
    let started_db: DateTime<Utc> = row.get(0);
    let lsn0: String = row.get(1);
    let db_cpu0 = t.server.map(|s| s.cpu_seconds());
    let mut procs: Vec<WorkerProc> = Vec::with_capacity(workers);
    for i in 0..workers {
        procs.push(spawner.spawn(&argv, &format!("drain{i}"))?);
    }
    let watched = watch(t, &mut procs, jobs).await;
    // Read CPU before the workers exit (their backends exit with them).
    let db_cpu_s = t
        .server
        .map(|s| s.cpu_seconds())
        .zip(db_cpu0)
        .map(|(b, a)| b - a);
    let worker_cpu_s: f64 = procs
        .iter()
        .filter_map(|p| super::sys::cpu_seconds(p.pid()))
        .sum();
    let stopped = stop_all(procs).await;
    let (peak_rss_kb, max_connections) = watched?;
    stopped?;
    let wal_bytes: f64 = c
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
            &[&lsn0],
        )
        .await?
        .get(0);

    let row = c
        .query_one(
            &t.schema.sql(
                "SELECT (SELECT count(*) FROM {s}.jobs),
                        (SELECT count(*) FROM {s}.jobs_finished WHERE state = 'succeeded'),
                        (SELECT count(*) FROM {s}.jobs_finished),
                        (SELECT max(finished_at) FROM {s}.jobs_finished)",
            ),
            &[],
        )
        .await?;
    let (live, succeeded, finished): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if live != 0 || succeeded != jobs as i64 || finished != jobs as i64 {
        bail!(
            "drain incomplete: {succeeded} of {jobs} jobs succeeded, {finished} finished, {live} still live"
        );
    }
    let last: DateTime<Utc> = row.get(3);
    let seconds = (last - started_db).as_seconds_f64();
    Ok(Drained {
        seconds,
        db_cpu_s,
        wal_bytes,
        worker_cpu_s,
        peak_rss_kb,
        max_connections,
    })
}

/// Polls until no job is live; samples the workers' memory and connections.
///
/// The poll must cost the database little, since it shares the machine
/// with what it measures: it reads the highest id recorded finished (the
/// right edges of `jobs_done`'s primary key and of `jobs_succeeded`'s
/// bucket index), and only once that reaches the last job enqueued does it
/// look for live jobs, from the lowest id seen,
/// which steps over the dead entries that claims leave in `jobs`' primary
/// key (3.7 ms a poll in the middle of a drain, 7% of a core, when it was
/// the poll throughout).
async fn watch(t: &Target, procs: &mut [WorkerProc], jobs: u64) -> Result<(Vec<u64>, i64)> {
    let c = t.conn.client();
    let min_sql = t.schema.sql("SELECT min(id) FROM {s}.jobs WHERE id >= $1");
    let done_sql = t.schema.sql("SELECT {s}.jobs_finished_max_id()");
    let row = c
        .query_one(&t.schema.sql("SELECT min(id), max(id) FROM {s}.jobs"), &[])
        .await?;
    let (first, last): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
    let (first, last) = (first.unwrap_or(0), last.unwrap_or(0));
    let pids: Vec<u32> = procs.iter().map(|p| p.pid()).collect();
    let conns_sql = "SELECT application_name, count(*) FROM pg_stat_activity
                     WHERE application_name LIKE 'drove-worker %' GROUP BY 1";
    let progress = bar(jobs, "drain");
    let mut peak = vec![0u64; procs.len()];
    let mut max_conns = 0i64;
    let mut last_change = Instant::now();
    let mut seen = None;
    // The lowest id that may still be live: the scan for live jobs starts
    // there, not at the dead entries of those already done.
    let mut low = first;
    let mut tick = 0u64;
    loop {
        for (i, pid) in pids.iter().enumerate() {
            if let Some(kb) = super::sys::status_kb(*pid, "VmHWM") {
                peak[i] = peak[i].max(kb);
            }
        }
        let done: Option<i64> = c.query_one(&done_sql, &[]).await?.get(0);
        let done = done.unwrap_or(0);
        // Progress: claims go in id order, so the highest id finished is
        // near the number done; near the end, the lowest id still live.
        let now = if done < last {
            done
        } else {
            let min: Option<i64> = c.query_one(&min_sql, &[&low]).await?.get(0);
            let Some(min) = min else { break };
            low = min;
            min
        };
        progress.set_position((now - first).max(0) as u64);
        if seen != Some(now) {
            seen = Some(now);
            last_change = Instant::now();
        } else if last_change.elapsed() > STALL {
            bail!("drain stalled: no progress for {STALL:?}");
        }
        if tick.is_multiple_of(4) {
            for r in c.query(conns_sql, &[]).await? {
                max_conns = max_conns.max(r.get::<_, i64>(1));
            }
        }
        tick += 1;
        for p in procs.iter_mut() {
            p.check_running()?;
        }
        tokio::time::sleep(POLL).await;
    }
    progress.finish_and_clear();
    Ok((peak, max_conns))
}
