//! `cargo xtask`: the project's commands. See README.md.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod chaos;
mod pressure;
mod services;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Ordo's commands: spec tools and the test suite")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Work with lifecycle specs (`specs/*.ordo`).
    #[command(subcommand)]
    Spec(SpecCmd),
    /// Plan, apply, revert or show the migrations that take a database from the specs it
    /// runs to the specs on disk (docs/migrations.md).
    Migrate {
        #[arg(value_enum)]
        action: MigrateCmd,
        /// The database; default `DATABASE_URL`, else the embedded `sqlite://ordo.db`.
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://ordo.db?mode=rwc")]
        database_url: String,
        /// Apply destructive changes too (dropped fields, resources, machines).
        #[arg(long)]
        allow_destructive: bool,
        /// The specs the database serves (files or directories; all of `specs/` by default).
        specs: Vec<PathBuf>,
    },
    /// Run the criterion benchmarks (release build) and print their figures.
    Bench {
        /// Extra arguments for `cargo bench` (after `--`), e.g. a benchmark name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Load a server over HTTP (open model, stages, peak search, lost responses), audit its
    /// database, and report; exit 1 when a threshold or the audit breaks. See docs/pressure.md.
    Pressure(Box<pressure::PressureArgs>),
    /// The pressure workload against 1–3 server processes while faults are injected on a
    /// schedule (Redis, PostgreSQL, the network, a failover, killed servers), then the audit
    /// and each fault's failures and recovery time. Starts and stops everything it uses.
    Chaos(Box<chaos::ChaosArgs>),
    /// Run the whole test suite: formatting, lints, then every test of the workspace.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SpecCmd {
    /// Check specs and report every problem (all of `specs/` by default). Exits 1 on any.
    Check {
        /// Spec files or directories of them.
        paths: Vec<PathBuf>,
    },
    /// Print a spec's state diagram.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Format specs canonically (all of `specs/` by default); comments are kept.
    Fmt {
        /// Report files that would change, and exit 1 if any, instead of writing them.
        #[arg(long)]
        check: bool,
        paths: Vec<PathBuf>,
    },
    /// Print the SQL of every command of a spec, as the store runs it.
    Plan {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Backend::Postgres)]
        backend: Backend,
    },
    /// Print the typed Rust layer the server generates from the specs (all of `specs/` by default).
    Expand { paths: Vec<PathBuf> },
    /// Print a spec's lowered IR as JSON, the form the store and codegen consume.
    Ir { file: PathBuf },
    /// Regenerate the checked-in docs of the shipped specs (`docs/specs/<name>.md`).
    Docs,
    /// Classify the changes from one version of a spec to another, without a database:
    /// exits 1 on a destructive or unmapped change, or one that cannot be planned.
    Diff { old: PathBuf, new: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum MigrateCmd {
    /// Print the plan from the deployed specs to these, with live-row counts; change nothing.
    Plan,
    /// Apply the plan, all or nothing; refused when the data (or a destructive change) says so.
    Up,
    /// Revert the last applied version of each spec where that loses nothing.
    Down,
    /// The deployed versions of each spec, and whether the specs on disk differ.
    Status,
    /// Drop every table and make them anew from the specs (all data is lost).
    Fresh,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Top::Spec(SpecCmd::Check { paths }) => spec_check(&paths),
        Top::Pressure(args) => pressure::pressure(&workspace_root(), *args),
        Top::Chaos(args) => chaos::chaos(&workspace_root(), *args),
        Top::Spec(SpecCmd::Graph { file, format }) => {
            let spec = compile_or_report(&file)?;
            let format = match format {
                GraphFormat::Mermaid => ordo_spec::graph::Format::Mermaid,
                GraphFormat::Dot => ordo_spec::graph::Format::Dot,
            };
            print!("{}", ordo_spec::graph::render(&spec, format));
            Ok(ExitCode::SUCCESS)
        }
        Top::Spec(SpecCmd::Fmt { check, paths }) => spec_fmt(&paths, check),
        Top::Spec(SpecCmd::Ir { file }) => {
            let spec = compile_or_report(&file)?;
            println!("{}", serde_json::to_string_pretty(&spec)?);
            Ok(ExitCode::SUCCESS)
        }
        Top::Spec(SpecCmd::Docs) => spec_docs(),
        Top::Spec(SpecCmd::Expand { paths }) => {
            let mut specs = Vec::new();
            for file in spec_files(&paths)? {
                specs.push((spec_name(&file)?, compile_or_report(&file)?));
            }
            print!("{}", ordo_codegen::generate(&specs));
            Ok(ExitCode::SUCCESS)
        }
        Top::Spec(SpecCmd::Plan { file, backend }) => {
            let spec = compile_or_report(&file)?;
            let backend = match backend {
                Backend::Postgres => ordo_store::sea_orm::DbBackend::Postgres,
                Backend::Sqlite => ordo_store::sea_orm::DbBackend::Sqlite,
            };
            print!("{}", ordo_store::plan::render(&spec_name(&file)?, &spec, backend)?);
            Ok(ExitCode::SUCCESS)
        }
        Top::Migrate { action, database_url, allow_destructive, specs } => {
            migrate(action, &database_url, allow_destructive, &specs)
        }
        Top::Spec(SpecCmd::Diff { old, new }) => spec_diff(&old, &new),
        Top::Test { cargo_args } => test(&cargo_args),
        Top::Bench { cargo_args } => {
            // The database benches need PostgreSQL and Redis, found or started as for tests.
            let services = services::ensure()?;
            let status = Command::new(cargo())
                .current_dir(workspace_root())
                .args(["bench", "--workspace", "--locked", "--"])
                .args(&cargo_args)
                .env("ORDO_TEST_PG_URL", &services.pg_url)
                .env("ORDO_TEST_REDIS_URL", &services.redis_url)
                .status()
                .context("running cargo bench")?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// The cargo that runs us, so that toolchain overrides carry through.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Files named on the command line, with directories expanded to their `*.ordo` files
/// (sorted); `specs/` of the workspace when none are named.
fn spec_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let defaults = [workspace_root().join("specs")];
    let paths = if paths.is_empty() { &defaults[..] } else { paths };
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "ordo"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

fn report(file: &Path, bytes: &[u8], diags: &[ordo_spec::Diagnostic]) {
    let text = ordo_spec::source_text(bytes);
    eprint!("{}", ordo_spec::render(&display_path(file), &text, diags));
}

/// A path as the user would type it: relative to the current directory when under it.
fn display_path(file: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    file.strip_prefix(&cwd).unwrap_or(file).display().to_string()
}

fn compile_or_report(file: &Path) -> Result<ordo_spec::ir::Spec> {
    let bytes = read(file)?;
    ordo_spec::compile_bytes(&bytes).or_else(|diags| {
        report(file, &bytes, &diags);
        bail!("{} has {} error(s)", file.display(), diags.len())
    })
}

fn spec_check(paths: &[PathBuf]) -> Result<ExitCode> {
    let files = spec_files(paths)?;
    if files.is_empty() {
        bail!("no spec files found");
    }
    let mut errors = 0;
    for file in &files {
        let bytes = read(file)?;
        if let Err(diags) = ordo_spec::compile_bytes(&bytes) {
            report(file, &bytes, &diags);
            errors += diags.len();
        }
    }
    let noun = if files.len() == 1 { "spec" } else { "specs" };
    if errors == 0 {
        eprintln!("checked {} {noun}: no errors", files.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("checked {} {noun}: {errors} error(s)", files.len());
        Ok(ExitCode::FAILURE)
    }
}

fn spec_fmt(paths: &[PathBuf], check: bool) -> Result<ExitCode> {
    let mut failed = false;
    for file in spec_files(paths)? {
        let bytes = read(&file)?;
        let formatted = match ordo_spec::format_bytes(&bytes) {
            Ok(f) => f,
            Err(diags) => {
                report(&file, &bytes, &diags);
                failed = true;
                continue;
            }
        };
        if formatted.as_bytes() == bytes.as_slice() {
            continue;
        }
        if check {
            eprintln!("{} is not formatted", display_path(&file));
            failed = true;
        } else {
            std::fs::write(&file, formatted).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("formatted {}", display_path(&file));
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// A spec's name: its file name without `.ordo`.
fn spec_name(file: &Path) -> Result<String> {
    Ok(file.file_stem().and_then(|s| s.to_str()).context("spec file name")?.to_string())
}

/// Writes `contents` to `path` only when they differ, so timestamps move only on change.
fn write_if_changed(path: &Path, contents: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::create_dir_all(path.parent().context("parent dir")?)?;
        std::fs::write(path, contents)?;
        eprintln!("wrote {}", display_path(path));
    }
    Ok(())
}

fn spec_docs() -> Result<ExitCode> {
    let root = workspace_root();
    for file in spec_files(&[])? {
        let name = spec_name(&file)?;
        let source = std::fs::read_to_string(&file)?;
        let doc = ordo_spec::docs::spec_doc(&name, &source).map_err(|diags| {
            report(&file, source.as_bytes(), &diags);
            anyhow::anyhow!("{} does not check", file.display())
        })?;
        write_if_changed(&root.join("docs/specs").join(format!("{name}.md")), &doc)?;
        let spec = compile_or_report(&file)?;
        let sql = ordo_store::plan::render(&name, &spec, ordo_store::sea_orm::DbBackend::Postgres)?;
        write_if_changed(&root.join("docs/specs").join(format!("{name}.sql")), &sql)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn spec_sources(paths: &[PathBuf]) -> Result<Vec<ordo_store::SpecSource>> {
    let mut specs = Vec::new();
    for file in spec_files(paths)? {
        let source = String::from_utf8_lossy(&read(&file)?).into_owned();
        specs.push(ordo_store::SpecSource { name: spec_name(&file)?, ir: compile_or_report(&file)?, source });
    }
    Ok(specs)
}

fn spec_diff(old: &Path, new: &Path) -> Result<ExitCode> {
    let d = ordo_spec::diff::diff(&compile_or_report(old)?, &compile_or_report(new)?);
    if d.is_empty() {
        println!("no changes");
        return Ok(ExitCode::SUCCESS);
    }
    for c in &d.changes {
        println!("{c}");
    }
    let blocking: Vec<String> = d.blocking().collect();
    for b in &blocking {
        eprintln!("{b}");
    }
    Ok(if blocking.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn migrate(action: MigrateCmd, url: &str, allow_destructive: bool, paths: &[PathBuf]) -> Result<ExitCode> {
    use ordo_store::{Apply, MigrateAction, evolve};
    let specs = spec_sources(paths)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let db = ordo_store::connect(&ordo_store::StoreConfig::new(url)).await?;
        let options = evolve::EvolveOptions::new();
        let (what, apply) = match action {
            MigrateCmd::Plan | MigrateCmd::Status => (MigrateAction::Status, Apply::Never),
            MigrateCmd::Up => (MigrateAction::Up, Apply::All { allow_destructive }),
            MigrateCmd::Down => (MigrateAction::Down, Apply::All { allow_destructive }),
            MigrateCmd::Fresh => (MigrateAction::Fresh, Apply::Never),
        };
        let plans = ordo_store::migrate_specs(&db, &specs, what, apply, &options).await?;
        if let MigrateCmd::Status = action {
            for spec in &specs {
                println!("spec `{}`:", spec.name);
                for v in evolve::history(&db, &spec.name).await? {
                    println!("  version {} applied {}", v.version, v.applied_at.to_rfc3339());
                }
            }
            for p in &plans {
                if p.is_empty() {
                    println!("`{}`: the spec on disk is the deployed one", p.spec);
                } else {
                    println!("`{}`: the spec on disk differs: {}", p.spec, p.summary());
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut refused = false;
        for p in &plans {
            if matches!(action, MigrateCmd::Fresh) {
                println!("`{}`: tables made anew", p.spec);
                continue;
            }
            print!("{p}");
            refused |= !p.refusals.is_empty();
        }
        anyhow::Ok(if refused { ExitCode::FAILURE } else { ExitCode::SUCCESS })
    })
}

/// The README's test command. Everything a change must pass, in one run, against real
/// PostgreSQL and Redis (found or started by `services`) as well as SQLite.
fn test(extra: &[String]) -> Result<ExitCode> {
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
    eprintln!("== clients: a Python client generated from docs/openapi.json places an order");
    if let Err(e) = python_client(&root) {
        eprintln!("== clients failed: {e:#}");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("== edge: schemathesis (every check, fixed seed) against the running server's /openapi.json");
    if let Err(e) = schemathesis(&root) {
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

/// Examples per operation and phase in the test command's schemathesis run (a long run:
/// `schemathesis run <url>/openapi.json --checks all --max-examples 500` by hand).
const SCHEMATHESIS_EXAMPLES: &str = "25";
/// Its fixed seed, so that a failure reproduces.
const SCHEMATHESIS_SEED: &str = "20261202";

/// Runs schemathesis (from PyPI) with every check it has, in all its phases (examples,
/// coverage, fuzzing, stateful), against the server built by the tests, on a scratch
/// SQLite database: no 5xx, responses that match the schema, only documented statuses,
/// content types and headers, bad input refused, good input taken (or refused by a guard,
/// see `xtask/clients/schemathesis.toml`).
fn schemathesis(root: &Path) -> Result<()> {
    let runner =
        services::which("schemathesis").context("schemathesis not found: pip install schemathesis")?;
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
    // Its configuration and hooks (a fresh key for every schema-valid one) are beside the
    // Python client's check; it runs in the scratch directory, where it keeps its cache.
    let clients = root.join("xtask/clients");
    let status = Command::new(runner)
        .current_dir(&dir)
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &clients)
        .arg("--config-file")
        .arg(clients.join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", server.url), "--checks", "all"])
        .args(["--seed", SCHEMATHESIS_SEED, "--max-examples", SCHEMATHESIS_EXAMPLES, "--workers", "2"])
        .args(["--request-timeout", "10", "--no-color"])
        .status()?;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    if status.success() { Ok(()) } else { bail!("schemathesis found failures (above)") }
}

/// Generates the Python client from `docs/openapi.json` (openapi-python-client, from PyPI),
/// starts the server built by the tests on a free port with a scratch SQLite database, and
/// places and pays an order through the client.
fn python_client(root: &Path) -> Result<()> {
    let generator = services::which("openapi-python-client")
        .context("openapi-python-client not found: pip install openapi-python-client")?;
    let dir = std::env::temp_dir().join(format!("ordo-pyclient-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let out = Command::new(generator)
        .args(["generate", "--meta", "none", "--overwrite", "--path"])
        .arg(root.join("docs/openapi.json"))
        .arg("--output-path")
        .arg(dir.join("ordo_client"))
        .output()?;
    if !out.status.success() || !dir.join("ordo_client/models/order.py").exists() {
        bail!(
            "generating the client failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let server = pressure::start_server(
        &pressure::build_server(root, pressure::Profile::Dev)?,
        &[("DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.join("client.db").display()))],
    )?;
    let check = root.join("xtask/clients/python_check.py");
    let status = Command::new("python3").arg(check).arg(&dir).arg(&server.url).status()?;
    drop(server);
    let result =
        if status.success() { Ok(()) } else { Err(anyhow::anyhow!("the Python client check failed")) };
    let _ = std::fs::remove_dir_all(&dir);
    result
}
