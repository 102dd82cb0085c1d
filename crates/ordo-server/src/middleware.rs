//! What wraps every request, routed or not: the body limit and the request timeout, a
//! request id, the request span joined to the caller's `traceparent`, a panic contained as
//! that request's 500, the `Allow` header of a 405, the latency histogram and the traffic
//! recording. Its answers are problem+json like the routes'.

use crate::api::{Problem, ProblemCode};
use crate::record::{Recorder, TrafficRecord};
use crate::telemetry::Metrics;
use poem::http::{HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use std::sync::Arc;
use std::time::Duration;

/// The request id a caller may send (`X-Request-Id`) is kept up to this many bytes; a
/// longer one is replaced by a new id.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// The state the middleware needs, shared by every request.
pub struct Edge {
    pub metrics: Arc<Metrics>,
    pub recorder: Option<Arc<Recorder>>,
    pub routes: Routes,
    pub timeout: Duration,
    pub body_bytes_max: usize,
}

impl Edge {
    /// Serves one request through `ep` within the limits, and reports it.
    pub async fn serve<E: Endpoint>(&self, ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
        let started = std::time::Instant::now();
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let route = crate::telemetry::route_of(&path);
        let shadow = crate::api::is_shadow(&req).unwrap_or(false);
        let arrived_ms = chrono::Utc::now().timestamp_millis();
        let key =
            self.recorder.as_ref().and_then(|_| req.header("idempotency-key")).map(crate::record::key_hash);
        let deadline = tokio::time::Instant::now() + self.timeout;
        if let Err(refused) = self.read_body(&mut req, deadline).await {
            return Ok(refused);
        }
        let request_id = request_id(&req);
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
        let call =
            tracing::Instrument::instrument(tokio::time::timeout_at(deadline, ep.call(req)), span.clone());
        // Errors of the routing itself (404, 405) become their responses here, so that
        // metrics and the recording see their real status.
        let mut response = match call.await {
            Ok(Ok(r)) => r.into_response(),
            Ok(Err(e)) => e.into_response(),
            Err(_) => problem_response(Problem::new(ProblemCode::Overloaded, "the request took too long")),
        };
        // The router's own 404 and 405 are problems like every other answer; a 405 says
        // which methods the route serves (RFC 9110).
        let plain = response.headers().get("content-type").is_none_or(|t| t != "application/problem+json");
        match response.status() {
            StatusCode::NOT_FOUND if plain => {
                response = problem_response(Problem::new(
                    ProblemCode::NotFound,
                    format!("no route {method} {path}"),
                ));
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                let allow = self.routes.at(&path).map(|r| r.methods.as_str());
                if plain {
                    let detail =
                        format!("{path} does not serve {method}; it serves {}", allow.unwrap_or("nothing"));
                    response = problem_response(Problem::new(ProblemCode::MethodNotAllowed, detail));
                }
                if let Some(v) = allow.and_then(|m| HeaderValue::from_str(m).ok()) {
                    response.headers_mut().insert("allow", v);
                }
            }
            _ => {}
        }
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        self.metrics.http(&method, &route, status, shadow, elapsed.as_secs_f64());
        span.record("status", status);
        if let Some(recorder) = self.recorder.as_ref().filter(|_| crate::record::recorded(&route)) {
            recorder.record(TrafficRecord { at_ms: arrived_ms, method, route, status, key, shadow });
        }
        tracing::debug!(parent: &span, status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        Ok(response)
    }

    /// Reads the body within the limit and the request's time, or answers for it: a
    /// declared length past the limit is refused before reading, a body without one is read
    /// only up to it; a client that stops sending mid-body is answered 408 and holds
    /// nothing past it, and one that closes mid-body is a 400. An empty body where the
    /// route's body may be left out reads as `{}`.
    async fn read_body(&self, req: &mut Request, deadline: tokio::time::Instant) -> Result<(), Response> {
        let max = self.body_bytes_max;
        let too_large = || {
            problem_response(Problem::new(
                ProblemCode::PayloadTooLarge,
                format!("bodies are limited to {max} bytes"),
            ))
        };
        let declared = req.header("content-length").and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(too_large());
        }
        match tokio::time::timeout_at(deadline, req.take_body().into_bytes_limit(max)).await {
            Ok(Ok(bytes)) => {
                if bytes.is_empty() && self.routes.body_may_be_left_out(req) {
                    req.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                    req.set_body("{}");
                } else {
                    req.set_body(bytes);
                }
                Ok(())
            }
            Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => Err(too_large()),
            Ok(Err(e)) => Err(problem_response(Problem::new(
                ProblemCode::Malformed,
                format!("the body could not be read: {e}"),
            ))),
            Err(_) => Err(problem_response(Problem::new(
                ProblemCode::RequestTimeout,
                "the body did not arrive within the request timeout",
            ))),
        }
    }
}

/// A request id for every log line of the request: the caller's, when it sends a sane
/// one, else a new one; echoed in the response.
fn request_id(req: &Request) -> String {
    req.header("x-request-id")
        .filter(|v| {
            !v.is_empty() && v.len() <= REQUEST_ID_BYTES_MAX && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string)
}

/// What the middleware knows of each route from the OpenAPI document (`{param}` segments
/// match any one segment) and the plain routes (all GET): the methods it serves, for the
/// `Allow` header of a 405; and whether its POST may come without a body (an event without
/// parameters), which then reads as `{}`.
pub struct Routes(Vec<Route>);

struct Route {
    template: Vec<String>,
    methods: String,
    optional_body: bool,
}

impl Routes {
    pub fn of(document: &str) -> Routes {
        let doc: serde_json::Value = serde_json::from_str(document).expect("the OpenAPI document is JSON");
        let mut routes: Vec<Route> = doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(path, ops)| {
                let methods: Vec<String> =
                    ops.as_object().into_iter().flatten().map(|(m, _)| m.to_ascii_uppercase()).collect();
                Route {
                    template: path.split('/').map(str::to_string).collect(),
                    methods: methods.join(", "),
                    optional_body: ops["post"]["requestBody"]["required"] == false,
                }
            })
            .collect();
        for plain in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
            let template = plain.split('/').map(str::to_string).collect();
            routes.push(Route { template, methods: "GET".to_string(), optional_body: false });
        }
        Routes(routes)
    }

    fn at(&self, path: &str) -> Option<&Route> {
        let segments: Vec<&str> = path.split('/').collect();
        self.0.iter().find(|r| {
            r.template.len() == segments.len()
                && r.template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        })
    }

    /// Whether this POST, with no body, is one whose body may be left out (then it reads as
    /// `{}`, as if the client had sent that): its `Content-Type`, if it has one, says JSON
    /// (some generated clients send one with no body).
    fn body_may_be_left_out(&self, req: &Request) -> bool {
        let json = req.header("content-type").is_none_or(|t| {
            t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        req.method() == poem::http::Method::POST
            && json
            && self.at(req.uri().path()).is_some_and(|r| r.optional_body)
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
    let status = StatusCode::from_u16(p.status).expect("every problem code has a valid HTTP status");
    let body =
        poem_openapi::types::ToJSON::to_json(&p).expect("a Problem serializes to a JSON object").to_string();
    let mut r = Response::builder().status(status).content_type("application/problem+json");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r = r.header("Retry-After", crate::api::RETRY_AFTER_S.to_string());
    }
    r.body(body)
}
