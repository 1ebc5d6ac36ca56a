//! The group under test: the controller's `docker` backend, driven the way
//! the scaler loop drives it (one pass every 250 ms with the registry's live
//! workers), toward a size the test sets.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use drove_controller::scaling::backend::{Backend, Decision};
use drove_controller::scaling::docker::{
    Autoheal, DockerBackend, DockerConfig, Event, EventKind, GroupStatus, HealthCheck,
};
use drove_queue::{Conn, DbConfig};
use tokio_util::sync::CancellationToken;

use super::Sim;
use crate::common::wait_until;

/// How often the test's "scaler" runs a pass.
pub const PASS: Duration = Duration::from_millis(250);

/// Worker settings of the simulation: short leases so that faults resolve
/// in seconds (reclaim after ~lease TTL + one reaper pass).
pub const LEASE: &str = "3s";
pub const GRACE: &str = "5s";

pub struct Group {
    pub backend: Arc<DockerBackend>,
    target: Arc<AtomicU32>,
    pub errors: Arc<AtomicU64>,
    /// The decision of each pass that changed the desired size.
    resized: Arc<Mutex<Vec<Decision>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Group {
    /// A group of `size` workers on image v1; `tweak` adjusts the settings.
    pub async fn start(sim: &Sim, size: u32, tweak: impl FnOnce(&mut DockerConfig)) -> Group {
        let mut c = DockerConfig::new(&format!("{}-w", sim.id), &sim.v1, &sim.network);
        c.env = vec![
            ("DATABASE_URL".into(), sim.worker_url.clone()),
            ("DROVE_SCHEMA".into(), sim.schema.name().into()),
            ("DROVE_LEASE_TTL".into(), LEASE.into()),
            ("DROVE_SLOTS".into(), "2".into()),
            ("DROVE_GRACE".into(), GRACE.into()),
            ("DROVE_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        c.labels = sim.labels();
        c.stop_timeout = Duration::from_secs(8);
        c.health = HealthCheck {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        c.autoheal = Some(Autoheal {
            unhealthy_threshold: 3,
            initial_delay: Duration::from_secs(5),
        });
        c.log_dir = Some(sim.log_dir.clone());
        tweak(&mut c);
        let backend = Arc::new(DockerBackend::new(c).unwrap());
        let target = Arc::new(AtomicU32::new(size));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let conn = sim.connect().await;
        let resized = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(drive(
            backend.clone(),
            sim.db.clone(),
            conn,
            target.clone(),
            errors.clone(),
            resized.clone(),
            stop.clone(),
        ));
        Group {
            backend,
            target,
            errors,
            resized,
            stop,
            task,
        }
    }

    pub fn set_target(&self, n: u32) {
        self.target.store(n, Ordering::SeqCst);
    }

    /// The decision (with the registry rows the backend chose from) of the
    /// last pass that changed the desired size to `n`.
    pub fn resized_to(&self, n: u32) -> Option<Decision> {
        self.resized
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|d| d.desired == n)
            .cloned()
    }

    pub fn status(&self) -> GroupStatus {
        self.backend.status()
    }

    /// Waits until the group is exactly `n` ready instances of its template,
    /// nothing else left; returns how long that took.
    pub async fn settled(&self, n: usize, limit: Duration, what: &str) -> Duration {
        let started = Instant::now();
        wait_until(limit, what, || async {
            let s = self.status();
            let settled = s.instances.len() == n
                && s.available() == n
                && !s.updating
                && s.instances.iter().all(|i| i.image == s.image);
            settled.then_some(())
        })
        .await;
        started.elapsed()
    }

    /// The first event of `kind` for `instance` at or after `since`.
    pub fn event(&self, instance: &str, kind: EventKind, since: DateTime<Utc>) -> Option<Event> {
        self.backend
            .events()
            .into_iter()
            .find(|e| e.instance == instance && e.kind == kind && e.at >= since)
    }

    pub async fn wait_event(
        &self,
        instance: &str,
        kind: EventKind,
        since: DateTime<Utc>,
        limit: Duration,
    ) -> Event {
        wait_until(limit, &format!("{kind:?} of {instance}"), || async {
            self.event(instance, kind, since)
        })
        .await
    }

    /// The address of an instance's health port.
    pub fn addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        let ip = self
            .status()
            .instances
            .into_iter()
            .find(|i| i.name == name)?
            .ip?;
        Some(std::net::SocketAddr::new(
            ip,
            self.backend.config().health_port,
        ))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // What the group did, next to the containers' logs.
        if let Some(dir) = &self.backend.config().log_dir {
            let events: Vec<String> = self
                .backend
                .events()
                .iter()
                .map(|e| {
                    format!(
                        "{} {:<28} {:?} {}",
                        e.at.format("%H:%M:%S%.3f"),
                        e.instance,
                        e.kind,
                        e.detail
                    )
                })
                .collect();
            let _ = std::fs::write(dir.join("group-events.log"), events.join("\n") + "\n");
        }
        self.stop.cancel();
        self.task.abort();
    }
}

async fn drive(
    backend: Arc<DockerBackend>,
    db: DbConfig,
    mut conn: Conn,
    target: Arc<AtomicU32>,
    errors: Arc<AtomicU64>,
    resized: Arc<Mutex<Vec<Decision>>>,
    stop: CancellationToken,
) {
    let schema = conn.schema().clone();
    let mut last = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PASS) => {}
        }
        if conn.is_closed() {
            match Conn::connect(&db, &schema).await {
                Ok(c) => conn = c,
                Err(_) => continue,
            }
        }
        let workers = match drove_queue::registry::workers_list(conn.client(), &schema).await {
            Ok(w) => w,
            Err(e) => {
                eprintln!("group driver: {e}");
                continue;
            }
        };
        let decision = Decision {
            desired: target.load(Ordering::SeqCst),
            live: workers.len() as u32,
            busy: workers.iter().filter(|w| w.busy > 0).count() as u32,
            backlog: 0,
            running: 0,
            work: 0.0,
            workers,
        };
        if last != Some(decision.desired) {
            last = Some(decision.desired);
            resized.lock().unwrap().push(decision.clone());
        }
        if let Err(e) = backend.apply(&decision).await {
            errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("group driver: {e}");
        }
    }
}
