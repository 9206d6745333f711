//! Small helpers: free ports, temporary directories, polling with a deadline, checksums and
//! generated data for streaming tests, memory readings from `/proc/<pid>/status`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `N` distinct free ports on 127.0.0.1 (each held until all are chosen, so the kernel cannot
/// hand out the same one twice, as back-to-back [`free_port`] calls sometimes do).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
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

/// Polls `probe` every 10 ms until it returns `Some`, and returns that value. Panics with
/// "timed out after .. waiting for <what>" (plus the last observation, if `probe` recorded one
/// through `last`) when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn uuid_like() {
        assert!(is_uuid_like("40b2f2b9-75e0-483a-6529-da11e5f6bda5"));
        assert!(!is_uuid_like("client-id"));
        assert!(!is_uuid_like("40B2F2B9-75e0-483a-6529-da11e5f6bda5"));
    }
}
