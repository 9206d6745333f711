//! Request ids and distributed-tracing headers (A.7): `X-Vcap-Request-Id`, Zipkin B3 and W3C
//! `traceparent`/`tracestate`, matching the exchanges in captures/gorouter-requests.txt.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static B3: HeaderName = HeaderName::from_static("b3");
pub static X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Which tracing headers to maintain.
#[derive(Debug, Clone, Default)]
pub struct TraceSettings {
    pub zipkin: bool,
    pub w3c: bool,
    pub w3c_tenant_id: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `8-4-4-4-12` from the first 32 hex digits.
fn uuid_from_hex(hex: &str) -> Option<HeaderValue> {
    if !is_hex(hex.get(..32)?, 32) {
        return None;
    }
    let h = &hex[..32];
    let s = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    HeaderValue::from_str(&s).ok()
}

fn random_hex16() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Sets `X-Vcap-Request-Id` and, when enabled, the B3 and W3C headers on a request bound for
/// a backend. Returns the request id for the response and the access log.
pub fn apply(headers: &mut HeaderMap, settings: &TraceSettings) -> HeaderValue {
    let fresh = uuid::Uuid::new_v4();
    if !settings.zipkin && !settings.w3c {
        // The id in a buffer of its own that clones share (the request's header, the response's
        // and the access log's): one allocation, where a copied string is two once cloned.
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        fresh.hyphenated().encode_lower(&mut id);
        let id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
            .unwrap_or(HeaderValue::from_static("-"));
        headers.insert(crate::proxy::headers::X_VCAP_REQUEST_ID.clone(), id.clone());
        return id;
    }
    let fresh_hex = fresh.simple().to_string();
    // The trace this request belongs to: (trace id, span id to use as W3C parent).
    let mut trace: Option<(String, String)> = None;
    if settings.zipkin {
        trace = Some(apply_b3(headers, &fresh_hex));
    }
    if settings.w3c {
        let w3c_trace = apply_w3c(headers, trace.as_ref(), &fresh_hex, settings);
        if trace.is_none() {
            trace = Some(w3c_trace);
        }
    }
    let id = trace
        .as_ref()
        .and_then(|(t, _)| uuid_from_hex(t))
        .or_else(|| uuid_from_hex(&fresh_hex))
        .unwrap_or(HeaderValue::from_static("-"));
    headers.insert(crate::proxy::headers::X_VCAP_REQUEST_ID.clone(), id.clone());
    id
}

/// Zipkin: reuse a valid `b3`; else build it from `X-B3-TraceId`/`X-B3-SpanId`; else start a
/// trace from the request UUID. Returns (trace id, span id).
fn apply_b3(headers: &mut HeaderMap, fresh_hex: &str) -> (String, String) {
    if let Some((t, s)) = headers
        .get(&B3)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_b3)
    {
        return (t, s);
    }
    let supplied = (
        headers.get(&X_B3_TRACE_ID).and_then(|v| v.to_str().ok()),
        headers.get(&X_B3_SPAN_ID).and_then(|v| v.to_str().ok()),
    );
    if let (Some(t), Some(s)) = supplied {
        if (is_hex(t, 32) || is_hex(t, 16)) && is_hex(s, 16) {
            let (t, s) = (t.to_ascii_lowercase(), s.to_ascii_lowercase());
            if let Some(v) = value(&format!("{t}-{s}")) {
                headers.insert(B3.clone(), v);
            }
            return (t, s);
        }
    }
    let trace = fresh_hex.to_string();
    let span = fresh_hex[16..].to_string();
    if let (Some(tv), Some(sv), Some(b3)) = (
        value(&trace),
        value(&span),
        value(&format!("{trace}-{span}")),
    ) {
        headers.insert(X_B3_TRACE_ID.clone(), tv);
        headers.insert(X_B3_SPAN_ID.clone(), sv);
        headers.insert(B3.clone(), b3);
    }
    (trace, span)
}

/// `traceid-spanid[-sampled[-parent]]` -> (trace, span).
fn parse_b3(s: &str) -> Option<(String, String)> {
    let mut parts = s.trim().split('-');
    let t = parts.next()?;
    let sp = parts.next()?;
    if (is_hex(t, 32) || is_hex(t, 16)) && is_hex(sp, 16) {
        Some((t.to_ascii_lowercase(), sp.to_ascii_lowercase()))
    } else {
        None
    }
}

