//! Targets: what a run loads. A [`Target`] is a TCP address with the `Host` header(s) and path
//! to ask for, a protocol (HTTP/1.1 or HTTP/2) and, for HTTPS, a TLS client. Its `Host` is one
//! fixed name, or one of many routes ([`RouteChoice`]) picked per request uniformly or
//! Zipf-skewed. Also parses the command line's `[name=]URL` target specs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rand::Rng;
use rustls::pki_types::ServerName;

use crate::zipf::Zipf;

/// The HTTP version spoken to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection.
    Http1,
    /// HTTP/2: prior knowledge (h2c) for `http://`, ALPN `h2` for `https://`; one stream at a
    /// time per connection, so `connections` still means requests in flight.
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// Where to send requests.
#[derive(Clone)]
pub struct Target {
    /// The name shown in the table, the JSON and the report.
    pub label: String,
    /// The URL as given (or as made up for targets loadgen started).
    pub url: String,
    pub addr: SocketAddr,
    /// The `Host` header (HTTP/1.1) or `:authority` (HTTP/2), unless `routes` picks one.
    pub host: String,
    pub path: String,
    /// HTTPS: how to handshake. `None` is plain HTTP.
    pub tls: Option<TlsTarget>,
    pub protocol: Protocol,
    /// Many routes: each request's host is picked from these instead of `host`.
    pub routes: Option<Arc<RouteChoice>>,
}

impl Target {
    /// A plain HTTP/1.1 target (for loadgen's own backends and gorouters).
    pub fn plain(label: &str, addr: SocketAddr, host: &str, path: &str) -> Self {
        Target {
            label: label.into(),
            url: format!("http://{addr}{path}"),
            addr,
            host: host.into(),
            path: path.into(),
            tls: None,
            protocol: Protocol::Http1,
            routes: None,
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The host for the next request.
    pub fn pick_host<'a, R: Rng>(&'a self, rng: &mut R) -> &'a str {
        match &self.routes {
            Some(routes) => routes.pick(rng),
            None => &self.host,
        }
    }
}

/// The TLS side of an HTTPS target.
#[derive(Clone)]
pub struct TlsTarget {
    /// Session resumption is off in its config, so every new connection is a full handshake.
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: ServerName<'static>,
}

/// How a request's route is chosen among many.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    Uniform,
    /// Rank k (0-based) with probability proportional to 1/(k+1)^s.
    Zipf {
        s: f64,
    },
}

/// Many hosts and how to pick one per request.
#[derive(Debug)]
pub struct RouteChoice {
    pub hosts: Vec<String>,
    pub distribution: Distribution,
    zipf: Option<Zipf>,
}

impl RouteChoice {
    pub fn new(hosts: Vec<String>, distribution: Distribution) -> Result<Self> {
        if hosts.is_empty() {
            bail!("no routes to choose from");
        }
        let zipf = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipf { s } => {
                Some(Zipf::new(hosts.len(), s).map_err(anyhow::Error::msg)?)
            }
        };
        Ok(Self {
            hosts,
            distribution,
            zipf,
        })
    }

    pub fn pick<R: Rng>(&self, rng: &mut R) -> &str {
        let i = match &self.zipf {
            Some(z) => z.rank(rng.random::<f64>()),
            None => rng.random_range(0..self.hosts.len()),
        };
        &self.hosts[i]
    }
}

/// `name=URL` -> (`Some(name)`, URL); a bare URL -> (`None`, URL).
pub fn split_label(spec: &str) -> (Option<&str>, &str) {
    match spec.split_once('=') {
        // `=` may occur in a URL's query: a label is a plain word before any `:` or `/`.
        Some((name, url))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c)) =>
        {
            (Some(name), url)
        }
        _ => (None, spec),
    }
}

