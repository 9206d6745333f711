//! Requests per application over the last minute, for `/varz`'s `top10_app_requests`
//! (upstream's `stats.TopApps`): counted only while the deprecated `/varz` is served.
//!
//! Upstream keeps two heaps under one mutex taken on every request. Here each application has
//! a ring of [`WINDOW_SECS`] one-second slots, each slot one atomic word holding its second
//! and its count, so counting a request is a map lookup and a compare-and-swap, and nothing
//! waits. Reading sums the slots still inside the window; [`TopApps::prune`] (run by the
//! `/varz` ticker) forgets applications with no request in it. At most [`MAX_APPS`] are
//! tracked at once: past that, new applications are not counted until others are forgotten.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Upstream's `TopAppsEntryLifetime`: the window `rpm` counts over, in seconds.
pub const WINDOW_SECS: u64 = 60;
/// Upstream's `top10`: how many applications `/varz` lists.
pub const TOP: usize = 10;
/// The most applications tracked at once (a slot ring is 480 bytes: 4.8 MB at most).
pub const MAX_APPS: usize = 10_000;

/// One application's ring of per-second counts. A slot packs its second (high 32 bits,
/// counted from [`TopApps`]'s start) and that second's count (low 32 bits).
#[derive(Debug)]
struct Slots([AtomicU64; WINDOW_SECS as usize]);

impl Slots {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn mark(&self, second: u64) {
        let slot = &self.0[(second % WINDOW_SECS) as usize];
        let stamp = second << 32;
        // A slot still holding an older second starts over at 1.
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
            Some(if packed >> 32 == second {
                packed.saturating_add(1).min(stamp | u64::from(u32::MAX))
            } else {
                stamp | 1
            })
        });
    }

    /// Requests in the window ending at `now` (its last [`WINDOW_SECS`] seconds, `now` included).
    fn in_window(&self, now: u64) -> u64 {
        let oldest = now.saturating_sub(WINDOW_SECS - 1);
        self.0
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|packed| (oldest..=now).contains(&(packed >> 32)))
            .map(|packed| packed & u64::from(u32::MAX))
            .sum()
    }
}

/// An application's requests in the window, as `/varz` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopApp {
    pub application_id: String,
    /// Requests in the last minute (upstream's `rpm`).
    pub per_minute: u64,
}

impl TopApp {
    /// Upstream's `rps`: the minute's requests over 60 seconds, rounded down.
    pub fn per_second(&self) -> u64 {
        self.per_minute / WINDOW_SECS
    }
}

/// Recent requests by application id.
#[derive(Debug)]
pub struct TopApps {
    started: Instant,
    apps: crate::LockFreeMap<Box<str>, Slots>,
}

impl Default for TopApps {
    fn default() -> Self {
        Self::new()
    }
}

impl TopApps {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            apps: crate::LockFreeMap::default(),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    /// Counts one request to `app_id` at `at` (upstream skips requests without an app id).
    pub fn mark(&self, app_id: &str, at: Instant) {
        if app_id.is_empty() {
            return;
        }
        let second = self.second(at);
        let guard = self.apps.guard();
        let slots = match self.apps.get(app_id, &guard) {
            Some(slots) => slots,
            None if self.apps.len() < MAX_APPS => {
                self.apps
                    .get_or_insert_with(app_id.into(), Slots::new, &guard)
            }
            None => return,
        };
        slots.mark(second);
    }

    /// The [`TOP`] applications with the most requests in the window ending at `now`, most
    /// first (ties by id, so the order is stable).
    pub fn top(&self, now: Instant) -> Vec<TopApp> {
        let now = self.second(now);
        let guard = self.apps.guard();
        let mut apps: Vec<TopApp> = self
            .apps
            .iter(&guard)
            .map(|(id, slots)| TopApp {
                application_id: id.to_string(),
                per_minute: slots.in_window(now),
            })
            .filter(|app| app.per_minute > 0)
            .collect();
        apps.sort_unstable_by(|a, b| {
            b.per_minute
                .cmp(&a.per_minute)
                .then_with(|| a.application_id.cmp(&b.application_id))
        });
        apps.truncate(TOP);
        apps
    }

