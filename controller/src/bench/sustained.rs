//! sustained: a long run (default 1,000,000 no-op jobs) through several
//! worker processes, with finished jobs pruned as it goes, to show that
//! throughput holds as finished jobs accumulate and are pruned.
//!
//! The queue keeps succeeded jobs for 2 seconds during the run, and the
//! bench runs `drove_queue::prune::jobs_prune` and
//! `drove_queue::vacuum::tables_vacuum_due` in loops beside the workers
//! (what the controller's pruner and vacuumer do). Progress marks: the finish time of
//! every 100,000th job by id, read before pruning removes it. Claims go in
//! id order, so the k-th mark finishes when about k × 100,000 jobs have;
//! the jobs in flight around a mark (a few thousand) blur it by tens of
//! milliseconds. At the end: sizes of the tables and their indexes, dead
//! tuples, and how many finished jobs remain.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use drove_queue::{Conn, JobId};

use super::report::Figure;
use super::target::Target;
use super::workers::{Spawner, WorkerProc, stop_all};

/// Jobs per throughput window.
const WINDOW: u64 = 100_000;
/// Retention of succeeded jobs during the run.
const KEEP: &str = "2 seconds";
/// Rows per pruning statement.
const PRUNE_BATCH: i64 = 10_000;
/// How often the dead rows are checked (the controller's default).
const VACUUM_CHECK: Duration = Duration::from_secs(2);

pub async fn run(
    t: &Target,
    spawner: &Spawner,
    jobs: u64,
    workers: usize,
    args: &str,
    run: usize,
) -> Result<Vec<Figure>> {
    t.reset().await?;
    let c = t.conn.client();
    c.execute(
        &t.schema.sql(&format!(
            "UPDATE {{s}}.queues SET keep_succeeded = '{KEEP}' WHERE name = 'default'"
        )),
        &[],
    )
    .await?;
    super::enqueue::noop_bulk(t, jobs, true).await?;
    let first: JobId = c
        .query_one(&t.schema.sql("SELECT min(id) FROM {s}.jobs"), &[])
        .await?
        .get(0);
    let claim_idx_start = relation_size(t, "jobs_claim_idx").await?;

    let argv: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    let started: DateTime<Utc> = c.query_one("SELECT clock_timestamp()", &[]).await?.get(0);
    let mut procs: Vec<WorkerProc> = Vec::new();
    for i in 0..workers {
        procs.push(spawner.spawn(&argv, &format!("sustained{i}"))?);
    }
    let pruner_conn = Conn::connect(&t.db, &t.schema).await?;
    let vacuum_conn = Conn::connect(&t.db, &t.schema).await?;
    let stop_pruning = tokio_util::sync::CancellationToken::new();
    let pruner = prune_loop(&pruner_conn, t, stop_pruning.clone());
    let vacuumer = vacuum_loop(&vacuum_conn, t, stop_pruning.clone());
    let watched = async {
        let r = watch(t, &mut procs, first, jobs).await;
        stop_pruning.cancel();
        r
    };
    let (marks, pruned, vacuums) = tokio::join!(watched, pruner, vacuumer);
    let stopped = stop_all(procs).await;
    let marks = marks?;
    let pruned = pruned?;
    let vacuums = vacuums?;
    stopped?;

    // Throughput per window, from the marks.
    let mut times = vec![started];
    times.extend(marks.iter().copied());
    let rates: Vec<f64> = times
        .windows(2)
        .map(|w| WINDOW as f64 / (w[1] - w[0]).as_seconds_f64().max(1e-6))
        .collect();
    let total_s = (times[times.len() - 1] - started).as_seconds_f64();
    let (first_rate, last_rate) = (rates[0], rates[rates.len() - 1]);

    // The tables at the end, after the statistics collector caught up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let row = c
        .query_one(
            &t.schema.sql(
                "SELECT pg_total_relation_size('{s}.jobs'), pg_relation_size('{s}.jobs'),
                        pg_total_relation_size('{s}.jobs_done') + pg_total_relation_size('{s}.jobs_succeeded'),
                        pg_relation_size('{s}.jobs_done') + pg_relation_size('{s}.jobs_succeeded'),
                        (SELECT count(*) FROM {s}.jobs_finished),
                        (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = '{s}.jobs'::regclass),
                        (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = '{s}.jobs_done'::regclass),
                        (SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = '{s}.jobs'::regclass),
                        (SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = '{s}.jobs_done'::regclass)",
            ),
            &[],
        )
        .await?;
    let mb = |i: usize| row.get::<_, i64>(i) as f64 / 1048576.0;
    let mut f = Figure::new("sustained", run, jobs, workers, total_s)
        .with_f("first_100k_jobs_per_s", Some(first_rate))
        .with_f("last_100k_jobs_per_s", Some(last_rate))
        .with_f("last_to_first", Some(last_rate / first_rate))
        // The first window runs before any job is old enough to prune; the
        // second is the first with the pruner deleting as fast as jobs finish.
        .with_f(
            "last_to_second",
            rates.get(1).map(|second| last_rate / second),
        )
        .with(
            "per_100k_jobs_per_s",
            rates.iter().map(|r| r.round()).collect::<Vec<f64>>(),
        )
        .with_f("jobs_total_mb", Some(mb(0)))
        .with_f("jobs_heap_mb", Some(mb(1)))
        .with_f("finished_total_mb", Some(mb(2)))
        .with_f("finished_heap_mb", Some(mb(3)))
        .with_f(
            "claim_index_mb_start",
            Some(claim_idx_start as f64 / 1048576.0),
        )
        .with_f(
            "claim_index_mb_end",
            Some(relation_size(t, "jobs_claim_idx").await? as f64 / 1048576.0),
        )
        .with("finished_rows_left", row.get::<_, i64>(4))
        .with("pruned", pruned)
        .with("jobs_dead_tuples", row.get::<_, i64>(5))
        .with("jobs_done_dead_tuples", row.get::<_, i64>(6))
        .with("jobs_autovacuums", row.get::<_, i64>(7))
        .with(
            "jobs_vacuums",
            vacuums.iter().filter(|v| v.table == "jobs").count(),
        )
        .with(
            "jobs_done_vacuums",
            vacuums.iter().filter(|v| v.table == "jobs_done").count(),
        )
        .with_f(
            "vacuum_seconds",
            Some(vacuums.iter().map(|v| v.took.as_secs_f64()).sum()),
        )
        .with("jobs_done_autovacuums", row.get::<_, i64>(8))
        .with("keep_succeeded", KEEP);
    f.worker_args = Some(args.to_string());
    Ok(vec![f])
}

