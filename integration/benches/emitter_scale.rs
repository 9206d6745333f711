//! Route-emitter scale benchmark (issue 5): registrations per second the emitter sustains for
//! 100k HTTP routes, and the time for gorouter to hold all of them again after a restart.
//!
//! ```sh
//! cargo bench -p integration --bench emitter_scale
//! cargo bench -p integration --bench emitter_scale -- --routes 50000 --window 5s --restarts 3
//! ```
//!
//! The benchmark first runs `cargo build --release -p gorouter -p route-emitter` (a no-op when
//! they are fresh) and points `$GOROUTER_BIN` / `$ROUTE_EMITTER_BIN` at `target/release`; if
//! both variables are already set, those binaries are used and nothing is built
//! (`--no-build` skips the build too). `nats-server` must be installed (as for the tests).
//! Everything listens on 127.0.0.1: a private nats-server, the emitter, gorouter and this
//! process's NATS client. The `--routes` routes are static routes of one emitter config, each
//! with its own URI (`r<i>.emitter-scale.test`) and all pointing at one closed port (no
//! traffic is sent to them). `RUST_LOG=info` is set for the children, since the test helpers
//! start both at debug level, which logs every registration.
//!
//! - **a) registration rate, bench client as the router**: routes registered every 1s; this
//!   process answers `router.greet` (`minimumRegisterIntervalInSeconds: 1`) and counts
//!   `router.register` messages. Reported: time from the emitter's start to its first message
//!   and to a first full round (every URI seen once), then over `--window` after that round:
//!   messages/s, each burst (one per interval: start, duration, messages, distinct URIs, rate
//!   within the burst), whether every route was registered in every burst, the longest gap
//!   between two registrations of one route, and the emitter's CPU time and memory.
//! - **a') the same with a real gorouter attached** (gorouter answers the greet with
//!   `minimumRegisterIntervalInSeconds: 0`, so the routes' 1s interval applies): the same
//!   figures, plus whether gorouter ended up holding every route and whether its NATS client
//!   reported a slow consumer (dropped messages). `--skip-gorouter-rate` skips it.
//! - **b) gorouter restart**: routes registered every 20s, so only `router.start` brings them
//!   back quickly. Once gorouter holds all routes (counted from its `/routes` status endpoint,
//!   polled every `--poll`), it is killed and a new one is started on the same NATS; the time
//!   from spawning the new process, and from its `router.start` (as this process receives it),
//!   until its `/routes` lists every route is measured, `--restarts` times; min and median are
//!   printed. The poll adds up to `--poll` plus one `/routes` dump to each figure. Each round
//!   also shows when the emitter's re-registration burst reached this process (it waits a
//!   random 100-500 ms after `router.start`), which separates the emitter's share from the time
//!   gorouter takes to apply the burst.
//!
//! On the 2-core development machine the measurements take about 80 s, plus the release
//! build when the sources changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use integration::route_emitter::{RouteEmitter, RouteEmitterBuilder};
use integration::router::{basic_auth, STATUS_PASS, STATUS_USER};
use integration::util::{closed_port, proc_status_kib};
use integration::{Gorouter, NatsServer};
use serde::de::IgnoredAny;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const URI_SUFFIX: &str = ".emitter-scale.test";
/// A pause longer than this between two registrations ends a burst.
const BURST_GAP: Duration = Duration::from_millis(200);

