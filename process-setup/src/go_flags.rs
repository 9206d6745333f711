//! Command lines the way Go's `flag` package reads them, so that a binary of the tier starts under
//! the exact argument list of its upstream job template.
//!
//! Go's rules, which clap cannot express: `-name` and `--name` are the same flag; a value follows
//! as `-name value` or `-name=value`; a bool flag is `-name` or `-name=false` and never takes the
//! next argument; parsing stops at the first argument that is not a flag (or after `--`). An
//! unknown flag or a bad value prints the error and the usage to stderr and exits 2; `-h`/`-help`
//! prints the usage and exits 0. Values are checked while parsing, as Go does, so a program reads
//! typed values that are already valid.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The kind of value a flag takes, which decides how it is parsed and shown in the usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `strconv.ParseBool`: `1 t T TRUE true True 0 f F FALSE false False`.
    Bool,
    /// Any text.
    String,
    /// `strconv.ParseInt(s, 0, 64)`: decimal, `0x`, `0o`, `0b` or leading-`0` octal.
    Int,
    /// `strconv.ParseUint(s, 0, 64)`.
    Uint,
    /// `time.ParseDuration`: `1m30s`, `250ms`, `0`.
    Duration,
    /// A whole number of seconds, as upstream's int flags for intervals take it; a Go duration
    /// (`100ms`) is accepted too, so tests can ask for sub-second intervals.
    Seconds,
}

/// A parsed, valid flag value.
#[derive(Debug, Clone, PartialEq)]
pub enum FlagValue {
    Bool(bool),
    String(String),
    Int(i64),
    Uint(u64),
    Duration(Duration),
}

/// Whether the program acts on a flag, or accepts it only because upstream's job passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagUse {
    Used,
    /// Accepted so upstream's command line starts the program; logged as not used when set.
    NotUsed,
}

#[derive(Debug, Clone)]
struct FlagSpec {
    kind: FlagKind,
    default: FlagValue,
    /// Set by a validator (e.g. lager's `timeFormat` accepts only two words).
    accepts: Option<&'static [&'static str]>,
    usage: &'static str,
    use_: FlagUse,
}

/// The flags a program defines, with their defaults and usage text.
#[derive(Debug, Clone)]
pub struct FlagSet {
    program: String,
    flags: BTreeMap<&'static str, FlagSpec>,
}

/// Why parsing stopped: print [`FlagError::message`] to stderr (help to stdout) and exit with
/// [`FlagError::exit_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    /// `-h` or `-help`: the usage text; exit 0.
    Help(String),
    /// A bad command line: the error line followed by the usage text; exit 2, as Go's
    /// `flag.ExitOnError`.
    Usage(String),
}

impl FlagError {
    pub fn message(&self) -> &str {
        match self {
            FlagError::Help(m) | FlagError::Usage(m) => m,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            FlagError::Help(_) => 0,
            FlagError::Usage(_) => 2,
        }
    }

    /// Prints the message where Go prints it (stderr for both) and returns the exit code.
    pub fn report(&self) -> std::process::ExitCode {
        eprint!("{}", self.message());
        std::process::ExitCode::from(self.exit_code())
    }
}

/// The values of one command line: every defined flag (its default when not given) and the
/// arguments after the flags.
#[derive(Debug, Clone)]
pub struct ParsedFlags {
    values: BTreeMap<&'static str, FlagValue>,
    given: Vec<&'static str>,
    not_used: Vec<&'static str>,
    /// Arguments after the last flag; Go programs of the tier ignore them.
    pub rest: Vec<String>,
}

impl FlagSet {
    pub fn new(program: impl Into<String>) -> Self {
        FlagSet {
            program: program.into(),
            flags: BTreeMap::new(),
        }
    }

    fn define(
        mut self,
        name: &'static str,
        kind: FlagKind,
        default: FlagValue,
        usage: &'static str,
        use_: FlagUse,
    ) -> Self {
        self.flags.insert(
            name,
            FlagSpec {
                kind,
                default,
                accepts: None,
                usage,
                use_,
            },
        );
        self
    }

    pub fn string(self, name: &'static str, default: &str, usage: &'static str) -> Self {
        let d = FlagValue::String(default.to_owned());
        self.define(name, FlagKind::String, d, usage, FlagUse::Used)
    }

    pub fn bool(self, name: &'static str, default: bool, usage: &'static str) -> Self {
        let d = FlagValue::Bool(default);
        self.define(name, FlagKind::Bool, d, usage, FlagUse::Used)
    }

