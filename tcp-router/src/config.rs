//! The tcp-router's configuration: upstream cf-tcp-router's YAML keys and command-line flags,
//! plus keys of our own for what upstream kept in HAProxy's base config (D).
//!
//! YAML keys (upstream): `oauth.{token_endpoint,port,skip_ssl_validation,client_name,
//! client_secret,ca_certs}`, `routing_api.{uri,port,auth_disabled,client_cert_path,
//! client_private_key_path,ca_cert_path}`, `haproxy_pid_file` (accepted, ignored),
//! `isolation_segments` (logged), `reserved_system_component_ports` (none), `drain_wait` (0;
//! BOSH renders 20s and the reserved list, [`DEFAULT_RESERVED_PORTS`]),
//! `backend_tls.{enabled,ca_cert_path,client_cert_and_key_path}`.
//!
//! YAML keys (ours; upstream's BOSH base config held them): `health_check_port` (80),
//! `request_timeout_in_seconds` (300), `connect_timeout` (30s), `max_connections` (64000),
//! `fail_on_router_port_conflicts` (false), `log_level` (info), `bind_address` (`0.0.0.0`: the
//! IP address, IPv4 or IPv6 without a port, that the external-port listeners and the health
//! port bind; all interfaces by default, as HAProxy's `bind :<port>`),
//! `backend_tls_buffer_budget_mb` (1024: the buffer memory all connections to TLS backends may
//! use, see [`crate::forward::BufferBudget`]), and the `prometheus` block (gorouter's
//! `port`, `cert_path`, `key_path`, `ca_path`, and `listen_address`; see
//! [`PrometheusConfig`]): `/metrics` on its own port too (port 0 or absent: only on the health
//! port), over mutual TLS when the three files are set.
//!
//! Flags: every flag of upstream's `cf-tcp-router`, with Go's syntax and defaults: `-config`,
//! `-syncInterval` (1m), `-subscriptionRetryInterval` (5, seconds), `-staleRouteCheckInterval`
//! (30s), `-defaultRouteExpiry` (2m), `-tokenFetchMaxRetries` (3), `-tokenFetchRetryInterval`
//! (5s), `-tokenFetchExpirationBufferTime` (30, seconds), `-routingGroupCheckExit`, lager's
//! `-logLevel`/`-timeFormat`. HAProxy's (`-tcpLoadBalancer…`, `-haproxyReloader`,
//! `-statsCollectionInterval`), `-dropsondePort` and `-debugAddr` are accepted and logged as not
//! used. The two interval flags that upstream takes in whole seconds also take a Go duration.
//!
//! Unknown YAML keys are reported as warnings (a rendered BOSH config loads); a bad value is an
//! error naming the key. Certificate files are read here, so a bad path fails at start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_endpoint::{Endpoint, PrometheusConfig};
use serde::Deserialize;
use yaml_config::GoDuration;

use routing_api_client::tls::{client_config, TlsError, TlsOptions};

/// BOSH's default `reserved_system_component_ports`, expanded.
pub const DEFAULT_RESERVED_PORTS: &[u16] = &[
    2822, 2825, 3457, 3458, 3459, 3460, 3461, 8853, 9100, 14726, 14727, 14821, 14822, 14823, 14824,
    14829, 14830, 14920, 14922, 15821, 17002, 53035, 53080,
];

/// Default `backend_tls_buffer_budget_mb`: 1 GiB, room for 16384 TLS-backend connections at
/// their smallest or about 2000 in bulk transfer (HAProxy's 64000 × 2 × 16 KiB is 2 GiB).
pub const DEFAULT_TLS_BUFFER_BUDGET_MB: i64 = 1024;

