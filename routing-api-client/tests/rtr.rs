//! The built `rtr` binary against fake Routing API and UAA servers on 127.0.0.1.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `rtr args…` (killing it after `limit`) without blocking the servers' runtime.
async fn rtr(args: Vec<String>, env: Vec<(&'static str, &'static str)>) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rtr"))
            .args(&args)
            .env_remove("RTR_TRACE")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let limit = Duration::from_secs(20);
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        Run {
            code: status.and_then(|s| s.code()),
            stdout,
            stderr,
        }
    })
    .await
    .unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn flags(api: &FakeServer, uaa: &FakeServer) -> Vec<String> {
    args(&[
        "--api",
        &api.url,
        "--client-id",
        "some-name",
        "--client-secret",
        "some-secret",
        "--oauth-url",
        &uaa.url,
    ])
}

fn cmd(command: &str, flags: Vec<String>, rest: &[&str]) -> Vec<String> {
    let mut v = vec![command.to_string()];
    v.extend(flags);
    v.extend(args(rest));
    v
}

/// A Routing API double that wants a token from the UAA double (`bearer tok-<n>`).
fn api() -> Handler {
    Arc::new(|req: &Recorded| {
        if !req
            .header("authorization")
            .is_some_and(|a| a.starts_with("bearer tok-"))
        {
            return reply(
                401,
                r#"{"name":"UnauthorizedError","message":"You are not authorized to perform the requested action"}"#,
            );
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/routing/v1/routes") => reply(200, &format!("{ROUTES_JSON}\n")),
            ("POST", "/routing/v1/routes") if req.body_str().contains("\"port\":0") => reply(
                400,
                r#"{"name":"RouteInvalidError","message":"Each route request requires a port greater than 0"}"#,
            ),
            ("POST", "/routing/v1/routes") => reply(201, ""),
            ("DELETE", "/routing/v1/routes") => reply(204, ""),
            ("GET", "/routing/v1/events") => sse(
                awkward_chunks(&capture_stream("routing-api-sse-http.txt")),
                Duration::from_millis(1),
                false,
            ),
            ("GET", "/routing/v1/tcp_routes/events") => sse(
                awkward_chunks(&capture_stream("routing-api-sse-tcp.txt")),
                Duration::from_millis(1),
                false,
            ),
            _ => reply(404, "404 page not found\n"),
        }
    })
}

#[tokio::test]
async fn list_prints_the_compact_json_array() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api()).await;
    let run = rtr(cmd("list", flags(&api, &uaa), &[]), vec![]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, format!("{ROUTES_JSON}\n"));
    assert_eq!(uaa.requests().len(), 1);
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/routing/v1/routes");
}

#[tokio::test]
async fn register_and_unregister() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api()).await;
    let routes = r#"[{"route":"zak.com","port":3,"ip":"4","ttl":1},{"route":"jak.com","port":8,"ip":"11","ttl":0,"log_guid":"yo"}]"#;
    let run = rtr(cmd("register", flags(&api, &uaa), &[routes]), vec![]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!("Successfully registered routes: {routes}\n")
    );

    let routes2 = r#"[{"route":"zak.com","ttl":5,"log_guid":"yo"}]"#;
    let run = rtr(cmd("unregister", flags(&api, &uaa), &[routes2]), vec![]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!("Successfully unregistered routes: {routes2}\n")
    );

    let reqs = api.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(
        reqs[0].body_str(),
        r#"[{"route":"zak.com","port":3,"ip":"4","ttl":1,"log_guid":"","modification_tag":{"guid":"","index":0}},{"route":"jak.com","port":8,"ip":"11","ttl":0,"log_guid":"yo","modification_tag":{"guid":"","index":0}}]"#
    );
    assert_eq!(reqs[1].method, "DELETE");
    assert_eq!(
        reqs[1].body_str(),
        r#"[{"route":"zak.com","port":0,"ip":"","ttl":5,"log_guid":"yo","modification_tag":{"guid":"","index":0}}]"#
    );
}

