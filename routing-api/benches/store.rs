//! Store benchmarks (criterion) on MariaDB, in a database of the benchmark's own (created on
//! the `DATABASE_URL` server, default `mysql://root@127.0.0.1:3306`, and dropped at the end).
//! MariaDB is required: when it is unreachable the benchmark panics saying so, it never skips.
//!
//! - `tcp_upsert`: `Store::upsert_tcp_route` as the API runs it, one mapping per call, counted
//!   in upserts/s (`Throughput::Elements`): `new` inserts a mapping not seen before, `refresh`
//!   re-upserts one of 1,000 existing mappings (the route emitter's steady state).
//! - `list_10k`: latency of the list queries behind `GET /routing/v1/tcp_routes` and
//!   `GET /routing/v1/routes` with exactly 10,000 live rows in each table, and of the TCP list
//!   filtered by `isolation_segment` (a quarter of the rows match).
//!
//! Run: `cargo bench -p routing-api --bench store` (well under a minute after the build).
//! `cargo test -p routing-api --bench store` runs each benchmark once as a smoke test.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::{mapping, BenchDb};

/// Rows prefilled in each route table for the list benchmarks.
const ROWS: u32 = 10_000;
/// Mappings cycled through by `tcp_upsert/refresh`.
const REFRESHED: u32 = 1_000;
const TTL: Duration = Duration::from_secs(3600);

/// Inserts `ROWS` live TCP mappings and HTTP routes with multi-row INSERTs (fast prefill; the
/// rows look like the store's own: UTC datetimes, NULL TLS port and SNI).
async fn prefill(url: &str, rg: &str) {
    let pool = sqlx::MySqlPool::connect(url).await.expect("prefill pool");
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(1000) {
        let mut tcp = String::from(
            "INSERT INTO tcp_routes (guid, created_at, updated_at, expires_at, router_group_guid, \
             host_port, host_tls_port, host_ip, sni_hostname, instance_id, external_port, \
             modification_guid, modification_index, ttl, isolation_segment) VALUES ",
        );
        let mut http = String::from(
            "INSERT INTO routes (guid, created_at, updated_at, expires_at, route, port, ip, ttl, \
             log_guid, route_service_url, modification_guid, modification_index) VALUES ",
        );
        for (i, n) in chunk.iter().enumerate() {
            if i > 0 {
                tcp.push(',');
                http.push(',');
            }
            let seg = if n % 4 == 0 { "is1" } else { "" };
            tcp.push_str(&format!(
                "(UUID(), UTC_TIMESTAMP(), UTC_TIMESTAMP(), DATE_ADD(UTC_TIMESTAMP(), INTERVAL 1 HOUR), \
                 '{rg}', {port}, NULL, '172.16.{a}.{b}', NULL, 'prefill-{n}', {ext}, UUID(), 0, 3600, '{seg}')",
                port = 2000 + n % 50_000,
                a = (n >> 8) & 0xff,
                b = n & 0xff,
                ext = 1024 + n % 10,
            ));
            http.push_str(&format!(
                "(UUID(), UTC_TIMESTAMP(), UTC_TIMESTAMP(), DATE_ADD(UTC_TIMESTAMP(), INTERVAL 1 HOUR), \
                 'app-{n}.apps.example.com', {port}, '10.20.{a}.{b}', 3600, 'log-{n}', '', UUID(), 0)",
                port = 61000 + n % 4000,
                a = (n >> 8) & 0xff,
                b = n & 0xff,
            ));
        }
        sqlx::query(&tcp)
            .execute(&pool)
            .await
            .expect("prefill tcp_routes");
        sqlx::query(&http)
            .execute(&pool)
            .await
            .expect("prefill routes");
    }
    pool.close().await;
}

fn benches(c: &mut Criterion) {
    let db = BenchDb::create();
    let rt = &db.rt;
    let (store, rg) = rt.block_on(db.store_with_router_group("bench-tcp"));

    let mut group = c.benchmark_group("tcp_upsert");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    let mut next = 0u32;
    group.bench_function("new", |b| {
        b.iter(|| {
            next += 1;
            let m = mapping(&rg, 100_000 + next, TTL);
            let (_, created) = rt
                .block_on(store.upsert_tcp_route(&m, TTL))
                .expect("upsert new");
            black_box(created)
        })
    });
    for n in 0..REFRESHED {
        rt.block_on(store.upsert_tcp_route(&mapping(&rg, n, TTL), TTL))
            .expect("seed refreshed mappings");
    }
    let mut i = 0u32;
    group.bench_function("refresh", |b| {
        b.iter(|| {
            i = (i + 1) % REFRESHED;
            let (_, created) = rt
                .block_on(store.upsert_tcp_route(&mapping(&rg, i, TTL), TTL))
                .expect("upsert existing");
            assert!(!created);
        })
    });
    group.finish();

    // exactly ROWS rows per table for the list benchmarks
    rt.block_on(async {
        let pool = sqlx::MySqlPool::connect(&db.url()).await.expect("pool");
        sqlx::query("DELETE FROM tcp_routes")
            .execute(&pool)
            .await
            .expect("empty tcp_routes");
        pool.close().await;
    });
    rt.block_on(prefill(&db.url(), &rg));
    let tcp_rows = rt.block_on(store.tcp_routes(&[])).expect("list").len();
    assert_eq!(tcp_rows, ROWS as usize);
    let http_rows = rt.block_on(store.http_routes()).expect("list").len();
    assert_eq!(http_rows, ROWS as usize);

    let mut group = c.benchmark_group("list_10k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("tcp_routes", |b| {
        b.iter(|| black_box(rt.block_on(store.tcp_routes(&[])).expect("list").len()))
    });
    let segments = vec!["is1".to_string()];
    // a quarter of the rows are in segment `is1`
    group.bench_function("tcp_routes_isolation_segment", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(store.tcp_routes(&segments))
                    .expect("list filtered")
                    .len(),
            )
        })
    });
    group.bench_function("http_routes", |b| {
        b.iter(|| black_box(rt.block_on(store.http_routes()).expect("list").len()))
    });
    group.finish();
    rt.block_on(store.close());
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
