//! Gorouter's YAML configuration: upstream's keys mapped onto typed values.
//!
//! Defaults are the BOSH job's defaults (what real foundations run), not the Go code's, where the
//! two differ (see ../shared/spec/gorouter.md A.15). Durations accept Go duration strings
//! (`"30s"`, `"1m30s"`, `"250ms"`) and plain integers, which upstream reads as nanoseconds; an
//! integer that small is almost always a mistake, so it is accepted with a warning. Unknown keys are
//! accepted and reported as warnings so that a real rendered config loads; a bad value is an error
//! that names the key.
//!
//! Extensions (keys upstream does not have): `ip`, the address announced in `router.start`
//! (upstream discovers it; so do we when it is absent), and `bind_address`, the IP address
//! (IPv4 or IPv6, no port) the proxy listener binds, `0.0.0.0` (all interfaces, as upstream)
//! by default. The status listeners keep `status.host` (`/health`) and 127.0.0.1 (`/routes`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
pub use yaml_config::{parse_go_duration, GoDuration};

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read, or its YAML did not parse.
    #[error(transparent)]
    Load(#[from] yaml_config::LoadError),
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// How endpoints in a pool are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancingAlgorithm {
    RoundRobin,
    LeastConnection,
}

impl BalancingAlgorithm {
    /// Parses upstream's names (`round-robin`, `least-connection`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "round-robin" => Some(Self::RoundRobin),
            "least-connection" => Some(Self::LeastConnection),
            _ => None,
        }
    }
}

/// What happens to an incoming `X-Forwarded-Client-Cert` header (A.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedClientCert {
    AlwaysForward,
    Forward,
    SanitizeSet,
}

/// A NATS server to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NatsHost {
    pub hostname: String,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NatsConfig {
    pub hosts: Vec<NatsHost>,
    pub user: String,
    pub pass: String,
    pub tls_enabled: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            hosts: vec![NatsHost {
                hostname: "localhost".into(),
                port: 4222,
            }],
            user: String::new(),
            pass: String::new(),
            tls_enabled: false,
        }
    }
}

/// `routing_api.*`: where gorouter's second route source, the Routing API, is. As upstream,
/// `ca_certs`, `cert_chain` and `private_key` are PEM text inline (not file paths).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoutingApiConfig {
    /// `http://host` or `https://host` (no port; a bare host means `http://`).
    pub uri: String,
    /// 0 = not set.
    pub port: u16,
    pub auth_disabled: bool,
    /// PEM text of the CAs to trust for an `https` URI.
    pub ca_certs: String,
    /// PEM text of the client certificate chain (mutual TLS).
    pub cert_chain: String,
    /// PEM text of the client key.
    pub private_key: String,
}

impl RoutingApiConfig {
    /// Whether the Routing API is a route source: upstream starts the route fetcher only when
    /// both `uri` and `port` are set.
    pub fn enabled(&self) -> bool {
        !self.uri.trim().is_empty() && self.port != 0
    }

    /// `uri:port`, with `http://` added when `uri` has no scheme.
    pub fn url(&self) -> String {
        let uri = self.uri.trim().trim_end_matches('/');
        if uri.contains("://") {
            format!("{uri}:{}", self.port)
        } else {
            format!("http://{uri}:{}", self.port)
        }
    }
}

/// `oauth.*`: UAA client credentials for the Routing API. Unlike `routing_api.ca_certs`,
/// `oauth.ca_certs` is a file path (upstream's quirk).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OAuthConfig {
    pub token_endpoint: String,
    pub port: i64,
    pub client_name: String,
    pub client_secret: String,
    pub skip_ssl_validation: bool,
    /// Path of a PEM file of CAs to trust for UAA.
    pub ca_certs: String,
}

