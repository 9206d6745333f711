//! The `locket` binary's JSON config (upstream `cmd/locket/config.LocketConfig` keys).
//!
//! Handled: `listen_address`, `ca_file`, `cert_file`, `key_file`, `database_driver` (`mysql`
//! default, `postgres`, `sqlite`), `database_connection_string` (Go MySQL DSN or `mysql://` URL;
//! lib/pq `postgres://` URL or `host=… dbname=…` string; SQLite path or URL),
//! `max_open_database_connections`, `max_database_connection_lifetime`, `sql_ca_cert_file`,
//! `sql_enable_identity_verification`, `log_level`, `time_format`, and `prometheus` (ours,
//! with upstream gorouter's keys: `{port, cert_path, key_path, ca_path, listen_address}`; see
//! [`prometheus_endpoint::PrometheusConfig`]: `/metrics` of [`crate::metrics`], plain HTTP on
//! 127.0.0.1 or mutual TLS). Other upstream keys (consul, loggregator, debug server, …) are accepted and
//! reported as ignored; unknown keys are reported too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_endpoint::{Endpoint, PrometheusConfig};
use serde_json::{Map, Value};
use sqlx::mysql::MySqlSslMode;
use sqlx::postgres::PgSslMode;

use crate::sql::{DbConnectOptions, PoolSettings};

/// Upstream keys this implementation accepts but does not act on.
pub const IGNORED_KEYS: &[&str] = &[
    "advertise_base_hostname",
    "consul_cluster",
    "enable_consul_service_registration",
    "loggregator",
    "report_interval",
    "debug_address",
    "redact_secrets",
];

