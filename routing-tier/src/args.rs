//! The command line, parsed by hand: `up` with `--data-dir DIR` (default `.routing-tier`),
//! `--nats URL`, `--no-nats` and `--port-base N`; `certs` with `--out DIR` (required),
//! `--san NAME` (repeatable) and `--force`; `demo-app` with `--listen ADDR`; and `--help`.
//! A usage error exits 2.

use std::path::PathBuf;

/// The usage text (`--port-base` is for tests and documented in the README, not here).
pub const USAGE: &str = "\
usage: routing-tier up [--data-dir DIR] [--nats URL | --no-nats]
       routing-tier certs --out DIR [--san NAME]... [--force]
       routing-tier demo-app --listen ADDR

up: runs the routing tier (routing-api, gorouter, tcp-router, route-emitter) and a demo app
routed at demo.localhost, with configs and logs in the data dir. Ctrl-C stops everything.

  --data-dir DIR  configs, routes.d/, logs/, tls/ and the SQLite file (default .routing-tier)
  --nats URL      send HTTP routes over this NATS (default: nats://127.0.0.1:4222 if a NATS
                  server answers there, otherwise through the Routing API)
  --no-nats       route through the Routing API even when NATS is running

certs: writes the CA, server and client certificates and keys a docker-compose stack of the
tier needs (routing-api mTLS, Locket, gorouter, NATS, UAA and UAA's token signing key) into
DIR. A complete set already there is kept.

  --out DIR       where to write them (created if missing)
  --san NAME      one more DNS name or IP address for every server certificate (repeatable;
                  each already names its service, localhost, 127.0.0.1 and ::1)
  --force         replace existing files with a new set (a new CA too)

demo-app: serves the demo app alone (HTTP/1.1, every request answered 200 with the demo
text), as the docker-compose stack runs it. SIGINT/SIGTERM stop it.

  --listen ADDR   the address to listen on, e.g. 0.0.0.0:8080

  --help          this text
";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Up(UpOptions),
    Certs(CertsOptions),
    /// `demo-app --listen ADDR`.
    DemoApp {
        listen: std::net::SocketAddr,
    },
}

/// `up`'s options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    /// `--nats URL`.
    pub nats: Option<String>,
    /// `--no-nats`.
    pub no_nats: bool,
    /// `--port-base N`.
    pub port_base: Option<u16>,
}

/// `certs`' options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertsOptions {
    /// `--out DIR`.
    pub out: PathBuf,
    /// Every `--san NAME`, in order.
    pub sans: Vec<String>,
    /// `--force`.
    pub force: bool,
}

