//! route-registrar's config schema (JSON or YAML) and its validation.
//!
//! [`ConfigSchema`] is the file as written; [`ConfigSchema::into_config`] checks it and returns
//! a [`Config`] whose [`Route`]s have every default applied, or a [`ConfigError`] listing every
//! problem: one line for the top-level keys and one line per bad route (`route <index>
//! (<name>): <problem>; <problem>`), so an operator sees everything wrong at once.
//!
//! Keys of ours beyond route-registrar's: `router_greet_retry_interval` (default `1s`, the time
//! between `router.greet` attempts; the emitter exits non-zero after
//! [`crate::nats::MAX_GREET_ATTEMPTS`] unanswered ones), `prometheus` (upstream gorouter's
//! block, `{port, cert_path, key_path, ca_path, listen_address}`: `/metrics` of
//! [`crate::metrics`], plain HTTP on 127.0.0.1 or mutual TLS; see
//! [`prometheus_endpoint::PrometheusConfig`]) and the per-route extensions of [`RouteSchema`].
//!
//! Routes found in `dynamic_config_globs` files use the same route schema and the same
//! validation ([`parse_route_file`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use prometheus_endpoint::{Endpoint, PrometheusConfig};
use serde::{Deserialize, Serialize};
use yaml_config::parse_go_duration;

/// Default `routing_api.max_ttl` (route-registrar: 120s).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(120);
/// Default `unregistration_message_limit` (route-registrar: 5).
pub const DEFAULT_UNREGISTRATION_MESSAGE_LIMIT: u32 = 5;

/// One `message_bus_servers` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageBusServer {
    /// `ip:port`
    pub host: String,
    pub user: String,
    pub password: String,
}

/// `nats_mtls_config`: mutual TLS to NATS (route-registrar's `ClientTLSConfigSchema`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsMtlsSchema {
    pub enabled: bool,
    /// PEM client certificate presented to NATS.
    pub cert_path: String,
    /// PEM private key of `cert_path`.
    pub key_path: String,
    /// PEM CA certificates that sign the NATS server's certificate.
    pub ca_path: String,
}

/// Mutual TLS to NATS, checked: all three files given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
}

/// The `routing_api` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoutingApiSchema {
    pub api_url: String,
    pub oauth_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// PEM file of CAs for UAA.
    pub ca_certs: String,
    pub skip_ssl_validation: bool,
    pub client_cert_path: String,
    pub client_private_key_path: String,
    /// PEM file of CAs for the Routing API (mutual TLS).
    pub server_ca_cert_path: String,
    /// Go duration, or an integer number of seconds.
    pub max_ttl: Option<serde_json::Value>,
}

/// `health_check` of a route: route-registrar's script check (`name`, `script_path`,
/// `timeout`) or one of our probes (`type: http|tcp`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheckSchema {
    pub name: String,
    pub script_path: String,
    pub timeout: String,
    /// `http` or `tcp` for the built-in probes; empty = script.
    #[serde(rename = "type")]
    pub kind: String,
    /// Request path of the `http` probe (default `/`).
    pub path: String,
    /// Port probed (default: the route's port).
    pub port: Option<i64>,
    /// Time between probes (default: the route's registration interval).
    pub interval: String,
}

/// `options` of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteOptions {
    pub lb_algo: String,
}

/// One entry of `routes` (or of a dynamic config file), as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteSchema {
    /// `http` (default), `tcp` or `sni`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// Backend host; defaults to the top-level `host`.
    pub host: String,
    pub port: Option<i64>,
    pub tls_port: Option<i64>,
    pub sni_port: Option<i64>,
    pub protocol: String,
    pub tags: BTreeMap<String, String>,
    pub uris: Vec<String>,
    pub router_group: String,
    pub external_port: Option<i64>,
    pub route_service_url: String,
    pub registration_interval: String,
    pub health_check: Option<HealthCheckSchema>,
    pub server_cert_domain_san: String,
    pub sni_routable_san: String,
    pub options: RouteOptions,
    // Extensions.
    pub app: String,
    pub private_instance_id: String,
    pub private_instance_index: String,
    pub isolation_segment: String,
    pub availability_zone: String,
    /// `nats` or `routing_api`, for HTTP routes. Absent: `nats`, or `routing_api` when the
    /// config has a Routing API and no `message_bus_servers`.
    pub transport: String,
}

