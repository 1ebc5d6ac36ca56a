//! idle: what workers cost the database when there is nothing to do.
//!
//! - One real `drove-worker` process (default flags), observed for
//!   `--idle-time`: connections it holds, statements per second by kind
//!   (from pg_stat_statements when loaded, else transactions committed on a
//!   throwaway server), its CPU and memory.
//! - A fleet of `--fleet` workers embedded in this process (the worker
//!   library, default settings, one HTTP port each): the database server's
//!   CPU while they idle, against the same window with no workers, from
//!   /proc (so only for a server on this machine), and statements per
//!   worker.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use drove_worker::{Handlers, Worker, WorkerConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::report::Figure;
use super::sys;
use super::target::Target;
use super::workers::Spawner;

pub async fn run(
    t: &Target,
    spawner: &Spawner,
    window: Duration,
    fleet: usize,
    run: usize,
) -> Result<Vec<Figure>> {
    let mut out = vec![one_worker(t, spawner, window, run).await?];
    if fleet > 0 {
        out.push(fleet_of(t, window, fleet, run).await?);
    }
    Ok(out)
}

/// Statements run by this schema's workers, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Statements {
    heartbeat: f64,
    claim: f64,
    total: f64,
}

impl std::ops::Sub for Statements {
    type Output = Statements;
    fn sub(self, o: Statements) -> Statements {
        Statements {
            heartbeat: self.heartbeat - o.heartbeat,
            claim: self.claim - o.claim,
            total: self.total - o.total,
        }
    }
}

/// Cumulative statement counts: from pg_stat_statements (the entries whose
/// text names the bench's schema, so other databases' traffic is left
/// out), or committed transactions on a throwaway server.
async fn statements(t: &Target) -> Result<Option<Statements>> {
    let c = t.conn.client();
    if t.statements {
        let pattern = format!("%\"{}\".%", t.schema.name());
        let row = c
            .query_one(
                "SELECT COALESCE(sum(calls) FILTER (WHERE query LIKE '%SET heartbeat_at%'), 0)::float8,
                        COALESCE(sum(calls) FILTER (WHERE query LIKE '%SKIP LOCKED%'), 0)::float8,
                        COALESCE(sum(calls), 0)::float8
                 FROM pg_stat_statements
                 WHERE query LIKE $1 AND query NOT LIKE '%pg_stat%'",
                &[&pattern],
            )
            .await?;
        return Ok(Some(Statements {
            heartbeat: row.get(0),
            claim: row.get(1),
            total: row.get(2),
        }));
    }
    if t.throwaway {
        let row = c
            .query_one(
                "SELECT xact_commit::float8 FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await?;
        return Ok(Some(Statements {
            total: row.get(0),
            ..Statements::default()
        }));
    }
    Ok(None)
}

/// Connections named by a worker, from pg_stat_activity.
async fn connections(t: &Target, pattern: &str) -> Result<i64> {
    Ok(t.conn
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
            &[&pattern],
        )
        .await?
        .get(0))
}

async fn one_worker(t: &Target, spawner: &Spawner, window: Duration, run: usize) -> Result<Figure> {
    t.reset().await?;
    let mut w = spawner.spawn(&[], "idle")?;
    let id = w
        .ready(Duration::from_secs(30), Duration::from_millis(20))
        .await;
    let id = match id {
        Ok(_) => worker_id(w.port).await?,
        Err(e) => return Err(e),
    };
    // Let it settle: LISTEN set up, first heartbeat and poll behind it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = w.pid();
    let s0 = statements(t).await?;
    let cpu0 = sys::cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let mut max_conns = 0;
    while started.elapsed() < window {
        max_conns = max_conns.max(connections(t, &format!("drove-worker {id}")).await?);
        w.check_running()?;
        tokio::time::sleep(Duration::from_secs(1).min(window)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let s1 = statements(t).await?;
    let cpu = sys::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    let rss = sys::status_kb(pid, "VmRSS").unwrap_or(0) as f64 / 1024.0;
    w.stop(Duration::from_secs(30)).await?;
    // The bench's own statements in the window (the connection count, one
    // a second) are in the transaction count: take them out.
    let own = (secs.ceil() + 1.0) * if t.statements { 0.0 } else { 1.0 };
    let mut f = Figure::new("idle_worker", run, 0, 1, secs)
        .with("connections", max_conns)
        .with_f("rss_mb", Some(rss))
        .with_f("worker_cpu_pct", Some(cpu / secs * 100.0));
    f.jobs_per_s = 0.0;
    if let (Some(a), Some(b)) = (s0, s1) {
        let d = b - a;
        f = f.with_f("statements_per_s", Some((d.total - own).max(0.0) / secs));
        if t.statements {
            f = f
                .with_f("heartbeats_per_s", Some(d.heartbeat / secs))
                .with_f("claims_per_s", Some(d.claim / secs));
        } else {
            f = f.with("statements_source", "xact_commit");
        }
    }
    Ok(f)
}

/// The worker id from `/readyz`.
async fn worker_id(port: u16) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).context("reading /readyz")?;
    v["worker"]
        .as_str()
        .map(str::to_string)
        .context("no worker id in /readyz")
}

