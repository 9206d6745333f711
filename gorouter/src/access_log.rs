//! The access log (A.14): upstream's line format and a writer that keeps disk I/O off the
//! request path.
//!
//! A request formats its line when it ends, into a buffer of its own thread's
//! ([`ThreadLines`]), under a lock only that thread and the writer take. One writer thread
//! swaps each thread's text out every [`WRITE_INTERVAL`] and writes it, so a request pays for
//! its line's formatting and nothing else: no wake-up (a futex call and a context switch each,
//! once the largest share of the router's CPU under load), no queue shared between threads,
//! and nothing allocated on one thread and freed on another. When the disk is slower than the
//! traffic a thread's text reaches [`THREAD_TEXT_LIMIT`] and further lines are dropped (and
//! counted) rather than stalling requests; the count is logged
//! (`access-log-records-dropped`) once a minute while it grows, and at exit.
//! [`AccessLog::flush`] wakes the thread and waits until every line logged before it is in
//! the file: the router calls it on its way out, so the last requests before a signal are not
//! lost. Lines of one thread stay in order; lines of different threads are written a batch
//! at a time.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use process_setup::logging::Rfc3339Stamps;

use crate::go_quote::quote_bytes;
use crate::registry::Endpoint;

/// How often a growing count of dropped records is logged.
const DROPPED_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// How often the writer thread takes what the threads have formatted. At 100,000 requests/s
/// that is 1,000 lines a batch, far below [`THREAD_TEXT_LIMIT`]; idle, it is 100 cheap
/// wake-ups a second.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// The strings of a request that its line shows, in line order.
#[derive(Debug, Clone, Copy)]
pub enum RequestField {
    Host,
    Method,
    Uri,
    Referer,
    UserAgent,
    XForwardedFor,
    XForwardedProto,
    VcapRequestId,
}

const REQUEST_FIELDS: usize = 8;

/// A request's strings for its line, copied into one buffer at the request's start (the
/// request itself goes on to the backend): one allocation, where owned strings and
/// header-value clones were several, and nothing of the client connection's read buffer is
/// kept alive until the response ends (a clone of a header value would keep the whole buffer,
/// so the next request could not reuse it). An absent value and an empty one are both written `"-"`, as upstream does.
#[derive(Debug, Clone, Default)]
pub struct RequestStrings {
    buf: Vec<u8>,
    /// Where each [`RequestField`] ends in `buf`; each starts where the one before ends.
    ends: [u32; REQUEST_FIELDS],
    /// Where each `extra_headers_to_log` value ends, after the fields (empty when none are
    /// configured, so no allocation).
    extra_ends: Vec<u32>,
}

impl RequestStrings {
    /// `fields` in [`RequestField`] order, then the `extra_headers_to_log` values in the
    /// configured order.
    pub fn new<'a>(
        fields: [&[u8]; REQUEST_FIELDS],
        extra: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
    ) -> Self {
        let len = fields.iter().map(|f| f.len()).sum::<usize>()
            + extra.clone().map(<[u8]>::len).sum::<usize>();
        let mut buf = Vec::with_capacity(len);
        let mut ends = [0u32; REQUEST_FIELDS];
        for (end, field) in ends.iter_mut().zip(fields) {
            buf.extend_from_slice(field);
            *end = offset(buf.len());
        }
        let mut extra_ends = Vec::with_capacity(extra.len());
        for value in extra {
            buf.extend_from_slice(value);
            extra_ends.push(offset(buf.len()));
        }
        Self {
            buf,
            ends,
            extra_ends,
        }
    }

    pub fn get(&self, field: RequestField) -> &[u8] {
        let i = field as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.slice(start, self.ends[i])
    }

    /// The `extra_headers_to_log` values, in the configured order.
    pub fn extra(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = self.ends[REQUEST_FIELDS - 1];
        self.extra_ends.iter().map(move |&end| {
            let s = self.slice(start, end);
            start = end;
            s
        })
    }

    fn slice(&self, start: u32, end: u32) -> &[u8] {
        self.buf
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }
}

