//! `X-CF-App-Instance` (A.5, A.7): a request may name one app instance (`<app-guid>:<index>`);
//! a malformed value is refused before the lookup.

use http::header::{HeaderMap, HeaderValue};

use crate::proxy::errors::RouterError;
use crate::proxy::headers::{has_header, X_CF_APP_INSTANCE};

/// The app instance the request names, if any.
pub fn requested(headers: &HeaderMap) -> Result<Option<(String, String)>, RouterError> {
    if !has_header(headers, &X_CF_APP_INSTANCE) {
        return Ok(None);
    }
    match headers.get(&X_CF_APP_INSTANCE) {
        Some(v) => match parse_app_instance(v) {
            Some((g, i)) => Ok(Some((g.to_string(), i.to_string()))),
            None => Err(RouterError::InvalidAppInstanceHeader),
        },
        None => Ok(None),
    }
}

/// Parses `X-CF-App-Instance: <app-guid>:<index>` (A.5's pattern). `None` when malformed.
pub fn parse_app_instance(value: &HeaderValue) -> Option<(&str, &str)> {
    let s = value.to_str().ok()?;
    let (guid, index) = s.split_once(':')?;
    let groups: Vec<&str> = guid.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let guid_ok = groups.len() == 5
        && groups.iter().zip(lens).all(|(g, l)| {
            g.len() == l
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    let index_ok = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
    (guid_ok && index_ok).then_some((guid, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_instance_header_pattern() {
        let ok = HeaderValue::from_static("6e6b2f1e-0000-4000-8000-0123456789ab:12");
        assert_eq!(
            parse_app_instance(&ok),
            Some(("6e6b2f1e-0000-4000-8000-0123456789ab", "12"))
        );
        for bad in [
            "6E6B2F1E-0000-4000-8000-0123456789ab:1",
            "6e6b2f1e-0000-4000-8000-0123456789ab",
            "6e6b2f1e-0000-4000-8000-0123456789ab:x",
            "nope:1",
        ] {
            assert_eq!(
                parse_app_instance(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
    }
}
