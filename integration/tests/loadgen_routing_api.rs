//! loadgen's Routing API path end to end (`--routes N --routing-api URL`, optionally with
//! `--uaa`): the real `loadgen` binary registers N hosts through a real `routing-api` (on a
//! SQLite file of the test's own), a real gorouter whose only route source is that Routing API
//! (`nats.hosts: []`) routes them to loadgen's in-process backend under load, and at the end
//! loadgen deletes them again. With token checks on (a [`FakeUaa`]), loadgen fetches a token
//! with its own client credentials; with credentials UAA or the Routing API refuses, it exits 1
//! naming the failure, without loading anything.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use integration::process::{binary, ChildProcess};
use integration::routing_api::{Database, RoutingApi, RoutingApiBuilder};
use integration::uaa::{Endpoint, FakeUaa, DEFAULT_CLIENT_ID};
use integration::{Gorouter, GorouterBuilder, TempDir};
use serde_json::{json, Value};

/// How many hosts each run registers.
const ROUTES: usize = 50;
/// loadgen's route TTL (`loadgen/src/routes.rs`).
const ROUTE_TTL: u64 = 120;
/// The test Routing API's `max_ttl`, above [`ROUTE_TTL`]: a route posted without a TTL gets
/// `max_ttl`, so a listed TTL of [`ROUTE_TTL`] is the one loadgen sent.
const API_MAX_TTL: &str = "max_ttl: 300s";
/// A bound on a whole successful run: registration, the wait until gorouter routes the hosts
/// (loadgen's own limit is 60 s), 1 s of warmup, 2 s of load and the unregistration, on a
/// loaded machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// A bound on a run that must fail at its first registration: one token request (UAA's 401
/// is not retried) or one refused POST and its retry with a fresh token.
const FAIL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the Routing API's list is read while loadgen runs.
const LIST_POLL: Duration = Duration::from_millis(50);

/// A domain no other test (or run) uses: `<tag>-<random>.loadgen-ra.test`.
fn unique_domain(tag: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{tag}-{}.loadgen-ra.test", &id[..8])
}

/// A routing-api on a SQLite file in `dir`, with [`API_MAX_TTL`].
fn api_builder(dir: &TempDir) -> RoutingApiBuilder {
    RoutingApi::builder(Database::sqlite(dir.path().join("routing-api.db"))).yaml(API_MAX_TTL)
}

/// A router whose only route source is the Routing API on 127.0.0.1:`api_port`, without
/// tokens (the API runs in dev mode).
fn router_without_auth(api_port: u16) -> GorouterBuilder {
    // The NATS port is never used: `nats.hosts: []` replaces the default list.
    GorouterBuilder::new(integration::closed_port()).yaml(&format!(
        "nats: {{hosts: []}}\n\
         routing_api: {{uri: 'http://127.0.0.1', port: {api_port}, auth_disabled: true}}\n"
    ))
}

/// The HTTP routes the API lists under `domain` (`GET /routing/v1/routes`, with the API's own
/// token when token checks are on).
async fn routes_of(api: &RoutingApi, domain: &str) -> Vec<Value> {
    let suffix = format!(".{domain}");
    api.http_routes()
        .await
        .into_iter()
        .filter(|r| r["route"].as_str().is_some_and(|h| h.ends_with(&suffix)))
        .collect()
}

/// One loadgen run, watched from outside.
struct Run {
    status: ExitStatus,
    output: String,
    took: Duration,
    /// The `--json` report, if loadgen wrote one.
    report: Option<Value>,
    /// The largest list of the domain's routes the Routing API gave while loadgen ran.
    listed: Vec<Value>,
}

