//! route-registrar / route-emitter configs (YAML or JSON text): the main config file
//! (`route_emitter::config::parse` + `ConfigSchema::into_config`) and the dynamic route files
//! read through `dynamic_config_globs` (`config::parse_route_file`), plus the Go durations in
//! them (`yaml_config::parse_go_duration`, reached through the configs).
//!
//! Invariants:
//! - no panic, whatever the text (YAML anchors and aliases included);
//! - every HTTP route going over NATS that the config accepts becomes a registration message
//!   gorouter accepts, carrying the route's URIs (an accepted config must not publish messages
//!   the router drops).
use route_emitter::config::{self, Route, RouteDefaults, Transport};
use route_emitter::nats::{is_nats_route, EncodedMessage};

fn check_nats(route: &Route) {
    if !is_nats_route(route) {
        return;
    }
    let Ok(encoded) = EncodedMessage::new(route) else {
        return;
    };
    for stamp in [0, 1_700_000_000_000_000_000] {
        let wire = encoded.stamped(stamp);
        match gorouter::nats::parse_registration(&wire) {
            Ok(r) => assert_eq!(r.uris, route.uris),
            Err(e) => panic!(
                "route-emitter accepted route {:?} but gorouter drops its message {:?}: {e}",
                route.name,
                String::from_utf8_lossy(&wire)
            ),
        }
    }
}

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok((schema, _unknown)) = config::parse(&text) {
        if let Ok(cfg) = schema.into_config() {
            for route in &cfg.routes {
                check_nats(route);
            }
        }
    }
    let defaults = RouteDefaults {
        host: "10.0.0.1".into(),
        availability_zone: "z1".into(),
        http_transport: Transport::Nats,
    };
    if let Ok((routes, _problems)) = config::parse_route_file(&text, &defaults) {
        for route in &routes {
            check_nats(route);
        }
    }
}
