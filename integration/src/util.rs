//! Small helpers: free ports, temporary directories, polling with a deadline, checksums and
//! generated data for streaming tests, memory readings from `/proc/<pid>/status`, and the YAML
//! handling the config builders share (deep-merging test overrides, reading ports back), and
//! the TCP forwarder (which can also stall) behind [`TcpGate`](crate::TcpGate),
//! [`DbGate`](crate::routing_api::DbGate) and the fault tests' gates.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_yaml_ng::Value as Yaml;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// Records `port` as handed out; false if this test process handed it out before. Tests run
/// in parallel threads of one process, and the kernel may give a port released by one test to
/// the next `bind(:0)`; handing each port out once keeps two servers of this process from being
/// configured with the same port.
pub fn claim_port(port: u16) -> bool {
    static CLAIMED: OnceLock<Mutex<std::collections::HashSet<u16>>> = OnceLock::new();
    CLAIMED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port)
}

/// A TCP port on 127.0.0.1 that nothing listens on right now and that no other caller in this
/// process got before.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Where handed-out ports come from: below the kernel's default ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768-60999), which the kernel never gives to a `bind` to
/// port 0 or an outgoing connection. A port from the ephemeral range, released until the test
/// starts its server there, could meanwhile be taken by a server or client of another test
/// running in parallel (seen: a tcp-router test reached another test's backend on its
/// "free" external port).
const HANDED_OUT: std::ops::Range<u16> = 20_000..32_768;

/// The first port of the kernel's ephemeral range, if it can be read.
fn ephemeral_range_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `N` distinct free ports on 127.0.0.1 (see [`HANDED_OUT`]), none handed out before in this
/// process; each was bound a moment ago. Where the ephemeral range covers [`HANDED_OUT`] (a
/// machine configured so), ports come from the kernel as before.
pub fn free_ports<const N: usize>() -> [u16; N] {
    // One cursor per test process, starting at a place of its own in the range, so parallel
    // test binaries rarely try the same ports; `None` where the ephemeral range covers
    // [`HANDED_OUT`].
    static NEXT: OnceLock<Option<std::sync::atomic::AtomicU32>> = OnceLock::new();
    let span = u32::from(HANDED_OUT.end - HANDED_OUT.start);
    let next = NEXT.get_or_init(|| {
        let below_ephemeral = ephemeral_range_start().is_some_and(|low| low >= HANDED_OUT.end);
        below_ephemeral.then(|| (std::process::id().wrapping_mul(7919) % span).into())
    });
    let mut held: Vec<std::net::TcpListener> = Vec::with_capacity(N);
    if let Some(next) = next {
        // A port in use fails to bind and is passed over.
        for _ in 0..span {
            if held.len() == N {
                break;
            }
            let port = HANDED_OUT.start + (next.fetch_add(1, Ordering::Relaxed) % span) as u16;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                if claim_port(port) {
                    held.push(l);
                }
            }
        }
    }
    // Ports handed out before stay bound until the end too, so the kernel moves on.
    let mut passed_over = Vec::new();
    while held.len() < N {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        if claim_port(l.local_addr().expect("local_addr").port()) {
            held.push(l);
        } else {
            passed_over.push(l);
        }
    }
    std::array::from_fn(|i| held[i].local_addr().expect("local_addr").port())
}

/// A port that refuses connections, used as a dead backend. The port stays bound (but not
/// listening) for the life of the test process, so no test running in parallel can take it.
pub fn closed_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().expect("create a socket for a closed port");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind a closed port");
    let port = socket.local_addr().expect("closed port address").port();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(socket);
    port
}

