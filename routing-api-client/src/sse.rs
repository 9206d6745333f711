//! An incremental `text/event-stream` parser (the WHATWG "server-sent events" rules).
//!
//! Bytes go in as they arrive, in chunks split anywhere (inside a line, between `\r` and `\n`,
//! inside a UTF-8 sequence); complete messages come out. Lines end with `\r\n`, `\n` or `\r`.
//! Lines starting with `:` are comments (keep-alives) and ignored. `data:` lines accumulate,
//! joined with `\n`; a blank line ends the message. A message without any `data` line is
//! dropped, as browsers do. `id` persists across messages until changed; `retry` is recorded.
//! A field name is everything before the first `:`; one space after the colon is dropped.
//! Unknown fields are ignored. A leading UTF-8 byte-order mark is skipped.

use std::mem;

/// One dispatched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// The last event id seen on the stream (empty if none yet).
    pub id: String,
    /// The `event:` name; `message` if the message had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The stream broke a limit of the parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("event stream line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("event stream message larger than {0} bytes")]
    MessageTooLarge(usize),
}

/// Default bound on one line and on one message's data (4 MiB).
pub const DEFAULT_MAX_SIZE: usize = 4 << 20;

/// Incremental parser state; see the module docs.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    at_start: bool,
    last_id: String,
    event: String,
    data: String,
    has_data: bool,
    retry: Option<u64>,
    max_size: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_max_size(DEFAULT_MAX_SIZE)
    }

    /// A parser that refuses lines or messages larger than `max_size` bytes.
    pub fn with_max_size(max_size: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            last_id: String::new(),
            event: String::new(),
            data: String::new(),
            has_data: false,
            retry: None,
            max_size,
        }
    }

    /// The last `retry:` value (milliseconds), if the server sent one.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id seen.
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// Feeds the next chunk; complete messages are appended to `out`. After an error the
    /// stream is unusable (state is reset, but data may have been lost).
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseMessage>) -> Result<(), SseError> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = chunk.split_at(pos);
            self.push_bytes(head)?;
            let line = mem::take(&mut self.line);
            let result = self.process_line(&line, out);
            self.line = line;
            self.line.clear();
            result?;
            // Skip the terminator: `\n`, `\r\n` or a lone `\r`.
            chunk = &tail[1..];
            if tail[0] == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_bytes(chunk)
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.max_size {
            self.reset();
            return Err(SseError::LineTooLong(self.max_size));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn reset(&mut self) {
        self.line.clear();
        self.event.clear();
        self.data.clear();
        self.has_data = false;
    }

    fn process_line(&mut self, raw: &[u8], out: &mut Vec<SseMessage>) -> Result<(), SseError> {
        let mut raw = raw;
        if mem::take(&mut self.at_start) {
            if let Some(rest) = raw.strip_prefix("\u{feff}".as_bytes()) {
                raw = rest;
            }
        }
        if raw.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if raw[0] == b':' {
            return Ok(());
        }
        let line = String::from_utf8_lossy(raw);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_size {
                    self.reset();
                    return Err(SseError::MessageTooLarge(self.max_size));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseMessage>) {
        let event = mem::take(&mut self.event);
        if !mem::take(&mut self.has_data) {
            self.data.clear();
            return;
        }
        out.push(SseMessage {
            id: self.last_id.clone(),
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data: mem::take(&mut self.data),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP_CAPTURE: &str = include_str!("../tests/fixtures/routing-api-sse-http.txt");
    const TCP_CAPTURE: &str = include_str!("../tests/fixtures/routing-api-sse-tcp.txt");

    /// The event-stream part of a capture (after the response head).
    fn stream_of(capture: &str) -> &str {
        let start = capture.find("\r\n\r\n").expect("response head") + 4;
        &capture[start..]
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseMessage> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn parse_split_every(input: &[u8], n: usize) -> Vec<SseMessage> {
        let chunks: Vec<&[u8]> = input.chunks(n).collect();
        parse_all(&chunks)
    }

    fn msg(id: &str, event: &str, data: &str) -> SseMessage {
        SseMessage {
            id: id.into(),
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn captured_http_stream() {
        let stream = stream_of(HTTP_CAPTURE);
        let out = parse_all(&[stream.as_bytes()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, "0");
        assert_eq!(out[0].event, "Upsert");
        assert!(out[0]
            .data
            .starts_with(r#"{"route":"myapp.example.com","port":9001"#));
        assert!(out[0].data.ends_with("}"));
        assert_eq!(out[1].id, "1");
        assert_eq!(out[1].event, "Delete");
        assert_eq!(out[0].data, out[1].data);
    }

    #[test]
    fn captured_tcp_stream() {
        let stream = stream_of(TCP_CAPTURE);
        let out = parse_all(&[stream.as_bytes()]);
        let ids: Vec<_> = out.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["0", "1", "2", "3"]);
        assert!(out.iter().all(|m| m.event == "Upsert"));
        assert!(out[2]
            .data
            .contains(r#""backend_sni_hostname":"sni.example.com""#));
    }

    #[test]
    fn every_split_of_the_captures_gives_the_same_messages() {
        for capture in [HTTP_CAPTURE, TCP_CAPTURE] {
            let stream = stream_of(capture).as_bytes();
            let whole = parse_all(&[stream]);
            for n in 1..=17 {
                assert_eq!(parse_split_every(stream, n), whole, "chunk size {n}");
            }
            // Every single split point, in two pieces.
            for i in 0..=stream.len() {
                let (a, b) = stream.split_at(i);
                assert_eq!(parse_all(&[a, b]), whole, "split at {i}");
            }
        }
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        for capture in [HTTP_CAPTURE, TCP_CAPTURE] {
            let lf = stream_of(capture);
            let whole = parse_all(&[lf.as_bytes()]);
            let crlf = lf.replace('\n', "\r\n");
            let cr = lf.replace('\n', "\r");
            for n in [1, 2, 3, 7, 64] {
                assert_eq!(parse_split_every(crlf.as_bytes(), n), whole, "crlf/{n}");
                assert_eq!(parse_split_every(cr.as_bytes(), n), whole, "cr/{n}");
            }
        }
    }

    #[test]
    fn cr_at_chunk_end_then_lf() {
        let out = parse_all(&[b"data: a\r", b"\n\r", b"\n"]);
        assert_eq!(out, [msg("", "message", "a")]);
        // A lone CR followed by a new line in the next chunk.
        let out = parse_all(&[b"data: a\r", b"data: b\r", b"\r"]);
        assert_eq!(out, [msg("", "message", "a\nb")]);
    }

    #[test]
    fn comments_are_ignored() {
        let out = parse_all(&[
            b":\n\n: keep-alive\n\nid: 7\n: in the middle\nevent: Upsert\ndata: {}\n\n:ping\n",
        ]);
        assert_eq!(out, [msg("7", "Upsert", "{}")]);
    }

    #[test]
    fn multi_line_data_is_joined() {
        let out = parse_all(&[b"event: x\ndata: one\ndata:two\ndata\ndata:  three\n\n"]);
        assert_eq!(out, [msg("", "x", "one\ntwo\n\n three")]);
    }

    #[test]
    fn field_without_colon_and_unknown_fields() {
        let out = parse_all(&[b"data\nfoo: bar\nevent\n\n"]);
        assert_eq!(out, [msg("", "message", "")]);
    }

    #[test]
    fn message_without_data_is_dropped_but_id_persists() {
        let out = parse_all(&[b"id: 5\nevent: Upsert\n\nevent: Delete\ndata: d\n\n"]);
        assert_eq!(out, [msg("5", "Delete", "d")]);
    }

    #[test]
    fn id_persists_and_can_be_cleared() {
        let out =
            parse_all(&[b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n"]);
        let ids: Vec<_> = out.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["1", "1", "", ""]);
    }

    #[test]
    fn incomplete_message_is_not_dispatched() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"id: 1\nevent: Upsert\ndata: {\"a\":1}\n", &mut out)
            .unwrap();
        assert!(out.is_empty());
        p.feed(b"\n", &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn utf8_split_across_chunks() {
        let input = "data: héllo → wörld\n\n".as_bytes();
        for n in 1..6 {
            assert_eq!(
                parse_split_every(input, n),
                [msg("", "message", "héllo → wörld")]
            );
        }
    }

    #[test]
    fn bom_is_skipped_only_at_start() {
        let out = parse_all(&[b"\xEF\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(out, [msg("", "message", "a")]);
    }

    #[test]
    fn retry_is_recorded() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"retry: 1500\nretry: x\n\n", &mut out).unwrap();
        assert_eq!(p.retry(), Some(1500));
        assert!(out.is_empty());
    }

    #[test]
    fn limits() {
        let mut p = SseParser::with_max_size(16);
        let mut out = Vec::new();
        assert_eq!(
            p.feed(b"data: 0123456789abcdef", &mut out),
            Err(SseError::LineTooLong(16))
        );
        let mut p = SseParser::with_max_size(16);
        assert_eq!(
            p.feed(b"data: 0123456789\ndata: 0123456789\n", &mut out),
            Err(SseError::MessageTooLarge(16))
        );
    }
}