/// A config problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// The file is not a JSON object.
    #[error("config file {path} is not valid JSON: {reason}")]
    Json {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A required key is missing or empty.
    #[error("config key {key:?} is required")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A key has an invalid value.
    #[error("config key {key:?}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The parsed config.
#[derive(Debug, Clone)]
pub struct LocketConfig {
    /// `listen_address`, `host:port` as Go's `net.Listen` takes it: an IP address, a host name
    /// (`localhost:8891`, resolved when the listener is bound) or nothing (`:8891`, every
    /// interface).
    pub listen_address: String,
    /// `ca_file`: CA that client certificates must chain to.
    pub ca_file: PathBuf,
    /// `cert_file`: server certificate.
    pub cert_file: PathBuf,
    /// `key_file`: server key.
    pub key_file: PathBuf,
    /// `database_driver` (`mysql`, `postgres` or `sqlite`).
    pub database_driver: String,
    /// `database_connection_string`.
    pub database_connection_string: String,
    /// `max_open_database_connections` (default 200).
    pub max_open_database_connections: u32,
    /// `max_database_connection_lifetime` (`None`/0 = unlimited).
    pub max_database_connection_lifetime: Option<Duration>,
    /// `sql_ca_cert_file`: enables TLS to MySQL / PostgreSQL, verifying the server against this
    /// CA.
    pub sql_ca_cert_file: Option<PathBuf>,
    /// `sql_enable_identity_verification`: also verify the database server's host name.
    pub sql_enable_identity_verification: bool,
    /// `log_level` (default `info`).
    pub log_level: String,
    /// `time_format`: `unix-epoch` (default) or `rfc3339`, lager's log timestamps.
    pub time_format: process_setup::TimeFormat,
    /// `prometheus`: where `/metrics` is served; `None` (no block, or port 0) serves none.
    pub metrics_endpoint: Option<Endpoint>,
    /// Upstream keys present but ignored.
    pub ignored_keys: Vec<String>,
    /// Keys this implementation does not know.
    pub unknown_keys: Vec<String>,
}

impl LocketConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ConfigError::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        match value {
            Value::Object(map) => Self::from_map(&map),
            _ => Err(ConfigError::Json {
                path: path.to_path_buf(),
                reason: "expected a JSON object".into(),
            }),
        }
    }

    /// Validates a parsed JSON object.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, ConfigError> {
        const KNOWN: &[&str] = &[
            "listen_address",
            "ca_file",
            "cert_file",
            "key_file",
            "database_driver",
            "database_connection_string",
            "max_open_database_connections",
            "max_database_connection_lifetime",
            "sql_ca_cert_file",
            "sql_enable_identity_verification",
            "log_level",
            "time_format",
            "prometheus",
        ];
        let listen = required_str(map, "listen_address")?;
        let listen_address = listen_address(&listen).ok_or_else(|| ConfigError::Invalid {
            key: "listen_address",
            reason: format!("{listen:?} is not a host:port address (e.g. \"0.0.0.0:8891\" or \"localhost:8891\")"),
        })?;
        let time_format = match map.get("time_format") {
            None | Some(Value::Null) => process_setup::TimeFormat::UnixEpoch,
            Some(v) => {
                let word = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                process_setup::TimeFormat::from_lager_flag(&word).ok_or_else(|| {
                    ConfigError::Invalid {
                        key: "time_format",
                        reason: format!("{v} is not \"unix-epoch\" or \"rfc3339\""),
                    }
                })?
            }
        };
        let database_driver =
            optional_str(map, "database_driver")?.unwrap_or_else(|| "mysql".into());
        match database_driver.as_str() {
            "mysql" | "postgres" | "sqlite" | "sqlite3" => {}
            other => {
                return Err(ConfigError::Invalid {
                    key: "database_driver",
                    reason: format!(
                        "unknown driver {other:?}; expected \"mysql\", \"postgres\" or \"sqlite\""
                    ),
                })
            }
        }
        let max_open = match map.get("max_open_database_connections") {
            None | Some(Value::Null) => 200,
            Some(v) => match v.as_i64() {
                Some(0) => 200,
                Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "max_open_database_connections",
                        reason: format!("expected a non-negative integer, got {v}"),
                    })
                }
            },
        };
        let lifetime = match map.get("max_database_connection_lifetime") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let d = parse_go_duration_json(v).map_err(|reason| ConfigError::Invalid {
                    key: "max_database_connection_lifetime",
                    reason,
                })?;
                (!d.is_zero()).then_some(d)
            }
        };
        let sql_enable_identity_verification = match map.get("sql_enable_identity_verification") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    key: "sql_enable_identity_verification",
                    reason: format!("expected true or false, got {v}"),
                })
            }
        };
        let metrics_endpoint = prometheus_endpoint(map)?;
        let mut ignored_keys = Vec::new();
        let mut unknown_keys = Vec::new();
        for k in map.keys() {
            if IGNORED_KEYS.contains(&k.as_str()) {
                ignored_keys.push(k.clone());
            } else if !KNOWN.contains(&k.as_str()) {
                unknown_keys.push(k.clone());
            }
        }
        let config = LocketConfig {
            listen_address,
            ca_file: required_str(map, "ca_file")?.into(),
            cert_file: required_str(map, "cert_file")?.into(),
            key_file: required_str(map, "key_file")?.into(),
            database_connection_string: required_str(map, "database_connection_string")?,
            database_driver,
            max_open_database_connections: max_open,
            max_database_connection_lifetime: lifetime,
            sql_ca_cert_file: optional_str(map, "sql_ca_cert_file")?
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            sql_enable_identity_verification,
            log_level: optional_str(map, "log_level")?.unwrap_or_else(|| "info".into()),
            time_format,
            metrics_endpoint,
            ignored_keys,
            unknown_keys,
        };
        // Surface connection-string problems now, naming the key.
        config.db_connect_options()?;
        Ok(config)
    }

    /// The database location, with TLS from `sql_ca_cert_file`: for MySQL `VERIFY_CA` (or
    /// `VERIFY_IDENTITY` with `sql_enable_identity_verification`); for PostgreSQL, as upstream,
    /// `sslmode=verify-ca` (or `verify-full`) and `sslrootcert=<sql_ca_cert_file>`, overriding
    /// the connection string's.
    pub fn db_connect_options(&self) -> Result<DbConnectOptions, ConfigError> {
        let opts =
            DbConnectOptions::for_driver(&self.database_driver, &self.database_connection_string)
                .map_err(|e| ConfigError::Invalid {
                key: "database_connection_string",
                reason: e.to_string(),
            })?;
        Ok(match (opts, &self.sql_ca_cert_file) {
            (DbConnectOptions::MySql(o), Some(ca)) => {
                let mode = if self.sql_enable_identity_verification {
                    MySqlSslMode::VerifyIdentity
                } else {
                    MySqlSslMode::VerifyCa
                };
                DbConnectOptions::MySql(o.ssl_mode(mode).ssl_ca(ca))
            }
            (DbConnectOptions::Postgres(o), Some(ca)) => {
                let mode = if self.sql_enable_identity_verification {
                    PgSslMode::VerifyFull
                } else {
                    PgSslMode::VerifyCa
                };
                DbConnectOptions::Postgres(o.ssl_mode(mode).ssl_root_cert(ca))
            }
            (o, _) => o,
        })
    }

    /// Pool settings from `max_open_database_connections` / `max_database_connection_lifetime`.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.max_open_database_connections,
            max_lifetime: self.max_database_connection_lifetime,
            ..PoolSettings::default()
        }
    }

    /// The server's TLS files.
    pub fn server_tls(&self) -> crate::server::ServerTlsConfig {
        crate::server::ServerTlsConfig {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }
}

