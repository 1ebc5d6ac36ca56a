//! `drove demo`: the local multi-process demo in one command.
//!
//! It starts a throwaway PostgreSQL from the machine's own server binaries
//! (or uses `DATABASE_URL`, in a schema of its own that it drops at the
//! end), migrates it, runs `drove serve` with the `local` scaler as a child
//! process (which starts and stops `drove-worker` processes with one slot
//! each, so the group's size is visible on a small machine), and puts the
//! seed tool's load on it: bursts of `spin` jobs with quiet pauses between
//! them. The terminal shows the backlog, running jobs, progress, throughput
//! and the group growing and shrinking; the end is a summary checked
//! against the database (every job succeeded exactly once).
//!
//! Process tree and shutdown: the controller runs in its own process group,
//! so a Ctrl-C in the terminal reaches only this process, which then stops
//! things in order: SIGTERM to the controller (it drains and stops its
//! workers), then PostgreSQL, then the temporary directories. The
//! controller also gets SIGTERM if this process dies (`PR_SET_PDEATHSIG`).
//!
//! - [`database`]: the throwaway server or schema, and its removal.
//! - [`controller`]: the `drove serve` child process.
//! - [`monitor`]: the live view, events and the figures of the summary.
//! - [`summary`]: the end-of-demo summary.

pub mod controller;
pub mod database;
pub mod monitor;
pub mod summary;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use drove_queue::NewJob;
use drove_worker::config::DbArgs;
use tokio_util::sync::CancellationToken;

use controller::{ControllerConfig, ControllerProc};
use database::DemoDb;
use monitor::{Monitor, Until};

/// The demo's settings. The defaults are the real demo; tests run a small,
/// fast one with the same flags.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Jobs per burst.
    #[arg(long, env = "DROVE_DEMO_JOBS", default_value_t = 128)]
    pub jobs: usize,
    /// Milliseconds of CPU each job burns (the seed tool's `add DIFFICULTY N`).
    #[arg(long, env = "DROVE_DEMO_DIFFICULTY", default_value_t = 3000)]
    pub difficulty: u64,
    /// Bursts of jobs, with a quiet pause between them.
    #[arg(long, env = "DROVE_DEMO_BURSTS", default_value_t = 2)]
    pub bursts: u32,
    /// Quiet time between bursts: long enough to watch the group shrink.
    #[arg(long, env = "DROVE_DEMO_PAUSE", default_value = "45s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Fewest workers (0: the group scales to zero when idle).
    #[arg(long, env = "DROVE_DEMO_MIN_WORKERS", default_value_t = 0)]
    pub min_workers: u32,
    /// Most workers.
    #[arg(long, env = "DROVE_DEMO_MAX_WORKERS", default_value_t = 8)]
    pub max_workers: u32,
    /// Slots per worker process (1: one CPU-bound job per process).
    #[arg(long, env = "DROVE_DEMO_SLOTS", default_value_t = 1)]
    pub slots: u32,
    /// Idle capacity is removed after the work stayed lower for this long.
    #[arg(long, env = "DROVE_DEMO_SCALE_IN_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub scale_in_after: Duration,
    /// The last worker stops after no work at all for this long.
    #[arg(long, env = "DROVE_DEMO_SCALE_TO_ZERO_AFTER", default_value = "20s", value_parser = humantime::parse_duration)]
    pub scale_to_zero_after: Duration,
    /// The controller's address (health, metrics, API, dashboard); another
    /// free port is used if this one is taken. Port 0: any free port.
    #[arg(long, env = "DROVE_DEMO_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// API token for the dashboard and API (default: a random one, printed).
    #[arg(long, hide_env_values = true, env = "DROVE_DEMO_API_TOKEN")]
    pub api_token: Option<String>,
    /// Exit once the bursts are done and the group has shrunk, instead of
    /// keeping the controller and dashboard up until Ctrl-C.
    #[arg(long, env = "DROVE_DEMO_EXIT")]
    pub exit: bool,
    /// Keep the logs (controller, workers, PostgreSQL) in this directory
    /// instead of a temporary one removed at exit.
    #[arg(long, env = "DROVE_DEMO_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
}