impl OAuthConfig {
    /// `https://token_endpoint:port` (the scheme kept when `token_endpoint` has one).
    pub fn url(&self) -> String {
        let endpoint = self.token_endpoint.trim().trim_end_matches('/');
        if endpoint.contains("://") {
            format!("{endpoint}:{}", self.port)
        } else {
            format!("https://{endpoint}:{}", self.port)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StatusRoutesConfig {
    pub port: u16,
}

impl Default for StatusRoutesConfig {
    fn default() -> Self {
        Self { port: 8082 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StatusConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub pass: String,
    pub routes: StatusRoutesConfig,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            user: "router-status".into(),
            pass: String::new(),
            routes: StatusRoutesConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BackendsConfig {
    pub max_attempts: i64,
    pub max_conns: i64,
}

impl Default for BackendsConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_conns: 500,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AccessLogConfig {
    pub file: String,
    pub enable_streaming: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TracingConfig {
    pub enable_zipkin: bool,
    pub enable_w3c: bool,
    pub w3c_tenant_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    pub level: String,
    pub disable_log_forwarded_for: bool,
    pub disable_log_source_ip: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            disable_log_forwarded_for: false,
            disable_log_source_ip: false,
        }
    }
}

/// The raw document as upstream spells it; [`Config::from_yaml`] turns it into [`Config`].
#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawConfig {
    port: u16,
    index: u32,
    zone: String,
    status: StatusConfig,
    nats: NatsConfig,
    routing_api: RoutingApiConfig,
    oauth: OAuthConfig,
    logging: LoggingConfig,
    access_log: AccessLogConfig,
    tracing: TracingConfig,
    backends: BackendsConfig,
    droplet_stale_threshold: GoDuration,
    prune_stale_droplets_interval: GoDuration,
    start_response_delay_interval: GoDuration,
    suspend_pruning_if_nats_unavailable: bool,
    endpoint_timeout: GoDuration,
    endpoint_dial_timeout: GoDuration,
    websocket_dial_timeout: GoDuration,
    balancing_algorithm: String,
    empty_pool_response_code_503: bool,
    empty_pool_timeout: GoDuration,
    sticky_session_cookie_names: Vec<String>,
    secure_cookies: bool,
    trace_key: String,
    force_forwarded_proto_https: bool,
    sanitize_forwarded_proto: bool,
    forwarded_client_cert: String,
    hop_by_hop_headers_to_filter: Vec<String>,
    max_header_bytes: i64,
    healthcheck_user_agent: String,
    drain_wait: GoDuration,
    drain_timeout: GoDuration,
    frontend_idle_timeout: GoDuration,
    disable_keep_alives: bool,
    max_idle_conns: i64,
    max_idle_conns_per_host: i64,
    extra_headers_to_log: Vec<String>,
    isolation_segments: Vec<String>,
    routing_table_sharding_mode: String,
    /// Not an upstream key: the address announced in `router.start` (upstream finds the local IP).
    ip: Option<IpAddr>,
    /// Not an upstream key: the address the proxy listener binds (upstream: all interfaces).
    bind_address: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            port: 80,
            index: 0,
            zone: String::new(),
            status: StatusConfig::default(),
            nats: NatsConfig::default(),
            routing_api: RoutingApiConfig::default(),
            oauth: OAuthConfig::default(),
            logging: LoggingConfig::default(),
            access_log: AccessLogConfig::default(),
            tracing: TracingConfig::default(),
            backends: BackendsConfig::default(),
            droplet_stale_threshold: GoDuration(Duration::from_secs(120)),
            prune_stale_droplets_interval: GoDuration(Duration::from_secs(30)),
            start_response_delay_interval: GoDuration(Duration::from_secs(20)),
            suspend_pruning_if_nats_unavailable: true,
            endpoint_timeout: GoDuration(Duration::from_secs(900)),
            endpoint_dial_timeout: GoDuration(Duration::from_secs(5)),
            websocket_dial_timeout: GoDuration(Duration::ZERO),
            balancing_algorithm: "round-robin".into(),
            empty_pool_response_code_503: true,
            empty_pool_timeout: GoDuration(Duration::ZERO),
            sticky_session_cookie_names: vec!["JSESSIONID".into()],
            secure_cookies: false,
            trace_key: "22".into(),
            force_forwarded_proto_https: false,
            sanitize_forwarded_proto: false,
            forwarded_client_cert: "always_forward".into(),
            hop_by_hop_headers_to_filter: Vec::new(),
            max_header_bytes: 1024 * 1024,
            healthcheck_user_agent: "HTTP-Monitor/1.1".into(),
            drain_wait: GoDuration(Duration::from_secs(20)),
            drain_timeout: GoDuration(Duration::from_secs(900)),
            frontend_idle_timeout: GoDuration(Duration::from_secs(900)),
            disable_keep_alives: false,
            max_idle_conns: 100,
            max_idle_conns_per_host: 100,
            extra_headers_to_log: Vec::new(),
            isolation_segments: Vec::new(),
            routing_table_sharding_mode: "all".into(),
            ip: None,
            bind_address: "0.0.0.0".into(),
        }
    }
}

/// Which isolation segments this router accepts endpoints from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardingMode {
    All,
    Segments(BTreeSet<String>),
    SharedAndSegments(BTreeSet<String>),
}

impl ShardingMode {
    /// Whether an endpoint in `segment` ("" = shared) belongs in this router's table.
    pub fn accepts(&self, segment: &str) -> bool {
        match self {
            ShardingMode::All => true,
            ShardingMode::Segments(set) => set.contains(segment),
            ShardingMode::SharedAndSegments(set) => segment.is_empty() || set.contains(segment),
        }
    }
}

/// The validated configuration the router runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub index: u32,
    pub zone: String,
    pub status: StatusConfig,
    /// `hosts` is empty only when the Routing API is configured (no NATS connection then).
    pub nats: NatsConfig,
    pub routing_api: RoutingApiConfig,
    pub oauth: OAuthConfig,
    pub logging: LoggingConfig,
    pub access_log: AccessLogConfig,
    pub tracing: TracingConfig,
    /// Tries per request, at least 1.
    pub max_attempts: usize,
    /// In-flight requests per endpoint; `None` is unlimited.
    pub max_conns: Option<u64>,
    pub droplet_stale_threshold: Duration,
    pub prune_stale_droplets_interval: Duration,
    pub start_response_delay_interval: Duration,
    pub suspend_pruning_if_nats_unavailable: bool,
    pub endpoint_timeout: Duration,
    pub endpoint_dial_timeout: Duration,
    pub websocket_dial_timeout: Duration,
    pub balancing_algorithm: BalancingAlgorithm,
    pub empty_pool_response_code_503: bool,
    pub empty_pool_timeout: Duration,
    pub sticky_session_cookie_names: Vec<String>,
    pub secure_cookies: bool,
    /// `None` when empty: the debugging headers are then never added.
    pub trace_key: Option<String>,
    pub force_forwarded_proto_https: bool,
    pub sanitize_forwarded_proto: bool,
    pub forwarded_client_cert: ForwardedClientCert,
    /// Lowercased names that survive being listed in a request's `Connection` header.
    pub hop_by_hop_headers_to_filter: Vec<String>,
    pub max_header_bytes: usize,
    pub healthcheck_user_agent: String,
    pub drain_wait: Duration,
    pub drain_timeout: Duration,
    pub frontend_idle_timeout: Duration,
    pub disable_keep_alives: bool,
    pub max_idle_conns: usize,
    pub max_idle_conns_per_host: usize,
    pub extra_headers_to_log: Vec<String>,
    pub sharding: ShardingMode,
    /// The address announced in `router.start` and `X-Vcap-Router`.
    pub ip: IpAddr,
    /// The address the proxy listener binds (`bind_address`, ours; all interfaces by default).
    pub bind_address: IpAddr,
    /// Keys the file had that this router does not know, as dotted paths.
    pub unknown_keys: Vec<String>,
    /// Other non-fatal remarks about the file (suspicious values).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (raw, unknown_keys) = yaml_config::load_file::<RawConfig>(path)?;
        Self::validate(raw, unknown_keys)
    }

    /// Parses and validates YAML text. An empty document gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let (raw, unknown_keys) = yaml_config::from_yaml_reporting_unknown::<RawConfig>(text)
            .map_err(yaml_config::LoadError::from)?;
        Self::validate(raw, unknown_keys)
    }

    fn validate(raw: RawConfig, unknown_keys: Vec<String>) -> Result<Self, ConfigError> {
        let warnings = yaml_config::bare_nanosecond_warnings(&[
            ("droplet_stale_threshold", raw.droplet_stale_threshold),
            (
                "prune_stale_droplets_interval",
                raw.prune_stale_droplets_interval,
            ),
            (
                "start_response_delay_interval",
                raw.start_response_delay_interval,
            ),
            ("endpoint_timeout", raw.endpoint_timeout),
            ("endpoint_dial_timeout", raw.endpoint_dial_timeout),
            ("drain_wait", raw.drain_wait),
            ("drain_timeout", raw.drain_timeout),
            ("frontend_idle_timeout", raw.frontend_idle_timeout),
        ]);
        let nonzero = |key: &'static str, d: GoDuration| {
            if d.0.is_zero() {
                Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than zero (e.g. \"30s\")".into(),
                })
            } else {
                Ok(d.0)
            }
        };
        let prune_stale_droplets_interval = nonzero(
            "prune_stale_droplets_interval",
            raw.prune_stale_droplets_interval,
        )?;
        let mut droplet_stale_threshold =
            nonzero("droplet_stale_threshold", raw.droplet_stale_threshold)?;
        let endpoint_timeout = nonzero("endpoint_timeout", raw.endpoint_timeout)?;
        let endpoint_dial_timeout = nonzero("endpoint_dial_timeout", raw.endpoint_dial_timeout)?;
        let frontend_idle_timeout = nonzero("frontend_idle_timeout", raw.frontend_idle_timeout)?;
        let start_response_delay_interval = raw.start_response_delay_interval.0;
        if start_response_delay_interval > droplet_stale_threshold {
            droplet_stale_threshold = start_response_delay_interval;
        }
        let drain_timeout = if raw.drain_timeout.0.is_zero() {
            endpoint_timeout
        } else {
            raw.drain_timeout.0
        };
        let websocket_dial_timeout = if raw.websocket_dial_timeout.0.is_zero() {
            endpoint_dial_timeout
        } else {
            raw.websocket_dial_timeout.0
        };

        let balancing_algorithm = BalancingAlgorithm::from_name(&raw.balancing_algorithm)
            .ok_or_else(|| ConfigError::Invalid {
                key: "balancing_algorithm",
                message: format!(
                    "invalid load balancing algorithm {:?}; allowed values are round-robin, least-connection",
                    raw.balancing_algorithm
                ),
            })?;
        let forwarded_client_cert = match raw.forwarded_client_cert.as_str() {
            "always_forward" => ForwardedClientCert::AlwaysForward,
            "forward" => ForwardedClientCert::Forward,
            "sanitize_set" => ForwardedClientCert::SanitizeSet,
            other => {
                return Err(ConfigError::Invalid {
                    key: "forwarded_client_cert",
                    message: format!(
                        "invalid forwarded client cert mode {other:?}; allowed values are always_forward, forward, sanitize_set"
                    ),
                })
            }
        };
        let segments: BTreeSet<String> = raw.isolation_segments.iter().cloned().collect();
        let sharding = match raw.routing_table_sharding_mode.as_str() {
            "all" => ShardingMode::All,
            "segments" if segments.is_empty() => {
                return Err(ConfigError::Invalid {
                    key: "isolation_segments",
                    message: "routing_table_sharding_mode is segments but no isolation segments are listed".into(),
                })
            }
            "segments" => ShardingMode::Segments(segments),
            "shared-and-segments" => ShardingMode::SharedAndSegments(segments),
            other => {
                return Err(ConfigError::Invalid {
                    key: "routing_table_sharding_mode",
                    message: format!(
                        "invalid sharding mode {other:?}; allowed values are all, segments, shared-and-segments"
                    ),
                })
            }
        };
        const MAX_HEADER_LIMIT: i64 = 1024 * 1024;
        let max_header_bytes = match raw.max_header_bytes {
            0 => MAX_HEADER_LIMIT as usize,
            n if (1..=MAX_HEADER_LIMIT).contains(&n) => n as usize,
            n => {
                return Err(ConfigError::Invalid {
                    key: "max_header_bytes",
                    message: format!("{n} is out of range; allowed 1 to {MAX_HEADER_LIMIT} bytes"),
                })
            }
        };
        let non_negative = |key: &'static str, n: i64| {
            usize::try_from(n).map_err(|_| ConfigError::Invalid {
                key,
                message: format!("{n} must not be negative"),
            })
        };
        let max_attempts = non_negative("backends.max_attempts", raw.backends.max_attempts)?.max(1);
        let max_conns = match non_negative("backends.max_conns", raw.backends.max_conns)? {
            0 => None,
            n => Some(n as u64),
        };
        let max_idle_conns = non_negative("max_idle_conns", raw.max_idle_conns)?;
        let max_idle_conns_per_host =
            non_negative("max_idle_conns_per_host", raw.max_idle_conns_per_host)?;
        match raw.logging.level.as_str() {
            "debug" | "info" | "warn" | "error" | "fatal" => {}
            other => {
                return Err(ConfigError::Invalid {
                    key: "logging.level",
                    message: format!(
                    "unknown level {other:?}; allowed values are debug, info, warn, error, fatal"
                ),
                })
            }
        }
        if raw.nats.hosts.is_empty() && !raw.routing_api.enabled() {
            return Err(ConfigError::Invalid {
                key: "nats.hosts",
                message: "no route source: list at least one NATS host, or configure the Routing API (routing_api.uri and routing_api.port)".into(),
            });
        }
        if raw.routing_api.enabled() {
            let url = raw.routing_api.url();
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.parse::<http::Uri>().is_err()
            {
                return Err(ConfigError::Invalid {
                    key: "routing_api.uri",
                    message: format!(
                        "{:?} must be http:// or https:// and a host (the port is routing_api.port)",
                        raw.routing_api.uri
                    ),
                });
            }
            if raw.routing_api.cert_chain.trim().is_empty()
                != raw.routing_api.private_key.trim().is_empty()
            {
                return Err(ConfigError::Invalid {
                    key: "routing_api.cert_chain",
                    message: "cert_chain and private_key must be given together".into(),
                });
            }
            if !raw.routing_api.auth_disabled {
                if raw.oauth.token_endpoint.trim().is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "oauth.token_endpoint",
                        message: "is required unless routing_api.auth_disabled is true".into(),
                    });
                }
                if !(1..=65535).contains(&raw.oauth.port) {
                    return Err(ConfigError::Invalid {
                        key: "oauth.port",
                        message: format!(
                            "{} is not a port (1-65535); required unless routing_api.auth_disabled is true",
                            raw.oauth.port
                        ),
                    });
                }
            }
        }
        for h in &raw.nats.hosts {
            if h.hostname.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "nats.hosts",
                    message: "a host has an empty hostname".into(),
                });
            }
        }
        let bind_address = yaml_config::parse_ip_address(&raw.bind_address).map_err(|message| {
            ConfigError::Invalid {
                key: "bind_address",
                message,
            }
        })?;
        if raw.nats.tls_enabled {
            return Err(ConfigError::Invalid {
                key: "nats.tls_enabled",
                message: "NATS over TLS is not supported yet; set it to false".into(),
            });
        }
        Ok(Config {
            port: raw.port,
            index: raw.index,
            zone: raw.zone,
            status: raw.status,
            nats: raw.nats,
            routing_api: raw.routing_api,
            oauth: raw.oauth,
            logging: raw.logging,
            access_log: raw.access_log,
            tracing: raw.tracing,
            max_attempts,
            max_conns,
            droplet_stale_threshold,
            prune_stale_droplets_interval,
            start_response_delay_interval,
            suspend_pruning_if_nats_unavailable: raw.suspend_pruning_if_nats_unavailable,
            endpoint_timeout,
            endpoint_dial_timeout,
            websocket_dial_timeout,
            balancing_algorithm,
            empty_pool_response_code_503: raw.empty_pool_response_code_503,
            empty_pool_timeout: raw.empty_pool_timeout.0,
            sticky_session_cookie_names: raw.sticky_session_cookie_names,
            secure_cookies: raw.secure_cookies,
            trace_key: Some(raw.trace_key).filter(|k| !k.is_empty()),
            force_forwarded_proto_https: raw.force_forwarded_proto_https,
            sanitize_forwarded_proto: raw.sanitize_forwarded_proto,
            forwarded_client_cert,
            hop_by_hop_headers_to_filter: raw
                .hop_by_hop_headers_to_filter
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            max_header_bytes,
            healthcheck_user_agent: raw.healthcheck_user_agent,
            drain_wait: raw.drain_wait.0,
            drain_timeout,
            frontend_idle_timeout,
            disable_keep_alives: raw.disable_keep_alives,
            max_idle_conns,
            max_idle_conns_per_host,
            extra_headers_to_log: raw.extra_headers_to_log,
            sharding,
            ip: raw.ip.unwrap_or_else(local_ip),
            bind_address,
            unknown_keys,
            warnings,
        })
    }

    /// NATS server URLs, credentials carried separately.
    pub fn nats_servers(&self) -> Vec<String> {
        self.nats
            .hosts
            .iter()
            .map(|h| format!("nats://{}:{}", h.hostname, h.port))
            .collect()
    }
}

