//! The NATS side of the router (A.1-A.3, A.12): register/unregister, TTL pruning (and its
//! suspension while NATS is down), `router.greet` and `router.start`, reconnecting to a
//! restarted nats-server, and the `/routes` dump.

use std::time::{Duration, Instant};

use integration::nats::next_message;
use integration::router::basic_auth;
use integration::{
    closed_port, route, EchoBackend, Gorouter, NatsClient, NatsServer, TcpGate, TestEnv,
};
use regex::Regex;
use serde_json::json;

/// The router.start / greet-reply JSON with exact key order and types.
fn start_message_re(index: u32, min_register: u64, prune_threshold: u64) -> Regex {
    Regex::new(&format!(
        r#"^\{{"id":"{index}-([0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}})","hosts":\["127\.0\.0\.1"\],"minimumRegisterIntervalInSeconds":{min_register},"pruneThresholdInSeconds":{prune_threshold}\}}$"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn unregister_removes_the_route() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    let msg = route("gone.example.com", backend.port());
    env.register_and_wait(&msg).await;

    env.unregister(&msg).await;
    let resp = env.router.wait_route_gone("gone.example.com").await;
    assert_eq!(resp.header("X-Cf-Routererror"), Some("unknown_route"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unregister_keeps_other_endpoints() {
    let env = TestEnv::start("").await;
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    env.register(&route("two.example.com", a.port())).await;
    env.register(&route("two.example.com", b.port())).await;
    env.unregister(&route("two.example.com", a.port())).await;
    env.sync().await;

    for _ in 0..4 {
        let resp = env.get("two.example.com", "/").await;
        assert_eq!(resp.status, 200, "{}", resp.dump());
        assert_eq!(resp.header("X-Backend-Name"), Some("b"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_endpoint_is_pruned_after_its_ttl() {
    let env = TestEnv::start("prune_stale_droplets_interval: 200ms").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("ttl.example.com", backend.port());
    msg["stale_threshold_in_seconds"] = json!(1);
    let registered = Instant::now();
    env.register_and_wait(&msg).await;

    // Pruned at all: a route that stays fails the wait (its own generous deadline).
    env.router.wait_route_gone("ttl.example.com").await;
    let after = registered.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "pruned after {after:?}, before its 1 s TTL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refreshed_endpoint_is_not_pruned() {
    let env = TestEnv::start("prune_stale_droplets_interval: 200ms").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("fresh.example.com", backend.port());
    msg["stale_threshold_in_seconds"] = json!(1);
    env.register_and_wait(&msg).await;

    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        env.register(&msg).await;
        let resp = env.get("fresh.example.com", "/").await;
        assert_eq!(
            resp.status,
            200,
            "re-registered route was pruned: {}",
            resp.dump()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_is_suspended_while_nats_is_down() {
    let mut env = TestEnv::start(
        "prune_stale_droplets_interval: 200ms\nsuspend_pruning_if_nats_unavailable: true",
    )
    .await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("suspend.example.com", backend.port());
    msg["stale_threshold_in_seconds"] = json!(1);
    env.register_and_wait(&msg).await;

    env.nats.stop().await;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let resp = env.get("suspend.example.com", "/").await;
        assert_eq!(
            resp.status,
            200,
            "route pruned while NATS was down: {}",
            resp.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_goes_on_while_nats_is_down_when_not_suspended() {
    let mut env = TestEnv::start(
        "prune_stale_droplets_interval: 200ms\nsuspend_pruning_if_nats_unavailable: false",
    )
    .await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("nosuspend.example.com", backend.port());
    msg["stale_threshold_in_seconds"] = json!(1);
    env.register_and_wait(&msg).await;

    env.nats.stop().await;
    env.router.wait_route_gone("nosuspend.example.com").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_registration_is_ignored() {
    let mut env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.client.publish("router.register", "{not json").await;
    env.client.publish("router.register", "[]").await;
    env.client.publish("router.unregister", "").await;
    env.register_and_wait(&route("after-junk.example.com", backend.port()))
        .await;
    assert_eq!(env.router.try_exit(), None, "the router died");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_https_route_service_url_rejects_the_registration() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("rs.example.com", backend.port());
    msg["route_service_url"] = json!("http://rs.internal");
    env.register(&msg).await;
    env.sync().await;
    let resp = env.get("rs.example.com", "/").await;
    assert_eq!(resp.status, 404, "{}", resp.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn greet_reply_has_upstream_shape() {
    let env =
        TestEnv::start("index: 3\nstart_response_delay_interval: 1s\ndroplet_stale_threshold: 45s")
            .await;
    let reply = env.client.request("router.greet", "").await;
    assert!(
        start_message_re(3, 1, 45).is_match(&reply),
        "greet reply {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn router_start_is_published_at_startup() {
    let nats = NatsServer::start().await;
    let client = NatsClient::connect(&nats).await;
    let mut sub = client.subscribe("router.start").await;
    let router = Gorouter::builder(&nats).start().await;

    let msg = next_message(&mut sub, Duration::from_secs(10)).await;
    let re = start_message_re(0, 0, 120);
    let id = re
        .captures(&msg)
        .unwrap_or_else(|| panic!("router.start payload {msg:?}"))[1]
        .to_string();
    let reply = client.request("router.greet", "").await;
    assert_eq!(reply, msg, "greet reply and router.start are the same JSON");
    assert!(reply.contains(&id));
    drop(router);
}

#[tokio::test(flavor = "multi_thread")]
async fn router_start_is_republished_after_nats_restart() {
    let mut nats = NatsServer::start().await;
    let gate = TcpGate::start(nats.port()).await;
    let client = NatsClient::connect(&nats).await;
    let mut sub = client.subscribe("router.start").await;
    let router = Gorouter::builder(&nats)
        .nats_port(gate.port())
        .start()
        .await;
    let first = next_message(&mut sub, Duration::from_secs(10)).await;
    drop(sub);
    drop(client);

    // Keep the router off the restarted server until our subscription is in place.
    gate.close();
    nats.restart().await;
    let client = NatsClient::connect(&nats).await;
    let mut sub = client.subscribe("router.start").await;
    gate.open();

    let again = next_message(&mut sub, Duration::from_secs(15)).await;
    assert_eq!(again, first, "same router id and settings after reconnect");
    drop(router);
}

#[tokio::test(flavor = "multi_thread")]
async fn registrations_are_processed_after_nats_restart() {
    let mut env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("before.example.com", backend.port()))
        .await;

    env.nats.restart().await;
    env.client = NatsClient::connect(&env.nats).await;
    let msg = route("after.example.com", backend.port());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        env.register(&msg).await;
        if env.router.is_routed("after.example.com").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registrations published after the NATS restart never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(env.get("before.example.com", "/").await.status, 200);
}

/// Upstream's mbus client: 3 attempts 100 ms apart, then `nats-connection-error` and exit 1.
#[tokio::test(flavor = "multi_thread")]
async fn router_exits_1_with_nats_connection_error_when_nats_is_unreachable() {
    let started = Instant::now();
    let (status, output) = integration::GorouterBuilder::new(closed_port())
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert_eq!(status.code(), Some(1), "{status}; output:\n{output}");
    assert!(output.contains("nats-connection-error"), "{output}");
    assert!(output.contains("setting-up-nats-connection"), "{output}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "gave up after {:?}: three attempts 100 ms apart take longer",
        started.elapsed()
    );
}

/// Every listed server is tried on each attempt: an unreachable first server does not stop
/// the router, which logs the server it connected to (`host`).
#[tokio::test(flavor = "multi_thread")]
async fn second_nats_server_in_the_list_is_used_when_the_first_is_down() {
    let nats = NatsServer::start().await;
    let down = closed_port();
    let router = Gorouter::builder(&nats)
        .yaml(&format!(
            "nats: {{hosts: [{{hostname: 127.0.0.1, port: {down}}}, {{hostname: 127.0.0.1, port: {}}}]}}",
            nats.port()
        ))
        .start()
        .await;
    let output = router.output();
    let line = output
        .lines()
        .find(|l| l.contains("Successfully-connected-to-nats"))
        .unwrap_or_else(|| panic!("no Successfully-connected-to-nats line:\n{output}"));
    assert!(
        line.contains(&format!("127.0.0.1:{}", nats.port())),
        "host/addr name the live server: {line}"
    );
}

/// A listener that accepts connections and never says anything (no NATS `INFO`).
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

/// A server that accepts but never answers costs the 2 s connect timeout, then the next server
/// in the list is tried, within the same attempt.
#[tokio::test(flavor = "multi_thread")]
async fn silent_nats_server_is_given_up_after_the_connect_timeout() {
    let nats = NatsServer::start().await;
    let (silent, _task) = silent_server().await;
    // A router stuck on the silent server (no connect timeout) never becomes healthy: `start`
    // fails at its own deadline (15 s), well past the 2 s timeout even on a loaded machine.
    let router = Gorouter::builder(&nats)
        .yaml(&format!(
            "nats: {{hosts: [{{hostname: 127.0.0.1, port: {silent}}}, {{hostname: 127.0.0.1, port: {}}}]}}",
            nats.port()
        ))
        .start()
        .await;
    assert!(
        router
            .output()
            .contains(&format!("127.0.0.1:{}", nats.port())),
        "{}",
        router.output()
    );
}

/// A NATS server that answers slowly, but within the 2 s that cover dial and INFO, is used.
#[tokio::test(flavor = "multi_thread")]
async fn slow_nats_server_within_the_connect_timeout_is_used() {
    let nats = NatsServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let slow_port = listener.local_addr().expect("local_addr").port();
    let target = nats.port();
    let _proxy = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Hold the connection silent for a while before the server's INFO goes through.
                tokio::time::sleep(Duration::from_millis(1200)).await;
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let router = Gorouter::builder(&nats).nats_port(slow_port).start().await;
    assert!(
        router.output().contains(&format!("127.0.0.1:{slow_port}")),
        "{}",
        router.output()
    );
    let client = NatsClient::connect(&nats).await;
    let backend = EchoBackend::start("a").await;
    client
        .register(&route("slow.example.com", backend.port()))
        .await;
    router.wait_route("slow.example.com").await;
}

/// Upstream's integration spec "should not panic, log the disconnection, and reconnect".
#[tokio::test(flavor = "multi_thread")]
async fn nats_outage_is_logged_and_the_reconnect_too() {
    let mut nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml("nats_client_ping_interval: 100ms")
        .start()
        .await;
    nats.stop().await;
    integration::eventually(
        "nats-connection-still-disconnected",
        Duration::from_secs(10),
        || async {
            let out = router.output();
            (out.contains("nats-connection-disconnected")
                && out.contains("nats-connection-still-disconnected"))
            .then_some(())
        },
    )
    .await;
    let out = router.output();
    let line = out
        .lines()
        .find(|l| l.contains("nats-connection-disconnected"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("127.0.0.1:{}", nats.port())),
        "host and addr of the lost server: {line}"
    );
    nats.restart().await;
    // nats.go waits ReconnectWait (2 s) between rounds.
    integration::eventually(
        "nats-connection-reconnected",
        Duration::from_secs(5),
        || async {
            router
                .output()
                .contains("nats-connection-reconnected")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = router
        .output()
        .matches("nats-connection-still-disconnected")
        .count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        router
            .output()
            .matches("nats-connection-still-disconnected")
            .count(),
        settled,
        "no more still-disconnected lines once reconnected"
    );
    let client = NatsClient::connect(&nats).await;
    let backend = EchoBackend::start("a").await;
    let msg = route("back.example.com", backend.port());
    integration::eventually(
        "registration after reconnect",
        Duration::from_secs(10),
        || async {
            client.register(&msg).await;
            router.is_routed("back.example.com").await.then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_dump_has_upstream_shape() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("ro.example.com", backend.port());
    msg["uris"] = json!(["ro.example.com", "ro.example.com/api"]);
    msg["app"] = json!("app-guid-1");
    msg["private_instance_id"] = json!("inst-1");
    msg["tags"] = json!({"component": "it"});
    env.register_and_wait(&msg).await;
    // The root route answers /api too, so a request to /api cannot tell whether the context
    // path is in yet: wait until the dump lists it (then compare the whole dump).
    let resp = integration::eventually(
        "ro.example.com/api in /routes",
        Duration::from_secs(30),
        || async {
            let resp = env.router.routes().await;
            resp.body_str()
                .contains("\"ro.example.com/api\"")
                .then_some(resp)
        },
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    assert_eq!(resp.header("Connection"), Some("close"));
    let ep = format!(
        r#"[{{"address":"127.0.0.1:{}","availability_zone":"","protocol":"http1","tls":false,"ttl":120,"tags":{{"component":"it"}},"private_instance_id":"inst-1"}}]"#,
        backend.port()
    );
    assert_eq!(
        resp.body_str(),
        format!(r#"{{"ro.example.com":{ep},"ro.example.com/api":{ep}}}"#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_dump_requires_basic_auth() {
    let env = TestEnv::start("").await;
    for auth in [None, Some(basic_auth("router-status", "wrong"))] {
        let mut raw = String::from("GET /routes HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(a) = &auth {
            raw.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        raw.push_str("\r\n");
        let resp = integration::http::request(env.router.routes_addr(), raw.as_bytes()).await;
        assert_eq!(resp.status, 401, "auth {auth:?}: {}", resp.dump());
        assert_eq!(resp.header("WWW-Authenticate"), Some("Basic"));
        assert_eq!(resp.body_str(), "401 Unauthorized\n");
    }
}
