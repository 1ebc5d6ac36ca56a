//! The statistics refresher: reads every queue's depth and the fleet's size
//! in one pass and caches it. `/metrics`, the dashboard, the API and the
//! scaling policy all read the cache, so scrapes cost the database nothing;
//! the refresh interval stretches with the number of live jobs (huge
//! backlogs), keeping its cost to a few percent of one core.
//!
//! Counters (finished by state, run-time histogram) are built from tiling
//! time windows of finished jobs that end [`LAG`] in the past, so a job
//! whose completion commits a little late is still counted once. The
//! enqueue counter lags the same way, by id: each refresh counts the ids up
//! to the highest one seen [`LAG`] earlier, so a producer transaction that
//! commits after a later one (concurrent producers, enqueues inside
//! application transactions) is counted if it commits within [`LAG`] of
//! taking its ids.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use drove_queue::{Schema, Stats};
use serde::Serialize;

use crate::pool::Pool;
use crate::serve::metrics::ControllerMetrics;

/// Counting windows end this far in the past.
pub const LAG: chrono::Duration = chrono::Duration::seconds(2);

#[derive(Debug, Clone)]
pub struct StatsConfig {
    /// Shortest time between refreshes.
    pub interval: Duration,
    /// Live jobs counted per second of interval: the read scans the live
    /// jobs, so the interval stretches with their number (by count, not by
    /// the read's wall time, which CPU contention on the database host
    /// inflates: a busy demo must not freeze its own dashboard).
    pub rows_per_second: f64,
    /// How much history the dashboard's chart keeps.
    pub history: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            interval: Duration::from_secs(1),
            // ~1 s per 100k live jobs: the read costs ~0.23 s per million
            // here, so this keeps it near 2% of one core.
            rows_per_second: 100_000.0,
            history: Duration::from_secs(15 * 60),
        }
    }
}

/// A cached read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub stats: Stats,
    pub refreshed: Instant,
    pub took: Duration,
}

/// One point of the dashboard's chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub available: i64,
    pub scheduled: i64,
    pub running: i64,
    pub workers: i64,
    pub busy: i64,
    pub desired: Option<i64>,
}

/// The latest statistics, shared by everything that reports them.
#[derive(Default)]
pub struct StatsCache {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    history: Mutex<VecDeque<Point>>,
    error: Mutex<Option<String>>,
    /// Set by the scaler (-1: no decision yet).
    desired: AtomicI64,
}

impl StatsCache {
    pub fn new() -> StatsCache {
        StatsCache {
            desired: AtomicI64::new(-1),
            ..Default::default()
        }
    }

    pub fn get(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().expect("stats lock poisoned").clone()
    }

