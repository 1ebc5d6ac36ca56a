//! The `local` backend: `drove-worker` processes on this machine (the demo).
//! Scaling out starts processes; scaling in sends SIGTERM to idle ones,
//! which drain and exit; exited processes are reaped on later ticks.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::backend::{Applied, Backend, BackendError, BoxFuture, Decision};

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub worker_bin: PathBuf,
    /// Arguments for every worker (slots, ...).
    pub args: Vec<String>,
    /// Environment for every worker (database URL and schema: kept out of
    /// the process list).
    pub env: Vec<(String, String)>,
    /// Worker logs go to `<dir>/worker-<n>.log`; none kept if unset.
    pub log_dir: Option<PathBuf>,
    /// How long `shutdown` waits for draining workers before killing them.
    pub stop_timeout: Duration,
}

struct Proc {
    child: Child,
    pid: u32,
    stopping: bool,
}

pub struct LocalBackend {
    config: LocalConfig,
    procs: Mutex<Vec<Proc>>,
    started: std::sync::atomic::AtomicU64,
}

impl LocalBackend {
    pub fn new(config: LocalConfig) -> LocalBackend {
        LocalBackend {
            config,
            procs: Mutex::new(Vec::new()),
            started: Default::default(),
        }
    }

    fn spawn(&self) -> Result<Proc, BackendError> {
        let n = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (out, err) = match &self.config.log_dir {
            Some(dir) => {
                let f = std::fs::File::create(dir.join(format!("worker-{n}.log")))
                    .map_err(|e| BackendError::new("local", format!("worker log: {e}"), false))?;
                let f2 = f
                    .try_clone()
                    .map_err(|e| BackendError::new("local", e.to_string(), false))?;
                (Stdio::from(f), Stdio::from(f2))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(&self.config.worker_bin)
            .args(&self.config.args)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                BackendError::new(
                    "local",
                    format!("cannot start {}: {e}", self.config.worker_bin.display()),
                    false,
                )
            })?;
        let pid = child.id().unwrap_or_default();
        Ok(Proc {
            child,
            pid,
            stopping: false,
        })
    }
}

fn term(pid: u32) {
    // SAFETY: sends SIGTERM to a child process this backend started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn apply<'a>(&'a self, d: &'a Decision) -> BoxFuture<'a, Result<Applied, BackendError>> {
        Box::pin(async move {
            let mut procs = self.procs.lock().expect("procs lock poisoned");
            procs.retain_mut(|p| matches!(p.child.try_wait(), Ok(None)));
            let running = procs.iter().filter(|p| !p.stopping).count() as u32;
            let mut action = None;
            if d.desired > running {
                for _ in running..d.desired {
                    procs.push(self.spawn()?);
                }
                action = Some(format!(
                    "started {} worker(s): {running} -> {}",
                    d.desired - running,
                    d.desired
                ));
            } else if d.desired < running {
                // Idle workers first (by pid, from the registry), then the newest.
                let idle: Vec<u32> = d
                    .workers
                    .iter()
                    .filter(|w| w.busy == 0)
                    .map(|w| w.pid as u32)
                    .collect();
                let mut order: Vec<usize> =
                    (0..procs.len()).filter(|&i| !procs[i].stopping).collect();
                order.sort_by_key(|&i| (!idle.contains(&procs[i].pid), std::cmp::Reverse(i)));
                let n = (running - d.desired) as usize;
                for &i in order.iter().take(n) {
                    procs[i].stopping = true;
                    term(procs[i].pid);
                }
                action = Some(format!(
                    "stopping {n} worker(s): {running} -> {}",
                    d.desired
                ));
            }
            Ok(Applied {
                size: Some(procs.iter().filter(|p| !p.stopping).count() as u32),
                action,
            })
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut procs: Vec<Proc> =
                std::mem::take(&mut *self.procs.lock().expect("procs lock poisoned"));
            for p in &procs {
                term(p.pid);
            }
            let deadline = tokio::time::Instant::now() + self.config.stop_timeout;
            for p in &mut procs {
                if tokio::time::timeout_at(deadline, p.child.wait())
                    .await
                    .is_err()
                {
                    let _ = p.child.kill().await;
                }
            }
        })
    }
}
