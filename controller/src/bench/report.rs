//! Figures and how they are shown: a human table on stdout (progress on
//! stderr), or with `--json` one JSON object per line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::table::render;

/// One measurement of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub workload: &'static str,
    /// Worker flags of this measurement ("" = defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_args: Option<String>,
    /// What else tells this measurement apart from others of its workload
    /// (raw's batch size); part of the label, not of the JSON line.
    #[serde(skip)]
    pub variant: Option<String>,
    pub run: usize,
    pub jobs: u64,
    pub workers: usize,
    pub seconds: f64,
    pub jobs_per_s: f64,
    /// Workload-specific figures (latency percentiles in ms, sizes, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Figure {
    pub fn new(
        workload: &'static str,
        run: usize,
        jobs: u64,
        workers: usize,
        elapsed: f64,
    ) -> Figure {
        Figure {
            workload,
            worker_args: None,
            variant: None,
            run,
            jobs,
            workers,
            seconds: round(elapsed, 4),
            jobs_per_s: if elapsed > 0.0 {
                round(jobs as f64 / elapsed, 0)
            } else {
                0.0
            },
            extra: Map::new(),
        }
    }

    /// Adds a workload-specific figure.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Figure {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// Adds a float figure, rounded to 3 decimals; `None` is left out.
    pub fn with_f(self, key: &str, value: Option<f64>) -> Figure {
        match value {
            Some(v) => self.with(key, round(v, 3)),
            None => self,
        }
    }

    /// The row label: workload plus the worker flags, if any.
    pub fn label(&self) -> String {
        if let Some(v) = &self.variant {
            return format!("{} ({v})", self.workload);
        }
        match self.worker_args.as_deref() {
            None => self.workload.to_string(),
            Some("") => format!("{} (defaults)", self.workload),
            Some(a) => format!("{} ({a})", self.workload),
        }
    }
}

pub fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    crate::cli::follow::percentile(values, q)
}

/// Median of unsorted values.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Collects figures, prints each as it comes (JSON) or all as a table at
/// the end, then a summary of medians and ratios.
pub struct Report {
    json: bool,
    figures: Vec<Figure>,
}

impl Report {
    pub fn new(json: bool) -> Report {
        Report {
            json,
            figures: Vec::new(),
        }
    }

    /// The machine and database settings the figures were measured on.
    pub fn environment(&self, env: &Map<String, Value>) {
        if self.json {
            let mut line = Map::new();
            line.insert("workload".into(), "environment".into());
            line.extend(env.clone());
            println!("{}", Value::Object(line));
        } else {
            for (k, v) in env {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("{k:>22}: {v}");
            }
            println!();
        }
    }

    /// Records a figure (printed at once with `--json`, or a short line on a terminal).
    pub fn add(&mut self, f: Figure) {
        if self.json {
            println!("{}", serde_json::to_string(&f).expect("figures serialize"));
        } else if std::io::stderr().is_terminal() {
            eprintln!(
                "  {} run {}: {:.0} jobs/s in {:.3}s",
                f.label(),
                f.run,
                f.jobs_per_s,
                f.seconds
            );
        }
        self.figures.push(f);
    }

    pub fn figures(&self) -> &[Figure] {
        &self.figures
    }