/// Command-line options (`cargo bench -p integration --bench emitter_scale -- --help`).
#[derive(clap::Parser)]
#[command(name = "emitter_scale")]
struct Options {
    /// Routes in the emitter's config.
    #[arg(long, default_value_t = 100_000)]
    routes: usize,
    /// Measurement window of the registration-rate runs (Go duration).
    #[arg(long, default_value = "10s", value_parser = yaml_config::parse_go_duration)]
    window: Duration,
    /// gorouter restarts to time.
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// How often gorouter's /routes is polled during a restart (Go duration).
    #[arg(long, default_value = "100ms", value_parser = yaml_config::parse_go_duration)]
    poll: Duration,
    /// Use the binaries as they are (or `$GOROUTER_BIN` / `$ROUTE_EMITTER_BIN`).
    #[arg(long)]
    no_build: bool,
    /// Skip run a') (registration rate with gorouter attached).
    #[arg(long)]
    skip_gorouter_rate: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Builds the release binaries (unless both `$..._BIN` are set, or `--no-build`) and points the
/// test helpers at them.
fn release_binaries(build: bool) {
    if std::env::var_os("GOROUTER_BIN").is_some() && std::env::var_os("ROUTE_EMITTER_BIN").is_some()
    {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building: cargo build --release -p gorouter -p route-emitter");
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-p",
                "gorouter",
                "-p",
                "route-emitter",
            ])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --release failed: {status}");
    }
    for (var, name) in [
        ("GOROUTER_BIN", "gorouter"),
        ("ROUTE_EMITTER_BIN", "route-emitter"),
    ] {
        let path = target.join("release").join(name);
        assert!(
            path.is_file(),
            "{} is missing: run `cargo build --release -p gorouter -p route-emitter`",
            path.display()
        );
        std::env::set_var(var, path);
    }
}

fn main() {
    let o = <Options as clap::Parser>::parse();
    release_binaries(!o.no_build);
    // Before any thread exists. The helpers start both binaries with debug logging, which
    // writes a line per registration; RUST_LOG overrides that.
    std::env::set_var("RUST_LOG", "info");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        println!(
            "emitter_scale: {} routes, window {:?}, {} restarts, /routes poll {:?}",
            o.routes, o.window, o.restarts, o.poll
        );
        registration_rate(&o, false).await;
        if !o.skip_gorouter_rate {
            registration_rate(&o, true).await;
        }
        restart_recovery(&o).await;
    });
}

// ----- the emitter -----

fn uri(i: usize) -> String {
    format!("r{i}{URI_SUFFIX}")
}

/// An emitter with `n` HTTP routes registered every `interval`, all to one closed port.
fn start_emitter(nats: &NatsServer, n: usize, interval: &str) -> (RouteEmitter, Instant) {
    let port = closed_port();
    let routes: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            json!({
                "name": format!("r{i}"),
                "port": port,
                "uris": [uri(i)],
                "registration_interval": interval,
            })
        })
        .collect();
    let builder = RouteEmitterBuilder::new(Some(nats)).set("routes", json!(routes));
    let started = Instant::now();
    (builder.start(), started)
}

/// A client of the bench's own, with room for a whole round in its subscription buffer.
async fn connect(nats: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(nats.url())
        .await
        .expect("connect to nats-server")
}

/// user + system CPU time of `pid` (from `/proc/<pid>/stat`, clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

// ----- a) registration rate -----

#[derive(Debug, Clone)]
struct Burst {
    start: Instant,
    end: Instant,
    messages: u64,
    distinct: u64,
}

/// What the `router.register` subscriber has seen.
struct Counter {
    routes: usize,
    first: Option<Instant>,
    seen: Vec<bool>,
    distinct: usize,
    full_round: Option<Instant>,
    /// Counting window; set once the first full round is in.
    window: Option<(Instant, Instant)>,
    in_window: u64,
    last: Vec<Option<Instant>>,
    /// Longest gap between two registrations of one route, both in the window.
    max_gap: Duration,
    burst_of: Vec<u32>,
    bursts: Vec<Burst>,
    prev: Option<Instant>,
    unparsed: u64,
}

impl Counter {
    fn new(routes: usize) -> Self {
        Counter {
            routes,
            first: None,
            seen: vec![false; routes],
            distinct: 0,
            full_round: None,
            window: None,
            in_window: 0,
            last: vec![None; routes],
            max_gap: Duration::ZERO,
            burst_of: vec![u32::MAX; routes],
            bursts: Vec::new(),
            prev: None,
            unparsed: 0,
        }
    }

