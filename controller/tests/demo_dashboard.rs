//! The dashboard's HTTP surface (the browser test in
//! scripts/test-dashboard.sh drives the page itself): sign-in by link, form
//! and cookie; no data without the token; cookie flags; the CSRF guard on
//! cookie-authenticated writes; the chart's `/v1/history?since=`.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn cookie() -> String {
    format!("drove_token={TOKEN}")
}

async fn text(r: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_needs_the_token_and_signs_in_by_link_form_or_cookie() {
    let (t, _conn) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &[]);
    s.ready(Duration::from_secs(15)).await;
    let c = client();

    // No token, a wrong one, a stale cookie: the login page, 401, no data.
    for (what, req) in [
        ("no token", c.get(s.url("/"))),
        ("wrong link", c.get(s.url("/?token=wrong-token-0123456789"))),
        (
            "wrong cookie",
            c.get(s.url("/")).header(COOKIE, "drove_token=nope"),
        ),
        (
            "wrong form",
            c.post(s.url("/login"))
                .form(&[("token", "wrong-token-0123456789")]),
        ),
    ] {
        let (status, headers, body) = text(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(body.contains("name=\"token\""), "{what}: the login form");
        assert!(
            !body.contains("/assets/app.js") && !body.contains("id=\"queues\""),
            "{what}: no dashboard"
        );
        assert!(
            headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        if what != "no token" {
            assert!(
                body.contains("wrong") || body.contains("no longer"),
                "{what}: {body}"
            );
        }
    }

    // The link and the form set an HttpOnly, SameSite=Strict cookie and
    // redirect to / (the token leaves the address bar).
    for (what, req) in [
        ("link", c.get(s.url(&format!("/?token={TOKEN}")))),
        ("form", c.post(s.url("/login")).form(&[("token", TOKEN)])),
    ] {
        let (status, headers, _) = text(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{what}");
        assert_eq!(headers[LOCATION], "/", "{what}");
        let set = headers[SET_COOKIE].to_str().unwrap();
        assert!(set.starts_with(&format!("{}; ", cookie())), "{what}: {set}");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{what}: {set}"
        );
        assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");
    }
    // Behind a TLS proxy the cookie is Secure.
    let r = c
        .get(s.url(&format!("/?token={TOKEN}")))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );

    // With the cookie: the page, which loads only this origin's assets.
    let (status, headers, body) = text(
        c.get(s.url("/"))
            .header(COOKIE, cookie())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("/assets/app.js") && body.contains("id=\"queues\""));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    for (path, kind) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            r.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }

    // Logout clears the cookie.
    let r = c.post(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cookie_writes_need_a_json_content_type_and_bearer_clients_are_unaffected() {
    let (t, _conn) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &[]);
    s.ready(Duration::from_secs(15)).await;
    let c = client();
    let paused = |v: &Value| v["paused"].as_bool();

    // A form-style POST carrying the cookie (what another site's form
    // would send if the browser attached the cookie): refused, no change.
    let r = c
        .post(s.url("/v1/queues/default/pause"))
        .header(COOKIE, cookie())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf");
    let q: Value = c
        .get(s.url("/v1/queues/default"))
        .header(COOKIE, cookie())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        paused(&q),
        Some(false),
        "reads by cookie work; nothing paused"
    );

    // The dashboard's way: JSON content type with the cookie.
    let r = c
        .post(s.url("/v1/queues/default/pause"))
        .header(COOKIE, cookie())
        .header(CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(paused(&r.json().await.unwrap()), Some(true));

    // API clients with a bearer token need no content type.
    let r = c
        .post(s.url("/v1/queues/default/resume"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(paused(&r.json().await.unwrap()), Some(false));
}

#[tokio::test(flavor = "multi_thread")]
async fn history_since_returns_only_newer_points() {
    let (t, _conn) = test_db().await;
    let s = ServeProc::spawn(&t.url, &t.schema, &["--stats-interval", "100ms"]);
    s.ready(Duration::from_secs(15)).await;
    let c = client();
    let get = |path: String| {
        let c = c.clone();
        let url = s.url(&path);
        async move {
            let r = c.get(url).bearer_auth(TOKEN).send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let points = wait_until(Duration::from_secs(20), "three history points", || async {
        let (_, v) = get("/v1/history".into()).await;
        let p = v["points"].as_array().cloned().unwrap_or_default();
        (p.len() >= 3).then_some(p)
    })
    .await;
    for key in ["at", "available", "scheduled", "running", "workers", "busy"] {
        assert!(
            points[0].get(key).is_some(),
            "point has {key}: {}",
            points[0]
        );
    }
    let second = points[1]["at"].as_str().unwrap().to_string();
    let (status, v) = get(format!("/v1/history?since={}", second.replace('+', "%2B"))).await;
    assert_eq!(status, StatusCode::OK);
    let newer = v["points"].as_array().unwrap();
    assert!(!newer.is_empty());
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let since = at(&points[1]["at"]);
    assert!(
        newer.iter().all(|p| at(&p["at"]) > since),
        "only points after {second}"
    );
    let (status, v) = get("/v1/history?since=yesterday".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}
