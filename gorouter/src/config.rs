//! Gorouter's YAML configuration: upstream's keys mapped onto typed values.
//!
//! A key that is absent from the file means what it means to upstream's code
//! (`config.DefaultConfig()` in config/config.go, ../shared/spec/gorouter.md A.15 "code
//! default"), not what the BOSH job renders: BOSH renders every key, so a rendered config never
//! relies on these defaults, and a hand-written one gets what upstream's binary would give it.
//! `route_services.max_attempts` is the one exception (upstream's 0 crashes a route-service
//! request; see cautions.md).
//!
//! Empty and null values are read the way Go's yaml.v3 reads them into upstream's structs: a
//! null (`key:` or `key: ~`) leaves a scalar or a section at its default and empties a list; an
//! empty string is an empty string, which for a listen host (`status.host`, our
//! `bind_address`) means all interfaces, as for Go's `net.Listen(":port")`.
//!
//! Durations accept Go duration strings (`"30s"`, `"1m30s"`, `"250ms"`) and plain integers,
//! which upstream reads as nanoseconds; an integer that small is almost always a mistake, so it
//! is accepted with a warning. Unknown keys are accepted and reported as warnings so that a real
//! rendered config loads; a bad value is an error that names the key.
//!
//! Extensions (keys upstream does not have): `ip`, the address announced in `router.start`
//! (upstream discovers it; so do we when it is absent or empty), `bind_address`, the IP
//! address (IPv4 or IPv6, no port) the proxy listener binds, all interfaces by default (as
//! upstream), `max_client_connections` (client connections at once),
//! `websocket_idle_timeout` and `backend_idle_timeout` (the idle age of backend connections). `read_header_timeout` is upstream's key with our finite default.
//! The status listeners keep `status.host` (`/health`) and 127.0.0.1 (`/routes`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::SupportedCipherSuite;
use serde::{Deserialize, Deserializer};
pub use yaml_config::{parse_go_duration, GoDuration};

/// `read_header_timeout` when the key is absent (upstream's 0 waits forever for a head).
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// `backend_idle_timeout` when the key is absent or 0: upstream's fixed idle age.
pub const DEFAULT_BACKEND_IDLE_TIMEOUT: Duration = crate::proxy::transport::pool::IDLE_TIMEOUT;

use crate::tls::ciphers::{self, TlsVersion};
use crate::tls::pem::{self, CertKeyPair};
use crate::tls::TlsError;

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read, or its YAML did not parse.
    #[error(transparent)]
    Load(#[from] yaml_config::LoadError),
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    /// As `Invalid`, for keys with an index (`tls_pem[0].cert_chain`, `ca_certs[1]`).
    #[error("config key `{key}`: {message}")]
    InvalidAt { key: String, message: String },
}

impl From<TlsError> for ConfigError {
    fn from(e: TlsError) -> Self {
        match e {
            TlsError::Pem { key, message } => ConfigError::InvalidAt { key, message },
            TlsError::Config(e) => e,
            other => ConfigError::InvalidAt {
                key: "tls".into(),
                message: other.to_string(),
            },
        }
    }
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

/// A YAML list whose `null` means empty, as yaml.v3 decodes null into a Go slice or map.
fn null_is_empty<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// Declares `$raw`, the document form of the settings struct `$target`: every key optional, so
/// that an absent key and a null value both leave `$target`'s default alone (yaml.v3 decoding
/// into a pre-filled struct). `nested` keys are sections with their own raw form; `lists` are
/// sequences, which a null empties.
macro_rules! raw_layer {
    (
        struct $raw:ident => $target:ty {
            $( $field:ident : $fty:ty ),* $(,)?
            $(; nested $( $nfield:ident : $nty:ty ),* $(,)? )?
            $(; lists $( $lfield:ident : $lty:ty ),* $(,)? )?
        }
    ) => {
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        struct $raw {
            $( $field: Option<$fty>, )*
            $($( $nfield: Option<$nty>, )*)?
            $($( #[serde(deserialize_with = "null_is_empty")] $lfield: Option<$lty>, )*)?
        }

        impl $raw {
            /// Writes the keys the document has over `base`.
            #[allow(unused_variables)]
            fn over(self, base: &mut $target) {
                $( if let Some(v) = self.$field { base.$field = v; } )*
                $($( if let Some(v) = self.$nfield { v.over(&mut base.$nfield); } )*)?
                $($( if let Some(v) = self.$lfield { base.$lfield = v; } )*)?
            }
        }
    };
}

/// A NATS server to connect to. A missing `hostname` is empty, which (as for Go's dialer)
/// means this machine; a missing `port` is 0, which cannot be connected to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawNatsHost")]
pub struct NatsHost {
    pub hostname: String,
    pub port: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawNatsHost {
    hostname: Option<String>,
    port: Option<u16>,
}

impl From<RawNatsHost> for NatsHost {
    fn from(raw: RawNatsHost) -> Self {
        NatsHost {
            hostname: raw.hostname.unwrap_or_default(),
            port: raw.port.unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub hosts: Vec<NatsHost>,
    pub user: String,
    pub pass: String,
    /// Mutual TLS to NATS; the parsed material is [`Config::nats_tls`].
    pub tls_enabled: bool,
    /// PEM text of the CAs the NATS servers' certificates are checked against.
    pub ca_certs: String,
    /// PEM text of the client certificate chain and key presented to NATS.
    pub cert_chain: String,
    pub private_key: String,
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
            ca_certs: String::new(),
            cert_chain: String::new(),
            private_key: String::new(),
        }
    }
}

raw_layer! {
    struct RawNats => NatsConfig {
        user: String,
        pass: String,
        tls_enabled: bool,
        ca_certs: String,
        cert_chain: String,
        private_key: String;
        lists hosts: Vec<NatsHost>,
    }
}

/// `routing_api.*`: where gorouter's second route source, the Routing API, is. As upstream,
/// `ca_certs`, `cert_chain` and `private_key` are PEM text inline (not file paths).
#[derive(Debug, Clone, Default)]
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

raw_layer! {
    struct RawRoutingApi => RoutingApiConfig {
        uri: String,
        port: u16,
        auth_disabled: bool,
        ca_certs: String,
        cert_chain: String,
        private_key: String,
    }
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
///
/// Nothing here is checked unless the Routing API is on with auth: a foundation without the
/// Routing API renders whatever UAA settings it has (older BOSH releases render `port: -1`, "no
/// TLS port"). With the Routing API on, a `port` of 0 or below, or a `token_endpoint` with an
/// `http://` scheme, stops the router at start with upstream's "UAA client requires TLS
/// enabled" (see [`OAuthConfig::tls_url`]).
#[derive(Debug, Clone, Default)]
pub struct OAuthConfig {
    /// A host name (upstream always speaks https to it); an `https://` prefix is accepted.
    pub token_endpoint: String,
    pub port: i64,
    pub client_name: String,
    pub client_secret: String,
    pub skip_ssl_validation: bool,
    /// Path of a PEM file of CAs to trust for UAA.
    pub ca_certs: String,
}

raw_layer! {
    struct RawOAuth => OAuthConfig {
        token_endpoint: String,
        port: i64,
        client_name: String,
        client_secret: String,
        skip_ssl_validation: bool,
        ca_certs: String,
    }
}

/// Upstream's error when the UAA client would not use TLS.
pub const UAA_TLS_REQUIRED: &str = "tls-not-enabled: UAA client requires TLS enabled";

impl OAuthConfig {
    /// `https://token_endpoint:port`, or upstream's [`UAA_TLS_REQUIRED`] error when that is not
    /// possible: a port of 0 or less (upstream's "no TLS port"), or an `http://` endpoint.
    pub fn tls_url(&self) -> Result<String, String> {
        let endpoint = self.token_endpoint.trim().trim_end_matches('/');
        let host = match endpoint.split_once("://") {
            None => endpoint,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
            Some(_) => return Err(UAA_TLS_REQUIRED.to_string()),
        };
        match self.port {
            p if p <= 0 => Err(UAA_TLS_REQUIRED.to_string()),
            p if p > i64::from(u16::MAX) => Err(format!("oauth.port {p} is not a port (1-65535)")),
            p => Ok(format!("https://{host}:{p}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StatusRoutesConfig {
    pub port: u16,
}

impl Default for StatusRoutesConfig {
    fn default() -> Self {
        Self { port: 8082 }
    }
}

raw_layer! {
    struct RawStatusRoutes => StatusRoutesConfig { port: u16 }
}

/// `status.tls.*` as written (upstream's `StatusTLSConfig`): the `/health` listener over TLS
/// is on when any of it differs from the default (port 8443, no certificate, no key); the
/// validated form is [`Config::status_tls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTlsConfig {
    pub port: u16,
    /// PEM text of the certificate chain.
    pub certificate: String,
    /// PEM text of the key.
    pub key: String,
}

impl Default for StatusTlsConfig {
    fn default() -> Self {
        Self {
            port: 8443,
            certificate: String::new(),
            key: String::new(),
        }
    }
}

raw_layer! {
    struct RawStatusTls => StatusTlsConfig { port: u16, certificate: String, key: String }
}

#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The `/health` listener's host: an IP address, a host name (resolved at start), or
    /// empty for all interfaces (Go's `net.Listen(":port")`). Default `0.0.0.0`.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub pass: String,
    pub routes: StatusRoutesConfig,
    /// Whether `/health` is served without TLS on `port` (upstream's default true; false needs
    /// `status.tls`).
    pub enable_nontls_health_checks: bool,
    pub tls: StatusTlsConfig,
    /// Upstream's deprecated mode (default false): `port` serves `/health` and `/healthz`
    /// without auth and `/varz` and `/routes` with basic auth (`user`/`pass`).
    pub enable_deprecated_varz_healthz_endpoints: bool,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            user: String::new(),
            pass: String::new(),
            routes: StatusRoutesConfig::default(),
            enable_nontls_health_checks: true,
            tls: StatusTlsConfig::default(),
            enable_deprecated_varz_healthz_endpoints: false,
        }
    }
}

raw_layer! {
    struct RawStatus => StatusConfig {
        host: String,
        port: u16,
        user: String,
        pass: String,
        enable_nontls_health_checks: bool,
        enable_deprecated_varz_healthz_endpoints: bool;
        nested routes: RawStatusRoutes, tls: RawStatusTls,
    }
}

/// `prometheus.meters.*`: histogram bucket bounds, in upstream's units (see
/// [`crate::metrics::Meters`] for the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct MetersConfig {
    pub route_lookup_time_histogram_buckets: Vec<f64>,
    pub routing_response_latency_histogram_buckets: Vec<f64>,
    pub http_latency_histogram_buckets: Vec<f64>,
    pub route_registration_latency_histogram_buckets: Vec<f64>,
}

impl Default for MetersConfig {
    fn default() -> Self {
        let m = crate::metrics::Meters::default();
        Self {
            route_lookup_time_histogram_buckets: m.route_lookup_time,
            routing_response_latency_histogram_buckets: m.routing_response_latency,
            http_latency_histogram_buckets: m.http_latency,
            route_registration_latency_histogram_buckets: m.route_registration_latency,
        }
    }
}

raw_layer! {
    struct RawMeters => MetersConfig {
        ; lists
        route_lookup_time_histogram_buckets: Vec<f64>,
        routing_response_latency_histogram_buckets: Vec<f64>,
        http_latency_histogram_buckets: Vec<f64>,
        route_registration_latency_histogram_buckets: Vec<f64>,
    }
}

/// `prometheus.*` as written (upstream's `PrometheusConfig`, plus our `listen_address`);
/// validated into [`Config::prometheus`].
#[derive(Debug, Clone, Default)]
pub struct PrometheusSettings {
    pub port: u16,
    pub cert_path: String,
    pub key_path: String,
    pub ca_path: String,
    pub listen_address: String,
    pub meters: MetersConfig,
}

raw_layer! {
    struct RawPrometheus => PrometheusSettings {
        port: u16,
        cert_path: String,
        key_path: String,
        ca_path: String,
        listen_address: String;
        nested meters: RawMeters,
    }
}

/// `backends.*` as written (validated into [`Config::max_attempts`] and
/// [`Config::max_conns`]).
#[derive(Debug, Clone, Default)]
pub struct BackendsConfig {
    pub max_attempts: i64,
    pub max_conns: i64,
    /// PEM text of the client certificate chain and key presented to TLS backends (the
    /// parsed pair is in [`Config::backend_tls`]).
    pub cert_chain: String,
    pub private_key: String,
}

raw_layer! {
    struct RawBackends => BackendsConfig {
        max_attempts: i64,
        max_conns: i64,
        cert_chain: String,
        private_key: String,
    }
}

/// `route_services.*` as written.
#[derive(Debug, Clone, Default)]
pub struct RouteServicesConfig {
    pub max_attempts: i64,
    /// PEM text of the client certificate chain and key presented to route services.
    pub cert_chain: String,
    pub private_key: String,
    pub strict_signature_validation: bool,
}

raw_layer! {
    struct RawRouteServices => RouteServicesConfig {
        max_attempts: i64,
        cert_chain: String,
        private_key: String,
        strict_signature_validation: bool,
    }
}

/// `http_rewrite`: response header rules applied to every response.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpRewriteConfig {
    pub responses: HttpRewriteResponses,
}

/// `http_rewrite.responses`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpRewriteResponses {
    pub remove_headers: Vec<HeaderNameValue>,
    pub add_headers_if_not_present: Vec<HeaderNameValue>,
}

/// One `{name, value}` entry of `http_rewrite` (`value` unused for removals, as upstream).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HeaderNameValue {
    pub name: String,
    pub value: String,
}

/// Route services (A.10), validated; `Some` in [`Config::route_services`] iff
/// `route_services_secret` is set.
#[derive(Debug, Clone)]
pub struct RouteServicesSettings {
    pub secret: String,
    /// `route_services_secret_decrypt_only`: the previous secret, still accepted on the way back.
    pub secret_decrypt_only: Option<String>,
    /// `route_services_timeout`: how old a signature may be when the request comes back.
    pub timeout: Duration,
    /// `route_services_recommend_https`: the forwarded URL's scheme is `https` (else `http`).
    pub recommend_https: bool,
    /// `route_services_hairpinning`: a route service that is a route in the table is reached
    /// through the internal server instead of over the network.
    pub hairpinning: bool,
    /// `route_services_hairpinning_allowlist`: lowercased FQDNs and `*.domain` wildcards; empty
    /// allows every route.
    pub hairpinning_allowlist: Vec<String>,
    /// `route_services_internal_server_port` (127.0.0.1; 0 picks a free port).
    pub internal_server_port: u16,
    /// Tries per route-service request, at least 1 (3 when the key is absent or 0: upstream's
    /// 0 crashes the proxy, cautions.md).
    pub max_attempts: usize,
    /// `route_services.cert_chain` / `private_key`, presented to route services that ask.
    pub client_cert: Option<CertKeyPair>,
    /// `route_services.strict_signature_validation`.
    pub strict_signature_validation: bool,
    /// `skip_ssl_validation`: route services' certificates are not verified.
    pub skip_ssl_validation: bool,
    /// TLS versions offered to route services (upstream's `min_tls_version`/`max_tls_version`).
    pub min_tls_version: TlsVersion,
    pub max_tls_version: TlsVersion,
}

#[derive(Debug, Clone, Default)]
pub struct AccessLogConfig {
    pub file: String,
}

raw_layer! {
    struct RawAccessLog => AccessLogConfig { file: String }
}

#[derive(Debug, Clone, Default)]
pub struct TracingConfig {
    pub enable_zipkin: bool,
    pub enable_w3c: bool,
    pub w3c_tenant_id: String,
}

raw_layer! {
    struct RawTracing => TracingConfig {
        enable_zipkin: bool,
        enable_w3c: bool,
        w3c_tenant_id: String,
    }
}

/// `logging.format.*`.
#[derive(Debug, Clone)]
pub struct LoggingFormatConfig {
    /// `rfc3339` or `unix-epoch` (the default); upstream treats any other value as
    /// `unix-epoch`.
    pub timestamp: String,
}

impl Default for LoggingFormatConfig {
    fn default() -> Self {
        Self {
            timestamp: "unix-epoch".into(),
        }
    }
}

raw_layer! {
    struct RawLoggingFormat => LoggingFormatConfig { timestamp: String }
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// One of `debug`, `info`, `warn`, `error`, `fatal` once validated (upstream's zap level
    /// names in either case; empty is `info`, `dpanic` and `panic` are `error`).
    pub level: String,
    pub disable_log_forwarded_for: bool,
    pub disable_log_source_ip: bool,
    pub format: LoggingFormatConfig,
    /// Log timestamps as RFC 3339 text (`logging.format.timestamp: rfc3339`) instead of
    /// seconds since the epoch as a float (anything else, upstream's default `unix-epoch`).
    pub timestamp_rfc3339: bool,
    /// `logging.syslog`: the log lines' `source` (BOSH renders `vcap.gorouter`); empty means
    /// upstream's `gorouter.stdout`. Lines go to stdout either way.
    pub syslog: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            syslog: String::new(),
            level: "debug".into(),
            disable_log_forwarded_for: false,
            disable_log_source_ip: false,
            format: LoggingFormatConfig::default(),
            timestamp_rfc3339: false,
        }
    }
}

