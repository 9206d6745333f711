//! The PKI a docker-compose stack of the routing tier needs, generated with rcgen (and the `rsa`
//! crate for UAA's token signing key) instead of an openssl script: `routing-tier certs --out
//! DIR [--san NAME]... [--force]` writes it, and `routing-tier up` keeps one in
//! `<data dir>/tls/` for routing-api's mutual-TLS port and gorouter's HTTPS listener.
//!
//! # The files ([`FILES`]), flat in one directory
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the CA every certificate below is signed by (valid ~10 years) |
//! | `routing-api-server.pem/.key` | routing-api's mutual-TLS listener (3001), server auth |
//! | `routing-api-client.pem/.key` | client auth, for gorouter, tcp-router and route-emitter calling 3001 |
//! | `locket-server.pem/.key` | Locket's gRPC listener, server auth |
//! | `locket-client.pem/.key` | routing-api's client certificate for Locket |
//! | `gorouter.pem/.key` | gorouter's HTTPS listener (also `*.localhost` and `demo.localhost`) |
//! | `nats-server.pem/.key`, `nats-client.pem/.key` | NATS with TLS |
//! | `uaa-server.pem/.key` | UAA's HTTPS listener |
//! | `uaa-signing.key`, `uaa-signing.pub.pem` | UAA's RS256 token signing key (RSA 2048) and its public key |
//!
//! Every server certificate names, as subject alternative names, its docker-compose service
//! (`routing-api`, `locket`, `gorouter`, `nats`, `uaa`; also its common name), `localhost`,
//! `127.0.0.1`, `::1` and every `--san`. Client certificates carry the client extended key usage
//! and a common name (`routing-api-client`, `locket-client`, `nats-client`) and no names.
//! Certificate files hold the leaf alone (PEM `CERTIFICATE`); trust `ca.pem`.
//!
//! gorouter's certificate also names `*.localhost`, which Go clients accept for any
//! `<app>.localhost`, and `demo.localhost` (`up`'s demo app) by name: rustls/webpki, OpenSSL
//! (curl) and browsers refuse a wildcard directly above a single-label name. Give an app's
//! host name with `--san` to have it verified by those clients.
//!
//! # Formats
//!
//! - TLS keys (`*.key` but `uaa-signing.key`) are ECDSA P-256 in PKCS#8 PEM (`PRIVATE KEY`),
//!   rcgen's own format, which every loader of the tier accepts: routing-api's mTLS listener
//!   and Locket client, Locket and gorouter's `tls_pem` load any of PKCS#8, PKCS#1 and SEC1
//!   through `rustls_pki_types::PrivateKeyDer::from_pem_slice`; NATS (Go's `tls.X509KeyPair`)
//!   and Java (UAA) read PKCS#8 too, while Java cannot read SEC1 or PKCS#1 without help.
//! - `uaa-signing.key` is RSA 2048 in PKCS#1 PEM (`RSA PRIVATE KEY`), the form UAA's
//!   `jwt.token.signing-key` / `jwt.policy.keys.*.signingKey` are documented with (and what the
//!   tests' fake UAA uses); jsonwebtoken's `EncodingKey::from_rsa_pem` reads it as well.
//!   `uaa-signing.pub.pem` is its SubjectPublicKeyInfo PEM (`PUBLIC KEY`), what UAA serves as
//!   `/token_key`'s `value`.
//! - Leaf certificates are valid for 825 days (the longest macOS accepts for a TLS server
//!   certificate, even under a locally trusted CA), the CA for 3650 days; both start an hour
//!   in the past so clocks a little behind do not reject them.
//!
//! # Idempotence
//!
//! [`write`] leaves a complete set alone ([`Outcome::Kept`]) unless forced, so re-running
//! `certs` (say on every `docker compose up`) keeps the CA clients already trust. A directory
//! holding only some of the files is an error ([`crate::Error::PkiPartial`]): forcing replaces
//! all of them. Keys are written with mode 0600, certificates and the public key with 0644,
//! each through a temporary file renamed into place.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// The CA's validity, in days.
pub const CA_DAYS: i64 = 3650;
/// A leaf certificate's validity, in days.
pub const LEAF_DAYS: i64 = 825;
/// The names every server certificate carries besides its service name and the `--san`s.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Every file of the set, in the order [`write`] writes them.
pub const FILES: [&str; 20] = [
    "ca.pem",
    "ca.key",
    "routing-api-server.pem",
    "routing-api-server.key",
    "routing-api-client.pem",
    "routing-api-client.key",
    "locket-server.pem",
    "locket-server.key",
    "locket-client.pem",
    "locket-client.key",
    "gorouter.pem",
    "gorouter.key",
    "nats-server.pem",
    "nats-server.key",
    "nats-client.pem",
    "nats-client.key",
    "uaa-server.pem",
    "uaa-server.key",
    "uaa-signing.key",
    "uaa-signing.pub.pem",
];

