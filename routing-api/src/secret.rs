//! [`Secret`]: a configured secret (a database password) whose `Debug` output is redacted, so
//! that printing a config (`{:?}`, a panic message, a log line) never shows it. There is no
//! `Display`: the value is only reachable through [`Secret::expose`], at the one place that
//! hands it to a client library.

use serde::Deserialize;

/// A secret string from the config file.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whether one is set is useful when debugging a config; its value never is.
        f.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(
            format!("{:#?}", Some(s.clone())),
            "Some(\n    <redacted>,\n)"
        );
        assert_eq!(format!("{:?}", Secret::default()), "<empty>");
        assert_eq!(s.expose(), "hunter2");
    }
}