raw_layer! {
    struct RawLogging => LoggingConfig {
        level: String,
        syslog: String,
        disable_log_forwarded_for: bool,
        disable_log_source_ip: bool;
        nested format: RawLoggingFormat,
    }
}

/// Every key as the file has it, defaults filled in; [`Config::validate`] turns it into
/// [`Config`].
#[derive(Debug)]
struct Settings {
    port: u16,
    index: u32,
    zone: String,
    status: StatusConfig,
    prometheus: PrometheusSettings,
    per_request_metrics_reporting: bool,
    per_app_prometheus_http_metrics_reporting: bool,
    nats: NatsConfig,
    routing_api: RoutingApiConfig,
    oauth: OAuthConfig,
    logging: LoggingConfig,
    access_log: AccessLogConfig,
    tracing: TracingConfig,
    backends: BackendsConfig,
    route_services: RouteServicesConfig,
    route_services_secret: String,
    route_services_secret_decrypt_only: String,
    route_services_timeout: GoDuration,
    route_services_recommend_https: bool,
    route_services_hairpinning: bool,
    route_services_hairpinning_allowlist: Vec<String>,
    route_services_internal_server_port: u16,
    skip_ssl_validation: bool,
    http_rewrite: HttpRewriteConfig,
    html_error_template_file: String,
    droplet_stale_threshold: GoDuration,
    prune_stale_droplets_interval: GoDuration,
    start_response_delay_interval: GoDuration,
    suspend_pruning_if_nats_unavailable: bool,
    endpoint_timeout: GoDuration,
    endpoint_dial_timeout: GoDuration,
    websocket_dial_timeout: GoDuration,
    nats_client_ping_interval: GoDuration,
    token_fetcher_max_retries: u32,
    token_fetcher_retry_interval: GoDuration,
    token_fetcher_expiration_buffer_time: i64,
    balancing_algorithm: String,
    empty_pool_response_code_503: bool,
    empty_pool_timeout: GoDuration,
    sticky_session_cookie_names: Vec<String>,
    secure_cookies: bool,
    trace_key: String,
    /// The HTTPS listener's keys (validated into [`Config::frontend_tls`]).
    enable_ssl: bool,
    ssl_port: u16,
    disable_http: bool,
    tls_pem: Vec<TlsPem>,
    min_tls_version: String,
    max_tls_version: String,
    cipher_suites: String,
    client_cert_validation: String,
    client_ca_certs: String,
    only_trust_client_ca_certs: bool,
    ca_certs: PemList,
    tls_handshake_timeout: GoDuration,
    enable_http2: bool,
    enable_proxy: bool,
    enable_verify_client_certificate_metadata: bool,
    /// Only counted: the rules themselves are not implemented (refused when enabled).
    verify_client_certificate_metadata: Vec<serde::de::IgnoredAny>,
    force_forwarded_proto_https: bool,
    sanitize_forwarded_proto: bool,
    forwarded_client_cert: String,
    hop_by_hop_headers_to_filter: Vec<String>,
    /// Upstream's key; `max_header_bytes` is what BOSH renders (both read, this one first).
    max_request_header_bytes: Option<i64>,
    max_header_bytes: i64,
    healthcheck_user_agent: String,
    drain_wait: GoDuration,
    drain_timeout: GoDuration,
    frontend_idle_timeout: GoDuration,
    /// Upstream's key (0 there: no limit); absent here: our finite default.
    read_header_timeout: Option<GoDuration>,
    /// Not an upstream key: idle websocket tunnels are closed; 0 = `frontend_idle_timeout`.
    websocket_idle_timeout: GoDuration,
    /// Not an upstream key: idle backend connections are closed after this; 0 = Go's 90 s.
    backend_idle_timeout: GoDuration,
    /// Not an upstream key: client connections at once; 0 = half the open-files limit.
    max_client_connections: i64,
    disable_keep_alives: bool,
    max_idle_conns: i64,
    max_idle_conns_per_host: i64,
    extra_headers_to_log: Vec<String>,
    isolation_segments: Vec<String>,
    routing_table_sharding_mode: String,
    /// Not an upstream key: the address announced in `router.start` (upstream finds the local
    /// IP); empty = discover.
    ip: String,
    /// Not an upstream key: the address the proxy listener binds; empty = all interfaces.
    bind_address: String,
}

const fn secs(n: u64) -> GoDuration {
    GoDuration(Duration::from_secs(n))
}

