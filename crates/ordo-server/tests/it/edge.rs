//! Hostile input at the edge, over real sockets: arbitrary methods, paths, headers, keys,
//! content types and bodies (huge, truncated, nested, not JSON), and slow clients. The
//! server never panics, hangs or answers 5xx for them, writes nothing for a request it
//! refuses, and goes on serving. A panic inside one request is that request's 500 only.

use crate::*;
use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bodies above this are refused (small, so that "huge" is cheap to send).
const BODY_MAX: usize = 4_096;
/// The server's request timeout in these tests.
const TIMEOUT_MS: u64 = 1_500;

/// A server on SQLite on its own thread and runtime (proptest's cases are synchronous),
/// stocked for one order; it lives as long as the test process.
fn server() -> (SocketAddr, String) {
    static SERVER: std::sync::OnceLock<(SocketAddr, String)> = std::sync::OnceLock::new();
    SERVER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let db = ordo_testkit::TestDb::sqlite();
                    let mut config = Config { database_url: db.url.clone(), ..Config::default() };
                    config.listen = "127.0.0.1:0".parse().unwrap();
                    config.body_bytes_max = BODY_MAX;
                    config.request_timeout_ms = TIMEOUT_MS;
                    config.rate_per_s = 1_000_000;
                    config.rate_burst = 1_000_000;
                    let app = ordo_server::startup::Application::build(&config).await.unwrap();
                    tx.send((app.addr, db.url.clone())).unwrap();
                    let _keep = db;
                    app.run_until(std::future::pending()).await.unwrap();
                });
            });
            rx.recv().unwrap()
        })
        .clone()
}

/// Sends raw bytes (then closes our side when `close` says so) and reads the answer
/// whole: empty if the server closed without answering (allowed for a request cut short).
/// A server that neither answers nor closes within the timeout and a margin has hung.
fn response(addr: SocketAddr, bytes: &[u8], close: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(TIMEOUT_MS + 5_000))).unwrap();
    s.write_all(bytes).unwrap_or(());
    if close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no answer and no close: the server hung ({e})"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`response`]'s status, if it answered.
fn exchange(addr: SocketAddr, bytes: &[u8], close: bool) -> Option<u16> {
    let text = response(addr, bytes, close);
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok());
    assert!(status.is_some() || text.is_empty(), "not HTTP: {text:?}");
    status
}

/// A request as bytes: `length` is the Content-Length to declare (None: none at all).
fn request(
    method: &str,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    length: Option<usize>,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length {
        r.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn count(url: &str, table: &str) -> i64 {
    let url = url.to_string();
    let table = table.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            use sea_orm::ConnectionTrait;
            let db = sea_orm::Database::connect(&url).await.unwrap();
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT COUNT(*) AS n FROM {table}"),
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        })
    })
    .join()
    .unwrap()
}