    fn record(&mut self, payload: &[u8], now: Instant) {
        let Some(i) = route_index(payload).filter(|i| *i < self.routes) else {
            self.unparsed += 1;
            return;
        };
        self.first.get_or_insert(now);
        if !self.seen[i] {
            self.seen[i] = true;
            self.distinct += 1;
            if self.distinct == self.routes {
                self.full_round = Some(now);
            }
        }
        let Some((from, to)) = self.window else {
            return;
        };
        if now < from || now >= to {
            return;
        }
        self.in_window += 1;
        if let Some(last) = self.last[i] {
            self.max_gap = self.max_gap.max(now - last);
        }
        self.last[i] = Some(now);
        let new_burst = match (self.prev, self.bursts.last()) {
            (Some(p), Some(_)) => now - p > BURST_GAP,
            _ => true,
        };
        self.prev = Some(now);
        if new_burst {
            self.bursts.push(Burst {
                start: now,
                end: now,
                messages: 0,
                distinct: 0,
            });
        }
        let id = (self.bursts.len() - 1) as u32;
        let Some(b) = self.bursts.last_mut() else {
            return;
        };
        b.end = now;
        b.messages += 1;
        if self.burst_of[i] != id {
            self.burst_of[i] = id;
            b.distinct += 1;
        }
    }
}

