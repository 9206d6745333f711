//! The command line, parsed by hand: `up`, `--data-dir DIR` (default `.routing-tier`),
//! `--nats URL`, `--no-nats`, `--port-base N` and `--help`. A usage error exits 2.

use std::path::PathBuf;

/// The usage text (`--port-base` is for tests and documented in the README, not here).
pub const USAGE: &str = "\
usage: routing-tier up [--data-dir DIR] [--nats URL | --no-nats]

Runs the routing tier (routing-api, gorouter, tcp-router, route-emitter) and a demo app
routed at demo.localhost, with configs and logs in the data dir. Ctrl-C stops everything.

  --data-dir DIR  configs, routes.d/, logs/, tls/ and the SQLite file (default .routing-tier)
  --nats URL      send HTTP routes over this NATS (default: nats://127.0.0.1:4222 if a NATS
                  server answers there, otherwise through the Routing API)
  --no-nats       route through the Routing API even when NATS is running
  --help          this text
";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Up(UpOptions),
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

/// A bad command line; the message is printed before the usage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let mut command = None;
    let mut opts = UpOptions {
        data_dir: PathBuf::from(".routing-tier"),
        nats: None,
        no_nats: false,
        port_base: None,
    };
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
        match flag.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--data-dir" => opts.data_dir = PathBuf::from(value("--data-dir")?),
            "--nats" => opts.nats = Some(value("--nats")?),
            "--no-nats" if inline.is_none() => opts.no_nats = true,
            "--port-base" => {
                let v = value("--port-base")?;
                let n = v
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| UsageError(format!("--port-base {v:?} is not a port")))?;
                opts.port_base = Some(n);
            }
            "up" if command.is_none() => command = Some("up"),
            other if other.starts_with('-') => {
                return Err(UsageError(format!("unknown flag {other}")))
            }
            other => return Err(UsageError(format!("unknown command {other:?}"))),
        }
    }
    if opts.no_nats && opts.nats.is_some() {
        return Err(UsageError("--nats and --no-nats exclude each other".into()));
    }
    match command {
        Some(_) => Ok(Command::Up(opts)),
        None => Err(UsageError("no command given".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(|s| s.to_string()))
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
    }
}
