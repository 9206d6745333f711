//! `uaa-stand-in`: the project's stand-in for Cloud Foundry's UAA, for stacks that cannot run the
//! official `cloudfoundry/uaa` image (CI without image pulls). It is the test suite's
//! [`FakeUaa`] configured from the same `uaa.yml` the real server reads
//! (`compose/uaa/uaa.yml`):
//!
//! - `oauth.clients.<id>`: `secret` (a string, or a list of up to two), `authorized-grant-types`
//!   (required, as UAA requires it; only `client_credentials` tokens are issued),
//!   `authorities` (comma-separated; a client-credentials token carries them as `scope`, and
//!   `uaa.none` when there are none, as UAA's do), `scope` (checked, not used: UAA ignores it
//!   for this grant) and `access-token-validity` (seconds).
//! - `issuer.uri`: tokens' `iss` and the discovered issuer are `<issuer.uri>/oauth/token`;
//!   without it, the stand-in's own base URL.
//! - `jwt.token.policy.activeKeyId` and `jwt.token.policy.keys.<kid>.signingKey` (RSA PEM,
//!   PKCS#1 or PKCS#8; `signingAlg` RS256, RS384 or RS512), else the legacy
//!   `jwt.token.signing-key` (kid `legacy-token-key`), sign tokens. `--signing-key FILE`
//!   overrides them (kid `key-1`); with none of these a fresh key is generated.
//! - `jwt.token.policy.accessTokenValiditySeconds`, else
//!   `jwt.token.policy.global.accessTokenValiditySeconds`, else UAA's 43200: token lifetime.
//!
//! Every other key is ignored (the file is a foreign server's configuration). A client without
//! a secret or grant types, a key of the wrong type, an unusable key or certificate, or YAML that
//! does not parse stops the stand-in with exit status 1 and a message naming the file and the
//! key.
//!
//! It serves, at the root (no context path, like the official image): `GET /healthz` (`ok`),
//! `GET /.well-known/openid-configuration`, `GET /token_key`, `GET /token_keys` and
//! `POST /oauth/token` (client credentials by HTTP basic auth or form fields; a wrong secret is
//! UAA's 401 `{"error":"unauthorized","error_description":"Bad credentials"}`). Plain HTTP, or
//! HTTPS with `--tls-cert`/`--tls-key`. Once listening it prints
//! `uaa-stand-in: listening on ADDR …` on stdout, then one line per token request answered
//! (`token issued: client_id="…" scope="…" …` or `token refused: …`). SIGTERM or SIGINT: exit 0.
//!
//! Run `uaa-stand-in --help` for the flags.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use integration::uaa::{server_tls_from_pem, FakeUaa, SigningKey, UaaClient, UaaOptions, UaaTls};
use jsonwebtoken::Algorithm;
use serde_yaml_ng::{Mapping, Value};

const USAGE: &str = "\
usage: uaa-stand-in --config FILE [--listen ADDR] [--tls-cert FILE --tls-key FILE]
                    [--signing-key FILE]

  --config FILE       UAA's uaa.yml: oauth.clients, issuer.uri and jwt.token.policy are read,
                      everything else is ignored (required)
  --listen ADDR       address to listen on [default: 0.0.0.0:8080, the official image's];
                      prints `uaa-stand-in: listening on ADDR ...` once bound
  --tls-cert FILE     serve HTTPS with this PEM certificate chain (needs --tls-key)
  --tls-key FILE      the PEM private key of --tls-cert
  --signing-key FILE  RSA private key (PEM, PKCS#1 or PKCS#8) to sign tokens with, instead of
                      the config's jwt.token.policy key (kid `key-1`)
  --help              print this and exit";

/// UAA's default access token lifetime (`jwt.token.policy.global.accessTokenValiditySeconds`).
const UAA_DEFAULT_TTL: Duration = Duration::from_secs(43200);

/// The command line.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    config: PathBuf,
    listen: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
    signing_key: Option<PathBuf>,
}

/// `Ok(None)`: `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut config = None;
    let mut listen = None;
    let mut tls_cert = None;
    let mut tls_key = None;
    let mut signing_key = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let slot = match flag.as_str() {
            "--config" => &mut config,
            "--listen" => &mut listen,
            "--tls-cert" => &mut tls_cert,
            "--tls-key" => &mut tls_key,
            "--signing-key" => &mut signing_key,
            _ => return Err(format!("unknown argument {arg:?}")),
        };
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        if value.is_empty() {
            return Err(format!("{flag} needs a value"));
        }
        if slot.replace(value).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }
    let config = PathBuf::from(config.ok_or("--config FILE is required")?);
    let listen = match listen {
        Some(l) => l
            .parse()
            .map_err(|e| format!("--listen {l:?}: not an address (IP:PORT): {e}"))?,
        None => SocketAddr::from(([0, 0, 0, 0], 8080)),
    };
    let tls = match (tls_cert, tls_key) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        (Some(_), None) => return Err("--tls-cert needs --tls-key".to_string()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".to_string()),
    };
    Ok(Some(Args {
        config,
        listen,
        tls,
        signing_key: signing_key.map(PathBuf::from),
    }))
}

