//! Logging: JSON lines with Cloud Logging's `severity` and `message` fields
//! (what Cloud Logging parses from a container's stdout), or human-readable
//! text on a terminal. `RUST_LOG` filters as usual (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Where logs go and how much is said when `RUST_LOG` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Long-running services (worker, `drove serve`): stdout, `info`.
    Service,
    /// CLI commands: stderr (stdout is the command's output), `warn`.
    Command,
}

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), so tests and embedding programs need not care.
pub fn init(format: LogFormat, target: Target) {
    let default = match target {
        Target::Service => "info,tokio_postgres=warn",
        Target::Command => "warn,tokio_postgres=error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let to_stderr = target == Target::Command;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto if to_stderr => !std::io::stderr().is_terminal(),
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match (json, to_stderr) {
        (true, false) => registry.with(tracing_stackdriver::layer()).try_init(),
        (true, true) => registry
            .with(tracing_stackdriver::layer().with_writer(std::io::stderr))
            .try_init(),
        (false, false) => registry
            .with(tracing_subscriber::fmt::layer().with_target(false))
            .try_init(),
        (false, true) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
