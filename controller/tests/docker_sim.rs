//! The managed-instance-group simulation: worker containers (the FROM-scratch
//! image of `scripts/build-image.sh`) run by the controller's `docker`
//! backend on a private network, with PostgreSQL in a container built from
//! this machine's binaries. Under a steady load of `sleep` jobs, each
//! scenario does to the group what happens to a MIG (a VM dies, loses its
//! network, hangs, is replaced by a rolling update, is scaled in) and then
//! checks the books: every job enqueued recorded succeeded exactly once,
//! none left running without a live lease.
//!
//! Skipped, with the reason printed, when there is no Docker daemon.
//! `scripts/sim-mig.sh` runs them all and prints the reports.

mod common;
mod sim;

use std::time::{Duration, Instant};

use chrono::Utc;
use drove_controller::scaling::docker::{Autoheal, EventKind, UpdatePolicy};

use common::{metric_value, wait_until};
use sim::group::Group;
use sim::image::Subject;
use sim::load::{self, Load, Report};
use sim::{Sim, docker, http_get};

/// Jobs per second on a group of 3 workers × 2 slots: ~5 of the 6 slots busy.
const RATE: u32 = 6;
/// Job lengths: long enough to be caught mid-run, short enough to finish
/// within the drain grace.
const JOB_MS: std::ops::Range<u64> = 200..1500;

