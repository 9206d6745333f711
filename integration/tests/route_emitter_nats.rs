//! route-emitter's NATS traffic seen by a fake router: the registration message (A.2), the
//! greeting and its minimum register interval, `router.start`, and the unregistrations sent on
//! SIGTERM.

use std::time::{Duration, Instant};

use futures::StreamExt;
use integration::nats::next_message;
use integration::route_emitter::RouteEmitterBuilder;
use integration::{NatsClient, NatsServer};
use serde_json::{json, Value};

fn full_route() -> Value {
    json!({
        "name": "full",
        "host": "10.1.2.3",
        "port": 8080,
        "tls_port": 8443,
        "uris": ["full.example.com", "full.example.com/path"],
        "registration_interval": "1s",
        "app": "app-guid",
        "private_instance_id": "instance-guid",
        "private_instance_index": "2",
        "server_cert_domain_san": "instance-guid",
        "route_service_url": "https://rs.example.com",
        "tags": {"component": "route-emitter"},
        "isolation_segment": "seg",
        "availability_zone": "z1",
        "protocol": "http2",
        "options": {"lb_algo": "least-connection"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_greeting_interval_start_and_unregistration() {
    let nats = NatsServer::start().await;
    let client = NatsClient::connect(&nats).await;
    let mut greets = client.subscribe("router.greet").await;
    let mut registers = client.subscribe("router.register").await;
    let mut unregisters = client.subscribe("router.unregister").await;
    let raw = client.client().clone();
    tokio::spawn(async move {
        while let Some(m) = greets.next().await {
            if let Some(reply) = m.reply {
                let body = r#"{"id":"0-x","hosts":["127.0.0.1"],"minimumRegisterIntervalInSeconds":2,"pruneThresholdInSeconds":120}"#;
                let _ = raw.publish(reply, body.into()).await;
            }
        }
    });
    let mut emitter = RouteEmitterBuilder::new(Some(&nats))
        .set("unregistration_message_limit", json!(3))
        .route(full_route())
        .start();

    let first: Value =
        serde_json::from_str(&next_message(&mut registers, Duration::from_secs(5)).await).unwrap();
    let ns = first["endpoint_updated_at_ns"]
        .as_i64()
        .expect("endpoint_updated_at_ns");
    assert!(ns > 0);
    let mut without_time = first.clone();
    without_time
        .as_object_mut()
        .unwrap()
        .remove("endpoint_updated_at_ns");
    assert_eq!(
        without_time,
        json!({
            "host": "10.1.2.3",
            "port": 8080,
            "tls_port": 8443,
            "uris": ["full.example.com", "full.example.com/path"],
            "app": "app-guid",
            "private_instance_id": "instance-guid",
            "private_instance_index": "2",
            "server_cert_domain_san": "instance-guid",
            "route_service_url": "https://rs.example.com",
            "tags": {"component": "route-emitter"},
            "isolation_segment": "seg",
            "availability_zone": "z1",
            "protocol": "http2",
            "options": {"lb_algo": "least-connection"},
        })
    );

    // The router asked for 2 s: the 1 s registration interval is raised to it (the greeting
    // may be answered only on the second attempt, so skip one more message). Three gaps are
    // timed, a lower bound only (a loaded machine makes timers late, never early): 2 s each
    // take 6 s, the unraised 1 s 3 s; 4.5 s separates the two even if the first of the timed
    // messages reached us late. Each message has a generous deadline.
    let _ = next_message(&mut registers, Duration::from_secs(15)).await;
    let _ = next_message(&mut registers, Duration::from_secs(15)).await;
    let t = Instant::now();
    for _ in 0..3 {
        let _ = next_message(&mut registers, Duration::from_secs(15)).await;
    }
    let gaps = t.elapsed();
    assert!(
        gaps >= Duration::from_millis(4500),
        "three gaps between registrations took {gaps:?}: not the router's 2 s interval"
    );

    // router.start: everything re-registered at once (after a small jitter). This one asks for
    // a 60 s minimum, so the regular registration is a minute away: a registration before the
    // generous 15 s deadline comes from router.start, and none follows for a while (the new
    // minimum was taken; a router.start ignored altogether keeps the 2 s registrations coming).
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.publish("router.start", r#"{"id":"0-y","hosts":["127.0.0.1"],"minimumRegisterIntervalInSeconds":60,"pruneThresholdInSeconds":120}"#).await;
    let _ = next_message(&mut registers, Duration::from_secs(15)).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), registers.next())
            .await
            .is_err(),
        "registered again within 5 s of router.start asking for a 60 s minimum"
    );

    emitter.signal(libc::SIGTERM);
    assert!(emitter.wait_exit(Duration::from_secs(10)).await.success());
    for _ in 0..3 {
        let m: Value =
            serde_json::from_str(&next_message(&mut unregisters, Duration::from_secs(10)).await)
                .unwrap();
        assert_eq!(m["uris"], first["uris"]);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), unregisters.next())
            .await
            .is_err(),
        "no more than unregistration_message_limit unregistrations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_mutual_tls_to_nats() {
    use integration::pki::TestCa;
    use integration::TempDir;

    let dir = TempDir::new("it-re-nats-tls");
    let ca = TestCa::new("nats-ca");
    let server_dir = dir.path().join("server");
    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(&server_dir).unwrap();
    std::fs::create_dir_all(&client_dir).unwrap();
    let nats = NatsServer::start_mtls(&ca.write_server(&server_dir, &["127.0.0.1"])).await;
    let client_files = ca.write_client(&client_dir, "route-emitter");
    let client = NatsClient::connect_mtls(&nats, &client_files).await;
    let mut registers = client.subscribe("router.register").await;

    let _emitter = RouteEmitterBuilder::new(Some(&nats))
        .set(
            "nats_mtls_config",
            json!({
                "enabled": true,
                "cert_path": client_files.cert,
                "key_path": client_files.key,
                "ca_path": client_files.ca,
            }),
        )
        .route(json!({"name": "t", "port": 8080, "uris": ["tls.nats.test"], "registration_interval": "1s"}))
        .start();
    let m: Value =
        serde_json::from_str(&next_message(&mut registers, Duration::from_secs(10)).await).unwrap();
    assert_eq!(m["uris"], json!(["tls.nats.test"]));
}
