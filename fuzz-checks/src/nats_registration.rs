//! `router.register` / `router.unregister` payloads as gorouter reads them off NATS
//! (`gorouter::nats::parse_registration`), then applied to a route table as the message loop
//! does (`RouteTable::register` / `unregister`: route keys, endpoint headers, route-service URL).
//!
//! Invariants:
//! - no panic, whatever the bytes;
//! - an endpoint just added to an empty table can be unregistered again;
//! - route-emitter's message type agrees with gorouter's parser: whatever
//!   `route_emitter::nats::RegistryMessage` reads from the input, serialised again as
//!   route-emitter publishes it, gorouter parses into the same fields (unless its
//!   `route_service_url` is not https, which gorouter refuses by design).
use gorouter::nats::parse_registration;
use gorouter::registry::{PutOutcome, RouteTable, TableSettings};
use route_emitter::nats::RegistryMessage;

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    if let Ok(registration) = parse_registration(data) {
        for uri in registration.uris.iter().take(16) {
            let table = RouteTable::new(TableSettings::default());
            let outcome = table.register(uri, &registration.spec);
            let _ = table.lookup(uri, "/");
            if outcome == PutOutcome::Added {
                assert!(
                    table.unregister(uri, &registration.spec),
                    "an endpoint just added to {uri:?} could not be removed"
                );
            }
        }
    }

    if let Ok(emitted) = serde_json::from_slice::<RegistryMessage>(data) {
        let wire = serde_json::to_vec(&emitted).expect("route-emitter's message serialises");
        let parsed = parse_registration(&wire);
        let https =
            emitted.route_service_url.is_empty() || emitted.route_service_url.starts_with("https");
        if !https {
            assert!(parsed.is_err(), "non-https route_service_url accepted");
            return;
        }
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => panic!(
                "gorouter refuses route-emitter's message {:?}: {e}",
                String::from_utf8_lossy(&wire)
            ),
        };
        let s = &parsed.spec;
        assert_eq!(parsed.uris, emitted.uris);
        assert_eq!(s.host, emitted.host);
        assert_eq!(s.port, emitted.port);
        assert_eq!(s.tls_port, emitted.tls_port);
        assert_eq!(s.app, emitted.app);
        assert_eq!(s.private_instance_id, emitted.private_instance_id);
        assert_eq!(s.private_instance_index, emitted.private_instance_index);
        assert_eq!(s.server_cert_domain_san, emitted.server_cert_domain_san);
        assert_eq!(s.route_service_url, emitted.route_service_url);
        assert_eq!(s.tags.clone().unwrap_or_default(), emitted.tags);
        assert_eq!(s.isolation_segment, emitted.isolation_segment);
        assert_eq!(s.availability_zone, emitted.availability_zone);
        assert_eq!(s.endpoint_updated_at_ns, emitted.endpoint_updated_at_ns);
    }
}
