//! The scaler loop (leader only): every tick, turns the cached statistics
//! into a decision with the policy and hands it to the backend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::backend::{Applied, Backend, Decision};
use super::policy::{self, Observation, PolicyConfig, PolicyState};
use crate::maintenance::stats::StatsCache;
use crate::pool::Pool;
use crate::serve::metrics::ControllerMetrics;

/// Statistics older than this are not acted on.
const STALE: Duration = Duration::from_secs(15);

/// What the scaler did last, for the API and dashboard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScalingStatus {
    pub backend: String,
    pub decision: Option<Decision>,
    pub applied: Option<Applied>,
    pub error: Option<String>,
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub struct Scaler {
    pub pool: Pool,
    pub schema: drove_queue::Schema,
    pub backend: Arc<dyn Backend>,
    pub policy: PolicyConfig,
    pub cache: Arc<StatsCache>,
    pub metrics: ControllerMetrics,
    pub interval: Duration,
    pub status: Arc<Mutex<ScalingStatus>>,
    state: Mutex<PolicyState>,
    epoch: Instant,
}

impl Scaler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: Pool,
        schema: drove_queue::Schema,
        backend: Arc<dyn Backend>,
        policy: PolicyConfig,
        cache: Arc<StatsCache>,
        metrics: ControllerMetrics,
        interval: Duration,
        status: Arc<Mutex<ScalingStatus>>,
    ) -> Scaler {
        status.lock().expect("status lock poisoned").backend = backend.name().to_string();
        Scaler {
            pool,
            schema,
            backend,
            policy,
            cache,
            metrics,
            interval,
            status,
            state: Mutex::new(PolicyState::default()),
            epoch: Instant::now(),
        }
    }

    async fn tick(&self) -> anyhow::Result<Option<String>> {
        let Some(snap) = self.cache.get().filter(|s| s.refreshed.elapsed() < STALE) else {
            return Ok(None);
        };
        let s = &snap.stats;
        let workers = {
            let conn = crate::pool::get(&self.pool).await?;
            drove_queue::registry::workers_list(conn.client(), &self.schema).await?
        };
        let finished: i64 = s.queues.iter().map(|q| q.succeeded_1m).sum();
        let avg_run_s = (finished > 0).then(|| {
            s.queues
                .iter()
                .filter_map(|q| q.run_avg_1m_s.map(|a| a * q.succeeded_1m as f64))
                .sum::<f64>()
                / finished as f64
        });
        let obs = Observation {
            backlog: s.available(),
            running: s.running(),
            live: workers.len() as u32,
            busy: workers.iter().filter(|w| w.busy > 0).count() as u32,
            slots: s.fleet.slots,
            avg_run_s,
        };
        let now = self.epoch.elapsed().as_secs_f64();
        let desired = {
            let mut st = self.state.lock().expect("policy lock poisoned");
            let (d, next) = policy::decide(&self.policy, &st, &obs, now);
            *st = next;
            d
        };
        let decision = policy::decision(desired, &obs, workers);
        let m = &self.metrics;
        m.desired.set(i64::from(desired));
        m.work.set(decision.work);
        m.backlog_per_worker.set(if obs.live > 0 {
            decision.work / f64::from(obs.live)
        } else {
            decision.work
        });
        self.cache.set_desired(desired);
        let result = self.backend.apply(&decision).await;
        let mut status = self.status.lock().expect("status lock poisoned");
        let previous = status.decision.as_ref().map(|d| d.desired);
        status.decided_at = Some(chrono::Utc::now());
        status.decision = Some(decision);
        match result {
            Ok(applied) => {
                if let Some(size) = applied.size {
                    m.group_size.set(i64::from(size));
                }
                let said = applied.action.clone();
                status.applied = Some(applied);
                status.error = None;
                let changed = previous != Some(desired);
                Ok(said.or_else(|| {
                    changed
                        .then(|| format!("desired workers {} -> {desired}", previous.unwrap_or(0)))
                }))
            }
            Err(e) => {
                m.scaling_errors.inc();
                status.error = Some(e.to_string());
                Err(anyhow::anyhow!(e))
            }
        }
    }
}

impl crate::maintenance::Service for Scaler {
    fn name(&self) -> &'static str {
        "scaler"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn leader_only(&self) -> bool {
        true
    }

    async fn run_once(&self) -> anyhow::Result<Option<String>> {
        self.tick().await
    }
}
