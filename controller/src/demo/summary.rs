//! The end-of-demo summary: what happened to every job (read back from the
//! database: each enqueued job must be recorded succeeded exactly once),
//! how long it took, the workers' peak and final count, queue-wait
//! percentiles, and how fast the group followed each burst.

use std::time::Duration;

use drove_queue::JobState;
use drove_queue::inspect::Timings;

use super::monitor::secs;
use crate::cli::follow::percentile;

/// How the group followed one burst.
#[derive(Debug, Clone, Default)]
pub struct BurstFigures {
    pub jobs: usize,
    pub took: Option<Duration>,
    /// The largest size the scaler asked for during the burst.
    pub peak_desired: Option<u32>,
    /// From the enqueue to the scaler asking for that size.
    pub to_desired: Option<Duration>,
    /// From the enqueue to that many live (registered) workers.
    pub to_live: Option<Duration>,
}

impl BurstFigures {
    /// From the monitor's samples: (time since enqueue, desired, live).
    pub fn from_trace(
        jobs: usize,
        took: Option<Duration>,
        trace: &[(Duration, Option<u32>, u32)],
    ) -> BurstFigures {
        let peak = trace.iter().filter_map(|t| t.1).max();
        let to_desired = peak.and_then(|p| trace.iter().find(|t| t.1 == Some(p)).map(|t| t.0));
        let to_live = peak.and_then(|p| trace.iter().find(|t| t.2 >= p).map(|t| t.0));
        BurstFigures {
            jobs,
            took,
            peak_desired: peak,
            to_desired,
            to_live,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub enqueued: usize,
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    /// Still waiting or running (the demo was cut short).
    pub unfinished: i64,
    /// Enqueued jobs that are in no state at all: must be 0.
    pub lost: i64,
    pub elapsed: Duration,
    pub peak_workers: u32,
    pub final_workers: u32,
    pub wait_p50_s: Option<f64>,
    pub wait_p95_s: Option<f64>,
    pub run_p50_s: Option<f64>,
    pub run_p95_s: Option<f64>,
    /// First job done: (after the first enqueue, after the demo started).
    pub first_done: Option<(Duration, Duration)>,
    pub bursts: Vec<BurstFigures>,
}

impl Summary {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        enqueued: usize,
        counts: &[(JobState, i64)],
        mut t: Timings,
        elapsed: Duration,
        peak_workers: u32,
        final_workers: u32,
        first_done: Option<(Duration, Duration)>,
        bursts: Vec<BurstFigures>,
    ) -> Summary {
        let get = |s: JobState| counts.iter().find(|(st, _)| *st == s).map_or(0, |c| c.1);
        let (succeeded, dead, cancelled) = (
            get(JobState::Succeeded),
            get(JobState::Dead),
            get(JobState::Cancelled),
        );
        let unfinished = get(JobState::Available) + get(JobState::Running);
        // Every id is in exactly one table and one state (finished jobs are
        // keyed by id), so the states add up to the enqueued count unless a
        // job vanished.
        let seen: i64 = counts.iter().map(|c| c.1).sum();
        Summary {
            enqueued,
            succeeded,
            dead,
            cancelled,
            unfinished,
            lost: enqueued as i64 - seen,
            elapsed,
            peak_workers,
            final_workers,
            wait_p50_s: percentile(&mut t.wait_s, 0.50),
            wait_p95_s: percentile(&mut t.wait_s, 0.95),
            run_p50_s: percentile(&mut t.run_s, 0.50),
            run_p95_s: percentile(&mut t.run_s, 0.95),
            first_done,
            bursts,
        }
    }

    /// Every enqueued job succeeded, exactly once.
    pub fn all_succeeded(&self) -> bool {
        self.lost == 0 && self.succeeded == self.enqueued as i64
    }
}

fn opt_s(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| secs(Duration::from_secs_f64(s)))
}

fn opt_d(v: Option<Duration>) -> String {
    v.map_or("-".into(), secs)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "summary (checked in the database)")?;
        writeln!(
            f,
            "  jobs         {} enqueued, {} succeeded exactly once, {} failed, {} cancelled, lost {}{}",
            self.enqueued,
            self.succeeded,
            self.dead,
            self.cancelled,
            self.lost,
            if self.unfinished > 0 {
                format!(", {} unfinished", self.unfinished)
            } else {
                String::new()
            }
        )?;
        let per_burst: Vec<String> = self
            .bursts
            .iter()
            .enumerate()
            .map(|(i, b)| format!("burst {} {}", i + 1, opt_d(b.took)))
            .collect();
        writeln!(
            f,
            "  time         {} in all ({})",
            secs(self.elapsed),
            per_burst.join(", ")
        )?;
        writeln!(
            f,
            "  workers      peak {}, final {}",
            self.peak_workers, self.final_workers
        )?;
        writeln!(
            f,
            "  queue wait   p50 {}, p95 {}   (enqueue to start)",
            opt_s(self.wait_p50_s),
            opt_s(self.wait_p95_s)
        )?;
        writeln!(
            f,
            "  run time     p50 {}, p95 {}   (wall time; CPU-bound jobs share the cores)",
            opt_s(self.run_p50_s),
            opt_s(self.run_p95_s)
        )?;
        if let Some((after_enqueue, after_start)) = self.first_done {
            writeln!(
                f,
                "  first done   {} after the first enqueue, {} after the demo started",
                secs(after_enqueue),
                secs(after_start)
            )?;
        }
        for (i, b) in self.bursts.iter().enumerate() {
            match b.peak_desired {
                Some(p) => writeln!(
                    f,
                    "  scale-out    burst {}: desired {p} worker{} {} after the enqueue, {p} live after {}",
                    i + 1,
                    super::plural(p as usize),
                    opt_d(b.to_desired),
                    opt_d(b.to_live)
                )?,
                None => writeln!(f, "  scale-out    burst {}: no scaler decision seen", i + 1)?,
            }
        }
        if !self.all_succeeded() {
            write!(
                f,
                "  NOT every job succeeded exactly once: see the dashboard and `drove jobs`"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_out_figures_come_from_the_first_sample_at_the_peak() {
        let ms = Duration::from_millis;
        let trace = [
            (ms(100), None, 0),
            (ms(300), Some(8), 0),
            (ms(500), Some(8), 3),
            (ms(900), Some(8), 8),
            (ms(5000), Some(5), 8),
        ];
        let b = BurstFigures::from_trace(128, None, &trace);
        assert_eq!(b.peak_desired, Some(8));
        assert_eq!(b.to_desired, Some(ms(300)));
        assert_eq!(b.to_live, Some(ms(900)));
    }

    #[test]
    fn a_missing_job_counts_as_lost() {
        let counts = [(JobState::Succeeded, 9)];
        let s = Summary::new(
            10,
            &counts,
            Timings::default(),
            Duration::ZERO,
            0,
            0,
            None,
            vec![],
        );
        assert_eq!(s.lost, 1);
        assert!(!s.all_succeeded());
        let s = Summary::new(
            9,
            &counts,
            Timings::default(),
            Duration::ZERO,
            0,
            0,
            None,
            vec![],
        );
        assert!(s.all_succeeded());
    }
}