/// A buffer offset; request heads are far below 4 GiB (hyper caps them), so this never
/// saturates in practice, and a saturated offset only shortens what is logged.
fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The endpoint a request went to, as its line shows it.
#[derive(Debug, Clone)]
pub struct LoggedBackend {
    pub endpoint: Arc<Endpoint>,
    /// Whether `app_id`, `app_index` and `instance_id` are the endpoint's (an app instance)
    /// or empty (a route service).
    pub app: bool,
}

/// Everything one access-log line says about a request.
#[derive(Debug, Clone, Default)]
pub struct AccessLogRecord {
    pub request: RequestStrings,
    pub received_at: Option<SystemTime>,
    pub proto: &'static str,
    /// 0 when no response was written.
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub remote_addr: Option<SocketAddr>,
    pub backend: Option<LoggedBackend>,
    /// Whole request, from receipt to the last response byte.
    pub response_time: Option<Duration>,
    /// Time spent waiting on the backend (subtracted from `response_time` for gorouter_time).
    pub app_time: Option<Duration>,
    pub router_error: Option<HeaderValue>,
}

/// `extra_headers_to_log` names as the line shows them (`X-Custom-Thing` is
/// `x_custom_thing`), worked out once.
pub fn extra_header_labels(names: &[String]) -> Vec<Box<[u8]>> {
    names
        .iter()
        .map(|n| {
            n.bytes()
                .map(|b| match b {
                    b'-' => b'_',
                    b => b.to_ascii_lowercase(),
                })
                .collect()
        })
        .collect()
}

impl AccessLogRecord {
    /// Formats the line (without the trailing newline) exactly as upstream does;
    /// `extra_labels` from [`extra_header_labels`].
    /// `stamps` carries the time stamp's date from line to line.
    pub fn format(
        &self,
        extra_labels: &[Box<[u8]>],
        stamps: &mut Rfc3339Stamps,
        out: &mut Vec<u8>,
    ) {
        use RequestField as F;
        let r = &self.request;
        out.extend_from_slice(r.get(F::Host));
        out.extend_from_slice(b" - [");
        stamps.push(out, self.received_at.unwrap_or(SystemTime::UNIX_EPOCH));
        out.extend_from_slice(b"] \"");
        out.extend_from_slice(r.get(F::Method));
        out.push(b' ');
        out.extend_from_slice(r.get(F::Uri));
        out.push(b' ');
        out.extend_from_slice(self.proto.as_bytes());
        out.extend_from_slice(b"\" ");
        if self.status == 0 {
            out.extend_from_slice(b"\"-\"");
        } else {
            push_u64(out, self.status.into());
        }
        out.push(b' ');
        push_u64(out, self.request_bytes);
        out.push(b' ');
        push_u64(out, self.response_bytes);
        out.push(b' ');
        quote_bytes(out, r.get(F::Referer));
        out.push(b' ');
        quote_bytes(out, r.get(F::UserAgent));
        out.push(b' ');
        match self.remote_addr {
            Some(a) => {
                out.push(b'"');
                push_socket_addr(out, a);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"\"-\""),
        }
        out.push(b' ');
        let endpoint = self.backend.as_ref().map(|b| b.endpoint.logged_strings());
        quote_bytes(out, endpoint.as_ref().map_or(&[], |e| e.addr));
        out.extend_from_slice(b" x_forwarded_for:");
        quote_bytes(out, r.get(F::XForwardedFor));
        out.extend_from_slice(b" x_forwarded_proto:");
        quote_bytes(out, r.get(F::XForwardedProto));
        out.extend_from_slice(b" vcap_request_id:");
        quote_bytes(out, r.get(F::VcapRequestId));
        out.extend_from_slice(b" response_time:");
        push_seconds(out, self.response_time);
        out.extend_from_slice(b" gorouter_time:");
        let router = match (self.response_time, self.app_time) {
            (Some(total), Some(app)) => total.checked_sub(app),
            (total, None) => total,
            (None, Some(_)) => None,
        };
        push_seconds(out, router);
        let app = endpoint.filter(|_| self.backend.as_ref().is_some_and(|b| b.app));
        out.extend_from_slice(b" app_id:");
        quote_bytes(out, app.as_ref().map_or(&[], |e| e.app_id));
        out.extend_from_slice(b" app_index:");
        quote_bytes(out, app.as_ref().map_or(&[], |e| e.instance_index));
        out.extend_from_slice(b" instance_id:");
        quote_bytes(out, app.as_ref().map_or(&[], |e| e.instance_id));
        out.extend_from_slice(b" x_cf_routererror:");
        quote_bytes(
            out,
            self.router_error.as_ref().map_or(&[], |v| v.as_bytes()),
        );
        let mut values = r.extra();
        for label in extra_labels {
            out.push(b' ');
            out.extend_from_slice(label);
            out.push(b':');
            quote_bytes(out, values.next().unwrap_or_default());
        }
    }
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Seconds with six decimals (Go's `%.6f`), rounded to the microsecond; `"-"` when unknown.
fn push_seconds(out: &mut Vec<u8>, d: Option<Duration>) {
    let Some(d) = d else {
        out.extend_from_slice(b"\"-\"");
        return;
    };
    // In whole seconds and microseconds, not `as_nanos`: 128-bit division is a library call.
    let mut micros = (d.subsec_nanos() + 500) / 1000;
    let mut secs = d.as_secs();
    if micros == 1_000_000 {
        micros = 0;
        secs = secs.saturating_add(1);
    }
    push_u64(out, secs);
    let mut frac = *b".000000";
    for slot in frac[1..].iter_mut().rev() {
        *slot = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend_from_slice(&frac);
}

fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, octet.into());
            }
        }
        SocketAddr::V6(a) => {
            let _ = std::io::Write::write_fmt(out, format_args!("[{}]", a.ip()));
        }
    }
    out.push(b':');
    push_u64(out, addr.port().into());
}

