//! The `route-emitter` binary's `/metrics` (the `prometheus` config block), scraped over HTTP as
//! Prometheus scrapes it, while the emitter registers routes for real:
//!
//! - over NATS: a nats-server of the test's own on a free loopback port (`router.*` subjects are
//!   global, so on the shared server on 4222 another test's router would answer our greeting or
//!   force re-registrations, and our greeting answer would change other emitters' schedules);
//!   the test subscribes to `router.register` / `router.unregister` and the counters must equal
//!   what it received;
//! - to the Routing API: a small HTTP server of the test's own on loopback answering the
//!   endpoints the emitter calls (router group lookup, TCP route create/delete, HTTP route
//!   upsert), refusing one HTTP route with 400 so that failures are counted too. (The real
//!   Routing API with the emitter is tested end to end by the integration crate and the compose
//!   test.)
//!
//! A `prometheus` block with only some of its TLS files is a config error listed with the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// Upper bound for anything the emitter should do "at once"; generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(20);
/// Upper bound for one scrape of `/metrics`.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server of the test's own, killed on drop.
struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    fn start() -> NatsServer {
        let port = free_port();
        let child = Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server ({NATS_SERVER}): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on 127.0.0.1:{port} within 10s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer { child, port }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts `router.register` and `router.unregister` messages on a NATS server, and answers
/// `router.greet` as a router would (minimum register interval 0: the routes' own intervals
/// apply), so the emitter does not give up greeting.
struct Router {
    registers: Arc<AtomicUsize>,
    unregisters: Arc<AtomicUsize>,
    /// Every URI seen in a `router.register`.
    registered_uris: Arc<Mutex<Vec<String>>>,
}

impl Router {
    async fn start(nats: &NatsServer) -> Router {
        let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
            .await
            .expect("connect to the test's nats-server");
        let router = Router {
            registers: Arc::default(),
            unregisters: Arc::default(),
            registered_uris: Arc::default(),
        };
        let mut registers = client.subscribe("router.register").await.unwrap();
        let mut unregisters = client.subscribe("router.unregister").await.unwrap();
        let mut greets = client.subscribe("router.greet").await.unwrap();
        client.flush().await.unwrap();
        let (count, uris) = (router.registers.clone(), router.registered_uris.clone());
        tokio::spawn(async move {
            while let Some(msg) = registers.next().await {
                let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
                let mut seen = uris.lock().unwrap();
                for uri in v["uris"].as_array().into_iter().flatten() {
                    seen.push(uri.as_str().unwrap_or_default().to_string());
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        let count = router.unregisters.clone();
        tokio::spawn(async move {
            while unregisters.next().await.is_some() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::spawn(async move {
            while let Some(msg) = greets.next().await {
                if let Some(reply) = msg.reply {
                    let answer = r#"{"id":"test-router","hosts":["127.0.0.1"],"minimumRegisterIntervalInSeconds":0,"prunedStaleDropletsIntervalInSeconds":120}"#;
                    let _ = client.publish(reply, answer.into()).await;
                }
            }
        });
        router
    }

    fn registers(&self) -> usize {
        self.registers.load(Ordering::SeqCst)
    }

    fn unregisters(&self) -> usize {
        self.unregisters.load(Ordering::SeqCst)
    }

    fn saw_uri(&self, uri: &str) -> bool {
        self.registered_uris
            .lock()
            .unwrap()
            .iter()
            .any(|u| u == uri)
    }
}

/// What the Routing API stand-in was asked.
#[derive(Default)]
struct ApiLog {
    /// `backend_port` of every TCP route mapping created, and deleted.
    tcp_created: Vec<u64>,
    tcp_deleted: Vec<u64>,
    /// HTTP route upserts refused with 400.
    rejections: usize,
}

/// An HTTP/1.1 server on loopback answering the Routing API calls the emitter makes: router
/// group `default-tcp` exists; TCP route creates and deletes succeed; an HTTP route upsert is
/// refused with 400 when it names `rejected.example.com` (accepted otherwise).
struct RoutingApi {
    port: u16,
    log: Arc<Mutex<ApiLog>>,
}

impl RoutingApi {
    async fn start() -> RoutingApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(ApiLog::default()));
        let shared = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_api_connection(stream, shared.clone()));
            }
        });
        RoutingApi { port, log }
    }

    fn log<T>(&self, f: impl FnOnce(&ApiLog) -> T) -> T {
        f(&self.log.lock().unwrap())
    }
}

/// Serves one keep-alive connection: requests one after the other until the client closes.
async fn serve_api_connection(stream: TcpStream, log: Arc<Mutex<ApiLog>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let ports = || -> Vec<u64> {
            json.as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["backend_port"].as_u64())
                .collect()
        };
        let (status, answer) = match (method, target) {
            ("GET", "/routing/v1/router_groups?name=default-tcp") => (
                "200 OK",
                r#"[{"guid":"rg-default-tcp","name":"default-tcp","type":"tcp","reservable_ports":"1024-1033"}]"#,
            ),
            ("POST", "/routing/v1/tcp_routes/create") => {
                log.lock().unwrap().tcp_created.extend(ports());
                ("200 OK", "")
            }
            ("POST", "/routing/v1/tcp_routes/delete") => {
                log.lock().unwrap().tcp_deleted.extend(ports());
                ("200 OK", "")
            }
            ("POST", "/routing/v1/routes") if json.to_string().contains("rejected.example.com") => {
                log.lock().unwrap().rejections += 1;
                (
                    "400 Bad Request",
                    r#"{"name":"RouteInvalidError","message":"refused by the test"}"#,
                )
            }
            ("POST" | "DELETE", "/routing/v1/routes") => ("200 OK", ""),
            _ => (
                "404 Not Found",
                r#"{"name":"ResourceNotFoundError","message":"not in the test"}"#,
            ),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if reader
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The binary on a config file, killed on drop; its output goes to a file printed on failure.
struct Emitter {
    child: Child,
    dir: tempfile::TempDir,
    metrics_port: u16,
}

impl Emitter {
    /// Starts `route-emitter -config <config>` with `prometheus: {port: <free>}` added.
    fn start(mut config: serde_json::Value, dir: tempfile::TempDir) -> Emitter {
        let metrics_port = free_port();
        config["prometheus"] = serde_json::json!({"port": metrics_port});
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let out = std::fs::File::create(dir.path().join("output")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_route-emitter"))
            .arg("-config")
            .arg(&path)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn route-emitter");
        Emitter {
            child,
            dir,
            metrics_port,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output")).unwrap_or_default()
    }

    /// A route file in the emitter's `dynamic_config_globs` directory.
    fn route_file(dir: &Path) -> PathBuf {
        dir.join("routes.yml")
    }

    /// Scrapes until `check` accepts the body (it returns the lines it still misses), or fails
    /// the test after [`WAIT`] with what was missing.
    async fn scrape_until(&self, mut check: impl FnMut(&str) -> Vec<String>) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
            let (missing, body) = match prometheus_endpoint::scrape(addr, SCRAPE_TIMEOUT).await {
                Ok(scrape) if scrape.status == 200 => (check(&scrape.body), scrape.body),
                Ok(scrape) => (
                    vec![format!("(status {} on the metrics port)", scrape.status)],
                    scrape.body,
                ),
                Err(e) => (
                    vec![format!("(no answer on the metrics port: {e})")],
                    String::new(),
                ),
            };
            if missing.is_empty() {
                return body;
            }
            if Instant::now() > deadline {
                panic!(
                    "/metrics still lacks {missing:?} after {WAIT:?}:\n{body}\n---- emitter output ----\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `want` that are not whole lines of `body`.
fn missing_lines(body: &str, want: &[String]) -> Vec<String> {
    want.iter()
        .filter(|l| !body.lines().any(|b| b == l.as_str()))
        .cloned()
        .collect()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn nats_config(nats: &NatsServer, dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "host": "127.0.0.1",
        "message_bus_servers": [{"host": format!("127.0.0.1:{}", nats.port)}],
        "unregistration_message_limit": 1,
        "dynamic_config_globs": [dir.join("*.yml")],
        "routes": [],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_registrations_unregistrations_and_kept_routes_are_counted() {
    let nats = NatsServer::start();
    let router = Router::start(&nats).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = nats_config(&nats, dir.path());
    config["routes"] = serde_json::json!([
        {"name": "a", "port": 9000, "uris": ["a.example.com"], "registration_interval": "1h"},
    ]);
    std::fs::write(
        Emitter::route_file(dir.path()),
        "routes: [{name: b, port: 9001, uris: [b.example.com], registration_interval: 1h}]\n",
    )
    .unwrap();
    let emitter = Emitter::start(config, dir);

    emitter
        .scrape_until(|body| {
            missing_lines(
                body,
                &["route_emitter_routes{destination=\"nats\",type=\"http\"} 2".into()],
            )
        })
        .await;
    wait_until("both routes registered over NATS", || {
        router.saw_uri("a.example.com") && router.saw_uri("b.example.com")
    })
    .await;
    // The file's route leaves: unregistered once (unregistration_message_limit 1).
    std::fs::remove_file(Emitter::route_file(emitter.dir.path())).unwrap();
    wait_until("b unregistered", || router.unregisters() == 1).await;

    // The counters equal what NATS delivered (a connect or greeting may re-register at once,
    // so the number of registrations is read from the subscriber, not assumed).
    emitter
        .scrape_until(|body| {
            missing_lines(
                body,
                &[
                    format!(
                        "route_emitter_registrations_total{{destination=\"nats\"}} {}",
                        router.registers()
                    ),
                    "route_emitter_unregistrations_total{destination=\"nats\"} 1".into(),
                    "route_emitter_failures_total{destination=\"nats\"} 0".into(),
                    "route_emitter_routes{destination=\"nats\",type=\"http\"} 1".into(),
                    "route_emitter_registrations_total{destination=\"routing_api\"} 0".into(),
                    "# TYPE route_emitter_registrations counter".into(),
                    "# TYPE route_emitter_routes gauge".into(),
                ],
            )
        })
        .await;
    assert!(router.registers() >= 2, "{}", router.registers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_results_are_counted_and_a_failing_route_is_not_emitted() {
    let nats = NatsServer::start();
    let router = Router::start(&nats).await;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = backend.local_addr().unwrap().port();
    // Bound but never listening: connections are refused for as long as the test holds it,
    // and no other test can take the port meanwhile (a merely free port could be, and pass).
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let down_port = refusing.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = nats_config(&nats, dir.path());
    // One check each: their interval is longer than the test.
    config["routes"] = serde_json::json!([
        {"name": "up", "port": up_port, "uris": ["up.example.com"], "registration_interval": "1h",
         "health_check": {"type": "tcp", "interval": "1h", "timeout": "2s"}},
        {"name": "down", "port": down_port, "uris": ["down.example.com"], "registration_interval": "1h",
         "health_check": {"type": "tcp", "interval": "1h", "timeout": "2s"}},
    ]);
    let emitter = Emitter::start(config, dir);

    emitter
        .scrape_until(|body| {
            missing_lines(
                body,
                &[
                    "route_emitter_health_checks_total{result=\"pass\"} 1".into(),
                    "route_emitter_health_checks_total{result=\"fail\"} 1".into(),
                    "route_emitter_routes{destination=\"nats\",type=\"http\"} 1".into(),
                ],
            )
        })
        .await;
    wait_until("the healthy route registered", || {
        router.saw_uri("up.example.com")
    })
    .await;
    emitter
        .scrape_until(|body| {
            missing_lines(
                body,
                &[format!(
                    "route_emitter_registrations_total{{destination=\"nats\"}} {}",
                    router.registers()
                )],
            )
        })
        .await;
    assert!(!router.saw_uri("down.example.com"));
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_upserts_deletes_failures_and_kept_routes_are_counted() {
    let api = RoutingApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "host": "127.0.0.1",
        "routing_api": {"api_url": format!("http://127.0.0.1:{}", api.port), "max_ttl": "120s"},
        "unregistration_message_limit": 1,
        "dynamic_config_globs": [dir.path().join("*.yml")],
        "routes": [
            {"type": "tcp", "name": "t", "port": 9000, "router_group": "default-tcp",
             "external_port": 1024, "registration_interval": "1h"},
            {"name": "bad", "port": 9002, "uris": ["rejected.example.com"],
             "registration_interval": "1h"},
        ],
    });
    std::fs::write(
        Emitter::route_file(dir.path()),
        "routes: [{type: tcp, name: gone, port: 9001, router_group: default-tcp, external_port: 1025, registration_interval: 1h}]\n",
    )
    .unwrap();
    let emitter = Emitter::start(config, dir);

    wait_until("both TCP routes created and the HTTP route refused", || {
        api.log(|l| {
            l.tcp_created.contains(&9000) && l.tcp_created.contains(&9001) && l.rejections > 0
        })
    })
    .await;
    std::fs::remove_file(Emitter::route_file(emitter.dir.path())).unwrap();
    wait_until("the file's TCP route deleted", || {
        api.log(|l| l.tcp_deleted.contains(&9001))
    })
    .await;

    // The refused route is retried with a backoff: its failures must equal the refusals the
    // stand-in counted, read before and after the scrape so that a retry in between is seen.
    emitter
        .scrape_until(|body| {
            let before = api.log(|l| l.rejections);
            let mut missing = missing_lines(
                body,
                &[
                    "route_emitter_registrations_total{destination=\"routing_api\"} 2".into(),
                    "route_emitter_unregistrations_total{destination=\"routing_api\"} 1".into(),
                    format!("route_emitter_failures_total{{destination=\"routing_api\"}} {before}"),
                    "route_emitter_routes{destination=\"routing_api\",type=\"http\"} 1".into(),
                    "route_emitter_routes{destination=\"routing_api\",type=\"tcp\"} 1".into(),
                    "route_emitter_registrations_total{destination=\"nats\"} 0".into(),
                ],
            );
            if api.log(|l| l.rejections) != before {
                missing.push("(a retry came in while scraping)".into());
            }
            missing
        })
        .await;
    assert_eq!(api.log(|l| l.tcp_created.len()), 2, "one upsert each");
}

#[test]
fn a_prometheus_block_with_only_some_tls_files_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(
        &path,
        "host: 127.0.0.1\nmessage_bus_servers: [{host: '127.0.0.1:4222'}]\n\
         prometheus: {port: 9102, cert_path: /m.pem, key_path: /m.key}\nroutes: []\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_route-emitter"))
        .arg("-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains("prometheus: ca_path must be set when cert_path is"),
        "stderr: {stderr}"
    );
}
