//! The `prometheus` block of a component's config file, with upstream gorouter's keys, and what
//! it asks for once checked ([`Endpoint`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

/// `prometheus:` as written in the file. Every key may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    /// The metrics port; 0 (or absent) serves no metrics.
    pub port: u16,
    /// The server certificate (PEM) for mutual TLS.
    pub cert_path: String,
    /// The server certificate's private key (PEM).
    pub key_path: String,
    /// The CA (PEM) that scrapers' client certificates must chain to.
    pub ca_path: String,
    /// Our extension: the address to listen on. Default 127.0.0.1, as upstream's metrics
    /// registry (a local agent scrapes); a scraper in another container needs `0.0.0.0`.
    pub listen_address: Option<IpAddr>,
}

/// How `/metrics` is to be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
}

/// The files of a mutual TLS metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// A `prometheus` block that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "prometheus: {missing} must be set when {present} is: set cert_path, key_path and ca_path \
         together for mutual TLS, or none of them for plain HTTP on 127.0.0.1"
    )]
    PartialTls {
        missing: &'static str,
        present: &'static str,
    },
}

impl PrometheusConfig {
    /// What the block asks for: `None` when metrics are off (port 0).
    pub fn endpoint(&self) -> Result<Option<Endpoint>, ConfigError> {
        if self.port == 0 {
            return Ok(None);
        }
        let files = [
            ("cert_path", &self.cert_path),
            ("key_path", &self.key_path),
            ("ca_path", &self.ca_path),
        ];
        let present = files.iter().find(|(_, v)| !v.trim().is_empty());
        let missing = files.iter().find(|(_, v)| v.trim().is_empty());
        let tls = match (present, missing) {
            (None, _) => None,
            (Some((present, _)), Some((missing, _))) => {
                return Err(ConfigError::PartialTls { missing, present })
            }
            (Some(_), None) => Some(TlsFiles {
                cert: PathBuf::from(self.cert_path.trim()),
                key: PathBuf::from(self.key_path.trim()),
                client_ca: PathBuf::from(self.ca_path.trim()),
            }),
        };
        let ip = self
            .listen_address
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        Ok(Some(Endpoint {
            addr: SocketAddr::new(ip, self.port),
            tls,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> PrometheusConfig {
        serde_yaml_ng::from_str(yaml).expect("valid yaml")
    }

    #[test]
    fn port_zero_serves_nothing() {
        assert_eq!(parse("port: 0\ncert_path: /c").endpoint(), Ok(None));
        assert_eq!(PrometheusConfig::default().endpoint(), Ok(None));
    }

    #[test]
    fn without_files_plain_http_on_loopback() {
        let endpoint = parse("port: 9100").endpoint().unwrap().unwrap();
        assert_eq!(endpoint.addr, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(endpoint.tls, None);
    }

    #[test]
    fn with_all_files_mutual_tls_on_loopback() {
        let endpoint = parse("port: 9100\ncert_path: /c.pem\nkey_path: /k.pem\nca_path: /ca.pem")
            .endpoint()
            .unwrap()
            .unwrap();
        assert_eq!(endpoint.addr, "127.0.0.1:9100".parse().unwrap());
        let tls = endpoint.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/c.pem"));
        assert_eq!(tls.key, PathBuf::from("/k.pem"));
        assert_eq!(tls.client_ca, PathBuf::from("/ca.pem"));
    }

    #[test]
    fn listen_address_overrides_the_default() {
        let endpoint = parse("port: 9100\nlisten_address: 0.0.0.0")
            .endpoint()
            .unwrap()
            .unwrap();
        assert_eq!(endpoint.addr, "0.0.0.0:9100".parse().unwrap());
    }

    #[test]
    fn some_files_without_the_others_is_an_error_naming_them() {
        let err = parse("port: 9100\nkey_path: /k.pem")
            .endpoint()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::PartialTls {
                missing: "cert_path",
                present: "key_path"
            }
        );
        assert!(err
            .to_string()
            .contains("cert_path must be set when key_path is"));
    }
}
