//! The message bus choice: NATS when `--nats URL` is given or a NATS server answers on
//! 127.0.0.1:4222 (an `INFO ` line within 500 ms of connecting), otherwise the Routing API.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Where HTTP routes travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// NATS at `host:port` (the URL as printed).
    Nats {
        url: String,
        host: String,
        port: u16,
    },
    /// No NATS: routes through the Routing API.
    RoutingApi,
}

impl Bus {
    /// The line `up` prints.
    pub fn describe(&self) -> String {
        match self {
            Bus::Nats { url, .. } => format!("routes: over NATS at {url}"),
            Bus::RoutingApi => {
                "routes: through the Routing API (no NATS found on 127.0.0.1:4222)".to_string()
            }
        }
    }
}

/// Host and port of a `nats://[user:pass@]host[:port]` URL (4222 when absent).
pub fn parse_nats_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return None;
    }
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None,
        None => Some((rest.to_string(), 4222)),
    }
}

/// Whether something on `addr` sends a line starting `INFO ` within 500 ms.
pub async fn nats_answers(addr: &str) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"INFO ")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), probe).await,
        Ok(Some(true))
    )
}

/// The bus for `--nats` / `--no-nats` / neither.
pub async fn choose(nats: Option<&str>, no_nats: bool) -> Option<Bus> {
    if no_nats {
        return Some(Bus::RoutingApi);
    }
    if let Some(url) = nats {
        let (host, port) = parse_nats_url(url)?;
        return Some(Bus::Nats {
            url: url.to_string(),
            host,
            port,
        });
    }
    if nats_answers("127.0.0.1:4222").await {
        return Some(Bus::Nats {
            url: "nats://127.0.0.1:4222".into(),
            host: "127.0.0.1".into(),
            port: 4222,
        });
    }
    Some(Bus::RoutingApi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls() {
        assert_eq!(
            parse_nats_url("nats://127.0.0.1:4223"),
            Some(("127.0.0.1".into(), 4223))
        );
        assert_eq!(parse_nats_url("nats://u:p@h"), Some(("h".into(), 4222)));
        assert_eq!(parse_nats_url("nats://h:x"), None);
        assert_eq!(parse_nats_url("nats://"), None);
    }

    #[tokio::test]
    async fn only_an_info_line_counts_as_nats() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept().await {
                let line: &[u8] = if n == 0 {
                    b"INFO {}\r\n"
                } else {
                    b"HTTP/1.1 400\r\n"
                };
                n += 1;
                let _ = s.write_all(line).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        assert!(nats_answers(&addr).await);
        assert!(!nats_answers(&addr).await);
    }
}
