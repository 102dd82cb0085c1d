//! PostgreSQL and Redis for the test suite: the ones named in the environment, else the
//! local ones on their standard ports, else throwaway instances started from installed
//! binaries on free ports (stopped when the run ends), else one line saying what to install.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a throwaway server may take to come up.
const START_TIMEOUT_MS: u64 = 30_000;
/// How long a probe of a local port waits.
const PROBE_TIMEOUT_MS: u64 = 500;

pub struct Services {
    pub pg_url: String,
    pub redis_url: String,
    pg: Option<PgNode>,
    redis: Option<Child>,
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(pg) = &self.pg {
            pg.stop("immediate");
            let _ = std::fs::remove_dir_all(&pg.data);
        }
        if let Some(redis) = &mut self.redis {
            let _ = redis.kill();
            let _ = redis.wait();
        }
    }
}

/// A PostgreSQL server of our own: a data directory made by `initdb` (or
/// `pg_basebackup`), on a free loopback port. Run as the `postgres` user when we are root.
pub struct PgNode {
    bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    as_postgres: bool,
    /// Server settings given at start (`-c name=value ...`), never written into the data
    /// directory, so a copy of it does not inherit them.
    settings: String,
}

impl PgNode {
    /// A new cluster in `data` (which must not exist), not started.
    pub fn init(data: &Path, settings: &str) -> Result<PgNode> {
        let Some(initdb) = find_pg_bin("initdb") else {
            bail!(
                "PostgreSQL not found: install it (Debian: apt-get install postgresql) or set ORDO_TEST_PG_URL to a server with trust auth"
            );
        };
        // pg_ctl, pg_basebackup and postgres are beside initdb.
        let node = PgNode::at(initdb.parent().context("initdb's directory")?, data, settings)?;
        let dir = data.display().to_string();
        let out = node.run("initdb", &["-D", &dir, "-U", "postgres", "-A", "trust", "--no-sync"]).output()?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(node)
    }

    /// A streaming replica of `primary` in `data` (`pg_basebackup`), named `name` to the
    /// primary (for `synchronous_standby_names`), not started.
    pub fn replica_of(primary: &PgNode, data: &Path, name: &str, settings: &str) -> Result<PgNode> {
        let node = PgNode::at(&primary.bin, data, settings)?;
        let dir = data.display().to_string();
        let conninfo = format!("host=127.0.0.1 port={} user=postgres application_name={name}", primary.port);
        let out = node.run("pg_basebackup", &["-d", &conninfo, "-D", &dir, "-X", "stream", "-R"]).output()?;
        if !out.status.success() {
            bail!("pg_basebackup failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(node)
    }

    fn at(bin: &Path, data: &Path, settings: &str) -> Result<PgNode> {
        let as_postgres = is_root();
        std::fs::create_dir_all(data)?;
        // PostgreSQL refuses a data directory others may read.
        std::fs::set_permissions(data, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        if as_postgres {
            let status = Command::new("chown").args(["postgres:postgres"]).arg(data).status()?;
            if !status.success() {
                bail!("chown of {} to postgres failed", data.display());
            }
        }
        let port = free_port()?;
        Ok(PgNode {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            port,
            as_postgres,
            settings: settings.to_string(),
        })
    }

    fn run(&self, tool: &str, args: &[&str]) -> Command {
        run_as(self.as_postgres, &self.bin.join(tool), args)
    }

    /// Starts it and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        let data = self.data.display().to_string();
        let options = format!("-p {} -k {data} -c listen_addresses=127.0.0.1 {}", self.port, self.settings);
        let log = format!("{data}/server.log");
        let out = self
            .run("pg_ctl", &["-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start"])
            .output()?;
        if !out.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("PostgreSQL did not start: {}{log}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Stops it (`fast`: sessions are ended and a checkpoint written; `immediate`: at once,
    /// as a crash, recovering from the WAL at the next start). Best effort.
    pub fn stop(&self, mode: &str) {
        let data = self.data.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "-t", "60", "stop"]).output();
    }

    /// Makes a replica the primary.
    pub fn promote(&self) -> Result<()> {
        let data = self.data.display().to_string();
        let out = self.run("pg_ctl", &["-D", &data, "-w", "-t", "60", "promote"]).output()?;
        if !out.status.success() {
            bail!("pg_ctl promote failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// `ORDO_TEST_SERVICES=throwaway` skips the environment and the standard ports, to exercise
/// the throwaway path on a machine that has servers running.
fn throwaway_only() -> bool {
    std::env::var("ORDO_TEST_SERVICES").is_ok_and(|v| v == "throwaway")
}

pub fn ensure() -> Result<Services> {
    let (pg_url, pg) = postgres()?;
    let (redis_url, redis) = match redis() {
        Ok(found) => found,
        Err(e) => {
            // Stop the PostgreSQL we may have started before reporting.
            drop(Services { pg_url: String::new(), redis_url: String::new(), pg, redis: None });
            return Err(e);
        }
    };
    Ok(Services { pg_url, redis_url, pg, redis })
}

fn env_url(names: &[&str], scheme: &str) -> Option<String> {
    names.iter().filter_map(|n| std::env::var(n).ok()).find(|v| v.starts_with(scheme))
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(PROBE_TIMEOUT_MS),
    )
    .is_ok()
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// PostgreSQL refuses to run as root: run its tools as the `postgres` user then.
fn run_as(as_postgres: bool, program: &Path, args: &[&str]) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn find_pg_bin(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name))).filter(|p| p.exists()).collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(Path::parent)
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().or_else(|| which(name))
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

fn postgres() -> Result<(String, Option<PgNode>)> {
    if !throwaway_only() {
        if let Some(url) = env_url(&["ORDO_TEST_PG_URL", "DATABASE_URL"], "postgres") {
            return Ok((url, None));
        }
        if answers(5432) {
            return Ok(("postgres://postgres@127.0.0.1:5432/postgres".to_string(), None));
        }
    }
    let dir = std::env::temp_dir().join(format!("ordo-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pg = PgNode::init(&dir, "-c fsync=off -c max_connections=300")?;
    if let Err(e) = pg.start() {
        drop(Services { pg_url: String::new(), redis_url: String::new(), pg: Some(pg), redis: None });
        return Err(e);
    }
    eprintln!("== started a throwaway PostgreSQL on 127.0.0.1:{}", pg.port);
    Ok((pg.url(), Some(pg)))
}

fn redis_pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(PROBE_TIMEOUT_MS),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(PROBE_TIMEOUT_MS)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn redis() -> Result<(String, Option<Child>)> {
    if !throwaway_only() {
        if let Some(url) = env_url(&["ORDO_TEST_REDIS_URL", "REDIS_URL"], "redis") {
            return Ok((url, None));
        }
        if redis_pings(6379) {
            return Ok(("redis://127.0.0.1:6379".to_string(), None));
        }
    }
    let port = free_port()?;
    let child = spawn_redis(port)?;
    eprintln!("== started a throwaway Redis on 127.0.0.1:{port}");
    Ok((format!("redis://127.0.0.1:{port}"), Some(child)))
}

/// Starts a Redis that keeps nothing on disk on 127.0.0.1:`port`, and waits until it answers.
pub fn spawn_redis(port: u16) -> Result<Child> {
    let Some(server) = which("redis-server") else {
        bail!(
            "Redis not found: install it (Debian: apt-get install redis-server) or set ORDO_TEST_REDIS_URL"
        );
    };
    let child = Command::new(server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
    while !redis_pings(port) {
        if Instant::now() > deadline {
            let mut child = child;
            let _ = child.kill();
            bail!("redis-server did not answer on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}