/// A directory under the system temp dir, removed on drop unless the test is failing (then it is
/// kept, and its path printed, for debugging).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, unique directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for debugging)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Calls `probe` until it returns `Some`, sleeping `interval` between calls, and returns that
/// value; `None` once `timeout` has passed since the first call (which always happens). The
/// polling loop behind [`eventually`] and the `wait_*` helpers.
pub async fn poll<T, F, Fut>(timeout: Duration, interval: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Polls `probe` every 10 ms until it returns `Some`, and returns that value. Panics with
/// `timed out after .. waiting for <what>` when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll(timeout, Duration::from_millis(10), probe).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// A TCP forwarder on a free 127.0.0.1 port to a target address. While open, each accepted
/// connection is piped to the target (a new connection to it per client); while closed,
/// accepted connections are dropped at once (the client sees EOF). Connections already piped
/// last until [`cut_connections`](Self::cut_connections) or drop. While stalled
/// ([`stall`](Self::stall) until [`resume`](Self::resume)), no byte moves in either direction
/// of any connection, old or new, and none is closed: a peer that hangs rather than one that
/// goes away. Stops on drop.
pub struct Forwarder {
    port: u16,
    open: Arc<AtomicBool>,
    stalled: watch::Sender<bool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Starts an open, flowing forwarder to `target` (`host:port`); `what` names it in panics.
    pub async fn start(what: &str, target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{what}: bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{what}: local_addr: {e}"))
            .port();
        let open = Arc::new(AtomicBool::new(true));
        let (stalled, _) = watch::channel(false);
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (o, st, c) = (open.clone(), stalled.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !o.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let stalled = st.subscribe();
                let h = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = pipe(client, server, stalled).await;
                });
                let mut conns = c.lock().unwrap_or_else(|e| e.into_inner());
                conns.retain(|h| !h.is_finished());
                conns.push(h.abort_handle());
            }
        });
        Self {
            port,
            open,
            stalled,
            conns,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forwards new connections (`true`) or drops them as they arrive (`false`).
    pub fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }

    /// Holds every byte in both directions, keeping the connections open (new ones are still
    /// accepted and connected, and held too), until [`resume`](Self::resume).
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Lets the bytes held since [`stall`](Self::stall) through, and new ones as usual.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    /// Closes every connection forwarded so far (new ones are forwarded as usual while open).
    pub fn cut_connections(&self) {
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_connections();
    }
}

/// Pipes `client` and `server` both ways the way `tokio::io::copy_bidirectional` does (the end
/// of one direction is passed on as a write shutdown and the other keeps going; the first
/// error closes both), except that nothing moves while `stalled`, which copy_bidirectional
/// cannot do.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    stalled: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::try_join!(pump(cr, sw, stalled.clone()), pump(sr, cw, stalled)).map(|_| ())
}

/// Copies `from` to `to` until EOF (then shuts `to` down), never reading nor writing while
/// stalled.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        flowing(&mut stalled).await?;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        // Data read just before a stall is held too.
        flowing(&mut stalled).await?;
        to.write_all(&buf[..n]).await?;
    }
}

/// Waits until the forwarder is not stalled; an error once the forwarder is gone.
async fn flowing(stalled: &mut watch::Receiver<bool>) -> std::io::Result<()> {
    match stalled.wait_for(|s| !*s).await {
        Ok(_) => Ok(()),
        Err(_) => Err(std::io::ErrorKind::BrokenPipe.into()),
    }
}

/// Runs `fut` with a deadline, panicking with a message naming `what` if it does not finish.
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {timeout:?}: {what}"),
    }
}

/// A position-sensitive checksum of a byte stream (Fletcher-style over little-endian u64 words),
/// cheap enough for 100 MiB in a debug build; independent of how the stream is split.
#[derive(Debug, Clone, Default)]
pub struct Checksum {
    len: u64,
    a: u64,
    b: u64,
    pending: [u8; 8],
    npending: usize,
}

impl Checksum {
    pub fn new() -> Self {
        Self::default()
    }

    fn word(&mut self, w: u64) {
        self.a = self.a.wrapping_add(w);
        self.b = self.b.wrapping_add(self.a);
    }

    /// Feeds more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.npending > 0 {
            let take = (8 - self.npending).min(data.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&data[..take]);
            self.npending += take;
            data = &data[take..];
            if self.npending < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.pending);
            self.word(w);
            self.npending = 0;
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.word(w);
        }
        let rest = chunks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `"<len>:<hex digest>"`, comparable across processes and splits.
    pub fn digest(&self) -> String {
        let mut c = self.clone();
        if c.npending > 0 {
            let mut last = [0u8; 8];
            last[..c.npending].copy_from_slice(&c.pending[..c.npending]);
            c.word(u64::from_le_bytes(last));
        }
        format!("{}:{:016x}{:016x}", c.len, c.a, c.b)
    }
}

/// Size of the chunks [`pattern_chunk`] produces.
pub const PATTERN_CHUNK: usize = 64 * 1024;

/// The `index`-th chunk of a deterministic pseudo-random stream: a fixed random block whose first
/// 8 bytes are the chunk index, so that lost, repeated or reordered chunks change the checksum.
pub fn pattern_chunk(index: u64) -> Bytes {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v = Vec::with_capacity(PATTERN_CHUNK);
        while v.len() < PATTERN_CHUNK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    });
    let mut chunk = block.clone();
    chunk[..8].copy_from_slice(&index.to_le_bytes());
    Bytes::from(chunk)
}