/// The most text a thread holds for the writer; beyond it, lines are dropped (and counted)
/// rather than stalling requests. At one 300-byte line per request that is about 14,000
/// requests in one [`WRITE_INTERVAL`], far above what one thread serves.
const THREAD_TEXT_LIMIT: usize = 4 * 1024 * 1024;

/// A writer's state that every handle and thread buffer shares.
struct Shared {
    /// Every thread's buffer, in the order threads first logged. Entries are never removed:
    /// the threads that log are the proxy's and the runtimes' workers, which live as long as
    /// the process (a thread's thread-local refers to its entry only weakly, so removing one
    /// could lose a line it is writing).
    threads: Mutex<Vec<Arc<ThreadLines>>>,
    extra_labels: Arc<[Box<[u8]>]>,
    dropped: Arc<AtomicU64>,
    /// Answered once everything logged before they were queued is written.
    flushes: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    /// Set when the last [`AccessLog`] handle is dropped.
    closed: AtomicBool,
}

/// One thread's lines waiting for the writer. Only that thread appends, so its lock is
/// uncontended but for the writer's swap once a [`WRITE_INTERVAL`].
pub struct ThreadLines {
    pending: Mutex<PendingText>,
    extra_labels: Arc<[Box<[u8]>]>,
    dropped: Arc<AtomicU64>,
}

#[derive(Default)]
struct PendingText {
    text: Vec<u8>,
    stamps: Rfc3339Stamps,
}