/// A configuration problem, naming the key (or flag) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read, or its YAML did not parse.
    #[error(transparent)]
    Load(#[from] yaml_config::LoadError),
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("flag -{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    /// The `prometheus` block cannot be served (its message names the keys).
    #[error(transparent)]
    Prometheus(#[from] prometheus_endpoint::ConfigError),
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Command-line flags: every flag upstream's `cf-tcp-router` defines, Go syntax.
#[derive(Debug, Clone)]
pub struct Flags {
    /// Path to the YAML config file.
    pub config: PathBuf,
    /// Full sync with the Routing API every this long.
    pub sync_interval: Duration,
    /// Wait between attempts to (re)subscribe to the TCP route event stream.
    pub subscription_retry_interval: Duration,
    /// Check for expired backends every this long.
    pub stale_route_check_interval: Duration,
    /// TTL of routes that carry none.
    pub default_route_expiry: Duration,
    /// Extra attempts to fetch a UAA token after a failure.
    pub token_fetch_max_retries: u32,
    /// Wait between UAA token fetch attempts.
    pub token_fetch_retry_interval: Duration,
    /// Tokens are refreshed this long before they expire.
    pub token_fetch_expiration_buffer: Duration,
    /// Exit when a router group's ports conflict with reserved system component ports.
    pub routing_group_check_exit: bool,
    /// Everything as parsed: lager's `-logLevel`/`-timeFormat` and the flags we accept but do
    /// not act on (HAProxy's, dropsonde's, the debug server's).
    pub parsed: process_setup::ParsedFlags,
}

impl Flags {
    /// Upstream's flag set: names, kinds and defaults of `cf-tcp-router`'s `main.go`.
    pub fn flag_set() -> process_setup::FlagSet {
        use process_setup::FlagKind::{Duration as Dur, Int, String as Str};
        process_setup::FlagSet::new("tcp-router")
            .string(
                "config",
                "/var/vcap/jobs/tcp_router/config/tcp_router.yml",
                "The Router configurer yml config.",
            )
            .duration(
                "syncInterval",
                Duration::from_secs(60),
                "The interval between syncs of the routing table from routing api.",
            )
            .seconds(
                "subscriptionRetryInterval",
                5,
                "Retry interval between retries to subscribe for tcp events from routing api (in seconds)",
            )
            .duration(
                "staleRouteCheckInterval",
                Duration::from_secs(30),
                "The interval at which router checks for expired routes",
            )
            .duration(
                "defaultRouteExpiry",
                Duration::from_secs(120),
                "The default ttl for a route",
            )
            .uint(
                "tokenFetchMaxRetries",
                3,
                "Maximum number of retries the Token Fetcher will use every time FetchToken is called",
            )
            .duration(
                "tokenFetchRetryInterval",
                Duration::from_secs(5),
                "interval to wait before TokenFetcher retries to fetch a token",
            )
            .seconds(
                "tokenFetchExpirationBufferTime",
                30,
                "Buffer time in seconds before the actual token expiration time, when TokenFetcher consider a token expired",
            )
            .bool(
                "routingGroupCheckExit",
                false,
                "Whether to exit if routing groups have conflicting ports",
            )
            .not_used("tcpLoadBalancer", Str, "haproxy", "The tcp load balancer to use.")
            .not_used(
                "tcpLoadBalancerBaseConfig",
                Str,
                "",
                "The tcp load balancer base configuration file name. This contains the basic header information.",
            )
            .not_used(
                "tcpLoadBalancerConfig",
                Str,
                "",
                "The tcp load balancer configuration file name.",
            )
            .not_used(
                "tcpLoadBalancerStatsUnixSocket",
                Str,
                "/var/vcap/jobs/haproxy/config/haproxy.sock",
                "Unix domain socket for tcp load balancer",
            )
            .not_used(
                "haproxyReloader",
                Str,
                "/var/vcap/jobs/tcp_router/bin/haproxy_reloader",
                "Path to a script that reloads HAProxy.",
            )
            .not_used(
                "statsCollectionInterval",
                Dur,
                "1m",
                "The interval between collection of stats from tcp load balancer.",
            )
            .not_used(
                "dropsondePort",
                Int,
                "3457",
                "Port the local metron agent is listening on",
            )
            .debug_server_flag()
            .lager_flags()
    }

    /// Parses a command line (the program name first) with Go's rules.
    pub fn parse_go_style(
        args: impl IntoIterator<Item = String>,
    ) -> Result<Self, process_setup::FlagError> {
        let p = Self::flag_set().parse(args)?;
        Ok(Flags {
            config: PathBuf::from(p.string("config")),
            sync_interval: p.duration("syncInterval"),
            subscription_retry_interval: p.duration("subscriptionRetryInterval"),
            stale_route_check_interval: p.duration("staleRouteCheckInterval"),
            default_route_expiry: p.duration("defaultRouteExpiry"),
            token_fetch_max_retries: u32::try_from(p.int("tokenFetchMaxRetries"))
                .unwrap_or(u32::MAX),
            token_fetch_retry_interval: p.duration("tokenFetchRetryInterval"),
            token_fetch_expiration_buffer: p.duration("tokenFetchExpirationBufferTime"),
            routing_group_check_exit: p.bool("routingGroupCheckExit"),
            parsed: p,
        })
    }

    /// Checks that the intervals make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, d) in [
            ("syncInterval", self.sync_interval),
            (
                "subscriptionRetryInterval",
                self.subscription_retry_interval,
            ),
            ("staleRouteCheckInterval", self.stale_route_check_interval),
            ("defaultRouteExpiry", self.default_route_expiry),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Flag {
                    flag,
                    message: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct RawOAuth {
    token_endpoint: String,
    port: i64,
    skip_ssl_validation: bool,
    client_name: String,
    client_secret: String,
    /// A file path.
    ca_certs: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct RawRoutingApi {
    uri: String,
    port: i64,
    auth_disabled: bool,
    client_cert_path: String,
    client_private_key_path: String,
    ca_cert_path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct RawBackendTls {
    enabled: bool,
    ca_cert_path: String,
    client_cert_and_key_path: String,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawConfig {
    oauth: RawOAuth,
    routing_api: RawRoutingApi,
    haproxy_pid_file: String,
    isolation_segments: Vec<String>,
    #[serde(deserialize_with = "routing_api_client::ports::deserialize_reserved_ports")]
    reserved_system_component_ports: Vec<u16>,
    drain_wait: GoDuration,
    backend_tls: RawBackendTls,
    health_check_port: i64,
    request_timeout_in_seconds: i64,
    connect_timeout: GoDuration,
    max_connections: i64,
    fail_on_router_port_conflicts: bool,
    log_level: String,
    bind_address: String,
    backend_tls_buffer_budget_mb: Option<i64>,
    prometheus: PrometheusConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            oauth: RawOAuth::default(),
            routing_api: RawRoutingApi::default(),
            haproxy_pid_file: String::new(),
            isolation_segments: Vec::new(),
            // Absent keys mean what they mean to upstream's binary (Go's zero values); BOSH
            // renders both, and config/tcp-router.yml sets them.
            reserved_system_component_ports: Vec::new(),
            drain_wait: GoDuration(Duration::ZERO),
            backend_tls: RawBackendTls::default(),
            health_check_port: 80,
            request_timeout_in_seconds: 300,
            connect_timeout: GoDuration(Duration::from_secs(30)),
            max_connections: 64000,
            fail_on_router_port_conflicts: false,
            log_level: "info".into(),
            bind_address: "0.0.0.0".into(),
            backend_tls_buffer_budget_mb: None,
            prometheus: PrometheusConfig::default(),
        }
    }
}

/// How to reach UAA for client-credentials tokens.
#[derive(Debug, Clone)]
pub struct OAuth {
    /// `scheme://host:port` (https unless `token_endpoint` names another scheme).
    pub url: String,
    pub client_name: String,
    pub client_secret: String,
    pub tls: TlsOptions,
}

/// How to reach the Routing API.
#[derive(Debug, Clone)]
pub struct RoutingApi {
    /// `scheme://host:port`.
    pub url: String,
    pub tls: TlsOptions,
    /// `None` when the Routing API runs with auth disabled.
    pub oauth: Option<OAuth>,
}

/// TLS from the router to backends with a `backend_tls_port`.
#[derive(Clone)]
pub struct BackendTls {
    /// Verifies against `ca_cert_path`, presents `client_cert_and_key_path` if set.
    pub client_config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls").finish_non_exhaustive()
    }
}

/// The validated configuration the router runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub routing_api: RoutingApi,
    pub isolation_segments: Vec<String>,
    pub reserved_system_component_ports: Vec<u16>,
    pub drain_wait: Duration,
    /// `Some` when `backend_tls.enabled`.
    pub backend_tls: Option<BackendTls>,
    pub health_check_port: u16,
    /// Idle timeout of a forwarded connection; `None` when `request_timeout_in_seconds` is 0.
    pub idle_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub fail_on_router_port_conflicts: bool,
    pub log_level: String,
    /// The address the external-port listeners and the health port bind (`bind_address`, ours;
    /// all interfaces by default).
    pub bind_address: IpAddr,
    /// Buffer memory all connections to TLS backends may use, in bytes
    /// (`backend_tls_buffer_budget_mb`, ours; [`DEFAULT_TLS_BUFFER_BUDGET_MB`]).
    pub backend_tls_buffer_budget: usize,
    /// Where `/metrics` is served besides the health port (`prometheus.*`); `None`: nowhere
    /// else.
    pub prometheus: Option<Endpoint>,
    /// Keys the file had that this router does not know, as dotted paths.
    pub unknown_keys: Vec<String>,
    /// Non-fatal remarks about the file.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (raw, unknown_keys) = yaml_config::load_file::<RawConfig>(path)?;
        Self::validate(raw, unknown_keys)
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let (raw, unknown_keys) = yaml_config::from_yaml_reporting_unknown::<RawConfig>(text)
            .map_err(yaml_config::LoadError::from)?;
        Self::validate(raw, unknown_keys)
    }

    fn validate(raw: RawConfig, unknown_keys: Vec<String>) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        if !raw.haproxy_pid_file.is_empty() {
            warnings.push("config key `haproxy_pid_file` is ignored: there is no HAProxy".into());
        }
        warnings.extend(yaml_config::bare_nanosecond_warnings(&[
            ("drain_wait", raw.drain_wait),
            ("connect_timeout", raw.connect_timeout),
        ]));

        let routing_api = routing_api(&raw)?;

        let backend_tls = if raw.backend_tls.enabled {
            Some(backend_tls(&raw.backend_tls)?)
        } else {
            None
        };

        let health_check_port = port_value("health_check_port", raw.health_check_port)?;
        let idle_timeout = match raw.request_timeout_in_seconds {
            0 => None,
            n if n > 0 => Some(Duration::from_secs(n as u64)),
            n => {
                return Err(invalid(
                    "request_timeout_in_seconds",
                    format!("{n} must not be negative (0 disables the idle timeout)"),
                ))
            }
        };
        if raw.connect_timeout.0.is_zero() {
            return Err(invalid(
                "connect_timeout",
                "must be greater than zero (e.g. \"30s\")",
            ));
        }
        let max_connections = match usize::try_from(raw.max_connections) {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(invalid(
                    "max_connections",
                    format!("{} must be greater than zero", raw.max_connections),
                ))
            }
        };
        let log_level = match raw.log_level.as_str() {
            "" => "info".to_string(),
            "debug" | "info" | "warn" | "error" | "fatal" => raw.log_level.clone(),
            other => {
                return Err(invalid(
                    "log_level",
                    format!(
                    "unknown level {other:?}; allowed values are debug, info, warn, error, fatal"
                ),
                ))
            }
        };
        let bind_address = yaml_config::parse_ip_address(&raw.bind_address)
            .map_err(|message| invalid("bind_address", message))?;
        let budget_mb = raw
            .backend_tls_buffer_budget_mb
            .unwrap_or(DEFAULT_TLS_BUFFER_BUDGET_MB);
        if budget_mb <= 0 || budget_mb > (1 << 30) {
            return Err(invalid(
                "backend_tls_buffer_budget_mb",
                format!("{budget_mb} must be between 1 and 1073741824 (MiB)"),
            ));
        }
        if raw.backend_tls_buffer_budget_mb.is_some() && !raw.backend_tls.enabled {
            warnings.push(
                "config key `backend_tls_buffer_budget_mb` has no effect: backend_tls.enabled is false"
                    .into(),
            );
        }
        let backend_tls_buffer_budget = usize::try_from(budget_mb)
            .unwrap_or(usize::MAX)
            .saturating_mul(1 << 20);
        let prometheus = raw.prometheus.endpoint()?;
        if raw.reserved_system_component_ports.contains(&0) {
            return Err(invalid(
                "reserved_system_component_ports",
                "port 0 is not a port",
            ));
        }
        Ok(Config {
            routing_api,
            isolation_segments: raw.isolation_segments,
            reserved_system_component_ports: raw.reserved_system_component_ports,
            drain_wait: raw.drain_wait.0,
            backend_tls,
            health_check_port,
            idle_timeout,
            connect_timeout: raw.connect_timeout.0,
            max_connections,
            fail_on_router_port_conflicts: raw.fail_on_router_port_conflicts,
            log_level,
            bind_address,
            backend_tls_buffer_budget,
            prometheus,
            unknown_keys,
            warnings,
        })
    }
}

fn port_value(key: &'static str, n: i64) -> Result<u16, ConfigError> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(invalid(key, format!("{n} is not a port (1-65535)"))),
    }
}

