//! tcp-router's metrics on the `prometheus` port, scraped over HTTP from the built binary
//! (started by the `integration` crate's harness) in front of a Routing API stand-in that lists
//! one TCP route and holds its event stream open: a forwarded connection and a refused backend
//! move the port's series, the health port serves the same exposition, and the three TLS
//! files make the port mutual TLS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration::pki::TestCa;
use integration::routing_api::tls_request;
use integration::tcp_router::{Client, TcpBackend, TcpRouter, TcpRouterBuilder};
use integration::util::{closed_port, free_port};
use integration::TempDir;
use prometheus_endpoint::Scrape;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// Serves `GET /routing/v1/tcp_routes` with `routes_json`, `GET /routing/v1/tcp_routes/events`
/// as a stream that stays open without events, and no router groups; returns its port.
async fn routing_api_stand_in(routes_json: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(answer(stream, routes_json.clone()));
        }
    });
    port
}

async fn answer(mut stream: TcpStream, routes_json: String) {
    while let Some(head) = read_head(&mut stream).await {
        let path = head.split_whitespace().nth(1).unwrap_or_default();
        if path.starts_with("/routing/v1/tcp_routes/events") {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_ok() {
                // Held open until the router goes.
                let _ = stream.read(&mut [0u8; 1]).await;
            }
            return;
        }
        let body = if path.starts_with("/routing/v1/tcp_routes") {
            routes_json.as_str()
        } else {
            "[]"
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A router whose one route sends `port` to 127.0.0.1:`backend_port`, `/metrics` also on the
/// returned prometheus port, listening on `port` once this returns.
async fn router_routing(port: u16, backend_port: u16, prometheus_yaml: &str) -> TcpRouter {
    let routes = format!(
        r#"[{{"router_group_guid":"rg","backend_port":{backend_port},"backend_ip":"127.0.0.1","port":{port},"modification_tag":{{"guid":"g","index":0}},"ttl":120}}]"#
    );
    let api = routing_api_stand_in(routes).await;
    let router = TcpRouterBuilder::for_api_port(api)
        .yaml(prometheus_yaml)
        .start()
        .await;
    let deadline = Instant::now() + WAIT;
    while router.metric("tcp_router_listeners").await != Some(1.0) {
        assert!(Instant::now() < deadline, "{}", router.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    router
}

/// A 200 answer of `GET /metrics` on the prometheus port.
async fn scrape(port: u16) -> Option<Scrape> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match prometheus_endpoint::scrape(addr, Duration::from_secs(5)).await {
        Ok(r) if r.status == 200 => Some(r),
        _ => None,
    }
}

/// Scrapes the prometheus port until `line` is one of the exposition's lines.
async fn wait_for_line(port: u16, line: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(port).await.map(|r| r.body).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no line {line:?} within {WAIT:?}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn prometheus_port_yaml(port: u16) -> String {
    format!("prometheus:\n  port: {port}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_connection_is_counted_with_its_bytes_each_way() {
    let backend = TcpBackend::echo("app").await;
    let (port, metrics_port) = (free_port(), free_port());
    let router = router_routing(port, backend.port(), &prometheus_port_yaml(metrics_port)).await;
    let mut client = Client::connect(port).await.expect("connect");
    assert_eq!(client.read_line().await.expect("greeting"), "app");
    client.echo(b"0123456789").await.expect("echo");
    drop(client);
    let text = wait_for_line(metrics_port, "tcp_router_open_connections 0").await;
    for line in [
        format!("tcp_router_connections_total{{port=\"{port}\"}} 1"),
        format!("tcp_router_active_connections{{port=\"{port}\"}} 0"),
        format!("tcp_router_bytes_total{{port=\"{port}\",direction=\"client_to_backend\"}} 10"),
        // The greeting "app\n", then the echo.
        format!("tcp_router_bytes_total{{port=\"{port}\",direction=\"backend_to_client\"}} 14"),
        format!("tcp_router_errors_total{{port=\"{port}\",kind=\"connect\"}} 0"),
        "tcp_router_backends 1".to_string(),
        "tcp_router_listeners 1".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no {line:?} in\n{text}\n{}",
            router.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_backend_refuses_is_counted_as_a_connect_error() {
    let (port, metrics_port) = (free_port(), free_port());
    let _router = router_routing(port, closed_port(), &prometheus_port_yaml(metrics_port)).await;
    let mut client = Client::connect(port).await.expect("connect");
    assert!(client.closes_within(WAIT).await, "the router kept it open");
    wait_for_line(
        metrics_port,
        &format!("tcp_router_errors_total{{port=\"{port}\",kind=\"connect\"}} 1"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_port_and_the_prometheus_port_serve_the_same_openmetrics_text() {
    let backend = TcpBackend::echo("app").await;
    let (port, metrics_port) = (free_port(), free_port());
    let router = router_routing(port, backend.port(), &prometheus_port_yaml(metrics_port)).await;
    let on_health = router.health_get("/metrics").await.expect("health port");
    let on_prometheus = scrape(metrics_port).await.expect("prometheus port");
    let openmetrics = Some("application/openmetrics-text; version=1.0.0; charset=utf-8");
    let health_body = on_health.body_str();
    assert_eq!(
        on_health.header("Content-Type"),
        openmetrics,
        "{}",
        on_health.dump()
    );
    assert!(health_body.ends_with("# EOF\n"), "{}", on_health.dump());
    assert_eq!(
        on_prometheus.content_type.as_deref(),
        openmetrics,
        "{on_prometheus}"
    );
    assert!(on_prometheus.body.ends_with("# EOF\n"), "{on_prometheus}");
    let samples = |body: &str| -> Vec<String> {
        let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(samples(&health_body), samples(&on_prometheus.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_three_tls_files_the_prometheus_port_needs_a_client_certificate_from_the_ca() {
    let dir = TempDir::new("tcp-router-prom-tls");
    let ca = TestCa::new("metrics CA");
    let files = ca.write_server(dir.path(), &["127.0.0.1", "localhost"]);
    let backend = TcpBackend::echo("app").await;
    let (port, metrics_port) = (free_port(), free_port());
    let router = router_routing(
        port,
        backend.port(),
        &format!(
            "prometheus:\n  port: {metrics_port}\n  cert_path: {}\n  key_path: {}\n  ca_path: {}\n",
            files.cert.display(),
            files.key.display(),
            files.ca.display()
        ),
    )
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let (cert, key) = ca.issue_client("prometheus");
    let r = tls_request(addr, &ca, Some((&cert, &key)), "/metrics", None)
        .await
        .unwrap_or_else(|e| panic!("scrape over mutual TLS: {e}\n{}", router.output()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.lines().any(|l| l == "tcp_router_listeners 1"),
        "{}",
        r.body
    );
    assert!(
        tls_request(addr, &ca, None, "/metrics", None)
            .await
            .is_err(),
        "served without a client certificate"
    );
}