impl ThreadLines {
    /// Formats `record`'s line into this thread's text; dropped (and counted) when the writer
    /// has fallen [`THREAD_TEXT_LIMIT`] behind.
    pub fn log(&self, record: &AccessLogRecord) {
        let mut pending = locked(&self.pending);
        if pending.text.len() >= THREAD_TEXT_LIMIT {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let PendingText { text, stamps } = &mut *pending;
        record.format(&self.extra_labels, stamps, text);
        text.push(b'\n');
    }
}

/// A lock whose holder never panics mid-update; a poisoned one is still consistent text.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

thread_local! {
    /// This thread's buffer for each open access log (one outside tests): the log, weakly, so
    /// a closed log's entry can be told apart, and the buffer, weakly, as the writer owns it.
    static THREAD_LINES: RefCell<Vec<(Weak<Shared>, Weak<ThreadLines>)>> =
        const { RefCell::new(Vec::new()) };
}

/// The handle to the access log, cloned into every connection task.
#[derive(Clone)]
pub struct AccessLog {
    handle: Arc<Handle>,
}

/// Closes the log when the last [`AccessLog`] goes.
struct Handle {
    shared: Arc<Shared>,
    /// The writer thread, unparked by `flush` so it need not wait for its next interval.
    writer: std::thread::Thread,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

impl AccessLog {
    /// Opens (appending) `path` and starts the writer thread, which ends once every
    /// `AccessLog` and every record in flight is dropped and their lines written.
    /// `extra_headers` is `extra_headers_to_log`, whose values records carry in that order.
    pub fn open(
        path: &Path,
        extra_headers: &[String],
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let shared = Arc::new(Shared {
            threads: Mutex::new(Vec::new()),
            extra_labels: extra_header_labels(extra_headers).into(),
            dropped: Arc::new(AtomicU64::new(0)),
            flushes: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let writer = Writer {
            shared: shared.clone(),
            file,
            path: path.to_path_buf(),
        };
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        let writer = handle.thread().clone();
        Ok((
            Self {
                handle: Arc::new(Handle { shared, writer }),
            },
            handle,
        ))
    }

    /// This thread's buffer, made on its first line. A record holds it until its line is
    /// written, so a request touches only its own thread's counters and lock.
    pub fn thread_lines(&self) -> Arc<ThreadLines> {
        let shared = &self.handle.shared;
        THREAD_LINES.with_borrow_mut(|entries| {
            for (log, lines) in entries.iter() {
                if std::ptr::eq(log.as_ptr(), Arc::as_ptr(shared)) {
                    if let Some(lines) = lines.upgrade() {
                        return lines;
                    }
                }
            }
            // Closed logs' entries go (and this log's, which cannot be dead while it is open).
            entries.retain(|(log, _)| {
                log.strong_count() > 0 && !std::ptr::eq(log.as_ptr(), Arc::as_ptr(shared))
            });
            let lines = Arc::new(ThreadLines {
                pending: Mutex::new(PendingText::default()),
                extra_labels: shared.extra_labels.clone(),
                dropped: shared.dropped.clone(),
            });
            locked(&shared.threads).push(lines.clone());
            entries.push((Arc::downgrade(shared), Arc::downgrade(&lines)));
            lines
        })
    }

    /// Logs one record from this thread (requests log through their record's
    /// [`ThreadLines`]).
    #[cfg(test)]
    pub fn log(&self, record: &AccessLogRecord) {
        self.thread_lines().log(record);
    }

    /// Records dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.handle.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every record logged so far is written, at most `limit`. Returns whether
    /// it was.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, written) = tokio::sync::oneshot::channel();
        locked(&self.handle.shared.flushes).push(done);
        self.handle.writer.unpark();
        tokio::time::timeout(limit, written)
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    file: std::fs::File,
    path: PathBuf,
}

impl Writer {
    fn run(mut self) {
        let mut text = Vec::new();
        let mut reported = 0u64;
        let mut next_report = std::time::Instant::now() + DROPPED_REPORT_INTERVAL;
        loop {
            std::thread::park_timeout(WRITE_INTERVAL);
            // Read before taking the lines: once closed, only records still in flight can
            // add any, and the loop goes on until they are gone.
            let closed = self.shared.closed.load(Ordering::Acquire);
            // Taken before the lines, so each is answered after what was logged before it.
            let flushes = std::mem::take(&mut *locked(&self.shared.flushes));
            let in_flight = self.write_pending(&mut text);
            for done in flushes {
                let _ = done.send(());
            }
            if std::time::Instant::now() >= next_report {
                next_report += DROPPED_REPORT_INTERVAL;
                let now = self.shared.dropped.load(Ordering::Relaxed);
                if now > reported {
                    tracing::error!(
                        dropped = now,
                        since_last_report = now - reported,
                        "access-log-records-dropped"
                    );
                    reported = now;
                }
            }
            if closed && !in_flight {
                return;
            }
        }
    }

    /// Writes every thread's pending text (each thread's in one write, swapped out under its
    /// lock); returns whether some record outside the writer still holds a thread's buffer.
    fn write_pending(&mut self, text: &mut Vec<u8>) -> bool {
        let threads = locked(&self.shared.threads).clone();
        let mut in_flight = false;
        for lines in &threads {
            // The list's and this clone (the thread-local's is weak): more is a record's.
            in_flight |= Arc::strong_count(lines) > 2;
            std::mem::swap(text, &mut locked(&lines.pending).text);
            if text.is_empty() {
                continue;
            }
            if let Err(e) = self.file.write_all(text) {
                tracing::error!(path = %self.path.display(), error = %e, "access-log-write-failed");
            }
            // Big bursts leave a big buffer; keep a modest one between them.
            text.clear();
            text.shrink_to(64 * 1024);
        }
        in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// Request strings in [`RequestField`] order, with no extra headers.
    fn request(fields: [&str; REQUEST_FIELDS]) -> RequestStrings {
        RequestStrings::new(fields.map(str::as_bytes), std::iter::empty())
    }

    fn line(rec: &AccessLogRecord, extra_labels: &[Box<[u8]>]) -> String {
        let mut out = Vec::new();
        rec.format(extra_labels, &mut Rfc3339Stamps::default(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn endpoint(addr_host: &str, port: u16, app: &str, index: &str, id: &str) -> Arc<Endpoint> {
        let spec = crate::registry::EndpointSpec {
            host: addr_host.into(),
            port,
            app: app.into(),
            private_instance_index: index.into(),
            private_instance_id: id.into(),
            ..Default::default()
        };
        Arc::new(Endpoint::from_spec(&spec, Duration::from_secs(120), 0))
    }

    #[test]
    fn formats_upstream_line() {
        let rec = AccessLogRecord {
            request: request([
                "myapp.apps.example.com",
                "GET",
                "/hello",
                "",
                "curl/8.0",
                "10.0.0.5",
                "http",
                "0b3c",
            ]),
            received_at: Some(UNIX_EPOCH + Duration::new(1_729_259_212, 123_456_789)),
            proto: "HTTP/1.1",
            status: 200,
            request_bytes: 0,
            response_bytes: 5,
            remote_addr: Some("10.0.0.5:51234".parse().unwrap()),
            backend: Some(LoggedBackend {
                endpoint: endpoint("10.0.16.5", 61012, "6e6b", "0", "a1b2"),
                app: true,
            }),
            response_time: Some(Duration::from_micros(3512)),
            app_time: Some(Duration::from_micros(3102)),
            router_error: None,
        };
        assert_eq!(
            line(&rec, &[]),
            "myapp.apps.example.com - [2024-10-18T13:46:52.123456789Z] \"GET /hello HTTP/1.1\" 200 0 5 \"-\" \"curl/8.0\" \"10.0.0.5:51234\" \"10.0.16.5:61012\" x_forwarded_for:\"10.0.0.5\" x_forwarded_proto:\"http\" vcap_request_id:\"0b3c\" response_time:0.003512 gorouter_time:0.000410 app_id:\"6e6b\" app_index:\"0\" instance_id:\"a1b2\" x_cf_routererror:\"-\""
        );
    }

    #[test]
    fn a_route_service_leg_logs_its_address_without_app_fields() {
        let rec = AccessLogRecord {
            backend: Some(LoggedBackend {
                endpoint: endpoint("10.0.16.5", 61012, "6e6b", "0", "a1b2"),
                app: false,
            }),
            ..get_record("h")
        };
        let s = line(&rec, &[]);
        assert!(s.contains(" \"10.0.16.5:61012\" x_forwarded_for:"), "{s}");
        assert!(
            s.contains(" app_id:\"-\" app_index:\"-\" instance_id:\"-\" "),
            "{s}"
        );
    }

    #[test]
    fn times_are_rounded_to_the_microsecond_with_six_decimals() {
        let mut out = Vec::new();
        for (d, want) in [
            (Duration::from_nanos(0), "0.000000"),
            (Duration::from_nanos(499), "0.000000"),
            (Duration::from_nanos(500), "0.000001"),
            (Duration::from_nanos(1_234_567_890), "1.234568"),
            (Duration::new(86_400, 999_999_600), "86401.000000"),
        ] {
            out.clear();
            push_seconds(&mut out, Some(d));
            assert_eq!(std::str::from_utf8(&out).unwrap(), want, "{d:?}");
        }
    }

    #[test]
    fn gorouter_time_is_a_dash_when_the_app_took_longer_than_the_whole() {
        let rec = AccessLogRecord {
            response_time: Some(Duration::from_micros(10)),
            app_time: Some(Duration::from_micros(11)),
            ..get_record("h")
        };
        let s = line(&rec, &[]);
        assert!(
            s.contains("response_time:0.000010 gorouter_time:\"-\""),
            "{s}"
        );
    }

    #[test]
    fn an_ipv6_client_is_logged_in_brackets() {
        let rec = AccessLogRecord {
            remote_addr: Some("[::1]:4000".parse().unwrap()),
            ..get_record("h")
        };
        assert!(line(&rec, &[]).contains(" \"[::1]:4000\" "));
    }

    #[test]
    fn missing_status_and_times_are_dashes_and_extra_headers_follow() {
        let labels = extra_header_labels(&["X-Custom-Thing".into(), "X-Absent".into()]);
        let rec = AccessLogRecord {
            request: RequestStrings::new(
                ["h", "GET", "/", "", "", "", "", ""].map(str::as_bytes),
                [b"v".as_slice(), b"".as_slice()].into_iter(),
            ),
            proto: "HTTP/1.0",
            ..Default::default()
        };
        let s = line(&rec, &labels);
        assert!(s.contains("\"GET / HTTP/1.0\" \"-\" 0 0"), "{s}");
        assert!(s.contains("response_time:\"-\" gorouter_time:\"-\""), "{s}");
        assert!(s.ends_with(" x_custom_thing:\"v\" x_absent:\"-\""), "{s}");
    }

    /// A `GET /` record for `host`, the smallest a writer test needs.
    fn get_record(host: &str) -> AccessLogRecord {
        AccessLogRecord {
            request: request([host, "GET", "/", "", "", "", "", ""]),
            proto: "HTTP/1.1",
            ..Default::default()
        }
    }

    #[test]
    fn writer_thread_ends_when_the_log_is_dropped() {
        let dir = log_dir("end");
        let path = dir.join("access.log");
        let (log, writer) = AccessLog::open(&path, &[]).unwrap();
        log.log(&get_record("last"));
        drop(log);
        writer.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("last - ["), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn writer_appends_lines_to_the_file() {
        let dir = log_dir("append");
        let path = dir.join("access.log");
        let (log, _h) = AccessLog::open(&path, &[]).unwrap();
        log.log(&get_record("one"));
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

    /// A fresh directory for one writer test's file.
    fn log_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("al-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn flush_returns_once_lines_from_every_thread_are_in_the_file() {
        let dir = log_dir("threads");
        let path = dir.join("access.log");
        let (log, _h) = AccessLog::open(&path, &[]).unwrap();
        let other = log.clone();
        std::thread::spawn(move || other.log(&get_record("from-another-thread")))
            .join()
            .unwrap();
        log.log(&get_record("from-this-thread"));
        assert!(log.flush(Duration::from_secs(5)).await);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("from-another-thread - ["), "{text}");
        assert!(text.contains("from-this-thread - ["), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_thread_whose_text_is_at_the_limit_drops_and_counts_its_next_line() {
        let dropped = Arc::new(AtomicU64::new(0));
        let lines = ThreadLines {
            pending: Mutex::new(PendingText {
                text: vec![b'x'; THREAD_TEXT_LIMIT],
                stamps: Rfc3339Stamps::default(),
            }),
            extra_labels: Vec::new().into(),
            dropped: dropped.clone(),
        };
        lines.log(&get_record("over"));
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        assert_eq!(locked(&lines.pending).text.len(), THREAD_TEXT_LIMIT);
    }

    #[test]
    fn the_writer_waits_for_a_record_still_in_flight_when_the_log_closes() {
        let dir = log_dir("in-flight");
        let path = dir.join("access.log");
        let (log, writer) = AccessLog::open(&path, &[]).unwrap();
        let lines = log.thread_lines();
        drop(log);
        std::thread::sleep(WRITE_INTERVAL * 5);
        assert!(!writer.is_finished());
        lines.log(&get_record("late"));
        drop(lines);
        writer.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("late - ["), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
