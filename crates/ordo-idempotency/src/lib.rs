//! Idempotency keys: parsing the `Idempotency-Key` header, fingerprinting the request, and
//! the first insurance, a lease in Redis that holds a key while its request runs.
//!
//! The second insurance, the record under UNIQUE(tenant, key) written in the command's own
//! transaction, belongs to `ordo-store`. This crate is the only one that talks to Redis for
//! keys; when Redis is away, callers go on without a lease and the database still stops
//! every duplicate.

use fred::prelude::*;
use fred::types::scripts::Script;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Longest key accepted, in bytes (the IETF httpapi draft's advice, and ours).
pub const KEY_BYTES_MAX: usize = 255;
/// How long a lease holds a key unless renewed. Its holder renews it every third of this
/// while the command runs ([`Leases::hold`]), so a lease outlives any command of a live
/// process, and dies with a crashed one this long after its last renewal: a retry of a
/// request whose server was killed is served within seconds, not a minute.
pub const LEASE_MS_DEFAULT: u64 = 5_000;
/// How long a decided key's answer stays in Redis: a retry within it is answered by the
/// claim itself (one Redis round trip, no database read). Retries come within seconds to
/// minutes; at 1,000 requests per second this holds about 60,000 answers. The database
/// record stays the authority for as long as its own retention.
pub const ANSWER_MS_DEFAULT: u64 = 60_000;
/// How many leases' time a key's fencing counter outlives its last claim: long enough that
/// no holder of an earlier lease still runs (a lease outlives any request), short enough
/// that Redis holds about that long's worth of counters, not a day's (86 million at
/// 1,000 requests per second).
pub const FENCE_LEASES: u64 = 10;
/// The bound on every Redis command; past it the lease is skipped, not waited for.
pub const REDIS_TIMEOUT_MS_DEFAULT: u64 = 250;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {0} bytes long; at most {KEY_BYTES_MAX} are allowed")]
    TooLong(usize),
    #[error("the key has a character that is not printable ASCII at byte {0}")]
    NotPrintable(usize),
    #[error("the key is not a valid quoted string: {0}")]
    BadQuoting(&'static str),
}

/// The key in an `Idempotency-Key` header: a structured-field string (`"abc"`, with `\"`
/// and `\\` escapes) or a bare value (`abc`, `6f1c...`), 1 to `KEY_BYTES_MAX` bytes of
/// printable ASCII. Bare values may not contain spaces, quotes, commas, semicolons or
/// backslashes (they would be ambiguous as structured fields).
pub fn parse_key(header: &str) -> Result<String, KeyError> {
    if let Some(b) = header.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(KeyError::NotPrintable(b));
    }
    let key = match header.strip_prefix('"') {
        Some(rest) => {
            let body = rest.strip_suffix('"').ok_or(KeyError::BadQuoting("no closing quote"))?;
            let mut key = String::with_capacity(body.len());
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e @ ('"' | '\\')) => key.push(e),
                        _ => return Err(KeyError::BadQuoting("only \\\" and \\\\ may be escaped")),
                    },
                    '"' => return Err(KeyError::BadQuoting("an unescaped quote inside")),
                    c => key.push(c),
                }
            }
            key
        }
        None => {
            if let Some(at) = header.find([' ', '"', ',', ';', '\\']) {
                return Err(if header.trim().is_empty() {
                    KeyError::Empty
                } else {
                    KeyError::NotPrintable(at)
                });
            }
            header.to_string()
        }
    };
    match key.len() {
        0 => Err(KeyError::Empty),
        n if n > KEY_BYTES_MAX => Err(KeyError::TooLong(n)),
        _ => Ok(key),
    }
}

/// JSON with object keys sorted and no insignificant whitespace, so that two bodies that
/// mean the same give the same text. (serde_json's map keeps keys sorted.)
pub fn canonical_json(body: &serde_json::Value) -> String {
    body.to_string()
}

