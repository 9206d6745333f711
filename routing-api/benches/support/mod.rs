//! What the store benchmarks (`store.rs`, `tcp_route_upserts.rs`) share: a MariaDB database of
//! the benchmark's own, created on the `DATABASE_URL` server (default
//! `mysql://root@127.0.0.1:3306`) and dropped at the end (MariaDB is required: when it is
//! unreachable the benchmark panics saying so, it never skips), a migrated store with a TCP
//! router group on it, and the mappings they upsert. Included by each benchmark with
//! `mod support;`.
#![allow(dead_code)]

use std::time::Duration;

use routing_api::store::Store;
use routing_api_client::models::{RouterGroup, TcpRouteMapping};
use sqlx::{Connection, MySqlConnection};
use tokio::runtime::Runtime;

pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306";

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

/// The benchmark's database, and the runtime the benchmark runs the store on; the database
/// is dropped on drop.
pub struct BenchDb {
    pub rt: Runtime,
    server: String,
    name: String,
}

impl BenchDb {
    pub fn create() -> Self {
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
                    "the benchmark needs MariaDB at {server} (DATABASE_URL, default \
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

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// A migrated store on the database, with a TCP router group called `group` (its guid
    /// returned), to be run on [`BenchDb::rt`].
    pub async fn store_with_router_group(&self, group: &str) -> (Store, String) {
        let store = Store::connect_url(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to the benchmark database {}: {e}", self.url()));
        store.migrate().await.expect("migrate");
        let rg = store
            .create_router_group(&RouterGroup {
                guid: String::new(),
                name: group.into(),
                kind: "tcp".into(),
                reservable_ports: "1024-1033".into(),
            })
            .await
            .expect("router group")
            .guid;
        (store, rg)
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

/// Mapping number `n` of router group `rg`: its own backend address, one of ten external
/// ports, no TLS port.
pub fn mapping(rg: &str, n: u32, ttl: Duration) -> TcpRouteMapping {
    TcpRouteMapping {
        router_group_guid: rg.to_string(),
        backend_port: 1000 + (n % 60_000) as u16,
        backend_ip: format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff),
        port: 1024 + (n % 10) as u16,
        instance_id: format!("instance-{n}"),
        backend_tls_port: -1,
        ttl: Some(ttl.as_secs() as i64),
        ..TcpRouteMapping::default()
    }
}
