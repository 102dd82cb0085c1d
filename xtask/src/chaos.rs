//! `cargo xtask chaos`: the pressure workload against real server processes while faults
//! are injected on a schedule, then the audit.
//!
//! It starts everything it needs on 127.0.0.1 and stops it at the end, also on Ctrl-C: a
//! PostgreSQL primary of its own with a streaming replica (`pg_basebackup`; synchronous by
//! default), a Redis of its own, a TCP fault proxy in front of each (the servers reach
//! PostgreSQL through the proxy, which is also the "virtual IP" a failover moves to the
//! promoted replica), and 1–3 server processes from a built binary. The load goes round
//! the servers and retries as a real client does (same key, back-off, `Retry-After`).
//!
//! Consumer workers (`ordo-consumer`, two per stream in one group) run beside the servers,
//! through the same proxies, and write each event they apply to a table of their own.
//!
//! After the run: the audit (effects exactly once, conservation, journals, timers, every
//! committed event published, and applied exactly once by the consumers), and for each fault the requests due while it lasted and
//! until the next, how many were retried and how many failed for good, and the recovery
//! time (from the fault's end until requests are served at the first try again).

mod consumers;
mod measure;
use measure::{Injected, Measured, label, measure, table};

use crate::pressure::{self, Profile, Server};
use crate::services::{self, PgNode};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use consumers::{CONSUMER_GROUP, Consumers};
use ordo_pressure::scenario::{Retry, Scenario};
use ordo_pressure::traffic::Target;
use ordo_testkit::FaultProxy;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The faults, in the default run's order. A failover consumes the replica, so it comes
/// last; the PostgreSQL faults after one act on the promoted node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Every Redis key deleted (`FLUSHALL`) while requests hold leases.
    RedisFlush,
    /// Redis killed, and started again empty when the fault ends.
    RedisRestart,
    /// Everything the servers send Redis delayed past its command timeout.
    RedisDelay,
    /// Every connection to Redis cut, again and again while the fault lasts.
    RedisReset,
    /// Everything the servers send PostgreSQL delayed.
    DbDelay,
    /// What the servers send PostgreSQL held (a hung network: nothing is answered).
    DbStall,
    /// Every connection to PostgreSQL cut, again and again while the fault lasts.
    DbReset,
    /// PostgreSQL stopped (`-m fast`) and started again when the fault ends.
    PgRestartFast,
    /// PostgreSQL stopped as by a crash (`-m immediate`) and started again, recovering
    /// from its WAL.
    PgRestartImmediate,
    /// Every pending order's timer made due at once (a clock jump): every server's timer
    /// loop races to fire them.
    TimersDue,
    /// A server killed with SIGKILL mid-batch, and started again when the fault ends.
    ServerKill,
    /// The primary killed (`-m immediate`), the replica promoted when the fault ends, and
    /// the address the servers use moved to it.
    Failover,
}

const ALL_FAULTS: [Fault; 12] = [
    Fault::RedisFlush,
    Fault::RedisRestart,
    Fault::RedisDelay,
    Fault::RedisReset,
    Fault::DbDelay,
    Fault::DbStall,
    Fault::DbReset,
    Fault::PgRestartFast,
    Fault::PgRestartImmediate,
    Fault::TimersDue,
    Fault::ServerKill,
    Fault::Failover,
];

/// How long the proxy delays what the servers send Redis: past the server's Redis
/// timeout (`ordo_idempotency::REDIS_TIMEOUT_MS_DEFAULT`), so every call fails slowly.
const REDIS_DELAY_MS: u64 = 400;
/// How long the proxy delays what the servers send PostgreSQL.
const DB_DELAY_MS: u64 = 50;
/// How often a reset fault cuts every connection.
const RESET_EVERY_MS: u64 = 250;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Replication {
    /// A commit returns once the replica has it (`synchronous_standby_names`): a failover
    /// loses no acknowledged effect.
    Sync,
    /// A commit returns once the primary has it: a failover may lose the last ones.
    Async,
}

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Server processes sharing the load (1–3).
    #[arg(long, default_value_t = 1)]
    servers: usize,
    /// The faults, in order (default: all of them, in the documented order).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Requests per second, spread over the servers.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Load before the first fault.
    #[arg(long, default_value = "3s")]
    warmup: String,
    /// How long each fault lasts.
    #[arg(long, default_value = "3s")]
    fault_for: String,
    /// Load after each fault, before the next (the recovery must fit in it).
    #[arg(long, default_value = "6s")]
    recover_for: String,
    /// How the replica follows the primary.
    #[arg(long, value_enum, default_value_t = Replication::Sync)]
    replication: Replication,
    /// A window of requests is healthy when at most this share of them needed a retry or
    /// failed; a fault has recovered once every window after it is healthy.
    #[arg(long, default_value_t = 0.1)]
    healthy_below: f64,
    /// The run fails when more than this share of all requests failed for good.
    #[arg(long, default_value_t = 0.001)]
    error_rate: f64,
    /// At most this many requests.
    #[arg(long, default_value_t = 100_000)]
    max_requests: u64,
    /// The report directory (default: target/chaos/<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The build of the servers.
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    profile: Profile,
    /// A server binary to start instead of building one.
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Keep the PostgreSQL data directories and their logs (in the temporary directory).
    #[arg(long)]
    keep: bool,
}

