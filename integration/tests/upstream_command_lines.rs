//! Each binary started the way routing-release starts upstream's: the exact argument list of the
//! job template (copied here as data, with `{config}` for the rendered file's path) and a config
//! with upstream's keys; then it must serve, log upstream's JSON lines, and answer bad command
//! lines with Go's exit codes and upstream's messages.

use std::time::Duration;

use integration::nats::next_message;
use integration::route_emitter::RouteEmitterBuilder;
use integration::routing_api::{Database, RoutingApi, RoutingApiBuilder};
use integration::tcp_router::{TcpBackend, TcpRouterBuilder, TcpRoutes};
use integration::util::{closed_port, free_port, TempDir};
use integration::{route, EchoBackend, Gorouter, NatsClient, NatsServer};
use serde_json::{json, Value};

/// routing-release `jobs/gorouter/templates/bpm.yml.erb`.
const GOROUTER_BPM_ARGS: &[&str] = &["-c", "{config}"];

/// Keys `gorouter.yml.erb` renders with the job's defaults (values as BOSH writes them), merged
/// over the harness's ports, NATS and loopback addresses. Keys for features we do not have
/// (metrics, `debug_addr`, ...) load with a warning.
const GOROUTER_RENDERED: &str = r#"
zone: z1
go_max_procs: 8
trace_key: "22"
debug_addr: 127.0.0.1:17002
secure_cookies: false
sticky_session_cookie_names: [JSESSIONID]
publish_start_message_interval: 30s
prune_stale_droplets_interval: 30s
droplet_stale_threshold: 120s
publish_active_apps_interval: 0s
suspend_pruning_if_nats_unavailable: true
route_latency_metric_muzzle_duration: 30s
frontend_idle_timeout: 900s
read_header_timeout: 0s
drain_wait: 0s
drain_timeout: 900s
healthcheck_user_agent: HTTP-Monitor/1.1
endpoint_timeout: 900s
endpoint_dial_timeout: 5s
websocket_dial_timeout: 5s
tls_handshake_timeout: 10s
start_response_delay_interval: 0s
load_balancer_healthy_threshold: 20s
balancing_algorithm: round-robin
balancing_algorithm_az_preference: none
forwarded_client_cert: always_forward
isolation_segments: []
routing_table_sharding_mode: all
route_services_timeout: 60s
route_services_secret: ""
route_services_secret_decrypt_only: ""
route_services_recommend_https: true
route_services_hairpinning: false
route_services_internal_server_port: 7070
route_services_hairpinning_allowlist: []
route_services:
  max_attempts: 3
  cert_chain: ""
  private_key: ""
  strict_signature_validation: false
skip_ssl_validation: false
extra_headers_to_log: []
max_header_bytes: 1048576
token_fetcher_max_retries: 3
token_fetcher_retry_interval: 5s
token_fetcher_expiration_buffer_time: 30
force_forwarded_proto_https: false
sanitize_forwarded_proto: false
hop_by_hop_headers_to_filter: []
empty_pool_response_code_503: true
empty_pool_timeout: 0s
disable_keep_alives: false
max_idle_conns: 100
max_idle_conns_per_host: 100
backends:
  max_attempts: 3
  max_conns: 500
oauth:
  token_endpoint: uaa.service.cf.internal
  client_name: gorouter
  client_secret: secret
  port: -1
  skip_ssl_validation: false
logging:
  syslog: vcap.gorouter
  level: info
  format:
    timestamp: rfc3339
"#;

/// routing-release `jobs/routing-api/templates/bpm.yml.erb` (with `routing_api.auth_disabled`).
const ROUTING_API_BPM_ARGS: &[&str] = &[
    "-config",
    "{config}",
    "-logLevel",
    "info",
    "-timeFormat",
    "rfc3339",
    "-ip",
    "127.0.0.1",
    "-devMode",
];

/// routing-release `jobs/tcp_router/templates/tcp_router_ctl.erb`, rendered with the job's
/// defaults (`tcp_router.debug_address`, `tcp_stats_collection_interval`, `metron.port`,
/// `fail_on_router_port_conflicts`).
const TCP_ROUTER_CTL_ARGS: &[&str] = &[
    "-debugAddr=127.0.0.1:17002",
    "-logLevel=info",
    "-timeFormat=rfc3339",
    "-tcpLoadBalancerConfig=/var/vcap/data/tcp_router/config/haproxy.conf",
    "-tcpLoadBalancerBaseConfig=/var/vcap/jobs/tcp_router/config/haproxy.conf.template",
    "-config={config}",
    "-tcpLoadBalancerStatsUnixSocket=/var/vcap/data/tcp_router/config/haproxy.sock",
    "-haproxyReloader=/var/vcap/jobs/tcp_router/bin/haproxy_reloader",
    "-statsCollectionInterval=1m",
    "-dropsondePort=3457",
    "-routingGroupCheckExit=false",
];

