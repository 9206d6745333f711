//! Route table benchmarks (criterion).
//!
//! - `lookup_100k`: `RouteTable::lookup` on a table of 100,000 route keys (plain hosts,
//!   context paths, wildcards; three endpoints each): host hits, context-path hits with a
//!   deeper request path and a query, wildcard hits, misses (which walk the whole wildcard
//!   fallback), and host hits while a background thread registers, unregisters and prunes.
//! - `registration_throughput`: route-emitter style `router.register` payloads parsed with
//!   `gorouter::nats::parse_registration` and applied with `RouteTable::register`, counted in
//!   messages/s; plus `register` alone with pre-parsed specs (new endpoints and refreshes).
//!
//! Run: `cargo bench -p gorouter --bench route_table` (about a minute after the build; a
//! filter such as `-- lookup_100k` runs one group). `cargo test -p gorouter --bench
//! route_table` runs each benchmark once as a smoke test.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gorouter::nats::parse_registration;
use gorouter::registry::{EndpointSpec, RouteTable, TableSettings};

/// Plain host routes `app-N.apps.example.com`.
const PLAIN_HOSTS: usize = 59_000;
/// Hosts `svc-N.example.com`, each with context paths `/api/v1` .. `/api/v{PATHS_PER_SVC}`.
const SVC_HOSTS: usize = 10_000;
const PATHS_PER_SVC: usize = 4;
/// Wildcard routes `*.wild-N.example.com`.
const WILDCARDS: usize = 1_000;
const TOTAL_ROUTES: usize = PLAIN_HOSTS + SVC_HOSTS * PATHS_PER_SVC + WILDCARDS;
const ENDPOINTS_PER_ROUTE: usize = 3;
/// Distinct queries each lookup benchmark cycles through, so it does not hit one hot entry.
const QUERIES: usize = 4096;
/// Messages per iteration in `registration_throughput`.
const MESSAGES: usize = 10_000;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A GUID-shaped string derived from `n`.
fn guid(n: u64) -> String {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (n & 0xfff) as u16,
        n & 0xffff_ffff_ffff
    )
}

/// The backend IP for endpoint number `n`.
fn ip(n: u64) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// A spec like the ones route-emitter registrations carry (instance GUIDs, index, tags).
fn spec(n: u64) -> EndpointSpec {
    let instance = guid(n);
    EndpointSpec {
        host: ip(n),
        port: 61_000 + (n % 1000) as u16,
        app: guid(n / ENDPOINTS_PER_ROUTE as u64 + 1_000_000_000),
        private_instance_index: (n % ENDPOINTS_PER_ROUTE as u64).to_string(),
        server_cert_domain_san: instance.clone(),
        private_instance_id: instance,
        tags: Some([("component".to_string(), "route-emitter".to_string())].into()),
        availability_zone: "z1".into(),
        ..EndpointSpec::default()
    }
}

/// Every route URI of the 100k table.
fn route_uris() -> Vec<String> {
    let mut uris = Vec::with_capacity(TOTAL_ROUTES);
    uris.extend((0..PLAIN_HOSTS).map(|i| format!("app-{i}.apps.example.com")));
    for i in 0..SVC_HOSTS {
        uris.extend((1..=PATHS_PER_SVC).map(|m| format!("svc-{i}.example.com/api/v{m}")));
    }
    uris.extend((0..WILDCARDS).map(|i| format!("*.wild-{i}.example.com")));
    assert_eq!(uris.len(), TOTAL_ROUTES);
    uris
}

fn table_100k() -> Arc<RouteTable> {
    let table = RouteTable::new(TableSettings::default());
    let mut n = 0u64;
    for uri in route_uris() {
        for _ in 0..ENDPOINTS_PER_ROUTE {
            table.register(&uri, &spec(n));
            n += 1;
        }
    }
    assert_eq!(table.route_count(), TOTAL_ROUTES);
    Arc::new(table)
}

/// Cycles through `queries`, asserting (once per query, before timing) that each finds or
/// misses as intended.
fn bench_lookups(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    table: &RouteTable,
    queries: &[(String, String)],
    expect_hit: bool,
) {
    for (host, path) in queries {
        assert_eq!(
            table.lookup(host, path).is_some(),
            expect_hit,
            "{name}: lookup({host}, {path})"
        );
    }
    let mut i = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            let (host, path) = &queries[i % queries.len()];
            i += 1;
            black_box(table.lookup(black_box(host), black_box(path)))
        })
    });
}

