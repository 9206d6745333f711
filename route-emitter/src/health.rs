//! Health checks: which configured routes are currently advertised.
//!
//! [`run`] watches the configured route set and runs one checker task per route that has a
//! `health_check`; it publishes the *active* set (routes without a check, plus routes whose
//! last check passed). A route with a check is withheld until its first check passes; a failing
//! check removes it (the publishers then unregister it) and a passing one brings it back.
//!
//! - script: `script_path` run with no arguments; exit status 0 within `timeout` passes; past
//!   the timeout the script and everything it started (its process group) are killed and the
//!   check fails. Run every registration interval.
//! - `http`: `GET path` on `host:port` with a 2xx status within `timeout`, every `interval`.
//! - `tcp`: a TCP connect to `host:port` within `timeout`, every `interval`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{HealthCheck, Route};
use crate::metrics::EmitterMetrics;
use crate::sources::RouteSet;

/// Runs one check; `true` = healthy.
pub async fn check_once(route: &Route, check: &HealthCheck) -> bool {
    match check {
        HealthCheck::Script {
            name,
            script_path,
            timeout,
        } => {
            let child = tokio::process::Command::new(script_path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .process_group(0)
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(route = %route.name, health_check = %name, error = %e, "Route Registrar.healthchecker errored for route");
                    return false;
                }
            };
            match tokio::time::timeout(*timeout, child.wait()).await {
                Ok(Ok(status)) => status.success(),
                Ok(Err(_)) => false,
                Err(_) => {
                    // The script runs in its own process group: kill what it started too.
                    if let Some(pid) = child.id() {
                        // SAFETY: signalling the process group of our own child.
                        unsafe {
                            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                        }
                    }
                    let _ = child.kill().await;
                    tracing::info!(route = %route.name, health_check = %name, "Route Registrar.healthchecker-timed-out-killed");
                    false
                }
            }
        }
        HealthCheck::Tcp { port, timeout, .. } => {
            let addr = format!("{}:{port}", route.host);
            matches!(
                tokio::time::timeout(*timeout, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            )
        }
        HealthCheck::Http {
            path,
            port,
            timeout,
            ..
        } => {
            let addr = format!("{}:{port}", route.host);
            let host = route.uris.first().cloned().unwrap_or_else(|| addr.clone());
            let probe = async {
                let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: route-emitter\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await.ok()?;
                let mut head = [0u8; 12];
                s.read_exact(&mut head).await.ok()?;
                let text = std::str::from_utf8(&head).ok()?;
                let code: u16 = text.get(9..12)?.parse().ok()?;
                Some(code)
            };
            matches!(
                tokio::time::timeout(*timeout, probe).await,
                Ok(Some(200..=299))
            )
        }
    }
}

fn interval_of(route: &Route, check: &HealthCheck) -> Duration {
    let d = match check {
        HealthCheck::Script { .. } => route.registration_interval,
        HealthCheck::Http { interval, .. } | HealthCheck::Tcp { interval, .. } => *interval,
    };
    d.max(Duration::from_millis(100))
}

/// Starts a checker task for `route`: it runs `check` every [`interval_of`], counts it and
/// reports each result under `key`.
fn spawn_checker(
    route: Route,
    check: HealthCheck,
    key: String,
    tx: mpsc::Sender<(String, bool)>,
    metrics: EmitterMetrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let ok = check_once(&route, &check).await;
            metrics.health_check(ok);
            if last != Some(ok) {
                tracing::info!(route = %route.name, healthy = ok, "Route Registrar.health-check-result-changed");
                last = Some(ok);
            }
            if tx.send((key.clone(), ok)).await.is_err() {
                return;
            }
            tokio::time::sleep(interval_of(&route, &check)).await;
        }
    })
}

/// The active subset of `routes`: every route but those at the `checked` positions whose key is
/// not `healthy`. When nothing is withheld this is `routes` itself (no copy).
fn active_set(
    routes: &RouteSet,
    checked: &[(usize, String)],
    healthy: &HashSet<String>,
) -> RouteSet {
    let withheld: HashSet<usize> = checked
        .iter()
        .filter(|(_, key)| !healthy.contains(key))
        .map(|(i, _)| *i)
        .collect();
    if withheld.is_empty() {
        return routes.clone();
    }
    Arc::new(
        routes
            .iter()
            .enumerate()
            .filter(|(i, _)| !withheld.contains(i))
            .map(|(_, r)| r.clone())
            .collect(),
    )
}

