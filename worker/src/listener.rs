//! LISTEN/NOTIFY on one dedicated connection: wakes the fetcher when jobs
//! become due on one of its queues (many notifications coalesce into one
//! wake-up), and stops a running job at once when it is cancelled.
//!
//! When the connection breaks it is opened again with backoff, and the
//! fetcher is woken once it is back, because notifications sent meanwhile
//! are lost. The fetcher's slow poll covers the time in between.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::fetcher::Backoff;
use crate::state::{Shared, StopReason};

/// Listens until `stop` is cancelled.
pub async fn run(shared: Arc<Shared>, db: drove_queue::DbConfig, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    let mut first = true;
    while !stop.is_cancelled() {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = listen(&shared, &db, &mut backoff, &mut first) => r,
        };
        if let Err(e) = result {
            shared
                .metrics
                .db_errors
                .with_label_values(&["listen"])
                .inc();
            let delay = backoff.next_delay();
            tracing::warn!(error = %e, retry_in = ?delay, "LISTEN connection lost");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

async fn listen(
    shared: &Shared,
    db: &drove_queue::DbConfig,
    backoff: &mut Backoff,
    first: &mut bool,
) -> Result<(), String> {
    let (client, mut connection) = db.connect_raw().await.map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The connection must be polled for LISTEN itself to complete.
    let drive = async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err::<(), String>("connection closed".into())
    };
    let jobs_chan = shared.schema.jobs_channel();
    let cancel_chan = shared.schema.cancel_channel();
    let setup = async {
        client
            .batch_execute(&format!("LISTEN {jobs_chan}; LISTEN {cancel_chan}"))
            .await
            .map_err(|e| e.to_string())?;
        backoff.reset();
        if !*first {
            tracing::info!("LISTEN connection restored");
        }
        *first = false;
        // Anything announced while we were not listening is due now.
        shared.wake.notify_one();
        while let Some(n) = rx.recv().await {
            if n.channel() == jobs_chan {
                if shared.settings.queues.iter().any(|q| q == n.payload()) {
                    shared.wake.notify_one();
                }
            } else if n.channel() == cancel_chan {
                cancel(shared, n.payload());
            }
        }
        Ok::<(), String>(())
    };
    tokio::select! {
        r = drive => r,
        r = setup => r.and(Err("notification stream ended".into())),
    }
}

/// Payload `worker_id job_id`: stop that job if it is ours.
fn cancel(shared: &Shared, payload: &str) {
    let Some((worker, job)) = payload.rsplit_once(' ') else {
        return;
    };
    if worker != shared.me.id {
        return;
    }
    let Ok(id) = job.parse() else { return };
    if let Some(h) = shared.held.lock().expect("held lock poisoned").get(&id) {
        tracing::info!(job = id, "cancel requested");
        h.stop(StopReason::Cancel);
    }
}
