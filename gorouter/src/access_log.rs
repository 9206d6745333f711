//! The access log (A.14): upstream's line format and a writer that keeps disk I/O off the
//! request path.
//!
//! Requests hand a finished [`AccessLogRecord`] to a bounded channel with `try_send`; one writer
//! thread formats and writes lines in batches. The thread is not woken per record: it wakes
//! every [`WRITE_INTERVAL`] and takes whatever has queued, so a request pays for a push into
//! the channel and nothing else (a wake-up per record cost a futex call and a context switch
//! each, the largest share of the router's CPU under load). When the disk is slower than the
//! traffic the channel fills and further records are dropped (and counted) rather than
//! stalling requests; the count is logged (`access-log-records-dropped`) once a minute while
//! it grows, and at exit. [`AccessLog::flush`] wakes the thread and waits until every record
//! queued before it is in the file: the router calls it on its way out, so the last requests
//! before a signal are not lost.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use tokio::sync::mpsc;

/// Records waiting to be written; beyond this many, new records are dropped.
const QUEUE_CAPACITY: usize = 16 * 1024;

/// How often a growing count of dropped records is logged.
const DROPPED_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// How often the writer thread takes what has queued. At 100,000 requests/s that is 1,000
/// records a batch, far below [`QUEUE_CAPACITY`]; idle, it is 100 cheap wake-ups a second.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// What the writer thread receives. Records are nearly every message: boxing them to shrink the
/// rare `Flush` would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Message {
    Record(AccessLogRecord),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Everything one access-log line says about a request.
#[derive(Debug, Clone, Default)]
pub struct AccessLogRecord {
    pub host: String,
    pub received_at: Option<SystemTime>,
    pub method: String,
    pub request_uri: String,
    pub proto: &'static str,
    /// 0 when no response was written.
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub remote_addr: Option<SocketAddr>,
    pub backend_addr: Option<Box<str>>,
    pub x_forwarded_for: Option<HeaderValue>,
    pub x_forwarded_proto: Option<HeaderValue>,
    pub vcap_request_id: Option<HeaderValue>,
    /// Whole request, from receipt to the last response byte.
    pub response_time: Option<Duration>,
    /// Time spent waiting on the backend (subtracted from `response_time` for gorouter_time).
    pub app_time: Option<Duration>,
    pub app_id: Option<Box<str>>,
    pub app_index: Option<Box<str>>,
    pub instance_id: Option<Box<str>>,
    pub router_error: Option<HeaderValue>,
    /// `extra_headers_to_log`: (configured name, value from the backend request).
    pub extra_headers: Vec<(String, Option<HeaderValue>)>,
}

impl AccessLogRecord {
    /// Formats the line (without the trailing newline) exactly as upstream does.
    pub fn format(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(&self.host);
        out.push_str(" - [");
        out.push_str(&format_timestamp(
            self.received_at.unwrap_or(SystemTime::UNIX_EPOCH),
        ));
        out.push_str("] \"");
        out.push_str(&self.method);
        out.push(' ');
        out.push_str(&self.request_uri);
        out.push(' ');
        out.push_str(self.proto);
        out.push_str("\" ");
        if self.status == 0 {
            out.push_str("\"-\"");
        } else {
            let _ = write!(out, "{}", self.status);
        }
        let _ = write!(out, " {} {} ", self.request_bytes, self.response_bytes);
        quote_header(out, self.referer.as_ref());
        out.push(' ');
        quote_header(out, self.user_agent.as_ref());
        out.push(' ');
        match self.remote_addr {
            Some(a) => quote_str(out, &a.to_string()),
            None => out.push_str("\"-\""),
        }
        out.push(' ');
        quote_str(out, self.backend_addr.as_deref().unwrap_or(""));
        out.push_str(" x_forwarded_for:");
        quote_header(out, self.x_forwarded_for.as_ref());
        out.push_str(" x_forwarded_proto:");
        quote_header(out, self.x_forwarded_proto.as_ref());
        out.push_str(" vcap_request_id:");
        quote_header(out, self.vcap_request_id.as_ref());
        out.push_str(" response_time:");
        let total = self.response_time.map(|d| d.as_secs_f64());
        push_seconds(out, total);
        out.push_str(" gorouter_time:");
        let router = match (total, self.app_time) {
            (Some(t), Some(app)) => Some(t - app.as_secs_f64()),
            (t, None) => t,
            (None, _) => None,
        };
        push_seconds(out, router);
        out.push_str(" app_id:");
        quote_str(out, self.app_id.as_deref().unwrap_or(""));
        out.push_str(" app_index:");
        quote_str(out, self.app_index.as_deref().unwrap_or(""));
        out.push_str(" instance_id:");
        quote_str(out, self.instance_id.as_deref().unwrap_or(""));
        out.push_str(" x_cf_routererror:");
        quote_header(out, self.router_error.as_ref());
        for (name, value) in &self.extra_headers {
            out.push(' ');
            out.push_str(&name.to_ascii_lowercase().replace('-', "_"));
            out.push(':');
            quote_header(out, value.as_ref());
        }
    }
}

