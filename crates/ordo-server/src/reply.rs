//! The HTTP form of every answer: typed bodies with their headers (`Reply`), RFC 9457
//! problem+json with a stable `type` (`Problem`, `ProblemCode`), the response bodies of
//! the fixed routes, and the mapping of outcomes, rejections and store errors to them.

use ordo_store::{Action, Command, Executed, Outcome, Rejection, StoreError, StoredRow};
use poem_openapi::payload::Json;
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::{ApiResponse, Object};
use serde_json::Value;

/// An RFC 9457 problem. `type` is a stable URN per kind (`urn:ordo:problem:not-found`);
/// the extra members say what a client needs to act.
#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// What `type`, `title` and `status` are made from.
    #[oai(skip)]
    pub code: ProblemCode,
    #[oai(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For `invalid-transition`: the state the instance is in, and the events allowed there.
    #[oai(skip_serializing_if_is_none)]
    pub state: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub allowed: Option<Vec<String>>,
    /// For `guard-failed`: the guard's name; for `invalid-input` and `check-failed`: the field.
    #[oai(skip_serializing_if_is_none)]
    pub guard: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
    /// For `resource-check`: which row would break its check.
    #[oai(skip_serializing_if_is_none)]
    pub resource: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub key: Option<String>,
    /// For `stale-version`: the current version.
    #[oai(skip_serializing_if_is_none)]
    pub current_version: Option<i64>,
}

/// The events an instance allows in its current state.
#[derive(Debug, Clone, Object)]
pub struct AllowedEvents {
    pub state: String,
    pub events: Vec<String>,
}

/// One transition from an instance's journal.
#[derive(Debug, Clone, Object)]
pub struct TransitionEntry {
    pub version: i64,
    pub event: String,
    #[oai(skip_serializing_if_is_none)]
    pub from: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub to: Option<String>,
    pub params: serde_json::Value,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A page of the journal; pass `next_after` as `after` for the next one.
#[derive(Debug, Clone, Object)]
pub struct TransitionPage {
    pub items: Vec<TransitionEntry>,
    #[oai(skip_serializing_if_is_none)]
    pub next_after: Option<i64>,
}

/// An event of the feed: what changed, and the cursor that continues after it.
#[derive(Debug, Clone, Object)]
pub struct FeedEvent {
    pub cursor: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// id, tenant, machine, entity, version, event, from, to, params, at; and `traceparent`,
    /// the W3C trace context of the request that caused it.
    pub event: serde_json::Value,
}

/// A page of the tenant's events; pass `next` as `after` for the next one.
#[derive(Debug, Clone, Object)]
pub struct EventPage {
    pub items: Vec<FeedEvent>,
    /// The cursor to continue from (the given one when nothing new has committed).
    #[oai(skip_serializing_if_is_none)]
    pub next: Option<String>,
}

/// A machine's state diagram, as Mermaid text.
#[derive(ApiResponse)]
#[allow(clippy::large_enum_variant)] // a response lives for one write; boxing buys nothing
pub enum DiagramReply {
    #[oai(status = 200)]
    Ok(poem_openapi::payload::PlainText<String>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
}

/// Declares `ProblemCode`: one variant per problem `type` with its stable code, its HTTP
/// status and what it means, from one table.
macro_rules! problem_codes {
    ($($variant:ident = $code:literal, $status:literal, $title:literal;)*) => {
        /// Every kind of problem the API answers with; the `type` is `urn:ordo:problem:<code>`
        /// and the OpenAPI document lists them all.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ProblemCode {
            $($variant,)*
        }

        impl ProblemCode {
            pub const ALL: &[ProblemCode] = &[$(ProblemCode::$variant,)*];

            /// The stable code, as the `type` URN ends.
            pub fn code(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => $code,)*
                }
            }

            pub fn status(self) -> u16 {
                match self {
                    $(ProblemCode::$variant => $status,)*
                }
            }

            /// What it means, the problem's `title`.
            pub fn title(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => $title,)*
                }
            }
        }
    };
}

