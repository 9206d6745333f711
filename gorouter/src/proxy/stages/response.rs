//! Response headers from a backend (A.8): hop-by-hop removal (not on a 101),
//! `X-Vcap-Request-Id` when the app set none, the `X-Vcap-Trace` debugging headers, and
//! `X-CF-Proxy-Signature` never leaving the router.

use http::header::{Entry, HeaderMap, HeaderValue};

use crate::proxy::headers::*;
use crate::proxy::ProxySettings;
use crate::registry::Endpoint;

/// What the response rules need to know of the request.
pub struct ResponseRules<'a> {
    pub request_id: &'a HeaderValue,
    /// The request's `X-Vcap-Trace` matched `trace_key`.
    pub trace_requested: bool,
    pub upgraded: bool,
}

pub fn apply(h: &mut HeaderMap, rules: &ResponseRules<'_>, endpoint: &Endpoint, s: &ProxySettings) {
    if !rules.upgraded {
        remove_hop_by_hop(h, &[]);
    }
    // One lookup (an entry), not a `contains_key` and an `insert`.
    if let Entry::Vacant(v) = h.entry(&X_VCAP_REQUEST_ID) {
        v.insert(rules.request_id.clone());
    }
    if has_header(h, &X_CF_PROXY_SIGNATURE) {
        h.remove(&X_CF_PROXY_SIGNATURE);
    }
    if rules.trace_requested {
        h.insert(X_VCAP_ROUTER.clone(), s.router_ip.clone());
        if let Some(a) = endpoint.addr_header() {
            h.insert(X_VCAP_BACKEND.clone(), a.clone());
            h.insert(X_CF_ROUTE_ENDPOINT.clone(), a.clone());
        }
    }
}