fn push_seconds(out: &mut String, secs: Option<f64>) {
    use std::fmt::Write as _;
    match secs {
        Some(s) if s >= 0.0 => {
            let _ = write!(out, "{s:.6}");
        }
        _ => out.push_str("\"-\""),
    }
}

/// `2024-10-18T13:46:52.123456789Z`: UTC with nanoseconds and a literal `Z`.
pub fn format_timestamp(t: SystemTime) -> String {
    process_setup::logging::rfc3339_nanos(t)
}

fn quote_header(out: &mut String, v: Option<&HeaderValue>) {
    match v {
        Some(v) => quote_bytes(out, v.as_bytes()),
        None => out.push_str("\"-\""),
    }
}

fn quote_str(out: &mut String, s: &str) {
    quote_bytes(out, s.as_bytes())
}

/// Go's `strconv.Quote`, with an empty value written as `"-"`.
pub fn quote_bytes(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    if bytes.is_empty() {
        out.push_str("\"-\"");
        return;
    }
    out.push('"');
    // Nearly every value is printable ASCII without quotes or backslashes: copied whole.
    if bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        // Printable ASCII is valid UTF-8.
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
        out.push('"');
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{07}' => out.push_str("\\a"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{0b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
}

/// The sending half, cloned into every connection task.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
    /// The writer thread, unparked by `flush` so it need not wait for its next interval.
    writer: std::thread::Thread,
}

impl AccessLog {
    /// Opens (appending) `path` and starts the writer thread, which ends once every
    /// `AccessLog` is dropped and the queue is written.
    pub fn open(path: &Path) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            rx,
            file,
            path: path.to_path_buf(),
            dropped: dropped.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        let writer = handle.thread().clone();
        Ok((
            Self {
                tx,
                dropped,
                writer,
            },
            handle,
        ))
    }

    /// Queues a record; never waits and never wakes the writer.
    pub fn log(&self, record: AccessLogRecord) {
        if self.tx.try_send(Message::Record(record)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every record queued so far is written, at most `limit`. Returns whether
    /// it was.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, written) = tokio::sync::oneshot::channel();
        let flushed = async {
            if self.tx.send(Message::Flush(done)).await.is_err() {
                return false;
            }
            self.writer.unpark();
            written.await.is_ok()
        };
        tokio::time::timeout(limit, flushed).await.unwrap_or(false)
    }
}

