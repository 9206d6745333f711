//! The components' YAML configs, generated from the embedded defaults (the values of the
//! repository's `config/*.yml`, same keys) with paths into the data dir, the chosen ports and
//! the message bus, and the demo app's route file.

use std::path::Path;

use serde_json::{json, Value};

use crate::bus::Bus;
use crate::ports::Ports;
use crate::tls::{CertKey, TierTls};

/// The cipher suites gorouter's HTTPS listener offers (`enable_ssl` requires the key).
pub const CIPHER_SUITES: &str = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";

fn yaml(header: &str, v: &Value) -> Result<String, serde_yaml_ng::Error> {
    Ok(format!(
        "# Written by `routing-tier up` (rewritten on every start).\n# {header}\n{}",
        serde_yaml_ng::to_string(v)?
    ))
}

/// routing-api: SQLite at `<data dir>/routing-api.db`, its lock in that database (no Locket),
/// auth disabled, plain HTTP and mutual TLS (`tls`' `routing-api-server.pem`, client
/// certificates signed by its `ca.pem`) on 127.0.0.1, `default-tcp` seeded with the TCP port
/// range.
pub fn routing_api(
    data_dir: &Path,
    ports: &Ports,
    tls: &TierTls,
) -> Result<String, serde_yaml_ng::Error> {
    let path = |p: std::path::PathBuf| p.display().to_string();
    let v = json!({
        "system_domain": "localhost",
        "log_guid": "routing-api",
        "uuid": "routing-api-0",
        "auth_disabled": true,
        "api": {
            "listen_port": ports.routing_api,
            "http_enabled": true,
            "mtls_listen_port": ports.routing_api_mtls,
            "mtls_server_cert_file": path(tls.routing_api_cert()),
            "mtls_server_key_file": path(tls.routing_api_key()),
            "mtls_client_ca_file": path(tls.ca()),
        },
        "bind_address": "127.0.0.1",
        "admin_port": ports.routing_api_admin,
        "max_ttl": "120s",
        "sqldb": {"type": "sqlite", "schema": data_dir.join("routing-api.db").display().to_string()},
        "router_groups": [{
            "name": "default-tcp",
            "type": "tcp",
            "reservable_ports": format!("{}-{}", ports.tcp_first, ports.tcp_last),
        }],
    });
    yaml(
        "routing-api: SQLite, auth disabled (unauthenticated requests are accepted), mTLS port with tls/ certificates.",
        &v,
    )
}

/// gorouter: HTTP and HTTPS on 127.0.0.1, routes from the Routing API and, with NATS, from NATS.
pub fn gorouter(ports: &Ports, bus: &Bus, cert: &CertKey) -> Result<String, serde_yaml_ng::Error> {
    let hosts = match bus {
        Bus::Nats { host, port, .. } => json!([{"hostname": host, "port": port}]),
        Bus::RoutingApi => json!([]),
    };
    let mut v = json!({
        "port": ports.gorouter_http,
        "bind_address": "127.0.0.1",
        "index": 0,
        "status": {
            "host": "127.0.0.1",
            "port": ports.gorouter_status,
            "user": "router-status",
            "pass": "router-status-pass",
            "routes": {"port": ports.gorouter_routes},
        },
        "nats": {"hosts": hosts},
        "start_response_delay_interval": "1s",
        "drain_wait": "1s",
        "logging": {"level": "info"},
        "ip": "127.0.0.1",
        "suspend_pruning_if_nats_unavailable": true,
        "endpoint_timeout": "900s",
        "drain_timeout": "900s",
        "backends": {"max_attempts": 3, "max_conns": 500},
        "route_services": {"max_attempts": 3},
        "route_services_secret": "local-development-route-services-secret",
        "route_services_recommend_https": false,
        "empty_pool_response_code_503": true,
        "disable_keep_alives": false,
        "max_idle_conns": 100,
        "max_idle_conns_per_host": 100,
        "max_header_bytes": 1048576,
        "trace_key": "22",
        "routing_api": {"uri": "http://127.0.0.1", "port": ports.routing_api, "auth_disabled": true},
        "enable_ssl": true,
        "ssl_port": ports.gorouter_https,
        "tls_pem": [{"cert_chain": cert.cert_pem, "private_key": cert.key_pem}],
        "cipher_suites": CIPHER_SUITES,
    });
    if ports.shifted {
        v["route_services_internal_server_port"] = json!(ports.gorouter_route_services);
    }
    yaml(
        "gorouter: HTTP and HTTPS on 127.0.0.1, routes from the Routing API.",
        &v,
    )
}

/// tcp-router: TCP routes from the Routing API, health port and route ports on 127.0.0.1.
pub fn tcp_router(ports: &Ports) -> Result<String, serde_yaml_ng::Error> {
    let v = json!({
        "routing_api": {"uri": "http://127.0.0.1", "port": ports.routing_api, "auth_disabled": true},
        "health_check_port": ports.tcp_router_health,
        "bind_address": "127.0.0.1",
        "drain_wait": "20s",
        "reserved_system_component_ports": [2822, 2825, 3457, 3458, 3459, 3460, 3461, 8853, 9100, 14726, 14727, 14821, 14822, 14823, 14824, 14829, 14830, 14920, 14922, 15821, 17002, 53035, 53080],
        "request_timeout_in_seconds": 300,
        "connect_timeout": "30s",
        "max_connections": 64000,
        "backend_tls": {"enabled": false},
    });
    yaml("tcp-router: TCP routes from the Routing API.", &v)
}