/// A signing key declared in `uaa.yml`, parsed.
struct ConfigKey {
    /// Where it was declared, for messages (`jwt.token.policy.keys.k1`).
    path: String,
    key: SigningKey,
}

/// What the stand-in takes from `uaa.yml`.
struct StandInConfig {
    clients: Vec<UaaClient>,
    issuer_uri: Option<String>,
    key: Option<ConfigKey>,
    token_ttl: Duration,
    /// Things UAA accepts but that may not do what the author expects.
    warnings: Vec<String>,
}

/// A problem in `uaa.yml`: the dotted key and what is wrong with it.
#[derive(Debug)]
struct ConfigError {
    key: String,
    message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A map key as Spring sees it (scalars as text).
fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `map[name]`, `None` when absent or null (Spring treats both as unset).
fn get<'a>(map: &'a Mapping, name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| key_text(k).as_deref() == Some(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn get_map<'a>(
    map: &'a Mapping,
    name: &str,
    path: &str,
) -> Result<Option<&'a Mapping>, ConfigError> {
    match get(map, name) {
        None => Ok(None),
        Some(Value::Mapping(m)) => Ok(Some(m)),
        Some(other) => Err(ConfigError::new(
            path,
            format!("must be a map, not {}", type_name(other)),
        )),
    }
}

/// A string value; UAA casts these to `String`, so anything else would stop it too.
fn get_str<'a>(map: &'a Mapping, name: &str, path: &str) -> Result<Option<&'a str>, ConfigError> {
    match get(map, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ConfigError::new(
            path,
            format!(
                "must be a string, not {} (quote it; lists are comma-separated strings in uaa.yml)",
                type_name(other)
            ),
        )),
    }
}

fn get_seconds(map: &Mapping, name: &str, path: &str) -> Result<Option<Duration>, ConfigError> {
    match get(map, name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) if s > 0 => Ok(Some(Duration::from_secs(s))),
            _ => Err(ConfigError::new(
                path,
                format!("{n} is not a positive number of seconds"),
            )),
        },
        Some(other) => Err(ConfigError::new(
            path,
            format!("must be a number of seconds, not {}", type_name(other)),
        )),
    }
}

/// UAA's comma-separated lists (`authorities`, `scope`, `authorized-grant-types`).
fn comma_list(s: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty() && seen.insert(x.to_string()))
        .map(str::to_string)
        .collect()
}

fn parse_alg(name: &str, path: &str) -> Result<Algorithm, ConfigError> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        other => Err(ConfigError::new(
            path,
            format!("{other:?} is not supported by the stand-in (RS256, RS384 or RS512)"),
        )),
    }
}

