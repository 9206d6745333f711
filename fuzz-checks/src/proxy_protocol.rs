//! The PROXY protocol header (v1 text, v2 binary) at the start of a client connection, as
//! gorouter reads it with `enable_proxy` (`gorouter::proxy::proxy_protocol::read_header`).
//!
//! `read_header` works on a `TcpStream` (it peeks, then consumes exactly the header), so each
//! input is written on a real loopback connection, the write side shut, and the header read
//! from the accepted end; the rest of the stream is then read back. (tcp-router does not speak
//! the PROXY protocol.)
//!
//! Invariants:
//! - no panic, and no hang: every input is decided within the header timeout;
//! - exactly the header's bytes are consumed: nothing when there is no header, the v1 line up to
//!   its CRLF, the v2 fixed part plus its announced length;
//! - a header that names a client names an address with a port the header carries.
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use gorouter::proxy::proxy_protocol::{read_header, ProxyHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Far below upstream's 100 ms: inputs that are only part of a signature wait this long.
const TIMEOUT: Duration = Duration::from_millis(5);
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

struct Fixture {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
    addr: SocketAddr,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        Fixture { rt, listener, addr }
    })
}

/// How many bytes a successful read must have consumed.
fn header_len(data: &[u8]) -> Option<usize> {
    if data.starts_with(b"PROXY ") {
        let line = &data[..data.len().min(107)];
        return line.windows(2).position(|w| w == b"\r\n").map(|cr| cr + 2);
    }
    if data.starts_with(V2_SIGNATURE) && data.len() >= 16 {
        return Some(16 + usize::from(u16::from_be_bytes([data[14], data[15]])));
    }
    None
}

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let f = fixture();
    f.rt.block_on(async {
        let connect = TcpStream::connect(f.addr);
        let (client, accepted) = tokio::join!(connect, f.listener.accept());
        let mut client = client.expect("connect");
        let (mut server, _) = accepted.expect("accept");
        client.write_all(data).await.expect("write the input");
        client.shutdown().await.expect("shut the write side");

        let started = tokio::time::Instant::now();
        let result = read_header(&mut server, TIMEOUT).await;
        assert!(
            // A hang detector, generous for a loaded machine.
            started.elapsed() < TIMEOUT + Duration::from_secs(10),
            "read_header overran its timeout"
        );

        if let Ok(header) = &result {
            let consumed = match header {
                ProxyHeader::None => 0,
                ProxyHeader::Local | ProxyHeader::Source(_) => {
                    header_len(data).expect("a header was read: the input starts with one")
                }
            };
            if let ProxyHeader::Source(addr) = header {
                let _ = addr.port();
            }
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
                .await
                .expect("the rest arrives")
                .expect("read the rest");
            assert_eq!(
                rest.as_slice(),
                &data[consumed.min(data.len())..],
                "consumed {header:?} wrongly"
            );
        }
        // Reset rather than close: no TIME_WAIT sockets pile up over millions of runs.
        let _ = client.set_zero_linger();
    });
}