const VALID_ORDER: &str = r#"{"sku": "sku-1", "quantity": 1, "account": "acct", "amount": 10}"#;

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        // A valid body cut anywhere.
        (0..VALID_ORDER.len()).prop_map(|n| VALID_ORDER.as_bytes()[..n].to_vec()),
        // Deep nesting.
        (1..20_000usize).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        // Right shape, wrong types and values.
        prop_oneof![
            Just(r#"{"sku": 1, "quantity": "x", "account": null, "amount": -1}"#),
            Just(r#"{"sku": "s", "quantity": 1e400, "account": "a", "amount": 9223372036854775808}"#),
            Just(r#"{"sku": "\u0000", "quantity": 1, "account": "a", "amount": 1, "extra": {}}"#),
            Just(r#"[]"#),
            Just(r#""order""#),
        ]
        .prop_map(|s| s.as_bytes().to_vec()),
        // Past the body limit.
        (BODY_MAX + 1..BODY_MAX * 4).prop_map(|n| vec![b' '; n]),
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,80}".prop_map(String::into_bytes),
        proptest::collection::vec(
            any::<u8>().prop_filter("no line breaks", |b| *b != b'\r' && *b != b'\n'),
            0..80
        ),
        (256..9_000usize).prop_map(|n| vec![b'k'; n]),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let named = prop_oneof![
        Just("Idempotency-Key".to_string()),
        Just("Content-Type".to_string()),
        Just("Authorization".to_string()),
        Just("If-Match".to_string()),
        Just("X-Load-Test".to_string()),
        Just("X-Request-Id".to_string()),
        Just("traceparent".to_string()),
        Just("Transfer-Encoding".to_string()),
        "[A-Za-z][A-Za-z0-9-]{0,20}",
    ];
    let content_type = prop_oneof![
        Just(b"application/json".to_vec()),
        Just(b"application/json; charset=latin1".to_vec()),
        Just(b"text/plain".to_vec()),
        Just(b"application/x-www-form-urlencoded".to_vec()),
        Just(b"multipart/form-data; boundary=x".to_vec()),
        Just(b"".to_vec()),
    ];
    (
        proptest::collection::vec((named, header_value()), 0..6),
        proptest::option::of(content_type),
        proptest::option::of("[ -~]{1,40}"),
    )
        .prop_map(|(mut h, ct, key)| {
            if let Some(ct) = ct {
                h.push(("Content-Type".to_string(), ct));
            }
            if let Some(k) = key {
                h.push(("Idempotency-Key".to_string(), k.into_bytes()));
            }
            h
        })
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/orders".to_string()),
        Just("/orders/00000000-0000-0000-0000-000000000000/pay".to_string()),
        Just("/orders/not-a-uuid/ship".to_string()),
        Just("/inventory/sku-1/restock".to_string()),
        Just("/wallet/%00%ff/deposit".to_string()),
        Just("/inventory/sku-1".to_string()),
        Just("/events?after=zzz&limit=-1".to_string()),
        Just("/orders/00000000-0000-0000-0000-000000000000/transitions?after=x".to_string()),
        "/[a-z%0-9/]{0,40}",
    ]
}

/// What was declared against what was sent: the truth, nothing, more than sent (the
/// client then closes: a truncated body), or less.
#[derive(Debug, Clone, Copy)]
enum Length {
    Exact,
    Missing,
    Over,
    Under,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hostile_requests_get_an_answer_below_500_and_change_nothing(
        method in prop_oneof![Just("POST"), Just("GET"), Just("PUT"), Just("DELETE"), Just("PATCH"), Just("OPTIONS")],
        path in path(),
        headers in headers(),
        body in body(),
        length in prop_oneof![Just(Length::Exact), Just(Length::Missing), Just(Length::Over), Just(Length::Under)],
    ) {
        let (addr, url) = server();
        let declared = match length {
            Length::Exact => Some(body.len()),
            Length::Missing => None,
            Length::Over => Some(body.len() + 10),
            Length::Under => Some(body.len() / 2),
        };
        let before = count(&url, "ordo_transitions");
        let status = exchange(addr, &request(method, &path, &headers, &body, declared), true);
        if let Some(status) = status {
            prop_assert!(status < 500, "{status} for {method} {path} {headers:?} ({} bytes, {length:?})", body.len());
        }
        // Only a well-formed, keyed command could change state; these never are one with
        // stock and money behind it, so nothing is journaled.
        prop_assert_eq!(count(&url, "ordo_transitions"), before);
    }
}

/// A client that sends part of its body and then nothing: answered 408 within the request
/// timeout (the body is read under it), and nothing is written.
#[test]
fn a_slow_client_is_answered_408_in_time() {
    let (addr, url) = server();
    for declared in [Some(VALID_ORDER.len()), None] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(TIMEOUT_MS + 5_000))).unwrap();
        let mut head = String::from(
            "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: slow\r\nContent-Type: application/json\r\n",
        );
        match declared {
            Some(n) => head += &format!("Content-Length: {n}\r\n\r\n"),
            None => head += "Transfer-Encoding: chunked\r\n\r\n10\r\n",
        }
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&VALID_ORDER.as_bytes()[..8]).unwrap();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408"), "{declared:?}: {text}");
        assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS + 3_000), "{:?}", started.elapsed());
    }
    assert_eq!(count(&url, "orders"), 0);
    // And the server goes on serving.
    let ok = exchange(addr, &request("GET", "/healthz", &[], b"", None), false);
    assert_eq!(ok, Some(200));
}

/// A panic inside one request is that request's 500 (problem+json); the requests beside
/// it are answered as ever. The server's own middleware does it (`contain_panics`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_one_request_is_its_500_and_nothing_else() {
    use poem::{EndpointExt, Route, get, handler};
    #[handler]
    fn boom() -> &'static str {
        panic!("a bug met by one request")
    }
    #[handler]
    async fn fine() -> &'static str {
        tokio::time::sleep(Duration::from_millis(50)).await;
        "fine"
    }
    let app = Route::new()
        .at("/boom", get(boom))
        .at("/fine", get(fine))
        .with(ordo_server::middleware::contain_panics());
    let client = poem::test::TestClient::new(app);
    let (panicked, beside) = tokio::join!(client.get("/boom").send(), client.get("/fine").send());
    panicked.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
    panicked.assert_content_type("application/problem+json");
    beside.assert_text("fine").await;
    client.get("/fine").send().await.assert_status_is_ok();
}

/// A method a path does not serve is 405 with the methods it does (RFC 9110's `Allow`).
#[test]
fn a_method_a_path_does_not_serve_is_405_with_allow() {
    let (addr, _) = server();
    for (method, path, allow) in [
        ("DELETE", "/orders", "POST"),
        ("TRACE", "/orders/00000000-0000-0000-0000-000000000000", "GET"),
        ("PUT", "/inventory/sku-1/restock", "POST"),
        ("POST", "/healthz", "GET"),
    ] {
        let text = response(addr, &request(method, path, &[], b"", None), false).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 405"), "{method} {path}: {text}");
        assert!(
            text.contains(&format!("\r\nallow: {}\r\n", allow.to_ascii_lowercase())),
            "{method} {path}: {text}"
        );
        assert!(text.contains("\r\ncontent-type: application/problem+json\r\n"), "{method} {path}: {text}");
        assert!(text.contains("urn:ordo:problem:method-not-allowed"), "{method} {path}: {text}");
    }
}

