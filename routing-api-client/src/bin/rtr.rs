//! `rtr`: the Routing API command-line client (../shared/spec/rtr-cli.md), compatible with
//! upstream's routing-api-cli.
//!
//! ```text
//! rtr [-k] register   --api URL --client-id ID --client-secret S --oauth-url URL [--ca-certs F] '<routes json>'
//! rtr [-k] unregister ... '<routes json>'
//! rtr [-k] list       ...
//! rtr [-k] events     ... [--http] [--tcp]
//! ```
//!
//! Behaviour, as upstream's unless noted:
//! - Output goes to stdout: `Successfully registered routes: <json as given>`,
//!   `Successfully unregistered routes: <json as given>`, the compact JSON array for `list`, and
//!   for `events` one `{"Route":…,"Action":"Upsert"}` / `{"TcpRouteMapping":…,"Action":…}` per
//!   event followed by an empty line, then `Connection closed: <reason>` (`EOF` when the server
//!   ended the stream) once per stream. JSON is escaped as Go's `json.Marshal` does (`<`, `>`,
//!   `&`, U+2028, U+2029 as `\uXXXX`).
//! - Missing flags or arguments: the list of problems (upstream's wording), an empty line, the
//!   command's help, exit 1. Unknown command: `Not a valid command: <name>`, exit 1.
//! - Failures after that: `<command> failed: <error>` (e.g. `route registration failed: …`),
//!   exit 3.
//! - `RTR_TRACE=true` dumps every HTTP request and response (UAA and Routing API) to stdout,
//!   with the Authorization header, the client secret and tokens hidden.
//! - Flags may be written Go-style with one dash (`-api URL`), as upstream accepted.
//!
//! Differences from upstream, chosen for a drop-in replacement:
//! - `--oauth-url`, `--client-id` and `--client-secret` stay required (with upstream's
//!   messages), but the extra switch `--no-auth` waives them and sends no token, for a Routing
//!   API running with auth disabled (`-devMode`).
//! - `--ca-certs` is trusted for the Routing API too (on top of the system CAs); for UAA it is
//!   the only trusted CA, as upstream. `-k` skips verification for both.
//! - No leading empty line before the output, and `Connection closed: …` ends with a newline.
//! - An event that cannot be decoded (unknown name, bad JSON) is reported on stderr and the
//!   stream goes on; upstream treated it as the end of the stream.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};
use routing_api_client::{
    ClientConfig, Event, EventStream, HttpRoute, RoutingApiClient, TcpRouteMapping, TlsOptions,
    TokenFetcher, TraceFn, UaaConfig,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

const ENV_HELP: &str =
    "ENVIRONMENT VARIABLES:\n   RTR_TRACE=true\tPrint API request diagnostics to stdout";

const REGISTER_HELP: &str = "Routes must be specified in JSON format, like so:\n'[{\"route\":\"foo.com\", \"port\":12345, \"ip\":\"1.2.3.4\", \"ttl\":5, \"log_guid\":\"log-guid\"}]'";

const UNREGISTER_HELP: &str = "Routes must be specified in JSON format, like so:\n'[{\"route\":\"foo.com\", \"port\":12345, \"ip\":\"1.2.3.4\"}]'";

#[derive(Parser, Debug)]
#[command(
    name = "rtr",
    about = "A CLI for the Router API server.",
    version,
    after_help = ENV_HELP,
    disable_help_subcommand = true
)]
struct Cli {
    /// Skip TLS verification of UAA and the Routing API (optional)
    #[arg(short = 'k', long = "skip-tls-verification", global = true)]
    skip_tls_verification: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
struct ApiFlags {
    /// Endpoint for the routing-api. (required)
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Id of the OAuth client. (required)
    #[arg(long = "client-id", value_name = "ID")]
    client_id: Option<String>,
    /// Secret for OAuth client. (required)
    #[arg(long = "client-secret", value_name = "SECRET")]
    client_secret: Option<String>,
    /// URL for OAuth client. (required)
    #[arg(long = "oauth-url", value_name = "URL")]
    oauth_url: Option<String>,
    /// CA for UAA client, also trusted for the routing-api (optional)
    #[arg(long = "ca-certs", value_name = "FILE")]
    ca_certs: Option<PathBuf>,
    /// Send no token: for a routing-api with auth disabled (waives --client-id,
    /// --client-secret and --oauth-url)
    #[arg(long = "no-auth")]
    no_auth: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Registers routes with the routing-api
    #[command(after_help = REGISTER_HELP)]
    Register {
        #[command(flatten)]
        flags: ApiFlags,
        /// The routes, as a JSON array
        #[arg(value_name = "ROUTES_JSON")]
        args: Vec<String>,
    },
    /// Unregisters routes with the routing-api
    #[command(after_help = UNREGISTER_HELP)]
    Unregister {
        #[command(flatten)]
        flags: ApiFlags,
        /// The routes, as a JSON array
        #[arg(value_name = "ROUTES_JSON")]
        args: Vec<String>,
    },
    /// Lists the currently registered routes
    List {
        #[command(flatten)]
        flags: ApiFlags,
        #[arg(hide = true)]
        args: Vec<String>,
    },
    /// Stream events from the Routing API
    Events {
        #[command(flatten)]
        flags: ApiFlags,
        /// Stream HTTP events
        #[arg(long)]
        http: bool,
        /// Stream TCP events
        #[arg(long)]
        tcp: bool,
        #[arg(hide = true)]
        args: Vec<String>,
    },
}

/// Long flag names that upstream (Go's flag package) also accepted with a single dash.
const LONG_FLAGS: &[&str] = &[
    "api",
    "client-id",
    "client-secret",
    "oauth-url",
    "ca-certs",
    "skip-tls-verification",
    "http",
    "tcp",
    "no-auth",
    "help",
    "version",
];

/// Rewrites `-api x` / `-api=x` to `--api x` / `--api=x` (up to a `--` separator).
fn go_style_flags(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for arg in args {
        if arg == "--" {
            passthrough = true;
        }
        if !passthrough && arg.starts_with('-') && !arg.starts_with("--") {
            let name = arg[1..].split('=').next().unwrap_or_default();
            if LONG_FLAGS.contains(&name) {
                out.push(format!("-{arg}"));
                continue;
            }
        }
        out.push(arg);
    }
    out
}

/// Writes to stdout; false once stdout is gone (e.g. a closed pipe).
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

/// Escapes like Go's `json.Marshal`. These characters only occur inside JSON strings, where
/// `\uXXXX` means the same.
fn go_json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string(value)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

/// The usage problems of a command line, in upstream's words.
fn issues(flags: &ApiFlags, args: &[String], takes_json: bool) -> Vec<&'static str> {
    let mut issues = Vec::new();
    let missing = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if missing(&flags.api) {
        issues.push("Must provide an API endpoint for the routing-api component.");
    }
    if !flags.no_auth {
        if missing(&flags.client_id) {
            issues.push("Must provide the id of an OAuth client.");
        }
        if missing(&flags.client_secret) {
            issues.push("Must provide an OAuth secret.");
        }
        if missing(&flags.oauth_url) {
            issues.push("Must provide an URL to the OAuth client.");
        }
    }
    match (takes_json, args.len()) {
        (true, 0) => issues.push("Must provide routes JSON."),
        (true, 1) | (false, 0) => {}
        _ => issues.push("Unexpected arguments."),
    }
    issues
}