    pub fn history(&self) -> Vec<Point> {
        self.history
            .lock()
            .expect("history lock poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// The last refresh error, if the last refresh failed.
    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("stats lock poisoned").clone()
    }

    pub fn set_desired(&self, n: u32) {
        self.desired.store(i64::from(n), Ordering::Relaxed);
    }

    pub fn desired(&self) -> Option<i64> {
        Some(self.desired.load(Ordering::Relaxed)).filter(|d| *d >= 0)
    }

    fn store(&self, snap: Snapshot, keep: Duration) {
        let s = &snap.stats;
        let point = Point {
            at: s.at.unwrap_or_else(Utc::now),
            available: s.available(),
            scheduled: s.queues.iter().map(|q| q.scheduled).sum(),
            running: s.running(),
            workers: s.fleet.workers,
            busy: s.fleet.busy,
            desired: self.desired(),
        };
        {
            let mut h = self.history.lock().expect("history lock poisoned");
            h.push_back(point);
            let horizon =
                Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
            while h.front().is_some_and(|p| p.at < horizon) {
                h.pop_front();
            }
        }
        *self.snapshot.write().expect("stats lock poisoned") = Some(Arc::new(snap));
        *self.error.lock().expect("stats lock poisoned") = None;
    }
}

pub struct StatsRefresher {
    pub pool: Pool,
    pub schema: Schema,
    pub cache: Arc<StatsCache>,
    pub metrics: ControllerMetrics,
    pub config: StatsConfig,
    window_end: Mutex<Option<DateTime<Utc>>>,
    ids: Mutex<EnqueueIds>,
    next_ms: AtomicU64,
}

/// Where enqueue counting stands: ids up to `counted` are counted; `seen`
/// holds the highest id of each recent refresh, oldest first.
#[derive(Default)]
struct EnqueueIds {
    counted: Option<i64>,
    seen: VecDeque<(Instant, i64)>,
}

impl EnqueueIds {
    /// Records the highest id now and returns the range to count next, if
    /// any: up to the newest id seen at least `lag` ago. Every id up to it
    /// was handed out before then, so its transaction has had `lag` to
    /// commit. Call [`EnqueueIds::counted`] once the range is counted.
    fn next_range(&mut self, now: Instant, top: i64, lag: Duration) -> Option<(i64, i64)> {
        let Some(counted) = self.counted.filter(|c| *c <= top) else {
            // Jobs enqueued before the controller started are not counted;
            // ids that went back (the tables emptied, the sequence reset)
            // start counting afresh.
            self.counted = Some(top);
            self.seen.clear();
            return None;
        };
        self.seen.push_back((now, top));
        let mut newest_old = None;
        while let Some(&(at, id)) = self.seen.front() {
            if now.duration_since(at) < lag {
                break;
            }
            newest_old = Some((at, id));
            self.seen.pop_front();
        }
        // Kept for the next call, so a count that fails is not lost.
        let (at, upto) = newest_old?;
        self.seen.push_front((at, upto));
        (upto > counted).then_some((counted, upto))
    }

    fn counted(&mut self, upto: i64) {
        self.counted = Some(upto);
    }
}

impl StatsRefresher {
    pub fn new(
        pool: Pool,
        schema: Schema,
        cache: Arc<StatsCache>,
        metrics: ControllerMetrics,
        config: StatsConfig,
    ) -> Self {
        let next_ms = AtomicU64::new(config.interval.as_millis() as u64);
        StatsRefresher {
            pool,
            schema,
            cache,
            metrics,
            config,
            window_end: Mutex::new(None),
            ids: Mutex::new(EnqueueIds::default()),
            next_ms,
        }
    }

