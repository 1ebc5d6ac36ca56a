//! `drove add DIFFICULTY [N]`: the seed tool's load (N `spin` jobs burning
//! DIFFICULTY ms of CPU each), optionally followed to completion.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use drove_queue::NewJob;
use drove_worker::config::DbArgs;

#[derive(Args)]
pub struct AddArgs {
    /// Milliseconds of CPU each job burns.
    difficulty: u64,
    /// How many jobs.
    #[arg(default_value_t = 1)]
    n: usize,
    /// Queue to put them on.
    #[arg(long, default_value = "default")]
    queue: String,
    /// Follow the jobs to completion with a progress bar, then print a summary.
    #[arg(long)]
    wait: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Jobs per enqueue statement.
const CHUNK: usize = 10_000;

pub async fn run(db: &DbArgs, args: AddArgs) -> Result<ExitCode> {
    let conn = super::connect_checked(db).await?;
    let payload = serde_json::json!({ "ms": args.difficulty });
    let job = NewJob::new("spin")
        .with_queue(&args.queue)
        .with_payload(&payload)?;
    let mut ids = Vec::with_capacity(args.n);
    let mut left = args.n;
    while left > 0 {
        let chunk = left.min(CHUNK);
        let jobs = vec![job.clone(); chunk];
        ids.extend(drove_queue::jobs_enqueue_many(conn.client(), &db.schema, &jobs).await?);
        left -= chunk;
    }
    if !args.json {
        println!(
            "enqueued {} spin job{} of {} ms on queue {} (ids {}..={})",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" },
            args.difficulty,
            args.queue,
            ids.first().copied().unwrap_or_default(),
            ids.last().copied().unwrap_or_default(),
        );
    }
    if !args.wait {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "enqueued": ids.len(), "first_id": ids.first(), "last_id": ids.last() })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let summary = super::follow::follow(&conn, &db.schema, &ids, !args.json).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(
        if summary.failed + summary.cancelled == 0 && summary.done == summary.total as i64 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
