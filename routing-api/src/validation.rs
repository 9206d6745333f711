//! Validation of router groups, HTTP routes and TCP route mappings, with upstream's messages
//! (B.2-B.4).

use std::time::Duration;

use routing_api_client::{HttpRoute, RouterGroup, TcpRouteMapping};

use crate::config::SeedRouterGroup;
/// The config owns the default (validation depends on the config, never the reverse).
pub use crate::config::DEFAULT_RESERVED_PORTS;

const INVALID_PORT: &str = "Port must be between 1024 and 65535";

/// Longest string the database stores in a route or router-group column: upstream's schema
/// has `varchar(255)` (characters) for every one, and MySQL refuses a longer value, which
/// would surface as a 503 instead of a 400.
pub const MAX_COLUMN_CHARS: usize = 255;

/// The first of `fields` (name, value) longer than [`MAX_COLUMN_CHARS`], as a message.
fn first_too_long(fields: &[(&str, &str)]) -> Option<String> {
    fields.iter().find_map(|(name, value)| {
        let n = value.chars().count();
        (n > MAX_COLUMN_CHARS)
            .then(|| format!("{name} must be at most {MAX_COLUMN_CHARS} characters long, not {n}"))
    })
}

pub use routing_api_client::ports::PortRange;
use routing_api_client::ports::{
    first_overlap, parse_port_range, PortListError, MAX_PORT_LIST_LEN, MAX_PORT_RANGES,
};

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The message for a syntax error in `reservable_ports`: upstream's, except that a range end
/// written in digits but above 65535 is reported as out of range (as this API always has and
/// its tests expect) rather than as a missing port.
fn port_list_message(e: PortListError) -> String {
    match e {
        PortListError::InvalidPort { .. } => INVALID_PORT.to_owned(),
        PortListError::MissingStart { item } if item.split('-').next().is_some_and(all_digits) => {
            INVALID_PORT.to_owned()
        }
        PortListError::MissingEnd { item }
            if item.split('-').all(all_digits) && item.split('-').count() == 2 =>
        {
            INVALID_PORT.to_owned()
        }
        other => other.to_string(),
    }
}

/// Parses `reservable_ports` (`1024-1033,2000`) and checks overlaps and reserved ports, with
/// the shared bounded parser of `routing_api_client::ports` (sort and sweep, no pairwise
/// comparison).
pub fn parse_reservable_ports(
    ports: &str,
    reserved: &[u16],
    fail_on_conflicts: bool,
) -> Result<Vec<PortRange>, String> {
    if ports.len() > MAX_PORT_LIST_LEN {
        return Err(port_list_message(PortListError::TooLong {
            len: ports.len(),
            max: MAX_PORT_LIST_LEN,
        }));
    }
    // item by item, as upstream: a port below 1024 is reported before a later syntax error
    let mut ranges = Vec::new();
    for item in ports.split(',') {
        if ranges.len() == MAX_PORT_RANGES {
            return Err(port_list_message(PortListError::TooManyRanges {
                max: MAX_PORT_RANGES,
            }));
        }
        let range = parse_port_range(item).map_err(port_list_message)?;
        if range.start < 1024 {
            return Err(INVALID_PORT.into());
        }
        ranges.push(range);
    }
    if let Some((a, b)) = first_overlap(&ranges) {
        return Err(format!("Overlapping values: {a} and {b}"));
    }
    if fail_on_conflicts {
        let mut sorted = reserved.to_vec();
        sorted.sort_unstable();
        // the first reserved port at or after the range's start decides
        let hit = ranges.iter().any(|r| {
            let i = sorted.partition_point(|p| *p < r.start);
            sorted.get(i).is_some_and(|p| *p <= r.end)
        });
        if hit {
            let list: Vec<String> = reserved.iter().map(u16::to_string).collect();
            return Err(format!(
                "Invalid ports. Reservable ports must not include the following reserved system component ports: [{}].",
                list.join(" ")
            ));
        }
    }
    Ok(ranges)
}

