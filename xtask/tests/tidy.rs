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
