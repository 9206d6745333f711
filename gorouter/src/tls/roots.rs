//! Trust stores: the system's roots (as Go's `x509.SystemCertPool`) plus the CAs a config key
//! adds.

use std::sync::OnceLock;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::TlsError;

/// The system's trusted roots, read once per process (Go caches its system pool too). A
/// certificate the system store holds but rustls cannot parse is skipped; failures to read the
/// store are logged once and leave it empty.
pub fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for err in &loaded.errors {
            tracing::warn!(error = %err, "system-cert-pool-partially-unavailable");
        }
        loaded.certs
    })
}

/// A root store of `configured` (each from the config key `key`, errors name it), plus the
/// system roots when `with_system` is set.
pub fn root_store(
    with_system: bool,
    configured: &[(String, Vec<CertificateDer<'static>>)],
) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    if with_system {
        store.add_parsable_certificates(system_roots().iter().cloned());
    }
    for (key, certs) in configured {
        for cert in certs {
            store.add(cert.clone()).map_err(|e| TlsError::Pem {
                key: key.clone(),
                message: format!("not usable as a trusted CA certificate: {e}"),
            })?;
        }
    }
    Ok(store)
}
