//! The HTTP edge (`[server]`): JSON-only bodies, Host and Origin checks,
//! CORS, and connections that send too little, too slowly or nothing at
//! all being closed while other clients are still served.
//!
//! Timing: nothing here asserts how fast something happens, only that it
//! happens within a generous bound ([`GENEROUS`]), or, for the connection
//! limit, that a request parked behind the limit gets no answer for a
//! second while one that is not parked would get it in milliseconds.

use std::time::Duration;

use qroute_gateway::config::Config;
use qroute_gateway::{http as server, Gateway};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{error_type, start};

const MODELS: &[(&str, &str, f64)] = &[("cheap-mock", "openai", 0.1), ("dear-mock", "openai", 20.0)];

/// How long a test waits for the server to close a connection.
const GENEROUS: Duration = Duration::from_secs(10);

async fn post_with(
    t: &crate::harness::TestGateway,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut r = t.http.post(format!("{}{path}", t.url)).body(body.to_string());
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_json() {
    let t = start(MODELS, "").await;
    let prompt = r#"{"prompt": "hello"}"#;
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (s, b) = post_with(&t, "/v1/execute", ct, prompt).await;
        assert_eq!((s, error_type(&b)), (415, "unsupported_media_type"), "{ct:?}: {b}");
        let (s, b) = post_with(&t, "/v1/chat/completions", ct, r#"{"model": "auto", "messages": []}"#).await;
        assert_eq!(s, 415, "{ct:?}: {b}");
        let (s, b) = post_with(&t, "/v1/feedback", ct, r#"{"request_id": "x", "quality": 1}"#).await;
        assert_eq!(s, 415, "{ct:?}: {b}");
    }
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.qroute+json",
    ] {
        let (s, b) = post_with(&t, "/v1/execute", Some(ct), prompt).await;
        assert_eq!(s, 200, "{ct}: {b}");
    }

    // An experiment cannot be started from a form either…
    let spec = json!({"id": "e1", "unit": "user",
                      "arms": [{"name": "a", "strategy": {"kind": "fixed", "model": "cheap-mock"}}]});
    let (s, _) = post_with(&t, "/v1/experiments", Some("text/plain"), &spec.to_string()).await;
    assert_eq!(s, 415);
    assert_eq!(t.get("/v1/experiments/e1").await.status(), 404, "nothing was created");
    let (s, b) = t.post("/v1/experiments", &spec).await;
    assert_eq!(s, 201, "{b}");
    // …while endpoints that take no body need no content type.
    let r = t
        .http
        .post(format!("{}/v1/experiments/e1/stop", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = t
        .http
        .post(format!("{}/v1/experiments/none/stop", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_hosts_are_served() {
    let t = start(
        MODELS,
        "[server]\nallowed_hosts = [\"gateway.internal\", \"localhost\"]\n",
    )
    .await;
    // reqwest sends `Host: 127.0.0.1:PORT`, which is not listed.
    let r = t.get("/v1/health").await;
    assert_eq!(r.status(), 421);
    assert_eq!(error_type(&r.json().await.unwrap()), "host_not_allowed");
    let (s, b) = t.post("/v1/execute", &json!({"prompt": "hi"})).await;
    assert_eq!((s, error_type(&b)), (421, "host_not_allowed"));
    for host in ["gateway.internal:8080", "GATEWAY.internal", "localhost:1"] {
        let r = t
            .http
            .get(format!("{}/v1/health", t.url))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    let r = t
        .http
        .get(format!("{}/v1/health", t.url))
        .header("host", "rebound.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);

    // Unset, any Host is served.
    let open = start(MODELS, "").await;
    let r = open
        .http
        .get(format!("{}/v1/health", open.url))
        .header("host", "anything.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn preflight(t: &crate::harness::TestGateway, origin: &str) -> reqwest::Response {
    t.http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/execute", t.url))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-stainless-os",
        )
        .send()
        .await
        .unwrap()
}

async fn post_from(t: &crate::harness::TestGateway, origin: &str) -> reqwest::Response {
    t.http
        .post(format!("{}/v1/execute", t.url))
        .header("origin", origin)
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap()
}

const ACAO: &str = "access-control-allow-origin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_by_default_and_cross_site_posts_are_refused() {
    let t = start(MODELS, "").await;
    let r = preflight(&t, "https://app.example").await;
    assert!(r.headers().get(ACAO).is_none(), "{:?}", r.headers());
    let r = t
        .http
        .get(format!("{}/v1/health", t.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get(ACAO).is_none(), "{:?}", r.headers());
    // A page that sends anyway (a form, `no-cors` fetch) is refused before
    // anything runs, bodyless endpoints included.
    let r = post_from(&t, "https://app.example").await;
    assert_eq!(r.status(), 403);
    assert_eq!(error_type(&r.json().await.unwrap()), "origin_not_allowed");
    let r = t
        .http
        .post(format!("{}/v1/experiments/any/stop", t.url))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_configured_origins() {
    let t = start(MODELS, "[server]\ncors_allowed_origins = [\"https://app.example\"]\n").await;
    let r = preflight(&t, "https://app.example").await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()[ACAO], "https://app.example");
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("content-type") && allowed.contains("authorization") && allowed.contains("x-stainless-os"),
        "{allowed}"
    );

    let r = preflight(&t, "https://evil.example").await;
    assert!(r.headers().get(ACAO).is_none(), "{:?}", r.headers());

    let r = post_from(&t, "https://app.example").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[ACAO], "https://app.example");
    let r = post_from(&t, "https://evil.example").await;
    assert_eq!(r.status(), 403);
    assert!(r.headers().get(ACAO).is_none());
}

fn addr(t: &crate::harness::TestGateway) -> String {
    t.url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (EOF or reset) and returns
/// what it sent; fails if it is still open after [`GENEROUS`].
async fn read_until_closed(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(GENEROUS, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(closed.is_ok(), "the server kept the connection open; it sent {got:?}");
    got
}

/// One whole response (head and `Content-Length` body) off a keep-alive
/// connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-response after {text:?}");
        got.extend_from_slice(&chunk[..n]);
    }
}

const HEALTH: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: gw\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_closed() {
    let t = start(
        MODELS,
        "[server]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 500\nbody_read_timeout_ms = 500\n",
    )
    .await;
    let a = addr(&t);

    // Never sends anything.
    let mut silent = TcpStream::connect(&a).await.unwrap();
    // Half a request head, then nothing.
    let mut partial = TcpStream::connect(&a).await.unwrap();
    partial
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    // A head trickled a header line at a time, never finished: activity
    // does not extend the head's deadline.
    let trickle = TcpStream::connect(&a).await.unwrap();
    let (mut trickle_rd, mut trickle_wr) = trickle.into_split();
    let trickler = tokio::spawn(async move {
        let _ = trickle_wr.write_all(b"GET /v1/health HTTP/1.1\r\n").await;
        for i in 0..100 {
            if trickle_wr
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // A body announced and never (fully) sent.
    let mut stalled_body = TcpStream::connect(&a).await.unwrap();
    stalled_body
        .write_all(
            b"POST /v1/execute HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{\"prompt\": ",
        )
        .await
        .unwrap();
    let mut huge_body = TcpStream::connect(&a).await.unwrap();
    huge_body
        .write_all(
            b"POST /v1/execute HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n\
              content-length: 10000000\r\n\r\n",
        )
        .await
        .unwrap();
    // A keep-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(&a).await.unwrap();
    idle.write_all(HEALTH).await.unwrap();

    // Meanwhile a normal client is served.
    let r = t.get("/v1/health").await;
    assert_eq!(r.status(), 200);
    let (s, b) = t.post("/v1/execute", &json!({"prompt": "still here"})).await;
    assert_eq!(s, 200, "{b}");

    assert_eq!(read_until_closed(&mut silent).await, "");
    let got = read_until_closed(&mut partial).await;
    assert!(!got.contains(" 200 "), "{got}");
    let got = read_until_closed(&mut trickle_rd).await;
    assert!(!got.contains(" 200 "), "{got}");
    trickler.await.unwrap();
    let got = read_until_closed(&mut stalled_body).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");
    let got = read_until_closed(&mut huge_body).await;
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408") || got.starts_with("HTTP/1.1 413"),
        "{got}"
    );
    let got = read_until_closed(&mut idle).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");

    // And still served afterwards, on a new connection: the test client's
    // pooled one has been idle past `idle_timeout_ms`, and the server may
    // close it just as the client reuses it.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let r = fresh.get(format!("{}/v1/health", t.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_outlives_the_idle_timeout_and_graceful_shutdown() {
    // The upstream takes 1.5 s, three idle timeouts, with no bytes moving.
    let mock = qroute_mock::spawn(qroute_mock::MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = crate::harness::config_text(
        &mock.url(),
        &dir.path().join("store"),
        &[("delay1500-mock", "openai", 1.0)],
        "[server]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 500\n",
    );
    let cfg = Config::parse(std::path::Path::new("test.toml"), &text).unwrap();
    let gw = std::sync::Arc::new(tokio::task::block_in_place(|| Gateway::build(cfg)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server::serve(gw, listener, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let execute = |http: reqwest::Client| {
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}/v1/execute"))
                .json(&json!({"prompt": "take your time"}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(execute(http.clone()).await, 200);

    // Shut down while a request is in flight: it is answered, and `serve`
    // returns once it has been.
    let in_flight = tokio::spawn(execute(reqwest::Client::new()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap(), 200);
    tokio::time::timeout(GENEROUS, served)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(url.trim_start_matches("http://")).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_new_connections_wait_for_a_slot() {
    let t = start(
        MODELS,
        "[server]\nmax_connections = 5\nheader_read_timeout_ms = 30000\nidle_timeout_ms = 30000\n",
    )
    .await;
    let a = addr(&t);
    // Five keep-alive connections, each proven served, then left open.
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(&a).await.unwrap();
        s.write_all(HEALTH).await.unwrap();
        let got = read_response(&mut s).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        held.push(s);
    }
    // A sixth waits in the backlog: connected, but no answer.
    let mut sixth = TcpStream::connect(&a).await.unwrap();
    sixth.write_all(HEALTH).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), sixth.read(&mut byte)).await;
    assert!(early.is_err(), "served beyond max_connections: {early:?}");
    // The held ones still work.
    held[1].write_all(HEALTH).await.unwrap();
    assert!(read_response(&mut held[1]).await.starts_with("HTTP/1.1 200"));
    // Once one closes, the sixth is served.
    drop(held.remove(0));
    let got = tokio::time::timeout(GENEROUS, read_response(&mut sixth))
        .await
        .expect("served once a slot is free");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[test]
fn server_section_is_checked_at_start_up() {
    let mock_url = "http://127.0.0.1:9";
    let dir = tempfile::tempdir().unwrap();
    for (extra, field) in [
        ("[server]\nidle_timeout_ms = 0\n", "server.idle_timeout_ms"),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ("[server]\nallowed_hosts = [\"http://x\"]\n", "server.allowed_hosts[0]"),
        (
            "[server]\ncors_allowed_origins = [\"*\"]\n",
            "server.cors_allowed_origins[0]",
        ),
        ("[server]\ncolour = 1\n", "colour"),
    ] {
        let text = crate::harness::config_text(mock_url, &dir.path().join("s"), MODELS, extra);
        let e = Config::parse(std::path::Path::new("test.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{extra}: {e}");
    }
    let text = crate::harness::config_text(mock_url, &dir.path().join("s"), MODELS, "");
    let c = Config::parse(std::path::Path::new("test.toml"), &text).unwrap();
    assert_eq!(
        (
            c.server.header_read_timeout_ms,
            c.server.body_read_timeout_ms,
            c.server.idle_timeout_ms
        ),
        (10_000, 30_000, 60_000)
    );
    assert_eq!(c.server.max_connections, 10_000);
    assert!(!c.server.metrics_public);
}
