//! TCP route upsert throughput on MariaDB, in batches of 500 as a `POST
//! /routing/v1/tcp_routes/create` of 500 mappings runs them: prints routes/s.
//!
//! Runs in a database of its own on the `DATABASE_URL` server (default
//! `mysql://root@127.0.0.1:3306`), dropped at the end; without MariaDB it panics saying so.
//! Modes: `per-row` is one `Store::upsert_tcp_route` call per mapping (the API before batches
//! were one transaction; 2,000 mappings, it is slow), `batch` is one `Store::upsert_tcp_routes`
//! call per 500 mappings (10,000 mappings). Each mode inserts its mappings new, then refreshes
//! the same ones (the route emitter's steady state).
//!
//! Run: `cargo bench -p routing-api --bench tcp_route_upserts`.

use std::time::{Duration, Instant};

use routing_api::store::Store;
use routing_api_client::models::{RouterGroup, TcpRouteMapping};
use sqlx::{Connection, MySqlConnection};

const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306";
const BATCH: usize = 500;
const BATCH_ROUTES: u32 = 10_000;
const PER_ROW_ROUTES: u32 = 2_000;
const TTL: Duration = Duration::from_secs(120);

fn server_url() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    let url = url.replacen("mariadb://", "mysql://", 1);
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("DATABASE_URL {url:?} is not a mysql:// URL"));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    format!("{scheme}://{authority}")
}

fn mapping(rg: &str, offset: u32, n: u32) -> TcpRouteMapping {
    let n = offset + n;
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

#[derive(Clone, Copy)]
enum Mode {
    PerRow,
    Batch,
}

async fn run(store: &Store, rg: &str, mode: Mode, offset: u32) -> (f64, f64) {
    let routes = match mode {
        Mode::PerRow => PER_ROW_ROUTES,
        Mode::Batch => BATCH_ROUTES,
    };
    let all: Vec<TcpRouteMapping> = (0..routes).map(|n| mapping(rg, offset, n)).collect();
    let mut rates = [0.0; 2];
    for rate in &mut rates {
        let started = Instant::now();
        for chunk in all.chunks(BATCH) {
            match mode {
                Mode::PerRow => {
                    for m in chunk {
                        store.upsert_tcp_route(m, TTL).await.expect("upsert");
                    }
                }
                Mode::Batch => {
                    let batch: Vec<(TcpRouteMapping, Duration)> =
                        chunk.iter().map(|m| (m.clone(), TTL)).collect();
                    store.upsert_tcp_routes(&batch).await.expect("batch upsert");
                }
            }
        }
        *rate = f64::from(routes) / started.elapsed().as_secs_f64();
    }
    (rates[0], rates[1])
}

fn main() {
    // `cargo test --benches` passes no `--bench`: run nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
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
                "this benchmark needs MariaDB at {server} (DATABASE_URL) and cannot reach it: {e}"
            )
        });
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let store = Store::connect_url(&format!("{server}/{name}"))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let rg = store
            .create_router_group(&RouterGroup {
                guid: String::new(),
                name: "bench".into(),
                kind: "tcp".into(),
                reservable_ports: "1024-1033".into(),
            })
            .await
            .expect("router group")
            .guid;
        for (label, mode, offset) in [
            ("per-row", Mode::PerRow, 0),
            ("batch", Mode::Batch, 1_000_000),
        ] {
            let (new, refresh) = run(&store, &rg, mode, offset).await;
            println!(
                "tcp_route_upserts {label:>7} (batches of {BATCH}): new {new:>8.0} routes/s, \
                 refresh {refresh:>8.0} routes/s"
            );
        }
        store.close().await;
        let _ = sqlx::query(&format!("DROP DATABASE `{name}`"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    });
}
