//! HTTP/1 wire details the inline client (`transport::inline`) and the inline server
//! (`listener::http1`) share: header names read and written in Go's case, where httparse's
//! slices lie in the buffer they were parsed from, how `Content-Length` and
//! transfer-coding values read, and where in its read buffer the next message lands.

use bytes::BytesMut;
use http::header::{self, HeaderName, InvalidHeaderName};

/// Moves an empty read buffer back to the start of its allocation when nothing else points
/// into it any more (the messages split off it are gone), so each message on a connection
/// lands in the same cache lines. Reading on from where the last message ended would walk
/// every connection through its whole buffer, and with hundreds of connections each read
/// would land in lines long gone from the cache. `size` is the buffer's usual size: below it,
/// the buffer has moved on. Never allocates or copies; a buffer still shared stays as it is.
pub fn rewind(buf: &mut BytesMut, size: usize) {
    if buf.is_empty() && buf.capacity() < size {
        // `false` when shared (or never allocated): then the caller's usual reserve applies.
        let _rewound = buf.try_reclaim(size);
    }
}

/// A header name read off the wire. The names nearly every message carries, spelled as
/// clients and backends spell them (Go's canonical case, or lower case), are matched whole;
/// any other goes through `HeaderName::from_bytes`, which lower-cases it into a buffer and
/// then looks it up among the standard names: about 140 instructions a name, where the match
/// takes 20.
pub fn header_name(name: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    // By length first: a match on byte strings compares them one arm after another.
    let known = match name.len() {
        4 => match name {
            b"Host" | b"host" => Some(header::HOST),
            b"Date" | b"date" => Some(header::DATE),
            b"Etag" | b"ETag" | b"etag" => Some(header::ETAG),
            b"Vary" | b"vary" => Some(header::VARY),
            _ => None,
        },
        6 => match name {
            b"Accept" | b"accept" => Some(header::ACCEPT),
            b"Cookie" | b"cookie" => Some(header::COOKIE),
            b"Server" | b"server" => Some(header::SERVER),
            _ => None,
        },
        8 if name == b"Location" || name == b"location" => Some(header::LOCATION),
        10 => match name {
            b"User-Agent" | b"user-agent" => Some(header::USER_AGENT),
            b"Connection" | b"connection" => Some(header::CONNECTION),
            b"Set-Cookie" | b"set-cookie" => Some(header::SET_COOKIE),
            _ => None,
        },
        12 if name == b"Content-Type" || name == b"content-type" => Some(header::CONTENT_TYPE),
        13 => match name {
            b"Cache-Control" | b"cache-control" => Some(header::CACHE_CONTROL),
            b"Last-Modified" | b"last-modified" => Some(header::LAST_MODIFIED),
            b"Accept-Ranges" | b"accept-ranges" => Some(header::ACCEPT_RANGES),
            _ => None,
        },
        14 if name == b"Content-Length" || name == b"content-length" => {
            Some(header::CONTENT_LENGTH)
        }
        15 => match name {
            b"Accept-Encoding" | b"accept-encoding" => Some(header::ACCEPT_ENCODING),
            b"Accept-Language" | b"accept-language" => Some(header::ACCEPT_LANGUAGE),
            _ => None,
        },
        16 if name == b"Content-Encoding" || name == b"content-encoding" => {
            Some(header::CONTENT_ENCODING)
        }
        17 if name == b"Transfer-Encoding" || name == b"transfer-encoding" => {
            Some(header::TRANSFER_ENCODING)
        }
        _ => None,
    };
    match known {
        Some(known) => Ok(known),
        None => HeaderName::from_bytes(name),
    }
}

