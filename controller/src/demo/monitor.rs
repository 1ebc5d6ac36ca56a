//! The demo's live view: five times a second it reads the demo's jobs and
//! the worker registry from the database and the scaler's view from the
//! controller, redraws a progress bar with the backlog, running jobs,
//! workers and throughput, and prints an event line when something changes
//! (a burst, the desired size, the live worker count, the first job done).
//! It keeps the samples that the summary's figures come from.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use drove_queue::{Conn, DbConfig, JobId, JobState, NewJob, Schema, UniqueScope};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::DemoArgs;
use super::controller::{ScalerView, StatusClient};
use super::summary::{BurstFigures, Summary};

/// Time between samples.
const TICK: Duration = Duration::from_millis(200);
/// Throughput is averaged over this window.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Without a terminal, a status line this often.
const PLAIN_EVERY: Duration = Duration::from_secs(3);
/// A read slower than this counts as the database not answering (generous:
/// the demo saturates the CPU it shares with PostgreSQL).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// "0.4s", "12.3s", "3m 05s".
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// One look at the system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub at: Option<Instant>,
    /// The demo's jobs by state.
    pub waiting: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Live workers (registry) and their busy slots.
    pub live: u32,
    pub busy: i64,
    pub scaler: Option<ScalerView>,
    pub db_ok: bool,
}

/// What to watch for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Until {
    /// Every job of the latest burst has finished.
    BurstDone,
    /// The deadline passes.
    Time,
    /// The group is back at its minimum and the scaler wants no more.
    Shrunk,
    /// Only a stop (Ctrl-C) ends it.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watched {
    Reached,
    Deadline,
    Stopped,
}

struct Burst {
    enqueued_at: Instant,
    ids: Vec<JobId>,
    done_at: Option<Instant>,
    /// (time since enqueue, desired, live) while the burst ran.
    trace: Vec<(Duration, Option<u32>, u32)>,
}

pub struct Monitor {
    config: DbConfig,
    schema: Schema,
    conn: Option<Conn>,
    status: StatusClient,
    args: DemoArgs,
    started: Instant,
    bar: ProgressBar,
    tty: bool,
    ids: Vec<JobId>,
    bursts: Vec<Burst>,
    last: Sample,
    rate: VecDeque<(Instant, i64)>,
    peak_live: u32,
    first_done: Option<Instant>,
    last_plain: Instant,
    db_down_since: Option<Instant>,
}

impl Monitor {
    pub async fn new(
        config: DbConfig,
        schema: Schema,
        status: StatusClient,
        args: DemoArgs,
        started: Instant,
    ) -> Result<Monitor> {
        let conn = Conn::connect(&config, &schema).await?;
        let tty = std::io::stdout().is_terminal();
        let total = (args.jobs * args.bursts as usize) as u64;
        let bar = if tty {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} {prefix} [{bar:36.cyan/blue}] {pos}/{len} jobs done\n  {wide_msg}",
                )
                .expect("the template is valid")
                .progress_chars("█▉▊▋▌▍▎▏ "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Ok(Monitor {
            config,
            schema,
            conn: Some(conn),
            status,
            args,
            started,
            bar,
            tty,
            ids: Vec::new(),
            bursts: Vec::new(),
            last: Sample::default(),
            rate: VecDeque::new(),
            peak_live: 0,
            first_done: None,
            last_plain: Instant::now(),
            db_down_since: None,
        })
    }

    /// Prints an event line above the live view, stamped with the time
    /// since the demo started.
    pub fn event(&self, text: impl AsRef<str>) {
        let line = format!("[{:>7}] {}", secs(self.started.elapsed()), text.as_ref());
        if self.tty {
            self.bar.println(line);
        } else {
            super::say(line);
        }
    }

