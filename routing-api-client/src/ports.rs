//! Port lists as routing-release writes them: router groups' `reservable_ports` and the
//! `reserved_system_component_ports` config key (`"1024-1033,2000"`). The one parser of the
//! tier: the Routing API validates `reservable_ports` with [`parse_port_ranges`] and
//! [`first_overlap`] (adding its own 1024..65535 rule and upstream's messages), tcp-router and
//! the configs read lists with [`parse_port_list`].
//!
//! Bounded: a list longer than [`MAX_PORT_LIST_LEN`] bytes or with more than
//! [`MAX_PORT_RANGES`] items is refused before anything is allocated per item, and overlaps
//! are found by sorting (O(n log n)), not by comparing every pair.

use serde::{de, Deserialize, Deserializer};

/// Longest port list accepted, in bytes. A router group's `reservable_ports` column is
/// `varchar(255)`; configs get room to spare.
pub const MAX_PORT_LIST_LEN: usize = 4096;
/// Most ports and ranges one list may have.
pub const MAX_PORT_RANGES: usize = 1024;

/// An inclusive port range; a single port is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    /// Upstream's form in messages: `2000`, or `[1024-1033]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "[{}-{}]", self.start, self.end)
        }
    }
}

/// Why a port list was refused. The range messages are upstream routing-api's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortListError {
    #[error("port list is {len} bytes long; at most {max} bytes are accepted")]
    TooLong { len: usize, max: usize },
    #[error("port list has more than {max} ports and ranges; merge adjacent ones into ranges")]
    TooManyRanges { max: usize },
    /// A single port that is not a decimal number in 0..=65535.
    #[error("invalid port {item:?}")]
    InvalidPort { item: String },
    #[error("range ({item}) requires a starting port")]
    MissingStart { item: String },
    #[error("range ({item}) requires an ending port")]
    MissingEnd { item: String },
    #[error("range ({item}) must be in ascending numeric order")]
    Descending { item: String },
    #[error("range ({item}) has too many '-' separators")]
    TooManySeparators { item: String },
}

/// A port as Go's `strconv.ParseUint(s, 10, 16)` reads it: decimal digits only (no sign, no
/// spaces), at most 65535.
fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses one item: `N` or `A-B` with `A <= B`, exactly (no spaces).
pub fn parse_port_range(item: &str) -> Result<PortRange, PortListError> {
    let owned = || item.to_owned();
    let mut parts = item.splitn(3, '-');
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => {
            let p = port(first).ok_or_else(|| PortListError::InvalidPort { item: owned() })?;
            Ok(PortRange { start: p, end: p })
        }
        (Some(second), None) => {
            let start = port(first).ok_or_else(|| PortListError::MissingStart { item: owned() })?;
            let end = port(second).ok_or_else(|| PortListError::MissingEnd { item: owned() })?;
            if start > end {
                return Err(PortListError::Descending { item: owned() });
            }
            Ok(PortRange { start, end })
        }
        (Some(_), Some(_)) => Err(PortListError::TooManySeparators { item: owned() }),
    }
}

fn check_len(list: &str) -> Result<(), PortListError> {
    if list.len() > MAX_PORT_LIST_LEN {
        return Err(PortListError::TooLong {
            len: list.len(),
            max: MAX_PORT_LIST_LEN,
        });
    }
    Ok(())
}

/// Parses upstream routing-api's `reservable_ports` syntax: items separated by `,`, each
/// parsed by [`parse_port_range`] as written (an empty item or a space is an error), in order.
pub fn parse_port_ranges(list: &str) -> Result<Vec<PortRange>, PortListError> {
    check_len(list)?;
    let mut out = Vec::new();
    for item in list.split(',') {
        if out.len() == MAX_PORT_RANGES {
            return Err(PortListError::TooManyRanges {
                max: MAX_PORT_RANGES,
            });
        }
        out.push(parse_port_range(item)?);
    }
    Ok(out)
}

/// The overlapping pair upstream reports for `ranges` (the first range, in list order, that
/// overlaps another, and the first range it overlaps), or `None`. O(n log n): after sorting
/// by start, a range overlaps an earlier-sorted one iff the largest end before it reaches its
/// start, and a later-sorted one iff the next start is within it.
pub fn first_overlap(ranges: &[PortRange]) -> Option<(PortRange, PortRange)> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| (ranges[i].start, ranges[i].end, i));
    let mut overlapping = vec![false; ranges.len()];
    let mut max_end: Option<u16> = None;
    for (k, &i) in order.iter().enumerate() {
        let r = ranges[i];
        let before = max_end.is_some_and(|e| e >= r.start);
        let after = order.get(k + 1).is_some_and(|&j| ranges[j].start <= r.end);
        overlapping[i] = before || after;
        max_end = Some(max_end.map_or(r.end, |e| e.max(r.end)));
    }
    let first = overlapping.iter().position(|&o| o)?;
    let a = ranges[first];
    let other = ranges
        .iter()
        .enumerate()
        .find(|&(j, b)| j != first && a.overlaps(b))
        .map(|(_, b)| *b)?;
    Some((a, other))
}