    pub fn int(self, name: &'static str, default: i64, usage: &'static str) -> Self {
        self.define(
            name,
            FlagKind::Int,
            FlagValue::Int(default),
            usage,
            FlagUse::Used,
        )
    }

    pub fn uint(self, name: &'static str, default: u64, usage: &'static str) -> Self {
        self.define(
            name,
            FlagKind::Uint,
            FlagValue::Uint(default),
            usage,
            FlagUse::Used,
        )
    }

    pub fn duration(self, name: &'static str, default: Duration, usage: &'static str) -> Self {
        let d = FlagValue::Duration(default);
        self.define(name, FlagKind::Duration, d, usage, FlagUse::Used)
    }

    /// See [`FlagKind::Seconds`].
    pub fn seconds(self, name: &'static str, default_secs: u64, usage: &'static str) -> Self {
        let d = FlagValue::Duration(Duration::from_secs(default_secs));
        self.define(name, FlagKind::Seconds, d, usage, FlagUse::Used)
    }

    /// A flag upstream's job passes for something this program does differently (HAProxy
    /// paths, dropsonde): parsed and validated like upstream, logged as not used when given.
    pub fn not_used(
        self,
        name: &'static str,
        kind: FlagKind,
        default: &str,
        usage: &'static str,
    ) -> Self {
        let default = match parse_value(kind, default) {
            Ok(v) => v,
            // A default is program text, not input; fall back to an empty string.
            Err(_) => FlagValue::String(default.to_owned()),
        };
        self.define(name, kind, default, usage, FlagUse::NotUsed)
    }

    /// Lager's flags (`code.cloudfoundry.org/lager/lagerflags`), which every lager-logging
    /// upstream binary defines: `-logLevel`, `-timeFormat`, `-redactSecrets`, `-redactPatterns`.
    pub fn lager_flags(mut self) -> Self {
        self = self
            .string(
                "logLevel",
                "info",
                "log level: debug, info, error or fatal",
            )
            .string(
                "timeFormat",
                "unix-epoch",
                "Format for timestamp in component logs. Valid values are \"unix-epoch\" and \"rfc3339\".",
            )
            .not_used(
                "redactSecrets",
                FlagKind::Bool,
                "false",
                "use a redacting log sink to scrub sensitive values from data being logged",
            )
            .not_used(
                "redactPatterns",
                FlagKind::String,
                "",
                "Regex patterns to use to determine sensitive values for redaction",
            );
        self.restrict("logLevel", &["debug", "info", "error", "fatal"]);
        self.restrict("timeFormat", &["unix-epoch", "0", "rfc3339", "1"]);
        self
    }

    /// The debug server's flag (`code.cloudfoundry.org/debugserver`): `-debugAddr host:port`.
    /// We serve no pprof, so it is accepted and logged as not used.
    pub fn debug_server_flag(self) -> Self {
        self.not_used(
            "debugAddr",
            FlagKind::String,
            "",
            "host:port for serving pprof debugging info",
        )
    }