/// `host:port` as Go's `net.Listen("tcp", …)` reads it (host empty, an IP address, `[v6]` or a
/// name), with the empty host meaning every interface; `None` when it is not that shape.
fn listen_address(text: &str) -> Option<String> {
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Some(format!("0.0.0.0:{port}"));
    }
    let valid_name = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if host.parse::<std::net::IpAddr>().is_ok() {
        Some(text.to_owned())
    } else if valid_name {
        Some(format!("{host}:{port}"))
    } else {
        None
    }
}

/// The `prometheus` block, checked: a partial set of TLS files is an error naming the keys.
fn prometheus_endpoint(map: &Map<String, Value>) -> Result<Option<Endpoint>, ConfigError> {
    let block: PrometheusConfig = match map.get("prometheus") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| ConfigError::Invalid {
            key: "prometheus",
            reason: e.to_string(),
        })?,
    };
    block.endpoint().map_err(|e| ConfigError::Invalid {
        key: "prometheus",
        reason: e.to_string(),
    })
}

fn optional_str(
    map: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ConfigError::Invalid {
            key,
            reason: format!("expected a string, got {v}"),
        }),
    }
}

fn required_str(map: &Map<String, Value>, key: &'static str) -> Result<String, ConfigError> {
    match optional_str(map, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ConfigError::Missing { key }),
    }
}

/// Parses upstream's `durationjson.Duration`: a Go duration string (`"1h30m"`, `"500ms"`) or an
/// integer number of nanoseconds.
pub fn parse_go_duration_json(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_nanos)
            .ok_or_else(|| format!("expected a non-negative duration, got {n}")),
        Value::String(s) => parse_go_duration(s),
        other => Err(format!("expected a duration like \"1h\", got {other}")),
    }
}

