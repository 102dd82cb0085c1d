//! Configuration: defaults, then `ordo.toml`, then `ORDO_*` environment variables (and the
//! conventional `DATABASE_URL` / `REDIS_URL`), then the command line.

use serde::Deserialize;
use std::net::SocketAddr;

/// Largest request body accepted, in bytes.
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// How long a request may run before it is answered 503.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Requests a second per tenant, on average (429 with Retry-After above it).
pub const RATE_PER_S_DEFAULT: u32 = 2_000;
/// Requests a tenant may send at once above its rate.
pub const RATE_BURST_DEFAULT: u32 = 4_000;
/// How often the relay looks for unsent events (it runs back to back while there are more).
pub const RELAY_INTERVAL_MS_DEFAULT: u64 = 200;
/// How often the server looks for due timers (a timer fires at most this late).
pub const TIMER_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// How often the sweeper purges idempotency records past their retention.
pub const SWEEP_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// How often the specs' invariants are checked over the whole database (each a few
/// aggregate queries over full tables, in one read-only snapshot).
pub const INVARIANT_INTERVAL_MS_DEFAULT: u64 = 300_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen; default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// `sqlite://ordo.db?mode=rwc` (the embedded default) or `postgres://...`.
    pub database_url: String,
    /// Redis for idempotency leases; none by default (the database alone still stops duplicates).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// `tenant:key,tenant:key`; empty runs single-tenant without auth (loopback only).
    pub api_keys: String,
    /// The tenants allowed to send load-test traffic (`X-Load-Test: true`), served from shadow
    /// tables and Redis keys: `tenant,tenant`, or `*` for all (single-tenant mode's is
    /// `default`). Empty: shadow traffic is refused (403).
    pub shadow_tenants: String,
    /// Where to record the shape of the traffic (JSON lines; see `record.rs`); none: off.
    pub record: Option<std::path::PathBuf>,
    /// The OTLP/HTTP collector traces go to (e.g. `http://127.0.0.1:4318`); none: no traces.
    pub otlp_endpoint: Option<String>,
    /// At start-up, apply the safe, expand-only changes between the deployed specs and the
    /// ones the server was built from (`--migrate`, `ORDO_MIGRATE=true`); anything else is
    /// refused with the command to run. Off: a changed spec stops the start with one line.
    pub migrate: bool,
    pub pool_size: u32,
    pub acquire_timeout_ms: u64,
    pub body_bytes_max: usize,
    pub request_timeout_ms: u64,
    pub idempotency_ttl_ms: u64,
    pub lease_ms: u64,
    /// How long Redis keeps a decided key's answer for its retries (0: none; never longer
    /// than `idempotency_ttl_ms`).
    pub answer_ms: u64,
    /// How often expired idempotency records and published outbox rows past their
    /// retention are purged.
    pub sweep_interval_ms: u64,
    /// How long a published outbox row is kept (the events feed reaches back this far).
    pub outbox_retention_ms: u64,
    /// How long an entry stays in its Redis stream at least; an entry a consumer group has
    /// not read and acknowledged stays however old (see `relay`).
    pub stream_retention_ms: u64,
    /// How often due timers are looked for.
    pub timer_interval_ms: u64,
    /// How often the specs' invariants are checked (`ordo_invariant_violations`); 0: never.
    pub invariant_interval_ms: u64,
    /// How often the relay looks for unsent events (with Redis).
    pub relay_interval_ms: u64,
    /// Group commit (on by default; `ORDO_GROUP_COMMIT=false`: every command alone),
    /// commands per transaction, commands waiting on one key at most, and how long one may
    /// wait (past either: 503 with Retry-After). See docs/operations.md.
    pub group_commit: bool,
    pub batch_max: usize,
    pub key_queue_max: usize,
    pub batch_wait_ms_max: u64,
    /// Transactions that combine several keys' batches at once at most (0: never).
    pub batch_lanes: usize,
    /// How long a hot key's next batch waits for more of its commands (0: never).
    pub batch_linger_ms: u64,
    /// Failures in a row that open the Redis or the database circuit breaker, and the first
    /// cool-down before it lets a probe through (see `breaker`).
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    /// Requests per second per tenant, on average, and the burst allowed above it.
    pub rate_per_s: u32,
    pub rate_burst: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://ordo.db?mode=rwc".to_string(),
            redis_url: None,
            redis_prefix: "ordo:".to_string(),
            api_keys: String::new(),
            otlp_endpoint: None,
            migrate: false,
            record: None,
            shadow_tenants: String::new(),
            pool_size: ordo_store::POOL_SIZE_DEFAULT,
            acquire_timeout_ms: ordo_store::ACQUIRE_TIMEOUT_MS_DEFAULT,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            idempotency_ttl_ms: ordo_store::IDEMPOTENCY_TTL_MS_DEFAULT,
            lease_ms: ordo_idempotency::LEASE_MS_DEFAULT,
            answer_ms: ordo_idempotency::ANSWER_MS_DEFAULT,
            sweep_interval_ms: SWEEP_INTERVAL_MS_DEFAULT,
            outbox_retention_ms: ordo_store::OUTBOX_RETENTION_MS_DEFAULT,
            stream_retention_ms: crate::relay::STREAM_RETENTION_MS_DEFAULT,
            timer_interval_ms: TIMER_INTERVAL_MS_DEFAULT,
            invariant_interval_ms: INVARIANT_INTERVAL_MS_DEFAULT,
            relay_interval_ms: RELAY_INTERVAL_MS_DEFAULT,
            group_commit: true,
            batch_max: ordo_store::BATCH_MAX_DEFAULT,
            key_queue_max: ordo_store::KEY_QUEUE_MAX_DEFAULT,
            batch_wait_ms_max: ordo_store::BATCH_WAIT_MS_MAX_DEFAULT,
            batch_lanes: ordo_store::BATCH_LANES_DEFAULT,
            batch_linger_ms: ordo_store::BATCH_LINGER_MS_DEFAULT,
            breaker_failures: crate::breaker::BREAKER_FAILURES_DEFAULT,
            breaker_cooldown_ms: crate::breaker::BREAKER_COOLDOWN_MS_DEFAULT,
            rate_per_s: RATE_PER_S_DEFAULT,
            rate_burst: RATE_BURST_DEFAULT,
        }
    }
}

