//! `drove reap`: the reaper as a command, for fleets that run it outside
//! the workers and the controller (both of which also reap).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use drove_worker::config::DbArgs;

#[derive(Args)]
pub struct ReapArgs {
    /// Keep reaping at this interval instead of once.
    #[arg(long, value_parser = humantime::parse_duration)]
    every: Option<Duration>,
    /// Also reclaim running jobs whose owner has no registry row.
    #[arg(long)]
    orphans: bool,
}

pub async fn run(db: &DbArgs, args: ReapArgs) -> Result<ExitCode> {
    let conn = super::connect_checked(db).await?;
    loop {
        let r =
            drove_queue::leases_reclaim_expired(conn.client(), &db.schema, args.orphans).await?;
        if r.workers.is_empty() && r.requeued + r.dead == 0 {
            println!("nothing to reclaim");
        } else {
            println!(
                "dead workers {:?}: {} jobs requeued, {} dead",
                r.workers, r.requeued, r.dead
            );
        }
        let Some(every) = args.every else {
            return Ok(ExitCode::SUCCESS);
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = drove_worker::shutdown::signal() => return Ok(ExitCode::SUCCESS),
        }
    }
}
