//! The operator's response header rewrite: upstream's `http_rewrite.responses`.
//!
//! Applied to every response the router sends, a backend's or the router's own: first every
//! header named in `remove_headers` is deleted (all its values), then each name of
//! `add_headers_if_not_present` that the response lacks gets all the values configured for
//! it, in order (upstream builds an `http.Header` with `Add`, so two entries with one name
//! give two values; a name the response already has is left as it is). Names compare
//! case-insensitively.
//!
//! Names and values are parsed once, in [`ResponseRewrite::new`], so that a bad entry is a
//! configuration error and [`ResponseRewrite::apply`] only clones prebuilt headers.

use http::header::{HeaderMap, HeaderName, HeaderValue};

const REMOVE_KEY: &str = "http_rewrite.responses.remove_headers";
const ADD_KEY: &str = "http_rewrite.responses.add_headers_if_not_present";

/// An entry of `http_rewrite.responses` that is no valid header name or value; `key` is the
/// entry's config path, e.g. `http_rewrite.responses.add_headers_if_not_present[1].name`.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("{key}: invalid header name {name:?}")]
    InvalidName { key: String, name: String },
    #[error("{key}: invalid header value {value:?}")]
    InvalidValue { key: String, value: String },
}

/// The compiled `http_rewrite.responses`.
#[derive(Debug, Clone, Default)]
pub struct ResponseRewrite {
    /// Distinct names.
    remove: Vec<HeaderName>,
    /// Distinct names in order of first appearance, each with its values in config order.
    add: Vec<(HeaderName, Vec<HeaderValue>)>,
}

impl ResponseRewrite {
    /// Compiles `remove_headers` (their names) and `add_headers_if_not_present` (name, value).
    pub fn new(remove: &[String], add: &[(String, String)]) -> Result<Self, RewriteError> {
        let mut rewrite = ResponseRewrite::default();
        for (i, name) in remove.iter().enumerate() {
            let name = header_name(name, || format!("{REMOVE_KEY}[{i}].name"))?;
            if !rewrite.remove.contains(&name) {
                rewrite.remove.push(name);
            }
        }
        for (i, (name, value)) in add.iter().enumerate() {
            let name = header_name(name, || format!("{ADD_KEY}[{i}].name"))?;
            let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
                RewriteError::InvalidValue {
                    key: format!("{ADD_KEY}[{i}].value"),
                    value: value.clone(),
                }
            })?;
            match rewrite.add.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => rewrite.add.push((name, vec![value])),
            }
        }
        Ok(rewrite)
    }

    /// Nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Rewrites a response's headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, values) in &self.add {
            if !headers.contains_key(name) {
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
    }
}

fn header_name(name: &str, key: impl FnOnce() -> String) -> Result<HeaderName, RewriteError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| RewriteError::InvalidName {
        key: key(),
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::header_map as headers;

    fn rewrite(remove: &[&str], add: &[(&str, &str)]) -> ResponseRewrite {
        let remove: Vec<String> = remove.iter().map(|s| s.to_string()).collect();
        let add: Vec<(String, String)> = add
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        ResponseRewrite::new(&remove, &add).expect("valid rewrite config")
    }

    fn values<'h>(h: &'h HeaderMap, name: &str) -> Vec<&'h str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII test value"))
            .collect()
    }

    #[test]
    fn removes_every_value_of_a_header() {
        let mut h = headers(&[("x-foo", "1"), ("x-foo", "2"), ("x-keep", "k")]);
        rewrite(&["X-Foo"], &[]).apply(&mut h);
        assert!(!h.contains_key("x-foo"));
        assert_eq!(values(&h, "x-keep"), ["k"]);
    }

    #[test]
    fn removes_names_case_insensitively() {
        let mut h = headers(&[("server", "app")]);
        rewrite(&["SERVER"], &[]).apply(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn adds_a_header_the_response_lacks() {
        let mut h = HeaderMap::new();
        rewrite(&[], &[("Strict-Transport-Security", "max-age=31536000")]).apply(&mut h);
        assert_eq!(
            values(&h, "strict-transport-security"),
            ["max-age=31536000"]
        );
    }

    #[test]
    fn leaves_a_present_header_untouched() {
        let mut h = headers(&[("x-a", "app1"), ("x-a", "app2")]);
        rewrite(&[], &[("x-A", "1"), ("X-A", "2")]).apply(&mut h);
        assert_eq!(values(&h, "x-a"), ["app1", "app2"]);
    }

    #[test]
    fn adds_all_values_configured_for_one_name_in_order() {
        let mut h = HeaderMap::new();
        rewrite(&[], &[("X-A", "1"), ("X-B", "b"), ("x-a", "2")]).apply(&mut h);
        assert_eq!(values(&h, "x-a"), ["1", "2"]);
        assert_eq!(values(&h, "x-b"), ["b"]);
    }

    #[test]
    fn removal_happens_before_adding() {
        let mut h = headers(&[("x-a", "app")]);
        rewrite(&["X-A"], &[("X-A", "router")]).apply(&mut h);
        assert_eq!(values(&h, "x-a"), ["router"]);
    }

    #[test]
    fn applying_twice_changes_nothing_more() {
        let r = rewrite(&["X-Foo"], &[("X-A", "1"), ("X-A", "2")]);
        let mut h = headers(&[("x-foo", "f")]);
        r.apply(&mut h);
        r.apply(&mut h);
        assert_eq!(values(&h, "x-a"), ["1", "2"]);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn empty_value_is_allowed() {
        let mut h = HeaderMap::new();
        rewrite(&[], &[("X-Empty", "")]).apply(&mut h);
        assert_eq!(values(&h, "x-empty"), [""]);
    }

    #[test]
    fn is_empty_only_without_entries() {
        assert!(rewrite(&[], &[]).is_empty());
        assert!(ResponseRewrite::default().is_empty());
        assert!(!rewrite(&["X-Foo"], &[]).is_empty());
        assert!(!rewrite(&[], &[("X-A", "1")]).is_empty());
    }

    #[test]
    fn invalid_remove_name_is_an_error() {
        let e = ResponseRewrite::new(&["X-Ok".into(), "".into()], &[]).expect_err("empty name");
        assert_eq!(
            e.to_string(),
            "http_rewrite.responses.remove_headers[1].name: invalid header name \"\""
        );
    }

    #[test]
    fn invalid_add_name_is_an_error() {
        let add = [
            ("X-A".to_string(), "1".to_string()),
            ("a b".into(), "2".into()),
        ];
        let e = ResponseRewrite::new(&[], &add).expect_err("name with a space");
        assert_eq!(
            e.to_string(),
            "http_rewrite.responses.add_headers_if_not_present[1].name: invalid header name \"a b\""
        );
    }

    #[test]
    fn invalid_add_value_is_an_error() {
        let add = [("X-A".to_string(), "line\nbreak".to_string())];
        let e = ResponseRewrite::new(&[], &add).expect_err("value with a newline");
        assert_eq!(
            e.to_string(),
            "http_rewrite.responses.add_headers_if_not_present[0].value: \
             invalid header value \"line\\nbreak\""
        );
    }

    #[test]
    fn non_ascii_value_is_allowed() {
        let mut h = HeaderMap::new();
        rewrite(&[], &[("X-U", "café")]).apply(&mut h);
        assert_eq!(
            h.get("x-u").map(HeaderValue::as_bytes),
            Some("café".as_bytes())
        );
    }
}
