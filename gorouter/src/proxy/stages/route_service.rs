//! Route services on the request path (A.10): which pass a request is on, and what that does to
//! it.
//!
//! - The route has no route service: the request goes to the app. A request that carries a
//!   valid signature and forwarded URL anyway is route-service traffic (a route service that is
//!   itself an app), whose `X-Forwarded-Proto` and client certificate header are left alone;
//!   with `route_services.strict_signature_validation` a signature that does not validate is
//!   refused (400, or 504 when expired).
//! - The route has one and route services are disabled: 502 `route_service_unsupported`, never
//!   the app (the route service is often the route's authentication). A websocket upgrade:
//!   503.
//! - The request carries a signature: it is back from the route service. The signature must
//!   open (current key, then the previous one), be younger than `route_services_timeout` (else
//!   504) and name a URL whose route is this request's route (else 502). Then the three
//!   headers are removed and the request goes to the app.
//! - Otherwise it is the first pass: signed, and sent to the route service URL as registered
//!   (its host as `Host`, its path and query as the target), with `X-CF-Forwarded-Url`,
//!   `X-CF-Proxy-Signature` and `X-CF-Proxy-Metadata`; through the internal server when the
//!   route service is a route in this table and hairpinning allows it.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};

use crate::proxy::errors::RouterError;
use crate::proxy::transport::Transport;
use crate::registry::{Endpoint, Pool, RouteServiceUrl, RouteTable};
use crate::route_service::{
    host_without_port, RouteServices, ValidationError, X_CF_FORWARDED_URL, X_CF_PROXY_METADATA,
    X_CF_PROXY_SIGNATURE,
};

/// Route services as the proxy runs them: the keys and rules, and the connections to route
/// services.
pub struct RouteServiceProxying {
    pub services: RouteServices,
    /// To route services over the network (`route_services.*` client certificate,
    /// `skip_ssl_validation`).
    pub transport: Transport,
    /// To the internal server, when hairpinning is on.
    pub hairpin: Option<Hairpin>,
}

/// The internal server a hairpinned request is sent to.
pub struct Hairpin {
    pub transport: Transport,
    /// 127.0.0.1:`route_services_internal_server_port`, over mutual TLS.
    pub endpoint: Arc<Endpoint>,
}

/// Which pass of the route-service protocol a request is on.
pub enum Pass {
    /// No route service on the route. `signed` marks route-service traffic (a valid signature
    /// and a forwarded URL), whose forwarding headers are not sanitised.
    Direct { signed: bool },
    /// Back from the route service and validated; the protocol headers are gone. `signed` as
    /// for `Direct`.
    Returned { signed: bool },
    /// On its way to the route service.
    ToRouteService(FirstPass),
}

impl Pass {
    /// Route-service traffic: `X-Forwarded-Proto` (and, over TLS, the client certificate
    /// header) is passed through as the route service sent it.
    pub fn is_signed_traffic(&self) -> bool {
        matches!(
            self,
            Pass::Direct { signed: true } | Pass::Returned { signed: true }
        )
    }
}

/// A first-pass request: where it goes and the headers that go with it.
pub struct FirstPass {
    pub route_service: Arc<RouteServiceUrl>,
    pub signature: HeaderValue,
    pub metadata: HeaderValue,
    pub forwarded_url: HeaderValue,
    /// Through the internal server rather than over the network.
    pub hairpin: bool,
}

/// What the stage needs of the request.
pub struct RequestFacts<'a> {
    /// The Host the request is routed on.
    pub host: &'a str,
    /// The request target as sent (origin form).
    pub target: &'a str,
    pub websocket: bool,
}

