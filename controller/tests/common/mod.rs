//! Shared test support: worker processes, a TCP proxy that can cut a
//! worker off from the database, waiting for conditions, and reading the
//! outcome of jobs straight from the tables.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use drove_queue::testing::TestDb;
use drove_queue::{Conn, JobId};
use tokio::net::{TcpListener, TcpStream as AsyncTcp};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// The `drove` binary under test.
pub fn drove_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_drove"))
}

/// The `drove-worker` binary, built next to `drove` by a workspace build.
pub fn worker_bin() -> PathBuf {
    let p = drove_bin().with_file_name("drove-worker");
    assert!(
        p.exists(),
        "{} not found: build the workspace (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Logs of processes started by tests.
pub fn log_dir() -> PathBuf {
    let d = std::env::temp_dir().join("drove-test-logs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A child process started by a test, with its HTTP port and log file.
/// Dropping it stops it: SIGTERM first when `graceful` (a controller stops
/// its local workers), SIGKILL otherwise or after 10 s.
pub struct Proc {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub status: Option<ExitStatus>,
    graceful: bool,
}

impl Proc {
    fn spawn(mut cmd: Command, port: u16, log: PathBuf, graceful: bool) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("RUST_LOG", "info,drove_worker=debug")
            .env_remove("DATABASE_URL")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc {
            child,
            port,
            log,
            status: None,
            graceful,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.status = Some(s);
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// GET a path of the process's HTTP server: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// The value of one Prometheus sample of its `/metrics`.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self.get("/metrics").unwrap_or_default();
        metric_value(&body, sample)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if self.graceful {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `drove-worker` process.
pub struct WorkerProc(Proc);

impl std::ops::Deref for WorkerProc {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProc {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.0
    }
}

impl WorkerProc {
    /// Starts a worker on `url`/`schema` with extra flags.
    pub fn spawn(url: &str, schema: &drove_queue::Schema, extra: &[&str]) -> WorkerProc {
        let port = free_port();
        let log = log_dir().join(format!("worker-{}-{port}.log", schema.name()));
        let mut cmd = Command::new(worker_bin());
        cmd.args([
            "--database-url",
            url,
            "--schema",
            schema.name(),
            "--log-format",
            "text",
        ])
        .args(["--http", &format!("127.0.0.1:{port}")])
        .args(extra)
        // The runtime's threads are the flag's (or its default) alone.
        .env_remove("DROVE_RUNTIME_THREADS")
        .env_remove("TOKIO_WORKER_THREADS");
        WorkerProc(Proc::spawn(cmd, port, log, false))
    }

    /// Waits for `/readyz` to answer 200; returns the worker's id.
    pub async fn ready(&self, limit: Duration) -> String {
        let body = wait_until(limit, "worker ready", || async {
            match self.get("/readyz") {
                Some((200, body)) => Some(body),
                _ => None,
            }
        })
        .await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["worker"].as_str().unwrap().to_string()
    }
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of a sample (name with labels, as printed) in a scrape.
pub fn metric_value(scrape: &str, sample: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `f` every 50 ms until it returns Some, or panics after `limit`.
pub async fn wait_until<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (state, attempt, lease owner or finishing worker) of a job.
pub async fn job_state(conn: &Conn, id: JobId) -> (String, i32, Option<String>) {
    let j = drove_queue::job_get(conn.client(), conn.schema(), id)
        .await
        .unwrap();
    (j.state.to_string(), j.attempt, j.worker)
}

/// Counts rows: (live jobs, finished jobs, distinct finished ids, succeeded).
pub async fn totals(conn: &Conn) -> (i64, i64, i64, i64) {
    let r = conn
        .client()
        .query_one(
            &conn.schema().sql(
                "SELECT (SELECT count(*) FROM {s}.jobs), (SELECT count(*) FROM {s}.jobs_finished),
                        (SELECT count(DISTINCT id) FROM {s}.jobs_finished),
                        (SELECT count(*) FROM {s}.jobs_finished WHERE state = 'succeeded')",
            ),
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

pub async fn test_db() -> (TestDb, Conn) {
    let t = TestDb::new().await;
    let c = t.conn().await;
    (t, c)
}

/// A TCP proxy between one worker and the database. `blackhole` makes it a
/// network partition: open connections stop carrying bytes (they are not
/// closed) and new ones are accepted but never connected through.
pub struct Proxy {
    pub port: u16,
    blackhole: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    conns: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let (bh, rf, cs) = (blackhole.clone(), refusing.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut conns = cs.lock().await;
                if rf.load(Ordering::SeqCst) {
                    // Closed at once, as by a server that is down.
                    drop(client);
                    continue;
                }
                let bh = bh.clone();
                conns.spawn(async move {
                    if bh.load(Ordering::SeqCst) {
                        // Hold the socket open, silently.
                        std::future::pending::<()>().await;
                    }
                    let Ok(server) = AsyncTcp::connect(("127.0.0.1", upstream_port)).await else {
                        return;
                    };
                    pipe(client, server, bh).await;
                });
            }
        });
        Proxy {
            port,
            blackhole,
            refusing,
            conns,
            accept,
        }
    }

    /// Starts an outage like a database restart: open connections break
    /// and new ones are closed at once, until `heal`.
    pub async fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.conns.lock().await.abort_all();
    }

    /// Starts the partition: nothing gets through until `heal`.
    pub fn cut(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }

    /// Ends the partition. Connections opened during it stay dead (as after
    /// a real partition, TCP gives up on them); new ones work.
    pub async fn heal(&self) {
        self.blackhole.store(false, Ordering::SeqCst);
        self.refusing.store(false, Ordering::SeqCst);
        self.conns.lock().await.abort_all();
    }

    pub fn url(&self, db_url: &str) -> String {
        let (scheme_host, rest) = db_url.split_once("@").unwrap();
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("postgres");
        format!("{scheme_host}@127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pipe(a: AsyncTcp, b: AsyncTcp, blackhole: Arc<AtomicBool>) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let one = |mut r: tokio::net::tcp::OwnedReadHalf,
               mut w: tokio::net::tcp::OwnedWriteHalf,
               bh: Arc<AtomicBool>| async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match tokio::io::AsyncReadExt::read(&mut r, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if bh.load(Ordering::SeqCst) {
                // Partitioned: drop the bytes and everything after them.
                std::future::pending::<()>().await;
            }
            if tokio::io::AsyncWriteExt::write_all(&mut w, &buf[..n])
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = one(ar, bw, blackhole.clone()) => {}
        _ = one(br, aw, blackhole) => {}
    }
}

/// The port of a postgres:// URL.
pub fn url_port(url: &str) -> u16 {
    let hostport = url.split_once('@').unwrap().1.split('/').next().unwrap();
    hostport.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The API token tests give `drove serve`.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A `drove serve` process.
pub struct ServeProc(Proc);

impl std::ops::Deref for ServeProc {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.0
    }
}

impl std::ops::DerefMut for ServeProc {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.0
    }
}

impl ServeProc {
    pub fn spawn(url: &str, schema: &drove_queue::Schema, extra: &[&str]) -> ServeProc {
        let port = free_port();
        let log = log_dir().join(format!("serve-{}-{port}.log", schema.name()));
        let mut cmd = Command::new(drove_bin());
        cmd.args([
            "--database-url",
            url,
            "--schema",
            schema.name(),
            "--log-format",
            "text",
            "serve",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-token",
            TOKEN,
        ])
        .args(extra);
        ServeProc(Proc::spawn(cmd, port, log, true))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn ready(&self, limit: Duration) {
        wait_until(limit, "controller ready", || async {
            matches!(http_get(self.port, "/readyz"), Some((200, _))).then_some(())
        })
        .await;
    }

    /// GET /v1/stats with the token.
    pub async fn stats(&self) -> serde_json::Value {
        api()
            .get(self.url("/v1/stats"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// An HTTP client for API calls.
pub fn api() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
