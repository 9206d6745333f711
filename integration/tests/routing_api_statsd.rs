//! routing-api's statsd metrics on the wire (upstream's `cmd/routing-api/stats_test.go` and
//! the BOSH keys `statsd_endpoint`, `metrics_reporting_interval`,
//! `statsd_client_flush_interval`): the built binary on SQLite, a UDP socket as the statsd
//! server. Periodic absolute totals, `+1` on a create, `+0` (never `+1`) on an update, `-1` on
//! a delete and on expiry, subscription `+1`/`-1` per event stream, token error counts, and
//! several lines per datagram.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use integration::routing_api::{Database, RoutingApi, RoutingApiBuilder};
use integration::uaa::FakeUaa;
use integration::TempDir;
use tokio::net::UdpSocket;

/// Metrics every 500 ms, lines flushed every 50 ms (upstream's suite uses 500 ms and 10 ms).
const METRICS_YAML: &str =
    "metrics_reporting_interval: 500ms\nstatsd_client_flush_interval: 50ms\n";
const WAIT: Duration = Duration::from_secs(5);
/// Expired rows are pruned every 10 s.
const EXPIRY_WAIT: Duration = Duration::from_secs(25);

/// A fake statsd server: the lines received, in order, and the datagrams they came in.
struct Statsd {
    sock: UdpSocket,
    pending: VecDeque<String>,
    /// Every line received so far.
    seen: Vec<String>,
    /// The largest number of lines seen in one datagram.
    max_lines_per_datagram: usize,
    datagrams: usize,
}

impl Statsd {
    async fn bind() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a UDP socket on 127.0.0.1");
        Self {
            sock,
            pending: VecDeque::new(),
            seen: Vec::new(),
            max_lines_per_datagram: 0,
            datagrams: 0,
        }
    }

    fn endpoint(&self) -> String {
        self.sock.local_addr().expect("local address").to_string()
    }

    /// The next line, waiting at most until `deadline`.
    async fn next_line(&mut self, deadline: Instant) -> Option<String> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                return Some(l);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(left, self.sock.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => panic!("statsd socket: {e}"),
                Err(_) => return None,
            };
            let text = String::from_utf8(buf[..n].to_vec()).expect("statsd datagram is UTF-8");
            assert!(
                text.ends_with('\n'),
                "every line ends with a newline, as upstream's buffered client sends: {text:?}"
            );
            assert!(n <= 512, "datagram of {n} bytes: {text:?}");
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            self.datagrams += 1;
            self.max_lines_per_datagram = self.max_lines_per_datagram.max(lines.len());
            self.seen.extend(lines.iter().cloned());
            self.pending.extend(lines);
        }
    }

    /// Reads until `line` arrives (skipping others, as Gomega's `Eventually(…).Should(Receive(…))`
    /// does); returns the lines skipped.
    async fn expect(&mut self, line: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        while let Some(l) = self.next_line(deadline).await {
            if l == line {
                return skipped;
            }
            skipped.push(l);
        }
        panic!("no {line:?} within {timeout:?}; received meanwhile: {skipped:#?}");
    }

    /// Reads until a line for gauge `name` arrives; returns its value (`3`, `+1`, …).
    async fn expect_gauge(&mut self, name: &str, timeout: Duration) -> String {
        let prefix = format!("routing_api.{name}:");
        let deadline = Instant::now() + timeout;
        while let Some(l) = self.next_line(deadline).await {
            if let Some(v) = l.strip_prefix(&prefix) {
                return v.strip_suffix("|g").unwrap_or(v).to_string();
            }
        }
        panic!("no {name} gauge within {timeout:?}");
    }

    /// Reads until `lines` arrive one right after the other; returns the lines skipped.
    async fn expect_run(&mut self, lines: &[&str], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let mut matched = 0;
        while let Some(l) = self.next_line(deadline).await {
            if l == lines[matched] {
                matched += 1;
                if matched == lines.len() {
                    return skipped;
                }
            } else {
                skipped.extend(lines[..matched].iter().map(|s| s.to_string()));
                matched = usize::from(l == lines[0]);
                if matched == 0 {
                    skipped.push(l);
                }
            }
        }
        panic!("no run {lines:#?} within {timeout:?}; received meanwhile: {skipped:#?}");
    }

    /// Every line received during `period`.
    async fn collect(&mut self, period: Duration) -> Vec<String> {
        let deadline = Instant::now() + period;
        let mut out = Vec::new();
        while let Some(l) = self.next_line(deadline).await {
            out.push(l);
        }
        out
    }
}

fn line(name: &str, value: &str) -> String {
    format!("routing_api.{name}:{value}|g")
}

/// Lines that change a gauge by a delta (`+n` / `-n`) for `name`.
fn deltas<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    let prefix = format!("routing_api.{name}:");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|v| v.starts_with('+') || v.starts_with('-'))
        .collect()
}

struct Env {
    api: RoutingApi,
    statsd: Statsd,
    _dir: TempDir,
}

