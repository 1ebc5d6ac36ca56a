//! The `docker` backend: a managed instance group simulated with worker
//! containers on a private Docker network, for tests and `scripts/sim-mig.sh`.
//!
//! It does to containers what a MIG does to VMs:
//! - resize to the scaler's decision (scale-in stops idle workers first: a
//!   container's host name is its name, which is the worker's `host` in the
//!   registry);
//! - delete with a soft shutdown: `docker stop` = SIGTERM, then SIGKILL after
//!   the stop timeout, like a VM's shutdown window;
//! - recreate an instance that died (its container exited);
//! - autoheal: an instance whose `/healthz` fails `unhealthy_threshold`
//!   checks in a row, after an initial delay, is deleted and recreated;
//! - rolling update ([`DockerBackend::rolling_update`]): replace every
//!   instance not on the template's image, within max surge / max unavailable.
//!
//! [`Backend::apply`] is one pass of the group manager: list the containers,
//! start health probes, plan ([`plan`]) and start what the plan says. Slow
//! work (create, drain, recreate) runs in tasks the backend owns, so a pass
//! returns quickly; their results show up on the next pass.

mod cli;
pub mod plan;
mod probe;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::task::TaskTracker;

pub use plan::{StopReason, UpdatePolicy};

use super::backend::{Applied, Backend, BackendError, BoxFuture, Decision};
use cli::{Container, Docker, RunSpec};
use plan::{Action, View};

/// The label that marks a group's containers; its value is the group name.
pub const GROUP_LABEL: &str = "drove.group";

/// `/readyz` misses in a row that make an instance unavailable.
const UNREADY_THRESHOLD: u32 = 2;

/// Events kept for [`DockerBackend::events`].
const EVENTS_KEPT: usize = 2000;

/// How instances are health-checked.
#[derive(Debug, Clone, Copy)]
pub struct HealthCheck {
    /// Time between two probes of an instance.
    pub interval: Duration,
    /// A probe not answered within this fails.
    pub timeout: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Autohealing: when an instance is recreated for failing its health check.
#[derive(Debug, Clone, Copy)]
pub struct Autoheal {
    /// Failed `/healthz` probes in a row that make an instance unhealthy.
    pub unhealthy_threshold: u32,
    /// Failures in this long after (re)creation do not count.
    pub initial_delay: Duration,
}

impl Default for Autoheal {
    fn default() -> Self {
        Autoheal {
            unhealthy_threshold: 3,
            initial_delay: Duration::from_secs(10),
        }
    }
}

/// The group: its instance template (image, network, environment,
/// arguments) and its policies.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The `docker` CLI.
    pub docker: PathBuf,
    /// Group name: containers are `<group>-<4 hex digits>`, labelled
    /// `drove.group=<group>`. Lowercase letters, digits and `-`.
    pub group: String,
    /// The template's image (a rolling update changes it).
    pub image: String,
    /// The private network the containers join.
    pub network: String,
    /// Environment of every container (database URL, schema, lease, ...).
    pub env: Vec<(String, String)>,
    /// Arguments after the image (the worker's flags).
    pub args: Vec<String>,
    /// Extra `docker run` options.
    pub run_options: Vec<String>,
    /// Extra labels (tests mark their resources for cleanup).
    pub labels: Vec<(String, String)>,
    /// `docker stop` waits this long after SIGTERM before SIGKILL: the
    /// worker's drain grace plus a margin, like the VM's shutdown window.
    pub stop_timeout: Duration,
    /// The port of the worker's `/healthz` and `/readyz`.
    pub health_port: u16,
    pub health: HealthCheck,
    /// None: no autohealing.
    pub autoheal: Option<Autoheal>,
    /// Policy of rolling updates started without one.
    pub update: UpdatePolicy,
    /// Keep each removed container's output here as `<name>-<n>.log`.
    pub log_dir: Option<PathBuf>,
}

