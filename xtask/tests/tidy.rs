//! Tidy checks over the tree (after rust-analyzer's and TigerBeetle's): rules a linter does
//! not know.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            if !path.ends_with("target") {
                rust_sources(&path, out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Every named limit or default (`pub const ..._MAX`, `..._DEFAULT`, `..._MS`) says what it
/// bounds, in a doc comment right above it.
#[test]
fn every_limit_is_documented() {
    let mut files = Vec::new();
    rust_sources(&root().join("crates"), &mut files);
    let mut undocumented = Vec::new();
    let mut seen = 0;
    for file in files.iter().filter(|f| f.components().any(|c| c.as_os_str() == "src")) {
        let text = std::fs::read_to_string(file).expect("readable");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let Some(rest) = t.strip_prefix("pub const ") else { continue };
            let name = rest.split(':').next().unwrap_or_default().trim();
            let is_limit = name.ends_with("_MAX") || name.ends_with("_DEFAULT") || name.contains("_MS");
            let documented = i > 0 && lines[i - 1].trim_start().starts_with("///");
            seen += usize::from(is_limit);
            if is_limit && !documented {
                undocumented.push(format!("{}:{}: {name}", file.display(), i + 1));
            }
        }
    }
    assert!(seen > 15, "the scan found only {seen} limits: is it still looking in the right place?");
    assert!(undocumented.is_empty(), "limits without a doc comment:\n{}", undocumented.join("\n"));
}

/// No test is ignored without a reason a reader can see.
#[test]
fn no_silent_ignores() {
    let mut files = Vec::new();
    rust_sources(&root().join("crates"), &mut files);
    rust_sources(&root().join("xtask"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for (i, line) in text.lines().enumerate() {
            if line.trim() == "#[ignore]" {
                panic!("{}:{}: #[ignore] needs a reason: #[ignore = \"why\"]", file.display(), i + 1);
            }
        }
    }
}

/// Every spec the repository ships checks clean and is formatted (the same as
/// `cargo xtask spec check` and `spec fmt --check`).
#[test]
fn shipped_specs_check_and_are_formatted() {
    for entry in std::fs::read_dir(root().join("specs")).expect("specs/") {
        let path = entry.expect("entry").path();
        let source = std::fs::read_to_string(&path).expect("readable");
        assert!(ordo_spec::compile(&source).is_ok(), "{} does not check", path.display());
        assert_eq!(
            ordo_spec::fmt::format(&source).ok().as_deref(),
            Some(source.as_str()),
            "{} is not formatted",
            path.display()
        );
    }
}

/// Every Rust file opens with a `//!` doc saying what it holds.
#[test]
fn every_module_has_a_doc() {
    let mut files = Vec::new();
    rust_sources(&root().join("crates"), &mut files);
    rust_sources(&root().join("xtask"), &mut files);
    assert!(files.len() > 50, "the scan found only {} files", files.len());
    let undocumented: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("readable");
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "files without a `//!` doc:\n{}", undocumented.join("\n"));
}

/// The crates a package links in a normal build (`cargo tree -e normal`, this platform).
fn linked(package: &str) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--offline", "--format", "{p}"])
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The layering ARCHITECTURE.md states: the language and its interpreter know nothing of
/// databases, HTTP or Redis; the store nothing of HTTP or Redis; the idempotency contract nothing of SQL or
/// HTTP; only the server speaks HTTP as a server (poem); the pressure test never links it.
#[test]
fn dependency_rules_hold() {
    let sql = ["sqlx", "sqlx-core", "sea-orm", "sea-query", "sea-orm-migration"];
    let http = ["poem", "poem-openapi", "hyper", "reqwest"];
    let redis = ["fred", "redis-protocol"];
    let rules: &[(&str, Vec<&str>)] = &[
        ("ordo-spec", [&sql[..], &http, &redis, &["tokio", "ordo-store", "ordo-server"]].concat()),
        // The reference interpreter knows what a spec means, not how any store keeps it.
        ("ordo-model", [&sql[..], &http, &redis, &["tokio", "ordo-store", "ordo-server"]].concat()),
        ("ordo-conform", vec!["poem", "poem-openapi", "ordo-server"]),
        ("ordo-lsp", [&sql[..], &http, &redis, &["tokio", "ordo-store", "ordo-server"]].concat()),
        ("ordo-store", [&http[..], &redis, &["ordo-server", "ordo-idempotency"]].concat()),
        ("ordo-idempotency", [&sql[..], &http, &["ordo-store", "ordo-server"]].concat()),
        ("ordo-codegen", [&sql[..], &http, &redis].concat()),
        ("ordo-record", [&sql[..], &http, &redis, &["tokio"]].concat()),
        ("ordo-pressure", vec!["poem", "poem-openapi", "ordo-server"]),
        ("ordo-consumer", vec!["poem", "poem-openapi", "ordo-server"]),
        ("ordo-testkit", vec!["poem", "poem-openapi", "ordo-server"]),
        ("xtask", vec!["poem", "poem-openapi", "ordo-server"]),
    ];
    let mut broken = Vec::new();
    for (package, forbidden) in rules {
        let crates = linked(package);
        assert!(crates.iter().any(|c| c == package), "cargo tree -p {package} listed nothing: {crates:?}");
        for c in crates.iter().filter(|c| forbidden.contains(&c.as_str())) {
            broken.push(format!("{package} links {c}"));
        }
    }
    // The rule's positive side, so the scan cannot pass by finding nothing.
    assert!(linked("ordo-server").iter().any(|c| c == "poem"), "ordo-server no longer links poem?");
    broken.sort();
    broken.dedup();
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

/// One build reused: every member outside `.config/hakari.toml`'s excludes depends on the
/// workspace-hack crate, so the server, the tests and xtask agree on the features of what they
/// share and a `cargo build` after `cargo test` recompiles nothing but our own crates. A new
/// member that forgets it brings the 40-crate rebuild back; `cargo hakari generate` then
/// refreshes crates/ordo-hack.
#[test]
fn every_linking_member_uses_the_workspace_hack() {
    let hakari = std::fs::read_to_string(root().join(".config/hakari.toml")).expect("hakari.toml");
    let excluded = hakari
        .lines()
        .find_map(|l| l.strip_prefix("workspace-members = "))
        .expect("hakari.toml lists its excluded members");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("entry").path().join("Cargo.toml"))
        .collect();
    manifests.push(root().join("xtask/Cargo.toml"));
    let mut checked = 0;
    let mut missing = Vec::new();
    for manifest in manifests {
        let text =
            std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .unwrap_or_else(|| panic!("{}: no package name", manifest.display()))
            .trim_matches('"');
        if name == "ordo-hack" || excluded.contains(&format!("\"{name}\"")) {
            continue;
        }
        checked += 1;
        if !text.contains("ordo-hack.workspace = true") {
            missing.push(name.to_string());
        }
    }
    assert!(checked >= 5, "found only {checked} members to check");
    assert!(missing.is_empty(), "members without `ordo-hack.workspace = true`: {missing:?}");
}
