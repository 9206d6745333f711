//! Port lists as routing-release writes them: router groups' `reservable_ports` and the
//! `reserved_system_component_ports` config key (`"1024-1033,2000"`), shared by the Routing API
//! (validation, config) and tcp-router (config, listener checks).

use serde::{de, Deserialize, Deserializer};

/// Parses `"1024-1033, 2000"`: comma-separated ports and inclusive `low-high` ranges.
pub fn parse_port_list(s: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || format!("invalid port or range {item:?}");
        match item.split_once('-') {
            Some((a, b)) => {
                let a: u16 = a.trim().parse().map_err(|_| bad())?;
                let b: u16 = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(item.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// Serde `deserialize_with` for `reserved_system_component_ports`: a YAML list of ports, or
/// upstream's string form (`"2822,3457-3461"`).
pub fn deserialize_reserved_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Reserved {
        List(Vec<u16>),
        Str(String),
    }
    match Reserved::deserialize(d)? {
        Reserved::List(l) => Ok(l),
        Reserved::Str(s) => parse_port_list(&s)
            .map_err(|e| de::Error::custom(format!("reserved_system_component_ports: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_ranges() {
        assert_eq!(
            parse_port_list("1024-1026, 2000").unwrap(),
            vec![1024, 1025, 1026, 2000]
        );
        assert_eq!(parse_port_list("").unwrap(), Vec::<u16>::new());
        assert!(parse_port_list("x").is_err());
        assert!(parse_port_list("10-1").is_err());
        assert_eq!(
            parse_port_list("65536").unwrap_err(),
            "invalid port or range \"65536\""
        );
    }

    #[test]
    fn reserved_ports_as_list_or_string() {
        #[derive(Deserialize)]
        struct C {
            #[serde(deserialize_with = "deserialize_reserved_ports")]
            ports: Vec<u16>,
        }
        let c: C = serde_json::from_str(r#"{"ports":[22,80]}"#).unwrap();
        assert_eq!(c.ports, vec![22, 80]);
        let c: C = serde_json::from_str(r#"{"ports":"2822,3457-3458"}"#).unwrap();
        assert_eq!(c.ports, vec![2822, 3457, 3458]);
        let e = serde_json::from_str::<C>(r#"{"ports":"x"}"#).err().unwrap();
        assert!(
            e.to_string()
                .contains("reserved_system_component_ports: invalid port or range"),
            "{e}"
        );
    }
}
