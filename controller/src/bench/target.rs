//! The database the bench runs on: a throwaway server it starts itself, or
//! `--database-url`. On a server of yours it works only in a schema of its
//! own: one it creates (and drops afterwards), or an existing drove schema
//! with no jobs and no workers in it. It never touches jobs it did not create.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use drove_queue::{Conn, DbConfig, Schema};
use drove_worker::config::DbArgs;
use serde_json::{Map, Value};

use crate::pgtemp::{PgTemp, PgTempOptions};

use super::sys::Server;

pub struct Target {
    pub url: String,
    pub db: DbConfig,
    pub schema: Schema,
    /// The bench's own connection (setup, observation, cleanup).
    pub conn: Conn,
    /// pg_stat_statements is loaded and readable (statement counts).
    pub statements: bool,
    /// The server runs on this machine (its CPU can be read from /proc).
    pub server: Option<Server>,
    pub throwaway: bool,
    /// Queue features the jobs use (`--ordering-keys`, `--max-running`, `--rate`).
    pub features: Features,
    owns_schema: bool,
    pg: Option<PgTemp>,
}

/// What the chosen workloads need from a throwaway server.
pub struct Needs {
    pub max_connections: u32,
}

impl Target {
    pub async fn open(args: &DbArgs, needs: &Needs) -> Result<Target> {
        let given = args
            .database_url
            .as_ref()
            .is_some_and(|u| !u.trim().is_empty())
            || args.database_url_file.is_some();
        let schema = args.schema.clone();
        let (url, pg) = if given {
            (args.url().map_err(anyhow::Error::msg)?, None)
        } else {
            let pg = start_throwaway(needs).await?;
            (pg.url(), Some(pg))
        };
        let db = DbConfig::parse(&url)?.with_application_name("drove-bench");
        let mut conn = Conn::connect(&db, &schema)
            .await
            .with_context(|| format!("connecting to {}", db.display()))?;
        let throwaway = pg.is_some();
        let owns_schema = if throwaway {
            drove_queue::migrate(conn.client_mut(), &schema).await?;
            true
        } else {
            claim_schema(&mut conn, &schema).await?
        };
        if throwaway {
            let _ = conn
                .client()
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await;
        }
        let statements = conn
            .client()
            .query_one("SELECT count(*) FROM pg_stat_statements", &[])
            .await
            .is_ok();
        let backend: i32 = conn
            .client()
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        let server = Server::from_backend(backend as u32);
        Ok(Target {
            url,
            db,
            schema,
            conn,
            statements,
            server,
            throwaway,
            owns_schema,
            features: Features::default(),
            pg,
        })
    }

    /// The database's settings that matter for the figures.
    pub async fn settings(&self) -> Result<Map<String, Value>> {
        let mut m = Map::new();
        let v: String = self
            .conn
            .client()
            .query_one("SELECT current_setting('server_version')", &[])
            .await?
            .get(0);
        m.insert("postgres".into(), v.into());
        m.insert(
            "database".into(),
            if self.throwaway {
                "throwaway server started by the bench".into()
            } else {
                self.db.display().into()
            },
        );
        m.insert("schema".into(), self.schema.name().into());
        for name in [
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_level",
            "shared_buffers",
            "max_wal_size",
            "max_connections",
            "autovacuum_naptime",
        ] {
            let v: String = self
                .conn
                .client()
                .query_one("SELECT current_setting($1)", &[&name])
                .await?
                .get(0);
            m.insert(name.into(), v.into());
        }
        Ok(m)
    }

    /// Empties the bench's schema between runs: jobs, finished jobs, workers;
    /// sets the `default` queue's limits to the ones measured.
    pub async fn reset(&self) -> Result<()> {
        self.conn
            .client()
            .batch_execute(&self.schema.sql(
                "TRUNCATE {s}.jobs, {s}.jobs_done, {s}.jobs_succeeded; DELETE FROM {s}.workers;
                 UPDATE {s}.queues SET keep_succeeded = DEFAULT, paused = false WHERE name = 'default'",
            ))
            .await
            .context("resetting the bench schema")?;
        self.conn
            .client()
            .execute(
                &self.schema.sql(
                    "UPDATE {s}.queues SET max_running = $1, rate_per_sec = $2, rate_tokens = NULL
                     WHERE name = 'default'",
                ),
                &[&self.features.max_running, &self.features.rate],
            )
            .await
            .context("setting the bench queue's limits")?;
        Ok(())
    }

