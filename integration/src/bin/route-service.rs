//! `route-service`: an example Cloud Foundry route service, for end-to-end tests and for
//! `tools/bench-route-service`.
//!
//! When a route is bound to a route service, gorouter sends the client's request to the route
//! service instead of the app, with three headers added: `X-CF-Forwarded-Url` (the original
//! URL), `X-CF-Proxy-Signature` and `X-CF-Proxy-Metadata` (opaque to the route service). A route
//! service does whatever it does (here: nothing but count and tag) and then sends the request to
//! the forwarded URL, same method, headers (the signature and metadata unchanged) and body,
//! through the router, which validates the signature and forwards to the app; the route
//! service relays the response back.
//!
//! This process does exactly that:
//!
//! - It listens on `--listen` (plain HTTP/1.1, or HTTPS with `--tls-cert`/`--tls-key`, HTTP/1.1
//!   or HTTP/2 by ALPN; `--client-ca` requires and verifies a client certificate) and prints one
//!   line, `listening on ADDR`, on stdout once bound.
//! - A request without all three `X-CF-*` headers, or whose forwarded URL is not an absolute
//!   `http(s)://` URL, is answered `400` and not forwarded.
//! - Otherwise the request goes to `--router` (the forwarded URL's host is usually not
//!   resolvable): `Host` = the forwarded URL's authority, target = its path and query. Plain
//!   HTTP unless the forwarded URL is `https://` and `--router-tls` is given (server name = the
//!   forwarded URL's host; trust `--router-ca` or, with `--router-insecure`, anything). Hop-by-hop
//!   headers are dropped both ways; `X-Route-Service: NAME` is added to the forwarded request
//!   and to the relayed response, and `X-Route-Service-Client-Cn: CN` to the forwarded request
//!   when a client certificate was verified. Connections to the router are kept alive and
//!   reused (at most 64 idle). Reaching the router (connect, handshake, request, response head)
//!   has a 30 s deadline; failing it is a `502`.
//! - `GET /__route_service/stats` is answered locally: `{"requests":N}`, N the requests received
//!   so far other than these.
//!
//! Run `route-service --help` for the flags.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const USAGE: &str = "\
usage: route-service --router HOST:PORT [flags]

  --listen ADDR       address to listen on [default: 127.0.0.1:0]; prints `listening on ADDR`
  --router HOST:PORT  the router to send forwarded requests to (required)
  --router-tls        use TLS to the router when the forwarded URL is https:// (needs
                      --router-ca or --router-insecure); otherwise always plain HTTP
  --router-ca FILE    PEM CA certificate(s) the router's certificate is verified against
  --router-insecure   do not verify the router's certificate
  --tls-cert FILE     serve HTTPS with this PEM certificate chain (needs --tls-key)
  --tls-key FILE      the PEM private key of --tls-cert
  --client-ca FILE    with TLS: require a client certificate signed by a CA in this PEM file
  --name NAME         the value of the X-Route-Service header [default: route-service]
  --help              print this and exit";

/// One line on stderr; unlike `eprintln!`, a closed stderr does not panic.
macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The forwarded-URL and signature headers gorouter adds for a route service.
const FORWARDED_URL: &str = "x-cf-forwarded-url";
const PROXY_SIGNATURE: &str = "x-cf-proxy-signature";
const PROXY_METADATA: &str = "x-cf-proxy-metadata";
/// Added to the forwarded request and the relayed response.
const ROUTE_SERVICE: &str = "x-route-service";
/// Added to the forwarded request: the verified client certificate's subject common name.
const CLIENT_CN: &str = "x-route-service-client-cn";
const STATS_PATH: &str = "/__route_service/stats";

/// Deadline for reaching the router: checkout or connect, handshake, request, response head.
const ROUTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections to the router kept for reuse.
const MAX_IDLE: usize = 64;

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    listen: SocketAddr,
    router: SocketAddr,
    router_tls: Option<RouterTrust>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    name: String,
}

/// How the router's certificate is checked with `--router-tls`.
#[derive(Debug, PartialEq)]
enum RouterTrust {
    Ca(PathBuf),
    Insecure,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Run(Args),
    Help,
}

