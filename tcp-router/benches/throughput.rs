//! Data-path benchmark: throughput (MB/s) and connections/s straight to a backend, through
//! tcp-router, and through HAProxy with a minimal TCP config like upstream's generated one, in
//! one run on this machine.
//!
//! ```sh
//! cargo bench -p tcp-router --bench throughput
//! cargo bench -p tcp-router --bench throughput -- --rounds 7 --duration 3s --streams 8 --clients 32
//! ```
//!
//! Everything runs on 127.0.0.1: the backends (a sink that discards what it reads, and a
//! ping-pong server answering 64 bytes per connection), the load clients, a fake Routing API
//! (auth disabled; it lists the two routes and holds the event stream open), the release
//! `tcp-router` binary, and `haproxy` (Debian's package: `apt-get install haproxy`; without it
//! the benchmark stops and says so). The clients and backends share one process, so all three
//! paths pay the same for them. Both proxies get `maxconn`/`max_connections` [`MAXCONN`].
//!
//! - throughput: `--streams` connections each write 64 KiB chunks; the sink counts what
//!   arrives.
//! - connections/s: `--clients` loops each connect, write 64 bytes, read the 64-byte answer and
//!   close.
//!
//! Each measurement lasts `--duration` after `--warmup`; `--rounds` rounds run the three paths
//! in rotating order and the medians are reported, since other work on a shared machine moves
//! single figures a lot. Beside the rates, the proxies' own CPU time (user + system, from
//! `/proc/<pid>/stat`) per GB and per connection shows their efficiency independently of how
//! much CPU the load generator leaves them. `--skip-direct` and `--skip-throughput` shorten a
//! run; `--compare-bin <path>` adds another tcp-router binary (say, a copy of the build before
//! a change) as a fourth path, `tcp-router-b`, so before and after share one run's load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Command-line options (`cargo bench -p tcp-router --bench throughput -- --help`).
#[derive(clap::Parser)]
#[command(name = "throughput")]
struct Options {
    /// Length of each measured run (Go duration).
    #[arg(long, default_value = "1500ms", value_parser = yaml_config::parse_go_duration)]
    duration: Duration,
    /// Warm-up before each run (Go duration).
    #[arg(long, default_value = "300ms", value_parser = yaml_config::parse_go_duration)]
    warmup: Duration,
    /// Parallel streams of the throughput runs.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Parallel clients of the connections/s runs.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Rounds (the order of the targets rotates each round).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Skip the direct (no proxy) baseline.
    #[arg(long)]
    skip_direct: bool,
    /// Skip the throughput runs (connections/s only).
    #[arg(long)]
    skip_throughput: bool,
    /// Another tcp-router binary to measure beside this build's (e.g. a copy of an earlier
    /// build, for before/after figures in one run); shown as `tcp-router-b`.
    #[arg(long)]
    compare_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `maxconn` of both proxies: what fits this machine's open-files limit for HAProxy
/// (two descriptors per connection); tcp-router gets the same.
const MAXCONN: usize = 9000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

// ----- backends -----

/// Reads and discards; counts bytes.
async fn sink(counter: Arc<AtomicU64>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let addr = l.local_addr().expect("sink addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads 64 bytes, answers 64 bytes, then waits for the client to close.
async fn ping_pong() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ping-pong");
    let addr = l.local_addr().expect("ping-pong addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                if s.write_all(&buf).await.is_err() {
                    return;
                }
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

// ----- CPU accounting -----

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

// ----- load -----

/// MB/s, and the proxy's CPU seconds per GB moved.
async fn throughput(
    target: SocketAddr,
    counter: &Arc<AtomicU64>,
    o: &Options,
    pid: Option<u32>,
) -> (f64, Option<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..o.streams {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(target)
                .await
                .expect("connect for throughput");
            let chunk = vec![0x5au8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(o.warmup).await;
    let before = counter.load(Ordering::Relaxed);
    let cpu_before = cpu_seconds(pid);
    let t0 = Instant::now();
    tokio::time::sleep(o.duration).await;
    let bytes = counter.load(Ordering::Relaxed) - before;
    let cpu = cpu_seconds(pid).zip(cpu_before).map(|(a, b)| a - b);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    (
        bytes as f64 / secs / 1e6,
        cpu.map(|c| c / (bytes as f64 / 1e9).max(1e-9)),
    )
}

/// Connections/s, failures, and the proxy's CPU microseconds per connection.
async fn connections(target: SocketAddr, o: &Options, pid: Option<u32>) -> (f64, u64, Option<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let msg = [0x42u8; 64];
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let ok = async {
                    let mut s = TcpStream::connect(target).await?;
                    s.set_nodelay(true)?;
                    s.write_all(&msg).await?;
                    s.read_exact(&mut buf).await?;
                    Ok::<_, std::io::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(5), ok).await {
                    Ok(Ok(())) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(o.warmup).await;
    let before = done.load(Ordering::Relaxed);
    let failed_before = failed.load(Ordering::Relaxed);
    let cpu_before = cpu_seconds(pid);
    let t0 = Instant::now();
    tokio::time::sleep(o.duration).await;
    let n = done.load(Ordering::Relaxed) - before;
    let cpu = cpu_seconds(pid).zip(cpu_before).map(|(a, b)| a - b);
    let errors = failed.load(Ordering::Relaxed) - failed_before;
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    // Let TIME_WAIT sockets and the proxies settle before the next run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (
        n as f64 / secs,
        errors,
        cpu.map(|c| c * 1e6 / (n as f64).max(1.0)),
    )
}

// ----- fake Routing API -----

/// Serves `GET /routing/v1/tcp_routes` (the given routes), `/routing/v1/router_groups` (empty)
/// and holds `GET /routing/v1/tcp_routes/events` open.
async fn fake_routing_api(routes_json: String) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake routing api");
    let addr = l.local_addr().expect("fake routing api addr");
    let routes = Arc::new(routes_json);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    buf.drain(..head_end);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    if path.starts_with("/routing/v1/tcp_routes/events") {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\n\r\n")
                            .await;
                        let _ = s.read(&mut tmp).await; // until the client goes
                        return;
                    }
                    let body = if path.starts_with("/routing/v1/tcp_routes") {
                        routes.to_string()
                    } else {
                        "[]".to_string()
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

// ----- proxies -----

struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.name;
    }
}

async fn wait_accepting(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            // Make sure this is a forwarding listener: send nothing, just close.
            let _ = s.shutdown().await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 20s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tcp_router_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tcp-router"))
}

async fn start_tcp_router(
    bin: &Path,
    name: &'static str,
    dir: &Path,
    api: SocketAddr,
    ports: [u16; 2],
) -> Proc {
    let health = free_port();
    let config = format!(
        "routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: true}}\n\
         bind_address: 127.0.0.1\nhealth_check_port: {health}\nlog_level: error\nreserved_system_component_ports: []\n\
         max_connections: {MAXCONN}\n",
        api.port()
    );
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, config).expect("write tcp-router config");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("tcp-router log");
    let mut child = Command::new(bin)
        .arg("-config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    for p in ports {
        wait_accepting(p, name, &mut child).await;
    }
    Proc { name, child }
}

fn haproxy_bin() -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join("haproxy");
        if p.is_file() {
            return p;
        }
    }
    eprintln!(
        "haproxy is not installed: this benchmark compares against it.\n\
         Install it with: apt-get update && apt-get install -y haproxy"
    );
    std::process::exit(2);
}

async fn start_haproxy(dir: &Path, routes: [(u16, SocketAddr); 2]) -> Proc {
    // What upstream generates (frontend/backend per port, no balance line, no checks) on the
    // BOSH base config's global and timeout settings.
    let mut config = format!(
        "global\n  maxconn {MAXCONN}\n\ndefaults\n  mode tcp\n  timeout connect 30000ms\n  timeout client 300000ms\n  timeout server 300000ms\n\n",
    );
    for (port, backend) in routes {
        config.push_str(&format!(
            "frontend frontend_{port}\n  mode tcp\n  bind 127.0.0.1:{port}\n  default_backend backend_{port}\n\n\
             backend backend_{port}\n  mode tcp\n  server server_{ip}_{bport} {backend}\n\n",
            ip = backend.ip(),
            bport = backend.port(),
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy config");
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
    let bin = haproxy_bin();
    let mut child = Command::new(&bin)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    for (p, _) in routes {
        wait_accepting(p, "haproxy", &mut child).await;
    }
    Proc {
        name: "haproxy",
        child,
    }
}

fn route_json(port: u16, backend: SocketAddr, guid: &str) -> String {
    format!(
        r#"{{"router_group_guid":"rg","backend_port":{},"backend_tls_port":-1,"backend_ip":"{}","instance_id":"","port":{port},"modification_tag":{{"guid":"{guid}","index":0}},"ttl":120,"isolation_segment":""}}"#,
        backend.port(),
        backend.ip()
    )
}

#[derive(Clone, Copy)]
struct Path3 {
    name: &'static str,
    bulk: SocketAddr,
    small: SocketAddr,
    pid: Option<u32>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    let o = <Options as clap::Parser>::parse();
    let haproxy = haproxy_bin();
    let version = Command::new(&haproxy)
        .arg("-v")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join(format!("tcp-router-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bench dir");
        let counter = Arc::new(AtomicU64::new(0));
        let sink_addr = sink(counter.clone()).await;
        let pp_addr = ping_pong().await;
        eprintln!(
            "tcp-router benchmark: {} rounds; {} streams of 64 KiB writes, {} connect/ping/close clients; {:?} per measurement after {:?} warm-up; {} CPUs; {version}",
            o.rounds,
            o.streams,
            o.clients,
            o.duration,
            o.warmup,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );

        let (tr_bulk, tr_small) = (free_port(), free_port());
        let (b_bulk, b_small) = (free_port(), free_port());
        // One Routing API per router: routers on one host share ports they both have routes
        // for (SO_REUSEPORT), which would split each path's connections between them.
        let routes = format!(
            "[{},{}]",
            route_json(tr_bulk, sink_addr, "bulk"),
            route_json(tr_small, pp_addr, "small")
        );
        let api = fake_routing_api(routes).await;
        let _router =
            start_tcp_router(&tcp_router_bin(), "tcp-router", &dir, api, [tr_bulk, tr_small]).await;
        let router_b = match &o.compare_bin {
            Some(bin) => {
                let routes = format!(
                    "[{},{}]",
                    route_json(b_bulk, sink_addr, "bulk-b"),
                    route_json(b_small, pp_addr, "small-b")
                );
                let api = fake_routing_api(routes).await;
                Some(start_tcp_router(bin, "tcp-router-b", &dir, api, [b_bulk, b_small]).await)
            }
            None => None,
        };
        let (hp_bulk, hp_small) = (free_port(), free_port());
        let _haproxy = start_haproxy(&dir, [(hp_bulk, sink_addr), (hp_small, pp_addr)]).await;

        let mut paths = vec![
            Path3 { name: "direct", bulk: sink_addr, small: pp_addr, pid: None },
            Path3 {
                name: "tcp-router",
                bulk: addr(tr_bulk),
                small: addr(tr_small),
                pid: Some(_router.child.id()),
            },
            Path3 {
                name: "haproxy",
                bulk: addr(hp_bulk),
                small: addr(hp_small),
                pid: Some(_haproxy.child.id()),
            },
        ];
        if let Some(b) = &router_b {
            paths.push(Path3 {
                name: "tcp-router-b",
                bulk: addr(b_bulk),
                small: addr(b_small),
                pid: Some(b.child.id()),
            });
        }
        if o.skip_direct {
            paths.remove(0);
        }
        let n = paths.len();
        let (mut mbps, mut cpu_gb) = (vec![Vec::new(); n], vec![Vec::new(); n]);
        let (mut conns, mut cpu_conn) = (vec![Vec::new(); n], vec![Vec::new(); n]);
        let mut failed = vec![0u64; n];
        for round in 0..o.rounds {
            // Rotate the order so no path always runs first (or right after another).
            for k in 0..n {
                let i = (k + round) % n;
                let p = paths[i];
                if !o.skip_throughput {
                    let (m, cpu) = throughput(p.bulk, &counter, &o, p.pid).await;
                    eprintln!(
                        "  round {}: {:<10} {m:>8.0} MB/s{}",
                        round + 1,
                        p.name,
                        cpu.map(|c| format!("  ({c:.2} CPU s/GB)")).unwrap_or_default()
                    );
                    mbps[i].push(m);
                    cpu_gb[i].extend(cpu);
                }
                let (c, errors, cpu) = connections(p.small, &o, p.pid).await;
                eprintln!(
                    "  round {}: {:<10} {c:>8.0} connections/s ({errors} failed){}",
                    round + 1,
                    p.name,
                    cpu.map(|c| format!("  ({c:.1} CPU us/connection)")).unwrap_or_default()
                );
                conns[i].push(c);
                cpu_conn[i].extend(cpu);
                failed[i] += errors;
            }
        }

        let (mbps_rounds, conns_rounds) = (mbps.clone(), conns.clone());
        let cpu_conn_rounds = cpu_conn.clone();
        println!();
        println!("median of {} rounds (CPU: the proxy process's user+system time):", o.rounds);
        println!(
            "{:<12} {:>10} {:>14} {:>16} {:>18} {:>8}",
            "path", "MB/s", "CPU s per GB", "connections/s", "CPU us per conn", "failed"
        );
        let mut medians = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let (m, c) = (median(&mut mbps[i]), median(&mut conns[i]));
            let show = |v: &mut Vec<f64>, digits: usize| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.*}", digits, median(v))
                }
            };
            println!(
                "{:<12} {:>10.0} {:>14} {:>16.0} {:>18} {:>8}",
                p.name,
                m,
                show(&mut cpu_gb[i], 2),
                c,
                show(&mut cpu_conn[i], 1),
                failed[i]
            );
            medians.push((p.name, m, c));
        }
        let index = |n: &str| paths.iter().position(|p| p.name == n);
        if let (Some(t), Some(h)) = (index("tcp-router"), index("haproxy")) {
            // Ratios within each round (same background load), then their median.
            let ratio = |a: &[f64], b: &[f64]| {
                let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
                median(&mut r)
            };
            println!(
                "\ntcp-router / haproxy, median of per-round ratios: throughput {:.2}x, connections/s {:.2}x, CPU per connection {:.2}x",
                ratio(&mbps_rounds[t], &mbps_rounds[h]),
                ratio(&conns_rounds[t], &conns_rounds[h]),
                ratio(&cpu_conn_rounds[t], &cpu_conn_rounds[h]),
            );
            if let Some(b) = index("tcp-router-b") {
                println!(
                    "tcp-router-b / haproxy, median of per-round ratios: throughput {:.2}x, connections/s {:.2}x, CPU per connection {:.2}x",
                    ratio(&mbps_rounds[b], &mbps_rounds[h]),
                    ratio(&conns_rounds[b], &conns_rounds[h]),
                    ratio(&cpu_conn_rounds[b], &cpu_conn_rounds[h]),
                );
            }
        }
        drop(router_b);
        drop(_haproxy);
        drop(_router);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
