//! The OpenAPI document as served and checked in (`docs/openapi.json`): what poem-openapi
//! writes from the generated routes, then made to say what the server enforces. The
//! fields' checks and the parameters' patterns as schema keywords (`generated::
//! SCHEMA_KEYWORDS`, `PARAMETER_KEYWORDS`); for each operation exactly the responses it
//! can give, each described, with conventional header names (poem-openapi writes every
//! route's one `Reply` type, all twelve statuses, headers in capitals); the bearer scheme
//! and the one public route; the problem `type`s as an enum; each machine's allowed events
//! as enums; links from an answer to what can be done next; examples; `servers`; and a
//! body that an event without parameters may leave out.

use crate::api::ProblemCode;
use ordo_store::SpecSource;
use serde_json::{Value, json};

/// Where the checked-in document says the server is: the default `ORDO_LISTEN`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// What a route is, as far as its answers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A GET of the API (an instance, a row, a journal, the feed).
    Read,
    /// `POST /<machines>`: a keyed create.
    Create,
    /// `POST /<machines>/{id}/<event>`: a keyed event (with `If-Match`).
    Event,
    /// `POST /<resource>/{key}/<operation>`: a keyed operation on a resource row.
    Operation,
}

impl Kind {
    /// `None`: a route of no tenant (it answers no 401), the machines' diagrams.
    fn of(method: &str, path: &str, op: &Value) -> Option<Kind> {
        let has = |name: &str| {
            op["parameters"].as_array().into_iter().flatten().any(|p| p["name"].as_str() == Some(name))
        };
        op["responses"].get("401")?;
        match method {
            "get" => Some(Kind::Read),
            "post" if !has("Idempotency-Key") => None,
            "post" if !path.contains('{') => Some(Kind::Create),
            "post" if has("If-Match") => Some(Kind::Event),
            "post" => Some(Kind::Operation),
            _ => None,
        }
    }

    /// Every status the route can answer, and what each means; `keyed`: the server asks
    /// for API keys.
    fn statuses(self, keyed: bool) -> Vec<(&'static str, &'static str)> {
        let mut s = match self {
            Kind::Read => vec![("200", "Found.")],
            Kind::Create => vec![("201", "Created, or the replay of the request first sent with this key.")],
            Kind::Event | Kind::Operation => {
                vec![("200", "Applied, or the replay of the request first sent with this key.")]
            }
        };
        s.push((
            "400",
            "A parameter or the body does not parse, or the Idempotency-Key is missing or malformed.",
        ));
        if keyed {
            s.push(("401", "No valid API key (`Authorization: Bearer <key>`)."));
        }
        s.push(("403", "This API key may not send load-test traffic (`X-Load-Test: true`)."));
        if matches!(self, Kind::Read | Kind::Event) {
            s.push(("404", "No such instance or row for this tenant."));
        }
        if self != Kind::Read {
            s.push(("408", "The body did not arrive within the request timeout."));
            s.push((
                "409",
                "The event has no transition from the current state (`allowed` lists those that do), a \
                 resource change would break its check, or a request with this key is still in flight \
                 (retry after `Retry-After`).",
            ));
        }
        if self == Kind::Event {
            s.push(("412", "`If-Match` names another version than the current one (`current_version`)."));
        }
        if self != Kind::Read {
            s.push(("413", "The body is larger than the configured limit."));
            s.push(("415", "The body is not `application/json`."));
            s.push((
                "422",
                "A field or parameter breaks its check, a guard is false, or this key was used for a \
                 different request.",
            ));
        }
        s.push(("429", "The tenant's request rate is over its limit; retry after `Retry-After`."));
        s.push(("500", "An internal error; it is logged, never described."));
        s.push(("503", "The database is busy or unavailable; retry after `Retry-After`."));
        s
    }
}

/// The document poem-openapi wrote (`spec`), made to say what the server enforces;
/// `server` is where it is served from; `keyed`: it asks for API keys (`ORDO_API_KEYS`), as
/// every deployment but a single-tenant one on loopback does, and as the checked-in
/// document says. A server without keys serves a document without the bearer scheme and
/// without 401s, since it asks for none. `specs`: the specs the routes were generated from.
pub fn documented(spec: &str, server: &str, keyed: bool, specs: &[SpecSource]) -> String {
    let mut doc: Value = serde_json::from_str(spec).expect("the OpenAPI document poem-openapi wrote is JSON");
    keywords(&mut doc);
    operations(&mut doc, keyed);
    links(&mut doc);
    allowed_events(&mut doc, specs);
    changes(&mut doc);
    problem_types(&mut doc);
    examples(&mut doc);
    first_steps(&mut doc);
    doc["servers"] = json!([{ "url": server }]);
    if keyed {
        doc["components"]["securitySchemes"] = json!({
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key of `ORDO_API_KEYS` (`tenant:key`); it names the tenant. A \
                                server started without keys serves one tenant, on a loopback address \
                                only, and asks for none.",
            }
        });
        doc["security"] = json!([{ "bearer": [] }]);
    }
    serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
}

