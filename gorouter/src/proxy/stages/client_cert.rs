//! `X-Forwarded-Client-Cert` (A.9), by `forwarded_client_cert` mode: `always_forward` passes
//! the client's header on; `forward` keeps it only on a TLS connection with a client
//! certificate; `sanitize_set` always removes it and, on such a connection, sets it to the
//! certificate (its PEM body: base64 DER without the BEGIN/END lines or newlines).

use http::header::HeaderMap;

use crate::config::ForwardedClientCert;
use crate::proxy::headers::X_FORWARDED_CLIENT_CERT;
use crate::proxy::ClientConn;

/// What the route-service stage found out about the request (A.9, A.10).
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteServiceTraffic {
    /// It carries a valid route-service signature and forwarded URL.
    pub signed: bool,
    /// It is back from the route service of its route.
    pub returned: bool,
}

/// Applies the mode to the backend request's headers. Route-service traffic over TLS keeps
/// its header as the route service sent it; in `forward` mode a request back from a route
/// service loses it (the route service's own certificate is not the client's).
pub fn apply(
    h: &mut HeaderMap,
    mode: ForwardedClientCert,
    conn: &ClientConn,
    rs: RouteServiceTraffic,
) {
    if !(rs.signed && conn.tls) {
        sanitize(h, mode, conn);
    }
    if rs.returned && mode == ForwardedClientCert::Forward {
        h.remove(&X_FORWARDED_CLIENT_CERT);
    }
}

fn sanitize(h: &mut HeaderMap, mode: ForwardedClientCert, conn: &ClientConn) {
    match mode {
        ForwardedClientCert::AlwaysForward => {}
        ForwardedClientCert::Forward => {
            if conn.client_cert.is_none() {
                h.remove(&X_FORWARDED_CLIENT_CERT);
            }
        }
        ForwardedClientCert::SanitizeSet => {
            h.remove(&X_FORWARDED_CLIENT_CERT);
            if let Some(v) = &conn.client_cert_header {
                h.insert(X_FORWARDED_CLIENT_CERT.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_CLIENT_CERT.clone(),
            HeaderValue::from_static("from-client"),
        );
        h
    }

    fn plain() -> ClientConn {
        ClientConn::new("127.0.0.1:1".parse().unwrap(), false)
    }

    fn tls_without_cert() -> ClientConn {
        ClientConn::new("127.0.0.1:1".parse().unwrap(), true)
    }

    fn tls_with_cert() -> ClientConn {
        tls_without_cert().with_client_cert(bytes::Bytes::from_static(&[1, 2, 3]))
    }

    fn after(mode: ForwardedClientCert, conn: &ClientConn) -> Option<String> {
        let mut h = request();
        apply(&mut h, mode, conn, RouteServiceTraffic::default());
        h.get(&X_FORWARDED_CLIENT_CERT)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn always_forward_passes_the_header_on() {
        for conn in [plain(), tls_without_cert(), tls_with_cert()] {
            assert_eq!(
                after(ForwardedClientCert::AlwaysForward, &conn).as_deref(),
                Some("from-client")
            );
        }
    }

    #[test]
    fn forward_keeps_it_only_with_a_client_certificate() {
        assert_eq!(after(ForwardedClientCert::Forward, &plain()), None);
        assert_eq!(
            after(ForwardedClientCert::Forward, &tls_without_cert()),
            None
        );
        assert_eq!(
            after(ForwardedClientCert::Forward, &tls_with_cert()).as_deref(),
            Some("from-client")
        );
    }

    #[test]
    fn sanitize_set_replaces_it_with_the_certificate() {
        assert_eq!(after(ForwardedClientCert::SanitizeSet, &plain()), None);
        assert_eq!(
            after(ForwardedClientCert::SanitizeSet, &tls_without_cert()),
            None
        );
        assert_eq!(
            after(ForwardedClientCert::SanitizeSet, &tls_with_cert()).as_deref(),
            Some("AQID")
        );
    }
}
