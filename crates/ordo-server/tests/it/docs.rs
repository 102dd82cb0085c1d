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
