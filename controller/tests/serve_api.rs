//! `drove serve`: the /v1 API end to end, its auth, its errors, its
//! OpenAPI document, health and metrics.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post(s: &ServeProc, path: &str, body: Value) -> (StatusCode, Value) {
    let r = api()
        .post(s.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(s: &ServeProc, path: &str) -> (StatusCode, Value) {
    let r = api()
        .get(s.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn put(s: &ServeProc, path: &str, body: Value) -> (StatusCode, Value) {
    let r = api()
        .put(s.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn api_enqueues_inspects_cancels_retries_and_configures_queues() {
    let (t, _conn) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &[]);
    s.ready(Duration::from_secs(15)).await;

    // Queue settings: create, read back, change.
    let (st, q) = put(&s, "/v1/queues/reports", json!({"max_attempts": 3, "backoff_base_ms": 500, "keep_succeeded": "3d", "max_running": 4})).await;
    assert_eq!(st, StatusCode::OK, "{q}");
    assert_eq!(
        (
            q["max_attempts"].as_i64(),
            q["max_running"].as_i64(),
            q["keep_succeeded_s"].as_f64()
        ),
        (Some(3), Some(4), Some(259200.0))
    );
    let (_, q) = put(&s, "/v1/queues/reports", json!({"max_running": null})).await;
    assert!(q["max_running"].is_null(), "null clears a limit: {q}");
    assert_eq!(q["max_attempts"], 3, "unchanged settings stay");

    // Enqueue with every option, then read it back.
    let job = json!({"queue": "reports", "kind": "render", "payload": {"report": 7}, "priority": -2,
                     "run_at": "2030-01-01T00:00:00Z", "max_attempts": 5, "backoff_base_ms": 100, "backoff_max_ms": 1000,
                     "timeout_ms": 60000, "unique_key": "r-7", "ordering_key": "customer-1"});
    let (st, created) = post(&s, "/v1/jobs", job).await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (st, j) = get(&s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(j["state"], "available");
    assert_eq!(j["payload"], json!({"report": 7}));
    assert_eq!(
        (j["priority"].as_i64(), j["max_attempts"].as_i64()),
        (Some(-2), Some(5))
    );
    assert_eq!(
        (j["unique_key"].as_str(), j["ordering_key"].as_str()),
        (Some("r-7"), Some("customer-1"))
    );
    assert!(j["run_at"].as_str().unwrap().starts_with("2030-01-01"));

    // Batch, list with filters and pagination.
    let jobs: Vec<Value> = (0..5)
        .map(|i| json!({"kind": "noop", "payload": {"i": i}}))
        .collect();
    let (st, b) = post(&s, "/v1/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(st, StatusCode::CREATED);
    let ids: Vec<i64> = b["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    let (_, page) = get(&s, "/v1/jobs?queue=default&limit=3").await;
    let listed: Vec<i64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[4], ids[3], ids[2]]);
    let next = page["next_before_id"].as_i64().unwrap();
    let (_, page2) = get(
        &s,
        &format!("/v1/jobs?queue=default&limit=3&before_id={next}"),
    )
    .await;
    assert_eq!(page2["jobs"].as_array().unwrap().len(), 2);
    let (_, by_state) = get(&s, "/v1/jobs?state=available&kind=render").await;
    assert_eq!(by_state["jobs"].as_array().unwrap().len(), 1);

    // Cancel a waiting job: cancelled at once; retry it: available again.
    let (st, c) = post(&s, &format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(
        (st, c["result"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (st, again) = post(&s, &format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{again}");
    let (st, _) = post(&s, &format!("/v1/jobs/{id}/retry"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        get(&s, &format!("/v1/jobs/{id}")).await.1["state"],
        "available"
    );

    // Pause and resume.
    let (st, q) = post(&s, "/v1/queues/reports/pause", json!({})).await;
    assert_eq!((st, q["paused"].as_bool()), (StatusCode::OK, Some(true)));
    let (_, q) = post(&s, "/v1/queues/reports/resume", json!({})).await;
    assert_eq!(q["paused"], false);
    let (_, all) = get(&s, "/v1/queues").await;
    let names: Vec<&str> = all["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["default", "reports"]);

    // A queue with jobs cannot be deleted; an empty one can.
    let r = api()
        .delete(s.url("/v1/queues/reports"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    put(&s, "/v1/queues/empty", json!({})).await;
    let r = api()
        .delete(s.url("/v1/queues/empty"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Cron schedules.
    let (st, c) = put(
        &s,
        "/v1/cron/nightly",
        json!({"schedule": "0 3 * * *", "timezone": "Europe/Paris", "kind": "noop"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert!(
        c["next_fire_at"].as_str().unwrap().ends_with(":00:00Z"),
        "{c}"
    );
    let (_, list) = get(&s, "/v1/cron").await;
    assert_eq!(list["schedules"][0]["name"], "nightly");
    let r = api()
        .delete(s.url("/v1/cron/nightly"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = api()
        .delete(s.url("/v1/cron/nightly"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_rejects_bad_requests_with_clear_json_errors_and_loses_nothing() {
    let (t, conn) = test_db().await;
    let s = ServeProc::spawn(
        &t.url,
        &t.schema,
        &["--max-body", "4096", "--max-batch-jobs", "5"],
    );
    s.ready(Duration::from_secs(15)).await;
    let client = api();

    // Auth.
    let r = client.get(s.url("/v1/stats")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = client
        .get(s.url("/v1/stats"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .post(s.url("/v1/jobs"))
        .json(&json!({"kind": "noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "enqueue needs the token too"
    );

    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str, &str)> = vec![
        (
            "malformed JSON",
            client
                .post(s.url("/v1/jobs"))
                .header("content-type", "application/json")
                .body("{\"kind\":"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "parse",
        ),
        (
            "unknown field",
            client
                .post(s.url("/v1/jobs"))
                .json(&json!({"kind": "noop", "colour": "red"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "unknown field `colour`",
        ),
        (
            "wrong type",
            client.post(s.url("/v1/jobs")).json(&json!({"kind": 5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "kind",
        ),
        (
            "not JSON",
            client
                .post(s.url("/v1/jobs"))
                .header("content-type", "text/plain")
                .body("kind=noop"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "bad queue name",
            client
                .post(s.url("/v1/jobs"))
                .json(&json!({"kind": "noop", "queue": "no spaces"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "invalid queue name",
        ),
        (
            "unknown queue",
            client
                .post(s.url("/v1/jobs"))
                .json(&json!({"kind": "noop", "queue": "nope"})),
            StatusCode::NOT_FOUND,
            "unknown_queue",
            "drove queues create nope",
        ),
        (
            "bad attempts",
            client
                .post(s.url("/v1/jobs"))
                .json(&json!({"kind": "noop", "max_attempts": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "max_attempts",
        ),
        (
            "body too large",
            client
                .post(s.url("/v1/jobs"))
                .json(&json!({"kind": "noop", "payload": "x".repeat(10_000)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "length limit",
        ),
        (
            "batch too big",
            client
                .post(s.url("/v1/jobs/batch"))
                .json(&json!({"jobs": vec![json!({"kind": "noop"}); 6]})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "at most 5",
        ),
        (
            "empty batch",
            client
                .post(s.url("/v1/jobs/batch"))
                .json(&json!({"jobs": []})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "empty",
        ),
        (
            "bad job id",
            client.get(s.url("/v1/jobs/abc")),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "abc",
        ),
        (
            "missing job",
            client.get(s.url("/v1/jobs/987654")),
            StatusCode::NOT_FOUND,
            "not_found",
            "job 987654 not found",
        ),
        (
            "bad state filter",
            client.get(s.url("/v1/jobs?state=finished")),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "state",
        ),
        (
            "bad queue setting",
            client
                .put(s.url("/v1/queues/q1"))
                .json(&json!({"max_attempts": -1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "max_attempts",
        ),
        (
            "bad retention",
            client
                .put(s.url("/v1/queues/q2"))
                .json(&json!({"keep_dead": "forever"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "forever",
        ),
        (
            "bad cron",
            client
                .put(s.url("/v1/cron/x"))
                .json(&json!({"schedule": "every day", "kind": "noop"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "crontab",
        ),
        (
            "bad time zone",
            client
                .put(s.url("/v1/cron/x"))
                .json(&json!({"schedule": "* * * * *", "timezone": "Moon/Base", "kind": "noop"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Moon/Base",
        ),
        (
            "unknown route",
            client.get(s.url("/v1/frobnicate")),
            StatusCode::NOT_FOUND,
            "not_found",
            "openapi",
        ),
    ];
    for (what, req, status, code, says) in cases {
        let r = req.bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(says),
            "{what}: {msg:?} should mention {says:?}"
        );
        assert!(
            !msg.contains("postgres://") && !msg.contains("SELECT"),
            "{what}: leaks internals: {msg}"
        );
    }
    assert_eq!(
        totals(&conn).await,
        (0, 0, 0, 0),
        "no bad request enqueued anything"
    );
    assert_eq!(
        http_get(s.port, "/healthz").map(|r| r.0),
        Some(200),
        "the server is unharmed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_describes_every_route_the_server_has() {
    let (t, _conn) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &[]);
    s.ready(Duration::from_secs(15)).await;
    let r = api().get(s.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the document is public");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = s.url(&format!(
                "/v1{}",
                path.replace("{id}", "1").replace("{name}", "default")
            ));
            let req = match method.as_str() {
                "get" => api().get(&url),
                "post" => api().post(&url).json(&json!({})),
                "put" => api().put(&url).json(&json!({})),
                "delete" => api().delete(&url),
                m => panic!("unexpected method {m}"),
            };
            let resp = req.bearer_auth(TOKEN).send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
            assert!(
                !(status == StatusCode::NOT_FOUND
                    && body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no such endpoint"))),
                "{method} {path} is documented but not routed"
            );
            let documented: Vec<&String> = ops[method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            assert!(
                documented.iter().any(|c| c.as_str() == status.as_str()),
                "{method} {path} answered {status}, documented {documented:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 19, "checked {checked} operations");
}

/// The enqueue counter counts a producer transaction that commits after a
/// later one was already visible (it counted ids up to the highest seen,
/// and so skipped the earlier id for good).
#[tokio::test(flavor = "multi_thread")]
async fn the_enqueue_counter_counts_transactions_that_commit_out_of_order() {
    let (t, mut slow) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &["--stats-interval", "200ms"]);
    s.ready(Duration::from_secs(15)).await;
    let fast = t.conn().await;
    // Counting starts at the highest id its first pass sees: let it pass.
    wait_until(Duration::from_secs(10), "a stats pass", || async {
        let ok = s.metric("drove_loop_runs_total{loop=\"stats\"}")
            - s.metric("drove_loop_errors_total{loop=\"stats\"}");
        (ok >= 1.0).then_some(())
    })
    .await;
    let counted = || {
        let (status, body) = http_get(s.port, "/metrics").expect("a scrape");
        assert_eq!(status, 200);
        metric_value(&body, "drove_jobs_enqueued_total{queue=\"default\"}")
    };
    let tx = slow.client_mut().transaction().await.unwrap();
    let first = drove_queue::jobs_enqueue(&tx, &t.schema, &drove_queue::NewJob::new("noop"))
        .await
        .unwrap();
    let second =
        drove_queue::jobs_enqueue(fast.client(), &t.schema, &drove_queue::NewJob::new("noop"))
            .await
            .unwrap();
    assert!(first < second);
    // Several refreshes see the second job while the first is uncommitted.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tx.commit().await.unwrap();
    wait_until(Duration::from_secs(10), "both jobs counted", || async {
        (counted() == 2.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(counted(), 2.0, "counted once each");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_queues_fleet_and_finished_jobs() {
    let (t, conn) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &["--stats-interval", "200ms"]);
    s.ready(Duration::from_secs(15)).await;
    let w = WorkerProc::spawn(&t.url, &t.schema, &["--slots", "3"]);
    w.ready(Duration::from_secs(10)).await;
    let jobs: Vec<drove_queue::NewJob> = (0..20)
        .map(|_| {
            drove_queue::NewJob::new("sleep")
                .with_payload(&json!({"ms": 30}))
                .unwrap()
        })
        .chain([drove_queue::NewJob::new("nope").with_max_attempts(1)])
        .chain([drove_queue::NewJob::new("noop").with_delay(Duration::from_secs(3600))])
        .collect();
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "metrics show the finished jobs",
        || async {
            let ok = s.metric("drove_jobs_finished_total{queue=\"default\",state=\"succeeded\"}")
                == 20.0
                && s.metric("drove_jobs_finished_total{queue=\"default\",state=\"dead\"}") == 1.0;
            ok.then_some(())
        },
    )
    .await;
    let (_, body) = http_get(s.port, "/metrics").unwrap();
    let v = |sample: &str| metric_value(&body, sample);
    assert_eq!(v("drove_jobs_enqueued_total{queue=\"default\"}"), 22.0);
    assert_eq!(
        v("drove_queue_jobs{queue=\"default\",state=\"scheduled\"}"),
        1.0
    );
    assert_eq!(v("drove_queue_jobs{queue=\"default\",state=\"dead\"}"), 1.0);
    assert_eq!(
        v("drove_queue_jobs{queue=\"default\",state=\"available\"}"),
        0.0
    );
    assert_eq!(
        (v("drove_workers"), v("drove_worker_slots_total")),
        (1.0, 3.0)
    );
    assert_eq!(
        v("drove_job_run_duration_seconds_count{queue=\"default\"}"),
        21.0
    );
    assert!(v("drove_job_run_duration_seconds_bucket{queue=\"default\",le=\"0.1\"}") >= 20.0);
    assert_eq!(v("drove_controller_leader"), 1.0);
    // Naming conventions: drove_ prefix, counters end in _total, base units.
    for line in body.lines().filter(|l| l.starts_with("# TYPE")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (name, kind) = (parts[2], parts[3]);
        assert!(name.starts_with("drove_"), "{name}");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
        assert!(
            !name.contains("_ms") && !name.contains("milli"),
            "{name} should use base units"
        );
    }
    assert!(
        !body.contains("job_id") && !body.contains("/v1/jobs/1\""),
        "no high-cardinality labels"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_an_unmigrated_schema_unless_asked_to_migrate() {
    let (t, _conn) = test_db().await;
    let fresh = drove_queue::Schema::new(&format!("{}_fresh", t.schema.name())).unwrap();
    let mut s = ServeProc::spawn(&t.url, &fresh, &[]);
    let status = s.wait_exit(Duration::from_secs(20)).await.expect("exits");
    assert!(!status.success());
    assert!(s.log_text().contains("drove migrate"), "{}", s.log_text());
    let s = ServeProc::spawn(&t.url, &fresh, &["--migrate-on-start"]);
    s.ready(Duration::from_secs(20)).await;
    drop(s);
    let c = t.conn().await;
    c.client()
        .batch_execute(&fresh.sql("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

/// The leader's vacuumer vacuums `jobs` once the workers have left enough
/// dead rows (thresholds lowered for the test), and counts it.
#[tokio::test(flavor = "multi_thread")]
async fn vacuumer_vacuums_jobs_past_its_threshold() {
    let (t, conn) = test_db().await;
    let s = ServeProc::spawn(
        &t.url,
        &t.schema,
        &[
            "--vacuum-interval",
            "200ms",
            "--vacuum-min-dead",
            "1000",
            "--vacuum-dead-fraction",
            "0",
        ],
    );
    s.ready(Duration::from_secs(15)).await;
    let w = WorkerProc::spawn(&t.url, &t.schema, &[]);
    w.ready(Duration::from_secs(10)).await;
    let jobs: Vec<drove_queue::NewJob> = (0..3000)
        .map(|_| drove_queue::NewJob::new("noop"))
        .collect();
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "a vacuum of jobs", || async {
        (s.metric("drove_vacuums_total{table=\"jobs\"}") >= 1.0).then_some(())
    })
    .await;
    let vacuums: i64 = conn
        .client()
        .query_one(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'jobs'",
            &[&t.schema.name()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(vacuums >= 1, "PostgreSQL saw {vacuums} vacuums of jobs");
    assert_eq!(totals(&conn).await.1, 3000, "every job succeeded");
}
