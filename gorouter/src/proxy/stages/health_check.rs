//! Load-balancer health checks through the proxy port (A.12): a request whose `User-Agent` is
//! `healthcheck_user_agent` is answered by the router itself, whatever its Host.

use http::header::{self, HeaderMap, HeaderValue};
use http::Response;

use crate::proxy::body::ResponseBody;
use crate::status::{health_response, Health};

/// Go's `Header.Get("User-Agent") == healthcheck_user_agent`: with an empty setting, a request
/// without a user agent is a health check too (upstream's documented behaviour).
pub fn is_health_check(headers: &HeaderMap, healthcheck_user_agent: &HeaderValue) -> bool {
    let user_agent = headers
        .get(header::USER_AGENT)
        .map_or(&b""[..], HeaderValue::as_bytes);
    user_agent == healthcheck_user_agent.as_bytes()
}

/// The router's health as `/health` reports it.
pub async fn respond(health: &Health) -> Response<ResponseBody> {
    let (parts, body) = health_response(health).into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Response::from_parts(parts, ResponseBody::full(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_user_agent_is_a_health_check() {
        let ua = HeaderValue::from_static("HTTP-Monitor/1.1");
        let mut h = HeaderMap::new();
        assert!(!is_health_check(&h, &ua));
        h.insert(header::USER_AGENT, ua.clone());
        assert!(is_health_check(&h, &ua));
        assert!(is_health_check(
            &HeaderMap::new(),
            &HeaderValue::from_static("")
        ));
    }
}
