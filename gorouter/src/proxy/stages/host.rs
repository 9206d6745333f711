//! The request's Host (A.5): from the `Host` header or an absolute-form target. Refused as Go's
//! server refuses them (an HTTP/1.1 request without one, two `Host` headers, a byte Go does not
//! allow in a host), and as gorouter does (an empty host, or the client's own IP).

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
    let host = match header_host {
        // Go's valid host bytes are all ASCII: a valid value is always text.
        Some(h) => match h.to_str() {
            Ok(text) if text.bytes().all(valid_host_byte) => text.to_string(),
            _ => return Err((RouterError::BadHost(HostProblem::Malformed), String::new())),
        },
        None => match req.uri().authority() {
            Some(a) => a.to_string(),
            None if req.version() == Version::HTTP_11 => {
                return Err((RouterError::BadHost(HostProblem::Missing), String::new()));
            }
            None => String::new(),
        },
    };
    let host_no_port = host.split(':').next().unwrap_or("");
    if host_no_port.is_empty() || host_no_port.as_bytes() == conn.remote_ip.as_bytes() {
        return Err((RouterError::EmptyHost, host));
    }
    Ok(host)
}