    /// Drops what the bench created; leaves a schema it found as it was.
    pub async fn close(self) -> Result<()> {
        if self.pg.is_none() {
            let sql = if self.owns_schema {
                "DROP SCHEMA {s} CASCADE"
            } else {
                "TRUNCATE {s}.jobs, {s}.jobs_done, {s}.jobs_succeeded; DELETE FROM {s}.workers;
                 UPDATE {s}.queues SET keep_succeeded = DEFAULT WHERE name = 'default'"
            };
            self.conn
                .client()
                .batch_execute(&self.schema.sql(sql))
                .await
                .context("cleaning up the bench schema")?;
        }
        drop(self.conn);
        if let Some(pg) = self.pg {
            tokio::task::spawn_blocking(move || drop(pg)).await?;
        }
        Ok(())
    }
}

async fn start_throwaway(needs: &Needs) -> Result<PgTemp> {
    let mut settings = vec![
        // Durable defaults, stated rather than assumed.
        ("fsync".to_string(), "on".to_string()),
        ("synchronous_commit".to_string(), "on".to_string()),
    ];
    if statements_library().is_some() {
        settings.push((
            "shared_preload_libraries".into(),
            "pg_stat_statements".into(),
        ));
        settings.push(("pg_stat_statements.track".into(), "top".into()));
    }
    let options = PgTempOptions {
        max_connections: needs.max_connections.max(100),
        settings,
    };
    tokio::task::spawn_blocking(move || PgTemp::start(options))
        .await?
        .context("starting a throwaway PostgreSQL (or pass --database-url)")
}

/// pg_stat_statements' library next to the server binaries, if installed.
/// The binaries found on PATH may be symlinks (Debian puts them in
/// /usr/local/bin or /usr/bin): the library is next to their targets.
fn statements_library() -> Option<PathBuf> {
    let initdb = crate::pgtemp::find_bindir()?.join("initdb");
    let bindir = std::fs::canonicalize(initdb).ok()?.parent()?.to_path_buf();
    let lib = bindir.parent()?.join("lib/pg_stat_statements.so");
    lib.is_file().then_some(lib)
}

/// Makes sure the schema is the bench's to use: creates it if missing
/// (returns true: drop it at the end), or accepts an existing drove schema
/// only if it holds no jobs and no workers.
async fn claim_schema(conn: &mut Conn, schema: &Schema) -> Result<bool> {
    let exists: bool = conn
        .client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema.name()],
        )
        .await?
        .get(0);
    if !exists {
        drove_queue::migrate(conn.client_mut(), schema).await?;
        return Ok(true);
    }
    let version = drove_queue::migrate::schema_version(conn.client(), schema).await?;
    if version == 0 {
        bail!(
            "schema {schema} exists and is not a drove schema: drove bench will not write into it; \
             pass --schema with a new name (e.g. --schema drove_bench) and the bench creates and drops it"
        );
    }
    drove_queue::migrate::check_schema(conn.client(), schema).await?;
    let row = conn
        .client()
        .query_one(
            &schema.sql(
                "SELECT (SELECT count(*) FROM {s}.jobs), (SELECT count(*) FROM {s}.jobs_finished),
                        (SELECT count(*) FROM {s}.workers)",
            ),
            &[],
        )
        .await?;
    let (live, done, workers): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if live + done + workers > 0 {
        bail!(
            "schema {schema} already has drove jobs or workers ({live} live jobs, {done} finished, \
             {workers} workers) that drove bench did not create, and the bench would disturb them; \
             pass --schema drove_bench (or any new name): the bench creates that schema and drops it \
             afterwards. Or omit --database-url to use a throwaway server."
        );
    }
    Ok(false)
}

/// Queue features the measured jobs use, to show what each costs.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Jobs get ordering keys `k0..kN` round-robin (0: none).
    pub ordering_keys: u64,
    /// The queue's max_running (set high, it makes claims take the limited path).
    pub max_running: Option<i32>,
    /// The queue's rate_per_sec.
    pub rate: Option<f64>,
}
