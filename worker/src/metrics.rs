//! The worker's Prometheus metrics, all in one place. Labels are of low
//! cardinality: queue and job kind (kinds this worker has no handler for
//! are counted as `unknown`), never a job id.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub claimed: IntCounterVec,
    pub succeeded: IntCounterVec,
    pub failed: IntCounterVec,
    pub retried: IntCounterVec,
    pub dead: IntCounterVec,
    pub cancelled: IntCounterVec,
    pub released: IntCounter,
    pub rejected: IntCounter,
    pub in_flight: IntGauge,
    pub slots: IntGauge,
    pub busy: IntGauge,
    pub utilization: Gauge,
    pub prefetch: IntGauge,
    pub claim_seconds: Histogram,
    pub run_seconds: HistogramVec,
    pub heartbeat_failures: IntCounter,
    pub fenced: IntGauge,
    pub db_errors: IntCounterVec,
    pub reaped_jobs: IntCounter,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let job = &["queue", "kind"];
        let utilization = Gauge::new("drove_worker_slot_utilization_ratio", "Busy slots / slots.")
            .expect("valid metric");
        r.register(Box::new(utilization.clone()))
            .expect("metric registered once");
        let claim_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "drove_worker_claim_duration_seconds",
                "Time of one claim statement.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(claim_seconds.clone()))
            .expect("metric registered once");
        let run_seconds = HistogramVec::new(
            HistogramOpts::new(
                "drove_worker_job_run_duration_seconds",
                "Run time of one job attempt.",
            )
            .buckets(vec![
                0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
            ]),
            job,
        )
        .expect("valid metric");
        r.register(Box::new(run_seconds.clone()))
            .expect("metric registered once");
        Metrics {
            claimed: counter_vec(
                &r,
                "drove_worker_jobs_claimed_total",
                "Jobs leased by claims.",
                &["queue"],
            ),
            succeeded: counter_vec(
                &r,
                "drove_worker_jobs_succeeded_total",
                "Jobs recorded succeeded.",
                job,
            ),
            failed: counter_vec(
                &r,
                "drove_worker_jobs_failed_total",
                "Failed attempts recorded.",
                job,
            ),
            retried: counter_vec(
                &r,
                "drove_worker_jobs_retried_total",
                "Failed attempts scheduled for retry.",
                job,
            ),
            dead: counter_vec(
                &r,
                "drove_worker_jobs_dead_total",
                "Jobs that ran out of attempts.",
                job,
            ),
            cancelled: counter_vec(
                &r,
                "drove_worker_jobs_cancelled_total",
                "Running jobs stopped by a cancel.",
                job,
            ),
            released: counter(
                &r,
                "drove_worker_jobs_released_total",
                "Leases given back unfinished (shutdown, lost lease).",
            ),
            rejected: counter(
                &r,
                "drove_worker_outcomes_rejected_total",
                "Outcomes fenced off because the lease had been lost.",
            ),
            in_flight: gauge(
                &r,
                "drove_worker_jobs_in_flight",
                "Jobs leased to this worker, running or about to.",
            ),
            slots: gauge(&r, "drove_worker_slots", "Jobs this worker runs at once."),
            busy: gauge(&r, "drove_worker_slots_busy", "Slots running a job."),
            prefetch: gauge(
                &r,
                "drove_worker_prefetch_jobs",
                "Jobs the worker currently claims ahead of free slots.",
            ),
            heartbeat_failures: counter(
                &r,
                "drove_worker_heartbeat_failures_total",
                "Heartbeats that failed.",
            ),
            fenced: gauge(
                &r,
                "drove_worker_fenced",
                "1 while the worker has stopped its jobs for lack of a lease.",
            ),
            db_errors: counter_vec(
                &r,
                "drove_worker_db_errors_total",
                "Database operations that failed.",
                &["op"],
            ),
            reaped_jobs: counter(
                &r,
                "drove_worker_reaped_jobs_total",
                "Jobs of dead workers this worker reclaimed.",
            ),
            utilization,
            claim_seconds,
            run_seconds,
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// The Prometheus text exposition of a registry (the worker's and the
/// controller's `/metrics`).
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("encoding to a Vec cannot fail");
    String::from_utf8(buf).expect("the text format is UTF-8")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
