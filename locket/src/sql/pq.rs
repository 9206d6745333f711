//! PostgreSQL connection strings in the forms Go's `github.com/lib/pq` accepts (what upstream
//! Locket passes its `database_connection_string` to): `postgres://` / `postgresql://` URLs and
//! libpq-style `key=value` lists (`host=… port=… user=… password='…' dbname=… sslmode=disable`).
//!
//! Both forms are reduced to one list of lib/pq parameters ([`PqDsn`]), exactly as
//! `pq.ParseURL` does, and then turned into sqlx [`PgConnectOptions`] with lib/pq's defaults:
//! `sslmode` defaults to `require` (encrypted, certificate not verified), the host to
//! `localhost`, and the `PG*` environment variables (`PGHOST`, `PGUSER`, `PGPASSWORD`,
//! `PGSSLMODE`, …) fill in what the string leaves out. `~/.pgpass` is not consulted.

use std::path::Path;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{percent_decode_with, redact, split_host_port};
use crate::error::LockError;

/// lib/pq parameters that only configure the client and are not acted on here.
const IGNORED_PARAMS: &[&str] = &[
    "connect_timeout",
    "sslsni",
    "sslpassword",
    "krbsrvname",
    "krbspn",
    "binary_parameters",
    "disable_prepared_binary_result",
    // sqlx always sends client_encoding=UTF8 and DateStyle=ISO (the only values lib/pq allows).
    "client_encoding",
    "datestyle",
];

/// A lib/pq connection string as its ordered parameter list (later duplicates win).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PqDsn {
    /// `(key, value)` pairs in order, values unquoted / percent-decoded.
    pub params: Vec<(String, String)>,
}

impl PqDsn {
    /// Parses either form: a `postgres://` / `postgresql://` URL or a `key=value` list.
    pub fn parse_any(conn: &str) -> Result<Self, LockError> {
        let conn = conn.trim();
        if is_postgres_url(conn) {
            Self::parse_url(conn)
        } else {
            Self::parse(conn)
        }
    }

