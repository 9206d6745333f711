//! `X-Forwarded-Client-Cert` (A.9), by `forwarded_client_cert` mode: `always_forward` passes
//! the client's header on; `forward` keeps it only on a TLS connection with a client
//! certificate; `sanitize_set` always removes it and, on such a connection, sets it to the
//! certificate (base64 DER).

use http::header::HeaderMap;

use crate::config::ForwardedClientCert;
use crate::proxy::headers::X_FORWARDED_CLIENT_CERT;
use crate::proxy::ClientConn;

/// Applies the mode to the backend request's headers.
pub fn apply(h: &mut HeaderMap, mode: ForwardedClientCert, conn: &ClientConn) {
    if mode != ForwardedClientCert::AlwaysForward && !conn.tls {
        h.remove(&X_FORWARDED_CLIENT_CERT);
    }
}