async fn env_with(configure: impl FnOnce(RoutingApiBuilder) -> RoutingApiBuilder) -> Env {
    let statsd = Statsd::bind().await;
    let dir = TempDir::new("it-ra-statsd");
    let builder = RoutingApi::builder(Database::sqlite(dir.path().join("x.db"))).yaml(&format!(
        "statsd_endpoint: {}\n{METRICS_YAML}",
        statsd.endpoint()
    ));
    let api = configure(builder).start().await;
    Env {
        api,
        statsd,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(|b| b).await
}

const ROUTE: &str = r#"[{"route":"a.b.c","port":33,"ip":"1.1.1.1","ttl":55,"log_guid":"potato"}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_totals_creates_updates_deletes_and_expiry() {
    let mut e = env().await;

    // Reporting starts with both subscription gauges at zero, before any report.
    let first = e
        .statsd
        .expect(&line("total_http_subscriptions", "0"), WAIT)
        .await;
    assert!(first.is_empty(), "sent before the first gauge: {first:?}");
    let second = e.statsd.next_line(Instant::now() + WAIT).await;
    assert_eq!(second, Some(line("total_tcp_subscriptions", "0")));

    // Every interval: the totals (only the API's own route so far), the subscription `+0`
    // deltas and the token counters, in upstream's order.
    let report = |http: &str| {
        vec![
            line("total_http_routes", http),
            line("total_http_subscriptions", "+0"),
            line("total_tcp_routes", "0"),
            line("total_tcp_subscriptions", "+0"),
            line("total_token_errors", "0"),
            line("key_refresh_events", "0"),
        ]
    };
    let one = report("1");
    let one: Vec<&str> = one.iter().map(String::as_str).collect();
    let skipped = e.statsd.expect_run(&one, WAIT).await;
    assert!(
        skipped.is_empty(),
        "nothing between the start gauges and the first report (the own route's first \
         registration is not a delta): {skipped:?}"
    );
    // Again: it is periodic, not a reaction to an event.
    e.statsd.expect_run(&one, WAIT).await;

    // Create: `+1`, then the total says 2.
    let r = e.api.post("/routing/v1/routes", ROUTE).await;
    assert_eq!(r.status, 201, "{}", r.dump());
    e.statsd
        .expect(&line("total_http_routes", "+1"), WAIT)
        .await;
    let two = report("2");
    let two: Vec<&str> = two.iter().map(String::as_str).collect();
    e.statsd.expect_run(&two, WAIT).await;

    // Update of the same route: upstream's zero delta, never `+1`; the total stays 2.
    let r = e.api.post("/routing/v1/routes", ROUTE).await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let after_update = e.statsd.collect(Duration::from_millis(1200)).await;
    assert_eq!(
        deltas(&after_update, "total_http_routes"),
        vec!["+0|g"],
        "{after_update:#?}"
    );
    assert!(
        after_update.contains(&line("total_http_routes", "2")),
        "{after_update:#?}"
    );

    // Delete: `-1`, then the total is back to 1; deleting it again changes nothing.
    let r = e.api.delete("/routing/v1/routes", ROUTE).await;
    assert_eq!(r.status, 204, "{}", r.dump());
    let r = e.api.delete("/routing/v1/routes", ROUTE).await;
    assert_eq!(r.status, 204, "{}", r.dump());
    let after_delete = e.statsd.collect(Duration::from_millis(1200)).await;
    assert_eq!(
        deltas(&after_delete, "total_http_routes"),
        vec!["-1|g"],
        "{after_delete:#?}"
    );
    assert!(
        after_delete.contains(&line("total_http_routes", "1")),
        "{after_delete:#?}"
    );

    // A route with a ttl of 1 s: `+1` when created, `-1` when the pruner expires it.
    let expiring =
        r#"[{"route":"z.a.k","port":63,"ip":"42.42.42.42","ttl":1,"log_guid":"Tomato"}]"#;
    let r = e.api.post("/routing/v1/routes", expiring).await;
    assert_eq!(r.status, 201, "{}", r.dump());
    e.statsd
        .expect(&line("total_http_routes", "+1"), WAIT)
        .await;
    let skipped = e
        .statsd
        .expect(&line("total_http_routes", "-1"), EXPIRY_WAIT)
        .await;
    assert!(
        deltas(&skipped, "total_http_routes").is_empty(),
        "{skipped:#?}"
    );
    e.statsd.expect_run(&one, WAIT).await;

    assert!(
        e.statsd.max_lines_per_datagram > 1,
        "lines are sent several per datagram ({} datagrams, {} lines)",
        e.statsd.datagrams,
        e.statsd.seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_routes_create_update_delete() {
    let mut e = env().await;
    let group = e.api.default_group_guid().await;
    let mapping = format!(
        r#"[{{"router_group_guid":"{group}","port":1024,"backend_ip":"10.0.0.1","backend_port":61000,"ttl":60}}]"#
    );
    e.statsd.expect(&line("total_tcp_routes", "0"), WAIT).await;

    let r = e.api.post("/routing/v1/tcp_routes/create", &mapping).await;
    assert_eq!(r.status, 201, "{}", r.dump());
    e.statsd.expect(&line("total_tcp_routes", "+1"), WAIT).await;
    e.statsd.expect(&line("total_tcp_routes", "1"), WAIT).await;

    let r = e.api.post("/routing/v1/tcp_routes/create", &mapping).await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let after_update = e.statsd.collect(Duration::from_millis(1200)).await;
    assert_eq!(
        deltas(&after_update, "total_tcp_routes"),
        vec!["+0|g"],
        "{after_update:#?}"
    );
    assert!(
        after_update.contains(&line("total_tcp_routes", "1")),
        "{after_update:#?}"
    );

    let r = e.api.post("/routing/v1/tcp_routes/delete", &mapping).await;
    assert_eq!(r.status, 204, "{}", r.dump());
    e.statsd.expect(&line("total_tcp_routes", "-1"), WAIT).await;
    e.statsd.expect(&line("total_tcp_routes", "0"), WAIT).await;
    // HTTP route changes never show up as TCP ones.
    assert!(
        deltas(&e.statsd.seen, "total_http_routes").is_empty(),
        "{:#?}",
        e.statsd.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_count_subscriptions() {
    let mut e = env().await;
    e.statsd
        .expect(&line("total_tcp_subscriptions", "0"), WAIT)
        .await;

    let http1 = e.api.events("/routing/v1/events").await;
    assert_eq!(http1.head.status, 200, "{}", http1.head.dump());
    e.statsd
        .expect(&line("total_http_subscriptions", "+1"), WAIT)
        .await;
    let http2 = e.api.events("/routing/v1/events").await;
    assert_eq!(http2.head.status, 200);
    e.statsd
        .expect(&line("total_http_subscriptions", "+1"), WAIT)
        .await;
    let tcp = e.api.events("/routing/v1/tcp_routes/events").await;
    assert_eq!(tcp.head.status, 200);
    e.statsd
        .expect(&line("total_tcp_subscriptions", "+1"), WAIT)
        .await;

    // Closing a stream's connection: `-1` for its kind only.
    drop(http1);
    e.statsd
        .expect(&line("total_http_subscriptions", "-1"), WAIT)
        .await;
    drop(tcp);
    e.statsd
        .expect(&line("total_tcp_subscriptions", "-1"), WAIT)
        .await;
    let quiet = e.statsd.collect(Duration::from_millis(1200)).await;
    assert_eq!(
        deltas(&quiet, "total_http_subscriptions"),
        vec!["+0|g"; deltas(&quiet, "total_http_subscriptions").len()],
        "the other HTTP stream is still open: {quiet:#?}"
    );
    assert!(!deltas(&quiet, "total_http_subscriptions").is_empty());
    drop(http2);
    e.statsd
        .expect(&line("total_http_subscriptions", "-1"), WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_errors_are_counted_and_refused_streams_count_in_and_out() {
    let uaa = FakeUaa::start().await;
    let mut e = env_with(|b| b.uaa(&uaa)).await;
    // The harness's readiness probe asks without a token: count from what is reported first.
    let base: u64 = e
        .statsd
        .expect_gauge("total_token_errors", WAIT)
        .await
        .parse()
        .expect("an absolute count");

    for auth in ["bearer not-a-token", "basic abc"] {
        let r = e
            .api
            .request("GET", "/routing/v1/routes", &[("Authorization", auth)], b"")
            .await;
        assert_eq!(r.status, 401, "{}", r.dump());
    }
    // A good token is not an error.
    let r = e.api.get("/routing/v1/routes").await;
    assert_eq!(r.status, 200, "{}", r.dump());
    e.statsd
        .expect(&line("total_token_errors", &(base + 2).to_string()), WAIT)
        .await;

    // An event stream refused for its token still counts in and out, as upstream counts
    // before checking.
    let refused = e
        .api
        .request("GET", "/routing/v1/tcp_routes/events", &[], b"")
        .await;
    assert_eq!(refused.status, 401, "{}", refused.dump());
    e.statsd
        .expect_run(
            &[
                &line("total_tcp_subscriptions", "+1"),
                &line("total_tcp_subscriptions", "-1"),
            ],
            WAIT,
        )
        .await;
    e.statsd
        .expect(&line("total_token_errors", &(base + 3).to_string()), WAIT)
        .await;
    e.statsd
        .expect(&line("key_refresh_events", "0"), WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metrics_interval_stops_the_process() {
    let dir = TempDir::new("it-ra-statsd-bad");
    let mut api = RoutingApi::builder(Database::sqlite(dir.path().join("x.db")))
        .yaml("metrics_reporting_interval: 500\n")
        .spawn();
    let status = api.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(1), "{}", api.log());
    let log = api.log();
    assert!(log.contains("routing-api.failed-load-config"), "{log}");
    assert!(log.contains("metrics_reporting_interval"), "{log}");
}