/// The fields' checks and the parameters' patterns, as schema keywords.
fn keywords(doc: &mut Value) {
    let merge = |into: &mut Value, keywords: &str| {
        if let (Some(into), Ok(Value::Object(keywords))) =
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
}

/// Each operation's own responses, described, with their headers' usual names; the one
/// route without a key is public; a body without parameters may be left out.
fn operations(doc: &mut Value, keyed: bool) {
    let problem =
        json!({ "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } });
    for (path, ops) in doc["paths"].as_object_mut().into_iter().flatten() {
        for (method, op) in ops.as_object_mut().into_iter().flatten() {
            let Some(kind) = Kind::of(method, path, op) else {
                // The diagram: no tenant, no key.
                op["security"] = json!([]);
                describe(&mut op["responses"], &[("200", "The diagram."), ("404", "No such machine.")]);
                continue;
            };
            let statuses = kind.statuses(keyed);
            let responses = &mut op["responses"];
            if let Some(all) = responses.as_object_mut() {
                all.retain(|status, _| statuses.iter().any(|(s, _)| s == status));
                for (status, _) in &statuses {
                    // The middleware's answers: the route's own type does not list them.
                    all.entry(status.to_string()).or_insert_with(|| json!({ "content": problem.clone() }));
                }
            }
            describe(responses, &statuses);
            also_as_json(responses);
            let Some(body) = op.get_mut("requestBody") else { continue };
            if let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) {
                plain_json(content);
            }
            let no_params = body["content"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
                .any(|c| c["schema"]["$ref"] == "#/components/schemas/NoParams");
            if no_params {
                body["required"] = json!(false);
                body["description"] = json!("No parameters: `{}`, or no body and no `Content-Type` at all.");
            }
        }
    }
}

/// Media types as generators look them up: `application/json` (poem-openapi writes
/// `application/json; charset=utf-8`, which is what the server sends), and a problem also
/// as `application/json`, the one media type some generators (progenitor) type; the body
/// is the same either way, and its `Content-Type` says `application/problem+json`.
fn also_as_json(responses: &mut Value) {
    for response in responses.as_object_mut().into_iter().flat_map(|r| r.values_mut()) {
        if let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) {
            plain_json(content);
            if let Some(problem) = content.get("application/problem+json").cloned() {
                content.insert("application/json".to_string(), problem);
            }
        }
    }
}

/// `application/json; charset=utf-8` as `application/json`.
fn plain_json(content: &mut serde_json::Map<String, Value>) {
    if let Some(media) = content.remove("application/json; charset=utf-8") {
        content.insert("application/json".to_string(), media);
    }
}

/// Links from every answer that carries an instance (a create's 201, an event's 200) to
/// each operation on that instance (`/<machines>/{id}...`), its `id` (and an event's
/// `If-Match`, from the `ETag`) taken from the answer: what a client may do next, and how a tool that follows links (schemathesis's
/// stateful phase) reaches every operation with a live instance.
fn links(doc: &mut Value) {
    // The collection (`/orders`) of an operation on one instance, if it is one.
    let collection = |path: &str| {
        let mut segments = path.split('/');
        match (segments.next(), segments.next(), segments.next()) {
            (Some(""), Some(c), Some("{id}")) => Some(format!("/{c}")),
            _ => None,
        }
    };
    // (collection, operation id, its parameters taken from the answer).
    let mut on_instance: Vec<(String, String, Value)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for op in ops.as_object().into_iter().flat_map(|o| o.values()) {
            if let (Some(c), Some(id)) = (collection(path), op["operationId"].as_str()) {
                let mut parameters = json!({ "id": "$response.body#/id" });
                // An event on the version just read.
                if op["parameters"].as_array().into_iter().flatten().any(|p| p["name"] == "If-Match") {
                    parameters["header.If-Match"] = json!("$response.header.ETag");
                }
                on_instance.push((c, id.to_string(), parameters));
            }
        }
    }
    for (path, ops) in doc["paths"].as_object_mut().into_iter().flatten() {
        let Some(post) = ops.get_mut("post") else { continue };
        let (base, status) = match collection(path) {
            Some(c) if post["responses"].get("200").is_some() => (c, "200"),
            None if post["responses"].get("201").is_some() => (path.clone(), "201"),
            _ => continue,
        };
        let links: serde_json::Map<String, Value> = on_instance
            .iter()
            .filter(|(c, _, _)| *c == base)
            .map(|(_, id, parameters)| (id.clone(), json!({ "operationId": id, "parameters": parameters })))
            .collect();
        if !links.is_empty() {
            post["responses"][status]["links"] = Value::Object(links);
        }
    }
}

/// Each response's description, and its headers by their usual names with what they say.
fn describe(responses: &mut Value, statuses: &[(&str, &str)]) {
    for (status, response) in responses.as_object_mut().into_iter().flatten() {
        if let Some((_, text)) = statuses.iter().find(|(s, _)| s == status) {
            response["description"] = json!(text);
        }
        let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut) else { continue };
        let named: serde_json::Map<String, Value> = std::mem::take(headers)
            .into_iter()
            .map(|(name, mut header)| {
                let (name, what) = header_name(&name);
                header["description"] = json!(what);
                (name.to_string(), header)
            })
            .collect();
        *headers = named;
    }
}

