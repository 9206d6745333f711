//! Upstream's deprecated `/varz` document (`status.enable_deprecated_varz_healthz_endpoints`):
//! one flat JSON object with the component's identity (upstream's `GenericVarz`) and the
//! router's request figures (upstream's `varz.RealVarz`), field names and formats as upstream
//! writes them.
//!
//! This module owns what upstream's varz kept and the request path does not: the request
//! rates (exponentially weighted moving averages, as go-metrics' `Meter`) and the process CPU
//! sample, both updated every [`TICK`] by [`Varz::run_ticker`] from the counters of
//! [`RouterMetrics`]. The request path is never touched: everything else is read when `/varz`
//! is asked for, from [`RouterMetrics`], the route table and `/proc/self/status`.
//!
//! `top10_app_requests` comes from [`crate::top_apps`], counted only while `/varz` is served.
//! `log_counts` is always `{}`, as upstream's is: its `LogCounter` is never handed a log line
//! since its logger moved off lager. A component under `tags.component` has `requests`,
//! `rate` and `latency`, not upstream's per-component `responses_*`: responses are counted
//! for the router as a whole only.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::metrics::RouterMetrics;
use crate::registry::RouteTable;

/// How often the rates and the CPU sample are updated (go-metrics' meter tick).
pub const TICK: Duration = Duration::from_secs(5);

/// The percentiles `latency` shows, as upstream's keys.
const PERCENTILES: [(&str, f64); 5] = [
    ("50", 0.50),
    ("75", 0.75),
    ("90", 0.90),
    ("95", 0.95),
    ("99", 0.99),
];

/// Upstream writes `latency.value` as `0.50 / float64(time.Millisecond)` (the first
/// percentile's rank over a millisecond in nanoseconds, "for backwards compatibility with the
/// collector"): always this number.
const LATENCY_VALUE: f64 = 0.5 / 1_000_000.0;

/// The top-level fields of the `/varz` document, as upstream writes them.
pub const FIELDS: [&str; 27] = [
    "type",
    "index",
    "host",
    "credentials",
    "uuid",
    "start",
    "uptime",
    "num_cores",
    "mem",
    "cpu",
    "log_counts",
    "urls",
    "droplets",
    "requests",
    "rate",
    "requests_per_sec",
    "responses_2xx",
    "responses_3xx",
    "responses_4xx",
    "responses_5xx",
    "responses_xxx",
    "latency",
    "bad_requests",
    "bad_gateways",
    "tags",
    "top10_app_requests",
    "ms_since_last_registry_update",
];

/// Who this router is, as `/varz` names it (upstream's `GenericVarz` identity fields).
#[derive(Debug, Clone)]

pub struct Identity {
    /// `index` from the config.
    pub index: u32,
    /// `status.host:status.port`.
    pub host: String,
    /// `status.user` and `status.pass` (upstream shows them as `credentials`).
    pub user: String,
    pub pass: String,
    /// `<index>-<uuid>`.
    pub uuid: String,
}

/// An exponentially weighted moving average of a per-second rate, ticked every [`TICK`]
/// (go-metrics' `StandardEWMA`: the first tick takes the instant rate as it is).
#[derive(Debug, Clone, Copy)]
struct Ewma {
    alpha: f64,
    /// Events per second; `None` before the first tick.
    rate: Option<f64>,
}

impl Ewma {
    /// The average over `minutes`.
    fn over_minutes(minutes: f64) -> Self {
        Self {
            alpha: 1.0 - (-TICK.as_secs_f64() / 60.0 / minutes).exp(),
            rate: None,
        }
    }

    fn tick(&mut self, instant_rate: f64) {
        self.rate = Some(match self.rate {
            Some(rate) => rate + self.alpha * (instant_rate - rate),
            None => instant_rate,
        });
    }

    fn rate(&self) -> f64 {
        self.rate.unwrap_or(0.0)
    }
}

/// A request counter's 1, 5 and 15 minute rates (go-metrics' `Meter`), fed by reading the
/// counter at each tick.
#[derive(Debug, Clone, Copy)]
struct Meter {
    /// The counter at the last tick.
    seen: u64,
    averages: [Ewma; 3],
}