/// A configuration the server cannot start from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: std::path::PathBuf, source: Box<toml::de::Error> },
    #[error("{name}: `{value}` is not {expected}")]
    Variable { name: String, value: String, expected: &'static str },
    #[error("ORDO_API_KEYS: an entry is not tenant:key")]
    ApiKeyEntry,
    #[error(
        "ORDO_API_KEYS: tenant `{tenant}`: a name and a key of at least {} characters are needed",
        crate::api::API_KEY_BYTES_MIN
    )]
    ApiKeyShort { tenant: String },
}

fn variable(name: &str, value: String, expected: &'static str) -> ConfigError {
    ConfigError::Variable { name: name.to_string(), value, expected }
}

fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, ConfigError> {
    v.parse().map_err(|_| variable(name, v, "a number"))
}

impl Config {
    /// Defaults, then the TOML file if it exists, then the environment.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = file.map(std::path::Path::to_path_buf).unwrap_or_else(|| "ordo.toml".into());
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| ConfigError::Parse { path: path.clone(), source: Box::new(e) })?,
            Err(_) if file.is_none() => Config::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let var = |names: &[&str]| names.iter().find_map(|n| env(n));
        if let Some(v) = var(&["ORDO_LISTEN"]) {
            config.listen =
                v.parse().map_err(|_| variable("ORDO_LISTEN", v, "an address such as 127.0.0.1:8080"))?;
        }
        if let Some(v) = var(&["ORDO_DATABASE_URL", "DATABASE_URL"]) {
            config.database_url = v;
        }
        if let Some(v) = var(&["ORDO_REDIS_URL", "REDIS_URL"]) {
            config.redis_url = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = var(&["ORDO_REDIS_PREFIX"]) {
            config.redis_prefix = v;
        }
        if let Some(v) = var(&["ORDO_API_KEYS"]) {
            config.api_keys = v;
        }
        if let Some(v) = var(&["ORDO_RECORD"]) {
            config.record = Some(v.into()).filter(|p: &std::path::PathBuf| !p.as_os_str().is_empty());
        }
        if let Some(v) = var(&["ORDO_SHADOW_TENANTS"]) {
            config.shadow_tenants = v;
        }
        if let Some(v) = var(&["ORDO_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]) {
            config.otlp_endpoint = Some(v).filter(|v| !v.is_empty());
        }
        let flag = |name: &str, v: String| match v.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(variable(name, v, "true or false")),
        };
        if let Some(v) = var(&["ORDO_MIGRATE"]) {
            config.migrate = flag("ORDO_MIGRATE", v)?;
        }
        if let Some(v) = var(&["ORDO_GROUP_COMMIT"]) {
            config.group_commit = flag("ORDO_GROUP_COMMIT", v)?;
        }
        // The numeric settings, each from `ORDO_<FIELD>` in upper case.
        macro_rules! numbers {
            ($($field:ident),*) => {$(
                let name = concat!("ORDO_", stringify!($field)).to_ascii_uppercase();
                if let Some(v) = env(&name) {
                    config.$field = number(&name, v)?;
                }
            )*};
        }
        numbers!(
            pool_size,
            acquire_timeout_ms,
            body_bytes_max,
            request_timeout_ms,
            idempotency_ttl_ms,
            lease_ms,
            answer_ms,
            rate_per_s,
            rate_burst,
            timer_interval_ms,
            invariant_interval_ms,
            relay_interval_ms,
            sweep_interval_ms,
            outbox_retention_ms,
            stream_retention_ms,
            batch_max,
            key_queue_max,
            batch_wait_ms_max,
            batch_lanes,
            batch_linger_ms,
            breaker_failures,
            breaker_cooldown_ms
        );
        Ok(config)
    }
}
