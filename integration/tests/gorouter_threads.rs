//! gorouter's serving threads (issue 14): one per core, or `GOMAXPROCS` of them, each with its
//! own socket on the proxy port; connections spread over them and all served.

use integration::http::{get_request, HttpConn};
use integration::{route, EchoBackend, EchoedRequest, Gorouter, NatsClient, NatsServer};

/// The names of the process's threads that serve client connections.
fn proxy_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list the router's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("proxy-"))
        .collect();
    names.sort();
    names
}

async fn router_with(nats: &NatsServer, gomaxprocs: &str, host: &str) -> (Gorouter, EchoBackend) {
    let router = Gorouter::builder(nats)
        .env("GOMAXPROCS", gomaxprocs)
        .start()
        .await;
    let backend = EchoBackend::start("a").await;
    NatsClient::connect(nats)
        .await
        .register(&route(host, backend.port()))
        .await;
    router.wait_route(host).await;
    (router, backend)
}

#[tokio::test(flavor = "multi_thread")]
async fn gomaxprocs_sets_how_many_threads_serve_connections() {
    let nats = NatsServer::start().await;
    let (router, _backend) = router_with(&nats, "3", "three.threads.example").await;
    assert_eq!(
        proxy_threads(router.pid()),
        ["proxy-0", "proxy-1", "proxy-2"]
    );
    let resp =
        integration::http::request(router.addr(), &get_request("three.threads.example", "/x"))
            .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_gomaxprocs_there_is_one_thread_per_core() {
    let nats = NatsServer::start().await;
    let (router, _backend) = router_with(&nats, "", "cores.threads.example").await;
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(proxy_threads(router.pid()).len(), cores);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_connections_over_four_threads_are_all_served_in_order() {
    let nats = NatsServer::start().await;
    let (router, _backend) = router_with(&nats, "4", "many.threads.example").await;
    let addr = router.addr();
    let clients: Vec<_> = (0..48)
        .map(|c| {
            tokio::spawn(async move {
                let mut conn = HttpConn::connect(addr).await;
                for i in 0..20 {
                    let path = format!("/c{c}/r{i}");
                    conn.send(&get_request("many.threads.example", &path)).await;
                    let resp = conn.read_response().await;
                    assert_eq!(resp.status, 200, "{}", resp.dump());
                    assert_eq!(
                        EchoedRequest::parse(&resp.body).request_line,
                        format!("GET {path} HTTP/1.1"),
                        "each answer is its own request's"
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("every client's requests answered");
    }
}