/// The whole config file, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigSchema {
    pub message_bus_servers: Vec<MessageBusServer>,
    pub nats_mtls_config: NatsMtlsSchema,
    pub routing_api: Option<RoutingApiSchema>,
    pub host: String,
    pub availability_zone: String,
    pub unregistration_message_limit: Option<u32>,
    pub dynamic_config_globs: Vec<String>,
    pub routes: Vec<RouteSchema>,
    /// Ours: time between `router.greet` attempts (Go duration or seconds; default 1s).
    pub router_greet_retry_interval: Option<serde_json::Value>,
    /// Ours, with gorouter's keys: where `/metrics` is served (port 0 or absent: nowhere).
    #[serde(skip_serializing)]
    pub prometheus: PrometheusConfig,
}

/// Kind of a validated route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    Http,
    Tcp,
    Sni,
}

/// Where an HTTP route is published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    #[default]
    Nats,
    RoutingApi,
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthCheck {
    /// Runs `script_path`; exit status 0 within `timeout` = healthy.
    Script {
        name: String,
        script_path: PathBuf,
        timeout: Duration,
    },
    /// `GET path` on `host:port` answered with 2xx within `timeout` = healthy.
    Http {
        path: String,
        port: u16,
        timeout: Duration,
        interval: Duration,
    },
    /// A TCP connect to `host:port` within `timeout` = healthy.
    Tcp {
        port: u16,
        timeout: Duration,
        interval: Duration,
    },
}

/// A validated route with defaults applied (top-level `host` and `availability_zone`).
/// Hashable, so that route sets are diffed and de-duplicated in linear time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub kind: RouteKind,
    pub transport: Transport,
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    pub tls_port: Option<u16>,
    pub sni_port: Option<u16>,
    pub protocol: String,
    pub tags: BTreeMap<String, String>,
    pub uris: Vec<String>,
    pub router_group: String,
    pub external_port: Option<u16>,
    pub route_service_url: String,
    pub registration_interval: Duration,
    pub health_check: Option<HealthCheck>,
    pub server_cert_domain_san: String,
    pub sni_routable_san: String,
    pub lb_algo: String,
    pub app: String,
    pub private_instance_id: String,
    pub private_instance_index: String,
    pub isolation_segment: String,
    pub availability_zone: String,
}

impl Route {
    /// A stable identity: two routes with the same key are the same registration.
    pub fn key(&self) -> String {
        format!("{self:?}")
    }
}

/// The `routing_api` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingApiConfig {
    pub api_url: String,
    pub oauth_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub ca_certs: String,
    pub skip_ssl_validation: bool,
    pub client_cert_path: String,
    pub client_private_key_path: String,
    pub server_ca_cert_path: String,
    pub max_ttl: Duration,
}

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub message_bus_servers: Vec<MessageBusServer>,
    /// Mutual TLS to NATS when `nats_mtls_config.enabled`.
    pub nats_tls: Option<NatsTls>,
    pub routing_api: Option<RoutingApiConfig>,
    pub host: String,
    pub availability_zone: String,
    pub unregistration_message_limit: u32,
    pub dynamic_config_globs: Vec<String>,
    pub routes: Vec<Route>,
    /// Time between `router.greet` attempts ([`crate::nats::MAX_GREET_ATTEMPTS`] of them).
    pub router_greet_retry_interval: Duration,
    /// `prometheus`: where `/metrics` is served; `None` serves none.
    pub metrics_endpoint: Option<Endpoint>,
}

/// Everything wrong with a config, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// Parses a config file's text (JSON is YAML, so one parser reads both). Unknown keys are
/// returned so the caller can warn about them.
pub fn parse(text: &str) -> Result<(ConfigSchema, Vec<String>), ConfigError> {
    yaml_config::from_yaml_reporting_unknown::<ConfigSchema>(text)
        .map_err(|e| ConfigError(vec![format!("invalid config: {e}")]))
}

