//! Worker configuration: every knob is a flag and an environment variable
//! (12-factor), with defaults as named constants.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Drain grace on SIGTERM: leaves about 5 s of `docker stop`'s default 30 s
/// (and of a MIG VM's soft-shutdown window) to release leases and exit.
pub const DEFAULT_GRACE: &str = "25s";
/// Worker lease: a killed worker's jobs run again elsewhere within about
/// this long plus one heartbeat interval.
pub const DEFAULT_LEASE_TTL: &str = "10s";
/// Fallback poll when LISTEN/NOTIFY is in use (jittered by ±20%).
pub const DEFAULT_POLL_INTERVAL: &str = "10s";
/// Poll interval in poll-only mode (PgBouncer transaction pooling).
pub const DEFAULT_POLL_ONLY_INTERVAL: &str = "1s";
/// Most jobs one claim statement takes.
pub const DEFAULT_MAX_BATCH: i64 = 1000;
/// Upper bound on jobs claimed ahead of free slots. It binds only for
/// jobs shorter than the prefetch window over it (25 µs at 2 slots);
/// `drove bench drain` measured 4000 ahead of 2000 in two series (69.6k
/// against 61.7k jobs/s, medians of 5; 62.5k against 59.3k, of 4): the
/// next claim of 1000 then starts while the completions of the last are
/// still being written.
pub const DEFAULT_MAX_PREFETCH: usize = 4000;
/// How much work (in run time) a worker may hold ahead of its slots.
pub const DEFAULT_PREFETCH_WINDOW: &str = "50ms";
/// Where the health and metrics server listens.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON on a non-terminal stdout, text on a terminal.
    Auto,
    /// One JSON object per line, with Cloud Logging's `severity`.
    Json,
    /// Human-readable lines.
    Text,
}

/// Where the queue lives: shared by the worker and the `drove` CLI.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL URL (postgres://user:pass@host:5432/db?sslmode=verify-full&sslrootcert=/ca.pem).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// File holding the PostgreSQL URL (a mounted secret); used when DATABASE_URL is not set.
    #[arg(long, env = "DROVE_DATABASE_URL_FILE", global = true)]
    pub database_url_file: Option<std::path::PathBuf>,

    /// Schema of this deployment; several deployments (prod, staging) can share a database.
    #[arg(long, env = "DROVE_SCHEMA", default_value = drove_queue::schema::DEFAULT_SCHEMA, global = true)]
    pub schema: drove_queue::Schema,
}

impl DbArgs {
    /// The database URL, from the flag/env or the secret file.
    pub fn url(&self) -> Result<String, String> {
        if let Some(url) = self.database_url.as_ref().filter(|u| !u.trim().is_empty()) {
            return Ok(url.trim().to_string());
        }
        match &self.database_url_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    format!(
                        "cannot read DROVE_DATABASE_URL_FILE {}: {e}",
                        path.display()
                    )
                }),
            None => Err(
                "no database URL: set DATABASE_URL (or --database-url, or DROVE_DATABASE_URL_FILE)"
                    .into(),
            ),
        }
    }

    /// The parsed database configuration.
    pub fn config(&self) -> Result<drove_queue::DbConfig, String> {
        drove_queue::DbConfig::parse(&self.url()?).map_err(|e| e.to_string())
    }
}

