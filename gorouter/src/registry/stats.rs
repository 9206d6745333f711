//! What the route table counts for the router's metrics: when it last changed, how many
//! endpoints the pruner removed, the NATS registry messages by the registering component
//! (its `tags.component`) and outcome, and how old registrations were on arrival. Nothing here is on the request path: registration
//! traffic updates it and a scrape reads it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_endpoint::AtomicHistogram;

use super::PutOutcome;

/// Distinct components counted by name; messages from more are counted under
/// [`OTHER_COMPONENT`], so a misbehaving registrar cannot grow the metrics without bound.
pub const MAX_COMPONENTS: usize = 128;
pub const OTHER_COMPONENT: &str = "other";

/// Registry message counts, keyed by component then action.
#[derive(Debug)]
pub struct RegistryStats {
    /// Table clock (ms) + 1 of the last registration or removal; 0 before the first.
    last_update_ms: AtomicU64,
    routes_pruned: AtomicU64,
    registered: Mutex<HashMap<String, [u64; 4]>>,
    unregistered: Mutex<HashMap<String, u64>>,
    /// Milliseconds from a registration's `endpoint_updated_at_ns` to its arrival.
    registration_latency: AtomicHistogram,
}

impl Default for RegistryStats {
    fn default() -> Self {
        Self::new(&DEFAULT_REGISTRATION_LATENCY_BUCKETS)
    }
}

/// `route_registration_latency`'s bounds (ms) unless `prometheus.meters` sets them.
pub const DEFAULT_REGISTRATION_LATENCY_BUCKETS: [f64; 10] =
    [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 1000.0];

/// `registry_message`'s `action` label values, upstream's names of a put's result.
pub const ACTIONS: [&str; 4] = ["added", "updated", "refreshed", "unmodified"];

fn action_index(outcome: PutOutcome) -> usize {
    match outcome {
        PutOutcome::Added => 0,
        PutOutcome::Updated => 1,
        PutOutcome::Refreshed => 2,
        PutOutcome::Ignored => 3,
    }
}

/// The key a component's counts go under: its name, or [`OTHER_COMPONENT`] once the map is
/// full.
fn slot<'m, V: Default>(map: &'m mut HashMap<String, V>, component: &str) -> &'m mut V {
    if !map.contains_key(component) {
        let key = if map.len() < MAX_COMPONENTS {
            component
        } else {
            OTHER_COMPONENT
        };
        return map.entry(key.to_owned()).or_default();
    }
    map.get_mut(component).expect("checked above")
}

impl RegistryStats {
    /// Stats whose `route_registration_latency` has these bounds (ms).
    pub fn new(registration_latency_buckets: &[f64]) -> Self {
        Self {
            last_update_ms: AtomicU64::new(0),
            routes_pruned: AtomicU64::new(0),
            registered: Mutex::default(),
            unregistered: Mutex::default(),
            registration_latency: AtomicHistogram::new(registration_latency_buckets),
        }
    }

    /// A registration stamped `endpoint_updated_at_ns` (Unix time) arrived now; unstamped
    /// (0) and future stamps are not measured.
    pub fn registration_arrived(&self, endpoint_updated_at_ns: i64) {
        if endpoint_updated_at_ns <= 0 {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        if let Some(age) = now.checked_sub(endpoint_updated_at_ns as u128) {
            self.registration_latency.observe(age as f64 / 1e6);
        }
    }

    /// `route_registration_latency`.
    pub fn registration_latency(&self) -> &AtomicHistogram {
        &self.registration_latency
    }

    pub(super) fn updated(&self, now_ms: u64) {
        self.last_update_ms.store(now_ms + 1, Ordering::Relaxed);
    }

    pub(super) fn pruned(&self, endpoints: usize) {
        self.routes_pruned
            .fetch_add(endpoints as u64, Ordering::Relaxed);
    }

    /// The table clock of the last change, if any.
    pub fn last_update_ms(&self) -> Option<u64> {
        self.last_update_ms.load(Ordering::Relaxed).checked_sub(1)
    }

    pub fn routes_pruned(&self) -> u64 {
        self.routes_pruned.load(Ordering::Relaxed)
    }

    /// One `router.register` message's put for one URI.
    pub fn count_register(&self, component: &str, outcome: PutOutcome) {
        let mut map = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        slot(&mut map, component)[action_index(outcome)] += 1;
    }

    /// One `router.unregister` message.
    pub fn count_unregister(&self, component: &str) {
        let mut map = self.unregistered.lock().unwrap_or_else(|p| p.into_inner());
        *slot(&mut map, component) += 1;
    }

    /// `(component, action, count)` for every non-zero count, sorted.
    pub fn registered(&self) -> Vec<(String, &'static str, u64)> {
        let map = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .flat_map(|(component, counts)| {
                ACTIONS
                    .iter()
                    .zip(counts)
                    .filter(|(_, n)| **n > 0)
                    .map(|(action, n)| (component.clone(), *action, *n))
            })
            .collect();
        out.sort();
        out
    }

    /// `(component, count)`, sorted.
    pub fn unregistered(&self) -> Vec<(String, u64)> {
        let map = self.unregistered.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map.iter().map(|(c, n)| (c.clone(), *n)).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_counted_by_component_and_action() {
        let stats = RegistryStats::default();
        stats.count_register("route-emitter", PutOutcome::Added);
        stats.count_register("route-emitter", PutOutcome::Refreshed);
        stats.count_register("route-emitter", PutOutcome::Refreshed);
        stats.count_register("", PutOutcome::Ignored);
        assert_eq!(
            stats.registered(),
            vec![
                (String::new(), "unmodified", 1),
                ("route-emitter".to_owned(), "added", 1),
                ("route-emitter".to_owned(), "refreshed", 2),
            ]
        );
    }

    #[test]
    fn components_beyond_the_cap_are_counted_as_other() {
        let stats = RegistryStats::default();
        for i in 0..MAX_COMPONENTS + 5 {
            stats.count_unregister(&format!("c{i}"));
        }
        let counts = stats.unregistered();
        assert_eq!(counts.len(), MAX_COMPONENTS + 1);
        assert!(
            counts.contains(&(OTHER_COMPONENT.to_owned(), 5)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_stamped_registration_is_measured_and_an_unstamped_one_is_not() {
        let stats = RegistryStats::default();
        stats.registration_arrived(0);
        assert_eq!(stats.registration_latency().count(), 0);
        let a_second_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
            - 1_000_000_000;
        stats.registration_arrived(a_second_ago);
        assert_eq!(stats.registration_latency().count(), 1);
    }

    #[test]
    fn no_update_yet_is_none() {
        let stats = RegistryStats::default();
        assert_eq!(stats.last_update_ms(), None);
        stats.updated(0);
        assert_eq!(stats.last_update_ms(), Some(0));
    }
}
