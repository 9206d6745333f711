//! The REST handlers (B.1): paths, methods, scopes, status codes, bodies and headers exactly as
//! upstream serves them. The same handlers serve the plain and the mutual-TLS ports.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use routing_api_client::{ErrorBody, EventAction, HttpRoute, RouterGroup, TcpRouteMapping};
use serde::de::IgnoredAny;
use serde::Serialize;
use tokio::sync::watch;

use crate::auth::TokenValidator;
use crate::events::{Hubs, SseBody};
use crate::json::go_json;
use crate::metrics::{Kind, Metrics};
use crate::prometheus::{ApiMetrics, Endpoint};
use crate::store::{Store, StoreError};
use crate::validation::{self, RouteProblem};

/// Largest request body accepted; beyond it the request is refused unread.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub type ApiBody = Either<Full<Bytes>, SseBody>;

const ROUTES_READ: &str = "routing.routes.read";
const ROUTES_WRITE: &str = "routing.routes.write";
const GROUPS_READ: &str = "routing.router_groups.read";
const GROUPS_WRITE: &str = "routing.router_groups.write";

const PORTS_WARNING: &str = "Warning: if routes are registered for ports that are not in the new range, modifying your load balancer to remove these ports will result in backends for those routes becoming inaccessible.";

/// What the handlers share.
pub struct Api {
    pub store: Store,
    pub auth: TokenValidator,
    pub hubs: Hubs,
    pub max_ttl: Duration,
    pub reserved_ports: Vec<u16>,
    pub fail_on_router_port_conflicts: bool,
    /// Turns true when the process stops: event streams end.
    pub closing: watch::Receiver<bool>,
    /// Statsd gauges: route and subscription deltas.
    pub metrics: Metrics,
    /// Prometheus: route totals, open streams, latency by endpoint.
    pub prometheus: Arc<ApiMetrics>,
}

fn full(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: Option<&'static str>,
) -> Response<ApiBody> {
    let mut r = Response::new(Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

/// Go's content sniffing labels JSON written without a Content-Type as plain text.
const SNIFFED: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// An error response: `{"name":…,"message":…}`.
pub fn error(status: StatusCode, name: &str, message: impl Into<String>) -> Response<ApiBody> {
    let body = ErrorBody {
        name: name.into(),
        message: message.into(),
    };
    let json = go_json(&body).unwrap_or_default();
    full(status, json, Some(SNIFFED))
}

/// A body written with Go's json.Encoder: JSON plus a newline.
fn encoded<T: Serialize>(
    status: StatusCode,
    value: &T,
    content_type: &'static str,
) -> Response<ApiBody> {
    match go_json(value) {
        Ok(mut json) => {
            json.push(b'\n');
            full(status, json, Some(content_type))
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ResponseError",
            e.to_string(),
        ),
    }
}

/// A body written with Go's json.Marshal and `w.Write`: JSON without a trailing newline (how
/// upstream answers every router-group request; the captures' Content-Length has no `\n`).
fn marshaled<T: Serialize>(
    status: StatusCode,
    value: &T,
    content_type: &'static str,
) -> Response<ApiBody> {
    match go_json(value) {
        Ok(json) => full(status, json, Some(content_type)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ResponseError",
            e.to_string(),
        ),
    }
}

fn not_found_page() -> Response<ApiBody> {
    let mut r = full(StatusCode::NOT_FOUND, "404 page not found\n", Some(SNIFFED));
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The methods upstream's router (rata on `bmizerany/pat`) serves `path` with.
fn allowed_methods(path: &str) -> &'static [&'static str] {
    match path {
        "/routing/v1/routes" => &["GET", "HEAD", "POST", "DELETE"],
        "/routing/v1/events" | "/routing/v1/tcp_routes" | "/routing/v1/tcp_routes/events" => {
            &["GET", "HEAD"]
        }
        "/routing/v1/tcp_routes/create" | "/routing/v1/tcp_routes/delete" => &["POST"],
        "/routing/v1/router_groups" => &["GET", "HEAD", "POST"],
        p if router_group_guid(p).is_some() => &["PUT", "DELETE"],
        _ => &[],
    }
}

/// pat's answer for a known path and another method: 405, `Allow`, and Go's `http.Error` body.
fn method_not_allowed(allowed: &[&str]) -> Response<ApiBody> {
    let mut r = full(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed\n",
        Some(SNIFFED),
    );
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
        h.insert(header::ALLOW, v);
    }
    r
}

fn db_error(e: &StoreError) -> Response<ApiBody> {
    tracing::error!(error = %e, "database-error");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "DBCommunicationError",
        e.to_string(),
    )
}