#[tokio::test]
async fn server_errors_exit_3() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api()).await;
    let run = rtr(cmd("register", flags(&api, &uaa), &["[{}]"]), vec![]).await;
    assert_eq!(run.code, Some(3));
    assert_eq!(
        run.stdout,
        "route registration failed: 400 Bad Request: RouteInvalidError: Each route request requires a port greater than 0\n"
    );

    let run = rtr(
        cmd(
            "register",
            flags(&api, &uaa),
            &[r#"[{"kind":"of","valid":"json}]"#],
        ),
        vec![],
    )
    .await;
    assert_eq!(run.code, Some(3));
    assert_eq!(
        run.stdout,
        "route registration failed: unexpected end of JSON input\n"
    );

    // UAA unreachable.
    let mut f = flags(&api, &uaa);
    f[7] = "http://127.0.0.1:1".into();
    let run = rtr(cmd("list", f.clone(), &[]), vec![]).await;
    assert_eq!(run.code, Some(3));
    assert!(
        run.stdout.starts_with("listing routes failed: "),
        "{}",
        run.stdout
    );
    let run = rtr(cmd("events", f.clone(), &[]), vec![]).await;
    assert_eq!(run.code, Some(3));
    assert!(
        run.stdout.starts_with("streaming events failed: "),
        "{}",
        run.stdout
    );
    let run = rtr(cmd("unregister", f, &["[]"]), vec![]).await;
    assert_eq!(run.code, Some(3));
    assert!(
        run.stdout.starts_with("route unregistration failed: "),
        "{}",
        run.stdout
    );
}

fn expected_http_events() -> Vec<String> {
    let stream = String::from_utf8(capture_stream("routing-api-sse-http.txt")).unwrap();
    let mut out = Vec::new();
    let mut action = "";
    for line in stream.lines() {
        if let Some(a) = line.strip_prefix("event: ") {
            action = if a == "Upsert" { "Upsert" } else { "Delete" };
        }
        if let Some(d) = line.strip_prefix("data: ") {
            out.push(format!(r#"{{"Route":{d},"Action":"{action}"}}"#));
        }
    }
    out
}

fn expected_tcp_events() -> Vec<String> {
    let stream = String::from_utf8(capture_stream("routing-api-sse-tcp.txt")).unwrap();
    stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| format!(r#"{{"TcpRouteMapping":{d},"Action":"Upsert"}}"#))
        .collect()
}

#[tokio::test]
async fn events_http_only() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api()).await;
    let run = rtr(cmd("events", flags(&api, &uaa), &["--http"]), vec![]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let mut expected = String::new();
    for e in expected_http_events() {
        expected.push_str(&e);
        expected.push_str("\n\n");
    }
    expected.push_str("Connection closed: EOF\n");
    assert_eq!(run.stdout, expected);
    assert_eq!(api.requests().len(), 1);
    assert_eq!(api.requests()[0].path, "/routing/v1/events");
}

#[tokio::test]
async fn events_tcp_only() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api()).await;
    let run = rtr(cmd("events", flags(&api, &uaa), &["--tcp"]), vec![]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().filter(|l| !l.is_empty()).collect();
    let mut expected = expected_tcp_events();
    expected.push("Connection closed: EOF".into());
    assert_eq!(lines, expected);
    assert_eq!(api.requests()[0].path, "/routing/v1/tcp_routes/events");
}

#[tokio::test]
async fn events_both_by_default() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api()).await;
    for extra in [&[][..], &["--http", "--tcp"][..]] {
        let run = rtr(cmd("events", flags(&api, &uaa), extra), vec![]).await;
        assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
        let lines: Vec<&str> = run.stdout.lines().filter(|l| !l.is_empty()).collect();
        for e in expected_http_events().iter().chain(&expected_tcp_events()) {
            assert!(lines.contains(&e.as_str()), "missing {e} in {}", run.stdout);
        }
        assert_eq!(
            lines
                .iter()
                .filter(|l| **l == "Connection closed: EOF")
                .count(),
            2
        );
        assert_eq!(lines.len(), 2 + 4 + 2);
    }
    // One token per run, reused for both streams.
    assert_eq!(uaa.requests().len(), 2);
}

