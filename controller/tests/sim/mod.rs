//! The managed-instance-group simulation in Docker: a private network, a
//! PostgreSQL container built from this machine's own server binaries
//! (`scripts/sim-postgres-image.sh`), reached by the workers as `db` through
//! Docker's DNS, and a group of worker containers run by the controller's
//! `docker` backend (see [`group`]).
//!
//! Every Docker resource a test creates carries the labels `drove.test=<id>`
//! and `drove.test.pid=<pid>`: [`Sim`]'s guard removes them when the test
//! ends, even by a panic, and each new test first removes those of test
//! processes that no longer exist (a run killed earlier).
#![allow(dead_code)]

pub mod group;
pub mod image;
pub mod load;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use drove_queue::{Conn, DbConfig, Schema};

use super::common::wait_until;

pub const TEST_LABEL: &str = "drove.test";
pub const PID_LABEL: &str = "drove.test.pid";

/// Runs `docker ARGS`: stdout, or stderr as the error.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A minimal HTTP/1.0 GET of a container's port: (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Why the Docker tests cannot run here, if they cannot.
pub fn docker_missing() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => Some(format!("no docker CLI ({e})")),
        Ok(o) if !o.status.success() => Some(format!(
            "the Docker daemon is not reachable: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Prints why a test is skipped; returns true when it must be.
pub fn skip_without_docker(test: &str) -> bool {
    match docker_missing() {
        Some(why) => {
            println!("SKIP {test}: {why}");
            true
        }
        None => false,
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs one of the repository's scripts; the lines of its stdout.
pub fn script(path: &str, args: &[&str]) -> Vec<String> {
    let started = Instant::now();
    let out = Command::new(repo().join(path))
        .args(args)
        .current_dir(repo())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(out.status.success(), "{path} {args:?} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{path} {args:?}: {:.1} s", started.elapsed().as_secs_f64());
    stdout
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The images of this commit (built once, then reused): the worker image
/// from `scripts/build-image.sh`, and the simulation's PostgreSQL.
pub struct Images {
    pub worker: String,
    pub postgres: String,
}

pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| Images {
        worker: script("scripts/build-image.sh", &["worker"])
            .pop()
            .expect("an image reference"),
        postgres: script("scripts/sim-postgres-image.sh", &[])
            .pop()
            .expect("an image reference"),
    })
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) == 0 };
    alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes what test processes that are gone left behind.
pub fn remove_leftovers() {
    let dead = |pid: &str| pid.trim().parse::<i32>().is_ok_and(|p| !pid_alive(p));
    let filter = format!("label={PID_LABEL}");
    let fmt = format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}");
    for (list, rm) in [
        (["ps", "-a"].as_slice(), ["rm", "-f"]),
        (&["network", "ls"], ["network", "rm"]),
    ] {
        let mut args = list.to_vec();
        args.extend(["--filter", &filter, "--format", &fmt]);
        for line in docker(&args).unwrap_or_default().lines() {
            if let Some((id, pid)) = line.split_once(' ')
                && dead(pid)
            {
                let _ = docker(&[rm[0], rm[1], id]);
            }
        }
    }
    let images = docker(&["images", "-q", "--filter", &filter]).unwrap_or_default();
    let label = format!("{{{{index .Config.Labels \"{PID_LABEL}\"}}}}");
    for id in images.split_whitespace() {
        if docker(&["image", "inspect", "--format", &label, id]).is_ok_and(|pid| dead(&pid)) {
            let _ = docker(&["rmi", "-f", id]);
        }
    }
}

/// Removes one test's containers, network and images when dropped.
struct Cleanup {
    id: String,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::env::var_os("DROVE_SIM_KEEP").is_some() {
            eprintln!(
                "DROVE_SIM_KEEP: leaving the resources labelled {TEST_LABEL}={}",
                self.id
            );
            return;
        }
        let filter = format!("label={TEST_LABEL}={}", self.id);
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = docker(&args);
            }
        }
        let _ = docker(&["network", "rm", &self.network]);
        if let Ok(ids) = docker(&["images", "-q", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rmi", "-f", id]);
            }
        }
    }
}