/// Reads and validates the config file at `path`. Unknown keys are returned so the caller can
/// warn about them.
pub fn load(path: &std::path::Path) -> Result<(Config, Vec<String>), ConfigError> {
    let (schema, unknown) = yaml_config::load_file::<ConfigSchema>(path)
        .map_err(|e| ConfigError(vec![e.to_string()]))?;
    Ok((schema.into_config()?, unknown))
}

fn duration_value(v: &serde_json::Value) -> Result<Duration, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| format!("invalid duration {n}")),
        serde_json::Value::String(s) => parse_go_duration(s),
        other => Err(format!("invalid duration {other}")),
    }
}

fn port_value(field: &str, v: Option<i64>, problems: &mut Vec<String>) -> Option<u16> {
    let v = v?;
    if v <= 0 {
        problems.push(format!("{field} must be greater than 0"));
        None
    } else if v > 65535 {
        problems.push(format!("{field} must be at most 65535"));
        None
    } else {
        Some(v as u16)
    }
}

impl ConfigSchema {
    /// Validates the file and applies defaults; every problem is reported.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        if self.host.is_empty() {
            errors.push("host required".to_string());
        }
        for (i, s) in self.message_bus_servers.iter().enumerate() {
            if s.host.is_empty() {
                errors.push(format!("message_bus_servers[{i}]: host required"));
            } else if s.host.rsplit_once(':').is_none() {
                errors.push(format!(
                    "message_bus_servers[{i}]: host must be ip:port, got {:?}",
                    s.host
                ));
            }
        }
        let nats_tls = {
            let m = &self.nats_mtls_config;
            let missing: Vec<&str> = [
                ("cert_path", &m.cert_path),
                ("key_path", &m.key_path),
                ("ca_path", &m.ca_path),
            ]
            .into_iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(k, _)| k)
            .collect();
            if !m.enabled {
                None
            } else if !missing.is_empty() {
                errors.push(format!(
                    "nats_mtls_config: {} required when enabled is true",
                    missing.join(", ")
                ));
                None
            } else {
                Some(NatsTls {
                    cert_path: m.cert_path.clone().into(),
                    key_path: m.key_path.clone().into(),
                    ca_path: m.ca_path.clone().into(),
                })
            }
        };
        let routing_api = match &self.routing_api {
            None => None,
            Some(r) => {
                let max_ttl = match &r.max_ttl {
                    None => DEFAULT_MAX_TTL,
                    Some(v) => match duration_value(v) {
                        Ok(d) if d.is_zero() => {
                            errors.push("routing_api.max_ttl must be greater than 0".into());
                            DEFAULT_MAX_TTL
                        }
                        Ok(d) => d,
                        Err(e) => {
                            errors.push(format!("routing_api.max_ttl: {e}"));
                            DEFAULT_MAX_TTL
                        }
                    },
                };
                if r.client_cert_path.is_empty() != r.client_private_key_path.is_empty() {
                    errors.push(
                        "routing_api: client_cert_path and client_private_key_path must be given together"
                            .into(),
                    );
                }
                Some(RoutingApiConfig {
                    api_url: r.api_url.clone(),
                    oauth_url: r.oauth_url.clone(),
                    client_id: r.client_id.clone(),
                    client_secret: r.client_secret.clone(),
                    ca_certs: r.ca_certs.clone(),
                    skip_ssl_validation: r.skip_ssl_validation,
                    client_cert_path: r.client_cert_path.clone(),
                    client_private_key_path: r.client_private_key_path.clone(),
                    server_ca_cert_path: r.server_ca_cert_path.clone(),
                    max_ttl,
                })
            }
        };
        let router_greet_retry_interval = match &self.router_greet_retry_interval {
            None => crate::nats::GREET_RETRY,
            Some(v) => match duration_value(v) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    errors.push("router_greet_retry_interval must be greater than 0".into());
                    crate::nats::GREET_RETRY
                }
                Err(e) => {
                    errors.push(format!("router_greet_retry_interval: {e}"));
                    crate::nats::GREET_RETRY
                }
            },
        };
        let metrics_endpoint = self.prometheus.endpoint().unwrap_or_else(|e| {
            errors.push(e.to_string());
            None
        });
        let defaults = RouteDefaults {
            host: self.host.clone(),
            availability_zone: self.availability_zone.clone(),
            http_transport: default_http_transport(
                !self.message_bus_servers.is_empty(),
                routing_api.is_some(),
            ),
        };
        let mut routes = Vec::new();
        let mut needs_nats = false;
        let mut needs_api = false;
        for (i, r) in self.routes.into_iter().enumerate() {
            match validate_route(r, &defaults) {
                Ok(route) => {
                    match (route.kind, route.transport) {
                        (RouteKind::Http, Transport::Nats) => needs_nats = true,
                        _ => needs_api = true,
                    }
                    routes.push(route);
                }
                Err(e) => errors.push(format!("route {i} {e}")),
            }
        }
        if needs_nats && self.message_bus_servers.is_empty() {
            errors.push("message_bus_servers must have at least one entry".into());
        }
        if needs_api {
            match &routing_api {
                None => errors.push(
                    "routing_api is required for tcp, sni and routing_api-transport routes".into(),
                ),
                Some(r) if r.api_url.is_empty() => {
                    errors.push("routing_api.api_url is required".into())
                }
                _ => {}
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Config {
            message_bus_servers: self.message_bus_servers,
            nats_tls,
            routing_api,
            host: self.host,
            availability_zone: self.availability_zone,
            unregistration_message_limit: self
                .unregistration_message_limit
                .unwrap_or(DEFAULT_UNREGISTRATION_MESSAGE_LIMIT),
            dynamic_config_globs: self.dynamic_config_globs,
            routes,
            router_greet_retry_interval,
            metrics_endpoint,
        })
    }
}

