//! The request's Host (A.5): from the `Host` header or an absolute-form target; an HTTP/1.1
//! request without one, an empty host, or a host that is the client's own IP is refused.

use http::header;
use http::{Request, Version};

use crate::proxy::errors::RouterError;
use crate::proxy::ClientConn;

/// The host to route on, or the error to answer with and the host to log it under.
pub fn check<B>(req: &Request<B>, conn: &ClientConn) -> Result<String, (RouterError, String)> {
    let host: String = match req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
    {
        Some(h) => h,
        None if req.version() == Version::HTTP_11 && !req.headers().contains_key(header::HOST) => {
            return Err((RouterError::MissingHost, String::new()));
        }
        None => String::new(),
    };
    let host_no_port = host.split(':').next().unwrap_or("");
    if host_no_port.is_empty() || host_no_port.as_bytes() == conn.remote_ip.as_bytes() {
        return Err((RouterError::EmptyHost, host));
    }
    Ok(host)
}
