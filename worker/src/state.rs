//! State shared by the worker's tasks: the jobs it holds, its health flags,
//! the run-time estimate that sizes prefetching, and what each job kind
//! needs at run time (handler, metric handles), resolved once per kind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drove_queue::{JobId, Schema, Tid, WorkerInfo};
use prometheus::{Histogram, IntCounter};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::handler::{Handler, Handlers};
use crate::link::Link;
use crate::metrics::Metrics;

/// A map keyed by job id. Ids are database sequence numbers, not chosen by
/// an attacker, so the hot path uses the Fx hash instead of std's SipHash
/// (built to resist hash flooding, and slower).
pub type IdMap<V> = rustc_hash::FxHashMap<JobId, V>;

/// What running and recording jobs of one (queue, kind) needs, resolved
/// once instead of per job: the handler, and the metric series.
pub struct JobMeta {
    pub queue: Arc<str>,
    pub kind: Arc<str>,
    /// None if this worker has no handler for the kind.
    pub handler: Option<Arc<dyn Handler>>,
    /// The `kind` metric label: the kind, or `unknown` without a handler
    /// (so producers cannot blow up the metrics' cardinality).
    pub label: Arc<str>,
    pub run_seconds: Histogram,
    pub succeeded: IntCounter,
    /// The kind's concurrency limit in this worker, if it has one.
    pub gate: Option<Arc<KindGate>>,
}

/// A per-kind limit of jobs running at once in this worker. Jobs beyond it
/// wait here, aside from the slots, still leased (the heartbeat keeps
/// them), and run as earlier ones of the kind end.
pub struct KindGate {
    limit: usize,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    running: usize,
    parked: std::collections::VecDeque<Task>,
}

impl KindGate {
    pub fn new(limit: usize) -> KindGate {
        KindGate {
            limit: limit.max(1),
            state: Mutex::new(GateState::default()),
        }
    }

    /// The task back if it may run now (and it is counted), None if it
    /// waits for [`KindGate::next`].
    pub fn enter(&self, task: Task) -> Option<Task> {
        let mut st = self.state.lock().expect("gate lock poisoned");
        if st.running < self.limit {
            st.running += 1;
            Some(task)
        } else {
            st.parked.push_back(task);
            None
        }
    }

    /// A job of the kind ended: the next waiting one (taking over its
    /// count), or None.
    pub fn next(&self) -> Option<Task> {
        let mut st = self.state.lock().expect("gate lock poisoned");
        let next = st.parked.pop_front();
        if next.is_none() {
            st.running -= 1;
        }
        next
    }

    /// Takes out the waiting tasks that were stopped meanwhile (cancelled,
    /// lease lost), so they are recorded now, not when their turn comes.
    pub fn take_stopped(&self) -> Vec<Task> {
        let mut st = self.state.lock().expect("gate lock poisoned");
        if !st.parked.iter().any(|t| t.held.cancel.is_cancelled()) {
            return Vec::new();
        }
        let (stopped, waiting) = st
            .parked
            .drain(..)
            .partition(|t| t.held.cancel.is_cancelled());
        st.parked = waiting;
        stopped.into()
    }

    /// Every waiting task, for release at shutdown.
    pub fn drain(&self) -> Vec<Task> {
        let mut st = self.state.lock().expect("gate lock poisoned");
        st.parked.drain(..).collect()
    }

    /// Jobs running under the limit now.
    pub fn running(&self) -> usize {
        self.state.lock().expect("gate lock poisoned").running
    }
}

/// (queue, kind)
type KindKey = (Arc<str>, Arc<str>);

/// A claimed job on its way to a slot.
pub struct Task {
    pub id: JobId,
    pub attempt: i32,
    pub ctid: Tid,
    pub timeout_ms: Option<i32>,
    pub payload: Box<RawValue>,
    pub held: Arc<Held>,
    pub meta: Arc<JobMeta>,
}

/// Why a job's token was cancelled, which decides how it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    None = 0,
    /// Someone cancelled the job: record `cancelled`.
    Cancel = 1,
    /// Shutdown grace is over: release the lease, not counted as an attempt.
    Shutdown = 2,
    /// The worker lost (or may have lost) its lease: give the job back if
    /// it is still ours; it is probably running elsewhere already.
    Fenced = 3,
}

/// One job leased to this worker, from claim until its outcome is recorded.
pub struct Held {
    pub attempt: i32,
    pub cancel: CancellationToken,
    reason: AtomicU8,
    /// Follow-up jobs the handler asked for ([`crate::handler::Job::then`]).
    pub then: Mutex<Vec<drove_queue::NewJob>>,
}