/// Runs `loadgen` with `args` plus `--json <dir>/report.json`, reading the Routing API's
/// routes under `domain` every [`LIST_POLL`] until it exits; panics (with its output) if it
/// still runs after `timeout`.
async fn run_loadgen(
    dir: &Path,
    api: &RoutingApi,
    domain: &str,
    args: &[String],
    timeout: Duration,
) -> Run {
    let report_path: PathBuf = dir.join("report.json");
    let mut cmd = Command::new(binary("loadgen"));
    cmd.args(args).arg("--json").arg(&report_path);
    let command_line = format!(
        "loadgen {} --json {}",
        args.join(" "),
        report_path.display()
    );
    let mut process = ChildProcess::spawn(
        "loadgen",
        cmd,
        dir.join("loadgen.log"),
        command_line.clone(),
    );
    let started = Instant::now();
    let mut listed = Vec::new();
    let status = loop {
        if let Some(status) = process.try_exit() {
            break status;
        }
        let now = routes_of(api, domain).await;
        if now.len() > listed.len() {
            listed = now;
        }
        assert!(
            started.elapsed() < timeout,
            "`{command_line}` still runs after {timeout:?}; its output:\n{}",
            process.output()
        );
        tokio::time::sleep(LIST_POLL).await;
    };
    let took = started.elapsed();
    let output = process.output();
    let report = std::fs::read_to_string(&report_path).ok().map(|text| {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the --json report is not JSON ({e}):\n{text}"))
    });
    Run {
        status,
        output,
        took,
        report,
        listed,
    }
}

/// The arguments of a run loading `target` across [`ROUTES`] hosts under `domain`, registered
/// through the Routing API at `api` (plus `extra`).
fn loadgen_args(target: &str, api: &RoutingApi, domain: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--target",
        &format!("ours={target}"),
        "--routes",
        &ROUTES.to_string(),
        "--route-domain",
        domain,
        "--routing-api",
        &api.url(),
        "--duration",
        "2s",
        "--warmup",
        "1s",
        // The run is about the registration path, not throughput: modest load on a shared
        // two-core machine.
        "--connections",
        "8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Everything a successful run must show: exit 0; the Routing API listed all [`ROUTES`] hosts
/// for one backend while loadgen ran; gorouter answered only 2xx for them (its only route
/// source is the Routing API, so a 200 for `rN.<domain>` is a route it got from there), spread
/// over many of the hosts; and after the run the routes are gone from the Routing API and the
/// router.
async fn assert_registered_routed_and_removed(
    run: &Run,
    api: &RoutingApi,
    router: &Gorouter,
    domain: &str,
) {
    let out = &run.output;
    assert!(
        run.status.success(),
        "loadgen failed ({}):\n{out}",
        run.status
    );

    // Registered: the API listed every host, all for the same loadgen backend.
    let mut hosts: Vec<&str> = run
        .listed
        .iter()
        .map(|r| r["route"].as_str().unwrap_or_default())
        .collect();
    hosts.sort_unstable();
    let mut expected: Vec<String> = (0..ROUTES).map(|i| format!("r{i}.{domain}")).collect();
    expected.sort_unstable();
    assert_eq!(
        hosts, expected,
        "routes the API listed during the run; loadgen:\n{out}"
    );
    let backend_port = &run.listed[0]["port"];
    assert!(
        backend_port.as_u64().is_some_and(|p| p > 0),
        "{}",
        run.listed[0]
    );
    for r in &run.listed {
        assert_eq!(r["ip"], "127.0.0.1", "{r}");
        assert_eq!(&r["port"], backend_port, "one backend for every host: {r}");
        assert_eq!(r["log_guid"], "loadgen", "{r}");
        assert_eq!(r["ttl"], ROUTE_TTL, "loadgen's TTL: {r}");
    }

    // Routed under load: the report (loadgen/schema/report.schema.json).
    let report = run
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("no --json report; loadgen:\n{out}"));
    assert_eq!(report["schema"], "loadgen-report/1", "{report:#}");
    assert_eq!(report["mode"], "closed", "{report:#}");
    assert_eq!(
        report["config"]["routes"],
        json!({
            "count": ROUTES,
            "distribution": "uniform",
            "zipf_s": null,
            "registered_via": "routing-api",
        }),
        "{report:#}"
    );
    let targets = report["targets"].as_array().expect("targets is an array");
    assert_eq!(targets.len(), 1, "{report:#}");
    let t = &targets[0];
    assert_eq!(t["label"], "ours", "{report:#}");
    let requests = t["requests"].as_u64().expect("requests is an integer");
    assert!(requests > 0, "no successful request: {report:#}");
    assert_eq!(t["errors"], 0, "{report:#}\nloadgen:\n{out}");
    assert_eq!(t["error_rate"], 0.0, "{report:#}");
    assert_eq!(t["first_error"], Value::Null, "{report:#}");
    let statuses = t["statuses"].as_object().expect("statuses is an object");
    let mut answered = 0;
    for (code, n) in statuses {
        assert!(
            code.starts_with('2'),
            "status {code} through gorouter: {report:#}"
        );
        answered += n.as_u64().expect("a count");
    }
    assert_eq!(answered, requests, "every request answered 2xx: {report:#}");

    // Spread: gorouter's access log shows many of the hosts, not just the three that loadgen
    // probes before the load (r0, r25, r49). With uniform picks over 50 hosts and >= 100
    // requests, fewer than 10 distinct hosts is practically impossible.
    if requests >= 100 {
        let seen = integration::eventually(
            "gorouter's access log to show at least 10 of the hosts",
            Duration::from_secs(10),
            || {
                let log = router.access_log();
                let seen = (0..ROUTES)
                    .filter(|i| log.contains(&format!("r{i}.{domain}")))
                    .count();
                std::future::ready((seen >= 10).then_some(seen))
            },
        )
        .await;
        assert!(seen >= 10, "{seen}");
        eprintln!("{requests} requests through gorouter, to at least {seen} of the {ROUTES} hosts");
    }

    // Removed: nothing of the domain is left in the API, and the router stops routing it.
    let left = routes_of(api, domain).await;
    assert!(
        left.is_empty(),
        "routes left in the Routing API after loadgen exited: {left:?}\nloadgen:\n{out}"
    );
    for i in [0, ROUTES - 1] {
        let r = router.wait_route_gone(&format!("r{i}.{domain}")).await;
        assert_eq!(r.status, 404, "{}", r.dump());
    }
}

