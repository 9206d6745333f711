//! The optional PROXY protocol header (v1 text, v2 binary) at the start of a client connection
//! (`enable_proxy`, A.11).
//!
//! As upstream (go-proxyproto behind a 100 ms `ProxyHeaderTimeout`), the header is optional per
//! connection: when the first bytes are not a header's signature, or no complete signature
//! arrives within the timeout, nothing is consumed and the connection is served as it is.
//! Once a signature has arrived the rest of the header must follow before the same deadline and
//! parse, or the connection is closed. Parsing is `ppp`'s.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Upstream's `proxyProtocolHeaderTimeout`.
pub const HEADER_TIMEOUT: Duration = Duration::from_millis(100);

const V1_PREFIX: &[u8] = b"PROXY ";
/// The v1 header's maximum length, CRLF included (the protocol's limit).
const V1_MAX_LEN: usize = 107;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol and the 16-bit length that follows.
const V2_FIXED_LEN: usize = 16;
/// How long to wait before peeking again when only part of a signature or v1 line has come.
/// Headers nearly always come in one segment, so this is the rare path.
const PARTIAL_RETRY: Duration = Duration::from_millis(2);

/// What a connection started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// No header: the connection is untouched.
    None,
    /// A header without a usable source (v1 `UNKNOWN`, v2 `LOCAL`, v2 UNIX or unspecified
    /// family): the socket's peer stays the client.
    Local,
    /// A header naming the client.
    Source(SocketAddr),
}

impl ProxyHeader {
    /// The client address: the header's source, else the socket's peer.
    pub fn client_addr(self, peer: SocketAddr) -> SocketAddr {
        match self {
            ProxyHeader::Source(addr) => addr,
            ProxyHeader::None | ProxyHeader::Local => peer,
        }
    }
}

/// Why a connection that started with a header's signature must be closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    #[error("PROXY header not complete within {0:?}")]
    Timeout(Duration),
    #[error("PROXY v1 header longer than {V1_MAX_LEN} bytes")]
    TooLong,
    #[error("invalid PROXY v1 header: {0}")]
    V1(#[from] ppp::v1::BinaryParseError),
    #[error("invalid PROXY v2 header: {0}")]
    V2(#[from] ppp::v2::ParseError),
}

enum Signature {
    V1,
    V2,
    /// The bytes so far could still become a signature.
    Partial,
    No,
}

fn classify(bytes: &[u8]) -> Signature {
    if bytes.starts_with(V1_PREFIX) {
        Signature::V1
    } else if bytes.starts_with(V2_SIGNATURE) {
        Signature::V2
    } else if V1_PREFIX.starts_with(bytes) || V2_SIGNATURE.starts_with(bytes) {
        Signature::Partial
    } else {
        Signature::No
    }
}

/// Reads the PROXY header the connection starts with, if any, consuming exactly its bytes.
/// `timeout` bounds the whole header (upstream's 100 ms, [`HEADER_TIMEOUT`]).
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyHeaderError> {
    let deadline = Instant::now() + timeout;
    let mut first = [0u8; V2_SIGNATURE.len()];
    let signature = loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(peeked) => peeked?,
            // go-proxyproto: a timeout while looking for the prefix means "no header".
            Err(_) => return Ok(ProxyHeader::None),
        };
        if n == 0 {
            // Closed before sending anything; the HTTP server sees the EOF.
            return Ok(ProxyHeader::None);
        }
        match classify(&first[..n]) {
            Signature::Partial => {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(PARTIAL_RETRY))
                    .await
                    .is_err()
                {
                    return Ok(ProxyHeader::None);
                }
            }
            s => break s,
        }
    };
    let read = async {
        match signature {
            Signature::V1 => read_v1(stream).await,
            Signature::V2 => read_v2(stream).await,
            Signature::Partial | Signature::No => Ok(ProxyHeader::None),
        }
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| ProxyHeaderError::Timeout(timeout))?
}

