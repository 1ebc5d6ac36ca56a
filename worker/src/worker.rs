//! Starting, running and draining a worker.
//!
//! ```text
//!   start: connect (retrying while the database is unreachable, up to
//!          --startup-timeout) → check schema → register → spawn tasks
//!   run:   until SIGTERM / the shutdown token (or a task dies: exit 1)
//!   drain: stop claiming; give back jobs not started; let running jobs
//!          finish within --grace; then stop them and give them back
//!          (not counted as an attempt); record every outcome; deregister.
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drove_queue::{DbConfig, WorkerInfo};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::exec::ExecHandler;
use crate::handler::Handlers;
use crate::link::Link;
use crate::state::{Settings, Shared, StopReason};

/// How long the final recording of outcomes may take after the grace.
const FLUSH_DEADLINE: Duration = Duration::from_secs(4);

/// Why a worker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Database(#[from] drove_queue::Error),
    #[error("cannot listen on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("database unreachable for {0:?} at start-up: {1}")]
    Unreachable(Duration, drove_queue::Error),
    #[error("worker task {0} stopped unexpectedly: {1}")]
    TaskDied(&'static str, String),
}

/// A worker process: configuration plus handlers.
pub struct Worker {
    config: WorkerConfig,
    handlers: Handlers,
    startup_timeout: Duration,
}

impl Worker {
    /// A worker with `handlers`, plus an `exec` handler for each
    /// `--exec KIND=COMMAND` of the configuration.
    pub fn new(config: WorkerConfig, handlers: Handlers) -> Worker {
        let mut handlers = handlers;
        for (kind, argv) in config.exec_handlers() {
            handlers = handlers.with(kind, ExecHandler::new(argv));
        }
        Worker {
            config,
            handlers,
            startup_timeout: Duration::from_secs(60),
        }
    }

    /// How long to keep retrying an unreachable database at start (default 60 s).
    pub fn startup_timeout(mut self, t: Duration) -> Worker {
        self.startup_timeout = t;
        self
    }

    /// Runs until `shutdown` is cancelled, then drains and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let c = &self.config;
        c.validate().map_err(WorkerError::Config)?;
        let url = c.db.url().map_err(WorkerError::Config)?;
        let id = worker_id();
        // Named per process, so that its connections can be told apart in
        // pg_stat_activity (unless the URL names them itself).
        let db = DbConfig::parse(&url)?.with_application_name(&format!("drove-worker {id}"));
        let (queues, weights) = c.queue_weights().map_err(WorkerError::Config)?;
        let settings = Settings {
            queues,
            weights,
            kind_limits: c.kind_concurrency.iter().cloned().collect(),
            slots: c.slots(),
            lease_ttl: c.lease_ttl,
            grace: c.grace,
            poll_interval: c.poll_interval(),
            listen: !c.poll_only,
            reap: c.reap,
            max_batch: c.max_batch,
            max_prefetch: c.max_prefetch,
            prefetch_window: c.prefetch_window,
        };
        let http = tokio::net::TcpListener::bind(c.http_addr)
            .await
            .map_err(|source| WorkerError::Http {
                addr: c.http_addr,
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| WorkerError::Http {
            addr: c.http_addr,
            source,
        })?;

        let me = WorkerInfo {
            id,
            host: hostname(),
            pid: std::process::id() as i32,
            version: crate::VERSION.to_string(),
            queues: settings.queues.clone(),
            slots: settings.slots as i32,
        };
        let main_link = Link::new(db.clone(), c.db.schema.clone());
        connect_and_register(
            &main_link,
            &c.db.schema,
            &me,
            settings.lease_ttl,
            self.startup_timeout,
            &shutdown,
        )
        .await?;
        let shared = Arc::new(Shared::new(
            me,
            c.db.schema.clone(),
            settings,
            self.handlers,
            main_link,
            Link::new(db.clone(), c.db.schema.clone()),
        ));
        tracing::info!(
            worker = %shared.me.id,
            queues = ?shared.settings.queues,
            slots = shared.settings.slots,
            schema = %shared.schema,
            http = %http_addr,
            kinds = ?shared.handlers.kinds().collect::<Vec<_>>(),
            "worker ready"
        );
        run_tasks(shared, db, http, shutdown).await
    }
}