/// The images: FROM scratch, one static binary each (no dynamic
/// dependencies: `file`, `ldd`), non-root (65532), an entrypoint, no
/// HEALTHCHECK, OCI labels with version and commit; the worker image under
/// 10 MB. Then the figures, medians of 5 starts: container start to
/// `/readyz`, idle memory. The worker reaches the database as `db` (Docker's
/// DNS): host names resolve with no NSS in the image.
#[tokio::test(flavor = "multi_thread")]
async fn images_are_static_small_and_non_root() {
    if sim::skip_without_docker("images_are_static_small_and_non_root") {
        return;
    }
    let refs = tokio::task::spawn_blocking(|| sim::script("scripts/build-image.sh", &["all"]))
        .await
        .unwrap();
    let [worker, controller] = [&refs[0], &refs[1]];
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap();
    let tmp = std::env::temp_dir().join(format!("drove-image-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let pid_label = [format!("{}={}", sim::PID_LABEL, std::process::id())];
    let mut sizes = Vec::new();
    for (image, bin, port) in [
        (worker, "drove-worker", "8080/tcp"),
        (controller, "drove", "8000/tcp"),
    ] {
        let v = sim::image::inspect(image);
        let c = &v["Config"];
        assert_eq!(
            c["User"], "65532:65532",
            "{image} runs as the non-root user"
        );
        assert_eq!(
            c["Entrypoint"][0],
            format!("/usr/local/bin/{bin}"),
            "{image}"
        );
        assert!(c["Healthcheck"].is_null(), "{image} has no HEALTHCHECK");
        assert!(
            c["ExposedPorts"][port].is_object(),
            "{image} exposes {port}"
        );
        let labels = &c["Labels"];
        assert_eq!(
            labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION"),
            "{image}"
        );
        let revision = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap_or_default();
        assert!(
            revision.starts_with(&commit),
            "{image}: revision {revision} is not commit {commit}"
        );
        let path = sim::image::copy_out(image, &format!("/usr/local/bin/{bin}"), &tmp, &pid_label);
        let (file, ldd) = sim::image::linkage(&path);
        assert!(
            file.contains("static"),
            "{bin} is statically linked: {file}"
        );
        assert!(
            ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
            "{bin} has no dynamic dependencies: {ldd}"
        );
        let passwd = sim::image::copy_out(image, "/etc/passwd", &tmp, &pid_label);
        assert!(
            std::fs::read_to_string(passwd)
                .unwrap()
                .contains(":65532:65532:")
        );
        let size = v["Size"].as_f64().unwrap() / 1e6;
        let kind = file
            .split(", ")
            .find(|p| p.contains("static"))
            .unwrap_or("");
        load::publish(&format!("FIGURE image {image}: {size:.1} MB, {bin} {kind}"));
        sizes.push(size);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        sizes[0] < 10.0,
        "the worker image is {:.1} MB, over 10 MB",
        sizes[0]
    );
    let version = docker(&[
        "run",
        "--rm",
        "--label",
        &pid_label[0],
        controller,
        "--version",
    ])
    .unwrap();
    assert_eq!(version, format!("drove {}", env!("CARGO_PKG_VERSION")));

    let Some(sim) = Sim::start("images_are_static_small_and_non_root").await else {
        return;
    };
    let url = sim.worker_url.clone();
    let idle = Duration::from_secs(3);
    let mut runs = Vec::new();
    for i in 0..5 {
        let name = format!("{}-worker-{i}", sim.id);
        let env = [("DATABASE_URL", url.as_str()), ("DROVE_LOG_FORMAT", "json")];
        runs.push(
            sim::image::measure_start(
                &sim,
                &name,
                &Subject {
                    image: worker,
                    env: &env,
                    args: &[],
                    port: 8080,
                    ready_message: "worker ready",
                },
                idle,
            )
            .await,
        );
    }
    let name = format!("{}-controller", sim.id);
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("DROVE_API_TOKEN", "figures-token-0123456789abcdef"),
        ("DROVE_LOG_FORMAT", "json"),
    ];
    let ctl = sim::image::measure_start(
        &sim,
        &name,
        &Subject {
            image: controller,
            env: &env,
            args: &["serve"],
            port: 8000,
            ready_message: "controller ready",
        },
        idle,
    )
    .await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let med = sim::image::median;
    load::publish(&format!(
        "FIGURE worker container, median of {n}: docker start -> /readyz 200 {:.0} ms (runs {:?}), \
         of which `docker start` itself {:.0} ms and process start -> ready {:.0} ms; \
         idle memory {:.1} MiB (docker stats), RSS {:.1} MiB",
        med(runs.iter().map(|r| ms(r.to_ready)).collect()),
        runs.iter()
            .map(|r| ms(r.to_ready).round())
            .collect::<Vec<_>>(),
        med(runs.iter().map(|r| ms(r.docker_start)).collect()),
        med(runs
            .iter()
            .filter_map(|r| r.process_to_ready.map(ms))
            .collect()),
        med(runs.iter().map(|r| r.idle_mib).collect()),
        med(runs.iter().filter_map(|r| r.rss_mib).collect()),
        n = runs.len(),
    ));
    load::publish(&format!(
        "FIGURE controller container (drove serve): docker start -> /readyz 200 {:.0} ms \
         (docker start {:.0} ms); idle memory {:.1} MiB (docker stats), RSS {:.1} MiB",
        ms(ctl.to_ready),
        ms(ctl.docker_start),
        ctl.idle_mib,
        ctl.rss_mib.unwrap_or(f64::NAN),
    ));
}

/// Starts the load and waits until the group has done some of it.
async fn warm_up(sim: &Sim, report: &mut Report) -> Load {
    let started = Instant::now();
    let load = Load::start(sim, RATE, JOB_MS).await;
    wait_until(
        Duration::from_secs(60),
        "20 jobs done under load",
        || async { (load::succeeded(&sim.conn).await >= 20).then_some(()) },
    )
    .await;
    report.step("load: 20 jobs done", started.elapsed());
    load
}

/// Lets the load run on until `n` more jobs are done.
async fn work_on(sim: &Sim, n: i64, what: &str) -> Duration {
    let started = Instant::now();
    let base = load::succeeded(&sim.conn).await;
    wait_until(Duration::from_secs(60), what, || async {
        (load::succeeded(&sim.conn).await >= base + n).then_some(())
    })
    .await;
    started.elapsed()
}

/// Stops the load, waits for the backlog to drain, checks the books.
async fn finish(sim: &Sim, load: Load, mut report: Report) -> load::Outcome {
    let ids = load.finish().await;
    let (outcome, took) = load::drain(&sim.conn, &ids, Duration::from_secs(90)).await;
    report.step("load stopped: backlog drained", took);
    report.step("whole scenario", sim.started.elapsed());
    load::assert_books(&report, &outcome);
    outcome
}

/// Time from `at` to an event.
fn since(at: chrono::DateTime<Utc>, e: &drove_controller::scaling::docker::Event) -> Duration {
    (e.at - at).to_std().unwrap_or_default()
}

/// Waits until `gone` has left the group and it is `n` ready instances
/// again; the time since `t0`.
async fn replaced(group: &Group, gone: &str, n: usize, t0: Instant) -> Duration {
    wait_until(
        Duration::from_secs(60),
        &format!("{gone} replaced"),
        || async {
            let s = group.status();
            let done = s.instances.len() == n
                && s.available() == n
                && s.instances.iter().all(|i| i.name != gone);
            done.then(|| t0.elapsed())
        },
    )
    .await
}

fn names(group: &Group) -> Vec<String> {
    group
        .status()
        .instances
        .into_iter()
        .map(|i| i.name)
        .collect()
}

/// A busy worker container: (name, worker id, jobs it runs with 300 ms to 1 s left).
async fn pick_victim(sim: &Sim, group: &Group) -> (String, String, Vec<i64>) {
    wait_until(
        Duration::from_secs(30),
        "a worker in the middle of a job",
        || async {
            load::busy_victim(
                &sim.conn,
                &names(group),
                Duration::from_millis(300)..Duration::from_millis(1000),
            )
            .await
        },
    )
    .await
}

/// `docker kill`: the VM dies. Its jobs are reclaimed once its lease runs
/// out and finish on other workers; the group replaces the container.
#[tokio::test(flavor = "multi_thread")]
async fn sim_kill_a_worker() {
    let Some(sim) = Sim::start("sim_kill_a_worker").await else {
        return;
    };
    let mut report = Report::new("kill");
    let group = Group::start(&sim, 3, |_| {}).await;
    let took = group
        .settled(3, Duration::from_secs(60), "3 workers ready")
        .await;
    report.step("group of 3 created and ready", took);
    let load = warm_up(&sim, &mut report).await;

    let (victim, worker, jobs) = pick_victim(&sim, &group).await;
    let (t0, at) = (Instant::now(), Utc::now());
    docker(&["kill", &victim]).unwrap();
    report.step(
        format!("docker kill {victim} ({} job(s) in flight)", jobs.len()),
        t0.elapsed(),
    );

    let (reclaim, died, whole) = tokio::join!(
        load::reclaimed(&sim.conn, &worker, &jobs, t0, Duration::from_secs(30)),
        group.wait_event(&victim, EventKind::Died, at, Duration::from_secs(10)),
        replaced(&group, &victim, 3, t0),
    );
    report.reclaim(reclaim);
    report.step("kill -> the group saw the container exit", since(at, &died));
    report.step("kill -> its jobs reclaimed (lease 3 s)", reclaim);
    report.step("kill -> replacement ready (3 workers again)", whole);
    report.step(
        "load goes on: 20 more jobs done",
        work_on(&sim, 20, "20 more jobs").await,
    );

    let outcome = finish(&sim, load, report).await;
    assert_eq!(
        load::finished_elsewhere(&sim.conn, &jobs, &worker).await,
        jobs.len() as i64,
        "the killed worker's jobs finished on other workers"
    );
    assert!(outcome.rerun >= jobs.len() as i64);
    assert!(
        !names(&group).contains(&victim),
        "the dead container was replaced"
    );
}

/// `docker network disconnect` past the lease, then reconnect: the jobs are
/// reclaimed and finish elsewhere, the cut-off worker's late completions are
/// rejected, and it recovers and works again (same container: autohealing is
/// set to act only after 60 failed checks, longer than the cut).
#[tokio::test(flavor = "multi_thread")]
async fn sim_cut_a_worker_off_the_network() {
    let Some(sim) = Sim::start("sim_cut_a_worker_off_the_network").await else {
        return;
    };
    let mut report = Report::new("cut-off");
    let group = Group::start(&sim, 3, |c| {
        c.autoheal = Some(Autoheal {
            unhealthy_threshold: 60,
            initial_delay: Duration::from_secs(5),
        })
    })
    .await;
    report.step(
        "group of 3 created and ready",
        group
            .settled(3, Duration::from_secs(60), "3 workers ready")
            .await,
    );
    let load = warm_up(&sim, &mut report).await;

    let (victim, worker, jobs) = pick_victim(&sim, &group).await;
    let t0 = Instant::now();
    docker(&["network", "disconnect", &sim.network, &victim]).unwrap();
    report.step(
        format!(
            "network disconnect {victim} ({} job(s) in flight)",
            jobs.len()
        ),
        t0.elapsed(),
    );

    let reclaim = load::reclaimed(&sim.conn, &worker, &jobs, t0, Duration::from_secs(30)).await;
    report.reclaim(reclaim);
    report.step("cut -> its jobs reclaimed", reclaim);
    wait_until(
        Duration::from_secs(30),
        "the reclaimed jobs finished elsewhere",
        || async {
            (load::finished_elsewhere(&sim.conn, &jobs, &worker).await == jobs.len() as i64)
                .then_some(())
        },
    )
    .await;
    report.step("cut -> they finished on other workers", t0.elapsed());
    wait_until(
        Duration::from_secs(30),
        "the cut-off worker's lease gone",
        || async {
            load::worker_of(&sim.conn, &victim)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    report.step("cut -> its lease expired", t0.elapsed());

    let t1 = Instant::now();
    docker(&["network", "connect", &sim.network, &victim]).unwrap();
    report.step(
        format!(
            "network connect {victim} (cut for {:.1} s)",
            t0.elapsed().as_secs_f64()
        ),
        t1.elapsed(),
    );
    let rejected = wait_until(
        Duration::from_secs(30),
        "late completions rejected",
        || async {
            let addr = group.addr(&victim)?;
            let (_, body) = http_get(addr, "/metrics")?;
            let n = metric_value(&body, "drove_worker_outcomes_rejected_total");
            (n >= 1.0).then_some(n)
        },
    )
    .await;
    report.step(
        format!("reconnect -> {rejected} late completion(s) rejected"),
        t1.elapsed(),
    );
    let since = Utc::now();
    let recovered = wait_until(
        Duration::from_secs(60),
        "the cut-off worker runs jobs again",
        || async {
            let id = load::worker_of(&sim.conn, &victim).await?;
            let n: i64 = sim
                .conn
                .client()
                .query_one(
                    &sim.schema.sql(
                        "SELECT count(*) FROM {s}.jobs_finished WHERE worker = $1 AND finished_at > $2",
                    ),
                    &[&id, &since],
                )
                .await
                .unwrap()
                .get(0);
            (n >= 1).then_some(n)
        },
    )
    .await;
    report.step(
        format!("reconnect -> it works again ({recovered} job(s) done)"),
        t1.elapsed(),
    );
    assert!(
        group
            .event(&victim, EventKind::Autoheal, sim_start(&sim))
            .is_none(),
        "not recreated"
    );
    report.note(format!(
        "{victim} kept running through the cut: autohealing threshold 60 checks (1 s apart)"
    ));

    finish(&sim, load, report).await;
    assert_eq!(
        load::finished_elsewhere(&sim.conn, &jobs, &worker).await,
        jobs.len() as i64,
        "the newer attempts' records stand"
    );
}

fn sim_start(sim: &Sim) -> chrono::DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(sim.started.elapsed()).unwrap()
}

/// Autohealing: a container whose `/healthz` stops answering (`docker
/// pause`) is recreated after 3 failed checks; its jobs are reclaimed.
#[tokio::test(flavor = "multi_thread")]
async fn sim_autoheal_a_hung_worker() {
    let Some(sim) = Sim::start("sim_autoheal_a_hung_worker").await else {
        return;
    };
    let mut report = Report::new("autoheal");
    // Failures count 2 s after a container starts (the warm-up takes longer).
    let group = Group::start(&sim, 3, |c| {
        c.autoheal = Some(Autoheal {
            unhealthy_threshold: 3,
            initial_delay: Duration::from_secs(2),
        })
    })
    .await;
    report.step(
        "group of 3 created and ready",
        group
            .settled(3, Duration::from_secs(60), "3 workers ready")
            .await,
    );
    let load = warm_up(&sim, &mut report).await;

    let (victim, worker, jobs) = pick_victim(&sim, &group).await;
    let (t0, at) = (Instant::now(), Utc::now());
    docker(&["pause", &victim]).unwrap();
    report.step(
        format!("docker pause {victim} ({} job(s) in flight)", jobs.len()),
        t0.elapsed(),
    );
    let (reclaim, ready) = tokio::join!(
        load::reclaimed(&sim.conn, &worker, &jobs, t0, Duration::from_secs(30)),
        group.wait_event(&victim, EventKind::Ready, at, Duration::from_secs(60)),
    );
    let unhealthy = group
        .event(&victim, EventKind::Autoheal, at)
        .expect("autohealed");
    let recreated = group
        .event(&victim, EventKind::Recreated, at)
        .expect("recreated");
    report.step(
        format!("pause -> declared unhealthy ({})", unhealthy.detail),
        since(at, &unhealthy),
    );
    report.step(
        "pause -> recreated (docker rm -f, docker run)",
        since(at, &recreated),
    );
    report.step("pause -> recreated instance ready", since(at, &ready));
    report.reclaim(reclaim);
    report.step("pause -> its jobs reclaimed (lease 3 s)", reclaim);
    group
        .settled(3, Duration::from_secs(30), "3 workers ready")
        .await;
    report.step(
        "load goes on: 20 more jobs done",
        work_on(&sim, 20, "20 more jobs").await,
    );

    finish(&sim, load, report).await;
    assert_eq!(
        load::finished_elsewhere(&sim.conn, &jobs, &worker).await,
        jobs.len() as i64
    );
}

/// Samples the group during a rolling update: the most instances and the
/// fewest available ones seen.
async fn roll(
    group: &Group,
    image: &str,
    policy: UpdatePolicy,
    target: usize,
) -> (Duration, usize, usize) {
    let started = Instant::now();
    group.backend.rolling_update(image, policy).unwrap();
    let (mut most, mut fewest) = (0, usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = group.status();
        most = most.max(s.members());
        fewest = fewest.min(s.available());
        let done = !s.updating
            && s.instances.len() == target
            && s.available() == target
            && s.instances.iter().all(|i| i.image == image);
        if done {
            return (started.elapsed(), most, fewest);
        }
        assert!(
            Instant::now() < deadline,
            "rolling update to {image} not done: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rolling update under load: every container of v1 replaced by v2 (one at
/// a time above the size: max surge 1, max unavailable 0), then back to v1
/// the other way (max surge 0, max unavailable 1).
#[tokio::test(flavor = "multi_thread")]
async fn sim_rolling_update() {
    let Some(sim) = Sim::start("sim_rolling_update").await else {
        return;
    };
    let mut report = Report::new("rolling-update");
    let group = Group::start(&sim, 3, |_| {}).await;
    report.step(
        "group of 3 (v1) created and ready",
        group
            .settled(3, Duration::from_secs(60), "3 workers ready")
            .await,
    );
    let load = warm_up(&sim, &mut report).await;
    let v1_names = names(&group);

    for (image, surge, unavailable) in [(&sim.v2, 1, 0), (&sim.v1, 0, 1)] {
        let policy = UpdatePolicy {
            max_surge: surge,
            max_unavailable: unavailable,
        };
        let (took, most, fewest) = roll(&group, image, policy, 3).await;
        let tag = image.rsplit('-').next().unwrap();
        report.step(
            format!("roll to {tag} (surge {surge}, unavailable {unavailable}): ≤{most} instances, ≥{fewest} ready"),
            took,
        );
        assert!(
            most <= 3 + surge as usize,
            "at most {} instances during the update, saw {most}",
            3 + surge
        );
        assert!(
            fewest >= 3 - unavailable as usize,
            "at least {} available during the update, saw {fewest}",
            3 - unavailable
        );
    }
    assert!(
        names(&group).iter().all(|n| !v1_names.contains(n)),
        "every original container was replaced"
    );
    report.step(
        "load goes on: 20 more jobs done",
        work_on(&sim, 20, "20 more jobs").await,
    );
    let stopped = group
        .backend
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Stopped)
        .count();
    report.note(format!(
        "{stopped} containers drained and stopped (docker stop: SIGTERM, grace {})",
        sim::group::GRACE
    ));
    finish(&sim, load, report).await;
}

/// Scale in from 4 to 1 under load (idle workers first, each drained by
/// SIGTERM), then out to 4 again.
#[tokio::test(flavor = "multi_thread")]
async fn sim_scale_in_and_out() {
    let Some(sim) = Sim::start("sim_scale_in_and_out").await else {
        return;
    };
    let mut report = Report::new("scale-in-out");
    let group = Group::start(&sim, 4, |_| {}).await;
    report.step(
        "group of 4 created and ready",
        group
            .settled(4, Duration::from_secs(60), "4 workers ready")
            .await,
    );
    // Lighter load than elsewhere, so that some workers are idle at times.
    let started = Instant::now();
    let load = Load::start(&sim, 3, JOB_MS).await;
    wait_until(
        Duration::from_secs(60),
        "20 jobs done, and an idle worker",
        || async {
            let idle = drove_queue::registry::workers_list(sim.conn.client(), &sim.schema)
                .await
                .unwrap()
                .iter()
                .any(|w| w.busy == 0);
            (idle && load::succeeded(&sim.conn).await >= 20).then_some(())
        },
    )
    .await;
    report.step(
        "load (3 jobs/s): 20 jobs done, a worker idle",
        started.elapsed(),
    );

    let at = Utc::now();
    group.set_target(1);
    report.step(
        "4 -> 1: drained and stopped",
        group
            .settled(1, Duration::from_secs(60), "1 worker left")
            .await,
    );
    // Idle first: no stopped worker was busier than the one kept, as the
    // registry said when the backend chose.
    let seen = group.resized_to(1).expect("the pass that scaled in");
    let busy = |host: &str| {
        seen.workers
            .iter()
            .filter(|w| w.host == host)
            .map(|w| w.busy)
            .max()
            .unwrap_or(0)
    };
    let stopped: Vec<String> = group
        .backend
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::Stopping && e.at >= at)
        .map(|e| e.instance)
        .collect();
    let kept = names(&group);
    assert_eq!((stopped.len(), kept.len()), (3, 1));
    let fmt = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("{n} (busy {})", busy(n)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.note(format!(
        "scale-in stopped {}; kept {}",
        fmt(&stopped),
        fmt(&kept)
    ));
    assert!(
        stopped.iter().all(|n| busy(n) <= busy(&kept[0])),
        "scale-in stopped a busier worker than it kept: stopped {}, kept {}",
        fmt(&stopped),
        fmt(&kept)
    );
    report.step(
        "load goes on with 1 worker: 10 more jobs done",
        work_on(&sim, 10, "10 more jobs").await,
    );
    group.set_target(4);
    report.step(
        "1 -> 4: created and ready",
        group
            .settled(4, Duration::from_secs(60), "4 workers ready")
            .await,
    );
    report.step(
        "load goes on: 20 more jobs done",
        work_on(&sim, 20, "20 more jobs").await,
    );
    finish(&sim, load, report).await;
}

/// Removes a `drove serve` group's containers when dropped (they carry the
/// group label, not the test's: the controller made them).
struct GroupGuard(String);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let filter = format!(
            "label={}={}",
            drove_controller::scaling::docker::GROUP_LABEL,
            self.0
        );
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
}

/// The group as `GET /v1/group` shows it.
async fn group_api(serve: &common::ServeProc) -> serde_json::Value {
    let r = common::api()
        .get(serve.url("/v1/group"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Instances of the group that run `image` and are ready, if every one does.
fn all_ready_on(group: &serde_json::Value, image: &str) -> Option<usize> {
    let instances = group["instances"].as_array()?;
    let ok = group["updating"] == false
        && instances
            .iter()
            .all(|i| i["image"] == image && i["phase"] == "running" && i["ready"] == true);
    ok.then_some(instances.len())
}

/// `drove serve --scaler docker`: the controller keeps a group of 2 worker
/// containers, serves it as `GET /v1/group` behind the API token, rolls it
/// to v2 on `POST /v1/group/rolling-update` (refusing bad requests with a
/// JSON error), its workers run jobs, and on SIGTERM it drains and removes
/// every container.
#[tokio::test(flavor = "multi_thread")]
async fn sim_serve_with_the_docker_scaler() {
    let Some(sim) = Sim::start("sim_serve_with_the_docker_scaler").await else {
        return;
    };
    let mut report = Report::new("serve");
    let group_name = format!("{}-s", sim.id);
    let _guard = GroupGuard(group_name.clone());
    let worker_args = format!("--slots 2 --lease-ttl {}", sim::group::LEASE);
    let mut serve = common::ServeProc::spawn(
        &sim.host_url,
        &sim.schema,
        &[
            "--scaler",
            "docker",
            "--min-workers",
            "2",
            "--max-workers",
            "2",
            "--docker-image",
            &sim.v1,
            "--docker-network",
            &sim.network,
            "--docker-group",
            &group_name,
            "--docker-database-url",
            &sim.worker_url,
            "--docker-worker-args",
            &worker_args,
            "--docker-stop-timeout",
            "8s",
        ],
    );
    let t0 = Instant::now();
    serve.ready(Duration::from_secs(30)).await;
    let r = common::api()
        .get(serve.url("/v1/group"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "GET /v1/group needs the token");

    let n = wait_until(Duration::from_secs(60), "2 workers ready", || async {
        all_ready_on(&group_api(&serve).await, &sim.v1).filter(|&n| n == 2)
    })
    .await;
    report.step(
        format!("drove serve started, group of {n} (v1) ready"),
        t0.elapsed(),
    );

    let ids: Vec<drove_queue::JobId> = {
        let jobs: Vec<drove_queue::NewJob> = (0..10)
            .map(|_| {
                drove_queue::NewJob::new("sleep")
                    .with_payload(&serde_json::json!({ "ms": 100 }))
                    .unwrap()
            })
            .collect();
        drove_queue::jobs_enqueue_many(sim.conn.client(), &sim.schema, &jobs)
            .await
            .unwrap()
    };

    for (body, status) in [
        (serde_json::json!({ "image": "" }), 400),
        (
            serde_json::json!({ "image": sim.v2, "max_surge": 0, "max_unavailable": 0 }),
            400,
        ),
        (serde_json::json!({ "imag": sim.v2 }), 422),
    ] {
        let r = common::api()
            .post(serve.url("/v1/group/rolling-update"))
            .bearer_auth(common::TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}: {e}"
        );
    }
    let t1 = Instant::now();
    let r = common::api()
        .post(serve.url("/v1/group/rolling-update"))
        .bearer_auth(common::TOKEN)
        .json(&serde_json::json!({ "image": sim.v2, "max_surge": 1, "max_unavailable": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let started: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&started["image"], &started["updating"]),
        (&serde_json::json!(sim.v2), &serde_json::json!(true))
    );
    wait_until(
        Duration::from_secs(90),
        "the group rolled to v2",
        || async { all_ready_on(&group_api(&serve).await, &sim.v2).filter(|&n| n == 2) },
    )
    .await;
    report.step(
        "POST /v1/group/rolling-update: 2 workers on v2, ready",
        t1.elapsed(),
    );

    let (outcome, took) = load::drain(&sim.conn, &ids, Duration::from_secs(60)).await;
    report.step("10 jobs enqueued before the update done", took);

    let t2 = Instant::now();
    serve.signal(libc::SIGTERM);
    let exit = serve.wait_exit(Duration::from_secs(40)).await;
    report.step(
        "SIGTERM -> controller drained its group and exited",
        t2.elapsed(),
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "drove serve exit: {exit:?}"
    );
    let filter = format!(
        "label={}={group_name}",
        drove_controller::scaling::docker::GROUP_LABEL
    );
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &filter]).unwrap(),
        "",
        "the controller removed its containers on shutdown"
    );
    load::assert_books(&report, &outcome);
}
