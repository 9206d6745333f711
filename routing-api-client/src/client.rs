//! The Routing API client (B.1): HTTP routes, TCP route mappings, router groups and the two
//! event streams, over `http` or `https` (mutual TLS when a client certificate is configured,
//! as on routing-api's port 3001).
//!
//! Every request carries `Authorization: bearer <token>` from the [`TokenFetcher`] when one is
//! given (none = the server runs with auth disabled). A 401 answer makes the call fetch a new
//! token and retry once. Every call has a deadline ([`ClientConfig::timeout`]); event streams
//! have one for the response head only, since they stay open indefinitely.
//!
//! Failed calls return [`ClientError::Status`] with the status and, when the server sent the
//! usual `{"name":…,"message":…}` body, the parsed [`ErrorBody`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::events::EventStream;
use crate::models::{ErrorBody, HttpRoute, RouterGroup, TcpRouteMapping};
use crate::tls::{TlsError, TlsOptions};
use crate::transport::{self, Collected, HttpClient, TraceFn, Tracer, TransportError};
use crate::uaa::{Token, TokenFetcher, UaaError};

/// Where the Routing API is and how to reach it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `http://127.0.0.1:3000` or `https://routing-api.service.cf.internal:3001`;
    /// the `/routing/v1/…` paths are appended.
    pub api_url: String,
    pub tls: TlsOptions,
    /// Deadline of one call (connect, request, whole response).
    pub timeout: Duration,
    /// Deadline of the TCP connect alone.
    pub connect_timeout: Duration,
    /// Ends event streams that stay silent this long (see [`EventStream::with_idle_timeout`]).
    pub event_idle_timeout: Option<Duration>,
}

impl ClientConfig {
    /// Defaults: 15 s per call, 5 s to connect, no idle timeout on event streams.
    pub fn new(api_url: impl Into<String>) -> Self {
        ClientConfig {
            api_url: api_url.into(),
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            event_idle_timeout: None,
        }
    }
}

/// Why a Routing API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid routing API URL '{0}'")]
    InvalidUrl(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("fetching token: {0}")]
    Token(#[from] UaaError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server answered with an unexpected status.
    #[error("{}", status_message(*status, body.as_ref(), text))]
    Status {
        status: StatusCode,
        /// The parsed error body, if the server sent one.
        body: Option<ErrorBody>,
        /// The raw body (trimmed).
        text: String,
    },
    #[error("invalid response from routing API: {0}")]
    Decode(String),
    #[error("encoding request: {0}")]
    Encode(String),
}

fn status_message(status: StatusCode, body: Option<&ErrorBody>, text: &str) -> String {
    match body {
        Some(b) => format!("{status}: {b}"),
        None if text.is_empty() => status.to_string(),
        None => format!("{status}: {text}"),
    }
}

impl ClientError {
    /// The HTTP status, for [`ClientError::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's `{"name":…,"message":…}`, if it sent one.
    pub fn error_body(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Status { body, .. } => body.as_ref(),
            _ => None,
        }
    }

    /// A 401 from the Routing API (after the retry with a fresh token).
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(StatusCode::UNAUTHORIZED)
    }
}

/// Routing API client; cheap to clone (the connection pool and token cache are shared).
#[derive(Clone)]
pub struct RoutingApiClient {
    base: String,
    http: HttpClient,
    tokens: Option<Arc<TokenFetcher>>,
    timeout: Duration,
    event_idle_timeout: Option<Duration>,
    tracer: Tracer,
}

