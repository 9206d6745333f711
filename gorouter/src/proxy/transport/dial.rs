//! Dialling a backend over TCP with a timeout, and Go's wording of what went wrong (it reaches
//! clients in `X-Cf-Routererror`).

use std::time::Duration;

use tokio::net::TcpStream;

use crate::registry::Endpoint;

/// A failed dial, worded the way Go's net package words it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DialError(pub String);

fn os_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.to_ascii_lowercase()
}

/// Opens a TCP connection to `endpoint` (its IP literal without a resolver when it has one).
pub async fn tcp(endpoint: &Endpoint, timeout: Duration) -> Result<TcpStream, DialError> {
    let dial = async {
        match endpoint.socket_addr() {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect((endpoint.host(), endpoint.port)).await,
        }
    };
    let stream = match tokio::time::timeout(timeout, dial).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(DialError(format!(
                "dial tcp {}: connect: {}",
                endpoint.addr(),
                os_error_text(&e)
            )))
        }
        Err(_) => {
            return Err(DialError(format!(
                "dial tcp {}: i/o timeout",
                endpoint.addr()
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_dial_reads_like_go() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let ep = crate::proxy::transport::tests::endpoint(port, "");
        let err = tcp(&ep, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(
            err.0,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }
}
