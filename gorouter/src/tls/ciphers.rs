//! `cipher_suites`, `min_tls_version` and `max_tls_version` as upstream reads them, mapped onto
//! what rustls implements.
//!
//! Upstream accepts OpenSSL names (`ECDHE-RSA-AES128-GCM-SHA256`) and Go's names
//! (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), `:`-separated. rustls implements the ECDHE
//! AEAD suites only, so a name Go knows but rustls lacks (CBC, RC4, 3DES, static RSA) is a
//! config error saying so, and an unknown name gets upstream's "Invalid cipher string
//! configuration". TLS 1.3 suites cannot be chosen in Go and are always on here too.

use rustls::crypto::ring::cipher_suite as cs;
use rustls::SupportedCipherSuite;

/// A TLS protocol version as the config names it (`TLSv1.0` .. `TLSv1.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// Parses upstream's names (`TLSv1.0`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "TLSv1.0" => Self::Tls10,
            "TLSv1.1" => Self::Tls11,
            "TLSv1.2" => Self::Tls12,
            "TLSv1.3" => Self::Tls13,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tls10 => "TLSv1.0",
            Self::Tls11 => "TLSv1.1",
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }
}

/// The rustls protocol versions between `min` and `max` (TLS 1.0 and 1.1 count as 1.2, the
/// oldest rustls speaks). Empty when `min` is above `max`.
pub fn protocol_versions(
    min: TlsVersion,
    max: TlsVersion,
) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let min = min.max(TlsVersion::Tls12);
    let mut versions = Vec::with_capacity(2);
    if max >= TlsVersion::Tls13 && min <= TlsVersion::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if max >= TlsVersion::Tls12 && min <= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    versions
}

/// rustls's TLS 1.3 suites followed by `tls12` (the order the provider offers them in).
pub fn with_tls13(tls12: &[SupportedCipherSuite]) -> Vec<SupportedCipherSuite> {
    let mut suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    suites.extend_from_slice(tls12);
    suites
}

/// Every name rustls can honour: `(name, Some(TLS 1.2 suite))`, or `None` for TLS 1.3 suites,
/// which are accepted and always on.
const SUPPORTED: &[(&str, Option<SupportedCipherSuite>)] = &[
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        Some(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        Some(cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        Some(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        Some(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        Some(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        Some(cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        Some(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        Some(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    ("TLS_AES_128_GCM_SHA256", None),
    ("TLS_AES_256_GCM_SHA384", None),
    ("TLS_CHACHA20_POLY1305_SHA256", None),
];

/// Names upstream accepts (its OpenSSL table and Go's `tls.CipherSuites()` /
/// `InsecureCipherSuites()`) that rustls does not implement.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "RC4-SHA",
    "DES-CBC3-SHA",
    "AES128-SHA",
    "AES256-SHA",
    "AES128-SHA256",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "ECDHE-ECDSA-RC4-SHA",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-RC4-SHA",
    "ECDHE-RSA-DES-CBC3-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

fn supported_names() -> String {
    let names: Vec<&str> = SUPPORTED.iter().map(|(n, _)| *n).collect();
    format!("[{}]", names.join(" "))
}

/// Parses a `:`-separated `cipher_suites` value into the TLS 1.2 suites it selects (in the
/// order given, duplicates dropped). TLS 1.3 names are accepted and select nothing extra. The
/// error is the message for the `cipher_suites` key.
pub fn parse_cipher_suites(text: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    if text.trim().is_empty() {
        return Err("must specify list of cipher suite when ssl is enabled".into());
    }
    let mut suites: Vec<SupportedCipherSuite> = Vec::new();
    for name in text.split(':') {
        match SUPPORTED.iter().find(|(n, _)| *n == name) {
            Some((_, Some(suite))) => {
                if !suites.iter().any(|s| s.suite() == suite.suite()) {
                    suites.push(*suite);
                }
            }
            Some((_, None)) => {}
            None if KNOWN_UNSUPPORTED.contains(&name) => {
                return Err(format!(
                    "cipher suite {name} is not supported by this router (rustls implements only ECDHE suites with AES-GCM or ChaCha20-Poly1305); remove it or choose from {}",
                    supported_names()
                ))
            }
            None => {
                return Err(format!(
                    "Invalid cipher string configuration: {name}, please choose from {}",
                    supported_names()
                ))
            }
        }
    }
    Ok(suites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_and_go_names_map_to_the_same_suites() {
        let a =
            parse_cipher_suites("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384").unwrap();
        let b = parse_cipher_suites(
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        )
        .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.iter().map(|s| s.suite()).collect::<Vec<_>>(),
            b.iter().map(|s| s.suite()).collect::<Vec<_>>()
        );
        let c = parse_cipher_suites("TLS_AES_128_GCM_SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305").unwrap();
        assert_eq!(
            c.len(),
            1,
            "TLS 1.3 names select nothing; duplicates collapse"
        );
    }

    #[test]
    fn unsupported_and_unknown_names_are_errors_naming_them() {
        let e = parse_cipher_suites("ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA").unwrap_err();
        assert!(e.contains("AES128-SHA is not supported"), "{e}");
        let e = parse_cipher_suites("ECDHE-RSA-AES128-GCM-SHA256:BOGUS").unwrap_err();
        assert!(
            e.starts_with("Invalid cipher string configuration: BOGUS, please choose from ["),
            "{e}"
        );
        let e = parse_cipher_suites("ECDHE-RSA-AES128-GCM-SHA256::").unwrap_err();
        assert!(
            e.starts_with("Invalid cipher string configuration: , "),
            "{e}"
        );
        let e = parse_cipher_suites(" ").unwrap_err();
        assert_eq!(e, "must specify list of cipher suite when ssl is enabled");
    }

    #[test]
    fn versions_are_clamped_to_what_rustls_speaks() {
        use TlsVersion::*;
        let v = |a, b| {
            protocol_versions(a, b)
                .iter()
                .map(|v| v.version)
                .collect::<Vec<_>>()
        };
        assert_eq!(v(Tls10, Tls13), v(Tls12, Tls13));
        assert_eq!(v(Tls12, Tls13).len(), 2);
        assert_eq!(v(Tls12, Tls12), vec![rustls::ProtocolVersion::TLSv1_2]);
        assert_eq!(v(Tls13, Tls13), vec![rustls::ProtocolVersion::TLSv1_3]);
        assert!(v(Tls13, Tls12).is_empty());
        assert_eq!(TlsVersion::from_name("TLSv1.1"), Some(Tls11));
        assert_eq!(TlsVersion::from_name("tlsv1.2"), None);
    }
}