problem_codes! {
    NotFound = "not-found", 404, "no such instance or row for this tenant";
    InvalidInput = "invalid-input", 422, "a field or parameter breaks its declared type or check";
    InvalidTransition = "invalid-transition", 409, "the event has no transition from the current state";
    GuardFailed = "guard-failed", 422, "a `require` guard is false";
    StaleVersion = "stale-version", 412, "If-Match names another version than the current one";
    CheckFailed = "check-failed", 422, "a `set` would break a field's check";
    ResourceCheck = "resource-check", 409, "a resource change would break its check";
    MissingKey = "missing-idempotency-key", 400, "a state-changing request without Idempotency-Key";
    BadKey = "bad-idempotency-key", 400, "an Idempotency-Key that is empty, too long or not printable ASCII";
    KeyInUse = "idempotency-key-in-use", 409, "a request with this key is still in flight";
    KeyReused = "idempotency-key-reused", 422, "this key was used for a different request";
    Malformed = "malformed-request", 400, "the body or a parameter does not parse";
    UnsupportedMediaType = "unsupported-media-type", 415, "the body is not `application/json`";
    MethodNotAllowed = "method-not-allowed", 405, "the route does not serve this method; `Allow` lists those it does";
    PayloadTooLarge = "payload-too-large", 413, "the body is larger than the configured limit";
    RequestTimeout = "request-timeout", 408, "the body did not arrive within the request timeout";
    Unauthorized = "unauthorized", 401, "no valid API key";
    ShadowNotAllowed = "shadow-not-allowed", 403, "this API key may not send load-test traffic (`X-Load-Test: true`)";
    RateLimited = "rate-limited", 429, "the tenant's request rate is over its limit; retry after the given time";
    Overloaded = "overloaded", 503, "the database is busy or unavailable; retry after the given time";
    Internal = "internal", 500, "an internal error; it is logged, never described";
}

impl Default for ProblemCode {
    /// Only for `Problem`'s skipped field; every problem is built with its code.
    fn default() -> ProblemCode {
        ProblemCode::Internal
    }
}

impl Problem {
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem {
            code,
            kind: format!("urn:ordo:problem:{}", code.code()),
            title: code.title().to_string(),
            status: code.status(),
            detail: detail.into(),
            state: None,
            allowed: None,
            guard: None,
            field: None,
            resource: None,
            key: None,
            current_version: None,
        }
    }
}