impl Meter {
    /// A meter over a counter that stands at `count` now.
    fn new(count: u64) -> Self {
        Self {
            seen: count,
            averages: [1.0, 5.0, 15.0].map(Ewma::over_minutes),
        }
    }

    /// One tick: the counter stands at `count`.
    fn tick(&mut self, count: u64) {
        let new = count.saturating_sub(self.seen);
        self.seen = count;
        let instant_rate = new as f64 / TICK.as_secs_f64();
        for average in &mut self.averages {
            average.tick(instant_rate);
        }
    }

    /// `[1m, 5m, 15m]` in requests per second.
    fn rates(&self) -> [f64; 3] {
        self.averages.map(|a| a.rate())
    }
}

/// What the ticker keeps between ticks.
#[derive(Debug)]
struct Samples {
    all: Meter,
    /// By `tags.component`; a component first seen starts from zero, as it was created on
    /// its first request.
    components: HashMap<Box<str>, Meter>,
    /// Process CPU time and when it was read, at the last tick.
    cpu_seen: Option<(Duration, Instant)>,
    /// CPU used between the last two ticks, in percent of one core.
    cpu_percent: f64,
}

/// The `/varz` document's sources; [`Varz::json`] writes it.
pub struct Varz {
    identity: Identity,
    /// Upstream's `schema.Time` text of the start.
    start: String,
    started_at: Instant,
    num_cores: usize,
    metrics: Arc<RouterMetrics>,
    table: Arc<RouteTable>,
    /// Taken by the ticker and by `/varz`, never on the request path.
    samples: Mutex<Samples>,
}

impl std::fmt::Debug for Varz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Varz")
            .field("identity", &self.identity.uuid)
            .finish_non_exhaustive()
    }
}

impl Varz {
    /// Starts now: `start` and `uptime` count from here.
    pub fn new(identity: Identity, metrics: Arc<RouterMetrics>, table: Arc<RouteTable>) -> Self {
        let all = Meter::new(total_requests(&metrics));
        Self {
            identity,
            start: schema_time(time::OffsetDateTime::now_utc()),
            started_at: Instant::now(),
            num_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            metrics,
            table,
            samples: Mutex::new(Samples {
                all,
                components: HashMap::new(),
                cpu_seen: process_cpu_time().map(|t| (t, Instant::now())),
                cpu_percent: 0.0,
            }),
        }
    }

    fn samples(&self) -> MutexGuard<'_, Samples> {
        // Every update is a plain store of numbers: a panic cannot leave it half-done.
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One tick: the meters read the request counters, the CPU sample the process's CPU time.
    pub fn tick(&self) {
        let mut total = 0;
        let mut by_component = Vec::new();
        self.metrics.for_each_component(|name, requests, _| {
            total += requests;
            if !name.is_empty() {
                by_component.push((Box::<str>::from(name), requests));
            }
        });
        let cpu = process_cpu_time().map(|t| (t, Instant::now()));
        let mut samples = self.samples();
        samples.all.tick(total);
        for (name, requests) in by_component {
            samples
                .components
                .entry(name)
                .or_insert_with(|| Meter::new(0))
                .tick(requests);
        }
        if let (Some((now_cpu, now)), Some((then_cpu, then))) = (cpu, samples.cpu_seen) {
            let wall = now.duration_since(then).as_secs_f64();
            if wall > 0.0 {
                samples.cpu_percent = now_cpu.saturating_sub(then_cpu).as_secs_f64() / wall * 100.0;
            }
        }
        if cpu.is_some() {
            samples.cpu_seen = cpu;
        }
        drop(samples);
        if let Some(apps) = self.metrics.top_apps() {
            apps.prune(Instant::now());
        }
    }