fn process_error(message: impl std::fmt::Display) -> Response<ApiBody> {
    error(
        StatusCode::BAD_REQUEST,
        "ProcessRequestError",
        format!("Cannot process request: {message}"),
    )
}

async fn read_json<T: serde::de::DeserializeOwned>(
    body: hyper::body::Incoming,
) -> Result<T, Response<ApiBody>> {
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "ProcessRequestError",
                    format!("Cannot process request: body is larger than {MAX_BODY_BYTES} bytes"),
                ));
            }
            return Err(process_error(e));
        }
    };
    // Like Go's json.Decoder.Decode: the first JSON value is scanned whole before it is
    // unmarshalled (so a truncated body is `unexpected EOF` whatever its types, and an empty
    // one `EOF`), and bytes after that value are not looked at.
    let mut scan = serde_json::Deserializer::from_slice(&bytes).into_iter::<IgnoredAny>();
    match scan.next() {
        None => return Err(process_error("EOF")),
        Some(Err(e)) if e.is_eof() => return Err(process_error("unexpected EOF")),
        Some(Err(e)) => return Err(process_error(e)),
        Some(Ok(_)) => {}
    }
    match serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<T>()
        .next()
    {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(process_error(e)),
        None => Err(process_error("EOF")),
    }
}

impl Api {
    /// Routes a request to its handler, timing it by endpoint.
    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<ApiBody> {
        let started = std::time::Instant::now();
        let path = req.uri().path().to_string();
        // rata registers every GET route for HEAD too (pat's `Get`).
        let method = match req.method() {
            &Method::HEAD => Method::GET,
            m => m.clone(),
        };
        let (scope, endpoint) = match (&method, path.as_str()) {
            (&Method::GET, "/routing/v1/routes") => (ROUTES_READ, Endpoint::ListRoutes),
            (&Method::GET, "/routing/v1/events") => (ROUTES_READ, Endpoint::RouteEvents),
            (&Method::GET, "/routing/v1/tcp_routes") => (ROUTES_READ, Endpoint::ListTcpRoutes),
            (&Method::GET, "/routing/v1/tcp_routes/events") => {
                (ROUTES_READ, Endpoint::TcpRouteEvents)
            }
            (&Method::POST, "/routing/v1/routes") => (ROUTES_WRITE, Endpoint::UpsertRoutes),
            (&Method::DELETE, "/routing/v1/routes") => (ROUTES_WRITE, Endpoint::DeleteRoutes),
            (&Method::POST, "/routing/v1/tcp_routes/create") => {
                (ROUTES_WRITE, Endpoint::UpsertTcpRoutes)
            }
            (&Method::POST, "/routing/v1/tcp_routes/delete") => {
                (ROUTES_WRITE, Endpoint::DeleteTcpRoutes)
            }
            (&Method::GET, "/routing/v1/router_groups") => {
                (GROUPS_READ, Endpoint::ListRouterGroups)
            }
            (&Method::POST, "/routing/v1/router_groups") => {
                (GROUPS_WRITE, Endpoint::CreateRouterGroup)
            }
            (&Method::PUT, p) if router_group_guid(p).is_some() => {
                (GROUPS_WRITE, Endpoint::UpdateRouterGroup)
            }
            (&Method::DELETE, p) if router_group_guid(p).is_some() => {
                (GROUPS_WRITE, Endpoint::DeleteRouterGroup)
            }
            _ => {
                let allowed = allowed_methods(&path);
                if allowed.is_empty() {
                    return not_found_page();
                }
                return method_not_allowed(allowed);
            }
        };
        let response = self.clone().serve(req, method, &path, scope).await;
        self.prometheus.latency(endpoint).observe(started.elapsed());
        response
    }