impl Default for Settings {
    /// Upstream's `DefaultConfig()` (config/config.go).
    fn default() -> Self {
        Self {
            port: 8081,
            index: 0,
            zone: String::new(),
            status: StatusConfig::default(),
            prometheus: PrometheusSettings::default(),
            per_request_metrics_reporting: true,
            per_app_prometheus_http_metrics_reporting: false,
            nats: NatsConfig::default(),
            routing_api: RoutingApiConfig::default(),
            oauth: OAuthConfig::default(),
            logging: LoggingConfig::default(),
            access_log: AccessLogConfig::default(),
            tracing: TracingConfig::default(),
            backends: BackendsConfig::default(),
            route_services: RouteServicesConfig::default(),
            route_services_secret: String::new(),
            route_services_secret_decrypt_only: String::new(),
            route_services_timeout: secs(60),
            route_services_recommend_https: false,
            route_services_hairpinning: false,
            route_services_hairpinning_allowlist: Vec::new(),
            route_services_internal_server_port: 7070,
            skip_ssl_validation: false,
            http_rewrite: HttpRewriteConfig::default(),
            html_error_template_file: String::new(),
            droplet_stale_threshold: secs(120),
            prune_stale_droplets_interval: secs(30),
            start_response_delay_interval: secs(5),
            suspend_pruning_if_nats_unavailable: false,
            endpoint_timeout: secs(60),
            endpoint_dial_timeout: secs(5),
            websocket_dial_timeout: GoDuration(Duration::ZERO),
            nats_client_ping_interval: secs(20),
            token_fetcher_max_retries: 3,
            token_fetcher_retry_interval: secs(5),
            token_fetcher_expiration_buffer_time: 30,
            balancing_algorithm: "round-robin".into(),
            empty_pool_response_code_503: false,
            empty_pool_timeout: GoDuration(Duration::ZERO),
            sticky_session_cookie_names: vec!["JSESSIONID".into()],
            secure_cookies: false,
            trace_key: String::new(),
            enable_ssl: false,
            ssl_port: 443,
            disable_http: false,
            tls_pem: Vec::new(),
            min_tls_version: String::new(),
            max_tls_version: String::new(),
            cipher_suites: String::new(),
            // Upstream's code has no default (an absent value is an error with enable_ssl);
            // BOSH's default is `request`, which is what an absent key means here.
            client_cert_validation: "request".into(),
            client_ca_certs: String::new(),
            only_trust_client_ca_certs: false,
            ca_certs: PemList::default(),
            tls_handshake_timeout: secs(10),
            enable_http2: true,
            enable_proxy: false,
            enable_verify_client_certificate_metadata: false,
            verify_client_certificate_metadata: Vec::new(),
            force_forwarded_proto_https: false,
            sanitize_forwarded_proto: false,
            forwarded_client_cert: "always_forward".into(),
            hop_by_hop_headers_to_filter: Vec::new(),
            max_request_header_bytes: None,
            max_header_bytes: 0,
            healthcheck_user_agent: "HTTP-Monitor/1.1".into(),
            drain_wait: GoDuration(Duration::ZERO),
            drain_timeout: GoDuration(Duration::ZERO),
            frontend_idle_timeout: secs(900),
            read_header_timeout: None,
            websocket_idle_timeout: GoDuration(Duration::ZERO),
            backend_idle_timeout: GoDuration(Duration::ZERO),
            max_client_connections: 0,
            disable_keep_alives: true,
            max_idle_conns: 100,
            max_idle_conns_per_host: 2,
            extra_headers_to_log: Vec::new(),
            isolation_segments: Vec::new(),
            routing_table_sharding_mode: "all".into(),
            ip: String::new(),
            bind_address: String::new(),
        }
    }
}

raw_layer! {
    struct RawConfig => Settings {
        port: u16,
        index: u32,
        zone: String,
        droplet_stale_threshold: GoDuration,
        prune_stale_droplets_interval: GoDuration,
        start_response_delay_interval: GoDuration,
        suspend_pruning_if_nats_unavailable: bool,
        endpoint_timeout: GoDuration,
        endpoint_dial_timeout: GoDuration,
        websocket_dial_timeout: GoDuration,
        nats_client_ping_interval: GoDuration,
        token_fetcher_max_retries: u32,
        token_fetcher_retry_interval: GoDuration,
        token_fetcher_expiration_buffer_time: i64,
        balancing_algorithm: String,
        empty_pool_response_code_503: bool,
        empty_pool_timeout: GoDuration,
        secure_cookies: bool,
        trace_key: String,
        enable_ssl: bool,
        ssl_port: u16,
        disable_http: bool,
        min_tls_version: String,
        max_tls_version: String,
        cipher_suites: String,
        client_cert_validation: String,
        client_ca_certs: String,
        only_trust_client_ca_certs: bool,
        tls_handshake_timeout: GoDuration,
        enable_http2: bool,
        enable_proxy: bool,
        enable_verify_client_certificate_metadata: bool,
        force_forwarded_proto_https: bool,
        sanitize_forwarded_proto: bool,
        forwarded_client_cert: String,
        max_request_header_bytes: Option<i64>,
        max_header_bytes: i64,
        healthcheck_user_agent: String,
        drain_wait: GoDuration,
        drain_timeout: GoDuration,
        frontend_idle_timeout: GoDuration,
        read_header_timeout: Option<GoDuration>,
        websocket_idle_timeout: GoDuration,
        backend_idle_timeout: GoDuration,
        max_client_connections: i64,
        disable_keep_alives: bool,
        max_idle_conns: i64,
        max_idle_conns_per_host: i64,
        routing_table_sharding_mode: String,
        route_services_secret: String,
        route_services_secret_decrypt_only: String,
        route_services_timeout: GoDuration,
        route_services_recommend_https: bool,
        route_services_hairpinning: bool,
        route_services_internal_server_port: u16,
        skip_ssl_validation: bool,
        html_error_template_file: String,
        ip: String,
        bind_address: String,
        per_request_metrics_reporting: bool,
        per_app_prometheus_http_metrics_reporting: bool;
        nested
        status: RawStatus,
        prometheus: RawPrometheus,
        nats: RawNats,
        routing_api: RawRoutingApi,
        oauth: RawOAuth,
        logging: RawLogging,
        access_log: RawAccessLog,
        tracing: RawTracing,
        backends: RawBackends,
        route_services: RawRouteServices;
        lists
        tls_pem: Vec<TlsPem>,
        ca_certs: PemList,
        verify_client_certificate_metadata: Vec<serde::de::IgnoredAny>,
        sticky_session_cookie_names: Vec<String>,
        hop_by_hop_headers_to_filter: Vec<String>,
        extra_headers_to_log: Vec<String>,
        isolation_segments: Vec<String>,
        route_services_hairpinning_allowlist: Vec<String>,
        http_rewrite: HttpRewriteConfig,
    }
}

/// One `tls_pem` entry: a certificate chain and its key, inline PEM.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct TlsPem {
    cert_chain: String,
    private_key: String,
}

/// `ca_certs`: upstream's list of PEM strings; a single string (one bundle) is accepted too.
#[derive(Debug, Clone, Default)]
struct PemList(Vec<String>);

impl<'de> Deserialize<'de> for PemList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<Option<String>>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => PemList(vec![s]),
            // A null item is an empty string, as yaml.v3 decodes it into a Go string.
            OneOrMany::Many(v) => PemList(v.into_iter().map(Option::unwrap_or_default).collect()),
        })
    }
}

/// `client_cert_validation`: whether the HTTPS listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertValidation {
    /// Not asked for (Go's `NoClientCert`).
    None,
    /// Asked for; a client may send none, but a certificate it sends must verify (Go's
    /// `VerifyClientCertIfGiven`).
    Request,
    /// Required and verified (Go's `RequireAndVerifyClientCert`).
    Require,
}

/// The HTTPS listener's validated settings (`enable_ssl: true`).
#[derive(Debug, Clone)]
pub struct FrontendTls {
    /// `tls_pem`, in order: chosen by SNI, the first one when nothing matches.
    pub certificates: Vec<CertKeyPair>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// The TLS 1.2 suites `cipher_suites` selects (TLS 1.3 suites are always on).
    pub cipher_suites: Vec<SupportedCipherSuite>,
    pub client_cert_validation: ClientCertValidation,
    /// CAs client certificates are verified against besides the system roots:
    /// `client_ca_certs`, and (unless `only_trust_client_ca_certs`) `ca_certs`.
    pub client_ca_certs: Vec<CertificateDer<'static>>,
    /// Leave the system roots out of the client-certificate trust store.
    pub only_trust_client_ca_certs: bool,
}

/// What the router uses when it dials TLS backends (A.11).
#[derive(Debug, Clone, Default)]
pub struct BackendTls {
    /// `ca_certs`, trusted together with the system roots.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// `backends.cert_chain` / `backends.private_key`, presented when a backend asks.
    pub client_cert: Option<CertKeyPair>,
    /// `cipher_suites` when `enable_ssl` is on (upstream's backend transport gets the parsed
    /// list, which exists only then); `None` is rustls's defaults.
    pub cipher_suites: Option<Vec<SupportedCipherSuite>>,
}

/// The `/health` listener over TLS (`status.tls`).
#[derive(Debug, Clone)]
pub struct StatusTls {
    pub port: u16,
    pub certificate: CertKeyPair,
}

/// Mutual TLS to NATS (`nats.tls_enabled`).
#[derive(Debug, Clone)]
pub struct NatsTls {
    /// `nats.ca_certs`: the only CAs NATS servers are checked against (no system roots, as
    /// upstream's pool holds only these).
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// `nats.cert_chain` / `nats.private_key`.
    pub client_cert: CertKeyPair,
}

/// Everything TLS, validated.
struct TlsSettings {
    /// `min_tls_version`, `max_tls_version`.
    versions: (TlsVersion, TlsVersion),
    frontend: Option<FrontendTls>,
    backend: BackendTls,
    status: Option<StatusTls>,
    nats: Option<NatsTls>,
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// A PEM error with upstream's message prefix (`Error loading key pair: `) before the reason.
fn prefixed(prefix: &str) -> impl Fn(TlsError) -> ConfigError + '_ {
    move |e| match ConfigError::from(e) {
        ConfigError::InvalidAt { key, message } => ConfigError::InvalidAt {
            key,
            message: format!("{prefix}{message}"),
        },
        other => other,
    }
}

/// A certificate chain and key given together or not at all (BOSH's rule for these pairs;
/// upstream's code silently drops half a pair).
fn optional_pair(
    prefix: &str,
    cert_chain: &str,
    private_key: &str,
) -> Result<Option<CertKeyPair>, ConfigError> {
    let cert_key = format!("{prefix}.cert_chain");
    let key_key = format!("{prefix}.private_key");
    match (cert_chain.trim().is_empty(), private_key.trim().is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(CertKeyPair::from_pem(
            &cert_key,
            &key_key,
            cert_chain,
            private_key,
        )?)),
        _ => Err(ConfigError::InvalidAt {
            key: cert_key,
            message: format!(
                "{prefix}.cert_chain and {prefix}.private_key must be both provided or not at all"
            ),
        }),
    }
}