/// Registration, load and removal through a Routing API without token checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_registered_through_the_routing_api_are_loaded_and_removed() {
    let dir = TempDir::new("it-loadgen-routing-api");
    let api = api_builder(&dir).start().await;
    let router = router_without_auth(api.http_port).start().await;
    let domain = unique_domain("plain");
    let target = format!("http://{}/", router.addr());

    let run = run_loadgen(
        dir.path(),
        &api,
        &domain,
        &loadgen_args(&target, &api, &domain, &[]),
        RUN_TIMEOUT,
    )
    .await;
    assert_registered_routed_and_removed(&run, &api, &router, &domain).await;
}

/// The same with token checks on: loadgen gets a token from an HTTPS UAA (whose CA it is given
/// with `--routing-api-ca`) with its own client, which has nothing but
/// `routing.routes.write`; the router uses its own client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_registered_with_a_uaa_token_are_loaded_and_removed() {
    const CLIENT: &str = "loadgen-ra";
    const SECRET: &str = "loadgen-ra-secret";
    // gorouter speaks only https to UAA.
    let uaa = FakeUaa::start_tls().await;
    uaa.add_client(CLIENT, SECRET, &["routing.routes.write"]);
    let dir = TempDir::new("it-loadgen-routing-api");
    let uaa_ca = uaa.write_ca(dir.path());
    let api = api_builder(&dir)
        .uaa(&uaa)
        .yaml(&format!("oauth: {{ca_certs: '{}'}}", uaa_ca.display()))
        .start()
        .await;
    // Token checks are on: a registration without a token is refused.
    let domain = unique_domain("uaa");
    let probe = json!([{"route": format!("probe.{domain}"), "port": 1, "ip": "127.0.0.1"}]);
    let r = api
        .request(
            "POST",
            "/routing/v1/routes",
            &[("Content-Type", "application/json")],
            probe.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.dump());

    let router_config = json!({
        "nats": {"hosts": []},
        "routing_api": {"uri": "http://127.0.0.1", "port": api.http_port, "auth_disabled": false},
        "oauth": uaa.gorouter_oauth(&uaa_ca),
    });
    // JSON is YAML.
    let router = GorouterBuilder::new(integration::closed_port())
        .yaml(&router_config.to_string())
        .start()
        .await;
    let target = format!("http://{}/", router.addr());
    let ca = uaa_ca.display().to_string();
    let mut extra = uaa_flags(&uaa, CLIENT, SECRET).to_vec();
    extra.extend(["--routing-api-ca", &ca]);
    let args = loadgen_args(&target, &api, &domain, &extra);
    let run = run_loadgen(dir.path(), &api, &domain, &args, RUN_TIMEOUT).await;
    assert_registered_routed_and_removed(&run, &api, &router, &domain).await;
}

