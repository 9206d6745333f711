//! Route keys: how a registered URI and a request's host and path are normalised (A.3).

/// Normalises a registered URI: lowercased, cut at the first `?`, trailing `/` trimmed.
pub fn route_key(uri: &str) -> String {
    let uri = uri.split('?').next().unwrap_or(uri);
    uri.trim_end_matches('/').to_ascii_lowercase()
}

/// Splits a normalised key into host and context path (`""` or `/a/b`).
pub fn split_route_key(key: &str) -> (&str, &str) {
    match key.find('/') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    }
}

/// Returns `s` lowercased, borrowing it when it has no uppercase ASCII (the usual case) and
/// writing into `buf` otherwise.
pub fn lowercase_into<'a>(s: &'a str, buf: &'a mut String) -> &'a str {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        buf.clear();
        buf.push_str(s);
        buf.make_ascii_lowercase();
        buf.as_str()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_key_normalises() {
        assert_eq!(route_key("Foo.COM/Bar/?x=1"), "foo.com/bar");
        assert_eq!(route_key("foo.com"), "foo.com");
        assert_eq!(
            route_key("foo.com:8080"),
            "foo.com:8080",
            "ports in URIs are kept"
        );
    }

    #[test]
    fn split_route_key_separates_context_path() {
        assert_eq!(split_route_key("a.com/x/y"), ("a.com", "/x/y"));
        assert_eq!(split_route_key("a.com"), ("a.com", ""));
    }

    #[test]
    fn lowercase_into_borrows_lowercase_input() {
        let mut buf = String::new();
        let s = "abc";
        assert!(std::ptr::eq(lowercase_into(s, &mut buf), s));
        assert_eq!(lowercase_into("AbC", &mut buf), "abc");
    }
}
