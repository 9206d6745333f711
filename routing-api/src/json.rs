//! JSON exactly as upstream's Go code writes it, shared by the REST bodies ([`crate::api`]) and
//! the event streams ([`crate::events`]).

use serde::Serialize;

/// JSON the way Go's encoder writes it (response bodies and event data alike): `<`, `>` and
/// `&` escaped inside strings (they can only appear inside strings, so a byte replacement is
/// exact).
pub fn go_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(value)?;
    if !json.iter().any(|b| matches!(b, b'<' | b'>' | b'&')) {
        return Ok(json);
    }
    let mut out = Vec::with_capacity(json.len() + 16);
    for b in json {
        match b {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            b => out.push(b),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_characters_are_escaped_inside_strings_only_when_present() {
        assert_eq!(go_json(&"a<b>&c").unwrap(), br#""a\u003cb\u003e\u0026c""#);
        assert_eq!(
            go_json(&serde_json::json!({"n": 1})).unwrap(),
            br#"{"n":1}"#
        );
    }
}
