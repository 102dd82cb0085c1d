//! Generates the typed routes of the shipped specs into `OUT_DIR/generated.rs`, so that
//! editing a spec and running `cargo run` is the whole loop.

use std::path::Path;

fn main() {
    let specs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs");
    // `specs/order.ordo` in messages, not `crates/ordo-server/../../specs/order.ordo`.
    let specs_dir = specs_dir.canonicalize().unwrap_or(specs_dir);
    println!("cargo::rerun-if-changed={}", specs_dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&specs_dir)
        .expect("specs/ exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ordo"))
        .collect();
    files.sort();
    let mut specs = Vec::new();
    let mut embedded = String::from(
        "/// The specs this server was built from: (name, source).\npub const SPECS: &[(&str, &str)] = &[\n",
    );
    for file in &files {
        println!("cargo::rerun-if-changed={}", file.display());
        let name = file.file_stem().and_then(|s| s.to_str()).expect("spec name").to_string();
        let source = std::fs::read_to_string(file).expect("spec readable");
        match ordo_spec::compile(&source) {
            Ok(spec) => specs.push((name.clone(), spec)),
            Err(diags) => {
                // The checker's own report, once, and no panic backtrace: cargo shows a
                // failed build script's stderr under the error.
                eprint!("{}", ordo_spec::render(&file.display().to_string(), &source, &diags));
                eprintln!("{} does not check; `cargo xtask spec check` reports the same", file.display());
                println!(
                    "cargo::error={} has {} error(s): see the report below",
                    file.display(),
                    diags.len()
                );
                std::process::exit(1);
            }
        }
        embedded.push_str(&format!("    ({name:?}, include_str!({:?})),\n", file.display().to_string()));
    }
    embedded.push_str("];\n");
    let code = format!("{embedded}\n{}", ordo_codegen::generate(&specs));
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("generated.rs");
    if std::fs::read_to_string(&out).ok().as_deref() != Some(code.as_str()) {
        std::fs::write(&out, code).expect("write generated.rs");
    }
}