    /// Checks the token for `scope` and answers with the endpoint's handler.
    async fn serve(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        method: Method,
        path: &str,
        scope: &'static str,
    ) -> Response<ApiBody> {
        // Upstream counts an event stream request before checking its token: a refused one
        // is `+1` then `-1`.
        let subscription = match (&method, path) {
            (&Method::GET, "/routing/v1/events") => Some(self.metrics.subscription(Kind::Http)),
            (&Method::GET, "/routing/v1/tcp_routes/events") => {
                Some(self.metrics.subscription(Kind::Tcp))
            }
            _ => None,
        };
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = self.auth.check(authorization, scope).await {
            let body = e.to_error_body();
            tracing::info!(error = %e, path = %path, "unauthorized");
            return error(StatusCode::UNAUTHORIZED, &body.name, body.message);
        }
        let query = req.uri().query().map(str::to_string);
        let body = req.into_body();
        match (method, path) {
            (Method::GET, "/routing/v1/routes") => self.list_routes().await,
            (Method::POST, "/routing/v1/routes") => self.upsert_routes(body).await,
            (Method::DELETE, "/routing/v1/routes") => self.delete_routes(body).await,
            (Method::GET, "/routing/v1/events") => {
                self.events(&self.hubs.http, Kind::Http, subscription)
            }
            (Method::GET, "/routing/v1/tcp_routes") => self.list_tcp_routes(query.as_deref()).await,
            (Method::POST, "/routing/v1/tcp_routes/create") => self.upsert_tcp_routes(body).await,
            (Method::POST, "/routing/v1/tcp_routes/delete") => self.delete_tcp_routes(body).await,
            (Method::GET, "/routing/v1/tcp_routes/events") => {
                self.events(&self.hubs.tcp, Kind::Tcp, subscription)
            }
            (Method::GET, "/routing/v1/router_groups") => {
                self.list_router_groups(query.as_deref()).await
            }
            (Method::POST, "/routing/v1/router_groups") => self.create_router_group(body).await,
            (Method::PUT, p) => match router_group_guid(p) {
                Some(guid) => self.update_router_group(guid, body).await,
                None => not_found_page(),
            },
            (Method::DELETE, p) => match router_group_guid(p) {
                Some(guid) => self.delete_router_group(guid).await,
                None => not_found_page(),
            },
            _ => not_found_page(),
        }
    }

