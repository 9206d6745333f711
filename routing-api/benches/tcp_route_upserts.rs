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

mod support;

use std::time::{Duration, Instant};

use routing_api::store::Store;
use routing_api_client::models::TcpRouteMapping;
use support::{mapping, BenchDb};

const BATCH: usize = 500;
const BATCH_ROUTES: u32 = 10_000;
const PER_ROW_ROUTES: u32 = 2_000;
const TTL: Duration = Duration::from_secs(120);

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
    let all: Vec<TcpRouteMapping> = (0..routes).map(|n| mapping(rg, offset + n, TTL)).collect();
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
    let db = BenchDb::create();
    db.rt.block_on(async {
        let (store, rg) = db.store_with_router_group("bench").await;
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
    });
}
