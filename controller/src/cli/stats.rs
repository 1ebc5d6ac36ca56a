//! `drove stats`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use drove_worker::config::DbArgs;

use super::table::{render, secs};

#[derive(Args)]
pub struct StatsArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(db: &DbArgs, args: StatsArgs) -> Result<ExitCode> {
    let conn = super::connect_checked(db).await?;
    let stats = drove_queue::stats_read(conn.client(), &db.schema).await?;
    if args.json {
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = stats
        .queues
        .iter()
        .map(|q| {
            vec![
                q.name.clone() + if q.paused { " (paused)" } else { "" },
                q.available.to_string(),
                q.scheduled.to_string(),
                q.running.to_string(),
                q.dead.to_string(),
                if q.available > 0 {
                    secs(q.oldest_wait_s)
                } else {
                    "-".into()
                },
                q.succeeded_1m.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "QUEUE",
                ">AVAILABLE",
                ">SCHEDULED",
                ">RUNNING",
                ">DEAD",
                ">OLDEST WAIT",
                ">DONE/MIN"
            ],
            &rows
        )
    );
    let f = &stats.fleet;
    println!(
        "\nworkers: {} live, {} slots, {} busy",
        f.workers, f.slots, f.busy
    );
    Ok(ExitCode::SUCCESS)
}