    /// Parses a libpq `key=value` list like lib/pq's `parseOpts`: pairs separated by
    /// whitespace, optional whitespace around `=`, values either bare (backslash escapes the
    /// next character) or single-quoted (`\'` and `\\` escapes inside).
    pub fn parse(dsn: &str) -> Result<Self, LockError> {
        let bad = |why: String| {
            LockError::Config(format!(
                "invalid PostgreSQL connection string {:?}: {why}",
                redact_key_value(dsn)
            ))
        };
        let chars: Vec<char> = dsn.chars().collect();
        let mut i = 0;
        let mut out = PqDsn::default();
        let skip_spaces = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        loop {
            skip_spaces(&mut i);
            if i >= chars.len() {
                break;
            }
            let key_start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' {
                i += 1;
            }
            let key: String = chars[key_start..i].iter().collect();
            skip_spaces(&mut i);
            if i >= chars.len() || chars[i] != '=' {
                return Err(bad(format!("missing \"=\" after {key:?}")));
            }
            i += 1;
            skip_spaces(&mut i);
            let mut value = String::new();
            if i < chars.len() && chars[i] == '\'' {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(bad("unterminated quoted value".into())),
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            if let Some(c) = chars.get(i + 1) {
                                value.push(*c);
                            }
                            i += 2;
                        }
                        Some(c) => {
                            value.push(*c);
                            i += 1;
                        }
                    }
                }
            } else {
                while i < chars.len() && !chars[i].is_whitespace() {
                    if chars[i] == '\\' {
                        i += 1;
                        match chars.get(i) {
                            Some(c) => value.push(*c),
                            None => return Err(bad("missing character after backslash".into())),
                        }
                    } else {
                        value.push(chars[i]);
                    }
                    i += 1;
                }
            }
            if key.is_empty() {
                return Err(bad("empty parameter name".into()));
            }
            out.params.push((key, value));
        }
        Ok(out)
    }

    /// Parses a `postgres://[user[:password]@][host][:port][/dbname][?param=value&…]` URL into
    /// parameters like lib/pq's `ParseURL` (empty values are dropped; query parameters may
    /// override host, port, … and carry any other setting).
    pub fn parse_url(url: &str) -> Result<Self, LockError> {
        let bad = |why: &str| {
            LockError::Config(format!("invalid PostgreSQL URL {:?}: {why}", redact(url)))
        };
        let rest = url
            .split_once("://")
            .filter(|(scheme, _)| {
                scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
            })
            .map(|(_, rest)| rest)
            .ok_or_else(|| bad("expected the scheme postgres:// or postgresql://"))?;
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let mut out = PqDsn::default();
        let mut accrue = |k: &str, v: String| {
            if !v.is_empty() {
                out.params.push((k.to_string(), v));
            }
        };
        let hostport = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                accrue("user", percent_decode_with(user, false));
                accrue("password", percent_decode_with(password, false));
                &authority[at + 1..]
            }
            None => authority,
        };
        let (host, port) = split_host_port(hostport);
        if let Some(port) = port {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("invalid port {port:?}")));
            }
            accrue("host", percent_decode_with(host, false));
            accrue("port", port.to_string());
        } else {
            accrue("host", percent_decode_with(host, false));
        }
        if let Some(db) = path.strip_prefix('/') {
            accrue("dbname", percent_decode_with(db, false));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            accrue(&percent_decode_with(k, true), percent_decode_with(v, true));
        }
        Ok(out)
    }

    /// The value of a parameter (the last one if repeated).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// sqlx connect options with lib/pq's defaults (see the module docs). `host` (a directory
    /// for a Unix socket when it starts with `/`), `hostaddr`, `port`, `user`, `password`,
    /// `dbname`, `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`), `sslrootcert`, `sslcert`, `sslkey`, `sslinline`, `application_name`,
    /// `fallback_application_name` and `options` (`-c name=value` …) are honoured; lib/pq's
    /// client-only tuning parameters (`connect_timeout`, …) are ignored; any other parameter is
    /// sent to the server as a run-time setting (e.g. `search_path`), as lib/pq does.
    pub fn to_connect_options(&self) -> Result<PgConnectOptions, LockError> {
        let env_set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let mut o = PgConnectOptions::new_without_pgpass();
        let mut host_given = env_set("PGHOST") || env_set("PGHOSTADDR");
        let mut ssl_mode_given = env_set("PGSSLMODE");
        let mut application_name_given = env_set("PGAPPNAME");
        let mut fallback_application_name = None;
        let inline = self.param("sslinline") == Some("true");
        for (k, v) in &self.params {
            match k.as_str() {
                "host" | "hostaddr" => {
                    if !v.is_empty() {
                        o = o.host(v);
                        host_given = true;
                    }
                }
                "port" => {
                    if !v.is_empty() {
                        let port = v.parse::<u16>().map_err(|_| {
                            LockError::Config(format!("invalid PostgreSQL port {v:?}"))
                        })?;
                        o = o.port(port);
                    }
                }
                "user" => o = o.username(v),
                "password" => o = o.password(v),
                "dbname" => o = o.database(v),
                "sslmode" => {
                    o = o.ssl_mode(ssl_mode(v)?);
                    ssl_mode_given = true;
                }
                "sslrootcert" if inline => {
                    o = o.ssl_root_cert_from_pem(v.as_bytes().to_vec());
                }
                "sslrootcert" => o = o.ssl_root_cert(Path::new(v)),
                "sslcert" if inline => o = o.ssl_client_cert_from_pem(v.as_bytes()),
                "sslcert" => o = o.ssl_client_cert(Path::new(v)),
                "sslkey" if inline => o = o.ssl_client_key_from_pem(v.as_bytes()),
                "sslkey" => o = o.ssl_client_key(Path::new(v)),
                "sslinline" => {}
                "application_name" => {
                    o = o.application_name(v);
                    application_name_given = true;
                }
                "fallback_application_name" => fallback_application_name = Some(v.as_str()),
                "options" => o = o.options(parse_options(v)?),
                k if IGNORED_PARAMS.contains(&k) => {
                    tracing::debug!(param = %k, "postgres connection parameter ignored");
                }
                k => o = o.options([(k, escape_option_value(v))]),
            }
        }
        if !host_given {
            // lib/pq's default; sqlx would otherwise look for a local Unix socket.
            o = o.host("localhost");
        }
        if !ssl_mode_given {
            // lib/pq's default is "require" (sqlx's would be "prefer").
            o = o.ssl_mode(PgSslMode::Require);
        }
        if let (Some(name), false) = (fallback_application_name, application_name_given) {
            o = o.application_name(name);
        }
        Ok(o)
    }
}