impl Held {
    pub fn new(attempt: i32) -> Held {
        Held {
            attempt,
            cancel: CancellationToken::new(),
            reason: AtomicU8::new(StopReason::None as u8),
            then: Mutex::new(Vec::new()),
        }
    }

    /// Stops the job for `reason` (the first reason wins).
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            StopReason::None as u8,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.cancel.cancel();
    }

    pub fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::Acquire) {
            1 => StopReason::Cancel,
            2 => StopReason::Shutdown,
            3 => StopReason::Fenced,
            _ => StopReason::None,
        }
    }
}

/// Settings derived from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub queues: Vec<String>,
    /// Weights of `queues` (same order); None for strict priority order.
    pub weights: Option<Vec<u32>>,
    /// Per-kind limits of jobs running at once.
    pub kind_limits: HashMap<String, usize>,
    pub slots: usize,
    pub lease_ttl: Duration,
    pub grace: Duration,
    pub poll_interval: Duration,
    pub listen: bool,
    pub reap: bool,
    pub max_batch: i64,
    pub max_prefetch: usize,
    pub prefetch_window: Duration,
}

impl Settings {
    /// Heartbeat period while holding jobs: four beats per lease.
    pub fn busy_beat(&self) -> Duration {
        self.lease_ttl / 4
    }

    /// Heartbeat period when idle (it also paces reaping of dead workers).
    pub fn idle_beat(&self) -> Duration {
        (self.lease_ttl * 2 / 5).max(self.busy_beat())
    }

    /// Next beat after a failed one (±20%): a tenth of the lease, between
    /// 200 ms and 1 s. Waiting out the idle period (0.4 of the lease)
    /// instead let the lease run out after an outage shorter than it had
    /// ended, between two beats: the demo's idle workers were declared dead
    /// after a 7.3 s restart.
    pub fn beat_retry(&self) -> Duration {
        (self.lease_ttl / 10)
            .clamp(Duration::from_millis(200), Duration::from_secs(1))
            .min(self.busy_beat())
    }

    /// After this long without a successful heartbeat the worker stops its
    /// jobs: others are about to reclaim them.
    pub fn fence_after(&self) -> Duration {
        self.lease_ttl * 7 / 10
    }
}

pub struct Shared {
    pub me: WorkerInfo,
    pub schema: Schema,
    pub settings: Settings,
    pub handlers: Handlers,
    pub metrics: Metrics,
    /// Claims and heartbeats.
    pub main_link: Link,
    /// Outcomes and progress; claims too behind a backlog.
    pub done_link: Link,
    /// Held while a transaction is open on `done_link` (a success and its
    /// follow-up jobs), so that no claim runs inside it.
    pub done_tx: tokio::sync::Mutex<()>,
    pub held: Mutex<IdMap<Arc<Held>>>,
    /// Slots running a job now.
    pub busy: AtomicUsize,
    kinds: Mutex<HashMap<KindKey, Arc<JobMeta>>>,
    /// Per-kind concurrency limits (`--kind-concurrency`).
    pub gates: HashMap<String, Arc<KindGate>>,
    /// How much each weighted queue has been served, per unit of weight.
    pub weighted_pass: Mutex<Vec<f64>>,
    /// Wakes the fetcher: jobs announced, or lease regained.
    pub wake: Notify,
    /// Tells the fetcher that recorded outcomes freed capacity.
    pub freed: Notify,
    pub fenced: AtomicBool,
    pub draining: AtomicBool,
    /// Earliest time a job this worker knows of becomes due (a retry it
    /// scheduled), so the fetcher need not wait for the slow poll.
    next_due: Mutex<Option<Instant>>,
    pub started: Instant,
    last_beat_ok_ms: AtomicU64,
    /// Mean run time of recent jobs, in nanoseconds (0 = unknown).
    run_ema_ns: AtomicU64,
    ticks: [AtomicU64; 3],
}

/// The loops whose liveness `/healthz` reports.
#[derive(Debug, Clone, Copy)]
pub enum Loop {
    Fetcher = 0,
    Completer = 1,
    Heartbeat = 2,
}