impl std::fmt::Debug for RoutingApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingApiClient")
            .field("base", &self.base)
            .field("auth", &self.tokens.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

const ROUTES: &str = "/routing/v1/routes";
const EVENTS: &str = "/routing/v1/events";
const TCP_ROUTES: &str = "/routing/v1/tcp_routes";
const TCP_CREATE: &str = "/routing/v1/tcp_routes/create";
const TCP_DELETE: &str = "/routing/v1/tcp_routes/delete";
const TCP_EVENTS: &str = "/routing/v1/tcp_routes/events";
const ROUTER_GROUPS: &str = "/routing/v1/router_groups";

impl RoutingApiClient {
    /// A client for `config.api_url`; `tokens` = `None` sends no `Authorization` header.
    pub fn new(
        config: ClientConfig,
        tokens: Option<Arc<TokenFetcher>>,
    ) -> Result<Self, ClientError> {
        let base = config.api_url.trim_end_matches('/').to_string();
        let uri: http::Uri = base
            .parse()
            .map_err(|_| ClientError::InvalidUrl(config.api_url.clone()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(ClientError::InvalidUrl(config.api_url.clone()));
        }
        Ok(RoutingApiClient {
            base,
            http: transport::build_client(&config.tls, config.connect_timeout)?,
            tokens,
            timeout: config.timeout,
            event_idle_timeout: config.event_idle_timeout,
            tracer: Tracer::default(),
        })
    }

    /// Sends a dump of every request and response (`Authorization` hidden) to `trace`.
    pub fn with_trace(mut self, trace: TraceFn) -> Self {
        self.tracer = Tracer(Some(trace));
        self
    }

    /// `GET /routing/v1/routes`: all unexpired HTTP routes.
    pub async fn routes(&self) -> Result<Vec<HttpRoute>, ClientError> {
        self.get_list(ROUTES).await
    }

    /// `POST /routing/v1/routes`: creates or refreshes routes.
    pub async fn upsert_routes(&self, routes: &[HttpRoute]) -> Result<(), ClientError> {
        self.send_json(Method::POST, ROUTES, routes).await
    }

    /// `DELETE /routing/v1/routes` (unknown routes are ignored by the server).
    pub async fn delete_routes(&self, routes: &[HttpRoute]) -> Result<(), ClientError> {
        self.send_json(Method::DELETE, ROUTES, routes).await
    }

    /// `GET /routing/v1/tcp_routes`: all unexpired TCP route mappings.
    pub async fn tcp_routes(&self) -> Result<Vec<TcpRouteMapping>, ClientError> {
        self.get_list(TCP_ROUTES).await
    }

    /// `GET /routing/v1/tcp_routes?isolation_segment=…` (repeated per segment).
    pub async fn tcp_routes_in_isolation_segments<S: AsRef<str>>(
        &self,
        segments: &[S],
    ) -> Result<Vec<TcpRouteMapping>, ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for s in segments {
            query.append_pair("isolation_segment", s.as_ref());
        }
        let query = query.finish();
        if query.is_empty() {
            return self.tcp_routes().await;
        }
        self.get_list(&format!("{TCP_ROUTES}?{query}")).await
    }

    /// `POST /routing/v1/tcp_routes/create`.
    pub async fn upsert_tcp_routes(&self, mappings: &[TcpRouteMapping]) -> Result<(), ClientError> {
        self.send_json(Method::POST, TCP_CREATE, mappings).await
    }

    /// `POST /routing/v1/tcp_routes/delete`.
    pub async fn delete_tcp_routes(&self, mappings: &[TcpRouteMapping]) -> Result<(), ClientError> {
        self.send_json(Method::POST, TCP_DELETE, mappings).await
    }

    /// `GET /routing/v1/router_groups`.
    pub async fn router_groups(&self) -> Result<Vec<RouterGroup>, ClientError> {
        self.get_list(ROUTER_GROUPS).await
    }

    /// `GET /routing/v1/router_groups?name=<name>`: `None` when the server says
    /// `ResourceNotFoundError` (or returns an empty list).
    pub async fn router_group_by_name(
        &self,
        name: &str,
    ) -> Result<Option<RouterGroup>, ClientError> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("name", name)
            .finish();
        match self
            .get_list::<RouterGroup>(&format!("{ROUTER_GROUPS}?{query}"))
            .await
        {
            Ok(groups) => Ok(groups.into_iter().next()),
            Err(e)
                if e.status() == Some(StatusCode::NOT_FOUND)
                    && e.error_body()
                        .is_some_and(|b| b.name == "ResourceNotFoundError") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /routing/v1/events`: HTTP route events.
    pub async fn subscribe_http_events(&self) -> Result<EventStream<HttpRoute>, ClientError> {
        self.subscribe(EVENTS).await
    }

    /// `GET /routing/v1/tcp_routes/events`: TCP route mapping events.
    pub async fn subscribe_tcp_events(&self) -> Result<EventStream<TcpRouteMapping>, ClientError> {
        self.subscribe(TCP_EVENTS).await
    }

    async fn token(&self) -> Result<Option<Token>, ClientError> {
        match &self.tokens {
            Some(t) => Ok(Some(t.token().await?)),
            None => Ok(None),
        }
    }

    /// After a 401: a fresh token to retry with, or `None` if there is nothing to retry.
    async fn replace_token(&self, rejected: &Option<Token>) -> Result<Option<Token>, ClientError> {
        match (&self.tokens, rejected) {
            (Some(fetcher), Some(old)) => Ok(Some(fetcher.refresh_rejected(old).await?)),
            _ => Ok(None),
        }
    }

    fn request(
        &self,
        method: &Method,
        path: &str,
        body: &Bytes,
        token: &Option<Token>,
        accept: &str,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(header::ACCEPT, accept);
        if let Some(t) = token {
            builder = builder.header(header::AUTHORIZATION, t.authorization());
        }
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(body.clone()))
            .map_err(|e| ClientError::InvalidUrl(format!("{url}: {e}")))
    }

    async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, ClientError> {
        let mut token = self.token().await?;
        let mut retried = false;
        loop {
            let req = self.request(&method, path, &body, &token, "application/json")?;
            let resp = transport::send(
                &self.http,
                req,
                &body,
                self.timeout,
                &self.tracer,
                transport::plain,
            )
            .await?;
            if resp.status == StatusCode::UNAUTHORIZED && !retried {
                if let Some(fresh) = self.replace_token(&token).await? {
                    token = Some(fresh);
                    retried = true;
                    continue;
                }
            }
            if resp.status.is_success() {
                return Ok(resp.body);
            }
            return Err(status_error(resp));
        }
    }

    async fn get_list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        let body = self.call(Method::GET, path, Bytes::new()).await?;
        // `null` (a Go nil slice) counts as empty.
        serde_json::from_slice::<Option<Vec<T>>>(&body)
            .map(Option::unwrap_or_default)
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn send_json<T: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        value: &T,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(value).map_err(|e| ClientError::Encode(e.to_string()))?;
        self.call(method, path, Bytes::from(body)).await.map(|_| ())
    }

    async fn subscribe<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<EventStream<T>, ClientError> {
        let mut token = self.token().await?;
        let mut retried = false;
        let empty = Bytes::new();
        loop {
            let req = self.request(&Method::GET, path, &empty, &token, "text/event-stream")?;
            let resp =
                transport::send_streaming(&self.http, req, self.timeout, &self.tracer).await?;
            if resp.status() == StatusCode::OK {
                return Ok(EventStream::from_body(resp.into_body())
                    .with_idle_timeout(self.event_idle_timeout));
            }
            let failed = transport::read_body(resp, self.timeout, &self.tracer).await?;
            if failed.status == StatusCode::UNAUTHORIZED && !retried {
                if let Some(fresh) = self.replace_token(&token).await? {
                    token = Some(fresh);
                    retried = true;
                    continue;
                }
            }
            return Err(status_error(failed));
        }
    }
}

fn status_error(resp: Collected) -> ClientError {
    let body = serde_json::from_slice::<ErrorBody>(&resp.body).ok();
    ClientError::Status {
        status: resp.status,
        body,
        text: String::from_utf8_lossy(&resp.body).trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_show_the_error_body() {
        let e = status_error(Collected {
            status: StatusCode::NOT_FOUND,
            body: Bytes::from_static(
                br#"{"name":"ResourceNotFoundError","message":"Router Group 'nope' not found"}"#,
            ),
        });
        assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
        assert_eq!(e.error_body().unwrap().name, "ResourceNotFoundError");
        assert_eq!(
            e.to_string(),
            "404 Not Found: ResourceNotFoundError: Router Group 'nope' not found"
        );
        let e = status_error(Collected {
            status: StatusCode::NOT_FOUND,
            body: Bytes::from_static(b"404 page not found\n"),
        });
        assert!(e.error_body().is_none());
        assert_eq!(e.to_string(), "404 Not Found: 404 page not found");
        let e = status_error(Collected {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::new(),
        });
        assert_eq!(e.to_string(), "500 Internal Server Error");
        assert!(!e.is_unauthorized());
    }

    #[test]
    fn rejects_bad_urls() {
        for url in ["", "127.0.0.1:3000", "ftp://x", "http://"] {
            let err = RoutingApiClient::new(ClientConfig::new(url), None).unwrap_err();
            assert!(matches!(err, ClientError::InvalidUrl(_)), "{url}: {err}");
        }
        RoutingApiClient::new(ClientConfig::new("http://127.0.0.1:3000/"), None).unwrap();
    }
}