    /// Forgets applications with no request in the window ending at `now`.
    pub fn prune(&self, now: Instant) {
        let now = self.second(now);
        let guard = self.apps.guard();
        self.apps
            .retain(|_, slots| slots.in_window(now) > 0, &guard);
    }

    /// Applications tracked now.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(apps: &TopApps, secs: u64) -> Instant {
        apps.started + Duration::from_secs(secs)
    }

    #[test]
    fn apps_are_listed_by_requests_in_the_last_minute_most_first() {
        let apps = TopApps::new();
        for _ in 0..3 {
            apps.mark("b", at(&apps, 1));
        }
        apps.mark("a", at(&apps, 2));
        for _ in 0..120 {
            apps.mark("c", at(&apps, 30));
        }
        let top = apps.top(at(&apps, 30));
        let ids: Vec<&str> = top.iter().map(|a| a.application_id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(top[0].per_minute, 120);
        assert_eq!(top[0].per_second(), 2);
        assert_eq!(top[1].per_minute, 3);
        assert_eq!(top[1].per_second(), 0);
    }

    #[test]
    fn requests_older_than_the_window_are_not_counted() {
        let apps = TopApps::new();
        apps.mark("a", at(&apps, 10));
        apps.mark("a", at(&apps, 69));
        assert_eq!(apps.top(at(&apps, 69))[0].per_minute, 2);
        // Second 10 has left the window [11, 70]; second 69 has not.
        assert_eq!(apps.top(at(&apps, 70))[0].per_minute, 1);
        // A slot reused a minute later starts over.
        apps.mark("a", at(&apps, 70));
        apps.mark("a", at(&apps, 130));
        assert_eq!(apps.top(at(&apps, 130))[0].per_minute, 1);
    }

    #[test]
    fn only_the_top_ten_are_listed_ties_by_id() {
        let apps = TopApps::new();
        for i in 0..15 {
            apps.mark(&format!("app-{i:02}"), at(&apps, 5));
        }
        let top = apps.top(at(&apps, 5));
        assert_eq!(top.len(), TOP);
        assert_eq!(top[0].application_id, "app-00");
        assert_eq!(top[9].application_id, "app-09");
    }

    #[test]
    fn requests_without_an_app_id_are_not_counted() {
        let apps = TopApps::new();
        apps.mark("", at(&apps, 1));
        assert!(apps.is_empty());
        assert!(apps.top(at(&apps, 1)).is_empty());
    }

    #[test]
    fn prune_forgets_apps_idle_for_the_whole_window() {
        let apps = TopApps::new();
        apps.mark("idle", at(&apps, 1));
        apps.mark("busy", at(&apps, 100));
        apps.prune(at(&apps, 100));
        assert_eq!(apps.len(), 1);
        assert_eq!(apps.top(at(&apps, 100))[0].application_id, "busy");
    }

    #[test]
    fn past_the_cap_new_apps_are_not_tracked() {
        let apps = TopApps::new();
        for i in 0..MAX_APPS {
            apps.mark(&format!("app-{i}"), at(&apps, 1));
        }
        apps.mark("one-too-many", at(&apps, 1));
        assert_eq!(apps.len(), MAX_APPS);
        apps.mark("app-0", at(&apps, 1));
        assert_eq!(
            apps.top(at(&apps, 1))[0],
            TopApp {
                application_id: "app-0".into(),
                per_minute: 2
            }
        );
    }

    #[test]
    fn concurrent_marks_are_all_counted() {
        let apps = std::sync::Arc::new(TopApps::new());
        let now = at(&apps, 3);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let apps = apps.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        apps.mark("shared", now);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(apps.top(now)[0].per_minute, 40_000);
    }
}
