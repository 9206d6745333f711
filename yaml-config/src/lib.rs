//! Loading upstream's YAML config files: unknown keys collected (so a rendered BOSH config
//! loads, with a warning per key) and Go `time.Duration` values (`"30s"`, `"1m30s"`, or a bare
//! integer of nanoseconds, as Go's YAML decoders read them). Shared by every component.
//!
//! A component's `Config::load` is [`load_file`] (read, parse, unknown keys; a [`LoadError`]
//! naming the file) followed by its own validation; values several components share are parsed
//! here too ([`parse_go_duration`], [`parse_ip_address`]).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
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

/// A config that could not be loaded: the file could not be read, or its text is not YAML of
/// the expected shape. The message names the file and says why (the OS error, or the parser's
/// message with the line and column).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read: missing, not readable, or not UTF-8.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but did not parse.
    #[error("config file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: YamlError },
    /// Config text that came from no file did not parse (a component's `from_yaml`).
    #[error("config is not valid: {0}")]
    Text(#[from] YamlError),
}

/// Reads the config file at `path` and parses it with [`from_yaml_reporting_unknown`]:
/// the value and the dotted paths of the keys `T` does not know (for the caller to warn
/// about). An empty file gives `T::default()`.
pub fn load_file<T: DeserializeOwned + Default>(
    path: &Path,
) -> Result<(T, Vec<String>), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_yaml_reporting_unknown(&text).map_err(|source| LoadError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses an IP address config value (such as `bind_address`): IPv4 or IPv6, surrounding
/// white space ignored, no port, no brackets, no host name. The error message quotes the
/// value and shows what to write instead; callers prefix it with the key.
pub fn parse_ip_address(text: &str) -> Result<IpAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::1; no port, no brackets)"
        )
    })
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

/// One warning for each `(key, value)` that is above zero but under a millisecond: almost
/// certainly a bare integer (which Go, and [`GoDuration`], read as nanoseconds) meant as
/// seconds. The warning names the key and shows how to write a duration.
pub fn bare_nanosecond_warnings(durations: &[(&str, GoDuration)]) -> Vec<String> {
    durations
        .iter()
        .filter(|(_, d)| !d.0.is_zero() && d.0 < Duration::from_millis(1))
        .map(|(key, d)| {
            format!(
                "config key `{key}` is {:?}: a bare number is nanoseconds, as upstream reads it; write e.g. \"30s\"",
                d.0
            )
        })
        .collect()
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

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Small {
        port: u16,
    }

    /// A file in a fresh temporary directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn with(name: &str, contents: &[u8]) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("yaml-config-test-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn load_file_parses_and_reports_unknown_keys() {
        let f = TempFile::with(
            "ok.yml",
            b"port: 8081
zzz: 1
",
        );
        let (doc, unknown) = load_file::<Small>(&f.0).unwrap();
        assert_eq!(doc.port, 8081);
        assert_eq!(unknown, vec!["zzz"]);
        let f = TempFile::with("empty.yml", b"\n");
        assert_eq!(load_file::<Small>(&f.0).unwrap().0.port, 0);
    }

    #[test]
    fn load_file_names_a_missing_file() {
        let e = load_file::<Small>(Path::new("/nonexistent/x.yml")).unwrap_err();
        assert!(matches!(e, LoadError::Read { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot read config file /nonexistent/x.yml: "),
            "{msg}"
        );
    }

    #[test]
    fn load_file_names_the_file_and_the_parse_error() {
        let f = TempFile::with("bad.yml", b"port: [unclosed\n");
        let e = load_file::<Small>(&f.0).unwrap_err();
        assert!(matches!(e, LoadError::Parse { .. }), "{e:?}");
        let msg = e.to_string();
        let prefix = format!("config file {} is not valid: ", f.0.display());
        assert!(msg.starts_with(&prefix), "{msg}");
        assert!(msg.contains("line"), "no position in: {msg}");
        let f = TempFile::with("type.yml", b"port: high\n");
        let msg = load_file::<Small>(&f.0).unwrap_err().to_string();
        assert!(
            msg.contains("port") && msg.contains("is not valid"),
            "{msg}"
        );
    }

    #[test]
    fn load_file_refuses_non_utf8() {
        let f = TempFile::with("latin1.yml", b"zone: caf\xe9\n");
        let e = load_file::<Small>(&f.0).unwrap_err();
        assert!(matches!(e, LoadError::Read { .. }), "{e:?}");
    }

    #[test]
    fn text_errors_convert_without_a_path() {
        let e: LoadError = from_yaml_reporting_unknown::<Small>("port: [\n")
            .unwrap_err()
            .into();
        assert!(e.to_string().starts_with("config is not valid: "), "{e}");
    }

    #[test]
    fn sub_millisecond_durations_are_warned_about() {
        let w = bare_nanosecond_warnings(&[
            ("a", GoDuration(Duration::from_nanos(30))),
            ("zero", GoDuration(Duration::ZERO)),
            ("ms", GoDuration(Duration::from_millis(1))),
            ("b", GoDuration(Duration::from_micros(999))),
        ]);
        assert_eq!(
            w,
            vec![
                "config key `a` is 30ns: a bare number is nanoseconds, as upstream reads it; write e.g. \"30s\"",
                "config key `b` is 999µs: a bare number is nanoseconds, as upstream reads it; write e.g. \"30s\"",
            ]
        );
    }

    #[test]
    fn ip_addresses_parse() {
        assert_eq!(
            parse_ip_address("127.0.0.1").unwrap(),
            IpAddr::from([127, 0, 0, 1])
        );
        assert_eq!(
            parse_ip_address(" ::1 ").unwrap(),
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse_ip_address("::").unwrap(),
            "::".parse::<IpAddr>().unwrap()
        );
        for bad in ["localhost", "127.0.0.1:80", "[::1]", "", "300.1.1.1"] {
            assert_eq!(
                parse_ip_address(bad).unwrap_err(),
                format!(
                    "{bad:?} is not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::1; no port, no brackets)"
                )
            );
        }
    }

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