fn usage_failure(issues: &[&str], command: &str) -> ExitCode {
    let mut text = String::new();
    for issue in issues {
        text.push_str(issue);
        text.push('\n');
    }
    text.push('\n');
    let mut cli = Cli::command();
    cli.build();
    if let Some(sub) = cli.find_subcommand_mut(command) {
        text.push_str(&sub.render_help().to_string());
    }
    emit(&text);
    ExitCode::from(1)
}

fn failure(what: &str, err: impl std::fmt::Display) -> ExitCode {
    emit(&format!("{what} failed: {err}\n"));
    ExitCode::from(3)
}

fn trace_fn() -> Option<TraceFn> {
    let on = std::env::var("RTR_TRACE").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    on.then(|| -> TraceFn {
        Arc::new(|text: &str| {
            emit(&format!("{text}\n"));
        })
    })
}

fn build_client(flags: &ApiFlags, skip_tls: bool) -> Result<RoutingApiClient, String> {
    let trace = trace_fn();
    let tokens = if flags.no_auth {
        None
    } else {
        let mut uaa = UaaConfig::new(
            flags.oauth_url.clone().unwrap_or_default(),
            flags.client_id.clone().unwrap_or_default(),
            flags.client_secret.clone().unwrap_or_default(),
        );
        uaa.tls = TlsOptions {
            ca_file: flags.ca_certs.clone(),
            skip_verification: skip_tls,
            ..TlsOptions::default()
        };
        uaa.max_retries = 0;
        let mut fetcher = TokenFetcher::new(uaa).map_err(|e| e.to_string())?;
        if let Some(t) = &trace {
            fetcher = fetcher.with_trace(t.clone());
        }
        Some(Arc::new(fetcher))
    };
    let mut config = ClientConfig::new(flags.api.clone().unwrap_or_default());
    config.tls = TlsOptions {
        ca_file: flags.ca_certs.clone(),
        system_roots: true,
        skip_verification: skip_tls,
        ..TlsOptions::default()
    };
    config.timeout = Duration::from_secs(30);
    let mut client = RoutingApiClient::new(config, tokens).map_err(|e| e.to_string())?;
    if let Some(t) = trace {
        client = client.with_trace(t);
    }
    Ok(client)
}