/// The address of the interface that routes to the outside, as upstream's `localip` finds it.
/// A connected UDP socket only consults the routing table: no packet is sent.
fn local_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
        Ok(sock.local_addr()?.ip())
    };
    probe().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_bosh_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.port, 80);
        assert_eq!(c.status.port, 8080);
        assert_eq!(c.status.routes.port, 8082);
        assert_eq!(c.droplet_stale_threshold, Duration::from_secs(120));
        assert_eq!(c.start_response_delay_interval, Duration::from_secs(20));
        assert_eq!(c.endpoint_timeout, Duration::from_secs(900));
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.max_conns, Some(500));
        assert!(c.empty_pool_response_code_503);
        assert!(c.suspend_pruning_if_nats_unavailable);
        assert_eq!(c.sticky_session_cookie_names, vec!["JSESSIONID"]);
        assert_eq!(c.healthcheck_user_agent, "HTTP-Monitor/1.1");
        assert_eq!(c.drain_wait, Duration::from_secs(20));
        assert_eq!(
            c.bind_address,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "all interfaces, as upstream"
        );
    }

    #[test]
    fn bind_address_is_an_ip_address() {
        let c = Config::from_yaml("bind_address: 127.0.0.1\n").unwrap();
        assert_eq!(c.bind_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let c = Config::from_yaml("bind_address: ::1\n").unwrap();
        assert_eq!(c.bind_address, "::1".parse::<IpAddr>().unwrap());
        let c = Config::from_yaml("bind_address: '::'\n").unwrap();
        assert_eq!(c.bind_address, "::".parse::<IpAddr>().unwrap());
        for bad in [
            "bind_address: localhost",
            "bind_address: 127.0.0.1:8081",
            "bind_address: '[::1]'",
            "bind_address: ''",
            "bind_address: 300.1.1.1",
            "bind_address: [127.0.0.1]",
        ] {
            let e = Config::from_yaml(bad).unwrap_err();
            assert!(e.to_string().contains("bind_address"), "{bad}: {e}");
        }
    }

    #[test]
    fn reads_upstream_keys() {
        let c = Config::from_yaml(
            r#"
port: 8081
index: 2
status: {port: 9090, user: u, pass: p, routes: {port: 9091}}
nats:
  hosts: [{hostname: 127.0.0.1, port: 4223}, {hostname: nats2, port: 4224}]
  user: nu
  pass: np
droplet_stale_threshold: 1m30s
prune_stale_droplets_interval: 500ms
balancing_algorithm: least-connection
backends: {max_attempts: 0, max_conns: 0}
"#,
        )
        .unwrap();
        assert_eq!(c.port, 8081);
        assert_eq!(c.index, 2);
        assert_eq!(c.status.routes.port, 9091);
        assert_eq!(
            c.nats_servers(),
            vec!["nats://127.0.0.1:4223", "nats://nats2:4224"]
        );
        assert_eq!(c.droplet_stale_threshold, Duration::from_secs(90));
        assert_eq!(c.prune_stale_droplets_interval, Duration::from_millis(500));
        assert_eq!(c.balancing_algorithm, BalancingAlgorithm::LeastConnection);
        assert_eq!(c.max_attempts, 1, "0 attempts still means one try");
        assert_eq!(c.max_conns, None, "0 means unlimited");
    }

    #[test]
    fn unknown_keys_are_reported_not_fatal() {
        let c = Config::from_yaml("port: 81\nroute_services_secret: x\nstatus: {tls: {port: 1}}\n")
            .unwrap();
        assert_eq!(c.unknown_keys, vec!["route_services_secret", "status.tls"]);
    }

    #[test]
    fn bad_value_names_the_key() {
        let e = Config::from_yaml("balancing_algorithm: random\n").unwrap_err();
        assert!(e.to_string().contains("balancing_algorithm"), "{e}");
        let e = Config::from_yaml("droplet_stale_threshold: soon\n").unwrap_err();
        assert!(e.to_string().contains("droplet_stale_threshold"), "{e}");
        let e = Config::from_yaml("port: 70000\n").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = Config::from_yaml("max_header_bytes: 2000000\n").unwrap_err();
        assert!(e.to_string().contains("max_header_bytes"), "{e}");
    }

    #[test]
    fn start_delay_raises_stale_threshold() {
        let c =
            Config::from_yaml("droplet_stale_threshold: 10s\nstart_response_delay_interval: 30s\n")
                .unwrap();
        assert_eq!(c.droplet_stale_threshold, Duration::from_secs(30));
    }

    #[test]
    fn routing_api_and_oauth_keys() {
        let c = Config::from_yaml(
            r#"
routing_api:
  uri: https://routing-api.service.cf.internal
  port: 3001
  auth_disabled: false
  ca_certs: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
  cert_chain: "chain"
  private_key: "key"
oauth:
  token_endpoint: uaa.service.cf.internal
  port: 8443
  client_name: gorouter
  client_secret: s
  skip_ssl_validation: true
  ca_certs: /var/vcap/jobs/gorouter/config/certs/uaa/ca.crt
"#,
        )
        .unwrap();
        assert!(c.routing_api.enabled());
        assert_eq!(
            c.routing_api.url(),
            "https://routing-api.service.cf.internal:3001"
        );
        assert!(c
            .routing_api
            .ca_certs
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(c.oauth.url(), "https://uaa.service.cf.internal:8443");
        assert_eq!(c.oauth.client_name, "gorouter");
        assert!(c.oauth.skip_ssl_validation);
        assert_eq!(
            c.oauth.ca_certs,
            "/var/vcap/jobs/gorouter/config/certs/uaa/ca.crt"
        );
        assert_eq!(c.nats.hosts.len(), 1, "NATS keeps its default");
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);

        let c = Config::from_yaml(
            "routing_api: {uri: 10.0.0.1, port: 3000, auth_disabled: true}
",
        )
        .unwrap();
        assert_eq!(c.routing_api.url(), "http://10.0.0.1:3000");
        assert!(!Config::from_yaml(
            "routing_api: {uri: x}
"
        )
        .unwrap()
        .routing_api
        .enabled());
        assert!(!Config::from_yaml("").unwrap().routing_api.enabled());
    }

    #[test]
    fn a_route_source_is_required() {
        assert_eq!(
            Config::from_yaml("").unwrap().nats_servers(),
            vec!["nats://localhost:4222"],
            "NATS defaults to localhost:4222"
        );
        let e = Config::from_yaml(
            "nats: {hosts: []}
",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("nats.hosts") && msg.contains("routing_api.uri"),
            "{msg}"
        );
        let e = Config::from_yaml(
            "nats: {hosts: []}
routing_api: {uri: http://x}
",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no route source"), "{e}");
        let c = Config::from_yaml(
            "nats: {hosts: []}
routing_api: {uri: http://127.0.0.1, port: 3000, auth_disabled: true}
",
        )
        .unwrap();
        assert!(c.nats.hosts.is_empty());
        assert!(c.nats_servers().is_empty());
    }

    #[test]
    fn routing_api_settings_are_checked() {
        let e = Config::from_yaml(
            "routing_api: {uri: http://127.0.0.1, port: 3000}
",
        )
        .unwrap_err();
        assert!(e.to_string().contains("oauth.token_endpoint"), "{e}");
        let e = Config::from_yaml(
            "routing_api: {uri: http://127.0.0.1, port: 3000}
oauth: {token_endpoint: uaa, port: -1}
",
        )
        .unwrap_err();
        assert!(e.to_string().contains("oauth.port"), "{e}");
        let e = Config::from_yaml(
            "routing_api: {uri: http://127.0.0.1, port: 3000, auth_disabled: true, cert_chain: x}
",
        )
        .unwrap_err();
        assert!(e.to_string().contains("routing_api.cert_chain"), "{e}");
        let e = Config::from_yaml(
            "routing_api: {uri: 'ftp://127.0.0.1', port: 3000, auth_disabled: true}
",
        )
        .unwrap_err();
        assert!(e.to_string().contains("routing_api.uri"), "{e}");
    }

    #[test]
    fn bare_integer_duration_is_nanoseconds_with_warning() {
        let c = Config::from_yaml("drain_wait: 20\n").unwrap();
        assert_eq!(c.drain_wait, Duration::from_nanos(20));
        assert!(c.warnings.iter().any(|w| w.contains("drain_wait")));
    }
}