/// Values a route inherits from the top level of the config.
#[derive(Debug, Clone, Default)]
pub struct RouteDefaults {
    pub host: String,
    pub availability_zone: String,
    /// Where an HTTP route without a `transport` key goes: NATS, or the Routing API when the
    /// config has no message bus but has a Routing API (a tier without NATS serves route files
    /// written for a foundation unchanged).
    pub http_transport: Transport,
}

/// [`RouteDefaults::http_transport`] for a config with or without a message bus and a Routing
/// API.
pub fn default_http_transport(has_message_bus: bool, has_routing_api: bool) -> Transport {
    if !has_message_bus && has_routing_api {
        Transport::RoutingApi
    } else {
        Transport::Nats
    }
}

/// Checks one route; the error reads `(<name>): <problem>; <problem>`.
pub fn validate_route(r: RouteSchema, defaults: &RouteDefaults) -> Result<Route, String> {
    let mut p = Vec::new();
    let kind = match r.kind.as_str() {
        "" | "http" => RouteKind::Http,
        "tcp" => RouteKind::Tcp,
        "sni" => RouteKind::Sni,
        other => {
            p.push(format!("type must be http, tcp or sni, got {other:?}"));
            RouteKind::Http
        }
    };
    let transport = match r.transport.as_str() {
        "" => defaults.http_transport,
        "nats" => Transport::Nats,
        "routing_api" => Transport::RoutingApi,
        other => {
            p.push(format!(
                "transport must be nats or routing_api, got {other:?}"
            ));
            Transport::Nats
        }
    };
    if r.name.is_empty() {
        p.push("name must be provided".into());
    }
    let port = port_value("port", r.port, &mut p);
    let tls_port = port_value("tls_port", r.tls_port, &mut p);
    let sni_port = port_value("sni_port", r.sni_port, &mut p);
    let external_port = port_value("external_port", r.external_port, &mut p);
    let registration_interval = if r.registration_interval.is_empty() {
        p.push("registration_interval is required".into());
        Duration::ZERO
    } else {
        match parse_go_duration(&r.registration_interval) {
            Ok(d) if d.is_zero() => {
                p.push("invalid registration_interval: interval must be greater than 0".into());
                d
            }
            Ok(d) => d,
            Err(e) => {
                p.push(format!("invalid registration_interval: {e}"));
                Duration::ZERO
            }
        }
    };
    match kind {
        RouteKind::Http => {
            if r.port.is_none() && r.tls_port.is_none() {
                p.push("port or tls_port are required".into());
            }
            if r.uris.is_empty() {
                p.push("no uris specified".into());
            }
            if r.uris.iter().any(|u| u.is_empty()) {
                p.push("uris must not be empty strings".into());
            }
            if r.tls_port.is_some() && r.server_cert_domain_san.is_empty() {
                p.push("server_cert_domain_san is required if tls_port is set".into());
            }
            if !r.route_service_url.is_empty() && !r.route_service_url.starts_with("https") {
                p.push("route_service_url must be https".into());
            }
            if !matches!(r.protocol.as_str(), "" | "http1" | "http2") {
                p.push(format!(
                    "protocol must be http1 or http2, got {:?}",
                    r.protocol
                ));
            }
            if !matches!(
                r.options.lb_algo.as_str(),
                "" | "round-robin" | "least-connection"
            ) {
                p.push(format!(
                    "options.lb_algo must be round-robin or least-connection, got {:?}",
                    r.options.lb_algo
                ));
            }
        }
        RouteKind::Tcp | RouteKind::Sni => {
            if r.router_group.is_empty() {
                p.push("router_group is required for tcp and sni routes".into());
            }
            if r.external_port.is_none() {
                p.push("external_port is required for tcp and sni routes".into());
            }
            if kind == RouteKind::Tcp && r.port.is_none() && r.tls_port.is_none() {
                p.push("port or tls_port are required".into());
            }
            if kind == RouteKind::Sni {
                if r.sni_port.is_none() {
                    p.push("sni_port is required for sni routes".into());
                }
                if r.sni_routable_san.is_empty() {
                    p.push("sni_routable_san is required for sni routes".into());
                }
            }
            if r.transport == "routing_api" {
                p.push("transport applies to http routes only".into());
            }
        }
    }
    let host = if r.host.is_empty() {
        defaults.host.clone()
    } else {
        r.host.clone()
    };
    let health_check = match &r.health_check {
        None => None,
        Some(h) => check_health(h, port.or(tls_port), registration_interval, &mut p),
    };
    if !p.is_empty() {
        return Err(format!("({}): {}", r.name, p.join("; ")));
    }
    Ok(Route {
        kind,
        transport,
        name: r.name,
        host,
        port,
        tls_port,
        sni_port,
        protocol: r.protocol,
        tags: r.tags,
        uris: r.uris,
        router_group: r.router_group,
        external_port,
        route_service_url: r.route_service_url,
        registration_interval,
        health_check,
        server_cert_domain_san: r.server_cert_domain_san,
        sni_routable_san: r.sni_routable_san,
        lb_algo: r.options.lb_algo,
        app: r.app,
        private_instance_id: r.private_instance_id,
        private_instance_index: r.private_instance_index,
        isolation_segment: r.isolation_segment,
        availability_zone: if r.availability_zone.is_empty() {
            defaults.availability_zone.clone()
        } else {
            r.availability_zone
        },
    })
}