    /// Removes the live view (before the summary).
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }

    /// Enqueues a burst in one statement; while the database does not
    /// answer, waits for it (the live view goes on), like a producer that
    /// retries. The retry cannot enqueue the burst twice: see
    /// [`burst_jobs`]. None: stopped (Ctrl-C) first.
    pub async fn enqueue_burst(
        &mut self,
        n: u32,
        job: &NewJob,
        count: usize,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<Vec<JobId>>> {
        let jobs = burst_jobs(n, job, count);
        let mut waiting_since = None;
        let ids = loop {
            match self.enqueue_once(&jobs).await {
                Ok(ids) => break ids,
                Err(e) if !is_transient(&e) => return Err(e),
                Err(e) => {
                    self.conn = None;
                    if waiting_since.is_none() {
                        waiting_since = Some(Instant::now());
                        self.event(format!(
                            "burst {n}: cannot enqueue ({e:#}); retrying until the database answers"
                        ));
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(None),
                _ = tokio::time::sleep(TICK) => {}
            }
            self.tick().await;
        };
        if let Some(since) = waiting_since {
            self.event(format!(
                "burst {n}: enqueued after waiting {} for the database",
                secs(since.elapsed())
            ));
        }
        self.ids.extend(&ids);
        self.bursts.push(Burst {
            enqueued_at: Instant::now(),
            ids: ids.clone(),
            done_at: None,
            trace: Vec::new(),
        });
        self.bar
            .set_prefix(format!("burst {n}/{}", self.args.bursts));
        Ok(Some(ids))
    }

    async fn enqueue_once(&mut self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let schema = self.schema.clone();
        let conn = self.connection().await?;
        let ids = tokio::time::timeout(
            QUERY_TIMEOUT,
            drove_queue::jobs_enqueue_detailed(conn.client(), &schema, jobs),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer after {QUERY_TIMEOUT:?}"))??;
        Ok(ids.iter().map(|e| e.id).collect())
    }

    pub fn burst_finished(&mut self, n: u32) {
        let Some(b) = self.bursts.last_mut() else {
            return;
        };
        let at = Instant::now();
        b.done_at = Some(at);
        let took = at - b.enqueued_at;
        let jobs = b.ids.len();
        self.event(format!(
            "burst {n} done: {jobs} jobs in {} ({:.2} jobs/s)",
            secs(took),
            jobs as f64 / took.as_secs_f64().max(0.001)
        ));
    }

    async fn connection(&mut self) -> Result<&Conn> {
        if self.conn.as_ref().is_none_or(|c| c.client().is_closed()) {
            self.conn = None;
            let c = tokio::time::timeout(QUERY_TIMEOUT, Conn::connect(&self.config, &self.schema))
                .await
                .map_err(|_| anyhow::anyhow!("no connection after {QUERY_TIMEOUT:?}"))??;
            self.conn = Some(c);
        }
        Ok(self.conn.as_ref().expect("just connected"))
    }

    async fn read(&mut self) -> Result<Sample> {
        let ids = self.ids.clone();
        let schema = self.schema.clone();
        let conn = self.connection().await?;
        let query = async {
            let counts =
                drove_queue::inspect::jobs_count_by_state(conn.client(), &schema, &ids).await?;
            let workers = drove_queue::registry::workers_list(conn.client(), &schema).await?;
            anyhow::Ok((counts, workers))
        };
        let (counts, workers) = tokio::time::timeout(QUERY_TIMEOUT, query)
            .await
            .map_err(|_| anyhow::anyhow!("no answer after {QUERY_TIMEOUT:?}"))??;
        let get = |s: JobState| counts.iter().find(|(st, _)| *st == s).map_or(0, |c| c.1);
        Ok(Sample {
            at: Some(Instant::now()),
            waiting: get(JobState::Available),
            running: get(JobState::Running),
            done: get(JobState::Succeeded),
            failed: get(JobState::Dead),
            cancelled: get(JobState::Cancelled),
            live: workers.len() as u32,
            busy: workers.iter().map(|w| i64::from(w.busy)).sum(),
            scaler: None,
            db_ok: true,
        })
    }

    /// Takes one sample, reports what changed and redraws.
    async fn tick(&mut self) {
        let scaler = self.status.scaler().await;
        let mut s = match self.read().await {
            Ok(s) => {
                if let Some(since) = self.db_down_since.take() {
                    self.event(format!(
                        "database reachable again after {}",
                        secs(since.elapsed())
                    ));
                }
                s
            }
            Err(e) => {
                self.conn = None;
                if self.db_down_since.is_none() {
                    self.db_down_since = Some(Instant::now());
                    self.event(format!("database not answering ({e:#}); retrying"));
                }
                Sample {
                    db_ok: false,
                    ..self.last
                }
            }
        };
        s.scaler = scaler.or(self.last.scaler);
        self.report_changes(&s);
        if s.db_ok {
            let now = s.at.unwrap_or_else(Instant::now);
            self.rate.push_back((now, s.done));
            while self
                .rate
                .front()
                .is_some_and(|(t, _)| now - *t > RATE_WINDOW)
            {
                self.rate.pop_front();
            }
            if let Some(b) = self.bursts.last_mut()
                && b.done_at.is_none()
            {
                b.trace.push((
                    now - b.enqueued_at,
                    s.scaler.and_then(|v| v.desired),
                    s.live,
                ));
            }
        }
        self.peak_live = self.peak_live.max(s.live);
        self.last = s;
        self.draw();
    }

    fn report_changes(&mut self, s: &Sample) {
        let before = self.last;
        let desired = s.scaler.and_then(|v| v.desired);
        // Before its first decision the group is at its minimum.
        let was = before
            .scaler
            .and_then(|v| v.desired)
            .unwrap_or(self.args.min_workers);
        if let Some(d) = desired
            && d != was
        {
            let why = if d > was {
                let v = s.scaler.unwrap_or_default();
                let work = v.backlog + v.running;
                format!(
                    " for {work} job{} ({} waiting, {} running)",
                    super::plural(work as usize),
                    v.backlog,
                    v.running
                )
            } else if d == 0 {
                format!(" (no work for {})", secs(self.args.scale_to_zero_after))
            } else {
                format!(
                    " (less work than workers for {}; busy ones stay)",
                    secs(self.args.scale_in_after)
                )
            };
            self.event(format!("scaler: desired workers {was} -> {d}{why}"));
        }
        if s.db_ok && before.at.is_some() && s.live != before.live {
            let arrow = if s.live > before.live { "up" } else { "down" };
            self.event(format!("workers {} -> {} ({arrow})", before.live, s.live));
        }
        if self.first_done.is_none() && s.done > 0 {
            let now = Instant::now();
            self.first_done = Some(now);
            let after_enqueue = self
                .bursts
                .first()
                .map(|b| format!(", {} after the first enqueue", secs(now - b.enqueued_at)))
                .unwrap_or_default();
            self.event(format!(
                "first job done{after_enqueue} ({} after the demo started)",
                secs(now - self.started)
            ));
        }
    }

    /// Jobs per second over the last [`RATE_WINDOW`].
    fn throughput(&self) -> Option<f64> {
        let (t0, d0) = self.rate.front()?;
        let (t1, d1) = self.rate.back()?;
        let span = (*t1 - *t0).as_secs_f64();
        (span >= 2.0).then(|| (d1 - d0) as f64 / span)
    }

    fn status_line(&self) -> String {
        let s = &self.last;
        let wants = match s.scaler.and_then(|v| v.desired) {
            Some(d) => format!("scaler wants {d}, max {}", self.args.max_workers),
            None => format!("max {}", self.args.max_workers),
        };
        let rate = self
            .throughput()
            .map_or("-".to_string(), |r| format!("{r:.2}"));
        let done = if self.tty {
            String::new() // the bar shows it
        } else {
            format!(
                "done {}/{}  ",
                s.done,
                self.args.jobs * self.args.bursts as usize
            )
        };
        let mut line = format!(
            "{done}waiting {}  running {}  workers {} ({wants})  throughput {rate} jobs/s",
            s.waiting, s.running, s.live
        );
        if s.failed + s.cancelled > 0 {
            line.push_str(&format!("  failed {}", s.failed + s.cancelled));
        }
        if !s.db_ok {
            line.push_str("  [database not answering: last numbers]");
        }
        line
    }

    fn draw(&mut self) {
        let line = self.status_line();
        if self.tty {
            self.bar.set_position(self.last.done.max(0) as u64);
            self.bar.set_message(line);
        } else if self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = Instant::now();
            super::say(format!("[{:>7}] {line}", secs(self.started.elapsed())));
        }
    }

    fn reached(&self, until: Until) -> bool {
        let s = &self.last;
        match until {
            Until::BurstDone => {
                let n = self.ids.len() as i64;
                s.db_ok && s.done + s.failed + s.cancelled >= n
            }
            Until::Shrunk => {
                s.db_ok
                    && s.live <= self.args.min_workers
                    && s.scaler.is_some_and(|v| {
                        v.desired == Some(self.args.min_workers)
                            && v.size.is_none_or(|n| n <= self.args.min_workers)
                    })
            }
            Until::Time | Until::Stopped => false,
        }
    }

    /// Samples until `until` holds, `deadline` passes, or `stop`.
    pub async fn watch(
        &mut self,
        until: Until,
        deadline: Option<Instant>,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Watched {
        loop {
            if stop.is_cancelled() {
                return Watched::Stopped;
            }
            self.tick().await;
            if self.reached(until) {
                return Watched::Reached;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if until == Until::Shrunk {
                    self.event(format!(
                        "the group did not shrink to {} in time ({} live workers)",
                        self.args.min_workers, self.last.live
                    ));
                }
                return Watched::Deadline;
            }
            tokio::select! {
                _ = stop.cancelled() => return Watched::Stopped,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// After Ctrl-C: where things stood.
    pub fn interrupted(&self) -> std::process::ExitCode {
        self.clear();
        super::say(format!(
            "interrupted after {}: {} of {} enqueued jobs done, {} waiting, {} running",
            secs(self.started.elapsed()),
            self.last.done,
            self.ids.len(),
            self.last.waiting,
            self.last.running
        ));
        std::process::ExitCode::from(130)
    }

    /// The end-of-demo summary, checked against the database.
    pub async fn summary(&mut self) -> Result<Summary> {
        let ids = self.ids.clone();
        let schema = self.schema.clone();
        let conn = self.connection().await?;
        let counts =
            drove_queue::inspect::jobs_count_by_state(conn.client(), &schema, &ids).await?;
        let timings = drove_queue::inspect::jobs_timings(conn.client(), &schema, &ids).await?;
        let bursts = self
            .bursts
            .iter()
            .map(|b| {
                BurstFigures::from_trace(
                    b.ids.len(),
                    b.done_at.map(|d| d - b.enqueued_at),
                    &b.trace,
                )
            })
            .collect();
        Ok(Summary::new(
            ids.len(),
            &counts,
            timings,
            self.started.elapsed(),
            self.peak_live,
            self.last.live,
            self.first_done
                .zip(self.bursts.first())
                .map(|(f, b)| (f - b.enqueued_at, f - self.started)),
            bursts,
        ))
    }
}

/// A database error worth waiting out (connection lost or refused, server
/// starting or stopping, no answer in time); anything else is a real error.
/// A burst's jobs, each with a unique key of its own held for an hour (a
/// window): when an enqueue's answer is lost (the database went away after
/// committing, or answered after the timeout), the retry gets the ids of
/// the jobs already there instead of enqueueing the burst a second time.
pub fn burst_jobs(n: u32, job: &NewJob, count: usize) -> Vec<NewJob> {
    (0..count)
        .map(|i| {
            job.clone()
                .with_unique(format!("demo-burst-{n}-{i}"), UniqueScope::Window(3600))
        })
        .collect()
}

fn is_transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<drove_queue::Error>()
        .is_none_or(drove_queue::Error::is_transient)
}
