//! A MariaDB server of one test's own, for tests that stop or restart the database
//! ([`PrivateMariaDb`]). The shared server of `DATABASE_URL` (port 3306,
//! [`TestDatabase`](crate::mariadb::TestDatabase)) is never stopped: other tests use it at the
//! same time.
//!
//! [`PrivateMariaDb::start`] initialises a data directory in a temporary directory
//! (`mariadb-install-db --no-defaults --auth-root-authentication-method=normal`: `root` with no
//! password, as on the shared server) and runs `mariadbd --no-defaults` on it, bound to
//! 127.0.0.1 on a port below the ephemeral range (so nothing takes it while the server is down
//! between [`stop`](PrivateMariaDb::stop) and [`restart`](PrivateMariaDb::restart)), with its
//! socket and pid file in the same directory and small InnoDB files. As root it runs with
//! `--user=root`. It is usable once it answers `SELECT 1` over TCP as
//! `mysql://root@127.0.0.1:<port>`.
//!
//! [`stop`](PrivateMariaDb::stop) shuts it down cleanly (SIGTERM, waiting for the exit and for
//! the port to refuse connections), [`kill`](PrivateMariaDb::kill) crashes it (SIGKILL), and
//! [`restart`](PrivateMariaDb::restart) starts it again on the same port and data. The process
//! is killed on drop and the directory removed (kept, with its path printed, when the test
//! fails); the output of the current run is printed when a test fails.
//!
//! `$MARIADBD_BIN` and `$MARIADB_INSTALL_DB` override where the server and the initialisation
//! script are (default: `/usr/sbin/mariadbd`, `mariadb-install-db` or `mysql_install_db` on
//! `PATH`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::mariadb::MariaDb;
use crate::process::{ChildProcess, PanicDump};
use crate::routing_api::{listener_port, Database};
use crate::util::TempDir;

/// How long a start may take (InnoDB recovery after a [`PrivateMariaDb::kill`] included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options given to both `mariadb-install-db` (which passes them on) and `mariadbd`: small
/// InnoDB files, so a test's data directory is ~20 MiB rather than ~120 MiB.
const SERVER_OPTIONS: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
    "--skip-name-resolve",
];

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Where `mariadbd` is: `$MARIADBD_BIN`, `/usr/sbin/mariadbd`, or `mariadbd`/`mysqld` on `PATH`.
pub fn mariadbd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MARIADBD_BIN") {
        return p.into();
    }
    let sbin = PathBuf::from("/usr/sbin/mariadbd");
    if sbin.is_file() {
        return sbin;
    }
    find_on_path(&["mariadbd", "mysqld"]).unwrap_or_else(|| {
        panic!(
            "mariadbd not found (looked at $MARIADBD_BIN, /usr/sbin/mariadbd and PATH): install \
             it (apt-get install mariadb-server)"
        )
    })
}

/// Where the data-directory initialisation script is: `$MARIADB_INSTALL_DB`, or
/// `mariadb-install-db`/`mysql_install_db` on `PATH`.
pub fn install_db_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MARIADB_INSTALL_DB") {
        return p.into();
    }
    find_on_path(&["mariadb-install-db", "mysql_install_db"]).unwrap_or_else(|| {
        panic!(
            "mariadb-install-db not found (looked at $MARIADB_INSTALL_DB and PATH): install it \
             (apt-get install mariadb-server)"
        )
    })
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A private `mariadbd` on 127.0.0.1 (see the module docs). Killed on drop.
pub struct PrivateMariaDb {
    /// The current run; `None` while stopped. Dropped (killed) before the directory goes.
    child: Option<ChildProcess>,
    port: u16,
    dir: TempDir,
    starts: u32,
}

