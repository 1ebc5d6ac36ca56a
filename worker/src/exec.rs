//! The `exec` handler: runs a configured command for a job kind.
//!
//! - stdin: the payload JSON; environment: `DROVE_JOB_ID`, `DROVE_JOB_KIND`,
//!   `DROVE_JOB_QUEUE`, `DROVE_JOB_ATTEMPT`.
//! - exit 0: success; stdout is the result (stored as JSON if it parses,
//!   as a JSON string otherwise, nothing if empty; at most 1 MiB).
//! - non-zero exit or death by signal: a failed attempt (retried per the
//!   queue's policy) whose error keeps the last 8 KiB of stderr.
//! - a stderr line `DROVE_PROGRESS {json}` reports progress.
//! - a stderr line `DROVE_ENQUEUE {job}` (a job as the API takes it, e.g.
//!   `{"kind": "resize", "payload": {...}}`) is enqueued if this attempt
//!   succeeds, in the transaction that records the success; a line that is
//!   not a valid job fails the attempt for good.
//! - the command runs in its own process group; the whole group is killed
//!   (SIGKILL) on timeout, cancel, shutdown, lost lease, and after it exits
//!   (no stray grandchildren outlive the job).

use std::process::Stdio;

use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::handler::{BoxFuture, Handler, Job, JobError, JobResult};

/// Largest stdout kept as a result.
pub const MAX_STDOUT: usize = 1 << 20;
/// Tail of stderr kept as the error of a failed attempt.
pub const STDERR_TAIL: usize = 8 << 10;
const PROGRESS_PREFIX: &[u8] = b"DROVE_PROGRESS ";
const ENQUEUE_PREFIX: &[u8] = b"DROVE_ENQUEUE ";

/// Runs `argv` for each job.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    argv: Vec<String>,
}

impl ExecHandler {
    pub fn new(argv: Vec<String>) -> ExecHandler {
        assert!(!argv.is_empty(), "exec handler needs a command");
        ExecHandler { argv }
    }
}

impl Handler for ExecHandler {
    fn run(&self, job: Job) -> BoxFuture<JobResult> {
        Box::pin(run(self.argv.clone(), job))
    }
}

/// Kills a process group when dropped: the job finished, or its future was
/// dropped because of a timeout, cancel or shutdown.
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg only sends a signal; a stale or empty group yields ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

async fn run(argv: Vec<String>, job: Job) -> JobResult {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("DROVE_JOB_ID", job.id.to_string())
        .env("DROVE_JOB_KIND", &*job.kind)
        .env("DROVE_JOB_QUEUE", &*job.queue)
        .env("DROVE_JOB_ATTEMPT", job.attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| JobError::retry(format!("cannot start {}: {e}", argv[0])))?;
    let _group = GroupKill(child.id().and_then(|pid| i32::try_from(pid).ok()));

    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let payload = job.payload.get().as_bytes().to_vec();
    let feed = async move {
        // A command that does not read its stdin closes the pipe: not an error.
        let _ = stdin.write_all(&payload).await;
        drop(stdin);
    };
    let (_, out, err, status) = tokio::join!(
        feed,
        read_capped(stdout),
        read_stderr(stderr, &job),
        child.wait()
    );
    let status = status.map_err(|e| JobError::retry(format!("waiting for {}: {e}", argv[0])))?;
    let (out, truncated) = out.map_err(|e| JobError::retry(format!("reading stdout: {e}")))?;
    let (err, bad_follow_up) = err.map_err(|e| JobError::retry(format!("reading stderr: {e}")))?;

    if !status.success() {
        let how = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "failed".to_string(),
        };
        let tail = String::from_utf8_lossy(&err);
        let tail = tail.trim();
        return Err(JobError::retry(if tail.is_empty() {
            how
        } else {
            format!("{how}: {tail}")
        }));
    }
    if let Some(why) = bad_follow_up {
        return Err(JobError::permanent(why));
    }
    if truncated {
        return Err(JobError::retry(format!(
            "stdout exceeded {MAX_STDOUT} bytes"
        )));
    }
    Ok(result_from_stdout(&out))
}