/// SHA-256, in hex, of the method, the route and the canonical body: what the request was.
/// A key reused with another fingerprint is refused (422) instead of replayed.
pub fn fingerprint(method: &str, route: &str, body: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    for part in [method.to_ascii_uppercase().as_str(), route, &canonical_json(body)] {
        // Length-prefixed, so that no two different triples hash the same bytes.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Redis did not answer in time or at all: go on without the lease.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
}

impl From<fred::error::Error> for LeaseError {
    fn from(e: fred::error::Error) -> LeaseError {
        LeaseError::Unavailable(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub url: String,
    /// Prefixes every key: `shadow:` for shadow traffic, a unique one per test.
    pub prefix: String,
    pub lease_ms: u64,
    /// How long a settled key's answer is kept ([`Leases::settle`]); 0 keeps none. It
    /// must not outlive the database record.
    pub answer_ms: u64,
    pub timeout_ms: u64,
}

impl LeaseConfig {
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            url: url.into(),
            prefix: prefix.into(),
            lease_ms: LEASE_MS_DEFAULT,
            answer_ms: ANSWER_MS_DEFAULT,
            timeout_ms: REDIS_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// A held key: settled or released by its holder, or expiring by itself `lease_ms` after
/// its last renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    redis_key: String,
    /// This claim's own value of the key (random), which only its holder can end or renew.
    token: String,
    /// Increases with every claim of the key: a holder whose lease expired and was taken
    /// over can be told apart from the new one.
    pub fencing_token: i64,
}

/// A claim that got no answer (Redis timed out or went away): Redis may still have run it,
/// so the key may be held under `uncertain`'s token. Its holder ends it like an acquired
/// lease once its command is done (a no-op if it was never taken), or the key would hold
/// the client's retry until it expires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ClaimFailed {
    pub error: LeaseError,
    pub uncertain: Lease,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Acquired(Lease),
    /// Another request holds the key; it will be free in at most this long.
    Held {
        retry_after_ms: u64,
    },
    /// The key was decided and its answer kept: the request that settled it, and its outcome.
    Answered(Answer),
}

/// What a settled key's request was, and how it was answered: the same two things its
/// database record holds, for the caller to compare and replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub fingerprint: String,
    pub outcome: String,
}

/// A settled key's value starts with this byte; a lease's is its claim's token (hex).
const ANSWERED: char = '=';

/// Claims a key atomically: a settled key returns its answer; otherwise bump the key's
/// fencing counter, then SET NX PX the claim's token; if the key is held, report how long
/// it still is.
const CLAIM: &str = r#"
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, 1) == '=' then
  return {2, held}
end
local token = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[1]) then
  return {1, tostring(token)}
end
return {0, tostring(redis.call('PTTL', KEYS[1]))}
"#;

/// Deletes the key only if it still holds our token (never someone else's lease).
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Replaces our lease with the key's answer, kept ARGV[3] ms (only if the lease is still ours).
const SETTLE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// Extends our lease, and the counter with it, so tokens keep increasing while we hold it.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"#;

pub struct Leases {
    client: Client,
    config: LeaseConfig,
    claim: Script,
    release: Script,
    settle: Script,
    renew: Script,
}

