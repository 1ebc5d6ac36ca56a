//! `drove bench`: drove's figures, measured on this machine against a
//! baseline measured in the same run.
//!
//! One module per workload:
//! - [`drain`]: N no-op jobs enqueued in bulk, drained by W real worker
//!   processes (the workload Postgres queues are compared on);
//! - [`raw`]: the same claim-and-complete in bare SQL, the physical limit;
//! - [`enqueue`]: bulk enqueue throughput and single-job enqueue latency;
//! - [`latency`]: enqueue-to-start latency with idle workers;
//! - [`idle`]: what idle workers cost the database (connections,
//!   statements/s, server CPU for a fleet of simulated workers);
//! - [`footprint`]: worker memory idle and under load, start-to-ready time;
//! - [`sustained`]: a long run through two workers with pruning, for
//!   throughput stability, table sizes and dead tuples.
//!
//! It runs on a throwaway PostgreSQL it starts itself, or on
//! `--database-url`, where it works only in a schema of its own (see
//! [`target`]). Repeat with `--runs` on a noisy machine: the summary gives
//! medians, the spread, and ratios paired by run.

pub mod drain;
pub mod enqueue;
pub mod footprint;
pub mod idle;
pub mod latency;
pub mod raw;
pub mod report;
pub mod sustained;
pub mod sys;
pub mod target;
pub mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use drove_worker::config::DbArgs;

use report::Report;
use target::{Needs, Target};
use workers::Spawner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Drain,
    Raw,
    Enqueue,
    Latency,
    Idle,
    Footprint,
    Sustained,
    /// Every workload above.
    All,
}

/// The workloads run when none is named.
const DEFAULT: [Workload; 4] = [
    Workload::Drain,
    Workload::Raw,
    Workload::Enqueue,
    Workload::Latency,
];

#[derive(Args)]
pub struct BenchArgs {
    /// Workloads to run [default: drain raw enqueue latency].
    #[arg(value_enum)]
    workloads: Vec<Workload>,

    /// Jobs per drain, raw and bulk-enqueue run.
    #[arg(long, default_value_t = 200_000)]
    jobs: u64,

    /// Worker processes for drain and latency.
    #[arg(long, default_value_t = 1)]
    workers: usize,

    /// Flags for the drove-worker processes, e.g. "--slots 8 --max-batch 2000"
    /// (split on spaces). Repeat to compare configurations in the same
    /// runs; "" means the defaults, which are measured when this is not given.
    #[arg(long = "worker-args", allow_hyphen_values = true)]
    worker_args: Vec<String>,

    /// Repeat every workload this many times, interleaved (medians are reported).
    #[arg(long, default_value_t = 1)]
    runs: usize,

    /// Rows per claim for raw [default: the worker's --max-batch default].
    /// Repeat (or separate with commas) to measure several batch sizes in
    /// the same runs; drain's ratio is taken against the best of them.
    #[arg(long, value_delimiter = ',')]
    batch: Vec<i64>,

    /// Connections claiming and deleting side by side in raw.
    #[arg(long, default_value_t = 2)]
    raw_connections: usize,

    /// Connections enqueueing side by side in the bulk enqueue. Repeat (or
    /// separate with commas) to measure several in the same runs.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    enqueue_connections: Vec<usize>,

    /// Jobs enqueued one at a time for the enqueue latency.
    #[arg(long, default_value_t = 2_000)]
    single_jobs: u64,

    /// Jobs enqueued one at a time for the enqueue-to-start latency.
    #[arg(long, default_value_t = 2_000)]
    latency_jobs: u64,

    /// Pace of the latency workload, jobs per second.
    #[arg(long, default_value_t = 200.0)]
    latency_rate: f64,

    /// How long idle workers are observed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_time: std::time::Duration,

    /// Simulated idle workers (embedded in this process) for the fleet cost; 0 skips it.
    #[arg(long, default_value_t = 200)]
    fleet: usize,

    /// Jobs of the sustained run.
    #[arg(long, default_value_t = 1_000_000)]
    sustained_jobs: u64,

    /// Worker processes of the sustained run.
    #[arg(long, default_value_t = 2)]
    sustained_workers: usize,

    /// Give the jobs ordering keys, round-robin over this many keys (0: none),
    /// to measure what ordering costs.
    #[arg(long, default_value_t = 0)]
    ordering_keys: u64,

    /// Set the queue's max_running (e.g. a limit too high to bind, to
    /// measure what the limited claim path costs).
    #[arg(long)]
    max_running: Option<i32>,

