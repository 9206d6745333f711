//! Route lookup (A.3, A.5): the pool for the request's host and path, or the router error
//! for an unknown route or an empty pool.

use std::sync::Arc;

use crate::proxy::errors::RouterError;
use crate::registry::{Pool, RouteTable};

/// The pool serving `host` + `path`; `empty_pool_503` picks 503 `no_endpoints` over 404 for
/// a route whose pool is empty.
pub fn find_pool(
    table: &RouteTable,
    host: &str,
    path: &str,
    empty_pool_503: bool,
) -> Result<Arc<Pool>, RouterError> {
    let Some(pool) = table.lookup(host, path) else {
        return Err(RouterError::UnknownRoute { host: host.into() });
    };
    if pool.is_empty() {
        return Err(if empty_pool_503 {
            RouterError::NoEndpoints { host: host.into() }
        } else {
            RouterError::UnknownRoute { host: host.into() }
        });
    }
    Ok(pool)
}