    async fn refresh(&self) -> anyhow::Result<Option<String>> {
        let conn = crate::pool::get(&self.pool).await?;
        let (client, schema, m) = (conn.client(), &self.schema, &self.metrics);
        let started = Instant::now();
        let stats = drove_queue::stats_read(client, schema).await?;
        let took = started.elapsed();

        // Counters over tiling windows.
        let now = stats.at.unwrap_or_else(Utc::now);
        let to = now - LAG;
        let from = *self.window_end.lock().expect("stats lock poisoned");
        if let Some(from) = from.filter(|f| *f < to) {
            for w in drove_queue::stats::stats_window(client, schema, from, to).await? {
                m.finished
                    .with_label_values(&[&w.queue, "succeeded"])
                    .inc_by(w.succeeded);
                m.finished
                    .with_label_values(&[&w.queue, "dead"])
                    .inc_by(w.dead);
                m.finished
                    .with_label_values(&[&w.queue, "cancelled"])
                    .inc_by(w.cancelled);
                m.run_time.add(&w);
            }
        }
        if from.is_none_or(|f| f < to) {
            *self.window_end.lock().expect("stats lock poisoned") = Some(to);
        }
        let top = drove_queue::stats::stats_max_job_id(client, schema).await?;
        let lag = LAG.to_std().expect("LAG is positive");
        let range =
            (self.ids.lock().expect("stats lock poisoned")).next_range(Instant::now(), top, lag);
        if let Some((after, upto)) = range {
            let counts =
                drove_queue::stats::stats_enqueued_between(client, schema, after, upto).await?;
            for (queue, n) in counts {
                m.enqueued.with_label_values(&[&queue]).inc_by(n);
            }
            self.ids.lock().expect("stats lock poisoned").counted(upto);
        }

        // Gauges.
        m.jobs.reset();
        m.oldest_wait.reset();
        m.paused.reset();
        for q in &stats.queues {
            for (state, n) in [
                ("available", q.available),
                ("scheduled", q.scheduled),
                ("running", q.running),
                ("dead", q.dead),
            ] {
                m.jobs.with_label_values(&[&q.name, state]).set(n);
            }
            m.oldest_wait
                .with_label_values(&[&q.name])
                .set(q.oldest_wait_s);
            m.paused
                .with_label_values(&[&q.name])
                .set(i64::from(q.paused));
        }
        let f = &stats.fleet;
        m.workers.set(f.workers);
        m.slots.set(f.slots);
        m.busy.set(f.busy);
        m.utilization.set(if f.slots > 0 {
            f.busy as f64 / f.slots as f64
        } else {
            0.0
        });
        m.stats_seconds.set(took.as_secs_f64());

        // Keep the refresh's cost bounded on huge backlogs.
        let live: i64 = stats
            .queues
            .iter()
            .map(|q| q.available + q.scheduled + q.running)
            .sum();
        let stretched = live.max(0) as f64 / self.config.rows_per_second;
        let next = self
            .config
            .interval
            .max(Duration::from_secs_f64(stretched.min(30.0)));
        self.next_ms
            .store(next.as_millis() as u64, Ordering::Relaxed);

        self.cache.store(
            Snapshot {
                stats,
                refreshed: Instant::now(),
                took,
            },
            self.config.history,
        );
        Ok(None)
    }
}

impl super::Service for StatsRefresher {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.next_ms.load(Ordering::Relaxed))
    }

    fn leader_only(&self) -> bool {
        false
    }

    async fn run_once(&self) -> anyhow::Result<Option<String>> {
        let r = self.refresh().await;
        if let Err(e) = &r {
            *self.cache.error.lock().expect("stats lock poisoned") = Some(format!("{e:#}"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_counting_waits_lag_for_each_id_then_counts_it_once() {
        let lag = Duration::from_secs(2);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut ids = EnqueueIds::default();
        assert_eq!(
            ids.next_range(at(0), 10, lag),
            None,
            "start: ids up to 10 are old"
        );
        assert_eq!(
            ids.next_range(at(1000), 15, lag),
            None,
            "15 was seen only now"
        );
        assert_eq!(ids.next_range(at(2000), 20, lag), None);
        // 15 was the highest id 2 s ago: 11..=15 have had 2 s to commit.
        assert_eq!(ids.next_range(at(3000), 25, lag), Some((10, 15)));
        // Not marked counted (the count failed): the same range and more.
        assert_eq!(ids.next_range(at(4100), 25, lag), Some((10, 20)));
        ids.counted(20);
        assert_eq!(
            ids.next_range(at(4500), 25, lag),
            None,
            "nothing new is 2 s old"
        );
        assert_eq!(ids.next_range(at(6000), 30, lag), Some((20, 25)));
        ids.counted(25);
        // 30, first seen at 6 s, is counted at 8 s; then nothing more, and
        // the queue of tops stays short.
        assert_eq!(ids.next_range(at(7000), 30, lag), None);
        assert_eq!(ids.next_range(at(8000), 30, lag), Some((25, 30)));
        ids.counted(30);
        for k in 0..100 {
            assert_eq!(ids.next_range(at(9000 + k * 1000), 30, lag), None);
        }
        // The ids went back (tables emptied, sequence reset): counting
        // starts again from there.
        assert_eq!(ids.next_range(at(200_000), 0, lag), None);
        assert_eq!(ids.next_range(at(201_000), 3, lag), None);
        assert_eq!(ids.next_range(at(203_000), 5, lag), Some((0, 3)));
        assert!(ids.seen.len() <= 4, "{}", ids.seen.len());
    }
}