#[tokio::test]
async fn missing_flags_exit_1_with_help() {
    let run = rtr(args(&["register"]), vec![]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.starts_with(
            "Must provide an API endpoint for the routing-api component.\n\
         Must provide the id of an OAuth client.\n\
         Must provide an OAuth secret.\n\
         Must provide an URL to the OAuth client.\n\
         Must provide routes JSON.\n\n"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Usage: rtr register"), "{}", run.stdout);
    assert!(run.stdout.contains("--client-secret"), "{}", run.stdout);

    for command in ["unregister", "list", "events"] {
        let run = rtr(args(&[command]), vec![]).await;
        assert_eq!(run.code, Some(1), "{command}");
        assert!(
            run.stdout.contains(&format!("Usage: rtr {command}")),
            "{}",
            run.stdout
        );
    }

    let base = args(&[
        "--api",
        "http://127.0.0.1:1",
        "--client-id",
        "a",
        "--client-secret",
        "b",
        "--oauth-url",
        "http://127.0.0.1:1",
    ]);
    let run = rtr(cmd("list", base.clone(), &["ice cream"]), vec![]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.starts_with("Unexpected arguments.\n\n"),
        "{}",
        run.stdout
    );
    let run = rtr(cmd("register", base.clone(), &["[]", "ice cream"]), vec![]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.starts_with("Unexpected arguments.\n\n"),
        "{}",
        run.stdout
    );
    let run = rtr(cmd("register", base.clone(), &[]), vec![]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.starts_with("Must provide routes JSON.\n\n"),
        "{}",
        run.stdout
    );

    let run = rtr(args(&["not-a-command"]), vec![]).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "Not a valid command: not-a-command\n");

    let run = rtr(args(&["list", "--bogus"]), vec![]).await;
    assert_eq!(run.code, Some(1));

    let run = rtr(args(&[]), vec![]).await;
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("RTR_TRACE=true"), "{}", run.stdout);
}

#[tokio::test]
async fn go_style_single_dash_flags() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api()).await;
    let run = rtr(
        args(&[
            "list",
            "-api",
            &api.url,
            "-client-id",
            "n",
            "-client-secret",
            "s",
            &format!("-oauth-url={}", uaa.url),
        ]),
        vec![],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, format!("{ROUTES_JSON}\n"));
}

#[tokio::test]
async fn trace_only_with_rtr_trace_true() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api()).await;
    let run = rtr(
        cmd("list", flags(&api, &uaa), &[]),
        vec![("RTR_TRACE", "true")],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("REQUEST: ["), "{}", run.stdout);
    assert!(
        run.stdout.contains("POST /oauth/token HTTP/1.1"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("GET /routing/v1/routes HTTP/1.1"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("RESPONSE: ["), "{}", run.stdout);
    assert!(
        run.stdout.ends_with(&format!("{ROUTES_JSON}\n")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("tok-"), "{}", run.stdout);
    assert!(!run.stdout.contains("some-secret"), "{}", run.stdout);

    for value in ["false", "adsf"] {
        let run = rtr(
            cmd("list", flags(&api, &uaa), &[]),
            vec![("RTR_TRACE", value)],
        )
        .await;
        assert_eq!(run.code, Some(0));
        assert!(!run.stdout.contains("REQUEST"), "{}", run.stdout);
    }
}

#[tokio::test]
async fn no_auth_sends_no_token() {
    let api = FakeServer::start(Arc::new(|req: &Recorded| {
        assert!(req.header("authorization").is_none());
        reply(200, ROUTES_JSON)
    }))
    .await;
    let run = rtr(args(&["list", "--api", &api.url, "--no-auth"]), vec![]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, format!("{ROUTES_JSON}\n"));
}

#[tokio::test]
async fn tls_with_ca_certs_or_skip_verification() {
    let uaa = FakeServer::start_tls(fake_uaa(3600), false).await;
    let api = FakeServer::start_tls(api(), false).await;
    // Without trust in the test CA: fails.
    let run = rtr(cmd("list", flags(&api, &uaa), &[]), vec![]).await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(
        run.stdout.starts_with("listing routes failed: "),
        "{}",
        run.stdout
    );
    // --ca-certs is trusted for UAA and the API.
    let ca = fixture("ca.pem").display().to_string();
    let run = rtr(cmd("list", flags(&api, &uaa), &["--ca-certs", &ca]), vec![]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, format!("{ROUTES_JSON}\n"));
    // -k, global or per command.
    let mut with_k = vec!["-k".to_string()];
    with_k.extend(cmd("list", flags(&api, &uaa), &[]));
    let run = rtr(with_k, vec![]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let run = rtr(
        cmd(
            "events",
            flags(&api, &uaa),
            &["--http", "--skip-tls-verification"],
        ),
        vec![],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.ends_with("Connection closed: EOF\n"),
        "{}",
        run.stdout
    );
}
