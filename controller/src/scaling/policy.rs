//! The scaling policy: one pure function from queue state to a desired
//! group size.
//!
//! - Target: jobs per worker (`4`), or seconds of work per worker (`30s`:
//!   backlog × observed mean run time, spread over each worker's slots).
//! - Scale out at once: the desired size rises as soon as the work does.
//! - Scale in damped: the work must stay below the current size for
//!   `scale_in_after` before the size drops, and never below the workers
//!   that are running jobs (only idle capacity is removed).
//! - Scale to zero (when `min` is 0): only after no work at all for
//!   `idle_to_zero_after`.
//! - Always within `min..=max`.

use std::time::Duration;

use super::backend::Decision;

/// What one worker should hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Due plus running jobs per worker.
    Jobs(f64),
    /// Seconds of work per worker, from the observed mean run time.
    Seconds(f64),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        let s = s.trim();
        if let Ok(n) = s.trim_end_matches("jobs").trim().parse::<f64>() {
            return if n > 0.0 && n.is_finite() {
                Ok(Target::Jobs(n))
            } else {
                Err(format!("target {s:?} must be positive"))
            };
        }
        match humantime::parse_duration(s) {
            Ok(d) if !d.is_zero() => Ok(Target::Seconds(d.as_secs_f64())),
            _ => Err(format!(
                "target {s:?}: give jobs per worker (e.g. 4) or seconds of work per worker (e.g. 30s)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub min: u32,
    pub max: u32,
    pub target: Target,
    /// Slots per worker to assume before any worker has registered.
    pub slots_per_worker: u32,
    pub scale_in_after: Duration,
    pub idle_to_zero_after: Duration,
}

/// What the policy remembers between decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyState {
    pub desired: Option<u32>,
    /// Since when the wanted size has been below `desired` (seconds on the
    /// caller's monotonic clock).
    pub below_since: Option<f64>,
    /// The largest wanted size seen since `below_since` (scale in to that).
    pub below_peak: u32,
    /// Last time there was any work.
    pub last_work: Option<f64>,
}

/// The facts a decision is made from.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub backlog: i64,
    pub running: i64,
    pub live: u32,
    pub busy: u32,
    pub slots: i64,
    /// Mean run time of recent jobs, if known.
    pub avg_run_s: Option<f64>,
}

/// Decides the group size at `now` (seconds on a monotonic clock).
pub fn decide(
    cfg: &PolicyConfig,
    prev: &PolicyState,
    obs: &Observation,
    now: f64,
) -> (u32, PolicyState) {
    let mut st = prev.clone();
    let work = (obs.backlog + obs.running).max(0) as f64;
    if work > 0.0 {
        st.last_work = Some(now);
    }
    let slots_per_worker = if obs.live > 0 && obs.slots > 0 {
        obs.slots as f64 / f64::from(obs.live)
    } else {
        f64::from(cfg.slots_per_worker.max(1))
    };
    let raw = match cfg.target {
        Target::Jobs(n) => (work / n).ceil(),
        Target::Seconds(s) => (work * obs.avg_run_s.unwrap_or(1.0) / (s * slots_per_worker)).ceil(),
    };
    let idle_long_enough = st
        .last_work
        .is_none_or(|t| now - t >= cfg.idle_to_zero_after.as_secs_f64());
    // Until idle long enough, a group that has workers keeps at least one.
    let floor = if cfg.min == 0 && idle_long_enough {
        0
    } else {
        cfg.min.max(1).min(cfg.max)
    };
    let wanted = (raw.min(f64::from(u32::MAX)) as u32).clamp(floor, cfg.max.max(floor));
    let current = st
        .desired
        .unwrap_or(obs.live.clamp(cfg.min, cfg.max.max(cfg.min)));
    let desired = if floor == 0 && wanted == 0 && obs.busy == 0 {
        // No work at all for the whole idle period: that period was the damping.
        st.below_since = None;
        st.below_peak = 0;
        0
    } else if wanted >= current {
        st.below_since = None;
        st.below_peak = 0;
        wanted
    } else {
        let since = *st.below_since.get_or_insert(now);
        st.below_peak = st.below_peak.max(wanted);
        if now - since >= cfg.scale_in_after.as_secs_f64() {
            st.below_since = None;
            let target = st.below_peak.max(obs.busy).max(floor).min(current);
            st.below_peak = 0;
            target
        } else {
            current
        }
    };
    st.desired = Some(desired);
    (desired, st)
}

