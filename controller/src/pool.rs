//! A small pool of database connections for the controller's HTTP handlers
//! and loops, built on deadpool with drove's own connector (pure-Rust DNS,
//! rustls), so it works in a FROM-scratch image.

use drove_queue::{Conn, DbConfig, Schema};

pub type Pool = deadpool::managed::Pool<Manager>;
pub type Pooled = deadpool::managed::Object<Manager>;

pub struct Manager {
    db: DbConfig,
    schema: Schema,
}

impl deadpool::managed::Manager for Manager {
    type Type = Conn;
    type Error = drove_queue::Error;

    async fn create(&self) -> Result<Conn, drove_queue::Error> {
        Conn::connect(&self.db, &self.schema).await
    }

    async fn recycle(
        &self,
        conn: &mut Conn,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<drove_queue::Error> {
        if conn.is_closed() {
            return Err(deadpool::managed::RecycleError::message(
                "connection closed",
            ));
        }
        Ok(())
    }
}

/// A pool of at most `size` connections; each checkout waits at most 5 s.
pub fn build(db: DbConfig, schema: Schema, size: usize) -> Pool {
    deadpool::managed::Pool::builder(Manager { db, schema })
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime and timeouts builds")
}

/// Checks out a connection, mapping pool errors to queue errors.
pub async fn get(pool: &Pool) -> Result<Pooled, drove_queue::Error> {
    pool.get().await.map_err(|e| match e {
        deadpool::managed::PoolError::Backend(e) => e,
        deadpool::managed::PoolError::Timeout(_) => {
            drove_queue::Error::Timeout("waiting for a database connection")
        }
        other => drove_queue::Error::Config(other.to_string()),
    })
}