/// The Go-case spelling of the lower-case names nearly every request and response carries,
/// matched by length and bytes: a name written per header of every message, where
/// [`write_title_case`] looks at each byte (about 60 instructions a name).
fn known_title_case(name: &[u8]) -> Option<&'static [u8]> {
    Some(match name.len() {
        4 => match name {
            b"host" => b"Host",
            b"date" => b"Date",
            b"etag" => b"Etag",
            b"vary" => b"Vary",
            _ => return None,
        },
        6 => match name {
            b"accept" => b"Accept",
            b"cookie" => b"Cookie",
            b"server" => b"Server",
            b"origin" => b"Origin",
            b"pragma" => b"Pragma",
            b"expect" => b"Expect",
            _ => return None,
        },
        7 => match name {
            b"referer" => b"Referer",
            b"upgrade" => b"Upgrade",
            b"expires" => b"Expires",
            _ => return None,
        },
        8 if name == b"location" => b"Location",
        10 => match name {
            b"user-agent" => b"User-Agent",
            b"connection" => b"Connection",
            b"set-cookie" => b"Set-Cookie",
            b"keep-alive" => b"Keep-Alive",
            b"tracestate" => b"Tracestate",
            _ => return None,
        },
        11 => match name {
            b"x-b3-spanid" => b"X-B3-Spanid",
            b"traceparent" => b"Traceparent",
            _ => return None,
        },
        12 => match name {
            b"content-type" => b"Content-Type",
            b"x-b3-traceid" => b"X-B3-Traceid",
            _ => return None,
        },
        13 => match name {
            b"cache-control" => b"Cache-Control",
            b"last-modified" => b"Last-Modified",
            b"accept-ranges" => b"Accept-Ranges",
            b"authorization" => b"Authorization",
            _ => return None,
        },
        14 if name == b"content-length" => b"Content-Length",
        15 => match name {
            b"accept-encoding" => b"Accept-Encoding",
            b"accept-language" => b"Accept-Language",
            b"x-forwarded-for" => b"X-Forwarded-For",
            b"x-request-start" => b"X-Request-Start",
            b"x-cf-instanceid" => b"X-Cf-Instanceid",
            _ => return None,
        },
        16 if name == b"content-encoding" => b"Content-Encoding",
        17 => match name {
            b"transfer-encoding" => b"Transfer-Encoding",
            b"x-forwarded-proto" => b"X-Forwarded-Proto",
            b"x-vcap-request-id" => b"X-Vcap-Request-Id",
            _ => return None,
        },
        18 => match name {
            b"x-cf-applicationid" => b"X-Cf-Applicationid",
            b"x-cf-instanceindex" => b"X-Cf-Instanceindex",
            _ => return None,
        },
        _ => return None,
    })
}

/// Appends a lower-case header name in Go's canonical case (hyper's `title_case_headers`):
/// the first letter and each one after a `-` upper-cased.
pub fn write_title_case(dst: &mut Vec<u8>, name: &[u8]) {
    if let Some(known) = known_title_case(name) {
        dst.extend_from_slice(known);
        return;
    }
    let start = dst.len();
    dst.extend_from_slice(name);
    let mut upper_next = true;
    for c in &mut dst[start..] {
        if upper_next {
            c.make_ascii_uppercase();
        }
        upper_next = *c == b'-';
    }
}

/// Where `part` lies in `buf`, as a range. httparse hands back slices of `buf`, except for an
/// empty part (a missing reason phrase, one with obs-text), which may be a `""` of its own: an
/// empty part outside `buf` is the empty range at 0. `None` for bytes that are not in `buf`.
pub fn range_in(buf: &[u8], part: &[u8]) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize);
    match start {
        Some(start) if start + part.len() <= buf.len() => Some((start, start + part.len())),
        _ if part.is_empty() => Some((0, 0)),
        _ => None,
    }
}

