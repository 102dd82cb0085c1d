//! The code generated for the shipped specs is pinned by a snapshot: a change to the
//! generator (or to a shipped spec) shows up as a diff of the code the server compiles,
//! reviewed with `cargo insta review`, never unseen.

use std::path::Path;

#[test]
fn code_generated_for_the_shipped_specs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("specs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ordo"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "found only {files:?}");
    let specs: Vec<(String, ordo_spec::ir::Spec)> = files
        .iter()
        .map(|f| {
            let source = std::fs::read_to_string(f).expect("readable");
            let name = f.file_stem().and_then(|s| s.to_str()).expect("a spec name").to_string();
            let ir = ordo_spec::compile(&source)
                .unwrap_or_else(|d| panic!("{}", ordo_spec::render(&name, &source, &d)));
            (name, ir)
        })
        .collect();
    insta::assert_snapshot!(ordo_codegen::generate(&specs));
}
