//! Where routes come from: the config's static `routes` plus every file matching one of
//! `dynamic_config_globs`, polled every [`POLL_INTERVAL`].
//!
//! The current set is published on a `watch` channel whenever it changes. A file that cannot be
//! read or parsed is reported once per change and its previous routes are kept; a file whose
//! routes are partly invalid contributes its valid routes. A deleted file's routes disappear.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{parse_route_file, Route, RouteDefaults};

/// How often the dynamic config files are re-read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A set of routes, in a stable order.
pub type RouteSet = Arc<Vec<Route>>;

/// The existing files matching a glob pattern (`*`, `?`, `[...]`, as Go's `filepath.Glob`
/// that route-registrar uses), sorted. A malformed pattern matches nothing and is reported.
pub fn expand_glob(pattern: &str) -> Vec<PathBuf> {
    let paths = match glob::glob(pattern) {
        Ok(paths) => paths,
        Err(e) => {
            tracing::error!(pattern, error = %e, "Route Registrar.invalid-dynamic-config-glob");
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = paths.flatten().filter(|p| p.is_file()).collect();
    files.sort();
    files
}

struct FileState {
    stamp: (Option<SystemTime>, u64),
    routes: Vec<Route>,
}

/// Static routes plus dynamic files.
pub struct Sources {
    static_routes: Vec<Route>,
    globs: Vec<String>,
    defaults: RouteDefaults,
    files: BTreeMap<PathBuf, FileState>,
}

impl Sources {
    pub fn new(static_routes: Vec<Route>, globs: Vec<String>, defaults: RouteDefaults) -> Self {
        Sources {
            static_routes,
            globs,
            defaults,
            files: BTreeMap::new(),
        }
    }

    fn stamp(path: &Path) -> Option<(Option<SystemTime>, u64)> {
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok(), m.len()))
    }

    /// Re-reads changed files; returns whether the route set may have changed.
    pub fn poll(&mut self) -> bool {
        let mut seen: Vec<PathBuf> = self.globs.iter().flat_map(|g| expand_glob(g)).collect();
        seen.sort();
        seen.dedup();
        let mut changed = false;
        let before = self.files.len();
        // `seen` is sorted.
        self.files.retain(|p, _| seen.binary_search(p).is_ok());
        if self.files.len() != before {
            changed = true;
        }
        for path in seen {
            let Some(stamp) = Self::stamp(&path) else {
                continue;
            };
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let result = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|text| parse_route_file(&text, &self.defaults));
            match result {
                Ok((routes, problems)) => {
                    for p in problems {
                        tracing::error!(file = %path.display(), error = %p, "Route Registrar.invalid-route-in-dynamic-config-file");
                    }
                    tracing::info!(file = %path.display(), routes = routes.len(), "Route Registrar.dynamic-config-file-loaded");
                    self.files.insert(path, FileState { stamp, routes });
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "Route Registrar.config watcher failed");
                    let routes = self
                        .files
                        .remove(&path)
                        .map(|f| f.routes)
                        .unwrap_or_default();
                    self.files.insert(path, FileState { stamp, routes });
                }
            }
        }
        changed
    }

    /// Every current route, duplicates removed.
    pub fn routes(&self) -> Vec<Route> {
        let mut seen: HashSet<&Route> = HashSet::new();
        self.static_routes
            .iter()
            .chain(self.files.values().flat_map(|f| f.routes.iter()))
            .filter(|r| seen.insert(*r))
            .cloned()
            .collect()
    }

    /// Polls forever, publishing the route set on `tx` whenever it changes.
    pub async fn run(mut self, tx: watch::Sender<RouteSet>) {
        let mut first = true;
        loop {
            if self.poll() || std::mem::take(&mut first) {
                let routes = self.routes();
                tx.send_if_modified(|cur| {
                    if **cur != routes {
                        *cur = Arc::new(routes);
                        true
                    } else {
                        false
                    }
                });
            }
            if self.globs.is_empty() {
                return;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_files_only_sorted() {
        let dir = std::env::temp_dir().join(format!("re-globs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub.yml")).unwrap();
        for f in ["b.yml", "a.yml", "a.yaml", "r1-x.json"] {
            std::fs::write(dir.join(f), "routes: []").unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            expand_glob(&format!("{}/{pattern}", dir.display()))
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("*.yml"), ["a.yml", "b.yml"]);
        assert_eq!(names("r?-*.json"), ["r1-x.json"]);
        assert_eq!(names("[b]*"), ["b.yml"]);
        assert!(names("[").is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn duplicates_are_removed_keeping_the_first() {
        let defaults = RouteDefaults {
            host: "h".into(),
            availability_zone: String::new(),
            ..Default::default()
        };
        let route = |name: &str| {
            crate::config::validate_route(
                crate::config::RouteSchema {
                    name: name.into(),
                    port: Some(1),
                    uris: vec![name.into()],
                    registration_interval: "1s".into(),
                    ..Default::default()
                },
                &defaults,
            )
            .unwrap()
        };
        let s = Sources::new(
            vec![route("b"), route("a"), route("b"), route("c"), route("a")],
            Vec::new(),
            defaults.clone(),
        );
        let names: Vec<String> = s.routes().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["b", "a", "c"]);
    }

    #[test]
    fn files_are_added_changed_and_removed() {
        let dir = std::env::temp_dir().join(format!("re-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let glob = format!("{}/*.yml", dir.display());
        let mut s = Sources::new(Vec::new(), vec![glob], RouteDefaults::default());
        assert!(!s.poll());
        let f = dir.join("a.yml");
        std::fs::write(
            &f,
            "routes: [{name: a, host: h, port: 1, uris: [a], registration_interval: 1s}]",
        )
        .unwrap();
        assert!(s.poll());
        assert_eq!(s.routes().len(), 1);
        std::fs::write(&f, "routes: [").unwrap();
        s.poll();
        assert_eq!(s.routes().len(), 1, "a bad file keeps its routes");
        std::fs::remove_file(&f).unwrap();
        assert!(s.poll());
        assert!(s.routes().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