/// True for `postgres://…` / `postgresql://…`.
pub(super) fn is_postgres_url(conn: &str) -> bool {
    let lower = conn.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// True if `conn` starts like a libpq `key=value` list (`name =` with an identifier name).
pub(super) fn looks_like_key_value(conn: &str) -> bool {
    let conn = conn.trim_start();
    let key_len = conn
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(conn.len());
    key_len > 0
        && conn.as_bytes()[0].is_ascii_alphabetic()
        && conn[key_len..].trim_start().starts_with('=')
}

/// Hides the value of `password=` in a `key=value` list.
pub(super) fn redact_key_value(conn: &str) -> String {
    let mut out = String::with_capacity(conn.len());
    let mut rest = conn;
    while let Some(pos) = rest.find("password") {
        let before_ok = pos == 0
            || rest[..pos]
                .chars()
                .next_back()
                .is_some_and(char::is_whitespace);
        let after = &rest[pos + "password".len()..];
        let after_trimmed = after.trim_start();
        if !before_ok || !after_trimmed.starts_with('=') {
            out.push_str(&rest[..pos + "password".len()]);
            rest = after;
            continue;
        }
        let value = after_trimmed[1..].trim_start();
        out.push_str(&rest[..pos]);
        out.push_str("password=****");
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            let close = quoted.char_indices().find(|&(_, c)| {
                let hit = c == '\'' && !escaped;
                escaped = c == '\\' && !escaped;
                hit
            });
            match close {
                Some((i, _)) => 1 + i + 1,
                None => value.len(),
            }
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

fn ssl_mode(v: &str) -> Result<PgSslMode, LockError> {
    Ok(match v {
        "disable" => PgSslMode::Disable,
        "allow" => PgSslMode::Allow,
        "prefer" => PgSslMode::Prefer,
        "" | "require" => PgSslMode::Require,
        "verify-ca" => PgSslMode::VerifyCa,
        "verify-full" => PgSslMode::VerifyFull,
        other => {
            return Err(LockError::Config(format!(
                "unsupported PostgreSQL sslmode {other:?}: expected disable, allow, prefer, \
                 require, verify-ca or verify-full"
            )))
        }
    })
}

/// Parses libpq's `options` value: `-c name=value`, `-cname=value` and `--name=value` items
/// separated by whitespace (a backslash escapes the next character).
fn parse_options(v: &str) -> Result<Vec<(String, String)>, LockError> {
    let bad = |why: &str| LockError::Config(format!("invalid PostgreSQL options {v:?}: {why}"));
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.push(chars.next().ok_or_else(|| bad("trailing backslash"))?);
                in_word = true;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next().ok_or_else(|| bad("-c without a setting"))?
        } else if let Some(s) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            s.to_string()
        } else {
            return Err(bad(&format!(
                "unsupported item {w:?} (expected -c name=value)"
            )));
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| bad(&format!("{setting:?} is not name=value")))?;
        out.push((name.to_string(), escape_option_value(value)));
    }
    Ok(out)
}

