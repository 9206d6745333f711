//! Test doubles for the client's peers: a tiny hyper server on 127.0.0.1 (plain, TLS or mutual
//! TLS) that records requests and answers through a handler, and a fake UAA token endpoint.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::rustls;

pub type Reply = Response<BoxBody<Bytes, Infallible>>;
pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(handler: Handler) -> Self {
        Self::start_inner(handler, None).await
    }

    /// HTTPS with `server.pem`; when `require_client_cert`, clients must present a certificate
    /// signed by `ca.pem`.
    pub async fn start_tls(handler: Handler, require_client_cert: bool) -> Self {
        Self::start_inner(handler, Some(server_tls_config(require_client_cert))).await
    }

    async fn start_inner(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let recorded = recorded.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let recorded = recorded.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let rec = Recorded {
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts.headers,
                                body,
                            };
                            recorded.lock().unwrap().push(rec.clone());
                            Ok::<_, Infallible>(handler(&rec))
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        FakeServer {
            addr,
            url: format!("{scheme}://{addr}"),
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self, path_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .count()
    }
}

fn server_tls_config(require_client_cert: bool) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(builder.with_single_cert(certs, key).unwrap())
}

fn full(body: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
    Full::new(body.into()).boxed()
}

/// A JSON (or any text) answer.
pub fn reply(status: u16, body: &str) -> Reply {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    if !body.is_empty() {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    resp
}

/// An SSE answer delivering `chunks` with `gap` between them, then ending the body (or, with
/// `hold_open`, keeping the connection open for a minute).
pub fn sse(chunks: Vec<Vec<u8>>, gap: Duration, hold_open: bool) -> Reply {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(Ok(Frame::data(Bytes::from(c)))).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
        if hold_open {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
    let body = StreamBody::new(Receiver(rx)).boxed();
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    resp
}

/// A response whose body never ends (to test deadlines).
pub fn never_ending() -> Reply {
    sse(vec![b"[".to_vec()], Duration::from_secs(0), true)
}

struct Receiver<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures::Stream for Receiver<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// The event-stream part of a capture file.
pub fn capture_stream(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let start = text.find("\r\n\r\n").unwrap() + 4;
    text.as_bytes()[start..].to_vec()
}

/// Splits `data` into pieces of irregular sizes (1, 2, 3, 5, 8, … bytes, cycling).
pub fn awkward_chunks(data: &[u8]) -> Vec<Vec<u8>> {
    let sizes = [1usize, 2, 3, 5, 8, 13, 21, 1, 1, 34];
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < data.len() {
        let n = sizes[k % sizes.len()].min(data.len() - i);
        out.push(data[i..i + n].to_vec());
        i += n;
        k += 1;
    }
    out
}

/// A UAA double: the n-th token request gets `tok-n`, living `expires_in` seconds.
pub fn fake_uaa(expires_in: u64) -> Handler {
    let n = Arc::new(AtomicUsize::new(0));
    Arc::new(move |req: &Recorded| {
        if req.method != "POST" || req.path != "/oauth/token" {
            return reply(404, "");
        }
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        reply(
            200,
            &format!(
                r#"{{"access_token":"tok-{i}","token_type":"bearer","expires_in":{expires_in},"scope":"routing.routes.read","jti":"j"}}"#
            ),
        )
    })
}

pub const ROUTES_JSON: &str = r#"[{"route":"myapp.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"my-guid","modification_tag":{"guid":"dab23546-0269-49d7-4d4b-9c8795e011ac","index":0}},{"route":"api.example.com/routing","port":3000,"ip":"127.0.0.1","ttl":120,"log_guid":"routing-api","modification_tag":{"guid":"ac277519-250d-40ce-7c5f-f2a085e7bae1","index":0}}]"#;

pub const TCP_ROUTES_JSON: &str = r#"[{"router_group_guid":"2d5b392b-8aef-4043-79e5-bbb5a72627d4","backend_port":8888,"backend_tls_port":60001,"backend_ip":"10.0.8.5","backend_sni_hostname":"sni.example.com","instance_id":"91860bfe","port":1026,"modification_tag":{"guid":"cd2dc2e8-7959-4111-7139-bcbca6e6e0ec","index":0},"ttl":120,"isolation_segment":""}]"#;

pub const ROUTER_GROUPS_JSON: &str = r#"[{"guid":"2d5b392b-8aef-4043-79e5-bbb5a72627d4","name":"default-tcp","type":"tcp","reservable_ports":"1024-1033"}]"#;
