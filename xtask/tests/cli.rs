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

/// The edit loop never waits on the specs compiling: `xtask` (what `spec check`, `fmt`,
/// `graph` and `migrate plan` run in) links no crate whose build reads `specs/`.
#[test]
fn xtask_never_links_the_server() {
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["tree", "-p", "xtask", "-e", "normal,build", "--prefix", "none", "--offline"])
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "{}", stderr(&out));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("ordo-store"), "{tree}");
    assert!(!tree.contains("ordo-server"), "xtask must build while a spec is broken: {tree}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ordo-xtask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn check_reports_a_typo_in_a_spec_and_exits_1() {
    let dir = scratch("typo");
    let order = std::fs::read_to_string(root().join("specs/order.ordo")).expect("order spec");
    let file = dir.join("order.ordo");
    std::fs::write(&file, order.replacen("on pay: pending -> paid", "on pay: pendng -> paid", 1))
        .expect("write");
    let out = xtask(&["spec", "check", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error[ordo::unknown-state]") && err.contains("did you mean `pending`?"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn spec_diff_classifies_and_fails_on_destructive_or_unmapped_changes() {
    let dir = scratch("diff");
    let old = root().join("specs/order.ordo");
    let text = std::fs::read_to_string(&old).expect("order spec");
    let safe = dir.join("safe.ordo");
    std::fs::write(
        &safe,
        text.replacen("    tracking: text?\n", "    tracking: text?\n    gift: bool?\n", 1),
    )
    .expect("write");
    let out = xtask(&["spec", "diff", old.to_str().expect("utf-8"), safe.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.starts_with("safe online") && stdout.contains("Order.gift: new optional field"),
        "{stdout}"
    );

    let dropped = dir.join("dropped.ordo");
    std::fs::write(
        &dropped,
        text.replacen("    tracking: text?\n", "", 1).replace("        set tracking = tracking\n", ""),
    )
    .expect("write");
    let out = xtask(&["spec", "diff", old.to_str().expect("utf-8"), dropped.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("destructive: Order.tracking: field dropped"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn migrate_plans_applies_and_shows_the_history_of_a_sqlite_database() {
    let dir = scratch("migrate");
    let url = format!("sqlite://{}?mode=rwc", dir.join("ordo.db").display());
    let spec = dir.join("order.ordo");
    let text = std::fs::read_to_string(root().join("specs/order.ordo")).expect("order spec");
    std::fs::write(&spec, &text).expect("write");
    let path = spec.to_str().expect("utf-8");
    let out = xtask(&["migrate", "plan", "--database-url", &url, path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no tables yet"), "plan writes nothing");
    assert!(xtask(&["migrate", "up", "--database-url", &url, path]).status.success());

    std::fs::write(
        &spec,
        text.replacen("    state paid,", "    state held, paid,", 1).replacen(
            "    on deliver: shipped -> delivered\n",
            "    on deliver: shipped -> delivered\n    on hold: paid -> held\n    on release: held -> paid\n",
            1,
        ),
    )
    .expect("write");
    let out = xtask(&["migrate", "plan", "--database-url", &url, path]);
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && plan.contains("new state `held`") && plan.contains("CREATE TABLE"),
        "{plan}"
    );
    let out = xtask(&["migrate", "status", "--database-url", &url, path]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the spec on disk differs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = xtask(&["migrate", "up", "--database-url", &url, path]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("now at version 2"),
        "{}",
        stderr(&out)
    );
    let out = xtask(&["migrate", "status", "--database-url", &url, path]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status.contains("version 1 applied") && status.contains("version 2 applied"), "{status}");
    assert!(status.contains("the spec on disk is the deployed one"), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