impl DockerConfig {
    /// A group with the defaults: the worker on port 8080, 30 s stop
    /// timeout (25 s drain grace + 5 s), probes every second, autohealing
    /// after 3 failures past a 10 s initial delay.
    pub fn new(group: &str, image: &str, network: &str) -> DockerConfig {
        DockerConfig {
            docker: PathBuf::from("docker"),
            group: group.to_string(),
            image: image.to_string(),
            network: network.to_string(),
            env: Vec::new(),
            args: Vec::new(),
            run_options: vec![
                "--cap-drop=ALL".into(),
                "--security-opt=no-new-privileges".into(),
            ],
            labels: Vec::new(),
            stop_timeout: Duration::from_secs(30),
            health_port: 8080,
            health: HealthCheck::default(),
            autoheal: Some(Autoheal::default()),
            update: UpdatePolicy::default(),
            log_dir: None,
        }
    }

    fn validate(&self) -> Result<(), BackendError> {
        let ok = !self.group.is_empty()
            && self.group.len() <= 40
            && self.group.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .group
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(BackendError::new(
                "docker",
                format!(
                    "group name {:?}: use 1-40 lowercase letters, digits and '-', starting with a letter",
                    self.group
                ),
                false,
            ));
        }
        check_image(&self.image)?;
        self.update
            .validate()
            .map_err(|e| BackendError::new("docker", e, false))
    }
}

/// Refuses what cannot be an image reference (and would be read as a flag).
fn check_image(image: &str) -> Result<(), BackendError> {
    if image.is_empty() || image.starts_with('-') || image.contains(char::is_whitespace) {
        return Err(BackendError::new(
            "docker",
            format!("image {image:?} is not an image reference"),
            false,
        ));
    }
    Ok(())
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `docker run` under way.
    Creating,
    Running,
    /// Draining: `docker stop` under way.
    Stopping,
    /// Died or vanished: being removed.
    Deleting,
    /// Autohealing: removed and created again under the same name.
    Recreating,
}

impl Phase {
    /// Counts toward the group's size.
    fn is_member(self) -> bool {
        matches!(self, Phase::Creating | Phase::Running | Phase::Recreating)
    }
}

/// What happened to the group, for logs, tests and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// `docker run` started.
    Creating,
    /// The container runs.
    Created,
    /// `/readyz` answered 200 for the first time since (re)creation.
    Ready,
    /// `docker stop` started (scale-in or rolling update).
    Stopping,
    /// Stopped and removed.
    Stopped,
    /// The container exited (or was removed) without being asked to.
    Died,
    /// Failed its health checks: being recreated.
    Autoheal,
    /// Recreated by autohealing.
    Recreated,
    UpdateStarted,
    UpdateDone,
    /// A Docker operation failed.
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// The instance, or the group for update events.
    pub instance: String,
    pub kind: EventKind,
    pub detail: String,
}

/// One instance as the group sees it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub image: String,
    pub phase: Phase,
    /// Docker's state: running, paused, exited, ...
    pub docker_state: String,
    pub ip: Option<IpAddr>,
    /// Last `/healthz` probe answered 200 (None: not probed yet).
    pub healthy: Option<bool>,
    /// `/readyz` answered 200, and not twice in a row failed since (the
    /// thresholds of a health check: one slow answer does not count).
    pub ready: bool,
    /// Failed health probes in a row (counted after the initial delay).
    pub failures: u32,
}

/// The group as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    /// The last size asked for by the scaler.
    pub target: Option<u32>,
    /// The template's image.
    pub image: String,
    pub update_policy: UpdatePolicy,
    /// Some instance runs another image than the template's.
    pub updating: bool,
    pub instances: Vec<InstanceStatus>,
}

impl GroupStatus {
    /// Members (not leaving) that run and are ready.
    pub fn available(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.phase == Phase::Running && i.ready)
            .count()
    }

    /// Instances counting toward the size (created, creating, recreating).
    pub fn members(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.phase.is_member())
            .count()
    }
}

struct Instance {
    image: String,
    phase: Phase,
    /// Creation order, for "newest first".
    seq: u64,
    /// Bumped on recreation: results of an older incarnation's probes are dropped.
    generation: u64,
    /// (Re)creation time: the autoheal initial delay counts from here.
    born: Instant,
    docker_state: String,
    ip: Option<IpAddr>,
    healthy: Option<bool>,
    ready: bool,
    /// `/readyz` probes in a row that did not answer 200.
    unready: u32,
    ever_ready: bool,
    failures: u32,
    probing: bool,
    last_probe: Option<Instant>,
}

