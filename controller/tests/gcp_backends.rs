//! The GCP scaling backends against a local fake of the few Google API
//! endpoints they use, reached through the official clients' endpoint
//! setting. Asserts the exact requests: project, zone/region, group, size,
//! metric type, labels, value.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::*;
use drove_controller::scaling::backend::{Backend, Decision};
use drove_controller::scaling::gcp::{GcpConn, install_crypto_provider};
use drove_controller::scaling::gcp_metric::{GcpMetricBackend, MetricConfig};
use drove_controller::scaling::gcp_mig::{GcpMigBackend, Location, MigConfig};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    target_size: Arc<Mutex<i64>>,
    /// When set, every request fails with this status.
    fail: Arc<Mutex<Option<u16>>>,
}

impl Fake {
    async fn start() -> (Fake, String) {
        let fake = Fake::default();
        let app = Router::new().fallback(handle).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, format!("http://{addr}"))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

async fn handle(State(f): State<Fake>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    f.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body,
    });
    if let Some(code) = *f.fail.lock().unwrap() {
        let status = StatusCode::from_u16(code).unwrap();
        return (
            status,
            axum::Json(json!({"error": {"code": code, "message": "fake failure"}})),
        )
            .into_response();
    }
    if path.ends_with("/timeSeries") {
        return axum::Json(json!({})).into_response();
    }
    if path.ends_with("/listManagedInstances") {
        let n = *f.target_size.lock().unwrap();
        let instances: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("vm-{i}"), "instanceStatus": "RUNNING", "currentAction": "NONE", "id": format!("{}", 100 + i)}))
            .collect();
        return axum::Json(json!({ "managedInstances": instances })).into_response();
    }
    if path.ends_with("/resize") {
        let size = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("size="))
            .and_then(|v| v.parse().ok())
            .expect("resize carries ?size=N");
        *f.target_size.lock().unwrap() = size;
        return axum::Json(json!({"kind": "compute#operation", "name": "op-1", "status": "DONE"}))
            .into_response();
    }
    if path.contains("/instanceGroupManagers/") {
        let n = *f.target_size.lock().unwrap();
        return axum::Json(json!({"name": path.rsplit('/').next(), "targetSize": n}))
            .into_response();
    }
    (StatusCode::NOT_FOUND, "unexpected path").into_response()
}

fn decision(desired: u32, backlog: i64, running: i64) -> Decision {
    Decision {
        desired,
        live: 0,
        busy: 0,
        backlog,
        running,
        work: (backlog + running) as f64,
        workers: vec![],
    }
}

fn conn(endpoint: &str) -> GcpConn {
    GcpConn {
        endpoint: Some(endpoint.to_string()),
        anonymous: true,
    }
}