/// `http(s)://host[:port][/path]` -> address, Host header, path and, for HTTPS, the TLS
/// client (trusting `ca`, offering `protocol` by ALPN).
pub async fn parse_target(
    label: &str,
    url: &str,
    host: Option<&str>,
    ca: Option<&Path>,
    protocol: Protocol,
) -> Result<Target> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("a target must be an http:// or https:// URL, got {url:?}"),
    };
    let authority = uri
        .authority()
        .with_context(|| format!("no host in {url:?}"))?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = host.unwrap_or(authority.as_str()).to_string();
    let tls = if https {
        let ca = ca.context("an https:// target needs --ca FILE")?;
        // The server name: the Host header's name, without a port (or an IP address).
        let name = http::uri::Authority::try_from(host.as_str())
            .map(|a| a.host().trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|_| host.clone());
        Some(tls_target(ca, &name, protocol)?)
    } else {
        None
    };
    let resolve = tokio::net::lookup_host((authority.host(), port));
    let addr = tokio::time::timeout(std::time::Duration::from_secs(10), resolve)
        .await
        .with_context(|| format!("resolving {authority}: no answer within 10s"))?
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolved to no address"))?;
    Ok(Target {
        label: label.into(),
        url: url.into(),
        addr,
        host,
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
        tls,
        protocol,
        routes: None,
    })
}

/// A TLS client trusting the CAs in `ca`, offering `protocol` by ALPN, with session
/// resumption off: every connection is a full handshake, which is what the handshake rows
/// measure.
pub fn tls_target(ca: &Path, server_name: &str, protocol: Protocol) -> Result<TlsTarget> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        let cert = cert.with_context(|| format!("parsing {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("adding a CA from {}", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("no CERTIFICATE in {}", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 => vec![b"h2".to_vec()],
    };
    config.resumption = rustls::client::Resumption::disabled();
    let server_name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("invalid TLS server name {server_name:?}"))?;
    Ok(TlsTarget {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[tokio::test]
    async fn target_urls_parse() {
        let t = parse_target(
            "t",
            "http://127.0.0.1:8081/a?b=1",
            None,
            None,
            Protocol::Http1,
        )
        .await
        .unwrap();
        assert_eq!(t.addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8081");
        assert_eq!(t.path, "/a?b=1");
        let t = parse_target(
            "t",
            "http://127.0.0.1",
            Some("x.example.com"),
            None,
            Protocol::Http1,
        )
        .await
        .unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!((t.host.as_str(), t.path.as_str()), ("x.example.com", "/"));
        assert!(t.tls.is_none());
    }

    #[tokio::test]
    async fn https_needs_a_ca_and_other_schemes_are_refused() {
        let h1 = Protocol::Http1;
        assert!(parse_target("t", "https://127.0.0.1", None, None, h1)
            .await
            .is_err());
        assert!(parse_target("t", "ftp://127.0.0.1", None, None, h1)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn https_target_uses_the_ca_and_the_host_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.example.com".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = std::env::temp_dir().join(format!("loadgen-ca-{}.pem", std::process::id()));
        std::fs::write(&path, ca.pem()).unwrap();
        let t = parse_target(
            "t",
            "https://127.0.0.1:8443/",
            Some("x.example.com:8443"),
            Some(&path),
            Protocol::Http2,
        )
        .await;
        let _ = std::fs::remove_file(&path);
        let t = t.unwrap();
        assert_eq!(t.addr.port(), 8443);
        let tls = t.tls.unwrap();
        assert_eq!(
            tls.server_name,
            rustls::pki_types::ServerName::try_from("x.example.com").unwrap()
        );
    }

    #[test]
    fn labels_are_a_word_before_the_url() {
        assert_eq!(
            split_label("ours=http://127.0.0.1:8081/"),
            (Some("ours"), "http://127.0.0.1:8081/")
        );
        assert_eq!(
            split_label("http://127.0.0.1/?a=b"),
            (None, "http://127.0.0.1/?a=b")
        );
        assert_eq!(split_label("=http://x/"), (None, "=http://x/"));
    }

    #[test]
    fn zipf_routes_favour_the_first_host_and_uniform_routes_do_not() {
        let hosts: Vec<String> = (0..50).map(|i| format!("r{i}.example.com")).collect();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let zipf = RouteChoice::new(hosts.clone(), Distribution::Zipf { s: 1.2 }).unwrap();
        let uniform = RouteChoice::new(hosts, Distribution::Uniform).unwrap();
        let first = |c: &RouteChoice, rng: &mut rand::rngs::SmallRng| {
            (0..10_000)
                .filter(|_| c.pick(rng) == "r0.example.com")
                .count()
        };
        let z = first(&zipf, &mut rng);
        let u = first(&uniform, &mut rng);
        assert!(z > 2_000, "zipf picked r0 {z} times of 10000");
        assert!(
            (100..400).contains(&u),
            "uniform picked r0 {u} times of 10000"
        );
    }
}
