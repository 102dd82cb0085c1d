//! Who calls, and which tables serve them: API keys to tenants, each tenant's rate limit,
//! the lanes of real and shadow traffic (`X-Load-Test`) and which tenants may send the
//! latter.

use super::{Ctx, Problem, ProblemCode, Reply};
use crate::config::ConfigError;
use ordo_idempotency::Leases;
use ordo_store::Store;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use std::collections::BTreeMap;
use std::sync::Arc;

/// API keys to tenants. Empty: single-tenant mode, every request is tenant `default`.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    by_key: BTreeMap<String, String>,
}

pub const DEFAULT_TENANT: &str = "default";

/// The shortest API key accepted, in bytes.
pub const API_KEY_BYTES_MIN: usize = 16;

impl Tenants {
    /// From `tenant:key,tenant:key`. (An error never repeats a key.)
    pub fn parse(spec: &str) -> Result<Tenants, ConfigError> {
        let mut by_key = BTreeMap::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (tenant, key) = pair.split_once(':').ok_or(ConfigError::ApiKeyEntry)?;
            if tenant.is_empty() || key.len() < API_KEY_BYTES_MIN {
                return Err(ConfigError::ApiKeyShort { tenant: tenant.to_string() });
            }
            by_key.insert(key.to_string(), tenant.to_string());
        }
        Ok(Tenants { by_key })
    }

    pub fn single_tenant(&self) -> bool {
        self.by_key.is_empty()
    }

    fn of(&self, req: &Request) -> Option<String> {
        if self.single_tenant() {
            return Some(DEFAULT_TENANT.to_string());
        }
        let header = req.header("Authorization")?;
        let key = header.strip_prefix("Bearer ")?.trim();
        self.by_key.get(key).cloned()
    }
}

/// A token bucket per tenant: `rate_per_s` requests a second on average, bursts up to
/// `burst`. Tenants come from configuration, so the map is bounded.
pub struct RateLimit {
    rate_per_s: f64,
    burst: f64,
    buckets: std::sync::Mutex<BTreeMap<String, (f64, std::time::Instant)>>,
}

impl RateLimit {
    pub fn new(rate_per_s: u32, burst: u32) -> RateLimit {
        RateLimit {
            rate_per_s: f64::from(rate_per_s.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Default::default(),
        }
    }

    /// `Err(seconds to wait)` when the tenant is over its rate.
    fn admit(&self, tenant: &str) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(tenant.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate_per_s).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate_per_s).ceil().max(1.0) as u64)
        }
    }
}

/// The stores and leases of one kind of traffic (real, or shadow): each machine and
/// resource is served by the store of the spec declaring it.
pub struct Lane {
    pub(super) stores: BTreeMap<String, Arc<Store>>,
    pub(super) leases: Option<Arc<Leases>>,
}

impl Lane {
    pub fn new(stores: Vec<Arc<Store>>, leases: Option<Arc<Leases>>) -> Lane {
        let mut by_name = BTreeMap::new();
        for store in stores {
            let spec = store.spec();
            for name in spec.machines.iter().map(|m| &m.name).chain(spec.resources.iter().map(|r| &r.name)) {
                by_name.insert(name.clone(), store.clone());
            }
        }
        Lane { stores: by_name, leases }
    }

    pub(super) fn store(&self, name: &str) -> Option<&Arc<Store>> {
        self.stores.get(name)
    }
}

/// The tenants allowed to send shadow traffic: `tenant,tenant`, or `*` for all.
#[derive(Debug, Clone, Default)]
pub struct ShadowTenants {
    all: bool,
    names: std::collections::BTreeSet<String>,
}

impl ShadowTenants {
    pub fn parse(spec: &str) -> ShadowTenants {
        let names: std::collections::BTreeSet<String> =
            spec.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect();
        ShadowTenants { all: names.contains("*"), names }
    }

    pub fn any(&self) -> bool {
        self.all || !self.names.is_empty()
    }

    fn allows(&self, tenant: &str) -> bool {
        self.all || self.names.contains(tenant)
    }
}

/// Whether a request is load-test traffic (`X-Load-Test: true`); `None` when the header
/// is neither `true` nor `false`.
pub fn is_shadow(req: &Request) -> Option<bool> {
    match req.header("X-Load-Test").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Some(false),
        Some("true") => Some(true),
        Some(_) => None,
    }
}

/// Who sent a request, and the tables that serve it.
pub(super) struct Caller<'a> {
    pub tenant: String,
    pub lane: &'a Lane,
    pub shadow: bool,
}

fn unauthorized<T: ToJSON>() -> Reply<T> {
    Reply::problem(Problem::new(ProblemCode::Unauthorized, "send `Authorization: Bearer <api key>`"), None)
}

impl Ctx {
    /// The request's tenant (its API key is valid) and lane (shadow traffic only from the
    /// tenants allowed to send it); else the answer to send (large, but sent at once, so
    /// boxing would buy nothing).
    #[allow(clippy::result_large_err)]
    pub(super) fn identify<T: ToJSON>(&self, req: &Request) -> Result<Caller<'_>, Reply<T>> {
        let tenant = self.tenants.of(req).ok_or_else(unauthorized)?;
        let shadow = is_shadow(req).ok_or_else(|| {
            Reply::problem(
                Problem::new(ProblemCode::Malformed, "X-Load-Test must be `true` or `false`"),
                None,
            )
        })?;
        if !shadow {
            return Ok(Caller { tenant, lane: &self.real, shadow: false });
        }
        match &self.shadow {
            Some((lane, allowed)) if allowed.allows(&tenant) => Ok(Caller { tenant, lane, shadow: true }),
            _ => Err(Reply::problem(
                Problem::new(
                    ProblemCode::ShadowNotAllowed,
                    "this API key may not send load-test traffic (X-Load-Test)",
                ),
                None,
            )),
        }
    }

    /// [`Ctx::identify`], and the tenant is under its rate.
    #[allow(clippy::result_large_err)]
    pub(super) fn caller<T: ToJSON>(&self, req: &Request) -> Result<Caller<'_>, Reply<T>> {
        let caller = self.identify(req)?;
        self.rate.admit(&caller.tenant).map_err(|wait| {
            Reply::TooManyRequests(
                Json(Problem::new(ProblemCode::RateLimited, "too many requests; slow down")),
                wait,
            )
        })?;
        Ok(caller)
    }
}