    fn events(
        &self,
        hub: &crate::events::EventHub,
        kind: Kind,
        subscription: Option<crate::metrics::Subscription>,
    ) -> Response<ApiBody> {
        let mut body = hub
            .subscribe(self.closing.clone())
            .gauged(self.prometheus.stream_opened(kind));
        if let Some(s) = subscription {
            body = body.counted(s);
        }
        let mut r = Response::new(Either::Right(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        r
    }

    async fn list_routes(&self) -> Response<ApiBody> {
        match self.store.http_routes().await {
            Ok(routes) => encoded(StatusCode::OK, &routes, SNIFFED),
            Err(e) => db_error(&e),
        }
    }

    async fn upsert_routes(&self, body: hyper::body::Incoming) -> Response<ApiBody> {
        let routes: Vec<HttpRoute> = match read_json(body).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        for r in &routes {
            if let Err(p) = validation::validate_http_route(r, Some(self.max_ttl)) {
                return route_problem(p);
            }
        }
        // one transaction: all of the request's routes are stored, or none
        let batch: Vec<(HttpRoute, Duration)> = routes
            .into_iter()
            .map(|r| {
                let ttl = r
                    .ttl
                    .map(|t| Duration::from_secs(t as u64))
                    .unwrap_or(self.max_ttl);
                (r, ttl)
            })
            .collect();
        match self.store.upsert_http_routes(&batch).await {
            Ok(stored) => {
                for (stored, created) in stored {
                    self.metrics.route_upserted(Kind::Http, created);
                    self.prometheus.route_upserted(Kind::Http, created);
                    self.hubs.http.publish(EventAction::Upsert, &stored)
                }
            }
            Err(e) => return db_error(&e),
        }
        full(StatusCode::CREATED, Bytes::new(), None)
    }

    async fn delete_routes(&self, body: hyper::body::Incoming) -> Response<ApiBody> {
        let routes: Vec<HttpRoute> = match read_json(body).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        for r in &routes {
            if let Err(p) = validation::validate_http_route(r, None) {
                return route_problem(p);
            }
        }
        match self.store.delete_http_routes(&routes).await {
            Ok(deleted) => {
                for deleted in deleted.into_iter().flatten() {
                    self.metrics.route_removed(Kind::Http);
                    self.prometheus.route_removed(Kind::Http);
                    self.hubs.http.publish(EventAction::Delete, &deleted)
                }
            }
            Err(e) => return db_error(&e),
        }
        full(StatusCode::NO_CONTENT, Bytes::new(), None)
    }

    async fn list_tcp_routes(&self, query: Option<&str>) -> Response<ApiBody> {
        let segments: Vec<String> = query_values(query, "isolation_segment");
        match self.store.tcp_routes(&segments).await {
            Ok(routes) => encoded(StatusCode::OK, &routes, SNIFFED),
            Err(e) => db_error(&e),
        }
    }

    async fn upsert_tcp_routes(&self, body: hyper::body::Incoming) -> Response<ApiBody> {
        let mappings: Vec<TcpRouteMapping> = match read_json(body).await {
            Ok(m) => m,
            Err(resp) => return resp,
        };
        for m in &mappings {
            if let Err(msg) = validation::validate_tcp_mapping(m, Some(self.max_ttl)) {
                return process_error(msg);
            }
        }
        let groups = match self.store.router_groups().await {
            Ok(g) => g,
            Err(e) => return db_error(&e),
        };
        for m in &mappings {
            if !groups.iter().any(|g| g.guid == m.router_group_guid) {
                return process_error(format!(
                    "router_group_guid: {} not found",
                    m.router_group_guid
                ));
            }
        }
        // one transaction: all of the request's mappings are stored, or none
        let batch: Vec<(TcpRouteMapping, Duration)> = mappings
            .into_iter()
            .map(|m| {
                let ttl = m
                    .ttl
                    .map(|t| Duration::from_secs(t as u64))
                    .unwrap_or(self.max_ttl);
                (m, ttl)
            })
            .collect();
        match self.store.upsert_tcp_routes(&batch).await {
            Ok(stored) => {
                for (stored, created) in stored {
                    self.metrics.route_upserted(Kind::Tcp, created);
                    self.prometheus.route_upserted(Kind::Tcp, created);
                    self.hubs.tcp.publish(EventAction::Upsert, &stored)
                }
            }
            Err(e) => return db_error(&e),
        }
        full(StatusCode::CREATED, Bytes::new(), None)
    }

    async fn delete_tcp_routes(&self, body: hyper::body::Incoming) -> Response<ApiBody> {
        let mappings: Vec<TcpRouteMapping> = match read_json(body).await {
            Ok(m) => m,
            Err(resp) => return resp,
        };
        for m in &mappings {
            if let Err(msg) = validation::validate_tcp_mapping(m, None) {
                return process_error(msg);
            }
        }
        match self.store.delete_tcp_routes(&mappings).await {
            Ok(deleted) => {
                for deleted in deleted.into_iter().flatten() {
                    self.metrics.route_removed(Kind::Tcp);
                    self.prometheus.route_removed(Kind::Tcp);
                    self.hubs.tcp.publish(EventAction::Delete, &deleted)
                }
            }
            Err(e) => return db_error(&e),
        }
        full(StatusCode::NO_CONTENT, Bytes::new(), None)
    }

    async fn list_router_groups(&self, query: Option<&str>) -> Response<ApiBody> {
        if let Some(name) = query_values(query, "name").into_iter().next() {
            return match self.store.router_group_by_name(&name).await {
                Ok(Some(g)) => marshaled(StatusCode::OK, &[g], JSON),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFoundError",
                    format!("Router Group '{name}' not found"),
                ),
                Err(e) => db_error(&e),
            };
        }
        match self.store.router_groups().await {
            Ok(groups) => marshaled(StatusCode::OK, &groups, JSON),
            Err(e) => db_error(&e),
        }
    }

    async fn create_router_group(&self, body: hyper::body::Incoming) -> Response<ApiBody> {
        let mut group: RouterGroup = match read_json(body).await {
            Ok(g) => g,
            Err(resp) => return resp,
        };
        let existing = match self.store.router_groups().await {
            Ok(g) => g,
            Err(e) => return db_error(&e),
        };
        if let Some(same) = existing
            .iter()
            .find(|g| g.name == group.name && g.kind == group.kind)
        {
            return marshaled(StatusCode::OK, same, SNIFFED);
        }
        group.guid = uuid::Uuid::new_v4().to_string();
        let mut all = existing;
        all.push(group.clone());
        if let Err(msg) = validation::validate_router_groups(
            &all,
            &self.reserved_ports,
            self.fail_on_router_port_conflicts,
        ) {
            return process_error(msg);
        }
        // checked again in the insert's transaction: a concurrent write may have committed since
        let check = |all: &[RouterGroup]| {
            validation::validate_router_groups(
                all,
                &self.reserved_ports,
                self.fail_on_router_port_conflicts,
            )
        };
        match self.store.create_router_group_checked(&group, &check).await {
            Ok(created) => marshaled(StatusCode::CREATED, &created, SNIFFED),
            Err(StoreError::Duplicate(msg) | StoreError::Rejected(msg)) => process_error(msg),
            Err(e) => db_error(&e),
        }
    }

    async fn update_router_group(
        &self,
        guid: &str,
        body: hyper::body::Incoming,
    ) -> Response<ApiBody> {
        let update: RouterGroup = match read_json(body).await {
            Ok(g) => g,
            Err(resp) => return resp,
        };
        let mut all = match self.store.router_groups().await {
            Ok(g) => g,
            Err(e) => return db_error(&e),
        };
        let Some(current) = all.iter_mut().find(|g| g.guid == guid) else {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundError",
                format!("Router Group '{guid}' does not exist"),
            );
        };
        current.reservable_ports = update.reservable_ports.clone();
        let updated = current.clone();
        if let Err(msg) = validation::validate_router_groups(
            &all,
            &self.reserved_ports,
            self.fail_on_router_port_conflicts,
        ) {
            return process_error(msg);
        }
        // checked again in the update's transaction: a concurrent write may have committed since
        let check = |all: &[RouterGroup]| {
            validation::validate_router_groups(
                all,
                &self.reserved_ports,
                self.fail_on_router_port_conflicts,
            )
        };
        match self
            .store
            .update_router_group_ports_checked(guid, &updated.reservable_ports, &check)
            .await
        {
            Ok(_) => {
                let mut r = marshaled(StatusCode::OK, &updated, JSON);
                let warning = url_query_escape(PORTS_WARNING);
                if let Ok(v) = HeaderValue::from_str(&warning) {
                    r.headers_mut().insert("x-cf-warnings", v);
                }
                r
            }
            Err(StoreError::Rejected(msg)) => process_error(msg),
            Err(StoreError::NotFound(_)) => error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundError",
                format!("Router Group '{guid}' does not exist"),
            ),
            Err(e) => db_error(&e),
        }
    }

    async fn delete_router_group(&self, guid: &str) -> Response<ApiBody> {
        match self.store.delete_router_group(guid).await {
            Ok(true) => full(StatusCode::NO_CONTENT, Bytes::new(), None),
            Ok(false) => full(StatusCode::NOT_FOUND, Bytes::new(), None),
            Err(e) => db_error(&e),
        }
    }
}

