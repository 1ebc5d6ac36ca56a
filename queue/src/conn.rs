//! A connection owned by one component of a worker or controller: the client,
//! its driver task (stopped when the connection is dropped) and a cache of
//! prepared statements, so hot-path SQL is parsed and planned once.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, Statement};

use crate::connect::DbConfig;
use crate::error::{DbResultExt, Result};
use crate::schema::Schema;

/// One database connection bound to a deployment schema.
pub struct Conn {
    client: Client,
    schema: Schema,
    statements: Mutex<HashMap<&'static str, Statement>>,
    driver: JoinHandle<()>,
}

impl Conn {
    /// Opens a connection and spawns its driver.
    pub async fn connect(db: &DbConfig, schema: &Schema) -> Result<Conn> {
        let (client, connection) = db.connect_raw().await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection ended");
            }
        });
        Ok(Conn {
            client,
            schema: schema.clone(),
            statements: Mutex::new(HashMap::new()),
            driver,
        })
    }

    /// The underlying client, e.g. to start a transaction or pass to
    /// functions that take any [`tokio_postgres::GenericClient`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Mutable access, for [`Client::transaction`].
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The deployment schema this connection works in.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// True once the connection has broken; open a new one.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The prepared statement for a SQL template (see [`Schema::sql`]),
    /// preparing it on first use.
    pub async fn prepared(&self, template: &'static str) -> Result<Statement> {
        if let Some(s) = self
            .statements
            .lock()
            .expect("statement cache lock poisoned")
            .get(template)
        {
            return Ok(s.clone());
        }
        let stmt = self.client.prepare(&self.schema.sql(template)).await.db()?;
        self.statements
            .lock()
            .expect("statement cache lock poisoned")
            .insert(template, stmt.clone());
        Ok(stmt)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
