//! `cargo xtask pressure`: drives a server over HTTP on 127.0.0.1 (a running one given by
//! `--url`, or one it builds and starts: the embedded default, or PostgreSQL + Redis when
//! given), audits its database, writes the report, and exits non-zero when a stage broke
//! its thresholds or the audit failed.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ordo_pressure::scenario::Scenario;
use ordo_pressure::traffic::Target;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

#[derive(Args, Debug, Clone)]
pub struct PressureArgs {
    /// A running server to drive (127.0.0.1 only); without it one is built and started.
    #[arg(long)]
    url: Option<String>,
    /// The server's database: audited after the run. For a server started here, the one it
    /// uses: a PostgreSQL URL gets a fresh database of its own on that server; default: an
    /// SQLite file in the report directory (the embedded default).
    #[arg(long)]
    database_url: Option<String>,
    /// Redis for a server started here (idempotency leases and the event relay).
    #[arg(long)]
    redis_url: Option<String>,
    /// The API key of a running server, and the tenant it belongs to (for the audit).
    #[arg(long, env = "ORDO_API_KEY")]
    api_key: Option<String>,
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Stages, e.g. `100/s:30s,1000/s:30s,peak` (overrides the scenario file's).
    #[arg(long)]
    stages: Option<String>,
    /// A TOML scenario (stages, mix, shares, thresholds, bounds); see docs/pressure.md.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Thresholds: p99 latency and error rate (0.001 = 0.1 %).
    #[arg(long)]
    p99_ms: Option<f64>,
    #[arg(long)]
    error_rate: Option<f64>,
    /// At most this many requests.
    #[arg(long)]
    max_requests: Option<u64>,
    /// Mark requests `X-Load-Test: true`: served from shadow tables.
    #[arg(long)]
    shadow: bool,
    /// Replay a traffic shape recorded with ORDO_RECORD (against shadow tables).
    #[arg(long)]
    replay: Option<PathBuf>,
    /// How much faster the replay runs: `1x`, `3x`.
    #[arg(long, default_value = "1x")]
    speed: String,
    /// The report directory (default: target/pressure/<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The build of a server started here.
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    profile: Profile,
    /// A server binary to start instead of building one.
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Keep the PostgreSQL database (and the Redis keys) created for a started server.
    #[arg(long)]
    keep_database: bool,
    /// Start the server with group commit off (ORDO_GROUP_COMMIT=false): every command in
    /// a transaction of its own, to compare with the default.
    #[arg(long)]
    no_group_commit: bool,
    /// Migrate the database to the specs in this directory while the load runs (an online
    /// migration: the server keeps serving its own spec on the migrated tables). The run
    /// fails if the migration is refused or fails.
    #[arg(long)]
    migrate_to: Option<PathBuf>,
    /// When the migration starts, in seconds after the load does.
    #[arg(long, default_value_t = 3.0)]
    migrate_after_s: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Release,
}

/// A server process started from a built binary; killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` on a free loopback port with `env`, and waits for it to say where it
/// listens. Its log is passed through (warnings and errors) so it never fills a pipe.
pub fn start_server(binary: &Path, env: &[(&str, String)]) -> Result<Server> {
    start_server_on(binary, "127.0.0.1:0", env, None)
}

/// Starts `binary` listening on `listen`, with its log appended to `log` (else passed
/// through to stderr).
pub fn start_server_on(
    binary: &Path,
    listen: &str,
    env: &[(&str, String)],
    log: Option<&Path>,
) -> Result<Server> {
    let mut sink: Box<dyn std::io::Write + Send> = match log {
        Some(file) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .with_context(|| format!("{}", file.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let mut cmd = Command::new(binary);
    cmd.args(["--listen", listen]).env_remove("REDIS_URL").env_remove("DATABASE_URL").env("ORDO_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child =
        cmd.stderr(Stdio::piped()).spawn().with_context(|| format!("starting {}", binary.display()))?;
    let stderr = child.stderr.take().context("server stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut url = None;
    for line in lines.by_ref().take(200) {
        let line = line?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
        let _ = writeln!(sink, "server: {line}");
    }
    let server = Server { child, url: url.unwrap_or_default() };
    if server.url.is_empty() {
        bail!("the server did not say where it listens");
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(sink, "server: {line}");
        }
    });
    Ok(server)
}

/// Builds the server binary and returns its path.
pub fn build_server(root: &Path, profile: Profile) -> Result<PathBuf> {
    let mut cmd = Command::new(crate::cargo());
    cmd.current_dir(root).args(["build", "-p", "ordo-server", "--bin", "ordo-server"]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    if !cmd.status()?.success() {
        bail!("building the server failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join(if profile == Profile::Release { "release" } else { "debug" }).join("ordo-server"))
}

/// A name part unique to this run.
pub fn stamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}_{}", now.as_secs(), std::process::id())
}

/// The scenario (its file or the default, then the flags over it) and the recording to
/// replay, if any.
fn load_of(args: &PressureArgs) -> Result<(Scenario, Option<ordo_pressure::Replay>)> {
    let mut scenario = match &args.scenario {
        Some(file) => Scenario::from_toml(
            &std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?,
        )
        .with_context(|| format!("{}", file.display()))?,
        None => Scenario { stages: "100/s:10s".to_string(), ..Scenario::default() },
    };
    if let Some(s) = &args.stages {
        scenario.stages = s.clone();
    }
    if let Some(p) = args.p99_ms {
        scenario.thresholds.p99_ms = p;
    }
    if let Some(e) = args.error_rate {
        scenario.thresholds.error_rate = e;
    }
    if let Some(m) = args.max_requests {
        scenario.max_requests = m;
    }
    scenario.validate()?;
    let replay = match &args.replay {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
            let records = ordo_record::read(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            Some((records, ordo_pressure::scenario::parse_speed(&args.speed)?))
        }
        None => None,
    };
    Ok((scenario, replay))
}

/// Starts a server of this tree with a database (and Redis keys) of its own; the database
/// and the prefix are handed back through `created_db` and `created_prefix`, so they are
/// dropped, or kept, with the run. Returns the server, its API key and its database URL.
fn start_own(
    root: &Path,
    args: &PressureArgs,
    runtime: &tokio::runtime::Runtime,
    out: &Path,
    created_db: &mut Option<ordo_testkit::TestDb>,
    created_prefix: &mut Option<ordo_testkit::RedisPrefix>,
) -> Result<(Server, String, String)> {
    let binary = match &args.server_binary {
        Some(b) => b.clone(),
        None => build_server(root, args.profile)?,
    };
    let database = match args.database_url.as_deref() {
        Some(url) if url.starts_with("postgres") => {
            let db = runtime.block_on(ordo_testkit::TestDb::postgres_on(url)).map_err(anyhow::Error::msg)?;
            let db_url = db.url.clone();
            *created_db = Some(db);
            db_url
        }
        Some(url) => url.to_string(),
        None => format!("sqlite://{}?mode=rwc", out.join("ordo.db").display()),
    };
    let key = format!("pressure-{}", stamp());
    let mut env = vec![
        ("DATABASE_URL", database.clone()),
        ("ORDO_API_KEYS", format!("load:{key}")),
        ("ORDO_SHADOW_TENANTS", "load".to_string()),
        // The load is the point: the tenant's rate limit must not shape it.
        ("ORDO_RATE_PER_S", "1000000".to_string()),
        ("ORDO_RATE_BURST", "1000000".to_string()),
    ];
    if let Some(r) = &args.redis_url {
        // Keys of their own, deleted at the end as the database is.
        let prefix = ordo_testkit::redis_prefix_on(r);
        env.push(("REDIS_URL", r.clone()));
        env.push(("ORDO_REDIS_PREFIX", prefix.to_string()));
        *created_prefix = Some(prefix);
    }
    if args.no_group_commit {
        env.push(("ORDO_GROUP_COMMIT", "false".to_string()));
    }
    let server = start_server(&binary, &env)?;
    Ok((server, key, database))
}

/// `cargo xtask pressure`: the load against the given server or one started here, with an
/// online migration during it when asked; fails when a threshold, the audit or the migration does.
pub fn pressure(root: &Path, args: PressureArgs) -> Result<ExitCode> {
    let (scenario, replay) = load_of(&args)?;
    // A replay of real traffic's shape always goes to the shadow tables.
    let shadow = args.shadow || replay.is_some();
    let out = args.out.clone().unwrap_or_else(|| root.join("target/pressure").join(stamp()));
    std::fs::create_dir_all(&out)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    // The server: the one given, or one started here with a database of its own.
    let mut created_db: Option<ordo_testkit::TestDb> = None;
    let mut created_prefix: Option<ordo_testkit::RedisPrefix> = None;
    let (server, url, api_key, tenant, database) = match &args.url {
        Some(url) => {
            (None, url.clone(), args.api_key.clone(), args.tenant.clone(), args.database_url.clone())
        }
        None => {
            let (server, key, database) =
                start_own(root, &args, &runtime, &out, &mut created_db, &mut created_prefix)?;
            let url = server.url.clone();
            (Some(server), url, Some(key), "load".to_string(), Some(database))
        }
    };
    eprintln!(
        "== pressure: {url}{}; report in {}",
        if shadow { " (shadow traffic)" } else { "" },
        out.display()
    );
    let migration = match &args.migrate_to {
        Some(dir) => {
            let url = database.clone().context("--migrate-to needs the server's --database-url")?;
            Some((url, crate::spec::spec_sources(std::slice::from_ref(dir))?))
        }
        None => None,
    };
    let run = ordo_pressure::run(ordo_pressure::Run {
        target: Target::one(url, api_key, shadow),
        scenario,
        replay,
        database: database.map(ordo_store::StoreConfig::new),
        tenant,
        out: Some(out.clone()),
        relayed: args.redis_url.is_some() && args.url.is_none(),
        on_load: None,
    });
    let (result, migrated) = runtime.block_on(async {
        match migration {
            None => (run.await, Ok(None)),
            Some((url, specs)) => {
                let after = std::time::Duration::from_secs_f64(args.migrate_after_s.max(0.0));
                let (result, migrated) = tokio::join!(run, migrate_during(&url, &specs, after));
                (result, migrated.map(Some))
            }
        }
    });
    drop(server);
    if let Some(db) = created_db.filter(|_| args.keep_database) {
        eprintln!("== kept database {}", db.keep());
    }
    if let Some(prefix) = created_prefix.filter(|_| args.keep_database) {
        eprintln!("== kept Redis keys under {}", prefix.keep());
    }
    let report = result?;
    print!("{}", report.summary());
    eprintln!("== report: {}", out.join("report.html").display());
    let migrated = match migrated {
        Ok(Some(line)) => {
            eprintln!("== {line}");
            true
        }
        Ok(None) => true,
        Err(e) => {
            eprintln!("== the migration during the load failed: {e:#}");
            false
        }
    };
    Ok(if report.passed() && migrated { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Writes into `dir` the shipped specs with safe, expand-only edits to `order` (a new
/// optional field, a widened check, a new state with its events, a new timer): what the test
/// command migrates to while a pressure run loads a server of the shipped specs.
pub fn online_edit(root: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(root.join("specs"))? {
        let path = entry?.path();
        let Some(name) = path.file_name() else { continue };
        let mut text = std::fs::read_to_string(&path)?;
        if name == "order.ordo" {
            let edits = [
                ("    tracking: text?\n", "    tracking: text?\n    gift_note: text?\n"),
                ("check >= 1 and <= 1000", "check >= 1 and <= 5000"),
                ("    state paid, shipped, delivered\n", "    state paid, shipped, delivered, on_hold\n"),
                (
                    "    on deliver: shipped -> delivered\n",
                    "    on deliver: shipped -> delivered\n    on hold: paid -> on_hold\n    on release: on_hold -> paid\n",
                ),
                (
                    "    after 14d in delivered: complete\n",
                    "    after 14d in delivered: complete\n    after 30d in shipped: deliver\n",
                ),
            ];
            for (from, to) in edits {
                if !text.contains(from) {
                    bail!(
                        "specs/order.ordo no longer has {from:?}: update `online_edit` in xtask/src/pressure.rs"
                    );
                }
                text = text.replacen(from, to, 1);
            }
        }
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// Waits `after`, then migrates the database to `specs` while the load goes on; says what
/// was applied and how long it took, or why it was not.
async fn migrate_during(
    url: &str,
    specs: &[ordo_store::SpecSource],
    after: std::time::Duration,
) -> Result<String> {
    tokio::time::sleep(after).await;
    let db = ordo_store::connect(&ordo_store::StoreConfig::new(url)).await?;
    let started = std::time::Instant::now();
    let plans = ordo_store::migrate_specs(
        &db,
        specs,
        ordo_store::MigrateAction::Up,
        ordo_store::Apply::All { allow_destructive: false },
        &ordo_store::evolve::EvolveOptions::new(),
    )
    .await?;
    let took = started.elapsed();
    let mut done = Vec::new();
    for p in &plans {
        if !p.refusals.is_empty() {
            bail!("{}", p.summary());
        }
        if let Some(v) = p.applied {
            done.push(format!("`{}` to version {v} ({} step(s))", p.spec, p.steps.len()));
        }
    }
    if done.is_empty() {
        bail!("the specs in --migrate-to change nothing");
    }
    Ok(format!(
        "migrated during the load, {:.1} s in: {} in {} ms",
        after.as_secs_f64(),
        done.join(", "),
        took.as_millis()
    ))
}
