//! The access log (A.14): upstream's line format and a writer that keeps disk I/O off the
//! request path.
//!
//! Requests hand a finished [`AccessLogRecord`] to a bounded channel with `try_send`; one writer
//! task formats and writes lines in batches. When the disk is slower than the traffic the
//! channel fills and further records are dropped (and counted) rather than stalling requests;
//! the count is logged (`access-log-records-dropped`) once a minute while it grows, and at exit.
//! [`AccessLog::flush`] waits until every record queued before it is in the file: the router
//! calls it on its way out, so the last requests before a signal are not lost.

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

/// What the writer task receives. Records are nearly every message: boxing them to shrink the
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
}

impl AccessLog {
    /// Opens (appending) `path` and starts the writer task.
    pub fn open(path: &Path) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let handle = tokio::spawn(write_loop(rx, file, path.to_path_buf(), dropped.clone()));
        Ok((Self { tx, dropped }, handle))
    }

    /// Queues a record; never waits.
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
        let flushed =
            async { self.tx.send(Message::Flush(done)).await.is_ok() && written.await.is_ok() };
        tokio::time::timeout(limit, flushed).await.unwrap_or(false)
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Message>,
    file: std::fs::File,
    path: PathBuf,
    dropped: Arc<AtomicU64>,
) {
    let mut file = Some(file);
    let mut batch = Vec::with_capacity(256);
    let mut report = tokio::time::interval(DROPPED_REPORT_INTERVAL);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = 0u64;
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, 256) => n,
            _ = report.tick() => {
                let now = dropped.load(Ordering::Relaxed);
                if now > reported {
                    tracing::error!(dropped = now, since_last_report = now - reported, "access-log-records-dropped");
                    reported = now;
                }
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let mut text = String::with_capacity(batch.len() * 400);
        let mut flushes = Vec::new();
        for message in batch.drain(..) {
            match message {
                Message::Record(rec) => {
                    rec.format(&mut text);
                    text.push('\n');
                }
                Message::Flush(done) => flushes.push(done),
            }
        }
        let Some(f) = file.take() else { break };
        // File writes block; keep them off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            let mut f = f;
            let r = f.write_all(text.as_bytes());
            (f, r)
        })
        .await;
        match result {
            Ok((f, Ok(()))) => file = Some(f),
            Ok((f, Err(e))) => {
                tracing::error!(path = %path.display(), error = %e, "access-log-write-failed");
                file = Some(f);
            }
            Err(e) => {
                tracing::error!(error = %e, "access-log-writer-failed");
                break;
            }
        }
        for done in flushes {
            let _ = done.send(());
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

    #[tokio::test]
    async fn writer_appends_lines_to_the_file() {
        let dir = std::env::temp_dir().join(format!("al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let (log, _h) = AccessLog::open(&path).unwrap();
        log.log(AccessLogRecord {
            host: "one".into(),
            method: "GET".into(),
            request_uri: "/".into(),
            proto: "HTTP/1.1",
            ..Default::default()
        });
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
