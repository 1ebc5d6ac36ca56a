//! What the group does next, as a managed instance group decides it: a pure
//! function of its instances, the target size, the instance template (the
//! image) and the update policy, so its rules are tested without Docker.
//!
//! - Resize: create instances up to the target; scale in by stopping the
//!   instances with the fewest busy slots (idle first, from the worker
//!   registry), outdated ones first.
//! - Rolling update (instances whose image is not the template's): proactive
//!   replacement within the update policy: at most `target + max_surge`
//!   instances at once, and at least `target - max_unavailable` of them
//!   available (running and ready) while outdated ones are stopped.

use serde::{Deserialize, Serialize};

/// How many instances a rolling update may add or take out at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// Instances created above the target size during an update.
    pub max_surge: u32,
    /// Instances below the target size that may be unavailable during an update.
    pub max_unavailable: u32,
}

impl Default for UpdatePolicy {
    /// One new instance at a time, never below the target (Compute Engine's
    /// default for a zonal group, too).
    fn default() -> Self {
        UpdatePolicy {
            max_surge: 1,
            max_unavailable: 0,
        }
    }
}

impl UpdatePolicy {
    /// A policy that can make progress.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_surge == 0 && self.max_unavailable == 0 {
            return Err(
                "max_surge and max_unavailable cannot both be 0: the update could never start"
                    .into(),
            );
        }
        Ok(())
    }
}

/// An instance as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct View<'a> {
    pub name: &'a str,
    pub image: &'a str,
    /// Still being created (cannot be stopped yet).
    pub creating: bool,
    /// Running and ready at the last check.
    pub available: bool,
    /// Busy slots per the worker registry (None: no live registry row).
    pub busy: Option<i32>,
    /// Creation order (higher = newer).
    pub seq: u64,
}

/// Why an instance is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    ScaleIn,
    RollingUpdate,
}

/// One step to take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create `count` instances from the template.
    Create { count: u32 },
    /// Stop (drain) and delete this instance.
    Stop { name: String, reason: StopReason },
}

/// Scale-in order: outdated first, then fewest busy slots, then newest.
fn scale_in_order<'a>(members: &[&'a View<'a>], template: &str) -> Vec<&'a View<'a>> {
    let mut v: Vec<&View> = members.iter().copied().filter(|i| !i.creating).collect();
    v.sort_by_key(|i| {
        (
            i.image == template,
            i.busy.unwrap_or(0),
            std::cmp::Reverse(i.seq),
        )
    });
    v
}

