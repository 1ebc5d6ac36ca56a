//! What the bench reads from Linux's /proc: CPU time and memory of
//! processes (the worker, the PostgreSQL server) and the machine itself.

use std::path::Path;

use serde_json::{Map, Value};

/// CPU time (user + system) of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_fields(pid, false)
}

/// CPU time of a process, plus that of its children it has waited for
/// (the backends that exited, for the postmaster).
fn cpu_fields(pid: u32, with_reaped: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 of the line, 12-15 here.
    let n = if with_reaped { 4 } else { 2 };
    let mut ticks = 0u64;
    for i in 0..n {
        ticks += fields.get(11 + i)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / clock_ticks())
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A process's command name.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A PostgreSQL server on this machine, found from one of its backends.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    pub postmaster: u32,
}

impl Server {
    /// The server whose backend has process id `backend`, if that process
    /// is visible here (the database runs on this machine).
    pub fn from_backend(backend: u32) -> Option<Server> {
        let name = comm(backend)?;
        if !name.starts_with("postgres") {
            return None;
        }
        let postmaster = parent(backend)?;
        comm(postmaster)?
            .starts_with("postgres")
            .then_some(Server { postmaster })
    }

    /// CPU seconds used so far by the server: the postmaster, its live
    /// children (backends, WAL writer, checkpointer, autovacuum, ...) and
    /// the children that exited (counted into the postmaster when reaped).
    pub fn cpu_seconds(&self) -> f64 {
        let mut total = cpu_fields(self.postmaster, true).unwrap_or(0.0);
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if parent(pid) == Some(self.postmaster) {
                    total += cpu_seconds(pid).unwrap_or(0.0);
                }
            }
        }
        total
    }
}

/// The machine: CPUs, memory, CPU model, kernel.
pub fn machine() -> Map<String, Value> {
    let mut m = Map::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    m.insert("cpus".into(), cpus.into());
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).unwrap_or_default();
    if let Some(model) = read("/proc/cpuinfo").lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
    }) {
        m.insert("cpu_model".into(), model.into());
    }
    if let Some(kb) = read("/proc/meminfo").lines().find_map(|l| {
        l.strip_prefix("MemTotal:")?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    }) {
        m.insert(
            "memory_gib".into(),
            ((kb as f64 / 1048576.0 * 10.0).round() / 10.0).into(),
        );
    }
    let kernel = read("/proc/sys/kernel/osrelease");
    if !kernel.trim().is_empty() {
        m.insert("kernel".into(), kernel.trim().into());
    }
    if let Some(load) = read("/proc/loadavg").split_whitespace().next() {
        m.insert("load_1m_at_start".into(), load.into());
    }
    m
}

/// The 1-minute load average now (other work on a shared machine).
pub fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
