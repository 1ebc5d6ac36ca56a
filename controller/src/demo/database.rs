//! The demo's database: a throwaway PostgreSQL server from the machine's
//! own binaries ([`PgTemp`]), or, when `DATABASE_URL` is given, a schema of
//! the demo's own in that database (`drove_demo_<pid>`), dropped at the end,
//! so the demo never touches a deployment's schema.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use drove_queue::{Conn, DbConfig, Schema};
use drove_worker::config::DbArgs;

use crate::pgtemp::{PgTemp, PgTempError, PgTempOptions};

pub enum DemoDb {
    Temp {
        pg: Box<PgTemp>,
        url: String,
        schema: Schema,
        took: Duration,
    },
    External {
        url: String,
        display: String,
        schema: Schema,
    },
}

impl DemoDb {
    /// Starts (or connects to) the database and migrates the demo's schema.
    pub async fn start(db: &DbArgs) -> Result<DemoDb> {
        let demo = match db.url() {
            Ok(url) => {
                let config = DbConfig::parse(&url)?;
                let schema = Schema::new(&format!("drove_demo_{}", std::process::id()))?;
                DemoDb::External {
                    display: config.display().to_string(),
                    url,
                    schema,
                }
            }
            Err(_) => {
                let t = Instant::now();
                let pg = tokio::task::spawn_blocking(|| {
                    PgTemp::start(PgTempOptions {
                        // A throwaway server: durability buys nothing here.
                        settings: vec![
                            ("fsync".into(), "off".into()),
                            ("synchronous_commit".into(), "off".into()),
                        ],
                        ..Default::default()
                    })
                })
                .await
                .context("starting PostgreSQL")?
                .map_err(explain)?;
                DemoDb::Temp {
                    url: pg.url(),
                    pg: Box::new(pg),
                    schema: db.schema.clone(),
                    took: t.elapsed(),
                }
            }
        };
        let config = demo.config()?;
        let mut conn = Conn::connect(&config, demo.schema())
            .await
            .with_context(|| format!("connecting to {}", config.display()))?;
        drove_queue::migrate(conn.client_mut(), demo.schema())
            .await
            .context("migrating the demo's schema")?;
        Ok(demo)
    }

    pub fn url(&self) -> &str {
        match self {
            DemoDb::Temp { url, .. } | DemoDb::External { url, .. } => url,
        }
    }

    pub fn schema(&self) -> &Schema {
        match self {
            DemoDb::Temp { schema, .. } | DemoDb::External { schema, .. } => schema,
        }
    }

    pub fn config(&self) -> Result<DbConfig> {
        Ok(DbConfig::parse(self.url())?)
    }

    /// One line for the header.
    pub fn describe(&self) -> String {
        match self {
            DemoDb::Temp { pg, url, took, .. } => format!(
                "{url}  (throwaway server, started in {}; data in {})",
                super::monitor::secs(*took),
                pg.dir().display()
            ),
            DemoDb::External {
                display, schema, ..
            } => format!(
                "{display}  (DATABASE_URL; the demo works in schema {} and drops it at exit)",
                schema.name()
            ),
        }
    }

    /// What [`DemoDb::remove`] is about to do.
    pub fn removal(&self) -> String {
        match self {
            DemoDb::Temp { pg, .. } => format!("stopping PostgreSQL (port {})", pg.port()),
            DemoDb::External { schema, .. } => {
                format!("dropping the demo's schema {}", schema.name())
            }
        }
    }

    /// Stops the throwaway server and deletes its files, or drops the
    /// demo's schema.
    pub async fn remove(self) {
        match self {
            DemoDb::Temp { pg, .. } => {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = pg.stop() {
                        tracing::warn!(error = %e, "stopping PostgreSQL");
                    }
                    drop(pg); // deletes the directory (and stops it if still up)
                })
                .await;
            }
            DemoDb::External { url, schema, .. } => {
                let drop_schema = async {
                    let config = DbConfig::parse(&url)?;
                    let conn = Conn::connect(&config, &schema).await?;
                    // The demo's own throwaway schema (never a deployment's).
                    conn.client()
                        .batch_execute(&schema.sql("DROP SCHEMA IF EXISTS {s} CASCADE"))
                        .await?;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(30), drop_schema).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => super::say(format!(
                        "could not drop schema {}: {e:#} (drop it by hand)",
                        schema.name()
                    )),
                    Err(_) => super::say(format!(
                        "timed out dropping schema {} (drop it by hand)",
                        schema.name()
                    )),
                }
            }
        }
    }
}

/// Says what to do when the server binaries are missing.
fn explain(e: PgTempError) -> anyhow::Error {
    match e {
        PgTempError::NotInstalled => anyhow::anyhow!(
            "the demo needs PostgreSQL's server programs (initdb, pg_ctl) to start a throwaway \
             database, and they are not installed.\n  Install the OS package `postgresql` \
             (Debian/Ubuntu: sudo apt-get install postgresql; Fedora: sudo dnf install \
             postgresql-server; macOS: brew install postgresql),\n  or point the demo at a \
             database you have: DATABASE_URL=postgres://user:pass@host/db scripts/demo.sh"
        ),
        other => anyhow::Error::new(other).context("starting a throwaway PostgreSQL"),
    }
}
