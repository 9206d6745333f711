//! MariaDB for the routing-api tests: a throw-away database per test on the shared server named
//! by `DATABASE_URL` (default `mysql://root@127.0.0.1:3306`), dropped when the
//! [`TestDatabase`] is dropped (also when the test panics).
//!
//! SQL goes through the `mariadb` (or `mysql`) command-line client, so this crate needs no SQL
//! driver: `$MARIADB_CLIENT` names another client binary. Statements are short and few; they
//! block the calling thread for a few milliseconds.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `DATABASE_URL` used when the variable is unset.
pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306";

/// Where the shared MariaDB server is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariaDb {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl MariaDb {
    /// The server of `DATABASE_URL` (`mysql://` or `mariadb://`, user, password, host, port;
    /// a database path in the URL is ignored).
    pub fn from_env() -> Self {
        let url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
        Self::parse(&url)
            .unwrap_or_else(|e| panic!("DATABASE_URL {url:?} is not a MariaDB URL: {e}"))
    }

    /// Parses `mysql://user:password@host:port/db`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("mysql://")
            .or_else(|| url.strip_prefix("mariadb://"))
            .ok_or("expected mysql:// or mariadb://")?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (u, h),
            None => ("", authority),
        };
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u.to_string(), p.to_string()),
            None => (userinfo.to_string(), String::new()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("bad port {p:?}"))?,
            ),
            None => (hostport.to_string(), 3306),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Self {
            host,
            port,
            user: if user.is_empty() { "root".into() } else { user },
            password,
        })
    }

    /// Runs `sql` (in database `db` if given) and returns the rows, tab-separated columns split
    /// (`NULL` for SQL NULL).
    pub fn query(&self, db: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let client = client_bin();
        let mut cmd = Command::new(&client);
        cmd.args(["--batch", "--skip-column-names", "--raw", "--protocol=TCP"])
            .arg(format!("--host={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={}", self.user))
            .arg("--connect-timeout=5")
            .arg("-e")
            .arg(sql)
            .env("MYSQL_PWD", &self.password)
            .stdin(Stdio::null());
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        let out = cmd.output().map_err(|e| {
            format!(
                "cannot run the MariaDB client {} ({e}); install mariadb-client or set $MARIADB_CLIENT",
                client.display()
            )
        })?;
        if !out.status.success() {
            return Err(format!(
                "MariaDB at {}:{} (user {}) refused `{sql}`: {}",
                self.host,
                self.port,
                self.user,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }
}

/// The MariaDB command-line client: `$MARIADB_CLIENT`, else `mariadb` or `mysql` on `PATH`.
pub fn client_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MARIADB_CLIENT") {
        return p.into();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for name in ["mariadb", "mysql"] {
            for dir in std::env::split_paths(&path) {
                let p = dir.join(name);
                if p.is_file() {
                    return p;
                }
            }
        }
    }
    PathBuf::from("mariadb")
}

/// A database of one test's own on the shared MariaDB server; dropped on drop.
#[derive(Debug)]
pub struct TestDatabase {
    server: MariaDb,
    name: String,
}

impl TestDatabase {
    /// Creates `<prefix>_<random>` on the `DATABASE_URL` server. Panics naming MariaDB and the
    /// URL when the server cannot be reached.
    pub fn create(prefix: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let server = MariaDb::from_env();
        let name = format!(
            "{prefix}_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        if let Err(e) = server.query(None, &format!("CREATE DATABASE `{name}`")) {
            panic!(
                "MariaDB is needed by this test and is not usable at {}:{} (DATABASE_URL, default \
                 {DEFAULT_DATABASE_URL}): {e}",
                server.host, server.port
            );
        }
        Self { server, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn server(&self) -> &MariaDb {
        &self.server
    }

    /// Runs `sql` in this database and returns its rows; panics on error.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.server
            .query(Some(&self.name), sql)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `sql` in this database; panics on error.
    pub fn exec(&self, sql: &str) {
        self.query(sql);
    }

    /// A single value (first column of the first row).
    pub fn scalar(&self, sql: &str) -> String {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_else(|| panic!("`{sql}` returned no rows"))
    }

    /// Rows in `table`.
    pub fn count(&self, table: &str) -> u64 {
        self.scalar(&format!("SELECT COUNT(*) FROM `{table}`"))
            .parse()
            .expect("COUNT(*) is a number")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = self
            .server
            .query(None, &format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            MariaDb::parse("mysql://root@127.0.0.1:3306").unwrap(),
            MariaDb {
                host: "127.0.0.1".into(),
                port: 3306,
                user: "root".into(),
                password: String::new()
            }
        );
        let m = MariaDb::parse("mariadb://u:p@db.local/x?ssl=1").unwrap();
        assert_eq!((m.user.as_str(), m.password.as_str()), ("u", "p"));
        assert_eq!((m.host.as_str(), m.port), ("db.local", 3306));
        assert!(MariaDb::parse("postgres://x").is_err());
    }
}
