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

use crate::registry::Endpoint;

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

/// A request's strings for its line, copied into one buffer at the request's start: one
/// allocation, where owned strings and header-value clones were several, and nothing of the
/// client connection's read buffer is kept alive until the writer thread gets to the record
/// (a clone of a header value would keep the whole buffer, so the next request could not
/// reuse it). An absent value and an empty one are both written `"-"`, as upstream does.
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
    pub fn format(&self, extra_labels: &[Box<[u8]>], out: &mut Vec<u8>) {
        use RequestField as F;
        let r = &self.request;
        out.extend_from_slice(r.get(F::Host));
        out.extend_from_slice(b" - [");
        process_setup::logging::push_rfc3339_nanos(
            out,
            self.received_at.unwrap_or(SystemTime::UNIX_EPOCH),
        );
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
        let endpoint = self.backend.as_ref().map(|b| &b.endpoint);
        quote_bytes(out, endpoint.map_or("", |e| e.addr()).as_bytes());
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
        let app = self.backend.as_ref().filter(|b| b.app).map(|b| &b.endpoint);
        out.extend_from_slice(b" app_id:");
        quote_bytes(out, app.map_or("", |e| e.app_id()).as_bytes());
        out.extend_from_slice(b" app_index:");
        quote_bytes(
            out,
            app.map_or("", |e| e.private_instance_index()).as_bytes(),
        );
        out.extend_from_slice(b" instance_id:");
        quote_bytes(out, app.map_or("", |e| e.private_instance_id()).as_bytes());
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
    let micros = (d.as_nanos() + 500) / 1000;
    push_u64(out, u64::try_from(micros / 1_000_000).unwrap_or(u64::MAX));
    out.push(b'.');
    let frac = (micros % 1_000_000) as u32;
    let digits = itoa::Buffer::new().format(frac).len();
    out.extend(std::iter::repeat_n(b'0', 6 - digits));
    push_u64(out, frac.into());
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

/// Go's `strconv.Quote`, with an empty value written as `"-"`.
pub fn quote_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.extend_from_slice(b"\"-\"");
        return;
    }
    out.push(b'"');
    // Nearly every value is printable ASCII without quotes or backslashes: copied whole.
    if is_plain(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\u{07}' => out.extend_from_slice(b"\\a"),
                '\u{08}' => out.extend_from_slice(b"\\b"),
                '\u{0c}' => out.extend_from_slice(b"\\f"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{0b}' => out.extend_from_slice(b"\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    push_hex_escape(out, b'x', c as u32, 2)
                }
                c if c.is_control() => push_hex_escape(out, b'u', c as u32, 4),
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        for &b in chunk.invalid() {
            push_hex_escape(out, b'x', b.into(), 2);
        }
    }
    out.push(b'"');
}

/// A byte Go's `strconv.Quote` copies as it is: printable ASCII other than `"` and `\`.
fn is_plain_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether every byte [`is_plain_byte`], checked eight at a time (a line has a dozen values,
/// most of them tens of bytes long).
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether some byte of `w` is below `n` (n <= 0x80), or is zero; exact, no false alarms.
    let has_below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            return false;
        };
        let w = u64::from_le_bytes(word);
        // A byte of 0x7f or more: 0x7f + 1 and anything with its top bit set show in HIGH.
        // (A carry out of 0xff can only add a false alarm, which takes the slow path.)
        let high = (w.wrapping_add(ONES) | w) & HIGH != 0;
        if high
            || has_below(w, 0x20)
            || has_below(w ^ (ONES * u64::from(b'"')), 1)
            || has_below(w ^ (ONES * u64::from(b'\\')), 1)
        {
            return false;
        }
    }
    words.remainder().iter().all(|&b| is_plain_byte(b))
}

/// `\x7f` / `\u0085`: `kind`, then `value` in `width` lowercase hex digits.
fn push_hex_escape(out: &mut Vec<u8>, kind: u8, value: u32, width: u32) {
    out.push(b'\\');
    out.push(kind);
    for i in (0..width).rev() {
        out.push(b"0123456789abcdef"[(value >> (4 * i) & 0xf) as usize]);
    }
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
    /// `AccessLog` is dropped and the queue is written. `extra_headers` is
    /// `extra_headers_to_log`, whose values records carry in that order.
    pub fn open(
        path: &Path,
        extra_headers: &[String],
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
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
            extra_labels: extra_header_labels(extra_headers),
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
    extra_labels: Vec<Box<[u8]>>,
}

impl Writer {
    fn run(mut self) {
        let mut text = Vec::new();
        let mut flushes = Vec::new();
        let mut reported = 0u64;
        let mut next_report = std::time::Instant::now() + DROPPED_REPORT_INTERVAL;
        loop {
            std::thread::park_timeout(WRITE_INTERVAL);
            let open = self.take_queued(&mut text, &mut flushes);
            if !text.is_empty() {
                if let Err(e) = self.file.write_all(&text) {
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
        text: &mut Vec<u8>,
        flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Message::Record(rec)) => {
                    rec.format(&self.extra_labels, text);
                    text.push(b'\n');
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

    /// Request strings in [`RequestField`] order, with no extra headers.
    fn request(fields: [&str; REQUEST_FIELDS]) -> RequestStrings {
        RequestStrings::new(fields.map(str::as_bytes), std::iter::empty())
    }

    fn line(rec: &AccessLogRecord, extra_labels: &[Box<[u8]>]) -> String {
        let mut out = Vec::new();
        rec.format(extra_labels, &mut out);
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

    #[test]
    fn the_word_at_a_time_plain_check_agrees_with_the_byte_check() {
        // Every byte value at every position of a 19-byte value (two words and a remainder),
        // the rest plain.
        for len in [1usize, 8, 19] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    assert_eq!(
                        is_plain(&v),
                        is_plain_byte(b),
                        "byte {b:#x} at {pos} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn quote_escapes_like_go() {
        let mut s = Vec::new();
        quote_bytes(&mut s, b"a\"b\\c\n\x01\x7f\xff");
        assert_eq!(s, b"\"a\\\"b\\\\c\\n\\x01\\x7f\\xff\"");
    }

    #[test]
    fn quote_copies_printable_values_and_escapes_the_rest() {
        let mut s = Vec::new();
        quote_bytes(&mut s, b"curl/8.0 (x86_64; +https://x) ~");
        assert_eq!(s, b"\"curl/8.0 (x86_64; +https://x) ~\"");
        s.clear();
        quote_bytes(&mut s, "h\u{e9}llo \u{85}".as_bytes());
        assert_eq!(String::from_utf8(s).unwrap(), "\"h\u{e9}llo \\u0085\"");
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
        let dir = std::env::temp_dir().join(format!("al-end-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let (log, writer) = AccessLog::open(&path, &[]).unwrap();
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
        let (log, _h) = AccessLog::open(&path, &[]).unwrap();
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
