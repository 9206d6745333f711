//! Max request size (A.5, A.11): requests whose header block, measured as Go measures it, reaches
//! `max_header_bytes` are answered 431.

use http::header::{self, HeaderMap};
use http::Request;

use crate::proxy::errors::RouterError;

/// 431 when the request's computed header size reaches `max_header_bytes`.
pub fn check<B>(req: &Request<B>, host: &str, max_header_bytes: usize) -> Result<(), RouterError> {
    let size = request_header_size(
        req.method().as_str(),
        crate::proxy::request_target(req),
        crate::proxy::proto_str(req.version()),
        req.headers(),
        host,
    );
    if size >= max_header_bytes {
        return Err(RouterError::HeadersTooLarge);
    }
    Ok(())
}

/// Go's computed request header size (A.11), compared against `max_header_bytes`.
pub fn request_header_size(
    method: &str,
    request_uri: &str,
    proto: &str,
    headers: &HeaderMap,
    host: &str,
) -> usize {
    let mut size = method.len() + request_uri.len() + proto.len() + 5;
    // One pass over the values, no lookup by name: a name's values come one after another,
    // all borrowing the same key, so a key seen again is the same name's next value.
    let mut current: Option<&header::HeaderName> = None;
    for (name, value) in headers {
        if name == header::HOST {
            continue;
        }
        size += value.len();
        if current.is_some_and(|c| std::ptr::eq(c, name)) {
            // Go joins a name's values with one separator byte each.
            size += 1;
        } else {
            size += name.as_str().len() + 4;
            current = Some(name);
        }
    }
    size + host.len() + 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::tests::map;

    #[test]
    fn header_size_follows_go_formula() {
        let h = map(&[
            ("host", "a.com"),
            ("accept", "*/*"),
            ("x", "1"),
            ("x", "22"),
        ]);
        // GET / HTTP/1.1 -> 3+1+8+5 = 17; accept: 6+3+4 = 13; x: 1+3+4+1 = 9; host 5+8 = 13
        assert_eq!(request_header_size("GET", "/", "HTTP/1.1", &h, "a.com"), 52);
    }

    #[test]
    fn values_of_one_name_apart_in_the_request_count_as_one_name() {
        let h = map(&[
            ("x", "1"),
            ("accept", "*/*"),
            ("x", "22"),
            ("host", "ignored"),
            ("x", "333"),
        ]);
        // 17; x: 1 + (1+2+3) + 4 + 2 = 13; accept: 13; host a.com 13
        assert_eq!(request_header_size("GET", "/", "HTTP/1.1", &h, "a.com"), 56);
    }
}