    /// Ticks every [`TICK`] until dropped (spawn it and keep its handle).
    pub async fn run_ticker(self: Arc<Self>) {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.tick();
        }
    }

    /// The document as upstream's JSON encoder writes it: keys sorted, one line.
    pub fn json(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec(&self.document()).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        body
    }

    /// The document: upstream's router varz and generic component varz in one object.
    pub fn document(&self) -> Value {
        let m = &self.metrics;
        let mut total_requests = 0;
        let mut all_latency: Vec<(f64, u64)> = Vec::new();
        let mut components = Vec::new();
        m.for_each_component(|name, requests, latency| {
            total_requests += requests;
            let buckets = latency.buckets();
            merge_buckets(&mut all_latency, &buckets);
            if !name.is_empty() {
                components.push((name.to_string(), requests, buckets));
            }
        });
        let (rates, component_rates, cpu) = {
            let samples = self.samples();
            let component_rates: HashMap<String, [f64; 3]> = components
                .iter()
                .map(|(name, ..)| {
                    let rates = samples
                        .components
                        .get(name.as_str())
                        .map_or([0.0; 3], Meter::rates);
                    (name.clone(), rates)
                })
                .collect();
            (samples.all.rates(), component_rates, samples.cpu_percent)
        };
        let mut tagged = Map::new();
        for (name, requests, buckets) in components {
            let rate = component_rates.get(&name).copied().unwrap_or([0.0; 3]);
            tagged.insert(
                name,
                json!({
                    "requests": requests,
                    "rate": rate,
                    "latency": latency_json(&buckets),
                }),
            );
        }
        let [r2xx, r3xx, r4xx, r5xx, rxxx] = m.responses_by_group();
        let table = &self.table;
        let since_update = table
            .stats()
            .last_update_ms()
            .map_or(0, |at| table.now_ms().saturating_sub(at));
        let id = &self.identity;
        json!({
            "type": "Router",
            "index": id.index,
            "host": id.host,
            "credentials": [id.user, id.pass],
            "uuid": id.uuid,
            "start": self.start,
            "uptime": schema_duration(self.started_at.elapsed()),
            "num_cores": self.num_cores,
            "mem": resident_kib().unwrap_or(0),
            "cpu": cpu,
            "log_counts": {},
            "urls": table.route_count(),
            "droplets": distinct_endpoints(table),
            "requests": total_requests,
            "rate": rates,
            "requests_per_sec": rates[0],
            "responses_2xx": r2xx,
            "responses_3xx": r3xx,
            "responses_4xx": r4xx,
            "responses_5xx": r5xx,
            "responses_xxx": rxxx,
            "latency": latency_json(&all_latency),
            "bad_requests": m.rejected_requests(),
            "bad_gateways": m.bad_gateways(),
            "tags": {"component": tagged},
            "top10_app_requests": top_apps_json(m),
            "ms_since_last_registry_update": since_update,
        })
    }
}

/// Upstream's `topAppsEntry` list: `application_id`, `rps`, `rpm`.
fn top_apps_json(metrics: &RouterMetrics) -> Value {
    let top = metrics
        .top_apps()
        .map(|apps| apps.top(Instant::now()))
        .unwrap_or_default();
    top.iter()
        .map(|app| {
            json!({
                "application_id": app.application_id,
                "rps": app.per_second(),
                "rpm": app.per_minute,
            })
        })
        .collect()
}

/// Requests routed to backends so far, all components together.
fn total_requests(metrics: &RouterMetrics) -> u64 {
    let mut total = 0;
    metrics.for_each_component(|_, requests, _| total += requests);
    total
}

/// Adds `buckets` into `into` bucket by bucket (the components' histograms share bounds).
fn merge_buckets(into: &mut Vec<(f64, u64)>, buckets: &[(f64, u64)]) {
    if into.is_empty() {
        into.extend_from_slice(buckets);
        return;
    }
    for ((_, total), (_, n)) in into.iter_mut().zip(buckets) {
        *total += n;
    }
}

/// Upstream's `latency` object: percentiles in seconds, and `value` and `samples` as upstream
/// writes them for the old collector. `buckets` are in milliseconds.
fn latency_json(buckets: &[(f64, u64)]) -> Value {
    let mut latency = Map::new();
    for (key, q) in PERCENTILES {
        latency.insert(key.into(), json!(percentile(buckets, q) / 1000.0));
    }
    latency.insert("value".into(), json!(LATENCY_VALUE));
    latency.insert("samples".into(), json!(1));
    Value::Object(latency)
}

