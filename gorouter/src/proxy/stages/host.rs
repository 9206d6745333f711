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
    if let (Some(_), Some(_)) = (hosts.next(), hosts.next()) {
        return Err((RouterError::BadHost(HostProblem::TooMany), String::new()));
    }
    if let Some(h) = req.headers().get(header::HOST) {
        if !h.as_bytes().iter().all(|&b| valid_host_byte(b)) {
            return Err((RouterError::BadHost(HostProblem::Malformed), String::new()));
        }
    }
    let host: String = match req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
    {
        Some(h) => h,
        None if req.version() == Version::HTTP_11 && !req.headers().contains_key(header::HOST) => {
            return Err((RouterError::BadHost(HostProblem::Missing), String::new()));
        }
        None => String::new(),
    };
    let host_no_port = host.split(':').next().unwrap_or("");
    if host_no_port.is_empty() || host_no_port.as_bytes() == conn.remote_ip.as_bytes() {
        return Err((RouterError::EmptyHost, host));
    }
    Ok(host)
}
