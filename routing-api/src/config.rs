//! The routing API's YAML configuration (B.9), upstream's keys, plus `auth_disabled`.
//!
//! Upstream requires `locket.locket_address`; here it is optional: without it the lock lives
//! in the routing API's own database (see [`crate::lock`]). `sqldb.type: sqlite` with
//! `sqldb.schema` as the file path is our embedded default; `mysql` and `postgres` (as
//! upstream) take `sqldb.host`, `port` (absent: 3306 / 5432), `schema` (the database name),
//! `username`, `password` and the TLS keys.
//!
//! Extensions (keys upstream does not have): `auth_disabled` (as `-devMode`),
//! `bind_address`, the IP address (IPv4 or IPv6, no port) the HTTP API (`api.listen_port`) and
//! the mutual TLS API (`api.mtls_listen_port`) bind, `0.0.0.0` (all interfaces, as upstream)
//! by default (the admin port stays on 127.0.0.1); `oauth.allow_plain_http` (default false):
//! an `http://` `oauth.token_endpoint` is refused at load unless it is true, since UAA's token
//! keys would then travel unprotected; and `sqldb.skip_ssl_validation` (default false), TLS to
//! MySQL or PostgreSQL without certificate checks. Upstream's top-level `skip_ssl_validation` turns off the
//! checks of UAA's certificate only (upstream also applied it to MySQL).
//!
//! `prometheus.{port, cert_path, key_path, ca_path}` (gorouter's keys; see [`PrometheusConfig`])
//! and our `prometheus.listen_address` serve `/metrics` ([`crate::prometheus`]); port 0 or
//! absent serves none. The three files turn mutual TLS on and go together.
//!
//! `sqldb.password` is a [`Secret`]: `Debug` output of the config shows `<redacted>`.
//! `api.http_enabled: false` (upstream's key) leaves the plain HTTP port closed; the mutual TLS
//! files are then required.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_endpoint::{Endpoint, PrometheusConfig};
use serde::de::Deserializer;
use serde::Deserialize;
use yaml_config::GoDuration;

use crate::secret::Secret;