/// The `q` quantile of a histogram (`[(upper bound, count)]`, not cumulative, last bound
/// `+Inf`), interpolated linearly inside its bucket as Prometheus' `histogram_quantile` does;
/// in the `+Inf` bucket, the highest finite bound. 0 when empty.
fn percentile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let total: u64 = buckets.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for &(upper, n) in buckets {
        if n > 0 && (below + n) as f64 >= rank {
            if !upper.is_finite() {
                return lower;
            }
            let within = (rank - below as f64) / n as f64;
            return lower + (upper - lower) * within;
        }
        below += n;
        if upper.is_finite() {
            lower = upper;
        }
    }
    lower
}

/// Endpoints in the table, each address once however many routes it serves (upstream's
/// `NumEndpoints`).
fn distinct_endpoints(table: &RouteTable) -> usize {
    let lists: Vec<_> = table
        .pools_by_route()
        .iter()
        .map(|pool| arc_swap::Guard::into_inner(pool.endpoints()))
        .collect();
    lists
        .iter()
        .flat_map(|list| list.iter())
        .map(|e| e.addr())
        .collect::<HashSet<_>>()
        .len()
}

/// Upstream's `schema.Time`: `2006-01-02 15:04:05 -0700`.
fn schema_time(at: time::OffsetDateTime) -> String {
    let offset = at.offset();
    let (h, m, _) = offset.as_hms();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        if offset.is_negative() { '-' } else { '+' },
        h.unsigned_abs(),
        m.unsigned_abs(),
    )
}

/// Upstream's `schema.Duration`: `<days>d:<hours>h:<minutes>m:<seconds>s`, whole seconds.
fn schema_duration(d: Duration) -> String {
    let t = d.as_secs();
    let (days, t) = (t / 86_400, t % 86_400);
    let (hours, t) = (t / 3_600, t % 3_600);
    format!("{days}d:{hours}h:{}m:{}s", t / 60, t % 60)
}

