//! The HTTP/1.x request head as gorouter reads it, through the request stages that look at
//! what the client sent (A.5-A.9): health check, Host validation (`stages::host::check`),
//! `X-CF-App-Instance` (`stages::app_instance`), the header size limit
//! (`stages::max_request_size`), the route lookup (`stages::lookup`), sticky sessions from
//! `Cookie` (`JSESSIONID` + `__VCAP_ID__`, `stages::sticky`), tracing headers (`stages::trace`),
//! hop-by-hop removal and `X-Forwarded-*` (`stages::forwarded`), `X-Forwarded-Client-Cert`
//! (`stages::client_cert`), then the app's `Set-Cookie` on the way back (`sticky::set_vcap_cookie`).
//!
//! The head is split with `httparse` and turned into an `http::Request` the way hyper (which
//! gorouter's listener uses) does. Byte 0 holds flags (TLS connection, client certificate,
//! XFCC mode, tracing on/off); the rest is the request head (and anything after it).
//!
//! Invariants:
//! - no panic;
//! - an accepted Host is non-empty text of Go's valid host bytes, and a request with two `Host`
//!   headers is refused;
//! - an accepted `X-CF-App-Instance` is `<36-char guid>:<digits>`;
//! - the backend request has no hop-by-hop header left (bar `TE: trailers`), no
//!   `X-CF-App-Instance`, an `X-Forwarded-For` ending in the client's IP, and an
//!   `X-Forwarded-Client-Cert` only as its mode allows;
//! - the request id returned is the `X-Vcap-Request-Id` sent on.
use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use gorouter::config::{Config, ForwardedClientCert};
use gorouter::proxy::headers::{
    is_websocket_upgrade, X_CF_APP_INSTANCE, X_FORWARDED_CLIENT_CERT, X_FORWARDED_FOR,
    X_VCAP_REQUEST_ID,
};
use gorouter::proxy::stages::client_cert::RouteServiceTraffic;
use gorouter::proxy::stages::{
    app_instance, client_cert, forwarded, health_check, host, lookup, max_request_size, sticky,
    trace,
};
use gorouter::proxy::{ClientConn, ProxySettings};
use gorouter::registry::{EndpointSpec, RouteTable, TableSettings};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

struct Fixture {
    config: Config,
    table: RouteTable,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let config = Config::from_yaml("").expect("gorouter's default config");
        let table = RouteTable::new(TableSettings::from_config(&config));
        for (uri, id) in [
            ("echo.example.com", "instance-a"),
            ("echo.example.com", "instance-b"),
            ("echo.example.com/path/deeper", "instance-c"),
            ("*.wild.example.com", "instance-d"),
        ] {
            let spec = EndpointSpec {
                host: "10.0.0.1".into(),
                port: 8080 + id.len() as u16 + id.as_bytes()[9] as u16,
                app: "6e6b2f1e-0000-4000-8000-0123456789ab".into(),
                private_instance_id: id.into(),
                private_instance_index: "0".into(),
                ..Default::default()
            };
            table.register(uri, &spec);
        }
        Fixture { config, table }
    })
}

/// The request head as hyper builds it: `None` where hyper answers 400 itself.
fn parse_head(data: &[u8]) -> Option<Request<()>> {
    // As many header lines as gorouter's listener lets hyper parse.
    let mut slots = vec![httparse::EMPTY_HEADER; gorouter::proxy::listener::MAX_REQUEST_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(data) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri = Uri::from_maybe_shared(Bytes::copy_from_slice(parsed.path?.as_bytes())).ok()?;
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut builder = Request::builder().method(method).uri(uri).version(version);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        builder = builder.header(name, value);
    }
    builder.body(()).ok()
}