impl Instance {
    fn new(image: &str, seq: u64, phase: Phase) -> Instance {
        Instance {
            image: image.to_string(),
            phase,
            seq,
            generation: 0,
            born: Instant::now(),
            docker_state: String::new(),
            ip: None,
            healthy: None,
            ready: false,
            unready: 0,
            ever_ready: false,
            failures: 0,
            probing: false,
            last_probe: None,
        }
    }

    /// Readiness with a health checker's thresholds: ready at the first 200,
    /// unready after [`UNREADY_THRESHOLD`] misses in a row (one slow answer
    /// on a busy machine does not take an instance out).
    fn saw_ready(&mut self, ready: bool) {
        if ready {
            self.ready = true;
            self.unready = 0;
        } else {
            self.unready += 1;
            if self.unready >= UNREADY_THRESHOLD {
                self.ready = false;
            }
        }
    }

    fn reborn(&mut self) {
        self.generation += 1;
        self.born = Instant::now();
        self.healthy = None;
        self.ready = false;
        self.unready = 0;
        self.ever_ready = false;
        self.failures = 0;
        self.probing = false;
        self.last_probe = None;
    }
}

struct State {
    template: String,
    policy: UpdatePolicy,
    target: Option<u32>,
    instances: BTreeMap<String, Instance>,
    seq: u64,
    updating: bool,
    events: VecDeque<Event>,
    /// Counts the Docker operations that finished and changed what exists
    /// (created, stopped, removed, recreated). A `docker ps` taken before
    /// one of them finished is older than the instances: see [`Inner::pass`].
    settled: u64,
}

impl State {
    fn event(&mut self, instance: &str, kind: EventKind, detail: impl Into<String>) {
        let detail = detail.into();
        match kind {
            EventKind::Error | EventKind::Died | EventKind::Autoheal => {
                tracing::warn!(instance, event = ?kind, "{detail}")
            }
            _ => tracing::info!(instance, event = ?kind, "{detail}"),
        }
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at: Utc::now(),
            instance: instance.to_string(),
            kind,
            detail,
        });
    }
}

struct Inner {
    config: DockerConfig,
    docker: Docker,
    labels: Vec<(String, String)>,
    state: Mutex<State>,
    tasks: TaskTracker,
}

/// The `docker` backend. Cheap to share: wrap it in an `Arc`.
pub struct DockerBackend {
    inner: Arc<Inner>,
}

impl DockerBackend {
    pub fn new(config: DockerConfig) -> Result<DockerBackend, BackendError> {
        config.validate()?;
        let mut labels = vec![(GROUP_LABEL.to_string(), config.group.clone())];
        labels.extend(config.labels.iter().cloned());
        let state = State {
            template: config.image.clone(),
            policy: config.update,
            target: None,
            instances: BTreeMap::new(),
            seq: 0,
            updating: false,
            events: VecDeque::new(),
            settled: 0,
        };
        Ok(DockerBackend {
            inner: Arc::new(Inner {
                docker: Docker::new(&config.docker),
                config,
                labels,
                state: Mutex::new(state),
                tasks: TaskTracker::new(),
            }),
        })
    }

    /// Starts a rolling update to `image` (a new instance template), within
    /// `policy`; later passes of [`Backend::apply`] carry it out. Calling it
    /// again with another image redirects the update (like a new template).
    pub fn rolling_update(&self, image: &str, policy: UpdatePolicy) -> Result<(), BackendError> {
        policy
            .validate()
            .map_err(|e| BackendError::new("docker", e, false))?;
        check_image(image)?;
        let mut st = self.inner.lock();
        st.policy = policy;
        if st.template != image {
            let detail = format!(
                "{} -> {image} (max surge {}, max unavailable {})",
                st.template, policy.max_surge, policy.max_unavailable
            );
            st.template = image.to_string();
            st.updating = true;
            st.event(&self.inner.config.group, EventKind::UpdateStarted, detail);
        }
        Ok(())
    }