/// Escapes a run-time setting's value for the startup `options` string.
fn escape_option_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn key_value_forms() {
        let d = PqDsn::parse(
            "host=db.example port=5433 user=locket password='p@ss w\\'rd' dbname=locket sslmode=disable",
        )
        .unwrap();
        assert_eq!(
            d.params,
            kv(&[
                ("host", "db.example"),
                ("port", "5433"),
                ("user", "locket"),
                ("password", "p@ss w'rd"),
                ("dbname", "locket"),
                ("sslmode", "disable"),
            ])
        );
        let d = PqDsn::parse("  a = 1   b=x\\ y c='' d=").unwrap();
        assert_eq!(
            d.params,
            kv(&[("a", "1"), ("b", "x y"), ("c", ""), ("d", "")])
        );
        assert_eq!(PqDsn::parse("").unwrap().params, vec![]);
        assert_eq!(
            PqDsn::parse("k=1 k=2").unwrap().param("k"),
            Some("2"),
            "last wins"
        );
    }

    #[test]
    fn key_value_errors_hide_the_password() {
        for bad in [
            "host=h password=secret nokey",
            "host=h password=secret dbname='x",
            "password=secret host=h\\",
            "password=secret =x",
        ] {
            let e = PqDsn::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
            assert!(e.contains("PostgreSQL"), "{e}");
        }
    }

    #[test]
    fn url_forms() {
        let d = PqDsn::parse_url(
            "postgres://lock%40et:p%2Fw:d@db.example:5433/locket%20db?sslmode=disable&search_path=a+b",
        )
        .unwrap();
        assert_eq!(
            d.params,
            kv(&[
                ("user", "lock@et"),
                ("password", "p/w:d"),
                ("host", "db.example"),
                ("port", "5433"),
                ("dbname", "locket db"),
                ("sslmode", "disable"),
                ("search_path", "a b"),
            ])
        );
        let d = PqDsn::parse_url("postgresql://[::1]:5432/x").unwrap();
        assert_eq!(d.param("host"), Some("::1"));
        let d = PqDsn::parse_url("postgres:///x?host=/var/run/postgresql").unwrap();
        assert_eq!(
            d.params,
            kv(&[("dbname", "x"), ("host", "/var/run/postgresql")])
        );
        let d = PqDsn::parse_url("postgres://u@h").unwrap();
        assert_eq!(d.params, kv(&[("user", "u"), ("host", "h")]));
        assert!(PqDsn::parse_url("postgres://u:secret@h:port/x")
            .unwrap_err()
            .to_string()
            .contains("u:****@"));
        assert!(PqDsn::parse_url("mysql://h/x").is_err());
    }

    #[test]
    fn connect_options_and_defaults() {
        let o = PqDsn::parse("host=db port=5433 user=u password=p dbname=d sslmode=disable")
            .unwrap()
            .to_connect_options()
            .unwrap();
        assert_eq!(
            (
                o.get_host(),
                o.get_port(),
                o.get_username(),
                o.get_database()
            ),
            ("db", 5433, "u", Some("d"))
        );
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Disable));
        if std::env::var_os("PGSSLMODE").is_none() && std::env::var_os("PGHOST").is_none() {
            let o = PqDsn::parse("dbname=d")
                .unwrap()
                .to_connect_options()
                .unwrap();
            assert!(
                matches!(o.get_ssl_mode(), PgSslMode::Require),
                "lib/pq default"
            );
            assert_eq!(o.get_host(), "localhost");
        }
        for (mode, want) in [
            ("verify-full", PgSslMode::VerifyFull),
            ("verify-ca", PgSslMode::VerifyCa),
            ("prefer", PgSslMode::Prefer),
            ("allow", PgSslMode::Allow),
            ("require", PgSslMode::Require),
        ] {
            let o = PqDsn::parse(&format!("sslmode={mode}"))
                .unwrap()
                .to_connect_options()
                .unwrap();
            assert_eq!(
                std::mem::discriminant(&o.get_ssl_mode()),
                std::mem::discriminant(&want)
            );
        }
        assert!(PqDsn::parse("sslmode=bogus")
            .unwrap()
            .to_connect_options()
            .is_err());
        assert!(PqDsn::parse("port=99999")
            .unwrap()
            .to_connect_options()
            .is_err());
        let o = PqDsn::parse(
            "fallback_application_name=fb connect_timeout=5 search_path='a b' options='-c geqo=off --work_mem=4MB'",
        )
        .unwrap()
        .to_connect_options()
        .unwrap();
        if std::env::var_os("PGAPPNAME").is_none() {
            assert_eq!(o.get_application_name(), Some("fb"));
        }
        assert_eq!(
            o.get_options(),
            Some("-c search_path=a\\ b -c geqo=off -c work_mem=4MB")
        );
        let o = PqDsn::parse("application_name=app fallback_application_name=fb")
            .unwrap()
            .to_connect_options()
            .unwrap();
        assert_eq!(o.get_application_name(), Some("app"));
        assert!(PqDsn::parse("options=-x")
            .unwrap()
            .to_connect_options()
            .is_err());
    }

    #[test]
    fn detection_and_redaction() {
        assert!(looks_like_key_value("host=h dbname=d"));
        assert!(looks_like_key_value("  dbname = d"));
        assert!(!looks_like_key_value("user:pw@tcp(h)/d"));
        assert!(!looks_like_key_value("=x"));
        assert!(is_postgres_url("PostgreSQL://h/d"));
        assert!(!is_postgres_url("postgres:h"));
        assert_eq!(
            redact_key_value("host=h password=secret dbname=d"),
            "host=h password=**** dbname=d"
        );
        assert_eq!(
            redact_key_value("password = 'a \\' b' user=u"),
            "password=**** user=u"
        );
        assert_eq!(
            redact_key_value("sslpassword=x password='unterminated"),
            "sslpassword=x password=****"
        );
    }
}