/// route-emitter: routes from `<data dir>/routes.d/*.yml`, HTTP routes over NATS when there is
/// one and to the Routing API when there is none (the emitter's rule for a route without a
/// `transport` key), TCP/SNI routes to the Routing API.
pub fn route_emitter(
    data_dir: &Path,
    ports: &Ports,
    bus: &Bus,
) -> Result<String, serde_yaml_ng::Error> {
    let mut v = json!({
        "routing_api": {"api_url": format!("http://127.0.0.1:{}", ports.routing_api), "max_ttl": "60s"},
        "host": "127.0.0.1",
        "routes": [],
        "dynamic_config_globs": [data_dir.join("routes.d").join("*.yml").display().to_string()],
    });
    if let Bus::Nats { host, port, .. } = bus {
        v["message_bus_servers"] = json!([{"host": format!("{host}:{port}")}]);
    }
    yaml("route-emitter: routes from routes.d/*.yml.", &v)
}

/// `routes.d/demo.yml`: the demo app at `demo.localhost`, written as a foundation's
/// route-registrar entry (no `transport`): over NATS with one, through the Routing API without.
pub fn demo_route(port: u16) -> Result<String, serde_yaml_ng::Error> {
    let v = json!({"routes": [{
        "name": "demo",
        "port": port,
        "uris": ["demo.localhost"],
        "registration_interval": "10s",
    }]});
    yaml(
        "The built-in demo app (rewritten with its port on every start).",
        &v,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(text).expect("valid YAML")
    }

    #[test]
    fn configs_carry_ports_bus_and_paths() {
        let ports = Ports::from_base(30000).expect("ports");
        let cert = CertKey {
            cert_pem: "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n".into(),
            key_pem: "k".into(),
        };
        let g = parse(&gorouter(&ports, &Bus::RoutingApi, &cert).expect("gorouter"));
        assert_eq!(g["port"].as_u64(), Some(30000));
        assert_eq!(g["ssl_port"].as_u64(), Some(30001));
        assert_eq!(
            g["route_services_internal_server_port"].as_u64(),
            Some(30004)
        );
        assert_eq!(g["nats"]["hosts"].as_sequence().map(Vec::len), Some(0));
        assert_eq!(
            g["tls_pem"][0]["cert_chain"].as_str(),
            Some(cert.cert_pem.as_str())
        );
        assert_eq!(g["routing_api"]["port"].as_u64(), Some(30005));

        let nats = Bus::Nats {
            url: "nats://h:5".into(),
            host: "h".into(),
            port: 5,
        };
        let g = parse(&gorouter(&Ports::default(), &nats, &cert).expect("gorouter"));
        assert_eq!(g["nats"]["hosts"][0]["port"].as_u64(), Some(5));
        assert!(g.get("route_services_internal_server_port").is_none());

        let dir = Path::new("/data");
        let tls = TierTls {
            dir: dir.join("tls"),
            gorouter: cert.clone(),
            generated: false,
        };
        let r = parse(&routing_api(dir, &ports, &tls).expect("routing-api"));
        assert_eq!(r["api"]["mtls_listen_port"].as_u64(), Some(30018));
        assert_eq!(
            r["api"]["mtls_server_cert_file"].as_str(),
            Some("/data/tls/routing-api-server.pem")
        );
        assert_eq!(
            r["api"]["mtls_server_key_file"].as_str(),
            Some("/data/tls/routing-api-server.key")
        );
        assert_eq!(
            r["api"]["mtls_client_ca_file"].as_str(),
            Some("/data/tls/ca.pem")
        );
        assert_eq!(r["sqldb"]["schema"].as_str(), Some("/data/routing-api.db"));
        assert_eq!(
            r["router_groups"][0]["reservable_ports"].as_str(),
            Some("30008-30017")
        );
        assert_eq!(r["admin_port"].as_u64(), Some(30006));

        let e = parse(&route_emitter(dir, &ports, &Bus::RoutingApi).expect("emitter"));
        assert!(e.get("message_bus_servers").is_none());
        assert_eq!(
            e["dynamic_config_globs"][0].as_str(),
            Some("/data/routes.d/*.yml")
        );
        let e = parse(&route_emitter(dir, &ports, &nats).expect("emitter"));
        assert_eq!(e["message_bus_servers"][0]["host"].as_str(), Some("h:5"));

        let t = parse(&tcp_router(&ports).expect("tcp-router"));
        assert_eq!(t["health_check_port"].as_u64(), Some(30007));

        let d = parse(&demo_route(4321).expect("demo"));
        assert_eq!(d["routes"][0]["uris"][0].as_str(), Some("demo.localhost"));
        assert!(d["routes"][0].get("transport").is_none());
    }
}