/// The checksum of the first `total` bytes of the [`pattern_chunk`] stream.
pub fn pattern_checksum(total: u64) -> String {
    let mut c = Checksum::new();
    let mut sent = 0u64;
    let mut i = 0u64;
    while sent < total {
        let chunk = pattern_chunk(i);
        let n = (total - sent).min(chunk.len() as u64) as usize;
        c.update(&chunk[..n]);
        sent += n as u64;
        i += 1;
    }
    c.digest()
}

/// A field of `/proc/<pid>/status` in KiB (e.g. `VmRSS`, `VmHWM`), or `None` if unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Merges `over` into `base`: mappings key by key (recursively), anything else replaced.
pub fn merge_yaml(base: &mut Yaml, over: Yaml) {
    match (base, over) {
        (Yaml::Mapping(b), Yaml::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge_yaml(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A test's config override: `yaml` parsed, panicking (with the text) unless it is a YAML
/// mapping, ready for [`merge_yaml`].
pub fn yaml_override(yaml: &str) -> Yaml {
    let over: Yaml = serde_yaml_ng::from_str(yaml)
        .unwrap_or_else(|e| panic!("test override is not valid YAML ({e}):\n{yaml}"));
    assert!(
        matches!(over, Yaml::Mapping(_)),
        "test override must be a YAML mapping:\n{yaml}"
    );
    over
}

/// The value at `path` (mapping keys from the top) of `doc`, if every key is there.
pub fn yaml_at<'a>(doc: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    let mut cur = doc;
    for key in path {
        cur = cur.as_mapping()?.get(Yaml::String(key.to_string()))?;
    }
    Some(cur)
}

/// The port at `path` of `doc`; 0 when it is missing or not a port number.
pub fn yaml_port(doc: &Yaml, path: &[&str]) -> u16 {
    yaml_at(doc, path)
        .and_then(Yaml::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, as `X-Request-Start` carries them.
pub fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
}

/// Whether `s` looks like a UUID as upstream formats request ids: 8-4-4-4-12 lowercase hex.
/// (Upstream's ids are not strict RFC 4122 v4: the variant nibble is arbitrary.)
pub fn is_uuid_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && is_lower_hex(p))
}

/// Whether `s` is non-empty lowercase hexadecimal.
pub fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A job template's argument list with `{config}` replaced by the config file's path (the
/// builders' `command_line`).
pub fn command_line_args(args: &[String], config: &Path) -> Vec<String> {
    let path = config.display().to_string();
    args.iter().map(|a| a.replace("{config}", &path)).collect()
}

/// An argument list as owned strings.
pub fn owned_args(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_kernels_ephemeral_range() {
        let low = ephemeral_range_start().expect("the ephemeral port range's low end");
        let ports = free_ports::<3>();
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        for port in ports {
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("a free port binds");
            if low >= HANDED_OUT.end {
                assert!(
                    HANDED_OUT.contains(&port),
                    "{port} is from below the ephemeral range"
                );
            }
        }
    }

    #[test]
    fn checksum_is_split_independent_and_order_sensitive() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Checksum::new();
        whole.update(&data);
        let mut parts = Checksum::new();
        for c in data.chunks(13) {
            parts.update(c);
        }
        assert_eq!(whole.digest(), parts.digest());
        let mut swapped = data.clone();
        swapped.swap(0, 8);
        let mut other = Checksum::new();
        other.update(&swapped);
        assert_ne!(whole.digest(), other.digest());
    }

    #[test]
    fn overrides_merge_deeply() {
        let mut doc: Yaml =
            serde_yaml_ng::from_str("a: {b: 1, c: 2}\nport: 80\nlist: [1, 2]").expect("YAML");
        merge_yaml(&mut doc, yaml_override("a: {c: 3, d: 4}\nlist: [5]"));
        assert_eq!(yaml_port(&doc, &["a", "b"]), 1);
        assert_eq!(yaml_port(&doc, &["a", "c"]), 3);
        assert_eq!(yaml_port(&doc, &["a", "d"]), 4);
        assert_eq!(yaml_port(&doc, &["port"]), 80);
        assert_eq!(yaml_port(&doc, &["missing"]), 0);
        assert_eq!(
            yaml_at(&doc, &["list"])
                .and_then(Yaml::as_sequence)
                .map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn uuid_like() {
        assert!(is_uuid_like("40b2f2b9-75e0-483a-6529-da11e5f6bda5"));
        assert!(!is_uuid_like("client-id"));
        assert!(!is_uuid_like("40B2F2B9-75e0-483a-6529-da11e5f6bda5"));
    }
}