fn result_from_stdout(out: &[u8]) -> Option<Box<RawValue>> {
    let text = String::from_utf8_lossy(out);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match RawValue::from_string(text.to_string()) {
        Ok(raw) => Some(raw),
        Err(_) => Some(
            RawValue::from_string(serde_json::to_string(text).expect("a string serializes"))
                .expect("serde_json output is JSON"),
        ),
    }
}

/// Reads all of a stream, keeping at most [`MAX_STDOUT`] bytes.
async fn read_capped(mut r: impl AsyncRead + Unpin) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let mut truncated = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = MAX_STDOUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
}

/// Reads stderr: progress lines are reported, the rest is kept as a tail.
/// Also returns why a `DROVE_ENQUEUE` line was refused, if one was.
async fn read_stderr(
    mut r: impl AsyncRead + Unpin,
    job: &Job,
) -> std::io::Result<(Vec<u8>, Option<String>)> {
    let mut bad_follow_up = None;
    let mut tail: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8 << 10];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                take_line(&mut line, &mut tail, job, &mut bad_follow_up);
            } else if line.len() < STDERR_TAIL {
                line.push(b);
            }
        }
    }
    take_line(&mut line, &mut tail, job, &mut bad_follow_up);
    Ok((tail, bad_follow_up))
}

fn take_line(
    line: &mut Vec<u8>,
    tail: &mut Vec<u8>,
    job: &Job,
    bad_follow_up: &mut Option<String>,
) {
    if let Some(json) = line.strip_prefix(PROGRESS_PREFIX)
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(json)
    {
        job.progress(&v);
        line.clear();
        return;
    }
    if let Some(json) = line.strip_prefix(ENQUEUE_PREFIX) {
        match serde_json::from_slice::<drove_queue::NewJob>(json) {
            Ok(next) => job.then(next),
            Err(e) => *bad_follow_up = Some(format!("invalid DROVE_ENQUEUE line: {e}")),
        }
        line.clear();
        return;
    }
    if !line.is_empty() {
        tail.extend_from_slice(line);
        tail.push(b'\n');
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    line.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> ExecHandler {
        ExecHandler::new(vec!["/bin/sh".into(), "-c".into(), script.into()])
    }

    #[tokio::test]
    async fn payload_in_result_out() {
        let job = Job::for_test("x", r#"{"n": 41}"#);
        let out = sh("cat; echo >&2 ignored").run(job).await.unwrap().unwrap();
        assert_eq!(out.get(), r#"{"n": 41}"#);
        let out = sh("echo hello world")
            .run(Job::for_test("x", "{}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.get(), r#""hello world""#);
        assert!(
            sh("true")
                .run(Job::for_test("x", "{}"))
                .await
                .unwrap()
                .is_none()
        );
        let env = sh("echo $DROVE_JOB_ID-$DROVE_JOB_ATTEMPT")
            .run(Job::for_test("x", "{}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.get(), "\"1-1\"");
    }

    #[tokio::test]
    async fn failure_keeps_stderr() {
        let err = sh("echo working; echo 'disk full' >&2; exit 3")
            .run(Job::for_test("x", "{}"))
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert_eq!(err.message, "exit status 3: disk full");
        let err = ExecHandler::new(vec!["/nonexistent/cmd".into()])
            .run(Job::for_test("x", "{}"))
            .await
            .unwrap_err();
        assert!(
            err.message.contains("cannot start /nonexistent/cmd"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn progress_lines_are_reported() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut job = Job::for_test("x", "{}");
        job.progress_tx = Some(tx);
        sh(r#"echo 'DROVE_PROGRESS {"done": 1}' >&2; echo 'DROVE_PROGRESS {"done": 2}' >&2"#)
            .run(job)
            .await
            .unwrap();
        let (_, _, first) = rx.recv().await.unwrap();
        let (_, _, second) = rx.recv().await.unwrap();
        assert_eq!(
            (first.get(), second.get()),
            (r#"{"done":1}"#, r#"{"done":2}"#)
        );
    }

    #[tokio::test]
    async fn dropping_the_job_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("drove-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("grandchild.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let fut = sh(&script).run(Job::for_test("x", "{}"));
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_millis(500), fut).await;
        assert!(r.is_err(), "still running when dropped");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild (sleep 300) is gone: signal 0 finds no such process.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid);
            if !alive {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {pid} survived the job"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    }
}
