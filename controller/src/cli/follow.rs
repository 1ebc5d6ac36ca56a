//! Following a set of jobs to completion: a live progress bar on a terminal
//! (a line every few seconds otherwise), then a summary with queue-wait and
//! run-time percentiles.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use drove_queue::{Conn, JobId, JobState, Schema};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::table::secs;

/// What became of a set of jobs.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub total: usize,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// False if following stopped (Ctrl-C) before every job finished.
    pub finished: bool,
    pub seconds: f64,
    pub wait_p50_s: Option<f64>,
    pub wait_p95_s: Option<f64>,
    pub run_p50_s: Option<f64>,
    pub run_p95_s: Option<f64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |v: Option<f64>| v.map(secs).unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "{} of {} jobs done, {} failed (dead), {} cancelled in {}{}",
            self.done,
            self.total,
            self.failed,
            self.cancelled,
            secs(self.seconds),
            if self.finished {
                ""
            } else {
                " (stopped following; the rest are still queued or running)"
            }
        )?;
        write!(
            f,
            "queue wait p50 {} p95 {}   run time p50 {} p95 {}",
            p(self.wait_p50_s),
            p(self.wait_p95_s),
            p(self.run_p50_s),
            p(self.run_p95_s)
        )
    }
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// Polls the jobs' states until all have finished (or Ctrl-C).
pub async fn follow(conn: &Conn, schema: &Schema, ids: &[JobId], show: bool) -> Result<Summary> {
    let started = Instant::now();
    let total = ids.len();
    let tty = show && std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} done  {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let interval = if total > 20_000 {
        Duration::from_millis(1000)
    } else {
        Duration::from_millis(250)
    };
    let mut last_line = Instant::now();
    let (mut done, mut failed, mut cancelled);
    let stop = drove_worker::shutdown::signal();
    tokio::pin!(stop);
    let finished = loop {
        let counts = drove_queue::inspect::jobs_count_by_state(conn.client(), schema, ids).await?;
        let get = |s: JobState| counts.iter().find(|(st, _)| *st == s).map_or(0, |c| c.1);
        (done, failed, cancelled) = (
            get(JobState::Succeeded),
            get(JobState::Dead),
            get(JobState::Cancelled),
        );
        let (running, waiting) = (get(JobState::Running), get(JobState::Available));
        let msg = format!("running {running}  waiting {waiting}  failed {failed}");
        bar.set_position(done as u64);
        bar.set_message(msg.clone());
        if show && !tty && last_line.elapsed() >= Duration::from_secs(3) {
            eprintln!(
                "[{}] {done}/{total} done  {msg}",
                secs(started.elapsed().as_secs_f64())
            );
            last_line = Instant::now();
        }
        if (done + failed + cancelled) as usize >= total {
            break true;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => break false,
        }
    };
    bar.finish_and_clear();
    let mut t = drove_queue::inspect::jobs_timings(conn.client(), schema, ids).await?;
    Ok(Summary {
        total,
        done,
        failed,
        cancelled,
        finished,
        seconds: started.elapsed().as_secs_f64(),
        wait_p50_s: percentile(&mut t.wait_s, 0.50),
        wait_p95_s: percentile(&mut t.wait_s, 0.95),
        run_p50_s: percentile(&mut t.run_s, 0.50),
        run_p95_s: percentile(&mut t.run_s, 0.95),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        v.reverse();
        assert_eq!(percentile(&mut v, 0.5), Some(50.0));
        assert_eq!(percentile(&mut v, 0.95), Some(95.0));
        assert_eq!(percentile(&mut [7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&mut [], 0.5), None);
    }
}