    /// The group and its instances now.
    pub fn status(&self) -> GroupStatus {
        let st = self.inner.lock();
        GroupStatus {
            group: self.inner.config.group.clone(),
            target: st.target,
            image: st.template.clone(),
            update_policy: st.policy,
            updating: st.updating,
            instances: st
                .instances
                .iter()
                .map(|(name, i)| InstanceStatus {
                    name: name.clone(),
                    image: i.image.clone(),
                    phase: i.phase,
                    docker_state: i.docker_state.clone(),
                    ip: i.ip,
                    healthy: i.healthy,
                    ready: i.ready,
                    failures: i.failures,
                })
                .collect(),
        }
    }

    /// Everything that happened, oldest first (the last 2000 events).
    pub fn events(&self) -> Vec<Event> {
        self.inner.lock().events.iter().cloned().collect()
    }

    pub fn config(&self) -> &DockerConfig {
        &self.inner.config
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("docker group state lock poisoned")
    }

    fn addr(&self, ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, self.config.health_port)
    }

    /// One pass of the group manager.
    async fn pass(self: &Arc<Self>, d: &Decision) -> Result<Applied, BackendError> {
        let settled = self.lock().settled;
        let containers = self.docker.list(GROUP_LABEL, &self.config.group).await?;
        let mut st = self.lock();
        st.target = Some(d.desired);
        // A container our own stop removed since the listing would be adopted
        // again as a stranger, and one our create started would look removed
        // behind our back: a stale list waits for the next pass.
        if st.settled == settled {
            self.merge(&mut st, containers);
        }
        self.health(&mut st);

        let busy: HashMap<&str, i32> = d.workers.iter().fold(HashMap::new(), |mut m, w| {
            let b = m.entry(w.host.as_str()).or_insert(0);
            *b = (*b).max(w.busy);
            m
        });
        let views: Vec<View> = st
            .instances
            .iter()
            .filter(|(_, i)| i.phase.is_member())
            .map(|(name, i)| View {
                name,
                image: &i.image,
                creating: i.phase != Phase::Running,
                available: i.phase == Phase::Running && i.ready && i.docker_state == "running",
                busy: busy.get(name.as_str()).copied(),
                seq: i.seq,
            })
            .collect();
        let actions = plan::plan(&views, d.desired, &st.template, st.policy);
        let before = views.len();
        let busy_of = |name: &str| {
            busy.get(name)
                .map_or("idle".to_string(), |b| format!("busy {b}"))
        };
        let stops: Vec<(String, StopReason, String)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { name, reason } => Some((name.clone(), *reason, busy_of(name))),
                Action::Create { .. } => None,
            })
            .collect();
        drop(views);

        let mut said = Vec::new();
        for action in actions {
            match action {
                Action::Create { count } => {
                    for _ in 0..count {
                        self.create(&mut st);
                    }
                    said.push(format!("creating {count}"));
                }
                Action::Stop { .. } => {}
            }
        }
        for (name, reason, busy) in stops {
            self.stop(&mut st, &name, reason, &busy);
            said.push(format!("stopping {name} ({reason:?}, {busy})"));
        }
        let outdated = st.instances.values().any(|i| i.image != st.template);
        if st.updating && !outdated {
            st.updating = false;
            let image = st.template.clone();
            st.event(
                &self.config.group,
                EventKind::UpdateDone,
                format!("every instance runs {image}"),
            );
        }
        let size = st
            .instances
            .values()
            .filter(|i| i.phase.is_member())
            .count() as u32;
        let action = (!said.is_empty()).then(|| format!("{}: {before} -> {size}", said.join(", ")));
        Ok(Applied {
            size: Some(size),
            action,
        })
    }

    /// Folds what Docker reports into the instances.
    fn merge(self: &Arc<Self>, st: &mut State, containers: Vec<Container>) {
        let mut seen = Vec::with_capacity(containers.len());
        for c in containers {
            let name = c.name().to_string();
            seen.push(name.clone());
            let dead = matches!(c.state.status.as_str(), "exited" | "dead");
            if !st.instances.contains_key(&name) {
                // Not ours yet: adopt it (a restarted controller), or clear it away.
                st.seq += 1;
                let phase = if dead {
                    Phase::Deleting
                } else {
                    Phase::Running
                };
                st.instances
                    .insert(name.clone(), Instance::new(&c.config.image, st.seq, phase));
                if dead {
                    self.delete(st, &name, "left over, exited");
                } else {
                    st.event(
                        &name,
                        EventKind::Created,
                        format!("adopted a running {}", c.config.image),
                    );
                }
            }
            let Some(i) = st.instances.get_mut(&name) else {
                continue;
            };
            i.docker_state = c.state.status.clone();
            i.ip = c.ip(&self.config.network);
            if i.phase == Phase::Running && dead {
                let code = c.state.exit_code;
                self.delete(
                    st,
                    &name,
                    &format!("container exited with code {code}; it will be replaced"),
                );
            }
        }
        // Running instances Docker no longer knows: removed behind our back.
        let gone: Vec<String> = st
            .instances
            .iter()
            .filter(|(name, i)| i.phase == Phase::Running && !seen.contains(name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            st.instances.remove(&name);
            st.event(
                &name,
                EventKind::Died,
                "the container was removed; it will be replaced",
            );
        }
    }

    /// Starts due probes and autoheals instances that failed too often.
    fn health(self: &Arc<Self>, st: &mut State) {
        let check = self.config.health;
        let mut unhealthy = Vec::new();
        for (name, i) in st.instances.iter_mut() {
            if i.phase != Phase::Running {
                continue;
            }
            if let Some(heal) = self.config.autoheal
                && i.failures >= heal.unhealthy_threshold
            {
                unhealthy.push((name.clone(), i.failures));
                continue;
            }
            if i.probing || i.last_probe.is_some_and(|t| t.elapsed() < check.interval) {
                continue;
            }
            i.last_probe = Some(Instant::now());
            let Some(ip) = i.ip else {
                // Not on the network: unreachable, as for the health checker of a MIG.
                i.healthy = Some(false);
                i.saw_ready(false);
                if self.past_initial_delay(i) {
                    i.failures += 1;
                }
                continue;
            };
            i.probing = true;
            let (me, name, generation, addr) =
                (self.clone(), name.clone(), i.generation, self.addr(ip));
            self.tasks.spawn(async move {
                let seen = probe::probe(addr, check.timeout).await;
                me.probed(&name, generation, seen);
            });
        }
        for (name, failures) in unhealthy {
            if let Some(i) = st.instances.get_mut(&name) {
                i.phase = Phase::Recreating;
            }
            st.event(
                &name,
                EventKind::Autoheal,
                format!("/healthz failed {failures} checks in a row: recreating"),
            );
            let me = self.clone();
            self.tasks.spawn(async move { me.recreate(name).await });
        }
    }

    fn past_initial_delay(&self, i: &Instance) -> bool {
        self.config
            .autoheal
            .is_some_and(|h| i.born.elapsed() >= h.initial_delay)
    }

    fn probed(&self, name: &str, generation: u64, seen: probe::Probed) {
        let mut st = self.lock();
        let Some(i) = st.instances.get_mut(name) else {
            return;
        };
        if i.generation != generation {
            return;
        }
        i.probing = false;
        i.healthy = Some(seen.healthy);
        i.saw_ready(seen.ready);
        if seen.healthy {
            i.failures = 0;
        } else if self.past_initial_delay(i) {
            i.failures += 1;
        }
        if seen.ready && !i.ever_ready && i.phase == Phase::Running {
            i.ever_ready = true;
            let since = i.born.elapsed();
            st.event(
                name,
                EventKind::Ready,
                format!("ready {} ms after it was started", since.as_millis()),
            );
        }
    }

    fn spec<'a>(&'a self, name: &'a str, image: &'a str) -> RunSpec<'a> {
        RunSpec {
            name,
            image,
            network: &self.config.network,
            labels: &self.labels,
            env: &self.config.env,
            options: &self.config.run_options,
            args: &self.config.args,
            stop_timeout: self.config.stop_timeout,
        }
    }

    /// Creates one instance from the template, in a task.
    fn create(self: &Arc<Self>, st: &mut State) {
        let name = loop {
            let n = format!("{}-{:04x}", self.config.group, rand::random::<u16>());
            if !st.instances.contains_key(&n) {
                break n;
            }
        };
        st.seq += 1;
        let image = st.template.clone();
        st.instances
            .insert(name.clone(), Instance::new(&image, st.seq, Phase::Creating));
        st.event(&name, EventKind::Creating, image.clone());
        let me = self.clone();
        self.tasks.spawn(async move {
            let result = me.docker.run(&me.spec(&name, &image)).await;
            let failed = {
                let mut st = me.lock();
                st.settled += 1;
                match result {
                    Ok(()) => {
                        if let Some(i) = st.instances.get_mut(&name) {
                            i.phase = Phase::Running;
                            i.born = Instant::now();
                        }
                        st.event(&name, EventKind::Created, format!("running {image}"));
                        false
                    }
                    Err(e) => {
                        st.instances.remove(&name);
                        st.event(&name, EventKind::Error, format!("create failed: {e}"));
                        true
                    }
                }
            };
            if failed {
                // A container that was created but did not start.
                let _ = me.docker.remove(&name).await;
                me.lock().settled += 1;
            }
        });
    }

    /// Drains and deletes an instance (`docker stop`, then `docker rm`), in a task.
    fn stop(self: &Arc<Self>, st: &mut State, name: &str, reason: StopReason, busy: &str) {
        let Some(i) = st.instances.get_mut(name) else {
            return;
        };
        i.phase = Phase::Stopping;
        st.event(name, EventKind::Stopping, format!("{reason:?} ({busy})"));
        let (me, name) = (self.clone(), name.to_string());
        self.tasks.spawn(async move {
            let started = Instant::now();
            let stopped = me.docker.stop(&name, me.config.stop_timeout).await;
            me.keep_logs(&name).await;
            let removed = me.docker.remove(&name).await;
            let mut st = me.lock();
            st.settled += 1;
            st.instances.remove(&name);
            match stopped.and(removed) {
                Ok(()) => st.event(
                    &name,
                    EventKind::Stopped,
                    format!("stopped in {} ms", started.elapsed().as_millis()),
                ),
                Err(e) => st.event(&name, EventKind::Error, format!("stop: {e}")),
            }
        });
    }

    /// Removes a dead instance, in a task; the plan then replaces it.
    fn delete(self: &Arc<Self>, st: &mut State, name: &str, why: &str) {
        let Some(i) = st.instances.get_mut(name) else {
            return;
        };
        i.phase = Phase::Deleting;
        st.event(name, EventKind::Died, why);
        let (me, name) = (self.clone(), name.to_string());
        self.tasks.spawn(async move {
            me.keep_logs(&name).await;
            let removed = me.docker.remove(&name).await;
            let mut st = me.lock();
            st.settled += 1;
            st.instances.remove(&name);
            if let Err(e) = removed {
                st.event(&name, EventKind::Error, format!("remove: {e}"));
            }
        });
    }

    /// Autohealing: delete the instance and create it again, same name.
    async fn recreate(self: Arc<Self>, name: String) {
        let started = Instant::now();
        self.keep_logs(&name).await;
        let image = {
            let st = self.lock();
            match st.instances.get(&name) {
                Some(i) => i.image.clone(),
                None => return,
            }
        };
        let result = match self.docker.remove(&name).await {
            Ok(()) => self.docker.run(&self.spec(&name, &image)).await,
            Err(e) => Err(e),
        };
        let mut st = self.lock();
        st.settled += 1;
        match result {
            Ok(()) => {
                if let Some(i) = st.instances.get_mut(&name) {
                    i.phase = Phase::Running;
                    i.reborn();
                }
                st.event(
                    &name,
                    EventKind::Recreated,
                    format!("recreated in {} ms", started.elapsed().as_millis()),
                );
            }
            Err(e) => {
                st.instances.remove(&name);
                st.event(&name, EventKind::Error, format!("recreate failed: {e}"));
            }
        }
    }

    async fn keep_logs(&self, name: &str) {
        let Some(dir) = &self.config.log_dir else {
            return;
        };
        let Ok(text) = self.docker.logs(name).await else {
            return;
        };
        let generation = self.lock().instances.get(name).map_or(0, |i| i.generation);
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(dir.join(format!("{name}-{generation}.log")), text);
    }

    /// Stops every instance (drain), waiting for all of the backend's tasks.
    async fn stop_all(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            let names: Vec<String> = st
                .instances
                .iter()
                .filter(|(_, i)| matches!(i.phase, Phase::Running | Phase::Creating))
                .map(|(n, _)| n.clone())
                .collect();
            for name in names {
                self.stop(
                    &mut st,
                    &name,
                    StopReason::ScaleIn,
                    "controller shutting down",
                );
            }
        }
        self.tasks.close();
        let limit = self.config.stop_timeout + Duration::from_secs(15);
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(group = %self.config.group, "instances still stopping after {limit:?}");
        }
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn apply<'a>(&'a self, decision: &'a Decision) -> BoxFuture<'a, Result<Applied, BackendError>> {
        Box::pin(self.inner.pass(decision))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.stop_all())
    }
}