    fn restrict(&mut self, name: &'static str, accepts: &'static [&'static str]) {
        if let Some(spec) = self.flags.get_mut(name) {
            spec.accepts = Some(accepts);
        }
    }

    /// Go's `flag.PrintDefaults` text, preceded by `Usage of <program>:`.
    pub fn usage(&self) -> String {
        let mut out = format!("Usage of {}:\n", self.program);
        for (name, spec) in &self.flags {
            let type_name = match spec.kind {
                FlagKind::Bool => "",
                FlagKind::String => " string",
                FlagKind::Int => " int",
                FlagKind::Uint => " uint",
                FlagKind::Duration => " duration",
                FlagKind::Seconds => " int",
            };
            let _ = write!(out, "  -{name}{type_name}\n    \t{}", spec.usage);
            let default = match &spec.default {
                FlagValue::Bool(false) => None,
                FlagValue::String(s) if s.is_empty() => None,
                FlagValue::Int(0) | FlagValue::Uint(0) => None,
                FlagValue::Duration(d) if d.is_zero() => None,
                FlagValue::String(s) => Some(format!("{s:?}")),
                FlagValue::Duration(d) if spec.kind == FlagKind::Seconds => {
                    Some(d.as_secs().to_string())
                }
                other => Some(display_value(other)),
            };
            if let Some(d) = default {
                let _ = write!(out, " (default {d})");
            }
            out.push('\n');
        }
        out
    }

    fn fail(&self, message: String) -> FlagError {
        FlagError::Usage(format!("{message}\n{}", self.usage()))
    }

    /// Parses a command line (the program name first, as `std::env::args` gives it).
    pub fn parse(&self, args: impl IntoIterator<Item = String>) -> Result<ParsedFlags, FlagError> {
        let mut args = args.into_iter().skip(1).peekable();
        let mut values: BTreeMap<&'static str, FlagValue> = self
            .flags
            .iter()
            .map(|(name, spec)| (*name, spec.default.clone()))
            .collect();
        let mut given = Vec::new();
        while let Some(arg) = args.peek() {
            let dashes = match arg.as_bytes() {
                [b'-', b'-'] => {
                    args.next();
                    break;
                }
                [b'-', b'-', ..] => 2,
                [b'-', _, ..] => 1,
                _ => break,
            };
            let Some(arg) = args.next() else { break };
            let body = &arg[dashes..];
            if body.starts_with('-') || body.starts_with('=') {
                return Err(self.fail(format!("bad flag syntax: {arg}")));
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (body, None),
            };
            let Some((&key, spec)) = self.flags.get_key_value(name) else {
                if name == "help" || name == "h" {
                    return Err(FlagError::Help(self.usage()));
                }
                return Err(self.fail(format!("flag provided but not defined: -{name}")));
            };
            let value = if spec.kind == FlagKind::Bool {
                let text = inline.unwrap_or_else(|| "true".to_owned());
                parse_value(FlagKind::Bool, &text).map_err(|e| {
                    self.fail(format!("invalid boolean value {text:?} for -{name}: {e}"))
                })?
            } else {
                let text = match inline.or_else(|| args.next()) {
                    Some(t) => t,
                    None => return Err(self.fail(format!("flag needs an argument: -{name}"))),
                };
                let parsed = match spec.accepts {
                    Some(words) if !words.contains(&text.as_str()) => {
                        Err(format!("expected one of {}", words.join(", ")))
                    }
                    _ => parse_value(spec.kind, &text),
                };
                parsed.map_err(|e| {
                    self.fail(format!("invalid value {text:?} for flag -{name}: {e}"))
                })?
            };
            values.insert(key, value);
            if !given.contains(&key) {
                given.push(key);
            }
        }
        let not_used = given
            .iter()
            .copied()
            .filter(|n| {
                self.flags
                    .get(n)
                    .is_some_and(|s| s.use_ == FlagUse::NotUsed)
            })
            .collect();
        Ok(ParsedFlags {
            values,
            given,
            not_used,
            rest: args.collect(),
        })
    }
}

impl ParsedFlags {
    /// A string flag's value (empty when undefined).
    pub fn string(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(FlagValue::String(s)) => s,
            _ => "",
        }
    }

    /// A bool flag's value (false when undefined).
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(FlagValue::Bool(true)))
    }

    /// A duration flag's value (zero when undefined).
    pub fn duration(&self, name: &str) -> Duration {
        match self.values.get(name) {
            Some(FlagValue::Duration(d)) => *d,
            _ => Duration::ZERO,
        }
    }

    /// An int or uint flag's value (zero when undefined; a uint past `i64::MAX` saturates).
    pub fn int(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(FlagValue::Int(i)) => *i,
            Some(FlagValue::Uint(u)) => i64::try_from(*u).unwrap_or(i64::MAX),
            _ => 0,
        }
    }

    /// Sets a string flag that the command line left at its default (e.g. from a config key
    /// that stands in for the flag).
    pub fn default_string(&mut self, name: &str, value: &str) {
        if self.is_set(name) {
            return;
        }
        if let Some(FlagValue::String(s)) = self.values.get_mut(name) {
            *s = value.to_owned();
        }
    }

    /// Whether the command line set this flag (rather than leaving its default).
    pub fn is_set(&self, name: &str) -> bool {
        self.given.contains(&name)
    }

    /// The flags given that this program accepts but does not act on, with their values.
    pub fn not_used(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        self.not_used.iter().map(|n| {
            let v = self.values.get(n).map(display_value).unwrap_or_default();
            (*n, v)
        })
    }

    /// Logs one `flag-not-used` line for each given flag this program does not act on, and one
    /// for arguments after the flags: call once logging is set up.
    pub fn log_not_used(&self) {
        for (flag, value) in self.not_used() {
            tracing::info!(flag = format!("-{flag}"), value, "flag-not-used");
        }
        if !self.rest.is_empty() {
            tracing::info!(args = self.rest.join(" "), "arguments-after-flags-not-used");
        }
    }
}

fn display_value(v: &FlagValue) -> String {
    match v {
        FlagValue::Bool(b) => b.to_string(),
        FlagValue::String(s) => s.clone(),
        FlagValue::Int(i) => i.to_string(),
        FlagValue::Uint(u) => u.to_string(),
        FlagValue::Duration(d) => go_duration_string(*d),
    }
}

