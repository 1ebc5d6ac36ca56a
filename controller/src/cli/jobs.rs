//! `drove jobs show|list|add|retry|cancel`

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use drove_queue::{JobFilter, JobId, JobInfo, JobState, NewJob};
use drove_worker::config::DbArgs;

use super::table::render;

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Everything about one job: state, attempts, errors, progress, result.
    Show {
        id: JobId,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recent jobs, newest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// available, running, succeeded, dead or cancelled.
        #[arg(long)]
        state: Option<JobState>,
        /// Only jobs with a failed attempt on record (with --state available:
        /// the jobs waiting to be retried).
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Enqueue one job of any kind.
    Add(AddJob),
    /// Put a dead or cancelled job back in the queue, or all dead jobs.
    Retry {
        /// Job id (or use --dead).
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        id: Option<JobId>,
        /// Retry every dead job (of --queue, or of all queues).
        #[arg(long)]
        dead: bool,
        #[arg(long, requires = "dead")]
        queue: Option<String>,
    },
    /// Cancel a job: at once if waiting, within seconds if running.
    Cancel { id: JobId },
}

#[derive(Args)]
pub struct AddJob {
    /// Job kind (the handler that runs it).
    #[arg(long)]
    kind: String,
    /// Payload JSON.
    #[arg(long, default_value = "{}")]
    payload: String,
    #[arg(long, default_value = "default")]
    queue: String,
    /// Lower runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    priority: i16,
    /// Run no sooner than this from now (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    #[arg(long)]
    max_attempts: Option<i32>,
    /// Per-attempt time limit (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// At most one job of the queue holds this key (see --unique-scope);
    /// enqueueing it again prints the holder's id.
    #[arg(long)]
    unique_key: Option<String>,
    /// How long the unique key is held: pending, active (default), or a window such as 10m.
    #[arg(long, requires = "unique_key")]
    unique_scope: Option<drove_queue::UniqueScope>,
    /// Jobs with the same ordering key run one at a time, in enqueue order.
    #[arg(long)]
    ordering_key: Option<String>,
    /// Follow it to completion and print its outcome.
    #[arg(long)]
    wait: bool,
}

pub async fn run(db: &DbArgs, cmd: JobsCommand) -> Result<ExitCode> {
    let conn = super::connect_checked(db).await?;
    let (client, schema) = (conn.client(), &db.schema);
    match cmd {
        JobsCommand::Show { id, json } => {
            let job = drove_queue::job_get(client, schema, id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", describe(&job));
            }
        }
        JobsCommand::List {
            queue,
            kind,
            state,
            failed,
            limit,
            json,
        } => {
            let filter = JobFilter {
                queue,
                kind,
                state,
                failed: failed.then_some(true),
                before_id: None,
                limit: Some(limit),
            };
            let jobs = drove_queue::jobs_list(client, schema, &filter).await?;
            if json {
                println!("{}", serde_json::to_string(&jobs)?);
            } else {
                let rows: Vec<Vec<String>> = jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.to_string(),
                            j.queue.clone(),
                            j.kind.clone(),
                            j.state.to_string(),
                            format!("{}/{}", j.attempt, j.max_attempts),
                            j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            last_error(j).unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render(
                        &[
                            ">ID",
                            "QUEUE",
                            "KIND",
                            "STATE",
                            ">ATTEMPTS",
                            "CREATED",
                            "LAST ERROR"
                        ],
                        &rows
                    )
                );
            }
        }
        JobsCommand::Add(a) => {
            let mut job = NewJob::new(a.kind)
                .with_queue(a.queue)
                .with_payload_json(&a.payload)?
                .with_priority(a.priority);
            if let Some(d) = a.delay {
                job = job.with_delay(d);
            }
            if let Some(n) = a.max_attempts {
                job = job.with_max_attempts(n);
            }
            if let Some(t) = a.timeout {
                job = job.with_timeout(t);
            }
            job.unique_key = a.unique_key;
            job.unique_scope = a.unique_scope;
            job.ordering_key = a.ordering_key;
            let e = drove_queue::jobs_enqueue_detailed(client, schema, std::slice::from_ref(&job))
                .await?[0];
            let id = e.id;
            if e.existing {
                println!("job {id} already holds that unique key: nothing enqueued");
            } else {
                println!("enqueued job {id}");
            }
            if a.wait {
                super::follow::follow(&conn, schema, &[id], false).await?;
                let job = drove_queue::job_get(client, schema, id).await?;
                print!("{}", describe(&job));
                if job.state != JobState::Succeeded {
                    return Ok(ExitCode::from(1));
                }
            }
        }
        JobsCommand::Retry { id: Some(id), .. } => {
            drove_queue::job_retry(client, schema, id).await?;
            println!("job {id} is available again");
        }
        JobsCommand::Retry {
            id: None,
            dead,
            queue,
        } => {
            if !dead {
                bail!("give a job id or --dead");
            }
            let ids = drove_queue::jobs_retry_dead(client, schema, queue.as_deref()).await?;
            println!(
                "{} dead job{} available again",
                ids.len(),
                if ids.len() == 1 { " is" } else { "s are" }
            );
        }
        JobsCommand::Cancel { id } => match drove_queue::job_cancel(client, schema, id).await? {
            drove_queue::Cancelled::Now => println!("job {id} cancelled"),
            drove_queue::Cancelled::Requested => {
                println!(
                    "job {id} is running: its worker was told to stop it (it will show as cancelled within seconds)"
                )
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn last_error(j: &JobInfo) -> Option<String> {
    let e = j.errors.as_array()?.last()?.get("error")?.as_str()?;
    let first_line = e.lines().next().unwrap_or_default();
    Some(if first_line.chars().count() > 60 {
        first_line.chars().take(59).collect::<String>() + "…"
    } else {
        first_line.into()
    })
}

/// A job as readable text.
pub fn describe(j: &JobInfo) -> String {
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let mut out = format!(
        "job {}  {}\n  queue      {}\n  kind       {}\n  attempts   {} of {}\n  priority   {}\n  created    {}\n  run at     {}\n  started    {}\n  finished   {}\n",
        j.id,
        j.state.as_str().to_uppercase()
            + if j.cancel_requested {
                " (cancel requested)"
            } else {
                ""
            },
        j.queue,
        j.kind,
        j.attempt,
        j.max_attempts,
        j.priority,
        ts(Some(j.created_at)),
        ts(Some(j.run_at)),
        ts(j.started_at),
        ts(j.finished_at),
    );
    if let Some(w) = &j.worker {
        out += &format!("  worker     {w}\n");
    }
    for (label, key) in [
        ("unique key", &j.unique_key),
        ("order key", &j.ordering_key),
    ] {
        if let Some(k) = key {
            out += &format!("  {label} {k}\n");
        }
    }
    out += &format!("  payload    {}\n", j.payload);
    if let Some(p) = &j.progress {
        out += &format!("  progress   {p}\n");
    }
    if let Some(r) = &j.result {
        out += &format!("  result     {r}\n");
    }
    if let Some(errors) = j.errors.as_array().filter(|e| !e.is_empty()) {
        out += "  errors\n";
        for e in errors {
            out += &format!(
                "    attempt {} at {} on {}: {}\n",
                e["attempt"],
                e["at"].as_str().unwrap_or("?"),
                e["worker"].as_str().unwrap_or("?"),
                e["error"].as_str().unwrap_or("?")
            );
        }
    }
    out
}