/// Parses the flags (`--name value` form); the error is a usage message.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut listen = None;
    let mut router = None;
    let mut router_tls = false;
    let mut router_ca = None;
    let mut router_insecure = false;
    let mut tls_cert = None;
    let mut tls_key = None;
    let mut client_ca = None;
    let mut name = None;
    let mut seen = HashSet::new();
    while let Some(flag) = args.next() {
        if !seen.insert(flag.clone()) {
            return Err(format!("{flag} given twice"));
        }
        let mut value = || {
            args.next()
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--listen" => listen = Some(parse_addr("--listen", &value()?)?),
            "--router" => router = Some(parse_addr("--router", &value()?)?),
            "--router-tls" => router_tls = true,
            "--router-ca" => router_ca = Some(PathBuf::from(value()?)),
            "--router-insecure" => router_insecure = true,
            "--tls-cert" => tls_cert = Some(PathBuf::from(value()?)),
            "--tls-key" => tls_key = Some(PathBuf::from(value()?)),
            "--client-ca" => client_ca = Some(PathBuf::from(value()?)),
            "--name" => {
                let v = value()?;
                HeaderValue::from_str(&v)
                    .map_err(|_| format!("--name {v:?} is not a valid header value"))?;
                name = Some(v);
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    let router = router.ok_or("--router HOST:PORT is required")?;
    let router_tls = match (router_tls, router_ca, router_insecure) {
        (false, None, false) => None,
        (false, _, _) => return Err("--router-ca and --router-insecure need --router-tls".into()),
        (true, Some(_), true) => {
            return Err("--router-ca and --router-insecure exclude each other".into())
        }
        (true, Some(ca), false) => Some(RouterTrust::Ca(ca)),
        (true, None, true) => Some(RouterTrust::Insecure),
        (true, None, false) => {
            return Err("--router-tls needs --router-ca FILE or --router-insecure".into())
        }
    };
    if tls_cert.is_some() != tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    if client_ca.is_some() && tls_cert.is_none() {
        return Err("--client-ca needs --tls-cert and --tls-key".into());
    }
    Ok(Command::Run(Args {
        listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
        router,
        router_tls,
        tls_cert,
        tls_key,
        client_ca,
        name: name.unwrap_or_else(|| "route-service".into()),
    }))
}

fn parse_addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{flag} {v:?} is not an IP:PORT address"))
}

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let Ok(args) = args else {
        log!("route-service: an argument is not valid UTF-8\n{USAGE}");
        return ExitCode::from(2);
    };
    let args = match parse_args(args.into_iter()) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            log!("route-service: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log!("route-service: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("route-service: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A startup failure, as one line.
struct Fatal(String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What every request handler shares.
struct State {
    name: HeaderValue,
    router: SocketAddr,
    /// The TLS client to the router, with `--router-tls`.
    router_tls: Option<TlsConnector>,
    pool: Pool,
    requests: AtomicU64,
}

async fn run(args: Args) -> Result<(), Fatal> {
    let provider = Arc::new(ring::default_provider());
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(Arc::new(server_tls(
            &provider,
            cert,
            key,
            args.client_ca.as_ref(),
        )?))),
        _ => None,
    };
    let router_tls = match &args.router_tls {
        Some(trust) => Some(TlsConnector::from(Arc::new(client_tls(&provider, trust)?))),
        None => None,
    };
    let name = HeaderValue::from_str(&args.name)
        .map_err(|_| Fatal(format!("--name {:?} is not a header value", args.name)))?;
    let state = Arc::new(State {
        name,
        router: args.router,
        router_tls,
        pool: Pool::default(),
        requests: AtomicU64::new(0),
    });

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Fatal(format!("binding {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Fatal(format!("the listener's address: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")
            .and_then(|()| out.flush())
            .map_err(|e| Fatal(format!("writing to stdout: {e}")))?;
    }
    log!(
        "route-service {:?}: {} on {addr}, forwarding to {}",
        args.name,
        if acceptor.is_some() { "HTTPS" } else { "HTTP" },
        args.router
    );

    let accept = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    log!("route-service: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(
                stream,
                peer,
                acceptor.clone(),
                state.clone(),
            ));
        }
    };
    tokio::select! {
        () = accept => Ok(()),
        () = shutdown_signal() => Ok(()),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn read_file(what: &str, path: &PathBuf) -> Result<Vec<u8>, Fatal> {
    std::fs::read(path).map_err(|e| Fatal(format!("reading {what} {}: {e}", path.display())))
}

fn read_certs(what: &str, path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, Fatal> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Fatal(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Fatal(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_roots(what: &str, path: &PathBuf) -> Result<RootCertStore, Fatal> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|e| Fatal(format!("{what} {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The HTTPS listener's configuration: `--tls-cert`/`--tls-key`, and a required, verified
/// client certificate with `--client-ca`.
fn server_tls(
    provider: &Arc<CryptoProvider>,
    cert: &PathBuf,
    key: &PathBuf,
    client_ca: Option<&PathBuf>,
) -> Result<ServerConfig, Fatal> {
    let chain = read_certs("--tls-cert", cert)?;
    let key_pem = read_file("--tls-key", key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| Fatal(format!("--tls-key {}: {e}", key.display())))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Fatal(format!("TLS server: {e}")))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(read_roots("--client-ca", ca)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| Fatal(format!("--client-ca {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| Fatal(format!("--tls-cert/--tls-key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS client to the router (`--router-tls`).
fn client_tls(provider: &Arc<CryptoProvider>, trust: &RouterTrust) -> Result<ClientConfig, Fatal> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Fatal(format!("TLS client: {e}")))?;
    let mut config = match trust {
        RouterTrust::Ca(ca) => builder
            .with_root_certificates(read_roots("--router-ca", ca)?)
            .with_no_client_auth(),
        RouterTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(routing_api_client::tls::no_verification(
                provider.clone(),
            ))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One client connection: the TLS handshake if any, then HTTP/1.1 (or HTTP/2 by ALPN).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
) {
    let Some(acceptor) = acceptor else {
        serve_http(stream, false, None, state).await;
        return;
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        // A connection closed before any handshake is a port probe, not worth a line.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
        Ok(Err(e)) => {
            log!("route-service: TLS handshake with {peer}: {e}");
            return;
        }
        Err(_) => {
            log!("route-service: TLS handshake with {peer}: timed out");
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let h2 = conn.alpn_protocol() == Some(b"h2");
    // With --client-ca the verifier has already required and verified this certificate.
    let client_cn = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| subject_common_name(leaf.as_ref()))
        .and_then(|cn| match HeaderValue::from_bytes(cn.as_bytes()) {
            Ok(v) => Some(v),
            Err(_) => {
                log!("route-service: client {peer}: common name {cn:?} is not a header value; not forwarded");
                None
            }
        });
    serve_http(tls, h2, client_cn, state).await;
}

async fn serve_http<I>(io: I, h2: bool, client_cn: Option<HeaderValue>, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        let client_cn = client_cn.clone();
        async move { Ok::<_, Infallible>(handle(req, client_cn, state).await) }
    });
    let io = TokioIo::new(io);
    // A client going away mid-request is not this process's problem: errors are dropped.
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }
}

/// What the handler answers with: a local response or the router's, relayed.
type ResponseBody = Either<Full<Bytes>, RelayBody>;

fn local(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn handle(
    req: Request<Incoming>,
    client_cn: Option<HeaderValue>,
    state: Arc<State>,
) -> Response<ResponseBody> {
    if req.method() == Method::GET && req.uri().path() == STATS_PATH {
        let n = state.requests.load(Ordering::Relaxed);
        return local(
            StatusCode::OK,
            "application/json",
            format!("{{\"requests\":{n}}}\n"),
        );
    }
    state.requests.fetch_add(1, Ordering::Relaxed);
    let mut resp = match forward(req, client_cn, &state).await {
        Ok(resp) => resp,
        Err(Refusal::BadRequest(message)) => {
            local(StatusCode::BAD_REQUEST, "text/plain", message + "\n")
        }
        Err(Refusal::Router(e)) => {
            log!("route-service: {e}");
            local(
                StatusCode::BAD_GATEWAY,
                "text/plain",
                format!("route service could not reach the router: {e}\n"),
            )
        }
    };
    resp.headers_mut()
        .insert(HeaderName::from_static(ROUTE_SERVICE), state.name.clone());
    resp
}

/// Why a request was not relayed.
enum Refusal {
    /// 400: the route-service headers are missing or wrong.
    BadRequest(String),
    /// 502: the router could not be reached in time.
    Router(String),
}

/// The forwarded URL's parts the outbound request needs.
#[derive(Debug, PartialEq)]
struct Forwarded {
    https: bool,
    /// The `Host` header: host and port as in the URL.
    authority: HeaderValue,
    /// The TLS server name: the host, brackets of an IPv6 address removed.
    host: String,
    /// Origin-form target: path and query (`/` when empty).
    target: Uri,
}

/// Checks the three route-service headers and parses the forwarded URL.
fn parse_forwarded(headers: &HeaderMap) -> Result<Forwarded, String> {
    let missing: Vec<&str> = [
        ("X-CF-Forwarded-Url", FORWARDED_URL),
        ("X-CF-Proxy-Signature", PROXY_SIGNATURE),
        ("X-CF-Proxy-Metadata", PROXY_METADATA),
    ]
    .into_iter()
    .filter(|(_, name)| headers.get(*name).is_none_or(|v| v.is_empty()))
    .map(|(display, _)| display)
    .collect();
    if !missing.is_empty() {
        return Err(format!("missing {}", missing.join("/")));
    }
    let raw = headers
        .get(FORWARDED_URL)
        .and_then(|v| v.to_str().ok())
        .ok_or("invalid X-CF-Forwarded-Url: not visible ASCII")?;
    let invalid = |why: &str| format!("invalid X-CF-Forwarded-Url {raw:?}: {why}");
    let url: Uri = raw.parse().map_err(|e| invalid(&format!("{e}")))?;
    let https = match url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(invalid("not an http:// or https:// URL")),
    };
    let host = url
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("no host"))?;
    let authority = match url.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let authority = HeaderValue::from_str(&authority).map_err(|e| invalid(&format!("{e}")))?;
    let target = url
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| !pq.is_empty())
        .unwrap_or("/");
    let target: Uri = if target.starts_with('/') {
        target.parse().map_err(|e| invalid(&format!("{e}")))?
    } else {
        format!("/{target}")
            .parse()
            .map_err(|e| invalid(&format!("{e}")))?
    };
    Ok(Forwarded {
        https,
        authority,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        target,
    })
}

/// Removes the hop-by-hop headers: the fixed list and those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    // Any other Proxy-* header.
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Sends the request to the router as the forwarded URL says, and relays the response.
async fn forward(
    req: Request<Incoming>,
    client_cn: Option<HeaderValue>,
    state: &Arc<State>,
) -> Result<Response<ResponseBody>, Refusal> {
    let forwarded = parse_forwarded(req.headers()).map_err(Refusal::BadRequest)?;
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.headers.remove(CLIENT_CN);
    parts.headers.insert(header::HOST, forwarded.authority);
    parts
        .headers
        .insert(HeaderName::from_static(ROUTE_SERVICE), state.name.clone());
    if let Some(cn) = client_cn {
        parts.headers.insert(HeaderName::from_static(CLIENT_CN), cn);
    }
    parts.uri = forwarded.target;
    parts.version = Version::HTTP_11;
    let out = Request::from_parts(parts, body);

    let key = match (&state.router_tls, forwarded.https) {
        (Some(_), true) => ConnKey::Tls(forwarded.host),
        _ => ConnKey::Plain,
    };
    let (resp, sender) = match tokio::time::timeout(ROUTER_TIMEOUT, send(state, &key, out)).await {
        Ok(Ok(sent)) => sent,
        Ok(Err(e)) => return Err(Refusal::Router(e)),
        Err(_) => {
            return Err(Refusal::Router(format!(
                "no response from {} within {ROUTER_TIMEOUT:?}",
                state.router
            )))
        }
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = RelayBody {
        inner: body,
        idle: Some((key, sender)),
        state: state.clone(),
    };
    Ok(Response::from_parts(parts, Either::Right(body)))
}

/// Which idle connections a request may use: plain, or TLS with this server name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnKey {
    Plain,
    Tls(String),
}

type Sender = SendRequest<Incoming>;

/// Idle HTTP/1.1 connections to the router, newest last.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<(ConnKey, Sender)>>,
}

impl Pool {
    /// The newest idle connection for `key`, dropping closed ones on the way.
    fn checkout(&self, key: &ConnKey) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, s)| !s.is_closed());
        let i = idle.iter().rposition(|(k, _)| k == key)?;
        Some(idle.remove(i).1)
    }

    fn checkin(&self, key: ConnKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE {
            // Drop the oldest: the newest are the likeliest to be alive.
            idle.remove(0);
        }
        idle.push((key, sender));
    }
}

/// Sends `req` on an idle connection for `key`, or on a new one; a pooled connection that turns
/// out to be closed before the request was written to it is skipped.
async fn send(
    state: &State,
    key: &ConnKey,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Sender), String> {
    while let Some(mut sender) = state.pool.checkout(key) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, sender)),
            Err(mut e) => match e.take_message() {
                Some(back) => req = back,
                None => return Err(error_chain(&e.into_error())),
            },
        }
    }
    let mut sender = connect(state, key).await?;
    sender
        .ready()
        .await
        .map_err(|e| format!("connection to {}: {}", state.router, error_chain(&e)))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request to {}: {}", state.router, error_chain(&e)))?;
    Ok((resp, sender))
}

