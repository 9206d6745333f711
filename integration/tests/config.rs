//! The config file (A.15): unknown keys are accepted, bad values stop the router with a
//! non-zero exit and a message naming the key.

use std::time::Duration;

use integration::{Gorouter, NatsServer};

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_are_accepted() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml("some_future_key: {nested: [1, 2]}\npublish_start_message_interval: 30s\nload_balancer_healthy_threshold: 20s\nstatus: {unknown_status_key: x}")
        .start()
        .await;
    assert_eq!(router.health().await.map(|r| r.status), Some(200));
}

async fn assert_rejected(yaml: &str, key: &str) {
    let nats = NatsServer::start().await;
    let (status, output) = Gorouter::builder(&nats)
        .yaml(yaml)
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert!(
        !status.success(),
        "router accepted `{yaml}` ({status}); output:\n{output}"
    );
    assert!(
        output.contains(key),
        "the error for `{yaml}` does not name `{key}`:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_balancing_algorithm_is_rejected_naming_the_key() {
    assert_rejected("balancing_algorithm: random", "balancing_algorithm").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_duration_is_rejected_naming_the_key() {
    assert_rejected("droplet_stale_threshold: soon", "droplet_stale_threshold").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_forwarded_client_cert_is_rejected_naming_the_key() {
    assert_rejected("forwarded_client_cert: sometimes", "forwarded_client_cert").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_config_file_is_an_error() {
    let path = "/nonexistent-dir/gorouter.yml";
    let (status, output) = integration::GorouterBuilder::new(4222)
        .args(&["-c", path])
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert!(
        !status.success(),
        "started without a config file:\n{output}"
    );
    assert!(
        output.contains(path),
        "the error does not name the file:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_yaml_is_an_error() {
    let (status, output) = integration::GorouterBuilder::new(4222)
        .raw_config("port: [unterminated\n")
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert!(!status.success(), "started with malformed YAML:\n{output}");
}

/// What upstream's BOSH job renders without the Routing API: UAA settings with `port: -1`,
/// and an empty `status.host`-style value elsewhere. The router starts and serves.
#[tokio::test(flavor = "multi_thread")]
async fn rendered_oauth_port_minus_one_without_routing_api_starts() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(
            "oauth: {token_endpoint: uaa.service.cf.internal, port: -1, client_name: gorouter, client_secret: s, skip_ssl_validation: false}\n\
             routing_api: {uri: '', port: 0}\nlogging: {format: {timestamp: rfc3339}}",
        )
        .start()
        .await;
    let output = router.output();
    assert!(!output.contains("setting-up-routing-api"), "{output}");
    for message in [
        "starting",
        "retrieved-isolation-segments",
        "Successfully-connected-to-nats",
        "gorouter.started",
    ] {
        assert!(output.contains(message), "no {message:?} in:\n{output}");
    }
}

/// A config error: upstream's fatal "Error loading config", exit 1.
#[tokio::test(flavor = "multi_thread")]
async fn config_error_is_error_loading_config() {
    let nats = NatsServer::start().await;
    let (status, output) = Gorouter::builder(&nats)
        .yaml("balancing_algorithm: nope")
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("Error loading config"), "{output}");
}