async fn relation_size(t: &Target, name: &str) -> Result<i64> {
    Ok(t.conn
        .client()
        .query_one(
            "SELECT pg_relation_size(format('%I.%I', $1::text, $2::text)::regclass)",
            &[&t.schema.name(), &name],
        )
        .await?
        .get(0))
}

/// Prunes finished jobs past retention until stopped; returns how many.
async fn prune_loop(
    conn: &Conn,
    t: &Target,
    stop: tokio_util::sync::CancellationToken,
) -> Result<u64> {
    let mut total = 0;
    while !stop.is_cancelled() {
        let n = drove_queue::prune::jobs_prune(conn.client(), &t.schema, PRUNE_BATCH).await?;
        total += n;
        if n < PRUNE_BATCH as u64 {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
    Ok(total)
}

/// Vacuums the job tables when due (the controller's vacuumer) until
/// stopped; returns the vacuums that ran.
async fn vacuum_loop(
    conn: &Conn,
    t: &Target,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Vec<drove_queue::vacuum::Vacuumed>> {
    let policy = drove_queue::vacuum::VacuumPolicy::default();
    let mut all = Vec::new();
    while !stop.is_cancelled() {
        all.extend(
            drove_queue::vacuum::tables_vacuum_due(conn.client(), &t.schema, &policy).await?,
        );
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(VACUUM_CHECK) => {}
        }
    }
    Ok(all)
}

/// Reads the finish time of every WINDOW-th job as it finishes.
async fn watch(
    t: &Target,
    procs: &mut [WorkerProc],
    first: JobId,
    jobs: u64,
) -> Result<Vec<DateTime<Utc>>> {
    let c = t.conn.client();
    let windows = jobs / WINDOW;
    let marks: Vec<JobId> = (1..=windows)
        .map(|k| first + (k * WINDOW) as JobId - 1)
        .collect();
    let mut seen: Vec<Option<DateTime<Utc>>> = vec![None; marks.len()];
    let sql = t
        .schema
        .sql("SELECT id, finished_at FROM {s}.jobs_finished WHERE id = ANY($1) AND bucket = ANY({s}.buckets($1))");
    let progress = super::report::bar(windows, "sustained");
    let mut last_change = Instant::now();
    loop {
        let wanted: Vec<JobId> = marks
            .iter()
            .zip(&seen)
            .filter(|(_, s)| s.is_none())
            .map(|(m, _)| *m)
            .collect();
        if wanted.is_empty() {
            break;
        }
        for r in c.query(&sql, &[&wanted]).await? {
            let id: JobId = r.get(0);
            if let Some(i) = marks.iter().position(|m| *m == id) {
                seen[i] = Some(r.get(1));
                last_change = Instant::now();
                progress.inc(1);
            }
        }
        if last_change.elapsed() > Duration::from_secs(60) {
            bail!("sustained run stalled: no progress mark for 60 s");
        }
        for p in procs.iter_mut() {
            p.check_running()?;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress.finish_and_clear();
    // Everything else finished too.
    let live: i64 = c
        .query_one(&t.schema.sql("SELECT count(*) FROM {s}.jobs"), &[])
        .await?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut live = live;
    while live > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        live = c
            .query_one(&t.schema.sql("SELECT count(*) FROM {s}.jobs"), &[])
            .await?
            .get(0);
    }
    if live > 0 {
        bail!("sustained run: {live} jobs still live after the last mark");
    }
    Ok(seen
        .into_iter()
        .map(|s| s.expect("every mark seen"))
        .collect())
}