/// `GET /group` (the group and its instances) and `POST /group/rolling-update`
/// (`{"image": "...", "max_surge": 1, "max_unavailable": 0}`, the policy
/// optional): for `drove serve --scaler docker`, to be mounted under `/v1`
/// behind the API's authentication.
pub fn routes<S: Clone + Send + Sync + 'static>(backend: Arc<DockerBackend>) -> axum::Router<S> {
    use axum::Json;
    use axum::extract::State;
    use axum::extract::rejection::JsonRejection;
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    type Failed = (StatusCode, Json<serde_json::Value>);
    fn failed(status: StatusCode, code: &str, message: String) -> Failed {
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        (status, Json(body))
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Update {
        image: String,
        max_surge: Option<u32>,
        max_unavailable: Option<u32>,
    }

    async fn status(State(b): State<Arc<DockerBackend>>) -> Json<GroupStatus> {
        Json(b.status())
    }

    async fn update(
        State(b): State<Arc<DockerBackend>>,
        body: Result<Json<Update>, JsonRejection>,
    ) -> Result<(StatusCode, Json<GroupStatus>), Failed> {
        let Json(u) = body.map_err(|r| failed(r.status(), "invalid", r.body_text()))?;
        let default = b.config().update;
        let policy = UpdatePolicy {
            max_surge: u.max_surge.unwrap_or(default.max_surge),
            max_unavailable: u.max_unavailable.unwrap_or(default.max_unavailable),
        };
        match b.rolling_update(&u.image, policy) {
            Ok(()) => Ok((StatusCode::ACCEPTED, Json(b.status()))),
            Err(e) => Err(failed(StatusCode::BAD_REQUEST, "bad_request", e.message)),
        }
    }

    axum::Router::new()
        .route("/group", get(status))
        .route("/group/rolling-update", post(update))
        .with_state(backend)
}

