//! Picking an endpoint from a pool (A.6, A.8): round-robin, least-connection, `max_conns`,
//! skipping endpoints that failed recently, and sticky-session preference.
//!
//! Everything here works on the pool's immutable endpoint snapshot plus atomics, so choosing
//! an endpoint takes no lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::BalancingAlgorithm;
use crate::registry::{Endpoint, Pool};

/// Counts a request against an endpoint's in-flight total for as long as it lives.
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(endpoint)
    }

    /// Counts a request to `endpoint` of `pool` only when something reads the count:
    /// least-connection balancing or `max_conns`. Round robin without a limit skips it, because
    /// the count costs two atomic updates a request on a cache line every serving thread
    /// writes. (A pool switched to least-connection meanwhile undercounts the requests already
    /// under way, until they end.)
    pub fn when_counted(
        pool: &Pool,
        endpoint: &Arc<Endpoint>,
        max_conns: Option<u64>,
    ) -> Option<Self> {
        (max_conns.is_some() || pool.lb_algo() == BalancingAlgorithm::LeastConnection)
            .then(|| Self::new(endpoint.clone()))
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why no endpoint could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    /// The pool has no endpoints.
    Empty,
    /// Every endpoint is at `max_conns`.
    AllOverloaded,
    /// A must-stick instance is gone (or the requested app instance is missing).
    InstanceGone,
}

/// The per-request inputs of a choice.
pub struct Choice<'a> {
    /// `backends.max_conns`; `None` is unlimited.
    pub max_conns: Option<u64>,
    /// How long a failed endpoint is skipped, in table milliseconds.
    pub retry_after_failure_ms: u64,
    /// The table clock now.
    pub now_ms: u64,
    /// Sticky `__VCAP_ID__` or `X-CF-App-Instance` target, by private instance id / index.
    pub preferred: Option<Preferred<'a>>,
}

/// An instance the request asks for.
#[derive(Clone, Copy)]
pub enum Preferred<'a> {
    /// `__VCAP_ID__`: try it first, fall back to any other.
    Sticky(&'a str),
    /// `X-CF-App-Instance`: this app's instance index, no fallback.
    AppInstance { app: &'a str, index: &'a str },
}

fn overloaded(e: &Endpoint, max_conns: Option<u64>) -> bool {
    max_conns.is_some_and(|m| e.in_flight.load(Ordering::Relaxed) >= m)
}

fn recently_failed(e: &Endpoint, c: &Choice) -> bool {
    let at = e.failed_at.load(Ordering::Relaxed);
    if at == 0 {
        return false;
    }
    if c.now_ms.saturating_sub(at - 1) < c.retry_after_failure_ms {
        true
    } else {
        e.failed_at.store(0, Ordering::Relaxed);
        false
    }
}

/// Marks an endpoint failed (skipped for the retry-after period).
pub fn mark_failed(e: &Endpoint, now_ms: u64) {
    e.failed_at.store(now_ms + 1, Ordering::Relaxed);
}

/// Chooses the endpoint for the next attempt.
pub fn choose(pool: &Pool, c: &Choice) -> Result<Arc<Endpoint>, NoEndpoint> {
    let endpoints = pool.endpoints();
    if endpoints.is_empty() {
        return Err(NoEndpoint::Empty);
    }
    match c.preferred {
        Some(Preferred::AppInstance { app, index }) => {
            return endpoints
                .iter()
                .find(|e| e.app_id() == app && e.private_instance_index() == index)
                .cloned()
                .ok_or(NoEndpoint::InstanceGone);
        }
        Some(Preferred::Sticky(id)) => {
            if let Some(e) = endpoints
                .iter()
                .find(|e| e.private_instance_id() == id && !overloaded(e, c.max_conns))
            {
                return Ok(e.clone());
            }
        }
        None => {}
    }
    match pool.lb_algo() {
        BalancingAlgorithm::RoundRobin => round_robin(pool, &endpoints, c),
        BalancingAlgorithm::LeastConnection => least_connection(&endpoints, c),
    }
}