/// The worker's settings.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub db: DbArgs,

    /// Queues to serve (comma-separated): in strict priority order
    /// (`a,b`: b only gets slots a leaves free), or weighted (`a:3,b:1`:
    /// free slots are shared 3 to 1 while both have work; what one leaves
    /// unused goes to the other).
    #[arg(
        long,
        env = "DROVE_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,

    /// Jobs run at once (default: the number of CPUs, one CPU-bound job per core).
    #[arg(long, env = "DROVE_SLOTS")]
    pub slots: Option<usize>,

    /// On SIGTERM: how long running jobs may take to finish before they are
    /// stopped and released to other workers.
    #[arg(long, env = "DROVE_GRACE", default_value = DEFAULT_GRACE, value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// Lease on this worker's jobs, renewed by heartbeats; after it runs out,
    /// other workers reclaim the jobs.
    #[arg(long, env = "DROVE_LEASE_TTL", default_value = DEFAULT_LEASE_TTL, value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Health, readiness and metrics server address.
    #[arg(long = "http", env = "DROVE_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// Do not use LISTEN/NOTIFY (e.g. behind PgBouncer in transaction mode); poll instead.
    #[arg(long, env = "DROVE_POLL_ONLY")]
    pub poll_only: bool,

    /// Fallback poll interval (default 10s, or 1s with --poll-only).
    #[arg(long, env = "DROVE_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    pub poll_interval: Option<Duration>,

    /// Most jobs claimed by one statement.
    #[arg(long, env = "DROVE_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: i64,

    /// Most jobs held ahead of free slots; the actual number adapts to the
    /// observed run time so that at most --prefetch-window of work waits
    /// locally (0 disables prefetching).
    #[arg(long, env = "DROVE_MAX_PREFETCH", default_value_t = DEFAULT_MAX_PREFETCH)]
    pub max_prefetch: usize,

    /// Run time worth of jobs a worker may hold ahead of its slots.
    #[arg(long, env = "DROVE_PREFETCH_WINDOW", default_value = DEFAULT_PREFETCH_WINDOW, value_parser = humantime::parse_duration)]
    pub prefetch_window: Duration,

    /// Run a command for a job kind: KIND=COMMAND ARGS (repeatable). The
    /// payload JSON is its stdin, its stdout (JSON if it parses) the result,
    /// a non-zero exit a failure.
    #[arg(long = "exec", value_parser = parse_exec)]
    pub exec: Vec<(String, Vec<String>)>,

    /// More exec handlers as a JSON object {"KIND": "COMMAND ARGS", ...}
    /// (the environment form of --exec).
    #[arg(long = "exec-json", env = "DROVE_EXEC", value_parser = parse_exec_json)]
    pub exec_json: Option<ExecMap>,

    /// Most jobs of a kind running at once in this worker: KIND=N, comma-separated
    /// (e.g. `render=1,email=8`). Jobs of a kind at its limit wait aside,
    /// without taking a slot.
    #[arg(long, env = "DROVE_KIND_CONCURRENCY", value_delimiter = ',', value_parser = parse_kind_limit)]
    pub kind_concurrency: Vec<(String, usize)>,

    /// Log format.
    #[arg(long, env = "DROVE_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,

    /// Also reclaim the jobs of dead workers (on by default; any number of
    /// workers may do it at once).
    #[arg(long, env = "DROVE_REAP", default_value_t = true, action = clap::ArgAction::Set)]
    pub reap: bool,
}

/// `KIND=N`, N at least 1.
fn parse_kind_limit(s: &str) -> Result<(String, usize), String> {
    let (kind, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KIND=N, got {s:?}"))?;
    let n: usize = n.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        format!("the limit of {kind:?} must be a whole number of at least 1, got {n:?}")
    })?;
    Ok((kind.trim().to_string(), n))
}

impl WorkerConfig {
    /// The queue names of `--queues`, and their weights if any was given
    /// (`name:weight`; a queue without one weighs 1).
    pub fn queue_weights(&self) -> Result<(Vec<String>, Option<Vec<u32>>), String> {
        let mut names = Vec::new();
        let mut weights = Vec::new();
        let mut weighted = false;
        for spec in &self.queues {
            let (name, weight) = match spec.rsplit_once(':') {
                Some((name, w)) if !w.is_empty() && w.chars().all(|c| c.is_ascii_digit()) => {
                    weighted = true;
                    let w: u32 = w.parse().ok().filter(|w| (1..=1000).contains(w)).ok_or_else(|| {
                        format!("the weight of queue {name:?} in --queues must be between 1 and 1000, got {w}")
                    })?;
                    (name, w)
                }
                _ => (spec.as_str(), 1),
            };
            if !drove_queue::job::valid_queue_name(name) {
                return Err(format!(
                    "invalid queue name {name:?} in --queues: {}",
                    drove_queue::job::QUEUE_NAME_RULE
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("queue {name:?} is twice in --queues"));
            }
            names.push(name.to_string());
            weights.push(weight);
        }
        Ok((names, weighted.then_some(weights)))
    }

    /// The number of slots: configured, or one per CPU.
    pub fn slots(&self) -> usize {
        self.slots
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1)
    }