/// A header as it is usually spelled (poem-openapi writes them in capitals), and what it says.
fn header_name(upper: &str) -> (&str, &'static str) {
    match upper.to_ascii_lowercase().as_str() {
        "etag" => ("ETag", "The instance's version, for `If-Match`."),
        "idempotent-replayed" => (
            "Idempotent-Replayed",
            "`true` when this is the stored answer of an earlier request with this key.",
        ),
        "location" => ("Location", "Where the new instance is read."),
        "retry-after" => ("Retry-After", "Seconds to wait before retrying."),
        "www-authenticate" => ("WWW-Authenticate", "`Bearer`."),
        _ => (upper, ""),
    }
}

/// The README's first five minutes, where `/docs` opens, when the shipped order spec is
/// served (its routes are in the document).
fn first_steps(doc: &mut Value) {
    let paths = ["/inventory/{key}/restock", "/wallet/{key}/deposit", "/orders", "/orders/{id}/pay"];
    if !paths.iter().all(|p| doc["paths"].get(p).is_some()) {
        return;
    }
    let steps = "## First steps\n\n\
        1. `POST /inventory/sku-1/restock` with `{\"quantity\": 10}` and `POST /wallet/acct-1/deposit` \
        with `{\"amount\": 1000}`, each with an `Idempotency-Key`.\n\
        2. `POST /orders` with `{\"sku\": \"sku-1\", \"quantity\": 2, \"account\": \"acct-1\", \"amount\": 300}`: \
        201, `ETag: \"1\"`. Sent again with the same key (a lost answer), it is answered the same, with \
        `Idempotent-Replayed: true`, and no second order is placed.\n\
        3. `POST /orders/{id}/pay` with `If-Match: \"1\"` and no body: 200, state `paid`, `ETag: \"2\"`.\n\
        4. `POST /orders/{id}/deliver`: 409 `invalid-transition` with `allowed: [\"cancel\", \"ship\"]`; \
        `POST /orders/{id}/ship` with the old `If-Match: \"1\"`: 412 `stale-version` with `current_version: 2`.\n\
        5. `GET /orders/{id}/transitions`: `place`, then `pay`.\n\n";
    let description = doc["info"]["description"].as_str().unwrap_or_default();
    doc["info"]["description"] = json!(format!("{steps}{description}"));
}

/// Each machine's allowed events (`GET /<machines>/{id}/events`, found by its tag) as a
/// schema of its own: its state the machine's state enum, its events an enum of the
/// machine's events, from the spec. The body is the shared `AllowedEvents`.
fn allowed_events(doc: &mut Value, specs: &[SpecSource]) {
    let paths: Vec<String> = doc["paths"].as_object().into_iter().flat_map(|p| p.keys().cloned()).collect();
    for m in specs.iter().flat_map(|s| &s.ir.machines) {
        let route = paths.iter().find(|p| {
            p.ends_with("/{id}/events") && doc["paths"][p.as_str()]["get"]["tags"][0] == m.name.as_str()
        });
        let Some(route) = route else { continue };
        let mut events: Vec<&str> = m.events.iter().map(|e| e.name.as_str()).collect();
        events.sort_unstable();
        // The example: the initial state, and what it allows.
        let mut initial: Vec<&str> = m.events_from(&m.initial).map(|e| e.name.as_str()).collect();
        initial.sort_unstable();
        let name = format!("{}AllowedEvents", m.name);
        doc["components"]["schemas"][&name] = json!({
            "title": name,
            "description": format!("The events a {} allows in its current state.", m.name),
            "type": "object",
            "required": ["state", "events"],
            "properties": {
                "state": { "$ref": format!("#/components/schemas/{}State", m.name) },
                "events": { "type": "array", "items": { "type": "string", "enum": events } },
            },
            "example": { "state": m.initial, "events": initial },
        });
        let reference = json!({ "$ref": format!("#/components/schemas/{name}") });
        let content = &mut doc["paths"][route.as_str()]["get"]["responses"]["200"]["content"];
        for media in content.as_object_mut().into_iter().flat_map(|c| c.values_mut()) {
            media["schema"] = reference.clone();
        }
    }
}