/// `drove serve --scaler docker` settings, to flatten into the scaling arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DockerArgs {
    /// docker: the worker image (the instance template).
    #[arg(
        long,
        env = "DROVE_DOCKER_IMAGE",
        default_value = "drove-worker:latest"
    )]
    pub docker_image: String,
    /// docker: the private network of the workers (must exist).
    #[arg(long, env = "DROVE_DOCKER_NETWORK", default_value = "drove-sim")]
    pub docker_network: String,
    /// docker: group name (container names and label).
    #[arg(long, env = "DROVE_DOCKER_GROUP", default_value = "drove-worker")]
    pub docker_group: String,
    /// docker: the database URL as the containers reach it (a host name on
    /// the network), instead of the controller's own.
    #[arg(long, env = "DROVE_DOCKER_DATABASE_URL", hide_env_values = true)]
    pub docker_database_url: Option<String>,
    /// docker: extra worker flags, shell-quoted (e.g. "--slots 2 --lease-ttl 5s").
    #[arg(
        long,
        env = "DROVE_DOCKER_WORKER_ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub docker_worker_args: String,
    /// docker: SIGTERM to SIGKILL on scale-in and updates (drain grace + margin).
    #[arg(long, env = "DROVE_DOCKER_STOP_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub docker_stop_timeout: Duration,
    /// docker: autohealing initial delay; "off" disables autohealing.
    #[arg(long, env = "DROVE_DOCKER_AUTOHEAL_DELAY", default_value = "10s")]
    pub docker_autoheal_delay: String,
}

