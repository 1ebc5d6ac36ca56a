//! Load on the group, and the books: which jobs were enqueued, that each was
//! recorded succeeded exactly once, how long reclaiming took, and the report.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drove_queue::{Conn, JobId, NewJob};
use tokio_util::sync::CancellationToken;

use super::Sim;

/// `sleep` jobs enqueued at a steady rate until [`Load::finish`].
pub struct Load {
    ids: Arc<Mutex<Vec<JobId>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// `per_second` jobs of `ms` (uniformly drawn) milliseconds each, in
    /// batches every 100 ms.
    pub async fn start(sim: &Sim, per_second: u32, ms: Range<u64>) -> Load {
        let conn = sim.connect().await;
        let ids = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (ids2, stop2) = (ids.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut owed = 0.0;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop2.cancelled() => return,
                    _ = tick.tick() => {}
                }
                owed += f64::from(per_second) / 10.0;
                let n = owed.floor() as usize;
                owed -= n as f64;
                let jobs: Vec<NewJob> = (0..n)
                    .map(|_| {
                        let ms = rand::random_range(ms.clone());
                        NewJob::new("sleep")
                            .with_payload(&serde_json::json!({ "ms": ms }))
                            .unwrap()
                    })
                    .collect();
                match drove_queue::jobs_enqueue_many(conn.client(), conn.schema(), &jobs).await {
                    Ok(new) => ids2.lock().unwrap().extend(new),
                    Err(e) => panic!("enqueue failed: {e}"),
                }
            }
        });
        Load { ids, stop, task }
    }

    pub fn enqueued(&self) -> usize {
        self.ids.lock().unwrap().len()
    }

    /// Stops enqueuing; every job id enqueued.
    pub async fn finish(self) -> Vec<JobId> {
        self.stop.cancel();
        self.task.await.expect("the load task failed");
        Arc::try_unwrap(self.ids).unwrap().into_inner().unwrap()
    }
}