/// routing-release `jobs/route_registrar/templates/bpm.yml.erb`.
const ROUTE_REGISTRAR_BPM_ARGS: &[&str] = &[
    "--configPath",
    "{config}",
    "-timeFormat",
    "rfc3339",
    "-logLevel",
    "info",
];

/// The JSON lines of a process's output (other lines, e.g. on stderr, are skipped).
fn log_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The first log line whose `message` is `message`.
fn line_with(output: &str, message: &str) -> Option<Value> {
    log_lines(output)
        .into_iter()
        .find(|l| l["message"] == message)
}

/// lager's `rfc3339` layout: `timestamp` (UTC, nanoseconds), `level`, `source`, `message`,
/// `data`, in that order.
fn assert_lager_rfc3339(line: &Value, raw_output: &str, source: &str) {
    let ts = line["timestamp"].as_str().unwrap_or_default();
    assert!(ts.len() == 30 && ts.ends_with('Z'), "timestamp {ts:?}");
    assert!(line["level"].is_string(), "{line}");
    assert_eq!(line["source"], source, "{line}");
    assert!(line["data"].is_object(), "{line}");
    let message = line["message"].as_str().unwrap_or_default();
    let raw = raw_output
        .lines()
        .find(|l| l.contains(&format!("\"message\":\"{message}\"")))
        .unwrap_or_default();
    assert!(raw.starts_with("{\"timestamp\":"), "field order: {raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorouter_serves_under_its_bpm_command_line_and_a_rendered_config() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(GOROUTER_RENDERED)
        .args(GOROUTER_BPM_ARGS)
        .start()
        .await;
    let backend = EchoBackend::start("rendered").await;
    NatsClient::connect(&nats)
        .await
        .register(&route("rendered.cmdline.example.com", backend.port()))
        .await;
    let r = router.wait_route("rendered.cmdline.example.com").await;
    assert_eq!(r.header("X-Backend-Name"), Some("rendered"), "{}", r.dump());
    let out = router.output();
    // zap's layout: log_level, timestamp, message, source (`logging.syslog`), data.
    let started = line_with(&out, "gorouter.started")
        .unwrap_or_else(|| panic!("no gorouter.started line:\n{out}"));
    assert_eq!(started["source"], "vcap.gorouter", "{started}");
    assert_eq!(started["log_level"], 1, "{started}");
    let ts = started["timestamp"].as_str().unwrap_or_default();
    assert!(
        ts.len() == 30 && ts.ends_with('Z'),
        "rfc3339 timestamp {ts:?}"
    );
    let raw = out
        .lines()
        .find(|l| l.contains("\"message\":\"gorouter.started\""))
        .unwrap_or_default();
    assert!(raw.starts_with("{\"log_level\":1,\"timestamp\":"), "{raw}");
    let segments = line_with(&out, "retrieved-isolation-segments").expect("isolation segments");
    assert_eq!(
        segments["data"]["routing_table_sharding_mode"], "all",
        "{segments}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorouter_bad_flag_exits_2_and_bad_config_1_with_upstreams_message() {
    let nats = NatsServer::start().await;
    let (status, out) = Gorouter::builder(&nats)
        .args(&["-c", "{config}", "-config", "{config}"])
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("flag provided but not defined: -config\nUsage of gorouter:\n  -c string\n"),
        "{out}"
    );
    let (status, out) = Gorouter::builder(&nats)
        .yaml("balancing_algorithm: fastest")
        .args(GOROUTER_BPM_ARGS)
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert_eq!(status.code(), Some(1), "{out}");
    let line = line_with(&out, "Error loading config:")
        .unwrap_or_else(|| panic!("no `Error loading config:` line:\n{out}"));
    assert!(
        line["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("balancing_algorithm")),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_serves_under_its_bpm_command_line() {
    let dir = TempDir::new("it-cmdline-rapi");
    let api = RoutingApiBuilder::new(Database::sqlite(dir.path().join("routing-api.db")))
        .command_line(ROUTING_API_BPM_ARGS)
        .start()
        .await;
    let r = api.get("/routing/v1/router_groups").await;
    assert_eq!(r.status, 200, "{}", r.dump());
    let log = api.log();
    let started = line_with(&log, "routing-api.started").expect("routing-api.started");
    assert_lager_rfc3339(&started, &log, "routing-api");
    assert_eq!(started["level"], "info");
    assert_eq!(started["data"]["port"], api.http_port, "{started}");
    for lifecycle in [
        "routing-api.locket-lock.started",
        "routing-api.locket-lock.acquired-lock",
        "routing-api.migration.starting-migration",
        "routing-api.migration.finished-migration",
    ] {
        assert!(
            line_with(&log, lifecycle).is_some(),
            "no {lifecycle}:\n{log}"
        );
    }
}

/// Runs routing-api with `args` and a config whose database is a closed port; its exit status
/// and output.
async fn routing_api_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    let db = Database::Mysql {
        host: "127.0.0.1".into(),
        port: closed_port(),
        schema: "unused".into(),
        user: "root".into(),
        password: String::new(),
    };
    let mut api = RoutingApiBuilder::new(db).command_line(args).spawn();
    let status = api.wait_exit(Duration::from_secs(20)).await;
    (status, api.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_without_config_or_ip_exits_1_naming_what_is_missing() {
    let (status, out) = routing_api_exit(&["-ip", "127.0.0.1"]).await;
    assert_eq!(status.code(), Some(1), "{out}");
    let line = line_with(&out, "routing-api.failed-check-flags").expect("failed-check-flags");
    assert_eq!(line["data"]["error"], "No configuration file provided");
    assert_eq!(line["log_level"], 2, "lager's default epoch layout: {line}");

    let (status, out) = routing_api_exit(&["-config", "{config}"]).await;
    assert_eq!(status.code(), Some(1), "{out}");
    let line = line_with(&out, "routing-api.failed-check-flags").expect("failed-check-flags");
    assert_eq!(line["data"]["error"], "No ip address provided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_takes_ip_as_text_and_reports_an_unreachable_database() {
    // Upstream's suite passes `-ip='1.1.1.1'` (quotes included) and expects the SQL error.
    let (status, out) =
        routing_api_exit(&["-config={config}", "-ip='1.1.1.1'", "-devMode=true"]).await;
    assert_eq!(status.code(), Some(1), "{out}");
    let line = line_with(&out, "routing-api.failed-initialize-sql-connection")
        .unwrap_or_else(|| panic!("no failed-initialize-sql-connection line:\n{out}"));
    assert!(
        line["data"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_unknown_flag_and_bad_bool_exit_2_like_go() {
    let (status, out) =
        routing_api_exit(&["-config", "{config}", "-ip", "1.2.3.4", "-verbose"]).await;
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("flag provided but not defined: -verbose\nUsage of routing-api:\n"),
        "{out}"
    );
    let (status, out) = routing_api_exit(&["-config", "{config}", "-devMode=maybe"]).await;
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("invalid boolean value \"maybe\" for -devMode"),
        "{out}"
    );
    let (status, out) = routing_api_exit(&["-config", "{config}", "-timeFormat", "iso8601"]).await;
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("invalid value \"iso8601\" for flag -timeFormat"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_router_forwards_under_its_ctl_script_command_line() {
    let dir = TempDir::new("it-cmdline-tcp");
    let api = RoutingApi::start(Database::sqlite(dir.path().join("routing-api.db"))).await;
    let mut router = TcpRouterBuilder::new(&api)
        .command_line(TCP_ROUTER_CTL_ARGS)
        .spawn();
    router.wait_ready(Duration::from_secs(20)).await;
    let routes = TcpRoutes::new(&api).await;
    let backend = TcpBackend::echo("cmdline").await;
    let port = free_port();
    routes.create(&[routes.route(port, backend.port())]).await;
    router.wait_routed(port, Duration::from_secs(10)).await;
    assert_eq!(
        integration::tcp_router::greeting(port)
            .await
            .expect("greeting"),
        "cmdline"
    );
    let out = router.output();
    let started = line_with(&out, "tcp-router.started").expect("tcp-router.started");
    assert_lager_rfc3339(&started, &out, "tcp-router");
    // HAProxy's and dropsonde's flags are accepted and said to be unused, each by name.
    let unused: Vec<String> = log_lines(&out)
        .iter()
        .filter(|l| l["message"] == "flag-not-used")
        .filter_map(|l| l["data"]["flag"].as_str().map(String::from))
        .collect();
    for flag in [
        "-debugAddr",
        "-tcpLoadBalancerConfig",
        "-tcpLoadBalancerBaseConfig",
        "-tcpLoadBalancerStatsUnixSocket",
        "-haproxyReloader",
        "-statsCollectionInterval",
        "-dropsondePort",
    ] {
        assert!(
            unused.iter().any(|u| u == flag),
            "{flag} not reported: {unused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_router_bad_flag_value_exits_2() {
    let (status, out) = TcpRouterBuilder::for_api_port(closed_port())
        .command_line(&["-config={config}", "-dropsondePort=metron"])
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("invalid value \"metron\" for flag -dropsondePort: parse error"),
        "{out}"
    );
}

/// What `registrar_settings.json.erb` renders for one HTTP route, without a Routing API link
/// and with NATS over plain TCP (paths of files that are then never read included).
fn rendered_registrar_settings(nats: &NatsServer) -> Value {
    json!({
        "message_bus_servers": [{"host": format!("127.0.0.1:{}", nats.port()), "user": "nats", "password": "nats-pass"}],
        "nats_mtls_config": {
            "enabled": false,
            "cert_path": "/var/vcap/jobs/route_registrar/config/nats/certs/client.crt",
            "key_path": "/var/vcap/jobs/route_registrar/config/nats/certs/client_private.key",
            "ca_path": "/var/vcap/jobs/route_registrar/config/nats/certs/server_ca.crt"
        },
        "host": "127.0.0.1",
        "routes": [{
            "name": "uaa",
            "port": 8080,
            "registration_interval": "1s",
            "tags": {"component": "uaa"},
            "uris": ["uaa.cmdline.example.com"]
        }],
        "dynamic_config_globs": [],
        "routing_api": {
            "ca_certs": "/var/vcap/jobs/route_registrar/config/certs/ca.crt",
            "client_cert_path": "/var/vcap/jobs/route_registrar/config/routing_api/certs/client.crt",
            "client_private_key_path": "/var/vcap/jobs/route_registrar/config/routing_api/keys/client_private.key",
            "server_ca_cert_path": "/var/vcap/jobs/route_registrar/config/routing_api/certs/server_ca.crt",
            "max_ttl": "120s",
            "skip_ssl_validation": false
        },
        "availability_zone": "z1"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_emitter_registers_under_route_registrars_command_line() {
    let nats = NatsServer::start().await;
    let client = NatsClient::connect(&nats).await;
    let mut registers = client.subscribe("router.register").await;
    let mut builder = RouteEmitterBuilder::new(None).command_line(ROUTE_REGISTRAR_BPM_ARGS);
    for (key, value) in rendered_registrar_settings(&nats)
        .as_object()
        .expect("object")
    {
        builder = builder.set(key, value.clone());
    }
    let emitter = builder.start();
    let message: Value =
        serde_json::from_str(&next_message(&mut registers, Duration::from_secs(10)).await)
            .expect("registration JSON");
    assert_eq!(message["uris"], json!(["uaa.cmdline.example.com"]));
    assert_eq!(message["port"], 8080);
    let out = emitter.output();
    let running = line_with(&out, "Route Registrar.Running")
        .unwrap_or_else(|| panic!("no Route Registrar.Running line:\n{out}"));
    assert_lager_rfc3339(&running, &out, "Route Registrar");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_emitter_pidfile_flag_writes_the_pid() {
    let nats = NatsServer::start().await;
    let builder = RouteEmitterBuilder::new(Some(&nats));
    let pidfile = builder.dir().join("route_registrar.pid");
    let pidfile_arg = format!("-pidfile={}", pidfile.display());
    let emitter = builder
        .command_line(&["-configPath", "{config}", &pidfile_arg])
        .start();
    let written =
        integration::util::eventually("the pid file", Duration::from_secs(10), || async {
            std::fs::read_to_string(&pidfile)
                .ok()
                .filter(|s| !s.is_empty())
        })
        .await;
    assert_eq!(written, emitter.pid().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_whose_stdout_is_closed_ends_as_go_does_on_the_next_log_line() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let dir = TempDir::new("it-cmdline-epipe");
    let [http, mtls, admin] = integration::util::free_ports::<3>();
    let config = dir.path().join("routing-api.yml");
    std::fs::write(
        &config,
        format!(
            "api: {{listen_port: {http}, http_enabled: true, mtls_listen_port: {mtls}}}\n\
             bind_address: 127.0.0.1\nadmin_port: {admin}\nlog_guid: epipe\nsystem_domain: example.com\n\
             uuid: epipe-uuid\nsqldb: {{type: sqlite, schema: '{}'}}\n",
            dir.path().join("db.sqlite").display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(integration::routing_api::binary("routing-api"))
        .arg("-config")
        .arg(&config)
        .args(["-ip", "127.0.0.1", "-devMode"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn routing-api");
    let serving = integration::util::poll(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { RoutingApi::port_bound(http).await.then_some(()) },
    )
    .await;
    assert!(serving.is_some(), "routing-api did not listen on {http}");
    // The reader goes away; the start-up lines sit in the pipe's buffer.
    drop(child.stdout.take());
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: signalling our own child; SIGTERM makes it log `received-signal`.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = integration::util::within("routing-api to end", Duration::from_secs(10), async {
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status}");
}
