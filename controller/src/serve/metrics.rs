//! The controller's Prometheus metrics, all declared here. Queue gauges and
//! counters come from the cached statistics (one database read per refresh,
//! whatever the scrape rate); labels are queue, state, loop and route
//! templates, never ids or raw paths.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use drove_queue::stats::{RUN_BUCKETS, WindowCounts};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// Every metric of `drove serve`. Cheap to clone (handles share state).
#[derive(Clone)]
pub struct ControllerMetrics {
    pub registry: Registry,
    // Queues.
    pub jobs: IntGaugeVec,
    pub oldest_wait: GaugeVec,
    pub paused: IntGaugeVec,
    pub enqueued: IntCounterVec,
    pub finished: IntCounterVec,
    pub run_time: Arc<RunTimeHistogram>,
    // Fleet.
    pub workers: IntGauge,
    pub slots: IntGauge,
    pub busy: IntGauge,
    pub utilization: Gauge,
    // Scaling.
    pub work: Gauge,
    pub backlog_per_worker: Gauge,
    pub desired: IntGauge,
    pub group_size: IntGauge,
    pub scaling_errors: IntCounter,
    // Controller.
    pub leader: IntGauge,
    pub stats_seconds: Gauge,
    pub stats_age: Gauge,
    pub loop_runs: IntCounterVec,
    pub loop_errors: IntCounterVec,
    pub cron_fired: IntCounter,
    pub reaped: IntCounter,
    pub pruned: IntCounter,
    pub vacuums: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
}

fn reg<T: Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

impl ControllerMetrics {
    pub fn new() -> ControllerMetrics {
        let r = Registry::new();
        let q = &["queue"];
        let run_time = Arc::new(RunTimeHistogram::new());
        r.register(Box::new(RunTimeCollector(run_time.clone())))
            .expect("registered once");
        ControllerMetrics {
            jobs: reg(&r, IntGaugeVec::new(Opts::new("drove_queue_jobs", "Jobs by queue and state (available = due now; scheduled = waiting for run_at or a retry; running; dead = kept for inspection)."), &["queue", "state"]).unwrap()),
            oldest_wait: reg(&r, GaugeVec::new(Opts::new("drove_queue_oldest_wait_seconds", "Age of the longest-waiting due job."), q).unwrap()),
            paused: reg(&r, IntGaugeVec::new(Opts::new("drove_queue_paused", "1 if the queue is paused."), q).unwrap()),
            enqueued: reg(&r, IntCounterVec::new(Opts::new("drove_jobs_enqueued_total", "Jobs enqueued (seen by this controller since it started)."), q).unwrap()),
            finished: reg(&r, IntCounterVec::new(Opts::new("drove_jobs_finished_total", "Jobs finished, by final state: succeeded, dead (failed for good), cancelled."), &["queue", "state"]).unwrap()),
            run_time,
            workers: reg(&r, IntGauge::new("drove_workers", "Workers with a live lease (heartbeating).").unwrap()),
            slots: reg(&r, IntGauge::new("drove_worker_slots_total", "Slots of all live workers.").unwrap()),
            busy: reg(&r, IntGauge::new("drove_worker_slots_busy", "Slots running a job.").unwrap()),
            utilization: reg(&r, Gauge::new("drove_slot_utilization_ratio", "Busy slots / slots of the fleet.").unwrap()),
            work: reg(&r, Gauge::new("drove_scaling_work_jobs", "Jobs due or running on unpaused queues: what the group must hold.").unwrap()),
            backlog_per_worker: reg(&r, Gauge::new("drove_scaling_backlog_per_worker", "Due and running jobs per live worker (the scaling signal).").unwrap()),
            desired: reg(&r, IntGauge::new("drove_scaling_desired_workers", "Group size the scaling policy asks for.").unwrap()),
            group_size: reg(&r, IntGauge::new("drove_scaling_group_size", "Group size as the scaling backend reports it.").unwrap()),
            scaling_errors: reg(&r, IntCounter::new("drove_scaling_errors_total", "Scaling backend calls that failed.").unwrap()),
            leader: reg(&r, IntGauge::new("drove_controller_leader", "1 while this controller runs the once-per-fleet loops.").unwrap()),
            stats_seconds: reg(&r, Gauge::new("drove_stats_query_seconds", "Time of the last statistics read.").unwrap()),
            stats_age: reg(&r, Gauge::new("drove_stats_age_seconds", "Age of the statistics behind these metrics.").unwrap()),
            loop_runs: reg(&r, IntCounterVec::new(Opts::new("drove_loop_runs_total", "Passes of each background loop."), &["loop"]).unwrap()),
            loop_errors: reg(&r, IntCounterVec::new(Opts::new("drove_loop_errors_total", "Failed passes of each background loop."), &["loop"]).unwrap()),
            cron_fired: reg(&r, IntCounter::new("drove_cron_fired_total", "Jobs enqueued by cron schedules.").unwrap()),
            reaped: reg(&r, IntCounter::new("drove_reaped_jobs_total", "Jobs reclaimed from dead workers by this controller.").unwrap()),
            pruned: reg(&r, IntCounter::new("drove_pruned_jobs_total", "Finished jobs deleted after their retention.").unwrap()),
            vacuums: reg(&r, IntCounterVec::new(Opts::new("drove_vacuums_total", "VACUUMs the vacuumer ran, by table (jobs, jobs_done)."), &["table"]).unwrap()),
            http_requests: reg(&r, IntCounterVec::new(Opts::new("drove_http_requests_total", "HTTP requests by route template and status."), &["route", "status"]).unwrap()),
            http_seconds: reg(&r, HistogramVec::new(HistogramOpts::new("drove_http_request_duration_seconds", "HTTP request time by route template.").buckets(vec![0.001, 0.005, 0.025, 0.1, 0.5, 2.5]), &["route"]).unwrap()),
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        drove_worker::metrics::render(&self.registry)
    }
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        ControllerMetrics::new()
    }
}