fn route_problem(p: RouteProblem) -> Response<ApiBody> {
    match p {
        RouteProblem::RouteInvalid(m) => error(StatusCode::BAD_REQUEST, "RouteInvalidError", m),
        RouteProblem::RouteServiceUrlInvalid(m) => {
            error(StatusCode::BAD_REQUEST, "RouteServiceUrlInvalidError", m)
        }
    }
}

fn router_group_guid(path: &str) -> Option<&str> {
    let guid = path.strip_prefix("/routing/v1/router_groups/")?;
    (!guid.is_empty() && !guid.contains('/')).then_some(guid)
}

/// Values of `key` in a query string, percent-decoded. Public for the fuzz targets only.
#[doc(hidden)]
pub fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `url.QueryEscape`.
fn url_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_header_is_query_escaped_like_go() {
        assert_eq!(
            url_query_escape(PORTS_WARNING),
            "Warning%3A+if+routes+are+registered+for+ports+that+are+not+in+the+new+range%2C+modifying+your+load+balancer+to+remove+these+ports+will+result+in+backends+for+those+routes+becoming+inaccessible."
        );
    }

    #[test]
    fn json_escapes_html_characters_like_go() {
        let r = ErrorBody {
            name: "ProcessRequestError".into(),
            message: "a:1<->b:2 & c".into(),
        };
        assert_eq!(
            String::from_utf8(go_json(&r).unwrap()).unwrap(),
            r#"{"name":"ProcessRequestError","message":"a:1\u003c-\u003eb:2 \u0026 c"}"#
        );
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(
            query_values(
                Some("isolation_segment=a%20b&isolation_segment=&x=1"),
                "isolation_segment"
            ),
            vec!["a b".to_string(), String::new()]
        );
        assert!(query_values(None, "name").is_empty());
    }

    #[test]
    fn router_group_path() {
        assert_eq!(
            router_group_guid("/routing/v1/router_groups/abc"),
            Some("abc")
        );
        assert_eq!(router_group_guid("/routing/v1/router_groups/"), None);
        assert_eq!(router_group_guid("/routing/v1/router_groups/a/b"), None);
    }
}