/// Whether the last item of a comma-separated value is `token` (case-insensitive): the
/// transfer coding that decides a message's framing.
pub fn last_token_is(value: &[u8], token: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A `Content-Length` value as hyper reads one: a length, or a list of equal lengths.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let n = parse_decimal(part.trim_ascii())?;
        match found {
            Some(m) if m != n => return None,
            _ => found = Some(n),
        }
    }
    found
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then_some(())
            .and_then(|()| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A buffer of `size` bytes whose first message, `b"GET / HTTP/1.1\r\n\r\n"`, was read
    /// and split off; returns the allocation's start and the message.
    fn read_one(size: usize) -> (BytesMut, *const u8, Bytes) {
        let mut buf = BytesMut::with_capacity(size);
        let start = buf.as_ptr();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let message = buf.split_to(buf.len()).freeze();
        (buf, start, message)
    }

    #[test]
    fn an_emptied_buffer_goes_back_to_the_start_of_its_allocation() {
        let (mut buf, start, message) = read_one(8192);
        drop(message);
        assert_ne!(buf.as_ptr(), start, "the message moved the buffer on");
        rewind(&mut buf, 8192);
        assert_eq!(buf.as_ptr(), start);
        assert!(buf.capacity() >= 8192);
    }

    #[test]
    fn a_buffer_a_message_still_points_into_stays_where_it_is() {
        let (mut buf, _, message) = read_one(8192);
        let at = buf.as_ptr();
        rewind(&mut buf, 8192);
        assert_eq!(buf.as_ptr(), at);
        assert_eq!(&message[..], b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_buffer_with_unread_bytes_is_not_moved() {
        let (mut buf, _, message) = read_one(8192);
        drop(message);
        buf.extend_from_slice(b"GET /next");
        let at = buf.as_ptr();
        rewind(&mut buf, 8192);
        assert_eq!(buf.as_ptr(), at);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn a_buffer_never_allocated_stays_unallocated() {
        let mut buf = BytesMut::new();
        rewind(&mut buf, 8192);
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn a_name_matched_whole_is_the_name_the_general_parse_gives() {
        for name in [
            "Host",
            "host",
            "User-Agent",
            "Accept",
            "accept-encoding",
            "Accept-Language",
            "Connection",
            "cookie",
            "Content-Type",
            "Content-Length",
            "Date",
            "Server",
            "Cache-Control",
            "Last-Modified",
            "Etag",
            "ETag",
            "etag",
            "Accept-Ranges",
            "Transfer-Encoding",
            "Content-Encoding",
            "Vary",
            "Location",
            "Set-Cookie",
            "X-Forwarded-For",
            "HOST",
            "x-custom",
        ] {
            assert_eq!(
                header_name(name.as_bytes()).unwrap(),
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "{name}"
            );
        }
        assert!(header_name(b"bad name").is_err());
        assert!(header_name(b"").is_err());
    }

    #[test]
    fn header_names_are_written_in_go_case() {
        let mut dst = Vec::new();
        for name in ["x-b3-traceid", "content-type", "te", "x--y"] {
            write_title_case(&mut dst, name.as_bytes());
            dst.push(b' ');
        }
        assert_eq!(dst, b"X-B3-Traceid Content-Type Te X--Y ");
    }

    #[test]
    fn a_known_name_is_written_as_the_byte_by_byte_rule_writes_it() {
        let generic = |name: &[u8]| {
            let mut out = name.to_vec();
            let mut upper_next = true;
            for c in &mut out {
                if upper_next {
                    c.make_ascii_uppercase();
                }
                upper_next = *c == b'-';
            }
            out
        };
        let names = [
            "host",
            "date",
            "etag",
            "vary",
            "accept",
            "cookie",
            "server",
            "origin",
            "pragma",
            "expect",
            "referer",
            "upgrade",
            "expires",
            "location",
            "user-agent",
            "connection",
            "set-cookie",
            "keep-alive",
            "content-type",
            "cache-control",
            "last-modified",
            "accept-ranges",
            "authorization",
            "content-length",
            "accept-encoding",
            "accept-language",
            "x-forwarded-for",
            "x-request-start",
            "content-encoding",
            "x-cf-instanceid",
            "transfer-encoding",
            "x-forwarded-proto",
            "x-vcap-request-id",
            "x-cf-applicationid",
            "x-cf-instanceindex",
            "x-b3-traceid",
            "x-b3-spanid",
            "traceparent",
            "tracestate",
        ];
        for name in names {
            assert_eq!(
                known_title_case(name.as_bytes()),
                Some(generic(name.as_bytes()).as_slice()),
                "{name}"
            );
        }
        for other in ["x-custom", "hosts", "content-typ", ""] {
            assert_eq!(known_title_case(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn content_length_is_one_length_or_a_list_of_equal_ones() {
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b"7, 7 ,7"), Some(7));
        assert_eq!(content_length(b"7, 8"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"+1"), None);
        assert_eq!(content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn the_last_coding_decides() {
        assert!(last_token_is(b"gzip, Chunked ", b"chunked"));
        assert!(!last_token_is(b"chunked, gzip", b"chunked"));
    }

    #[test]
    fn slices_are_found_in_their_buffer_and_an_empty_one_anywhere() {
        let buf = b"HTTP/1.1 200 OK";
        assert_eq!(range_in(buf, &buf[9..12]), Some((9, 12)));
        assert_eq!(range_in(buf, b""), Some((0, 0)));
        assert_eq!(range_in(buf, b"elsewhere"), None);
    }
}