/// loadgen's flags to take its Routing API tokens from `uaa` as `client` with `secret`.
fn uaa_flags<'a>(uaa: &'a FakeUaa, client: &'a str, secret: &'a str) -> [&'a str; 6] {
    [
        "--uaa",
        uaa.base_url(),
        "--uaa-client-id",
        client,
        "--uaa-client-secret",
        secret,
    ]
}

/// A run whose first registration is refused: exit status 1 within [`FAIL_TIMEOUT`], one
/// `loadgen: error:` line naming the refused call and saying each of `said` exactly once (no
/// cause printed twice), `token_requests` requests to UAA's token endpoint, nothing registered
/// and no report.
async fn refused(uaa: &FakeUaa, client: &str, secret: &str, said: &[&str], token_requests: u64) {
    let dir = TempDir::new("it-loadgen-routing-api");
    let api = api_builder(&dir).uaa(uaa).start().await;
    let domain = unique_domain("refused");
    // Nothing listens on the target: loadgen must fail before it loads anything.
    let target = format!("http://127.0.0.1:{}/", integration::closed_port());
    let args = loadgen_args(&target, &api, &domain, &uaa_flags(uaa, client, secret));
    let run = run_loadgen(dir.path(), &api, &domain, &args, FAIL_TIMEOUT).await;
    let out = &run.output;
    assert_eq!(run.status.code(), Some(1), "{}:\n{out}", run.status);
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("loadgen: error: "))
        .collect();
    let [error] = errors[..] else {
        panic!("not one `loadgen: error:` line in:\n{out}");
    };
    assert!(
        error.starts_with("loadgen: error: POST /routing/v1/routes: "),
        "the error names the refused call first:\n{out}"
    );
    for s in said {
        assert_eq!(
            error.matches(s).count(),
            1,
            "{s:?} not exactly once in the error line:\n{out}"
        );
    }
    assert_eq!(
        uaa.hits(Endpoint::Token),
        token_requests,
        "token requests to UAA; loadgen:\n{out}"
    );
    assert!(run.listed.is_empty(), "registered: {:?}", run.listed);
    assert!(routes_of(&api, &domain).await.is_empty());
    assert!(
        run.report.is_none(),
        "a report after a refused registration"
    );
    eprintln!("refused after {:?}: {error}", run.took);
}

/// UAA refuses loadgen's client secret: loadgen says the token fetch for the registration
/// failed and what UAA answered, after one token request (a 401 from UAA is not retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_fails_the_run_naming_uaa() {
    let uaa = FakeUaa::start().await;
    refused(
        &uaa,
        DEFAULT_CLIENT_ID,
        "not-the-secret",
        &[
            "fetching token: UAA answered 401 Unauthorized: ",
            "Bad credentials",
        ],
        1,
    )
    .await;
}

/// The Routing API refuses loadgen's token (its client may only read routes): loadgen says
/// the Routing API answered 401 and why, after retrying once with a fresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_write_scope_fails_the_run_naming_the_routing_api() {
    let uaa = FakeUaa::start().await;
    uaa.add_client("loadgen-reader", "reader-secret", &["routing.routes.read"]);
    refused(
        &uaa,
        "loadgen-reader",
        "reader-secret",
        &["401 Unauthorized: UnauthorizedError: You are not authorized to perform the requested action"],
        2,
    )
    .await;
}