/// Runs the demo until it is done (with `--exit`) or interrupted.
pub async fn run(db: &DbArgs, args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let stop = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(stop.clone()));
    let mut demo = Demo {
        args,
        started,
        stop,
        db: None,
        controller: None,
        logs: None,
    };
    let outcome = demo.run(db).await;
    let interrupted = demo.stop.is_cancelled();
    demo.stop.cancel();
    let cleanup = demo.shutdown().await;
    signals.abort();
    match (outcome, cleanup) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(())) if interrupted => Ok(ExitCode::from(130)),
        (Ok(code), Ok(())) => Ok(code),
    }
}

/// Everything the demo started, so that [`Demo::shutdown`] stops it all.
struct Demo {
    args: DemoArgs,
    started: Instant,
    stop: CancellationToken,
    db: Option<DemoDb>,
    controller: Option<ControllerProc>,
    logs: Option<Logs>,
}

/// The log directory, removed at the end unless the user named it.
struct Logs {
    dir: PathBuf,
    keep: bool,
}

/// Prints a line; a closed terminal is not an error worth dying for.
pub fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

impl Demo {
    async fn run(&mut self, db_args: &DbArgs) -> Result<ExitCode> {
        let a = self.args.clone();
        if a.jobs == 0 || a.bursts == 0 {
            anyhow::bail!("--jobs and --bursts must be at least 1");
        }
        if a.min_workers > a.max_workers || a.max_workers == 0 {
            anyhow::bail!("need 0 <= --min-workers <= --max-workers and --max-workers >= 1");
        }
        let worker_bin = std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("drove-worker");
        if !worker_bin.is_file() {
            anyhow::bail!(
                "{} not found: build both binaries (cargo build --release --workspace --bins, \
                 or run scripts/demo.sh)",
                worker_bin.display()
            );
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        say(
            "drove demo: an autoscaled group of worker processes draining bursts of CPU-bound jobs",
        );
        say(format!(
            "  load         {} burst{} of {} spin jobs burning {} ms of CPU each{} ({cores} CPU core{} here)",
            a.bursts,
            plural(a.bursts as usize),
            a.jobs,
            a.difficulty,
            if a.bursts > 1 {
                format!(", {} apart", monitor::secs(a.pause))
            } else {
                String::new()
            },
            plural(cores),
        ));
        say(format!(
            "  workers      {}..{} drove-worker processes with {} slot{} each, started and stopped by the controller",
            a.min_workers,
            a.max_workers,
            a.slots,
            plural(a.slots as usize),
        ));
        let logs = self.make_log_dir()?;
        let db = DemoDb::start(db_args).await?;
        say(format!("  PostgreSQL   {}", db.describe()));
        let db = self.db.insert(db);
        let (config, schema) = (db.config()?, db.schema().clone());
        if self.stop.is_cancelled() {
            return Ok(ExitCode::from(130));
        }

        let token = match &a.api_token {
            Some(t) => crate::serve::auth::Token::new(t).map_err(anyhow::Error::msg)?,
            None => crate::serve::auth::Token::random(),
        };
        let controller = ControllerProc::start(ControllerConfig {
            listen: a.listen,
            database_url: db.url().to_string(),
            schema: schema.clone(),
            token: token.value().to_string(),
            log_dir: logs.clone(),
            args: a.clone(),
        })?;
        let controller = self.controller.insert(controller);
        controller.ready(&self.stop).await?;
        let base = format!("http://{}", controller.addr());
        say(format!(
            "  controller   {base}  (ready after {}; log {})",
            monitor::secs(self.started.elapsed()),
            controller.log().display()
        ));
        say(format!("  dashboard    {base}/?token={}", token.value()));
        say(format!(
            "  logs         {}{}",
            logs.display(),
            if a.log_dir.is_some() {
                ""
            } else {
                " (removed at exit)"
            }
        ));
        say("  Ctrl-C stops everything: workers, controller, PostgreSQL, temporary files.");
        say("");

        let mut mon = Monitor::new(
            config,
            schema.clone(),
            controller.status_client(),
            a.clone(),
            self.started,
        )
        .await?;
        let job = NewJob::new("spin").with_payload(&serde_json::json!({ "ms": a.difficulty }))?;
        for burst in 1..=a.bursts {
            let Some(ids) = mon.enqueue_burst(burst, &job, a.jobs, &self.stop).await? else {
                return Ok(mon.interrupted());
            };
            mon.event(format!(
                "burst {burst}/{}: enqueued {} spin jobs of {} ms (ids {}..={})",
                a.bursts,
                ids.len(),
                a.difficulty,
                ids.first().copied().unwrap_or_default(),
                ids.last().copied().unwrap_or_default()
            ));
            if mon.watch(Until::BurstDone, None, &self.stop).await == monitor::Watched::Stopped {
                return Ok(mon.interrupted());
            }
            mon.burst_finished(burst);
            if burst < a.bursts {
                mon.event(format!(
                    "quiet for {}: idle workers stop after {} without enough work, the last after {} without any",
                    monitor::secs(a.pause),
                    monitor::secs(a.scale_in_after),
                    monitor::secs(a.scale_to_zero_after),
                ));
                let until = Instant::now() + a.pause;
                if mon.watch(Until::Time, Some(until), &self.stop).await
                    == monitor::Watched::Stopped
                {
                    return Ok(mon.interrupted());
                }
            }
        }
        mon.event(format!(
            "all bursts done; waiting for the group to shrink to {} worker{}",
            a.min_workers,
            plural(a.min_workers as usize)
        ));
        let limit = Instant::now() + a.scale_in_after + a.scale_to_zero_after + SHRINK_SLACK;
        if mon.watch(Until::Shrunk, Some(limit), &self.stop).await == monitor::Watched::Stopped {
            return Ok(mon.interrupted());
        }
        mon.clear();
        let summary = mon.summary().await?;
        say("");
        say(&summary);
        let code = if summary.all_succeeded() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
        if !a.exit {
            say("");
            say(format!(
                "The demo is done; the controller, the dashboard ({base}/?token={}) and PostgreSQL stay up.",
                token.value()
            ));
            say(format!(
                "Add more work from another terminal:  DATABASE_URL='{}' DROVE_SCHEMA={} {} add 3000 32",
                db.url(),
                schema.name(),
                std::env::current_exe()?.display()
            ));
            say("Ctrl-C stops everything.");
            mon.watch(Until::Stopped, None, &self.stop).await;
            mon.clear();
            say(""); // past the terminal's "^C"
        }
        Ok(code)
    }

    fn make_log_dir(&mut self) -> Result<PathBuf> {
        let (dir, keep) = match &self.args.log_dir {
            Some(d) => (d.clone(), true),
            None => (
                std::env::temp_dir().join(format!(
                    "drove-demo-{}-{:06x}",
                    std::process::id(),
                    rand::random::<u32>() & 0xff_ffff
                )),
                false,
            ),
        };
        std::fs::create_dir_all(dir.join("workers"))
            .with_context(|| format!("creating {}", dir.display()))?;
        self.logs = Some(Logs {
            dir: dir.clone(),
            keep,
        });
        Ok(dir)
    }

    /// Stops what was started, in order: controller (and its workers), then
    /// the database, then the log directory.
    async fn shutdown(&mut self) -> Result<()> {
        let t = Instant::now();
        let mut said = false;
        if let Some(mut c) = self.controller.take() {
            say(
                "stopping the controller and its workers (running jobs finish or go back to the queue)…",
            );
            said = true;
            c.stop().await;
        }
        if let Some(db) = self.db.take() {
            said = true;
            say(format!("{}…", db.removal()));
            db.remove().await;
        }
        if let Some(logs) = self.logs.take()
            && !logs.keep
        {
            let _ = std::fs::remove_dir_all(&logs.dir);
        }
        if said {
            say(format!(
                "stopped in {}; nothing left running, temporary files removed.",
                monitor::secs(t.elapsed())
            ));
        }
        Ok(())
    }
}

/// Extra time allowed for the final scale-in beyond its two windows.
const SHRINK_SLACK: Duration = Duration::from_secs(30);

pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Ctrl-C, SIGTERM or SIGHUP (terminal closed) start an orderly stop;
/// later ones only say that it is under way.
async fn watch_signals(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        if stop.is_cancelled() {
            say("still stopping: workers finish or give back their jobs first…");
        } else {
            // The live view clears itself and says what happened.
            stop.cancel();
        }
    }
}
