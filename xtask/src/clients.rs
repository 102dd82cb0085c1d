//! `cargo xtask clients`: the three clients generated from `docs/openapi.json` (nothing
//! generated is checked in), each type-checked, each shown to refuse a state-changing call
//! without its `Idempotency-Key` at compile time, and the scenario of `clients/examples/`
//! run through each against a fresh server on the embedded default, all three ending in
//! the same state: the same printed summary, and the same rows in the database.
//!
//! - Python: openapi-python-client into `clients/python/ordo_client` (pinned in `.ci/run`),
//!   checked by importing it and by mypy (`clients/mypy.ini`).
//! - TypeScript: openapi-typescript + openapi-fetch, `typescript@5` (the latest major breaks
//!   openapi-typescript), pinned in `clients/package.json` and its lock; `schema.d.ts`
//!   into `clients/typescript`, `tsc --strict`.
//! - Rust: progenitor, pinned, generating `clients/rust` (`ordo-client`, a workspace
//!   member) when it builds; `cargo build` and its compile-fail doctest.
//!
//! The missing-key checks are `clients/checks/`.

use crate::{cargo, pressure, services};
use anyhow::{Context, Result, bail, ensure};
use std::path::Path;
use std::process::{Command, Output};

/// The one line every scenario prints, from a fresh database.
const SCENARIO_END: &str = r#"{"allowed":["cancel","ship"],"available":8,"balance":700,"history":["place","pay"],"replayed":true,"stale_current_version":2,"state":"paid","version":2}"#;

/// Generates, checks and runs the three clients (see the module's doc).
pub fn clients(root: &Path) -> Result<()> {
    let dir = root.join("clients");
    typescript(&dir)?;
    python(&dir)?;
    rust(root)?;
    let server = pressure::build_server(root, pressure::Profile::Dev)?;
    let rust_example = server.with_file_name("examples").join("scenario");
    let node_example = dir.join("typescript/dist/scenario.js");
    let runs: [(&str, Command); 3] = [
        ("python", {
            let mut c = Command::new("python3");
            c.arg(dir.join("examples/scenario.py")).env("PYTHONPATH", dir.join("python"));
            c
        }),
        ("typescript", {
            let mut c = Command::new("node");
            c.arg(&node_example);
            c
        }),
        ("rust", Command::new(&rust_example)),
    ];
    let mut first: Option<(&str, String)> = None;
    for (language, mut command) in runs {
        let scratch = std::env::temp_dir().join(format!("ordo-clients-{language}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let db = format!("sqlite://{}?mode=rwc", scratch.join("scenario.db").display());
        let live = pressure::start_server(&server, &[("DATABASE_URL", db.clone())])?;
        let out =
            command.arg(&live.url).output().with_context(|| format!("running the {language} scenario"))?;
        drop(live);
        let state = database_state(&db);
        let _ = std::fs::remove_dir_all(&scratch);
        let printed = succeeded(&format!("the {language} scenario"), &out)?;
        let last = printed.lines().last().unwrap_or_default().trim().to_string();
        ensure!(last == SCENARIO_END, "the {language} scenario ended in\n  {last}\nnot\n  {SCENARIO_END}");
        eprintln!("   {language}: {last}");
        // And the three leave the same rows behind (but for ids, keys and times).
        let state = state?;
        match &first {
            None => first = Some((language, state)),
            Some((other, expected)) => ensure!(
                state == *expected,
                "the {language} scenario left another database than the {other} one:\n{state}\nagainst\n{expected}"
            ),
        }
    }
    Ok(())
}

/// The rows a scenario leaves, without what differs by run (ids, keys, times): the
/// orders, stock and money, the journal, and how many records and outbox rows.
fn database_state(url: &str) -> Result<String> {
    use sea_orm::{ConnectionTrait, FromQueryResult};
    let queries = [
        "SELECT state, version, sku, quantity, account, amount, carrier FROM orders ORDER BY created_at",
        "SELECT sku, available, version FROM inventories ORDER BY sku",
        "SELECT account, balance, version FROM wallets ORDER BY account",
        "SELECT machine, version, event, from_state, to_state, params FROM ordo_transitions ORDER BY created_at, version",
        "SELECT COUNT(*) AS records FROM ordo_idempotency",
        "SELECT COUNT(*) AS events FROM ordo_outbox",
    ];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let db = sea_orm::Database::connect(url).await?;
        let mut out = String::new();
        for sql in queries {
            let statement = sea_orm::Statement::from_string(db.get_database_backend(), sql);
            for row in db.query_all_raw(statement).await? {
                let values = sea_orm::JsonValue::from_query_result(&row, "")?;
                out.push_str(&format!("{values}\n"));
            }
        }
        db.close().await?;
        Ok(out)
    })
}

/// `npm ci`, `schema.d.ts` from the document, `tsc --strict` over the scenario (emitting
/// it for node), and the missing-key check, which must fail on its call.
fn typescript(dir: &Path) -> Result<()> {
    let npm = services::which("npm").context("npm not found: apt-get install nodejs npm")?;
    let npx = services::which("npx").context("npx not found: apt-get install nodejs npm")?;
    run("npm ci", Command::new(&npm).current_dir(dir).args(["ci", "--no-audit", "--no-fund"]))?;
    run(
        "openapi-typescript",
        Command::new(&npx).current_dir(dir).args([
            "openapi-typescript",
            "../docs/openapi.json",
            "--output",
            "typescript/schema.d.ts",
        ]),
    )?;
    run("tsc --strict", Command::new(&npx).current_dir(dir).args(["tsc", "--project", "tsconfig.json"]))?;
    // The scenario's compiler options (checks/tsconfig.json extends tsconfig.json).
    let check =
        Command::new(&npx).current_dir(dir).args(["tsc", "--project", "checks/tsconfig.json"]).output()?;
    let said = String::from_utf8_lossy(&check.stdout);
    ensure!(
        !check.status.success()
            && said.lines().all(|l| !l.starts_with("checks/") || l.starts_with("checks/missing-key.ts(7,"))
            && said.contains("Idempotency-Key"),
        "a POST /orders without its Idempotency-Key must fail to type-check on its call, and only there:\n{said}"
    );
    Ok(())
}