/// Parses the routes argument; upstream's message for truncated JSON.
fn parse_routes(json: &str) -> Result<Vec<HttpRoute>, String> {
    serde_json::from_str(json).map_err(|e| {
        if e.is_eof() {
            "unexpected end of JSON input".to_string()
        } else {
            e.to_string()
        }
    })
}

async fn register(flags: ApiFlags, json: &str, skip_tls: bool, delete: bool) -> ExitCode {
    let what = if delete {
        "route unregistration"
    } else {
        "route registration"
    };
    let routes = match parse_routes(json) {
        Ok(r) => r,
        Err(e) => return failure(what, e),
    };
    let client = match build_client(&flags, skip_tls) {
        Ok(c) => c,
        Err(e) => return failure(what, e),
    };
    let result = if delete {
        client.delete_routes(&routes).await
    } else {
        client.upsert_routes(&routes).await
    };
    match result {
        Ok(()) if delete => {
            emit(&format!("Successfully unregistered routes: {json}\n"));
            ExitCode::SUCCESS
        }
        Ok(()) => {
            emit(&format!("Successfully registered routes: {json}\n"));
            ExitCode::SUCCESS
        }
        Err(e) => failure(what, e),
    }
}

async fn list(flags: ApiFlags, skip_tls: bool) -> ExitCode {
    let client = match build_client(&flags, skip_tls) {
        Ok(c) => c,
        Err(e) => return failure("listing routes", e),
    };
    match client.routes().await {
        Ok(routes) => match go_json(&routes) {
            Ok(json) => {
                emit(&format!("{json}\n"));
                ExitCode::SUCCESS
            }
            Err(e) => failure("listing routes", e),
        },
        Err(e) => failure("listing routes", e),
    }
}

#[derive(Serialize)]
struct HttpEventJson<'a> {
    #[serde(rename = "Route")]
    route: &'a HttpRoute,
    #[serde(rename = "Action")]
    action: &'static str,
}

#[derive(Serialize)]
struct TcpEventJson<'a> {
    #[serde(rename = "TcpRouteMapping")]
    route: &'a TcpRouteMapping,
    #[serde(rename = "Action")]
    action: &'static str,
}

enum Line {
    Event(String),
    Skipped(String),
    Closed(String),
}

fn pump<T, F>(
    mut stream: EventStream<T>,
    tx: tokio::sync::mpsc::UnboundedSender<Line>,
    render: F,
) -> tokio::task::JoinHandle<()>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(&Event<T>) -> Result<String, serde_json::Error> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let line = match stream.next().await {
                None => Line::Closed("EOF".into()),
                Some(Ok(event)) => match render(&event) {
                    Ok(json) => Line::Event(json),
                    Err(e) => Line::Skipped(e.to_string()),
                },
                Some(Err(e)) if e.is_fatal() => Line::Closed(e.to_string()),
                Some(Err(e)) => Line::Skipped(e.to_string()),
            };
            let closed = matches!(line, Line::Closed(_));
            if tx.send(line).is_err() || closed {
                return;
            }
        }
    })
}

