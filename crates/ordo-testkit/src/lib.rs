//! Test support shared by the crates' integration tests: every test gets its own
//! PostgreSQL database, SQLite file and Redis key prefix, so tests run in parallel and
//! never see each other. `cargo xtask test` finds or starts the servers and sets
//! `ORDO_TEST_PG_URL` and `ORDO_TEST_REDIS_URL`; without them the local defaults are tried.

#![allow(clippy::unwrap_used)] // test support: a failure here is a failed test.

use sea_orm::{ConnectionTrait, Database};
use std::path::PathBuf;

/// The server-level URL tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("ORDO_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// The Redis server tests use, each under its own key prefix.
pub fn redis_url() -> String {
    std::env::var("ORDO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A fresh Redis key prefix, unique to the calling test; its keys are deleted when it is
/// dropped (keep it for as long as the test uses Redis).
pub fn redis_prefix() -> RedisPrefix {
    redis_prefix_on(&redis_url())
}

/// A fresh key prefix on the Redis at `url`, deleted as [`redis_prefix`]'s.
pub fn redis_prefix_on(url: &str) -> RedisPrefix {
    RedisPrefix { prefix: format!("ordo-test:{}:", uuid::Uuid::now_v7().simple()), url: url.to_string() }
}

/// A test's Redis key prefix (see [`redis_prefix`]); it reads as the prefix itself.
#[derive(Debug)]
pub struct RedisPrefix {
    prefix: String,
    url: String,
}

impl RedisPrefix {
    /// Deletes the prefix's keys now, as a flushed or failed-over Redis forgets them.
    pub fn forget(&self) {
        delete_keys(&self.url, &format!("{}*", self.prefix)).expect("the prefix's keys deleted");
    }

    /// Keeps the keys (for a look afterwards) and returns the prefix.
    pub fn keep(mut self) -> String {
        self.url.clear();
        self.prefix.clone()
    }
}

impl std::ops::Deref for RedisPrefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.prefix
    }
}

impl std::fmt::Display for RedisPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.prefix)
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // Best effort: a Redis that is gone has nothing left to clean.
        if !self.url.is_empty() {
            let _ = delete_keys(&self.url, &format!("{}*", self.prefix));
        }
    }
}

/// Deletes the keys matching `pattern` with one script on the server (a SCAN loop and DEL;
/// it runs as one command, so keep test keyspaces small, as the guard does).
fn delete_keys(url: &str, pattern: &str) -> std::io::Result<()> {
    const SCRIPT: &str = "local cursor = '0' local n = 0 repeat \
        local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000) cursor = r[1] \
        for _, k in ipairs(r[2]) do redis.call('DEL', k) n = n + 1 end until cursor == '0' return n";
    let reply = redis_call(url, &["EVAL", SCRIPT, "0", pattern])?;
    if reply.starts_with(':') { Ok(()) } else { Err(std::io::Error::other(reply)) }
}

/// One Redis command over a plain connection, and the first line of its reply (`:1`,
/// `+OK`, `-ERR ...`): no client library, and callable from `Drop` inside or outside a
/// runtime.
pub fn redis_call(url: &str, args: &[&str]) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(socket_of(url))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut command = format!("*{}\r\n", args.len());
    for a in args {
        command.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(command.as_bytes())?;
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_string())
}

/// Runs an async test body once per backend, as two tests in a module named `$name`:
/// `postgres` and `sqlite`. The body is a closure taking the [`Backend`].
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                ($body)($crate::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                ($body)($crate::Backend::Sqlite).await
            }
        }
    };
}