/// `min_tls_version` / `max_tls_version` (both TLS 1.2 when absent, as upstream's): the HTTPS
/// listener's versions and those offered to route services.
fn tls_versions(
    raw: &Settings,
    warnings: &mut Vec<String>,
) -> Result<(TlsVersion, TlsVersion), ConfigError> {
    let min_version = match raw.min_tls_version.as_str() {
        "" => TlsVersion::Tls12,
        name => TlsVersion::from_name(name).ok_or_else(|| {
            invalid(
                "min_tls_version",
                r#"router.min_tls_version should be one of "", "TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1.0""#,
            )
        })?,
    };
    if min_version < TlsVersion::Tls12 {
        warnings.push(format!(
            "config key `min_tls_version` is {}: this router speaks TLS 1.2 and 1.3 only, so TLSv1.2 is the minimum",
            min_version.name()
        ));
    }
    let max_version = match raw.max_tls_version.as_str() {
        // Upstream's default maximum is TLS 1.2 (config.go, and the BOSH job's spec).
        "TLSv1.3" => TlsVersion::Tls13,
        "" | "TLSv1.2" => TlsVersion::Tls12,
        _ => {
            return Err(invalid(
                "max_tls_version",
                r#"router.max_tls_version should be one of "TLSv1.2" or "TLSv1.3""#,
            ))
        }
    };
    if min_version > max_version {
        return Err(invalid(
            "min_tls_version",
            format!(
                "{} is above max_tls_version {}: no TLS version would be left",
                min_version.name(),
                max_version.name()
            ),
        ));
    }
    Ok((min_version, max_version))
}

/// Upstream's TLS checks (config.go `Process`), in its order and with its messages: the
/// backend client certificate, NATS, `status.tls`, the HTTPS listener (`enable_ssl`,
/// `tls_pem`, versions, `cipher_suites`, `client_cert_validation`), `disable_http`, then the
/// CA pools. Every PEM is parsed here, so a bad one stops the router at start, naming its key.
fn tls_settings(raw: &Settings, warnings: &mut Vec<String>) -> Result<TlsSettings, ConfigError> {
    let backend_client_cert = optional_pair(
        "backends",
        &raw.backends.cert_chain,
        &raw.backends.private_key,
    )?;

    let nats = if raw.nats.tls_enabled {
        let client_cert = CertKeyPair::from_pem(
            "nats.cert_chain",
            "nats.private_key",
            &raw.nats.cert_chain,
            &raw.nats.private_key,
        )
        .map_err(prefixed("Error loading NATS key pair: "))?;
        let ca_certs = pem::parse_certs("nats.ca_certs", &raw.nats.ca_certs).map_err(prefixed(
            "Error while adding CACerts to gorouter's NATS cert pool: ",
        ))?;
        Some(NatsTls {
            ca_certs,
            client_cert,
        })
    } else {
        None
    };

    let status_tls = &raw.status.tls;
    let default_status_tls = StatusTlsConfig::default();
    if *status_tls == default_status_tls && !raw.status.enable_nontls_health_checks {
        return Err(invalid(
            "status.enable_nontls_health_checks",
            "Neither TLS nor non-TLS health endpoints are enabled. Refusing to start gorouter.",
        ));
    }
    let status = if *status_tls != default_status_tls {
        if status_tls.key.is_empty() {
            return Err(invalid(
                "status.tls.key",
                "router.status.tls.key must be provided",
            ));
        }
        if status_tls.certificate.is_empty() {
            return Err(invalid(
                "status.tls.certificate",
                "router.status.tls.certificate must be provided",
            ));
        }
        if status_tls.port == 0 {
            return Err(invalid(
                "status.tls.port",
                "router.status.tls.port must not be 0",
            ));
        }
        let certificate = CertKeyPair::from_pem(
            "status.tls.certificate",
            "status.tls.key",
            &status_tls.certificate,
            &status_tls.key,
        )
        .map_err(prefixed(
            "Error loading router.status.tls certificate/key pair: ",
        ))?;
        Some(StatusTls {
            port: status_tls.port,
            certificate,
        })
    } else {
        None
    };

    let mut ca_certs = Vec::new();
    for (i, text) in raw.ca_certs.0.iter().enumerate() {
        // BOSH drops blank entries before rendering; an empty string adds nothing.
        ca_certs.extend(
            pem::parse_ca_bundle(&format!("ca_certs[{i}]"), text).map_err(prefixed(&format!(
                "Error while adding {i} cert in CACerts to gorouter's cert pool: "
            )))?,
        );
    }
    let client_ca_only = pem::parse_ca_bundle("client_ca_certs", &raw.client_ca_certs).map_err(
        prefixed("Error while adding ClientCACerts to gorouter's client cert pool: "),
    )?;

    let versions = tls_versions(raw, warnings)?;
    let frontend = if raw.enable_ssl {
        let client_cert_validation =
            match raw.client_cert_validation.as_str() {
                "none" => ClientCertValidation::None,
                "request" => ClientCertValidation::Request,
                "require" => ClientCertValidation::Require,
                _ => return Err(invalid(
                    "client_cert_validation",
                    "router.client_cert_validation must be one of 'none', 'request' or 'require'.",
                )),
            };
        let (min_version, max_version) = versions;
        if raw.tls_pem.is_empty() {
            return Err(invalid(
                "tls_pem",
                "router.tls_pem must be provided if router.enable_ssl is set to true",
            ));
        }
        let mut certificates = Vec::with_capacity(raw.tls_pem.len());
        for (i, p) in raw.tls_pem.iter().enumerate() {
            if p.cert_chain.is_empty() || p.private_key.is_empty() {
                return Err(invalid(
                    "tls_pem",
                    "Error parsing PEM blocks of router.tls_pem, missing cert or key.",
                ));
            }
            let pair = CertKeyPair::from_pem(
                &format!("tls_pem[{i}].cert_chain"),
                &format!("tls_pem[{i}].private_key"),
                &p.cert_chain,
                &p.private_key,
            )
            .map_err(prefixed("Error loading key pair: "))?;
            certificates.push(pair);
        }
        let cipher_suites = ciphers::parse_cipher_suites(&raw.cipher_suites)
            .map_err(|message| invalid("cipher_suites", message))?;
        if cipher_suites.is_empty() && min_version <= TlsVersion::Tls12 {
            warnings.push(
                "config key `cipher_suites` names no TLS 1.2 suite: only TLS 1.3 clients can connect".into(),
            );
        }
        if raw.only_trust_client_ca_certs
            && client_ca_only.is_empty()
            && client_cert_validation != ClientCertValidation::None
        {
            return Err(invalid(
                "client_ca_certs",
                "router.client_ca_certs cannot be empty if router.only_trust_client_ca_certs is 'true' and router.client_cert_validation is set to 'request' or 'require'.",
            ));
        }
        if raw.enable_verify_client_certificate_metadata
            && !raw.verify_client_certificate_metadata.is_empty()
        {
            return Err(invalid(
                "enable_verify_client_certificate_metadata",
                "client certificate subject rules (verify_client_certificate_metadata) are not supported by this router; set enable_verify_client_certificate_metadata to false",
            ));
        }
        // Upstream's binary trusts client_ca_certs (plus the system roots unless
        // only_trust_client_ca_certs), never ca_certs: the BOSH template is what appends the
        // backend CAs to client_ca_certs, so a rendered config still carries them.
        let client_ca_certs = client_ca_only.clone();
        Some(FrontendTls {
            certificates,
            min_version,
            max_version,
            cipher_suites,
            client_cert_validation,
            client_ca_certs,
            only_trust_client_ca_certs: raw.only_trust_client_ca_certs,
        })
    } else {
        if raw.disable_http {
            return Err(invalid(
                "disable_http",
                format!(
                    "neither http nor https listener is enabled: router.enable_ssl: {}, router.disable_http: {}",
                    raw.enable_ssl, raw.disable_http
                ),
            ));
        }
        None
    };

    let backend = BackendTls {
        ca_certs,
        client_cert: backend_client_cert,
        cipher_suites: frontend.as_ref().map(|f| f.cipher_suites.clone()),
    };
    Ok(TlsSettings {
        versions,
        frontend,
        backend,
        status,
        nats,
    })
}

/// Route-service settings (A.10); `None` when `route_services_secret` is empty. Keys that
/// only matter with route services on are still checked when they are off, so a typo never
/// waits for the day the secret is set.
fn route_services_settings(
    raw: &Settings,
    versions: (TlsVersion, TlsVersion),
) -> Result<Option<RouteServicesSettings>, ConfigError> {
    let max_attempts = match raw.route_services.max_attempts {
        n if n < 0 => {
            return Err(invalid(
                "route_services.max_attempts",
                format!("{n} must not be negative"),
            ))
        }
        // Upstream's 0 crashes every route-service request (cautions.md): 0 is "unset".
        0 => 3,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let client_cert = optional_pair(
        "route_services",
        &raw.route_services.cert_chain,
        &raw.route_services.private_key,
    )?;
    let mut hairpinning_allowlist = Vec::new();
    for (i, entry) in raw.route_services_hairpinning_allowlist.iter().enumerate() {
        let entry = entry.to_ascii_lowercase();
        if !is_allowlist_entry(&entry) {
            return Err(ConfigError::InvalidAt {
                key: format!("route_services_hairpinning_allowlist[{i}]"),
                message: format!(
                    "invalid route service hairpinning allowlist entry: {entry}. Must be wildcard (*.domain.com) or FQDN (hostname.domain.com)"
                ),
            });
        }
        hairpinning_allowlist.push(entry);
    }
    if raw.route_services_timeout.0.is_zero() {
        return Err(invalid(
            "route_services_timeout",
            "must be above 0: every signature would be expired",
        ));
    }
    if raw.route_services_secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(RouteServicesSettings {
        secret: raw.route_services_secret.clone(),
        secret_decrypt_only: Some(raw.route_services_secret_decrypt_only.clone())
            .filter(|s| !s.is_empty()),
        timeout: raw.route_services_timeout.0,
        recommend_https: raw.route_services_recommend_https,
        hairpinning: raw.route_services_hairpinning,
        hairpinning_allowlist,
        internal_server_port: raw.route_services_internal_server_port,
        max_attempts,
        client_cert,
        strict_signature_validation: raw.route_services.strict_signature_validation,
        skip_ssl_validation: raw.skip_ssl_validation,
        min_tls_version: versions.0,
        max_tls_version: versions.1,
    }))
}

