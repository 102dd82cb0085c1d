//! The `cargo xtask spec` commands as a user runs them: output and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).current_dir(root()).args(args).output().expect("runs xtask")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_passes_on_the_shipped_specs() {
    let out = xtask(&["spec", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("checked 2 specs: no errors"), "{}", stderr(&out));
}

#[test]
fn check_fails_with_every_error_and_its_location() {
    let bad = "crates/ordo-spec/tests/corpus/bad";
    let out = xtask(&["spec", "check", bad, "specs/order.ordo"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error[ordo::unreachable-state]"), "{err}");
    assert!(err.contains(&format!("{bad}/unreachable-state.ordo:")), "relative path with line:col: {err}");
    assert!(err.contains("error(s)"), "{err}");
}

#[test]
fn check_of_a_missing_file_is_an_error() {
    let out = xtask(&["spec", "check", "specs/no-such.ordo"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such.ordo"), "{}", stderr(&out));
}

#[test]
fn fmt_check_passes_on_shipped_specs_and_fails_on_messy_ones() {
    assert!(xtask(&["spec", "fmt", "--check"]).status.success());
    let dir = std::env::temp_dir().join(format!("ordo-xtask-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("messy.ordo");
    std::fs::write(&file, "machine M{initial a final b create c on go:a->b}").expect("write");
    let path = file.to_str().expect("utf-8 path");
    let out = xtask(&["spec", "fmt", "--check", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not formatted"));
    assert!(xtask(&["spec", "fmt", path]).status.success());
    assert!(xtask(&["spec", "fmt", "--check", path]).status.success(), "formatted in place");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graph_prints_mermaid_and_dot() {
    let mermaid = xtask(&["spec", "graph", "specs/order.ordo", "--format", "mermaid"]);
    assert!(mermaid.status.success());
    assert!(String::from_utf8_lossy(&mermaid.stdout).contains("stateDiagram-v2"));
    let dot = xtask(&["spec", "graph", "specs/transfer.ordo", "--format", "dot"]);
    assert!(dot.status.success());
    assert!(String::from_utf8_lossy(&dot.stdout).starts_with("digraph \"Transfer\""));
}

#[test]
fn ir_is_json() {
    let out = xtask(&["spec", "ir", "specs/order.ordo"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["machines"][0]["name"], "Order");
}

#[test]
fn pressure_refuses_bad_stages_and_addresses_other_than_loopback() {
    let out = xtask(&["pressure", "--url", "http://127.0.0.1:9", "--stages", "100:30s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a rate such as 100/s"), "{}", stderr(&out));
    let out = xtask(&["pressure", "--url", "http://192.0.2.1:8080", "--stages", "10/s:1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("127.0.0.1 only"), "{}", stderr(&out));
    let out = xtask(&["pressure", "--url", "http://127.0.0.1:9", "--replay", "no-such-recording.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no-such-recording.jsonl"), "{}", stderr(&out));
}

#[test]
fn pressure_against_a_server_that_is_not_there_fails_at_once() {
    // Nothing listens on port 9 (discard) here: the setup fails with a clear error.
    let out = xtask(&["pressure", "--url", "http://127.0.0.1:9", "--stages", "10/s:1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("setup:") && stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
}
