//! `docs/openapi.json` is the document the server serves. Like rust-analyzer's
//! `ensure_file_contents`, a stale file is rewritten and the test fails, so the fix is to
//! commit what the test wrote.

#[test]
fn checked_in_openapi_is_fresh() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let expected = ordo_server::startup::openapi_json() + "\n";
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        if std::env::var_os("CI").is_none() {
            std::fs::write(&path, &expected).unwrap();
        }
        panic!("{} was stale; it has been regenerated (outside CI): review and commit it", path.display());
    }
    // The page limits the document states are the store's.
    let doc: serde_json::Value = serde_json::from_str(&expected).unwrap();
    let limit = |path: &str| {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap().clone();
        params.into_iter().find(|p| p["name"] == "limit").unwrap()["schema"]["maximum"].as_f64().unwrap()
    };
    assert_eq!(limit("/events"), ordo_store::EVENTS_PAGE_MAX as f64);
    assert_eq!(limit("/orders/{id}/transitions"), ordo_store::JOURNAL_PAGE_MAX as f64);
    // Every problem type is declared in the document.
    for code in ordo_server::api::ProblemCode::ALL {
        let code = code.code();
        assert!(expected.contains(&format!("urn:ordo:problem:{code}")), "{code}");
    }
}

/// The document a server with API keys serves is the checked-in one, but for where it is
/// served from; a server without keys serves it without the bearer scheme and without
/// 401s, since it asks for none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_checked_in_one() {
    use crate::*;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let checked_in: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let key = "k".repeat(ordo_server::api::API_KEY_BYTES_MIN);
    let keyed = api(ordo_testkit::Backend::Sqlite, |c| c.api_keys = format!("t1:{key}")).await;
    let mut served: serde_json::Value = serde_json::from_str(&keyed.get("/openapi.json").await.text).unwrap();
    assert_ne!(served["servers"], checked_in["servers"], "a server names where it listens");
    served["servers"] = checked_in["servers"].clone();
    assert!(served == checked_in, "the served document differs from docs/openapi.json");

    let open = api(ordo_testkit::Backend::Sqlite, |_| {}).await;
    let served: serde_json::Value = serde_json::from_str(&open.get("/openapi.json").await.text).unwrap();
    assert!(served.get("security").is_none() && served["components"].get("securitySchemes").is_none());
    let text = served.to_string();
    assert!(!text.contains("\"401\""), "a server without keys never answers 401");
    assert!(text.contains("\"201\"") && text.contains("\"412\""));
}

/// Every change the feed gives has exactly the fields the document types it with: the
/// required ones, and nothing undocumented (a create, an event and an operation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_events_have_the_documented_fields() {
    use crate::*;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let schema = &doc["components"]["schemas"]["FeedEvent"]["properties"]["event"];
    let documented: Vec<&str> =
        schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let required: Vec<&str> =
        schema["required"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    let api = stocked(ordo_testkit::Backend::Sqlite).await;
    let placed = api.post("/orders", "feed-place", order()).await;
    let id = placed.body["id"].as_str().unwrap().to_string();
    api.post(&format!("/orders/{id}/pay"), "feed-pay", serde_json::json!({})).await;
    let page = api.get("/events").await;
    let items = page.body["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["event"]["event"].as_str()).collect();
    assert!(kinds.contains(&"place") && kinds.contains(&"pay") && kinds.contains(&"restock"), "{kinds:?}");
    for item in items {
        let change = item["event"].as_object().unwrap();
        for field in change.keys() {
            assert!(documented.contains(&field.as_str()), "undocumented `{field}` in {change:?}");
        }
        for field in &required {
            assert!(change.contains_key(*field), "no `{field}` in {change:?}");
        }
    }
}
