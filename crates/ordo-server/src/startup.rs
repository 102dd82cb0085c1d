//! `Application::build`: stores (migrated), leases, tenants, the generated routes, the docs,
//! health and readiness, and the limits around every request. It binds before it serves,
//! so port 0 works and the bound port is known.

use crate::api::{Ctx, Lane, Problem, ProblemCode, RateLimit, Tenants};
use crate::config::Config;
use crate::generated::{GeneratedApi, SPECS};
use crate::relay::RELAY_BATCH_MAX;
use ordo_idempotency::{LeaseConfig, Leases};
use ordo_store::{SpecSource, Store, StoreConfig};
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route, get, handler};
use poem_openapi::OpenApiService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub struct Application {
    acceptor: TcpAcceptor,
    app: poem::endpoint::BoxEndpoint<'static>,
    pub addr: SocketAddr,
}

/// The OpenAPI service of the generated routes (also used to write `docs/openapi.json`).
pub fn openapi(ctx: Arc<Ctx>) -> OpenApiService<GeneratedApi, ()> {
    OpenApiService::new(GeneratedApi(ctx), "Ordo", env!("CARGO_PKG_VERSION")).description(problem_doc())
}

/// The OpenAPI document poem-openapi made, with the fields' checks and the parameters'
/// patterns stated in their schemas (`generated::SCHEMA_KEYWORDS`, `PARAMETER_KEYWORDS`).
fn documented(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(spec) else { return spec.to_string() };
    let merge = |into: &mut serde_json::Value, keywords: &str| {
        if let (Some(into), Ok(serde_json::Value::Object(keywords))) =
            (into.as_object_mut(), serde_json::from_str(keywords))
        {
            into.extend(keywords);
        }
    };
    for (schema, field, keywords) in crate::generated::SCHEMA_KEYWORDS {
        merge(&mut doc["components"]["schemas"][*schema]["properties"][*field], keywords);
    }
    for (path, ops) in doc["paths"].as_object_mut().into_iter().flatten() {
        for op in ops.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            for param in op["parameters"].as_array_mut().into_iter().flatten() {
                for (at, name, keywords) in crate::generated::PARAMETER_KEYWORDS {
                    if (*at == "*" || at == path) && param["name"] == *name {
                        merge(&mut param["schema"], keywords);
                    }
                }
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_string())
}

/// The OpenAPI document of the generated routes, as checked in at `docs/openapi.json`.
pub fn openapi_json() -> String {
    let metrics = crate::telemetry::Metrics::new().map(Arc::new);
    match metrics {
        Ok(m) => {
            let nothing = Lane::new(Vec::new(), None);
            let breakers = Arc::new(crate::breaker::Breakers::new(1, 1));
            documented(
                &openapi(Arc::new(Ctx::new(nothing, Tenants::default(), RateLimit::new(1, 1), m, breakers)))
                    .spec(),
            )
        }
        Err(e) => e,
    }
}

fn problem_doc() -> String {
    let mut doc = String::from(
        "Lifecycles served from specs/*.ordo. Every state-changing POST needs an `Idempotency-Key` header; \
         a repeated key gets the first outcome back with `Idempotent-Replayed: true`.\n\n\
         Errors are RFC 9457 `application/problem+json`; their `type` is one of:\n\n",
    );
    for code in ProblemCode::ALL {
        doc.push_str(&format!(
            "- `urn:ordo:problem:{}` ({}): {}\n",
            code.code(),
            code.status(),
            code.title()
        ));
    }
    doc
}

/// The specs the server was built from, checked.
pub fn specs() -> Result<Vec<SpecSource>, String> {
    SPECS
        .iter()
        .map(|(name, source)| {
            ordo_spec::compile(source)
                .map(|ir| SpecSource { name: name.to_string(), source: source.to_string(), ir })
                .map_err(|d| ordo_spec::render(&format!("specs/{name}.ordo"), source, &d))
        })
        .collect()
}

/// Makes the tables of new specs, then checks each spec against the version the database
/// runs: the same, or an older one whose tables were only expanded since (a rolling deploy),
/// is served; a changed spec is migrated with `migrate` when every change is safe and
/// expand-only, and otherwise stops the start with one line saying what and how.
async fn reconcile(
    db: &sea_orm::DatabaseConnection,
    specs: &[SpecSource],
    migrate: bool,
) -> Result<(), String> {
    use ordo_store::evolve::{self, Serving};
    ordo_store::install(db, specs).await.map_err(|e| e.to_string())?;
    for spec in specs {
        match evolve::serving(db, spec).await.map_err(|e| e.to_string())? {
            Serving::Current { .. } => {}
            Serving::Older { version, deployed } => tracing::warn!(
                spec = %spec.name,
                "serving spec version {version} on tables of version {deployed}: every change since is expand-only"
            ),
            Serving::Differs { summary } if !migrate => {
                return Err(format!(
                    "spec `{}`: {summary}; review with `cargo xtask migrate plan`, apply with `cargo xtask migrate up`, or start with --migrate to apply safe, expand-only changes",
                    spec.name
                ));
            }
            Serving::Differs { .. } => {
                let plan =
                    evolve::evolve(db, spec, ordo_store::Apply::ExpandOnly, &evolve::EvolveOptions::new())
                        .await
                        .map_err(|e| e.to_string())?;
                match plan.applied {
                    Some(v) => {
                        tracing::info!(spec = %spec.name, "migrated to spec version {v}: {} safe change(s)", plan.steps.len())
                    }
                    None => {
                        return Err(format!(
                            "{}; --migrate applies only safe, expand-only changes: review with `cargo xtask migrate plan`, apply with `cargo xtask migrate up`",
                            plan.summary()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

impl Application {
    pub async fn build(config: &Config) -> Result<Application, String> {
        let tenants = Tenants::parse(&config.api_keys)?;
        if tenants.single_tenant() {
            if !config.listen.ip().is_loopback() {
                return Err(format!(
                    "refusing to serve {} without API keys: set ORDO_API_KEYS=tenant:key,... or listen on 127.0.0.1",
                    config.listen
                ));
            }
            tracing::warn!(
                "no API keys configured: single-tenant mode WITHOUT authentication (loopback only)"
            );
        }
        let specs = specs()?;
        let store_config = {
            let mut c = StoreConfig::new(&config.database_url);
            c.pool_size = config.pool_size;
            c.acquire_timeout_ms = config.acquire_timeout_ms;
            c.idempotency_ttl_ms = config.idempotency_ttl_ms;
            c.group_commit = config.group_commit;
            c.batch_max = config.batch_max;
            c.key_queue_max = config.key_queue_max;
            c.batch_wait_ms_max = config.batch_wait_ms_max;
            c.batch_lanes = config.batch_lanes;
            c.batch_linger_ms = config.batch_linger_ms;
            c
        };
        let metrics = Arc::new(crate::telemetry::Metrics::new()?);
        let real =
            open_lane(config, &specs, store_config.clone(), &config.redis_prefix, &metrics, false).await?;
        let rate = RateLimit::new(config.rate_per_s, config.rate_burst);
        let breakers =
            Arc::new(crate::breaker::Breakers::new(config.breaker_failures, config.breaker_cooldown_ms));
        metrics.watch_breakers(breakers.clone());
        let mut ctx = Ctx::new(real, tenants, rate, metrics.clone(), breakers);
        // Shadow traffic (`X-Load-Test: true`) gets tables and Redis keys of its own.
        let shadow_tenants = crate::api::ShadowTenants::parse(&config.shadow_tenants);
        if shadow_tenants.any() {
            let shadow_config = store_config.shadow().map_err(|e| e.to_string())?;
            let prefix = format!("{}shadow:", config.redis_prefix);
            let shadow = open_lane(config, &specs, shadow_config, &prefix, &metrics, true).await?;
            ctx = ctx.with_shadow(shadow, shadow_tenants);
        }
        let ctx = Arc::new(ctx);
        let service = openapi(ctx.clone()).server(format!("http://{}", config.listen));
        let docs = service.swagger_ui();
        let document = documented(&service.spec());
        let allowed = Arc::new(Allowed::of(&document));
        let spec_json = get(poem::endpoint::make_sync(move |_| {
            Response::builder().content_type("application/json; charset=utf-8").body(document.clone())
        }));
        let recorder = match &config.record {
            Some(path) => Some(Arc::new(crate::record::Recorder::open(path).await?)),
            None => None,
        };
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let body_max = config.body_bytes_max;
        let app = Route::new()
            .nest("/", service)
            .nest("/docs", docs)
            .at("/openapi.json", spec_json)
            .at("/healthz", get(healthz))
            .at("/readyz", get(readyz.data(ctx.clone())))
            .at("/metrics", get(metrics_text.data(metrics.clone()).data(ctx.clone())))
            .with(contain_panics())
            .around(move |ep, mut req| {
                let metrics = metrics.clone();
                let recorder = recorder.clone();
                let allowed = allowed.clone();
                async move {
                    let started = std::time::Instant::now();
                    let method = req.method().to_string();
                    let path = req.uri().path().to_string();
                    let route = crate::telemetry::route_of(&path);
                    let shadow = crate::api::is_shadow(&req).unwrap_or(false);
                    let arrived_ms = chrono::Utc::now().timestamp_millis();
                    let key = recorder
                        .as_ref()
                        .and_then(|_| req.header("idempotency-key"))
                        .map(crate::record::key_hash);
                    // The body limit: a declared length past it is refused before reading, and a
                    // body without one is read only up to it.
                    let declared = req.header("content-length").and_then(|v| v.parse::<usize>().ok());
                    let too_large = || {
                        problem_response(Problem::new(ProblemCode::PayloadTooLarge,
                            format!("bodies are limited to {body_max} bytes"),
                        ))
                    };
                    if declared.is_some_and(|n| n > body_max) {
                        return Ok(too_large());
                    }
                    // The body is read here, within the request's time: a client that stops
                    // sending mid-body is answered 408 and holds nothing past it, and one
                    // that closes mid-body is a 400.
                    let deadline = tokio::time::Instant::now() + timeout;
                    match tokio::time::timeout_at(deadline, req.take_body().into_bytes_limit(body_max)).await {
                        Ok(Ok(bytes)) => req.set_body(bytes),
                        Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => return Ok(too_large()),
                        Ok(Err(e)) => {
                            let p = Problem::new(ProblemCode::Malformed, format!("the body could not be read: {e}"));
                            return Ok(problem_response(p));
                        }
                        Err(_) => {
                            let p = Problem::new(ProblemCode::RequestTimeout, "the body did not arrive within the request timeout");
                            return Ok(problem_response(p));
                        }
                    }
                    // A request id for every log line of the request: the caller's, when it
                    // sends a sane one, else a new one; echoed in the response.
                    let request_id = req
                        .header("x-request-id")
                        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
                        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
                    let span = tracing::info_span!(
                        "request",
                        otel.name = %format!("{method} {route}"),
                        otel.kind = "server",
                        request_id = %request_id,
                        trace_id = tracing::field::Empty,
                        method = %method,
                        route = %route,
                        status = tracing::field::Empty,
                        tenant = tracing::field::Empty,
                        machine = tracing::field::Empty,
                        event = tracing::field::Empty,
                        outcome = tracing::field::Empty,
                        idempotency = tracing::field::Empty,
                    );
                    let trace = crate::telemetry::join_trace(&span, req.headers());
                    span.record("trace_id", tracing::field::display(trace.trace_id()));
                    req.extensions_mut().insert(crate::telemetry::TraceParent(crate::telemetry::traceparent(&trace)));
                    let call = tracing::Instrument::instrument(tokio::time::timeout_at(deadline, ep.call(req)), span.clone());
                    // Errors of the routing itself (404, 405) become their responses here, so
                    // that metrics and the record see their real status.
                    let mut response = match call.await {
                        Ok(Ok(r)) => r.into_response(),
                        Ok(Err(e)) => e.into_response(),
                        Err(_) => problem_response(Problem::new(ProblemCode::Overloaded, "the request took too long")),
                    };
                    // A method the route does not serve: say which it does (RFC 9110).
                    if response.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED
                        && let Some(v) = allowed.at(&path).and_then(|m| poem::http::HeaderValue::from_str(m).ok())
                    {
                        response.headers_mut().insert("allow", v);
                    }
                    let status = response.status().as_u16();
                    let elapsed = started.elapsed();
                    metrics.http(&method, &route, status, shadow, elapsed.as_secs_f64());
                    span.record("status", status);
                    if let Some(recorder) = recorder.as_ref().filter(|_| crate::record::recorded(&route)) {
                        recorder.record(crate::record::TrafficRecord {
                            at_ms: arrived_ms,
                            method: method.clone(),
                            route: route.clone(),
                            status,
                            key,
                            shadow,
                        });
                    }
                    tracing::debug!(parent: &span, status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
                    if let Ok(v) = poem::http::HeaderValue::from_str(&request_id) {
                        response.headers_mut().insert("x-request-id", v);
                    }
                    Ok(response)
                }
            })
            .boxed();
        let acceptor = TcpListener::bind(config.listen).into_acceptor().await.map_err(|e| e.to_string())?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or("no local address")?;
        Ok(Application { acceptor, app, addr })
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish (for at most the request timeout).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        poem::Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(self.app, shutdown, Some(Duration::from_secs(30)))
            .await
    }

    /// The app without its socket, for in-process tests.
    pub fn into_endpoint(self) -> poem::endpoint::BoxEndpoint<'static> {
        self.app
    }
}

/// The stores (one per spec, migrated) and leases of one kind of traffic, real or shadow,
/// with their background chores running and their metrics reported.
async fn open_lane(
    config: &Config,
    specs: &[SpecSource],
    store_config: StoreConfig,
    redis_prefix: &str,
    metrics: &crate::telemetry::Metrics,
    shadow: bool,
) -> Result<Lane, String> {
    let db = ordo_store::connect(&store_config).await.map_err(|e| e.to_string())?;
    let reconciled = reconcile(&db, specs, config.migrate).await;
    let _ = db.close().await;
    reconciled?;
    let mut stores = Vec::new();
    for spec in specs {
        let store = Store::open(store_config.clone(), &spec.name, spec.ir.clone(), false)
            .await
            .map_err(|e| e.to_string())?;
        stores.push((spec.name.clone(), Arc::new(store)));
    }
    let leases = match &config.redis_url {
        Some(url) => {
            let mut lc = LeaseConfig::new(url.clone(), redis_prefix.to_string());
            lc.lease_ms = config.lease_ms;
            // An answer kept past its record's retention could replay a key the database
            // has already let go.
            lc.answer_ms = config.answer_ms.min(config.idempotency_ttl_ms);
            Some(Arc::new(Leases::connect(lc).await.map_err(|e| e.to_string())?))
        }
        None => None,
    };
    let first = stores.first().map(|(_, s)| s.clone());
    // With Redis, committed events are relayed to one stream per machine; without it
    // they stay readable through GET /events. All specs share one outbox.
    if let (Some(url), Some(store)) = (&config.redis_url, first.clone()) {
        let relay = crate::relay::Relay::connect(url, redis_prefix).await?;
        let relay = Arc::new(relay.republishing(config.stream_retention_ms));
        let every = Duration::from_millis(config.relay_interval_ms);
        let streams: Vec<String> = specs
            .iter()
            .flat_map(|s| s.ir.machines.iter().map(|m| &m.name).chain(s.ir.resources.iter().map(|r| &r.name)))
            .map(|name| relay.stream(name))
            .collect();
        let trimmer = relay.clone();
        tokio::spawn(periodically("relay", every, RELAY_BATCH_MAX, move || {
            let (relay, store) = (relay.clone(), store.clone());
            async move { relay.round(&store, RELAY_BATCH_MAX).await.map(|n| n as u64) }
        }));
        let (every, retention) =
            (Duration::from_millis(crate::relay::STREAM_TRIM_INTERVAL_MS), config.stream_retention_ms);
        tokio::spawn(periodically("stream trim", every, u64::MAX, move || {
            let (relay, streams) = (trimmer.clone(), streams.clone());
            async move {
                let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
                let mut trimmed = 0;
                for stream in &streams {
                    trimmed += relay.trim(stream, now_ms, retention).await?;
                }
                Ok(trimmed)
            }
        }));
    }
    // The sweeper of idempotency records and published outbox rows past their retention
    // (all stores share the system tables, so one store's connection serves).
    if let Some(store) = first {
        let every = Duration::from_millis(config.sweep_interval_ms);
        let retention =
            chrono::Duration::milliseconds(i64::try_from(config.outbox_retention_ms).unwrap_or(i64::MAX));
        tokio::spawn(periodically("sweep", every, SWEEP_BATCH_MAX, move || {
            let store = store.clone();
            async move {
                let now = chrono::Utc::now();
                let records = store.purge_expired(now, SWEEP_BATCH_MAX).await.map_err(|e| e.to_string())?;
                let sent = store
                    .purge_sent_outbox(now - retention, SWEEP_BATCH_MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                // Drained while either comes back full.
                Ok(records.max(sent))
            }
        }));
    }
    // Each spec's due timers fire through its store; several servers share the work.
    for (_, store) in &stores {
        let store = store.clone();
        let every = Duration::from_millis(config.timer_interval_ms);
        tokio::spawn(periodically("timers", every, TIMER_BATCH_MAX, move || {
            let store = store.clone();
            async move {
                store
                    .fire_due_timers(chrono::Utc::now(), TIMER_BATCH_MAX)
                    .await
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string())
            }
        }));
    }
    metrics.watch_stores(&stores, shadow);
    Ok(Lane::new(stores.into_iter().map(|(_, s)| s).collect(), leases))
}

/// Records purged per statement, so one sweep never holds a long transaction.
const SWEEP_BATCH_MAX: u64 = 1_000;

/// Timers fired per transaction.
const TIMER_BATCH_MAX: u64 = 100;

/// Runs a batched chore until the runtime stops: a round every `every`, and rounds back to
/// back while one comes back full (`batch_max` done), so a backlog drains at once. A failed
/// round is logged and retried on the next tick.
async fn periodically<F, Fut>(what: &'static str, every: Duration, batch_max: u64, mut round: F)
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<u64, String>> + Send,
{
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        loop {
            match round().await {
                Ok(n) if n >= batch_max => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(chore = what, done = n, "round done");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(chore = what, error = %e, "round failed; the next one retries");
                    break;
                }
            }
        }
    }
}

/// The methods each path serves, for the `Allow` header of a 405: the OpenAPI document's
/// paths (`{param}` segments match any one segment), and the plain routes (all GET).
struct Allowed(Vec<(Vec<String>, String)>);

impl Allowed {
    fn of(spec: &str) -> Allowed {
        let doc: serde_json::Value =
            serde_json::from_str(spec).expect("the OpenAPI document poem-openapi wrote is JSON");
        let mut paths: Vec<(Vec<String>, String)> = doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(path, ops)| {
                let methods: Vec<String> =
                    ops.as_object().into_iter().flatten().map(|(m, _)| m.to_ascii_uppercase()).collect();
                (path.split('/').map(str::to_string).collect(), methods.join(", "))
            })
            .collect();
        for plain in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
            paths.push((plain.split('/').map(str::to_string).collect(), "GET".to_string()));
        }
        Allowed(paths)
    }

    fn at(&self, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
            })
            .map(|(_, methods)| methods.as_str())
    }
}

/// A panic while serving a request is that request's 500 (problem+json, logged with the
/// request's span), never a dropped connection; the process and every other request carry
/// on. (A command's own work runs in a task of its own, whose panic is caught the same way.)
pub fn contain_panics()
-> poem::middleware::CatchPanic<impl poem::middleware::PanicHandler<Response = Response>> {
    poem::middleware::CatchPanic::new().with_handler(|panic: Box<dyn std::any::Any + Send>| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %what, "a request panicked");
        problem_response(Problem::new(ProblemCode::Internal, "internal error"))
    })
}

fn problem_response(p: Problem) -> Response {
    let status =
        poem::http::StatusCode::from_u16(p.status).expect("every problem code has a valid HTTP status");
    let body =
        poem_openapi::types::ToJSON::to_json(&p).expect("a Problem serializes to a JSON object").to_string();
    let mut r = Response::builder().status(status).content_type("application/problem+json");
    if status == poem::http::StatusCode::SERVICE_UNAVAILABLE {
        r = r.header("Retry-After", crate::api::RETRY_AFTER_S.to_string());
    }
    r.body(body)
}

#[handler]
async fn metrics_text(
    metrics: poem::web::Data<&Arc<crate::telemetry::Metrics>>,
    ctx: poem::web::Data<&Arc<Ctx>>,
) -> Response {
    // The system tables are shared by the specs of a lane: one store of each reads them.
    let mut seen = [false; 2];
    for (store, shadow) in ctx.stores() {
        if !std::mem::replace(&mut seen[usize::from(shadow)], true) {
            metrics.read_backlog(store, shadow).await;
        }
    }
    Response::builder().content_type("text/plain; version=0.0.4").body(metrics.encode())
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers and its breaker is not open. Redis is reported but
/// does not make the server unready: without it requests take the database-only path,
/// which keeps every guarantee (and a Redis outage must not take every server out of the
/// load balancer at once).
#[handler]
async fn readyz(ctx: poem::web::Data<&Arc<Ctx>>) -> Response {
    use sea_orm::ConnectionTrait;
    let unready = |why: String| {
        Response::builder()
            .status(poem::http::StatusCode::SERVICE_UNAVAILABLE)
            .body(format!("database: {why}"))
    };
    let breaker = ctx.breakers.database.state();
    if breaker == crate::breaker::State::Open {
        return unready("circuit open".to_string());
    }
    for (store, _) in ctx.stores() {
        if let Err(e) =
            ctx.breakers.db(async { Ok(store.connection().execute_unprepared("SELECT 1").await?) }).await
        {
            return unready(e.to_string());
        }
    }
    let mut redis = Vec::new();
    for leases in ctx.leases() {
        let answer = match ctx.breakers.redis(leases.ping()).await {
            None => "circuit open (requests go without leases)".to_string(),
            Some(Err(e)) => format!("{e} (requests go without leases)"),
            Some(Ok(())) => "ok".to_string(),
        };
        redis.push(answer);
    }
    let mut body = format!("ready\ndatabase: ok (breaker {})\n", breaker.label());
    if let Some(r) = redis.first() {
        body += &format!("redis: {r} (breaker {})\n", ctx.breakers.redis.state().label());
    }
    Response::builder().body(body)
}
