//! `cargo xtask test`, the README's test command (formatting, lints, every test, the
//! generated clients, schemathesis, small pressure and chaos runs), and `cargo xtask bench`.

use crate::{Cli, Top, cargo, chaos, pressure, services, workspace_root};
use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::Path;
use std::process::{Command, ExitCode};

/// The README's test command. Everything a change must pass, in one run, against real
/// PostgreSQL and Redis (found or started by `services`) as well as SQLite.
pub fn test(extra: &[String]) -> Result<ExitCode> {
    let root = workspace_root();
    let cargo = cargo();
    let services = services::ensure()?;
    eprintln!("== PostgreSQL: {}  Redis: {}", services.pg_url, services.redis_url);
    let steps: [(&str, Vec<&str>); 3] = [
        ("formatting", vec!["fmt", "--all", "--", "--check"]),
        ("lints", vec!["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]),
        ("tests", vec!["test", "--workspace", "--all-targets", "--locked"]),
    ];
    for (what, args) in steps {
        eprintln!("== {what}: cargo {}", args.join(" "));
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args(&args)
            .env("ORDO_TEST_PG_URL", &services.pg_url)
            .env("ORDO_TEST_REDIS_URL", &services.redis_url);
        if what == "tests" {
            cmd.args(extra);
        }
        let status = cmd.status().with_context(|| format!("running cargo {}", args.join(" ")))?;
        if !status.success() {
            eprintln!("== {what} failed");
            return Ok(ExitCode::FAILURE);
        }
    }
    eprintln!(
        "== clients: Python, TypeScript and Rust clients generated from docs/openapi.json, type-checked, and the scenario run through each"
    );
    if let Err(e) = crate::clients::clients(&root) {
        eprintln!("== clients failed: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "== editor: the TextMate grammar under VS Code's own engine (every token class, the scopes of the shipped specs), and the extension's script"
    );
    if let Err(e) = editor(&root) {
        eprintln!("== editor failed: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("== edge: schemathesis (every check, fixed seed) against the running server's /openapi.json");
    if let Err(e) = schemathesis(&root, SCHEMATHESIS_EXAMPLES) {
        eprintln!("== edge failed: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "== pressure: a small audited run on the embedded default with a transaction per command, then on PostgreSQL + Redis with group commit and an online migration"
    );
    let databases = [(None, None), (Some(services.pg_url.as_str()), Some(services.redis_url.as_str()))];
    let edited = std::env::temp_dir().join(format!("ordo-online-edit-{}", std::process::id()));
    pressure::online_edit(&root, &edited)?;
    let edited_arg = edited.display().to_string();
    for (database, redis) in databases {
        let mut argv = vec!["cargo xtask", "pressure", "--profile", "dev", "--stages", "100/s:3s"];
        // A dev build on a shared CI machine: p99 within 500 ms (150 ms is the release default).
        argv.extend(["--p99-ms", "500"]);
        let out = std::env::temp_dir().join(format!("ordo-pressure-ci-{}", std::process::id()));
        let out_arg = out.display().to_string();
        argv.extend(["--out", &out_arg]);
        if let (Some(db), Some(redis)) = (database, redis) {
            argv.extend(["--database-url", db, "--redis-url", redis]);
            argv.extend(["--migrate-to", &edited_arg, "--migrate-after-s", "1.5"]);
        } else {
            // Group commit is the default; the embedded run audits the other path end to end.
            argv.push("--no-group-commit");
        }
        let Top::Pressure(args) = Cli::try_parse_from(&argv)?.command else { unreachable!() };
        let code = pressure::pressure(&root, *args)?;
        let _ = std::fs::remove_dir_all(&out);
        if database.is_some() {
            let _ = std::fs::remove_dir_all(&edited);
        }
        if code != ExitCode::SUCCESS {
            eprintln!("== pressure failed");
            return Ok(ExitCode::FAILURE);
        }
    }
    eprintln!(
        "== chaos: every fault once under load on two server processes (dev build), with its own PostgreSQL, replica and Redis"
    );
    let argv = [
        "cargo xtask",
        "chaos",
        "--profile",
        "dev",
        "--servers",
        "2",
        "--rate",
        "20",
        "--warmup",
        "1s",
        "--fault-for",
        "1s",
        "--recover-for",
        "4s",
    ];
    let Top::Chaos(args) = Cli::try_parse_from(argv)?.command else { unreachable!() };
    let out = std::env::temp_dir().join(format!("ordo-chaos-ci-{}", std::process::id()));
    let mut args = *args;
    args.out = Some(out.clone());
    let code = chaos::chaos(&root, args)?;
    let _ = std::fs::remove_dir_all(&out);
    if code != ExitCode::SUCCESS {
        eprintln!("== chaos failed");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("== all passed");
    Ok(ExitCode::SUCCESS)
}

/// `editors/vscode`: its pinned packages installed, `test/grammar.mjs` (the grammar run by
/// vscode-textmate over the shipped specs, against its snapshots), and `extension.js` parsed.
fn editor(root: &Path) -> Result<()> {
    let dir = root.join("editors/vscode");
    let npm = services::which("npm").context("npm not found: apt-get install nodejs npm")?;
    let node = services::which("node").context("node not found: apt-get install nodejs npm")?;
    crate::clients::run(
        "npm ci",
        Command::new(&npm).current_dir(&dir).args(["ci", "--no-audit", "--no-fund"]),
    )?;
    crate::clients::run("the grammar check", Command::new(&node).current_dir(&dir).arg("test/grammar.mjs"))?;
    crate::clients::run(
        "node --check extension.js",
        Command::new(&node).current_dir(&dir).args(["--check", "extension.js"]),
    )
}

/// Examples per operation and phase in the test command's schemathesis run (a long run:
/// `cargo xtask edge --examples 500`).
pub const SCHEMATHESIS_EXAMPLES: &str = "25";
/// Its fixed seed, so that a failure reproduces.
const SCHEMATHESIS_SEED: &str = "20261202";

/// Runs schemathesis (from PyPI) with every check it has, in all its phases (examples,
/// coverage, fuzzing, stateful), against the server built by the tests, on a scratch
/// SQLite database: no 5xx, responses that match the schema, only documented statuses,
/// content types and headers, bad input refused, good input taken (or refused by a guard,
/// see `xtask/clients/schemathesis.toml`); and every operation answered a 2xx at least
/// once (counted from its HAR report).
pub fn schemathesis(root: &Path, examples: &str) -> Result<()> {
    let runner = services::which("schemathesis")
        .context("schemathesis not found: python3 -m pip install schemathesis==4.32.5")?;
    let dir = std::env::temp_dir().join(format!("ordo-schemathesis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let server = pressure::start_server(
        &pressure::build_server(root, pressure::Profile::Dev)?,
        &[
            ("DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.join("edge.db").display())),
            // Schemathesis sends many requests at once; the rate limit is tested elsewhere.
            ("ORDO_RATE_PER_S", "1000000".to_string()),
            ("ORDO_RATE_BURST", "1000000".to_string()),
        ],
    )?;
    // Orders in the states deep in their lifecycle, for the operations that act only there
    // (schemathesis.toml gives each its order); the rest it reaches by the document's links.
    let deep = crate::clients::deep_orders(&server.url)?;
    // Its configuration and hooks (a fresh key for every schema-valid one) are beside the
    // Python client's check; it runs in the scratch directory, where it keeps its cache.
    let clients = root.join("xtask/clients");
    let status = Command::new(runner)
        .current_dir(&dir)
        .envs(deep)
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &clients)
        .arg("--config-file")
        .arg(clients.join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", server.url), "--checks", "all"])
        .args(["--seed", SCHEMATHESIS_SEED, "--max-examples", examples, "--workers", "2"])
        .args(["--request-timeout", "10", "--no-color"])
        .args(["--report", "har", "--report-dir"])
        .arg(dir.join("report"))
        .status()?;
    drop(server);
    let coverage = answered_2xx(&root.join("docs/openapi.json"), &dir.join("report"));
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("schemathesis found failures (above)");
    }
    // Every operation is seen doing its job at least once, not only refusing bad input.
    let (reached, all) = coverage?;
    let missing: Vec<&String> = all.iter().filter(|o| !reached.contains(*o)).collect();
    eprintln!("== edge: a 2xx on {} of {} operations", reached.len(), all.len());
    if !missing.is_empty() {
        bail!("no 2xx from {missing:?}: the document's examples or links no longer lead there");
    }
    Ok(())
}

/// From schemathesis's HAR report: the operations (`GET /orders/{id}`) of the document
/// that answered a 2xx at least once, and all of them.
fn answered_2xx(document: &Path, report: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(document)?)?;
    let operations: Vec<(String, Vec<String>)> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, ops)| {
            ops.as_object().into_iter().flatten().map(move |(method, _)| {
                (
                    format!("{} {path}", method.to_ascii_uppercase()),
                    path.split('/').map(str::to_string).collect(),
                )
            })
        })
        .collect();
    let har = std::fs::read_dir(report)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("har-")))
        .context("no HAR report")?;
    let har: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(har)?)?;
    let mut reached = Vec::new();
    for entry in har["log"]["entries"].as_array().into_iter().flatten() {
        let status = entry["response"]["status"].as_u64().unwrap_or(0);
        if !(200..300).contains(&status) {
            continue;
        }
        let method = entry["request"]["method"].as_str().unwrap_or_default();
        let url = entry["request"]["url"].as_str().unwrap_or_default();
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{}", p.split('?').next().unwrap_or(p)));
        let Some(path) = path else { continue };
        let segments: Vec<&str> = path.split('/').collect();
        let matched = operations.iter().find(|(op, template)| {
            op.starts_with(&format!("{method} "))
                && template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| t == s || t.starts_with('{'))
        });
        if let Some((op, _)) = matched
            && !reached.contains(op)
        {
            reached.push(op.clone());
        }
    }
    Ok((reached, operations.into_iter().map(|(op, _)| op).collect()))
}

/// `cargo xtask bench`: every criterion bench (release build), with PostgreSQL and Redis
/// found or started as for the tests, for the database benches.
pub fn bench(extra: &[String]) -> Result<ExitCode> {
    let services = services::ensure()?;
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .args(["bench", "--workspace", "--locked", "--"])
        .args(extra)
        .env("ORDO_TEST_PG_URL", &services.pg_url)
        .env("ORDO_TEST_REDIS_URL", &services.redis_url)
        .status()
        .context("running cargo bench")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