fn check_health(
    h: &HealthCheckSchema,
    route_port: Option<u16>,
    registration_interval: Duration,
    p: &mut Vec<String>,
) -> Option<HealthCheck> {
    let timeout = if h.timeout.is_empty() {
        None
    } else {
        match parse_go_duration(&h.timeout) {
            Ok(d) if d.is_zero() => {
                p.push("invalid healthcheck timeout: must be greater than 0".into());
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                p.push(format!("invalid healthcheck timeout: {e}"));
                None
            }
        }
    };
    let interval = if h.interval.is_empty() {
        registration_interval
    } else {
        match parse_go_duration(&h.interval) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                p.push("invalid healthcheck interval: must be greater than 0".into());
                registration_interval
            }
            Err(e) => {
                p.push(format!("invalid healthcheck interval: {e}"));
                registration_interval
            }
        }
    };
    match h.kind.as_str() {
        "" | "script" => {
            if h.name.is_empty() {
                p.push("no healthcheck name".into());
            }
            if h.script_path.is_empty() {
                p.push("no healthcheck script_path".into());
            }
            let timeout = timeout.unwrap_or(registration_interval / 2);
            if !registration_interval.is_zero() && timeout >= registration_interval {
                p.push(
                    "invalid healthcheck timeout: must be less than the registration interval"
                        .into(),
                );
            }
            Some(HealthCheck::Script {
                name: h.name.clone(),
                script_path: PathBuf::from(&h.script_path),
                timeout,
            })
        }
        "http" | "tcp" => {
            let port = match h.port {
                Some(_) => port_value("health_check.port", h.port, p),
                None => {
                    if route_port.is_none() {
                        p.push("health_check.port is required when the route has no port".into());
                    }
                    route_port
                }
            }
            .unwrap_or(0);
            let timeout = timeout.unwrap_or(Duration::from_secs(1));
            if h.kind == "http" {
                let path = if h.path.is_empty() {
                    "/".to_string()
                } else {
                    h.path.clone()
                };
                Some(HealthCheck::Http {
                    path,
                    port,
                    timeout,
                    interval,
                })
            } else {
                Some(HealthCheck::Tcp {
                    port,
                    timeout,
                    interval,
                })
            }
        }
        other => {
            p.push(format!(
                "health_check.type must be script, http or tcp, got {other:?}"
            ));
            None
        }
    }
}