    /// Set the queue's rate limit, jobs started per second.
    #[arg(long)]
    rate: Option<f64>,

    /// The drove-worker binary [default: next to this drove binary].
    #[arg(long)]
    worker_bin: Option<PathBuf>,

    /// One JSON object per line instead of tables.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    fn plan(&self) -> Vec<Workload> {
        if self.workloads.is_empty() {
            return DEFAULT.to_vec();
        }
        if self.workloads.contains(&Workload::All) {
            return Workload::value_variants()
                .iter()
                .copied()
                .filter(|w| *w != Workload::All)
                .collect();
        }
        let mut plan = self.workloads.clone();
        plan.dedup();
        plan
    }

    fn configs(&self) -> Vec<String> {
        if self.worker_args.is_empty() {
            vec![String::new()]
        } else {
            self.worker_args.clone()
        }
    }
}

pub async fn run(db: &DbArgs, args: BenchArgs) -> Result<ExitCode> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(
        args.jobs >= 1 && args.workers >= 1,
        "--jobs and --workers must be at least 1"
    );
    anyhow::ensure!(args.latency_rate > 0.0, "--latency-rate must be positive");
    anyhow::ensure!(
        args.batch.iter().all(|b| *b >= 1),
        "--batch must be at least 1"
    );
    anyhow::ensure!(
        args.enqueue_connections.iter().all(|c| *c >= 1),
        "--enqueue-connections must be at least 1"
    );
    let plan = args.plan();
    let needs = Needs {
        max_connections: if plan.contains(&Workload::Idle) {
            (args.fleet * 3 + 50).max(300) as u32
        } else {
            300
        },
    };
    let mut target = Target::open(db, &needs).await?;
    target.features = target::Features {
        ordering_keys: args.ordering_keys,
        max_running: args.max_running,
        rate: args.rate,
    };
    let mut report = Report::new(args.json);
    let result = run_plan(&target, &args, &plan, &mut report).await;
    report.finish();
    let closed = target.close().await;
    result?;
    closed?;
    Ok(ExitCode::SUCCESS)
}

async fn run_plan(
    t: &Target,
    args: &BenchArgs,
    plan: &[Workload],
    report: &mut Report,
) -> Result<()> {
    let mut env = sys::machine();
    env.extend(t.settings().await?);
    let f = &t.features;
    if f.ordering_keys > 0 {
        env.insert("ordering_keys".into(), f.ordering_keys.into());
    }
    if let Some(m) = f.max_running {
        env.insert("max_running".into(), m.into());
    }
    if let Some(r) = f.rate {
        env.insert("rate_per_sec".into(), r.into());
    }
    report.environment(&env);
    let spawner = Spawner::new(args.worker_bin.clone(), &t.url, t.schema.name())?;
    let batches = if args.batch.is_empty() {
        vec![drove_worker::config::DEFAULT_MAX_BATCH]
    } else {
        args.batch.clone()
    };
    let configs = args.configs();
    for run in 1..=args.runs {
        for w in plan {
            match w {
                Workload::Drain => {
                    for cfg in &configs {
                        report
                            .add(drain::run(t, &spawner, args.jobs, args.workers, cfg, run).await?);
                    }
                }
                Workload::Raw => {
                    for &batch in &batches {
                        report.add(raw::run(t, args.jobs, batch, args.raw_connections, run).await?);
                    }
                }
                Workload::Enqueue => {
                    for f in enqueue::run(
                        t,
                        args.jobs,
                        &args.enqueue_connections,
                        args.single_jobs,
                        run,
                    )
                    .await?
                    {
                        report.add(f);
                    }
                }
                Workload::Latency => {
                    report.add(
                        latency::run(
                            t,
                            &spawner,
                            args.latency_jobs,
                            args.latency_rate,
                            args.workers,
                            &configs[0],
                            run,
                        )
                        .await?,
                    );
                }
                Workload::Idle => {
                    for f in idle::run(t, &spawner, args.idle_time, args.fleet, run).await? {
                        report.add(f);
                    }
                }
                Workload::Footprint => {
                    for f in footprint::run(t, &spawner, args.jobs, run).await? {
                        report.add(f);
                    }
                }
                Workload::Sustained => {
                    let figs = sustained::run(
                        t,
                        &spawner,
                        args.sustained_jobs,
                        args.sustained_workers,
                        &configs[0],
                        run,
                    )
                    .await?;
                    for f in figs {
                        report.add(f);
                    }
                }
                Workload::All => unreachable!("expanded by plan()"),
            }
        }
    }
    spawner.clean_up();
    Ok(())
}
