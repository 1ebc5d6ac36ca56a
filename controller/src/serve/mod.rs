//! `drove serve`: the controller. One process serves health, metrics and
//! the API, refreshes the cached statistics, and campaigns for leadership;
//! the leader also runs the reaper, the pruner, the vacuumer, cron and the
//! scaler. Any number of controllers may run side by side.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod http;
pub mod metrics;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use drove_worker::config::DbArgs;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::maintenance::cron::{CronConfig, CronFirer};
use crate::maintenance::pruner::{Pruner, PrunerConfig};
use crate::maintenance::reaper::{Reaper, ReaperConfig};
use crate::maintenance::run_loop;
use crate::maintenance::scheduler::{Scheduler, SchedulerConfig};
use crate::maintenance::stats::{StatsCache, StatsConfig, StatsRefresher};
use crate::maintenance::vacuumer::{Vacuumer, VacuumerConfig};
use crate::scaling::backend::Backend;
use crate::scaling::scaler::{Scaler, ScalingStatus};
use crate::scaling::{ScalerKind, ScalingArgs};
use auth::Token;
use drove_queue::vacuum::VacuumPolicy;
use metrics::ControllerMetrics;
use state::{AppState, Inner};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTP server (health, metrics, API, dashboard).
    #[arg(long, env = "DROVE_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// API bearer token (prefer --api-token-file). Without either, a random
    /// token is generated and logged at start.
    #[arg(long, env = "DROVE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// File holding the API bearer token (a mounted secret).
    #[arg(long, env = "DROVE_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Run the schema migrations at start (under an advisory lock).
    #[arg(long, env = "DROVE_MIGRATE_ON_START", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub migrate_on_start: bool,
    /// Shortest time between statistics refreshes (it stretches on huge backlogs).
    #[arg(long, env = "DROVE_STATS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub stats_interval: Duration,
    /// How often the leader reclaims the jobs of dead workers.
    #[arg(long, env = "DROVE_REAP_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub reap_interval: Duration,
    /// How often the leader prunes finished jobs past retention.
    #[arg(long, env = "DROVE_PRUNE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub prune_interval: Duration,
    /// How often the leader checks the job tables' dead rows and vacuums
    /// those past the thresholds below ("0s": leave it all to autovacuum).
    #[arg(long, env = "DROVE_VACUUM_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub vacuum_interval: Duration,
    /// A job table is vacuumed once it has at least this many dead rows ...
    #[arg(long, env = "DROVE_VACUUM_MIN_DEAD", default_value_t = VacuumPolicy::default().min_dead)]
    pub vacuum_min_dead: i64,
    /// ... and at least this fraction of its live rows dead.
    #[arg(long, env = "DROVE_VACUUM_DEAD_FRACTION", default_value_t = VacuumPolicy::default().dead_fraction)]
    pub vacuum_dead_fraction: f64,
    /// A cron time missed by at most this long still fires (restarts).
    #[arg(long, env = "DROVE_CRON_LATE_TOLERANCE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub cron_late_tolerance: Duration,
    /// Largest request body in bytes.
    #[arg(long, env = "DROVE_MAX_BODY", default_value_t = 8 << 20)]
    pub max_body: usize,
    /// Most jobs in one batch enqueue request.
    #[arg(long, env = "DROVE_MAX_BATCH_JOBS", default_value_t = 10_000)]
    pub max_batch_jobs: usize,
    /// Cron schedules to create or replace at start: a JSON file
    /// {"NAME": {"schedule": "0 3 * * *", "kind": "report", ...}, ...}.
    #[arg(long, env = "DROVE_CRON_FILE")]
    pub cron_file: Option<PathBuf>,
    /// Database connections for the API and loops.
    #[arg(long, env = "DROVE_POOL_SIZE", default_value_t = 8)]
    pub pool_size: usize,
    #[command(flatten)]
    pub scaling: ScalingArgs,
}

fn token(args: &ServeArgs) -> Result<Token> {
    if let Some(path) = &args.api_token_file {
        let value = std::fs::read_to_string(path)
            .with_context(|| format!("reading DROVE_API_TOKEN_FILE {}", path.display()))?;
        return Token::new(&value).map_err(|e| anyhow::anyhow!("{e} ({})", path.display()));
    }
    if let Some(value) = &args.api_token {
        return Token::new(value).map_err(anyhow::Error::msg);
    }
    let t = Token::random();
    tracing::warn!(
        token = t.value(),
        "no API token configured (DROVE_API_TOKEN_FILE); generated one for this run"
    );
    Ok(t)
}