/// Parses worker flags the way `drove-worker` does.
#[derive(Parser)]
struct WorkerFlags {
    #[command(flatten)]
    config: WorkerConfig,
}

async fn fleet_of(t: &Target, window: Duration, n: usize, run: usize) -> Result<Figure> {
    t.reset().await?;
    let Some(server) = t.server else {
        bail!(
            "the fleet's database CPU is read from /proc: it needs a server on this machine (omit --database-url)"
        );
    };
    let max: i64 = t
        .conn
        .client()
        .query_one("SELECT current_setting('max_connections')::int8", &[])
        .await?
        .get(0);
    if (n as i64) * 3 + 10 > max {
        bail!(
            "a fleet of {n} workers needs {} connections; the server allows {max}",
            n * 3 + 10
        );
    }
    // The same window with no worker: the server's own background work.
    let base0 = server.cpu_seconds();
    let b = Instant::now();
    tokio::time::sleep(window).await;
    let base = (server.cpu_seconds() - base0) / b.elapsed().as_secs_f64();

    let stop = CancellationToken::new();
    let mut fleet = JoinSet::new();
    for _ in 0..n {
        let flags = WorkerFlags::try_parse_from([
            "drove-worker",
            "--database-url",
            &t.url,
            "--schema",
            t.schema.name(),
            "--http",
            "127.0.0.1:0",
        ])?;
        let worker = Worker::new(flags.config, Handlers::builtin());
        let stop = stop.clone();
        fleet.spawn(async move { worker.run(stop).await });
    }
    let measured = async {
        let registered = t.schema.sql("SELECT count(*) FROM {s}.workers");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let k: i64 = t.conn.client().query_one(&registered, &[]).await?.get(0);
            if k as usize >= n {
                break;
            }
            if let Some(Some(Err(e))) = fleet.try_join_next().map(|r| r.ok()) {
                bail!("an embedded worker failed: {e}");
            }
            if Instant::now() > deadline {
                bail!("only {k} of {n} workers registered after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Past start-up: every worker has listened, beaten and polled once.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let conns = connections(t, "drove-worker %").await?;
        let s0 = statements(t).await?;
        let c0 = server.cpu_seconds();
        let started = Instant::now();
        tokio::time::sleep(window).await;
        let secs = started.elapsed().as_secs_f64();
        let cpu = (server.cpu_seconds() - c0) / secs;
        let s1 = statements(t).await?;
        Ok::<_, anyhow::Error>((conns, s0.zip(s1).map(|(a, b)| b - a), cpu, secs))
    }
    .await;
    stop.cancel();
    while let Some(r) = fleet.join_next().await {
        r??;
    }
    let (conns, stmts, cpu, secs) = measured?;
    let mut f = Figure::new("idle_fleet", run, 0, n, secs)
        .with("connections", conns)
        .with_f("db_cpu_pct_of_core", Some(cpu * 100.0))
        .with_f("db_cpu_pct_no_workers", Some(base * 100.0))
        .with_f("db_cpu_pct_for_fleet", Some((cpu - base).max(0.0) * 100.0));
    f.jobs_per_s = 0.0;
    if let Some(d) = stmts {
        let per = |x: f64| Some(x / secs / n as f64);
        f = f.with_f("statements_per_s_per_worker", per(d.total));
        if t.statements {
            f = f
                .with_f("heartbeats_per_s_per_worker", per(d.heartbeat))
                .with_f("claims_per_s_per_worker", per(d.claim));
        }
    }
    Ok(f)
}