/// Validates one router group (B.3).
pub fn validate_router_group(
    name: &str,
    kind: &str,
    reservable_ports: &str,
    reserved: &[u16],
    fail_on_conflicts: bool,
) -> Result<(), String> {
    if name.is_empty() {
        return Err("Missing name in router group".into());
    }
    if kind.is_empty() {
        return Err("Missing type in router group".into());
    }
    if kind != "tcp" && kind != "http" {
        return Err(format!(
            "Invalid type in router group: {kind}; must be tcp or http"
        ));
    }
    if let Some(m) = first_too_long(&[("name", name), ("reservable_ports", reservable_ports)]) {
        return Err(m);
    }
    if reservable_ports.is_empty() {
        if kind == "tcp" {
            return Err(format!("Missing reservable_ports in router group: {name}"));
        }
        return Ok(());
    }
    if kind == "http" {
        return Err("Reservable ports are not supported for router groups of type http".into());
    }
    parse_reservable_ports(reservable_ports, reserved, fail_on_conflicts).map(|_| ())
}

/// Validates a set of router groups as a whole: each one, and unique names. Two groups may
/// share ports, as upstream allows (a `test-group` of 6000-8000 beside a seeded `default-tcp` of
/// 1024-65535); overlaps are checked only within one group's own list.
pub fn validate_router_groups(
    groups: &[RouterGroup],
    reserved: &[u16],
    fail_on_conflicts: bool,
) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for g in groups {
        validate_router_group(
            &g.name,
            &g.kind,
            &g.reservable_ports,
            reserved,
            fail_on_conflicts,
        )?;
        if !names.insert(g.name.as_str()) {
            return Err("Router group name must be unique".into());
        }
    }
    Ok(())
}

/// Validates router groups seeded from the config file.
pub fn validate_seed_router_groups(
    seeds: &[SeedRouterGroup],
    reserved: &[u16],
    fail_on_conflicts: bool,
) -> Result<(), String> {
    let groups: Vec<RouterGroup> = seeds
        .iter()
        .map(|s| RouterGroup {
            guid: String::new(),
            name: s.name.clone(),
            kind: s.kind.clone(),
            reservable_ports: s.reservable_ports.clone(),
        })
        .collect();
    validate_router_groups(&groups, reserved, fail_on_conflicts)
}

/// Which error name an HTTP route problem is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteProblem {
    RouteInvalid(String),
    RouteServiceUrlInvalid(String),
}

fn url_problem(url: &str) -> Option<&'static str> {
    if url.contains(['?', '#']) {
        return Some("Url cannot contain any of [?, #]");
    }
    // What Go's url.Parse + String() round-trips unchanged: RFC 3986 characters and valid
    // percent escapes.
    let b = url.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let ok = c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/[]".contains(&c);
        if c == b'%' {
            let valid = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !valid {
                return Some("Url cannot contain invalid characters");
            }
            i += 3;
            continue;
        }
        if !ok {
            return Some("Url cannot contain invalid characters");
        }
        i += 1;
    }
    None
}

/// Validates an HTTP route for create (`max_ttl` given) or delete (B.2), in upstream's order.
pub fn validate_http_route(
    route: &HttpRoute,
    max_ttl: Option<Duration>,
) -> Result<(), RouteProblem> {
    if let Some(p) = url_problem(&route.route) {
        return Err(RouteProblem::RouteInvalid(p.into()));
    }
    if !route.route_service_url.is_empty() {
        if !route.route_service_url.starts_with("https://") {
            return Err(RouteProblem::RouteServiceUrlInvalid(
                "Route service url must use HTTPS.".into(),
            ));
        }
        if let Some(p) = url_problem(&route.route_service_url) {
            return Err(RouteProblem::RouteServiceUrlInvalid(p.into()));
        }
    }
    if route.port == 0 {
        return Err(RouteProblem::RouteInvalid(
            "Each route request requires a port greater than 0".into(),
        ));
    }
    if route.route.is_empty() {
        return Err(RouteProblem::RouteInvalid(
            "Each route request requires a valid route".into(),
        ));
    }
    if route.ip.is_empty() {
        return Err(RouteProblem::RouteInvalid(
            "Each route request requires an IP".into(),
        ));
    }
    if let Some(max) = max_ttl {
        let max = max.as_secs() as i64;
        let ttl = route.ttl.unwrap_or(max);
        if ttl > max {
            return Err(RouteProblem::RouteInvalid(format!("Max ttl is {max}")));
        }
        if ttl <= 0 {
            return Err(RouteProblem::RouteInvalid(
                "Request requires a ttl greater than 0".into(),
            ));
        }
        if let Some(m) = first_too_long(&[("route", &route.route), ("ip", &route.ip)]) {
            return Err(RouteProblem::RouteInvalid(m));
        }
        if let Some(m) = first_too_long(&[("log_guid", &route.log_guid)]) {
            return Err(RouteProblem::RouteInvalid(m));
        }
        if let Some(m) = first_too_long(&[("route_service_url", &route.route_service_url)]) {
            return Err(RouteProblem::RouteServiceUrlInvalid(m));
        }
    }
    Ok(())
}

