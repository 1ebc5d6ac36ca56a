//! `drove cron list|set|delete|apply`: cron schedules.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use drove_queue::cron::{CatchUp, CronSpec};
use drove_worker::config::DbArgs;

use super::table::render;

#[derive(Subcommand)]
pub enum CronCommand {
    /// Every schedule with its next firing.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a schedule.
    Set {
        name: String,
        /// crontab: minute hour day-of-month month day-of-week (optionally seconds first), quoted.
        #[arg(long)]
        schedule: String,
        /// Job kind to enqueue.
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "UTC")]
        timezone: String,
        #[arg(long, default_value = "default")]
        queue: String,
        #[arg(long, default_value = "{}")]
        payload: String,
        /// After a downtime longer than the late tolerance: skip the missed times, or run once for them.
        #[arg(long, value_enum, default_value = "skip")]
        catch_up: CatchUpArg,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a schedule.
    Delete { name: String },
    /// Create or replace every schedule in a JSON file {"NAME": {"schedule": ..., "kind": ...}, ...}.
    Apply { file: PathBuf },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CatchUpArg {
    Skip,
    Once,
}

/// Reads a schedules file: a JSON object of name → schedule.
pub fn read_file(path: &std::path::Path) -> Result<Vec<(String, CronSpec)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let map: std::collections::BTreeMap<String, CronSpec> = serde_json::from_str(&text)
        .with_context(|| {
            format!(
                "{}: expected {{\"NAME\": {{\"schedule\": ..., \"kind\": ...}}}}",
                path.display()
            )
        })?;
    Ok(map.into_iter().collect())
}

pub async fn run(db: &DbArgs, cmd: CronCommand) -> Result<ExitCode> {
    let conn = super::connect_checked(db).await?;
    let (client, schema) = (conn.client(), &db.schema);
    match cmd {
        CronCommand::List { json } => {
            let all = drove_queue::cron::cron_list(client, schema).await?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.spec.schedule.clone(),
                            c.spec.timezone.clone(),
                            format!("{}/{}", c.spec.queue, c.spec.kind),
                            if c.spec.enabled {
                                c.next_fire_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
                            } else {
                                "disabled".into()
                            },
                            c.last_fired_at
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render(
                        &[
                            "NAME",
                            "SCHEDULE",
                            "ZONE",
                            "QUEUE/KIND",
                            "NEXT",
                            "LAST FIRED"
                        ],
                        &rows
                    )
                );
            }
        }
        CronCommand::Set {
            name,
            schedule,
            kind,
            timezone,
            queue,
            payload,
            catch_up,
            disabled,
        } => {
            let payload: serde_json::Value = serde_json::from_str(&payload)
                .with_context(|| format!("--payload is not valid JSON: {payload}"))?;
            let spec = CronSpec {
                schedule,
                timezone,
                queue,
                kind,
                payload,
                priority: 0,
                max_attempts: None,
                timeout_ms: None,
                catch_up: match catch_up {
                    CatchUpArg::Skip => CatchUp::Skip,
                    CatchUpArg::Once => CatchUp::Once,
                },
                enabled: !disabled,
            };
            let c = drove_queue::cron::cron_upsert(client, schema, &name, &spec).await?;
            println!(
                "{} fires next at {}",
                c.name,
                c.next_fire_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        CronCommand::Delete { name } => {
            if !drove_queue::cron::cron_delete(client, schema, &name).await? {
                anyhow::bail!("no cron schedule named {name:?}");
            }
            println!("deleted {name}");
        }
        CronCommand::Apply { file } => {
            for (name, spec) in read_file(&file)? {
                let c = drove_queue::cron::cron_upsert(client, schema, &name, &spec)
                    .await
                    .with_context(|| format!("schedule {name:?} in {}", file.display()))?;
                println!(
                    "{} fires next at {}",
                    c.name,
                    c.next_fire_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