fn path_opt(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// `scheme://host` + `:port`; `uri` without a scheme gets `default_scheme`.
fn join_url(
    key: &'static str,
    uri: &str,
    port: u16,
    default_scheme: &str,
) -> Result<String, ConfigError> {
    let uri = uri.trim().trim_end_matches('/');
    if uri.is_empty() {
        return Err(invalid(key, "is required"));
    }
    let with_scheme = if uri.contains("://") {
        uri.to_string()
    } else {
        format!("{default_scheme}://{uri}")
    };
    let url = format!("{with_scheme}:{port}");
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| invalid(key, format!("{uri:?} is not a host URL: {e}")))?;
    let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
    let path_ok = matches!(parsed.path(), "" | "/");
    if !scheme_ok || parsed.host().is_none() || !path_ok || parsed.query().is_some() {
        return Err(invalid(
            key,
            format!("{uri:?} must be http:// or https:// and a host (the port is a separate key)"),
        ));
    }
    Ok(url)
}

fn routing_api(raw: &RawConfig) -> Result<RoutingApi, ConfigError> {
    let r = &raw.routing_api;
    let port = port_value("routing_api.port", r.port)?;
    let url = join_url("routing_api.uri", &r.uri, port, "http")?;
    let tls = TlsOptions {
        ca_file: path_opt(&r.ca_cert_path),
        client_cert_file: path_opt(&r.client_cert_path),
        client_key_file: path_opt(&r.client_private_key_path),
        ..TlsOptions::default()
    };
    if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
        return Err(invalid(
            "routing_api.client_cert_path",
            "client_cert_path and client_private_key_path must be given together",
        ));
    }
    if url.starts_with("https://") || tls.client_cert_file.is_some() {
        client_config(&tls).map_err(|e| {
            let key = match &e {
                TlsError::Read { path, .. } | TlsError::NoCertificates(path) => {
                    if *path == r.ca_cert_path {
                        "routing_api.ca_cert_path"
                    } else if *path == r.client_private_key_path {
                        "routing_api.client_private_key_path"
                    } else {
                        "routing_api.client_cert_path"
                    }
                }
                _ => "routing_api.client_cert_path",
            };
            invalid(key, e.to_string())
        })?;
    }
    let oauth = if r.auth_disabled {
        None
    } else {
        let o = &raw.oauth;
        if o.client_name.is_empty() {
            return Err(invalid(
                "oauth.client_name",
                "is required unless routing_api.auth_disabled is true",
            ));
        }
        let port = port_value("oauth.port", o.port)?;
        let url = join_url("oauth.token_endpoint", &o.token_endpoint, port, "https")?;
        let tls = TlsOptions {
            ca_file: path_opt(&o.ca_certs),
            skip_verification: o.skip_ssl_validation,
            ..TlsOptions::default()
        };
        if url.starts_with("https://") {
            client_config(&tls).map_err(|e| invalid("oauth.ca_certs", e.to_string()))?;
        }
        Some(OAuth {
            url,
            client_name: o.client_name.clone(),
            client_secret: o.client_secret.clone(),
            tls,
        })
    };
    Ok(RoutingApi { url, tls, oauth })
}