/// Upstream's allow-list entry rule: `*.domain.tld` or `host.domain.tld` (letters, digits,
/// hyphens; at least two labels after an optional `*.`).
fn is_allowlist_entry(entry: &str) -> bool {
    let rest = entry.strip_prefix("*.").unwrap_or(entry);
    let labels: Vec<&str> = rest.split('.').collect();
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
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
    /// Route services are enabled iff `route_services_secret` is non-empty; without them a
    /// route bound to a route service is refused (502 `route_service_unsupported`), never
    /// proxied to the app.
    pub route_services: Option<RouteServicesSettings>,
    /// `http_rewrite.responses`, applied to every response.
    pub http_rewrite: HttpRewriteConfig,
    /// `html_error_template_file`: router errors are rendered through it (read and parsed at
    /// start).
    pub html_error_template_file: Option<std::path::PathBuf>,
    pub droplet_stale_threshold: Duration,
    pub prune_stale_droplets_interval: Duration,
    pub start_response_delay_interval: Duration,
    pub suspend_pruning_if_nats_unavailable: bool,
    pub endpoint_timeout: Duration,
    pub endpoint_dial_timeout: Duration,
    pub websocket_dial_timeout: Duration,
    /// NATS client ping interval; also how often `nats-connection-still-disconnected` is
    /// logged during an outage.
    pub nats_client_ping_interval: Duration,
    /// Extra UAA token attempts after a failure, and the wait between them.
    pub token_fetcher_max_retries: u32,
    pub token_fetcher_retry_interval: Duration,
    /// How long before its expiry a token is replaced.
    pub token_fetcher_expiration_buffer: Duration,
    pub balancing_algorithm: BalancingAlgorithm,
    /// Where `/metrics` is served (`prometheus.*`); `None` when `prometheus.port` is 0.
    pub prometheus: Option<prometheus_endpoint::Endpoint>,
    /// What the request path measures for `/metrics`.
    pub metrics: crate::metrics::MetricsSettings,
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
    /// `read_header_timeout`: an HTTP/1 request head must arrive within this from its first
    /// byte, and a connection's first head within this from the connection's start (the wait
    /// between keep-alive requests is `frontend_idle_timeout`'s).
    /// Absent: [`DEFAULT_READ_HEADER_TIMEOUT`]; 0 (upstream's default, no limit): only
    /// `frontend_idle_timeout` bounds the head.
    pub read_header_timeout: Duration,
    /// `websocket_idle_timeout` (ours): a websocket tunnel with no byte either way for this
    /// long is closed; absent or 0: `frontend_idle_timeout`.
    pub websocket_idle_timeout: Duration,
    /// `backend_idle_timeout` (ours): a keep-alive connection to a backend or route service
    /// idle for this long is closed (upstream hard-codes Go's `IdleConnTimeout`, 90 s);
    /// absent or 0: [`DEFAULT_BACKEND_IDLE_TIMEOUT`].
    pub backend_idle_timeout: Duration,
    /// `max_client_connections` (ours): client connections open at once on the proxy
    /// listeners; at the cap new connections wait in the kernel's backlog. `None` (absent or
    /// 0): half the open-files limit, which the router computes at start.
    pub max_client_connections: Option<usize>,
    /// No connection reuse to backends, and `Connection: close` on every backend request (Go's
    /// `Transport.DisableKeepAlives`). Upstream's code default is true; BOSH renders false.
    pub disable_keep_alives: bool,
    pub max_idle_conns: usize,
    /// Idle connections kept per backend; 0 in the file is Go's default, 2.
    pub max_idle_conns_per_host: usize,
    pub extra_headers_to_log: Vec<String>,
    pub isolation_segments: Vec<String>,
    /// `routing_table_sharding_mode` as written (`all`, `segments`, `shared-and-segments`).
    pub routing_table_sharding_mode: String,
    pub sharding: ShardingMode,
    /// The address announced in `router.start` and `X-Vcap-Router`.
    pub ip: IpAddr,
    /// The address the proxy listener binds (`bind_address`, ours); `None` is all interfaces.
    pub bind_address: Option<IpAddr>,
    /// `ssl_port`: the HTTPS listener's port (when `enable_ssl`).
    pub ssl_port: u16,
    pub enable_ssl: bool,
    /// No plain HTTP listener on `port` (only with `enable_ssl`).
    pub disable_http: bool,
    /// ALPN `h2` on the HTTPS listener and HTTP/2 to `protocol: http2` backends.
    pub enable_http2: bool,
    /// PROXY protocol (v1/v2) on the proxy listeners.
    pub enable_proxy: bool,
    /// Budget for a TLS handshake with a backend.
    pub tls_handshake_timeout: Duration,
    /// The HTTPS listener's material; `Some` iff `enable_ssl`.
    pub frontend_tls: Option<FrontendTls>,
    /// Trust and client certificate for TLS backends.
    pub backend_tls: BackendTls,
    /// `/health` over TLS on `status.tls.port`; `Some` when `status.tls` is configured.
    pub status_tls: Option<StatusTls>,
    /// Mutual TLS to NATS; `Some` iff `nats.tls_enabled`.
    pub nats_tls: Option<NatsTls>,
    /// Keys the file had that this router does not know, as dotted paths.
    pub unknown_keys: Vec<String>,
    /// Other non-fatal remarks about the file (suspicious values).
    pub warnings: Vec<String>,
}