/// A new HTTP/1.1 connection to the router, over TLS for a [`ConnKey::Tls`].
async fn connect(state: &State, key: &ConnKey) -> Result<Sender, String> {
    let router = state.router;
    let tcp = TcpStream::connect(router)
        .await
        .map_err(|e| format!("connecting to {router}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match (key, &state.router_tls) {
        (ConnKey::Tls(host), Some(connector)) => {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {router} ({host}): {e}"))?;
            handshake(tls, router).await
        }
        _ => handshake(tcp, router).await,
    }
}

async fn handshake<I>(io: I, router: SocketAddr) -> Result<Sender, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake with {router}: {}", error_chain(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The router's response body, relayed; once it has been read to its end the connection goes
/// back to the pool (dropped earlier, it is closed).
struct RelayBody {
    inner: Incoming,
    idle: Option<(ConnKey, Sender)>,
    state: Arc<State>,
}

impl RelayBody {
    fn release(&mut self) {
        if let Some((key, sender)) = self.idle.take() {
            self.state.pool.checkin(key, sender);
        }
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.idle = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        // An empty body (204, HEAD, Content-Length: 0) is never polled.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

/// The subject common name of a DER certificate (the last CN attribute, as Go's crypto/x509),
/// or `None` when there is none or the DER does not parse.
fn subject_common_name(der: &[u8]) -> Option<String> {
    let (_, cert, _) = der_element(der).filter(|(tag, _, _)| *tag == 0x30)?;
    let (_, tbs, _) = der_element(cert).filter(|(tag, _, _)| *tag == 0x30)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let (_, subject, _) = der_element(rest).filter(|(tag, _, _)| *tag == 0x30)?;
    let mut cn = None;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, next) = der_element(rdns).filter(|(tag, _, _)| *tag == 0x31)?;
        rdns = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, next) = der_element(attrs).filter(|(tag, _, _)| *tag == 0x30)?;
            attrs = next;
            let (_, oid, value) = der_element(attr).filter(|(tag, _, _)| *tag == 0x06)?;
            if oid != [0x55, 0x04, 0x03] {
                continue;
            }
            let (tag, text, _) = der_element(value)?;
            cn = Some(match tag {
                // BMPString: UTF-16BE.
                0x1e => {
                    let units: Vec<u16> = text
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect();
                    String::from_utf16_lossy(&units)
                }
                // UTF8String, PrintableString, T61String, IA5String and the like.
                _ => String::from_utf8_lossy(text).into_owned(),
            });
        }
    }
    cn
}