/// Runs the controller until `shutdown`.
pub async fn run(db: &DbArgs, args: ServeArgs, shutdown: CancellationToken) -> Result<()> {
    let policy = args.scaling.policy().map_err(anyhow::Error::msg)?;
    let config = db.config().map_err(anyhow::Error::msg)?;
    let token = token(&args)?;
    let schema = db.schema.clone();
    // Every configuration error before touching the database.
    let worker_env = vec![
        (
            "DATABASE_URL".to_string(),
            db.url().map_err(anyhow::Error::msg)?,
        ),
        ("DROVE_SCHEMA".to_string(), schema.name().to_string()),
    ];
    // The docker backend is kept typed too: its group API is mounted under /v1.
    let (backend, group) = match args.scaling.scaler {
        ScalerKind::Docker => {
            let group = Arc::new(
                args.scaling
                    .docker
                    .backend(&worker_env)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            (Some(group.clone() as Arc<dyn Backend>), Some(group))
        }
        _ => (
            args.scaling
                .backend(&worker_env)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            None,
        ),
    };

    // The database must answer and the schema be current before serving.
    let mut conn = connect_with_retry(&config, &schema, &shutdown).await?;
    if args.migrate_on_start {
        let out = drove_queue::migrate(conn.client_mut(), &schema).await?;
        if !out.applied.is_empty() {
            tracing::info!(from = out.from, to = out.to, "schema migrated");
        }
    } else {
        drove_queue::migrate::check_schema(conn.client(), &schema).await?;
    }
    if let Some(file) = &args.cron_file {
        for (name, spec) in crate::cli::cron::read_file(file)? {
            let c = drove_queue::cron::cron_upsert(conn.client(), &schema, &name, &spec)
                .await
                .with_context(|| format!("cron schedule {name:?} in {}", file.display()))?;
            tracing::info!(schedule = %c.name, next = %c.next_fire_at, "cron schedule from file");
        }
    }
    drop(conn);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;

    let pool = crate::pool::build(config.clone(), schema.clone(), args.pool_size);
    let metrics = ControllerMetrics::new();
    let cache = Arc::new(StatsCache::new());
    let scaling = Arc::new(Mutex::new(ScalingStatus {
        backend: "none".into(),
        ..Default::default()
    }));
    let (leader_tx, leader_rx) = watch::channel(false);
    let state = AppState::new(Inner {
        schema: schema.clone(),
        pool: pool.clone(),
        token,
        cache: cache.clone(),
        metrics: metrics.clone(),
        leader: leader_rx.clone(),
        scaling: scaling.clone(),
        max_batch: args.max_batch_jobs,
    });

    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::leader::run(
        config.clone(),
        schema.clone(),
        leader_tx,
        stop.clone(),
    ));
    let loops = (leader_rx, metrics.clone(), stop.clone());
    tasks.spawn(run_loop(
        StatsRefresher::new(
            pool.clone(),
            schema.clone(),
            cache.clone(),
            metrics.clone(),
            StatsConfig {
                interval: args.stats_interval,
                ..Default::default()
            },
        ),
        loops.0.clone(),
        loops.1.clone(),
        loops.2.clone(),
    ));
    tasks.spawn(run_loop(
        Reaper::new(
            pool.clone(),
            schema.clone(),
            metrics.clone(),
            ReaperConfig {
                interval: args.reap_interval,
                ..Default::default()
            },
        ),
        loops.0.clone(),
        loops.1.clone(),
        loops.2.clone(),
    ));
    tasks.spawn(run_loop(
        Pruner {
            pool: pool.clone(),
            schema: schema.clone(),
            metrics: metrics.clone(),
            config: PrunerConfig {
                interval: args.prune_interval,
                ..Default::default()
            },
        },
        loops.0.clone(),
        loops.1.clone(),
        loops.2.clone(),
    ));
    if !args.vacuum_interval.is_zero() {
        tasks.spawn(run_loop(
            Vacuumer {
                pool: pool.clone(),
                schema: schema.clone(),
                metrics: metrics.clone(),
                config: VacuumerConfig {
                    interval: args.vacuum_interval,
                    policy: VacuumPolicy {
                        min_dead: args.vacuum_min_dead,
                        dead_fraction: args.vacuum_dead_fraction,
                    },
                },
            },
            loops.0.clone(),
            loops.1.clone(),
            loops.2.clone(),
        ));
    }
    tasks.spawn(run_loop(
        CronFirer {
            pool: pool.clone(),
            schema: schema.clone(),
            metrics: metrics.clone(),
            config: CronConfig {
                late_tolerance: args.cron_late_tolerance,
                ..Default::default()
            },
        },
        loops.0.clone(),
        loops.1.clone(),
        loops.2.clone(),
    ));
    tasks.spawn(run_loop(
        Scheduler::new(pool.clone(), schema.clone(), SchedulerConfig::default()),
        loops.0.clone(),
        loops.1.clone(),
        loops.2.clone(),
    ));
    if let Some(backend) = backend.clone() {
        tasks.spawn(run_loop(
            Scaler::new(
                pool.clone(),
                schema.clone(),
                backend,
                policy,
                cache.clone(),
                metrics.clone(),
                args.scaling.scale_interval,
                scaling.clone(),
            ),
            loops.0.clone(),
            loops.1.clone(),
            loops.2.clone(),
        ));
    }
    let extra_v1 = group.map(crate::scaling::docker::routes);
    let app = http::router(state, args.max_body, extra_v1);
    {
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }
    tracing::info!(
        listen = %addr,
        schema = %schema,
        scaler = ?args.scaling.scaler,
        "controller ready"
    );

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    stop.cancel();
    if let Some(b) = backend {
        b.shutdown().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        if let Err(e) = r
            && e.is_panic()
        {
            tracing::error!("a controller task panicked");
        }
    }
    tasks.abort_all();
    pool.close();
    Ok(())
}

async fn connect_with_retry(
    config: &drove_queue::DbConfig,
    schema: &drove_queue::Schema,
    shutdown: &CancellationToken,
) -> Result<drove_queue::Conn> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut delay = Duration::from_millis(200);
    loop {
        match drove_queue::Conn::connect(config, schema).await {
            Ok(c) => return Ok(c),
            Err(e)
                if e.is_transient()
                    && tokio::time::Instant::now() < deadline
                    && !shutdown.is_cancelled() =>
            {
                tracing::warn!(error = %e, "database not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => bail!("interrupted while waiting for the database"),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