/// One test's simulated deployment: network, database, worker images.
pub struct Sim {
    pub id: String,
    pub network: String,
    /// The database as this process reaches it (the container's address).
    pub db: DbConfig,
    /// The same as a URL (for a `drove serve` on this host).
    pub host_url: String,
    pub schema: Schema,
    pub conn: Conn,
    /// The database URL the workers use: host name `db` on the network.
    pub worker_url: String,
    /// Two worker images, identical but for a label: the templates of a
    /// rolling update.
    pub v1: String,
    pub v2: String,
    pub log_dir: PathBuf,
    pub started: Instant,
    cleanup: Cleanup,
}

impl Sim {
    /// Starts the network and the database; None (after saying why) when
    /// there is no Docker daemon.
    pub async fn start(scenario: &str) -> Option<Sim> {
        if skip_without_docker(scenario) {
            return None;
        }
        let images = tokio::task::spawn_blocking(images).await.unwrap();
        remove_leftovers();
        let started = Instant::now();
        let id = format!("drove-test-{:08x}", rand::random::<u32>());
        let network = format!("{id}-net");
        let pid = std::process::id().to_string();
        let labels = [format!("{TEST_LABEL}={id}"), format!("{PID_LABEL}={pid}")];
        let cleanup = Cleanup {
            id: id.clone(),
            network: network.clone(),
        };
        docker(&[
            "network", "create", "--label", &labels[0], "--label", &labels[1], &network,
        ])
        .unwrap();

        // Two templates: the same worker, told apart by a label.
        let mut tags = Vec::new();
        for v in ["v1", "v2"] {
            let tag = format!("drove-sim-worker:{}-{v}", &id["drove-test-".len()..]);
            let dockerfile = format!(
                "FROM {}\nLABEL drove.sim.template={v} {} {}\n",
                images.worker, labels[0], labels[1]
            );
            let mut child = Command::new("docker")
                .args(["build", "--quiet", "--tag", &tag, "-"])
                .env("DOCKER_BUILDKIT", "0")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(dockerfile.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "building {tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tags.push(tag);
        }

        let db_name = format!("{id}-db");
        docker(&[
            "run",
            "--detach",
            "--name",
            &db_name,
            "--hostname",
            "db",
            "--network",
            &network,
            "--network-alias",
            "db",
            "--label",
            &labels[0],
            "--label",
            &labels[1],
            "--tmpfs",
            "/var/lib/postgresql:uid=70,gid=70,mode=0700",
            &images.postgres,
        ])
        .unwrap();
        let ip = docker(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            &db_name,
        ])
        .unwrap();
        let host_url = format!("postgres://postgres@{ip}:5432/postgres?sslmode=disable");
        let db = DbConfig::parse(&host_url).unwrap();
        let schema = Schema::new("drove").unwrap();
        let mut conn = wait_until(
            Duration::from_secs(30),
            "the database container accepts connections",
            || async { Conn::connect(&db, &schema).await.ok() },
        )
        .await;
        drove_queue::migrate(conn.client_mut(), &schema)
            .await
            .unwrap();
        let log_dir = std::env::temp_dir().join("drove-test-logs").join(&id);
        std::fs::create_dir_all(&log_dir).unwrap();
        eprintln!(
            "{scenario}: network {network}, database {ip} (logs in {})",
            log_dir.display()
        );
        Some(Sim {
            id,
            network,
            db,
            host_url,
            schema,
            conn,
            worker_url: "postgres://postgres@db:5432/postgres?sslmode=disable".into(),
            v2: tags.pop().unwrap(),
            v1: tags.pop().unwrap(),
            log_dir,
            started,
            cleanup,
        })
    }

    /// Labels for everything this test creates.
    pub fn labels(&self) -> Vec<(String, String)> {
        vec![
            (TEST_LABEL.to_string(), self.id.clone()),
            (PID_LABEL.to_string(), std::process::id().to_string()),
        ]
    }

    /// A new connection to the simulation's database.
    pub async fn connect(&self) -> Conn {
        Conn::connect(&self.db, &self.schema).await.unwrap()
    }
}