/// The client generated into `clients/python/ordo_client`, imported, and checked by mypy
/// with the scenario; the missing-key check must fail mypy on its call.
fn python(dir: &Path) -> Result<()> {
    let generator = services::which("openapi-python-client")
        .context("openapi-python-client not found: python3 -m pip install openapi-python-client==0.29.1")?;
    let out = dir.join("python");
    let _ = std::fs::remove_dir_all(&out);
    run(
        "openapi-python-client",
        Command::new(generator)
            .current_dir(dir)
            .args(["generate", "--meta", "none", "--overwrite", "--path", "../docs/openapi.json"])
            .args(["--output-path", "python/ordo_client"]),
    )?;
    run("import ordo_client", Command::new("python3").current_dir(&out).args(["-c", "import ordo_client"]))?;
    let mypy = |files: &[&str]| {
        Command::new("python3")
            .current_dir(dir)
            .env("MYPYPATH", &out)
            .args(["-m", "mypy", "--config-file", "mypy.ini", "--cache-dir"])
            .arg(std::env::temp_dir().join("ordo-mypy-cache"))
            .args(files)
            .output()
    };
    let checked = mypy(&["python/ordo_client", "examples/scenario.py"])?;
    succeeded("mypy (python3 -m pip install mypy==1.19.1)", &checked)?;
    let refused = mypy(&["checks/missing_key.py"])?;
    let said = String::from_utf8_lossy(&refused.stdout);
    ensure!(
        !refused.status.success()
            && said.contains("missing_key.py:9: error: Missing named argument \"idempotency_key\""),
        "a place_order without its idempotency_key must fail mypy on its call:\n{said}"
    );
    Ok(())
}

/// The Rust client builds with its example, and its compile-fail doctest holds.
fn rust(root: &Path) -> Result<()> {
    run(
        "cargo build -p ordo-client --example scenario",
        Command::new(cargo()).current_dir(root).args(["build", "-p", "ordo-client", "--example", "scenario"]),
    )?;
    run(
        "cargo test -p ordo-client --doc",
        Command::new(cargo()).current_dir(root).args(["test", "-p", "ordo-client", "--doc"]),
    )
}

/// The edge check's data, made through the Rust client: money for the transfers' example
/// payer, and orders driven into `paid`, `shipped` and `delivered` (two), by the variables
/// `xtask/clients/schemathesis.toml` reads their ids from: the states where ship, deliver,
/// complete and refund apply, which random sequences of requests rarely reach.
pub fn deep_orders(url: &str) -> Result<Vec<(&'static str, String)>> {
    use ordo_client::types::{
        AccountDeposit, InventoryRestock, NoParams, OrderCreate, OrderShip, WalletDeposit,
    };
    fn key<K: std::str::FromStr>() -> K
    where
        K::Err: std::fmt::Debug,
    {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("edge-{}-{n}", pressure::stamp()).parse().expect("a key of the document's pattern")
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let api = ordo_client::Client::new(url);
        let none = || NoParams(Default::default());
        api.restock_inventory("sku-1", &key(), &InventoryRestock { quantity: 100.try_into()? }).await?;
        api.deposit_wallet("account-1", &key(), &WalletDeposit { amount: 1000.try_into()? }).await?;
        // The transfers' example payer, so that a transfer's examples find money whatever
        // ran before them (other generated requests withdraw from it).
        api.deposit_account("payer-1", &key(), &AccountDeposit { amount: 1_000_000.try_into()? }).await?;
        let order = OrderCreate {
            sku: "sku-1".try_into()?,
            quantity: 1.try_into()?,
            account: "account-1".try_into()?,
            amount: 1,
            carrier: None,
            tracking: None,
        };
        let mut deep = Vec::new();
        for (var, depth) in [
            ("ORDO_EDGE_PAID_ORDER", 1),
            ("ORDO_EDGE_SHIPPED_ORDER", 2),
            ("ORDO_EDGE_DELIVERED_ORDER", 3),
            ("ORDO_EDGE_DELIVERED_ORDER_2", 3),
        ] {
            let id = api.place_order(&key(), &order).await?.into_inner().id;
            api.pay_order(&id, &key(), None, &none()).await?;
            if depth >= 2 {
                let ship = OrderShip { carrier: "carrier-1".to_string(), tracking: None };
                api.ship_order(&id, &key(), None, &ship).await?;
            }
            if depth >= 3 {
                api.deliver_order(&id, &key(), None, &none()).await?;
            }
            deep.push((var, id));
        }
        Ok(deep)
    })
}

pub(crate) fn run(what: &str, command: &mut Command) -> Result<()> {
    let out = command.output().with_context(|| format!("running {what}"))?;
    succeeded(what, &out).map(|_| ())
}

/// What a command printed, when it succeeded.
fn succeeded(what: &str, out: &Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
