//! Router groups' `reservable_ports` (`"1024-1033,2000"`): the Routing API's validator
//! (`routing_api::validation::parse_reservable_ports`, `validate_router_group`) and the port-list
//! parser tcp-router applies to the groups it reads from the API
//! (`routing_api_client::ports::parse_port_list`).
//!
//! Input: byte 0 holds flags (type tcp/http, `fail_on_router_port_conflicts`), the rest is the
//! string (lossily decoded: the field is JSON text on the wire).
//!
//! Invariants:
//! - no panic;
//! - accepted ranges are within 1024-65535, ordered low-high, and pairwise disjoint;
//! - with conflicts failing, no accepted range contains a reserved port;
//! - what the Routing API accepts, tcp-router reads as exactly the same set of ports (a string
//!   both accept must not mean two things), and rendering the ranges back as `a-b,c` parses to
//!   the same ranges.
use std::collections::BTreeSet;

use routing_api::validation::{
    parse_reservable_ports, validate_router_group, DEFAULT_RESERVED_PORTS,
};
use routing_api_client::ports::parse_port_list;

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let fail_on_conflicts = flags & 1 != 0;
    let kind = if flags & 2 != 0 { "http" } else { "tcp" };

    let _ = validate_router_group(
        "fuzz-group",
        kind,
        &text,
        DEFAULT_RESERVED_PORTS,
        fail_on_conflicts,
    );
    let listed = parse_port_list(&text);

    let Ok(ranges) = parse_reservable_ports(&text, DEFAULT_RESERVED_PORTS, fail_on_conflicts)
    else {
        return;
    };
    for (i, a) in ranges.iter().enumerate() {
        assert!(a.start >= 1024 && a.start <= a.end, "bad range {a:?}");
        for b in &ranges[i + 1..] {
            assert!(a.end < b.start || b.end < a.start, "overlap {a:?} {b:?}");
        }
        if fail_on_conflicts {
            assert!(
                !DEFAULT_RESERVED_PORTS.iter().any(|p| a.contains(*p)),
                "reserved port in {a:?}"
            );
        }
    }

    let expected: BTreeSet<u16> = ranges.iter().flat_map(|r| r.start..=r.end).collect();
    let listed = match listed {
        Ok(l) => l,
        Err(e) => panic!("routing-api accepts {text:?} but tcp-router's parser refuses it: {e}"),
    };
    let listed: BTreeSet<u16> = listed.into_iter().collect();
    assert_eq!(
        listed, expected,
        "routing-api and tcp-router read {text:?} differently"
    );

    let rendered: Vec<String> = ranges
        .iter()
        .map(|r| {
            if r.start == r.end {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, r.end)
            }
        })
        .collect();
    let again = parse_reservable_ports(
        &rendered.join(","),
        DEFAULT_RESERVED_PORTS,
        fail_on_conflicts,
    )
    .expect("rendered ranges parse");
    assert_eq!(again, ranges);
}
