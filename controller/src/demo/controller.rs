//! The demo's controller: `drove serve --scaler local` as a child process
//! of this one, its log in the demo's log directory, and a small client for
//! its `/v1/stats` (what the scaler wants and how many processes it runs).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drove_queue::Schema;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::DemoArgs;

/// How long the controller may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to drain and stop its workers; then it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Workers drain this long on SIGTERM before giving their jobs back.
const WORKER_GRACE: &str = "5s";

pub struct ControllerConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub schema: Schema,
    pub token: String,
    pub log_dir: PathBuf,
    pub args: DemoArgs,
}

pub struct ControllerProc {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    token: String,
}

/// The requested address if it is free, otherwise any free port.
fn pick_addr(want: SocketAddr) -> Result<SocketAddr> {
    if want.port() != 0
        && let Ok(l) = TcpListener::bind(want)
    {
        drop(l);
        return Ok(want);
    }
    let l = TcpListener::bind(SocketAddr::new(want.ip(), 0))
        .with_context(|| format!("finding a free port on {}", want.ip()))?;
    let addr = l.local_addr()?;
    if want.port() != 0 {
        super::say(format!("  ({want} is taken: using {addr})"));
    }
    Ok(addr)
}

impl ControllerProc {
    pub fn start(c: ControllerConfig) -> Result<ControllerProc> {
        let addr = pick_addr(c.listen)?;
        let log = c.log_dir.join("controller.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let a = &c.args;
        let worker_args = format!(
            "--slots {} --grace {WORKER_GRACE} --log-format json",
            a.slots
        );
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["--log-format", "text", "serve", "--listen"])
            .arg(addr.to_string())
            .args(["--scaler", "local", "--target-backlog", "1"])
            .args(["--min-workers", &a.min_workers.to_string()])
            .args(["--max-workers", &a.max_workers.to_string()])
            .args(["--slots-per-worker", &a.slots.to_string()])
            .args([
                "--scale-in-after",
                &humantime::format_duration(a.scale_in_after).to_string(),
            ])
            .args([
                "--scale-to-zero-after",
                &humantime::format_duration(a.scale_to_zero_after).to_string(),
            ])
            .arg(format!("--local-worker-args={worker_args}"))
            .arg("--local-log-dir")
            .arg(c.log_dir.join("workers"))
            // Secrets go in the environment, not the process list.
            .env("DATABASE_URL", &c.database_url)
            .env("DROVE_SCHEMA", c.schema.name())
            .env("DROVE_API_TOKEN", &c.token)
            .env_remove("DROVE_API_TOKEN_FILE")
            .env_remove("DROVE_DATABASE_URL_FILE")
            .env("RUST_LOG", "info,tokio_postgres=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid,
        // _exit) run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Its own process group: a Ctrl-C in the terminal reaches only
                // the demo, which then stops the controller in order.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SIGTERM if the demo dies without stopping it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting drove serve")?;
        Ok(ControllerProc {
            child,
            addr,
            log,
            token: c.token,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn status_client(&self) -> StatusClient {
        StatusClient {
            addr: self.addr,
            token: self.token.clone(),
        }
    }

    /// Waits for `/readyz`; fails with the log's tail if the process exits.
    pub async fn ready(&mut self, stop: &CancellationToken) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the controller exited ({status}) before it was ready; its log:\n{}",
                    tail(&self.log, 20)
                );
            }
            if let Ok((200, _)) = get(self.addr, "/readyz", None).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller was not ready after {READY_TIMEOUT:?}; its log:\n{}",
                    tail(&self.log, 20)
                );
            }
            tokio::select! {
                _ = stop.cancelled() => bail!("interrupted while the controller started"),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// SIGTERM, then wait: the controller stops its workers (each drains
    /// for up to the worker grace and gives back what is left) and exits.
    /// After [`STOP_TIMEOUT`] it and whatever it started are killed.
    pub async fn stop(&mut self) {
        let Some(pid) = self.child.id() else {
            return; // already reaped
        };
        let descendants = descendants(pid);
        // SAFETY: signals our own child process.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            super::say(format!(
                "the controller did not stop within {STOP_TIMEOUT:?}: killing it and its workers"
            ));
            let _ = self.child.kill().await;
            for p in descendants.into_iter().chain(self::descendants(pid)) {
                // SAFETY: processes started by our own child.
                unsafe {
                    libc::kill(p as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// Process ids below `root` (from /proc), children first.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads the controller's scaling status.
#[derive(Clone)]
pub struct StatusClient {
    addr: SocketAddr,
    token: String,
}

/// What the scaler wants and has.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScalerView {
    /// The policy's desired group size.
    pub desired: Option<u32>,
    /// Worker processes the local backend runs (not counting stopping ones).
    pub size: Option<u32>,
    /// The due and running jobs the decision was made from.
    pub backlog: i64,
    pub running: i64,
}

impl StatusClient {
    pub async fn scaler(&self) -> Option<ScalerView> {
        let (status, body) = get(self.addr, "/v1/stats", Some(&self.token)).await.ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let n = |x: &serde_json::Value| x.as_u64().map(|n| n as u32);
        let d = &v["scaling"]["decision"];
        Some(ScalerView {
            desired: n(&d["desired"]),
            size: n(&v["scaling"]["applied"]["size"]),
            backlog: d["backlog"].as_i64().unwrap_or(0),
            running: d["running"].as_i64().unwrap_or(0),
        })
    }
}

/// A plain HTTP/1.0 GET to the local controller: (status, body). The demo
/// only ever talks to its own child on loopback, so this is all it needs.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no HTTP status line")?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .context("HTTP request timed out")?
}
