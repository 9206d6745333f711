//! gorouter's HTTPS certificate: self-signed for `localhost`, `*.localhost` and 127.0.0.1,
//! generated with rcgen into `<data dir>/tls/cert.pem` and `key.pem` once and reused after.

use std::path::Path;

use crate::Error;

/// A PEM certificate chain and its key.
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The certificate in `tls_dir`, generated (and written) when either file is missing.
pub fn load_or_generate(tls_dir: &Path) -> Result<CertKey, Error> {
    let cert_path = tls_dir.join("cert.pem");
    let key_path = tls_dir.join("key.pem");
    if cert_path.is_file() && key_path.is_file() {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::io("cannot read", p, e));
        return Ok(CertKey {
            cert_pem: read(&cert_path)?,
            key_pem: read(&key_path)?,
        });
    }
    std::fs::create_dir_all(tls_dir).map_err(|e| Error::io("cannot create", tls_dir, e))?;
    let names = ["localhost", "*.localhost", "127.0.0.1"]
        .map(String::from)
        .to_vec();
    let generated = rcgen::generate_simple_self_signed(names)?;
    let pair = CertKey {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
    };
    std::fs::write(&key_path, &pair.key_pem)
        .map_err(|e| Error::io("cannot write", &key_path, e))?;
    std::fs::write(&cert_path, &pair.cert_pem)
        .map_err(|e| Error::io("cannot write", &cert_path, e))?;
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("routing-tier-tls-{}", std::process::id()));
        let first = load_or_generate(&dir).expect("generate");
        assert!(first.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.key_pem.contains("PRIVATE KEY"));
        let second = load_or_generate(&dir).expect("reuse");
        assert_eq!(first.cert_pem, second.cert_pem);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
