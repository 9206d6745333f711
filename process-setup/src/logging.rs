//! Log lines in upstream's JSON formats on stdout, so that operators' alerts, log parsers and
//! upstream's own test suites read ours unchanged.
//!
//! Two formats, as upstream's binaries write them:
//! - lager (routing-api, tcp-router, locket, route-registrar): `-timeFormat unix-epoch` gives
//!   `{"timestamp":"1700000000.123456789","source":"routing-api","message":"routing-api.started","log_level":1,"data":{…}}`,
//!   `rfc3339` gives `{"timestamp":"2023-11-14T22:13:20.123456789Z","level":"info","source":…,"message":…,"data":{…}}`.
//!   Levels: debug 0, info 1, error 2, fatal 3; a warning is logged at info (lager has none).
//! - zap (gorouter): `{"log_level":1,"timestamp":1700000000.1234567,"message":"gorouter.started","source":"gorouter.stdout","data":{…}}`,
//!   the timestamp a number of seconds, or `"2023-11-14T22:13:20.123456789Z"` with `rfc3339`.
//!   Levels: debug 0, info 1, warn 2, error 3.
//!
//! A tracing event's message is the logged message as it stands (events are named the way
//! upstream names them, `routing-api.started`); its fields are the `data` object.
//!
//! When stdout is closed (the reader went away), the process ends the way a Go program does on a
//! broken pipe: killed by SIGPIPE. A router that can no longer log must not carry on unseen.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer;

/// Whose line layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `code.cloudfoundry.org/lager` (every binary but gorouter).
    Lager,
    /// gorouter's zap/slog encoder.
    Zap,
}

/// How timestamps are written: `-timeFormat` (lager) or `logging.format.timestamp` (gorouter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// Seconds since the epoch with nanoseconds (upstream's default).
    #[default]
    UnixEpoch,
    /// `2006-01-02T15:04:05.000000000Z`, in UTC.
    Rfc3339,
}

impl TimeFormat {
    /// Lager's words for it (`unix-epoch`/`0`, `rfc3339`/`1`); gorouter's rule is the same
    /// except that any other word means epoch, which callers decide.
    pub fn from_lager_flag(value: &str) -> Option<TimeFormat> {
        match value {
            "unix-epoch" | "0" => Some(TimeFormat::UnixEpoch),
            "rfc3339" | "1" => Some(TimeFormat::Rfc3339),
            _ => None,
        }
    }
}

/// The lowest level written: upstream's words `debug`, `info`, `error`, `fatal` (and zap's
/// `warn`). `fatal` keeps only errors, the most severe level we log.
pub fn level_from_word(word: &str) -> Option<Level> {
    match word.to_ascii_lowercase().as_str() {
        "debug" => Some(Level::DEBUG),
        "" | "info" => Some(Level::INFO),
        "warn" => Some(Level::WARN),
        "error" | "fatal" => Some(Level::ERROR),
        _ => None,
    }
}

/// Everything a process decides about its log at start.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// lager's component (`routing-api`) or gorouter's source (`gorouter.stdout`).
    pub source: String,
    pub level: Level,
    pub time_format: TimeFormat,
}

/// Installs the upstream-format log on stdout (`RUST_LOG` still overrides the level, for
/// debugging a dependency).
pub fn init_logging(settings: LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter(settings.level));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(UpstreamJsonLayer { settings })
        .try_init();
}

/// Our events at `level`; dependencies' own chatter (connection notices from the NATS client,
/// the SQL driver, hyper) only from warnings up, so the log holds upstream's events.
fn default_filter(level: Level) -> tracing_subscriber::EnvFilter {
    let dependencies = if level == Level::ERROR {
        "error"
    } else {
        "warn"
    };
    let quiet = [
        "async_nats",
        "sqlx",
        "hyper",
        "hyper_util",
        "h2",
        "tonic",
        "tower",
    ]
    .map(|c| format!(",{c}={dependencies}"))
    .concat();
    // rustls warns about each peer's oddities (an IP address sent as SNI, as clients built on
    // OpenSSL do when given one): a line per connection any client can provoke, written on the
    // connection's thread, which Go's TLS never logs. Only its errors.
    let level = level.as_str().to_ascii_lowercase();
    tracing_subscriber::EnvFilter::new(format!("{level}{quiet},rustls=error"))
}

struct UpstreamJsonLayer {
    settings: LogSettings,
}

impl<S: Subscriber> Layer<S> for UpstreamJsonLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = DataVisitor::default();
        event.record(&mut fields);
        let mut line = format_line(
            &self.settings,
            *event.metadata().level(),
            &fields.message,
            fields.data,
            std::time::SystemTime::now(),
        );
        line.push('\n');
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|_| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                die_of_sigpipe();
            }
        }
    }
}

