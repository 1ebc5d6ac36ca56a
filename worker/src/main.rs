//! `drove-worker`: parse configuration, set up logging, run until SIGTERM.

use clap::Parser;
use drove_worker::{Handlers, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// Runs drove jobs from PostgreSQL. Every option is also an environment variable.
#[derive(Parser)]
#[command(name = "drove-worker", version, about)]
struct Cli {
    #[command(flatten)]
    config: WorkerConfig,

    /// At start, keep retrying an unreachable database for this long.
    #[arg(long, env = "DROVE_STARTUP_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    startup_timeout: std::time::Duration,

    /// Threads running the worker's own work: claims, completions,
    /// heartbeats and the built-in and `exec` jobs, which compute little
    /// there (`spin` burns CPU on a pool of its own, `exec` in its process;
    /// starting a command and reading its output are short); 0 means
    /// tokio's default, one per CPU or `TOKIO_WORKER_THREADS`.
    #[arg(long, env = "DROVE_RUNTIME_THREADS", default_value_t = 1)]
    runtime_threads: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    drove_worker::logging::init(
        cli.config.log_format,
        drove_worker::logging::Target::Service,
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cli.runtime_threads > 0 {
        builder.worker_threads(cli.runtime_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drove-worker: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let worker =
            Worker::new(cli.config, Handlers::builtin()).startup_timeout(cli.startup_timeout);
        let run = worker.run(shutdown.clone());
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => return r,
            _ = drove_worker::shutdown::signal() => shutdown.cancel(),
        }
        run.await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "drove-worker failed");
            eprintln!("drove-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