/// Run times of finished jobs per queue, fed with bucket counts from the
/// database (the controller never sees individual jobs).
/// Per queue: cumulative bucket counts, sample count, sample sum.
type Series = BTreeMap<String, ([u64; 12], u64, f64)>;

pub struct RunTimeHistogram {
    desc: Desc,
    data: Mutex<Series>,
}

impl RunTimeHistogram {
    fn new() -> RunTimeHistogram {
        RunTimeHistogram {
            desc: Desc::new(
                "drove_job_run_duration_seconds".into(),
                "Run time of finished jobs (last attempt), from the database.".into(),
                vec!["queue".into()],
                Default::default(),
            )
            .expect("valid metric description"),
            data: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds a window's counts.
    pub fn add(&self, w: &WindowCounts) {
        let mut data = self.data.lock().expect("histogram lock poisoned");
        let entry = data.entry(w.queue.clone()).or_insert(([0; 12], 0, 0.0));
        for (acc, n) in entry.0.iter_mut().zip(w.run_buckets) {
            *acc += n;
        }
        entry.1 += w.run_count;
        entry.2 += w.run_sum_s;
    }
}

struct RunTimeCollector(Arc<RunTimeHistogram>);

impl Collector for RunTimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let data = self.0.data.lock().expect("histogram lock poisoned");
        let metrics = data
            .iter()
            .map(|(queue, (buckets, count, sum))| {
                let mut label = LabelPair::default();
                label.set_name("queue".into());
                label.set_value(queue.clone());
                let mut h = Histogram::default();
                h.set_sample_count(*count);
                h.set_sample_sum(*sum);
                h.set_bucket(
                    RUN_BUCKETS
                        .iter()
                        .zip(buckets)
                        .map(|(bound, n)| {
                            let mut b = Bucket::default();
                            b.set_upper_bound(*bound);
                            b.set_cumulative_count(*n);
                            b
                        })
                        .collect(),
                );
                let mut m = Metric::from_label(vec![label]);
                m.set_histogram(h);
                m
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.0.desc.fq_name.clone());
        family.set_help(self.0.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}