/// Ends the process as Go's runtime does when fd 1 is a broken pipe.
fn die_of_sigpipe() -> ! {
    // SAFETY: restoring the default disposition of SIGPIPE and raising it only affects this
    // process, which is meant to end here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}

/// The tracing event's message and fields.
#[derive(Default)]
struct DataVisitor {
    message: String,
    data: Map<String, Value>,
}

impl Visit for DataVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
            return;
        }
        // A list logged with `?` (`isolation_segments = ?segments`) prints as a JSON array;
        // upstream logs lists as arrays, so keep it one.
        let value = if text.starts_with('[') {
            serde_json::from_str::<Value>(&text)
                .ok()
                .filter(Value::is_array)
                .unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        self.data.insert(field.name().to_owned(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.data
                .insert(field.name().to_owned(), Value::String(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.data.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.data
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

/// One log line (without the newline) in the configured format.
pub fn format_line(
    settings: &LogSettings,
    level: Level,
    message: &str,
    data: Map<String, Value>,
    now: std::time::SystemTime,
) -> String {
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let source = Value::String(settings.source.clone());
    let message = Value::String(message.to_owned());
    let data = Value::Object(data);
    let mut out = String::with_capacity(160);
    match settings.format {
        LogFormat::Lager => {
            let level_number = match level {
                Level::TRACE | Level::DEBUG => 0,
                Level::INFO | Level::WARN => 1,
                Level::ERROR => 2,
            };
            match settings.time_format {
                TimeFormat::UnixEpoch => {
                    let _ = write!(
                        out,
                        r#"{{"timestamp":"{}.{:09}","source":{source},"message":{message},"log_level":{level_number},"data":{data}}}"#,
                        since_epoch.as_secs(),
                        since_epoch.subsec_nanos()
                    );
                }
                TimeFormat::Rfc3339 => {
                    let word = ["debug", "info", "error"][level_number];
                    let _ = write!(
                        out,
                        r#"{{"timestamp":"{}","level":"{word}","source":{source},"message":{message},"data":{data}}}"#,
                        rfc3339_nanos(now)
                    );
                }
            }
        }
        LogFormat::Zap => {
            let level_number = match level {
                Level::TRACE | Level::DEBUG => 0,
                Level::INFO => 1,
                Level::WARN => 2,
                Level::ERROR => 3,
            };
            let timestamp = match settings.time_format {
                TimeFormat::UnixEpoch => Value::from(since_epoch.as_secs_f64()).to_string(),
                TimeFormat::Rfc3339 => format!("\"{}\"", rfc3339_nanos(now)),
            };
            let _ = write!(
                out,
                r#"{{"log_level":{level_number},"timestamp":{timestamp},"message":{message},"source":{source},"data":{data}}}"#
            );
        }
    }
    out
}

/// `2006-01-02T15:04:05.000000000Z` in UTC: lager's and zap's RFC 3339 timestamps, and
/// gorouter's access-log time.
pub fn rfc3339_nanos(now: std::time::SystemTime) -> String {
    let mut out = Vec::with_capacity(30);
    push_rfc3339_nanos(&mut out, now);
    // Only ASCII digits and punctuation were written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`rfc3339_nanos`] appended to `out` without formatting machinery: the access log writes one
/// per request. Times from 1970 to 9999 are written by hand; others (never a clock's reading)
/// go through the `time` crate.
pub fn push_rfc3339_nanos(out: &mut Vec<u8>, now: std::time::SystemTime) {
    let Some(since) = since_epoch_by_hand(now) else {
        out.extend_from_slice(rfc3339_nanos_by_time_crate(now).as_bytes());
        return;
    };
    push_date_time(out, since.as_secs());
    push_nanos(out, since);
}

/// The time since the epoch when the hand-written path covers it: from 1970 to before
/// 10000-01-01.
fn since_epoch_by_hand(t: std::time::SystemTime) -> Option<std::time::Duration> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .filter(|d| d.as_secs() < 253_402_300_800)
}

/// `2006-01-02T15:04:05.` for `secs` since the epoch (in [`since_epoch_by_hand`]'s range).
fn push_date_time(out: &mut Vec<u8>, secs: u64) {
    const SECS_PER_DAY: u64 = 86_400;
    let (year, month, day) = civil_from_days(secs / SECS_PER_DAY);
    let of_day = secs % SECS_PER_DAY;
    push_digits(out, u64::from(year), 4);
    out.push(b'-');
    push_digits(out, u64::from(month), 2);
    out.push(b'-');
    push_digits(out, u64::from(day), 2);
    out.push(b'T');
    push_digits(out, of_day / 3600, 2);
    out.push(b':');
    push_digits(out, of_day / 60 % 60, 2);
    out.push(b':');
    push_digits(out, of_day % 60, 2);
    out.push(b'.');
}

/// The nine fraction digits and the `Z` that end a time stamp.
fn push_nanos(out: &mut Vec<u8>, since: std::time::Duration) {
    push_digits(out, u64::from(since.subsec_nanos()), 9);
    out.push(b'Z');
}

/// [`push_rfc3339_nanos`] for a stream of times that mostly share their second (the access
/// log's lines): the date and time of day are worked out once per second and copied after.
#[derive(Debug, Clone, Default)]
pub struct Rfc3339Stamps {
    /// The second `prefix` shows, when one does.
    second: Option<u64>,
    /// `2006-01-02T15:04:05.` for `second`.
    prefix: Vec<u8>,
}

impl Rfc3339Stamps {
    /// Appends `t` exactly as [`push_rfc3339_nanos`] does.
    pub fn push(&mut self, out: &mut Vec<u8>, t: std::time::SystemTime) {
        let Some(since) = since_epoch_by_hand(t) else {
            push_rfc3339_nanos(out, t);
            return;
        };
        let secs = since.as_secs();
        if self.second != Some(secs) {
            self.prefix.clear();
            push_date_time(&mut self.prefix, secs);
            self.second = Some(secs);
        }
        out.extend_from_slice(&self.prefix);
        push_nanos(out, since);
    }
}

/// [`rfc3339_nanos`] through the `time` crate: for times the hand-written path does not cover,
/// and what that path is checked against.
fn rfc3339_nanos_by_time_crate(now: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(now);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// `n` as exactly `width` decimal digits (zero-padded; `n` must fit).
fn push_digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400) as u32 + u32::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn settings(format: LogFormat, time_format: TimeFormat, source: &str) -> LogSettings {
        LogSettings {
            format,
            source: source.into(),
            level: Level::INFO,
            time_format,
        }
    }

    fn data() -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("port".into(), 3000.into());
        m
    }

    const NOW: Duration = Duration::new(1_700_000_000, 123_456_789);

    /// The targets of the events that got through `default_filter(level)`.
    fn passed_by_default_filter(level: Level, emit: impl FnOnce()) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        struct Targets(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Targets {
            fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
                let target = event.metadata().target().to_string();
                self.0.lock().unwrap().push(target);
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(default_filter(level))
            .with(Targets(seen.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        let seen = seen.lock().unwrap().clone();
        seen
    }

    #[test]
    fn rustls_warnings_about_a_peer_are_not_logged_its_errors_are() {
        let passed = passed_by_default_filter(Level::INFO, || {
            tracing::warn!(target: "rustls::server::hs", "Illegal SNI extension");
            tracing::error!(target: "rustls::conn", "an error");
            tracing::warn!(target: "gorouter::proxy", "ours");
        });
        assert_eq!(passed, ["rustls::conn", "gorouter::proxy"]);
    }

    #[test]
    fn dependencies_log_from_warnings_up_ours_at_the_level() {
        let passed = passed_by_default_filter(Level::DEBUG, || {
            tracing::info!(target: "hyper::proto", "chatter");
            tracing::warn!(target: "hyper::proto", "a warning");
            tracing::debug!(target: "gorouter::nats", "ours");
        });
        assert_eq!(passed, ["hyper::proto", "gorouter::nats"]);
    }

    #[test]
    fn lager_unix_epoch_line() {
        let s = settings(LogFormat::Lager, TimeFormat::UnixEpoch, "routing-api");
        let line = format_line(
            &s,
            Level::INFO,
            "routing-api.started",
            data(),
            UNIX_EPOCH + NOW,
        );
        assert_eq!(
            line,
            r#"{"timestamp":"1700000000.123456789","source":"routing-api","message":"routing-api.started","log_level":1,"data":{"port":3000}}"#
        );
    }

    #[test]
    fn lager_rfc3339_line_names_the_level() {
        let s = settings(LogFormat::Lager, TimeFormat::Rfc3339, "routing-api");
        let line = format_line(
            &s,
            Level::ERROR,
            "routing-api.failed-check-flags",
            data(),
            UNIX_EPOCH + NOW,
        );
        assert_eq!(
            line,
            r#"{"timestamp":"2023-11-14T22:13:20.123456789Z","level":"error","source":"routing-api","message":"routing-api.failed-check-flags","data":{"port":3000}}"#
        );
        let warn = format_line(&s, Level::WARN, "w", Map::new(), UNIX_EPOCH + NOW);
        assert!(warn.contains(r#""level":"info""#), "{warn}");
    }

    #[test]
    fn zap_lines_for_gorouter() {
        let s = settings(LogFormat::Zap, TimeFormat::UnixEpoch, "gorouter.stdout");
        let line = format_line(
            &s,
            Level::WARN,
            "gorouter.started",
            Map::new(),
            UNIX_EPOCH + NOW,
        );
        assert_eq!(
            line,
            r#"{"log_level":2,"timestamp":1700000000.1234567,"message":"gorouter.started","source":"gorouter.stdout","data":{}}"#
        );
        let s = settings(LogFormat::Zap, TimeFormat::Rfc3339, "gorouter.stdout");
        let line = format_line(&s, Level::ERROR, "x", Map::new(), UNIX_EPOCH + NOW);
        assert!(
            line.starts_with(r#"{"log_level":3,"timestamp":"2023-11-14T22:13:20.123456789Z","#),
            "{line}"
        );
    }

    #[test]
    fn messages_and_data_are_json_escaped() {
        let s = settings(LogFormat::Lager, TimeFormat::UnixEpoch, "locket");
        let mut m = Map::new();
        m.insert("error".into(), "bad \"quote\"\n".into());
        let line = format_line(&s, Level::ERROR, "a\"b", m, UNIX_EPOCH + NOW);
        let parsed: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed["message"], "a\"b");
        assert_eq!(parsed["data"]["error"], "bad \"quote\"\n");
    }

    /// Keeps the `data` of each event, recorded as the stdout layer records it.
    struct Collect(std::sync::Arc<std::sync::Mutex<Vec<Map<String, Value>>>>);

    impl<S: Subscriber> Layer<S> for Collect {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut fields = DataVisitor::default();
            event.record(&mut fields);
            if let Ok(mut seen) = self.0.lock() {
                seen.push(fields.data);
            }
        }
    }

    #[test]
    fn lists_logged_with_debug_are_json_arrays_and_other_values_text() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Collect(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let segments = vec!["is1".to_string(), "is2".to_string()];
            tracing::info!(segments = ?segments, addr = %"[::1]:8080", n = 3, "x");
        });
        let seen = seen.lock().expect("lock");
        let data = &seen[0];
        assert_eq!(data["segments"], serde_json::json!(["is1", "is2"]));
        assert_eq!(data["addr"], "[::1]:8080");
        assert_eq!(data["n"], 3);
    }

    #[test]
    fn level_words() {
        assert_eq!(level_from_word("debug"), Some(Level::DEBUG));
        assert_eq!(level_from_word("INFO"), Some(Level::INFO));
        assert_eq!(level_from_word("fatal"), Some(Level::ERROR));
        assert_eq!(level_from_word("loud"), None);
        assert_eq!(TimeFormat::from_lager_flag("1"), Some(TimeFormat::Rfc3339));
        assert_eq!(TimeFormat::from_lager_flag("iso"), None);
    }

    #[test]
    fn rfc3339_by_hand_matches_the_time_crate() {
        let by_time = rfc3339_nanos_by_time_crate;
        // Every day boundary region from 1970 to past 2100 (leap years, century rules), at
        // an odd time of day, and the edges of the hand-written range.
        let mut secs = 0u64;
        while secs < 4_200_000_000 {
            let t = UNIX_EPOCH + Duration::new(secs, 987_654_321);
            assert_eq!(rfc3339_nanos(t), by_time(t), "at {secs}");
            secs += 86_400 * 3 + 3_599;
        }
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(951_782_400, 1), // 2000-02-29
            UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999), // 9999-12-31T23:59:59
            UNIX_EPOCH - Duration::from_secs(86_400 * 400),
        ] {
            assert_eq!(rfc3339_nanos(t), by_time(t));
        }
    }

    #[test]
    fn cached_stamps_match_the_uncached_ones_across_seconds() {
        let mut stamps = Rfc3339Stamps::default();
        for t in [
            UNIX_EPOCH + Duration::new(1_700_000_000, 1),
            UNIX_EPOCH + Duration::new(1_700_000_000, 999_999_999),
            UNIX_EPOCH + Duration::new(1_700_000_001, 0),
            UNIX_EPOCH + Duration::new(1_700_000_000, 5),
            UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999),
            UNIX_EPOCH - Duration::from_secs(86_400 * 400),
            UNIX_EPOCH + Duration::new(951_782_400, 1),
        ] {
            let mut out = b"x".to_vec();
            stamps.push(&mut out, t);
            assert_eq!(out, format!("x{}", rfc3339_nanos(t)).into_bytes(), "{t:?}");
        }
    }
}
