//! The request's Host (A.5): an absolute-form target's (or HTTP/2 `:authority`'s) host, else the
//! `Host` header, as Go's server takes `req.Host`. Refused as Go's server refuses them (an
//! HTTP/1.1 request without a `Host` header, absolute-form or not; two `Host` headers; a byte Go
//! does not allow in a host), and as gorouter does (an empty host, or the client's own IP).

use http::header;
use http::{Request, Version};

use crate::proxy::errors::{HostProblem, RouterError};
use crate::proxy::ClientConn;

/// Go's `httpguts.ValidHostHeader`: letters, digits and `!$%&'()*+,-.:;=[]_~`.
fn valid_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=[]_~".contains(&b)
}

/// The host to route on, or the error to answer with and the host to log it under.
pub fn check<B>(req: &Request<B>, conn: &ClientConn) -> Result<String, (RouterError, String)> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err((RouterError::BadHost(HostProblem::TooMany), String::new()));
    }
    let header_host = match header_host {
        // Go's valid host bytes are all ASCII: a valid value is always text.
        Some(h) => match h.to_str() {
            Ok(text) if text.bytes().all(valid_host_byte) => Some(text),
            _ => return Err((RouterError::BadHost(HostProblem::Malformed), String::new())),
        },
        // Go requires the header of HTTP/1.1 even when the target names the host.
        None if req.version() == Version::HTTP_11 => {
            return Err((RouterError::BadHost(HostProblem::Missing), String::new()));
        }
        None => None,
    };
    // Go's `req.Host`: the target's host wins over the header (RFC 9112 §3.2.2).
    let host = match (req.uri().authority(), header_host) {
        (Some(a), _) => a.to_string(),
        (None, Some(h)) => h.to_string(),
        (None, None) => String::new(),
    };
    let host_no_port = host.split(':').next().unwrap_or("");
    if host_no_port.is_empty() || host_no_port.as_bytes() == conn.remote_ip.as_bytes() {
        return Err((RouterError::EmptyHost, host));
    }
    Ok(host)
}