fn backend_tls(raw: &RawBackendTls) -> Result<BackendTls, ConfigError> {
    if raw.ca_cert_path.is_empty() {
        return Err(invalid(
            "backend_tls.ca_cert_path",
            "is required when backend_tls.enabled is true",
        ));
    }
    let client_identity = if raw.client_cert_and_key_path.is_empty() {
        None
    } else {
        Some(
            crate::backend_tls::read_cert_and_key(Path::new(&raw.client_cert_and_key_path))
                .map_err(|e| invalid("backend_tls.client_cert_and_key_path", e.to_string()))?,
        )
    };
    let client_config =
        crate::backend_tls::client_config(Path::new(&raw.ca_cert_path), client_identity).map_err(
            |e| match e {
                crate::backend_tls::BackendTlsError::Rustls(_) => {
                    invalid("backend_tls.client_cert_and_key_path", e.to_string())
                }
                _ => invalid("backend_tls.ca_cert_path", e.to_string()),
            },
        )?;
    Ok(BackendTls {
        client_config: Arc::new(client_config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "routing_api: {uri: http://127.0.0.1, port: 3000, auth_disabled: true}\n";

    #[test]
    fn defaults_are_boshs() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.routing_api.url, "http://127.0.0.1:3000");
        assert!(c.routing_api.oauth.is_none());
        assert_eq!(c.health_check_port, 80);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.connect_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 64000);
        assert_eq!(c.drain_wait, Duration::ZERO, "upstream's code default");
        assert!(c.backend_tls.is_none());
        assert!(!c.fail_on_router_port_conflicts);
        assert!(
            c.reserved_system_component_ports.is_empty(),
            "upstream's code default"
        );
        assert!(c.unknown_keys.is_empty());
        assert_eq!(
            c.bind_address,
            IpAddr::from([0, 0, 0, 0]),
            "all interfaces, as HAProxy's `bind :<port>`"
        );
    }

    #[test]
    fn bind_address_is_an_ip_address() {
        let c = Config::from_yaml(&format!("{MINIMAL}bind_address: 127.0.0.1\n")).unwrap();
        assert_eq!(c.bind_address, IpAddr::from([127, 0, 0, 1]));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let c = Config::from_yaml(&format!("{MINIMAL}bind_address: ::1\n")).unwrap();
        assert_eq!(c.bind_address, "::1".parse::<IpAddr>().unwrap());
        for bad in [
            "bind_address: localhost",
            "bind_address: 127.0.0.1:8080",
            "bind_address: '[::1]'",
            "bind_address: ''",
        ] {
            let e = Config::from_yaml(&format!("{MINIMAL}{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("bind_address"), "{bad}: {e}");
        }
    }

    #[test]
    fn reads_upstream_keys() {
        let c = Config::from_yaml(
            r#"
oauth:
  token_endpoint: uaa.service.cf.internal
  port: 8443
  skip_ssl_validation: true
  client_name: tcp_router
  client_secret: secret
routing_api:
  uri: http://routing-api.service.cf.internal
  port: 3000
haproxy_pid_file: /var/vcap/data/haproxy/haproxy.pid
isolation_segments: [is1, is2]
reserved_system_component_ports: "2822,3457-3459"
drain_wait: 5s
health_check_port: 8080
request_timeout_in_seconds: 0
connect_timeout: 250ms
max_connections: 10
fail_on_router_port_conflicts: true
something_else: 1
"#,
        )
        .unwrap();
        let oauth = c.routing_api.oauth.as_ref().unwrap();
        assert_eq!(oauth.url, "https://uaa.service.cf.internal:8443");
        assert_eq!(oauth.client_name, "tcp_router");
        assert!(oauth.tls.skip_verification);
        assert_eq!(
            c.routing_api.url,
            "http://routing-api.service.cf.internal:3000"
        );
        assert_eq!(c.isolation_segments, vec!["is1", "is2"]);
        assert_eq!(
            c.reserved_system_component_ports,
            vec![2822, 3457, 3458, 3459]
        );
        assert_eq!(c.drain_wait, Duration::from_secs(5));
        assert_eq!(c.health_check_port, 8080);
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.max_connections, 10);
        assert!(c.fail_on_router_port_conflicts);
        assert_eq!(c.unknown_keys, vec!["something_else"]);
        assert!(c.warnings.iter().any(|w| w.contains("haproxy_pid_file")));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (yaml, key) in [
            ("routing_api: {uri: '', port: 3000, auth_disabled: true}", "routing_api.uri"),
            ("routing_api: {uri: 'http://x', port: 0, auth_disabled: true}", "routing_api.port"),
            ("routing_api: {uri: 'http://x', port: 70000, auth_disabled: true}", "routing_api.port"),
            ("routing_api: {uri: 'ftp://x', port: 1, auth_disabled: true}", "routing_api.uri"),
            ("routing_api: {uri: 'http://x/path', port: 1, auth_disabled: true}", "routing_api.uri"),
            ("routing_api: {uri: 'http://x', port: 1}", "oauth.client_name"),
            (
                "routing_api: {uri: 'http://x', port: 1}\noauth: {client_name: c, token_endpoint: u, port: 0}",
                "oauth.port",
            ),
            (
                "routing_api: {uri: 'http://x', port: 1, auth_disabled: true, client_cert_path: /x}",
                "routing_api.client_cert_path",
            ),
            (
                "routing_api: {uri: 'https://x', port: 1, auth_disabled: true, ca_cert_path: /nonexistent/ca.pem}",
                "routing_api.ca_cert_path",
            ),
            (&format!("{MINIMAL}backend_tls: {{enabled: true}}"), "backend_tls.ca_cert_path"),
            (
                &format!("{MINIMAL}backend_tls: {{enabled: true, ca_cert_path: /nonexistent}}"),
                "backend_tls.ca_cert_path",
            ),
            (&format!("{MINIMAL}health_check_port: -1"), "health_check_port"),
            (&format!("{MINIMAL}request_timeout_in_seconds: -5"), "request_timeout_in_seconds"),
            (&format!("{MINIMAL}connect_timeout: 0s"), "connect_timeout"),
            (&format!("{MINIMAL}max_connections: 0"), "max_connections"),
            (&format!("{MINIMAL}log_level: loud"), "log_level"),
        ] {
            let e = Config::from_yaml(yaml).unwrap_err();
            assert!(e.to_string().contains(key), "{yaml}: {e}");
        }
        let e = Config::from_yaml(&format!("{MINIMAL}drain_wait: soon")).unwrap_err();
        assert!(e.to_string().contains("drain_wait"), "{e}");
        let e = Config::from_yaml(&format!("{MINIMAL}max_connections: lots")).unwrap_err();
        assert!(e.to_string().contains("max_connections"), "{e}");
        let e = Config::from_yaml(&format!("{MINIMAL}reserved_system_component_ports: '5-1'"))
            .unwrap_err();
        assert!(
            e.to_string().contains("reserved_system_component_ports"),
            "{e}"
        );
    }

    #[test]
    fn flags_go_style_and_defaults() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = Flags::parse_go_style(args(&["tcp-router", "-config", "c.yml"])).unwrap();
        assert_eq!(f.config, PathBuf::from("c.yml"));
        assert_eq!(f.sync_interval, Duration::from_secs(60));
        assert_eq!(f.subscription_retry_interval, Duration::from_secs(5));
        assert_eq!(f.stale_route_check_interval, Duration::from_secs(30));
        assert_eq!(f.default_route_expiry, Duration::from_secs(120));
        assert!(!f.routing_group_check_exit);
        let f = Flags::parse_go_style(args(&[
            "tcp-router",
            "--config",
            "c.yml",
            "-syncInterval=10s",
            "-subscriptionRetryInterval",
            "100ms",
            "-routingGroupCheckExit",
            "-tcpLoadBalancerConfig=/x",
        ]))
        .unwrap();
        assert_eq!(f.sync_interval, Duration::from_secs(10));
        assert_eq!(f.subscription_retry_interval, Duration::from_millis(100));
        assert!(f.routing_group_check_exit);
        assert_eq!(
            Flags::parse_go_style(args(&["tcp-router"])).unwrap().config,
            PathBuf::from("/var/vcap/jobs/tcp_router/config/tcp_router.yml")
        );
        assert!(
            Flags::parse_go_style(args(&["tcp-router", "-config", "c", "-syncInterval", "x"]))
                .is_err()
        );
        let f = Flags::parse_go_style(args(&["tcp-router", "-config", "c", "-syncInterval", "0s"]))
            .unwrap();
        assert!(f
            .validate()
            .unwrap_err()
            .to_string()
            .contains("syncInterval"));
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tcp_router.example.yml");
        let c = Config::load(&path).unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert_eq!(c.routing_api.url, "http://127.0.0.1:3000");
        assert_eq!(c.health_check_port, 8080);
    }

    #[test]
    fn a_prometheus_port_serves_metrics_there_too_over_plain_http_on_loopback() {
        let c = Config::from_yaml(&format!("{MINIMAL}prometheus: {{port: 9102}}\n")).unwrap();
        assert_eq!(
            c.prometheus,
            Some(Endpoint {
                addr: "127.0.0.1:9102".parse().unwrap(),
                tls: None,
            })
        );
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn without_a_prometheus_port_metrics_are_only_on_the_health_port() {
        assert_eq!(Config::from_yaml(MINIMAL).unwrap().prometheus, None);
    }

    #[test]
    fn prometheus_with_some_tls_files_is_an_error_naming_the_missing_one() {
        let yaml =
            format!("{MINIMAL}prometheus: {{port: 9102, key_path: /k.pem, ca_path: /ca.pem}}\n");
        let e = Config::from_yaml(&yaml).unwrap_err().to_string();
        assert!(e.contains("cert_path must be set when key_path is"), "{e}");
    }
}
