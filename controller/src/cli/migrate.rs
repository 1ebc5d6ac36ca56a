//! `drove migrate`

use std::process::ExitCode;

use anyhow::Result;
use drove_worker::config::DbArgs;

pub async fn run(db: &DbArgs) -> Result<ExitCode> {
    let mut conn = super::connect(db).await?;
    let out = drove_queue::migrate(conn.client_mut(), &db.schema).await?;
    if out.to > drove_queue::SCHEMA_VERSION {
        println!(
            "schema {} is at version {}, newer than this binary's {}: nothing to do",
            db.schema,
            out.to,
            drove_queue::SCHEMA_VERSION
        );
    } else if out.applied.is_empty() {
        println!("schema {} is up to date (version {})", db.schema, out.to);
    } else {
        println!(
            "schema {}: migrated from version {} to {} (applied {:?})",
            db.schema, out.from, out.to, out.applied
        );
    }
    Ok(ExitCode::SUCCESS)
}