fn round_robin(
    pool: &Pool,
    endpoints: &[Arc<Endpoint>],
    c: &Choice,
) -> Result<Arc<Endpoint>, NoEndpoint> {
    let n = endpoints.len();
    // One endpoint needs no cursor: not moving it spares a cache line every serving thread
    // would write on every request.
    let start = if n == 1 {
        0
    } else {
        pool.next_idx.fetch_add(1, Ordering::Relaxed)
    };
    // First pass honours failure marks; if everything is marked, forget the marks (A.6).
    for honour_failures in [true, false] {
        for i in 0..n {
            let e = &endpoints[(start + i) % n];
            if overloaded(e, c.max_conns) {
                continue;
            }
            if honour_failures && recently_failed(e, c) {
                continue;
            }
            if i > 0 {
                // Keep the cursor moving past skipped endpoints.
                pool.next_idx.fetch_add(i, Ordering::Relaxed);
            }
            if !honour_failures {
                e.failed_at.store(0, Ordering::Relaxed);
            }
            return Ok(e.clone());
        }
    }
    Err(NoEndpoint::AllOverloaded)
}

fn least_connection(endpoints: &[Arc<Endpoint>], c: &Choice) -> Result<Arc<Endpoint>, NoEndpoint> {
    let n = endpoints.len();
    let start = rand::random::<u32>() as usize % n;
    for honour_failures in [true, false] {
        let mut best: Option<&Arc<Endpoint>> = None;
        for i in 0..n {
            let e = &endpoints[(start + i) % n];
            if overloaded(e, c.max_conns) || (honour_failures && recently_failed(e, c)) {
                continue;
            }
            if best.is_none_or(|b| e.in_flight() < b.in_flight()) {
                best = Some(e);
            }
        }
        if let Some(b) = best {
            return Ok(b.clone());
        }
    }
    Err(NoEndpoint::AllOverloaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{EndpointSpec, RouteTable, TableSettings};

    fn table_with(n: u16, algo: BalancingAlgorithm) -> (RouteTable, Arc<Pool>) {
        let t = RouteTable::new(TableSettings {
            default_lb_algo: algo,
            ..TableSettings::default()
        });
        for i in 0..n {
            t.register(
                "a.com",
                &EndpointSpec {
                    host: "10.0.0.1".into(),
                    port: 1000 + i,
                    private_instance_id: format!("inst-{i}"),
                    private_instance_index: i.to_string(),
                    app: "app".into(),
                    ..Default::default()
                },
            );
        }
        let p = t.lookup("a.com", "/").unwrap();
        (t, p)
    }

    fn choice() -> Choice<'static> {
        Choice {
            max_conns: None,
            retry_after_failure_ms: 30_000,
            now_ms: 1_000,
            preferred: None,
        }
    }

    #[test]
    fn round_robin_cycles_through_all_endpoints() {
        let (_t, p) = table_with(3, BalancingAlgorithm::RoundRobin);
        let mut seen: Vec<String> = (0..6)
            .map(|_| choose(&p, &choice()).unwrap().addr().to_string())
            .collect();
        assert_eq!(seen[0..3], seen[3..6]);
        seen.truncate(3);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn failed_endpoints_are_skipped_until_retry_after() {
        let (_t, p) = table_with(2, BalancingAlgorithm::RoundRobin);
        let eps = p.endpoints();
        mark_failed(&eps[0], 1_000);
        for _ in 0..4 {
            assert_eq!(choose(&p, &choice()).unwrap().addr(), eps[1].addr());
        }
        let later = Choice {
            now_ms: 40_000,
            ..choice()
        };
        let picks: Vec<_> = (0..2)
            .map(|_| choose(&p, &later).unwrap().addr().to_string())
            .collect();
        assert!(
            picks.iter().any(|a| a == eps[0].addr()),
            "failure mark expired"
        );
    }

    #[test]
    fn all_failed_still_returns_an_endpoint() {
        let (_t, p) = table_with(2, BalancingAlgorithm::RoundRobin);
        for e in p.endpoints().iter() {
            mark_failed(e, 1_000);
        }
        assert!(choose(&p, &choice()).is_ok());
    }

    #[test]
    fn overloaded_endpoints_are_skipped_and_all_overloaded_is_an_error() {
        let (_t, p) = table_with(2, BalancingAlgorithm::RoundRobin);
        let eps = p.endpoints();
        let limited = Choice {
            max_conns: Some(1),
            ..choice()
        };
        let _busy = InFlight::new(eps[0].clone());
        for _ in 0..3 {
            assert_eq!(choose(&p, &limited).unwrap().addr(), eps[1].addr());
        }
        let _busy2 = InFlight::new(eps[1].clone());
        assert_eq!(choose(&p, &limited).unwrap_err(), NoEndpoint::AllOverloaded);
    }

    #[test]
    fn least_connection_prefers_idle_endpoint() {
        let (_t, p) = table_with(3, BalancingAlgorithm::LeastConnection);
        let eps = p.endpoints();
        let _a = InFlight::new(eps[0].clone());
        let _b = InFlight::new(eps[2].clone());
        for _ in 0..5 {
            assert_eq!(choose(&p, &choice()).unwrap().addr(), eps[1].addr());
        }
    }

    #[test]
    fn sticky_instance_is_preferred_and_falls_back_when_gone() {
        let (_t, p) = table_with(3, BalancingAlgorithm::RoundRobin);
        let sticky = Choice {
            preferred: Some(Preferred::Sticky("inst-2")),
            ..choice()
        };
        for _ in 0..5 {
            assert_eq!(choose(&p, &sticky).unwrap().private_instance_id(), "inst-2");
        }
        let gone = Choice {
            preferred: Some(Preferred::Sticky("inst-9")),
            ..choice()
        };
        assert!(choose(&p, &gone).is_ok());
    }

    #[test]
    fn app_instance_selects_exactly_that_instance() {
        let (_t, p) = table_with(3, BalancingAlgorithm::RoundRobin);
        let c = Choice {
            preferred: Some(Preferred::AppInstance {
                app: "app",
                index: "1",
            }),
            ..choice()
        };
        assert_eq!(choose(&p, &c).unwrap().private_instance_id(), "inst-1");
        let missing = Choice {
            preferred: Some(Preferred::AppInstance {
                app: "app",
                index: "7",
            }),
            ..choice()
        };
        assert_eq!(choose(&p, &missing).unwrap_err(), NoEndpoint::InstanceGone);
    }

    #[test]
    fn in_flight_guard_counts_and_releases() {
        let (_t, p) = table_with(1, BalancingAlgorithm::RoundRobin);
        let e = p.endpoints()[0].clone();
        {
            let _g = InFlight::new(e.clone());
            assert_eq!(e.in_flight(), 1);
        }
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn requests_are_counted_only_where_least_connection_or_max_conns_reads_the_count() {
        let (_t, rr) = table_with(1, BalancingAlgorithm::RoundRobin);
        let e = rr.endpoints()[0].clone();
        assert!(InFlight::when_counted(&rr, &e, None).is_none());
        let limited = InFlight::when_counted(&rr, &e, Some(5));
        assert_eq!(e.in_flight(), 1, "max_conns reads the count");
        drop(limited);
        let (_t, lc) = table_with(2, BalancingAlgorithm::LeastConnection);
        let e = lc.endpoints()[0].clone();
        let counted = InFlight::when_counted(&lc, &e, None);
        assert_eq!(e.in_flight(), 1, "least-connection reads the count");
        drop(counted);
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn a_pool_of_one_endpoint_leaves_the_round_robin_cursor_alone() {
        let (_t, one) = table_with(1, BalancingAlgorithm::RoundRobin);
        let before = one.next_idx.load(Ordering::Relaxed);
        for _ in 0..3 {
            assert_eq!(
                choose(&one, &choice()).unwrap().addr(),
                one.endpoints()[0].addr()
            );
        }
        assert_eq!(one.next_idx.load(Ordering::Relaxed), before);
        let (_t, two) = table_with(2, BalancingAlgorithm::RoundRobin);
        let before = two.next_idx.load(Ordering::Relaxed);
        choose(&two, &choice()).unwrap();
        assert_eq!(two.next_idx.load(Ordering::Relaxed), before.wrapping_add(1));
    }
}