#[tokio::test]
async fn metric_backend_writes_the_per_group_gauge_the_autoscaler_targets() {
    install_crypto_provider();
    let (fake, endpoint) = Fake::start().await;
    let config = MetricConfig {
        project: "my-proj".into(),
        group: "drove-workers".into(),
        metric_type: "custom.googleapis.com/drove/queue_backlog".into(),
        interval: Duration::from_secs(10),
    };
    let backend = GcpMetricBackend::new(config.clone(), &conn(&endpoint))
        .await
        .unwrap();
    backend.apply(&decision(3, 5, 2)).await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let r = &seen[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v3/projects/my-proj/timeSeries")
    );
    let ts = &r.body["timeSeries"][0];
    assert_eq!(
        ts["metric"]["type"],
        "custom.googleapis.com/drove/queue_backlog"
    );
    assert_eq!(ts["metric"]["labels"], json!({"group": "drove-workers"}));
    assert_eq!(ts["resource"]["type"], "global");
    assert_eq!(ts["resource"]["labels"], json!({"project_id": "my-proj"}));
    assert_eq!(
        (ts["metricKind"].as_i64(), ts["valueType"].as_i64()),
        (Some(1), Some(3)),
        "GAUGE, DOUBLE"
    );
    assert_eq!(
        ts["points"][0]["value"]["doubleValue"], 7.0,
        "work = due + running"
    );
    assert!(
        ts["points"][0]["interval"]["endTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // Within the interval nothing more is written (Cloud Monitoring allows a
    // point per series every few seconds at most).
    backend.apply(&decision(4, 9, 2)).await.unwrap();
    assert_eq!(fake.seen().len(), 1);

    // Failures are errors, 5xx worth retrying, 403 not.
    let backend = GcpMetricBackend::new(config.clone(), &conn(&endpoint))
        .await
        .unwrap();
    *fake.fail.lock().unwrap() = Some(503);
    let e = backend.apply(&decision(1, 1, 0)).await.unwrap_err();
    assert!(e.transient && e.message.contains("503"), "{e}");
    *fake.fail.lock().unwrap() = Some(403);
    let e = backend.apply(&decision(1, 1, 0)).await.unwrap_err();
    assert!(!e.transient && e.message.contains("403"), "{e}");

    let too_often = MetricConfig {
        interval: Duration::from_secs(2),
        ..config
    };
    assert!(
        GcpMetricBackend::new(too_often, &conn(&endpoint))
            .await
            .is_err(),
        "interval below 10 s is refused"
    );
}

#[tokio::test]
async fn mig_backend_reads_lists_and_resizes_zonal_and_regional_groups() {
    install_crypto_provider();
    for (location, prefix) in [
        (
            Location::Zone("europe-west1-b".into()),
            "/compute/v1/projects/p1/zones/europe-west1-b",
        ),
        (
            Location::Region("europe-west1".into()),
            "/compute/v1/projects/p1/regions/europe-west1",
        ),
    ] {
        let (fake, endpoint) = Fake::start().await;
        *fake.target_size.lock().unwrap() = 2;
        let config = MigConfig {
            project: "p1".into(),
            location: location.clone(),
            group: "workers".into(),
        };
        let backend = GcpMigBackend::new(config, &conn(&endpoint)).await.unwrap();
        let applied = backend.apply(&decision(5, 9, 0)).await.unwrap();
        assert_eq!(applied.size, Some(5));
        assert!(applied.action.unwrap().contains("from 2 to 5"));
        let seen = fake.seen();
        let group = format!("{prefix}/instanceGroupManagers/workers");
        let calls: Vec<(String, String)> = seen
            .iter()
            .map(|s| (s.method.clone(), s.path.clone()))
            .collect();
        assert_eq!(
            calls,
            vec![
                ("GET".to_string(), group.clone()),
                ("POST".to_string(), format!("{group}/listManagedInstances")),
                ("POST".to_string(), format!("{group}/resize")),
            ],
            "{location:?}"
        );
        assert!(
            seen[2].query.split('&').any(|kv| kv == "size=5"),
            "{}",
            seen[2].query
        );

        // Already at the desired size: no resize.
        fake.clear();
        let applied = backend.apply(&decision(5, 9, 0)).await.unwrap();
        assert_eq!((applied.size, applied.action), (Some(5), None));
        assert!(fake.seen().iter().all(|s| !s.path.ends_with("/resize")));
        let size = backend.size().await.unwrap();
        assert_eq!((size.target, size.running, size.instances), (5, 5, 5));
    }
}

/// End to end: jobs appear, and within seconds the controller resizes the
/// group through the Compute API (the scaling reaction time).
#[tokio::test(flavor = "multi_thread")]
async fn controller_resizes_the_group_seconds_after_a_backlog_appears() {
    let (fake, endpoint) = Fake::start().await;
    let (t, conn) = test_db().await;
    let s = ServeProc::spawn(
        &t.url,
        &t.schema,
        &[
            "--scaler",
            "gcp-mig",
            "--gcp-project",
            "p1",
            "--gcp-zone",
            "us-central1-a",
            "--gcp-mig",
            "workers",
            "--gcp-endpoint",
            &endpoint,
            "--gcp-anonymous",
            "--max-workers",
            "6",
            "--target-backlog",
            "1",
        ],
    );
    s.ready(Duration::from_secs(15)).await;
    let jobs: Vec<drove_queue::NewJob> = (0..4).map(|_| drove_queue::NewJob::new("noop")).collect();
    let enqueued = Instant::now();
    drove_queue::jobs_enqueue_many(conn.client(), &t.schema, &jobs)
        .await
        .unwrap();
    wait_until(Duration::from_secs(15), "a resize to 4", || async {
        fake.seen()
            .iter()
            .any(|r| r.path.ends_with("/workers/resize") && r.query.contains("size=4"))
            .then_some(())
    })
    .await;
    let reaction = enqueued.elapsed();
    println!("FIGURE backlog_to_resize_s={:.2}", reaction.as_secs_f64());
    assert_eq!(s.metric("drove_scaling_desired_workers"), 4.0);
    assert_eq!(*fake.target_size.lock().unwrap(), 4);
    let stats = s.stats().await;
    assert_eq!(stats["scaling"]["backend"], "gcp-mig");
    assert_eq!(stats["scaling"]["decision"]["desired"], 4);
}