/// Go's `time.Duration.String` for the defaults shown in the usage (`1m0s`, `30s`, `500ms`).
fn go_duration_string(d: Duration) -> String {
    let total_ns = d.as_nanos();
    if total_ns == 0 {
        return "0s".into();
    }
    if total_ns < 1_000_000_000 {
        return match total_ns {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let frac = d.subsec_nanos();
    let sec = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{:09}", frac);
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => sec,
        (0, m) => format!("{m}m{sec}"),
        (h, m) => format!("{h}h{m}m{sec}"),
    }
}

/// Parses one value the way Go's flag types do; the error is Go's wording.
fn parse_value(kind: FlagKind, text: &str) -> Result<FlagValue, String> {
    match kind {
        FlagKind::String => Ok(FlagValue::String(text.to_owned())),
        FlagKind::Bool => match text {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(FlagValue::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(FlagValue::Bool(false)),
            _ => Err("parse error".into()),
        },
        FlagKind::Int => {
            let (negative, digits) = match text.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, text.strip_prefix('+').unwrap_or(text)),
            };
            let magnitude = parse_go_uint(digits)?;
            let value = if negative {
                0i64.checked_sub_unsigned(magnitude)
            } else {
                i64::try_from(magnitude).ok()
            };
            value
                .map(FlagValue::Int)
                .ok_or_else(|| "value out of range".into())
        }
        FlagKind::Uint => parse_go_uint(text).map(FlagValue::Uint),
        FlagKind::Duration => yaml_config::parse_go_duration(text)
            .map(FlagValue::Duration)
            .map_err(|_| "parse error".into()),
        FlagKind::Seconds => match parse_go_uint(text) {
            Ok(secs) => Ok(FlagValue::Duration(Duration::from_secs(secs))),
            Err(e) if text.bytes().all(|b| b.is_ascii_digit()) => Err(e),
            Err(_) => parse_value(FlagKind::Duration, text),
        },
    }
}