/// Publishes the active subset of `configured` on `active`, running the checks (each counted
/// in `metrics`).
///
/// Routes without a health check cost one pass over the set when the configured set changes
/// (and when a check result flips); a result that changes nothing costs a map lookup.
pub async fn run(
    mut configured: watch::Receiver<RouteSet>,
    active: watch::Sender<RouteSet>,
    metrics: EmitterMetrics,
) {
    let (tx, mut results) = mpsc::channel::<(String, bool)>(64);
    let mut checkers: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut healthy: HashSet<String> = HashSet::new();
    let mut routes: RouteSet = configured.borrow_and_update().clone();
    // Position and key of every route with a health check, for the current `routes`.
    let mut checked: Vec<(usize, String)> = Vec::new();
    let mut closed = false;
    let mut reconcile = true;
    let mut dirty = true;
    loop {
        if std::mem::take(&mut reconcile) {
            // Start and stop checkers to match the configured routes.
            checked = routes
                .iter()
                .enumerate()
                .filter(|(_, r)| r.health_check.is_some())
                .map(|(i, r)| (i, r.key()))
                .collect();
            let keys: HashSet<&str> = checked.iter().map(|(_, k)| k.as_str()).collect();
            checkers.retain(|k, h| {
                let keep = keys.contains(k.as_str());
                if !keep {
                    h.abort();
                }
                keep
            });
            healthy.retain(|k| keys.contains(k.as_str()));
            for (i, key) in &checked {
                if checkers.contains_key(key) {
                    continue;
                }
                let route = &routes[*i];
                let Some(check) = route.health_check.clone() else {
                    continue;
                };
                checkers.insert(
                    key.clone(),
                    spawn_checker(
                        route.clone(),
                        check,
                        key.clone(),
                        tx.clone(),
                        metrics.clone(),
                    ),
                );
            }
            dirty = true;
        }
        if std::mem::take(&mut dirty) {
            let now = active_set(&routes, &checked, &healthy);
            active.send_if_modified(|cur| {
                if Arc::ptr_eq(cur, &now) || **cur == *now {
                    false
                } else {
                    *cur = now;
                    true
                }
            });
        }
        tokio::select! {
            changed = configured.changed(), if !closed => {
                if changed.is_err() {
                    closed = true;
                } else {
                    routes = configured.borrow_and_update().clone();
                    reconcile = true;
                }
            }
            Some((key, ok)) = results.recv() => {
                if checkers.contains_key(&key) {
                    dirty = if ok { healthy.insert(key) } else { healthy.remove(&key) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate_route, RouteDefaults, RouteSchema};
    use std::path::PathBuf;
    use std::time::Instant;

    fn route() -> Route {
        validate_route(
            RouteSchema {
                name: "r".into(),
                port: Some(1),
                uris: vec!["r".into()],
                registration_interval: "10s".into(),
                ..Default::default()
            },
            &RouteDefaults {
                host: "127.0.0.1".into(),
                availability_zone: String::new(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn script(path: &str, timeout: Duration) -> HealthCheck {
        HealthCheck::Script {
            name: "s".into(),
            script_path: PathBuf::from(path),
            timeout,
        }
    }

    #[tokio::test]
    async fn script_exit_status_and_timeout() {
        let r = route();
        assert!(check_once(&r, &script("/bin/true", Duration::from_secs(5))).await);
        assert!(!check_once(&r, &script("/bin/false", Duration::from_secs(5))).await);
        assert!(!check_once(&r, &script("/nonexistent/check", Duration::from_secs(5))).await);
        let dir = std::env::temp_dir().join(format!("re-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let slow = dir.join("slow.sh");
        std::fs::write(&slow, "#!/bin/sh\nsleep 60\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let ok = check_once(
            &r,
            &script(slow.to_str().unwrap(), Duration::from_millis(200)),
        )
        .await;
        assert!(!ok);
        // Cut off by its 200 ms timeout, not waited out (60 s): a generous bound between.
        assert!(started.elapsed() < Duration::from_secs(20));

        // Past the timeout, what the script started dies with it (its process group).
        let pid_file = dir.join("child.pid");
        let spawner = dir.join("spawner.sh");
        std::fs::write(
            &spawner,
            format!(
                "#!/bin/sh\nsleep 30 &\necho $! > {}\nwait\n",
                pid_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&spawner, std::fs::Permissions::from_mode(0o755)).unwrap();
        let check = script(spawner.to_str().unwrap(), Duration::from_millis(300));
        assert!(!check_once(&r, &check).await);
        let child: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Gone, or a zombie waiting for init to reap it.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(), "the script's child {child} outlived the timeout");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn active_set_withholds_only_unhealthy_checked_routes() {
        let mut checked_route = route();
        checked_route.name = "checked".into();
        checked_route.health_check = Some(script("/bin/true", Duration::from_secs(1)));
        let routes: RouteSet = Arc::new(vec![route(), checked_route.clone()]);
        let checked = vec![(1, checked_route.key())];
        let mut healthy = HashSet::new();
        let active = active_set(&routes, &checked, &healthy);
        assert_eq!(*active, vec![route()]);
        healthy.insert(checked_route.key());
        let active = active_set(&routes, &checked, &healthy);
        assert!(
            Arc::ptr_eq(&active, &routes),
            "nothing withheld: the same set, not a copy"
        );
        let active = active_set(&routes, &[], &HashSet::new());
        assert!(Arc::ptr_eq(&active, &routes));
    }

    #[tokio::test]
    async fn tcp_probe() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let check = |port| HealthCheck::Tcp {
            port,
            timeout: Duration::from_millis(500),
            interval: Duration::from_secs(1),
        };
        assert!(check_once(&route(), &check(port)).await);
        // A port that is bound but not listening refuses connections, and stays ours for the
        // whole test (a released port could be taken by a test running in parallel).
        let bound = tokio::net::TcpSocket::new_v4().unwrap();
        bound.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let refused = bound.local_addr().unwrap().port();
        assert!(!check_once(&route(), &check(refused)).await);
        drop(listener);
    }
}
