//! enqueue: bulk enqueue throughput (no-op jobs through drove's batch
//! enqueue, in chunks of `CHUNK`, on one or more connections side by
//! side), and the latency of enqueueing one job at a time (each its own
//! transaction, so each waits for its commit).
//!
//! Each bulk run is followed, on the same connections, by a bare binary
//! `COPY` of as many rows into a plain table ([`super::raw::copy_in`]):
//! the floor of this database at that moment, for `ratio_to_raw_copy`.
//!
//! A durable commit costs a WAL flush, which on a shared disk dominates
//! the single-job latency. So the single enqueues alternate with the floor
//! measured in the same run: a one-row insert into a bare table, also its
//! own transaction (`commit_floor`, p50/p99).

use std::time::{Duration, Instant};

use anyhow::Result;
use drove_queue::NewJob;

use super::report::{Figure, bar, percentile};
use super::target::Target;

/// Jobs per bulk enqueue statement.
pub const CHUNK: usize = 10_000;

pub async fn run(
    t: &Target,
    jobs: u64,
    connections: &[usize],
    singles: u64,
    run: usize,
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &n in connections {
        figures.push(bulk(t, jobs, n, run).await?);
    }
    figures.push(single(t, singles, run).await?);
    Ok(figures)
}

/// Bulk enqueue of `jobs` no-op jobs over `connections` connections.
async fn bulk(t: &Target, jobs: u64, connections: usize, run: usize) -> Result<Figure> {
    t.reset().await?;
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(drove_queue::Conn::connect(&t.db, &t.schema).await?);
    }
    let cpu0 = t.server.map(|s| s.cpu_seconds());
    let lsn0: String = t
        .conn
        .client()
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let took = bulk_on(t, &conns, jobs, true).await?;
    let wal: f64 = t
        .conn
        .client()
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
            &[&lsn0],
        )
        .await?
        .get(0);
    let db_cpu = t
        .server
        .map(|s| s.cpu_seconds())
        .zip(cpu0)
        .map(|(b, a)| (b - a) * 1e6 / jobs as f64);
    t.reset().await?;
    let raw = super::raw::copy_in(t, &conns, jobs, CHUNK).await?;
    let raw_rate = jobs as f64 / raw.as_secs_f64();
    let mut f = Figure::new("enqueue", run, jobs, 0, took.as_secs_f64())
        .with("chunk", CHUNK)
        .with("connections", connections)
        .with_f("raw_copy_jobs_per_s", Some(raw_rate.round()))
        .with_f(
            "ratio_to_raw_copy",
            Some(jobs as f64 / took.as_secs_f64() / raw_rate),
        )
        .with_f("db_cpu_us_per_job", db_cpu)
        .with_f("wal_bytes_per_job", Some(wal / jobs as f64));
    f.variant = Some(match connections {
        1 => "1 connection".to_string(),
        n => format!("{n} connections"),
    });
    Ok(f)
}

/// One job per transaction, interleaved with the commit floor.
async fn single(t: &Target, singles: u64, run: usize) -> Result<Figure> {
    t.reset().await?;
    let c = t.conn.client();
    let commit = CommitFloor::create(t).await?;
    let job = NewJob::new("noop");
    let progress = bar(singles, "enqueue 1 by 1");
    let mut lat = Vec::with_capacity(singles as usize);
    let mut floor = Vec::with_capacity(singles as usize);
    let mut enqueueing = Duration::ZERO;
    for _ in 0..singles {
        let t0 = Instant::now();
        drove_queue::jobs_enqueue(c, &t.schema, &job).await?;
        let took = t0.elapsed();
        enqueueing += took;
        lat.push(took.as_secs_f64() * 1000.0);
        floor.push(commit.time().await?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    commit.drop_table().await?;
    let p50 = percentile(&mut lat, 0.50);
    let floor50 = percentile(&mut floor, 0.50);
    let single = Figure::new("enqueue_one", run, singles, 0, enqueueing.as_secs_f64())
        .with_f("p50_ms", p50)
        .with_f("p99_ms", percentile(&mut lat, 0.99))
        .with_f("commit_floor_p50_ms", floor50)
        .with_f("commit_floor_p99_ms", percentile(&mut floor, 0.99))
        .with_f("p50_over_floor_ms", p50.zip(floor50).map(|(a, b)| a - b));
    t.reset().await?;
    Ok(single)
}

/// The commit floor: durable one-row inserts into a bare table, each its
/// own transaction, to set beside drove's own latencies.
pub struct CommitFloor<'a> {
    t: &'a Target,
    insert: tokio_postgres::Statement,
}

impl<'a> CommitFloor<'a> {
    /// Creates the bare table on the target's connection.
    pub async fn create(t: &'a Target) -> Result<CommitFloor<'a>> {
        t.conn
            .client()
            .batch_execute(&t.schema.sql(
                "DROP TABLE IF EXISTS {s}.bench_commit;
                 CREATE TABLE {s}.bench_commit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                                at timestamptz NOT NULL DEFAULT now())",
            ))
            .await?;
        let insert = t
            .conn
            .prepared("INSERT INTO {s}.bench_commit DEFAULT VALUES")
            .await?;
        Ok(CommitFloor { t, insert })
    }

    /// One durable insert; its time in ms.
    pub async fn time(&self) -> Result<f64> {
        let t0 = Instant::now();
        self.t.conn.client().execute(&self.insert, &[]).await?;
        Ok(t0.elapsed().as_secs_f64() * 1000.0)
    }

    pub async fn drop_table(self) -> Result<()> {
        self.t
            .conn
            .client()
            .batch_execute(&self.t.schema.sql("DROP TABLE {s}.bench_commit"))
            .await?;
        Ok(())
    }
}

/// Enqueues `n` no-op jobs in bulk on the target's connection, `CHUNK`
/// per call; returns the time taken.
pub async fn noop_bulk(t: &Target, n: u64, show: bool) -> Result<Duration> {
    bulk_on(t, std::slice::from_ref(&t.conn), n, show).await
}

/// [`noop_bulk`] with the chunks shared out over `conns`, side by side.
async fn bulk_on(t: &Target, conns: &[drove_queue::Conn], n: u64, show: bool) -> Result<Duration> {
    let keys = t.features.ordering_keys;
    let chunk: Vec<NewJob> = (0..CHUNK as u64)
        .map(|i| match keys {
            0 => NewJob::new("noop"),
            k => NewJob::new("noop").with_ordering_key(format!("k{}", i % k)),
        })
        .collect();
    let progress = if show {
        bar(n, "enqueue bulk")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let left = std::sync::atomic::AtomicUsize::new(n as usize);
    let loops = conns.iter().map(|conn| async {
        loop {
            // Take the next chunk, whichever connection is free first.
            let took = left.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |l| (l > 0).then(|| l - l.min(CHUNK)),
            );
            let Ok(l) = took else {
                return Ok::<(), anyhow::Error>(());
            };
            let k = l.min(CHUNK);
            drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &chunk[..k]).await?;
            progress.inc(k as u64);
        }
    });
    futures_util::future::try_join_all(loops).await?;
    progress.finish_and_clear();
    Ok(started.elapsed())
}