impl Shared {
    pub fn new(
        me: WorkerInfo,
        schema: Schema,
        settings: Settings,
        handlers: Handlers,
        main_link: Link,
        done_link: Link,
    ) -> Shared {
        let metrics = Metrics::new();
        metrics.slots.set(settings.slots as i64);
        let gates = settings
            .kind_limits
            .iter()
            .map(|(k, n)| (k.clone(), Arc::new(KindGate::new(*n))))
            .collect();
        Shared {
            me,
            schema,
            settings,
            handlers,
            metrics,
            main_link,
            done_link,
            done_tx: tokio::sync::Mutex::new(()),
            held: Mutex::new(IdMap::default()),
            busy: AtomicUsize::new(0),
            kinds: Mutex::new(HashMap::new()),
            gates,
            weighted_pass: Mutex::new(Vec::new()),
            wake: Notify::new(),
            freed: Notify::new(),
            fenced: AtomicBool::new(false),
            next_due: Mutex::new(None),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            last_beat_ok_ms: AtomicU64::new(0),
            run_ema_ns: AtomicU64::new(0),
            ticks: Default::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records that a loop is alive.
    pub fn tick(&self, l: Loop) {
        self.ticks[l as usize].store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long since each loop last ticked.
    pub fn since_ticks(&self) -> [(Loop, Duration); 3] {
        let now = self.now_ms();
        [Loop::Fetcher, Loop::Completer, Loop::Heartbeat].map(|l| {
            (
                l,
                Duration::from_millis(
                    now.saturating_sub(self.ticks[l as usize].load(Ordering::Relaxed)),
                ),
            )
        })
    }

    pub fn beat_ok(&self) {
        self.last_beat_ok_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn since_beat_ok(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_beat_ok_ms.load(Ordering::Relaxed)),
        )
    }

    pub fn held_count(&self) -> usize {
        self.held.lock().expect("held lock poisoned").len()
    }

    /// Stops every held job for `reason`.
    pub fn stop_all(&self, reason: StopReason) {
        for h in self.held.lock().expect("held lock poisoned").values() {
            h.stop(reason);
        }
    }

    /// Remembers that a job becomes due at `at` (earliest wins).
    pub fn due_at(&self, at: Instant) {
        let mut next = self.next_due.lock().expect("next_due lock poisoned");
        if next.is_none_or(|n| at < n) {
            *next = Some(at);
        }
    }

    /// The handler and metric series of jobs of `kind` on `queue`.
    pub fn job_meta(&self, queue: &str, kind: &str) -> Arc<JobMeta> {
        let mut kinds = self.kinds.lock().expect("kinds lock poisoned");
        let key: KindKey = (queue.into(), kind.into());
        if let Some(m) = kinds.get(&key) {
            return m.clone();
        }
        // Producers may send any number of unknown kinds: stay bounded.
        if kinds.len() >= 1024 {
            kinds.clear();
        }
        let handler = self.handlers.get(kind);
        let label: Arc<str> = if handler.is_some() {
            key.1.clone()
        } else {
            "unknown".into()
        };
        let labels = [queue, &*label];
        let meta = Arc::new(JobMeta {
            queue: key.0.clone(),
            kind: key.1.clone(),
            handler,
            run_seconds: self.metrics.run_seconds.with_label_values(&labels),
            succeeded: self.metrics.succeeded.with_label_values(&labels),
            gate: self.gates.get(kind).cloned(),
            label,
        });
        kinds.insert(key, meta.clone());
        meta
    }

    /// Takes the earliest known due time.
    pub fn take_due(&self) -> Option<Instant> {
        self.next_due.lock().expect("next_due lock poisoned").take()
    }

    /// Learns from a finished attempt's run time (exponential moving average).
    pub fn observe_run(&self, d: Duration) {
        let x = d.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.run_ema_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            x.max(1)
        } else {
            (old - old / 16 + x / 16).max(1)
        };
        self.run_ema_ns.store(new, Ordering::Relaxed);
    }

    /// Jobs to hold ahead of free slots: enough for about one prefetch
    /// window of work at the observed run time, none until a run time is
    /// known (so long jobs are never hoarded).
    pub fn prefetch(&self) -> usize {
        let ema = self.run_ema_ns.load(Ordering::Relaxed);
        if ema == 0 || self.settings.max_prefetch == 0 {
            return 0;
        }
        let per_slot = self.settings.prefetch_window.as_nanos() as u64 / ema;
        (per_slot.saturating_mul(self.settings.slots as u64) as usize)
            .min(self.settings.max_prefetch)
    }

    /// Jobs this worker may hold at once.
    pub fn capacity(&self) -> usize {
        self.settings.slots + self.prefetch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins() {
        let h = Held::new(1);
        h.stop(StopReason::Cancel);
        h.stop(StopReason::Shutdown);
        assert_eq!(h.reason(), StopReason::Cancel);
        assert!(h.cancel.is_cancelled());
    }
}