/// `<rg>:<port><-><ip>:<backend_port>`, as upstream prints a mapping in messages.
fn mapping_label(m: &TcpRouteMapping) -> String {
    format!(
        "{}:{}<->{}:{}",
        m.router_group_guid, m.port, m.backend_ip, m.backend_port
    )
}

/// Validates a TCP route mapping for create (`max_ttl` given) or delete (B.4). The router
/// group's existence is checked by the caller.
pub fn validate_tcp_mapping(m: &TcpRouteMapping, max_ttl: Option<Duration>) -> Result<(), String> {
    let label = mapping_label(m);
    if m.router_group_guid.is_empty() {
        return Err(format!(
            "Each tcp mapping requires a non empty router group guid. RouteMapping=[{label}]"
        ));
    }
    if m.port == 0 {
        return Err(format!(
            "Each tcp mapping requires a positive external port. RouteMapping=[{label}]"
        ));
    }
    if m.backend_ip.is_empty() {
        return Err(format!(
            "Each tcp mapping requires a non empty backend ip. RouteMapping=[{label}]"
        ));
    }
    if m.backend_port == 0 && m.backend_tls_port <= 0 {
        return Err(format!(
            "Each tcp mapping requires a positive backend port. RouteMapping=[{label}]"
        ));
    }
    if m.backend_tls_port > 65535 {
        return Err(format!(
            "Each tcp mapping with a backend TLS port requires that port to be less than or equal to 65535. RouteMapping=[{label}]"
        ));
    }
    if let Some(max) = max_ttl {
        let max = max.as_secs() as i64;
        let ttl = m.ttl.unwrap_or(max);
        if ttl > max {
            return Err(format!(
                "Each tcp mapping requires TTL to be less than or equal to {max}. RouteMapping=[{label}]"
            ));
        }
        if ttl <= 0 {
            return Err("Each tcp route mapping requires a ttl greater than 0".into());
        }
        let sni = m.backend_sni_hostname.as_deref().unwrap_or_default();
        if let Some(problem) = first_too_long(&[
            ("router_group_guid", &m.router_group_guid),
            ("backend_ip", &m.backend_ip),
            ("backend_sni_hostname", sni),
            ("instance_id", &m.instance_id),
            ("isolation_segment", &m.isolation_segment),
        ]) {
            return Err(format!(
                "Each tcp mapping field {problem}. RouteMapping=[{label}]"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservable_port_syntax_errors_use_upstream_messages() {
        let p = |s| parse_reservable_ports(s, DEFAULT_RESERVED_PORTS, false).map(|_| ());
        assert_eq!(p("1024-1033"), Ok(()));
        assert_eq!(p("1024,2000-2010"), Ok(()));
        assert_eq!(
            p("-10000").unwrap_err(),
            "range (-10000) requires a starting port"
        );
        assert_eq!(
            p("10000-").unwrap_err(),
            "range (10000-) requires an ending port"
        );
        assert_eq!(
            p("2000-1999").unwrap_err(),
            "range (2000-1999) must be in ascending numeric order"
        );
        assert_eq!(
            p("1-2-3").unwrap_err(),
            "range (1-2-3) has too many '-' separators"
        );
        assert_eq!(p("80").unwrap_err(), "Port must be between 1024 and 65535");
        assert_eq!(
            p("1024-70000").unwrap_err(),
            "Port must be between 1024 and 65535"
        );
        assert_eq!(
            p("70000-70001").unwrap_err(),
            "Port must be between 1024 and 65535"
        );
        assert_eq!(
            p("+1024").unwrap_err(),
            "Port must be between 1024 and 65535"
        );
        assert_eq!(
            p("80,x-").unwrap_err(),
            "Port must be between 1024 and 65535"
        );
        assert_eq!(p("abc").unwrap_err(), "Port must be between 1024 and 65535");
        assert_eq!(
            p("1024-1100,1050").unwrap_err(),
            "Overlapping values: [1024-1100] and 1050"
        );
    }

    #[test]
    fn reservable_ports_are_bounded_and_overlaps_found_by_sorting() {
        let p = |s: &str| parse_reservable_ports(s, DEFAULT_RESERVED_PORTS, false).map(|_| ());
        let long = "1024,".repeat(1000);
        assert!(p(&long).unwrap_err().contains("at most 4096 bytes"));
        // upstream's pair: the first range in list order that overlaps, and its first partner
        assert_eq!(
            p("5000,1024-1100,3000-4000,1050,3500").unwrap_err(),
            "Overlapping values: [1024-1100] and 1050"
        );
    }

    #[test]
    fn reserved_ports_only_checked_when_configured() {
        assert!(parse_reservable_ports("2800-2830", DEFAULT_RESERVED_PORTS, false).is_ok());
        let e = parse_reservable_ports("2800-2830", &[2822, 2825], true).unwrap_err();
        assert_eq!(e, "Invalid ports. Reservable ports must not include the following reserved system component ports: [2822 2825].");
    }

    #[test]
    fn values_longer_than_their_255_character_columns_are_refused_with_upstreams_error_kinds() {
        let long = "a".repeat(256);
        let ok = "a".repeat(255);
        let route = |r: &str, log: &str| HttpRoute {
            route: r.into(),
            port: 8080,
            ip: "10.0.0.1".into(),
            log_guid: log.into(),
            ttl: Some(60),
            ..HttpRoute::default()
        };
        let max = Some(Duration::from_secs(120));
        assert_eq!(validate_http_route(&route(&ok, &ok), max), Ok(()));
        assert_eq!(
            validate_http_route(&route(&long, ""), max),
            Err(RouteProblem::RouteInvalid(
                "route must be at most 255 characters long, not 256".into()
            ))
        );
        assert!(matches!(
            validate_http_route(&route("a.com", &long), max),
            Err(RouteProblem::RouteInvalid(_))
        ));
        let mapping = TcpRouteMapping {
            router_group_guid: "rg".into(),
            port: 1024,
            backend_ip: "10.0.0.1".into(),
            backend_port: 80,
            ttl: Some(60),
            instance_id: long.clone(),
            ..TcpRouteMapping::default()
        };
        let e = validate_tcp_mapping(&mapping, max).unwrap_err();
        assert!(
            e.starts_with("Each tcp mapping field instance_id must be at most 255"),
            "{e}"
        );
        assert_eq!(
            validate_router_group(&long, "tcp", "1024", &[], false).unwrap_err(),
            "name must be at most 255 characters long, not 256"
        );
        let ports: Vec<String> = (0..60).map(|i| (2000 + i).to_string()).collect();
        assert!(
            validate_router_group("g", "tcp", &ports.join(","), &[], false)
                .unwrap_err()
                .starts_with("reservable_ports must be at most 255")
        );
    }

    #[test]
    fn router_group_rules() {
        let v = |n, k, p| validate_router_group(n, k, p, &[], false);
        assert_eq!(
            v("", "tcp", "1024").unwrap_err(),
            "Missing name in router group"
        );
        assert_eq!(
            v("a", "", "1024").unwrap_err(),
            "Missing type in router group"
        );
        assert_eq!(
            v("a", "tcp", "").unwrap_err(),
            "Missing reservable_ports in router group: a"
        );
        assert_eq!(
            v("a", "http", "1024").unwrap_err(),
            "Reservable ports are not supported for router groups of type http"
        );
        assert!(v("a", "http", "").is_ok());
    }

    #[test]
    fn groups_may_share_ports_but_not_names() {
        let g = |n: &str, p: &str| RouterGroup {
            guid: String::new(),
            name: n.into(),
            kind: "tcp".into(),
            reservable_ports: p.into(),
        };
        assert!(validate_router_groups(&[g("a", "1024-1030"), g("b", "1031")], &[], false).is_ok());
        assert!(
            validate_router_groups(&[g("a", "1024-65535"), g("b", "6000-8000")], &[], false)
                .is_ok()
        );
        assert!(validate_router_groups(
            &[g("a", "1024-1030"), g("b", "1040-1050,1045")],
            &[],
            false
        )
        .is_err());
        assert_eq!(
            validate_router_groups(&[g("a", "1024"), g("a", "1025")], &[], false).unwrap_err(),
            "Router group name must be unique"
        );
    }

    #[test]
    fn http_route_rules() {
        let ok = HttpRoute {
            route: "a.example.com/path".into(),
            port: 8080,
            ip: "10.0.0.1".into(),
            ttl: Some(60),
            ..Default::default()
        };
        let max = Some(Duration::from_secs(120));
        assert_eq!(validate_http_route(&ok, max), Ok(()));
        let with = |f: &dyn Fn(&mut HttpRoute)| {
            let mut r = ok.clone();
            f(&mut r);
            validate_http_route(&r, max).unwrap_err()
        };
        assert_eq!(
            with(&|r| r.route = "a.com?x".into()),
            RouteProblem::RouteInvalid("Url cannot contain any of [?, #]".into())
        );
        assert_eq!(
            with(&|r| r.route = "a.com/sp ace".into()),
            RouteProblem::RouteInvalid("Url cannot contain invalid characters".into())
        );
        assert_eq!(
            with(&|r| r.port = 0),
            RouteProblem::RouteInvalid("Each route request requires a port greater than 0".into())
        );
        assert_eq!(
            with(&|r| r.ip.clear()),
            RouteProblem::RouteInvalid("Each route request requires an IP".into())
        );
        assert_eq!(
            with(&|r| r.ttl = Some(500)),
            RouteProblem::RouteInvalid("Max ttl is 120".into())
        );
        assert_eq!(
            with(&|r| r.ttl = Some(0)),
            RouteProblem::RouteInvalid("Request requires a ttl greater than 0".into())
        );
        assert_eq!(
            with(&|r| r.route_service_url = "http://rs.com".into()),
            RouteProblem::RouteServiceUrlInvalid("Route service url must use HTTPS.".into())
        );
        assert!(validate_http_route(
            &HttpRoute {
                ttl: Some(999),
                ..ok.clone()
            },
            None
        )
        .is_ok());
    }

    #[test]
    fn tcp_mapping_messages_match_captures() {
        let m = TcpRouteMapping {
            router_group_guid: "2d5b392b-8aef-4043-79e5-bbb5a72627d4".into(),
            port: 1027,
            backend_ip: "127.0.0.1".into(),
            backend_port: 9001,
            ttl: Some(500),
            ..Default::default()
        };
        assert_eq!(
            validate_tcp_mapping(&m, Some(Duration::from_secs(120))).unwrap_err(),
            "Each tcp mapping requires TTL to be less than or equal to 120. RouteMapping=[2d5b392b-8aef-4043-79e5-bbb5a72627d4:1027<->127.0.0.1:9001]"
        );
        let no_rg = TcpRouteMapping {
            router_group_guid: String::new(),
            ttl: Some(60),
            ..m.clone()
        };
        assert_eq!(
            validate_tcp_mapping(&no_rg, Some(Duration::from_secs(120))).unwrap_err(),
            "Each tcp mapping requires a non empty router group guid. RouteMapping=[:1027<->127.0.0.1:9001]"
        );
        let tls_only = TcpRouteMapping {
            backend_port: 0,
            backend_tls_port: 443,
            ttl: Some(60),
            ..m.clone()
        };
        assert!(validate_tcp_mapping(&tls_only, Some(Duration::from_secs(120))).is_ok());
        assert!(
            validate_tcp_mapping(&m, None).is_ok(),
            "delete skips the ttl check"
        );
    }
}