/// A leaf certificate of the set.
#[derive(Debug, Clone, Copy)]
enum Leaf {
    /// Server auth, for compose service `service` (also its common name), with `extra` names
    /// beyond the common ones.
    Server {
        service: &'static str,
        extra: &'static [&'static str],
    },
    /// Client auth; the file stem is the common name.
    Client,
}

/// The leaf certificates by file stem, in [`FILES`] order.
const LEAVES: [(&str, Leaf); 8] = [
    (
        "routing-api-server",
        Leaf::Server {
            service: "routing-api",
            extra: &[],
        },
    ),
    ("routing-api-client", Leaf::Client),
    (
        "locket-server",
        Leaf::Server {
            service: "locket",
            extra: &[],
        },
    ),
    ("locket-client", Leaf::Client),
    (
        "gorouter",
        Leaf::Server {
            service: "gorouter",
            extra: &["*.localhost", "demo.localhost"],
        },
    ),
    (
        "nats-server",
        Leaf::Server {
            service: "nats",
            extra: &[],
        },
    ),
    ("nats-client", Leaf::Client),
    (
        "uaa-server",
        Leaf::Server {
            service: "uaa",
            extra: &[],
        },
    ),
];

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFile {
    /// The file name, one of [`FILES`].
    pub name: &'static str,
    /// The PEM text.
    pub contents: String,
    /// A private key (mode 0600) rather than a certificate or public key (0644).
    pub secret: bool,
}

impl PkiFile {
    /// The file's mode.
    pub fn mode(&self) -> u32 {
        if self.secret {
            0o600
        } else {
            0o644
        }
    }
}

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every file was (re)generated; the paths in write order.
    Written(Vec<PathBuf>),
    /// Every file already existed and was left alone; their paths.
    Kept(Vec<PathBuf>),
}

/// The names a server certificate for compose service `service` carries: the service,
/// `extra` (e.g. `*.localhost`), [`LOCAL_NAMES`] and `sans`, without duplicates.
pub fn server_names(service: &str, extra: &[&str], sans: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let all = std::iter::once(service)
        .chain(extra.iter().copied())
        .chain(LOCAL_NAMES)
        .chain(sans.iter().map(String::as_str));
    for n in all {
        if !names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
            names.push(n.to_string());
        }
    }
    names
}

/// Checks a `--san` value: an IP address, or a DNS name (letters, digits, `-` and `_` in dot
/// separated labels, optionally starting with the wildcard label `*.`).
pub fn check_san(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if name.len() <= 253 && !host.is_empty() && host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "--san {name:?} is neither an IP address nor a DNS name (like `routing.example.com` or `*.apps.internal`)"
        ))
    }
}

/// Generates the whole set in memory (in [`FILES`] order); `sans` are added to every server
/// certificate.
pub fn generate(sans: &[String]) -> Result<Vec<PkiFile>, Error> {
    for s in sans {
        check_san(s).map_err(Error::San)?;
    }
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);
    let mut files = Vec::with_capacity(FILES.len());
    let mut push = |name: &'static str, contents: String, secret: bool| {
        files.push(PkiFile {
            name,
            contents,
            secret,
        })
    };

    let mut ca = CertificateParams::default();
    ca.distinguished_name = dn("routing-tier CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = now + time::Duration::days(CA_DAYS);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    push("ca.pem", issuer.pem(), false);
    push("ca.key", issuer.key().serialize_pem(), true);

    let leaf = |mut params: CertificateParams,
                common_name: &str,
                usage: ExtendedKeyUsagePurpose|
     -> Result<(String, String), Error> {
        params.distinguished_name = dn(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.not_before = not_before;
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    for (stem, kind) in LEAVES {
        let (cert, key) = match kind {
            Leaf::Server { service, extra } => {
                let mut params = CertificateParams::default();
                params.subject_alt_names = server_names(service, extra, sans)
                    .iter()
                    .map(|n| san(n))
                    .collect::<Result<_, _>>()?;
                leaf(params, service, ExtendedKeyUsagePurpose::ServerAuth)?
            }
            Leaf::Client => leaf(
                CertificateParams::default(),
                stem,
                ExtendedKeyUsagePurpose::ClientAuth,
            )?,
        };
        push(file_name(stem, ".pem")?, cert, false);
        push(file_name(stem, ".key")?, key, true);
    }

    let (private_pem, public_pem) = rsa_signing_key()?;
    push("uaa-signing.key", private_pem, true);
    push("uaa-signing.pub.pem", public_pem, false);
    debug_assert_eq!(files.iter().map(|f| f.name).collect::<Vec<_>>(), FILES);
    Ok(files)
}

/// The `&'static` entry of [`FILES`] named `stem` + `suffix`.
fn file_name(stem: &str, suffix: &str) -> Result<&'static str, Error> {
    let name = format!("{stem}{suffix}");
    FILES
        .iter()
        .copied()
        .find(|f| *f == name)
        .ok_or_else(|| Error::Internal(format!("{name} is not in the PKI file list")))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "routing-tier");
    dn
}