impl PrivateMariaDb {
    /// Initialises a data directory and starts the server, waiting until it answers queries.
    pub async fn start() -> Self {
        let dir = TempDir::new("it-mariadb");
        install_data_dir(&dir).await;
        let mut db = Self {
            child: None,
            port: listener_port(),
            dir,
            starts: 0,
        };
        let mut last = String::new();
        // A port chosen free may be taken before the server binds it: try others.
        for _ in 0..3 {
            match db.launch().await {
                Ok(()) => return db,
                Err(e) => last = e,
            }
            db.port = listener_port();
        }
        panic!("the private mariadbd could not be started: {last}");
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// How to reach it (`root`, no password), for [`MariaDb::query`].
    pub fn server(&self) -> MariaDb {
        MariaDb {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
            password: String::new(),
        }
    }

    /// Runs `sql` (in database `db` if given) and returns its rows; panics on error.
    pub fn query(&self, db: Option<&str>, sql: &str) -> Vec<Vec<String>> {
        self.server()
            .query(db, sql)
            .unwrap_or_else(|e| panic!("private mariadbd: {e}"))
    }

    /// Creates database `schema` (if it does not exist) and returns it as a routing-api
    /// [`Database`] (`sqldb.*` pointing at this server).
    pub fn database(&self, schema: &str) -> Database {
        self.query(None, &format!("CREATE DATABASE IF NOT EXISTS `{schema}`"));
        let s = self.server();
        Database::Mysql {
            host: s.host,
            port: s.port,
            schema: schema.to_string(),
            user: s.user,
            password: s.password,
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_exit().is_none())
    }

    /// What the current (or last) run printed.
    pub fn log(&self) -> String {
        self.child
            .as_ref()
            .map(ChildProcess::output)
            .unwrap_or_default()
    }

    /// Shuts the server down cleanly (SIGTERM; SIGKILL after 30 s) and waits until its port
    /// refuses connections. Nothing happens if it is stopped already.
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.signal(libc::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_exit().is_none() {
                if Instant::now() >= deadline {
                    eprintln!(
                        "private mariadbd (port {}) did not shut down within {STOP_TIMEOUT:?}; \
                         killing it",
                        self.port
                    );
                    child.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.wait_port_closed().await;
    }

    /// Kills the server with SIGKILL (a crash: no clean shutdown) and waits until its port
    /// refuses connections.
    pub async fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.kill();
        }
        self.wait_port_closed().await;
    }

    /// Stops the server if it runs ([`stop`](Self::stop)), then starts it again on the same
    /// port with the same data, waiting until it answers queries.
    pub async fn restart(&mut self) {
        if self.is_running() {
            self.stop().await;
        }
        let mut last = String::new();
        for _ in 0..20 {
            match self.launch().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "the private mariadbd could not be restarted on port {}: {last}",
            self.port
        );
    }

    async fn wait_port_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "private mariadbd port {} still accepts connections after the server exited",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `mariadbd` on the data directory and waits until it answers `SELECT 1`.
    async fn launch(&mut self) -> Result<(), String> {
        self.starts += 1;
        let dir = self.dir.path();
        let log_path = dir.join(format!("mariadbd-{}.log", self.starts));
        let mut cmd = Command::new(mariadbd_bin());
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .args(SERVER_OPTIONS);
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let command_line = format!("{cmd:?}");
        let child = ChildProcess::try_spawn("mariadbd", cmd, &log_path, command_line)?
            .with_panic_dump(PanicDump::Log {
                title: format!("private mariadbd (port {})", self.port),
            });
        self.child = Some(child);
        let server = self.server();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child just spawned");
            if let Some(status) = child.try_exit() {
                let output = child.output();
                self.child = None;
                return Err(format!(
                    "mariadbd on port {} exited with {status} during startup; its output:\n{output}",
                    self.port
                ));
            }
            if child.output().contains("ready for connections") {
                let s = server.clone();
                let answered =
                    tokio::task::spawn_blocking(move || s.query(None, "SELECT 1").is_ok())
                        .await
                        .unwrap_or(false);
                if answered {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let output = child.output();
                child.kill();
                self.child = None;
                return Err(format!(
                    "mariadbd on port {} did not answer within {START_TIMEOUT:?}; its output:\n{output}",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `mariadb-install-db` into `<dir>/data`: system tables and `root` with no password.
async fn install_data_dir(dir: &TempDir) {
    let data = dir.path().join("data");
    let mut cmd = Command::new(install_db_bin());
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .args(SERVER_OPTIONS);
    if running_as_root() {
        cmd.arg("--user=root");
    }
    let shown = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("mariadb-install-db runner")
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn keeps_its_data_and_port_across_a_restart_and_a_crash() {
        let mut db = PrivateMariaDb::start().await;
        let port = db.port();
        db.query(None, "CREATE DATABASE kept");
        db.query(Some("kept"), "CREATE TABLE t (v INT) ENGINE=InnoDB");
        db.query(Some("kept"), "INSERT INTO t VALUES (7)");

        db.stop().await;
        assert!(!db.is_running());
        assert!(db.server().query(None, "SELECT 1").is_err());
        db.restart().await;
        assert_eq!(db.port(), port);
        assert_eq!(db.query(Some("kept"), "SELECT v FROM t"), vec![vec!["7"]]);

        db.query(Some("kept"), "INSERT INTO t VALUES (8)");
        db.kill().await;
        db.restart().await;
        assert_eq!(
            db.query(Some("kept"), "SELECT v FROM t ORDER BY v"),
            vec![vec!["7"], vec!["8"]]
        );
        assert_eq!(db.url(), format!("mysql://root@127.0.0.1:{port}"));
    }
}