impl Leases {
    /// Builds the client and starts connecting in the background; a Redis that is down now
    /// is reconnected to later, and until then every call fails fast with `Unavailable`.
    pub async fn connect(config: LeaseConfig) -> Result<Leases, LeaseError> {
        let redis = Config::from_url(&config.url)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = Builder::from_config(redis)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = timeout.max(Duration::from_millis(1_000));
                c.internal_command_timeout = timeout.max(Duration::from_millis(1_000));
                c.max_command_attempts = 1;
                // Pipelined claims and settles must not wait for a delayed ACK (Nagle).
                c.tcp.nodelay = Some(true);
            })
            // Reconnect for ever, at most a second apart: a Redis that is back is used again soon.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2))
            .build()?;
        // `connect` spawns the connection task, which lives with the runtime (leases are made
        // once per process); its handle is not needed, so it is detached.
        drop(client.connect());
        // Give a healthy Redis a moment to be ready; a sick one is not waited for.
        let _ = tokio::time::timeout(timeout * 4, client.wait_for_connect()).await;
        Ok(Leases {
            client,
            config,
            claim: Script::from_lua(CLAIM),
            release: Script::from_lua(RELEASE),
            settle: Script::from_lua(SETTLE),
            renew: Script::from_lua(RENEW),
        })
    }

    /// The Redis key of (tenant, key); the tenant is length-prefixed so no two pairs meet,
    /// and the braces keep a key and its counter in one Redis Cluster slot.
    fn redis_key(&self, tenant: &str, key: &str) -> String {
        format!("{}idem:{{{}:{tenant}:{key}}}", self.config.prefix, tenant.len())
    }

    async fn bounded<T>(&self, f: impl Future<Output = FredResult<T>>) -> Result<T, LeaseError> {
        match tokio::time::timeout(Duration::from_millis(self.config.timeout_ms), f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(LeaseError::Unavailable(format!("no answer in {} ms", self.config.timeout_ms))),
        }
    }

    /// The key's fencing counter lives this long after its last claim or renewal.
    fn fence_ms(&self) -> u64 {
        self.config.lease_ms.saturating_mul(FENCE_LEASES)
    }

    #[tracing::instrument(level = "debug", name = "idempotency.claim", skip_all, err(Display))]
    pub async fn claim(&self, tenant: &str, key: &str) -> Result<Claim, ClaimFailed> {
        let k = self.redis_key(tenant, key);
        let fence = format!("{k}:fence");
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        // The counter outlives leases, so tokens keep increasing across retries.
        let args = vec![self.config.lease_ms.to_string(), self.fence_ms().to_string(), token.clone()];
        let mut lease = Lease { redis_key: k, token, fencing_token: 0 };
        let fail = |error: LeaseError, lease: Lease| ClaimFailed { error, uncertain: lease };
        let reply: Result<(i64, String), LeaseError> = self
            .bounded(self.claim.evalsha_with_reload(&self.client, vec![lease.redis_key.clone(), fence], args))
            .await;
        let (kind, value) = match reply {
            Ok(r) => r,
            Err(e) => return Err(fail(e, lease)),
        };
        let unexpected = || LeaseError::Unavailable(format!("unexpected claim reply {value:?}"));
        Ok(match kind {
            1 => {
                lease.fencing_token = value.parse().map_err(|_| fail(unexpected(), lease.clone()))?;
                Claim::Acquired(lease)
            }
            2 => {
                let answer = value.strip_prefix(ANSWERED).and_then(|v| v.split_once('\n'));
                let Some((fingerprint, outcome)) = answer else {
                    return Err(fail(
                        LeaseError::Unavailable(format!("unreadable answer under {}", lease.redis_key)),
                        lease,
                    ));
                };
                Claim::Answered(Answer { fingerprint: fingerprint.to_string(), outcome: outcome.to_string() })
            }
            _ => {
                let ms: i64 = value.parse().map_err(|_| fail(unexpected(), lease.clone()))?;
                Claim::Held { retry_after_ms: u64::try_from(ms).unwrap_or(0).max(1) }
            }
        })
    }

    /// Releases a lease we hold; false if it had expired (and maybe been claimed again).
    #[tracing::instrument(level = "debug", name = "idempotency.release", skip_all, err(Display))]
    pub async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let deleted: i64 = self
            .bounded(self.release.evalsha_with_reload(
                &self.client,
                vec![lease.redis_key.clone()],
                vec![lease.token.clone()],
            ))
            .await?;
        Ok(deleted == 1)
    }

    /// Ends a lease whose request was decided and recorded, keeping its answer for
    /// `answer_ms` so that retries are answered by their claim; false if the lease had
    /// expired (nothing is written then). With `answer_ms` 0 it is a release.
    #[tracing::instrument(level = "debug", name = "idempotency.settle", skip_all, err(Display))]
    pub async fn settle(&self, lease: &Lease, answer: &Answer) -> Result<bool, LeaseError> {
        if self.config.answer_ms == 0 {
            return self.release(lease).await;
        }
        let value = format!("{ANSWERED}{}\n{}", answer.fingerprint, answer.outcome);
        let args = vec![lease.token.clone(), value, self.config.answer_ms.to_string()];
        let set: i64 = self
            .bounded(self.settle.evalsha_with_reload(&self.client, vec![lease.redis_key.clone()], args))
            .await?;
        Ok(set == 1)
    }

    /// Runs `work` while holding `lease`: renewed every third of `lease_ms`, so it lasts as
    /// long as the work and no longer than `lease_ms` past a crash. A failed renewal is
    /// logged and the work goes on (the database record still stops a second effect).
    pub async fn hold<T>(&self, lease: &Lease, work: impl Future<Output = T>) -> T {
        let every = Duration::from_millis((self.config.lease_ms / 3).max(1));
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                () = tokio::time::sleep(every) => {
                    if let Err(e) = self.renew(lease).await {
                        tracing::warn!(error = %e, "idempotency lease not renewed");
                    }
                }
            }
        }
    }

    /// Extends a lease we hold by `lease_ms`; false if it had expired.
    #[tracing::instrument(level = "debug", name = "idempotency.renew", skip_all, err(Display))]
    pub async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let keys = vec![lease.redis_key.clone(), format!("{}:fence", lease.redis_key)];
        let args = vec![lease.token.clone(), self.config.lease_ms.to_string(), self.fence_ms().to_string()];
        let renewed: i64 = self.bounded(self.renew.evalsha_with_reload(&self.client, keys, args)).await?;
        Ok(renewed == 1)
    }

    /// Whether Redis answers now (for readiness checks).
    pub async fn ping(&self) -> Result<(), LeaseError> {
        let _: String = self.bounded(self.client.ping(None)).await?;
        Ok(())
    }
}
