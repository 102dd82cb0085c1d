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
    // Every problem type is declared in the document.
    for (code, ..) in ordo_server::api::PROBLEM_TYPES {
        assert!(expected.contains(&format!("urn:ordo:problem:{code}")), "{code}");
    }
}