/// PostgreSQL: the primary, the replica until a failover promotes it, and which of them
/// the proxy points at.
struct Cluster {
    nodes: Vec<PgNode>,
    primary: usize,
    dir: PathBuf,
    keep: bool,
}

impl Cluster {
    fn primary(&self) -> &PgNode {
        &self.nodes[self.primary]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.stop("immediate");
        }
        if self.keep {
            eprintln!("== chaos: kept PostgreSQL's data directories in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Our Redis, on a fixed port so that it can be started again there.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server processes, each on a fixed port so that a killed one comes back where the
/// clients look for it.
struct Servers {
    binary: PathBuf,
    env: Vec<(&'static str, String)>,
    listen: Vec<String>,
    running: Vec<Option<Server>>,
    log: PathBuf,
}

impl Servers {
    fn start(&mut self, i: usize) -> Result<()> {
        // The port of a killed server may take a moment to be free again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match pressure::start_server_on(&self.binary, &self.listen[i], &self.env, Some(&self.log)) {
                Ok(s) => {
                    self.running[i] = Some(s);
                    return Ok(());
                }
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// SIGKILL: no shutdown, no answer to what it was doing.
    fn kill(&mut self, i: usize) {
        self.running[i] = None;
    }
}

/// Everything a fault acts on.
struct World {
    cluster: Mutex<Cluster>,
    redis: Mutex<Redis>,
    servers: Mutex<Servers>,
    pg_proxy: FaultProxy,
    redis_proxy: FaultProxy,
    /// The server a `server-kill` takes down next.
    next_victim: Mutex<usize>,
}

/// Runs `work` (blocking: process control) off the runtime's workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}

async fn inject(world: &Arc<World>, fault: Fault, hold: Duration, started: Instant) -> Result<Injected> {
    let start_ms = started.elapsed().as_millis() as u64;
    let mut note = String::new();
    match fault {
        Fault::RedisFlush => {
            let port = world.redis.lock().map_err(poisoned)?.port;
            let reply = ordo_testkit::redis_call(&format!("redis://127.0.0.1:{port}"), &["FLUSHALL"])?;
            if reply != "+OK" {
                bail!("FLUSHALL answered {reply}");
            }
        }
        Fault::RedisRestart => {
            world.redis.lock().map_err(poisoned)?.stop();
            tokio::time::sleep(hold).await;
            let w = world.clone();
            blocking(move || {
                let mut redis = w.redis.lock().map_err(poisoned)?;
                redis.child = Some(services::spawn_redis(redis.port)?);
                Ok(())
            })
            .await?;
        }
        Fault::RedisDelay => {
            world.redis_proxy.set_delay_ms(REDIS_DELAY_MS);
            tokio::time::sleep(hold).await;
            world.redis_proxy.set_delay_ms(0);
        }
        Fault::DbDelay => {
            world.pg_proxy.set_delay_ms(DB_DELAY_MS);
            tokio::time::sleep(hold).await;
            world.pg_proxy.set_delay_ms(0);
        }
        Fault::DbStall => {
            world.pg_proxy.set_stalled(true);
            tokio::time::sleep(hold).await;
            world.pg_proxy.set_stalled(false);
        }
        Fault::RedisReset | Fault::DbReset => {
            let proxy = if fault == Fault::RedisReset { &world.redis_proxy } else { &world.pg_proxy };
            let until = Instant::now() + hold;
            let mut cuts = 0;
            while Instant::now() < until {
                proxy.cut_all();
                cuts += 1;
                tokio::time::sleep(Duration::from_millis(RESET_EVERY_MS)).await;
            }
            note = format!("{cuts} cuts");
        }
        Fault::PgRestartFast | Fault::PgRestartImmediate => {
            let mode = if fault == Fault::PgRestartFast { "fast" } else { "immediate" };
            let w = world.clone();
            blocking(move || {
                w.cluster.lock().map_err(poisoned)?.primary().stop(mode);
                Ok(())
            })
            .await?;
            tokio::time::sleep(hold).await;
            let w = world.clone();
            blocking(move || w.cluster.lock().map_err(poisoned)?.primary().start()).await?;
        }
        Fault::TimersDue => {
            let url = world.cluster.lock().map_err(poisoned)?.primary().url();
            let db = ordo_store::connect(&ordo_store::StoreConfig::new(url)).await?;
            use sea_orm::ConnectionTrait as _;
            let made = db
                .execute_unprepared(
                    "UPDATE ordo_timers SET due_at = now() - interval '1 second' WHERE tenant = 'chaos' AND state = 'pending'",
                )
                .await?;
            note = format!("{} timers made due", made.rows_affected());
            db.close().await?;
        }
        Fault::ServerKill => {
            let victim = {
                let mut next = world.next_victim.lock().map_err(poisoned)?;
                let n = world.servers.lock().map_err(poisoned)?.running.len();
                let v = *next % n;
                *next += 1;
                v
            };
            world.servers.lock().map_err(poisoned)?.kill(victim);
            note = format!("server {victim}");
            tokio::time::sleep(hold).await;
            let w = world.clone();
            blocking(move || w.servers.lock().map_err(poisoned)?.start(victim)).await?;
        }
        Fault::Failover => {
            let w = world.clone();
            blocking(move || {
                let cluster = w.cluster.lock().map_err(poisoned)?;
                if cluster.nodes.len() < 2 || cluster.primary != 0 {
                    bail!("a failover needs the replica, and there is one failover per run");
                }
                cluster.primary().stop("immediate");
                Ok(())
            })
            .await?;
            tokio::time::sleep(hold).await;
            let w = world.clone();
            let port = blocking(move || {
                let mut cluster = w.cluster.lock().map_err(poisoned)?;
                cluster.nodes[1].promote()?;
                cluster.primary = 1;
                Ok(cluster.nodes[1].port)
            })
            .await?;
            world.pg_proxy.set_target(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            world.pg_proxy.cut_all();
            note = format!("replica on :{port} promoted");
        }
    }
    Ok(Injected { fault, start_ms, end_ms: started.elapsed().as_millis() as u64, note })
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> anyhow::Error {
    anyhow::anyhow!("a lock was poisoned by a panic")
}

/// Waits for the load to begin, then injects each fault after the warm-up, one after the
/// other with the recovery time between.
async fn schedule(
    world: Arc<World>,
    faults: Vec<Fault>,
    warmup: Duration,
    hold: Duration,
    gap: Duration,
    began: tokio::sync::oneshot::Receiver<Instant>,
) -> Result<Vec<Injected>> {
    let started = began.await.context("the load never began")?;
    tokio::time::sleep(warmup).await;
    let mut done = Vec::new();
    for fault in faults {
        let at = Instant::now();
        let injected = inject(&world, fault, hold, started).await.with_context(|| format!("{fault:?}"))?;
        eprintln!(
            "== chaos: {} at {:.1}s, {} ms{}",
            label(fault),
            injected.start_ms as f64 / 1e3,
            injected.end_ms - injected.start_ms,
            if injected.note.is_empty() { String::new() } else { format!(" ({})", injected.note) }
        );
        done.push(injected);
        // Each fault is followed by the same time without one, whatever it took.
        tokio::time::sleep_until(at + hold + gap).await;
    }
    Ok(done)
}

pub fn chaos(root: &Path, args: ChaosArgs) -> Result<ExitCode> {
    if !(1..=3).contains(&args.servers) {
        bail!("--servers is 1, 2 or 3");
    }
    let faults = if args.faults.is_empty() { ALL_FAULTS.to_vec() } else { args.faults.clone() };
    if faults.iter().filter(|f| **f == Fault::Failover).count() > 1 {
        bail!("one failover per run: it consumes the replica");
    }
    let secs = ordo_pressure::scenario::parse_duration;
    let (warmup, hold, gap) = (secs(&args.warmup)?, secs(&args.fault_for)?, secs(&args.recover_for)?);
    let out = args.out.clone().unwrap_or_else(|| root.join("target/chaos").join(pressure::stamp()));
    std::fs::create_dir_all(&out)?;
    let binary = match &args.server_binary {
        Some(b) => b.clone(),
        None => pressure::build_server(root, args.profile)?,
    };
    // The streams of what the servers serve (`specs/`): one per machine and resource.
    let mut streams = Vec::new();
    for file in crate::spec::spec_files(&[])? {
        let spec = crate::spec::compile_or_report(&file)?;
        streams.extend(spec.machines.iter().map(|m| m.name.clone()));
        streams.extend(spec.resources.iter().map(|r| r.name.clone()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let run = runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = run(&out, &binary, &args, faults, (warmup, hold, gap), &streams) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted: everything started was stopped")),
            _ = terminate.recv() => Err(anyhow::anyhow!("terminated: everything started was stopped")),
        }
    });
    // Whatever happened, everything started is stopped by now (each part stops when
    // dropped, at the end of `run` or when Ctrl-C dropped it).
    runtime.shutdown_timeout(Duration::from_secs(2));
    let passed = run?;
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// PostgreSQL: a primary, and with a failover among the faults its replica, each with
/// settings given at start so that the replica does not inherit the primary's
/// `synchronous_standby_names`.
async fn postgres(args: &ChaosArgs, faults: &[Fault]) -> Result<Cluster> {
    // In the temporary directory: the `postgres` user must reach it when we are root.
    let pg_dir = std::env::temp_dir().join(format!("ordo-chaos-pg-{}", pressure::stamp()));
    let common = "-c max_connections=200 -c wal_level=replica -c max_wal_senders=4";
    // Synchronous only with a replica to wait for (one is made for a failover).
    let sync = match args.replication {
        Replication::Sync if faults.contains(&Fault::Failover) => {
            " -c synchronous_standby_names=replica -c synchronous_commit=on"
        }
        _ => "",
    };
    let primary = {
        let common = format!("{common}{sync}");
        let pg_dir = pg_dir.clone();
        blocking(move || {
            let node = PgNode::init(&pg_dir.join("primary"), &common)?;
            node.start()?;
            Ok(node)
        })
        .await?
    };
    let mut cluster = Cluster { nodes: vec![primary], primary: 0, dir: pg_dir.clone(), keep: args.keep };
    if faults.contains(&Fault::Failover) {
        // The replica retries a lost primary every half second, not every five (the
        // default): with synchronous replication, a restarted primary's commits wait for it.
        let settings = format!("{common} -c wal_retrieve_retry_interval=500ms");
        let node = PgNode::replica_of(cluster.primary(), &pg_dir.join("replica"), "replica", &settings)?;
        node.start()?;
        cluster.nodes.push(node);
    }
    eprintln!(
        "== chaos: PostgreSQL on 127.0.0.1:{}{}",
        cluster.primary().port,
        match (cluster.nodes.get(1), args.replication) {
            (Some(r), Replication::Sync) => format!(", synchronous replica on 127.0.0.1:{}", r.port),
            (Some(r), Replication::Async) => format!(", asynchronous replica on 127.0.0.1:{}", r.port),
            (None, _) => String::new(),
        }
    );
    Ok(cluster)
}

async fn run(
    out: &Path,
    binary: &Path,
    args: &ChaosArgs,
    faults: Vec<Fault>,
    (warmup, hold, gap): (Duration, Duration, Duration),
    streams: &[String],
) -> Result<bool> {
    let cluster = postgres(args, &faults).await?;
    let pg_url = cluster.primary().url();
    let redis_port = services::free_port()?;
    let redis = Redis { port: redis_port, child: Some(services::spawn_redis(redis_port)?) };
    let pg_proxy = FaultProxy::start(ordo_testkit::socket_of(&pg_url)).await;
    let redis_proxy = FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], redis_port))).await;
    let api_key = format!("chaos-{}", pressure::stamp());
    let env = vec![
        ("DATABASE_URL", pg_proxy.url_via(&pg_url)),
        ("REDIS_URL", format!("redis://{}", redis_proxy.addr)),
        ("ORDO_API_KEYS", format!("chaos:{api_key}")),
        ("ORDO_RATE_PER_S", "1000000".to_string()),
        ("ORDO_RATE_BURST", "1000000".to_string()),
    ];
    let mut listen = Vec::new();
    for _ in 0..args.servers {
        listen.push(format!("127.0.0.1:{}", services::free_port()?));
    }
    let log = out.join("servers.log");
    let mut servers = Servers {
        binary: binary.to_path_buf(),
        env,
        listen,
        running: (0..args.servers).map(|_| None).collect(),
        log,
    };
    // One at a time: the first creates the tables.
    for i in 0..args.servers {
        servers.start(i)?;
    }
    let urls: Vec<String> = servers.running.iter().flatten().map(|s| s.url.clone()).collect();
    eprintln!(
        "== chaos: {} server(s): {}; their log: {}",
        urls.len(),
        urls.join(", "),
        servers.log.display()
    );
    let consumers = Consumers::start(
        &format!("redis://{}", redis_proxy.addr),
        &pg_proxy.url_via(&pg_url),
        &streams.iter().map(|s| format!("ordo:events:{s}")).collect::<Vec<_>>(),
    )
    .await?;
    let world = Arc::new(World {
        cluster: Mutex::new(cluster),
        redis: Mutex::new(redis),
        servers: Mutex::new(servers),
        pg_proxy,
        redis_proxy,
        next_victim: Mutex::new(args.servers.saturating_sub(1)),
    });

    let total = warmup + (hold + gap) * faults.len() as u32;
    let scenario = Scenario {
        stages: format!("{}/s:{}ms", args.rate, total.as_millis()),
        max_requests: args.max_requests,
        max_secs: total.as_secs_f64() + 60.0,
        // A real client: the same key again after no answer, a 5xx or a key in use,
        // backing off, never sooner than Retry-After, for up to 30 s.
        retry: Retry { attempts: 20, ..Retry::default() },
        // Faults make requests slow; the verdict is the audit and the failures.
        thresholds: ordo_pressure::scenario::Thresholds { p99_ms: 60_000.0, error_rate: args.error_rate },
        ..Scenario::default()
    };
    let (began, begun) = tokio::sync::oneshot::channel();
    let load = ordo_pressure::run(ordo_pressure::Run {
        target: Target { base_urls: urls, api_key: Some(api_key), shadow: false },
        scenario,
        replay: None,
        // The audit reads through the proxy: from the promoted replica after a failover.
        database: Some(ordo_store::StoreConfig::new(world.pg_proxy.url_via(&pg_url))),
        tenant: "chaos".to_string(),
        out: Some(out.to_path_buf()),
        relayed: true,
        on_load: Some(began),
    });
    let faults_run = schedule(world.clone(), faults, warmup, hold, gap, begun);
    let (report, injected) = tokio::join!(load, faults_run);
    let mut report = report?;
    let injected = injected?;
    let db = sea_orm::Database::connect(world.pg_proxy.url_via(&pg_url)).await?;
    let audit = report.audit.get_or_insert_default();
    ordo_pressure::audit::consumed(audit, &db, &db, &[CONSUMER_GROUP.to_string()], "chaos").await?;
    consumers.stop().await;
    let end_ms = report.done.iter().map(|d| d.due_ms).max().unwrap_or(0) + 1;
    let measured = measure(&injected, &report.done, end_ms, args.healthy_below);
    std::fs::write(out.join("chaos.json"), serde_json::to_string_pretty(&measured)?)?;
    // Every request's end, for a closer look at a fault.
    std::fs::write(out.join("requests.json"), serde_json::to_string(&report.done)?)?;
    print!("{}", report.summary());
    print!("{}", table(&measured));
    let servers = world.servers.lock().map_err(poisoned)?.running.len();
    let passed = verdict(&report, &measured, servers);
    eprintln!("== chaos report: {}", out.display());
    Ok(passed)
}

/// The last lines: what ran, what failed for good, which faults did not recover; passed
/// when the run's checks passed and every fault recovered.
fn verdict(report: &ordo_pressure::report::Report, measured: &[Measured], servers: usize) -> bool {
    let failed: usize = report.done.iter().filter(|d| d.error).count();
    let unrecovered: Vec<String> =
        measured.iter().filter(|m| m.recovery_ms.is_none()).map(|m| label(m.injected.fault)).collect();
    println!(
        "chaos: {} server(s), {} requests, {} retries, {} failed for good, {} fault(s) injected{}",
        servers,
        report.done.len(),
        report.retries,
        failed,
        measured.len(),
        if unrecovered.is_empty() {
            ", every one recovered".to_string()
        } else {
            format!(", not recovered by the next: {}", unrecovered.join(", "))
        }
    );
    let passed = report.passed() && unrecovered.is_empty();
    println!("chaos verdict: {}", if passed { "PASS" } else { "FAIL" });
    passed
}
