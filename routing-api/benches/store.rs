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

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use routing_api::store::Store;
use routing_api_client::models::{RouterGroup, TcpRouteMapping};
use sqlx::{Connection, MySqlConnection};
use tokio::runtime::Runtime;

const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306";
/// Rows prefilled in each route table for the list benchmarks.
const ROWS: u32 = 10_000;
/// Mappings cycled through by `tcp_upsert/refresh`.
const REFRESHED: u32 = 1_000;
const TTL: Duration = Duration::from_secs(3600);

/// The server URL without a database path.
fn server_url() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    let url = url.replacen("mariadb://", "mysql://", 1);
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("DATABASE_URL {url:?} is not a mysql:// URL"));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    format!("{scheme}://{authority}")
}

/// The benchmark's database; dropped on drop.
struct BenchDb {
    rt: Runtime,
    server: String,
    name: String,
}

impl BenchDb {
    fn create() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = server_url();
        let name = format!(
            "ra_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        rt.block_on(async {
            let mut conn = MySqlConnection::connect(&server).await.unwrap_or_else(|e| {
                panic!(
                    "the store benchmark needs MariaDB at {server} (DATABASE_URL, default \
                     {DEFAULT_DATABASE_URL}) and cannot reach it: {e}"
                )
            });
            sqlx::query(&format!("CREATE DATABASE `{name}`"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("MariaDB at {server}: CREATE DATABASE {name}: {e}"));
            let _ = conn.close().await;
        });
        Self { rt, server, name }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        self.rt.block_on(async move {
            if let Ok(mut c) = MySqlConnection::connect(&server).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                    .execute(&mut c)
                    .await;
                let _ = c.close().await;
            }
        });
    }
}

fn mapping(rg: &str, n: u32) -> TcpRouteMapping {
    TcpRouteMapping {
        router_group_guid: rg.to_string(),
        backend_port: 1000 + (n % 60_000) as u16,
        backend_ip: format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff),
        port: 1024 + (n % 10) as u16,
        instance_id: format!("instance-{n}"),
        backend_tls_port: -1,
        ttl: Some(TTL.as_secs() as i64),
        ..TcpRouteMapping::default()
    }
}

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
    let store = rt.block_on(async {
        let store = Store::connect_url(&db.url())
            .await
            .unwrap_or_else(|e| panic!("connect to the benchmark database {}: {e}", db.url()));
        store.migrate().await.expect("migrate");
        store
    });
    let rg = rt
        .block_on(store.create_router_group(&RouterGroup {
            guid: String::new(),
            name: "bench-tcp".into(),
            kind: "tcp".into(),
            reservable_ports: "1024-1033".into(),
        }))
        .expect("router group")
        .guid;

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
            let m = mapping(&rg, 100_000 + next);
            let (_, created) = rt
                .block_on(store.upsert_tcp_route(&m, TTL))
                .expect("upsert new");
            black_box(created)
        })
    });
    for n in 0..REFRESHED {
        rt.block_on(store.upsert_tcp_route(&mapping(&rg, n), TTL))
            .expect("seed refreshed mappings");
    }
    let mut i = 0u32;
    group.bench_function("refresh", |b| {
        b.iter(|| {
            i = (i + 1) % REFRESHED;
            let (_, created) = rt
                .block_on(store.upsert_tcp_route(&mapping(&rg, i), TTL))
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