/// A bad command line; the message is printed before the usage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Which command a flag belongs to.
fn flag_command(flag: &str) -> Option<&'static str> {
    match flag {
        "--data-dir" | "--nats" | "--no-nats" | "--port-base" => Some("up"),
        "--out" | "--san" | "--force" => Some("certs"),
        "--listen" => Some("demo-app"),
        _ => None,
    }
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let mut command: Option<&'static str> = None;
    // Flags in the order given, to reject one given to the other command.
    let mut flags: Vec<String> = Vec::new();
    let mut up = UpOptions {
        data_dir: PathBuf::from(".routing-tier"),
        nats: None,
        no_nats: false,
        port_base: None,
    };
    let mut out: Option<PathBuf> = None;
    let mut sans = Vec::new();
    let mut force = false;
    let mut listen: Option<std::net::SocketAddr> = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, UsageError> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(UsageError(format!("{name} needs a value"))),
            }
        };
        if flag_command(&flag).is_some() {
            flags.push(flag.clone());
        }
        match flag.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--data-dir" => up.data_dir = PathBuf::from(value("--data-dir")?),
            "--nats" => up.nats = Some(value("--nats")?),
            "--no-nats" if inline.is_none() => up.no_nats = true,
            "--port-base" => {
                let v = value("--port-base")?;
                let n = v
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| UsageError(format!("--port-base {v:?} is not a port")))?;
                up.port_base = Some(n);
            }
            "--out" => {
                let v = value("--out")?;
                if v.is_empty() {
                    return Err(UsageError("--out needs a directory".into()));
                }
                out = Some(PathBuf::from(v));
            }
            "--san" => {
                let v = value("--san")?;
                crate::pki::check_san(&v).map_err(UsageError)?;
                sans.push(v);
            }
            "--force" if inline.is_none() => force = true,
            "--listen" => {
                let v = value("--listen")?;
                listen = Some(v.parse().map_err(|_| {
                    UsageError(format!(
                        "--listen {v:?} is not an IP address and port (e.g. 0.0.0.0:8080)"
                    ))
                })?);
            }
            "up" if command.is_none() => command = Some("up"),
            "certs" if command.is_none() => command = Some("certs"),
            "demo-app" if command.is_none() => command = Some("demo-app"),
            other if other.starts_with('-') => {
                return Err(UsageError(format!("unknown flag {other}")))
            }
            other => return Err(UsageError(format!("unknown command {other:?}"))),
        }
    }
    let Some(command) = command else {
        return Err(UsageError(
            "no command given (up, certs or demo-app)".into(),
        ));
    };
    if let Some(f) = flags.iter().find(|f| flag_command(f) != Some(command)) {
        let owner = flag_command(f).unwrap_or("another command");
        return Err(UsageError(format!(
            "{f} is an option of `{owner}`, not of `{command}`"
        )));
    }
    match command {
        "certs" => {
            let out = out.ok_or_else(|| {
                UsageError("certs needs --out DIR (where to write the files)".into())
            })?;
            Ok(Command::Certs(CertsOptions { out, sans, force }))
        }
        "demo-app" => {
            let listen = listen.ok_or_else(|| {
                UsageError("demo-app needs --listen ADDR (e.g. 0.0.0.0:8080)".into())
            })?;
            Ok(Command::DemoApp { listen })
        }
        _ => {
            if up.no_nats && up.nats.is_some() {
                return Err(UsageError("--nats and --no-nats exclude each other".into()));
            }
            Ok(Command::Up(up))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn demo_app_needs_a_listen_address() {
        assert_eq!(
            p(&["demo-app", "--listen", "0.0.0.0:8080"]),
            Ok(Command::DemoApp {
                listen: "0.0.0.0:8080".parse().expect("addr")
            })
        );
        assert!(p(&["demo-app"]).is_err());
        assert!(p(&["demo-app", "--listen", "localhost"]).is_err());
        assert!(p(&["up", "--listen", "0.0.0.0:8080"]).is_err());
    }

    #[test]
    fn up_with_defaults_and_flags() {
        let Ok(Command::Up(o)) = p(&["up"]) else {
            panic!("not up")
        };
        assert_eq!(o.data_dir, PathBuf::from(".routing-tier"));
        assert_eq!((o.nats, o.no_nats, o.port_base), (None, false, None));
        let Ok(Command::Up(o)) = p(&[
            "up",
            "--data-dir",
            "/tmp/x",
            "--nats=nats://h:1",
            "--port-base",
            "20000",
        ]) else {
            panic!("not up")
        };
        assert_eq!(o.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(o.nats.as_deref(), Some("nats://h:1"));
        assert_eq!(o.port_base, Some(20000));
    }

    #[test]
    fn usage_errors() {
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert!(p(&[]).is_err());
        assert!(p(&["down"]).is_err());
        assert!(p(&["up", "--bogus"]).is_err());
        assert!(p(&["up", "--data-dir"]).is_err());
        assert!(p(&["up", "--port-base", "x"]).is_err());
        assert!(p(&["up", "--nats", "nats://a:1", "--no-nats"]).is_err());
        assert!(p(&["up", "--force"]).is_err());
        assert!(p(&["certs", "--data-dir", "x", "--out", "y"]).is_err());
        assert!(p(&["certs"]).is_err());
        assert!(p(&["certs", "--out"]).is_err());
        assert!(p(&["certs", "--out", "d", "--san", "not a name"]).is_err());
        assert!(p(&["certs", "--out", "d", "--force=yes"]).is_err());
        assert!(p(&["up", "certs"]).is_err());
    }

    #[test]
    fn certs_with_sans_and_force() {
        assert_eq!(
            p(&["certs", "--out", "pki"]),
            Ok(Command::Certs(CertsOptions {
                out: PathBuf::from("pki"),
                sans: vec![],
                force: false
            }))
        );
        assert_eq!(
            p(&[
                "certs",
                "--san",
                "tier.example.com",
                "--out=/tmp/pki",
                "--san=10.0.0.7",
                "--force"
            ]),
            Ok(Command::Certs(CertsOptions {
                out: PathBuf::from("/tmp/pki"),
                sans: vec!["tier.example.com".into(), "10.0.0.7".into()],
                force: true
            }))
        );
    }
}