/// The v1 line: peeked until its CRLF is in (never past 107 bytes), then consumed exactly.
async fn read_v1(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut line = [0u8; V1_MAX_LEN];
    let len = loop {
        let n = stream.peek(&mut line).await?;
        if let Some(cr) = line[..n].windows(2).position(|w| w == b"\r\n") {
            break cr + 2;
        }
        if n >= V1_MAX_LEN {
            return Err(ProxyHeaderError::TooLong);
        }
        // The rest of the line has not come yet (the caller's deadline bounds this).
        tokio::time::sleep(PARTIAL_RETRY).await;
    };
    stream.read_exact(&mut line[..len]).await?;
    let header = ppp::v1::Header::try_from(&line[..len])?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            ProxyHeader::Source(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            ProxyHeader::Source(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Unknown => ProxyHeader::Local,
    })
}

/// The v2 header: fixed part, then the announced length (at most 64 KiB, the protocol's bound).
async fn read_v2(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut fixed = [0u8; V2_FIXED_LEN];
    stream.read_exact(&mut fixed).await?;
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let mut header = Vec::with_capacity(V2_FIXED_LEN + len);
    header.extend_from_slice(&fixed);
    header.resize(V2_FIXED_LEN + len, 0);
    stream.read_exact(&mut header[V2_FIXED_LEN..]).await?;
    let parsed = ppp::v2::Header::try_from(&header[..])?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(ProxyHeader::Local);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            ProxyHeader::Source(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v2::Addresses::IPv6(a) => {
            ProxyHeader::Source(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => ProxyHeader::Local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A connected pair: (the client side, the accepted server side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// What is left on the server side after the header: read until the client closes.
    async fn rest(server: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    fn v2_header(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    fn v2_ipv4(src: [u8; 4], src_port: u16) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&src);
        a.extend_from_slice(&[10, 0, 0, 1]);
        a.extend_from_slice(&src_port.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        v2_header(0x1, 0x11, &a)
    }

    #[tokio::test]
    async fn v1_tcp4_header_is_consumed_and_names_the_client() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\nGET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        assert_eq!(h, ProxyHeader::Source("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest(&mut server).await, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn v1_tcp6_and_unknown() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\nx")
            .await
            .unwrap();
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        let ip: Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(h, ProxyHeader::Source(SocketAddr::new(ip.into(), 4000)));

        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY UNKNOWN\r\nGET").await.unwrap();
        client.shutdown().await.unwrap();
        let peer = server.peer_addr().unwrap();
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        assert_eq!(h, ProxyHeader::Local);
        assert_eq!(h.client_addr(peer), peer);
        assert_eq!(rest(&mut server).await, b"GET");
    }

    #[tokio::test]
    async fn v2_ipv4_header_is_consumed_and_names_the_client() {
        let (mut client, mut server) = pair().await;
        let mut bytes = v2_ipv4([198, 51, 100, 9], 40000);
        bytes.extend_from_slice(b"\x16\x03\x01rest");
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        let ip = Ipv4Addr::new(198, 51, 100, 9);
        assert_eq!(h, ProxyHeader::Source(SocketAddr::new(ip.into(), 40000)));
        assert_eq!(rest(&mut server).await, b"\x16\x03\x01rest");
    }

    #[tokio::test]
    async fn v2_ipv6_with_tlvs_and_local() {
        let (mut client, mut server) = pair().await;
        let src: Ipv6Addr = "2001:db8::42".parse().unwrap();
        let mut a = Vec::new();
        a.extend_from_slice(&src.octets());
        a.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        a.extend_from_slice(&5555u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses (PP2_TYPE_AUTHORITY) is part of the header.
        a.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'b', b'c']);
        let mut bytes = v2_header(0x1, 0x21, &a);
        bytes.extend_from_slice(b"GET");
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        assert_eq!(h, ProxyHeader::Source(SocketAddr::new(src.into(), 5555)));
        assert_eq!(rest(&mut server).await, b"GET");

        // LOCAL (a load balancer's own health check): the socket peer stays the client.
        let (mut client, mut server) = pair().await;
        let mut bytes = v2_header(0x0, 0x00, &[]);
        bytes.extend_from_slice(b"GET");
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(
            read_header(&mut server, HEADER_TIMEOUT).await.unwrap(),
            ProxyHeader::Local
        );
        assert_eq!(rest(&mut server).await, b"GET");
    }

    #[tokio::test]
    async fn no_header_leaves_the_bytes_alone() {
        for start in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"POST /",
            b"PROPFIND /",
            b"\x16\x03\x01",
        ] {
            let (mut client, mut server) = pair().await;
            client.write_all(start).await.unwrap();
            client.shutdown().await.unwrap();
            // Decided from the first bytes, without waiting for the timeout: a long timeout
            // here, and a bound far below it that a loaded machine still meets.
            let long = Duration::from_secs(60);
            let began = std::time::Instant::now();
            let h = read_header(&mut server, long).await.unwrap();
            assert_eq!(h, ProxyHeader::None, "{start:?}");
            assert!(began.elapsed() < long / 3, "{start:?}");
            assert_eq!(rest(&mut server).await, start);
        }
    }

    #[tokio::test]
    async fn silence_or_a_partial_prefix_times_out_into_no_header() {
        // A client that waits before talking (upstream: timeout while peeking = no header).
        let (mut client, mut server) = pair().await;
        let began = std::time::Instant::now();
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        assert_eq!(h, ProxyHeader::None);
        assert!(began.elapsed() >= HEADER_TIMEOUT);
        client.write_all(b"GET /").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(rest(&mut server).await, b"GET /");

        // "PRO" and then nothing: not consumed, served as it is.
        let (mut client, mut server) = pair().await;
        client.write_all(b"PRO").await.unwrap();
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        assert_eq!(h, ProxyHeader::None);
        client.shutdown().await.unwrap();
        assert_eq!(rest(&mut server).await, b"PRO");
    }

    #[tokio::test]
    async fn a_header_arriving_in_pieces_within_the_timeout_is_read() {
        let (mut client, mut server) = pair().await;
        let writer = tokio::spawn(async move {
            for piece in [
                &b"PRO"[..],
                b"XY TCP4 192.0.2.1 ",
                b"10.0.0.1 1000 80\r\nGET",
            ] {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            client.shutdown().await.unwrap();
        });
        let h = read_header(&mut server, HEADER_TIMEOUT).await.unwrap();
        assert_eq!(h, ProxyHeader::Source("192.0.2.1:1000".parse().unwrap()));
        writer.await.unwrap();
        assert_eq!(rest(&mut server).await, b"GET");
    }

    #[tokio::test]
    async fn a_header_cut_short_times_out_as_an_error() {
        // The signature came, the rest did not: upstream closes such connections.
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 192.0.2.1").await.unwrap();
        // The error is the timeout's; one that never fires fails the generous outer deadline.
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            read_header(&mut server, HEADER_TIMEOUT),
        )
        .await
        .expect("read_header gives up")
        .unwrap_err();
        assert!(matches!(err, ProxyHeaderError::Timeout(_)), "{err}");

        let (mut client, mut server) = pair().await;
        let bytes = v2_ipv4([1, 2, 3, 4], 1);
        client.write_all(&bytes[..20]).await.unwrap();
        let err = read_header(&mut server, HEADER_TIMEOUT).await.unwrap_err();
        assert!(matches!(err, ProxyHeaderError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn malformed_headers_are_errors() {
        let cases: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n".to_vec(),
            b"PROXY TCP5 1.2.3.4 10.0.0.1 1 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 10.0.0.1 99999 2\r\n".to_vec(),
            // Version 1 in a v2 header.
            {
                let mut h = v2_ipv4([1, 2, 3, 4], 1);
                h[12] = 0x11;
                h
            },
            // Length shorter than an IPv4 address block.
            v2_header(0x1, 0x11, &[1, 2, 3]),
        ];
        for bytes in cases {
            let (mut client, mut server) = pair().await;
            client.write_all(&bytes).await.unwrap();
            let r = read_header(&mut server, HEADER_TIMEOUT).await;
            assert!(
                matches!(r, Err(ProxyHeaderError::V1(_) | ProxyHeaderError::V2(_))),
                "{:?} -> {r:?}",
                String::from_utf8_lossy(&bytes)
            );
        }

        // No CRLF within 107 bytes: refused without reading further.
        let (mut client, mut server) = pair().await;
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(300, b'1');
        client.write_all(&long).await.unwrap();
        let err = read_header(&mut server, HEADER_TIMEOUT).await.unwrap_err();
        assert!(matches!(err, ProxyHeaderError::TooLong), "{err}");
    }
}
