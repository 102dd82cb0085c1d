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
    pg: Option<ThrowawayPg>,
    redis: Option<Child>,
}

struct ThrowawayPg {
    pg_ctl: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(pg) = &self.pg {
            let dir = pg.dir.display().to_string();
            let _ =
                run_as(pg.as_postgres, &pg.pg_ctl, &["-D", &dir, "-m", "immediate", "-w", "stop"]).output();
            let _ = std::fs::remove_dir_all(&pg.dir);
        }
        if let Some(redis) = &mut self.redis {
            let _ = redis.kill();
            let _ = redis.wait();
        }
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

fn free_port() -> Result<u16> {
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

fn postgres() -> Result<(String, Option<ThrowawayPg>)> {
    if !throwaway_only() {
        if let Some(url) = env_url(&["ORDO_TEST_PG_URL", "DATABASE_URL"], "postgres") {
            return Ok((url, None));
        }
        if answers(5432) {
            return Ok(("postgres://postgres@127.0.0.1:5432/postgres".to_string(), None));
        }
    }
    let (Some(initdb), Some(pg_ctl)) = (find_pg_bin("initdb"), find_pg_bin("pg_ctl")) else {
        bail!(
            "PostgreSQL not found: install it (Debian: apt-get install postgresql) or set ORDO_TEST_PG_URL to a server with trust auth"
        );
    };
    let as_postgres = is_root();
    let dir = std::env::temp_dir().join(format!("ordo-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if as_postgres {
        let status = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status()?;
        if !status.success() {
            bail!("chown of {} to postgres failed", dir.display());
        }
    }
    let data = dir.display().to_string();
    let out = run_as(as_postgres, &initdb, &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"])
        .output()?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let port = free_port()?;
    let options =
        format!("-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300");
    let log = format!("{data}/server.log");
    let out =
        run_as(as_postgres, &pg_ctl, &["-D", &data, "-o", &options, "-l", &log, "-w", "-t", "30", "start"])
            .output()?;
    let pg = ThrowawayPg { pg_ctl, dir, as_postgres };
    if !out.status.success() {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        drop(Services { pg_url: String::new(), redis_url: String::new(), pg: Some(pg), redis: None });
        bail!("PostgreSQL did not start: {}{log}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("== started a throwaway PostgreSQL on 127.0.0.1:{port}");
    Ok((format!("postgres://postgres@127.0.0.1:{port}/postgres"), Some(pg)))
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
    let Some(server) = which("redis-server") else {
        bail!(
            "Redis not found: install it (Debian: apt-get install redis-server) or set ORDO_TEST_REDIS_URL"
        );
    };
    let port = free_port()?;
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
    eprintln!("== started a throwaway Redis on 127.0.0.1:{port}");
    Ok((format!("redis://127.0.0.1:{port}"), Some(child)))
}
