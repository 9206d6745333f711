//! A route's `route_service_url` (A.10), parsed once when it is registered so the request path
//! only reads it: where the first pass goes (the URL's host and port, TLS for `https`), the
//! `Host` header and request target it is sent with, and the host and path a hairpin lookup
//! uses. A URL that does not parse is kept with its error: upstream parses it per request and
//! answers 500 `Route service request failed.`, and so do we.

use std::sync::Arc;

use http::{HeaderValue, Uri};

use super::endpoint::Endpoint;

/// The route service a pool is bound to: the URL as registered and what it parsed to.
#[derive(Debug)]
pub struct RouteServiceUrl {
    pub raw: Box<str>,
    pub target: Result<RouteServiceTarget, String>,
}

/// Where and how a first-pass request is sent.
#[derive(Debug)]
pub struct RouteServiceTarget {
    /// The `Host` header: the URL's authority as written (with its port, if any).
    pub authority: HeaderValue,
    /// The URL's host without port, lowercased: with [`path`](Self::path), the route a hairpin
    /// lookup tries.
    pub host: Box<str>,
    /// The URL's path as written (escaped), without the query.
    pub path: Box<str>,
    /// The request target: the URL's path and query (`/` when it has no path).
    pub target: Uri,
    /// What the transport dials: the URL's host and port (443 or 80 by scheme), TLS iff
    /// `https`, the host as the TLS server name.
    pub endpoint: Arc<Endpoint>,
}

impl RouteServiceUrl {
    /// Parses `raw` (non-empty).
    pub fn parse(raw: &str) -> Self {
        Self {
            raw: raw.into(),
            target: RouteServiceTarget::parse(raw),
        }
    }
}

impl RouteServiceTarget {
    fn parse(raw: &str) -> Result<Self, String> {
        let uri: Uri = raw.parse().map_err(|e| format!("parse {raw:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("unsupported protocol scheme {other:?}")),
            None => return Err(format!("parse {raw:?}: missing protocol scheme")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("parse {raw:?}: missing host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("parse {raw:?}: missing host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path();
        let target: Uri = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        }
        .parse()
        .map_err(|e| format!("parse {raw:?}: {e}"))?;
        let authority_header =
            HeaderValue::from_str(authority.as_str()).map_err(|e| format!("parse {raw:?}: {e}"))?;
        let endpoint = Endpoint::outside_table(host, port, https);
        Ok(Self {
            authority: authority_header,
            host: host.to_ascii_lowercase().into(),
            path: path.trim_end_matches('/').into(),
            target,
            endpoint: Arc::new(endpoint),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(raw: &str) -> RouteServiceTarget {
        RouteServiceUrl::parse(raw).target.unwrap()
    }

    #[test]
    fn https_url_dials_its_host_on_443_over_tls() {
        let t = target("https://RS.example.com/auth?x=1");
        assert_eq!(t.authority, "RS.example.com");
        assert_eq!(&*t.host, "rs.example.com");
        assert_eq!(&*t.path, "/auth");
        assert_eq!(t.target, "/auth?x=1");
        assert_eq!(t.endpoint.addr(), "RS.example.com:443");
        assert!(t.endpoint.tls);
        assert_eq!(t.endpoint.server_cert_domain_san(), "RS.example.com");
    }

    #[test]
    fn explicit_port_is_kept_in_host_header_and_dialled() {
        let t = target("https://127.0.0.1:8443");
        assert_eq!(t.authority, "127.0.0.1:8443");
        assert_eq!(t.target, "/");
        assert_eq!(&*t.path, "");
        assert_eq!(
            t.endpoint.socket_addr(),
            Some("127.0.0.1:8443".parse().unwrap())
        );
    }

    #[test]
    fn plain_http_url_dials_port_80_without_tls() {
        let t = target("http://rs.internal/x/");
        assert!(!t.endpoint.tls);
        assert_eq!(t.endpoint.port, 80);
        assert_eq!(&*t.path, "/x");
    }

    #[test]
    fn unparsable_url_keeps_its_error() {
        for raw in [
            "not a url",
            "https://",
            "ftp://rs.example.com/",
            "rs.example.com/x",
        ] {
            assert!(RouteServiceUrl::parse(raw).target.is_err(), "{raw}");
        }
    }
}
