//! Raw TCP/HTTP probes: whether a port accepts connections, and a plain `GET /` with a Host
//! header (`curl -H 'Host: demo.localhost' http://127.0.0.1:8081/`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether 127.0.0.1:`port` accepts a connection within a second.
pub async fn port_open(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// `GET /` with `Host: host` on 127.0.0.1:`port`, `Connection: close`: the whole response text,
/// or `None` when there is none within 2 s.
pub async fn get(port: u16, host: &str) -> Option<String> {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Whether `GET /` with `Host: host` on `port` answers 200.
pub async fn answers_200(port: u16, host: &str) -> bool {
    get(port, host)
        .await
        .is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
}