impl DockerArgs {
    /// The backend; `worker_env` is what `drove serve` gives its workers
    /// (database URL, schema).
    pub fn backend(&self, worker_env: &[(String, String)]) -> Result<DockerBackend, BackendError> {
        let bad = |m: String| BackendError::new("docker", m, false);
        let mut c = DockerConfig::new(&self.docker_group, &self.docker_image, &self.docker_network);
        c.env = worker_env.to_vec();
        if let Some(url) = &self.docker_database_url {
            c.env.retain(|(k, _)| k != "DATABASE_URL");
            c.env.push(("DATABASE_URL".into(), url.clone()));
        }
        c.args = shell_words::split(&self.docker_worker_args)
            .map_err(|e| bad(format!("--docker-worker-args: {e}")))?;
        c.stop_timeout = self.docker_stop_timeout;
        c.autoheal = match self.docker_autoheal_delay.as_str() {
            "off" => None,
            d => Some(Autoheal {
                initial_delay: humantime::parse_duration(d)
                    .map_err(|e| bad(format!("--docker-autoheal-delay: {e}")))?,
                ..Autoheal::default()
            }),
        };
        DockerBackend::new(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A `docker` CLI keeping containers as files: `ps` lists them, `inspect`
    /// reads them and answers `delay` seconds later (a busy daemon), `stop`
    /// takes 0.3 s and `rm` deletes the file.
    fn fake_docker(dir: &std::path::Path, delay: &str) -> PathBuf {
        let state = dir.join("containers");
        std::fs::create_dir_all(&state).unwrap();
        let bin = dir.join("docker");
        let script = format!(
            r#"#!/bin/sh
state={state}
cmd=$1; shift
case $cmd in
  ps) ls "$state" ;;
  inspect)
    shift 2; out="["; sep=""
    for id in "$@"; do
      [ -f "$state/$id" ] || continue
      out="$out$sep{{\"Name\": \"/$id\", \"State\": {{\"Status\": \"running\"}}, \"Config\": {{\"Image\": \"img:1\"}}, \"NetworkSettings\": {{}}}}"
      sep=","
    done
    sleep {delay}; echo "$out]" ;;
  run)
    while [ "$1" != "--name" ]; do shift; done
    touch "$state/$2" ;;
  stop) sleep 0.3 ;;
  rm) rm -f "$state/$2" ;;
  logs) ;;