/// The backends every store test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database that exists for one test and is removed when dropped.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres {
        admin: String,
        name: String,
    },
    Sqlite {
        path: PathBuf,
    },
    /// Kept on purpose (see [`TestDb::keep`]).
    Kept,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => TestDb::postgres().await,
            Backend::Sqlite => TestDb::sqlite(),
        }
    }

    /// A new database on the test PostgreSQL server.
    pub async fn postgres() -> TestDb {
        TestDb::postgres_on(&pg_admin_url())
            .await
            .unwrap_or_else(|e| panic!("{e}; run the suite with `cargo xtask test`, which starts one"))
    }

    /// A new database on the PostgreSQL server of `admin` (any database URL of it).
    pub async fn postgres_on(admin: &str) -> Result<TestDb, String> {
        let name = format!("ordo_t_{}", uuid::Uuid::now_v7().simple());
        let conn = Database::connect(admin)
            .await
            .map_err(|e| format!("PostgreSQL is not reachable at {admin} ({e})"))?;
        let created = conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await;
        let _ = conn.close().await;
        created.map_err(|e| format!("creating a database at {admin}: {e}"))?;
        let url = with_database(admin, &name);
        Ok(TestDb {
            url,
            backend: Backend::Postgres,
            cleanup: Cleanup::Postgres { admin: admin.to_string(), name },
        })
    }

    /// Keeps the database (it is not removed when this is dropped); returns its URL.
    pub fn keep(mut self) -> String {
        self.cleanup = Cleanup::Kept;
        self.url.clone()
    }

    /// A new SQLite file in the temp directory.
    pub fn sqlite() -> TestDb {
        let path = std::env::temp_dir().join(format!("ordo-test-{}.db", uuid::Uuid::now_v7().simple()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        TestDb { url, backend: Backend::Sqlite, cleanup: Cleanup::Sqlite { path } }
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
    format!("{}/{name}{query}", &base[..path_start])
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Kept => {}
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Postgres { admin, name } => {
                // Drop may run inside a runtime; do the async cleanup on a thread of its own.
                let (admin, name) = (admin.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(conn) = Database::connect(&admin).await {
                            let _ = conn
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                                ))
                                .await;
                            let _ = conn.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A TCP proxy for fault injection: forwards to `target` until told to cut every open
/// connection, to refuse new ones, to hold what clients send (a hung server) or to delay
/// it. Tests point a client at `addr` instead of the server.
pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<std::net::SocketAddr>>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    slow: std::sync::Arc<Slow>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    trap: std::sync::Arc<std::sync::Mutex<Option<Trap>>>,
    accept: tokio::task::JoinHandle<()>,
}

/// How the proxy holds back what clients send: not at all, by a delay per read, or until
/// released.
#[derive(Default)]
struct Slow {
    stalled: std::sync::atomic::AtomicBool,
    delay_ms: std::sync::atomic::AtomicU64,
}

impl Slow {
    async fn wait(&self) {
        use std::sync::atomic::Ordering;
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        while self.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// A connection cut set off by what the client sends (see [`FaultProxy::cut_at`]).
#[derive(Clone)]
struct Trap {
    pattern: Vec<u8>,
    /// Forward the bytes that hold the pattern before cutting (the server acts on them,
    /// and its answer never comes back), or cut before they reach it.
    forward: bool,
    left: usize,
    sprung: usize,
}

impl FaultProxy {
    pub async fn start(target: std::net::SocketAddr) -> FaultProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow = std::sync::Arc::new(Slow::default());
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let trap: std::sync::Arc<std::sync::Mutex<Option<Trap>>> = Default::default();
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let accept = {
            let (down, conns, trap, slow) = (down.clone(), conns.clone(), trap.clone(), slow.clone());
            let target = target.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let to = *target.lock().unwrap();
                    let task = tokio::spawn(forward(inbound, to, trap.clone(), slow.clone()));
                    conns.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        FaultProxy { addr, target, down, slow, conns, trap, accept }
    }

    /// New connections go to `target` from now on (a virtual IP moved to a promoted
    /// replica); open ones stay where they are until cut.
    pub fn set_target(&self, target: std::net::SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// From now on, the next `times` connections whose client sends `pattern` (within one
    /// read, e.g. `b"COMMIT\0"` of PostgreSQL's simple query) are cut there: with
    /// `forward`, after the bytes reach the server and before its answer comes back (the
    /// client cannot know whether the COMMIT happened), else before the server sees them.
    pub fn cut_at(&self, pattern: &[u8], forward: bool, times: usize) {
        *self.trap.lock().unwrap() =
            Some(Trap { pattern: pattern.to_vec(), forward, left: times, sprung: 0 });
    }

    /// How many cuts `cut_at` made; the trap is disarmed.
    pub fn disarm(&self) -> usize {
        self.trap.lock().unwrap().take().map_or(0, |t| t.sprung)
    }

    /// Closes every open connection at once, as a crashed server or a cut cable would.
    pub fn cut_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// While down, new connections are closed as soon as they arrive.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            self.cut_all();
        }
    }

    /// While stalled, what clients send is held, not forwarded (a hung server: connections
    /// stay open and nothing is answered); released, it goes on in order.
    pub fn set_stalled(&self, stalled: bool) {
        self.slow.stalled.store(stalled, std::sync::atomic::Ordering::SeqCst);
    }

    /// Delays every read of what clients send by `ms` (0: none), as a slow network would.
    pub fn set_delay_ms(&self, ms: u64) {
        self.slow.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_via(&self, url: &str) -> String {
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let rest = &url[scheme_end..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..host_end];
        let userinfo = authority.rfind('@').map_or(String::new(), |i| authority[..=i].to_string());
        format!("{}{userinfo}{}{}", &url[..scheme_end], self.addr, &rest[host_end..])
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

/// Copies both ways between a client and `target`, until either side closes or the trap
/// springs on what the client sent.
async fn forward(
    inbound: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    trap: std::sync::Arc<std::sync::Mutex<Option<Trap>>>,
    slow: std::sync::Arc<Slow>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = {
        let cut = cut.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                // Once cut, nothing more reaches the client.
                if cut.load(std::sync::atomic::Ordering::SeqCst)
                    || client_write.write_all(&buf[..n]).await.is_err()
                {
                    break;
                }
            }
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
        let sprung = {
            let mut trap = trap.lock().unwrap();
            match trap.as_mut() {
                Some(t)
                    if t.left > 0 && buf[..n].windows(t.pattern.len()).any(|w| w == t.pattern.as_slice()) =>
                {
                    t.left -= 1;
                    t.sprung += 1;
                    Some(t.forward)
                }
                _ => None,
            }
        };
        if let Some(forward) = sprung {
            cut.store(true, std::sync::atomic::Ordering::SeqCst);
            if forward {
                let _ = server_write.write_all(&buf[..n]).await;
                // Give the server the time to act on them before the connection goes.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            break;
        }
        slow.wait().await;
        if server_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    answers.abort();
}

/// The socket address of a `postgres://` or `redis://` URL.
pub fn socket_of(url: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let hostport = authority.rsplit('@').next().unwrap();
    hostport.to_socket_addrs().unwrap().next().unwrap()
}

#[cfg(test)]
mod tests {
    /// A prefix's keys go when it is dropped; other keys stay.
    #[test]
    fn a_dropped_prefix_takes_its_keys_with_it() {
        let send = |args: &[&str]| super::redis_call(&super::redis_url(), args).unwrap();
        let (gone, kept) = (super::redis_prefix(), super::redis_prefix());
        for i in 0..1500 {
            send(&["SET", &format!("{gone}k{i}"), "v"]);
        }
        send(&["SET", &format!("{kept}k"), "v"]);
        let (first, last) = (format!("{gone}k0"), format!("{gone}k1499"));
        drop(gone);
        assert_eq!(send(&["EXISTS", &first]), ":0");
        assert_eq!(send(&["EXISTS", &last]), ":0");
        assert_eq!(send(&["EXISTS", &format!("{kept}k")]), ":1");
    }

    #[test]
    fn database_names_replace_the_path() {
        for (url, want) in [
            ("postgres://postgres@127.0.0.1:5432/postgres", "postgres://postgres@127.0.0.1:5432/x"),
            ("postgres://u:p@h:1/db?sslmode=disable", "postgres://u:p@h:1/x?sslmode=disable"),
            ("postgres://h", "postgres://h/x"),
            ("postgres://h/?host=/tmp", "postgres://h/x?host=/tmp"),
        ] {
            assert_eq!(super::with_database(url, "x"), want);
        }
    }
}