/// BOSH's default `reserved_system_component_ports`, expanded.
pub const DEFAULT_RESERVED_PORTS: &[u16] = &[
    2822, 2825, 3457, 3458, 3459, 3460, 3461, 8853, 9100, 14726, 14727, 14821, 14822, 14823, 14824,
    14829, 14830, 14920, 14922, 15821, 17002, 53035, 53080,
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read, or its YAML did not parse.
    #[error(transparent)]
    Load(#[from] yaml_config::LoadError),
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    /// The `prometheus` block cannot be served (its message names the keys).
    #[error(transparent)]
    Prometheus(#[from] prometheus_endpoint::ConfigError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    pub listen_port: u16,
    pub http_enabled: bool,
    pub mtls_listen_port: u16,
    pub mtls_client_ca_file: String,
    pub mtls_server_cert_file: String,
    pub mtls_server_key_file: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen_port: 3000,
            http_enabled: true,
            mtls_listen_port: 3001,
            mtls_client_ca_file: String::new(),
            mtls_server_cert_file: String::new(),
            mtls_server_key_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OAuthConfig {
    pub token_endpoint: String,
    pub port: i32,
    /// Ours: accept an `http://` token endpoint (local development only).
    pub allow_plain_http: bool,
    // `client_name` / `client_secret` are upstream keys routing-api never uses (it only
    // verifies tokens): left out so that they are reported as not supported.
    /// A file path (unlike gorouter's inline PEM keys).
    pub ca_certs: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SqlDbConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub host: String,
    /// Absent: 3306 for MySQL, 5432 for PostgreSQL.
    pub port: Option<u16>,
    /// Database name for MySQL and PostgreSQL; the database file for SQLite.
    pub schema: String,
    pub username: String,
    pub password: Secret,
    pub ca_cert: String,
    /// Ours: TLS to MySQL without certificate checks (upstream took the top-level
    /// `skip_ssl_validation`, meant for UAA).
    pub skip_ssl_validation: bool,
    pub skip_hostname_validation: bool,
    pub max_open_connections: u32,
    pub max_idle_connections: u32,
    pub connections_max_lifetime_seconds: u64,
}

impl Default for SqlDbConfig {
    fn default() -> Self {
        Self {
            kind: "sqlite".into(),
            host: String::new(),
            port: None,
            schema: "routing-api.db".into(),
            username: String::new(),
            password: Secret::default(),
            ca_cert: String::new(),
            skip_ssl_validation: false,
            skip_hostname_validation: false,
            max_open_connections: 200,
            max_idle_connections: 10,
            connections_max_lifetime_seconds: 3600,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LocketConfig {
    pub locket_address: String,
    pub locket_ca_cert_file: String,
    pub locket_client_cert_file: String,
    pub locket_client_key_file: String,
}

/// A router group seeded from config. `reservable_ports` may be written as an integer, a
/// string or a list of integers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SeedRouterGroup {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "ports_any")]
    pub reservable_ports: String,
}

fn ports_any<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ports {
        Int(i64),
        Str(String),
        List(Vec<i64>),
    }
    Ok(match Ports::deserialize(d)? {
        Ports::Int(n) => n.to_string(),
        Ports::Str(s) => s,
        Ports::List(l) => l.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
    })
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawConfig {
    api: ApiConfig,
    admin_port: u16,
    log_guid: String,
    max_ttl: GoDuration,
    system_domain: String,
    oauth: OAuthConfig,
    router_groups: Vec<SeedRouterGroup>,
    #[serde(deserialize_with = "routing_api_client::ports::deserialize_reserved_ports")]
    reserved_system_component_ports: Vec<u16>,
    fail_on_router_port_conflicts: bool,
    sqldb: SqlDbConfig,
    locket: LocketConfig,
    uuid: String,
    skip_ssl_validation: bool,
    retry_interval: GoDuration,
    lock_resource_key: String,
    auth_disabled: bool,
    #[serde(deserialize_with = "scalar_text")]
    metrics_reporting_interval: String,
    #[serde(deserialize_with = "scalar_text")]
    statsd_endpoint: String,
    #[serde(deserialize_with = "scalar_text")]
    statsd_client_flush_interval: String,
    /// Not an upstream key: the address the HTTP and mTLS API listeners bind.
    bind_address: String,
    prometheus: PrometheusConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            api: ApiConfig::default(),
            admin_port: 15897,
            log_guid: String::new(),
            max_ttl: GoDuration(Duration::ZERO),
            system_domain: String::new(),
            oauth: OAuthConfig::default(),
            router_groups: Vec::new(),
            reserved_system_component_ports: DEFAULT_RESERVED_PORTS.to_vec(),
            fail_on_router_port_conflicts: false,
            sqldb: SqlDbConfig::default(),
            locket: LocketConfig::default(),
            uuid: String::new(),
            skip_ssl_validation: false,
            retry_interval: GoDuration(Duration::ZERO),
            lock_resource_key: String::new(),
            auth_disabled: false,
            metrics_reporting_interval: String::new(),
            statsd_endpoint: String::new(),
            statsd_client_flush_interval: String::new(),
            bind_address: "0.0.0.0".into(),
            prometheus: PrometheusConfig::default(),
        }
    }
}

/// How the routing API reaches its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Mysql {
        host: String,
        port: u16,
        schema: String,
        username: String,
        password: Secret,
    },
    /// `sqldb.type: postgres`: `sqldb.schema` names the database (as upstream); `sqldb.port`
    /// defaults to 5432.
    Postgres {
        host: String,
        port: u16,
        database: String,
        username: String,
        password: Secret,
    },
    Sqlite {
        path: PathBuf,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub api: ApiConfig,
    pub admin_port: u16,
    pub log_guid: String,
    pub max_ttl: Duration,
    pub system_domain: String,
    pub oauth: OAuthConfig,
    pub router_groups: Vec<SeedRouterGroup>,
    pub reserved_system_component_ports: Vec<u16>,
    pub fail_on_router_port_conflicts: bool,
    pub sqldb: SqlDbConfig,
    pub database: Database,
    pub locket: LocketConfig,
    pub uuid: String,
    pub skip_ssl_validation: bool,
    /// Locket's fixed 15 s. Upstream parses `lock_ttl` and never uses it; we report the key as
    /// not supported (as `debug_address`: no debug server) instead of reading it silently.
    pub lock_ttl: Duration,
    pub lock_retry_interval: Duration,
    /// Extra wait before exiting after the lock is lost (`retry_interval`).
    pub retry_interval: Duration,
    pub lock_resource_key: String,
    pub auth_disabled: bool,
    /// The address the HTTP and mTLS API listeners bind (`bind_address`, ours; all interfaces
    /// by default).
    pub bind_address: IpAddr,
    /// `statsd_endpoint` (`host:port`, UDP); empty: no metrics are sent.
    pub statsd_endpoint: String,
    /// `metrics_reporting_interval`: how often the totals are sent (30 s, BOSH's value, when
    /// absent or empty, where upstream refuses to start).
    pub metrics_reporting_interval: Duration,
    /// `statsd_client_flush_interval`: how long lines wait to be sent together (zero: the
    /// statsd client's 300 ms).
    pub statsd_client_flush_interval: Duration,
    /// Where `/metrics` is served (`prometheus.*`); `None`: nowhere.
    pub prometheus: Option<Endpoint>,
    pub unknown_keys: Vec<String>,
}

/// `metrics_reporting_interval` when the key is absent or empty (the BOSH job's default).
pub const DEFAULT_METRICS_REPORTING_INTERVAL: Duration = Duration::from_secs(30);

/// A duration key that upstream reads as text with Go's `time.ParseDuration` (so a bare number
/// is an error, not nanoseconds). `None` when absent or empty.
fn text_duration(key: &'static str, text: &str) -> Result<Option<Duration>, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    // Go parses negative durations; for these keys they act as zero.
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let d = yaml_config::parse_go_duration(magnitude).map_err(|_| ConfigError::Invalid {
        key,
        message: format!(
            "invalid duration {text:?}: expected e.g. \"30s\", \"1m30s\" or \"250ms\""
        ),
    })?;
    Ok(Some(if negative { Duration::ZERO } else { d }))
}

/// Any YAML scalar as its text, as Go's YAML decoder fills a string field (`500` is "500").
fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Str(String),
        Int(i64),
        Uint(u64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Option::<Scalar>::deserialize(d)? {
        None => String::new(),
        Some(Scalar::Str(s)) => s,
        Some(Scalar::Int(n)) => n.to_string(),
        Some(Scalar::Uint(n)) => n.to_string(),
        Some(Scalar::Float(f)) => f.to_string(),
        Some(Scalar::Bool(b)) => b.to_string(),
    })
}

impl Config {
    /// Whether the mutual TLS listener is configured (upstream always runs it).
    pub fn mtls_enabled(&self) -> bool {
        !self.api.mtls_server_cert_file.is_empty()
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path, dev_mode: bool) -> Result<Self, ConfigError> {
        let (raw, unknown_keys) = yaml_config::load_file::<RawConfig>(path)?;
        Self::validate(raw, unknown_keys, dev_mode)
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str, dev_mode: bool) -> Result<Self, ConfigError> {
        let (raw, unknown_keys) = yaml_config::from_yaml_reporting_unknown::<RawConfig>(text)
            .map_err(yaml_config::LoadError::from)?;
        Self::validate(raw, unknown_keys, dev_mode)
    }

    fn validate(
        raw: RawConfig,
        unknown_keys: Vec<String>,
        dev_mode: bool,
    ) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            message: message.to_string(),
        };
        if raw.system_domain.is_empty() {
            return Err(invalid("system_domain", "no system_domain specified"));
        }
        if raw.log_guid.is_empty() {
            return Err(invalid("log_guid", "no log_guid specified"));
        }
        if raw.uuid.is_empty() {
            return Err(invalid("uuid", "no UUID is specified"));
        }
        let auth_disabled = dev_mode || raw.auth_disabled;
        if !auth_disabled {
            if raw.oauth.token_endpoint.is_empty() {
                return Err(invalid(
                    "oauth.token_endpoint",
                    "no token endpoint specified (or run with -devMode / auth_disabled: true)",
                ));
            }
            let endpoint = raw.oauth.token_endpoint.trim();
            let plain = endpoint
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
            if plain && !raw.oauth.allow_plain_http {
                return Err(ConfigError::Invalid {
                    key: "oauth.token_endpoint",
                    message: format!(
                        "{endpoint:?} is plain HTTP: UAA's token keys would travel without TLS and \
                         could be replaced on the way. Use https:// (or a host name, https is \
                         assumed) with the UAA TLS port in oauth.port, or set \
                         oauth.allow_plain_http: true for local development"
                    ),
                });
            }
            if raw.oauth.port == 0 || raw.oauth.port < -1 || raw.oauth.port > 65535 {
                return Err(invalid(
                    "oauth.port",
                    "routing API requires TLS enabled to get OAuth token: set the UAA TLS port",
                ));
            }
        }
        for (key, port) in [
            ("admin_port", raw.admin_port),
            ("api.listen_port", raw.api.listen_port),
            ("api.mtls_listen_port", raw.api.mtls_listen_port),
        ] {
            if port == 0 {
                return Err(invalid(key, "port number is invalid: 0 (1-65535)"));
            }
        }
        let bind_address = yaml_config::parse_ip_address(&raw.bind_address)
            .map_err(|message| invalid("bind_address", &message))?;
        let mtls_files = [
            &raw.api.mtls_server_cert_file,
            &raw.api.mtls_server_key_file,
            &raw.api.mtls_client_ca_file,
        ];
        let set = mtls_files.iter().filter(|f| !f.is_empty()).count();
        if set != 0 && set != 3 {
            return Err(invalid(
                "api.mtls_server_cert_file",
                "the mutual TLS listener needs all of api.mtls_server_cert_file, api.mtls_server_key_file and api.mtls_client_ca_file",
            ));
        }
        if set == 0 && !raw.api.http_enabled {
            return Err(invalid(
                "api.http_enabled",
                "no listener: enable api.http_enabled or configure the mutual TLS files",
            ));
        }
        let database = match raw.sqldb.kind.as_str() {
            "mysql" => {
                if raw.sqldb.host.is_empty() {
                    return Err(invalid("sqldb.host", "required when sqldb.type is mysql"));
                }
                if raw.sqldb.schema.is_empty() {
                    return Err(invalid("sqldb.schema", "required when sqldb.type is mysql"));
                }
                Database::Mysql {
                    host: raw.sqldb.host.clone(),
                    port: raw.sqldb.port.unwrap_or(3306),
                    schema: raw.sqldb.schema.clone(),
                    username: raw.sqldb.username.clone(),
                    password: raw.sqldb.password.clone(),
                }
            }
            "sqlite" => Database::Sqlite {
                path: PathBuf::from(&raw.sqldb.schema),
            },
            "postgres" => {
                if raw.sqldb.host.is_empty() {
                    return Err(invalid(
                        "sqldb.host",
                        "required when sqldb.type is postgres",
                    ));
                }
                if raw.sqldb.schema.is_empty() {
                    return Err(invalid(
                        "sqldb.schema",
                        "required when sqldb.type is postgres (the database name)",
                    ));
                }
                Database::Postgres {
                    host: raw.sqldb.host.clone(),
                    port: raw.sqldb.port.unwrap_or(5432),
                    database: raw.sqldb.schema.clone(),
                    username: raw.sqldb.username.clone(),
                    password: raw.sqldb.password.clone(),
                }
            }
            other => {
                return Err(ConfigError::Invalid {
                    key: "sqldb.type",
                    message: format!(
                        "unknown database type {other:?}; use mysql, postgres or sqlite"
                    ),
                })
            }
        };
        let locket = &raw.locket;
        if !locket.locket_address.is_empty()
            && (locket.locket_ca_cert_file.is_empty()
                || locket.locket_client_cert_file.is_empty()
                || locket.locket_client_key_file.is_empty())
        {
            return Err(invalid(
                "locket.locket_ca_cert_file",
                "a Locket address needs locket_ca_cert_file, locket_client_cert_file and locket_client_key_file",
            ));
        }
        let metrics_reporting_interval = text_duration(
            "metrics_reporting_interval",
            &raw.metrics_reporting_interval,
        )?
        .unwrap_or(DEFAULT_METRICS_REPORTING_INTERVAL);
        if metrics_reporting_interval.is_zero() {
            // Upstream's ticker panics on a zero interval.
            return Err(invalid(
                "metrics_reporting_interval",
                "must be greater than zero",
            ));
        }
        let statsd_client_flush_interval = text_duration(
            "statsd_client_flush_interval",
            &raw.statsd_client_flush_interval,
        )?
        .unwrap_or(Duration::ZERO);
        let prometheus = raw.prometheus.endpoint()?;
        let max_ttl = if raw.max_ttl.0.is_zero() {
            Duration::from_secs(120)
        } else {
            raw.max_ttl.0
        };
        Ok(Config {
            api: raw.api,
            admin_port: raw.admin_port,
            log_guid: raw.log_guid,
            max_ttl,
            system_domain: raw.system_domain,
            oauth: raw.oauth,
            router_groups: raw.router_groups,
            reserved_system_component_ports: raw.reserved_system_component_ports,
            fail_on_router_port_conflicts: raw.fail_on_router_port_conflicts,
            sqldb: raw.sqldb,
            database,
            locket: raw.locket,
            uuid: raw.uuid,
            skip_ssl_validation: raw.skip_ssl_validation,
            lock_ttl: Duration::from_secs(15),
            lock_retry_interval: Duration::from_secs(1),
            retry_interval: if raw.retry_interval.0.is_zero() {
                Duration::from_secs(5)
            } else {
                raw.retry_interval.0
            },
            lock_resource_key: if raw.lock_resource_key.is_empty() {
                "routing_api_lock".into()
            } else {
                raw.lock_resource_key
            },
            auth_disabled,
            bind_address,
            statsd_endpoint: raw.statsd_endpoint.trim().to_string(),
            metrics_reporting_interval,
            statsd_client_flush_interval,
            prometheus,
            unknown_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "system_domain: example.com\nlog_guid: routing-api\nuuid: u1\n";

    #[test]
    fn minimal_dev_config_takes_defaults() {
        let c = Config::from_yaml(MINIMAL, true).unwrap();
        assert_eq!(c.api.listen_port, 3000);
        assert_eq!(c.api.mtls_listen_port, 3001);
        assert_eq!(c.admin_port, 15897);
        assert_eq!(c.max_ttl, Duration::from_secs(120));
        assert_eq!(c.lock_resource_key, "routing_api_lock");
        assert_eq!(
            c.database,
            Database::Sqlite {
                path: "routing-api.db".into()
            }
        );
        assert!(c.auth_disabled);
        assert_eq!(
            c.bind_address,
            IpAddr::from([0, 0, 0, 0]),
            "all interfaces, as upstream"
        );
    }

    #[test]
    fn bind_address_is_an_ip_address() {
        let c = Config::from_yaml(&format!("{MINIMAL}bind_address: 127.0.0.1\n"), true).unwrap();
        assert_eq!(c.bind_address, IpAddr::from([127, 0, 0, 1]));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let c = Config::from_yaml(&format!("{MINIMAL}bind_address: ::1\n"), true).unwrap();
        assert_eq!(c.bind_address, "::1".parse::<IpAddr>().unwrap());
        for bad in [
            "bind_address: localhost",
            "bind_address: 127.0.0.1:3000",
            "bind_address: ''",
            "bind_address: {a: 1}",
        ] {
            let e = Config::from_yaml(&format!("{MINIMAL}{bad}\n"), true)
                .unwrap_err()
                .to_string();
            assert!(e.contains("bind_address"), "{bad}: {e}");
        }
    }

    #[test]
    fn required_keys_are_named() {
        for (yaml, key) in [
            ("log_guid: a\nuuid: u\n", "system_domain"),
            ("system_domain: a\nuuid: u\n", "log_guid"),
            ("system_domain: a\nlog_guid: l\n", "uuid"),
        ] {
            let e = Config::from_yaml(yaml, true).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let e = Config::from_yaml(MINIMAL, false).unwrap_err().to_string();
        assert!(e.contains("oauth.token_endpoint"), "{e}");
    }

    #[test]
    fn seeds_accept_int_string_and_list_ports() {
        let yaml = format!(
            "{MINIMAL}router_groups:\n- {{name: a, type: tcp, reservable_ports: 1024}}\n- {{name: b, type: tcp, reservable_ports: \"2000-2010\"}}\n- {{name: c, type: tcp, reservable_ports: [3000, 3001]}}\n"
        );
        let c = Config::from_yaml(&yaml, true).unwrap();
        let ports: Vec<_> = c
            .router_groups
            .iter()
            .map(|g| g.reservable_ports.as_str())
            .collect();
        assert_eq!(ports, vec!["1024", "2000-2010", "3000,3001"]);
    }

    #[test]
    fn mtls_files_are_all_or_nothing() {
        let yaml = format!("{MINIMAL}api: {{mtls_server_cert_file: c}}\n");
        let e = Config::from_yaml(&yaml, true).unwrap_err().to_string();
        assert!(e.contains("api.mtls_server_cert_file"), "{e}");
        let c = Config::from_yaml(MINIMAL, true).unwrap();
        assert!(!c.mtls_enabled());
    }

    #[test]
    fn metrics_keys_are_read_as_go_durations() {
        let c = Config::from_yaml(
            &format!("{MINIMAL}statsd_endpoint: localhost:8125\nmetrics_reporting_interval: 500ms\nstatsd_client_flush_interval: 10ms\n"),
            true,
        )
        .unwrap();
        assert_eq!(c.statsd_endpoint, "localhost:8125");
        assert_eq!(c.metrics_reporting_interval, Duration::from_millis(500));
        assert_eq!(c.statsd_client_flush_interval, Duration::from_millis(10));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn absent_metrics_keys_mean_no_statsd_and_bosh_intervals() {
        let c = Config::from_yaml(MINIMAL, true).unwrap();
        assert_eq!(c.statsd_endpoint, "");
        assert_eq!(c.metrics_reporting_interval, Duration::from_secs(30));
        assert_eq!(c.statsd_client_flush_interval, Duration::ZERO);
        let c = Config::from_yaml(
            &format!("{MINIMAL}metrics_reporting_interval: ''\nstatsd_client_flush_interval: ''\n"),
            true,
        )
        .unwrap();
        assert_eq!(c.metrics_reporting_interval, Duration::from_secs(30));
        // Negative flush intervals are Go durations that the statsd client replaces by 300 ms.
        let c = Config::from_yaml(
            &format!("{MINIMAL}statsd_client_flush_interval: -1s\n"),
            true,
        )
        .unwrap();
        assert_eq!(c.statsd_client_flush_interval, Duration::ZERO);
    }

    #[test]
    fn bad_metrics_durations_name_the_key() {
        for (line, key) in [
            (
                "metrics_reporting_interval: 500",
                "metrics_reporting_interval",
            ),
            (
                "metrics_reporting_interval: soon",
                "metrics_reporting_interval",
            ),
            (
                "metrics_reporting_interval: 0s",
                "metrics_reporting_interval",
            ),
            (
                "statsd_client_flush_interval: 10",
                "statsd_client_flush_interval",
            ),
            (
                "statsd_client_flush_interval: 1x",
                "statsd_client_flush_interval",
            ),
            (
                "metrics_reporting_interval: -1s",
                "metrics_reporting_interval",
            ),
        ] {
            let e = Config::from_yaml(&format!("{MINIMAL}{line}\n"), true)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
    }

    #[test]
    fn a_plain_http_uaa_endpoint_is_refused_unless_allowed() {
        let with = |oauth: &str| Config::from_yaml(&format!("{MINIMAL}oauth: {oauth}\n"), false);
        for endpoint in ["http://uaa.example.com", " HTTP://127.0.0.1"] {
            let e = with(&format!("{{token_endpoint: '{endpoint}', port: 8080}}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("oauth.token_endpoint"), "{e}");
            assert!(e.contains("oauth.allow_plain_http"), "{e}");
        }
        let c =
            with("{token_endpoint: 'http://uaa.example.com', port: 8080, allow_plain_http: true}")
                .unwrap();
        assert!(c.oauth.allow_plain_http);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        // https, or a bare host name (https assumed), needs nothing.
        with("{token_endpoint: uaa.service.cf.internal, port: 8443}").unwrap();
        with("{token_endpoint: 'https://uaa.example.com', port: 443}").unwrap();
        // With token checks off nothing talks to UAA.
        Config::from_yaml(
            &format!("{MINIMAL}oauth: {{token_endpoint: 'http://u', port: 80}}\n"),
            true,
        )
        .unwrap();
    }

    #[test]
    fn debug_output_of_the_config_hides_the_database_password() {
        let c = Config::from_yaml(
            &format!("{MINIMAL}sqldb: {{type: mysql, host: db, schema: s, username: u, password: 'hunter2'}}\n"),
            true,
        )
        .unwrap();
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        match &c.database {
            Database::Mysql { password, .. } => assert_eq!(password.expose(), "hunter2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sqldb_skip_ssl_validation_is_its_own_key() {
        let c = Config::from_yaml(
            &format!("{MINIMAL}sqldb: {{skip_ssl_validation: true}}\n"),
            true,
        )
        .unwrap();
        assert!(c.sqldb.skip_ssl_validation);
        assert!(!c.skip_ssl_validation);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn postgres_takes_the_database_name_from_schema_and_defaults_to_port_5432() {
        let yaml = format!(
            "{MINIMAL}sqldb: {{type: postgres, host: pg.example.com, schema: routing_api, username: u, password: p}}\n"
        );
        let c = Config::from_yaml(&yaml, true).unwrap();
        assert_eq!(
            c.database,
            Database::Postgres {
                host: "pg.example.com".into(),
                port: 5432,
                database: "routing_api".into(),
                username: "u".into(),
                password: Secret::from("p".to_owned()),
            }
        );
        let sc = crate::database::store_config(&c);
        assert_eq!(sc.kind, crate::store::DbKind::Postgres);
        assert_eq!((sc.port, sc.schema.as_str()), (5432, "routing_api"));
        let yaml = format!("{MINIMAL}sqldb: {{type: postgres, host: pg, port: 6432, schema: r}}\n");
        match Config::from_yaml(&yaml, true).unwrap().database {
            Database::Postgres { port, .. } => assert_eq!(port, 6432),
            other => panic!("{other:?}"),
        }
        let yaml = format!("{MINIMAL}sqldb: {{type: mysql, host: db, schema: r}}\n");
        match Config::from_yaml(&yaml, true).unwrap().database {
            Database::Mysql { port, .. } => assert_eq!(port, 3306),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn postgres_needs_host() {
        let yaml = format!("{MINIMAL}sqldb: {{type: postgres, schema: routing}}\n");
        let e = Config::from_yaml(&yaml, true).unwrap_err().to_string();
        assert!(e.contains("sqldb.host"), "{e}");
    }

    #[test]
    fn a_prometheus_port_serves_plain_http_on_loopback() {
        let c = Config::from_yaml(&format!("{MINIMAL}prometheus: {{port: 9101}}\n"), true).unwrap();
        assert_eq!(
            c.prometheus,
            Some(Endpoint {
                addr: "127.0.0.1:9101".parse().unwrap(),
                tls: None,
            })
        );
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn without_a_prometheus_port_no_metrics_are_served() {
        assert_eq!(Config::from_yaml(MINIMAL, true).unwrap().prometheus, None);
        let c = Config::from_yaml(&format!("{MINIMAL}prometheus: {{port: 0}}\n"), true).unwrap();
        assert_eq!(c.prometheus, None);
    }

    #[test]
    fn prometheus_with_all_three_files_is_mutual_tls() {
        let yaml = format!(
            "{MINIMAL}prometheus: {{port: 9101, cert_path: /c.pem, key_path: /k.pem, ca_path: /ca.pem}}\n"
        );
        let endpoint = Config::from_yaml(&yaml, true).unwrap().prometheus.unwrap();
        let tls = endpoint.tls.expect("mutual TLS");
        assert_eq!(tls.cert, PathBuf::from("/c.pem"));
        assert_eq!(tls.key, PathBuf::from("/k.pem"));
        assert_eq!(tls.client_ca, PathBuf::from("/ca.pem"));
        assert_eq!(endpoint.addr.port(), 9101);
    }

    #[test]
    fn prometheus_with_some_tls_files_is_an_error_naming_the_missing_one() {
        let yaml = format!("{MINIMAL}prometheus: {{port: 9101, cert_path: /c.pem}}\n");
        let e = Config::from_yaml(&yaml, true).unwrap_err().to_string();
        assert!(e.contains("key_path must be set when cert_path is"), "{e}");
    }

    #[test]
    fn mysql_needs_host() {
        let yaml = format!("{MINIMAL}sqldb: {{type: mysql, schema: routing}}\n");
        let e = Config::from_yaml(&yaml, true).unwrap_err().to_string();
        assert!(e.contains("sqldb.host"), "{e}");
    }
}
