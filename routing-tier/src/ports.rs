//! Every port the tier listens on, the fixed defaults or all shifted by `--port-base N`.

/// The tier's listening ports (the demo app's is ephemeral and not here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub gorouter_http: u16,
    pub gorouter_https: u16,
    pub gorouter_status: u16,
    pub gorouter_routes: u16,
    /// gorouter's `route_services_internal_server_port` (127.0.0.1).
    pub gorouter_route_services: u16,
    pub routing_api: u16,
    /// routing-api's mutual-TLS port (`api.mtls_listen_port`).
    pub routing_api_mtls: u16,
    pub routing_api_admin: u16,
    pub tcp_router_health: u16,
    /// The `default-tcp` router group's reservable ports, first and last.
    pub tcp_first: u16,
    pub tcp_last: u16,
    /// Whether these came from `--port-base` (then every port is written into the configs).
    pub shifted: bool,
}

/// The highest offset [`Ports::from_base`] uses.
pub const LAST_OFFSET: u16 = 18;

impl Default for Ports {
    /// `scripts/run-tier`'s ports.
    fn default() -> Self {
        Self {
            gorouter_http: 8081,
            gorouter_https: 8443,
            gorouter_status: 8080,
            gorouter_routes: 8082,
            gorouter_route_services: 7070,
            routing_api: 3000,
            routing_api_mtls: 3001,
            routing_api_admin: 15897,
            tcp_router_health: 8090,
            tcp_first: 1024,
            tcp_last: 1033,
            shifted: false,
        }
    }
}

impl Ports {
    /// `N+0` gorouter HTTP, `+1` HTTPS, `+2` `/health`, `+3` `/routes`, `+4` route services,
    /// `+5` routing-api, `+6` its admin port, `+7` tcp-router health, `+8..=+17` TCP routes,
    /// `+18` routing-api's mutual-TLS port (added after the others, so theirs did not move).
    pub fn from_base(n: u16) -> Result<Self, crate::Error> {
        if u32::from(n) + u32::from(LAST_OFFSET) > u32::from(u16::MAX) {
            return Err(crate::Error::PortBase(u32::from(n), LAST_OFFSET));
        }
        Ok(Self {
            gorouter_http: n,
            gorouter_https: n + 1,
            gorouter_status: n + 2,
            gorouter_routes: n + 3,
            gorouter_route_services: n + 4,
            routing_api: n + 5,
            routing_api_admin: n + 6,
            tcp_router_health: n + 7,
            tcp_first: n + 8,
            tcp_last: n + 17,
            routing_api_mtls: n + 18,
            shifted: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_shifts_every_port_and_rejects_overflow() {
        let p = Ports::from_base(20000).expect("fits");
        let all = [
            p.gorouter_http,
            p.gorouter_https,
            p.gorouter_status,
            p.gorouter_routes,
            p.gorouter_route_services,
            p.routing_api,
            p.routing_api_admin,
            p.tcp_router_health,
            p.tcp_first,
            p.tcp_last,
            p.routing_api_mtls,
        ];
        assert!(all.iter().all(|x| (20000..=20018).contains(x)), "{all:?}");
        assert_eq!(p.routing_api_mtls, 20018);
        let mut sorted = all.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert!(Ports::from_base(65535 - 17).is_err());
        assert!(Ports::from_base(65535 - 18).is_ok());
    }
}