/// Reads a YAML document into [`Settings`]: upstream's defaults, overlaid with the keys the
/// document has. Also returns the keys it does not know.
fn settings_from_yaml(text: &str) -> Result<(Settings, Vec<String>), yaml_config::YamlError> {
    let (raw, unknown) = yaml_config::from_yaml_reporting_unknown::<RawConfig>(text)?;
    let mut settings = Settings::default();
    raw.over(&mut settings);
    // Every key is an `Option` in the raw form, which serde_ignored marks as a `?` segment.
    let unknown = unknown
        .into_iter()
        .map(|path| {
            path.split('.')
                .filter(|segment| *segment != "?")
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect();
    Ok((settings, unknown))
}

/// `prometheus.*` checked: the listen address parses and the TLS files come together.
fn prometheus_endpoint(
    raw: &PrometheusSettings,
) -> Result<Option<prometheus_endpoint::Endpoint>, ConfigError> {
    let listen_address = listen_ip("prometheus.listen_address", &raw.listen_address)?;
    let block = prometheus_endpoint::PrometheusConfig {
        port: raw.port,
        cert_path: raw.cert_path.clone(),
        key_path: raw.key_path.clone(),
        ca_path: raw.ca_path.clone(),
        listen_address,
    };
    block.endpoint().map_err(|e| ConfigError::Invalid {
        key: "prometheus",
        message: e.to_string(),
    })
}

/// The zap level names upstream accepts (either case, empty = info), mapped onto ours.
fn normalize_level(level: &str) -> Option<&'static str> {
    Some(match level {
        "debug" | "DEBUG" => "debug",
        "info" | "INFO" | "" => "info",
        "warn" | "WARN" => "warn",
        "error" | "ERROR" | "dpanic" | "DPANIC" | "panic" | "PANIC" => "error",
        "fatal" | "FATAL" => "fatal",
        _ => return None,
    })
}

/// A listen host as Go reads it: empty is all interfaces (`None`), otherwise an IP address.
fn listen_ip(key: &'static str, text: &str) -> Result<Option<IpAddr>, ConfigError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    yaml_config::parse_ip_address(text)
        .map(Some)
        .map_err(|message| ConfigError::Invalid { key, message })
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| yaml_config::LoadError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let (settings, unknown_keys) =
            settings_from_yaml(&text).map_err(|source| yaml_config::LoadError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        Self::validate(settings, unknown_keys)
    }

    /// Parses and validates YAML text. An empty document gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let (settings, unknown_keys) =
            settings_from_yaml(text).map_err(yaml_config::LoadError::from)?;
        Self::validate(settings, unknown_keys)
    }

    fn validate(raw: Settings, unknown_keys: Vec<String>) -> Result<Self, ConfigError> {
        let mut warnings = yaml_config::bare_nanosecond_warnings(&[
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
            ("nats_client_ping_interval", raw.nats_client_ping_interval),
            (
                "token_fetcher_retry_interval",
                raw.token_fetcher_retry_interval,
            ),
            ("drain_wait", raw.drain_wait),
            ("drain_timeout", raw.drain_timeout),
            ("frontend_idle_timeout", raw.frontend_idle_timeout),
            ("tls_handshake_timeout", raw.tls_handshake_timeout),
            (
                "read_header_timeout",
                raw.read_header_timeout
                    .unwrap_or(GoDuration(DEFAULT_READ_HEADER_TIMEOUT)),
            ),
            ("websocket_idle_timeout", raw.websocket_idle_timeout),
            ("backend_idle_timeout", raw.backend_idle_timeout),
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
        let tls = tls_settings(&raw, &mut warnings)?;
        let route_services = route_services_settings(&raw, tls.versions)?;
        let tls_handshake_timeout = nonzero("tls_handshake_timeout", raw.tls_handshake_timeout)?;
        let prune_stale_droplets_interval = nonzero(
            "prune_stale_droplets_interval",
            raw.prune_stale_droplets_interval,
        )?;
        let mut droplet_stale_threshold =
            nonzero("droplet_stale_threshold", raw.droplet_stale_threshold)?;
        let endpoint_timeout = nonzero("endpoint_timeout", raw.endpoint_timeout)?;
        let endpoint_dial_timeout = nonzero("endpoint_dial_timeout", raw.endpoint_dial_timeout)?;
        let frontend_idle_timeout = nonzero("frontend_idle_timeout", raw.frontend_idle_timeout)?;
        let nats_client_ping_interval =
            nonzero("nats_client_ping_interval", raw.nats_client_ping_interval)?;
        let start_response_delay_interval = raw.start_response_delay_interval.0;
        if start_response_delay_interval > droplet_stale_threshold {
            droplet_stale_threshold = start_response_delay_interval;
        }
        let drain_timeout = if raw.drain_timeout.0.is_zero() {
            endpoint_timeout
        } else {
            raw.drain_timeout.0
        };
        let read_header_timeout = raw
            .read_header_timeout
            .map_or(DEFAULT_READ_HEADER_TIMEOUT, |d| d.0);
        let websocket_idle_timeout = if raw.websocket_idle_timeout.0.is_zero() {
            frontend_idle_timeout
        } else {
            raw.websocket_idle_timeout.0
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
        // As upstream's max-request-size handler: below 1 is the 1 MiB default, above it is
        // what Go's server enforces anyway (1 MiB), with a warning.
        if raw.status.enable_deprecated_varz_healthz_endpoints
            && !raw.status.enable_nontls_health_checks
        {
            warnings.push(
                "config key `status.enable_deprecated_varz_healthz_endpoints` needs \
                 `status.enable_nontls_health_checks: true` (the endpoints share that port): \
                 /varz and /healthz are not served"
                    .into(),
            );
        }
        const MAX_HEADER_LIMIT: i64 = 1024 * 1024;
        let (header_key, header_bytes) = match raw.max_request_header_bytes {
            Some(n) => ("max_request_header_bytes", n),
            None => ("max_header_bytes", raw.max_header_bytes),
        };
        let max_header_bytes = match header_bytes {
            n if n < 1 => MAX_HEADER_LIMIT as usize,
            n if n > MAX_HEADER_LIMIT => {
                warnings.push(format!(
                    "config key `{header_key}` is {n}: values over {MAX_HEADER_LIMIT} are limited to {MAX_HEADER_LIMIT} by the HTTP server"
                ));
                MAX_HEADER_LIMIT as usize
            }
            n => n as usize,
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
            match non_negative("max_idle_conns_per_host", raw.max_idle_conns_per_host)? {
                // Go's Transport: 0 means DefaultMaxIdleConnsPerHost.
                0 => 2,
                n => n,
            };
        let mut logging = raw.logging;
        logging.level = normalize_level(&logging.level)
            .ok_or_else(|| ConfigError::Invalid {
                key: "logging.level",
                message: format!(
                    "unknown level {:?}; allowed values are debug, info, warn, error, dpanic, panic, fatal",
                    logging.level
                ),
            })?
            .to_string();
        logging.timestamp_rfc3339 = logging.format.timestamp == "rfc3339";
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
        }
        let bind_address = listen_ip("bind_address", &raw.bind_address)?;
        let ip = match listen_ip("ip", &raw.ip)? {
            Some(ip) => ip,
            None => local_ip(),
        };
        let prometheus = prometheus_endpoint(&raw.prometheus)?;
        if raw.per_app_prometheus_http_metrics_reporting && prometheus.is_none() {
            return Err(ConfigError::Invalid {
                key: "per_app_prometheus_http_metrics_reporting",
                message: "needs prometheus.port: per-app metrics are only served there".into(),
            });
        }
        let meters = &raw.prometheus.meters;
        let metrics = crate::metrics::MetricsSettings {
            per_request: raw.per_request_metrics_reporting,
            per_app: raw.per_app_prometheus_http_metrics_reporting,
            meters: crate::metrics::Meters {
                route_lookup_time: meters.route_lookup_time_histogram_buckets.clone(),
                routing_response_latency: meters.routing_response_latency_histogram_buckets.clone(),
                http_latency: meters.http_latency_histogram_buckets.clone(),
                route_registration_latency: meters
                    .route_registration_latency_histogram_buckets
                    .clone(),
            },
        };
        Ok(Config {
            prometheus,
            metrics,
            port: raw.port,
            index: raw.index,
            zone: raw.zone,
            status: raw.status,
            nats: raw.nats,
            routing_api: raw.routing_api,
            oauth: raw.oauth,
            logging,
            access_log: raw.access_log,
            tracing: raw.tracing,
            max_attempts,
            max_conns,
            route_services,
            http_rewrite: raw.http_rewrite,
            html_error_template_file: Some(raw.html_error_template_file)
                .filter(|f| !f.is_empty())
                .map(std::path::PathBuf::from),
            droplet_stale_threshold,
            prune_stale_droplets_interval,
            start_response_delay_interval,
            suspend_pruning_if_nats_unavailable: raw.suspend_pruning_if_nats_unavailable,
            endpoint_timeout,
            endpoint_dial_timeout,
            websocket_dial_timeout,
            nats_client_ping_interval,
            token_fetcher_max_retries: raw.token_fetcher_max_retries,
            token_fetcher_retry_interval: raw.token_fetcher_retry_interval.0,
            token_fetcher_expiration_buffer: Duration::from_secs(
                u64::try_from(raw.token_fetcher_expiration_buffer_time).unwrap_or(0),
            ),
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
            read_header_timeout,
            websocket_idle_timeout,
            backend_idle_timeout: if raw.backend_idle_timeout.0.is_zero() {
                DEFAULT_BACKEND_IDLE_TIMEOUT
            } else {
                raw.backend_idle_timeout.0
            },
            max_client_connections: match non_negative(
                "max_client_connections",
                raw.max_client_connections,
            )? {
                0 => None,
                n => Some(n),
            },
            disable_keep_alives: raw.disable_keep_alives,
            max_idle_conns,
            max_idle_conns_per_host,
            extra_headers_to_log: raw.extra_headers_to_log,
            isolation_segments: raw.isolation_segments,
            routing_table_sharding_mode: raw.routing_table_sharding_mode,
            sharding,
            ip,
            bind_address,
            ssl_port: raw.ssl_port,
            enable_ssl: raw.enable_ssl,
            disable_http: raw.disable_http,
            enable_http2: raw.enable_http2,
            enable_proxy: raw.enable_proxy,
            tls_handshake_timeout,
            frontend_tls: tls.frontend,
            backend_tls: tls.backend,
            status_tls: tls.status,
            nats_tls: tls.nats,
            unknown_keys,
            warnings,
        })
    }

    /// NATS server URLs, credentials carried separately. An empty host name is this machine
    /// (Go's dialer reads `:4222` as the local system).
    pub fn nats_servers(&self) -> Vec<String> {
        self.nats
            .hosts
            .iter()
            .map(|h| {
                let host = if h.hostname.trim().is_empty() {
                    "localhost"
                } else {
                    h.hostname.trim()
                };
                format!("nats://{host}:{}", h.port)
            })
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

    use crate::tls::test_pki::Ca;

    /// A YAML flow-scalar for PEM text.
    fn q(text: &str) -> String {
        format!("{text:?}")
    }

    #[test]
    fn prometheus_block_is_served_on_loopback_by_default() {
        let c = Config::from_yaml("prometheus: {port: 9100}").unwrap();
        let endpoint = c.prometheus.expect("metrics on");
        assert_eq!(endpoint.addr, "127.0.0.1:9100".parse().unwrap());
        assert!(endpoint.tls.is_none());
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert!(c.metrics.per_request);
        assert!(!c.metrics.per_app);
    }

    #[test]
    fn prometheus_without_port_is_off() {
        let c = Config::from_yaml("per_request_metrics_reporting: false").unwrap();
        assert!(c.prometheus.is_none());
        assert!(!c.metrics.per_request);
    }

    #[test]
    fn prometheus_meters_replace_the_default_buckets() {
        let c = Config::from_yaml(
            "prometheus: {port: 9100, meters: {routing_response_latency_histogram_buckets: [1, 5]}}",
        )
        .unwrap();
        assert_eq!(c.metrics.meters.routing_response_latency, vec![1.0, 5.0]);
        assert_eq!(
            c.metrics.meters.http_latency,
            crate::metrics::Meters::default().http_latency
        );
    }

    #[test]
    fn prometheus_with_a_cert_but_no_key_is_an_error() {
        let err = Config::from_yaml("prometheus: {port: 9100, cert_path: /c.pem}").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("key_path must be set when cert_path is"),
            "{text}"
        );
    }

    #[test]
    fn deprecated_varz_without_the_plain_status_port_is_a_warning() {
        let ca = Ca::new("status CA");
        let (cert, key) = ca.server(&["a.example"]);
        let c = Config::from_yaml(&format!(
            "status: {{enable_nontls_health_checks: false, enable_deprecated_varz_healthz_endpoints: true, tls: {{certificate: {}, key: {}}}}}\n",
            q(&cert),
            q(&key)
        ))
        .unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("/varz and /healthz are not served")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn per_app_metrics_without_prometheus_is_an_error() {
        let err = Config::from_yaml("per_app_prometheus_http_metrics_reporting: true").unwrap_err();
        assert!(
            err.to_string()
                .contains("per_app_prometheus_http_metrics_reporting"),
            "{err}"
        );
    }

    fn https_yaml(ca: &Ca, extra: &str) -> String {
        let (cert, key) = ca.server(&["a.example"]);
        format!(
            "enable_ssl: true\ncipher_suites: ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256\ntls_pem:\n- cert_chain: {}\n  private_key: {}\n{extra}",
            q(&cert),
            q(&key)
        )
    }

    #[test]
    fn https_listener_keys_are_checked_as_upstream_checks_them() {
        let err = |yaml: &str| Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(err("enable_ssl: true")
            .contains("router.tls_pem must be provided if router.enable_ssl is set to true"));
        assert!(err("enable_ssl: true\ntls_pem: [{cert_chain: x}]").contains("missing cert or key"));
        assert!(err("disable_http: true").contains("neither http nor https listener is enabled"));
        let e = err("enable_ssl: true\ncipher_suites: ECDHE-RSA-AES128-GCM-SHA256\ntls_pem: [{cert_chain: c, private_key: k}]");
        assert!(
            e.contains("`tls_pem[0].cert_chain`") && e.contains("Error loading key pair"),
            "{e}"
        );

        let ca = Ca::new("config-ca");
        let c = Config::from_yaml(&https_yaml(&ca, "disable_http: true\n"))
            .expect("valid HTTPS keys load");
        assert!(c.enable_ssl && c.disable_http);
        assert!(
            !c.warnings.iter().any(|w| w.contains("not supported")),
            "{:?}",
            c.warnings
        );
        let tls = c.frontend_tls.as_ref().expect("frontend TLS");
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.max_version, TlsVersion::Tls12);
        assert_eq!(tls.cipher_suites.len(), 2);
        assert_eq!(tls.client_cert_validation, ClientCertValidation::Request);
        assert_eq!(c.backend_tls.cipher_suites.as_ref().map(Vec::len), Some(2));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn tls_defaults_are_upstreams() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.ssl_port, 443);
        assert!(!c.enable_ssl && !c.disable_http && !c.enable_proxy);
        assert!(c.enable_http2);
        assert_eq!(c.tls_handshake_timeout, Duration::from_secs(10));
        assert!(c.frontend_tls.is_none() && c.status_tls.is_none() && c.nats_tls.is_none());
        assert!(c.backend_tls.ca_certs.is_empty() && c.backend_tls.client_cert.is_none());
        assert!(c.backend_tls.cipher_suites.is_none());
        assert!(c.status.enable_nontls_health_checks);
    }

    #[test]
    fn versions_ciphers_and_client_cert_modes() {
        let ca = Ca::new("config-ca");
        let load = |extra: &str| Config::from_yaml(&https_yaml(&ca, extra));
        let c = load("min_tls_version: TLSv1.0\nmax_tls_version: TLSv1.2\nclient_cert_validation: require\nssl_port: 8443\n").unwrap();
        let tls = c.frontend_tls.as_ref().unwrap();
        assert_eq!(c.ssl_port, 8443);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls10, TlsVersion::Tls12)
        );
        assert_eq!(tls.client_cert_validation, ClientCertValidation::Require);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("min_tls_version") && w.contains("TLSv1.2")),
            "{:?}",
            c.warnings
        );
        for (extra, needle) in [
            ("max_tls_version: TLSv1.1\n", r#"router.max_tls_version should be one of "TLSv1.2" or "TLSv1.3""#),
            ("min_tls_version: SSLv3\n", "router.min_tls_version should be one of"),
            ("min_tls_version: TLSv1.3\nmax_tls_version: TLSv1.2\n", "no TLS version would be left"),
            ("client_cert_validation: always\n", "router.client_cert_validation must be one of 'none', 'request' or 'require'."),
            ("client_cert_validation: request\nonly_trust_client_ca_certs: true\n", "router.client_ca_certs cannot be empty"),
            ("enable_verify_client_certificate_metadata: true\nverify_client_certificate_metadata: [{issuer_in_chain: {common_name: x}}]\n", "not supported"),
        ] {
            let e = load(extra).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let (cert, key) = ca.server(&["a.example"]);
        let e = Config::from_yaml(&format!(
            "enable_ssl: true\ncipher_suites: ECDHE-RSA-AES128-GCM-SHA256:DES-CBC3-SHA\ntls_pem: [{{cert_chain: {}, private_key: {}}}]\n",
            q(&cert),
            q(&key)
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`cipher_suites`") && e.contains("DES-CBC3-SHA"),
            "{e}"
        );
        let e = Config::from_yaml(&format!(
            "enable_ssl: true\ntls_pem: [{{cert_chain: {}, private_key: {}}}]\n",
            q(&cert),
            q(&key)
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("must specify list of cipher suite when ssl is enabled"),
            "{e}"
        );
        // Upstream leaves these keys alone while enable_ssl is off.
        assert!(Config::from_yaml("client_cert_validation: bogus\ncipher_suites: BOGUS\n").is_ok());
    }

    #[test]
    fn ca_certs_take_a_list_or_a_string_and_stay_out_of_client_trust() {
        let ca = Ca::new("config-ca");
        let client_ca = Ca::new("client-ca");
        let c = Config::from_yaml(&format!(
            "ca_certs: [{}, '', {}]\n",
            q(&ca.pem()),
            q(&client_ca.pem())
        ))
        .unwrap();
        assert_eq!(c.backend_tls.ca_certs.len(), 2);
        let c = Config::from_yaml(&format!("ca_certs: {}\n", q(&ca.pem()))).unwrap();
        assert_eq!(c.backend_tls.ca_certs, vec![ca.der()]);
        let e = Config::from_yaml("ca_certs: [junk]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`ca_certs[0]`") && e.contains("Error while adding 0 cert in CACerts"),
            "{e}"
        );
        let e = Config::from_yaml("client_ca_certs: junk\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`client_ca_certs`"), "{e}");

        let extra = format!(
            "client_ca_certs: {}\nca_certs: [{}]\n",
            q(&client_ca.pem()),
            q(&ca.pem())
        );
        let c = Config::from_yaml(&https_yaml(&ca, &extra)).unwrap();
        assert_eq!(
            c.frontend_tls.unwrap().client_ca_certs,
            vec![client_ca.der()],
            "ca_certs are for backends only, as in upstream's binary"
        );
        let c = Config::from_yaml(&https_yaml(
            &ca,
            &format!("{extra}only_trust_client_ca_certs: true\n"),
        ))
        .unwrap();
        let tls = c.frontend_tls.unwrap();
        assert_eq!(tls.client_ca_certs, vec![client_ca.der()]);
        assert!(tls.only_trust_client_ca_certs);
    }

    #[test]
    fn backend_client_certificate() {
        let ca = Ca::new("config-ca");
        let (cert, key) = ca.client("gorouter-backend");
        let c = Config::from_yaml(&format!(
            "backends: {{cert_chain: {}, private_key: {}}}\n",
            q(&cert),
            q(&key)
        ))
        .unwrap();
        assert!(c.backend_tls.client_cert.is_some());
        let e = Config::from_yaml(&format!("backends: {{cert_chain: {}}}\n", q(&cert)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be both provided or not at all"), "{e}");
        let (_, other_key) = ca.client("other");
        let e = Config::from_yaml(&format!(
            "backends: {{cert_chain: {}, private_key: {}}}\n",
            q(&cert),
            q(&other_key)
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`backends.private_key`")
                && e.contains("private key does not match public key"),
            "{e}"
        );
    }

    #[test]
    fn status_tls_is_on_when_configured_and_checked_as_upstream_checks_it() {
        let ca = Ca::new("config-ca");
        let (cert, key) = ca.server(&["127.0.0.1"]);
        let c = Config::from_yaml(&format!(
            "status: {{tls: {{port: 9443, certificate: {}, key: {}}}}}\n",
            q(&cert),
            q(&key)
        ))
        .unwrap();
        let tls = c.status_tls.expect("status TLS");
        assert_eq!(tls.port, 9443);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        for (yaml, needle) in [
            (
                "status: {tls: {port: 1}}\n",
                "router.status.tls.key must be provided",
            ),
            (
                "status: {tls: {key: k}}\n",
                "router.status.tls.certificate must be provided",
            ),
            (
                "status: {enable_nontls_health_checks: false}\n",
                "Neither TLS nor non-TLS health endpoints are enabled",
            ),
            (
                "status: {tls: {port: 8443, certificate: c, key: k}}\n",
                "Error loading router.status.tls certificate/key pair",
            ),
        ] {
            let e = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
        let e = Config::from_yaml(&format!(
            "status: {{tls: {{port: 0, certificate: {}, key: {}}}}}\n",
            q(&cert),
            q(&key)
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("router.status.tls.port must not be 0"), "{e}");
        let c = Config::from_yaml(&format!(
            "status: {{enable_nontls_health_checks: false, tls: {{certificate: {}, key: {}}}}}\n",
            q(&cert),
            q(&key)
        ))
        .unwrap();
        assert!(!c.status.enable_nontls_health_checks);
        assert_eq!(c.status_tls.unwrap().port, 8443);
    }

    #[test]
    fn nats_tls_needs_a_client_certificate_and_a_ca() {
        let ca = Ca::new("nats-ca");
        let (cert, key) = ca.client("gorouter");
        let c = Config::from_yaml(&format!(
            "nats: {{tls_enabled: true, ca_certs: {}, cert_chain: {}, private_key: {}}}\n",
            q(&ca.pem()),
            q(&cert),
            q(&key)
        ))
        .unwrap();
        let tls = c.nats_tls.expect("NATS TLS");
        assert_eq!(tls.ca_certs, vec![ca.der()]);
        let e = Config::from_yaml(&format!(
            "nats: {{tls_enabled: true, ca_certs: {}}}\n",
            q(&ca.pem())
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`nats.cert_chain`") && e.contains("Error loading NATS key pair"),
            "{e}"
        );
        let e = Config::from_yaml(&format!(
            "nats: {{tls_enabled: true, cert_chain: {}, private_key: {}}}\n",
            q(&cert),
            q(&key)
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`nats.ca_certs`"), "{e}");
        // Off: the PEM keys are not looked at.
        assert!(
            Config::from_yaml("nats: {tls_enabled: false, ca_certs: junk}\n")
                .unwrap()
                .nats_tls
                .is_none()
        );
    }

    #[test]
    fn empty_file_gives_upstream_code_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.port, 8081);
        assert_eq!(c.status.host, "0.0.0.0");
        assert_eq!(c.status.port, 8080);
        assert_eq!(c.status.routes.port, 8082);
        assert_eq!(c.status.user, "");
        assert_eq!(c.droplet_stale_threshold, Duration::from_secs(120));
        assert_eq!(c.prune_stale_droplets_interval, Duration::from_secs(30));
        assert_eq!(c.start_response_delay_interval, Duration::from_secs(5));
        assert_eq!(c.endpoint_timeout, Duration::from_secs(60));
        assert_eq!(c.endpoint_dial_timeout, Duration::from_secs(5));
        assert_eq!(c.max_attempts, 1, "backends.max_attempts 0 means one try");
        assert_eq!(c.max_conns, None, "backends.max_conns 0 is unlimited");
        assert!(c.route_services.is_none(), "no secret, no route services");
        assert!(c.html_error_template_file.is_none());
        assert!(!c.empty_pool_response_code_503);
        assert!(!c.suspend_pruning_if_nats_unavailable);
        assert_eq!(c.drain_wait, Duration::ZERO);
        assert_eq!(
            c.drain_timeout, c.endpoint_timeout,
            "drain_timeout 0 = endpoint_timeout"
        );
        assert!(c.disable_keep_alives);
        assert_eq!(c.max_idle_conns, 100);
        assert_eq!(c.max_idle_conns_per_host, 2);
        assert_eq!(c.logging.level, "debug");
        assert!(!c.logging.timestamp_rfc3339, "unix-epoch by default");
        assert_eq!(c.trace_key, None);
        assert_eq!(c.nats_client_ping_interval, Duration::from_secs(20));
        assert_eq!(c.token_fetcher_max_retries, 3);
        assert_eq!(c.token_fetcher_retry_interval, Duration::from_secs(5));
        assert_eq!(c.token_fetcher_expiration_buffer, Duration::from_secs(30));
        assert_eq!(c.max_header_bytes, 1024 * 1024);
        assert_eq!(c.frontend_idle_timeout, Duration::from_secs(900));
        assert_eq!(c.sticky_session_cookie_names, vec!["JSESSIONID"]);
        assert_eq!(c.healthcheck_user_agent, "HTTP-Monitor/1.1");
        assert_eq!(c.bind_address, None, "all interfaces, as upstream");
    }

    /// What config/gorouter.yml and the BOSH job set explicitly still reads as written.
    #[test]
    fn bosh_values_read_as_written() {
        let c = Config::from_yaml(
            r#"
port: 80
start_response_delay_interval: 20s
suspend_pruning_if_nats_unavailable: true
endpoint_timeout: 900s
drain_wait: 20s
drain_timeout: 900s
backends: {max_attempts: 3, max_conns: 500}
route_services: {max_attempts: 3}
empty_pool_response_code_503: true
disable_keep_alives: false
max_idle_conns: 100
max_idle_conns_per_host: 100
max_header_bytes: 1048576
trace_key: "22"
logging: {level: info, format: {timestamp: rfc3339}}
"#,
        )
        .unwrap();
        assert_eq!(c.port, 80);
        assert_eq!(c.start_response_delay_interval, Duration::from_secs(20));
        assert!(c.suspend_pruning_if_nats_unavailable);
        assert_eq!(c.endpoint_timeout, Duration::from_secs(900));
        assert_eq!(c.drain_wait, Duration::from_secs(20));
        assert_eq!(c.drain_timeout, Duration::from_secs(900));
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.max_conns, Some(500));
        assert!(c.empty_pool_response_code_503);
        assert!(!c.disable_keep_alives);
        assert_eq!(c.max_idle_conns_per_host, 100);
        assert_eq!(c.trace_key.as_deref(), Some("22"));
        assert_eq!(c.logging.level, "info");
        assert!(c.logging.timestamp_rfc3339);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    /// yaml.v3 into upstream's pre-filled struct: null keeps a scalar's or a section's default
    /// and empties a list; an empty string is kept as written.
    #[test]
    fn null_and_empty_values_read_as_go_reads_them() {
        let c = Config::from_yaml(
            "port:
status: {host: '', port: ~}
logging:
endpoint_timeout: ~
isolation_segments:
",
        )
        .unwrap();
        assert_eq!(c.port, 8081, "null port keeps the default");
        assert_eq!(c.status.host, "", "empty host is all interfaces");
        assert_eq!(c.status.port, 8080);
        assert_eq!(c.logging.level, "debug", "null section keeps its defaults");
        assert_eq!(c.endpoint_timeout, Duration::from_secs(60));
        assert!(c.isolation_segments.is_empty());
        let c = Config::from_yaml(
            "status: {user: u}
",
        )
        .unwrap();
        assert_eq!(c.status.host, "0.0.0.0", "absent host is 0.0.0.0");
        let c = Config::from_yaml(
            "status:
  host:
",
        )
        .unwrap();
        assert_eq!(c.status.host, "0.0.0.0", "null host keeps 0.0.0.0");
        let c = Config::from_yaml(
            "sticky_session_cookie_names: ~
",
        )
        .unwrap();
        assert!(
            c.sticky_session_cookie_names.is_empty(),
            "null empties a list"
        );
        let c = Config::from_yaml(
            "nats: {hosts: [{hostname: '', port: 4223}]}
",
        )
        .unwrap();
        assert_eq!(
            c.nats_servers(),
            vec!["nats://localhost:4223"],
            "an empty host dials this machine"
        );
        let e = Config::from_yaml(
            "nats: {hosts: ~}
",
        )
        .unwrap_err();
        assert!(e.to_string().contains("nats.hosts"), "{e}");
        let c = Config::from_yaml(
            "logging: {level: ''}
",
        )
        .unwrap();
        assert_eq!(c.logging.level, "info", "zap reads an empty level as info");
        let c = Config::from_yaml(
            "logging: {level: WARN}
",
        )
        .unwrap();
        assert_eq!(c.logging.level, "warn");
        let c = Config::from_yaml(
            "ip: ''
bind_address: ''
",
        )
        .unwrap();
        assert_eq!(c.bind_address, None, "empty bind_address is all interfaces");
        let c = Config::from_yaml(
            "max_header_bytes: 0
",
        )
        .unwrap();
        assert_eq!(c.max_header_bytes, 1024 * 1024);
        let c = Config::from_yaml(
            "max_request_header_bytes: 2000000
",
        )
        .unwrap();
        assert_eq!(c.max_header_bytes, 1024 * 1024, "clamped, with a warning");
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("max_request_header_bytes")));
        let e = Config::from_yaml(
            "port: ''
",
        )
        .unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn logging_timestamp_format() {
        for (text, rfc3339) in [
            ("logging: {format: {timestamp: rfc3339}}", true),
            ("logging: {format: {timestamp: unix-epoch}}", false),
            ("logging: {format: {timestamp: ''}}", false),
            ("logging: {format: {timestamp: deprecated}}", false),
            ("logging: {format: ~}", false),
        ] {
            let c = Config::from_yaml(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.logging.timestamp_rfc3339, rfc3339, "{text}");
        }
    }

    #[test]
    fn oauth_port_minus_one_is_accepted_without_the_routing_api() {
        let c = Config::from_yaml(
            "oauth: {token_endpoint: uaa.service.cf.internal, port: -1, client_name: gorouter}
",
        )
        .unwrap();
        assert!(!c.routing_api.enabled());
        assert_eq!(c.oauth.port, -1);
        assert_eq!(c.oauth.tls_url().unwrap_err(), UAA_TLS_REQUIRED);
        let c = Config::from_yaml(
            "routing_api: {uri: http://127.0.0.1, port: 3000}
oauth: {token_endpoint: uaa, port: 0}
",
        )
        .unwrap();
        assert_eq!(c.oauth.tls_url().unwrap_err(), UAA_TLS_REQUIRED);
        let c = Config::from_yaml(
            "oauth: {token_endpoint: 'http://uaa', port: 8443}
",
        )
        .unwrap();
        assert_eq!(c.oauth.tls_url().unwrap_err(), UAA_TLS_REQUIRED);
        let c = Config::from_yaml(
            "oauth: {token_endpoint: uaa.internal, port: 8443}
",
        )
        .unwrap();
        assert_eq!(c.oauth.tls_url().unwrap(), "https://uaa.internal:8443");
        let c = Config::from_yaml(
            "oauth: {token_endpoint: 'https://uaa/', port: 8443}
",
        )
        .unwrap();
        assert_eq!(c.oauth.tls_url().unwrap(), "https://uaa:8443");
    }

    #[test]
    fn bind_address_is_an_ip_address() {
        let c = Config::from_yaml("bind_address: 127.0.0.1\n").unwrap();
        assert_eq!(c.bind_address, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let c = Config::from_yaml("bind_address: ::1\n").unwrap();
        assert_eq!(c.bind_address, Some("::1".parse::<IpAddr>().unwrap()));
        let c = Config::from_yaml("bind_address: '::'\n").unwrap();
        assert_eq!(c.bind_address, Some("::".parse::<IpAddr>().unwrap()));
        for bad in [
            "bind_address: localhost",
            "bind_address: 127.0.0.1:8081",
            "bind_address: '[::1]'",
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
        let c = Config::from_yaml("port: 81\nroute_service_secret: x\nstatus: {colour: red}\n")
            .unwrap();
        assert_eq!(
            c.unknown_keys,
            vec!["route_service_secret", "status.colour"]
        );
    }

    #[test]
    fn deprecated_varz_healthz_endpoints_are_a_known_key_off_by_default() {
        let c = Config::from_yaml("").unwrap();
        assert!(!c.status.enable_deprecated_varz_healthz_endpoints);
        let c = Config::from_yaml("status: {enable_deprecated_varz_healthz_endpoints: true}\n")
            .unwrap();
        assert!(c.status.enable_deprecated_varz_healthz_endpoints);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn route_service_keys_are_read_with_upstreams_defaults() {
        let c = Config::from_yaml("route_services_secret: s3cret\n").unwrap();
        let rs = c.route_services.unwrap();
        assert_eq!(rs.secret, "s3cret");
        assert_eq!(rs.secret_decrypt_only, None);
        assert_eq!(rs.timeout, Duration::from_secs(60));
        assert!(!rs.recommend_https);
        assert!(!rs.hairpinning);
        assert_eq!(rs.internal_server_port, 7070);
        assert_eq!(rs.max_attempts, 3, "absent means 3, never 0 (cautions.md)");
        assert!(!rs.strict_signature_validation);
        assert!(!rs.skip_ssl_validation);
        assert_eq!(
            (rs.min_tls_version, rs.max_tls_version),
            (TlsVersion::Tls12, TlsVersion::Tls12)
        );
    }

    #[test]
    fn route_service_keys_are_all_known() {
        let c = Config::from_yaml(
            r#"
route_services_secret: new
route_services_secret_decrypt_only: old
route_services_timeout: 5s
route_services_recommend_https: true
route_services_hairpinning: true
route_services_hairpinning_allowlist: ["*.Apps.Test", "rs.other.test"]
route_services_internal_server_port: 0
route_services: {max_attempts: 0, strict_signature_validation: true}
skip_ssl_validation: true
max_tls_version: TLSv1.3
"#,
        )
        .unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let rs = c.route_services.unwrap();
        assert_eq!(rs.secret_decrypt_only.as_deref(), Some("old"));
        assert_eq!(rs.timeout, Duration::from_secs(5));
        assert!(rs.recommend_https && rs.hairpinning && rs.skip_ssl_validation);
        assert_eq!(
            rs.hairpinning_allowlist,
            vec!["*.apps.test", "rs.other.test"]
        );
        assert_eq!(rs.internal_server_port, 0);
        assert_eq!(rs.max_attempts, 3, "max_attempts: 0 is treated as unset");
        assert!(rs.strict_signature_validation);
        assert_eq!(rs.max_tls_version, TlsVersion::Tls13);
    }

    #[test]
    fn a_bad_hairpinning_allowlist_entry_is_a_config_error() {
        for entry in [
            "sub.*.example.com",
            "*.*.example.com",
            "?!.example.com",
            "localhost",
        ] {
            let err = Config::from_yaml(&format!(
                "route_services_hairpinning_allowlist: [{entry:?}]\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("route_services_hairpinning_allowlist[0]")
                    && err.contains("Must be wildcard (*.domain.com) or FQDN"),
                "{entry}: {err}"
            );
        }
    }

    #[test]
    fn negative_route_service_attempts_and_half_a_client_pair_are_config_errors() {
        let err = Config::from_yaml("route_services: {max_attempts: -1}\n").unwrap_err();
        assert!(
            err.to_string().contains("route_services.max_attempts"),
            "{err}"
        );
        let err = Config::from_yaml("route_services: {cert_chain: x}\n").unwrap_err();
        assert!(
            err.to_string().contains("route_services.cert_chain"),
            "{err}"
        );
    }

    #[test]
    fn http_rewrite_and_error_template_keys_are_known() {
        let c = Config::from_yaml(
            r#"
html_error_template_file: /etc/gorouter/error.html
http_rewrite:
  responses:
    remove_headers: [{name: Server}]
    add_headers_if_not_present: [{name: X-A, value: "1"}]
"#,
        )
        .unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert_eq!(
            c.html_error_template_file.as_deref(),
            Some(Path::new("/etc/gorouter/error.html"))
        );
        assert_eq!(c.http_rewrite.responses.remove_headers[0].name, "Server");
        assert_eq!(
            c.http_rewrite.responses.add_headers_if_not_present[0].value,
            "1"
        );
    }

    #[test]
    fn bad_value_names_the_key() {
        let e = Config::from_yaml("balancing_algorithm: random\n").unwrap_err();
        assert!(e.to_string().contains("balancing_algorithm"), "{e}");
        let e = Config::from_yaml("droplet_stale_threshold: soon\n").unwrap_err();
        assert!(e.to_string().contains("droplet_stale_threshold"), "{e}");
        let e = Config::from_yaml("port: 70000\n").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e = Config::from_yaml("logging: {level: verbose}\n").unwrap_err();
        assert!(e.to_string().contains("logging.level"), "{e}");
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
        assert_eq!(
            c.oauth.tls_url().unwrap(),
            "https://uaa.service.cf.internal:8443"
        );
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
        // UAA settings are checked when the route fetcher starts (upstream's
        // initialize-uaa-client / unable-to-fetch-token), not while loading.
        assert!(Config::from_yaml(
            "routing_api: {uri: http://127.0.0.1, port: 3000}
"
        )
        .is_ok());
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

    #[test]
    fn read_header_timeout_is_finite_when_absent_and_zero_leaves_the_idle_timeout() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.read_header_timeout, DEFAULT_READ_HEADER_TIMEOUT);
        let c = Config::from_yaml("read_header_timeout: 0s").unwrap();
        assert_eq!(c.read_header_timeout, Duration::ZERO);
        let c = Config::from_yaml("read_header_timeout: 5s").unwrap();
        assert_eq!(c.read_header_timeout, Duration::from_secs(5));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn client_connection_cap_and_websocket_idle_timeout_are_our_keys() {
        let c = Config::from_yaml("frontend_idle_timeout: 100s").unwrap();
        assert_eq!(c.max_client_connections, None);
        assert_eq!(c.websocket_idle_timeout, Duration::from_secs(100));
        let c = Config::from_yaml(
            "max_client_connections: 5000
websocket_idle_timeout: 1m",
        )
        .unwrap();
        assert_eq!(c.max_client_connections, Some(5000));
        assert_eq!(c.websocket_idle_timeout, Duration::from_secs(60));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert!(Config::from_yaml("max_client_connections: -1").is_err());
    }

    #[test]
    fn backend_idle_timeout_is_our_key_with_upstreams_90_seconds_by_default() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.backend_idle_timeout, Duration::from_secs(90));
        let c = Config::from_yaml("backend_idle_timeout: 0s").unwrap();
        assert_eq!(c.backend_idle_timeout, Duration::from_secs(90));
        let c = Config::from_yaml("backend_idle_timeout: 2s").unwrap();
        assert_eq!(c.backend_idle_timeout, Duration::from_secs(2));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert!(Config::from_yaml("backend_idle_timeout: soon").is_err());
    }

    #[test]
    fn zone_is_read_without_a_warning_as_upstream_uses_it_by_default() {
        // Upstream's default `balancing_algorithm_az_preference` (none) only logs the zone
        // (`local-az-set`), which is what this router does; BOSH always renders it.
        let c = Config::from_yaml("zone: z1").unwrap();
        assert_eq!(c.zone, "z1");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}