/// Parses a Go `time.ParseDuration` string (non-negative).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += num * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> Result<LocketConfig, ConfigError> {
        match v {
            Value::Object(m) => LocketConfig::from_map(&m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn listen_address_takes_host_names_and_an_empty_host_as_go_does() {
        let with = |a: &str| {
            let mut v = base();
            v["listen_address"] = a.into();
            cfg(v)
        };
        assert_eq!(
            with("localhost:24004").unwrap().listen_address,
            "localhost:24004"
        );
        assert_eq!(with(":8891").unwrap().listen_address, "0.0.0.0:8891");
        assert_eq!(with("[::1]:8891").unwrap().listen_address, "[::1]:8891");
        for bad in ["localhost", "host:port", "a b:1", "127.0.0.1:70000"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("listen_address"), "{bad}: {e}");
        }
    }

    #[test]
    fn time_format_is_lagers() {
        let mut v = base();
        assert_eq!(
            cfg(v.clone()).unwrap().time_format,
            process_setup::TimeFormat::UnixEpoch
        );
        v["time_format"] = "rfc3339".into();
        assert_eq!(
            cfg(v.clone()).unwrap().time_format,
            process_setup::TimeFormat::Rfc3339
        );
        v["time_format"] = 1.into();
        assert_eq!(
            cfg(v.clone()).unwrap().time_format,
            process_setup::TimeFormat::Rfc3339
        );
        v["time_format"] = "iso".into();
        assert!(cfg(v).unwrap_err().to_string().contains("time_format"));
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "listen_address": "127.0.0.1:8891",
            "ca_file": "/ca.crt", "cert_file": "/s.crt", "key_file": "/s.key",
            "database_driver": "mysql",
            "database_connection_string": "locket:pw@tcp(127.0.0.1:3306)/locket",
            "max_open_database_connections": 50,
            "max_database_connection_lifetime": "1h",
            "log_level": "debug",
            "loggregator": {"loggregator_use_v2_api": true},
            "debug_address": "127.0.0.1:17018",
            "something_new": 1
        })
    }

    #[test]
    fn full_config() {
        let c = cfg(base()).unwrap();
        assert_eq!(c.listen_address, "127.0.0.1:8891");
        assert_eq!(c.max_open_database_connections, 50);
        assert_eq!(
            c.max_database_connection_lifetime,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.ignored_keys, vec!["debug_address", "loggregator"]);
        assert_eq!(c.unknown_keys, vec!["something_new"]);
    }

    #[test]
    fn errors_name_the_key() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("ca_file");
        assert!(cfg(v).unwrap_err().to_string().contains("\"ca_file\""));
        let mut v = base();
        v["listen_address"] = "nope".into();
        assert!(cfg(v)
            .unwrap_err()
            .to_string()
            .contains("\"listen_address\""));
        let mut v = base();
        v["database_driver"] = "oracle".into();
        let e = cfg(v).unwrap_err().to_string();
        assert!(e.contains("\"database_driver\""), "{e}");
        let mut v = base();
        v["database_driver"] = "postgres".into();
        v["database_connection_string"] = "host=h password=secret sslmode=bogus".into();
        let e = cfg(v).unwrap_err().to_string();
        assert!(
            e.contains("\"database_connection_string\"") && e.contains("sslmode"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        let mut v = base();
        v["database_connection_string"] = "garbage".into();
        assert!(cfg(v)
            .unwrap_err()
            .to_string()
            .contains("\"database_connection_string\""));
        let mut v = base();
        v["max_open_database_connections"] = "ten".into();
        assert!(cfg(v)
            .unwrap_err()
            .to_string()
            .contains("\"max_open_database_connections\""));
        let mut v = base();
        v["cert_file"] = 5.into();
        assert!(cfg(v).unwrap_err().to_string().contains("\"cert_file\""));
    }

    #[test]
    fn sqlite_driver_and_defaults() {
        let c = cfg(serde_json::json!({
            "listen_address": "0.0.0.0:8891",
            "ca_file": "a", "cert_file": "b", "key_file": "c",
            "database_driver": "sqlite",
            "database_connection_string": "/tmp/locket.db"
        }))
        .unwrap();
        assert_eq!(c.max_open_database_connections, 200);
        assert_eq!(c.log_level, "info");
        assert!(matches!(
            c.db_connect_options(),
            Ok(DbConnectOptions::Sqlite(_))
        ));
    }

    #[test]
    fn postgres_driver_and_tls() {
        let mut v = base();
        v["database_driver"] = "postgres".into();
        v["database_connection_string"] =
            "postgres://locket:pw@db.example:5432/locket?sslmode=disable".into();
        let c = cfg(v.clone()).unwrap();
        match c.db_connect_options().unwrap() {
            DbConnectOptions::Postgres(o) => {
                assert_eq!(
                    (o.get_host(), o.get_database()),
                    ("db.example", Some("locket"))
                );
                assert!(matches!(o.get_ssl_mode(), PgSslMode::Disable));
            }
            other => panic!("expected Postgres options, got {other:?}"),
        }
        v["database_connection_string"] =
            "host=db.example port=5432 user=locket password=pw dbname=locket sslmode=disable"
                .into();
        v["sql_ca_cert_file"] = "/ca.pem".into();
        let c = cfg(v.clone()).unwrap();
        match c.db_connect_options().unwrap() {
            DbConnectOptions::Postgres(o) => {
                assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyCa));
            }
            other => panic!("expected Postgres options, got {other:?}"),
        }
        v["sql_enable_identity_verification"] = true.into();
        match cfg(v).unwrap().db_connect_options().unwrap() {
            DbConnectOptions::Postgres(o) => {
                assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
            }
            other => panic!("expected Postgres options, got {other:?}"),
        }
    }

    #[test]
    fn without_a_prometheus_block_no_metrics_are_served() {
        assert_eq!(cfg(base()).unwrap().metrics_endpoint, None);
        let mut v = base();
        v["prometheus"] = serde_json::json!({"port": 0});
        assert_eq!(cfg(v).unwrap().metrics_endpoint, None);
    }

    #[test]
    fn a_prometheus_port_serves_plain_http_on_loopback_unless_told_otherwise() {
        let mut v = base();
        v["prometheus"] = serde_json::json!({"port": 9101});
        let c = cfg(v.clone()).unwrap();
        let endpoint = c.metrics_endpoint.unwrap();
        assert_eq!(endpoint.addr, "127.0.0.1:9101".parse().unwrap());
        assert_eq!(endpoint.tls, None);
        assert!(!c.unknown_keys.contains(&"prometheus".to_string()));
        v["prometheus"]["listen_address"] = "0.0.0.0".into();
        let endpoint = cfg(v).unwrap().metrics_endpoint.unwrap();
        assert_eq!(endpoint.addr, "0.0.0.0:9101".parse().unwrap());
    }

    #[test]
    fn prometheus_with_all_three_files_is_mutual_tls() {
        let mut v = base();
        v["prometheus"] = serde_json::json!({
            "port": 9101, "cert_path": "/m.crt", "key_path": "/m.key", "ca_path": "/ca.crt"
        });
        let tls = cfg(v).unwrap().metrics_endpoint.unwrap().tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/m.crt"));
        assert_eq!(tls.client_ca, PathBuf::from("/ca.crt"));
    }

    #[test]
    fn prometheus_with_some_tls_files_is_an_error_naming_the_missing_key() {
        let mut v = base();
        v["prometheus"] = serde_json::json!({"port": 9101, "cert_path": "/m.crt"});
        let e = cfg(v).unwrap_err().to_string();
        assert!(
            e.contains("\"prometheus\"") && e.contains("key_path must be set when cert_path is"),
            "{e}"
        );
        let mut v = base();
        v["prometheus"] = serde_json::json!({"port": "ninety"});
        let e = cfg(v).unwrap_err().to_string();
        assert!(e.contains("\"prometheus\""), "{e}");
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("1x").is_err());
    }
}
