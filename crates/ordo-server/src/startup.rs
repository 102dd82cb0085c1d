//! `Application::build`: stores (migrated), leases, tenants, the generated routes, the docs,
//! health and readiness, and the limits around every request. It binds before it serves,
//! so port 0 works and the bound port is known.

use crate::api::{Ctx, Lane, ProblemCode, RateLimit, Tenants};
use crate::config::Config;
use crate::generated::{GeneratedApi, SPECS};
use crate::middleware::{Edge, Routes, contain_panics};
use crate::relay::RELAY_BATCH_MAX;
use ordo_idempotency::{LeaseConfig, Leases};
use ordo_store::{SpecSource, Store, StoreConfig};
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::{EndpointExt, Response, Route, get, handler};
use poem_openapi::OpenApiService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "refusing to serve {listen} without API keys: set ORDO_API_KEYS=tenant:key,... or listen on 127.0.0.1"
    )]
    PublicWithoutKeys { listen: SocketAddr },
    /// A spec the server was built from does not check: its rendered diagnostics.
    #[error("{0}")]
    Spec(String),
    /// The database does not run the specs the server was built from, and may not be
    /// migrated to them at start-up: what differs and the commands that apply it.
    #[error("{0}")]
    Drift(String),
    #[error("database: {0}")]
    Store(#[from] ordo_store::StoreError),
    #[error("redis: {0}")]
    Leases(#[from] ordo_idempotency::LeaseError),
    #[error("relay: {0}")]
    Relay(#[from] crate::relay::RelayError),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("ORDO_RECORD {}: {source}", path.display())]
    Recording { path: std::path::PathBuf, source: std::io::Error },
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

pub struct Application {
    acceptor: TcpAcceptor,
    app: poem::endpoint::BoxEndpoint<'static>,
    pub addr: SocketAddr,
}

/// The OpenAPI service of the generated routes (also used to write `docs/openapi.json`).
pub fn openapi(ctx: Arc<Ctx>) -> OpenApiService<GeneratedApi, ()> {
    OpenApiService::new(GeneratedApi(ctx), "Ordo", env!("CARGO_PKG_VERSION")).description(problem_doc())
}

/// The OpenAPI document of the generated routes, as checked in at `docs/openapi.json`.
pub fn openapi_json() -> String {
    let metrics = Arc::new(crate::telemetry::Metrics::new().expect("metrics build on a fresh registry"));
    let nothing = Lane::new(Vec::new(), None);
    let breakers = Arc::new(crate::breaker::Breakers::new(1, 1));
    let ctx = Ctx::new(nothing, Tenants::default(), RateLimit::new(1, 1), metrics, breakers);
    let specs = specs().expect("the specs the server was built from check (its build checked them)");
    crate::document::documented(&openapi(Arc::new(ctx)).spec(), crate::document::DEFAULT_SERVER, true, &specs)
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
pub fn specs() -> Result<Vec<SpecSource>, StartError> {
    SPECS
        .iter()
        .map(|(name, source)| {
            ordo_spec::compile(source)
                .map(|ir| SpecSource { name: name.to_string(), source: source.to_string(), ir })
                .map_err(|d| StartError::Spec(ordo_spec::render(&format!("specs/{name}.ordo"), source, &d)))
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
) -> Result<(), StartError> {
    use ordo_store::evolve::{self, Serving};
    ordo_store::install(db, specs).await?;
    for spec in specs {
        match evolve::serving(db, spec).await? {
            Serving::Current { .. } => {}
            Serving::Older { version, deployed } => tracing::warn!(
                spec = %spec.name,
                "serving spec version {version} on tables of version {deployed}: every change since is expand-only"
            ),
            Serving::Differs { summary } if !migrate => {
                return Err(StartError::Drift(format!(
                    "spec `{}`: {summary}; review with `cargo xtask migrate plan`, apply with `cargo xtask migrate up`, or start with --migrate to apply safe, expand-only changes",
                    spec.name
                )));
            }
            Serving::Differs { .. } => {
                let plan =
                    evolve::evolve(db, spec, ordo_store::Apply::ExpandOnly, &evolve::EvolveOptions::new())
                        .await?;
                match plan.applied {
                    Some(v) => {
                        tracing::info!(spec = %spec.name, "migrated to spec version {v}: {} safe change(s)", plan.steps.len())
                    }
                    None => {
                        return Err(StartError::Drift(format!(
                            "{}; --migrate applies only safe, expand-only changes: review with `cargo xtask migrate plan`, apply with `cargo xtask migrate up`",
                            plan.summary()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

impl Application {
    pub async fn build(config: &Config) -> Result<Application, StartError> {
        let tenants = Tenants::parse(&config.api_keys)?;
        let keyed = !tenants.single_tenant();
        if tenants.single_tenant() {
            if !config.listen.ip().is_loopback() {
                return Err(StartError::PublicWithoutKeys { listen: config.listen });
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
            let shadow_config = store_config.shadow()?;
            let prefix = format!("{}shadow:", config.redis_prefix);
            let shadow = open_lane(config, &specs, shadow_config, &prefix, &metrics, true).await?;
            ctx = ctx.with_shadow(shadow, shadow_tenants);
        }
        let ctx = Arc::new(ctx);
        let service = openapi(ctx.clone());
        let docs = service.swagger_ui();
        let server = format!("http://{}", config.listen);
        let document = crate::document::documented(&service.spec(), &server, keyed, &specs);
        let routes = Routes::of(&document);
        let spec_json = get(poem::endpoint::make_sync(move |_| {
            Response::builder().content_type("application/json; charset=utf-8").body(document.clone())
        }));
        let recorder = match &config.record {
            Some(path) => Some(Arc::new(
                crate::record::Recorder::open(path)
                    .await
                    .map_err(|source| StartError::Recording { path: path.clone(), source })?,
            )),
            None => None,
        };
        let edge = Arc::new(Edge {
            metrics: metrics.clone(),
            recorder,
            routes,
            timeout: Duration::from_millis(config.request_timeout_ms),
            body_bytes_max: config.body_bytes_max,
        });
        let app = Route::new()
            .nest("/", service)
            .nest("/docs", docs)
            .at("/openapi.json", spec_json)
            .at("/healthz", get(healthz))
            .at("/readyz", get(readyz.data(ctx.clone())))
            .at("/metrics", get(metrics_text.data(metrics.clone()).data(ctx.clone())))
            .with(contain_panics())
            .around(move |ep, req| {
                let edge = edge.clone();
                async move { edge.serve(ep, req).await }
            })
            .boxed();
        let listen = |source| StartError::Listen { addr: config.listen, source };
        let acceptor = TcpListener::bind(config.listen).into_acceptor().await.map_err(listen)?;
        let addr =
            acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).ok_or_else(|| {
                listen(std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no local address"))
            })?;
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
) -> Result<Lane, StartError> {
    let db = ordo_store::connect(&store_config).await?;
    let reconciled = reconcile(&db, specs, config.migrate).await;
    let _ = db.close().await;
    reconciled?;
    let mut stores = Vec::new();
    for spec in specs {
        let store = Store::open(store_config.clone(), &spec.name, spec.ir.clone(), false).await?;
        stores.push((spec.name.clone(), Arc::new(store)));
    }
    let leases = match &config.redis_url {
        Some(url) => {
            let mut lc = LeaseConfig::new(url.clone(), redis_prefix.to_string());
            lc.lease_ms = config.lease_ms;
            // An answer kept past its record's retention could replay a key the database
            // has already let go.
            lc.answer_ms = config.answer_ms.min(config.idempotency_ttl_ms);
            Some(Arc::new(Leases::connect(lc).await?))
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
                Ok::<_, crate::relay::RelayError>(trimmed)
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
                let records = store.purge_expired(now, SWEEP_BATCH_MAX).await?;
                let sent = store.purge_sent_outbox(now - retention, SWEEP_BATCH_MAX).await?;
                // Drained while either comes back full.
                Ok::<_, ordo_store::StoreError>(records.max(sent))
            }
        }));
    }
    // Each spec's due timers fire through its store; several servers share the work.
    for (_, store) in &stores {
        let store = store.clone();
        let every = Duration::from_millis(config.timer_interval_ms);
        tokio::spawn(periodically("timers", every, TIMER_BATCH_MAX, move || {
            let store = store.clone();
            async move { store.fire_due_timers(chrono::Utc::now(), TIMER_BATCH_MAX).await.map(|n| n as u64) }
        }));
    }
    // Each spec's invariants, over the whole database, now and then: a gauge of the tenants
    // that break one (an operator alerts on it) and an error log naming the first.
    if config.invariant_interval_ms > 0 {
        for (name, store) in stores.iter().filter(|(_, s)| !s.spec().invariants.is_empty()) {
            let (store, name, gauge) = (store.clone(), name.clone(), metrics.invariant_violations());
            let every = Duration::from_millis(config.invariant_interval_ms);
            let chore = periodically("invariants", every, u64::MAX, move || {
                let (store, name, gauge) = (store.clone(), name.clone(), gauge.clone());
                async move {
                    for check in store.invariants().await? {
                        let broken: Vec<&ordo_store::Sides> = check.broken().collect();
                        let attrs = [
                            opentelemetry::KeyValue::new("spec", name.clone()),
                            opentelemetry::KeyValue::new("invariant", check.name.clone()),
                            opentelemetry::KeyValue::new("shadow", shadow),
                        ];
                        gauge.record(broken.len() as u64, &attrs);
                        if let Some(b) = broken.first() {
                            tracing::error!(
                                spec = %name, invariant = %check.name, tenant = %b.tenant, lhs = %b.lhs,
                                rhs = %b.rhs, tenants = broken.len(), "an invariant does not hold: {}", check.text
                            );
                        }
                    }
                    Ok::<_, ordo_store::StoreError>(0)
                }
            });
            // The first check waits one interval: a start-up scans no tables for it.
            tokio::spawn(async move {
                tokio::time::sleep(every).await;
                chore.await;
            });
        }
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
async fn periodically<F, Fut, E>(what: &'static str, every: Duration, batch_max: u64, mut round: F)
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<u64, E>> + Send,
    E: std::fmt::Display,
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
