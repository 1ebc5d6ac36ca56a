//! Reclaiming the jobs of dead workers.
//!
//! A worker whose registry row has expired (no heartbeat for a lease TTL) is
//! deleted, and in the same transaction its running jobs go back to
//! `available` (due at once; the lost attempt counts) or to `dead` when their
//! attempts are used up, so a job that kills its worker cannot loop forever.
//!
//! The work is the `leases_reclaim` SQL function (see the migration): one
//! call, so it can run on a shared, pipelined connection. Safe from any
//! number of processes at once: the DELETE serializes them on the worker
//! rows, and the reclaim is a later statement with a fresh snapshot, so it
//! sees jobs claimed by a claim that committed while the DELETE waited.

use tokio_postgres::GenericClient;

use crate::error::{DbResultExt, Result};
use crate::schema::Schema;

const LEASES_RECLAIM: &str = "SELECT workers, requeued, dead FROM {s}.leases_reclaim($1)";

/// What a reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Workers whose lease had expired.
    pub workers: Vec<String>,
    /// Their jobs put back to `available`.
    pub requeued: i64,
    /// Their jobs that had used up their attempts.
    pub dead: i64,
}

/// Deletes expired workers and reclaims their jobs. With `sweep_orphans`, it
/// also reclaims running jobs whose owner has no registry row at all (a
/// slower scan, for the controller's periodic pass).
pub async fn leases_reclaim_expired(
    client: &impl GenericClient,
    schema: &Schema,
    sweep_orphans: bool,
) -> Result<Reaped> {
    let row = client
        .query_typed_one(
            &schema.sql(LEASES_RECLAIM),
            &[(&sweep_orphans, tokio_postgres::types::Type::BOOL)],
        )
        .await
        .db()?;
    Ok(Reaped {
        workers: row.get(0),
        requeued: row.get(1),
        dead: row.get(2),
    })
}
