//! gRPC through gorouter (A.11): a real tonic client speaks HTTP/2 over TLS to the router, the
//! router speaks HTTP/2 over TLS to a real tonic server registered with `tls_port` and
//! `protocol: http2`. Unary calls, statuses carried in trailers, and bidirectional streaming
//! with messages interleaved both ways all pass end to end.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use integration::pki::{yaml_quoted, TestCa};
use integration::{free_port, TestEnv};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig,
};
use tonic::{Code, Request, Response, Status, Streaming};

mod proto {
    tonic::include_proto!("routingtest");
}

use proto::echo_client::EchoClient;
use proto::echo_server::{Echo, EchoServer};
use proto::Note;

const HOST: &str = "grpc.e2e-grpc.example";
const INSTANCE: &str = "inst-grpc-1";

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, request: Request<Note>) -> Result<Response<Note>, Status> {
        let text = request.into_inner().text;
        if text == "fail" {
            return Err(Status::not_found("no such note"));
        }
        Ok(Response::new(Note {
            text: format!("{text} from {INSTANCE}"),
        }))
    }

    type ChatStream = Pin<Box<dyn Stream<Item = Result<Note, Status>> + Send>>;

    async fn chat(
        &self,
        request: Request<Streaming<Note>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(Ok(note)) = incoming.next().await {
                let echo = Note {
                    text: format!("echo {}", note.text),
                };
                if tx.send(Ok(echo)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The gRPC app instance: TLS with a certificate for its instance identity, ALPN h2.
async fn start_grpc_backend(ca: &TestCa) -> SocketAddr {
    let (cert, key) = ca.issue_server(&[INSTANCE]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
        .expect("tonic server TLS config")
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}

struct Setup {
    _env: TestEnv,
    client: EchoClient<Channel>,
}

/// A router with HTTPS (certificate for [`HOST`], trusted by the client) that trusts the
/// backend CA, the gRPC backend registered for [`HOST`], and a client connected through the
/// router.
async fn setup(name: &str) -> Setup {
    let backend_ca = TestCa::new(&format!("{name}-backend-ca"));
    let router_ca = TestCa::new(&format!("{name}-router-ca"));
    let (cert, key) = router_ca.issue_server(&[HOST]);
    let ssl_port = free_port();
    let env = TestEnv::start(&format!(
        "enable_ssl: true\nssl_port: {ssl_port}\ncipher_suites: ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256\ntls_pem:\n  - cert_chain: {}\n    private_key: {}\nca_certs:\n  - {}\n",
        yaml_quoted(&cert),
        yaml_quoted(&key),
        yaml_quoted(&backend_ca.cert_pem()),
    ))
    .await;
    let backend = start_grpc_backend(&backend_ca).await;
    env.register_and_wait(&json!({
        "host": "127.0.0.1",
        "port": 1,
        "tls_port": backend.port(),
        "uris": [HOST],
        "private_instance_id": INSTANCE,
        "server_cert_domain_san": INSTANCE,
        "protocol": "http2",
    }))
    .await;
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{ssl_port}"))
        .unwrap()
        .origin(format!("https://{HOST}").parse().unwrap())
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(router_ca.cert_pem()))
                .domain_name(HOST),
        )
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("gRPC client connects to the router over TLS");
    Setup {
        _env: env,
        client: EchoClient::new(channel),
    }
}

#[tokio::test]
async fn unary_call_passes_through_the_router() {
    let mut s = setup("grpc-unary").await;
    let reply = s
        .client
        .say(Note {
            text: "hello".into(),
        })
        .await
        .expect("unary call succeeds");
    assert_eq!(reply.into_inner().text, format!("hello from {INSTANCE}"));
}

#[tokio::test]
async fn grpc_status_in_trailers_reaches_the_client() {
    let mut s = setup("grpc-status").await;
    let err = s
        .client
        .say(Note {
            text: "fail".into(),
        })
        .await
        .expect_err("the backend answers NOT_FOUND");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "no such note");
}

#[tokio::test]
async fn bidirectional_stream_interleaves_through_the_router() {
    let mut s = setup("grpc-bidi").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = s
        .client
        .chat(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    // Each reply arrives before the next note is sent: both directions are open at once.
    for i in 0..5 {
        tx.send(Note {
            text: format!("note-{i}"),
        })
        .await
        .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .expect("reply within 5s")
            .expect("stream still open")
            .expect("reply is a note");
        assert_eq!(reply.text, format!("echo note-{i}"));
    }
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .expect("stream ends within 5s");
    assert!(end.is_none(), "the stream ends with an OK status: {end:?}");
}
