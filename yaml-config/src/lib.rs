//! Loading upstream's YAML config files: unknown keys collected (so a rendered BOSH config
//! loads, with a warning per key) and Go `time.Duration` values (`"30s"`, `"1m30s"`, or a bare
//! integer of nanoseconds, as Go's YAML decoders read them). Shared by every component.

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;

/// A document that did not parse; the message says where and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(pub String);

/// Parses `text` into `T`, returning the dotted paths of keys `T` does not know. An empty
/// document gives `T::default()`.
pub fn from_yaml_reporting_unknown<T: DeserializeOwned + Default>(
    text: &str,
) -> Result<(T, Vec<String>), YamlError> {
    let mut unknown = Vec::new();
    if text.trim().is_empty() {
        return Ok((T::default(), unknown));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let value = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
        .map_err(|e: serde_yaml_ng::Error| YamlError(e.to_string()))?;
    Ok((value, unknown))
}

/// A duration written the way Go's YAML decoder reads `time.Duration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"1m30s\" or \"250ms\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                Ok(GoDuration(Duration::from_nanos(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                u64::try_from(v)
                    .map(|n| GoDuration(Duration::from_nanos(n)))
                    .map_err(|_| E::custom("a duration must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_go_duration(v).map(GoDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Parses Go's `time.ParseDuration` syntax: a sequence of decimal numbers with units
/// `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; `"0"` alone is zero. Negative durations are refused.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. \"30s\", \"1m30s\" or \"250ms\"");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() || t.starts_with('-') {
        return Err(bad());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += value * nanos_per;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(
            parse_go_duration("1h2m3s").unwrap(),
            Duration::from_secs(3723)
        );
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn unknown_keys_are_collected_with_paths() {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Doc {
            a: u16,
            inner: Inner,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Inner {
            b: bool,
        }
        let (doc, unknown) =
            from_yaml_reporting_unknown::<Doc>("a: 3\nzzz: 1\ninner: {b: true, c: 2}\n").unwrap();
        assert_eq!(doc.a, 3);
        assert!(doc.inner.b);
        assert_eq!(unknown, vec!["zzz", "inner.c"]);
    }

    #[test]
    fn go_duration_from_string_and_integer() {
        #[derive(Deserialize, Default)]
        struct Doc {
            d: GoDuration,
            n: GoDuration,
        }
        let (doc, _) = from_yaml_reporting_unknown::<Doc>("d: 1m30s\nn: 1500\n").unwrap();
        assert_eq!(doc.d.0, Duration::from_secs(90));
        assert_eq!(doc.n.0, Duration::from_nanos(1500));
        assert!(from_yaml_reporting_unknown::<Doc>("d: soon\nn: 0\n").is_err());
    }
}