/// The answer of every route: the typed body with its headers, or a problem.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "malformed")]
pub enum Reply<T: ToJSON> {
    #[oai(status = 200)]
    Ok(
        Json<T>,
        #[oai(header = "ETag")] Option<String>,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
    #[oai(status = 201)]
    Created(
        Json<T>,
        #[oai(header = "Location")] String,
        #[oai(header = "ETag")] String,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>, #[oai(header = "Idempotent-Replayed")] Option<String>),
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(
        Json<Problem>,
        #[oai(header = "Retry-After")] Option<u64>,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<Problem>, #[oai(header = "Idempotent-Replayed")] Option<String>),
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>, #[oai(header = "Idempotent-Replayed")] Option<String>),
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
}

/// A request the routes' types refuse: a body or parameter that does not parse, no
/// `Idempotency-Key` (a required header; its value is checked by `parse_key`), or a body
/// that is not JSON by its `Content-Type` (or has none).
fn malformed<T: ToJSON>(err: poem::Error) -> Reply<T> {
    if err.is::<poem_openapi::error::ContentTypeError>() {
        let detail = format!("{err}; send the body as `Content-Type: application/json`");
        return Reply::UnsupportedMediaType(Json(Problem::new(ProblemCode::UnsupportedMediaType, detail)));
    }
    match err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        Some(p) if p.name == IDEMPOTENCY_KEY => Reply::BadRequest(Json(Problem::new(
            ProblemCode::MissingKey,
            "send an Idempotency-Key header with every POST",
        ))),
        _ => Reply::BadRequest(Json(Problem::new(ProblemCode::Malformed, err.to_string()))),
    }
}

/// The header that carries a command's idempotency key.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// How long a client is told to wait after a 503.
pub const RETRY_AFTER_S: u64 = 1;

impl<T: ToJSON> Reply<T> {
    /// A route's answer with a problem: the variant of the problem's status.
    pub(crate) fn problem(p: Problem, replayed: Option<String>) -> Reply<T> {
        use ProblemCode::*;
        match p.code {
            Malformed | MissingKey | BadKey => Reply::BadRequest(Json(p)),
            Unauthorized => Reply::Unauthorized(Json(p), "Bearer".to_string()),
            ShadowNotAllowed => Reply::Forbidden(Json(p)),
            NotFound => Reply::NotFound(Json(p), replayed),
            InvalidTransition | ResourceCheck | KeyInUse => Reply::Conflict(Json(p), None, replayed),
            StaleVersion => Reply::PreconditionFailed(Json(p), replayed),
            InvalidInput | GuardFailed | CheckFailed | KeyReused => Reply::Unprocessable(Json(p), replayed),
            RateLimited => Reply::TooManyRequests(Json(p), RETRY_AFTER_S),
            Overloaded => Reply::Unavailable(Json(p), RETRY_AFTER_S),
            Internal => Reply::Internal(Json(p)),
            UnsupportedMediaType => Reply::UnsupportedMediaType(Json(p)),
            PayloadTooLarge | RequestTimeout | MethodNotAllowed => {
                // The middleware answers these before any route runs.
                tracing::error!(code = p.code.code(), "a route answered a problem only the middleware gives");
                Reply::Internal(Json(Problem::new(Internal, "internal error")))
            }
        }
    }
}

impl Reply<Value> {
    /// The same reply with its body as the route's generated type.
    pub fn typed<T: ToJSON + ParseFromJSON>(self) -> Reply<T> {
        let parse = |v: Value| T::parse_from_json(Some(v)).map_err(|e| e.into_message());
        let internal = |e: String| {
            tracing::error!(error = %e, "a stored body does not fit its generated type");
            Reply::Internal(Json(Problem::new(ProblemCode::Internal, "internal error")))
        };
        match self {
            Reply::Ok(Json(v), etag, r) => parse(v).map_or_else(internal, |t| Reply::Ok(Json(t), etag, r)),
            Reply::Created(Json(v), loc, etag, r) => {
                parse(v).map_or_else(internal, |t| Reply::Created(Json(t), loc, etag, r))
            }
            Reply::BadRequest(p) => Reply::BadRequest(p),
            Reply::Unauthorized(p, w) => Reply::Unauthorized(p, w),
            Reply::Forbidden(p) => Reply::Forbidden(p),
            Reply::NotFound(p, r) => Reply::NotFound(p, r),
            Reply::Conflict(p, a, r) => Reply::Conflict(p, a, r),
            Reply::PreconditionFailed(p, r) => Reply::PreconditionFailed(p, r),
            Reply::UnsupportedMediaType(p) => Reply::UnsupportedMediaType(p),
            Reply::Unprocessable(p, r) => Reply::Unprocessable(p, r),
            Reply::TooManyRequests(p, a) => Reply::TooManyRequests(p, a),
            Reply::Internal(p) => Reply::Internal(p),
            Reply::Unavailable(p, a) => Reply::Unavailable(p, a),
        }
    }
}

/// `"3"` (or `W/"3"`, or a bare `3`) to version 3.
pub(crate) fn parse_etag(s: &str) -> Option<i64> {
    s.trim().trim_start_matches("W/").trim_matches('"').parse().ok()
}

pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The JSON body of an instance or row: id, state, version, timestamps, and its fields.
pub fn body(r: &StoredRow) -> Value {
    let mut m = r.fields.clone();
    if r.state.is_some() {
        m.insert("id".to_string(), Value::from(r.id.clone()));
    }
    if let Some(s) = &r.state {
        m.insert("state".to_string(), Value::from(s.clone()));
    }
    m.insert("version".to_string(), Value::from(r.version));
    let time = |t: &chrono::DateTime<chrono::Utc>| {
        Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    m.insert("created_at".to_string(), time(&r.created_at));
    m.insert("updated_at".to_string(), time(&r.updated_at));
    Value::Object(m)
}

pub(crate) fn reply(done: &Executed, cmd: &Command) -> Reply<Value> {
    let replayed = done.replayed.then(|| "true".to_string());
    match &done.outcome {
        Outcome::Applied { row: instance } => {
            let tag = etag(instance.version);
            if let Action::Create { .. } = cmd.action {
                // Machines are served at their table's name: `/orders/{id}`.
                let location = format!("/{}/{}", ordo_spec::ir::table_name(&instance.name), instance.id);
                Reply::Created(Json(body(instance)), location, tag, replayed)
            } else {
                Reply::Ok(Json(body(instance)), Some(tag), replayed)
            }
        }
        Outcome::Rejected { rejection } => Reply::problem(problem(rejection), replayed),
    }
}

pub(crate) fn problem(r: &Rejection) -> Problem {
    match r {
        Rejection::NotFound => Problem::new(ProblemCode::NotFound, "no such instance for this tenant"),
        Rejection::InvalidInput { field, reason } => {
            let mut p = Problem::new(ProblemCode::InvalidInput, format!("`{field}` {reason}"));
            p.field = Some(field.clone());
            p
        }
        Rejection::WrongState { state, allowed } => {
            let mut p =
                Problem::new(ProblemCode::InvalidTransition, format!("not allowed in state `{state}`"));
            p.state = Some(state.clone());
            p.allowed = Some(allowed.clone());
            p
        }
        Rejection::GuardFailed { guard, condition } => {
            let mut p = Problem::new(ProblemCode::GuardFailed, format!("`{condition}` does not hold"));
            p.guard = Some(guard.clone());
            p
        }
        Rejection::StaleVersion { current } => {
            let mut p = Problem::new(ProblemCode::StaleVersion, format!("the current version is {current}"));
            p.current_version = Some(*current);
            p
        }
        Rejection::CheckFailed { field, reason } => {
            let mut p = Problem::new(ProblemCode::CheckFailed, format!("`{field}`: {reason}"));
            p.field = Some(field.clone());
            p
        }
        Rejection::ResourceCheck { resource, key, field } => {
            let mut p = Problem::new(
                ProblemCode::ResourceCheck,
                format!("{resource} `{key}`: `{field}` would break its check"),
            );
            p.resource = Some(resource.clone());
            p.key = Some(key.clone());
            p.field = Some(field.clone());
            p
        }
        Rejection::KeyReused => {
            Problem::new(ProblemCode::KeyReused, "this key was used for a different request")
        }
    }
}

pub(crate) fn store_error(e: StoreError) -> Reply<Value> {
    match e {
        StoreError::Busy { .. } | StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "overloaded");
            Reply::problem(Problem::new(ProblemCode::Overloaded, "busy; retry after the given time"), None)
        }
        StoreError::UnknownTarget(what) => {
            Reply::problem(Problem::new(ProblemCode::NotFound, format!("unknown {what}")), None)
        }
        StoreError::Invalid(what) => Reply::problem(Problem::new(ProblemCode::Malformed, what), None),
        other => {
            tracing::error!(error = %other, "internal error");
            Reply::problem(Problem::new(ProblemCode::Internal, "internal error"), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route's answer has the status its problem says: one table, one mapping.
    #[test]
    fn every_route_problem_answers_with_its_own_status() {
        let middleware_only =
            [ProblemCode::PayloadTooLarge, ProblemCode::RequestTimeout, ProblemCode::MethodNotAllowed];
        let mut codes = std::collections::BTreeSet::new();
        for &code in ProblemCode::ALL {
            assert!(codes.insert(code.code()), "`{}` is the code of two problems", code.code());
            let reply = Reply::<Value>::problem(Problem::new(code, "detail"), None);
            let status = poem::IntoResponse::into_response(reply).status().as_u16();
            if middleware_only.contains(&code) {
                assert_eq!(status, 500, "{code:?} is the middleware's to answer");
            } else {
                assert_eq!(status, code.status(), "{code:?}");
            }
        }
    }
}