/// Every answer is problem+json, the router's own included: a path no route serves is 404
/// `not-found`, a body that is not JSON by its `Content-Type` (or has none) 415
/// `unsupported-media-type`; both write nothing.
#[test]
fn unknown_routes_and_bodies_of_another_type_are_problems() {
    let (addr, url) = server();
    let json = |t: &str| (String::from("Content-Type"), t.as_bytes().to_vec());
    let key = (String::from("Idempotency-Key"), b"media-type".to_vec());
    let before = count(&url, "orders");
    for (method, path, headers, status, code) in [
        ("GET", "/nowhere", vec![], 404, "not-found"),
        ("POST", "/orders/x/y/z", vec![key.clone()], 404, "not-found"),
        ("POST", "/orders", vec![key.clone(), json("text/plain")], 415, "unsupported-media-type"),
        ("POST", "/orders", vec![key.clone(), json("application/xml")], 415, "unsupported-media-type"),
        ("POST", "/orders", vec![key.clone()], 415, "unsupported-media-type"),
    ] {
        let body = VALID_ORDER.as_bytes();
        let text = response(addr, &request(method, path, &headers, body, Some(body.len())), false);
        let lower = text.to_ascii_lowercase();
        assert!(lower.starts_with(&format!("http/1.1 {status}")), "{method} {path}: {text}");
        assert!(lower.contains("\r\ncontent-type: application/problem+json\r\n"), "{method} {path}: {text}");
        assert!(text.contains(&format!("\"urn:ordo:problem:{code}\"")), "{method} {path}: {text}");
    }
    assert_eq!(count(&url, "orders"), before, "a refused request writes nothing");
}

/// An event without parameters may be sent with no body and no `Content-Type` (the
/// document says its body is optional); an event with parameters may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_without_parameters_needs_no_body() {
    let api = api(ordo_testkit::Backend::Sqlite, |_| {}).await;
    api.post("/inventory/sku-1/restock", "stock", serde_json::json!({"quantity": 5})).await;
    api.post("/wallet/acct/deposit", "money", serde_json::json!({"amount": 100})).await;
    let order = serde_json::from_str::<serde_json::Value>(VALID_ORDER).unwrap();
    let placed = api.post("/orders", "place", order).await;
    let id = placed.body["id"].as_str().unwrap().to_string();
    let api = &api;
    let bare = |path: String, key: &'static str| async move {
        api.call(poem::http::Method::POST, &path, Some(key), None, None).await
    };
    let paid = bare(format!("/orders/{id}/pay"), "pay").await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    assert_eq!(api.get(&format!("/orders/{id}")).await.body["state"], "paid");
    // The same request again is its replay: `{}` and no body are one request.
    let again = api.post(&format!("/orders/{id}/pay"), "pay", serde_json::json!({})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let ship = bare(format!("/orders/{id}/ship"), "ship").await;
    assert_eq!(ship.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "ship takes a carrier: {}", ship.text);
    let doc: serde_json::Value = serde_json::from_str(&api.get("/openapi.json").await.text).unwrap();
    assert_eq!(doc["paths"]["/orders/{id}/pay"]["post"]["requestBody"]["required"], false);
    assert_eq!(doc["paths"]["/orders/{id}/ship"]["post"]["requestBody"]["required"], true);
}

/// A whole number past 2^53 - 1 in a request is refused (422, nothing written), so no one
/// request takes a row near the 64-bit limit; the schema says so; a text field given a
/// number or a boolean is refused, not stored as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numbers_past_the_input_bound_and_texts_of_another_type_are_refused() {
    let api = api(ordo_testkit::Backend::Sqlite, |_| {}).await;
    let max = ordo_spec::ir::INT_INPUT_ABS_MAX;
    let ok = api.post("/wallet/w/deposit", "max", serde_json::json!({"amount": max})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    for (key, amount) in [("over", serde_json::json!(max + 1)), ("huge", serde_json::json!(i64::MAX))] {
        let r = api.post("/wallet/w/deposit", key, serde_json::json!({"amount": amount})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.body["type"], "urn:ordo:problem:invalid-input");
    }
    assert_eq!(api.get("/wallet/w").await.body["balance"], max, "only the first applied");
    for (key, sku) in [("number", serde_json::json!(0)), ("bool", serde_json::json!(false))] {
        let body = serde_json::json!({"sku": sku, "quantity": 1, "account": "a", "amount": 1});
        let r = api.post("/orders", key, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }
    assert_eq!(api.count("orders").await, 0);
    let doc: serde_json::Value = serde_json::from_str(&api.get("/openapi.json").await.text).unwrap();
    let amount = &doc["components"]["schemas"]["WalletDeposit"]["properties"]["amount"];
    assert_eq!(amount["maximum"], max, "{amount}");
}
