//! What telemetry costs: orders placed per second through the whole HTTP stack (in process,
//! PostgreSQL + Redis), with no subscriber, with JSON logs at `info`, and with JSON logs plus
//! traces exported by OTLP/HTTP to a local collector. The modes take turns, round after
//! round, and the medians are compared, so the machine's noise hits them alike.
//! `cargo bench -p ordo-server --bench telemetry`; under `cargo test` a small smoke run.

#![allow(clippy::unwrap_used)]

use ordo_server::config::Config;
use ordo_server::startup::Application;
use ordo_server::telemetry;
use poem::test::TestClient;
use std::sync::Arc;
use std::time::Instant;
use tracing::instrument::WithSubscriber as _;

/// An OTLP/HTTP collector that accepts and drops every export, on its own thread.
fn sink_collector() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            use poem::listener::{Acceptor as _, Listener as _};
            let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
            tx.send(*acceptor.local_addr()[0].as_socket_addr().unwrap()).unwrap();
            let drop_all = poem::endpoint::make(|req: poem::Request| async move {
                let _ = req.into_body().into_bytes().await;
                poem::Response::builder().content_type("application/x-protobuf").body(Vec::<u8>::new())
            });
            poem::Server::new_with_acceptor(acceptor).run(drop_all).await.ok();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, per_round, tasks) = if full { (7, 1_200, 32) } else { (1, 40, 4) };
    let endpoint = sink_collector();
    let tracer = telemetry::otlp_tracer(&endpoint).unwrap();
    let filter = || tracing_subscriber::EnvFilter::new(telemetry::LOG_FILTER_DEFAULT);
    let modes: Vec<(&str, tracing::Dispatch)> = vec![
        ("off", tracing::Dispatch::none()),
        ("logs", tracing::Dispatch::new(telemetry::subscriber(filter(), false, None))),
        ("logs+traces", tracing::Dispatch::new(telemetry::subscriber(filter(), false, Some(&tracer)))),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    rt.block_on(async {
        let db = ordo_testkit::TestDb::postgres().await;
        let redis = ordo_testkit::redis_prefix();
        let config = Config {
            database_url: db.url.clone(),
            redis_url: Some(ordo_testkit::redis_url()),
            redis_prefix: redis.to_string(),
            listen: "127.0.0.1:0".parse().unwrap(),
            rate_per_s: 1_000_000,
            rate_burst: 1_000_000,
            ..Config::default()
        };
        let app = Application::build(&config).await.unwrap();
        let client = Arc::new(TestClient::new(app.into_endpoint()));
        client
            .post("/inventory/sku-1/restock")
            .header("Idempotency-Key", "seed")
            .body_json(&serde_json::json!({"quantity": 100_000_000}))
            .send()
            .await
            .assert_status_is_ok();
        let mut n = 0u64;
        for _ in 0..rounds {
            for (m, (_, dispatch)) in modes.iter().enumerate() {
                let start = Instant::now();
                let mut running = Vec::new();
                for _ in 0..tasks {
                    let client = client.clone();
                    let first = n;
                    n += (per_round / tasks) as u64;
                    let work = async move {
                        for i in first..first + (per_round / tasks) as u64 {
                            let r = client
                                .post("/orders")
                                .header("Idempotency-Key", format!("o{i}"))
                                .body_json(&serde_json::json!({"sku": "sku-1", "quantity": 1, "account": "a", "amount": 1}))
                                .send()
                                .await;
                            r.assert_status(poem::http::StatusCode::CREATED);
                        }
                    };
                    running.push(tokio::spawn(work.with_subscriber(dispatch.clone())));
                }
                for t in running {
                    t.await.unwrap();
                }
                rates[m].push((per_round / tasks * tasks) as f64 / start.elapsed().as_secs_f64());
            }
        }
    });
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("POST /orders through the whole stack, {tasks} tasks, {rounds} rounds of {per_round} per mode");
    println!("{:>12} {:>12} {:>10}", "telemetry", "median/s", "vs off");
    let off = median(&rates[0]);
    for (m, (name, _)) in modes.iter().enumerate() {
        let r = median(&rates[m]);
        println!("{name:>12} {r:>12.0} {:>10.3}", r / off);
    }
    drop(modes);
    tracer.shutdown().unwrap();
}
