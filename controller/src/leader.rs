//! Leadership: at most one controller at a time runs the once-per-fleet
//! loops (reaper, pruner, cron, scaler). The leader holds a session
//! advisory lock on a dedicated connection, never a pooled one, and checks
//! that connection every second.
//!
//! ```text
//!   follower ──(pg_try_advisory_lock succeeds)──▶ leader
//!      ▲                                             │ ping every 1 s
//!      └──(ping fails or times out: step down, ──────┘
//!          drop the connection; the server frees the lock)
//! ```
//!
//! A killed leader's connection closes and Postgres frees the lock at once:
//! another controller takes over at its next try (within a second). A
//! partitioned leader steps down by itself when its pings fail; the server
//! notices the dead connection through TCP keepalives set on the session
//! (about 10 s), then frees the lock.

use std::time::Duration;

use drove_queue::{DbConfig, Schema};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a follower tries to take the lock, and the leader pings.
pub const TICK: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Campaigns until `stop`; publishes whether this process leads.
pub async fn run(db: DbConfig, schema: Schema, tx: watch::Sender<bool>, stop: CancellationToken) {
    let key = schema.lock_key("leader");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = campaign(&db, key, &tx, &stop) => {}
        }
        tx.send_replace(false);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    tx.send_replace(false);
}

/// One connection's life: try the lock until it is ours, then hold it while
/// the connection answers. Returns when the connection fails.
async fn campaign(db: &DbConfig, key: i64, tx: &watch::Sender<bool>, stop: &CancellationToken) {
    let (client, connection) = match db.connect_raw().await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "leadership: cannot connect");
            return;
        }
    };
    let driver = async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "leadership connection ended");
        }
    };
    let work = async {
        // Let the server notice a vanished leader quickly (default: hours).
        let _ = client
            .batch_execute("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3")
            .await;
        loop {
            let got = tokio::time::timeout(
                PING_TIMEOUT,
                client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]),
            )
            .await;
            match got {
                Ok(Ok(row)) if row.get::<_, bool>(0) => break,
                Ok(Ok(_)) => {}
                _ => return,
            }
            tokio::time::sleep(TICK).await;
        }
        tracing::info!("leadership acquired");
        tx.send_replace(true);
        loop {
            tokio::time::sleep(TICK).await;
            if stop.is_cancelled() {
                // Release explicitly so a successor need not wait.
                let _ = tokio::time::timeout(
                    PING_TIMEOUT,
                    client.execute("SELECT pg_advisory_unlock($1)", &[&key]),
                )
                .await;
                return;
            }
            match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => {}
                _ => {
                    tracing::warn!("leadership lost: the lock connection does not answer");
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = driver => {}
        _ = work => {}
    }
    if *tx.borrow() {
        tracing::info!("stepped down");
    }
}