/// Jobs recorded succeeded so far.
pub async fn succeeded(conn: &Conn) -> i64 {
    conn.client()
        .query_one(
            &conn
                .schema()
                .sql("SELECT count(*) FROM {s}.jobs_finished WHERE state = 'succeeded'"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The live worker id of a container (its host name), if it has one.
pub async fn worker_of(conn: &Conn, host: &str) -> Option<String> {
    conn.client()
        .query_opt(
            &conn.schema().sql(
                "SELECT id FROM {s}.workers WHERE host = $1 AND expires_at > now() ORDER BY started_at DESC LIMIT 1",
            ),
            &[&host],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Jobs leased to `worker` with more than `min_left` of their sleep to go.
pub async fn in_flight(conn: &Conn, worker: &str, min_left: Duration) -> Vec<JobId> {
    conn.client()
        .query(
            &conn.schema().sql(
                "SELECT id FROM {s}.jobs WHERE state = 'running' AND lease_owner = $1
                   AND started_at + (payload->>'ms')::float8 * interval '1 millisecond' > now() + $2 * interval '1 millisecond'",
            ),
            &[&worker, &(min_left.as_millis() as f64)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A container of the group whose worker runs a job with between `left`
/// of its time to go: (container, worker id, those jobs).
pub async fn busy_victim(
    conn: &Conn,
    names: &[String],
    left: Range<Duration>,
) -> Option<(String, String, Vec<JobId>)> {
    for name in names {
        let Some(worker) = worker_of(conn, name).await else {
            continue;
        };
        let at_least = in_flight(conn, &worker, left.start).await;
        let too_long = in_flight(conn, &worker, left.end).await;
        let jobs: Vec<JobId> = at_least
            .into_iter()
            .filter(|j| !too_long.contains(j))
            .collect();
        if !jobs.is_empty() {
            return Some((name.clone(), worker, jobs));
        }
    }
    None
}

/// Waits until none of `jobs` is leased to `owner` any more (each was
/// reclaimed, or finished): the longest time from `since`.
pub async fn reclaimed(
    conn: &Conn,
    owner: &str,
    jobs: &[JobId],
    since: Instant,
    limit: Duration,
) -> Duration {
    let mut longest = Duration::ZERO;
    let mut left: Vec<JobId> = jobs.to_vec();
    while !left.is_empty() {
        assert!(
            since.elapsed() < limit,
            "jobs {left:?} still leased to {owner} after {limit:?}"
        );
        let still: Vec<JobId> = conn
            .client()
            .query(
                &conn
                    .schema()
                    .sql("SELECT id FROM {s}.jobs WHERE id = ANY($1) AND lease_owner = $2"),
                &[&left, &owner],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if still.len() < left.len() {
            longest = since.elapsed();
        }
        left = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    longest
}

/// How many of `jobs` were recorded by a worker other than `worker`.
pub async fn finished_elsewhere(conn: &Conn, jobs: &[JobId], worker: &str) -> i64 {
    conn.client()
        .query_one(
            &conn.schema().sql(
                "SELECT count(*) FROM {s}.jobs_finished WHERE id = ANY($1) AND state = 'succeeded'
                   AND worker IS DISTINCT FROM $2 AND attempt > 1",
            ),
            &[&jobs, &worker],
        )
        .await
        .unwrap()
        .get(0)
}

/// The books after a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub enqueued: i64,
    /// Ids recorded `succeeded`, each counted once.
    pub succeeded: i64,
    /// Enqueued but not recorded succeeded.
    pub lost: i64,
    /// Recorded rows beyond one per id.
    pub duplicates: i64,
    /// Recorded on a later attempt than the first (run again after a reclaim).
    pub rerun: i64,
    /// Jobs `running` whose owner has no live lease.
    pub orphaned: i64,
}

/// Waits up to `limit` for every job to be finished, then counts.
pub async fn drain(conn: &Conn, ids: &[JobId], limit: Duration) -> (Outcome, Duration) {
    let started = Instant::now();
    let count = || async {
        let r = conn
            .client()
            .query_one(
                &conn.schema().sql(
                    "SELECT count(DISTINCT id) FILTER (WHERE state = 'succeeded'), count(*), count(DISTINCT id),
                            count(*) FILTER (WHERE attempt > 1)
                     FROM {s}.jobs_finished WHERE id = ANY($1)",
                ),
                &[&ids],
            )
            .await
            .unwrap();
        (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
            r.get::<_, i64>(3),
        )
    };
    let mut c = count().await;
    while c.2 < ids.len() as i64 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c = count().await;
    }
    let took = started.elapsed();
    let orphaned: i64 = conn
        .client()
        .query_one(
            &conn.schema().sql(
                "SELECT count(*) FROM {s}.jobs j WHERE state = 'running' AND NOT EXISTS
                   (SELECT 1 FROM {s}.workers w WHERE w.id = j.lease_owner AND w.expires_at > now())",
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let enqueued = ids.len() as i64;
    let outcome = Outcome {
        enqueued,
        succeeded: c.0,
        lost: enqueued - c.0,
        duplicates: c.1 - c.2,
        rerun: c.3,
        orphaned,
    };
    (outcome, took)
}

/// A scenario's report: steps with their times, notes, the books.
pub struct Report {
    scenario: String,
    steps: Vec<(String, Duration)>,
    notes: Vec<String>,
    pub max_reclaim: Option<Duration>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            steps: Vec::new(),
            notes: Vec::new(),
            max_reclaim: None,
        }
    }

    pub fn step(&mut self, what: impl Into<String>, took: Duration) {
        let what = what.into();
        eprintln!("{}: {what}: {:.2} s", self.scenario, took.as_secs_f64());
        self.steps.push((what, took));
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn reclaim(&mut self, took: Duration) {
        self.max_reclaim = Some(self.max_reclaim.map_or(took, |m| m.max(took)));
    }

    /// Prints the report (and appends it to $DROVE_SIM_REPORT if set).
    pub fn print(&self, o: &Outcome) -> String {
        let mut s = String::new();
        let name = &self.scenario;
        let _ = writeln!(s, "SIM {name} ==");
        for (what, took) in &self.steps {
            let _ = writeln!(s, "SIM {name} | {what:<52} {:>7.2} s", took.as_secs_f64());
        }
        for n in &self.notes {
            let _ = writeln!(s, "SIM {name} | {n}");
        }
        let reclaim = self
            .max_reclaim
            .map_or("n/a (no job was reclaimed)".into(), |d| {
                format!("{:.2} s", d.as_secs_f64())
            });
        let _ = writeln!(
            s,
            "SIM {name} | jobs enqueued {}, recorded succeeded exactly once {}, run again after a reclaim {}",
            o.enqueued, o.succeeded, o.rerun
        );
        let _ = writeln!(
            s,
            "SIM {name} | jobs lost = {}, duplicate completions = {}, running without a live lease = {}, max reclaim time = {reclaim}",
            o.lost, o.duplicates, o.orphaned
        );
        println!("{s}");
        if let Some(path) = std::env::var_os("DROVE_SIM_REPORT") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(s.as_bytes());
            }
        }
        s
    }
}

/// Prints report lines, and appends them to the file $DROVE_SIM_REPORT
/// names, if any (scripts/sim-mig.sh collects them there).
pub fn publish(text: &str) {
    println!("{text}");
    if let Some(path) = std::env::var_os("DROVE_SIM_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", text.trim_end());
        }
    }
}

/// Prints the report, then checks the books: nothing lost, nothing twice,
/// nothing left running without a lease.
pub fn assert_books(report: &Report, o: &Outcome) {
    report.print(o);
    assert_eq!(o.lost, 0, "jobs lost: {o:?}");
    assert_eq!(o.duplicates, 0, "duplicate completions: {o:?}");
    assert_eq!(o.orphaned, 0, "jobs running without a live lease: {o:?}");
    assert_eq!(o.succeeded, o.enqueued, "{o:?}");
    assert!(o.enqueued > 0, "the scenario put no load on the group");
}