/// One DER element: (tag, contents, the bytes after it). Single-byte tags, definite lengths.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &input[..n] {
            len = (len << 8) | usize::from(b);
        }
        input = &input[n..];
        len
    };
    if input.len() < len {
        return None;
    }
    Some((tag, &input[..len], &input[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let Ok(Command::Run(a)) = args(&["--router", "127.0.0.1:8081"]) else {
            panic!("--router alone is enough");
        };
        assert_eq!(a.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(a.name, "route-service");
        assert_eq!(a.router_tls, None);
        let Ok(Command::Run(a)) = args(&[
            "--listen",
            "0.0.0.0:9000",
            "--router",
            "127.0.0.1:8443",
            "--router-tls",
            "--router-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--client-ca",
            "cca.pem",
            "--name",
            "rs-1",
        ]) else {
            panic!("every flag");
        };
        assert_eq!(a.router_tls, Some(RouterTrust::Ca("ca.pem".into())));
        assert_eq!(a.client_ca, Some("cca.pem".into()));
        assert_eq!(a.name, "rs-1");
        assert_eq!(args(&["--help"]), Ok(Command::Help));
        for bad in [
            &["--router", "127.0.0.1:1", "--bogus"][..],
            &[][..],
            &["--router"][..],
            &["--router", "--listen", "127.0.0.1:0"][..],
            &["--router", "localhost"][..],
            &["--router", "127.0.0.1:1", "--router", "127.0.0.1:2"][..],
            &["--router", "127.0.0.1:1", "--router-tls"][..],
            &["--router", "127.0.0.1:1", "--router-insecure"][..],
            &["--router", "127.0.0.1:1", "--tls-cert", "c.pem"][..],
            &["--router", "127.0.0.1:1", "--client-ca", "c.pem"][..],
            &["--router", "127.0.0.1:1", "--name", "a\nb"][..],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in list {
            h.insert(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_url() {
        let h = headers(&[
            (FORWARDED_URL, "https://app.example.com:8443/some/path?q=1"),
            (PROXY_SIGNATURE, "sig"),
            (PROXY_METADATA, "meta"),
        ]);
        let f = parse_forwarded(&h).unwrap();
        assert!(f.https);
        assert_eq!(f.authority, "app.example.com:8443");
        assert_eq!(f.host, "app.example.com");
        assert_eq!(f.target, "/some/path?q=1");
        let h = headers(&[
            (FORWARDED_URL, "http://[::1]"),
            (PROXY_SIGNATURE, "sig"),
            (PROXY_METADATA, "meta"),
        ]);
        let f = parse_forwarded(&h).unwrap();
        assert!(!f.https);
        assert_eq!(f.authority, "[::1]");
        assert_eq!(f.host, "::1");
        assert_eq!(f.target, "/");

        let h = headers(&[(PROXY_SIGNATURE, "sig")]);
        assert_eq!(
            parse_forwarded(&h).unwrap_err(),
            "missing X-CF-Forwarded-Url/X-CF-Proxy-Metadata"
        );
        let h = headers(&[
            (FORWARDED_URL, "/just/a/path"),
            (PROXY_SIGNATURE, "sig"),
            (PROXY_METADATA, "meta"),
        ]);
        assert!(parse_forwarded(&h).unwrap_err().starts_with("invalid"));
    }

    #[test]
    fn hop_by_hop() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "x"),
            ("proxy-foo", "x"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-cf-proxy-signature", "sig"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-cf-proxy-signature"]);
    }

    #[test]
    fn common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Org");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "my client ü");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_common_name(cert.der()).as_deref(),
            Some("my client ü")
        );
        let params = rcgen::CertificateParams::new(vec!["client.test".into()]).unwrap();
        let mut params = params;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()), None);
        assert_eq!(subject_common_name(b"\x30\x05junk"), None);
    }
}
