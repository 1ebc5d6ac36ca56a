//! `drove bench` end to end on a small scale: every default workload runs
//! to completion and reports what it measured. No timing is asserted: CI
//! machines are too noisy for that; `drove bench` itself is the measurement.

mod common;

use std::process::Command;

use common::*;

#[test]
fn bench_runs_every_default_workload_to_completion() {
    let url = drove_queue::testing::test_url();
    // A schema of its own, created and dropped by the bench.
    let schema = format!("bench_smoke_{}", std::process::id());
    worker_bin(); // built by the workspace build, next to `drove`
    let out = Command::new(drove_bin())
        .args(["--database-url", &url, "--schema", &schema])
        .args(["bench", "--json", "--jobs", "3000", "--runs", "1"])
        .args(["--batch", "100,1000"])
        .args([
            "--single-jobs",
            "50",
            "--latency-jobs",
            "50",
            "--latency-rate",
            "100",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "drove bench failed:\n{stdout}\n{stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let figure = |workload: &str| {
        lines
            .iter()
            .find(|l| l["workload"] == workload && l.get("summary").is_none())
            .unwrap_or_else(|| panic!("no {workload} figure in:\n{stdout}"))
    };
    for (workload, jobs) in [
        ("drain", 3000),
        ("raw", 3000),
        ("enqueue", 3000),
        ("enqueue_one", 50),
        ("latency", 50),
    ] {
        let f = figure(workload);
        assert_eq!(f["jobs"], jobs, "{f}");
        for key in ["workers", "seconds", "jobs_per_s"] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
    }
    assert!(figure("latency").get("p99_ms").is_some());
    assert!(figure("latency").get("commit_floor_p50_ms").is_some());
    // Bulk enqueue on one connection and on two side by side.
    let enqueue_connections: Vec<i64> = lines
        .iter()
        .filter(|l| l["workload"] == "enqueue" && l.get("summary").is_none())
        .filter_map(|l| l["connections"].as_i64())
        .collect();
    assert_eq!(enqueue_connections, [1, 2], "{stdout}");
    assert!(
        figure("enqueue")["ratio_to_raw_copy"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{stdout}"
    );
    assert!(figure("enqueue_one").get("p50_ms").is_some());
    assert!(lines.iter().any(|l| l["workload"] == "environment"));
    // One raw figure per batch size, and drain's ratio to the best of them.
    let raw_batches: Vec<i64> = lines
        .iter()
        .filter(|l| l["workload"] == "raw" && l.get("summary").is_none())
        .filter_map(|l| l["batch"].as_i64())
        .collect();
    assert_eq!(raw_batches, [100, 1000], "{stdout}");
    let drain_summary = lines
        .iter()
        .find(|l| l["workload"] == "drain" && l.get("summary").is_some())
        .unwrap_or_else(|| panic!("no drain summary in:\n{stdout}"));
    let ratio = drain_summary["ratio_to_raw"].as_f64().unwrap_or(0.0);
    assert!(ratio > 0.0, "{drain_summary}");

    // The bench dropped the schema it created.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let left: bool = rt.block_on(async {
        let db = drove_queue::DbConfig::parse(&url).unwrap();
        let conn = drove_queue::Conn::connect(&db, &drove_queue::Schema::default())
            .await
            .unwrap();
        conn.client()
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await
            .unwrap()
            .get(0)
    });
    assert!(!left, "schema {schema} was left behind");
}

#[test]
fn bench_refuses_a_schema_with_jobs_it_did_not_create() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (t, conn) = rt.block_on(test_db());
    rt.block_on(drove_queue::jobs_enqueue(
        conn.client(),
        &t.schema,
        &drove_queue::NewJob::new("noop"),
    ))
    .unwrap();
    let out = Command::new(drove_bin())
        .args(["--database-url", &t.url, "--schema", t.schema.name()])
        .args(["bench", "drain", "--jobs", "10"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("did not create") && stderr.contains("--schema drove_bench"),
        "{stderr}"
    );
    // Untouched.
    assert_eq!(rt.block_on(totals(&conn)), (1, 0, 0, 0));
}