/// Reads a port list leniently (configs, tcp-router): spaces around items and around `-` are
/// allowed and empty items skipped; any port 0..=65535. Returns the ports sorted, each once
/// (at most 65,536 whatever the list says).
pub fn parse_port_list(s: &str) -> Result<Vec<u16>, String> {
    check_len(s).map_err(|e| e.to_string())?;
    let mut ranges = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if ranges.len() == MAX_PORT_RANGES {
            return Err(PortListError::TooManyRanges {
                max: MAX_PORT_RANGES,
            }
            .to_string());
        }
        let exact = match item.split_once('-') {
            Some((a, b)) => format!("{}-{}", a.trim(), b.trim()),
            None => item.to_owned(),
        };
        let r = parse_port_range(&exact).map_err(|_| format!("invalid port or range {item:?}"))?;
        ranges.push(r);
    }
    ranges.sort_unstable();
    let mut out = Vec::new();
    let mut next: u32 = 0; // first port not yet emitted
    for r in ranges {
        let from = u32::from(r.start).max(next);
        for p in from..=u32::from(r.end) {
            out.push(p as u16);
        }
        next = next.max(u32::from(r.end) + 1);
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

    fn r(start: u16, end: u16) -> PortRange {
        PortRange { start, end }
    }

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
    fn port_list_is_sorted_and_each_port_listed_once_however_often_repeated() {
        let list = vec!["1-65535"; 500].join(",");
        let ports = parse_port_list(&list).unwrap();
        assert_eq!(ports.len(), 65535);
        assert_eq!(
            parse_port_list("3000, 1025-1026, 1026").unwrap(),
            vec![1025, 1026, 3000]
        );
    }

    #[test]
    fn port_lists_beyond_the_bounds_are_refused_before_parsing() {
        let long = "1".repeat(MAX_PORT_LIST_LEN + 1);
        assert_eq!(
            parse_port_ranges(&long).unwrap_err(),
            PortListError::TooLong {
                len: MAX_PORT_LIST_LEN + 1,
                max: MAX_PORT_LIST_LEN
            }
        );
        assert!(parse_port_list(&long).is_err());
        let many = vec!["1"; MAX_PORT_RANGES + 1].join(",");
        assert_eq!(
            parse_port_ranges(&many).unwrap_err(),
            PortListError::TooManyRanges {
                max: MAX_PORT_RANGES
            }
        );
        assert!(parse_port_ranges(&vec!["1"; MAX_PORT_RANGES].join(",")).is_ok());
    }

    #[test]
    fn strict_items_follow_go_parse_uint() {
        assert_eq!(parse_port_range("1024").unwrap(), r(1024, 1024));
        assert_eq!(parse_port_range("01024-1025").unwrap(), r(1024, 1025));
        for bad in ["+1024", " 1024", "", "0x10", "65536"] {
            assert!(
                matches!(
                    parse_port_range(bad),
                    Err(PortListError::InvalidPort { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_port_range("70000-70001"),
            Err(PortListError::MissingStart { .. })
        ));
        assert!(matches!(
            parse_port_range("1024-"),
            Err(PortListError::MissingEnd { .. })
        ));
        assert!(matches!(
            parse_port_range("2-1"),
            Err(PortListError::Descending { .. })
        ));
        assert!(matches!(
            parse_port_range("1-2-3"),
            Err(PortListError::TooManySeparators { .. })
        ));
    }

    /// Upstream's pairwise loop, as the reference for [`first_overlap`].
    fn pairwise(ranges: &[PortRange]) -> Option<(PortRange, PortRange)> {
        for (i, a) in ranges.iter().enumerate() {
            for (j, b) in ranges.iter().enumerate() {
                if i != j && a.overlaps(b) {
                    return Some((*a, *b));
                }
            }
        }
        None
    }

    #[test]
    fn first_overlap_reports_the_pair_upstreams_pairwise_check_reports() {
        let cases: Vec<Vec<PortRange>> = vec![
            vec![],
            vec![r(1, 1)],
            vec![r(1, 5), r(6, 9)],
            vec![r(10, 20), r(1, 3), r(15, 30)],
            vec![r(50, 60), r(1, 100), r(2, 3)],
            vec![r(7, 7), r(1, 2), r(7, 7)],
            vec![r(5, 9), r(1, 4), r(9, 12), r(2, 2)],
        ];
        for c in &cases {
            assert_eq!(first_overlap(c), pairwise(c), "{c:?}");
        }
        // pseudo-random lists against the reference
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let n = (x % 7) as usize;
            let list: Vec<PortRange> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let a = ((x >> 8) % 40) as u16;
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let len = ((x >> 8) % 6) as u16;
                    r(a, a + len)
                })
                .collect();
            assert_eq!(first_overlap(&list), pairwise(&list), "{list:?}");
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        }
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