/// An IP address or DNS name SAN.
fn san(name: &str) -> Result<SanType, Error> {
    Ok(match name.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into()?),
    })
}

/// A fresh RSA 2048 key: PKCS#1 private key PEM and SubjectPublicKeyInfo public key PEM.
fn rsa_signing_key() -> Result<(String, String), Error> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let mut rng = rsa::rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| Error::RsaKey(e.to_string()))?;
    let private_pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| Error::RsaKey(e.to_string()))?;
    let public_pem = rsa::RsaPublicKey::from(&key)
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::RsaKey(e.to_string()))?;
    Ok((private_pem.to_string(), public_pem))
}

/// The files of [`FILES`] present in `dir`, and those missing.
pub fn inventory(dir: &Path) -> (Vec<&'static str>, Vec<&'static str>) {
    FILES
        .iter()
        .partition(|f| std::fs::symlink_metadata(dir.join(f)).is_ok())
}

/// Writes the set into `dir` (created if missing) unless it is already complete there and
/// `force` is false, in which case the files are kept. Only some of the files present and
/// `force` false is [`Error::PkiPartial`]. Nothing is written unless the whole set was
/// generated.
pub fn write(dir: &Path, sans: &[String], force: bool) -> Result<Outcome, Error> {
    let (present, missing) = inventory(dir);
    if !force && missing.is_empty() {
        return Ok(Outcome::Kept(FILES.iter().map(|f| dir.join(f)).collect()));
    }
    if !force && !present.is_empty() {
        return Err(Error::PkiPartial {
            dir: dir.display().to_string(),
            present: present.join(", "),
            missing: missing.join(", "),
        });
    }
    let files = generate(sans)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let mut written = Vec::with_capacity(files.len());
    for f in &files {
        let path = dir.join(f.name);
        write_file(&path, f.contents.as_bytes(), f.mode())?;
        written.push(path);
    }
    Ok(Outcome::Written(written))
}

/// `routing-tier certs`: writes (or keeps) the set in `--out` and prints one line per file.
pub fn run(opts: &crate::args::CertsOptions) -> Result<(), Error> {
    match write(&opts.out, &opts.sans, opts.force)? {
        Outcome::Written(paths) => {
            for p in &paths {
                println!("wrote {}", p.display());
            }
        }
        Outcome::Kept(paths) => {
            for p in &paths {
                println!("kept {}", p.display());
            }
            println!(
                "routing-tier: every file was already in {}; kept them (--force writes a new set)",
                opts.out.display()
            );
        }
    }
    Ok(())
}

