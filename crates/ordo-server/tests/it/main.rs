//! The HTTP API in-process (poem's TestClient), on the embedded default (SQLite, no Redis)
//! and on PostgreSQL with Redis leases.

#![allow(clippy::unwrap_used)]

mod breakers;
mod docs;
mod edge;
mod evolution;
mod idempotency;
mod metrics;
mod races;
mod relay;
mod shadow;
mod traces;

use ordo_server::config::Config;
use ordo_server::startup::Application;
use ordo_testkit::{Backend, TestDb};
use poem::http::{Method, StatusCode};
use poem::test::TestClient;
use serde_json::{Value, json};
use std::sync::Arc;

pub struct Api {
    pub client: TestClient<Arc<poem::endpoint::BoxEndpoint<'static>>>,
    pub db: TestDb,
    /// The Redis keys of the server's prefix go with it.
    pub redis: Option<ordo_testkit::RedisPrefix>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: poem::http::HeaderMap,
    pub body: Value,
    /// The body as sent.
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A server over a fresh database; PostgreSQL runs with Redis leases, SQLite without.
pub async fn api(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Api {
    let db = TestDb::new(backend).await;
    let mut config = Config { database_url: db.url.clone(), ..Config::default() };
    config.listen = "127.0.0.1:0".parse().unwrap();
    let redis = ordo_testkit::redis_prefix();
    if backend == Backend::Postgres {
        config.redis_url = Some(ordo_testkit::redis_url());
        config.redis_prefix = redis.to_string();
    }
    tweak(&mut config);
    let app = Application::build(&config).await.unwrap();
    Api { client: TestClient::new(Arc::new(app.into_endpoint())), db, redis: Some(redis) }
}

impl Api {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
        auth: Option<&str>,
    ) -> Reply {
        self.call_with(method, path, key, body, auth, &[]).await
    }

    /// [`Api::call`] with more headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
        auth: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.client.request(method, path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(a) = auth {
            req = req.header("Authorization", format!("Bearer {a}"));
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.0;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.into_body().into_string().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        Reply { status, headers, body, text }
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(key), Some(&body.to_string()), None).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, None, None).await
    }

    /// Rows in a table (an audit with raw SQL, not the API).
    pub async fn count(&self, table: &str) -> i64 {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(&self.db.url).await.unwrap();
        let backend = db.get_database_backend();
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                backend,
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        let n = row.try_get::<i64>("", "n").unwrap();
        let _ = db.close().await;
        n
    }
}

pub use ordo_testkit::on_both;

pub fn order() -> Value {
    json!({"sku": "sku-1", "quantity": 2, "account": "acct", "amount": 100})
}

/// Stock and money for `order()`.
pub async fn stocked(backend: Backend) -> Api {
    stocked_with(backend, |_| {}).await
}

/// [`stocked`] with a configuration of its own.
pub async fn stocked_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Api {
    let api = api(backend, tweak).await;
    assert_eq!(
        api.post("/inventory/sku-1/restock", "seed-1", json!({"quantity": 100})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.post("/wallet/acct/deposit", "seed-2", json!({"amount": 10_000})).await.status,
        StatusCode::OK
    );
    api
}
