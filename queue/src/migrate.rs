//! Versioned schema migrations, embedded in the binaries.
//!
//! `migrate` runs in one transaction under an advisory lock keyed by the
//! schema, so any number of processes may call it at once: the first applies
//! what is missing, the others wait and then find nothing to do.

use tokio_postgres::Client;

use crate::error::{DbResultExt, Result};
use crate::schema::Schema;

/// The schema version this build expects.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// (version, name, SQL template)
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/001_init.sql")),
    (2, "cron", include_str!("../migrations/002_cron.sql")),
    (
        3,
        "scheduled",
        include_str!("../migrations/003_scheduled.sql"),
    ),
    (
        4,
        "features",
        include_str!("../migrations/004_features.sql"),
    ),
    (
        5,
        "enqueue_functions",
        include_str!("../migrations/005_enqueue_functions.sql"),
    ),
    (
        6,
        "outcome_functions",
        include_str!("../migrations/006_outcome_functions.sql"),
    ),
];

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateOutcome {
    /// Version before the run (0 for a new schema).
    pub from: i32,
    /// Version after the run.
    pub to: i32,
    /// Versions applied by this run (empty if another process did the work).
    pub applied: Vec<i32>,
}

/// Brings `schema` up to [`LATEST`], creating it if needed.
pub async fn migrate(client: &mut Client, schema: &Schema) -> Result<MigrateOutcome> {
    let tx = client.transaction().await.db()?;
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .db()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&schema.lock_key("migrate")],
    )
    .await
    .db()?;
    tx.batch_execute(&schema.sql(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    ))
    .await
    .db()?;
    let from: i32 = tx
        .query_one(
            &schema.sql("SELECT COALESCE(max(version), 0) FROM {s}.schema_migrations"),
            &[],
        )
        .await
        .db()?
        .get(0);
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > from) {
        tx.batch_execute(&schema.sql(sql)).await.db()?;
        tx.execute(
            &schema.sql("INSERT INTO {s}.schema_migrations (version, name) VALUES ($1, $2)"),
            &[&version, &name],
        )
        .await
        .db()?;
        applied.push(version);
    }
    tx.commit().await.db()?;
    Ok(MigrateOutcome {
        from,
        to: from.max(LATEST),
        applied,
    })
}

/// The schema's current version, 0 if it was never migrated.
pub async fn schema_version(
    client: &impl tokio_postgres::GenericClient,
    schema: &Schema,
) -> Result<i32> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("\"{}\".schema_migrations", schema.name())],
        )
        .await
        .db()?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            &schema.sql("SELECT COALESCE(max(version), 0) FROM {s}.schema_migrations"),
            &[],
        )
        .await
        .db()?;
    Ok(row.get(0))
}

/// Fails unless the schema is exactly at [`LATEST`].
pub async fn check_schema(
    client: &impl tokio_postgres::GenericClient,
    schema: &Schema,
) -> Result<()> {
    let found = schema_version(client, schema).await?;
    if found != LATEST {
        return Err(crate::Error::SchemaVersion {
            schema: schema.name().to_string(),
            found,
            wanted: LATEST,
        });
    }
    Ok(())
}