fn lookup_100k(c: &mut Criterion) {
    let table = table_100k();
    let mut rng = Rng(0x5EED);
    let hosts: Vec<_> = (0..QUERIES)
        .map(|_| {
            let i = rng.below(PLAIN_HOSTS);
            (format!("app-{i}.apps.example.com"), "/".to_string())
        })
        .collect();
    let context_paths: Vec<_> = (0..QUERIES)
        .map(|q| {
            let (i, m) = (rng.below(SVC_HOSTS), rng.below(PATHS_PER_SVC) + 1);
            (
                format!("svc-{i}.example.com"),
                format!("/api/v{m}/users/{q}?x=1"),
            )
        })
        .collect();
    let wildcards: Vec<_> = (0..QUERIES)
        .map(|q| {
            let i = rng.below(WILDCARDS);
            (format!("app{q}.wild-{i}.example.com"), "/".to_string())
        })
        .collect();
    let misses: Vec<_> = (0..QUERIES)
        .map(|q| (format!("nope-{q}.apps.example.com"), "/x".to_string()))
        .collect();

    let mut group = c.benchmark_group("lookup_100k");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    bench_lookups(&mut group, "host_hit", &table, &hosts, true);
    bench_lookups(&mut group, "context_path_hit", &table, &context_paths, true);
    bench_lookups(&mut group, "wildcard_hit", &table, &wildcards, true);
    bench_lookups(&mut group, "miss", &table, &misses, false);

    // The same host hits while a writer churns: new endpoints on existing routes, new routes,
    // unregistrations, and a full prune every 1,000 writes.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (table, stop, writes) = (table.clone(), stop.clone(), writes.clone());
        thread::spawn(move || {
            let mut rng = Rng(0xC0FFEE);
            let mut n = 10_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                let existing = format!("app-{}.apps.example.com", rng.below(PLAIN_HOSTS));
                let fresh = format!("churn-{}.apps.example.com", n % 5_000);
                // Addresses outside 10/8, so the churn never touches the table's own endpoints.
                let s = EndpointSpec {
                    host: format!("172.16.{}.{}", (n >> 8) & 0xff, n & 0xff),
                    ..spec(n)
                };
                table.register(&existing, &s);
                table.register(&fresh, &s);
                table.unregister(&existing, &s);
                let mut calls = 3;
                if n % 2 == 0 {
                    table.unregister(&fresh, &s);
                    calls += 1;
                }
                n += 1;
                if n % 1_000 == 0 {
                    table.prune_stale();
                }
                writes.fetch_add(calls, Ordering::Relaxed);
            }
        })
    };
    bench_lookups(&mut group, "host_hit_with_writer", &table, &hosts, true);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread panicked");
    eprintln!(
        "lookup_100k/host_hit_with_writer: the writer applied {} register/unregister calls",
        writes.load(Ordering::Relaxed)
    );
    group.finish();
}

/// Registration number `n` of `registration_throughput`: `ENDPOINTS_PER_ROUTE` instances for
/// each route `app-{n / 3}.apps.example.com`.
fn registration(n: u64) -> (String, EndpointSpec) {
    let uri = format!("app-{}.apps.example.com", n / ENDPOINTS_PER_ROUTE as u64);
    let spec = EndpointSpec {
        endpoint_updated_at_ns: 1_729_260_000_000_000_000 + n as i64,
        ..spec(n)
    };
    (uri, spec)
}

/// The `router.register` payload route-emitter would send for `spec` (wire-examples.md).
fn payload(uri: &str, spec: &EndpointSpec) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"host":"{}","port":{},"uris":["{}"],"app":"{}","private_instance_id":"{}","#,
            r#""private_instance_index":"{}","server_cert_domain_san":"{}","#,
            r#""tags":{{"component":"route-emitter"}},"endpoint_updated_at_ns":{},"#,
            r#""availability_zone":"{}"}}"#
        ),
        spec.host,
        spec.port,
        uri,
        spec.app,
        spec.private_instance_id,
        spec.private_instance_index,
        spec.server_cert_domain_san,
        spec.endpoint_updated_at_ns,
        spec.availability_zone,
    )
    .into_bytes()
}

fn apply_payloads(table: &RouteTable, payloads: &[Vec<u8>]) {
    for payload in payloads {
        let reg = parse_registration(black_box(payload)).expect("parse_registration failed");
        for uri in &reg.uris {
            black_box(table.register(uri, &reg.spec));
        }
    }
}

fn registration_throughput(c: &mut Criterion) {
    let registrations: Vec<(String, EndpointSpec)> =
        (0..MESSAGES as u64).map(registration).collect();
    let payloads: Vec<Vec<u8>> = registrations
        .iter()
        .map(|(uri, spec)| payload(uri, spec))
        .collect();

    let mut group = c.benchmark_group("registration_throughput");
    group
        .throughput(Throughput::Elements(MESSAGES as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // `register` alone, with specs already parsed. Into an empty table, every call adds an
    // endpoint (and every third a route)...
    group.bench_function("register_only/new", |b| {
        b.iter_batched(
            || RouteTable::new(TableSettings::default()),
            |table| {
                for (uri, spec) in &registrations {
                    black_box(table.register(uri, spec));
                }
                table
            },
            BatchSize::PerIteration,
        )
    });
    // ...and again into a table that has them: the steady state, where route-emitter re-sends
    // every registration each interval and the table only refreshes timestamps.
    let refreshed = RouteTable::new(TableSettings::default());
    for (uri, spec) in &registrations {
        refreshed.register(uri, spec);
    }
    group.bench_function("register_only/refresh", |b| {
        b.iter(|| {
            for (uri, spec) in &registrations {
                black_box(refreshed.register(uri, spec));
            }
        })
    });

    // What a NATS message costs end to end: parse the payload, then register each URI.
    for (bytes, (uri, spec)) in payloads.iter().zip(&registrations).take(3) {
        let reg = parse_registration(bytes).expect("parse_registration failed");
        assert_eq!(reg.uris, std::slice::from_ref(uri));
        assert_eq!(reg.spec.addr(), spec.addr());
    }
    group.bench_function("parse_and_register/new", |b| {
        b.iter_batched(
            || RouteTable::new(TableSettings::default()),
            |table| {
                apply_payloads(&table, &payloads);
                table
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("parse_and_register/refresh", |b| {
        b.iter(|| apply_payloads(&refreshed, &payloads))
    });
    group.finish();
}

criterion_group!(benches, lookup_100k, registration_throughput);
criterion_main!(benches);