/// A dynamic config file: `{routes: [...]}` (JSON or YAML). Every valid route is returned
/// with the problems of the others.
pub fn parse_route_file(
    text: &str,
    defaults: &RouteDefaults,
) -> Result<(Vec<Route>, Vec<String>), String> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct RouteFile {
        routes: Vec<RouteSchema>,
    }
    let (file, _unknown) = yaml_config::from_yaml_reporting_unknown::<RouteFile>(text)
        .map_err(|e| format!("invalid route file: {e}"))?;
    let mut routes = Vec::new();
    let mut problems = Vec::new();
    for (i, r) in file.routes.into_iter().enumerate() {
        match validate_route(r, defaults) {
            Ok(route) => routes.push(route),
            Err(e) => problems.push(format!("route {i} {e}")),
        }
    }
    Ok((routes, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let (schema, _) = parse(text).expect("parses");
        schema.into_config().expect_err("invalid").0
    }

    const BUS: &str =
        "host: 10.0.0.1\nmessage_bus_servers: [{host: '127.0.0.1:4222', user: u, password: p}]\n";

    #[test]
    fn valid_yaml_and_json_configs_load_with_defaults() {
        let yaml = format!(
            "{BUS}availability_zone: z1\nroutes:\n- name: a\n  port: 8080\n  uris: [a.example.com]\n  registration_interval: 20s\n"
        );
        let (schema, unknown) = parse(&yaml).unwrap();
        assert!(unknown.is_empty());
        let c = schema.into_config().unwrap();
        assert_eq!(c.unregistration_message_limit, 5);
        let r = &c.routes[0];
        assert_eq!(r.kind, RouteKind::Http);
        assert_eq!(r.host, "10.0.0.1");
        assert_eq!(r.availability_zone, "z1");
        assert_eq!(r.registration_interval, Duration::from_secs(20));

        let json = r#"{"host":"h","message_bus_servers":[{"host":"1.2.3.4:4222"}],
            "routing_api":{"api_url":"http://x:3000","max_ttl":"30s"},
            "routes":[{"type":"tcp","name":"t","port":5,"router_group":"default-tcp","external_port":1024,"registration_interval":"10s"}]}"#;
        let (schema, _) = parse(json).unwrap();
        let c = schema.into_config().unwrap();
        assert_eq!(c.routing_api.unwrap().max_ttl, Duration::from_secs(30));
        assert_eq!(c.routes[0].kind, RouteKind::Tcp);
    }

    #[test]
    fn nats_mtls_config_needs_all_three_files_when_enabled() {
        assert_eq!(
            errors(&format!(
                "{BUS}nats_mtls_config: {{enabled: true, cert_path: /c.pem}}\nroutes: []\n"
            )),
            vec!["nats_mtls_config: key_path, ca_path required when enabled is true"]
        );
        let (schema, unknown) = parse(&format!(
            "{BUS}nats_mtls_config: {{enabled: true, cert_path: /c.pem, key_path: /k.pem, ca_path: /ca.pem}}\n"
        ))
        .unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        let tls = schema.into_config().unwrap().nats_tls.expect("tls on");
        assert_eq!(tls.ca_path, PathBuf::from("/ca.pem"));
        // Disabled: the paths are not looked at.
        let (schema, _) = parse(&format!(
            "{BUS}nats_mtls_config: {{enabled: false, cert_path: /c.pem}}\n"
        ))
        .unwrap();
        assert!(schema.into_config().unwrap().nats_tls.is_none());
    }

    #[test]
    fn every_bad_route_is_listed_once() {
        let text = format!(
            "{BUS}routes:\n\
             - name: ok\n  port: 1\n  uris: [x]\n  registration_interval: 1s\n\
             - port: 0\n  uris: []\n\
             - name: b\n  tls_port: 443\n  uris: [y]\n  registration_interval: soon\n  route_service_url: http://rs\n"
        );
        let e = errors(&text);
        assert_eq!(
            e,
            vec![
                "route 1 (): name must be provided; port must be greater than 0; registration_interval is required; no uris specified".to_string(),
                "route 2 (b): invalid registration_interval: invalid duration \"soon\": expected e.g. \"30s\", \"1m30s\" or \"250ms\"; server_cert_domain_san is required if tls_port is set; route_service_url must be https".to_string(),
            ]
        );
    }

    #[test]
    fn without_a_prometheus_block_no_metrics_are_served() {
        let (schema, _) = parse(&format!("{BUS}routes: []\n")).unwrap();
        assert_eq!(schema.into_config().unwrap().metrics_endpoint, None);
    }

    #[test]
    fn a_prometheus_port_serves_plain_http_on_loopback() {
        let (schema, unknown) = parse(&format!("{BUS}prometheus: {{port: 9102}}\n")).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        let endpoint = schema.into_config().unwrap().metrics_endpoint.unwrap();
        assert_eq!(endpoint.addr, "127.0.0.1:9102".parse().unwrap());
        assert_eq!(endpoint.tls, None);
        let (schema, _) = parse(&format!(
            "{BUS}prometheus: {{port: 9102, listen_address: 0.0.0.0}}\n"
        ))
        .unwrap();
        let endpoint = schema.into_config().unwrap().metrics_endpoint.unwrap();
        assert_eq!(endpoint.addr, "0.0.0.0:9102".parse().unwrap());
    }

    #[test]
    fn prometheus_with_some_tls_files_is_listed_with_the_other_problems() {
        let e = errors(
            "message_bus_servers: [{host: '127.0.0.1:4222'}]\nprometheus: {port: 9102, ca_path: /ca.pem}\n",
        );
        assert_eq!(
            e,
            vec![
                "host required".to_string(),
                "prometheus: cert_path must be set when ca_path is: set cert_path, key_path and \
                 ca_path together for mutual TLS, or none of them for plain HTTP on 127.0.0.1"
                    .to_string()
            ]
        );
    }

    #[test]
    fn top_level_problems() {
        let e = errors("routes:\n- name: a\n  port: 1\n  uris: [x]\n  registration_interval: 1s\n");
        assert_eq!(
            e,
            vec![
                "host required".to_string(),
                "message_bus_servers must have at least one entry".to_string()
            ]
        );
        let e = errors(
            "host: h\nroutes:\n- {type: tcp, name: t, port: 1, router_group: g, external_port: 2, registration_interval: 1s}\n",
        );
        assert_eq!(
            e,
            vec!["routing_api is required for tcp, sni and routing_api-transport routes"]
        );
    }

    #[test]
    fn tcp_sni_and_health_check_rules() {
        let text = format!(
            "{BUS}routing_api: {{api_url: 'http://x'}}\nroutes:\n\
             - {{type: tcp, name: t, registration_interval: 1s}}\n\
             - {{type: sni, name: s, port: 1, router_group: g, external_port: 2, registration_interval: 1s}}\n\
             - {{name: h, port: 1, uris: [u], registration_interval: 2s, health_check: {{name: hc, timeout: 5s}}}}\n\
             - {{type: udp, name: x, port: 1, uris: [u], registration_interval: 1s}}\n"
        );
        let e = errors(&text);
        assert_eq!(
            e,
            vec![
                "route 0 (t): router_group is required for tcp and sni routes; external_port is required for tcp and sni routes; port or tls_port are required".to_string(),
                "route 1 (s): sni_port is required for sni routes; sni_routable_san is required for sni routes".to_string(),
                "route 2 (h): no healthcheck script_path; invalid healthcheck timeout: must be less than the registration interval".to_string(),
                "route 3 (x): type must be http, tcp or sni, got \"udp\"".to_string(),
            ]
        );
    }

    #[test]
    fn route_files_keep_good_routes() {
        let d = RouteDefaults {
            host: "h".into(),
            availability_zone: String::new(),
            ..Default::default()
        };
        let (routes, problems) = parse_route_file(
            "routes:\n- {name: a, port: 1, uris: [a], registration_interval: 1s}\n- {name: b}\n",
            &d,
        )
        .unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(problems.len(), 1);
        assert!(parse_route_file("routes: [", &d).is_err());
    }

    fn transports(yaml: &str) -> Result<Vec<Transport>, ConfigError> {
        let (schema, _) = parse(yaml)?;
        Ok(schema
            .into_config()?
            .routes
            .iter()
            .map(|r| r.transport)
            .collect())
    }

    #[test]
    fn without_a_message_bus_http_routes_go_to_the_routing_api() {
        let routes = "host: 127.0.0.1\nroutes: [{name: a, port: 1, uris: [a.test], registration_interval: 1s}]\n";
        assert_eq!(
            transports(&format!(
                "routing_api: {{api_url: http://127.0.0.1:3000}}\n{routes}"
            ))
            .unwrap(),
            vec![Transport::RoutingApi]
        );
        assert_eq!(
            transports(&format!(
                "message_bus_servers: [{{host: 127.0.0.1:4222}}]\nrouting_api: {{api_url: http://127.0.0.1:3000}}\n{routes}"
            ))
            .unwrap(),
            vec![Transport::Nats],
            "with a message bus, NATS as upstream"
        );
    }

    #[test]
    fn an_explicit_nats_route_still_needs_a_message_bus() {
        let err = transports(
            "host: 127.0.0.1\nrouting_api: {api_url: http://127.0.0.1:3000}\nroutes: [{name: a, port: 1, uris: [a.test], registration_interval: 1s, transport: nats}]\n",
        )
        .unwrap_err();
        assert!(
            err.0.iter().any(|e| e.contains("message_bus_servers")),
            "{err:?}"
        );
    }

    #[test]
    fn router_greet_retry_interval_defaults_to_a_second_and_must_be_positive() {
        let routes = "routes: []\n";
        let (schema, unknown) = parse(&format!("{BUS}{routes}")).unwrap();
        assert!(unknown.is_empty());
        assert_eq!(
            schema.into_config().unwrap().router_greet_retry_interval,
            Duration::from_secs(1)
        );
        let (schema, unknown) = parse(&format!(
            "{BUS}router_greet_retry_interval: 250ms\n{routes}"
        ))
        .unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(
            schema.into_config().unwrap().router_greet_retry_interval,
            Duration::from_millis(250)
        );
        assert_eq!(
            errors(&format!("{BUS}router_greet_retry_interval: 0s\n{routes}")),
            vec!["router_greet_retry_interval must be greater than 0"]
        );
    }
}
