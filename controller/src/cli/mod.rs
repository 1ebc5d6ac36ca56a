//! The `drove` command line: one module per subcommand.

pub mod add;
pub mod cron;
pub mod follow;
pub mod jobs;
pub mod migrate;
pub mod queues;
pub mod reap;
pub mod stats;
pub mod table;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use drove_queue::Conn;
use drove_worker::LogFormat;
use drove_worker::config::DbArgs;

/// drove: background jobs on Google Cloud managed instance groups, with
/// PostgreSQL as the queue. Every option is also an environment variable.
#[derive(Parser)]
#[command(name = "drove", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,

    /// Log format.
    #[arg(
        long,
        env = "DROVE_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create or upgrade the schema (safe to run from several processes at once).
    Migrate,
    /// Seed-style load: enqueue N `spin` jobs that each burn DIFFICULTY ms of CPU.
    Add(add::AddArgs),
    /// Queue depths, oldest waiting job and live workers.
    Stats(stats::StatsArgs),
    /// Inspect, enqueue, retry and cancel jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Create, configure, pause and resume queues.
    #[command(subcommand)]
    Queues(queues::QueuesCommand),
    /// Reclaim the jobs of workers whose lease expired (once, or in a loop).
    Reap(reap::ReapArgs),
    /// Cron schedules: list, set, delete, apply a file.
    #[command(subcommand)]
    Cron(cron::CronCommand),
    /// Measure throughput, latency and footprint (on a throwaway PostgreSQL unless --database-url).
    Bench(crate::bench::BenchArgs),
    /// Run the controller: health, metrics, API, housekeeping, scaling.
    Serve(Box<crate::serve::ServeArgs>),
    /// The local demo: PostgreSQL, the controller, an autoscaled group of workers, bursts of jobs.
    Demo(crate::demo::DemoArgs),
}

impl Command {
    /// Where this command's logs go.
    pub fn log_target(&self) -> drove_worker::logging::Target {
        match self {
            Command::Serve(_) => drove_worker::logging::Target::Service,
            _ => drove_worker::logging::Target::Command,
        }
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Migrate => migrate::run(&cli.db).await,
        Command::Add(args) => add::run(&cli.db, args).await,
        Command::Stats(args) => stats::run(&cli.db, args).await,
        Command::Jobs(cmd) => jobs::run(&cli.db, cmd).await,
        Command::Queues(cmd) => queues::run(&cli.db, cmd).await,
        Command::Reap(args) => reap::run(&cli.db, args).await,
        Command::Cron(cmd) => cron::run(&cli.db, cmd).await,
        Command::Bench(args) => crate::bench::run(&cli.db, args).await,
        Command::Demo(args) => crate::demo::run(&cli.db, args).await,
        Command::Serve(args) => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            let run = crate::serve::run(&cli.db, *args, shutdown.clone());
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => r?,
                _ = drove_worker::shutdown::signal() => {
                    shutdown.cancel();
                    run.await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Connects to the configured database.
pub async fn connect(db: &DbArgs) -> Result<Conn> {
    let config = db.config().map_err(anyhow::Error::msg)?;
    Conn::connect(&config, &db.schema)
        .await
        .with_context(|| format!("connecting to {}", config.display()))
}

/// Connects and checks that the schema is migrated to this build's version.
pub async fn connect_checked(db: &DbArgs) -> Result<Conn> {
    let conn = connect(db).await?;
    drove_queue::migrate::check_schema(conn.client(), &db.schema).await?;
    Ok(conn)
}
