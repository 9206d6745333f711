//! [`RouteServiceProcess`]: the `route-service` binary (src/bin/route-service.rs), a real route
//! service a test binds routes to. It checks the three `X-CF-*` headers, sends the request back
//! to the router with them and with `X-Route-Service: <name>` added, and relays the answer with
//! `X-Route-Service: <name>`; over TLS it can require a client certificate and passes its common
//! name on as `X-Route-Service-Client-Cn`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pki::{PemFiles, TestCa};
use crate::process::{binary, ChildProcess};
use crate::util::TempDir;

/// How a [`RouteServiceProcess`] serves.
pub struct RouteServiceOptions {
    /// The router's plain HTTP listener, where forwarded requests go.
    pub router: SocketAddr,
    /// Serve HTTPS with this certificate (issued for 127.0.0.1).
    pub tls: Option<PemFiles>,
    /// With `tls`: require a client certificate signed by this CA file.
    pub client_ca: Option<PathBuf>,
    pub name: String,
}

impl RouteServiceOptions {
    /// Plain HTTP, forwarding to `router`.
    pub fn plain(router: SocketAddr, name: &str) -> Self {
        Self {
            router,
            tls: None,
            client_ca: None,
            name: name.to_string(),
        }
    }

    /// HTTPS with a certificate for 127.0.0.1 from `ca`, written into `dir`.
    pub fn tls(router: SocketAddr, name: &str, ca: &TestCa, dir: &std::path::Path) -> Self {
        Self {
            tls: Some(ca.write_server(dir, &["127.0.0.1"])),
            ..Self::plain(router, name)
        }
    }
}

/// A running route service; killed on drop.
pub struct RouteServiceProcess {
    process: ChildProcess,
    addr: SocketAddr,
    tls_roots: Option<Arc<rustls::RootCertStore>>,
    _dir: TempDir,
}

impl RouteServiceProcess {
    /// Starts the process and waits (10 s at most) for it to print the address it listens on.
    pub async fn start(opts: RouteServiceOptions, ca: Option<&TestCa>) -> Self {
        let dir = TempDir::new("route-service");
        let mut cmd = Command::new(binary("route-service"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(["--router", &opts.router.to_string()])
            .args(["--name", &opts.name]);
        if let Some(tls) = &opts.tls {
            cmd.arg("--tls-cert").arg(&tls.cert);
            cmd.arg("--tls-key").arg(&tls.key);
        }
        if let Some(ca) = &opts.client_ca {
            cmd.arg("--client-ca").arg(ca);
        }
        let command_line = format!("{cmd:?}");
        let process = ChildProcess::spawn(
            "route-service",
            cmd,
            dir.path().join("route-service.log"),
            command_line,
        );
        let addr = process.printed_addr("listening on ").await;
        let tls_roots = match (&opts.tls, ca) {
            (Some(_), Some(ca)) => Some(Arc::new(ca.root_store())),
            _ => None,
        };
        Self {
            process,
            addr,
            tls_roots,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Requests the route service has handled (its `/__route_service/stats`).
    pub async fn requests(&self) -> u64 {
        let raw =
            b"GET /__route_service/stats HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n\r\n";
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("route service: connect for stats");
        let mut response = Vec::new();
        match &self.tls_roots {
            None => {
                let mut s = tcp;
                s.write_all(raw).await.expect("stats request");
                s.read_to_end(&mut response).await.expect("stats response");
            }
            Some(roots) => {
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let mut s = connector
                    .connect(name, tcp)
                    .await
                    .expect("route service: TLS for stats");
                s.write_all(raw).await.expect("stats request");
                let _ = s.read_to_end(&mut response).await;
            }
        }
        let text = String::from_utf8_lossy(&response);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body.trim())
            .unwrap_or_else(|e| panic!("route service stats {text:?}: {e}"));
        v["requests"].as_u64().expect("stats.requests")
    }
}