/// The process's resident memory in KiB (`VmRSS` of `/proc/self/status`), where readable.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// User plus system CPU time of the process so far.
fn process_cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which points to one.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it filled the struct (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Meters, MetricsSettings};
    use crate::registry::{Endpoint, EndpointSpec, TableSettings};

    fn metrics() -> Arc<RouterMetrics> {
        Arc::new(RouterMetrics::new(MetricsSettings {
            per_request: true,
            per_app: false,
            meters: Meters::default(),
        }))
    }

    fn identity() -> Identity {
        Identity {
            index: 3,
            host: "10.0.0.5:8080".into(),
            user: "router-status".into(),
            pass: "secret".into(),
            uuid: "3-0f4e".into(),
        }
    }

    fn spec(port: u16, component: Option<&str>) -> EndpointSpec {
        EndpointSpec {
            host: "127.0.0.1".into(),
            port,
            tags: component.map(|c| [("component".to_string(), c.to_string())].into()),
            ..Default::default()
        }
    }

    fn endpoint(component: Option<&str>) -> Arc<Endpoint> {
        let table = RouteTable::new(TableSettings::default());
        table.register("x.example.com", &spec(9000, component));
        let pool = table.lookup("x.example.com", "/").expect("registered");
        pool.endpoints()[0].clone()
    }

    fn ok() -> http::Response<()> {
        http::Response::new(())
    }

    #[test]
    fn the_document_has_every_field_upstream_writes() {
        let v = Varz::new(
            identity(),
            metrics(),
            Arc::new(RouteTable::new(TableSettings::default())),
        );
        let doc = v.document();
        for key in FIELDS {
            assert!(doc.get(key).is_some(), "no {key} in {doc}");
        }
        assert_eq!(doc.as_object().map(Map::len), Some(27), "{doc}");
    }

    #[test]
    fn identity_fields_are_upstreams_generic_varz() {
        let v = Varz::new(
            identity(),
            metrics(),
            Arc::new(RouteTable::new(TableSettings::default())),
        );
        let doc = v.document();
        assert_eq!(doc["type"], "Router");
        assert_eq!(doc["index"], 3);
        assert_eq!(doc["host"], "10.0.0.5:8080");
        assert_eq!(doc["credentials"], json!(["router-status", "secret"]));
        assert_eq!(doc["uuid"], "3-0f4e");
        assert_eq!(doc["uptime"], "0d:0h:0m:0s");
        assert!(doc["num_cores"].as_u64().is_some_and(|n| n >= 1), "{doc}");
        assert!(doc["mem"].as_u64().is_some_and(|kib| kib > 0), "{doc}");
    }

    #[test]
    fn start_is_written_as_upstreams_schema_time() {
        let at = time::Date::from_calendar_date(2024, time::Month::March, 9)
            .and_then(|d| d.with_hms(7, 5, 2))
            .expect("a valid time")
            .assume_utc();
        assert_eq!(schema_time(at), "2024-03-09 07:05:02 +0000");
    }

    #[test]
    fn uptime_is_written_as_upstreams_schema_duration() {
        assert_eq!(schema_duration(Duration::from_secs(5)), "0d:0h:0m:5s");
        assert_eq!(
            schema_duration(Duration::from_secs(2 * 86_400 + 3 * 3_600 + 4 * 60 + 5)),
            "2d:3h:4m:5s"
        );
    }

    #[test]
    fn requests_and_responses_come_from_the_router_metrics() {
        let m = metrics();
        let tagged = endpoint(Some("api"));
        let untagged = endpoint(None);
        m.routed(&tagged, Duration::from_millis(3));
        m.routed(&untagged, Duration::from_millis(3));
        m.answered(&ok(), false);
        m.answered(&ok(), false);
        let mut not_found = ok();
        *not_found.status_mut() = http::StatusCode::NOT_FOUND;
        not_found.headers_mut().insert(
            &crate::proxy::errors::X_CF_ROUTERERROR,
            http::HeaderValue::from_static("unknown_route"),
        );
        m.answered(&not_found, false);
        let v = Varz::new(
            identity(),
            m,
            Arc::new(RouteTable::new(TableSettings::default())),
        );
        let doc = v.document();
        assert_eq!(doc["requests"], 2);
        assert_eq!(doc["responses_2xx"], 2);
        assert_eq!(doc["responses_4xx"], 1);
        assert_eq!(doc["bad_requests"], 1);
        assert_eq!(doc["bad_gateways"], 0);
        assert_eq!(doc["tags"]["component"]["api"]["requests"], 1);
        assert!(
            doc["tags"]["component"].get("").is_none(),
            "endpoints without a component are not a tag: {doc}"
        );
    }

    #[test]
    fn top10_app_requests_lists_routed_apps_by_requests_with_upstreams_fields() {
        let m = Arc::new(
            RouterMetrics::new(MetricsSettings {
                per_request: true,
                per_app: false,
                meters: Meters::default(),
            })
            .with_top_apps(),
        );
        let table = RouteTable::new(TableSettings::default());
        for (port, app) in [(9001, "app-busy"), (9002, "app-quiet")] {
            let spec = EndpointSpec {
                app: app.into(),
                ..spec(port, None)
            };
            table.register(&format!("{app}.example.com"), &spec);
        }
        let busy = table
            .lookup("app-busy.example.com", "/")
            .expect("registered");
        let quiet = table
            .lookup("app-quiet.example.com", "/")
            .expect("registered");
        for _ in 0..3 {
            m.routed(&busy.endpoints()[0], Duration::from_millis(1));
        }
        m.routed(&quiet.endpoints()[0], Duration::from_millis(1));
        let v = Varz::new(identity(), m, Arc::new(table));
        assert_eq!(
            v.document()["top10_app_requests"],
            json!([
                {"application_id": "app-busy", "rps": 0, "rpm": 3},
                {"application_id": "app-quiet", "rps": 0, "rpm": 1},
            ])
        );
    }

    #[test]
    fn without_top_apps_counting_top10_app_requests_is_empty() {
        let m = metrics();
        m.routed(&endpoint(None), Duration::from_millis(1));
        let v = Varz::new(
            identity(),
            m,
            Arc::new(RouteTable::new(TableSettings::default())),
        );
        assert_eq!(v.document()["top10_app_requests"], json!([]));
    }

    #[test]
    fn urls_are_routes_and_droplets_distinct_endpoints() {
        let table = Arc::new(RouteTable::new(TableSettings::default()));
        table.register("a.example.com", &spec(9001, None));
        table.register("b.example.com", &spec(9001, None));
        table.register("b.example.com", &spec(9002, None));
        let v = Varz::new(identity(), metrics(), table);
        let doc = v.document();
        assert_eq!(doc["urls"], 2);
        assert_eq!(doc["droplets"], 2);
        assert!(doc["ms_since_last_registry_update"].as_u64().is_some());
    }

    #[test]
    fn latency_is_in_seconds_with_upstreams_value_and_samples() {
        let m = metrics();
        let e = endpoint(Some("api"));
        for _ in 0..10 {
            // In the (4 ms, 6 ms] bucket.
            m.routed(&e, Duration::from_millis(5));
        }
        let v = Varz::new(
            identity(),
            m,
            Arc::new(RouteTable::new(TableSettings::default())),
        );
        let latency = &v.document()["latency"];
        let p50 = latency["50"].as_f64().expect("a number");
        assert!((0.004..=0.006).contains(&p50), "{latency}");
        let p99 = latency["99"].as_f64().expect("a number");
        assert!((p50..=0.006).contains(&p99), "{latency}");
        assert_eq!(latency["value"], json!(LATENCY_VALUE));
        assert_eq!(latency["samples"], 1);
    }

    #[test]
    fn percentiles_interpolate_inside_the_bucket() {
        let buckets = [(10.0, 0), (20.0, 10), (f64::INFINITY, 0)];
        assert_eq!(percentile(&buckets, 0.5), 15.0);
        assert_eq!(percentile(&buckets, 0.99), 19.9);
        assert_eq!(percentile(&[(10.0, 0), (f64::INFINITY, 0)], 0.5), 0.0);
        assert_eq!(
            percentile(&[(10.0, 1), (f64::INFINITY, 9)], 0.9),
            10.0,
            "past the last bound: the last bound"
        );
    }

    #[test]
    fn a_meter_starts_at_the_first_rate_then_averages() {
        let mut meter = Meter::new(0);
        assert_eq!(meter.rates(), [0.0; 3], "no tick yet");
        meter.tick(50);
        assert_eq!(meter.rates(), [10.0; 3], "50 requests in 5 s");
        meter.tick(50);
        let [m1, m5, m15] = meter.rates();
        assert!(m1 < m5 && m5 < m15 && m15 < 10.0, "{m1} {m5} {m15}");
        let alpha1 = 1.0 - (-5.0f64 / 60.0).exp();
        assert!((m1 - 10.0 * (1.0 - alpha1)).abs() < 1e-9, "{m1}");
    }

    #[test]
    fn a_tick_sets_the_rates_from_the_counters() {
        let m = metrics();
        let v = Varz::new(
            identity(),
            m.clone(),
            Arc::new(RouteTable::new(TableSettings::default())),
        );
        let e = endpoint(Some("api"));
        for _ in 0..25 {
            m.routed(&e, Duration::from_millis(1));
        }
        v.tick();
        let doc = v.document();
        assert_eq!(doc["rate"], json!([5.0, 5.0, 5.0]));
        assert_eq!(doc["requests_per_sec"], 5.0);
        assert_eq!(
            doc["tags"]["component"]["api"]["rate"],
            json!([5.0, 5.0, 5.0])
        );
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tgorouter\nVmPeak:\t  9000 kB\nVmRSS:\t    4242 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(4242));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn the_json_is_one_line_with_sorted_keys() {
        let v = Varz::new(
            identity(),
            metrics(),
            Arc::new(RouteTable::new(TableSettings::default())),
        );
        let text = String::from_utf8(v.json()).expect("UTF-8");
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        assert!(text.starts_with("{\"bad_gateways\":0,"), "{text}");
    }
}