/// W3C: continue a valid `traceparent` with a new parent id; otherwise start one (from the
/// Zipkin trace when there is one). Returns (trace id, parent id).
fn apply_w3c(
    headers: &mut HeaderMap,
    zipkin: Option<&(String, String)>,
    fresh_hex: &str,
    settings: &TraceSettings,
) -> (String, String) {
    let incoming = headers
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let (trace, parent, flags, keep_state) = match incoming {
        Some((trace, flags)) => (trace, random_hex16(), flags, true),
        None => match zipkin {
            Some((t, s)) if t.len() == 32 => (t.clone(), s.clone(), "01".to_string(), false),
            _ => (
                fresh_hex.to_string(),
                fresh_hex[16..].to_string(),
                "01".to_string(),
                false,
            ),
        },
    };
    let key = if settings.w3c_tenant_id.is_empty() {
        "gorouter".to_string()
    } else {
        format!("{}@gorouter", settings.w3c_tenant_id)
    };
    let mut state = format!("{key}={parent}");
    if keep_state {
        let existing: Vec<String> = headers
            .get_all(&TRACESTATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty() && e.split('=').next() != Some(key.as_str()))
            .map(str::to_string)
            .collect();
        let rest = existing.join(",");
        if !rest.is_empty() && rest.len() <= 2048 {
            state.push(',');
            state.push_str(&rest);
        }
    }
    if let (Some(tp), Some(ts)) = (
        value(&format!("00-{trace}-{parent}-{flags}")),
        value(&state),
    ) {
        headers.insert(TRACEPARENT.clone(), tp);
        headers.insert(TRACESTATE.clone(), ts);
    }
    (trace, parent)
}

/// A valid traceparent is exactly 55 characters: `vv-<32 hex>-<16 hex>-<2 hex>`.
fn parse_traceparent(s: &str) -> Option<(String, String)> {
    let s = s.trim().to_ascii_lowercase();
    if s.len() != 55 {
        return None;
    }
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 4
        || !is_hex(parts[0], 2)
        || !is_hex(parts[1], 32)
        || !is_hex(parts[2], 16)
        || !is_hex(parts[3], 2)
        || parts[1].bytes().all(|b| b == b'0')
    {
        return None;
    }
    Some((parts[1].to_string(), parts[3].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> TraceSettings {
        TraceSettings {
            zipkin: true,
            w3c: true,
            w3c_tenant_id: String::new(),
        }
    }

    #[test]
    fn no_tracing_sets_a_fresh_uuid_request_id() {
        let mut h = HeaderMap::new();
        h.insert("x-vcap-request-id", HeaderValue::from_static("client-id"));
        let id = apply(&mut h, &TraceSettings::default());
        assert_eq!(h["x-vcap-request-id"], id);
        assert_ne!(id, "client-id");
        assert_eq!(id.len(), 36);
        let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(id, parsed.hyphenated().to_string().as_str());
        assert!(h.get("b3").is_none() && h.get("traceparent").is_none());
    }

    #[test]
    fn new_trace_uses_request_uuid_as_trace_id() {
        let mut h = HeaderMap::new();
        let id = apply(&mut h, &both());
        let trace = h["x-b3-traceid"].to_str().unwrap().to_string();
        let span = h["x-b3-spanid"].to_str().unwrap().to_string();
        assert_eq!(trace.len(), 32);
        assert_eq!(span, trace[16..]);
        assert_eq!(h["b3"], format!("{trace}-{span}").as_str());
        assert_eq!(h["traceparent"], format!("00-{trace}-{span}-01").as_str());
        assert_eq!(h["tracestate"], format!("gorouter={span}").as_str());
        assert_eq!(id.to_str().unwrap().replace('-', ""), trace);
    }

    #[test]
    fn supplied_b3_ids_and_traceparent_are_continued() {
        // captures/gorouter-requests.txt, exchange 2
        let mut h = HeaderMap::new();
        h.insert(
            "x-b3-traceid",
            HeaderValue::from_static("463ac35c9f6413ad48485a3953bb6124"),
        );
        h.insert("x-b3-spanid", HeaderValue::from_static("a2fb4a1d1a96d312"));
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        h.insert("tracestate", HeaderValue::from_static("foo=bar"));
        let id = apply(&mut h, &both());
        assert_eq!(id, "463ac35c-9f64-13ad-4848-5a3953bb6124");
        assert_eq!(h["b3"], "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"));
        let parent = &tp[36..52];
        assert_ne!(parent, "b7ad6b7169203331");
        assert_eq!(
            h["tracestate"],
            format!("gorouter={parent},foo=bar").as_str()
        );
    }

    #[test]
    fn single_b3_header_is_reused_and_seeds_w3c() {
        // captures/gorouter-requests.txt, exchange 3
        let mut h = HeaderMap::new();
        h.insert(
            "b3",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        );
        let id = apply(&mut h, &both());
        assert_eq!(id, "80f198ee-5634-3ba8-64fe-8b2a57d3eff7");
        assert_eq!(
            h["b3"],
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
        );
        assert!(h.get("x-b3-traceid").is_none());
        assert_eq!(
            h["traceparent"],
            "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"
        );
        assert_eq!(h["tracestate"], "gorouter=e457b5a2e4d86bd1");
    }

    #[test]
    fn invalid_traceparent_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("garbage"));
        apply(
            &mut h,
            &TraceSettings {
                zipkin: false,
                w3c: true,
                w3c_tenant_id: "t1".into(),
            },
        );
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(tp.len(), 55);
        assert!(h["tracestate"]
            .to_str()
            .unwrap()
            .starts_with("t1@gorouter="));
    }
}