/// `strconv.ParseUint(s, 0, 64)`: a base prefix picks the base; `_` separates digits only after
/// a prefix.
fn parse_go_uint(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    let digits: String = if prefixed {
        digits.replace('_', "")
    } else {
        digits.to_owned()
    };
    if digits.is_empty() || digits.starts_with('+') {
        return Err("parse error".into());
    }
    u64::from_str_radix(&digits, radix).map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => "value out of range".into(),
        _ => "parse error".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("prog")
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    }

    fn set() -> FlagSet {
        FlagSet::new("prog")
            .string("config", "", "Configuration file")
            .bool("devMode", false, "Disable authentication")
            .duration("syncInterval", Duration::from_secs(60), "sync interval")
            .int("dropsondePort", 3457, "metron port")
            .uint("tokenFetchMaxRetries", 3, "retries")
            .seconds("subscriptionRetryInterval", 5, "retry interval in seconds")
            .lager_flags()
            .debug_server_flag()
    }

    #[test]
    fn single_and_double_dash_with_space_or_equals() {
        let p = set()
            .parse(args(&[
                "-config",
                "a.yml",
                "--logLevel=debug",
                "--timeFormat",
                "rfc3339",
            ]))
            .expect("parses");
        assert_eq!(p.string("config"), "a.yml");
        assert_eq!(p.string("logLevel"), "debug");
        assert_eq!(p.string("timeFormat"), "rfc3339");
        assert!(p.is_set("config") && !p.is_set("devMode"));
    }

    #[test]
    fn bool_flags_never_take_the_next_argument() {
        let p = set().parse(args(&["-devMode", "false"])).expect("parses");
        assert!(p.bool("devMode"));
        assert_eq!(p.rest, vec!["false".to_string()]);
        let p = set()
            .parse(args(&["-devMode=false", "-config=c"]))
            .expect("parses");
        assert!(!p.bool("devMode"));
        assert_eq!(p.string("config"), "c");
        let p = set().parse(args(&["--devMode=T"])).expect("parses");
        assert!(p.bool("devMode"));
    }

    #[test]
    fn defaults_apply_to_flags_not_given() {
        let p = set().parse(args(&[])).expect("parses");
        assert_eq!(p.duration("syncInterval"), Duration::from_secs(60));
        assert_eq!(p.int("dropsondePort"), 3457);
        assert_eq!(p.string("logLevel"), "info");
        assert_eq!(p.string("timeFormat"), "unix-epoch");
    }

    #[test]
    fn typed_values_follow_go_syntax() {
        let p = set()
            .parse(args(&[
                "-syncInterval=1m30s",
                "-dropsondePort",
                "0x10",
                "-tokenFetchMaxRetries=010",
            ]))
            .expect("parses");
        assert_eq!(p.duration("syncInterval"), Duration::from_secs(90));
        assert_eq!(p.int("dropsondePort"), 16);
        assert_eq!(p.int("tokenFetchMaxRetries"), 8);
        let p = set()
            .parse(args(&["-subscriptionRetryInterval=2"]))
            .expect("parses");
        assert_eq!(
            p.duration("subscriptionRetryInterval"),
            Duration::from_secs(2)
        );
        let p = set()
            .parse(args(&["-subscriptionRetryInterval", "100ms"]))
            .expect("parses");
        assert_eq!(
            p.duration("subscriptionRetryInterval"),
            Duration::from_millis(100)
        );
        assert!(set()
            .parse(args(&["-subscriptionRetryInterval=soon"]))
            .is_err());
        let p = set().parse(args(&["-dropsondePort=-5"])).expect("parses");
        assert_eq!(p.int("dropsondePort"), -5);
    }

    #[test]
    fn unknown_flag_is_a_usage_error_with_exit_2() {
        let e = set().parse(args(&["-nope"])).expect_err("fails");
        assert_eq!(e.exit_code(), 2);
        assert!(e
            .message()
            .starts_with("flag provided but not defined: -nope\nUsage of prog:\n"));
        assert!(e
            .message()
            .contains("  -config string\n    \tConfiguration file\n"));
        assert!(e.message().contains("(default \"info\")"));
        assert!(e
            .message()
            .contains("  -syncInterval duration\n    \tsync interval (default 1m0s)\n"));
    }

    #[test]
    fn bad_values_name_the_flag_like_go() {
        let e = set()
            .parse(args(&["-syncInterval", "soon"]))
            .expect_err("fails");
        assert!(e
            .message()
            .starts_with("invalid value \"soon\" for flag -syncInterval: parse error\n"));
        let e = set().parse(args(&["-devMode=maybe"])).expect_err("fails");
        assert!(e
            .message()
            .starts_with("invalid boolean value \"maybe\" for -devMode: parse error\n"));
        let e = set()
            .parse(args(&["-dropsondePort=99999999999999999999"]))
            .expect_err("fails");
        assert!(e.message().contains("value out of range"));
        let e = set()
            .parse(args(&["-timeFormat", "iso"]))
            .expect_err("fails");
        assert!(e
            .message()
            .starts_with("invalid value \"iso\" for flag -timeFormat:"));
        let e = set().parse(args(&["-config"])).expect_err("fails");
        assert!(e.message().starts_with("flag needs an argument: -config\n"));
        let e = set().parse(args(&["---config"])).expect_err("fails");
        assert!(e.message().starts_with("bad flag syntax: ---config\n"));
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn help_exits_zero_with_the_usage() {
        for h in ["-h", "--help", "-help"] {
            let e = set().parse(args(&[h])).expect_err("help");
            assert_eq!(e.exit_code(), 0);
            assert!(e.message().starts_with("Usage of prog:\n"));
        }
    }

    #[test]
    fn parsing_stops_at_the_first_non_flag_or_double_dash() {
        let p = set()
            .parse(args(&["-config", "c", "extra", "-devMode"]))
            .expect("parses");
        assert!(!p.bool("devMode"));
        assert_eq!(p.rest, vec!["extra".to_string(), "-devMode".to_string()]);
        let p = set().parse(args(&["--", "-devMode"])).expect("parses");
        assert!(!p.bool("devMode"));
        assert_eq!(p.rest, vec!["-devMode".to_string()]);
        let p = set().parse(args(&["-", "-devMode"])).expect("parses");
        assert_eq!(p.rest.len(), 2);
    }

    #[test]
    fn not_used_flags_are_reported_only_when_given() {
        let p = set()
            .parse(args(&["-debugAddr=127.0.0.1:17002", "-config", "c"]))
            .expect("parses");
        let unused: Vec<_> = p.not_used().collect();
        assert_eq!(unused, vec![("debugAddr", "127.0.0.1:17002".to_string())]);
        assert_eq!(
            set().parse(args(&[])).expect("parses").not_used().count(),
            0
        );
    }

    #[test]
    fn the_last_occurrence_of_a_flag_wins() {
        let p = set()
            .parse(args(&["-config", "a", "-config", "b"]))
            .expect("parses");
        assert_eq!(p.string("config"), "b");
    }
}
