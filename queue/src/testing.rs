//! Test support (feature `testing`): every test gets its own migrated schema
//! on the PostgreSQL server named by `DROVE_TEST_DATABASE_URL`, dropped when
//! the [`TestDb`] is dropped, so tests run in parallel without sharing state.
//! `scripts/test.sh` starts a throwaway server and sets the variable.

use rand::Rng;

use crate::{Conn, DbConfig, Schema};

/// The environment variable naming the test server.
pub const ENV: &str = "DROVE_TEST_DATABASE_URL";

/// A fresh, migrated schema for one test.
pub struct TestDb {
    pub url: String,
    pub db: DbConfig,
    pub schema: Schema,
}

impl TestDb {
    /// Creates and migrates a schema named `t_<random>`.
    pub async fn new() -> TestDb {
        let url = test_url();
        let db = DbConfig::parse(&url).expect("test database URL parses");
        let name = format!("t_{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff);
        let schema = Schema::new(&name).expect("generated schema name is valid");
        let mut conn = Conn::connect(&db, &schema)
            .await
            .expect("connect to the test database");
        crate::migrate(conn.client_mut(), &schema)
            .await
            .expect("migrate the test schema");
        TestDb { url, db, schema }
    }

    /// A new connection to the test schema.
    /// A connection for a worker `id` registered with lease `ttl` (serving
    /// `default`, 64 slots).
    pub async fn registered(&self, id: &str, ttl: std::time::Duration) -> Conn {
        let conn = self.conn().await;
        let me = crate::WorkerInfo {
            id: id.to_string(),
            host: "test".into(),
            pid: 1,
            version: "test".into(),
            queues: vec!["default".into()],
            slots: 64,
        };
        crate::worker_register(&conn, &me, ttl)
            .await
            .expect("register test worker");
        conn
    }

    pub async fn conn(&self) -> Conn {
        Conn::connect(&self.db, &self.schema)
            .await
            .expect("connect to the test database")
    }
}

/// The test server's URL, or a panic that says how to get one.
pub fn test_url() -> String {
    std::env::var(ENV).unwrap_or_else(|_| {
        panic!("{ENV} is not set: run the tests with scripts/test.sh, which starts a throwaway PostgreSQL")
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let db = self.db.clone();
        let schema = self.schema.clone();
        // Drop runs outside any runtime we may borrow: use a small one of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let conn = Conn::connect(&db, &schema).await.ok()?;
                conn.client()
                    .batch_execute(&schema.sql("DROP SCHEMA IF EXISTS {s} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}
