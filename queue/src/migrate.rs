//! Versioned schema migrations, embedded in the binaries.
//!
//! `migrate` runs in one transaction under an advisory lock keyed by the
//! schema, so any number of processes may call it at once: the first applies
//! what is missing, the others wait and then find nothing to do.

use tokio_postgres::Client;

use crate::error::{DbResultExt, Result};
use crate::schema::Schema;

/// The schema version this build expects.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// One schema change.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
    /// The oldest build (by its [`LATEST`]) that still works on a schema
    /// with this migration applied: the version itself when the change
    /// alters or removes what older builds' statements use, an older one
    /// when it only adds (functions, tables, indexes older builds ignore).
    /// It lets a rolling update run the migration first and replace the
    /// workers afterwards, old and new side by side.
    oldest_reader: i32,
}

const fn m(version: i32, name: &'static str, sql: &'static str, oldest_reader: i32) -> Migration {
    Migration {
        version,
        name,
        sql,
        oldest_reader,
    }
}

const MIGRATIONS: &[Migration] = &[
    m(1, "init", include_str!("../migrations/001_init.sql"), 1),
    m(2, "cron", include_str!("../migrations/002_cron.sql"), 2),
    m(
        3,
        "scheduled",
        include_str!("../migrations/003_scheduled.sql"),
        3,
    ),
    m(
        4,
        "features",
        include_str!("../migrations/004_features.sql"),
        4,
    ),
    // Functions only: builds for schema 4 keep their own statements.
    m(
        5,
        "enqueue_functions",
        include_str!("../migrations/005_enqueue_functions.sql"),
        4,
    ),
    m(
        6,
        "outcome_functions",
        include_str!("../migrations/006_outcome_functions.sql"),
        4,
    ),
    // Replaces a function, same signature and results.
    m(
        7,
        "rate_clock",
        include_str!("../migrations/007_rate_clock.sql"),
        4,
    ),
    // Adds a column older builds leave NULL and replaces functions, same
    // signatures and results.
    m(
        8,
        "unique_scope",
        include_str!("../migrations/008_unique_scope.sql"),
        4,
    ),
    // Adds a table and a view, and replaces the completion functions (same
    // signatures and results): workers of older builds keep working and
    // record their successes the new way. Older controllers and CLIs do
    // not see successes recorded in batches; the floor stays at 4 anyway,
    // for the workers (one floor serves both), and docs/deploy-gcp.md says
    // to upgrade the controller with the migration.
    m(
        9,
        "succeeded_batches",
        include_str!("../migrations/009_succeeded_batches.sql"),
        4,
    ),
    // Replaces the success completion, same signature and results.
    m(
        10,
        "complete_fence",
        include_str!("../migrations/010_complete_fence.sql"),
        4,
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
         );
         ALTER TABLE {s}.schema_migrations ADD COLUMN IF NOT EXISTS oldest_reader integer;",
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
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.batch_execute(&schema.sql(m.sql)).await.db()?;
        applied.push(m.version);
    }
    // Every known version's row, with its reader floor (rows written by
    // builds from before the column have none).
    let known = || MIGRATIONS.iter();
    let versions: Vec<i32> = known().map(|m| m.version).collect();
    let names: Vec<&str> = known().map(|m| m.name).collect();
    let readers: Vec<i32> = known().map(|m| m.oldest_reader).collect();
    tx.execute(
        &schema.sql(
            "INSERT INTO {s}.schema_migrations (version, name, oldest_reader)
             SELECT * FROM unnest($1::int4[], $2::text[], $3::int4[])
             ON CONFLICT (version) DO UPDATE SET oldest_reader = excluded.oldest_reader
             WHERE schema_migrations.oldest_reader IS NULL",
        ),
        &[&versions, &names, &readers],
    )
    .await
    .db()?;
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
    Ok(versions(client, schema).await?.0)
}

/// The schema's version and the oldest build that can use it (a version's
/// row from before the floor was recorded counts as its own version).
async fn versions(
    client: &impl tokio_postgres::GenericClient,
    schema: &Schema,
) -> Result<(i32, i32)> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("\"{}\".schema_migrations", schema.name())],
        )
        .await
        .db()?
        .get(0);
    if !exists {
        return Ok((0, 0));
    }
    // Through to_jsonb: the column may not exist yet (a schema migrated by
    // an older build).
    let row = client
        .query_one(
            &schema.sql(
                "SELECT COALESCE(max(version), 0),
                        COALESCE(max(COALESCE((to_jsonb(m) ->> 'oldest_reader')::int, version)), 0)
                 FROM {s}.schema_migrations m",
            ),
            &[],
        )
        .await
        .db()?;
    Ok((row.get(0), row.get(1)))
}

/// Fails unless this build can work on the schema: it is at [`LATEST`], or
/// newer through migrations that builds for [`LATEST`] can still use.
pub async fn check_schema(
    client: &impl tokio_postgres::GenericClient,
    schema: &Schema,
) -> Result<()> {
    let (found, oldest_reader) = versions(client, schema).await?;
    if found < LATEST || oldest_reader > LATEST {
        return Err(crate::Error::SchemaVersion {
            schema: schema.name().to_string(),
            found,
            wanted: LATEST,
            oldest_reader,
        });
    }
    Ok(())
}
