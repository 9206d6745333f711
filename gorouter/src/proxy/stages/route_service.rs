//! Route services (A.10): what happens to a request whose route is bound to a route service.
//! With route services disabled (no `route_services_secret`) such a request is refused with 502
//! `route_service_unsupported` and never reaches the app: the route service is often the
//! route's authentication or firewall, so skipping it would be a bypass.

use crate::proxy::errors::RouterError;
use crate::registry::Pool;

/// Refuses a request to a route bound to a route service when route services are disabled.
pub fn check(pool: &Pool, enabled: bool) -> Result<(), RouterError> {
    if !enabled && pool.route_service().is_some() {
        return Err(RouterError::RouteServiceUnsupported);
    }
    Ok(())
}
