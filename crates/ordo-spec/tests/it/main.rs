//! The one integration-test binary of ordo-spec (one binary per crate keeps link times down).

mod corpus;
mod diff;
mod expr;
mod fmt;
mod generated;
mod limits;
mod outputs;
mod props;

use std::path::{Path, PathBuf};

/// `crates/ordo-spec/tests/corpus/<kind>/*.ordo`, sorted.
pub fn corpus(kind: &str) -> Vec<PathBuf> {
    ordo_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(kind))
}

/// The specs this repository ships, `specs/*.ordo`, sorted.
pub fn shipped_specs() -> Vec<PathBuf> {
    ordo_files(&workspace_root().join("specs"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ordo_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ordo"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .ordo files in {}", dir.display());
    files
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A path as `kind/name.ordo`, stable across machines, for rendered diagnostics.
pub fn short_name(path: &Path) -> String {
    let parent = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    format!("{parent}/{name}")
}