fn valid_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=[]_~".contains(&b)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let Some((&flags, head)) = data.split_first() else {
        return;
    };
    let Some(mut req) = parse_head(head) else {
        return;
    };
    let f = fixture();
    let mut settings = ProxySettings::from_config(&f.config);
    settings.forwarded_client_cert = match (flags >> 2) % 3 {
        0 => ForwardedClientCert::AlwaysForward,
        1 => ForwardedClientCert::Forward,
        _ => ForwardedClientCert::SanitizeSet,
    };
    settings.trace.zipkin = flags & 0x10 != 0;
    settings.trace.w3c = flags & 0x20 != 0;
    let tls = flags & 1 != 0;
    let remote: SocketAddr = "203.0.113.9:4444".parse().expect("address");
    let mut conn = ClientConn::new(remote, tls);
    if tls && flags & 2 != 0 {
        conn = conn.with_client_cert(Bytes::from_static(b"\x30\x03\x02\x01\x01"));
    }

    let _ = health_check::is_health_check(req.headers(), &settings.healthcheck_user_agent);
    let request_id = trace::apply(req.headers_mut(), &settings.trace);
    assert_eq!(req.headers().get(&X_VCAP_REQUEST_ID), Some(&request_id));
    let host = match host::check(&req, &conn) {
        Ok(host) => host,
        Err(_) => return,
    };
    assert!(!host.is_empty());
    assert!(
        req.headers().get_all(header::HOST).iter().count() <= 1,
        "two Host headers accepted"
    );
    if req.headers().contains_key(header::HOST) {
        assert!(host.bytes().all(valid_host_byte), "accepted Host {host:?}");
    }
    let instance = match app_instance::requested(req.headers()) {
        Ok(i) => i,
        Err(_) => return,
    };
    if let Some((guid, index)) = &instance {
        assert_eq!(guid.len(), 36, "guid {guid:?}");
        assert!(
            !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()),
            "index {index:?}"
        );
    }
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let pool = lookup::find_pool(&f.table, &host, path, settings.empty_pool_response_code_503).ok();
    if max_request_size::check(&req, &host, settings.max_header_bytes).is_err() {
        return;
    }
    let sticky_id = sticky::requested_instance(req.headers(), &settings.sticky_cookie_names);
    let websocket = is_websocket_upgrade(req.headers());

    let (parts, ()) = req.into_parts();
    let mut h: HeaderMap = parts.headers;
    // A header the client names in `Connection` is hop-by-hop, XFCC included.
    let xfcc_hop = h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("x-forwarded-client-cert"))
        })
    });
    let client_xfcc: Vec<HeaderValue> = if xfcc_hop {
        Vec::new()
    } else {
        h.get_all(&X_FORWARDED_CLIENT_CERT)
            .iter()
            .cloned()
            .collect()
    };
    let te_trailers = h.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    forwarded::prepare(
        &mut h,
        &conn,
        &settings,
        false,
        std::time::SystemTime::now(),
    );
    client_cert::apply(
        &mut h,
        settings.forwarded_client_cert,
        &conn,
        RouteServiceTraffic::default(),
    );
    forwarded::set_connection(&mut h, websocket, false);

    for name in HOP_BY_HOP {
        if name == "connection" || (websocket && name == "upgrade") {
            continue; // set_connection writes the backend's own
        }
        assert!(
            !h.contains_key(name),
            "hop-by-hop {name} sent to the backend"
        );
    }
    if let Some(te) = h.get(header::TE) {
        assert!(
            te_trailers && te == "trailers",
            "TE {te:?} sent to the backend"
        );
    }
    assert!(!h.contains_key(&X_CF_APP_INSTANCE));
    let xff = h
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .next_back()
        .expect("X-Forwarded-For set");
    assert!(
        xff.as_bytes().ends_with(b"203.0.113.9"),
        "X-Forwarded-For {xff:?}"
    );
    let xfcc: Vec<HeaderValue> = h
        .get_all(&X_FORWARDED_CLIENT_CERT)
        .iter()
        .cloned()
        .collect();
    match settings.forwarded_client_cert {
        ForwardedClientCert::AlwaysForward => assert_eq!(xfcc, client_xfcc),
        ForwardedClientCert::Forward if conn.client_cert.is_none() => assert!(xfcc.is_empty()),
        ForwardedClientCert::Forward => assert_eq!(xfcc, client_xfcc),
        ForwardedClientCert::SanitizeSet => {
            let expected: Vec<HeaderValue> = conn.client_cert_header.iter().cloned().collect();
            assert_eq!(xfcc, expected);
        }
    }

    // The app's answer: the request's own headers stand in for the backend's Set-Cookie lines.
    if let Some(pool) = pool {
        let endpoints = pool.endpoints();
        if let Some(endpoint) = endpoints.first() {
            let mut response = HeaderMap::new();
            for v in h.get_all(header::COOKIE) {
                response.append(header::SET_COOKIE, v.clone());
            }
            sticky::set_vcap_cookie(
                &mut response,
                endpoint,
                &pool,
                sticky_id.as_deref(),
                &settings.sticky_cookie_names,
                settings.secure_cookies,
            );
        }
    }
}
