//! `drove demo` end to end, as a person runs it: a small, fast version of
//! the real demo runs its bursts to the summary (every job succeeded
//! exactly once, the group grew and shrank to zero), and a Ctrl-C in the
//! middle of a burst stops every process it started (controller, workers,
//! PostgreSQL) and removes its temporary directories.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A `drove demo` process whose output is collected line by line.
struct DemoProc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl DemoProc {
    fn spawn(database_url: Option<&str>, args: &[&str]) -> DemoProc {
        let mut cmd = Command::new(drove_bin());
        cmd.arg("demo")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("DROVE_DATABASE_URL_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            let l2 = l.clone();
            let errs = std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    l2.lock().unwrap().push(format!("stderr: {line}"));
                }
            });
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
            let _ = errs.join();
        });
        DemoProc {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first output line containing `needle`, waiting for it.
    async fn line_with(&self, needle: &str, limit: Duration) -> String {
        wait_until(limit, needle, || async {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
        .await
    }

    /// Waits for the exit; the output is complete afterwards.
    async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the demo did not exit within {limit:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        status
    }
}

impl Drop for DemoProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signals our own child process (an orderly stop).
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGINT);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A path printed after `label` on a line of the demo's header.
fn path_after(line: &str, label: &str) -> PathBuf {
    let rest = &line[line.find(label).unwrap() + label.len()..];
    PathBuf::from(
        rest.trim_start()
            .split(|c: char| c.is_whitespace() || c == ')')
            .next()
            .unwrap(),
    )
}

/// Process ids below `root`, from /proc.
fn descendants(root: u32) -> Vec<u32> {
    drove_controller::demo::controller::descendants(root)
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Running (not zombie) processes whose command line contains `needle`.
fn running_with(needle: &str) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| alive(pid))
        .filter_map(|pid| Some((pid, cmdline(pid)?)))
        .filter(|(_, c)| c.contains(needle))
        .collect()
}

/// True if the process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_demo_scales_out_and_in_and_every_job_succeeds_exactly_once() {
    let url = drove_queue::testing::test_url();
    let mut demo = DemoProc::spawn(
        Some(&url),
        &[
            "--jobs",
            "12",
            "--difficulty",
            "200",
            "--bursts",
            "2",
            "--pause",
            "6s",
            "--max-workers",
            "3",
            "--scale-in-after",
            "1s",
            "--scale-to-zero-after",
            "2s",
            "--exit",
        ],
    );
    let status = demo.wait_exit(Duration::from_secs(180)).await;
    let out = demo.output();
    assert!(status.success(), "the demo failed ({status}):\n{out}");
    for expected in [
        "dashboard    http://127.0.0.1:",
        "/?token=",
        "burst 1/2: enqueued 12 spin jobs",
        "burst 2/2: enqueued 12 spin jobs",
        "scaler: desired workers 0 -> 3",
        "workers 0 -> ",
        "-> 0 (down)",
        "24 enqueued, 24 succeeded exactly once, 0 failed, 0 cancelled, lost 0",
        "peak 3, final 0",
        "queue wait   p50",
        "scale-out    burst 1: desired 3 workers",
        "scale-out    burst 2: desired 3 workers",
        "nothing left running, temporary files removed",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    // The demo's own schema in the given database is gone.
    let schema = out
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "schema")
                .nth(1)
                .map(str::to_string)
        })
        .expect("the header names the demo's schema");
    let db = drove_queue::DbConfig::parse(&url).unwrap();
    let conn = drove_queue::Conn::connect(&db, &drove_queue::Schema::default())
        .await
        .unwrap();
    let left: i64 = conn
        .client()
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "schema {schema} was dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_workers_controller_and_postgres_and_removes_the_temp_dirs() {
    if drove_controller::pgtemp::find_bindir().is_none() {
        eprintln!(
            "SKIP: PostgreSQL server binaries not installed (the demo's throwaway server needs them)"
        );
        return;
    }
    // Long jobs, so workers are busy when the interrupt comes.
    let mut demo = DemoProc::spawn(
        None,
        &[
            "--jobs",
            "20",
            "--difficulty",
            "60000",
            "--max-workers",
            "2",
        ],
    );
    let pg_line = demo
        .line_with("PostgreSQL   ", Duration::from_secs(60))
        .await;
    let pg_dir = path_after(&pg_line, "data in");
    let logs = path_after(
        &demo
            .line_with("logs         ", Duration::from_secs(60))
            .await,
        "logs",
    );
    assert!(pg_dir.is_dir() && logs.is_dir(), "{}", demo.output());
    let pid = demo.child.id();
    // Wait until the controller runs two workers and they have jobs.
    let tree = wait_until(Duration::from_secs(60), "two workers", || async {
        let tree = descendants(pid);
        let workers = tree
            .iter()
            .filter(|p| cmdline(**p).is_some_and(|c| c.contains("drove-worker")))
            .count();
        (workers == 2).then_some(tree)
    })
    .await;
    demo.line_with("running 2", Duration::from_secs(60)).await;
    let postgres = running_with(&pg_dir.display().to_string());
    assert!(
        tree.iter()
            .any(|p| cmdline(*p).is_some_and(|c| c.contains(" serve "))),
        "the controller runs below the demo"
    );
    assert!(!postgres.is_empty(), "a postgres server runs in {pg_dir:?}");

    // SAFETY: signals our own child process, as a Ctrl-C would.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    let status = demo.wait_exit(Duration::from_secs(120)).await;
    let out = demo.output();
    assert_eq!(status.code(), Some(130), "exit status after Ctrl-C:\n{out}");
    assert!(out.contains("interrupted after"), "{out}");
    let left: Vec<(u32, String)> = tree
        .iter()
        .chain(postgres.iter().map(|(p, _)| p))
        .filter(|p| alive(**p))
        .filter_map(|p| Some((*p, cmdline(*p)?)))
        .filter(|(_, c)| c.contains("drove") || c.contains("postgres"))
        .collect();
    assert!(left.is_empty(), "still running: {left:?}\n{out}");
    assert!(
        running_with(&pg_dir.display().to_string()).is_empty(),
        "no postgres on {pg_dir:?}"
    );
    assert!(!pg_dir.exists(), "{pg_dir:?} removed");
    assert!(!logs.exists(), "{logs:?} removed");
}

/// A burst whose enqueue is retried after its answer was lost (committed,
/// then the connection broke) gets the same jobs back instead of a second
/// burst: the demo's exactly-once summary counts the ids it was given.
#[tokio::test]
async fn a_retried_burst_enqueue_does_not_enqueue_it_twice() {
    let (t, conn) = test_db().await;
    let job = drove_queue::NewJob::new("spin")
        .with_payload(&serde_json::json!({ "ms": 1 }))
        .unwrap();
    let enqueue = |n| {
        let jobs = drove_controller::demo::monitor::burst_jobs(n, &job, 50);
        let (conn, t) = (&conn, &t);
        async move {
            drove_queue::jobs_enqueue_detailed(conn.client(), &t.schema, &jobs)
                .await
                .unwrap()
        }
    };
    let first = enqueue(1).await;
    assert!(first.iter().all(|e| !e.existing));
    let again = enqueue(1).await;
    assert!(again.iter().all(|e| e.existing));
    let ids = |v: &[drove_queue::Enqueued]| v.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&again),
        ids(&first),
        "the retry got the burst's own jobs, in order"
    );
    let next = enqueue(2).await;
    assert!(next.iter().all(|e| !e.existing), "burst 2 is new jobs");
    assert_eq!(totals(&conn).await.0, 100, "two bursts of 50 waiting");
}
