//! Checks of the images `scripts/build-image.sh` makes, and their figures:
//! size, container start to `/readyz`, idle memory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Sim, docker, http_get};
use crate::common::wait_until;

/// `docker image inspect` of one image.
pub fn inspect(image: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&docker(&["image", "inspect", image]).unwrap()).unwrap();
    v[0].clone()
}

/// Copies `path` out of `image` into `dir`; the local path.
pub fn copy_out(image: &str, path: &str, dir: &Path, labels: &[String]) -> std::path::PathBuf {
    let mut args = vec!["create"];
    for l in labels {
        args.extend(["--label", l]);
    }
    args.push(image);
    let id = docker(&args).unwrap();
    let local = dir.join(Path::new(path).file_name().unwrap());
    let copied = docker(&["cp", &format!("{id}:{path}"), local.to_str().unwrap()]);
    let _ = docker(&["rm", &id]);
    copied.unwrap();
    local
}

/// What `file` and `ldd` say of a binary.
pub fn linkage(bin: &Path) -> (String, String) {
    let run = |cmd: &str| {
        let o = Command::new(cmd).arg(bin).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
        .trim()
        .to_string()
    };
    (run("file"), run("ldd"))
}

/// One container start, measured.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// `docker start` issued -> returned (the container's process runs).
    pub docker_start: Duration,
    /// `docker start` issued -> `/readyz` answered 200 (as seen from the host).
    pub to_ready: Duration,
    /// The process started (Docker's StartedAt) -> it logged "ready".
    pub process_to_ready: Option<Duration>,
    /// Memory of the container after `idle` without work (docker stats: the
    /// cgroup's usage without page cache), in MiB.
    pub idle_mib: f64,
    /// The process's resident set then, in MiB.
    pub rss_mib: Option<f64>,
}

fn parse_mib(s: &str) -> f64 {
    // "3.285MiB / 23.54GiB"
    let used = s.split('/').next().unwrap_or_default().trim();
    let (num, unit) = used.split_at(
        used.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(used.len()),
    );
    let n: f64 = num.trim().parse().unwrap_or(f64::NAN);
    match unit {
        "B" => n / 1048576.0,
        "KiB" | "kB" => n / 1024.0,
        "MiB" | "MB" => n,
        "GiB" | "GB" => n * 1024.0,
        _ => f64::NAN,
    }
}

fn log_time(logs: &str, message: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == message)
        .and_then(|v| v["time"].as_str()?.parse().ok())
}

/// A container to measure.
pub struct Subject<'a> {
    pub image: &'a str,
    pub env: &'a [(&'a str, &'a str)],
    pub args: &'a [&'a str],
    /// Where `/readyz` answers.
    pub port: u16,
    /// The log message that says it is ready.
    pub ready_message: &'a str,
}

/// Creates a container of the subject on the simulation's network, starts
/// it, waits for `/readyz`, lets it idle for `idle`, measures.
pub async fn measure_start(sim: &Sim, name: &str, subject: &Subject<'_>, idle: Duration) -> Start {
    let Subject {
        image,
        env,
        args,
        port,
        ready_message,
    } = *subject;
    let mut create = vec![
        "create",
        "--name",
        name,
        "--hostname",
        name,
        "--network",
        &sim.network,
    ];
    let labels: Vec<String> = sim
        .labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for l in &labels {
        create.extend(["--label", l.as_str()]);
    }
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &env {
        create.extend(["--env", e.as_str()]);
    }
    create.push(image);
    create.extend(args);
    docker(&create).unwrap();

    let t0 = Instant::now();
    docker(&["start", name]).unwrap();
    let docker_start = t0.elapsed();
    let ip = docker(&[
        "inspect",
        "--format",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            sim.network
        ),
        name,
    ])
    .unwrap();
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    let to_ready = wait_until(
        Duration::from_secs(30),
        &format!("{name} ready"),
        || async { matches!(http_get(addr, "/readyz"), Some((200, _))).then(|| t0.elapsed()) },
    )
    .await;
    let started_at: Option<chrono::DateTime<chrono::Utc>> =
        docker(&["inspect", "--format", "{{.State.StartedAt}}", name])
            .unwrap()
            .parse()
            .ok();
    let logs = docker(&["logs", name]).unwrap_or_default();
    let process_to_ready = match (started_at, log_time(&logs, ready_message)) {
        (Some(a), Some(b)) => (b - a).to_std().ok(),
        _ => None,
    };

    // Idle: no jobs, only heartbeats and the poll.
    tokio::time::sleep(idle).await;
    let idle_mib =
        parse_mib(&docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", name]).unwrap());
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", name]).unwrap();
    let rss_mib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let kib: f64 = s
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(kib / 1024.0)
        });
    let _ = docker(&["rm", "-f", name]);
    Start {
        docker_start,
        to_ready,
        process_to_ready,
        idle_mib,
        rss_mib,
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_stats_memory() {
        assert_eq!(parse_mib("3.5MiB / 23.54GiB"), 3.5);
        assert_eq!(parse_mib("512KiB / 1GiB"), 0.5);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