/// `i` of the first URI `r<i>.emitter-scale.test` in a registration message.
fn route_index(payload: &[u8]) -> Option<usize> {
    let key = b"\"uris\":[\"r";
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

async fn registration_rate(o: &Options, with_gorouter: bool) {
    let title = if with_gorouter {
        "a') registration rate, gorouter attached (routes every 1s)"
    } else {
        "a) registration rate, this process answers router.greet (min interval 1s, routes every 1s)"
    };
    println!("\n{title}");
    let nats = NatsServer::start().await;
    let client = connect(&nats).await;
    let router = if with_gorouter {
        Some(
            Gorouter::builder(&nats)
                .yaml("logging: {level: info}")
                .start()
                .await,
        )
    } else {
        let mut greets = client.subscribe("router.greet").await.expect("subscribe");
        let c = client.clone();
        tokio::spawn(async move {
            let reply = r#"{"id":"0-bench","hosts":["127.0.0.1"],"minimumRegisterIntervalInSeconds":1,"pruneThresholdInSeconds":120}"#;
            while let Some(m) = greets.next().await {
                if let Some(to) = m.reply {
                    let _ = c.publish(to, reply.into()).await;
                }
            }
        });
        None
    };
    let counter = Arc::new(Mutex::new(Counter::new(o.routes)));
    let mut registers = client
        .subscribe("router.register")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let c = counter.clone();
    let sub = tokio::spawn(async move {
        while let Some(m) = registers.next().await {
            let now = Instant::now();
            c.lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(&m.payload, now);
        }
    });

    let (emitter, started) = start_emitter(&nats, o.routes, "1s");
    let deadline = started + Duration::from_secs(120);
    let full = loop {
        if let Some(t) = counter.lock().unwrap_or_else(|e| e.into_inner()).full_round {
            break Some(t);
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (first, distinct) = {
        let c = counter.lock().unwrap_or_else(|e| e.into_inner());
        (c.first, c.distinct)
    };
    match first {
        Some(f) => println!(
            "  emitter start -> first registration: {:>8.3} s",
            secs(f - started)
        ),
        None => println!("  no registration within 120 s"),
    }
    let Some(full) = full else {
        println!(
            "  first full round NOT complete within 120 s ({distinct} of {} URIs)",
            o.routes
        );
        sub.abort();
        return;
    };
    let first = first.unwrap_or(full);
    println!(
        "  emitter start -> first full round:   {:>8.3} s (the round itself {:.3} s, {:.0} registrations/s)",
        secs(full - started),
        secs(full - first),
        o.routes as f64 / secs(full - first).max(1e-9)
    );
    // Count from the next whole second on, for `window`.
    let from = Instant::now() + Duration::from_millis(500);
    let to = from + o.window;
    counter.lock().unwrap_or_else(|e| e.into_inner()).window = Some((from, to));
    tokio::time::sleep_until((from - Duration::from_millis(100)).into()).await;
    let cpu0 = cpu_time(emitter.pid());
    let gr_cpu0 = router.as_ref().map(|r| cpu_time(r.pid()));
    tokio::time::sleep_until((to + Duration::from_millis(100)).into()).await;
    let cpu = cpu_time(emitter.pid()).saturating_sub(cpu0);
    let gr_cpu = router
        .as_ref()
        .zip(gr_cpu0)
        .map(|(r, c0)| cpu_time(r.pid()).saturating_sub(c0));
    let c = {
        let c = counter.lock().unwrap_or_else(|e| e.into_inner());
        (
            c.in_window,
            c.bursts.clone(),
            c.max_gap,
            c.unparsed,
            c.last.iter().filter(|l| l.is_some()).count(),
        )
    };
    let (in_window, bursts, max_gap, unparsed, routes_in_window) = c;
    println!(
        "  window {:.1} s: {in_window} registrations = {:.0}/s; {} of {} routes registered in it",
        secs(o.window),
        in_window as f64 / secs(o.window),
        routes_in_window,
        o.routes
    );
    // Whole bursts only: the first and last may be cut by the window.
    let whole: Vec<&Burst> = bursts
        .iter()
        .filter(|b| b.start > from + BURST_GAP && b.end + BURST_GAP < to)
        .collect();
    if whole.len() >= 2 {
        let msgs: u64 = whole[..whole.len() - 1].iter().map(|b| b.messages).sum();
        let span = whole[whole.len() - 1].start - whole[0].start;
        println!(
            "  sustained over {} whole intervals: {:.0} registrations/s ({:.3} s between burst starts)",
            whole.len() - 1,
            msgs as f64 / secs(span),
            secs(span) / (whole.len() - 1) as f64
        );
    }
    println!("  bursts in the window (start offset, duration, messages, distinct URIs, rate within the burst):");
    for b in &bursts {
        let d = b.end - b.start;
        println!(
            "    +{:>6.3} s {:>7.3} s {:>8} {:>8} {:>10.0}/s{}",
            secs(b.start - from),
            secs(d),
            b.messages,
            b.distinct,
            b.messages as f64 / secs(d).max(1e-9),
            if b.start <= from + BURST_GAP || b.end + BURST_GAP >= to {
                "  (cut by the window)"
            } else {
                ""
            }
        );
    }
    let all_whole = whole.iter().all(|b| b.distinct == o.routes as u64);
    println!(
        "  every route registered in every whole interval: {} ({} whole bursts); longest gap between two registrations of one route: {:.3} s",
        if all_whole && !whole.is_empty() { "yes" } else { "NO" },
        whole.len(),
        secs(max_gap)
    );
    if unparsed > 0 {
        println!("  {unparsed} messages not from the benchmark's routes");
    }
    println!(
        "  route-emitter: CPU {:.2} s in the window ({:.1} µs per registration), RSS {} MiB (peak {} MiB)",
        secs(cpu),
        secs(cpu) * 1e6 / in_window.max(1) as f64,
        proc_status_kib(emitter.pid(), "VmRSS").unwrap_or(0) / 1024,
        proc_status_kib(emitter.pid(), "VmHWM").unwrap_or(0) / 1024
    );
    if let Some(router) = &router {
        let held = routes_count(router).await;
        let slow = router.output().matches("nats-slow-consumer").count();
        println!(
            "  gorouter: CPU {:.2} s in the window, holds {} of {} routes, slow-consumer reports: {slow}, RSS {} MiB",
            secs(gr_cpu.unwrap_or_default()),
            held.map_or("?".to_string(), |n| n.to_string()),
            o.routes,
            proc_status_kib(router.pid(), "VmRSS").unwrap_or(0) / 1024
        );
    }
    sub.abort();
    drop(emitter);
    drop(router);
}

// ----- b) restart recovery -----

/// How many routes gorouter's `/routes` lists; `None` if it does not answer 200.
async fn routes_count(router: &Gorouter) -> Option<usize> {
    let fetch = async {
        let mut s = TcpStream::connect(router.routes_addr()).await.ok()?;
        let req = format!(
            "GET /routes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
            basic_auth(STATUS_USER, STATUS_PASS)
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()??;
    if !buf.starts_with(b"HTTP/1.1 200") {
        return None;
    }
    let body_at = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let routes: HashMap<String, IgnoredAny> = serde_json::from_slice(&buf[body_at..]).ok()?;
    Some(routes.keys().filter(|k| k.ends_with(URI_SUFFIX)).count())
}

/// Polls `/routes` every `poll` until it lists `n` routes; the time of the answer that did.
async fn wait_all_held(
    router: &Gorouter,
    n: usize,
    poll: Duration,
    timeout: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if routes_count(router).await == Some(n) {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(poll).await;
    }
}

async fn restart_recovery(o: &Options) {
    println!(
        "\nb) gorouter restart: time until the new gorouter holds all {} routes (routes every 20s)",
        o.routes
    );
    let nats = NatsServer::start().await;
    let client = connect(&nats).await;
    let mut starts = client.subscribe("router.start").await.expect("subscribe");
    client.flush().await.expect("flush");
    let (start_tx, mut start_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    tokio::spawn(async move {
        while starts.next().await.is_some() {
            let _ = start_tx.send(Instant::now());
        }
    });
    // When the emitter's registrations of a round arrive here (count, first, last).
    let burst = Arc::new(Mutex::new((0usize, None::<Instant>, None::<Instant>)));
    let mut registers = client
        .subscribe("router.register")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let b = burst.clone();
    tokio::spawn(async move {
        while registers.next().await.is_some() {
            let now = Instant::now();
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            b.0 += 1;
            b.1.get_or_insert(now);
            b.2 = Some(now);
        }
    });
    let builder = || Gorouter::builder(&nats).yaml("logging: {level: info}");
    let mut router = builder().start().await;
    let (emitter, started) = start_emitter(&nats, o.routes, "20s");
    match wait_all_held(&router, o.routes, o.poll, Duration::from_secs(120)).await {
        Some(t) => println!(
            "  initial fill: gorouter holds all routes {:.3} s after the emitter started",
            secs(t - started)
        ),
        None => {
            println!("  gorouter did not hold all routes within 120 s of the emitter's start");
            return;
        }
    }
    let mut from_spawn = Vec::new();
    let mut from_start = Vec::new();
    for round in 1..=o.restarts {
        drop(router);
        while start_rx.try_recv().is_ok() {}
        *burst.lock().unwrap_or_else(|e| e.into_inner()) = (0, None, None);
        let spawned = Instant::now();
        router = builder().spawn();
        let held = wait_all_held(&router, o.routes, o.poll, Duration::from_secs(15)).await;
        let announced = start_rx.try_recv().ok();
        let slow = router.output().matches("nats-slow-consumer").count();
        let (sent, first, last) = *burst.lock().unwrap_or_else(|e| e.into_inner());
        let since = |t: Option<Instant>| match (t, announced) {
            (Some(t), Some(a)) if t >= a => format!("+{:.3} s", secs(t - a)),
            _ => "?".to_string(),
        };
        let emitted = format!(
            "emitter burst {sent} messages from {} to {} after router.start",
            since(first),
            since(last)
        );
        match held {
            Some(t) => {
                let s = t - spawned;
                from_spawn.push(s);
                let a = announced.map(|a| t - a);
                if let Some(a) = a {
                    from_start.push(a);
                }
                println!(
                    "  round {round}: all {} routes held {:.3} s after spawn, {} after router.start; {emitted}; slow-consumer reports: {slow}",
                    o.routes,
                    secs(s),
                    a.map_or("?".to_string(), |a| format!("{:.3} s", secs(a)))
                );
            }
            None => {
                let n = routes_count(&router).await;
                println!(
                    "  round {round}: NOT all routes held within 15 s of spawn ({} held); {emitted}; slow-consumer reports: {slow}",
                    n.map_or("?".to_string(), |n| n.to_string())
                );
            }
        }
    }
    for (what, v) in [
        ("spawn", &mut from_spawn),
        ("router.start", &mut from_start),
    ] {
        if v.is_empty() {
            continue;
        }
        v.sort();
        println!(
            "  from {what:<12}: min {:.3} s, median {:.3} s, max {:.3} s ({} rounds)",
            secs(v[0]),
            secs(v[v.len() / 2]),
            secs(v[v.len() - 1]),
            v.len()
        );
    }
    println!(
        "  route-emitter RSS {} MiB (peak {} MiB)",
        proc_status_kib(emitter.pid(), "VmRSS").unwrap_or(0) / 1024,
        proc_status_kib(emitter.pid(), "VmHWM").unwrap_or(0) / 1024
    );
    drop(emitter);
    drop(router);
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