/// What the journal and the feed carry, typed as far as a stored history allows. A change
/// the feed gives is an object of known fields (`exec::event_payload`, the consumers'
/// contract); params are an object. Event and state names stay strings, not enums: a
/// journal keeps the names of earlier spec versions (a renamed state), and a migration's
/// moves are journaled as the event `migrate`.
fn changes(doc: &mut Value) {
    let names = "An event, create or operation name of the spec, `migrate` (a spec change moved \
                 the instance), or a name of an earlier spec version.";
    let schemas = &mut doc["components"]["schemas"];
    let text = |description: &str| json!({ "type": "string", "description": description });
    let state = |description: &str| json!({ "type": "string", "nullable": true, "description": description });
    let params = json!({
        "type": "object",
        "additionalProperties": true,
        "description": "The command's parameters, as sent (a create's fields, an event's or operation's parameters).",
    });
    schemas["FeedEvent"]["properties"]["event"] = json!({
        "type": "object",
        "description": "What changed, as the relay publishes it to Redis Streams.",
        "required": ["id", "tenant", "machine", "entity", "version", "event", "from", "to", "params", "at"],
        "properties": {
            "id": text("The journal row's id."),
            "tenant": text("The tenant."),
            "machine": text("The machine, or the resource of an operation."),
            "entity": text("The instance's id, or the resource row's key."),
            "version": { "type": "integer", "format": "int64", "description": "The instance's version after it." },
            "event": text(names),
            "from": state("The state before (null for a create or an operation)."),
            "to": state("The state after (null for an operation)."),
            "params": params.clone(),
            "at": { "type": "string", "format": "date-time" },
            "traceparent": text("The W3C trace context of the request that caused it."),
        },
    });
    let entry = &mut schemas["TransitionEntry"]["properties"];
    entry["event"]["description"] = json!(names);
    entry["from"]["description"] = json!("The state before (absent for a create).");
    entry["to"]["description"] = json!("The state after.");
    entry["params"] = params;
}

/// Examples of the schemas every spec shares (the generated ones get theirs from codegen).
fn examples(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    let entry = json!({
        "version": 2, "event": "pay", "from": "pending", "to": "paid", "params": {},
        "at": "2026-01-01T00:00:00Z",
    });
    let event = json!({
        "cursor": "7421-3", "at": "2026-01-01T00:00:00Z",
        "event": {
            "id": "01a241b6-201c-7797-a849-0be762b88efb", "tenant": "default", "machine": "Order",
            "entity": "01a241b6-201c-7797-a849-0be762b88efa", "version": 2, "event": "pay",
            "from": "pending", "to": "paid", "params": {}, "at": "2026-01-01T00:00:00Z",
        },
    });
    let fixed = [
        ("NoParams", json!({})),
        (
            "Problem",
            json!({
                "type": "urn:ordo:problem:invalid-transition", "title": ProblemCode::InvalidTransition.title(),
                "status": 409, "detail": "not allowed in state `paid`", "state": "paid", "allowed": ["cancel", "ship"],
            }),
        ),
        ("AllowedEvents", json!({ "state": "paid", "events": ["cancel", "ship"] })),
        ("TransitionEntry", entry.clone()),
        ("TransitionPage", json!({ "items": [entry], "next_after": 2 })),
        ("FeedEvent", event.clone()),
        ("EventPage", json!({ "items": [event], "next": "7421-3" })),
    ];
    for (name, example) in fixed {
        if let Some(schema) = schemas.get_mut(name) {
            schema["example"] = example;
        }
    }
}

/// A problem's `type` is one of the stable URNs.
fn problem_types(doc: &mut Value) {
    let urns: Vec<String> =
        ProblemCode::ALL.iter().map(|c| format!("urn:ordo:problem:{}", c.code())).collect();
    let kind = &mut doc["components"]["schemas"]["Problem"]["properties"]["type"];
    kind["enum"] = json!(urns);
    kind["example"] = json!("urn:ordo:problem:invalid-transition");
}