/// Writes `contents` to `path` with exactly `mode`, through `.<name>.tmp` renamed into place.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits away; set exactly `mode`.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("cannot write", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "routing-tier-pki-{tag}-{}-{}",
                std::process::id(),
                time::OffsetDateTime::now_utc().unix_timestamp_nanos()
            ));
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn der(pem_text: &str) -> Vec<u8> {
        let (rest, pem) =
            x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).expect("a PEM block");
        assert!(rest.is_empty(), "one PEM block only");
        assert_eq!(pem.label, "CERTIFICATE");
        pem.contents
    }

    fn sans_of(cert: &X509Certificate<'_>) -> Vec<String> {
        let Ok(Some(ext)) = cert.subject_alternative_name() else {
            return Vec::new();
        };
        ext.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*b).expect("v4")).to_string(),
                    16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).expect("v6")).to_string(),
                    _ => format!("{b:?}"),
                },
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_set_has_every_file_in_its_format() {
        let files = generate(&["tier.example.com".into(), "10.0.0.5".into()]).expect("generate");
        assert_eq!(files.iter().map(|f| f.name).collect::<Vec<_>>(), FILES);
        for f in &files {
            let label = if f.name == "uaa-signing.key" {
                "RSA PRIVATE KEY"
            } else if f.name == "uaa-signing.pub.pem" {
                "PUBLIC KEY"
            } else if f.secret {
                "PRIVATE KEY"
            } else {
                "CERTIFICATE"
            };
            assert!(
                f.contents
                    .starts_with(&format!("-----BEGIN {label}-----\n")),
                "{}: {}",
                f.name,
                f.contents
            );
            assert_eq!(f.contents.matches("-----BEGIN").count(), 1, "{}", f.name);
            assert_eq!(f.secret, f.name.ends_with(".key"), "{}", f.name);
        }
        let get = |name: &str| {
            files
                .iter()
                .find(|f| f.name == name)
                .map(|f| der(&f.contents))
                .expect("file")
        };
        let ca_der = get("ca.pem");
        let (_, ca) = X509Certificate::from_der(&ca_der).expect("CA parses");
        assert!(ca.is_ca());
        let days = |c: &X509Certificate<'_>| {
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86400
        };
        assert_eq!(days(&ca), CA_DAYS);
        for (stem, kind) in LEAVES {
            let Leaf::Server { service, extra } = kind else {
                continue;
            };
            let d = get(&format!("{stem}.pem"));
            let (_, cert) = X509Certificate::from_der(&d).expect("parses");
            assert_eq!(cert.issuer(), ca.subject(), "{stem}");
            cert.verify_signature(Some(ca.public_key()))
                .expect("signed by the CA");
            assert_eq!(days(&cert), LEAF_DAYS);
            let mut want = vec![service.to_string()];
            want.extend(extra.iter().map(|s| s.to_string()));
            want.extend(
                [
                    "localhost",
                    "127.0.0.1",
                    "::1",
                    "tier.example.com",
                    "10.0.0.5",
                ]
                .map(String::from),
            );
            assert_eq!(sans_of(&cert), want, "{stem}");
            let eku = cert
                .extended_key_usage()
                .expect("eku")
                .expect("eku present");
            assert!(eku.value.server_auth && !eku.value.client_auth, "{stem}");
        }
        for (stem, kind) in LEAVES {
            if !matches!(kind, Leaf::Client) {
                continue;
            }
            let d = get(&format!("{stem}.pem"));
            let (_, cert) = X509Certificate::from_der(&d).expect("parses");
            cert.verify_signature(Some(ca.public_key()))
                .expect("signed by the CA");
            let eku = cert
                .extended_key_usage()
                .expect("eku")
                .expect("eku present");
            assert!(eku.value.client_auth && !eku.value.server_auth, "{stem}");
            assert!(sans_of(&cert).is_empty(), "{stem}");
        }
    }

    #[test]
    fn write_keeps_a_complete_set_forces_and_refuses_a_partial_one() {
        let dir = TempDir::new("write");
        let Outcome::Written(paths) = write(&dir.0, &[], false).expect("first") else {
            panic!("not written")
        };
        assert_eq!(paths.len(), FILES.len());
        let read_all = || {
            FILES
                .iter()
                .map(|f| std::fs::read(dir.0.join(f)).expect("read"))
                .collect::<Vec<_>>()
        };
        let first = read_all();
        for f in FILES {
            let mode = std::fs::metadata(dir.0.join(f))
                .expect("meta")
                .permissions()
                .mode();
            let want = if f.ends_with(".key") { 0o600 } else { 0o644 };
            assert_eq!(mode & 0o777, want, "{f}");
        }
        assert!(
            matches!(write(&dir.0, &[], false), Ok(Outcome::Kept(p)) if p.len() == FILES.len())
        );
        assert_eq!(read_all(), first);
        assert!(matches!(write(&dir.0, &[], true), Ok(Outcome::Written(_))));
        let forced = read_all();
        assert!(first.iter().zip(&forced).all(|(a, b)| a != b));

        std::fs::remove_file(dir.0.join("gorouter.key")).expect("rm");
        let e = write(&dir.0, &[], false).expect_err("partial");
        let msg = e.to_string();
        assert!(
            msg.contains("gorouter.key") && msg.contains("--force"),
            "{msg}"
        );
        assert!(!dir.0.join("gorouter.key").exists());
        assert!(matches!(write(&dir.0, &[], true), Ok(Outcome::Written(_))));
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), FILES.len(), "{names:?}");
    }

    #[test]
    fn sans_are_checked_and_deduplicated() {
        assert!(check_san("routing.example.com").is_ok());
        assert!(check_san("*.apps.internal").is_ok());
        assert!(check_san("fe80::1").is_ok());
        assert!(check_san("10.1.2.3").is_ok());
        for bad in ["", "a b", "-x.com", "x..y", "*", "é.com", "a/b"] {
            assert!(check_san(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(generate(&["bad name".into()]), Err(Error::San(_))));
        assert_eq!(
            server_names("nats", &[], &["LOCALHOST".into(), "nats.internal".into()]),
            ["nats", "localhost", "127.0.0.1", "::1", "nats.internal"]
        );
    }
}