fn parse_config(text: &str) -> Result<StandInConfig, ConfigError> {
    let doc: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError::new("(YAML)", format!("not valid YAML: {e}")))?;
    let empty = Mapping::new();
    let root = match &doc {
        Value::Mapping(m) => m,
        Value::Null => &empty,
        other => {
            return Err(ConfigError::new(
                "(document)",
                format!("must be a map of settings, not {}", type_name(other)),
            ))
        }
    };
    let mut warnings = Vec::new();

    // issuer.uri
    let issuer_uri = match get_map(root, "issuer", "issuer")? {
        Some(issuer) => get_str(issuer, "uri", "issuer.uri")?.map(str::to_string),
        None => None,
    };
    if let Some(uri) = &issuer_uri {
        let parsed: Result<http::Uri, _> = uri.trim().parse();
        let ok = parsed
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !ok {
            return Err(ConfigError::new(
                "issuer.uri",
                format!("{uri:?} is not an http(s) URL"),
            ));
        }
    }

    // jwt.token.*
    let mut key = None;
    let mut token_ttl = UAA_DEFAULT_TTL;
    let token = match get_map(root, "jwt", "jwt")? {
        Some(jwt) => get_map(jwt, "token", "jwt.token")?,
        None => None,
    };
    if let Some(token) = token {
        let policy = get_map(token, "policy", "jwt.token.policy")?;
        if let Some(policy) = policy {
            let global = get_map(policy, "global", "jwt.token.policy.global")?;
            let global_ttl = match global {
                Some(g) => get_seconds(
                    g,
                    "accessTokenValiditySeconds",
                    "jwt.token.policy.global.accessTokenValiditySeconds",
                )?,
                None => None,
            };
            let zone_ttl = get_seconds(
                policy,
                "accessTokenValiditySeconds",
                "jwt.token.policy.accessTokenValiditySeconds",
            )?;
            token_ttl = zone_ttl.or(global_ttl).unwrap_or(UAA_DEFAULT_TTL);
            let active = get_str(policy, "activeKeyId", "jwt.token.policy.activeKeyId")?;
            let keys = get_map(policy, "keys", "jwt.token.policy.keys")?;
            let mut declared = Vec::new();
            for (k, v) in keys.into_iter().flatten() {
                let kid = key_text(k).ok_or_else(|| {
                    ConfigError::new("jwt.token.policy.keys", "has a key id that is not a string")
                })?;
                let path = format!("jwt.token.policy.keys.{kid}");
                let Value::Mapping(entry) = v else {
                    return Err(ConfigError::new(
                        path,
                        format!("must be a map with signingKey, not {}", type_name(v)),
                    ));
                };
                declared.push((kid, path, entry));
            }
            let chosen = match active {
                Some(id) => match declared.iter().find(|(kid, _, _)| kid == id) {
                    Some(d) => Some(d),
                    None => {
                        return Err(ConfigError::new(
                            "jwt.token.policy.activeKeyId",
                            format!("{id:?} is not a key of jwt.token.policy.keys"),
                        ))
                    }
                },
                None if declared.len() == 1 => declared.first(),
                None if declared.is_empty() => None,
                None => {
                    return Err(ConfigError::new(
                        "jwt.token.policy.activeKeyId",
                        format!(
                            "is missing and jwt.token.policy.keys has {} keys",
                            declared.len()
                        ),
                    ))
                }
            };
            // Every declared key must be usable (UAA loads them all).
            for (kid, path, entry) in &declared {
                let pem_path = format!("{path}.signingKey");
                let pem = get_str(entry, "signingKey", &pem_path)?
                    .ok_or_else(|| ConfigError::new(&pem_path, "is missing"))?;
                let alg_path = format!("{path}.signingAlg");
                let alg = match get_str(entry, "signingAlg", &alg_path)? {
                    Some(name) => parse_alg(name, &alg_path)?,
                    None => Algorithm::RS256,
                };
                let parsed = SigningKey::from_pem(kid, pem, alg)
                    .map_err(|e| ConfigError::new(&pem_path, e))?;
                if chosen.is_some_and(|(c, _, _)| c == kid) {
                    key = Some(ConfigKey {
                        path: path.clone(),
                        key: parsed,
                    });
                }
            }
        }
        if key.is_none() {
            let legacy_path = "jwt.token.signing-key";
            if let Some(pem) = get_str(token, "signing-key", legacy_path)? {
                let alg = match get_str(token, "signing-alg", "jwt.token.signing-alg")? {
                    Some(name) => parse_alg(name, "jwt.token.signing-alg")?,
                    None => Algorithm::RS256,
                };
                let parsed = SigningKey::from_pem("legacy-token-key", pem, alg)
                    .map_err(|e| ConfigError::new(legacy_path, e))?;
                key = Some(ConfigKey {
                    path: legacy_path.to_string(),
                    key: parsed,
                });
            }
        }
    }

    // oauth.clients
    let mut clients = Vec::new();
    let declared_clients = match get_map(root, "oauth", "oauth")? {
        Some(oauth) => get_map(oauth, "clients", "oauth.clients")?,
        None => None,
    };
    for (k, v) in declared_clients.into_iter().flatten() {
        let id = key_text(k).ok_or_else(|| {
            ConfigError::new("oauth.clients", "has a client id that is not a string")
        })?;
        let path = format!("oauth.clients.{id}");
        let Value::Mapping(c) = v else {
            return Err(ConfigError::new(
                path,
                format!(
                    "must be a map of the client's settings, not {}",
                    type_name(v)
                ),
            ));
        };
        let secret_path = format!("{path}.secret");
        let secrets = match get(c, "secret") {
            None => {
                return Err(ConfigError::new(
                    secret_path,
                    "is missing (the stand-in needs a secret for every client)",
                ))
            }
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(list)) => {
                let mut out = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    match s {
                        Value::String(s) => out.push(s.clone()),
                        Value::Null => out.push(String::new()),
                        other => {
                            return Err(ConfigError::new(
                                format!("{secret_path}[{i}]"),
                                format!("must be a string, not {} (quote it)", type_name(other)),
                            ))
                        }
                    }
                }
                if out.is_empty() {
                    return Err(ConfigError::new(secret_path, "is an empty list"));
                }
                // UAA keeps the first two.
                out.truncate(2);
                out
            }
            Some(other) => {
                return Err(ConfigError::new(
                    secret_path,
                    format!("must be a string, not {} (quote it)", type_name(other)),
                ))
            }
        };
        let grants_path = format!("{path}.authorized-grant-types");
        let grants = get_str(c, "authorized-grant-types", &grants_path)?
            .map(comma_list)
            .unwrap_or_default();
        if grants.is_empty() {
            return Err(ConfigError::new(
                grants_path,
                "is missing (UAA requires at least one authorized-grant-type)",
            ));
        }
        let authorities = get_str(c, "authorities", &format!("{path}.authorities"))?
            .map(comma_list)
            .unwrap_or_default();
        let scope = get_str(c, "scope", &format!("{path}.scope"))?
            .map(comma_list)
            .unwrap_or_default();
        let redirects = [
            "redirect-uri",
            "signup_redirect_url",
            "change_email_redirect_url",
        ];
        let mut has_redirect = false;
        for r in redirects {
            has_redirect |= get_str(c, r, &format!("{path}.{r}"))?.is_some();
        }
        for g in ["authorization_code", "implicit"] {
            if grants.iter().any(|x| x == g) && !has_redirect {
                return Err(ConfigError::new(
                    format!("{path}.redirect-uri"),
                    format!("is missing: the {g} grant type requires at least one redirect URL (UAA's rule)"),
                ));
            }
        }
        let token_ttl = get_seconds(
            c,
            "access-token-validity",
            &format!("{path}.access-token-validity"),
        )?;
        if let Some(Value::String(other)) = get(c, "id") {
            if *other != id {
                warnings.push(format!(
                    "{path}.id is {other:?}: UAA (and the stand-in) use the map key {id:?} as the client id"
                ));
            }
        }
        let client_credentials = grants.iter().any(|g| g == "client_credentials");
        let authorities = if authorities.is_empty() {
            if client_credentials {
                let hint = if scope.is_empty() {
                    String::new()
                } else {
                    " (its scope is not used for client credentials)".to_string()
                };
                warnings.push(format!(
                    "{path} has no authorities: its tokens carry scope uaa.none, as UAA's would{hint}"
                ));
            }
            vec!["uaa.none".to_string()]
        } else {
            authorities
        };
        clients.push(UaaClient {
            id,
            secrets,
            authorities,
            client_credentials,
            token_ttl,
        });
    }
    if clients.is_empty() {
        warnings.push("oauth.clients declares no client: no token can be issued".to_string());
    }
    Ok(StandInConfig {
        clients,
        issuer_uri,
        key,
        token_ttl,
        warnings,
    })
}

