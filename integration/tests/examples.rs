//! `examples/`: each binary's commented config, in the shape its BOSH job renders it, loaded
//! with that binary's own loader so that the examples never rot.
//!
//! None of the binaries has a load-only mode, so each test calls the loader the binary's
//! `main` calls (`Config::load`, `route_emitter::config::load`, `LocketConfig::load`) on the
//! example file. Every test checks that nothing in the file is reported as unknown (or, for
//! gorouter and tcp-router, warned about) and that a few values read as written, so a key the
//! loader stopped reading fails here. Lines starting `#~ ` are keys the BOSH job renders that
//! the binary does not support: [`assert_marked_keys_are_reported`] uncomments them and checks
//! that the loader reports each one, and nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration::pki::TestCa;
use integration::util::TempDir;

/// Every file in `examples/`, each checked by a test below (README.md by
/// [`readme_describes_every_example`]).
const COVERED: &[&str] = &[
    "README.md",
    "gorouter.yml",
    "locket.json",
    "route-emitter.yml",
    "routing-api.yml",
    "tcp-router.yml",
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn example_path(name: &str) -> PathBuf {
    examples_dir().join(name)
}

fn read_example(name: &str) -> String {
    let path = example_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Writes `text` as `dir/name` and returns the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// `text` with the `#~ ` marker removed from every marked line (its indentation kept).
fn uncomment_marked(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("#~ ") {
                line.replacen("#~ ", "", 1)
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The dotted key path (list indices left out) of every `#~ ` line of a YAML document written
/// in block style, as [`uncomment_marked`] would make it. Block scalars (`|`, `>`) are
/// skipped; a list item's keys sit under the list's key.
fn marked_key_paths(text: &str) -> Vec<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut block_scalar_of: Option<usize> = None;
    let mut paths = Vec::new();
    for raw in text.lines() {
        let marked = raw.trim_start().starts_with("#~ ");
        let line = if marked {
            raw.replacen("#~ ", "", 1)
        } else {
            raw.to_string()
        };
        let mut content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut indent = line.len() - content.len();
        if let Some(owner) = block_scalar_of {
            if indent > owner {
                continue;
            }
            block_scalar_of = None;
        }
        while let Some(rest) = content.strip_prefix("- ") {
            indent += 2;
            content = rest.trim_start();
        }
        let Some((key, value)) = content.split_once(':') else {
            continue;
        };
        let is_key = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && (value.is_empty() || value.starts_with(' '));
        if !is_key {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        if marked {
            let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            paths.push(path.join("."));
        }
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar_of = Some(indent);
        }
    }
    paths
}

/// A reported key path without serde_ignored's `?` (an `Option`) and list-index segments.
fn normalize(path: &str) -> String {
    path.split('.')
        .filter(|s| *s != "?" && !s.bytes().all(|b| b.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(".")
}

/// Checks the `#~ ` lines of `example` against what the loader reported for the uncommented
/// document: every marked key is reported (itself, a section it is in, or named in a
/// warning), and every reported key is a marked one.
fn assert_marked_keys_are_reported(example: &str, unknown: &[String], warnings: &[String]) {
    let marked = marked_key_paths(example);
    assert!(!marked.is_empty(), "no `#~ ` lines in the example");
    let unknown: BTreeSet<String> = unknown.iter().map(|k| normalize(k)).collect();
    for key in &marked {
        let in_unknown = unknown
            .iter()
            .any(|u| key == u || key.starts_with(&format!("{u}.")));
        let warned = warnings.iter().any(|w| w.contains(&format!("`{key}`")));
        assert!(
            in_unknown || warned,
            "`{key}` is marked unsupported (`#~`) but loads without being reported; \
             unknown: {unknown:?}, warnings: {warnings:?}"
        );
    }
    for key in &unknown {
        assert!(
            marked.contains(key),
            "`{key}` is reported as unknown but is not a `#~` line; marked: {marked:?}"
        );
    }
}

#[test]
fn every_example_file_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("list examples/")
        .map(|e| {
            e.expect("examples/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    let covered: Vec<String> = COVERED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        found, covered,
        "examples/ and the files tests/examples.rs checks differ: add a test for a new file \
         (and its name to COVERED), or remove a deleted one"
    );
}

#[test]
fn readme_describes_every_example() {
    let readme = read_example("README.md");
    for name in COVERED.iter().filter(|n| **n != "README.md") {
        assert!(
            readme.contains(&format!("## {name}")),
            "examples/README.md has no section for {name}"
        );
    }
    for command in [
        "gorouter -c examples/gorouter.yml",
        "routing-api -config examples/routing-api.yml",
        "tcp-router -config=examples/tcp-router.yml",
        "route-emitter --configPath examples/route-emitter.yml",
        "locket -config=examples/locket.json",
    ] {
        assert!(readme.contains(command), "README.md lacks `{command}`");
    }
    for key in LOCKET_RENDERED_UNSUPPORTED.iter().map(|(k, _)| k) {
        assert!(
            readme.contains(&format!("`{key}`")),
            "README.md does not mention locket's `{key}`"
        );
    }
}

#[test]
fn gorouter_example_loads_with_every_key_known() {
    use gorouter::config::{ClientCertValidation, Config, ForwardedClientCert};

    let path = example_path("gorouter.yml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(c.unknown_keys.is_empty(), "unknown: {:?}", c.unknown_keys);
    assert!(c.warnings.is_empty(), "warnings: {:?}", c.warnings);

    assert_eq!(c.port, 80);
    assert_eq!(c.zone, "z1");
    assert_eq!(c.status.port, 8080);
    assert_eq!(c.status.routes.port, 8082);
    assert_eq!(c.status.user, "router-status");
    assert_eq!(c.status_tls.as_ref().map(|t| t.port), Some(8443));
    assert_eq!(
        c.nats_servers(),
        vec!["nats://nats.service.cf.internal:4224"]
    );
    assert!(c.nats_tls.is_some(), "nats.tls_enabled");
    assert_eq!(c.trace_key.as_deref(), Some("22"));
    assert!(c.tracing.enable_zipkin && c.tracing.enable_w3c);
    assert_eq!(c.tracing.w3c_tenant_id, "", "null keeps the default");
    assert_eq!(c.access_log.file, "/var/vcap/sys/log/gorouter/access.log");
    assert_eq!(c.start_response_delay_interval, Duration::from_secs(20));
    assert_eq!(c.drain_wait, Duration::from_secs(20));
    assert_eq!(c.drain_timeout, Duration::from_secs(900));
    assert_eq!(c.endpoint_timeout, Duration::from_secs(900));
    assert!(c.suspend_pruning_if_nats_unavailable);
    assert_eq!(c.max_attempts, 3);
    assert_eq!(c.max_conns, Some(500));
    assert!(!c.disable_keep_alives);
    assert_eq!(c.max_idle_conns_per_host, 100);
    assert_eq!(c.max_idle_conns, 100);
    assert_eq!(c.max_header_bytes, 1024 * 1024);
    assert_eq!(c.hop_by_hop_headers_to_filter.len(), 8);
    assert!(c.empty_pool_response_code_503);
    assert_eq!(c.forwarded_client_cert, ForwardedClientCert::AlwaysForward);
    let rs = c
        .route_services
        .as_ref()
        .expect("route_services_secret is set");
    assert_eq!(rs.max_attempts, 3);
    assert!(rs.recommend_https);
    assert_eq!(rs.timeout, Duration::from_secs(60));
    assert!(rs.client_cert.is_none());
    assert!(c.backend_tls.client_cert.is_some(), "backends.cert_chain");
    assert_eq!(c.backend_tls.ca_certs.len(), 1);
    assert!(c.enable_ssl && !c.disable_http && c.enable_http2);
    assert_eq!(c.ssl_port, 443);
    let tls = c.frontend_tls.as_ref().expect("enable_ssl");
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(tls.cipher_suites.len(), 3);
    assert_eq!(tls.client_cert_validation, ClientCertValidation::Request);
    assert_eq!(tls.client_ca_certs.len(), 1);
    assert!(c.routing_api.enabled());
    assert_eq!(
        c.routing_api.url(),
        "https://routing-api.service.cf.internal:3001"
    );
    assert_eq!(
        c.oauth.tls_url().as_deref(),
        Ok("https://uaa.service.cf.internal:8443")
    );
    assert_eq!(
        c.oauth.ca_certs,
        "/var/vcap/jobs/gorouter/config/certs/uaa/ca.crt"
    );
    assert_eq!(c.logging.syslog, "vcap.gorouter");
    assert_eq!(c.logging.level, "info");
    assert!(c.logging.timestamp_rfc3339);
    assert_eq!(c.http_rewrite.responses.remove_headers.len(), 1);
    assert_eq!(c.http_rewrite.responses.add_headers_if_not_present.len(), 1);
    assert_eq!(
        c.html_error_template_file.as_deref(),
        Some(Path::new("/var/vcap/jobs/gorouter/config/error.html"))
    );
    assert_eq!(c.bind_address, None, "empty: all interfaces");

    let all = Config::from_yaml(&uncomment_marked(&read_example("gorouter.yml")))
        .expect("the example with its unsupported keys still loads");
    assert_marked_keys_are_reported(
        &read_example("gorouter.yml"),
        &all.unknown_keys,
        &all.warnings,
    );
}

#[test]
fn routing_api_example_loads_with_every_key_known() {
    use routing_api::config::{Config, Database};

    let path = example_path("routing-api.yml");
    let c = Config::load(&path, false).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(c.unknown_keys.is_empty(), "unknown: {:?}", c.unknown_keys);

    assert_eq!(c.sqldb.kind, "mysql");
    assert_eq!(
        c.database,
        Database::Mysql {
            host: "sql-db.service.cf.internal".into(),
            port: 3306,
            schema: "routing-api".into(),
            username: "routing-api".into(),
            password: "EXAMPLE-ONLY-routing-api-db-password".into(),
        }
    );
    assert_eq!(c.sqldb.max_open_connections, 200);
    assert_eq!(c.sqldb.max_idle_connections, 10);
    assert_eq!(c.sqldb.connections_max_lifetime_seconds, 3600);
    assert_eq!(integration::pki::parse_certs(&c.sqldb.ca_cert).len(), 1);
    assert_eq!(c.log_guid, "routing_api");
    assert_eq!(c.system_domain, "sys.example.com");
    assert_eq!(c.max_ttl, Duration::from_secs(120));
    assert_eq!(c.admin_port, 15897);
    assert_eq!(c.api.listen_port, 3000);
    assert_eq!(c.api.mtls_listen_port, 3001);
    assert!(c.api.http_enabled && c.mtls_enabled());
    assert_eq!(c.oauth.token_endpoint, "uaa.service.cf.internal");
    assert_eq!(c.oauth.port, 8443);
    assert!(!c.auth_disabled);
    assert_eq!(c.router_groups.len(), 1);
    assert_eq!(c.router_groups[0].reservable_ports, "1024-1033");
    assert_eq!(c.reserved_system_component_ports.len(), 23);
    assert_eq!(c.statsd_endpoint, "localhost:8125");
    assert_eq!(c.metrics_reporting_interval, Duration::from_secs(30));
    assert_eq!(c.statsd_client_flush_interval, Duration::from_millis(300));
    assert_eq!(c.retry_interval, Duration::from_secs(5));
    assert_eq!(c.locket.locket_address, "locket.service.cf.internal:8891");
    assert_eq!(c.lock_resource_key, "routing_api_lock");
    assert_eq!(c.bind_address.to_string(), "0.0.0.0");

    let all = Config::from_yaml(&uncomment_marked(&read_example("routing-api.yml")), false)
        .expect("the example with its unsupported keys still loads");
    assert_marked_keys_are_reported(&read_example("routing-api.yml"), &all.unknown_keys, &[]);
}

/// The certificate files `tcp-router.yml` names, and what each holds. The loader reads them,
/// so the test writes real ones and points the example at them.
const TCP_ROUTER_FILES: &[(&str, TcpRouterFile)] = &[
    (
        "/var/vcap/jobs/tcp_router/config/certs/uaa/ca.crt",
        TcpRouterFile::Ca,
    ),
    (
        "/var/vcap/jobs/tcp_router/config/certs/routing-api/client.crt",
        TcpRouterFile::ClientCert,
    ),
    (
        "/var/vcap/jobs/tcp_router/config/certs/routing-api/ca_cert.crt",
        TcpRouterFile::Ca,
    ),
    (
        "/var/vcap/jobs/tcp_router/config/keys/routing-api/client.key",
        TcpRouterFile::ClientKey,
    ),
    (
        "/var/vcap/jobs/tcp_router/config/certs/tcp-router/backend/ca.crt",
        TcpRouterFile::Ca,
    ),
    (
        "/var/vcap/jobs/tcp_router/config/keys/tcp-router/backend/client_cert_and_key.pem",
        TcpRouterFile::ClientCertAndKey,
    ),
];

#[derive(Clone, Copy)]
enum TcpRouterFile {
    Ca,
    ClientCert,
    ClientKey,
    ClientCertAndKey,
}

/// `tcp-router.yml` with its certificate paths (and only those) pointing at fresh files in
/// `dir`; also returns the new path of each.
fn tcp_router_example_with_files(dir: &Path, text: &str) -> (String, Vec<PathBuf>) {
    let ca = TestCa::new("examples-tcp-router-ca");
    let (cert, key) = ca.issue_client("tcp_router");
    let mut text = text.to_string();
    let mut paths = Vec::new();
    for (i, (original, kind)) in TCP_ROUTER_FILES.iter().enumerate() {
        assert!(
            text.contains(original),
            "tcp-router.yml no longer names {original}"
        );
        let contents = match kind {
            TcpRouterFile::Ca => ca.cert_pem(),
            TcpRouterFile::ClientCert => cert.clone(),
            TcpRouterFile::ClientKey => key.clone(),
            TcpRouterFile::ClientCertAndKey => format!("{cert}{key}"),
        };
        let name = Path::new(original).file_name().expect("file name");
        let file = write(dir, &format!("{i}-{}", name.to_string_lossy()), &contents);
        text = text.replace(original, &file.display().to_string());
        paths.push(file);
    }
    let live_vcap: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("/var/vcap/"))
        .collect();
    assert!(
        live_vcap.is_empty(),
        "tcp-router.yml has /var/vcap paths the test does not provide: {live_vcap:?}"
    );
    (text, paths)
}

#[test]
fn tcp_router_example_loads_with_every_key_known() {
    use tcp_router::config::Config;

    let dir = TempDir::new("examples-tcp-router");
    let (text, files) = tcp_router_example_with_files(dir.path(), &read_example("tcp-router.yml"));
    let path = write(dir.path(), "tcp_router.yml", &text);
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
    assert!(c.unknown_keys.is_empty(), "unknown: {:?}", c.unknown_keys);
    assert!(c.warnings.is_empty(), "warnings: {:?}", c.warnings);

    assert_eq!(
        c.routing_api.url,
        "https://routing-api.service.cf.internal:3001"
    );
    assert_eq!(c.routing_api.tls.client_cert_file.as_ref(), Some(&files[1]));
    assert_eq!(c.routing_api.tls.ca_file.as_ref(), Some(&files[2]));
    assert_eq!(c.routing_api.tls.client_key_file.as_ref(), Some(&files[3]));
    let oauth = c.routing_api.oauth.as_ref().expect("auth is on");
    assert_eq!(oauth.url, "https://uaa.service.cf.internal:8443");
    assert_eq!(oauth.client_name, "tcp_router");
    assert_eq!(oauth.tls.ca_file.as_ref(), Some(&files[0]));
    assert!(!oauth.tls.skip_verification);
    assert!(c.backend_tls.is_some(), "backend_tls.enabled");
    assert!(c.isolation_segments.is_empty());
    assert_eq!(c.reserved_system_component_ports.len(), 23);
    assert_eq!(c.drain_wait, Duration::from_secs(20));
    assert_eq!(c.health_check_port, 80);
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(c.connect_timeout, Duration::from_secs(30));
    assert_eq!(c.max_connections, 64000);
    assert!(!c.fail_on_router_port_conflicts);
    assert_eq!(c.log_level, "info");
    assert_eq!(c.bind_address.to_string(), "0.0.0.0");

    let all = Config::from_yaml(&uncomment_marked(&text))
        .expect("the example with its unsupported keys still loads");
    assert_marked_keys_are_reported(&text, &all.unknown_keys, &all.warnings);
}

#[test]
fn route_emitter_example_loads_with_every_key_known() {
    use route_emitter::config::{HealthCheck, RouteKind, Transport};

    let path = example_path("route-emitter.yml");
    let (c, unknown) =
        route_emitter::config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(unknown.is_empty(), "unknown: {unknown:?}");

    assert_eq!(c.host, "10.0.16.9");
    assert_eq!(c.availability_zone, "z1");
    assert_eq!(c.message_bus_servers.len(), 1);
    assert_eq!(
        c.message_bus_servers[0].host,
        "nats.service.cf.internal:4224"
    );
    let nats_tls = c.nats_tls.as_ref().expect("nats_mtls_config.enabled");
    assert_eq!(
        nats_tls.ca_path,
        Path::new("/var/vcap/jobs/route_registrar/config/nats/certs/server_ca.crt")
    );
    let api = c.routing_api.as_ref().expect("routing_api");
    assert_eq!(api.api_url, "https://routing-api.service.cf.internal:3001");
    assert_eq!(api.oauth_url, "https://uaa.service.cf.internal:8443");
    assert_eq!(api.client_id, "routing_api_client");
    assert_eq!(api.max_ttl, Duration::from_secs(120));
    assert_eq!(c.unregistration_message_limit, 5);
    assert_eq!(c.dynamic_config_globs.len(), 1);

    let kinds: Vec<(RouteKind, Transport)> =
        c.routes.iter().map(|r| (r.kind, r.transport)).collect();
    assert_eq!(
        kinds,
        vec![
            (RouteKind::Http, Transport::Nats),
            (RouteKind::Tcp, Transport::Nats),
            (RouteKind::Sni, Transport::Nats),
        ]
    );
    let uaa = &c.routes[0];
    assert_eq!(uaa.host, "10.0.16.9", "the top-level host");
    assert_eq!(uaa.availability_zone, "z1");
    assert_eq!((uaa.port, uaa.tls_port), (Some(8080), Some(8443)));
    assert_eq!(uaa.uris.len(), 4);
    assert_eq!(uaa.lb_algo, "least-connection");
    assert_eq!(uaa.registration_interval, Duration::from_secs(10));
    assert_eq!(
        uaa.health_check,
        Some(HealthCheck::Script {
            name: "uaa-healthchecker".into(),
            script_path: "/var/vcap/jobs/uaa/bin/health_check".into(),
            timeout: Duration::from_secs(5),
        })
    );
    assert_eq!(c.routes[1].external_port, Some(1025));
    assert_eq!(c.routes[2].sni_port, Some(5432));

    let text = read_example("route-emitter.yml");
    let (schema, all_unknown) = route_emitter::config::parse(&uncomment_marked(&text))
        .expect("the example with its unsupported keys still parses");
    schema
        .into_config()
        .expect("the example with its unsupported keys is still valid");
    assert_marked_keys_are_reported(&text, &all_unknown, &[]);
}

/// Keys diego-release's `locket` job renders that locket accepts without acting on, with the
/// job's values; examples/README.md names them (locket.json cannot hold comments).
const LOCKET_RENDERED_UNSUPPORTED: &[(&str, &str)] = &[
    ("report_interval", r#""1m""#),
    ("debug_address", r#""127.0.0.1:17018""#),
    ("loggregator", r#"{"loggregator_use_v2_api": false}"#),
];

#[test]
fn locket_example_loads_with_every_key_known() {
    use locket::config::LocketConfig;

    let path = example_path("locket.json");
    let c = LocketConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(c.unknown_keys.is_empty(), "unknown: {:?}", c.unknown_keys);
    assert!(c.ignored_keys.is_empty(), "ignored: {:?}", c.ignored_keys);

    assert_eq!(c.listen_address, "0.0.0.0:8891");
    assert_eq!(
        c.ca_file,
        Path::new("/var/vcap/jobs/locket/config/certs/ca.crt")
    );
    assert_eq!(c.database_driver, "mysql");
    assert_eq!(c.max_open_database_connections, 200);
    assert_eq!(
        c.max_database_connection_lifetime,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        c.sql_ca_cert_file.as_deref(),
        Some(Path::new("/var/vcap/jobs/locket/config/certs/sql/ca.crt"))
    );
    assert!(c.sql_enable_identity_verification);
    assert_eq!(c.log_level, "info");
    assert_eq!(format!("{:?}", c.time_format), "Rfc3339");

    // With the rendered keys it does not act on, it still loads and reports each of them.
    let mut doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&read_example("locket.json")).expect("locket.json is JSON");
    for (key, value) in LOCKET_RENDERED_UNSUPPORTED {
        let value = serde_json::from_str(value).expect("JSON value");
        assert!(
            doc.insert(key.to_string(), value).is_none(),
            "{key} is in locket.json"
        );
    }
    let all = LocketConfig::from_map(&doc).expect("loads with the unsupported keys");
    let mut reported: Vec<&str> = all
        .ignored_keys
        .iter()
        .chain(&all.unknown_keys)
        .map(String::as_str)
        .collect();
    reported.sort_unstable();
    let mut expected: Vec<&str> = LOCKET_RENDERED_UNSUPPORTED
        .iter()
        .map(|(k, _)| *k)
        .collect();
    expected.sort_unstable();
    assert_eq!(reported, expected);
}

#[test]
fn marked_key_paths_follow_indentation_lists_and_block_scalars() {
    let text = "a: 1\nsec:\n  #~ x: 1\n  pem: |\n    #~ not: a key\n  #~ y:\n  #~   z: 2\nlist:\n- name: n\n  #~ w: 3\n#~ top: [1]\n";
    assert_eq!(
        marked_key_paths(text),
        vec!["sec.x", "sec.y", "sec.y.z", "list.w", "top"]
    );
    assert_eq!(
        normalize("routes.0.health_check.?.privileged"),
        "routes.health_check.privileged"
    );
}
