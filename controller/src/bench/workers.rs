//! Real `drove-worker` processes for the bench: started with the flags
//! under test, watched, and stopped with SIGTERM like a MIG would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How to start workers against the bench's database.
pub struct Spawner {
    pub bin: PathBuf,
    pub url: String,
    pub schema: String,
    pub log_dir: PathBuf,
}

impl Spawner {
    /// `--worker-bin`, or `drove-worker` next to this `drove` binary.
    pub fn new(bin: Option<PathBuf>, url: &str, schema: &str) -> Result<Spawner> {
        let bin = match bin {
            Some(b) => b,
            None => std::env::current_exe()
                .context("locating the drove binary")?
                .with_file_name("drove-worker"),
        };
        if !bin.is_file() {
            bail!(
                "{} not found: build it (cargo build --release -p drove-worker) or pass --worker-bin",
                bin.display()
            );
        }
        let log_dir = std::env::temp_dir().join(format!("drove-bench-{}", std::process::id()));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(Spawner {
            bin,
            url: url.to_string(),
            schema: schema.to_string(),
            log_dir,
        })
    }

    /// Starts one worker with `args` (shell words) on top of the
    /// connection flags; its health server listens on a free loopback port.
    pub fn spawn(&self, args: &[String], tag: &str) -> Result<WorkerProc> {
        let port = free_port()?;
        let log = self.log_dir.join(format!("worker-{tag}-{port}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let started = Instant::now();
        let child = Command::new(&self.bin)
            .args(["--database-url", &self.url, "--schema", &self.schema])
            .args([
                "--log-format",
                "json",
                "--http",
                &format!("127.0.0.1:{port}"),
            ])
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("DROVE_DATABASE_URL_FILE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        Ok(WorkerProc {
            child,
            port,
            log,
            started,
        })
    }

    /// Removes the worker logs (kept when something failed).
    pub fn clean_up(&self) {
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// A running `drove-worker` child process.
pub struct WorkerProc {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub started: Instant,
}

impl WorkerProc {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Fails if the process has exited (with the end of its log).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "drove-worker exited early ({status}); its log {}:\n{}",
                self.log.display(),
                tail(&self.log)
            );
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200; returns the time since spawn.
    pub async fn ready(&mut self, limit: Duration, poll: Duration) -> Result<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            if http_status(self.port, "/readyz").await == Some(200) {
                return Ok(self.started.elapsed());
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "drove-worker not ready after {limit:?}; its log {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0) within `limit`.
    pub async fn stop(mut self, limit: Duration) -> Result<()> {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!(
                "drove-worker exited with {status} after SIGTERM; its log {}:\n{}",
                self.log.display(),
                tail(&self.log)
            ),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("drove-worker did not exit within {limit:?} of SIGTERM")
            }
        }
    }
}

/// Stops all workers, returning the first failure.
pub async fn stop_all(workers: Vec<WorkerProc>) -> Result<()> {
    let results = futures_util::future::join_all(
        workers.into_iter().map(|w| w.stop(Duration::from_secs(40))),
    )
    .await;
    results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The status code of a GET on the loopback port, if it answers.
pub async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&buf)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
