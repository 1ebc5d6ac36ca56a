//! Built-in handlers: `noop`, `sleep` (`{"ms": N}`), and `spin`
//! (`{"ms": N}`: burn N ms of CPU, the demo load; the seed tool's
//! `add <difficulty>` enqueues spin jobs with `ms = difficulty`).
//! `sleep` and `spin` take `"fail_attempts": K` too: attempts 1..=K fail
//! (retryably) after their work, for trying retries and ordering out.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::handler::{Job, JobError, JobResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Millis {
    ms: u64,
    #[serde(default)]
    fail_attempts: i32,
}

/// The planned failure of an attempt `fail_attempts` asks for.
fn planned_failure(job: &Job, fail_attempts: i32) -> JobResult {
    if job.attempt <= fail_attempts {
        return Err(JobError::retry(format!(
            "planned failure of attempt {} (fail_attempts = {fail_attempts})",
            job.attempt
        )));
    }
    Ok(None)
}

/// Does nothing, successfully.
pub async fn noop(_job: Job) -> JobResult {
    Ok(None)
}

/// Waits `ms` milliseconds (stops early when cancelled).
pub async fn sleep(job: Job) -> JobResult {
    let Millis { ms, fail_attempts } = job.payload()?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => planned_failure(&job, fail_attempts),
        _ = job.cancel.cancelled() => Err(JobError::retry("stopped")),
    }
}

/// Burns `ms` milliseconds of CPU time on a blocking thread and returns how
/// much it burned. CPU time, not wall time: on a busy machine it takes
/// longer, as real CPU-bound work would.
pub async fn spin(job: Job) -> JobResult {
    let Millis { ms, fail_attempts } = job.payload()?;
    let cancel = job.cancel.clone();
    let burned = tokio::task::spawn_blocking(move || {
        burn_cpu(Duration::from_millis(ms), || cancel.is_cancelled())
    })
    .await
    .map_err(|e| JobError::retry(format!("spin thread failed: {e}")))?;
    if burned.is_none() {
        return Err(JobError::retry("stopped"));
    }
    planned_failure(&job, fail_attempts)?;
    let result = format!(r#"{{"cpu_ms":{}}}"#, burned.unwrap_or_default().as_millis());
    Ok(Some(RawValue::from_string(result).expect("valid JSON")))
}

/// Spins until this thread has used `amount` of CPU time; None if stopped.
pub fn burn_cpu(amount: Duration, stop: impl Fn() -> bool) -> Option<Duration> {
    let start = thread_cpu_time();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    loop {
        for _ in 0..20_000 {
            // xorshift: cheap work the optimizer cannot remove.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
        let used = thread_cpu_time().saturating_sub(start);
        if used >= amount {
            return Some(used);
        }
        if stop() {
            return None;
        }
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; the clock id is valid on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spin_burns_cpu_time_and_reports_it() {
        let out = spin(Job::for_test("spin", r#"{"ms": 30}"#))
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(out.get()).unwrap();
        let ms = v["cpu_ms"].as_u64().unwrap();
        assert!((30..200).contains(&ms), "burned {ms} ms");
    }

    #[tokio::test]
    async fn bad_payload_is_permanent() {
        let err = spin(Job::for_test("spin", r#"{"ms": "lots"}"#))
            .await
            .unwrap_err();
        assert!(
            !err.retryable && err.message.contains("invalid payload"),
            "{err:?}"
        );
        let err = sleep(Job::for_test("sleep", r#"{}"#)).await.unwrap_err();
        assert!(!err.retryable, "{err:?}");
    }

    #[tokio::test]
    async fn spin_stops_when_cancelled() {
        let job = Job::for_test("spin", r#"{"ms": 60000}"#);
        let cancel = job.cancel.clone();
        let started = std::time::Instant::now();
        let h = tokio::spawn(spin(job));
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let err = h.await.unwrap().unwrap_err();
        assert!(err.retryable);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
