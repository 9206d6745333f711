//! What makes loadgen's figures trustworthy, checked against in-process backends on
//! 127.0.0.1: the open loop holds its rate, it shows a stall that a closed loop hides
//! (coordinated omission), the ramp finds a rate limit's knee, HTTP/2 and bodies work, and
//! the JSON and HTML outputs have their documented shape.
//!
//! Rates are modest (hundreds to a thousand requests/s) and runs a few seconds, so the tests
//! hold on a loaded 2-core machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use loadgen::backend::{self, BackendOptions, RateLimit, StallOnce};
use loadgen::load::{self, LoadConfig};
use loadgen::progress::Progress;
use loadgen::ramp::{self, Bound, RampKind, RampPlan};
use loadgen::runner::{self, Mode, RunResult};
use loadgen::stats::Live;
use loadgen::targets::{Protocol, Target};
use loadgen::{html, json};

/// The tests measure time: they take turns rather than load the (small) machine together.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn target_for(addr: SocketAddr) -> Target {
    Target::plain("backend", addr, &addr.to_string(), "/")
}

fn live() -> Arc<Live> {
    Arc::new(Live::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_holds_the_requested_rate_within_5_percent() {
    let _turn = TURN.lock().await;
    let addr = backend::start().await.unwrap();
    let rate = 1000.0;
    let duration = Duration::from_secs(3);
    let config = LoadConfig::closed(8, Duration::from_millis(300), duration).open(rate);
    let started = std::time::Instant::now();
    let out = load::run(&target_for(addr), &config, &live())
        .await
        .unwrap();
    let wall = started.elapsed();

    assert_eq!(out.errors, 0, "{:?}", out.first_error);
    let achieved = out.requests_per_sec();
    assert!(
        (achieved - rate).abs() / rate < 0.05,
        "{achieved:.0} req/s for {rate} requested"
    );
    // Completions inside the measured seconds (by completion time) also keep the pace: the
    // client sent on time rather than catching up afterwards.
    let in_window: u64 = out
        .timeline
        .iter()
        .filter(|s| s.second < duration.as_secs())
        .map(|s| s.requests)
        .sum();
    let expected = rate * duration.as_secs_f64();
    assert!(
        (in_window as f64 - expected).abs() / expected < 0.05,
        "{in_window} completed within the measured {duration:?}, {expected} due"
    );
    assert!(wall < Duration::from_secs(6), "the run took {wall:?}");
}

/// One request stalls for a second. An open loop at 500 req/s on one connection has ~500
/// requests due during the stall, each waiting behind it: the stall is in its p99.9 (and even
/// its median moves). A closed loop on one connection sends nothing while it waits, so the
/// stall is one sample among thousands: only the max shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_open_loop_p99_9_and_hides_from_closed_loop_p99_9() {
    let _turn = TURN.lock().await;
    let stall = Duration::from_secs(1);
    let options = BackendOptions {
        stall_once: Some(StallOnce {
            after: 200,
            duration: stall,
        }),
        rate_limit: None,
    };
    let measured = Duration::from_secs(4);

    let open_backend = backend::start_with(local(), options.clone()).await.unwrap();
    let config = LoadConfig::closed(1, Duration::ZERO, measured).open(500.0);
    let open = load::run(&target_for(open_backend), &config, &live())
        .await
        .unwrap();

    let closed_backend = backend::start_with(local(), options).await.unwrap();
    let config = LoadConfig::closed(1, Duration::ZERO, measured);
    let closed = load::run(&target_for(closed_backend), &config, &live())
        .await
        .unwrap();

    let ms = |ns: u64| ns as f64 / 1e6;
    assert_eq!(open.errors + closed.errors, 0);
    let open_p999 = ms(open.quantile_ns(0.999));
    assert!(
        open_p999 >= 0.9 * stall.as_secs_f64() * 1e3,
        "open-loop p99.9 {open_p999:.1} ms misses the {stall:?} stall"
    );
    // The closed loop saw the stall (its max) ...
    assert!(
        ms(closed.latency.max()) >= 0.9e3,
        "closed max {}",
        closed.latency.max()
    );
    // ... but as too few samples to reach its p99.9: one sample in more than 1000 is beyond
    // the 99.9th percentile.
    assert!(
        closed.requests() > 1_000,
        "the closed loop made only {} requests: too few to hide one sample",
        closed.requests()
    );
    let closed_p999 = ms(closed.quantile_ns(0.999));
    assert!(
        closed_p999 < 0.5 * stall.as_secs_f64() * 1e3,
        "closed-loop p99.9 {closed_p999:.1} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ramp_finds_the_knee_of_a_rate_limited_backend_within_10_percent() {
    let _turn = TURN.lock().await;
    let limit = 600.0;
    let addr = backend::start_with(
        local(),
        BackendOptions {
            stall_once: None,
            rate_limit: Some(RateLimit { per_second: limit }),
        },
    )
    .await
    .unwrap();
    let plan = RampPlan {
        kind: RampKind::Rate,
        start: 540.0,
        step: 20.0,
        max: 800.0,
        step_duration: Duration::from_secs(1),
        step_warmup: Duration::from_millis(200),
        bound: Bound {
            max_error_rate: 0.01,
            max_p99: None,
        },
    };
    let base = LoadConfig::closed(8, Duration::ZERO, Duration::ZERO);
    let (result, all) = ramp::run(&target_for(addr), &base, &plan, &live(), |_| {})
        .await
        .unwrap();

    assert!(
        result.crossed,
        "no step crossed the bound: {:?}",
        result.steps
    );
    let knee = result.knee.expect("a knee").rate;
    assert!(
        (knee - limit).abs() / limit <= 0.10,
        "knee {knee} for a limit of {limit}: {:?}",
        result.steps
    );
    // The step that crossed was refused with 503s, and the merged outcome counts them.
    assert!(all.statuses.get(&503).copied().unwrap_or(0) > 0);
    assert!(all.timeline.len() as u64 >= all.elapsed.as_secs());
    assert!(all.timeline.windows(2).all(|w| w[0].second < w[1].second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_request_and_response_bodies_work() {
    let _turn = TURN.lock().await;
    let addr = backend::start().await.unwrap();
    let mut target = Target::plain("h2", addr, &addr.to_string(), "/?size=65536");
    target.protocol = Protocol::Http2;
    let mut config = LoadConfig::closed(2, Duration::ZERO, Duration::from_millis(500));
    config.request_body = Bytes::from(vec![b'x'; 10_000]);
    let out = load::run(&target, &config, &live()).await.unwrap();
    assert_eq!(out.errors, 0, "{:?}", out.first_error);
    assert!(out.requests() > 10);

    let mut per_request = Target::plain("new-conn", addr, &addr.to_string(), "/");
    per_request.protocol = Protocol::Http1;
    let mut config = LoadConfig::closed(2, Duration::ZERO, Duration::from_millis(500));
    config.new_connection_per_request = true;
    let out = load::run(&per_request, &config, &live()).await.unwrap();
    assert_eq!(out.errors, 0, "{:?}", out.first_error);
    assert!(out.requests() > 10);
}

/// A small run of each kind, made once for the tests that read them: two targets in rotated
/// rounds (closed loop), and a ramp.
async fn sample_runs() -> &'static (RunResult, RunResult) {
    static SAMPLES: tokio::sync::OnceCell<(RunResult, RunResult)> =
        tokio::sync::OnceCell::const_new();
    SAMPLES.get_or_init(make_sample_runs).await
}

async fn make_sample_runs() -> (RunResult, RunResult) {
    let a = backend::start().await.unwrap();
    let b = backend::start().await.unwrap();
    let targets = [
        Target::plain("a", a, &a.to_string(), "/"),
        Target::plain("b", b, &b.to_string(), "/"),
    ];
    let config = LoadConfig::closed(2, Duration::ZERO, Duration::from_secs(2));
    let progress = Progress::new(false);
    let results = runner::run_rounds(&targets, &config, 2, &progress)
        .await
        .unwrap();
    let rounds = RunResult {
        mode: Mode::Closed,
        config: config.clone(),
        rounds: 2,
        protocol: Protocol::Http1,
        routes: None,
        ramp_plan: None,
        targets: results,
        started_at_unix: runner::unix_now(),
    };

    let plan = RampPlan {
        kind: RampKind::Rate,
        start: 100.0,
        step: 100.0,
        max: 200.0,
        step_duration: Duration::from_millis(1000),
        step_warmup: Duration::ZERO,
        bound: Bound {
            max_error_rate: 0.01,
            max_p99: Some(Duration::from_millis(500)),
        },
    };
    let results = runner::run_ramps(&targets[..1], &config, &plan, &progress)
        .await
        .unwrap();
    let ramp = RunResult {
        mode: Mode::Ramp,
        config,
        rounds: 1,
        protocol: Protocol::Http1,
        routes: None,
        ramp_plan: Some(plan),
        targets: results,
        started_at_unix: runner::unix_now(),
    };
    (rounds, ramp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_rounds_merge_each_targets_share() {
    let _turn = TURN.lock().await;
    let (rounds, _) = sample_runs().await;
    for t in &rounds.targets {
        assert_eq!(t.outcome.elapsed, Duration::from_secs(2), "{}", t.label);
        assert_eq!(t.outcome.timeline.len(), 2, "{}", t.label);
        assert!(t.outcome.requests() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_follows_the_committed_schema() {
    let _turn = TURN.lock().await;
    let schema: Value = serde_json::from_str(include_str!("../schema/report.schema.json")).unwrap();
    let (rounds, ramp) = sample_runs().await;
    for run in [rounds, ramp] {
        // Through text and back, as a consumer would read it.
        let text = serde_json::to_string(&json::document(run)).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let errors = validate(&schema, &doc, "$");
        assert!(errors.is_empty(), "{}", errors.join("\n"));
        assert_eq!(doc["schema"], json::SCHEMA);
    }
    let doc = json::document(ramp);
    let steps = doc["targets"][0]["ramp"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(doc["targets"][0]["ramp"]["knee"]["rate"], 200.0);
    let doc = json::document(rounds);
    assert_eq!(doc["mode"], "closed");
    assert_eq!(doc["targets"].as_array().unwrap().len(), 2);
    assert!(doc["targets"][0]["percentiles"].as_array().unwrap().len() > 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_has_exactly_one_svg_per_plot() {
    let _turn = TURN.lock().await;
    let (rounds, ramp) = sample_runs().await;
    let page = html::render(rounds);
    // Percentiles, throughput over time, p99 over time.
    assert_eq!(html::plots(rounds).len(), 3);
    assert_eq!(page.matches("<svg").count(), 3);
    assert_eq!(page.matches("</svg>").count(), 3);
    for title in [
        "Latency by percentile",
        "Throughput over time",
        "p99 latency over time",
    ] {
        assert!(page.contains(title), "{title} missing");
    }
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(
        !page.contains("<script"),
        "the report must be self-contained and static"
    );

    // A ramp adds its curve, with the knee marked.
    let page = html::render(ramp);
    assert_eq!(html::plots(ramp).len(), 4);
    assert_eq!(page.matches("<svg").count(), 4);
    assert!(page.contains("knee: 200 req/s"));
}

/// A small JSON Schema check: `type` (one or several), `enum`, `required`, `properties` (and no
/// property the schema does not list, so the schema cannot fall behind the output) and `items`.
fn validate(schema: &Value, v: &Value, path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_u64() || v.is_i64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            errors.push(format!("{path}: {v} is not of type {types:?}"));
            return errors;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(v) {
            errors.push(format!("{path}: {v} not in {allowed:?}"));
        }
    }
    if let Value::Object(obj) = v {
        if let Some(Value::Array(required)) = schema.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errors.push(format!("{path}: missing {r}"));
                }
            }
        }
        if let Some(Value::Object(props)) = schema.get("properties") {
            for (k, child) in obj {
                match props.get(k) {
                    Some(s) => errors.extend(validate(s, child, &format!("{path}.{k}"))),
                    None => errors.push(format!("{path}: {k} is not in the schema")),
                }
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            errors.extend(validate(s, item, &format!("{path}[{i}]")));
        }
    }
    errors
}

/// An HTTPS server with ALPN `h2` and `http/1.1` (certificate for `h2.example.com`), answering
/// 200 with the protocol it spoke; returns its address and the CA file.
async fn tls_backend() -> (SocketAddr, std::path::PathBuf) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["h2.example.com".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca_path = std::env::temp_dir().join(format!("loadgen-h2-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_path, cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(local()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let body = format!("{:?}", req.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(Bytes::from(body)),
                    ))
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    (addr, ca_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_speak_http2_by_alpn() {
    let _turn = TURN.lock().await;
    let (addr, ca) = tls_backend().await;
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let target = loadgen::targets::parse_target(
        "h2",
        &url,
        Some("h2.example.com"),
        Some(&ca),
        Protocol::Http2,
    )
    .await
    .unwrap();
    // The server reports the version it spoke.
    let mut conn = loadgen::client::connect(&target).await.unwrap();
    assert!(matches!(conn, loadgen::client::Connection::Http2(_)));
    let status =
        loadgen::client::request(&mut conn, &target, "h2.example.com", &Bytes::new(), false)
            .await
            .unwrap();
    assert_eq!(status, 200);
    let config = LoadConfig::closed(2, Duration::ZERO, Duration::from_millis(500));
    let out = load::run(&target, &config, &live()).await.unwrap();
    let _ = std::fs::remove_file(&ca);
    assert_eq!(out.errors, 0, "{:?}", out.first_error);
    assert!(out.requests() > 10);
}
