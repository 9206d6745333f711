//! Reading the SNI hostname of a TLS ClientHello without consuming it, as HAProxy's
//! `tcp-request inspect-delay 5s` + `req.ssl_sni` do on ports with SNI routes: the bytes are
//! peeked (left in the socket's receive queue) and later forwarded unchanged.
//!
//! Only the first TLS record is examined (as HAProxy does). A connection whose first byte is not
//! a TLS handshake record, a ClientHello without SNI, or one that does not complete within the
//! inspect delay goes to the port's default backends.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long to wait for a complete ClientHello (HAProxy's `inspect-delay` in upstream's config).
pub const INSPECT_DELAY: Duration = Duration::from_secs(5);

/// The largest TLS record (header + 16 KiB + expansion allowance for ciphertext).
pub const MAX_RECORD: usize = 5 + 16384 + 2048;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello carrying this SNI host name (as sent).
    Sni(String),
    /// A ClientHello without SNI, or not TLS at all, or unparsable.
    NoSni,
    /// More bytes are needed.
    Incomplete,
}

/// Examines the start of a connection.
pub fn parse(data: &[u8]) -> Hello {
    match parse_inner(data) {
        Ok(Some(name)) => Hello::Sni(name),
        Ok(None) => Hello::NoSni,
        Err(Short) => Hello::Incomplete,
    }
}

/// Not enough data yet.
struct Short;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Outcome of reading inside a complete record: `None` on malformed content.
impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn u16(&mut self) -> Option<usize> {
        let hi = self.u8()? as usize;
        let lo = self.u8()? as usize;
        Some(hi << 8 | lo)
    }
    fn u24(&mut self) -> Option<usize> {
        let a = self.u8()? as usize;
        let b = self.u16()?;
        Some(a << 16 | b)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.bytes(n).map(|_| ())
    }
}

fn parse_inner(data: &[u8]) -> Result<Option<String>, Short> {
    // Record header: type 22 (handshake), version 3.x, length.
    let Some(&content_type) = data.first() else {
        return Err(Short);
    };
    if content_type != 0x16 {
        return Ok(None);
    }
    if data.len() < 5 {
        if data.len() >= 2 && data[1] != 0x03 {
            return Ok(None);
        }
        return Err(Short);
    }
    if data[1] != 0x03 {
        return Ok(None);
    }
    let record_len = (data[3] as usize) << 8 | data[4] as usize;
    if record_len == 0 || record_len > 16384 + 2048 {
        return Ok(None);
    }
    if data.len() < 5 + record_len {
        return Err(Short);
    }
    Ok(client_hello_sni(&data[5..5 + record_len]))
}

/// The SNI host name in a handshake record's payload, if it holds a ClientHello with one.
fn client_hello_sni(record: &[u8]) -> Option<String> {
    let mut r = Reader::new(record);
    if r.u8()? != 0x01 {
        return None; // not a ClientHello
    }
    let hs_len = r.u24()?;
    // A ClientHello longer than the record is cut; read what the record holds.
    let body = &record[4..record.len().min(4 + hs_len)];
    let mut r = Reader::new(body);
    r.skip(2)?; // client_version
    r.skip(32)?; // random
    let sid = r.u8()? as usize;
    r.skip(sid)?;
    let suites = r.u16()?;
    r.skip(suites)?;
    let comp = r.u8()? as usize;
    r.skip(comp)?;
    let ext_total = r.u16()?;
    let exts = r.bytes(ext_total.min(body.len() - r.pos))?;
    let mut e = Reader::new(exts);
    while e.pos < exts.len() {
        let kind = e.u16()?;
        let len = e.u16()?;
        let ext = e.bytes(len)?;
        if kind == 0 {
            return server_name(ext);
        }
    }
    None
}

fn server_name(ext: &[u8]) -> Option<String> {
    let mut r = Reader::new(ext);
    let list_len = r.u16()?;
    let list = r.bytes(list_len)?;
    let mut l = Reader::new(list);
    while l.pos < list.len() {
        let name_type = l.u8()?;
        let len = l.u16()?;
        let name = l.bytes(len)?;
        if name_type == 0 {
            let s = std::str::from_utf8(name).ok()?;
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return None;
            }
            return Some(s.to_string());
        }
    }
    None
}

/// Peeks at `stream` until the ClientHello is complete (or clearly absent), the inspect delay
/// passes, or the client closes. `buf` is scratch space (the connection's copy buffer).
pub async fn peek_sni(stream: &TcpStream, buf: &mut [u8], delay: Duration) -> Option<String> {
    let deadline = Instant::now() + delay;
    let limit = buf.len().min(MAX_RECORD);
    let mut backoff = Duration::from_millis(1);
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf[..limit])).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return None,
        };
        if n == 0 {
            return None; // closed before sending anything
        }
        match parse(&buf[..n]) {
            Hello::Sni(name) => return Some(name),
            Hello::NoSni => return None,
            Hello::Incomplete if n >= limit => return None,
            Hello::Incomplete => {
                // The data seen so far stays queued, so peek would return at once: wait a
                // little for the rest of the record.
                if Instant::now() + backoff >= deadline {
                    return None;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal but well-formed TLS 1.2 ClientHello record with `sni` (if any).
    pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        // An unrelated extension first (supported_groups).
        exts.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]);
        if let Some(name) = sni {
            let n = name.as_bytes();
            let mut list = vec![0u8];
            list.extend_from_slice(&(n.len() as u16).to_be_bytes());
            list.extend_from_slice(n);
            let mut ext = (list.len() as u16).to_be_bytes().to_vec();
            ext.extend_from_slice(&list);
            exts.extend_from_slice(&[0x00, 0x00]);
            exts.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            exts.extend_from_slice(&ext);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2f]); // one suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn finds_sni() {
        let rec = client_hello(Some("app.example.com"));
        assert_eq!(parse(&rec), Hello::Sni("app.example.com".into()));
        assert_eq!(parse(&client_hello(None)), Hello::NoSni);
    }

    #[test]
    fn incomplete_until_the_record_is_whole() {
        let rec = client_hello(Some("a.example.com"));
        for cut in [0, 1, 3, 5, 20, rec.len() - 1] {
            assert_eq!(parse(&rec[..cut]), Hello::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn not_tls_is_no_sni() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NoSni);
        assert_eq!(parse(&[0x16, 0x01]), Hello::NoSni);
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0x00, 0x00]), Hello::NoSni);
        // A handshake record that is not a ClientHello.
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0x00, 0x01, 0x02]), Hello::NoSni);
        // Garbage inside a complete record.
        let mut rec = client_hello(Some("x.example.com"));
        let len = rec.len();
        rec[len - 10] = 0xff;
        rec[len - 11] = 0xff;
        assert_eq!(parse(&rec), Hello::NoSni);
    }

    #[test]
    fn real_rustls_client_hello() {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("sni.example.com").unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        assert_eq!(parse(&out), Hello::Sni("sni.example.com".into()));
    }
}
