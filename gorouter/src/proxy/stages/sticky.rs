//! Sticky sessions (A.8): which instance a request asks to stick to, and when to set
//! `__VCAP_ID__` on a response and with which attributes. (The balancer tries the requested
//! instance first: `balancer::Preferred::Sticky`.)

use http::header::{self, HeaderMap, HeaderValue};

use crate::proxy::headers::request_cookie;
use crate::registry::{Endpoint, Pool};

/// The router's own session cookie, holding the instance id.
pub const VCAP_ID: &str = "__VCAP_ID__";

/// The instance a request sticks to: its `__VCAP_ID__`, when it also carries one of the app's
/// session cookies (`sticky_session_cookie_names`).
pub fn requested_instance(request: &HeaderMap, sticky_names: &[String]) -> Option<String> {
    if sticky_names
        .iter()
        .any(|n| request_cookie(request, n).is_some())
    {
        request_cookie(request, VCAP_ID).map(str::to_string)
    } else {
        None
    }
}

/// Attributes of the app's sticky cookie that carry over to `__VCAP_ID__`.
#[derive(Default)]
struct AppCookie {
    secure: bool,
    same_site: Option<String>,
    expires: Option<String>,
    max_age: Option<String>,
    partitioned: bool,
}

fn cookie_name(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split('=').next())
        .unwrap_or("")
        .trim()
}

fn parse_attributes(set_cookie: &str) -> AppCookie {
    let mut c = AppCookie::default();
    for attr in set_cookie.split(';').skip(1) {
        let (k, v) = match attr.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (attr.trim(), None),
        };
        match k.to_ascii_lowercase().as_str() {
            "secure" => c.secure = true,
            "samesite" => c.same_site = v.map(str::to_string),
            "expires" => c.expires = v.map(str::to_string),
            "max-age" => c.max_age = v.map(str::to_string),
            "partitioned" => c.partitioned = true,
            _ => {}
        }
    }
    c
}

/// Adds `Set-Cookie: __VCAP_ID__=…` when the response starts or moves a sticky session.
pub fn set_vcap_cookie(
    response: &mut HeaderMap,
    endpoint: &Endpoint,
    pool: &Pool,
    requested_id: Option<&str>,
    sticky_names: &[String],
    secure_cookies: bool,
) {
    if endpoint.private_instance_id().is_empty() {
        return;
    }
    let mut app_cookie: Option<AppCookie> = None;
    for v in response.get_all(header::SET_COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        let name = cookie_name(s);
        if name == VCAP_ID {
            return; // the app manages it itself
        }
        if app_cookie.is_none() && sticky_names.iter().any(|n| n == name) {
            app_cookie = Some(parse_attributes(s));
        }
    }
    let moved = requested_id.is_some_and(|id| id != endpoint.private_instance_id());
    if app_cookie.is_none() && !moved {
        return;
    }
    let app = app_cookie.unwrap_or_default();
    // Go's Cookie.String order: Path, Expires, Max-Age, HttpOnly, Secure, SameSite, Partitioned.
    let mut cookie = format!(
        "{VCAP_ID}={}; Path={}",
        endpoint.private_instance_id(),
        pool.context_path()
    );
    if let Some(e) = &app.expires {
        cookie.push_str("; Expires=");
        cookie.push_str(e);
    }
    if let Some(m) = app.max_age.as_deref().filter(|m| m.starts_with('-')) {
        cookie.push_str("; Max-Age=0");
        let _ = m;
    }
    cookie.push_str("; HttpOnly");
    if app.secure || secure_cookies {
        cookie.push_str("; Secure");
    }
    if let Some(ss) = &app.same_site {
        cookie.push_str("; SameSite=");
        cookie.push_str(ss);
    }
    if app.partitioned {
        cookie.push_str("; Partitioned");
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointSpec, RouteTable, TableSettings};
    use std::sync::Arc;

    fn setup(uri: &str) -> (RouteTable, Arc<Pool>, Arc<Endpoint>) {
        let t = RouteTable::new(TableSettings::default());
        t.register(
            uri,
            &EndpointSpec {
                host: "10.0.0.1".into(),
                port: 1,
                private_instance_id: "inst-1".into(),
                ..Default::default()
            },
        );
        let p = t.lookup("a.com", "/x/y").unwrap();
        let e = p.endpoints()[0].clone();
        (t, p, e)
    }

    fn cookies(h: &HeaderMap) -> Vec<String> {
        h.get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn app_session_cookie_gets_vcap_id_with_copied_attributes() {
        let (_t, p, e) = setup("a.com");
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("JSESSIONID=abc; Path=/; Secure; SameSite=Lax; Max-Age=3600"),
        );
        set_vcap_cookie(&mut h, &e, &p, None, &["JSESSIONID".into()], false);
        assert_eq!(
            cookies(&h)[1],
            "__VCAP_ID__=inst-1; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
    }

    #[test]
    fn context_path_route_scopes_the_cookie() {
        let (_t, p, e) = setup("a.com/x");
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("JSESSIONID=abc"),
        );
        set_vcap_cookie(&mut h, &e, &p, None, &["JSESSIONID".into()], true);
        assert_eq!(
            cookies(&h)[1],
            "__VCAP_ID__=inst-1; Path=/x; HttpOnly; Secure"
        );
    }

    #[test]
    fn no_cookie_without_session_or_move() {
        let (_t, p, e) = setup("a.com");
        let mut h = HeaderMap::new();
        set_vcap_cookie(
            &mut h,
            &e,
            &p,
            Some("inst-1"),
            &["JSESSIONID".into()],
            false,
        );
        assert!(cookies(&h).is_empty());
        set_vcap_cookie(
            &mut h,
            &e,
            &p,
            Some("inst-0"),
            &["JSESSIONID".into()],
            false,
        );
        assert_eq!(cookies(&h), vec!["__VCAP_ID__=inst-1; Path=/; HttpOnly"]);
    }

    #[test]
    fn deleting_session_deletes_vcap_id() {
        let (_t, p, e) = setup("a.com");
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("JSESSIONID=; Max-Age=-1"),
        );
        set_vcap_cookie(&mut h, &e, &p, None, &["JSESSIONID".into()], false);
        assert_eq!(
            cookies(&h)[1],
            "__VCAP_ID__=inst-1; Path=/; Max-Age=0; HttpOnly"
        );
    }
}