async fn events(flags: ApiFlags, mut http: bool, mut tcp: bool, skip_tls: bool) -> ExitCode {
    const WHAT: &str = "streaming events";
    if !http && !tcp {
        http = true;
        tcp = true;
    }
    let client = match build_client(&flags, skip_tls) {
        Ok(c) => c,
        Err(e) => return failure(WHAT, e),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut streams = 0;
    if http {
        match client.subscribe_http_events().await {
            Ok(s) => {
                streams += 1;
                pump(s, tx.clone(), |e: &Event<HttpRoute>| {
                    go_json(&HttpEventJson {
                        route: &e.route,
                        action: e.action.as_str(),
                    })
                });
            }
            Err(e) => return failure(WHAT, e),
        }
    }
    if tcp {
        match client.subscribe_tcp_events().await {
            Ok(s) => {
                streams += 1;
                pump(s, tx.clone(), |e: &Event<TcpRouteMapping>| {
                    go_json(&TcpEventJson {
                        route: &e.route,
                        action: e.action.as_str(),
                    })
                });
            }
            Err(e) => return failure(WHAT, e),
        }
    }
    drop(tx);
    let mut closed = 0;
    while closed < streams {
        let Some(line) = rx.recv().await else { break };
        let ok = match line {
            Line::Event(json) => emit(&format!("{json}\n\n")),
            Line::Skipped(err) => {
                eprintln!("Skipped event: {err}");
                true
            }
            Line::Closed(reason) => {
                closed += 1;
                emit(&format!("Connection closed: {reason}\n"))
            }
        };
        if !ok {
            break;
        }
    }
    ExitCode::SUCCESS
}

fn parse_cli() -> Result<Cli, ExitCode> {
    let args = go_style_flags(std::env::args());
    Cli::try_parse_from(args).map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            emit(&e.to_string());
            ExitCode::SUCCESS
        }
        ErrorKind::InvalidSubcommand => {
            let name = match e.get(ContextKind::InvalidSubcommand) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => String::new(),
            };
            emit(&format!("Not a valid command: {name}\n"));
            ExitCode::from(1)
        }
        _ => {
            emit(&e.render().to_string());
            ExitCode::from(1)
        }
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let skip_tls = cli.skip_tls_verification;
    match cli.command {
        None => {
            emit(&format!("{}\n", Cli::command().render_help()));
            ExitCode::SUCCESS
        }
        Some(Command::Register { flags, args }) => {
            let problems = issues(&flags, &args, true);
            if !problems.is_empty() {
                return usage_failure(&problems, "register");
            }
            register(flags, &args[0], skip_tls, false).await
        }
        Some(Command::Unregister { flags, args }) => {
            let problems = issues(&flags, &args, true);
            if !problems.is_empty() {
                return usage_failure(&problems, "unregister");
            }
            register(flags, &args[0], skip_tls, true).await
        }
        Some(Command::List { flags, args }) => {
            let problems = issues(&flags, &args, false);
            if !problems.is_empty() {
                return usage_failure(&problems, "list");
            }
            list(flags, skip_tls).await
        }
        Some(Command::Events {
            flags,
            http,
            tcp,
            args,
        }) => {
            let problems = issues(&flags, &args, false);
            if !problems.is_empty() {
                return usage_failure(&problems, "events");
            }
            events(flags, http, tcp, skip_tls).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_style_flags_are_rewritten() {
        assert_eq!(
            go_style_flags(strings(&[
                "rtr",
                "list",
                "-api",
                "http://x",
                "-client-id=a",
                "-k",
                "--tcp",
                "-x",
                "[]"
            ])),
            strings(&[
                "rtr",
                "list",
                "--api",
                "http://x",
                "--client-id=a",
                "-k",
                "--tcp",
                "-x",
                "[]"
            ])
        );
        assert_eq!(
            go_style_flags(strings(&["rtr", "--", "-api"])),
            strings(&["rtr", "--", "-api"])
        );
    }

    #[test]
    fn go_json_escapes_html() {
        let r = HttpRoute {
            route: "a.com/<x>".into(),
            route_service_url: "https://rs.example.com/?a=1&b=2".into(),
            ..HttpRoute::default()
        };
        let json = go_json(&r).unwrap();
        assert!(json.contains(r#""a.com/\u003cx\u003e""#), "{json}");
        assert!(json.contains(r#"?a=1\u0026b=2""#), "{json}");
        let back: HttpRoute = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn event_json_matches_upstream_shape() {
        let route = HttpRoute {
            route: "z.a.k".into(),
            port: 63,
            ip: "42.42.42.42".into(),
            ttl: Some(1),
            log_guid: "Tomato".into(),
            ..HttpRoute::default()
        };
        let json = go_json(&HttpEventJson {
            route: &route,
            action: "Delete",
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"Route":{"route":"z.a.k","port":63,"ip":"42.42.42.42","ttl":1,"log_guid":"Tomato","modification_tag":{"guid":"","index":0}},"Action":"Delete"}"#
        );
    }

    #[test]
    fn usage_issues() {
        let none = ApiFlags {
            api: None,
            client_id: None,
            client_secret: None,
            oauth_url: None,
            ca_certs: None,
            no_auth: false,
        };
        assert_eq!(
            issues(&none, &[], true),
            [
                "Must provide an API endpoint for the routing-api component.",
                "Must provide the id of an OAuth client.",
                "Must provide an OAuth secret.",
                "Must provide an URL to the OAuth client.",
                "Must provide routes JSON.",
            ]
        );
        let no_auth = ApiFlags {
            api: Some("http://x".into()),
            no_auth: true,
            ..none.clone()
        };
        assert!(issues(&no_auth, &[], false).is_empty());
        assert_eq!(
            issues(&no_auth, &strings(&["a", "b"]), true),
            ["Unexpected arguments."]
        );
        assert_eq!(
            issues(&no_auth, &strings(&["a"]), false),
            ["Unexpected arguments."]
        );
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn truncated_json_message() {
        assert_eq!(
            parse_routes(r#"[{"kind":"of","valid":"json}]"#).unwrap_err(),
            "unexpected end of JSON input"
        );
        assert_eq!(parse_routes("[{}]").unwrap().len(), 1);
    }
}