async fn connect_and_register(
    link: &Link,
    schema: &drove_queue::Schema,
    me: &WorkerInfo,
    ttl: Duration,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = crate::fetcher::Backoff::default();
    loop {
        let attempt = async {
            let conn = link.get().await?;
            drove_queue::migrate::check_schema(conn.client(), schema).await?;
            drove_queue::worker_register(&conn, me, ttl).await
        };
        let e = match tokio::time::timeout(crate::link::OP_TIMEOUT * 2, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => drove_queue::Error::Timeout("connecting"),
        };
        link.reset().await;
        if !e.is_transient() {
            return Err(e.into());
        }
        if tokio::time::Instant::now() >= deadline || shutdown.is_cancelled() {
            return Err(WorkerError::Unreachable(timeout, e));
        }
        let delay = backoff.next_delay();
        tracing::warn!(error = %e, retry_in = ?delay, "database not reachable yet");
        tokio::select! {
            _ = shutdown.cancelled() => return Err(WorkerError::Unreachable(timeout, e)),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn run_tasks(
    shared: Arc<Shared>,
    db: DbConfig,
    http: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let stop_claiming = CancellationToken::new();
    let stop_beating = CancellationToken::new();
    let stop_serving = CancellationToken::new();
    let give_up = CancellationToken::new();
    let executor_done = CancellationToken::new();
    let completer_done = CancellationToken::new();
    let beating_done = CancellationToken::new();

    let (job_tx, job_rx) = mpsc::unbounded_channel();
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let (progress_tx, progress_rx) = mpsc::unbounded_channel();

    let mut tasks = JoinSet::new();
    let mut names = HashMap::new();
    let mut spawn = |name: &'static str,
                     fut: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>| {
        let id = tasks.spawn(fut).id();
        names.insert(id, name);
    };
    {
        let (s, stop) = (shared.clone(), stop_serving.clone());
        spawn(
            "http",
            Box::pin(async move {
                if let Err(e) = crate::http::serve(http, s, stop).await {
                    tracing::error!(error = %e, "health server failed");
                }
            }),
        );
    }
    if shared.settings.listen {
        spawn(
            "listener",
            Box::pin(crate::listener::run(
                shared.clone(),
                db,
                stop_serving.clone(),
            )),
        );
    }
    {
        let (s, stop, done) = (shared.clone(), stop_beating.clone(), beating_done.clone());
        spawn(
            "heartbeat",
            Box::pin(async move {
                crate::heartbeat::run(s, stop).await;
                done.cancel();
            }),
        );
    }
    {
        let (s, done) = (shared.clone(), completer_done.clone());
        let give_up = give_up.clone();
        spawn(
            "completer",
            Box::pin(async move {
                crate::completer::run(s, report_rx, progress_rx, give_up).await;
                done.cancel();
            }),
        );
    }
    {
        let (s, stop, done) = (shared.clone(), stop_claiming.clone(), executor_done.clone());
        spawn(
            "executor",
            Box::pin(async move {
                crate::executor::run(s, job_rx, report_tx, progress_tx, stop).await;
                done.cancel();
            }),
        );
    }
    spawn(
        "fetcher",
        Box::pin(crate::fetcher::run(
            shared.clone(),
            job_tx,
            stop_claiming.clone(),
        )),
    );

    // Run until asked to stop, or until a task dies (a bug: say so, drain, exit 1).
    let died = tokio::select! {
        _ = shutdown.cancelled() => None,
        Some(r) = tasks.join_next_with_id() => {
            let (id, why) = match r {
                Ok((id, ())) => (id, "returned".to_string()),
                Err(e) => (e.id(), if e.is_panic() { "panicked".to_string() } else { e.to_string() }),
            };
            let name = names.get(&id).copied().unwrap_or("?");
            tracing::error!(task = name, why = %why, "worker task stopped unexpectedly; shutting down");
            Some(WorkerError::TaskDied(name, why))
        }
    };

    // Drain.
    let grace = shared.settings.grace;
    shared.draining.store(true, Ordering::Release);
    stop_claiming.cancel();
    let running = shared.metrics.busy.get();
    tracing::info!(running, grace = %humantime::format_duration(grace), "draining: no more claims, waiting for running jobs");
    if tokio::time::timeout(grace, executor_done.cancelled())
        .await
        .is_err()
    {
        tracing::warn!(
            still_running = shared.metrics.busy.get(),
            "grace over: stopping running jobs and giving them back"
        );
        shared.stop_all(StopReason::Shutdown);
        let _ = tokio::time::timeout(FLUSH_DEADLINE, executor_done.cancelled()).await;
    }
    if tokio::time::timeout(FLUSH_DEADLINE, completer_done.cancelled())
        .await
        .is_err()
    {
        give_up.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), completer_done.cancelled()).await;
    }
    stop_beating.cancel();
    // A beat still in flight must not come after the deregistration (it
    // would find no row and register again).
    let _ = tokio::time::timeout(Duration::from_secs(1), beating_done.cancelled()).await;
    let left = shared.held_count();
    if left == 0 {
        let me = &shared.me.id;
        let r = shared
            .main_link
            .run("deregister", |conn| async move {
                drove_queue::worker_deregister(&conn, me).await
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not remove this worker from the registry (it will expire)");
        }
    } else {
        tracing::error!(
            unrecorded = left,
            "exiting with unrecorded jobs; they will be reclaimed after the lease expires"
        );
    }
    stop_serving.cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {}
    tasks.abort_all();
    tracing::info!("worker stopped");
    died.map_or(Ok(()), Err)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `host-pid-xxxx`: unique even when a VM is recreated with the same name,
/// and among workers embedded in one process (the suffix starts at a random
/// value and counts up).
fn worker_id() -> String {
    static FIRST: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let first = *FIRST.get_or_init(|| rand::rng().random::<u16>());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{}-{:04x}",
        hostname(),
        std::process::id(),
        first.wrapping_add(n)
    )
}