/// The actions that move `instances` (those not already leaving) toward
/// `target` instances of `template`.
pub fn plan(instances: &[View], target: u32, template: &str, policy: UpdatePolicy) -> Vec<Action> {
    let mut actions = Vec::new();
    let members: Vec<&View> = instances.iter().collect();
    let outdated = members.iter().filter(|i| i.image != template).count() as u32;
    let size = members.len() as u32;

    if outdated == 0 {
        if size < target {
            actions.push(Action::Create {
                count: target - size,
            });
        } else if size > target {
            for v in scale_in_order(&members, template)
                .into_iter()
                .take((size - target) as usize)
            {
                actions.push(Action::Stop {
                    name: v.name.to_string(),
                    reason: StopReason::ScaleIn,
                });
            }
        }
        return actions;
    }

    // Rolling update. First, never more than target + surge instances.
    let limit = target + policy.max_surge;
    let mut stopping: Vec<&str> = Vec::new();
    if size > limit {
        for v in scale_in_order(&members, template)
            .into_iter()
            .take((size - limit) as usize)
        {
            actions.push(Action::Stop {
                name: v.name.to_string(),
                reason: StopReason::ScaleIn,
            });
            stopping.push(v.name);
        }
    }
    let left: Vec<&View> = members
        .iter()
        .copied()
        .filter(|i| !stopping.contains(&i.name))
        .collect();

    // Replace outdated instances: unavailable ones freely (stopping them costs
    // no availability), available ones while enough others stay available.
    let available = left.iter().filter(|i| i.available).count() as u32;
    let mut budget = available.saturating_sub(target.saturating_sub(policy.max_unavailable));
    let mut candidates: Vec<&View> = scale_in_order(&left, template)
        .into_iter()
        .filter(|i| i.image != template)
        .collect();
    candidates.sort_by_key(|i| i.available);
    for v in candidates {
        if v.available {
            if budget == 0 {
                continue;
            }
            budget -= 1;
        }
        actions.push(Action::Stop {
            name: v.name.to_string(),
            reason: StopReason::RollingUpdate,
        });
        stopping.push(v.name);
    }

    // Then create new instances within the surge limit.
    let remaining = left.iter().filter(|i| !stopping.contains(&i.name)).count() as u32;
    let updated = left.iter().filter(|i| i.image == template).count() as u32;
    let room = limit.saturating_sub(remaining);
    let need = target.saturating_sub(updated);
    if room.min(need) > 0 {
        actions.push(Action::Create {
            count: room.min(need),
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(
        name: &'static str,
        image: &'static str,
        available: bool,
        busy: i32,
        seq: u64,
    ) -> View<'static> {
        View {
            name,
            image,
            creating: false,
            available,
            busy: Some(busy),
            seq,
        }
    }

    fn stops(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    fn creates(actions: &[Action]) -> u32 {
        actions
            .iter()
            .map(|a| {
                if let Action::Create { count } = a {
                    *count
                } else {
                    0
                }
            })
            .sum()
    }

    #[test]
    fn resizes_up_and_scales_in_idle_workers_first() {
        let p = UpdatePolicy::default();
        assert_eq!(plan(&[], 3, "v1", p), vec![Action::Create { count: 3 }]);
        let g = [
            inst("a", "v1", true, 2, 1),
            inst("b", "v1", true, 0, 2),
            inst("c", "v1", true, 1, 3),
        ];
        assert_eq!(plan(&g, 3, "v1", p), vec![]);
        assert_eq!(stops(&plan(&g, 2, "v1", p)), ["b"]);
        assert_eq!(stops(&plan(&g, 1, "v1", p)), ["b", "c"]);
        // An instance still being created is not stopped; unknown busy counts as idle.
        let mut g2 = g.to_vec();
        g2.push(View {
            name: "d",
            image: "v1",
            creating: true,
            available: false,
            busy: None,
            seq: 4,
        });
        g2.push(View {
            name: "e",
            image: "v1",
            creating: false,
            available: false,
            busy: None,
            seq: 5,
        });
        assert_eq!(stops(&plan(&g2, 3, "v1", p)), ["e", "b"]);
    }

    #[test]
    fn surge_one_unavailable_zero_adds_before_it_removes() {
        let p = UpdatePolicy {
            max_surge: 1,
            max_unavailable: 0,
        };
        let mut g = vec![
            inst("a", "v1", true, 1, 1),
            inst("b", "v1", true, 0, 2),
            inst("c", "v1", true, 1, 3),
        ];
        // Step 1: one new instance, nothing stopped.
        assert_eq!(plan(&g, 3, "v2", p), vec![Action::Create { count: 1 }]);
        g.push(View {
            name: "n1",
            image: "v2",
            creating: true,
            available: false,
            busy: None,
            seq: 4,
        });
        assert_eq!(plan(&g, 3, "v2", p), vec![]);
        // Step 2: once it is ready, the idle outdated one goes, and one more is created.
        g[3] = inst("n1", "v2", true, 0, 4);
        let a = plan(&g, 3, "v2", p);
        assert_eq!(stops(&a), ["b"]);
        assert_eq!(creates(&a), 1);
    }

    #[test]
    fn surge_zero_unavailable_one_removes_then_replaces() {
        let p = UpdatePolicy {
            max_surge: 0,
            max_unavailable: 1,
        };
        let g = vec![
            inst("a", "v1", true, 1, 1),
            inst("b", "v1", true, 1, 2),
            inst("c", "v1", true, 0, 3),
        ];
        let a = plan(&g, 3, "v2", p);
        assert_eq!(stops(&a), ["c"]);
        assert_eq!(creates(&a), 1);
        // While the replacement is not ready, nothing else goes.
        let g = vec![
            inst("a", "v1", true, 1, 1),
            inst("b", "v1", true, 1, 2),
            View {
                name: "n1",
                image: "v2",
                creating: false,
                available: false,
                busy: None,
                seq: 4,
            },
        ];
        assert_eq!(plan(&g, 3, "v2", p), vec![]);
    }

    #[test]
    fn outdated_unavailable_instances_are_replaced_without_waiting() {
        let p = UpdatePolicy {
            max_surge: 1,
            max_unavailable: 0,
        };
        let g = vec![inst("a", "v1", false, 0, 1), inst("b", "v1", true, 0, 2)];
        let a = plan(&g, 2, "v2", p);
        assert_eq!(stops(&a), ["a"]);
        assert_eq!(creates(&a), 2);
    }

    #[test]
    fn an_update_finishes_at_the_target_size() {
        // Simulate ticks where every new instance becomes available at once.
        for (surge, unavailable) in [(1, 0), (0, 1), (2, 1), (3, 0)] {
            let p = UpdatePolicy {
                max_surge: surge,
                max_unavailable: unavailable,
            };
            let mut g: Vec<View> = (0..4)
                .map(|i| inst(["a", "b", "c", "d"][i], "v1", true, 1, i as u64))
                .collect();
            let names = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"];
            let mut next = 0;
            for _ in 0..20 {
                let a = plan(&g, 4, "v2", p);
                let size = g.len() as u32;
                let available = g.iter().filter(|i| i.available).count() as u32;
                assert!(size <= 4 + surge, "{p:?}: {size} instances");
                let stopped_available = stops(&a)
                    .iter()
                    .filter(|n| g.iter().any(|i| i.name == **n && i.available))
                    .count() as u32;
                assert!(
                    available - stopped_available >= 4 - unavailable,
                    "{p:?}: availability"
                );
                g.retain(|i| !stops(&a).contains(&i.name));
                for _ in 0..creates(&a) {
                    g.push(inst(names[next], "v2", true, 0, 10 + next as u64));
                    next += 1;
                }
            }
            assert_eq!(g.len(), 4, "{p:?}");
            assert!(g.iter().all(|i| i.image == "v2"), "{p:?}");
        }
    }

    #[test]
    fn a_policy_that_cannot_progress_is_refused() {
        assert!(
            UpdatePolicy {
                max_surge: 0,
                max_unavailable: 0
            }
            .validate()
            .is_err()
        );
        assert!(UpdatePolicy::default().validate().is_ok());
    }
}