/// The writer thread's state.
struct Writer {
    rx: mpsc::Receiver<Message>,
    file: std::fs::File,
    path: PathBuf,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self) {
        let mut text = String::new();
        let mut flushes = Vec::new();
        let mut reported = 0u64;
        let mut next_report = std::time::Instant::now() + DROPPED_REPORT_INTERVAL;
        loop {
            std::thread::park_timeout(WRITE_INTERVAL);
            let open = self.take_queued(&mut text, &mut flushes);
            if !text.is_empty() {
                if let Err(e) = self.file.write_all(text.as_bytes()) {
                    tracing::error!(path = %self.path.display(), error = %e, "access-log-write-failed");
                }
                // Big bursts leave a big buffer; keep a modest one between them.
                text.clear();
                text.shrink_to(64 * 1024);
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            if std::time::Instant::now() >= next_report {
                next_report += DROPPED_REPORT_INTERVAL;
                let now = self.dropped.load(Ordering::Relaxed);
                if now > reported {
                    tracing::error!(
                        dropped = now,
                        since_last_report = now - reported,
                        "access-log-records-dropped"
                    );
                    reported = now;
                }
            }
            if !open {
                return;
            }
        }
    }

    /// Formats every queued record into `text` and collects the flush requests; `false` once
    /// every sender is gone (the queue is then empty too).
    fn take_queued(
        &mut self,
        text: &mut String,
        flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Message::Record(rec)) => {
                    rec.format(text);
                    text.push('\n');
                }
                Ok(Message::Flush(done)) => flushes.push(done),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn formats_upstream_line() {
        let rec = AccessLogRecord {
            host: "myapp.apps.example.com".into(),
            received_at: Some(UNIX_EPOCH + Duration::new(1_729_259_212, 123_456_789)),
            method: "GET".into(),
            request_uri: "/hello".into(),
            proto: "HTTP/1.1",
            status: 200,
            request_bytes: 0,
            response_bytes: 5,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8.0")),
            remote_addr: Some("10.0.0.5:51234".parse().unwrap()),
            backend_addr: Some("10.0.16.5:61012".into()),
            x_forwarded_for: Some(HeaderValue::from_static("10.0.0.5")),
            x_forwarded_proto: Some(HeaderValue::from_static("http")),
            vcap_request_id: Some(HeaderValue::from_static("0b3c")),
            response_time: Some(Duration::from_micros(3512)),
            app_time: Some(Duration::from_micros(3102)),
            app_id: Some("6e6b".into()),
            app_index: Some("0".into()),
            instance_id: Some("a1b2".into()),
            router_error: None,
            extra_headers: vec![],
        };
        let mut s = String::new();
        rec.format(&mut s);
        assert_eq!(
            s,
            "myapp.apps.example.com - [2024-10-18T13:46:52.123456789Z] \"GET /hello HTTP/1.1\" 200 0 5 \"-\" \"curl/8.0\" \"10.0.0.5:51234\" \"10.0.16.5:61012\" x_forwarded_for:\"10.0.0.5\" x_forwarded_proto:\"http\" vcap_request_id:\"0b3c\" response_time:0.003512 gorouter_time:0.000410 app_id:\"6e6b\" app_index:\"0\" instance_id:\"a1b2\" x_cf_routererror:\"-\""
        );
    }

    #[test]
    fn missing_status_and_times_are_dashes_and_extra_headers_follow() {
        let rec = AccessLogRecord {
            host: "h".into(),
            method: "GET".into(),
            request_uri: "/".into(),
            proto: "HTTP/1.0",
            extra_headers: vec![("X-Custom-Thing".into(), Some(HeaderValue::from_static("v")))],
            ..Default::default()
        };
        let mut s = String::new();
        rec.format(&mut s);
        assert!(s.contains("\"GET / HTTP/1.0\" \"-\" 0 0"), "{s}");
        assert!(s.contains("response_time:\"-\" gorouter_time:\"-\""), "{s}");
        assert!(s.ends_with(" x_custom_thing:\"v\""), "{s}");
    }

    #[test]
    fn quote_escapes_like_go() {
        let mut s = String::new();
        quote_bytes(&mut s, b"a\"b\\c\n\x01\xff");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\x01\\xff\"");
    }

    #[test]
    fn quote_copies_printable_values_and_escapes_the_rest() {
        let mut s = String::new();
        quote_bytes(&mut s, b"curl/8.0 (x86_64; +https://x) ~");
        assert_eq!(s, "\"curl/8.0 (x86_64; +https://x) ~\"");
        s.clear();
        quote_bytes(&mut s, "h\u{e9}llo \u{85}".as_bytes());
        assert_eq!(s, "\"h\u{e9}llo \\u0085\"");
    }

    /// A `GET /` record for `host`, the smallest a writer test needs.
    fn get_record(host: &str) -> AccessLogRecord {
        AccessLogRecord {
            host: host.into(),
            method: "GET".into(),
            request_uri: "/".into(),
            proto: "HTTP/1.1",
            ..Default::default()
        }
    }

    #[test]
    fn writer_thread_ends_when_the_log_is_dropped() {
        let dir = std::env::temp_dir().join(format!("al-end-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let (log, writer) = AccessLog::open(&path).unwrap();
        log.log(get_record("last"));
        drop(log);
        writer.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("last - ["), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn writer_appends_lines_to_the_file() {
        let dir = std::env::temp_dir().join(format!("al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let (log, _h) = AccessLog::open(&path).unwrap();
        log.log(get_record("one"));
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap();
            if text.ends_with('\n') {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(text.starts_with("one - ["), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