/// A [`Decision`] for the backends, from the policy's answer and the facts.
pub fn decision(
    desired: u32,
    obs: &Observation,
    workers: Vec<drove_queue::registry::WorkerRow>,
) -> Decision {
    Decision {
        desired,
        live: obs.live,
        busy: obs.busy,
        backlog: obs.backlog,
        running: obs.running,
        work: (obs.backlog + obs.running).max(0) as f64,
        workers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            min: 0,
            max: 8,
            target: Target::Jobs(1.0),
            slots_per_worker: 1,
            scale_in_after: Duration::from_secs(30),
            idle_to_zero_after: Duration::from_secs(60),
        }
    }

    fn obs(backlog: i64, running: i64, live: u32, busy: u32) -> Observation {
        Observation {
            backlog,
            running,
            live,
            busy,
            slots: i64::from(live),
            avg_run_s: None,
        }
    }

    #[test]
    fn scales_out_at_once_up_to_max() {
        let (d, st) = decide(&cfg(), &PolicyState::default(), &obs(3, 0, 0, 0), 0.0);
        assert_eq!(d, 3);
        let (d, _) = decide(&cfg(), &st, &obs(128, 3, 3, 3), 1.0);
        assert_eq!(d, 8, "capped at max");
    }

    #[test]
    fn scales_in_only_after_the_window_and_never_below_busy() {
        let mut st = PolicyState {
            desired: Some(8),
            ..Default::default()
        };
        // Work drops to 2 jobs (2 workers busy): nothing happens for 30 s.
        for t in 0..30 {
            let (d, s) = decide(&cfg(), &st, &obs(0, 2, 8, 2), f64::from(t));
            assert_eq!(d, 8, "at {t}s");
            st = s;
        }
        let (d, st) = decide(&cfg(), &st, &obs(0, 2, 8, 2), 30.0);
        assert_eq!(d, 2);
        // Busy workers are never removed, even if the target says fewer.
        let mut st = PolicyState {
            desired: Some(6),
            ..st
        };
        for t in 31..62 {
            st = decide(&cfg(), &st, &obs(0, 0, 6, 5), f64::from(t)).1;
        }
        assert_eq!(st.desired, Some(5));
    }

    #[test]
    fn a_blip_during_the_window_sets_the_scale_in_target() {
        let mut st = PolicyState {
            desired: Some(8),
            ..Default::default()
        };
        st = decide(&cfg(), &st, &obs(0, 1, 8, 1), 0.0).1;
        st = decide(&cfg(), &st, &obs(4, 1, 8, 1), 10.0).1; // wants 5, still < 8
        let (d, _) = decide(&cfg(), &st, &obs(0, 1, 8, 1), 31.0);
        assert_eq!(d, 5, "scales in to the peak seen during the window");
    }

    #[test]
    fn scales_to_zero_only_after_the_idle_period() {
        let mut st = PolicyState {
            desired: Some(2),
            ..Default::default()
        };
        st = decide(&cfg(), &st, &obs(1, 0, 2, 0), 0.0).1;
        let mut last = 2;
        for t in 1..=60 {
            let (d, s) = decide(&cfg(), &st, &obs(0, 0, 2, 0), f64::from(t));
            st = s;
            last = d;
            if t < 60 {
                assert!(
                    d >= 1,
                    "keeps one worker until idle for 60 s (t={t}, d={d})"
                );
            }
        }
        assert_eq!(last, 0);
        // With min 1 it never goes to zero.
        let c = PolicyConfig { min: 1, ..cfg() };
        let mut st = PolicyState::default();
        for t in 0..500 {
            st = decide(&c, &st, &obs(0, 0, 1, 0), f64::from(t)).1;
        }
        assert_eq!(st.desired, Some(1));
    }

    #[test]
    fn seconds_of_work_uses_run_time_and_slots() {
        let c = PolicyConfig {
            target: Target::Seconds(30.0),
            max: 100,
            ..cfg()
        };
        let mut o = obs(600, 0, 4, 4);
        o.slots = 8; // 2 slots per worker
        o.avg_run_s = Some(1.0);
        // 600 jobs × 1 s / (30 s × 2 slots) = 10 workers.
        assert_eq!(decide(&c, &PolicyState::default(), &o, 0.0).0, 10);
    }

    #[test]
    fn targets_parse() {
        assert_eq!("4".parse::<Target>().unwrap(), Target::Jobs(4.0));
        assert_eq!("2.5 jobs".parse::<Target>().unwrap(), Target::Jobs(2.5));
        assert_eq!("30s".parse::<Target>().unwrap(), Target::Seconds(30.0));
        assert!("0".parse::<Target>().is_err());
        assert!(
            "soon"
                .parse::<Target>()
                .unwrap_err()
                .contains("jobs per worker")
        );
    }
}