    /// Prints every figure as a table (human output), then the summary.
    pub fn finish(&self) {
        let summary = self.summary();
        if self.json {
            for s in &summary {
                println!("{}", Value::Object(s.clone()));
            }
            return;
        }
        let rows: Vec<Vec<String>> = self
            .figures
            .iter()
            .map(|f| {
                vec![
                    f.label(),
                    f.run.to_string(),
                    f.jobs.to_string(),
                    f.workers.to_string(),
                    format!("{:.3}", f.seconds),
                    format!("{:.0}", f.jobs_per_s),
                    details(&f.extra),
                ]
            })
            .collect();
        print!(
            "{}",
            render(
                &[
                    "WORKLOAD", ">RUN", ">JOBS", ">WORKERS", ">SECONDS", ">JOBS/S", "DETAILS"
                ],
                &rows
            )
        );
        if summary.is_empty() {
            return;
        }
        println!();
        let rows: Vec<Vec<String>> = summary
            .iter()
            .map(|s| {
                let get = |k: &str| s.get(k).map(short).unwrap_or_default();
                let rest: Map<String, Value> = s
                    .iter()
                    .filter(|(k, _)| {
                        ![
                            "workload",
                            "label",
                            "runs",
                            "jobs_per_s",
                            "min_jobs_per_s",
                            "max_jobs_per_s",
                            "summary",
                        ]
                        .contains(&k.as_str())
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let rate = s
                    .get("max_jobs_per_s")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let (median, range) = if rate > 0.0 {
                    (
                        get("jobs_per_s"),
                        format!("{}-{}", get("min_jobs_per_s"), get("max_jobs_per_s")),
                    )
                } else {
                    ("-".to_string(), "-".to_string())
                };
                vec![get("label"), get("runs"), median, range, details(&rest)]
            })
            .collect();
        print!(
            "{}",
            render(
                &[
                    "SUMMARY (medians)",
                    ">RUNS",
                    ">JOBS/S",
                    ">RANGE",
                    "RATIOS AND DETAILS"
                ],
                &rows
            )
        );
    }

    /// Per workload and flags: median throughput and spread; medians of
    /// the numeric extras; drain's ratio to raw (paired by run), and
    /// defaults' ratio to the best configuration.
    pub fn summary(&self) -> Vec<Map<String, Value>> {
        let mut groups: BTreeMap<String, Vec<&Figure>> = BTreeMap::new();
        let mut order = Vec::new();
        for f in &self.figures {
            let label = f.label();
            if !groups.contains_key(&label) {
                order.push(label.clone());
            }
            groups.entry(label).or_default().push(f);
        }
        // The bare-SQL limit of each run: the best raw batch size measured in it.
        let mut raw_by_run: BTreeMap<usize, f64> = BTreeMap::new();
        for f in self.figures.iter().filter(|f| f.workload == "raw") {
            let best = raw_by_run.entry(f.run).or_insert(0.0);
            *best = best.max(f.jobs_per_s);
        }
        let mut best_drain: Option<(String, f64)> = None;
        let mut out = Vec::new();
        for label in order {
            let figs = &groups[&label];
            let first = figs[0];
            let mut rates: Vec<f64> = figs.iter().map(|f| f.jobs_per_s).collect();
            let med = median(&mut rates).unwrap_or(0.0);
            let mut s = Map::new();
            s.insert("workload".into(), first.workload.into());
            s.insert("summary".into(), true.into());
            s.insert("label".into(), label.clone().into());
            if let Some(a) = &first.worker_args {
                s.insert("worker_args".into(), a.clone().into());
            }
            s.insert("runs".into(), figs.len().into());
            s.insert("jobs_per_s".into(), round(med, 0).into());
            s.insert("min_jobs_per_s".into(), round(rates[0], 0).into());
            s.insert(
                "max_jobs_per_s".into(),
                round(rates[rates.len() - 1], 0).into(),
            );
            // Medians of numeric extras (latencies, sizes).
            let keys: Vec<String> = first.extra.keys().cloned().collect();
            for k in keys {
                let mut vals: Vec<f64> = figs
                    .iter()
                    .filter_map(|f| f.extra.get(&k).and_then(Value::as_f64))
                    .collect();
                if vals.len() == figs.len()
                    && let Some(m) = median(&mut vals)
                {
                    s.insert(k, round(m, 3).into());
                }
            }
            if first.workload == "drain" && !raw_by_run.is_empty() {
                let mut ratios: Vec<f64> = figs
                    .iter()
                    .filter_map(|f| raw_by_run.get(&f.run).map(|r| f.jobs_per_s / r))
                    .collect();
                if let Some(r) = median(&mut ratios) {
                    s.insert("ratio_to_raw".into(), round(r, 3).into());
                }
            }
            if first.workload == "drain" && best_drain.as_ref().is_none_or(|b| med > b.1) {
                best_drain = Some((label.clone(), med));
            }
            out.push(s);
        }
        // Defaults against the best configuration measured.
        let configs = out
            .iter()
            .filter(|s| s.get("workload").and_then(Value::as_str) == Some("drain"))
            .count();
        if configs > 1
            && let Some((best_label, best)) = best_drain
            && let Some(s) = out
                .iter_mut()
                .find(|s| s.get("worker_args").and_then(Value::as_str) == Some(""))
            && let Some(def) = s.get("jobs_per_s").and_then(Value::as_f64)
            && best > 0.0
        {
            s.insert("ratio_to_best".into(), round(def / best, 3).into());
            s.insert("best".into(), best_label.into());
        }
        out
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn details(extra: &Map<String, Value>) -> String {
    extra
        .iter()
        .map(|(k, v)| format!("{k}={}", short(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix:>14} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
