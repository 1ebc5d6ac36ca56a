//! `drove queues list|create|set|pause|resume|delete`

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use drove_queue::QueueSettings;
use drove_queue::queues::{self, QueueInfo};
use drove_worker::config::DbArgs;

use super::table::{render, secs};

#[derive(Subcommand)]
pub enum QueuesCommand {
    /// All queues and their settings.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a queue (and apply settings).
    Create {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Change a queue's settings.
    Set {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Stop workers from starting jobs of a queue.
    Pause { name: String },
    /// Let workers start jobs of a queue again.
    Resume { name: String },
    /// Delete a queue that has no waiting or running jobs.
    Delete { name: String },
}

#[derive(Args, Default)]
pub struct SettingsArgs {
    /// Attempts before a failing job is dead.
    #[arg(long)]
    max_attempts: Option<i32>,
    /// First retry delay (doubles each attempt, with jitter).
    #[arg(long, value_parser = humantime::parse_duration)]
    backoff_base: Option<Duration>,
    /// Longest retry delay.
    #[arg(long, value_parser = humantime::parse_duration)]
    backoff_max: Option<Duration>,
    /// Default per-attempt time limit ("none" to clear).
    #[arg(long, value_parser = parse_opt_duration)]
    timeout: Option<OrNone<Duration>>,
    /// Most jobs of this queue running at once across the fleet ("none" to clear).
    #[arg(long, value_parser = parse_opt_u32)]
    max_running: Option<OrNone<u32>>,
    /// Most jobs started per second across the fleet ("none" to clear).
    #[arg(long, value_parser = parse_opt_f64)]
    rate: Option<OrNone<f64>>,
    /// How long succeeded jobs are kept.
    #[arg(long, value_parser = humantime::parse_duration)]
    keep_succeeded: Option<Duration>,
    /// How long dead jobs are kept.
    #[arg(long, value_parser = humantime::parse_duration)]
    keep_dead: Option<Duration>,
    /// Whether later jobs of an ordering key wait for a dead one (until it is
    /// retried or cancelled) or skip past it.
    #[arg(long, value_parser = ["wait", "skip"])]
    ordering_on_dead: Option<String>,
}

/// A setting's value, or `none` to clear it. (A newtype: clap reads
/// `Option<Option<T>>` as a flag whose value may be left out.)
#[derive(Debug, Clone, Copy)]
struct OrNone<T>(Option<T>);

fn none_or<T>(s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<OrNone<T>, String> {
    if s == "none" {
        Ok(OrNone(None))
    } else {
        parse(s).map(|v| OrNone(Some(v)))
    }
}

fn parse_opt_duration(s: &str) -> Result<OrNone<Duration>, String> {
    none_or(s, |s| {
        humantime::parse_duration(s).map_err(|e| e.to_string())
    })
}

fn parse_opt_u32(s: &str) -> Result<OrNone<u32>, String> {
    none_or(s, |s| {
        s.parse()
            .map_err(|_| format!("expected a positive number or none, got {s:?}"))
    })
}

fn parse_opt_f64(s: &str) -> Result<OrNone<f64>, String> {
    none_or(s, |s| {
        s.parse()
            .map_err(|_| format!("expected a number or none, got {s:?}"))
    })
}

fn ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

impl SettingsArgs {
    fn settings(&self) -> QueueSettings {
        QueueSettings {
            paused: None,
            max_attempts: self.max_attempts,
            backoff_base_ms: self.backoff_base.map(ms),
            backoff_max_ms: self.backoff_max.map(ms),
            timeout_ms: self.timeout.map(|t| t.0.map(ms)),
            max_running: self
                .max_running
                .map(|m| m.0.map(|m| i32::try_from(m).unwrap_or(i32::MAX))),
            rate_per_sec: self.rate.map(|r| r.0),
            keep_succeeded: self.keep_succeeded,
            keep_dead: self.keep_dead,
            ordering_on_dead: self
                .ordering_on_dead
                .as_deref()
                .and_then(|s| s.parse().ok()),
        }
    }
}

pub async fn run(db: &DbArgs, cmd: QueuesCommand) -> Result<ExitCode> {
    let conn = super::connect_checked(db).await?;
    let (client, schema) = (conn.client(), &db.schema);
    let shown = match cmd {
        QueuesCommand::List { json } => {
            let all = queues::queues_list(client, schema).await?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                print!("{}", table(&all));
            }
            return Ok(ExitCode::SUCCESS);
        }
        QueuesCommand::Create { name, settings } => {
            queues::queue_create(client, schema, &name, &settings.settings()).await?
        }
        QueuesCommand::Set { name, settings } => {
            queues::queue_update(client, schema, &name, &settings.settings()).await?
        }
        QueuesCommand::Pause { name } => {
            queues::queue_set_paused(client, schema, &name, true).await?
        }
        QueuesCommand::Resume { name } => {
            queues::queue_set_paused(client, schema, &name, false).await?
        }
        QueuesCommand::Delete { name } => {
            queues::queue_delete(client, schema, &name).await?;
            println!("queue {name} deleted");
            return Ok(ExitCode::SUCCESS);
        }
    };
    print!("{}", table(&[shown]));
    Ok(ExitCode::SUCCESS)
}

fn table(all: &[QueueInfo]) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|q| {
            vec![
                q.name.clone(),
                if q.paused {
                    "paused".into()
                } else {
                    "active".into()
                },
                q.max_attempts.to_string(),
                format!(
                    "{}..{}",
                    secs(q.backoff_base_ms as f64 / 1000.0),
                    secs(q.backoff_max_ms as f64 / 1000.0)
                ),
                opt(q.timeout_ms.map(|t| secs(t as f64 / 1000.0))),
                opt(q.max_running.map(|m| m.to_string())),
                opt(q.rate_per_sec.map(|r| format!("{r}/s"))),
                format!("{} / {}", secs(q.keep_succeeded_s), secs(q.keep_dead_s)),
                q.ordering_on_dead.as_str().into(),
            ]
        })
        .collect();
    render(
        &[
            "QUEUE",
            "STATE",
            ">ATTEMPTS",
            "BACKOFF",
            "TIMEOUT",
            "MAX RUNNING",
            "RATE",
            "KEEP OK / DEAD",
            "ON DEAD",
        ],
        &rows,
    )
}
