//! A reconnecting database connection owned by one worker component.
//!
//! `get` hands out the current connection, opening a new one if there is
//! none or the old one broke; a caller that saw a timeout calls `reset` so
//! the next `get` starts afresh instead of queueing behind a hung statement.

use std::sync::Arc;
use std::time::Duration;

use drove_queue::{Conn, DbConfig, Schema};
use tokio::sync::Mutex;

/// How long one database operation of the worker may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Link {
    db: DbConfig,
    schema: Schema,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl Link {
    pub fn new(db: DbConfig, schema: Schema) -> Link {
        Link {
            db,
            schema,
            conn: Mutex::new(None),
        }
    }

    /// The live connection, reconnecting if needed.
    pub async fn get(&self) -> drove_queue::Result<Arc<Conn>> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        *slot = None;
        let conn = Arc::new(Conn::connect(&self.db, &self.schema).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the current connection (it timed out or misbehaved).
    pub async fn reset(&self) {
        *self.conn.lock().await = None;
    }

    /// Runs `op` on the connection within [`OP_TIMEOUT`]; a timeout resets
    /// the link and is reported as a transient error.
    pub async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> drove_queue::Result<T>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = drove_queue::Result<T>>,
    {
        self.run_within(what, OP_TIMEOUT, op).await
    }

    /// Like [`Link::run`] with another time limit.
    pub async fn run_within<T, F, Fut>(
        &self,
        what: &'static str,
        limit: Duration,
        op: F,
    ) -> drove_queue::Result<T>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = drove_queue::Result<T>>,
    {
        let attempt = async {
            let conn = self.get().await?;
            op(conn).await
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => {
                self.reset().await;
                Err(drove_queue::Error::Timeout(what))
            }
        }
    }
}