    /// The fallback poll interval for the chosen mode.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval.unwrap_or_else(|| {
            let d = if self.poll_only {
                DEFAULT_POLL_ONLY_INTERVAL
            } else {
                DEFAULT_POLL_INTERVAL
            };
            humantime::parse_duration(d).expect("default durations parse")
        })
    }

    /// Checks relations between settings that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(format!(
                "--lease-ttl {:?} is too short (at least 1s)",
                self.lease_ttl
            ));
        }
        if self.queues.is_empty() {
            return Err("--queues is empty".into());
        }
        self.queue_weights()?;
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(format!(
                "--max-batch {} must be between 1 and 10000",
                self.max_batch
            ));
        }
        Ok(())
    }
}

/// Exec handlers given as one JSON object.
#[derive(Debug, Clone)]
pub struct ExecMap(pub Vec<(String, Vec<String>)>);

fn parse_exec_json(s: &str) -> Result<ExecMap, String> {
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(s)
        .map_err(|e| format!("expected a JSON object {{\"KIND\": \"COMMAND ARGS\"}}: {e}"))?;
    map.into_iter()
        .map(|(kind, cmd)| parse_exec(&format!("{kind}={cmd}")))
        .collect::<Result<_, _>>()
        .map(ExecMap)
}

impl WorkerConfig {
    /// Every exec handler: --exec entries, then DROVE_EXEC's.
    pub fn exec_handlers(&self) -> Vec<(String, Vec<String>)> {
        self.exec
            .iter()
            .chain(self.exec_json.iter().flat_map(|m| &m.0))
            .cloned()
            .collect()
    }
}

fn parse_exec(s: &str) -> Result<(String, Vec<String>), String> {
    let (kind, cmd) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KIND=COMMAND, got {s:?}"))?;
    let kind = kind.trim();
    if kind.is_empty() {
        return Err(format!("empty job kind in {s:?}"));
    }
    let argv = shell_words::split(cmd).map_err(|e| format!("cannot split command {cmd:?}: {e}"))?;
    if argv.is_empty() {
        return Err(format!("empty command for kind {kind:?}"));
    }
    Ok((kind.to_string(), argv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: WorkerConfig,
    }

    #[test]
    fn exec_entries_parse_with_shell_quoting() {
        assert_eq!(
            parse_exec("resize=/bin/convert --size '10 x 10'").unwrap(),
            (
                "resize".to_string(),
                vec!["/bin/convert".into(), "--size".into(), "10 x 10".into()]
            )
        );
        assert!(parse_exec("nokind").is_err());
        let c = Cli::try_parse_from([
            "w",
            "--database-url",
            "x",
            "--exec",
            "a=/bin/sh -c 'echo 1; exit 3'",
            "--exec-json",
            r#"{"b": "/bin/b --x"}"#,
        ])
        .unwrap()
        .config;
        let kinds: Vec<(String, Vec<String>)> = c.exec_handlers();
        assert_eq!(kinds[0].1, vec!["/bin/sh", "-c", "echo 1; exit 3"]);
        assert_eq!(
            kinds[1],
            (
                "b".to_string(),
                vec!["/bin/b".to_string(), "--x".to_string()]
            )
        );
        assert!(parse_exec_json("not json").is_err());
        assert!(parse_exec("k=").is_err());
    }

    #[test]
    fn defaults_and_bad_values() {
        let c = Cli::try_parse_from(["w", "--database-url", "postgres://h/db"])
            .unwrap()
            .config;
        assert_eq!(c.grace, Duration::from_secs(25));
        assert_eq!(c.queues, vec!["default"]);
        assert_eq!(c.poll_interval(), Duration::from_secs(10));
        assert!(c.slots() >= 1);
        assert!(c.validate().is_ok());
        let err = Cli::try_parse_from(["w", "--database-url", "x", "--grace", "soon"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("soon"), "{err}");
        let c = Cli::try_parse_from(["w", "--database-url", "x", "--queues", "a,b c"])
            .unwrap()
            .config;
        assert!(c.validate().unwrap_err().contains("b c"));
    }
}
