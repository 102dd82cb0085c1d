//! The driver's retries against a scripted HTTP server.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::traffic::Class;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server that answers each connection's request with the next of `answers`, and
/// records when each request came and which key it carried.
async fn scripted(answers: Vec<&'static str>) -> (String, Arc<Mutex<Vec<(Instant, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        for answer in answers {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let n = conn.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("idempotency-key: "))
                .unwrap_or_default()
                .trim()
                .to_string();
            lock(&log).push((Instant::now(), key));
            conn.write_all(answer.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
        }
    });
    (url, seen)
}

fn driver(url: String, attempts: u32) -> Arc<Driver> {
    let mut scenario = Scenario::default();
    scenario.retry.attempts = attempts;
    scenario.retry.backoff_ms = 10;
    Driver::new(Target::one(url, None, false), scenario).unwrap()
}

fn place() -> Op {
    Op {
        kind: OpKind::Place,
        post: true,
        path: "/orders".to_string(),
        body: Some(json!({})),
        key: Some("k-1".to_string()),
        taken: None,
    }
}

const BUSY: &str = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: 44\r\n\r\n{\"type\":\"urn:ordo:problem:overloaded\"}      ";
const IN_USE: &str = "HTTP/1.1 409 Conflict\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: 50\r\n\r\n{\"type\":\"urn:ordo:problem:idempotency-key-in-use\"}";
const MADE: &str = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 33\r\n\r\n{\"id\":\"o-1\",\"state\":\"pending\"}   ";

#[tokio::test]
async fn a_retry_keeps_its_key_and_waits_out_retry_after() {
    let (url, seen) = scripted(vec![BUSY, IN_USE, MADE]).await;
    let d = driver(url, 5);
    let answer = d.send_retrying(&place(), Instant::now(), false).await;
    assert_eq!(answer.status, Some(201));
    assert_eq!(answer.retries, 2);
    let seen = lock(&seen).clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(_, k)| k == "k-1"), "{seen:?}");
    assert!(seen[1].0 - seen[0].0 >= Duration::from_secs(1), "Retry-After: 1 was honoured");
}

#[tokio::test]
async fn without_retries_or_for_a_pair_the_first_answer_stands() {
    let (url, _) = scripted(vec![BUSY]).await;
    let answer = driver(url, 0).send_retrying(&place(), Instant::now(), false).await;
    assert_eq!((answer.status, answer.retries, answer.class()), (Some(503), 0, Class::Error));
    // One of two copies sent at once: "in use" is its expected answer, not one to retry.
    let (url, seen) = scripted(vec![IN_USE, MADE]).await;
    let answer = driver(url, 5).send_retrying(&place(), Instant::now(), true).await;
    assert_eq!((answer.status, answer.retries), (Some(409), 0));
    assert_eq!(lock(&seen).len(), 1);
}