/// A message for stderr and exit status 1.
struct Fatal(String);

fn read_file(what: &str, path: &Path) -> Result<String, Fatal> {
    std::fs::read_to_string(path)
        .map_err(|e| Fatal(format!("{what} {}: cannot read: {e}", path.display())))
}

/// Everything that can go wrong before serving, checked before the server starts.
fn prepare(args: &Args) -> Result<(UaaOptions, Vec<String>, String), Fatal> {
    let file = args.config.display().to_string();
    let text = read_file("--config", &args.config)?;
    let config =
        parse_config(&text).map_err(|e| Fatal(format!("{file}: {}: {}", e.key, e.message)))?;
    let mut notes = config
        .warnings
        .iter()
        .map(|w| format!("{file}: {w}"))
        .collect::<Vec<_>>();
    let (key, key_source) = match (&args.signing_key, config.key) {
        (Some(path), yaml_key) => {
            let pem = read_file("--signing-key", path)?;
            let key = SigningKey::from_pem("key-1", &pem, Algorithm::RS256)
                .map_err(|e| Fatal(format!("--signing-key {}: {e}", path.display())))?;
            if let Some(y) = yaml_key {
                notes.push(format!(
                    "--signing-key {} replaces {file}'s {}",
                    path.display(),
                    y.path
                ));
            }
            (key, format!("{} (--signing-key)", path.display()))
        }
        (None, Some(y)) => (y.key, format!("{file}: {}", y.path)),
        (None, None) => (
            SigningKey::generate("key-1".to_string()),
            "generated at start".to_string(),
        ),
    };
    let tls = match &args.tls {
        None => UaaTls::Off,
        Some((cert, key)) => {
            let cert_pem = std::fs::read(cert)
                .map_err(|e| Fatal(format!("--tls-cert {}: cannot read: {e}", cert.display())))?;
            let key_pem = std::fs::read(key)
                .map_err(|e| Fatal(format!("--tls-key {}: cannot read: {e}", key.display())))?;
            UaaTls::Config(server_tls_from_pem(&cert_pem, &key_pem).map_err(|e| {
                Fatal(format!(
                    "--tls-cert {} / --tls-key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?)
        }
    };
    let mut summary = String::new();
    let kid = key.kid().to_string();
    let ids: Vec<&str> = config.clients.iter().map(|c| c.id.as_str()).collect();
    let _ = write!(
        summary,
        "signing key {kid:?} from {key_source}; clients: {}",
        ids.join(", ")
    );
    let options = UaaOptions {
        listen: Some(args.listen),
        signing_key: Some(key),
        clients: Some(config.clients),
        issuer_uri: config.issuer_uri,
        tls,
        token_ttl: Some(config.token_ttl),
        log_tokens: true,
    };
    Ok((options, notes, summary))
}

/// One line on stdout; a closed stdout is ignored.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One line on stderr; a closed stderr is ignored.
fn complain(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

async fn serve(options: UaaOptions, summary: String) -> Result<(), Fatal> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal that arrives once we said we listen must be ours to handle.
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Fatal(format!("cannot handle SIGTERM: {e}")))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Fatal(format!("cannot handle SIGINT: {e}")))?;
    let tls = !matches!(options.tls, UaaTls::Off);
    let listen = options.listen;
    let uaa = FakeUaa::start_with(options).await.map_err(|e| {
        let at = listen.map(|l| l.to_string()).unwrap_or_default();
        Fatal(format!("--listen {at}: {e}"))
    })?;
    say(&format!(
        "uaa-stand-in: listening on {} ({}); issuer {}; {summary}",
        uaa.addr(),
        if tls { "https" } else { "http" },
        uaa.issuer()
    ));
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    say(&format!("uaa-stand-in: {name} received, exiting"));
    drop(uaa);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            say(USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            complain(&format!("uaa-stand-in: {e}\n{USAGE}"));
            return ExitCode::from(2);
        }
    };
    let (options, notes, summary) = match prepare(&args) {
        Ok(p) => p,
        Err(Fatal(e)) => {
            complain(&format!("uaa-stand-in: {e}"));
            return ExitCode::FAILURE;
        }
    };
    for n in &notes {
        complain(&format!("uaa-stand-in: warning: {n}"));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            complain(&format!("uaa-stand-in: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options, summary)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(e)) => {
            complain(&format!("uaa-stand-in: {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    fn err(text: &str) -> String {
        match parse_config(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => format!("{}: {}", e.key, e.message),
        }
    }

    #[test]
    fn command_line() {
        let a = args(&["--config", "u.yml"]).unwrap().unwrap();
        assert_eq!(a.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(a.tls, None);
        let a = args(&[
            "--config=u.yml",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "c.pem",
            "--tls-key=k.pem",
            "--signing-key",
            "s.pem",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.config, PathBuf::from("u.yml"));
        assert_eq!(a.tls, Some(("c.pem".into(), "k.pem".into())));
        assert_eq!(a.signing_key, Some("s.pem".into()));
        assert!(args(&["--help"]).unwrap().is_none());
        assert!(args(&[]).unwrap_err().contains("--config"));
        assert!(args(&["--config", "u", "--tls-cert", "c"])
            .unwrap_err()
            .contains("--tls-key"));
        assert!(args(&["--config", "u", "--listen", "x"])
            .unwrap_err()
            .contains("--listen"));
        assert!(args(&["--config", "u", "--bogus"])
            .unwrap_err()
            .contains("--bogus"));
        assert!(args(&["--config"]).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn clients_issuer_and_lifetimes() {
        let c = parse_config(
            "spring_profiles: hsqldb\nunknown: {deep: [1, 2]}\nissuer: {uri: 'http://uaa:8080/'}\n\
             jwt: {token: {policy: {global: {accessTokenValiditySeconds: 600}}}}\n\
             oauth:\n  clients:\n    a:\n      authorized-grant-types: client_credentials\n      \
             authorities: ' x.read, x.write,x.read '\n      secret: s\n      access-token-validity: 60\n    \
             b:\n      authorized-grant-types: client_credentials,password\n      scope: y\n      secret: [s1, s2, s3]\n    \
             c:\n      authorized-grant-types: password\n      secret: ''\n",
        )
        .unwrap();
        assert_eq!(c.issuer_uri.as_deref(), Some("http://uaa:8080/"));
        assert_eq!(c.token_ttl, Duration::from_secs(600));
        assert!(c.key.is_none());
        let a = &c.clients[0];
        assert_eq!(a.id, "a");
        assert_eq!(a.authorities, ["x.read", "x.write"]);
        assert_eq!(a.secrets, ["s"]);
        assert_eq!(a.token_ttl, Some(Duration::from_secs(60)));
        assert!(a.client_credentials);
        let b = &c.clients[1];
        assert_eq!(b.authorities, ["uaa.none"]);
        assert_eq!(b.secrets, ["s1", "s2"]);
        assert!(!c.clients[2].client_credentials);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("oauth.clients.b has no authorities"));
        // Nothing at all is a valid (useless) UAA config.
        let c = parse_config("").unwrap();
        assert!(c.clients.is_empty());
        assert_eq!(c.token_ttl, UAA_DEFAULT_TTL);
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(
            err("oauth: {clients: {g: {authorized-grant-types: client_credentials}}}")
                .starts_with("oauth.clients.g.secret: is missing")
        );
        assert!(err(
            "oauth: {clients: {g: {secret: 1234, authorized-grant-types: client_credentials}}}"
        )
        .starts_with("oauth.clients.g.secret: must be a string, not a number"));
        assert!(err("oauth: {clients: {g: {secret: s}}}")
            .starts_with("oauth.clients.g.authorized-grant-types: is missing"));
        assert!(err(
            "oauth: {clients: {g: {secret: s, authorized-grant-types: client_credentials, authorities: [a, b]}}}"
        )
        .starts_with("oauth.clients.g.authorities: must be a string, not a list"));
        assert!(
            err("oauth: {clients: {g: {secret: s, authorized-grant-types: implicit}}}")
                .starts_with("oauth.clients.g.redirect-uri: is missing")
        );
        assert!(err("oauth: {clients: [a, b]}").starts_with("oauth.clients: must be a map"));
        assert!(err("issuer: {uri: 'uaa:8080'}").starts_with("issuer.uri:"));
        assert!(err("jwt: {token: {policy: {activeKeyId: k}}}")
            .starts_with("jwt.token.policy.activeKeyId: \"k\" is not a key"));
        assert!(
            err("jwt: {token: {policy: {keys: {k: {signingKey: nope}}}}}")
                .starts_with("jwt.token.policy.keys.k.signingKey: not a PEM RSA private key")
        );
        assert!(err("jwt: {token: {policy: {keys: {k: {}}}}}")
            .starts_with("jwt.token.policy.keys.k.signingKey: is missing"));
        assert!(
            err("jwt: {token: {policy: {keys: {k: {signingKey: x, signingAlg: HS256}}}}}")
                .starts_with("jwt.token.policy.keys.k.signingAlg: \"HS256\" is not supported")
        );
        assert!(err("oauth: {clients: {g: {secret: s\n").starts_with("(YAML): not valid YAML"));
        assert!(err("- a\n- b\n").starts_with("(document): must be a map"));
    }
}