esac
"#,
            state = state.display()
        );
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    fn decision(desired: u32) -> Decision {
        Decision {
            desired,
            live: 0,
            busy: 0,
            backlog: 0,
            running: 0,
            work: 0.0,
            workers: Vec::new(),
        }
    }

    fn count(backend: &DockerBackend, kind: EventKind) -> usize {
        backend.events().iter().filter(|e| e.kind == kind).count()
    }

    /// A pass whose `docker inspect` still saw a container that a stop of
    /// the pass before then removed must not adopt it again as a stranger
    /// (and stop one more to get back to the target).
    #[tokio::test]
    async fn a_list_older_than_a_finished_stop_is_not_merged() {
        let dir = std::env::temp_dir().join(format!("drove-fake-docker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = DockerConfig::new("g", "img:1", "net");
        config.docker = fake_docker(&dir, "0");
        config.autoheal = None;
        let backend = DockerBackend::new(config).unwrap();

        backend.apply(&decision(3)).await.unwrap();
        for _ in 0..100 {
            if count(&backend, EventKind::Created) == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            count(&backend, EventKind::Created),
            3,
            "{:?}",
            backend.events()
        );
        backend.apply(&decision(3)).await.unwrap();

        // Scale in to 2; the next pass lists while that stop is under way
        // and merges after it finished.
        fake_docker(&dir, "1");
        let applied = backend.apply(&decision(2)).await.unwrap();
        assert_eq!(applied.size, Some(2));
        for _ in 0..3 {
            backend.apply(&decision(2)).await.unwrap();
        }

        let events = backend.events();
        assert_eq!(count(&backend, EventKind::Stopping), 1, "{events:#?}");
        assert_eq!(count(&backend, EventKind::Stopped), 1, "{events:#?}");
        assert_eq!(count(&backend, EventKind::Created), 3, "{events:#?}");
        assert_eq!(backend.status().instances.len(), 2, "{events:#?}");
        assert_eq!(
            std::fs::read_dir(dir.join("containers")).unwrap().count(),
            2
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
