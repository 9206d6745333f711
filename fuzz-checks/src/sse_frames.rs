//! Server-sent event streams as the Routing API's clients read them
//! (`routing_api_client::sse::SseParser`, then `events::decode_message` into HTTP routes and TCP
//! route mappings, as gorouter, tcp-router and `rtr` do).
//!
//! Input: byte 0 picks the parser's size limit (small limits reach the "too large" paths),
//! byte 1 seeds the chunk split points, the rest is the stream.
//!
//! Invariants:
//! - no panic;
//! - chunking does not matter: the stream fed whole and fed in arbitrary pieces gives the same
//!   messages, the same error (if any), the same last id and retry;
//! - every decoded route survives the round trip through the Routing API's own frame writer
//!   (`routing_api::events::sse_frame`) and the parser: same id, action and route.
use routing_api_client::events::decode_message;
use routing_api_client::sse::{SseError, SseMessage, SseParser};
use routing_api_client::{HttpRoute, TcpRouteMapping};

/// Feeds `chunks` in order; stops at the first error, as `EventStream` does.
fn run<'a>(
    max: usize,
    chunks: impl Iterator<Item = &'a [u8]>,
) -> (Vec<SseMessage>, Option<SseError>, String, Option<u64>) {
    let mut parser = SseParser::with_max_size(max);
    let mut out = Vec::new();
    let mut err = None;
    for chunk in chunks {
        if let Err(e) = parser.feed(chunk, &mut out) {
            err = Some(e);
            break;
        }
    }
    let id = parser.last_event_id().to_string();
    (out, err, id, parser.retry())
}

fn round_trip<T>(msg: &SseMessage)
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(event) = decode_message::<T>(msg.clone()) else {
        return;
    };
    let json = serde_json::to_vec(&event.route).expect("a decoded route serialises");
    let id: u64 = event.id.parse().unwrap_or(0);
    let frame = routing_api::events::sse_frame(id, event.action, &json);
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    parser.feed(&frame, &mut out).expect("our own frame parses");
    assert_eq!(out.len(), 1, "one frame, one message: {frame:?}");
    let again = decode_message::<T>(out.remove(0)).expect("our own frame decodes");
    assert_eq!(again.id, id.to_string());
    assert_eq!(again.action, event.action);
    assert_eq!(again.route, event.route);
}

/// Runs this target's checks on one input; panics on a violated invariant.
pub fn check(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let max = match data[0] % 4 {
        0 => routing_api_client::sse::DEFAULT_MAX_SIZE,
        1 => 16,
        2 => 64,
        _ => 1024,
    };
    let seed = data[1];
    let stream = &data[2..];

    let whole = run(max, std::iter::once(stream));

    // Deterministic, input-dependent cut points (including cuts between \r and \n and inside
    // UTF-8 sequences, which the fuzzer will find).
    let mut cuts = Vec::new();
    let mut at = 0usize;
    let mut step = usize::from(seed % 7) + 1;
    while at < stream.len() {
        cuts.push(&stream[at..(at + step).min(stream.len())]);
        at += step;
        step = (step * 5 + usize::from(seed)) % 11 + 1;
    }
    let split = run(max, cuts.into_iter());
    assert_eq!(whole, split, "chunking changed the result");

    for msg in &whole.0 {
        round_trip::<HttpRoute>(msg);
        round_trip::<TcpRouteMapping>(msg);
    }
}