/// Decides the pass.
pub fn decide(
    rs: Option<&RouteServiceProxying>,
    table: &RouteTable,
    pool: &Pool,
    headers: &HeaderMap,
    req: &RequestFacts<'_>,
) -> Result<Pass, RouterError> {
    let route_service = pool.route_service();
    let Some(route_service) = route_service else {
        return direct(rs, headers);
    };
    let Some(rs) = rs else {
        tracing::info!("route-service-unsupported");
        return Err(RouterError::RouteServiceUnsupported);
    };
    if req.websocket {
        tracing::info!("route-service-unsupported");
        return Err(RouterError::RouteServiceWebsocket);
    }
    let signature = header_str(headers, &X_CF_PROXY_SIGNATURE);
    if !signature.is_empty() {
        let metadata = header_str(headers, &X_CF_PROXY_METADATA);
        let contents = rs
            .services
            .validate(signature, metadata, SystemTime::now())
            .map_err(|e| {
                tracing::error!(error = %e, "signature-validation-failed");
                match e {
                    ValidationError::Expired => {
                        RouterError::RouteServiceSignatureExpired { strict: false }
                    }
                    ValidationError::Signature(e) => RouterError::RouteServiceSignatureInvalid {
                        reason: e.to_string(),
                    },
                }
            })?;
        if let Err(reason) = forwarded_url_matches(table, pool, &contents.forwarded_url) {
            tracing::error!(error = %reason, "signature-validation-failed");
            return Err(RouterError::RouteServiceSignatureInvalid { reason });
        }
        let signed = !header_str(headers, &X_CF_FORWARDED_URL).is_empty();
        return Ok(Pass::Returned { signed });
    }

    let target = match &route_service.target {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, route_service_url = %route_service.raw, "route-service-failed");
            return Err(RouterError::RouteServiceRequestFailed);
        }
    };
    let forwarded_url = rs.services.forwarded_url(req.host, req.target);
    let signed = rs.services.sign(&forwarded_url);
    // The strings become header values without a copy.
    let value = |s: String| HeaderValue::from_maybe_shared(bytes::Bytes::from(s));
    let (Ok(signature), Ok(metadata), Ok(forwarded_url)) = (
        value(signed.signature),
        value(signed.metadata),
        value(forwarded_url),
    ) else {
        return Err(RouterError::RouteServiceRequestFailed);
    };
    let hairpin = rs.hairpin.is_some()
        && table
            .lookup(&target.host, &target.path)
            .is_some_and(|p| rs.services.may_hairpin(p.host()));
    Ok(Pass::ToRouteService(FirstPass {
        route_service: route_service.clone(),
        signature,
        metadata,
        forwarded_url,
        hairpin,
    }))
}

/// A route without a route service; checks a signature a request carries anyway.
fn direct(rs: Option<&RouteServiceProxying>, headers: &HeaderMap) -> Result<Pass, RouterError> {
    let Some(rs) = rs else {
        return Ok(Pass::Direct { signed: false });
    };
    let signature = header_str(headers, &X_CF_PROXY_SIGNATURE);
    if signature.is_empty() {
        return Ok(Pass::Direct { signed: false });
    }
    let has_forwarded_url = !header_str(headers, &X_CF_FORWARDED_URL).is_empty();
    let strict = rs.services.strict_signature_validation;
    if !strict && !has_forwarded_url {
        return Ok(Pass::Direct { signed: false });
    }
    let metadata = header_str(headers, &X_CF_PROXY_METADATA);
    match rs.services.validate(signature, metadata, SystemTime::now()) {
        Ok(_) => Ok(Pass::Direct {
            signed: has_forwarded_url,
        }),
        Err(_) if !strict => Ok(Pass::Direct { signed: false }),
        Err(ValidationError::Expired) => {
            Err(RouterError::RouteServiceSignatureExpired { strict: true })
        }
        Err(ValidationError::Signature(_)) => Err(RouterError::InvalidRouteServiceSignature),
    }
}

/// The signed URL must lead to the route this request is on (upstream compares the pools'
/// host and context path).
fn forwarded_url_matches(
    table: &RouteTable,
    pool: &Pool,
    forwarded_url: &str,
) -> Result<(), String> {
    let uri: http::Uri = forwarded_url
        .parse()
        .map_err(|e| format!("parse {forwarded_url:?}: {e}"))?;
    let host = uri
        .authority()
        .map(|a| host_without_port(a.as_str()))
        .unwrap_or_default();
    let path = uri.path();
    let shown = format!("{host}{path}");
    let Some(forwarded_pool) = table.lookup(host, path) else {
        return Err(format!(
            "original request URL {shown} does not exist in the routing table"
        ));
    };
    if forwarded_pool.host() != pool.host() || forwarded_pool.context_path() != pool.context_path()
    {
        return Err(format!(
            "route service forwarded URL {}{} does not match the original request URL {shown}",
            pool.host(),
            pool.context_path()
        ));
    }
    Ok(())
}

/// A request back from the route service goes to the app without the protocol's headers.
pub fn remove_protocol_headers(headers: &mut HeaderMap) {
    headers.remove(&X_CF_PROXY_SIGNATURE);
    headers.remove(&X_CF_PROXY_METADATA);
    headers.remove(&X_CF_FORWARDED_URL);
}

/// Sets a first-pass request's `Host` and protocol headers (after the forwarding stages, so a
/// client's `Connection` list cannot remove them).
pub fn prepare_first_pass(headers: &mut HeaderMap, first: &FirstPass) {
    if let Ok(target) = &first.route_service.target {
        headers.insert(header::HOST, target.authority.clone());
    }
    headers.insert(X_CF_PROXY_SIGNATURE.clone(), first.signature.clone());
    headers.insert(X_CF_PROXY_METADATA.clone(), first.metadata.clone());
    headers.insert(X_CF_FORWARDED_URL.clone(), first.forwarded_url.clone());
}

fn header_str<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}
